/* alloc.c — allocation wrappers with a failure-injection counter for torture tests. */
#include "barrel/alloc.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_after = -1; /* <0: never fail */
static atomic_bool fail_once;       /* disarm after the one failure */
static atomic_long count;
/* Set by the first br_alloc_fail_after / br_alloc_fail_once call. Until then (a process that
 * is no torture test: every production one) an allocation costs one relaxed load here, not an
 * atomic add on a counter every thread shares (its cache line bounced between the writer and
 * the delivery thread, and the locked add was most of the hook's cost, bench/store_bench.c). */
static atomic_bool armed;

static int should_fail(void)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    atomic_fetch_add(&count, 1);
    long f = atomic_load(&fail_after);
    if (f < 0)
        return 0;
    if (f == 0) {
        if (atomic_load(&fail_once))
            atomic_store(&fail_after, -1);
        return 1;
    }
    atomic_fetch_sub(&fail_after, 1);
    return 0;
}

void br_alloc_fail_after(long n)
{
    atomic_store(&armed, true);
    atomic_store(&count, 0);
    atomic_store(&fail_once, false);
    atomic_store(&fail_after, n);
}

void br_alloc_fail_once(long n)
{
    atomic_store(&armed, true);
    atomic_store(&count, 0);
    atomic_store(&fail_once, true);
    atomic_store(&fail_after, n);
}

long br_alloc_count(void)
{
    return atomic_load(&count);
}

void *br_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *br_calloc(size_t count_, size_t n)
{
    if (n && count_ > SIZE_MAX / n)
        return NULL;
    if (should_fail())
        return NULL;
    if (count_ == 0 || n == 0) /* a zero-size request gets a unique, freeable pointer */
        return calloc(1, 1);
    return calloc(count_, n);
}

void *br_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void br_free(void *p)
{
    free(p);
}

char *br_strndup(const char *s, size_t n)
{
    if (n == SIZE_MAX) /* n + 1 would wrap to 0 */
        return NULL;
    char *d = br_malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *br_strdup(const char *s)
{
    return br_strndup(s, strlen(s));
}

void *br_memdup(const void *p, size_t n)
{
    void *d = br_malloc(n);
    if (d && n)
        memcpy(d, p, n);
    return d;
}
