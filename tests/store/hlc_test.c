/* hlc_test.c — the Hybrid Logical Clock: forms, order, local and receive rules, skew refusal,
 * counter overflow (BEHAVIOURS.md HLC-01..HLC-14; HLC-06 and HLC-15 are HTTP-level and tested
 * there). Physical time comes from a manual environment whose wall clock the test sets. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/alloc.h"
#include "barrel/hlc.h"
#include "barrel/log.h"

#include "testutil.h"

struct manual {
    uint64_t wall;
};

static uint64_t manual_wall(void *ctx)
{
    return ((struct manual *)ctx)->wall;
}

static uint64_t manual_mono(void *ctx)
{
    return ((struct manual *)ctx)->wall * 1000000u;
}

static void manual_random(void *ctx, void *buf, size_t n)
{
    (void)ctx;
    memset(buf, 0x5a, n);
}

static struct manual clk;
static const struct br_env menv = {
    .ctx = &clk,
    .wall_ms = manual_wall,
    .mono_ns = manual_mono,
    .random = manual_random,
};

static br_hlc_clock *new_clock(uint64_t wall, uint64_t max_skew)
{
    br_hlc_clock *c = NULL;
    clk.wall = wall;
    cr_assert_eq(br_hlc_clock_new(&menv, max_skew, &c), BR_OK);
    cr_assert_not_null(c);
    return c;
}

static struct br_hlc hlc_of(uint64_t w, uint32_t l)
{
    struct br_hlc h = {w, l};
    return h;
}

static void assert_hlc(struct br_hlc got, uint64_t w, uint32_t l)
{
    cr_assert(got.wall == w && got.logical == l, "got (%llu,%u), want (%llu,%u)",
              (unsigned long long)got.wall, got.logical, (unsigned long long)w, l);
}

/* HLC-01 */
Test(hlc, hlc01_clock_starts_with_default_and_custom_max_offset)
{
    br_hlc_clock *a = new_clock(1000, BR_HLC_DEFAULT_MAX_SKEW_MS);
    br_hlc_clock *b = new_clock(1000, 1000);
    br_hlc_clock *c = new_clock(1000, 0);
    assert_hlc(br_hlc_peek(a), 0, 0);
    cr_assert_eq(br_hlc_skew_rejections(b), 0);
    br_hlc_clock_free(a);
    br_hlc_clock_free(b);
    br_hlc_clock_free(c);
    br_hlc_clock_free(NULL);
    br_hlc_clock *d = NULL;
    cr_assert_eq(br_hlc_clock_new(NULL, 0, &d), BR_EINVAL);
    cr_assert_null(d);
}

/* HLC-01: allocation failure is clean. */
Test(hlc, hlc01_clock_new_enomem)
{
    br_hlc_clock *c = NULL;
    br_alloc_fail_after(0);
    br_err e = br_hlc_clock_new(&menv, 0, &c);
    br_alloc_fail_after(-1);
    cr_assert_eq(e, BR_ENOMEM);
    cr_assert_null(c);
}

/* HLC-02 */
Test(hlc, hlc02_now_positive_and_never_decreasing)
{
    br_hlc_clock *c = new_clock(1609459200000ull, 0);
    struct br_hlc prev = BR_HLC_MIN, h;
    /* Physical time moves forward, stalls, and jumps backwards. */
    static const int64_t steps[] = {0, 1, 0, 0, 5, -100, -1, 0, 200, -3000, 1, 1};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        clk.wall = (uint64_t)((int64_t)clk.wall + steps[i]);
        cr_assert_eq(br_hlc_now(c, &h), BR_OK);
        cr_assert_gt(h.wall, 0);
        cr_assert_gt(br_hlc_cmp(h, prev), 0, "step %zu went backwards", i);
        prev = h;
    }
    br_hlc_clock_free(c);
}

/* HLC-03 */
Test(hlc, hlc03_update_result_not_less_than_remote)
{
    br_hlc_clock *c = new_clock(5000, 1000);
    struct br_hlc out,
        remotes[] = {hlc_of(1, 0),    hlc_of(5000, 3),   hlc_of(5000, 0), hlc_of(5500, 7),
                     hlc_of(5500, 2), hlc_of(4999, 100), hlc_of(5900, 0)};
    for (size_t i = 0; i < sizeof remotes / sizeof remotes[0]; i++) {
        struct br_hlc before = br_hlc_peek(c);
        cr_assert_eq(br_hlc_update(c, remotes[i], &out), BR_OK);
        cr_assert_geq(br_hlc_cmp(out, remotes[i]), 0);
        cr_assert_gt(br_hlc_cmp(out, before), 0);
        assert_hlc(br_hlc_peek(c), out.wall, out.logical);
    }
    cr_assert_eq(br_hlc_update(c, hlc_of(1, 1), NULL), BR_OK); /* out may be NULL */
    br_hlc_clock_free(c);
}

