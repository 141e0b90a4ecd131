/* env.c — the real environment (clocks, random bytes, timers) and the timer queue. */
#include "barrel/env.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "barrel/alloc.h"

struct timer {
    uint64_t deadline;
    uint64_t id; /* also the insertion order */
    br_timer_fn fn;
    void *arg;
};

struct br_timerq {
    struct timer *heap;
    size_t n, cap;
    uint64_t next_id;
};

br_err br_timerq_new(br_timerq **out)
{
    br_timerq *q = br_calloc(1, sizeof *q);
    if (!q)
        return BR_ENOMEM;
    q->next_id = 1;
    *out = q;
    return BR_OK;
}

void br_timerq_free(br_timerq *q)
{
    if (!q)
        return;
    br_free(q->heap);
    br_free(q);
}

static int before(const struct timer *a, const struct timer *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->id < b->id);
}

static void swap(struct timer *a, struct timer *b)
{
    struct timer t = *a;
    *a = *b;
    *b = t;
}

static void sift_up(br_timerq *q, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&q->heap[i], &q->heap[p]))
            break;
        swap(&q->heap[i], &q->heap[p]);
        i = p;
    }
}

static void sift_down(br_timerq *q, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->n && before(&q->heap[l], &q->heap[m]))
            m = l;
        if (r < q->n && before(&q->heap[r], &q->heap[m]))
            m = r;
        if (m == i)
            return;
        swap(&q->heap[i], &q->heap[m]);
        i = m;
    }
}

br_err br_timerq_add(br_timerq *q, uint64_t deadline, br_timer_fn fn, void *arg, uint64_t *id)
{
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 16;
        struct timer *h = br_realloc(q->heap, ncap * sizeof *h);
        if (!h)
            return BR_ENOMEM;
        q->heap = h;
        q->cap = ncap;
    }
    struct timer t = {deadline, q->next_id++, fn, arg};
    q->heap[q->n] = t;
    sift_up(q, q->n++);
    if (id)
        *id = t.id;
    return BR_OK;
}

void br_timerq_cancel(br_timerq *q, uint64_t id)
{
    for (size_t i = 0; i < q->n; i++) {
        if (q->heap[i].id != id)
            continue;
        q->heap[i] = q->heap[--q->n];
        if (i < q->n) {
            sift_up(q, i);
            sift_down(q, i);
        }
        return;
    }
}

int br_timerq_next(const br_timerq *q, uint64_t *deadline)
{
    if (q->n == 0)
        return 0;
    *deadline = q->heap[0].deadline;
    return 1;
}

size_t br_timerq_run(br_timerq *q, uint64_t now)
{
    size_t ran = 0;
    while (q->n > 0 && q->heap[0].deadline <= now) {
        struct timer t = q->heap[0];
        q->heap[0] = q->heap[--q->n];
        if (q->n)
            sift_down(q, 0);
        t.fn(t.arg);
        ran++;
    }
    return ran;
}

/* ---- the real environment ---- */

static uint64_t real_wall_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t real_mono_ns(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void real_random(void *ctx, void *buf, size_t n)
{
    (void)ctx;
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* no entropy source: nothing safe to do */
        }
        p += r;
        n -= (size_t)r;
    }
}

static pthread_once_t timers_once = PTHREAD_ONCE_INIT;
static br_timerq *default_timers;

static void timers_init(void)
{
    if (br_timerq_new(&default_timers) != BR_OK)
        abort();
}

static br_err real_timer_add(void *ctx, uint64_t delay_ms, br_timer_fn fn, void *arg, uint64_t *id)
{
    (void)ctx;
    pthread_once(&timers_once, timers_init);
    uint64_t now = real_mono_ns(NULL) / 1000000u;
    /* Saturate: a huge delay ("never") must not wrap around into the past. */
    uint64_t deadline = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
    return br_timerq_add(default_timers, deadline, fn, arg, id);
}

static void real_timer_cancel(void *ctx, uint64_t id)
{
    (void)ctx;
    pthread_once(&timers_once, timers_init);
    br_timerq_cancel(default_timers, id);
}

int64_t br_env_run_timers(void)
{
    pthread_once(&timers_once, timers_init);
    uint64_t now = real_mono_ns(NULL) / 1000000u;
    br_timerq_run(default_timers, now);
    uint64_t next;
    if (!br_timerq_next(default_timers, &next))
        return -1;
    now = real_mono_ns(NULL) / 1000000u;
    if (next <= now)
        return 0;
    return next - now > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)(next - now);
}

static const struct br_env real_env = {
    .ctx = NULL,
    .wall_ms = real_wall_ms,
    .mono_ns = real_mono_ns,
    .random = real_random,
    .timer_add = real_timer_add,
    .timer_cancel = real_timer_cancel,
};

const struct br_env *br_env_default(void)
{
    return &real_env;
}
