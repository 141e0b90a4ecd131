/* env.h — the environment seam: time, randomness and timers reach barrel only through here.
 *
 * Like SQLite's VFS, struct br_env is a table of function pointers. Production uses
 * br_env_default() (the real clocks, the kernel's random bytes, and a timer queue that the
 * owning event loop drives with br_env_run_timers()); the simulator supplies a virtual clock, a
 * seeded PRNG and its own timer queue, so a run is a pure function of its seed. No module calls
 * time(), clock_gettime() or rand() itself. */
#ifndef BARREL_ENV_H
#define BARREL_ENV_H

#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

typedef void (*br_timer_fn)(void *arg);

struct br_env {
    void *ctx;
    /* Wall clock: milliseconds since the Unix epoch. May jump. Thread: any. */
    uint64_t (*wall_ms)(void *ctx);
    /* Monotonic clock in nanoseconds, for durations and deadlines. Thread: any. */
    uint64_t (*mono_ns)(void *ctx);
    /* Fill buf with n random bytes (cryptographic quality in production). Thread: any. */
    void (*random)(void *ctx, void *buf, size_t n);
    /* Call fn(arg) once, delay_ms from now, on the thread that drives the timers. Writes an id
     * for timer_cancel into *id. Thread: the driving thread. */
    br_err (*timer_add)(void *ctx, uint64_t delay_ms, br_timer_fn fn, void *arg, uint64_t *id);
    /* Cancel a timer that has not fired; unknown ids are ignored. Thread: the driving thread. */
    void (*timer_cancel)(void *ctx, uint64_t id);
};

/* The process-wide real environment. Its timers are driven by br_env_run_timers(). */
const struct br_env *br_env_default(void);

/* Run the default environment's due timers; return the delay in ms until the next one, or -1
 * if none is pending. Thread: the one thread that drives the default timers (the event loop). */
int64_t br_env_run_timers(void);

static inline uint64_t br_env_wall_ms(const struct br_env *e)
{
    return e->wall_ms(e->ctx);
}
static inline uint64_t br_env_mono_ns(const struct br_env *e)
{
    return e->mono_ns(e->ctx);
}
static inline void br_env_random(const struct br_env *e, void *buf, size_t n)
{
    e->random(e->ctx, buf, n);
}

/* A timer queue (binary heap ordered by deadline, then insertion): the building block of both
 * the default environment and the simulator's. Not thread-safe. */
typedef struct br_timerq br_timerq;
BR_NODISCARD br_err br_timerq_new(br_timerq **out);
void br_timerq_free(br_timerq *q); /* NULL is a no-op; pending timers are dropped */
BR_NODISCARD br_err br_timerq_add(br_timerq *q, uint64_t deadline, br_timer_fn fn, void *arg,
                                  uint64_t *id);
void br_timerq_cancel(br_timerq *q, uint64_t id);
/* Deadline of the earliest pending timer into *deadline; 0 if none is pending, else 1. */
int br_timerq_next(const br_timerq *q, uint64_t *deadline);
/* Pop and run every timer with deadline <= now, earliest first (ties in insertion order);
 * timers added by callbacks with deadline <= now run in the same call. Returns how many ran. */
size_t br_timerq_run(br_timerq *q, uint64_t now);

#endif
