/* idle.c — flush memtables and trim the heap once the store has been idle (see idle.h). */
#include "idle.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include <malloc.h>

#include "barrel/alloc.h"
#include "barrel/env.h"
#include "barrel/log.h"

#define TICK_MS 500

struct br_idle {
    br_store *s;
    uint64_t idle_ns;
    pthread_t t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
    atomic_uint flushes;
};

static void *idle_main(void *arg)
{
    br_idle *w = arg;
    const struct br_env *env = br_env_default();
    uint64_t seen = br_store_write_count(w->s), since = br_env_mono_ns(env);
    bool flushed = true; /* nothing to give back until something is written */
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts); /* the deadline clock of a condvar wait */
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        if (w->stop)
            break;
        uint64_t now = br_env_mono_ns(env), n = br_store_write_count(w->s);
        if (n != seen) {
            seen = n;
            since = now;
            flushed = false;
            continue;
        }
        if (flushed || now - since < w->idle_ns)
            continue;
        pthread_mutex_unlock(&w->mu);
        br_err e = br_store_flush(w->s);
        malloc_trim(0);
        atomic_fetch_add(&w->flushes, 1);
        br_log(BR_LOG_INFO, "node", "event=idle_flush ok=%d", e == BR_OK);
        pthread_mutex_lock(&w->mu);
        flushed = true;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

br_err br_idle_start(br_store *s, unsigned idle_s, br_idle **out)
{
    *out = NULL;
    if (!idle_s)
        return BR_OK;
    br_idle *w = br_calloc(1, sizeof *w);
    if (!w)
        return BR_ENOMEM;
    w->s = s;
    w->idle_ns = (uint64_t)idle_s * 1000000000ull;
    atomic_init(&w->flushes, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    if (pthread_create(&w->t, NULL, idle_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        br_free(w);
        return BR_ENOMEM;
    }
    *out = w;
    return BR_OK;
}

void br_idle_stop(br_idle *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->t, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    br_free(w);
}

unsigned br_idle_flushes(const br_idle *w)
{
    return w ? atomic_load(&((br_idle *)w)->flushes) : 0;
}
