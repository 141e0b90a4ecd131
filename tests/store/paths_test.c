/* paths_test.c — document paths and topics (SUB-01..08: membership arrays, the complex
 * document, the 100-byte cut on a UTF-8 boundary, diffs of topic sets), pattern validation
 * (SUB-10), MQTT matching (SUB-13..16, SUB-23) through br_pattern_match and through the trie,
 * which must agree on a randomized cross-check, the trie's add/remove/size bookkeeping,
 * malformed bodies, and allocation torture of the walker, the topic list and the trie. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/cbor.h"
#include "barrel/json.h"
#include "barrel/paths.h"

/* ---- helpers ---- */

static void body_of(const char *json, br_buf *out)
{
    json_t *v = NULL;
    struct br_errbuf eb = {{0}};
    br_buf_init(out, 0);
    cr_assert(br_json_parse(json, strlen(json), 0, &v, &eb) == BR_OK, "bad JSON in test: %s",
              eb.msg);
    cr_assert(br_json_to_cbor(v, out, &eb) == BR_OK, "%s", eb.msg);
    json_decref(v);
}

struct topics {
    char **v;
    size_t n;
};

static struct topics topics_of(const char *json)
{
    br_buf b;
    body_of(json, &b);
    struct topics t = {NULL, 0};
    cr_assert(br_paths_topics(b.data, b.len, &t.v, &t.n) == BR_OK);
    br_buf_fini(&b);
    return t;
}

static void expect_topics(const char *json, const char *const *want, size_t n_want)
{
    struct topics t = topics_of(json);
    char got[4096] = "";
    size_t off = 0;
    for (size_t i = 0; i < t.n && off < sizeof got; i++)
        off += (size_t)snprintf(got + off, sizeof got - off, "[%s] ", t.v[i]);
    cr_assert(t.n == n_want, "%s: got %zu topics: %s", json, t.n, got);
    for (size_t i = 0; i < n_want; i++)
        cr_assert_str_eq(t.v[i], want[i], "%s: topic %zu: got %s", json, i, got);
    br_free(t.v);
}

#define EXPECT_TOPICS(json, ...)                                                                   \
    do {                                                                                           \
        static const char *const want_[] = {__VA_ARGS__};                                          \
        expect_topics(json, want_, sizeof want_ / sizeof want_[0]);                                \
    } while (0)

/* Every path as reported by br_paths_foreach, in order. */
struct rec {
    char keys[256];
    enum br_pv_type type;
    int64_t i;
    double f;
    char s[256];
    size_t s_len;
};

struct recs {
    struct rec r[128];
    size_t n;
    size_t stop_after; /* 0: never stop */
};

static int record(void *arg, const struct br_path_value *pv)
{
    struct recs *rs = arg;
    cr_assert(rs->n < 128);
    struct rec *r = &rs->r[rs->n++];
    cr_assert(pv->keys_len < sizeof r->keys);
    memcpy(r->keys, pv->keys, pv->keys_len);
    r->keys[pv->keys_len] = 0;
    r->type = pv->type;
    r->i = pv->i;
    r->f = pv->f;
    if (pv->type == BR_PV_STRING) {
        cr_assert(pv->s_len < sizeof r->s);
        memcpy(r->s, pv->s, pv->s_len);
        r->s[pv->s_len] = 0;
        r->s_len = pv->s_len;
    }
    return rs->stop_after && rs->n >= rs->stop_after;
}

static void paths_of(const char *json, struct recs *rs)
{
    br_buf b;
    body_of(json, &b);
    rs->n = 0;
    cr_assert(br_paths_foreach(b.data, b.len, record, rs) == BR_OK);
    br_buf_fini(&b);
}

static int count_cb(void *arg, const struct br_path_value *pv)
{
    (void)pv;
    (*(size_t *)arg)++;
    return 0;
}

static br_err foreach_raw(const uint8_t *p, size_t n)
{
    size_t count = 0;
    return br_paths_foreach(p, n, count_cb, &count);
}

static size_t hex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (*s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        cr_assert(sscanf(s, "%2x", &v) == 1, "bad hex in test: %s", s);
        cr_assert(n < cap);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static char *topic_text(const struct br_path_value *pv)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(br_path_topic(pv, &b) == BR_OK);
    char *s = (char *)br_buf_steal(&b, NULL);
    cr_assert(s);
    return s;
}

/* ---- SUB-01..07: paths ---- */

Test(paths, sub01_empty_doc_has_no_paths)
{
    struct recs rs = {.n = 0};
    paths_of("{}", &rs);
    cr_assert(rs.n == 0);
    struct topics t = topics_of("{}");
    cr_assert(t.n == 0 && t.v == NULL);
    /* metadata only, empty containers only: still nothing */
    paths_of("{\"_id\":\"x\",\"_rev\":\"1-a\",\"a\":{},\"b\":[],\"c\":[[],{}]}", &rs);
    cr_assert(rs.n == 0);
}

Test(paths, sub02_flat_doc_gives_key_value_per_field)
{
    struct recs rs = {.n = 0};
    paths_of("{\"a\":1,\"b\":\"hello\",\"c\":true}", &rs);
    cr_assert(rs.n == 3);
    cr_assert_str_eq(rs.r[0].keys, "a");
    cr_assert(rs.r[0].type == BR_PV_INT && rs.r[0].i == 1);
    cr_assert_str_eq(rs.r[1].keys, "b");
    cr_assert(rs.r[1].type == BR_PV_STRING && strcmp(rs.r[1].s, "hello") == 0);
    cr_assert_str_eq(rs.r[2].keys, "c");
    cr_assert(rs.r[2].type == BR_PV_TRUE);
    EXPECT_TOPICS("{\"a\":1,\"b\":\"hello\",\"c\":true}", "a/1", "b/hello", "c/true");
}

Test(paths, sub02_top_level_underscore_keys_are_never_paths)
{
    EXPECT_TOPICS("{\"_id\":\"d1\",\"_deep\":{\"x\":[1,{\"y\":2}]},\"a\":{\"_b\":1}}", "a/_b/1");
}

Test(paths, sub03_nested_objects_give_full_key_path)
{
    EXPECT_TOPICS("{\"type\":\"user\",\"org\":{\"id\":\"acme\",\"addr\":{\"city\":\"Paris\"}}}",
                  "org/addr/city/Paris", "org/id/acme", "type/user");
}

Test(paths, sub04_arrays_are_indexed_by_membership)
{
    EXPECT_TOPICS("{\"tags\":[\"a\",\"b\"]}", "tags/a", "tags/b");
}

Test(paths, sub04_objects_in_arrays_continue_the_key_path)
{
    EXPECT_TOPICS("{\"items\":[{\"sku\":\"ABC\",\"qty\":2},{\"sku\":42,\"qty\":2}]}", "items/qty/2",
                  "items/sku/42", "items/sku/ABC");
}

