/* alloc.h — barrel's allocation functions and the hook that tests use to fail them.
 *
 * All barrel code allocates through br_malloc/br_calloc/br_realloc/br_free so that allocation
 * torture tests can fail the Nth allocation (br_alloc_fail_after) and check that every path
 * returns BR_ENOMEM cleanly. Memory handed to us by a library (RocksDB values, jansson objects)
 * is freed with that library's function, not br_free. */
#ifndef BARREL_ALLOC_H
#define BARREL_ALLOC_H

#include <stddef.h>

void *br_malloc(size_t n);
void *br_calloc(size_t count, size_t n); /* checks count*n for overflow */
void *br_realloc(void *p, size_t n);
void br_free(void *p); /* NULL is a no-op */
char *br_strdup(const char *s);
char *br_strndup(const char *s, size_t n); /* copies n bytes, adds a NUL */
void *br_memdup(const void *p, size_t n);

/* Torture hook: after `n` more successful allocations, every allocation fails until reset
 * with br_alloc_fail_after(-1). Counts per process; meant for single-threaded tests.
 * Thread: any, but only meaningful in a test that controls all allocating threads. */
void br_alloc_fail_after(long n);
/* The same, but only that one allocation fails: the ones after it succeed again (what code that
 * ignores a failure and carries on would meet). br_alloc_fail_after(-1) also disarms it. */
void br_alloc_fail_once(long n);
/* Number of allocations made (failed ones included) since the last br_alloc_fail_after() or
 * br_alloc_fail_once() call; 0 in a process that never called either (allocations are counted
 * only from the first such call on, so that production pays no shared atomic per allocation). */
long br_alloc_count(void);

#endif
