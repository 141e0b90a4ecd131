/* buf_test.c — the bounded buffer: appends, growth, the hard maximum, steal and ENOMEM. */
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"

static void assert_terminated(const br_buf *b)
{
    cr_assert(b->data != NULL);
    cr_assert(b->cap > b->len, "no room for the NUL: len=%zu cap=%zu", b->len, b->cap);
    cr_assert(eq(u8, b->data[b->len], 0), "not NUL-terminated at len=%zu", b->len);
}

Test(buf, zeroed_struct_is_an_empty_buffer)
{
    br_buf b = {0};
    cr_assert(eq(int, br_buf_append_str(&b, "hi"), BR_OK));
    cr_assert(eq(sz, b.len, 2));
    cr_assert(eq(str, (char *)b.data, "hi"));
    br_buf_fini(&b);
}

Test(buf, init_leaves_it_empty_and_unallocated)
{
    br_buf b;
    memset(&b, 0xa5, sizeof b);
    br_buf_init(&b, 100);
    cr_assert(b.data == NULL);
    cr_assert(eq(sz, b.len, 0));
    cr_assert(eq(sz, b.cap, 0));
    cr_assert(eq(sz, b.max, 100));
    br_buf_fini(&b);
}

Test(buf, append_variants_concatenate_and_terminate)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(eq(int, br_buf_append(&b, "ab", 2), BR_OK));
    assert_terminated(&b);
    cr_assert(eq(int, br_buf_append_byte(&b, 'c'), BR_OK));
    assert_terminated(&b);
    cr_assert(eq(int, br_buf_append_str(&b, "def"), BR_OK));
    assert_terminated(&b);
    cr_assert(eq(int, br_buf_printf(&b, "-%d-%s", 42, "x"), BR_OK));
    assert_terminated(&b);
    cr_assert(eq(str, (char *)b.data, "abcdef-42-x"));
    cr_assert(eq(sz, b.len, 11));
    br_buf_fini(&b);
}

Test(buf, append_nothing_is_ok)
{
    br_buf b;
    br_buf_init(&b, 8);
    cr_assert(eq(int, br_buf_append(&b, NULL, 0), BR_OK));
    cr_assert(eq(int, br_buf_append_str(&b, ""), BR_OK));
    cr_assert(eq(sz, b.len, 0));
    br_buf_fini(&b);
}

Test(buf, binary_bytes_with_nuls_are_kept)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(eq(int, br_buf_append(&b, "a\0b\0", 4), BR_OK));
    cr_assert(eq(sz, b.len, 4));
    cr_assert(eq(int, memcmp(b.data, "a\0b\0\0", 5), 0));
    br_buf_fini(&b);
}

Test(buf, grows_across_many_appends)
{
    br_buf b;
    br_buf_init(&b, 0);
    for (int i = 0; i < 10000; i++) {
        cr_assert(eq(int, br_buf_append_byte(&b, (uint8_t)('a' + i % 26)), BR_OK));
        cr_assert(b.cap > b.len);
    }
    cr_assert(eq(sz, b.len, 10000));
    for (size_t i = 0; i < b.len; i++)
        cr_assert(eq(u8, b.data[i], (uint8_t)('a' + i % 26)), "byte %zu", i);
    assert_terminated(&b);
    br_buf_fini(&b);
}