/* HLC-04 */
Test(hlc, hlc04_peek_does_not_advance)
{
    br_hlc_clock *c = new_clock(42, 0);
    struct br_hlc a = br_hlc_peek(c), b = br_hlc_peek(c), n;
    cr_assert_eq(br_hlc_cmp(a, b), 0);
    cr_assert_eq(br_hlc_now(c, &n), BR_OK);
    cr_assert_neq(br_hlc_cmp(n, a), 0);
    cr_assert_eq(br_hlc_cmp(br_hlc_peek(c), n), 0);
    cr_assert_eq(br_hlc_cmp(br_hlc_peek(c), n), 0);
    br_hlc_clock_free(c);
}

/* HLC-05: A sends to B, B answers A; every receive is >= what was sent. The two clocks share
 * the manual time source but are independent clocks. */
Test(hlc, hlc05_exchange_preserves_causality)
{
    br_hlc_clock *a = new_clock(100, 0), *b = new_clock(100, 0);
    struct br_hlc sa, rb, sb, ra;
    for (int round = 0; round < 50; round++) {
        clk.wall = 100 + (uint64_t)(round % 7); /* a stalling clock forces logical ticks */
        cr_assert_eq(br_hlc_now(a, &sa), BR_OK);
        cr_assert_eq(br_hlc_update(b, sa, &rb), BR_OK);
        cr_assert_gt(br_hlc_cmp(rb, sa), 0);
        cr_assert_eq(br_hlc_now(b, &sb), BR_OK);
        cr_assert_gt(br_hlc_cmp(sb, rb), 0);
        cr_assert_eq(br_hlc_update(a, sb, &ra), BR_OK);
        cr_assert_gt(br_hlc_cmp(ra, sb), 0);
        cr_assert_gt(br_hlc_cmp(ra, sa), 0);
    }
    br_hlc_clock_free(a);
    br_hlc_clock_free(b);
}

/* HLC-07 */
Test(hlc, hlc07_binary_form_is_12_bytes_and_round_trips)
{
    uint8_t buf[BR_HLC_BYTES], zero[BR_HLC_BYTES] = {0}, ff[BR_HLC_BYTES];
    cr_assert_eq(BR_HLC_BYTES, 12);
    br_hlc_encode(BR_HLC_MIN, buf);
    cr_assert_eq(memcmp(buf, zero, sizeof buf), 0);
    assert_hlc(br_hlc_decode(buf), 0, 0);
    memset(ff, 0xff, sizeof ff);
    br_hlc_encode(BR_HLC_MAX, buf);
    cr_assert_eq(memcmp(buf, ff, sizeof buf), 0);
    assert_hlc(br_hlc_decode(buf), UINT64_MAX, UINT32_MAX);
    struct br_hlc h = hlc_of(0x0102030405060708ull, 0x090a0b0cu);
    br_hlc_encode(h, buf);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(buf[i], i + 1, "byte %d is big-endian", i);
    assert_hlc(br_hlc_decode(buf), h.wall, h.logical);
}

static const struct br_hlc ordered[] = {
    {0, 0},
    {0, 1},
    {0, 255},
    {0, 256},
    {1, 0},
    {255, 7},
    {256, 0},
    {1609459200000ull, 0},
    {1609459200000ull, 42},
    {1609459200001ull, 0},
    {UINT64_MAX - 1, UINT32_MAX},
    {UINT64_MAX, 0},
    {UINT64_MAX, UINT32_MAX},
};
#define N_ORDERED (sizeof ordered / sizeof ordered[0])