Test(paths, sub04_nested_arrays_flatten)
{
    EXPECT_TOPICS("{\"m\":[[1,2],[3,[4,[{\"k\":5}]]]]}", "m/1", "m/2", "m/3", "m/4", "m/k/5");
}

Test(paths, sub04_duplicate_members_are_reported_once)
{
    struct recs rs = {.n = 0};
    paths_of("{\"tags\":[\"a\",\"a\",\"b\",\"a\"],\"n\":[1,1.0,1]}", &rs);
    cr_assert(rs.n == 4, "got %zu", rs.n);
    /* canonical order puts "n" first; 1 and 1.0 are different values */
    cr_assert(rs.r[0].type == BR_PV_INT && rs.r[0].i == 1);
    cr_assert(rs.r[1].type == BR_PV_FLOAT && rs.r[1].f == 1.0);
    cr_assert_str_eq(rs.r[2].s, "a");
    cr_assert_str_eq(rs.r[3].s, "b");
}

Test(paths, sub04_dedup_of_a_large_array_is_exact)
{
    /* 3,000 members with 1,000 distinct values: exactly 1,000 paths, in first-seen order */
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(br_cbor_put_map(&b, 1) == BR_OK);
    cr_assert(br_cbor_put_cstr(&b, "v") == BR_OK);
    cr_assert(br_cbor_put_array(&b, 3000) == BR_OK);
    for (int i = 0; i < 3000; i++)
        cr_assert(br_cbor_put_int(&b, (i * 7) % 1000) == BR_OK);
    size_t count = 0;
    cr_assert(br_paths_foreach(b.data, b.len, count_cb, &count) == BR_OK);
    cr_assert(count == 1000, "got %zu", count);
    br_buf_fini(&b);
}

Test(paths, sub05_scalars_of_every_type_are_leaves)
{
    struct recs rs = {.n = 0};
    paths_of("{\"i\":-7,\"f\":0.53,\"s\":\"x\",\"t\":true,\"u\":false,\"z\":null}", &rs);
    cr_assert(rs.n == 6);
    /* canonical key order: all one byte long, so bytewise */
    cr_assert(rs.r[0].type == BR_PV_FLOAT && rs.r[0].f == 0.53);
    cr_assert(rs.r[1].type == BR_PV_INT && rs.r[1].i == -7);
    cr_assert(rs.r[2].type == BR_PV_STRING);
    cr_assert(rs.r[3].type == BR_PV_TRUE);
    cr_assert(rs.r[4].type == BR_PV_FALSE);
    cr_assert(rs.r[5].type == BR_PV_NULL);
    EXPECT_TOPICS("{\"i\":-7,\"f\":0.53,\"s\":\"x\",\"t\":true,\"u\":false,\"z\":null}", "f/0.53",
                  "i/-7", "s/x", "t/true", "u/false", "z/null");
}

Test(paths, sub05_uint_above_int64_max_is_a_float)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(br_cbor_put_map(&b, 2) == BR_OK);
    cr_assert(br_cbor_put_cstr(&b, "a") == BR_OK);
    cr_assert(br_cbor_put_uint(&b, (uint64_t)INT64_MAX) == BR_OK);
    cr_assert(br_cbor_put_cstr(&b, "b") == BR_OK);
    cr_assert(br_cbor_put_uint(&b, UINT64_MAX) == BR_OK);
    struct recs rs = {.n = 0};
    cr_assert(br_paths_foreach(b.data, b.len, record, &rs) == BR_OK);
    cr_assert(rs.n == 2);
    cr_assert(rs.r[0].type == BR_PV_INT && rs.r[0].i == INT64_MAX);
    cr_assert(rs.r[1].type == BR_PV_FLOAT && rs.r[1].f == 18446744073709551616.0);
    br_buf_fini(&b);
}