Test(buf, printf_longer_than_the_stack_scratch)
{
    char big[1000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(eq(int, br_buf_append_str(&b, "head:"), BR_OK));
    cr_assert(eq(int, br_buf_printf(&b, "%s|%s", big, big), BR_OK));
    cr_assert(eq(sz, b.len, 5 + 999 + 1 + 999));
    cr_assert(eq(int, memcmp(b.data, "head:qqq", 8), 0));
    cr_assert(eq(u8, b.data[5 + 999], '|'));
    cr_assert(eq(u8, b.data[b.len - 1], 'q'));
    assert_terminated(&b);
    br_buf_fini(&b);
}

Test(buf, printf_of_exactly_the_scratch_size)
{
    /* 255 and 256 characters straddle the 256-byte stack scratch in br_buf_printf. */
    for (size_t n = 254; n <= 257; n++) {
        char s[300];
        memset(s, 'z', n);
        s[n] = '\0';
        br_buf b;
        br_buf_init(&b, 0);
        cr_assert(eq(int, br_buf_printf(&b, "%s", s), BR_OK));
        cr_assert(eq(sz, b.len, n));
        cr_assert(eq(str, (char *)b.data, s));
        br_buf_fini(&b);
    }
}

Test(buf, filling_exactly_to_max_is_allowed)
{
    br_buf b;
    br_buf_init(&b, 64);
    char s[64];
    memset(s, 'm', sizeof s);
    cr_assert(eq(int, br_buf_append(&b, s, 64), BR_OK));
    cr_assert(eq(sz, b.len, 64));
    assert_terminated(&b);
    cr_assert(eq(int, br_buf_append(&b, NULL, 0), BR_OK));
    br_buf_fini(&b);
}

Test(buf, appending_past_max_fails_and_leaves_the_buffer_unchanged)
{
    br_buf b;
    br_buf_init(&b, 10);
    cr_assert(eq(int, br_buf_append_str(&b, "0123456"), BR_OK));
    uint8_t *data = b.data;
    size_t cap = b.cap;

    cr_assert(eq(int, br_buf_append_str(&b, "7890"), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_append(&b, "7890", 4), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_printf(&b, "%d", 7890), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_reserve(&b, 4), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_reserve(&b, SIZE_MAX), BR_ETOOBIG));

    cr_assert(eq(sz, b.len, 7));
    cr_assert(eq(ptr, b.data, data));
    cr_assert(eq(sz, b.cap, cap));
    cr_assert(eq(str, (char *)b.data, "0123456"));

    cr_assert(eq(int, br_buf_append_str(&b, "789"), BR_OK), "up to max still fits");
    cr_assert(eq(int, br_buf_append_byte(&b, 'x'), BR_ETOOBIG));
    cr_assert(eq(str, (char *)b.data, "0123456789"));
    br_buf_fini(&b);
}

Test(buf, long_printf_past_max_fails_and_leaves_the_buffer_unchanged)
{
    char big[600];
    memset(big, 'p', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    br_buf b;
    br_buf_init(&b, 500);
    cr_assert(eq(int, br_buf_append_str(&b, "keep"), BR_OK));
    cr_assert(eq(int, br_buf_printf(&b, "%s", big), BR_ETOOBIG));
    cr_assert(eq(sz, b.len, 4));
    cr_assert(eq(str, (char *)b.data, "keep"));
    br_buf_fini(&b);
}

Test(buf, first_append_past_max_allocates_nothing)
{
    br_buf b;
    br_buf_init(&b, 3);
    cr_assert(eq(int, br_buf_append_str(&b, "four"), BR_ETOOBIG));
    cr_assert(b.data == NULL);
    cr_assert(eq(sz, b.len, 0));
    br_buf_fini(&b);
}

Test(buf, capacity_never_exceeds_max_plus_the_nul)
{
    br_buf b;
    br_buf_init(&b, 100);
    for (int i = 0; i < 100; i++)
        cr_assert(eq(int, br_buf_append_byte(&b, 'c'), BR_OK));
    cr_assert(eq(sz, b.len, 100));
    cr_assert(b.cap <= 101, "cap %zu for max 100", b.cap);
    br_buf_fini(&b);
}

Test(buf, default_max_rejects_absurd_sizes)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(eq(int, br_buf_append_str(&b, "x"), BR_OK));
    cr_assert(eq(int, br_buf_reserve(&b, SIZE_MAX), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_reserve(&b, SIZE_MAX / 2), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_reserve(&b, SIZE_MAX - 1), BR_ETOOBIG));
    cr_assert(eq(sz, b.len, 1));
    br_buf_fini(&b);
}

Test(buf, max_of_size_max_cannot_wrap_around)
{
    br_buf b;
    br_buf_init(&b, SIZE_MAX);
    cr_assert(eq(int, br_buf_reserve(&b, SIZE_MAX), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_reserve(&b, SIZE_MAX - 1), BR_ETOOBIG));
    cr_assert(eq(int, br_buf_append_str(&b, "ok"), BR_OK));
    cr_assert(eq(int, br_buf_reserve(&b, SIZE_MAX - 2), BR_ETOOBIG));
    cr_assert(eq(str, (char *)b.data, "ok"));
    br_buf_fini(&b);
}

Test(buf, reset_keeps_memory)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(eq(int, br_buf_append_str(&b, "some text"), BR_OK));
    uint8_t *data = b.data;
    size_t cap = b.cap;
    br_buf_reset(&b);
    cr_assert(eq(sz, b.len, 0));
    cr_assert(eq(ptr, b.data, data));
    cr_assert(eq(sz, b.cap, cap));
    cr_assert(eq(str, (char *)b.data, ""));
    cr_assert(eq(int, br_buf_append_str(&b, "new"), BR_OK));
    cr_assert(eq(str, (char *)b.data, "new"));
    br_buf_fini(&b);

    br_buf e;
    br_buf_init(&e, 0);
    br_buf_reset(&e); /* on a never-grown buffer */
    cr_assert(e.data == NULL);
}

