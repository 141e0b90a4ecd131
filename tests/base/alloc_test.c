/* alloc_test.c — allocation wrappers and the failure-injection hook used by torture tests.
 *
 * Criterion runs each test in its own process, so the per-process fail counter starts reset. */
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "barrel/alloc.h"
#include "barrel/err.h"

Test(alloc, never_fails_by_default)
{
    void *p[8];
    for (int i = 0; i < 8; i++) {
        p[i] = br_malloc(16);
        cr_assert(p[i] != NULL);
    }
    for (int i = 0; i < 8; i++)
        br_free(p[i]);
}

Test(alloc, fail_after_zero_fails_every_function)
{
    br_alloc_fail_after(0);
    cr_assert(br_malloc(8) == NULL);
    cr_assert(br_calloc(2, 8) == NULL);
    cr_assert(br_realloc(NULL, 8) == NULL);
    cr_assert(br_strdup("abc") == NULL);
    cr_assert(br_strndup("abc", 2) == NULL);
    cr_assert(br_memdup("abc", 3) == NULL);
    br_alloc_fail_after(-1);
}

Test(alloc, fail_after_n_lets_n_succeed_then_fails_until_reset)
{
    br_alloc_fail_after(3);
    void *a = br_malloc(1);
    void *b = br_calloc(1, 1);
    void *c = br_strdup("x");
    cr_assert(a != NULL && b != NULL && c != NULL);
    for (int i = 0; i < 5; i++)
        cr_assert(br_malloc(1) == NULL, "allocation %d after the limit succeeded", i);
    br_alloc_fail_after(-1);
    void *d = br_malloc(1);
    cr_assert(d != NULL, "reset with -1 must stop the failures");
    br_free(a);
    br_free(b);
    br_free(c);
    br_free(d);
}

Test(alloc, fail_once_fails_only_the_nth_allocation)
{
    br_alloc_fail_once(2);
    void *a = br_malloc(1);
    void *b = br_malloc(1);
    void *c = br_malloc(1);
    void *d = br_strdup("x");
    void *e = br_calloc(1, 1);
    cr_assert(a != NULL && b != NULL, "the two allocations before the failure must succeed");
    cr_assert(c == NULL, "the third allocation must fail");
    cr_assert(d != NULL && e != NULL, "the allocations after the one failure must succeed");
    cr_assert(eq(long, br_alloc_count(), 5));
    br_alloc_fail_once(0);
    br_alloc_fail_after(-1);
    void *f = br_malloc(1);
    cr_assert(f != NULL, "reset with -1 must disarm a pending single failure");
    br_free(a);
    br_free(b);
    br_free(d);
    br_free(e);
    br_free(f);
}

Test(alloc, count_restarts_at_each_fail_after_call)
{
    br_alloc_fail_after(-1);
    cr_assert(eq(long, br_alloc_count(), 0));
    void *a = br_malloc(4);
    void *b = br_realloc(a, 8);
    void *c = br_memdup("abcd", 4);
    cr_assert(eq(long, br_alloc_count(), 3));
    br_alloc_fail_after(-1);
    cr_assert(eq(long, br_alloc_count(), 0));
    br_free(b);
    br_free(c);
}

Test(alloc, failed_realloc_leaves_the_block_intact)
{
    char *p = br_malloc(4);
    cr_assert(p != NULL);
    memcpy(p, "abc", 4);
    br_alloc_fail_after(0);
    cr_assert(br_realloc(p, 1 << 20) == NULL);
    br_alloc_fail_after(-1);
    cr_assert(eq(str, p, "abc"));
    br_free(p);
}

Test(alloc, calloc_rejects_overflowing_sizes)
{
    cr_assert(br_calloc(SIZE_MAX / 2 + 1, 2) == NULL);
    cr_assert(br_calloc(2, SIZE_MAX / 2 + 1) == NULL);
    cr_assert(br_calloc(SIZE_MAX, SIZE_MAX) == NULL);
    /* The check must not trip on products that fit. */
    void *p = br_calloc(SIZE_MAX / 4096, 0);
    cr_assert(p != NULL);
    br_free(p);
}

Test(alloc, calloc_zeroes)
{
    unsigned char *p = br_calloc(64, 4);
    cr_assert(p != NULL);
    for (size_t i = 0; i < 256; i++)
        cr_assert(eq(u8, p[i], 0));
    br_free(p);
}

Test(alloc, zero_sizes_give_freeable_pointers)
{
    void *a = br_malloc(0);
    void *b = br_calloc(0, 0);
    void *c = br_memdup("", 0);
    cr_assert(a != NULL && b != NULL && c != NULL);
    void *d = br_realloc(a, 0);
    cr_assert(d != NULL);
    br_free(d);
    br_free(b);
    br_free(c);
    br_free(NULL);
}

Test(alloc, strdup_family_copies)
{
    char *s = br_strdup("hello");
    cr_assert(eq(str, s, "hello"));
    char *t = br_strndup("hello world", 5);
    cr_assert(eq(str, t, "hello"));
    char *u = br_strndup("ab\0cd", 5); /* copies n bytes, even past a NUL */
    cr_assert(eq(int, memcmp(u, "ab\0cd\0", 6), 0));
    unsigned char *m = br_memdup("\x01\x00\x02", 3);
    cr_assert(eq(int, memcmp(m, "\x01\x00\x02", 3), 0));
    br_free(s);
    br_free(t);
    br_free(u);
    br_free(m);
}

/* What a torture test looks like: a function making several allocations must, for every N,
 * return BR_ENOMEM cleanly when the Nth fails (ASan's leak check gates "cleanly"). */
struct three {
    char *a, *b, *c;
};

static br_err three_new(struct three *t)
{
    br_err e = BR_ENOMEM;
    t->a = t->b = t->c = NULL;
    t->a = br_strdup("a");
    if (!t->a)
        goto fail;
    t->b = br_malloc(100);
    if (!t->b)
        goto fail;
    t->c = br_calloc(10, 10);
    if (!t->c)
        goto fail;
    return BR_OK;
fail:
    br_free(t->b);
    br_free(t->a);
    t->a = t->b = t->c = NULL;
    return e;
}

Test(alloc, torture_loop_fails_each_allocation_in_turn)
{
    struct three t = {0};
    br_alloc_fail_after(-1);
    cr_assert(eq(int, three_new(&t), BR_OK));
    long total = br_alloc_count();
    cr_assert(eq(long, total, 3));
    br_free(t.a);
    br_free(t.b);
    br_free(t.c);

    for (long n = 0; n < total; n++) {
        struct three u = {0};
        br_alloc_fail_after(n);
        cr_assert(eq(int, three_new(&u), BR_ENOMEM), "failing allocation %ld", n);
        cr_assert(eq(long, br_alloc_count(), n + 1), "stops at the first failure");
    }
    br_alloc_fail_after(-1);
}

Test(alloc, nothing_is_counted_before_the_hook_is_first_armed)
{
    /* Criterion runs each test in a fresh process: the hook has never been armed here, so
     * allocations cost no shared counter and the count stays 0 ... */
    void *a = br_malloc(8);
    void *b = br_strdup("x");
    cr_assert(a != NULL && b != NULL);
    cr_assert(eq(long, br_alloc_count(), 0));
    /* ... until a test arms it, from which point every allocation counts. */
    br_alloc_fail_after(-1);
    void *c = br_calloc(2, 2);
    cr_assert(eq(long, br_alloc_count(), 1));
    br_free(a);
    br_free(b);
    br_free(c);
}
