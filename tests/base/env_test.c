/* env_test.c — the timer queue (order, ties, cancel, re-entrant adds) and the default env. */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "barrel/alloc.h"
#include "barrel/env.h"

/* Each callback appends its tag here; Criterion runs every test in a fresh process. */
static int fired[4096];
static size_t nfired;

static void record(void *arg)
{
    cr_assert(nfired < sizeof fired / sizeof fired[0]);
    fired[nfired++] = (int)(intptr_t)arg;
}

static void *tag(int t)
{
    return (void *)(intptr_t)t;
}

static br_timerq *new_queue(void)
{
    br_timerq *q = NULL;
    cr_assert(eq(int, br_timerq_new(&q), BR_OK));
    cr_assert(q != NULL);
    return q;
}

static void add(br_timerq *q, uint64_t deadline, int t, uint64_t *id)
{
    cr_assert(eq(int, br_timerq_add(q, deadline, record, tag(t), id), BR_OK));
}

Test(timerq, empty_queue_has_no_deadline_and_runs_nothing)
{
    br_timerq *q = new_queue();
    uint64_t d = 12345;
    cr_assert(eq(int, br_timerq_next(q, &d), 0));
    cr_assert(eq(u64, d, 12345), "deadline untouched when nothing is pending");
    cr_assert(eq(sz, br_timerq_run(q, UINT64_MAX), 0));
    br_timerq_free(q);
    br_timerq_free(NULL);
}

Test(timerq, runs_in_deadline_order)
{
    br_timerq *q = new_queue();
    add(q, 30, 3, NULL);
    add(q, 10, 1, NULL);
    add(q, 50, 5, NULL);
    add(q, 20, 2, NULL);
    add(q, 40, 4, NULL);
    cr_assert(eq(sz, br_timerq_run(q, 100), 5));
    cr_assert(eq(sz, nfired, 5));
    for (int i = 0; i < 5; i++)
        cr_assert(eq(int, fired[i], i + 1));
    br_timerq_free(q);
}

Test(timerq, ties_run_in_insertion_order)
{
    br_timerq *q = new_queue();
    for (int i = 0; i < 50; i++)
        add(q, 7, i, NULL);
    cr_assert(eq(sz, br_timerq_run(q, 7), 50));
    for (int i = 0; i < 50; i++)
        cr_assert(eq(int, fired[i], i), "position %d", i);
    br_timerq_free(q);
}

Test(timerq, many_timers_come_out_sorted_with_stable_ties)
{
    /* 2000 timers over 37 distinct deadlines (many ties), added in a scrambled order; the
     * output must be sorted by deadline, and by insertion within a deadline. */
    enum { N = 2000 };
    static uint64_t deadline_of[N];
    br_timerq *q = new_queue();
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        deadline_of[i] = (x >> 16) % 37;
        add(q, deadline_of[i], i, NULL);
    }
    cr_assert(eq(sz, br_timerq_run(q, 36), N));
    cr_assert(eq(sz, nfired, N));
    for (size_t i = 1; i < N; i++) {
        uint64_t a = deadline_of[fired[i - 1]], b = deadline_of[fired[i]];
        cr_assert(a < b || (a == b && fired[i - 1] < fired[i]), "out of order at %zu", i);
    }
    br_timerq_free(q);
}

Test(timerq, runs_only_due_timers)
{
    br_timerq *q = new_queue();
    add(q, 100, 1, NULL);
    add(q, 200, 2, NULL);
    add(q, 300, 3, NULL);
    cr_assert(eq(sz, br_timerq_run(q, 99), 0));
    cr_assert(eq(sz, br_timerq_run(q, 200), 2), "deadline == now is due");
    uint64_t d = 0;
    cr_assert(eq(int, br_timerq_next(q, &d), 1));
    cr_assert(eq(u64, d, 300));
    cr_assert(eq(sz, br_timerq_run(q, 299), 0));
    cr_assert(eq(sz, br_timerq_run(q, 1000), 1));
    cr_assert(eq(int, br_timerq_next(q, &d), 0));
    cr_assert(eq(sz, nfired, 3));
    br_timerq_free(q);
}