Test(buf, steal_hands_over_the_bytes_and_empties_the_buffer)
{
    br_buf b;
    br_buf_init(&b, 50);
    cr_assert(eq(int, br_buf_printf(&b, "%s=%d", "n", 5), BR_OK));
    size_t len = 0;
    uint8_t *p = br_buf_steal(&b, &len);
    cr_assert(p != NULL);
    cr_assert(eq(sz, len, 3));
    cr_assert(eq(str, (char *)p, "n=5"), "stolen bytes stay NUL-terminated");
    cr_assert(b.data == NULL);
    cr_assert(eq(sz, b.len, 0));
    cr_assert(eq(sz, b.cap, 0));
    cr_assert(eq(sz, b.max, 50), "the maximum survives a steal");

    cr_assert(eq(int, br_buf_append_str(&b, "again"), BR_OK));
    cr_assert(eq(str, (char *)b.data, "again"));
    br_free(p);
    br_buf_fini(&b);
}

Test(buf, steal_of_a_never_grown_buffer_gives_null_and_zero)
{
    br_buf b;
    br_buf_init(&b, 0);
    size_t len = 99;
    cr_assert(br_buf_steal(&b, &len) == NULL);
    cr_assert(eq(sz, len, 0));
    cr_assert(br_buf_steal(&b, NULL) == NULL);
}

Test(buf, fini_is_idempotent_and_allows_reuse)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(eq(int, br_buf_append_str(&b, "abc"), BR_OK));
    br_buf_fini(&b);
    br_buf_fini(&b);
    cr_assert(b.data == NULL);
    br_buf_init(&b, 4);
    cr_assert(eq(int, br_buf_append_str(&b, "abcd"), BR_OK));
    br_buf_fini(&b);
}

Test(buf, allocation_failure_on_first_growth_is_enomem)
{
    br_buf b;
    br_buf_init(&b, 0);
    br_alloc_fail_after(0);
    cr_assert(eq(int, br_buf_append_str(&b, "x"), BR_ENOMEM));
    cr_assert(eq(int, br_buf_printf(&b, "%d", 1), BR_ENOMEM));
    br_alloc_fail_after(-1);
    cr_assert(b.data == NULL);
    cr_assert(eq(sz, b.len, 0));
    cr_assert(eq(sz, b.cap, 0));
    br_buf_fini(&b);
}

Test(buf, allocation_failure_while_growing_keeps_the_old_contents)
{
    char big[1000];
    memset(big, 'g', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(eq(int, br_buf_append_str(&b, "kept"), BR_OK));
    size_t cap = b.cap;
    br_alloc_fail_after(0);
    cr_assert(eq(int, br_buf_append_str(&b, big), BR_ENOMEM));
    cr_assert(eq(int, br_buf_printf(&b, "%s", big), BR_ENOMEM));
    cr_assert(eq(int, br_buf_reserve(&b, 5000), BR_ENOMEM));
    /* Appends that fit in the current capacity need no allocation. */
    cr_assert(eq(int, br_buf_append_str(&b, "+"), BR_OK));
    br_alloc_fail_after(-1);
    cr_assert(eq(sz, b.len, 5));
    cr_assert(eq(sz, b.cap, cap));
    cr_assert(eq(str, (char *)b.data, "kept+"));
    br_buf_fini(&b);
}

Test(buf, torture_every_allocation_of_a_growing_buffer)
{
    /* Fill a buffer with 5000 bytes, failing the Nth allocation for every N. */
    br_alloc_fail_after(-1);
    br_buf ref;
    br_buf_init(&ref, 0);
    for (int i = 0; i < 5000; i++)
        cr_assert(eq(int, br_buf_append_byte(&ref, 'r'), BR_OK));
    long total = br_alloc_count();
    br_buf_fini(&ref);
    cr_assert(total > 1);

    for (long n = 0; n < total; n++) {
        br_buf b;
        br_buf_init(&b, 0);
        br_alloc_fail_after(n);
        br_err e = BR_OK;
        int i = 0;
        for (; i < 5000 && e == BR_OK; i++)
            e = br_buf_append_byte(&b, 'r');
        br_alloc_fail_after(-1);
        cr_assert(eq(int, e, BR_ENOMEM), "n=%ld", n);
        cr_assert(eq(sz, b.len, (size_t)(i - 1)));
        br_buf_fini(&b);
    }
}