/* HLC-08 */
Test(hlc, hlc08_byte_order_equals_timestamp_order)
{
    for (size_t i = 0; i < N_ORDERED; i++) {
        for (size_t j = 0; j < N_ORDERED; j++) {
            uint8_t a[BR_HLC_BYTES], b[BR_HLC_BYTES];
            br_hlc_encode(ordered[i], a);
            br_hlc_encode(ordered[j], b);
            int m = memcmp(a, b, BR_HLC_BYTES);
            m = m < 0 ? -1 : m > 0;
            int want = i < j ? -1 : i > j;
            cr_assert_eq(m, want, "%zu vs %zu", i, j);
            cr_assert_eq(br_hlc_cmp(ordered[i], ordered[j]), want);
        }
    }
}

/* HLC-09 */
Test(hlc, hlc09_text_form_round_trips)
{
    char buf[BR_HLC_TEXT_MAX];
    struct br_hlc h;
    cr_assert_eq(br_hlc_parse("1609459200000:42", 16, &h), BR_OK);
    assert_hlc(h, 1609459200000ull, 42);
    cr_assert_eq(br_hlc_format(h, buf), 16);
    cr_assert_str_eq(buf, "1609459200000:42");
    size_t n = br_hlc_format(BR_HLC_MAX, buf);
    cr_assert_str_eq(buf, "18446744073709551615:4294967295");
    cr_assert_lt(n, BR_HLC_TEXT_MAX);
    cr_assert_eq(br_hlc_parse(buf, n, &h), BR_OK);
    assert_hlc(h, UINT64_MAX, UINT32_MAX);
    cr_assert_eq(br_hlc_format(BR_HLC_MIN, buf), 3);
    cr_assert_str_eq(buf, "0:0");
}

/* HLC-09 */
Test(hlc, hlc09_text_form_rejects_malformed)
{
    static const char *const bad[] = {"invalid",
                                      "not:a:number",
                                      "",
                                      ":",
                                      "1:",
                                      ":1",
                                      "1:2:3",
                                      "-1:2",
                                      "+1:2",
                                      "1:-2",
                                      " 1:2",
                                      "1:2 ",
                                      "1 :2",
                                      "1;2",
                                      "0x10:2",
                                      "1.5:2",
                                      "18446744073709551616:0",
                                      "99999999999999999999:0",
                                      "1:4294967296",
                                      "1:99999999999"};
    struct br_hlc h = hlc_of(7, 7);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(br_hlc_parse(bad[i], strlen(bad[i]), &h), BR_EINVAL, "'%s'", bad[i]);
        assert_hlc(h, 7, 7); /* untouched */
    }
    cr_assert_eq(br_hlc_parse("1:2\0", 4, &h), BR_EINVAL); /* embedded NUL */
    cr_assert_eq(br_hlc_parse("1:23", 3, &h), BR_OK);      /* length, not NUL, ends it */
    assert_hlc(h, 1, 2);
    cr_assert_eq(br_hlc_parse(NULL, 0, &h), BR_EINVAL); /* "not a string" */
}

/* HLC-10 */
Test(hlc, hlc10_compare_wall_first_then_logical)
{
    cr_assert_eq(br_hlc_cmp(hlc_of(1, 0), hlc_of(2, 0)), -1);
    cr_assert_eq(br_hlc_cmp(hlc_of(2, 0), hlc_of(1, 0)), 1);
    cr_assert_eq(br_hlc_cmp(hlc_of(1, 99), hlc_of(2, 0)), -1); /* wall dominates */
    cr_assert_eq(br_hlc_cmp(hlc_of(5, 1), hlc_of(5, 2)), -1);
    cr_assert_eq(br_hlc_cmp(hlc_of(5, 2), hlc_of(5, 1)), 1);
    cr_assert_eq(br_hlc_cmp(hlc_of(5, 2), hlc_of(5, 2)), 0);
}

/* HLC-11 */
Test(hlc, hlc11_min_below_real_below_max)
{
    br_hlc_clock *c = new_clock(1609459200000ull, 0);
    struct br_hlc h;
    uint8_t emin[12], eh[12], emax[12];
    cr_assert_eq(br_hlc_now(c, &h), BR_OK);
    cr_assert_eq(br_hlc_cmp(BR_HLC_MIN, h), -1);
    cr_assert_eq(br_hlc_cmp(h, BR_HLC_MAX), -1);
    br_hlc_encode(BR_HLC_MIN, emin);
    br_hlc_encode(h, eh);
    br_hlc_encode(BR_HLC_MAX, emax);
    cr_assert_lt(memcmp(emin, eh, 12), 0);
    cr_assert_lt(memcmp(eh, emax, 12), 0);
    br_hlc_clock_free(c);
}