Test(timerq, next_reports_the_earliest_deadline)
{
    br_timerq *q = new_queue();
    uint64_t d = 0;
    add(q, 500, 1, NULL);
    cr_assert(eq(int, br_timerq_next(q, &d), 1));
    cr_assert(eq(u64, d, 500));
    add(q, 90, 2, NULL);
    cr_assert(eq(int, br_timerq_next(q, &d), 1));
    cr_assert(eq(u64, d, 90));
    add(q, 700, 3, NULL);
    cr_assert(eq(int, br_timerq_next(q, &d), 1));
    cr_assert(eq(u64, d, 90));
    add(q, 0, 4, NULL);
    cr_assert(eq(int, br_timerq_next(q, &d), 1));
    cr_assert(eq(u64, d, 0));
    br_timerq_free(q);
}

Test(timerq, ids_are_distinct_and_optional)
{
    br_timerq *q = new_queue();
    uint64_t a = 0, b = 0, c = 0;
    add(q, 1, 1, &a);
    add(q, 1, 2, &b);
    add(q, 1, 3, NULL);
    add(q, 1, 4, &c);
    cr_assert(a != b && b != c && a != c);
    br_timerq_free(q);
}

Test(timerq, cancel_removes_a_pending_timer)
{
    br_timerq *q = new_queue();
    uint64_t ids[8];
    for (int i = 0; i < 8; i++)
        add(q, (uint64_t)(10 * (i + 1)), i, &ids[i]);
    br_timerq_cancel(q, ids[3]);
    br_timerq_cancel(q, ids[0]); /* the earliest: next must move on */
    br_timerq_cancel(q, ids[7]); /* the last slot of the heap */
    uint64_t d = 0;
    cr_assert(eq(int, br_timerq_next(q, &d), 1));
    cr_assert(eq(u64, d, 20));
    cr_assert(eq(sz, br_timerq_run(q, 1000), 5));
    const int want[] = {1, 2, 4, 5, 6};
    cr_assert(eq(sz, nfired, 5));
    for (size_t i = 0; i < 5; i++)
        cr_assert(eq(int, fired[i], want[i]));
    br_timerq_free(q);
}

Test(timerq, cancel_of_unknown_fired_or_cancelled_ids_is_ignored)
{
    br_timerq *q = new_queue();
    uint64_t a = 0, b = 0;
    add(q, 1, 1, &a);
    add(q, 5, 2, &b);
    br_timerq_cancel(q, 999999);
    br_timerq_cancel(q, 0);
    cr_assert(eq(sz, br_timerq_run(q, 1), 1));
    br_timerq_cancel(q, a); /* already fired */
    br_timerq_cancel(q, b);
    br_timerq_cancel(q, b); /* twice */
    cr_assert(eq(sz, br_timerq_run(q, 100), 0));
    cr_assert(eq(sz, nfired, 1));
    br_timerq_free(q);
}

Test(timerq, cancel_keeps_order_of_the_rest)
{
    br_timerq *q = new_queue();
    uint64_t ids[300];
    uint32_t x = 777;
    static uint64_t deadline_of[300];
    for (int i = 0; i < 300; i++) {
        x = x * 1664525u + 1013904223u;
        deadline_of[i] = (x >> 8) % 50;
        add(q, deadline_of[i], i, &ids[i]);
    }
    for (int i = 0; i < 300; i += 3)
        br_timerq_cancel(q, ids[i]);
    cr_assert(eq(sz, br_timerq_run(q, 100), 200));
    for (size_t i = 0; i < nfired; i++) {
        cr_assert(fired[i] % 3 != 0, "cancelled timer %d ran", fired[i]);
        if (i > 0) {
            uint64_t a = deadline_of[fired[i - 1]], b = deadline_of[fired[i]];
            cr_assert(a < b || (a == b && fired[i - 1] < fired[i]), "out of order at %zu", i);
        }
    }
    br_timerq_free(q);
}

/* ---- callbacks that use the queue ---- */

struct reentry {
    br_timerq *q;
    uint64_t deadline; /* deadline of the timer this callback adds */
    int tag;
    uint64_t cancel_id;
};

static void add_another(void *arg)
{
    struct reentry *r = arg;
    record(tag(100));
    cr_assert(eq(int, br_timerq_add(r->q, r->deadline, record, tag(r->tag), NULL), BR_OK));
}

static void cancel_another(void *arg)
{
    struct reentry *r = arg;
    record(tag(200));
    br_timerq_cancel(r->q, r->cancel_id);
}

