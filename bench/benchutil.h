/* benchutil.h — what the C benchmarks share: fatal errors, checked allocation, clocks, peak
 * memory, the load average (figures taken on a busy machine say so), a fixed-seed PRNG, a
 * recursive remove for their scratch directories, and a sort comparator. Benchmarks only. */
#ifndef BARREL_BENCH_BENCHUTIL_H
#define BARREL_BENCH_BENCHUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

/* The program name prefixed to die() and rm_rf() messages ("store_bench"); set it first. */
extern const char *bench_prog;

void die(const char *fmt, ...) BR_PRINTF(1, 2);
void *xcalloc(size_t n, size_t size); /* dies when out of memory */
uint64_t now_ns(void);                /* CLOCK_MONOTONIC */
uint64_t cpu_ns(void);                /* the process's user + system CPU */
long peak_rss_kb(void);               /* ru_maxrss */
long vm_hwm_kb(void);                 /* VmHWM from /proc/self/status, or -1 */
double loadavg1(void);                /* the 1-minute load average, or -1 */
uint64_t rnd_next(uint64_t *s);       /* splitmix64 */
void rm_rf(const char *path);         /* errors are printed, not fatal */
int cmp_u64(const void *a, const void *b);

#endif