/* HLC-12: the send/receive vector table of spec §4.3, max offset 1000 ms. */
Test(hlc, hlc12_vector_table)
{
    static const struct {
        uint64_t pt;
        bool recv;
        struct br_hlc remote;
        br_err err;
        struct br_hlc want;
    } rows[] = {
        {5, false, {0, 0}, BR_OK, {5, 0}},      {6, false, {0, 0}, BR_OK, {6, 0}},
        {10, true, {10, 5}, BR_OK, {10, 6}},    {7, false, {0, 0}, BR_OK, {10, 7}},
        {8, true, {10, 4}, BR_OK, {10, 8}},     {9, true, {1100, 888}, BR_ECLOCK, {10, 8}},
        {10, true, {10, 99}, BR_OK, {10, 100}}, {11, true, {10, 31}, BR_OK, {11, 0}},
        {11, false, {0, 0}, BR_OK, {11, 1}},
    };
    br_hlc_clock *c = new_clock(0, 1000);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct br_hlc out = hlc_of(12345, 6789);
        br_err e;
        clk.wall = rows[i].pt;
        if (rows[i].recv)
            e = br_hlc_update(c, rows[i].remote, &out);
        else
            e = br_hlc_now(c, &out);
        cr_assert_eq(e, rows[i].err, "row %zu", i);
        if (e == BR_OK)
            assert_hlc(out, rows[i].want.wall, rows[i].want.logical);
        else
            assert_hlc(out, 12345, 6789); /* not written on error */
        assert_hlc(br_hlc_peek(c), rows[i].want.wall, rows[i].want.logical);
    }
    cr_assert_eq(br_hlc_skew_rejections(c), 1);
    br_hlc_clock_free(c);
}

/* HLC-13 */
Test(hlc, hlc13_max_offset_rejects_then_zero_accepts)
{
    const uint64_t pt = 123456789;
    br_hlc_clock *c = new_clock(pt, 50);
    struct br_hlc before = br_hlc_peek(c), out;
    cr_assert_eq(br_hlc_update(c, hlc_of(pt + 51, 0), &out), BR_ECLOCK);
    assert_hlc(br_hlc_peek(c), before.wall, before.logical);
    cr_assert_eq(br_hlc_skew_rejections(c), 1);
    cr_assert_eq(br_hlc_update(c, hlc_of(pt + 50, 0), &out), BR_OK); /* exactly at the limit */
    assert_hlc(out, pt + 50, 1);
    br_hlc_clock_free(c);

    c = new_clock(pt, 0);
    cr_assert_eq(br_hlc_update(c, hlc_of(pt + 51, 0), &out), BR_OK);
    cr_assert_eq(out.wall, pt + 51);
    cr_assert_eq(br_hlc_skew_rejections(c), 0);
    br_hlc_clock_free(c);
}

static enum br_log_level old_level;

/* HLC-13 / Decisions §6: the default 300 s skew; a refusal is counted and logged as a warning,
 * and a far-future remote does not poison later receives. */
Test(hlc, hlc13_default_skew_refusal_counted_and_logged)
{
    const uint64_t pt = 1700000000000ull;
    br_hlc_clock *c = new_clock(pt, BR_HLC_DEFAULT_MAX_SKEW_MS);
    struct br_hlc out;
    old_level = br_log_get_level();
    br_log_set_level(BR_LOG_WARN);
    tu_log_capture();
    cr_assert_eq(br_hlc_update(c, hlc_of(pt + 300001, 0), &out), BR_ECLOCK);
    cr_assert_eq(br_hlc_update(c, hlc_of(pt + 86400000, 5), &out), BR_ECLOCK);
    cr_assert(tu_log_contains("hlc"));
    cr_assert(tu_log_contains("ahead_ms=300001"));
    br_log_set_sink(NULL, NULL);
    br_log_set_level(old_level);
    cr_assert_eq(br_hlc_skew_rejections(c), 2);
    cr_assert_eq(br_hlc_update(c, hlc_of(pt + 300000, 0), &out), BR_OK);
    assert_hlc(out, pt + 300000, 1);
    br_hlc_clock_free(c);
}