Test(timerq, timer_added_by_a_callback_runs_in_the_same_call_if_due)
{
    br_timerq *q = new_queue();
    struct reentry r = {.q = q, .deadline = 10, .tag = 7};
    cr_assert(eq(int, br_timerq_add(q, 10, add_another, &r, NULL), BR_OK));
    add(q, 10, 1, NULL);
    /* add_another (10, first), then 1 (10, second), then 7 (10, added last). */
    cr_assert(eq(sz, br_timerq_run(q, 10), 3));
    cr_assert(eq(sz, nfired, 3));
    cr_assert(eq(int, fired[0], 100));
    cr_assert(eq(int, fired[1], 1));
    cr_assert(eq(int, fired[2], 7));
    br_timerq_free(q);
}

Test(timerq, timer_added_by_a_callback_for_later_waits)
{
    br_timerq *q = new_queue();
    struct reentry r = {.q = q, .deadline = 60, .tag = 9};
    cr_assert(eq(int, br_timerq_add(q, 10, add_another, &r, NULL), BR_OK));
    cr_assert(eq(sz, br_timerq_run(q, 50), 1));
    uint64_t d = 0;
    cr_assert(eq(int, br_timerq_next(q, &d), 1));
    cr_assert(eq(u64, d, 60));
    cr_assert(eq(sz, br_timerq_run(q, 60), 1));
    cr_assert(eq(int, fired[1], 9));
    br_timerq_free(q);
}

Test(timerq, callback_can_cancel_a_due_timer)
{
    br_timerq *q = new_queue();
    struct reentry r = {.q = q};
    cr_assert(eq(int, br_timerq_add(q, 5, cancel_another, &r, NULL), BR_OK));
    add(q, 5, 1, &r.cancel_id);
    add(q, 6, 2, NULL);
    cr_assert(eq(sz, br_timerq_run(q, 10), 2));
    cr_assert(eq(sz, nfired, 2));
    cr_assert(eq(int, fired[0], 200));
    cr_assert(eq(int, fired[1], 2));
    br_timerq_free(q);
}

Test(timerq, add_fails_cleanly_without_memory)
{
    br_timerq *q = NULL;
    br_alloc_fail_after(0);
    cr_assert(eq(int, br_timerq_new(&q), BR_ENOMEM));
    cr_assert(q == NULL, "out-parameter untouched on error");
    br_alloc_fail_after(-1);

    q = new_queue();
    uint64_t id = 42;
    br_alloc_fail_after(0);
    cr_assert(eq(int, br_timerq_add(q, 1, record, tag(1), &id), BR_ENOMEM));
    br_alloc_fail_after(-1);
    cr_assert(eq(u64, id, 42));
    uint64_t d;
    cr_assert(eq(int, br_timerq_next(q, &d), 0));

    /* Growing past the first block: a failed add keeps what was queued. */
    for (int i = 0; i < 16; i++)
        add(q, (uint64_t)i, i, NULL);
    br_alloc_fail_after(0);
    cr_assert(eq(int, br_timerq_add(q, 0, record, tag(99), NULL), BR_ENOMEM));
    br_alloc_fail_after(-1);
    cr_assert(eq(sz, br_timerq_run(q, 100), 16));
    for (int i = 0; i < 16; i++)
        cr_assert(eq(int, fired[i], i));
    br_timerq_free(q);
}

Test(timerq, free_drops_pending_timers)
{
    br_timerq *q = new_queue();
    for (int i = 0; i < 40; i++)
        add(q, 1000, i, NULL);
    br_timerq_free(q); /* ASan's leak check verifies nothing is left */
    cr_assert(eq(sz, nfired, 0));
}