Test(paths, sub05_topic_numbers_ints_decimal_floats_shortest_round_trip)
{
    static const struct {
        enum br_pv_type type;
        int64_t i;
        double f;
        const char *want;
    } cases[] = {
        {BR_PV_INT, 0, 0, "k/0"},
        {BR_PV_INT, INT64_MIN, 0, "k/-9223372036854775808"},
        {BR_PV_INT, INT64_MAX, 0, "k/9223372036854775807"},
        {BR_PV_FLOAT, 0, 3.0, "k/3.0"}, /* never collides with the int 3 */
        {BR_PV_FLOAT, 0, -0.0, "k/-0.0"},
        {BR_PV_FLOAT, 0, 0.0, "k/0.0"},
        {BR_PV_FLOAT, 0, 0.53, "k/0.53"},
        {BR_PV_FLOAT, 0, 0.1, "k/0.1"},
        {BR_PV_FLOAT, 0, 3.14, "k/3.14"},
        {BR_PV_FLOAT, 0, 1.0 / 3.0, "k/0.3333333333333333"},
        {BR_PV_FLOAT, 0, 0.1 + 0.2, "k/0.30000000000000004"},
        {BR_PV_FLOAT, 0, 1e21, "k/1e+21"},
        {BR_PV_FLOAT, 0, 1e15, "k/1e+15"},
        {BR_PV_FLOAT, 0, 123456.0, "k/123456.0"},
        {BR_PV_FLOAT, 0, 5e-324, "k/4.94065645841247e-324"}, /* 15 digits read back */
        {BR_PV_FLOAT, 0, 1.7976931348623157e308, "k/1.7976931348623157e+308"},
        {BR_PV_FLOAT, 0, 18446744073709551616.0, "k/1.8446744073709552e+19"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct br_path_value pv = {
            .keys = "k", .keys_len = 1, .type = cases[c].type, .i = cases[c].i, .f = cases[c].f};
        char *s = topic_text(&pv);
        cr_assert_str_eq(s, cases[c].want);
        if (cases[c].type == BR_PV_FLOAT)
            cr_assert(strtod(s + 2, NULL) == cases[c].f, "%s does not read back", s);
        br_free(s);
    }
}

/* The topic text of a number as paths.h defines it, the slow way (printf and strtod): the
 * reference for the formatter's fast paths. */
static void ref_number_text(const struct br_path_value *pv, char *out, size_t cap)
{
    if (pv->type == BR_PV_INT) {
        snprintf(out, cap, "%lld", (long long)pv->i);
        return;
    }
    snprintf(out, cap, "%.15g", pv->f);
    if (strtod(out, NULL) != pv->f) {
        snprintf(out, cap, "%.16g", pv->f);
        if (strtod(out, NULL) != pv->f)
            snprintf(out, cap, "%.17g", pv->f);
    }
    if (strspn(out, "-0123456789") == strlen(out))
        strcat(out, ".0");
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void expect_number_topic(enum br_pv_type type, int64_t i, double f)
{
    struct br_path_value pv = {.keys = "k", .keys_len = 1, .type = type, .i = i, .f = f};
    char want[64] = "k/";
    ref_number_text(&pv, want + 2, sizeof want - 2);
    char *got = topic_text(&pv);
    cr_assert_str_eq(got, want, "%s for %.17g / %lld", got, f, (long long)i);
    br_free(got);
}

/* Integers and the floats documents usually hold (few decimals, modest magnitude) are
 * formatted without printf; every result must be what printf and strtod would give. */
Test(paths, topic_numbers_agree_with_printf_reference)
{
    static const double edges[] = {1e-4,
                                   1e-4 * (1 + 1e-15),
                                   0.00009999999999999999,
                                   1e15,
                                   1e15 - 1,
                                   999999999999999.9,
                                   123456789012345.6,
                                   0.5,
                                   0.1 + 0.2,
                                   1.0 / 3.0,
                                   100.0,
                                   2.5e-3,
                                   9007199254740993.0,
                                   0.30000000000000004,
                                   4.35,
                                   1.005,
                                   1e-5,
                                   12345.678};
    for (size_t c = 0; c < sizeof edges / sizeof edges[0]; c++) {
        expect_number_topic(BR_PV_FLOAT, 0, edges[c]);
        expect_number_topic(BR_PV_FLOAT, 0, -edges[c]);
    }
    static const int64_t ints[] = {0,   1,          -1,        9,         10,
                                   -10, 1000000007, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    for (size_t c = 0; c < sizeof ints / sizeof ints[0]; c++)
        expect_number_topic(BR_PV_INT, ints[c], 0);
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (int r = 0; r < 200000; r++) {
        uint64_t x = xorshift(&s);
        double f;
        switch (r % 4) {
        case 0: /* k / 10^d: what JSON numbers with a few decimals give */
            f = (double)(int64_t)(x % 2000000001u - 1000000000) / pow(10, (double)((x >> 40) % 12));
            break;
        case 1: /* any bit pattern that is a finite number */
            memcpy(&f, &x, sizeof f);
            if (!isfinite(f))
                f = 1.5;
            break;
        case 2: /* around the fast path's bounds */
            f = ldexp((double)(x >> 11), -53) * pow(10, (double)((int)(x % 24) - 6));
            break;
        default:
            expect_number_topic(BR_PV_INT, (int64_t)x >> (x % 64), 0);
            continue;
        }
        expect_number_topic(BR_PV_FLOAT, 0, f);
    }
}

Test(paths, sub05_topic_appends_and_leaves_out_unchanged_on_failure)
{
    br_buf b;
    br_buf_init(&b, 7);
    cr_assert(br_buf_append_str(&b, "x|") == BR_OK);
    struct br_path_value pv = {.keys = "a", .keys_len = 1, .type = BR_PV_NULL};
    cr_assert(br_path_topic(&pv, &b) == BR_ETOOBIG); /* "x|a/null" is 8 bytes, max 7 */
    cr_assert(b.len == 2 && strcmp((char *)b.data, "x|") == 0);
    pv.type = BR_PV_TRUE;
    pv.keys_len = 0; /* an empty top-level key: "x|/true" is 7 */
    cr_assert(br_path_topic(&pv, &b) == BR_OK);
    cr_assert_str_eq((char *)b.data, "x|/true");
    br_buf_fini(&b);
}

/* SUB-06: the complex document of upstream's analyze_complex_doc, rebuilt to exercise the same
 * shapes: nested maps, arrays of scalars and of objects, every scalar type, metadata and empty
 * containers. Fourteen distinct topics. */
Test(paths, sub06_complex_document_gives_exact_topic_set)
{
    const char *doc = "{\"_id\":\"order-1\",\"_rev\":\"3-abc\","
                      "\"customer\":{\"name\":\"Ann\",\"address\":{\"city\":\"Lyon\","
                      "\"zip\":\"69001\",\"geo\":{\"lat\":45.76}}},"
                      "\"items\":[{\"sku\":\"A1\",\"qty\":2,\"price\":9.5},"
                      "{\"sku\":\"B2\",\"qty\":2,\"price\":20.0,\"options\":[]}],"
                      "\"tags\":[\"new\",\"priority\",\"new\"],"
                      "\"paid\":true,\"coupon\":null,\"total\":39,\"notes\":{},\"history\":[]}";
    EXPECT_TOPICS(doc, "coupon/null", "customer/address/city/Lyon",
                  "customer/address/geo/lat/45.76", "customer/address/zip/69001",
                  "customer/name/Ann", "items/price/20.0", "items/price/9.5", "items/qty/2",
                  "items/sku/A1", "items/sku/B2", "paid/true", "tags/new", "tags/priority",
                  "total/39");
}

Test(paths, sub07_long_strings_are_cut_to_100_bytes)
{
    char s[160];
    for (size_t len = 98; len <= 150; len++) {
        memset(s, 'x', len);
        s[len] = 0;
        char json[256];
        snprintf(json, sizeof json, "{\"s\":\"%s\",\"n\":12345678901234,\"t\":\"short\"}", s);
        struct recs rs = {.n = 0};
        paths_of(json, &rs);
        cr_assert(rs.n == 3);
        cr_assert(rs.r[0].type == BR_PV_INT && rs.r[0].i == 12345678901234); /* untouched */
        cr_assert(rs.r[1].s_len == (len > 100 ? 100 : len), "len %zu gave %zu", len, rs.r[1].s_len);
        cr_assert(memcmp(rs.r[1].s, s, rs.r[1].s_len) == 0);
        cr_assert_str_eq(rs.r[2].s, "short");
    }
}

Test(paths, sub07_cut_never_splits_a_utf8_character)
{
    /* (ASCII prefix length, character): the character starts at the prefix's end */
    static const struct {
        size_t prefix;
        const char *ch;
        size_t want;
    } cases[] = {
        {98, "\xc3\xa9", 100},          /* é ends exactly at 100 */
        {99, "\xc3\xa9", 99},           /* é would straddle 100 */
        {97, "\xe2\x82\xac", 100},      /* € ends at 100 */
        {98, "\xe2\x82\xac", 98},       /* € straddles */
        {99, "\xe2\x82\xac", 99},       /* € straddles */
        {96, "\xf0\x9f\x98\x80", 100},  /* 😀 ends at 100 */
        {97, "\xf0\x9f\x98\x80", 97},   /* 😀 straddles */
        {99, "\xf0\x9f\x98\x80", 99},   /* 😀 straddles */
        {100, "\xf0\x9f\x98\x80", 100}, /* 😀 just after the cut */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char s[200];
        memset(s, 'a', cases[c].prefix);
        size_t n = cases[c].prefix;
        for (int k = 0; k < 3; k++) { /* the character, then more text */
            size_t cl = strlen(cases[c].ch);
            memcpy(s + n, cases[c].ch, cl);
            n += cl;
        }
        s[n] = 0;
        char json[300];
        snprintf(json, sizeof json, "{\"s\":\"%s\"}", s);
        struct recs rs = {.n = 0};
        paths_of(json, &rs);
        cr_assert(rs.n == 1);
        cr_assert(rs.r[0].s_len == cases[c].want, "case %zu: cut at %zu, want %zu", c,
                  rs.r[0].s_len, cases[c].want);
        cr_assert(memcmp(rs.r[0].s, s, rs.r[0].s_len) == 0);
    }
}

Test(paths, sub07_strings_equal_after_the_cut_are_one_path)
{
    char a[130], b[130];
    memset(a, 'q', 120);
    memset(b, 'q', 120);
    b[110] = 'z';
    a[120] = b[120] = 0;
    char json[400];
    snprintf(json, sizeof json, "{\"s\":[\"%s\",\"%s\"]}", a, b);
    struct recs rs = {.n = 0};
    paths_of(json, &rs);
    cr_assert(rs.n == 1);
}

Test(paths, callback_can_stop_the_walk)
{
    struct recs rs = {.n = 0, .stop_after = 2};
    br_buf b;
    body_of("{\"a\":1,\"b\":2,\"c\":3}", &b);
    cr_assert(br_paths_foreach(b.data, b.len, record, &rs) == BR_OK);
    cr_assert(rs.n == 2);
    br_buf_fini(&b);
}

Test(paths, empty_and_slashed_keys_join_literally)
{
    /* no escaping (as upstream): {"a/b":1} and {"a":{"b":1}} give one topic */
    EXPECT_TOPICS("{\"a/b\":1,\"a\":{\"b\":1,\"\":\"e\"},\"\":{\"x\":true}}", "/x/true", "a//e",
                  "a/b/1");
}

Test(paths, topics_of_distinct_values_that_print_alike_are_one)
{
    struct recs rs = {.n = 0};
    paths_of("{\"v\":[1,\"1\",true,\"true\",null,\"null\",2.5,\"2.5\"]}", &rs);
    cr_assert(rs.n == 8);
    EXPECT_TOPICS("{\"v\":[1,\"1\",true,\"true\",null,\"null\",2.5,\"2.5\"]}", "v/1", "v/2.5",
                  "v/null", "v/true");
}

/* ---- SUB-08: diffs of topic sets ---- */

struct diff {
    size_t n_added, n_removed;
    char added[16][64], removed[16][64];
};

static void diff_of(const char *old_json, const char *new_json, struct diff *d)
{
    struct topics o = topics_of(old_json), n = topics_of(new_json);
    memset(d, 0, sizeof *d);
    size_t i = 0, j = 0;
    while (i < o.n || j < n.n) {
        int c = i == o.n ? 1 : j == n.n ? -1 : strcmp(o.v[i], n.v[j]);
        if (c < 0) {
            cr_assert(d->n_removed < 16);
            snprintf(d->removed[d->n_removed++], 64, "%s", o.v[i++]);
        } else if (c > 0) {
            cr_assert(d->n_added < 16);
            snprintf(d->added[d->n_added++], 64, "%s", n.v[j++]);
        } else {
            i++;
            j++;
        }
    }
    br_free(o.v);
    br_free(n.v);
}

Test(paths, sub08_diff_added_only)
{
    struct diff d;
    diff_of("{\"a\":1}", "{\"a\":1,\"b\":2}", &d);
    cr_assert(d.n_added == 1 && d.n_removed == 0);
    cr_assert_str_eq(d.added[0], "b/2");
}

Test(paths, sub08_diff_removed_only)
{
    struct diff d;
    diff_of("{\"a\":1,\"tags\":[\"x\",\"y\"]}", "{\"a\":1,\"tags\":[\"y\"]}", &d);
    cr_assert(d.n_added == 0 && d.n_removed == 1);
    cr_assert_str_eq(d.removed[0], "tags/x");
}

Test(paths, sub08_diff_both_added_and_removed)
{
    struct diff d;
    diff_of("{\"a\":1,\"s\":\"old\"}", "{\"a\":1,\"s\":\"new\",\"c\":true}", &d);
    cr_assert(d.n_added == 2 && d.n_removed == 1);
    cr_assert_str_eq(d.added[0], "c/true");
    cr_assert_str_eq(d.added[1], "s/new");
    cr_assert_str_eq(d.removed[0], "s/old");
}

Test(paths, sub08_diff_none_for_equal_paths)
{
    struct diff d;
    /* reordered array members and a duplicate: the same topic set */
    diff_of("{\"a\":1,\"t\":[\"x\",\"y\"]}", "{\"t\":[\"y\",\"x\",\"x\"],\"a\":1}", &d);
    cr_assert(d.n_added == 0 && d.n_removed == 0);
}

Test(paths, sub08_diff_from_empty_adds_all)
{
    struct diff d;
    diff_of("{}", "{\"a\":1,\"b\":{\"c\":null}}", &d);
    cr_assert(d.n_added == 2 && d.n_removed == 0);
    cr_assert_str_eq(d.added[0], "a/1");
    cr_assert_str_eq(d.added[1], "b/c/null");
}

Test(paths, sub08_diff_to_empty_removes_all)
{
    struct diff d;
    diff_of("{\"a\":1,\"b\":{\"c\":null}}", "{}", &d);
    cr_assert(d.n_added == 0 && d.n_removed == 2);
    cr_assert_str_eq(d.removed[0], "a/1");
    cr_assert_str_eq(d.removed[1], "b/c/null");
}

/* ---- malformed bodies ---- */

Test(paths, malformed_bodies_are_eproto)
{
    static const char *const bad[] = {
        "",                                    /* nothing */
        "80",                                  /* an array, not a map */
        "01",                                  /* an integer */
        "a1 61 61",                            /* truncated: value missing */
        "a2 61 61 01",                         /* announces two pairs, holds one */
        "a1 61 61 01 00",                      /* trailing bytes */
        "a1 01 01",                            /* integer key */
        "a1 61 61 41 00",                      /* byte string value */
        "a1 61 61 c1 01",                      /* tag */
        "bf 61 61 01 ff",                      /* indefinite map */
        "a1 61 61 9f 01 ff",                   /* indefinite array */
        "a1 61 61 f7",                         /* undefined */
        "a1 61 61 fb 7f f8 00 00 00 00 00 00", /* NaN */
        "a1 61 61 f9 7c 00",                   /* +Inf (half) */
        "a1 61 61 3b 80 00 00 00 00 00 00 00", /* -2^63 - 1 */
        "a1 61 61 62 c3 28",                   /* invalid UTF-8 value */
        "a1 62 c3 28 01",                      /* invalid UTF-8 key */
        "a1 61 61 81 a1 02 01",                /* integer key inside an array */
        "a1 62 5f 61 41 00", /* "_a": metadata is skipped but must still be well formed */
        "a1 61 61 9b ff ff ff ff ff ff ff ff", /* array length past the input */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t b[64];
        size_t n = hex(bad[i], b, sizeof b);
        cr_assert(foreach_raw(b, n) == BR_EPROTO, "case %zu (%s) accepted", i, bad[i]);
    }
    cr_assert(foreach_raw(NULL, 0) == BR_EPROTO);
    /* the smallest negative integer is fine */
    uint8_t ok[16];
    size_t n = hex("a1 61 61 3b 7f ff ff ff ff ff ff ff", ok, sizeof ok);
    struct recs rs = {.n = 0};
    cr_assert(br_paths_foreach(ok, n, record, &rs) == BR_OK);
    cr_assert(rs.n == 1 && rs.r[0].type == BR_PV_INT && rs.r[0].i == INT64_MIN);
}

/* A body of `depth` nested containers: maps {"a": ...} (or arrays under "a"), innermost empty
 * or holding 1. */
static void nested(br_buf *b, unsigned depth, bool arrays, bool leaf, const char *top_key)
{
    br_buf_init(b, 0);
    cr_assert(br_cbor_put_map(b, 1) == BR_OK);
    cr_assert(br_cbor_put_cstr(b, top_key) == BR_OK);
    for (unsigned d = 2; d <= depth; d++) {
        if (arrays) {
            cr_assert(br_cbor_put_array(b, d == depth && !leaf ? 0 : 1) == BR_OK);
        } else {
            cr_assert(br_cbor_put_map(b, d == depth && !leaf ? 0 : 1) == BR_OK);
            if (d < depth || leaf)
                cr_assert(br_cbor_put_cstr(b, "a") == BR_OK);
        }
    }
    cr_assert(br_cbor_put_int(b, 1) == BR_OK);
}

Test(paths, depth_is_capped_at_64_containers)
{
    for (int arrays = 0; arrays < 2; arrays++) {
        br_buf b;
        size_t count = 0;
        /* 64 containers (root included) with a leaf inside: fine */
        nested(&b, BR_PATH_MAX_DEPTH, arrays, true, "a");
        cr_assert(br_paths_foreach(b.data, b.len, count_cb, &count) == BR_OK);
        cr_assert(count == 1);
        br_buf_fini(&b);
        /* 65: rejected, empty innermost or not, and under a "_" key too */
        nested(&b, BR_PATH_MAX_DEPTH + 1, arrays, true, "a");
        cr_assert(foreach_raw(b.data, b.len) == BR_EPROTO);
        br_buf_fini(&b);
        nested(&b, BR_PATH_MAX_DEPTH + 1, arrays, false, "a");
        cr_assert(foreach_raw(b.data, b.len) == BR_EPROTO);
        br_buf_fini(&b);
        nested(&b, BR_PATH_MAX_DEPTH + 1, arrays, true, "_meta");
        cr_assert(foreach_raw(b.data, b.len) == BR_EPROTO);
        br_buf_fini(&b);
        nested(&b, BR_PATH_MAX_DEPTH, arrays, true, "_meta");
        cr_assert(foreach_raw(b.data, b.len) == BR_OK);
        br_buf_fini(&b);
    }
}

Test(paths, topics_fail_on_malformed_body_without_output)
{
    uint8_t b[] = {0xa2, 0x61, 0x61, 0x01, 0x61}; /* truncated after one good path */
    char **v = (char **)&b;
    size_t n = 77;
    cr_assert(br_paths_topics(b, sizeof b, &v, &n) == BR_EPROTO);
    cr_assert(v == (char **)&b && n == 77);
}

/* ---- SUB-10: pattern validation ---- */

Test(paths, sub10_invalid_patterns_are_rejected_with_a_reason)
{
    static const char *const bad[] = {
        "users/#/profile", "a+b", "#a", "a#", "+a", "a+", "a/b#", "a/#/", "##", "++",
        "a/++/b",          "#/a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct br_errbuf eb = {{0}};
        cr_assert(br_pattern_check(bad[i], strlen(bad[i]), &eb) == BR_EINVAL, "%s accepted",
                  bad[i]);
        cr_assert(eb.msg[0] != 0);
    }
    struct br_errbuf eb = {{0}};
    cr_assert(br_pattern_check("", 0, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "empty"));
    cr_assert(br_pattern_check(NULL, 0, NULL) == BR_EINVAL);
    cr_assert(br_pattern_check("a\0b", 3, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "NUL"));
    static char big[BR_PATTERN_MAX + 2];
    memset(big, 'a', sizeof big);
    cr_assert(br_pattern_check(big, BR_PATTERN_MAX + 1, &eb) == BR_EINVAL);
    cr_assert(br_pattern_check(big, BR_PATTERN_MAX, NULL) == BR_OK);
}

Test(paths, sub10_valid_patterns_are_accepted)
{
    static const char *const good[] = {
        "#",    "+",  "a",  "a/b",    "a/+/b",           "a/#",       "+/+", "+/#", "/",
        "a//b", "/#", "+/", "$SYS/#", "users/+/profile", "a b/c-d/é",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(br_pattern_check(good[i], strlen(good[i]), NULL) == BR_OK, "%s rejected",
                  good[i]);
}

Test(paths, sub10_trie_rejects_invalid_patterns)
{
    br_pattern_trie *t = NULL;
    cr_assert(br_pattern_trie_new(&t) == BR_OK);
    int v;
    cr_assert(br_pattern_trie_add(t, "users/#/profile", 15, &v) == BR_EINVAL);
    cr_assert(br_pattern_trie_add(t, "", 0, &v) == BR_EINVAL);
    cr_assert(br_pattern_trie_size(t) == 0);
    cr_assert(br_pattern_trie_remove(t, "a+b", 3, &v) == BR_EINVAL);
    br_pattern_trie_free(t);
}

/* ---- matching: both matchers on every case ---- */

struct hits {
    void *v[64];
    size_t n;
};

static void hit(void *arg, void *value)
{
    struct hits *h = arg;
    cr_assert(h->n < 64);
    h->v[h->n++] = value;
}

/* Assert that pattern p matches topic t exactly when want, through br_pattern_match and a trie
 * holding p alone. */
static void expect_match(const char *p, const char *t, bool want)
{
    cr_assert(br_pattern_check(p, strlen(p), NULL) == BR_OK, "test pattern %s invalid", p);
    cr_assert(br_pattern_match(p, strlen(p), t, strlen(t)) == want, "match(%s, %s) != %d", p, t,
              want);
    br_pattern_trie *tr = NULL;
    cr_assert(br_pattern_trie_new(&tr) == BR_OK);
    int tag;
    cr_assert(br_pattern_trie_add(tr, p, strlen(p), &tag) == BR_OK);
    struct hits h = {.n = 0};
    br_pattern_trie_match(tr, t, strlen(t), hit, &h);
    cr_assert(h.n == (want ? 1u : 0u), "trie(%s, %s) gave %zu hits", p, t, h.n);
    br_pattern_trie_free(tr);
}

Test(paths, sub13_exact_pattern_matches_only_its_topic)
{
    expect_match("users/123/profile", "users/123/profile", true);
    expect_match("users/123/profile", "users/123", false);
    expect_match("users/123/profile", "users/123/profile/avatar", false);
    expect_match("users/123/profile", "users/1234/profile", false);
    expect_match("users/123/profile", "users/123/profil", false);
    expect_match("users/123/profile", "users/123/profile/", false);
    expect_match("a", "a", true);
    expect_match("a", "b", false);
    expect_match("a//b", "a//b", true);
    expect_match("a//b", "a/b", false);
}

Test(paths, sub14_plus_matches_exactly_one_segment)
{
    expect_match("users/+/profile", "users/123/profile", true);
    expect_match("users/+/profile", "users/123/settings", false);
    expect_match("users/+/profile", "users/123/profile/avatar", false);
    expect_match("users/+/profile", "users/profile", false);
    expect_match("users/+/profile", "users//profile", true); /* an empty segment is one */
    expect_match("+", "a", true);
    expect_match("+", "", true);
    cr_assert(br_pattern_match("+", 1, NULL, 0)); /* (NULL, 0) is the empty topic */
    cr_assert(!br_pattern_match("+", 1, NULL, 3));
    br_pattern_trie *tr = NULL;
    cr_assert(br_pattern_trie_new(&tr) == BR_OK);
    int v;
    cr_assert(br_pattern_trie_add(tr, "+", 1, &v) == BR_OK);
    struct hits h = {.n = 0};
    br_pattern_trie_match(tr, NULL, 0, hit, &h);
    cr_assert(h.n == 1);
    br_pattern_trie_match(tr, NULL, 5, hit, &h);
    cr_assert(h.n == 1);
    br_pattern_trie_free(tr);
    expect_match("+", "a/b", false);
    expect_match("a/+", "a/", true);
    expect_match("a/+", "a", false);
    expect_match("+/+", "/", true);
    expect_match("+/b/+", "x/b/y", true);
}

Test(paths, sub15_hash_matches_any_depth_below)
{
    expect_match("orders/#", "orders/123", true);
    expect_match("orders/#", "orders/123/items/4/sku", true);
    expect_match("orders/#", "users/123", false);
    expect_match("orders/#", "ordersx/1", false);
    expect_match("orders/#", "orders/", true);
    expect_match("#", "anything/at/all", true);
    expect_match("#", "", true);
    expect_match("a/+/#", "a/b", true);
    expect_match("a/+/#", "a", false);
}

Test(paths, sub23_hash_matches_its_parent_and_dollar_is_shielded)
{
    expect_match("a/#", "a", true);
    expect_match("a/b/#", "a/b", true);
    expect_match("a/b/#", "a", false);
    expect_match("#", "$SYS/x", false);
    expect_match("+/x", "$SYS/x", false);
    expect_match("+", "$x", false);
    expect_match("+/#", "$SYS", false);
    expect_match("$SYS/#", "$SYS/x", true);
    expect_match("$SYS/#", "$SYS", true);
    expect_match("$SYS/+", "$SYS/x", true);
    expect_match("a/+", "a/$b", true); /* only the first segment is shielded */
    expect_match("a/#", "a/$b/c", true);
    expect_match("+/x", "x$/x", true);
}

Test(paths, sub16_subscriber_matched_by_several_topics_is_notified_once)
{
    /* one subscriber holds two patterns; the document's topics hit both, several times */
    struct topics t = topics_of("{\"type\":\"sensor\",\"site\":\"s7\",\"tags\":[\"a\",\"b\"]}");
    int sub_a, sub_b;
    br_pattern_trie *tr = NULL;
    cr_assert(br_pattern_trie_new(&tr) == BR_OK);
    cr_assert(br_pattern_trie_add(tr, "type/#", 6, &sub_a) == BR_OK);
    cr_assert(br_pattern_trie_add(tr, "tags/+", 6, &sub_a) == BR_OK);
    cr_assert(br_pattern_trie_add(tr, "site/s8", 7, &sub_b) == BR_OK);
    struct hits h = {.n = 0};
    for (size_t i = 0; i < t.n; i++)
        br_pattern_trie_match(tr, t.v[i], strlen(t.v[i]), hit, &h);
    cr_assert(h.n == 3); /* per (topic, pattern) hit: type/sensor, tags/a, tags/b */
    size_t distinct = 0;
    for (size_t i = 0; i < h.n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || h.v[j] == h.v[i];
        distinct += !seen;
    }
    cr_assert(distinct == 1 && h.v[0] == &sub_a); /* the caller's dedup by value: once */
    /* the pairwise matcher agrees on which topics matter */
    size_t pm = 0;
    for (size_t i = 0; i < t.n; i++)
        pm += br_pattern_match("type/#", 6, t.v[i], strlen(t.v[i])) +
              br_pattern_match("tags/+", 6, t.v[i], strlen(t.v[i]));
    cr_assert(pm == 3);
    br_pattern_trie_free(tr);
    br_free(t.v);
}

/* ---- the trie's bookkeeping ---- */

Test(paths, trie_add_remove_duplicates_and_size)
{
    br_pattern_trie *t = NULL;
    cr_assert(br_pattern_trie_new(&t) == BR_OK);
    int a, b;
    cr_assert(br_pattern_trie_size(t) == 0);
    cr_assert(br_pattern_trie_add(t, "x/+", 3, &a) == BR_OK);
    cr_assert(br_pattern_trie_add(t, "x/+", 3, &b) == BR_OK); /* SUB-17: two subscribers */
    cr_assert(br_pattern_trie_add(t, "x/+", 3, &a) == BR_OK); /* the same pair again */
    cr_assert(br_pattern_trie_size(t) == 3);
    struct hits h = {.n = 0};
    br_pattern_trie_match(t, "x/1", 3, hit, &h);
    cr_assert(h.n == 3 && h.v[0] == &a && h.v[1] == &b && h.v[2] == &a);

    cr_assert(br_pattern_trie_remove(t, "x/+", 3, &a) == BR_OK);
    cr_assert(br_pattern_trie_size(t) == 2);
    h.n = 0;
    br_pattern_trie_match(t, "x/1", 3, hit, &h);
    cr_assert(h.n == 2);
    cr_assert(br_pattern_trie_remove(t, "x/+", 3, &a) == BR_OK);
    cr_assert(br_pattern_trie_remove(t, "x/+", 3, &a) == BR_ENOTFOUND);
    cr_assert(br_pattern_trie_remove(t, "x/#", 3, &b) == BR_ENOTFOUND);
    cr_assert(br_pattern_trie_remove(t, "x", 1, &b) == BR_ENOTFOUND); /* an inner node */
    cr_assert(br_pattern_trie_remove(t, "y/+", 3, &b) == BR_ENOTFOUND);
    cr_assert(br_pattern_trie_size(t) == 1);
    h.n = 0;
    br_pattern_trie_match(t, "x/1", 3, hit, &h);
    cr_assert(h.n == 1 && h.v[0] == &b);
    cr_assert(br_pattern_trie_remove(t, "x/+", 3, &b) == BR_OK); /* SUB-18 */
    cr_assert(br_pattern_trie_size(t) == 0);
    h.n = 0;
    br_pattern_trie_match(t, "x/1", 3, hit, &h);
    cr_assert(h.n == 0); /* SUB-12: no subscribers, no matches */
    br_pattern_trie_free(t);
    br_pattern_trie_free(NULL);
    cr_assert(br_pattern_trie_size(NULL) == 0);
}

Test(paths, trie_removal_prunes_empty_nodes)
{
    /* after adding and removing everything, adding again costs exactly as many allocations as
     * it did on a fresh trie: no node was left behind */
    static const char *const pats[] = {"a/b/c/d", "a/b/+/#", "a/+/c", "#", "a/b", "x//y/#"};
    size_t np = sizeof pats / sizeof pats[0];
    br_pattern_trie *t = NULL;
    cr_assert(br_pattern_trie_new(&t) == BR_OK);
    int v;
    long first = 0;
    for (int round = 0; round < 3; round++) {
        br_alloc_fail_after(-1);
        for (size_t i = 0; i < np; i++)
            cr_assert(br_pattern_trie_add(t, pats[i], strlen(pats[i]), &v) == BR_OK);
        long used = br_alloc_count();
        /* round 0 also grows the root's child array, which the root keeps */
        if (round == 1)
            first = used;
        cr_assert(round < 2 || used == first, "round %d allocated %ld, round 1 %ld", round, used,
                  first);
        /* remove in a different order each round */
        for (size_t k = 0; k < np; k++) {
            size_t i = round == 0 ? k : round == 1 ? np - 1 - k : (k * 5 + 2) % np;
            cr_assert(br_pattern_trie_remove(t, pats[i], strlen(pats[i]), &v) == BR_OK,
                      "round %d: %s", round, pats[i]);
        }
        cr_assert(br_pattern_trie_size(t) == 0);
    }
    br_pattern_trie_free(t);
}

Test(paths, trie_keeps_many_siblings_sorted)
{
    br_pattern_trie *t = NULL;
    cr_assert(br_pattern_trie_new(&t) == BR_OK);
    static int vals[500];
    char p[64];
    for (int i = 0; i < 500; i++) {
        int j = (i * 211) % 500; /* a scrambled insertion order */
        int n = snprintf(p, sizeof p, "site/site-%d/#", j);
        cr_assert(br_pattern_trie_add(t, p, (size_t)n, &vals[j]) == BR_OK);
    }
    for (int j = 0; j < 500; j++) {
        int n = snprintf(p, sizeof p, "site/site-%d/value/1", j);
        struct hits h = {.n = 0};
        br_pattern_trie_match(t, p, (size_t)n, hit, &h);
        cr_assert(h.n == 1 && h.v[0] == &vals[j], "site-%d", j);
    }
    for (int j = 0; j < 500; j += 2) {
        int n = snprintf(p, sizeof p, "site/site-%d/#", j);
        cr_assert(br_pattern_trie_remove(t, p, (size_t)n, &vals[j]) == BR_OK);
    }
    cr_assert(br_pattern_trie_size(t) == 250);
    for (int j = 0; j < 500; j++) {
        int n = snprintf(p, sizeof p, "site/site-%d", j);
        struct hits h = {.n = 0};
        br_pattern_trie_match(t, p, (size_t)n, hit, &h);
        cr_assert(h.n == (size_t)(j % 2), "site-%d", j);
    }
    br_pattern_trie_free(t);
}

/* ---- randomized cross-check of the two matchers ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const char *const seg_pool[] = {"a", "b", "ab", "", "$x", "c", "a$"};

static size_t random_topic(char *out, size_t cap)
{
    out[0] = 0;
    size_t n = 0, segs = 1 + rng() % 5;
    for (size_t s = 0; s < segs; s++) {
        const char *g = seg_pool[rng() % (sizeof seg_pool / sizeof seg_pool[0])];
        int w = snprintf(out + n, cap - n, "%s%s", s ? "/" : "", g);
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
    return n;
}

static size_t random_pattern(char *out, size_t cap)
{
    out[0] = 0;
    size_t n = 0, segs = 1 + rng() % 5;
    for (size_t s = 0; s < segs; s++) {
        const char *g;
        unsigned r = (unsigned)(rng() % 10);
        if (r < 3)
            g = "+";
        else if (r == 3 && s == segs - 1)
            g = "#";
        else
            g = seg_pool[rng() % (sizeof seg_pool / sizeof seg_pool[0])];
        int w = snprintf(out + n, cap - n, "%s%s", s ? "/" : "", g);
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
    if (n == 0) { /* a lone empty segment is the empty pattern, which is invalid */
        out[n++] = '+';
        out[n] = 0;
    }
    return n;
}

/* The trie reports values that point into ids[]: count the hits per pattern index. */
struct tally {
    const int *base;
    unsigned *got;
};

static void tally_hit(void *arg, void *value)
{
    struct tally *ty = arg;
    ty->got[(const int *)value - ty->base]++;
}

Test(paths, sub13_16_23_trie_agrees_with_pairwise_matcher_on_random_pairs)
{
    enum { NP = 400, NT = 3000 };
    static char pats[NP][64];
    static size_t plen[NP];
    static int ids[NP];
    static unsigned got[NP];
    br_pattern_trie *t = NULL;
    cr_assert(br_pattern_trie_new(&t) == BR_OK);
    for (int i = 0; i < NP; i++) {
        plen[i] = random_pattern(pats[i], sizeof pats[i]);
        cr_assert(br_pattern_check(pats[i], plen[i], NULL) == BR_OK, "%s", pats[i]);
        ids[i] = i;
        cr_assert(br_pattern_trie_add(t, pats[i], plen[i], &ids[i]) == BR_OK);
    }
    cr_assert(br_pattern_trie_size(t) == NP);
    size_t matched = 0;
    for (int k = 0; k < NT; k++) {
        char topic[64];
        size_t tl = random_topic(topic, sizeof topic);
        memset(got, 0, sizeof got);
        struct tally ty = {ids, got};
        br_pattern_trie_match(t, topic, tl, tally_hit, &ty);
        for (int i = 0; i < NP; i++) {
            bool want = br_pattern_match(pats[i], plen[i], topic, tl);
            cr_assert(got[i] == (want ? 1u : 0u), "pattern %s topic %s: pairwise %d, trie %u",
                      pats[i], topic, want, got[i]);
            matched += want;
        }
        /* remove and re-add one pattern now and then: the trie must stay consistent */
        if (k % 10 == 0) {
            int i = (int)(rng() % NP);
            cr_assert(br_pattern_trie_remove(t, pats[i], plen[i], &ids[i]) == BR_OK);
            cr_assert(br_pattern_trie_add(t, pats[i], plen[i], &ids[i]) == BR_OK);
        }
    }
    cr_assert(matched > NT, "the generator matched too little (%zu) to test much", matched);
    cr_assert(br_pattern_trie_size(t) == NP);
    br_pattern_trie_free(t);
}

/* ---- allocation torture ---- */

/* A body big enough to leave every stack buffer: 300 distinct tags (the set), a 600-byte key
 * (the key buffer), objects in an array whose keys alternate (the key arena). */
static void big_body(br_buf *b)
{
    br_buf_init(b, 0);
    char key[600];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = 0;
    cr_assert(br_cbor_put_map(b, 4) == BR_OK);
    cr_assert(br_cbor_put_cstr(b, "m") == BR_OK);
    cr_assert(br_cbor_put_map(b, 1) == BR_OK);
    cr_assert(br_cbor_put_cstr(b, key) == BR_OK);
    cr_assert(br_cbor_put_array(b, 40) == BR_OK);
    for (int i = 0; i < 40; i++)
        cr_assert(br_cbor_put_int(b, i % 30) == BR_OK);
    cr_assert(br_cbor_put_cstr(b, "o") == BR_OK);
    cr_assert(br_cbor_put_array(b, 100) == BR_OK);
    for (int i = 0; i < 100; i++) {
        cr_assert(br_cbor_put_map(b, 2) == BR_OK);
        cr_assert(br_cbor_put_cstr(b, "a") == BR_OK);
        cr_assert(br_cbor_put_int(b, i) == BR_OK);
        cr_assert(br_cbor_put_cstr(b, "b") == BR_OK);
        cr_assert(br_cbor_put_int(b, i % 50) == BR_OK);
    }
    cr_assert(br_cbor_put_cstr(b, "t") == BR_OK);
    cr_assert(br_cbor_put_array(b, 300) == BR_OK);
    for (int i = 0; i < 300; i++) {
        char s[32];
        snprintf(s, sizeof s, "tag-%d", i);
        cr_assert(br_cbor_put_cstr(b, s) == BR_OK);
    }
    cr_assert(br_cbor_put_cstr(b, "z") == BR_OK);
    cr_assert(br_cbor_put_double(b, 2.5) == BR_OK);
}

Test(paths, foreach_survives_every_allocation_failure)
{
    br_buf b;
    big_body(&b);
    size_t want = 0;
    cr_assert(br_paths_foreach(b.data, b.len, count_cb, &want) == BR_OK);
    cr_assert(want == 30 + 150 + 300 + 1);
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        size_t count = 0;
        br_alloc_fail_after(fail);
        br_err e = br_paths_foreach(b.data, b.len, count_cb, &count);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(count == want);
            cr_assert(fail > 0);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
    }
    br_buf_fini(&b);
}

Test(paths, small_documents_allocate_nothing)
{
    br_buf b;
    body_of("{\"type\":\"sensor\",\"site\":\"site-7\",\"value\":0.53,\"ts\":1700000000,"
            "\"tags\":[\"t1\",\"t2\",\"t3\"]}",
            &b);
    size_t count = 0;
    br_alloc_fail_after(0);
    br_err e = br_paths_foreach(b.data, b.len, count_cb, &count);
    br_alloc_fail_after(-1);
    cr_assert(e == BR_OK && count == 7);
    br_buf_fini(&b);
}

Test(paths, topics_survive_every_allocation_failure)
{
    br_buf b;
    big_body(&b);
    char **ref = NULL;
    size_t nref = 0;
    cr_assert(br_paths_topics(b.data, b.len, &ref, &nref) == BR_OK);
    cr_assert(nref == 30 + 150 + 300 + 1);
    for (size_t i = 1; i < nref; i++)
        cr_assert(strcmp(ref[i - 1], ref[i]) < 0, "not sorted and unique at %zu", i);
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        char **v = NULL;
        size_t n = 0;
        br_alloc_fail_after(fail);
        br_err e = br_paths_topics(b.data, b.len, &v, &n);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(n == nref);
            for (size_t i = 0; i < n; i++)
                cr_assert_str_eq(v[i], ref[i]);
            br_free(v);
            cr_assert(fail > 0);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
        cr_assert(v == NULL && n == 0);
    }
    br_free(ref);
    br_buf_fini(&b);
}