/* HLC-14: the counter stops at BR_HLC_LOGICAL_MAX; local and receive paths refuse to wrap. */
Test(hlc, hlc14_logical_overflow_is_error_not_wrap)
{
    br_hlc_clock *c = new_clock(10, 0);
    struct br_hlc out = hlc_of(1, 1);
    br_hlc_clock_restore(c, hlc_of(10, BR_HLC_LOGICAL_MAX - 1));
    cr_assert_eq(br_hlc_now(c, &out), BR_OK);
    assert_hlc(out, 10, BR_HLC_LOGICAL_MAX);
    cr_assert_eq(br_hlc_now(c, &out), BR_ECLOCK);
    assert_hlc(out, 10, BR_HLC_LOGICAL_MAX);
    assert_hlc(br_hlc_peek(c), 10, BR_HLC_LOGICAL_MAX);
    /* receive, w == rw */
    cr_assert_eq(br_hlc_update(c, hlc_of(10, 3), &out), BR_ECLOCK);
    /* receive, w > rw */
    cr_assert_eq(br_hlc_update(c, hlc_of(9, 3), &out), BR_ECLOCK);
    assert_hlc(br_hlc_peek(c), 10, BR_HLC_LOGICAL_MAX);
    cr_assert_eq(br_hlc_skew_rejections(c), 0); /* overflow is not a skew refusal */
    /* once physical time moves on, the clock works again */
    clk.wall = 11;
    cr_assert_eq(br_hlc_now(c, &out), BR_OK);
    assert_hlc(out, 11, 0);
    /* receive, rw > w, remote counter at the cap; and w == rw with a huge remote counter */
    cr_assert_eq(br_hlc_update(c, hlc_of(12, BR_HLC_LOGICAL_MAX), &out), BR_ECLOCK);
    cr_assert_eq(br_hlc_update(c, hlc_of(11, UINT32_MAX), &out), BR_ECLOCK);
    assert_hlc(br_hlc_peek(c), 11, 0);
    cr_assert_eq(br_hlc_update(c, hlc_of(12, BR_HLC_LOGICAL_MAX - 1), &out), BR_OK);
    assert_hlc(out, 12, BR_HLC_LOGICAL_MAX);
    br_hlc_clock_free(c);
}

/* Restoring a persisted value never moves the clock backwards. */
Test(hlc, restore_never_goes_backwards)
{
    br_hlc_clock *c = new_clock(100, 0);
    struct br_hlc out;
    br_hlc_clock_restore(c, hlc_of(5000, 3));
    cr_assert_eq(br_hlc_now(c, &out), BR_OK);
    assert_hlc(out, 5000, 4);
    br_hlc_clock_restore(c, hlc_of(10, 0));
    assert_hlc(br_hlc_peek(c), 5000, 4);
    br_hlc_clock_free(c);
}

#define THREADS 4
#define PER_THREAD 5000

struct worker {
    br_hlc_clock *c;
    struct br_hlc got[PER_THREAD];
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        if (i % 3 == 2) {
            if (br_hlc_update(w->c, hlc_of(77, (uint32_t)i), &w->got[i]) != BR_OK)
                abort();
        } else if (br_hlc_now(w->c, &w->got[i]) != BR_OK) {
            abort();
        }
    }
    return NULL;
}

static int hlc_qcmp(const void *a, const void *b)
{
    return br_hlc_cmp(*(const struct br_hlc *)a, *(const struct br_hlc *)b);
}

/* Thread: any. Concurrent callers get strictly increasing, distinct values per thread and no
 * duplicates overall (the mutex serialises the read-modify-write). */
Test(hlc, concurrent_callers_get_distinct_timestamps)
{
    br_hlc_clock *c = new_clock(77, 0);
    struct worker *w = calloc(THREADS, sizeof *w);
    pthread_t th[THREADS];
    cr_assert_not_null(w);
    for (int i = 0; i < THREADS; i++) {
        w[i].c = c;
        cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    struct br_hlc *all = calloc(THREADS * PER_THREAD, sizeof *all);
    cr_assert_not_null(all);
    for (int i = 0; i < THREADS; i++) {
        for (int j = 0; j < PER_THREAD; j++) {
            if (j > 0)
                cr_assert_gt(br_hlc_cmp(w[i].got[j], w[i].got[j - 1]), 0);
            all[i * PER_THREAD + j] = w[i].got[j];
        }
    }
    qsort(all, THREADS * PER_THREAD, sizeof *all, hlc_qcmp);
    for (int i = 1; i < THREADS * PER_THREAD; i++)
        cr_assert_neq(br_hlc_cmp(all[i - 1], all[i]), 0);
    free(all);
    free(w);
    br_hlc_clock_free(c);
}