/* ---- the default environment ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

Test(env, default_env_is_complete)
{
    const struct br_env *e = br_env_default();
    cr_assert(e != NULL);
    cr_assert(e->wall_ms && e->mono_ns && e->random && e->timer_add && e->timer_cancel);
    cr_assert(eq(ptr, (void *)br_env_default(), (void *)e), "one process-wide env");
}

Test(env, mono_clock_is_positive_and_never_goes_back)
{
    const struct br_env *e = br_env_default();
    uint64_t prev = br_env_mono_ns(e);
    cr_assert(prev > 0);
    for (int i = 0; i < 100000; i++) {
        uint64_t now = br_env_mono_ns(e);
        cr_assert(now >= prev, "went back from %lu to %lu", (unsigned long)prev,
                  (unsigned long)now);
        prev = now;
    }
    uint64_t before = br_env_mono_ns(e);
    sleep_ms(5);
    uint64_t after = br_env_mono_ns(e);
    cr_assert(after - before >= 4000000u, "5 ms sleep measured as %lu ns",
              (unsigned long)(after - before));
}

Test(env, wall_clock_is_in_milliseconds_since_the_epoch)
{
    const struct br_env *e = br_env_default();
    uint64_t ms = br_env_wall_ms(e);
    uint64_t secs = (uint64_t)time(NULL);
    cr_assert(ms > UINT64_C(1577836800000), "before 2020: %lu", (unsigned long)ms);
    cr_assert(ms / 1000 + 2 >= secs && ms / 1000 <= secs + 2, "wall_ms %lu vs time() %lu",
              (unsigned long)ms, (unsigned long)secs);
}

Test(env, random_fills_exactly_the_buffer)
{
    const struct br_env *e = br_env_default();
    uint8_t buf[4096 + 16];
    memset(buf, 0xee, sizeof buf);
    br_env_random(e, buf + 8, 4096);
    for (int i = 0; i < 8; i++) {
        cr_assert(eq(u8, buf[i], 0xee), "wrote before the buffer");
        cr_assert(eq(u8, buf[8 + 4096 + i], 0xee), "wrote past the buffer");
    }
    size_t counts[256] = {0};
    for (size_t i = 8; i < 8 + 4096; i++)
        counts[buf[i]]++;
    for (int v = 0; v < 256; v++) /* mean 16; a fair source stays far below 80 */
        cr_assert(counts[v] < 80, "byte %d appears %zu times in 4096", v, counts[v]);

    br_env_random(e, buf, 0); /* nothing to do, must not crash */
}

Test(env, random_draws_differ)
{
    const struct br_env *e = br_env_default();
    uint8_t a[32], b[32];
    br_env_random(e, a, sizeof a);
    br_env_random(e, b, sizeof b);
    cr_assert(memcmp(a, b, sizeof a) != 0);
    static uint8_t big[1 << 20];
    br_env_random(e, big, sizeof big);
    size_t zeros = 0;
    for (size_t i = 0; i < sizeof big; i++)
        zeros += big[i] == 0;
    cr_assert(zeros < sizeof big / 128, "%zu zero bytes in 1 MiB", zeros);
}

Test(env, default_timers_run_through_run_timers)
{
    const struct br_env *e = br_env_default();
    cr_assert(eq(i64, br_env_run_timers(), -1), "nothing pending");

    uint64_t id_now = 0, id_later = 0;
    cr_assert(eq(int, e->timer_add(e->ctx, 0, record, tag(1), &id_now), BR_OK));
    cr_assert(eq(int, e->timer_add(e->ctx, 60000, record, tag(2), &id_later), BR_OK));
    int64_t wait = br_env_run_timers();
    cr_assert(eq(sz, nfired, 1));
    cr_assert(eq(int, fired[0], 1));
    cr_assert(wait > 50000 && wait <= 60000, "next timer in %ld ms", (long)wait);

    e->timer_cancel(e->ctx, id_later);
    cr_assert(eq(i64, br_env_run_timers(), -1));

    cr_assert(eq(int, e->timer_add(e->ctx, 20, record, tag(3), NULL), BR_OK));
    sleep_ms(30);
    cr_assert(eq(i64, br_env_run_timers(), -1));
    cr_assert(eq(sz, nfired, 2));
    cr_assert(eq(int, fired[1], 3));
}

Test(env, huge_delays_do_not_wrap_around)
{
    const struct br_env *e = br_env_default();
    uint64_t id = 0;
    cr_assert(eq(int, e->timer_add(e->ctx, UINT64_MAX, record, tag(1), &id), BR_OK));
    cr_assert(eq(int, e->timer_add(e->ctx, UINT64_MAX - 5, record, tag(2), NULL), BR_OK));
    int64_t wait = br_env_run_timers();
    cr_assert(eq(sz, nfired, 0), "a timer for 'never' fired at once");
    cr_assert(wait > 0, "wait %ld must be positive", (long)wait);
}