Test(paths, trie_add_survives_every_allocation_failure)
{
    static const char *const base[] = {"a/b/c", "a/+/c", "a/#", "x/y/z/w"};
    static const char *const adds[] = {"a/b/c/d/e", "a/+/+/#", "q/r/s", "a/b/c", "+/+/+/+/#"};
    for (size_t k = 0; k < sizeof adds / sizeof adds[0]; k++) {
        for (long fail = 0;; fail++) {
            cr_assert(fail < 1000, "never succeeded");
            br_pattern_trie *t = NULL;
            cr_assert(br_pattern_trie_new(&t) == BR_OK);
            int v0, v1;
            for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
                cr_assert(br_pattern_trie_add(t, base[i], strlen(base[i]), &v0) == BR_OK);
            size_t before = br_pattern_trie_size(t);
            br_alloc_fail_after(fail);
            br_err e = br_pattern_trie_add(t, adds[k], strlen(adds[k]), &v1);
            br_alloc_fail_after(-1);
            struct hits h = {.n = 0};
            br_pattern_trie_match(t, "a/b/c/d/e", 9, hit, &h);
            size_t mine = 0;
            for (size_t i = 0; i < h.n; i++)
                mine += h.v[i] == &v1;
            if (e == BR_OK) {
                cr_assert(br_pattern_trie_size(t) == before + 1);
                cr_assert(mine == br_pattern_match(adds[k], strlen(adds[k]), "a/b/c/d/e", 9));
                br_pattern_trie_free(t);
                break;
            }
            cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
            cr_assert(br_pattern_trie_size(t) == before && mine == 0);
            /* the base patterns still work after the failed add */
            for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
                cr_assert(br_pattern_trie_remove(t, base[i], strlen(base[i]), &v0) == BR_OK);
            br_pattern_trie_free(t);
        }
    }
    for (long fail = 0; fail < 2; fail++) {
        br_pattern_trie *t = NULL;
        br_alloc_fail_after(fail);
        br_err e = br_pattern_trie_new(&t);
        br_alloc_fail_after(-1);
        cr_assert(e == BR_ENOMEM && t == NULL);
    }
}
