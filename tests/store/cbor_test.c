/* cbor_test.c — the canonical CBOR writer (shortest heads and floats), the bounded reader over
 * untrusted bytes (truncation, indefinite lengths, tags, simple values, bad UTF-8, announced
 * lengths past the input), and the document validator and canonicaliser (key order, duplicate
 * keys, JSON types, depth cap), with an allocation torture run of the canonicaliser. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/cbor.h"

/* Parse "a1 61 61 01" into bytes (at most cap). */
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

static void expect_bytes(const br_buf *b, const char *want_hex)
{
    uint8_t want[512];
    size_t n = hex(want_hex, want, sizeof want);
    char got[1600] = "";
    for (size_t i = 0; i < b->len && i < 500; i++)
        snprintf(got + 3 * i, sizeof got - 3 * i, "%02x ", b->data[i]);
    cr_assert(b->len == n && memcmp(b->data, want, n) == 0, "got [%s], want [%s]", got, want_hex);
}

/* ---- writer ---- */

Test(cbor, put_uint_uses_shortest_head_at_each_boundary)
{
    static const struct {
        uint64_t v;
        const char *hex;
    } cases[] = {
        {0, "00"},
        {23, "17"},
        {24, "18 18"},
        {255, "18 ff"},
        {256, "19 01 00"},
        {65535, "19 ff ff"},
        {65536, "1a 00 01 00 00"},
        {4294967295u, "1a ff ff ff ff"},
        {4294967296u, "1b 00 00 00 01 00 00 00 00"},
        {UINT64_MAX, "1b ff ff ff ff ff ff ff ff"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        br_buf b;
        br_buf_init(&b, 0);
        cr_assert(br_cbor_put_uint(&b, cases[i].v) == BR_OK);
        expect_bytes(&b, cases[i].hex);
        br_buf_fini(&b);
    }
}

Test(cbor, put_int_encodes_negatives_as_minus_one_minus_n)
{
    static const struct {
        int64_t v;
        const char *hex;
    } cases[] = {
        {-1, "20"},
        {-24, "37"},
        {-25, "38 18"},
        {-256, "38 ff"},
        {-257, "39 01 00"},
        {-65537, "3a 00 01 00 00"},
        {-4294967297LL, "3b 00 00 00 01 00 00 00 00"},
        {INT64_MIN, "3b 7f ff ff ff ff ff ff ff"},
        {INT64_MAX, "1b 7f ff ff ff ff ff ff ff"},
        {7, "07"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        br_buf b;
        br_buf_init(&b, 0);
        cr_assert(br_cbor_put_int(&b, cases[i].v) == BR_OK);
        expect_bytes(&b, cases[i].hex);
        br_buf_fini(&b);
    }
}

Test(cbor, put_double_picks_shortest_exact_form)
{
    static const struct {
        double v;
        const char *hex;
    } cases[] = {
        {1.5, "f9 3e 00"},
        {1.0, "f9 3c 00"}, /* an integral double stays a float */
        {0.0, "f9 00 00"},
        {-0.0, "f9 80 00"},
        {-2.0, "f9 c0 00"},
        {65504.0, "f9 7b ff"},
        {5.960464477539063e-8, "f9 00 01"}, /* smallest half subnormal */
        {6.103515625e-05, "f9 04 00"},      /* smallest half normal */
        {65505.0, "fa 47 7f e1 00"},
        {100000.0, "fa 47 c3 50 00"},
        {3.4028234663852886e+38, "fa 7f 7f ff ff"},
        {0.1, "fb 3f b9 99 99 99 99 99 9a"},
        {1e300, "fb 7e 37 e4 3c 88 00 75 9c"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        br_buf b;
        br_buf_init(&b, 0);
        cr_assert(br_cbor_put_double(&b, cases[i].v) == BR_OK);
        expect_bytes(&b, cases[i].hex);
        br_buf_fini(&b);
    }
}

Test(cbor, put_double_rejects_nan_and_infinity)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(br_cbor_put_double(&b, NAN) == BR_EINVAL);
    cr_assert(br_cbor_put_double(&b, INFINITY) == BR_EINVAL);
    cr_assert(br_cbor_put_double(&b, -INFINITY) == BR_EINVAL);
    cr_assert(b.len == 0);
    br_buf_fini(&b);
}

Test(cbor, put_containers_strings_and_simple_values)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(br_cbor_put_map(&b, 2) == BR_OK);
    cr_assert(br_cbor_put_cstr(&b, "a") == BR_OK);
    cr_assert(br_cbor_put_array(&b, 3) == BR_OK);
    cr_assert(br_cbor_put_bool(&b, true) == BR_OK);
    cr_assert(br_cbor_put_bool(&b, false) == BR_OK);
    cr_assert(br_cbor_put_null(&b) == BR_OK);
    cr_assert(br_cbor_put_str(&b, "bc", 1) == BR_OK);
    cr_assert(br_cbor_put_bytes(&b, "\x01\x02", 2) == BR_OK);
    expect_bytes(&b, "a2 61 61 83 f5 f4 f6 61 62 42 01 02");
    br_buf_fini(&b);
}

Test(cbor, put_str_uses_long_head_for_24_bytes)
{
    char s[300];
    memset(s, 'x', sizeof s);
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(br_cbor_put_str(&b, s, 23) == BR_OK);
    cr_assert(b.data[0] == 0x77 && b.len == 24);
    br_buf_reset(&b);
    cr_assert(br_cbor_put_str(&b, s, 24) == BR_OK);
    cr_assert(b.data[0] == 0x78 && b.data[1] == 24 && b.len == 26);
    br_buf_reset(&b);
    cr_assert(br_cbor_put_str(&b, s, 256) == BR_OK);
    cr_assert(b.data[0] == 0x79 && b.data[1] == 1 && b.data[2] == 0 && b.len == 259);
    br_buf_fini(&b);
}

Test(cbor, put_str_rejects_invalid_utf8)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(br_cbor_put_str(&b, "\xc3\x28", 2) == BR_EINVAL);
    cr_assert(br_cbor_put_str(&b, "\xed\xa0\x80", 3) == BR_EINVAL); /* surrogate */
    cr_assert(br_cbor_put_str(&b, "\xc0\x80", 2) == BR_EINVAL);     /* overlong NUL */
    cr_assert(br_cbor_put_str(&b, "\xf4\x90\x80\x80", 4) == BR_EINVAL);
    cr_assert(b.len == 0);
    cr_assert(br_cbor_put_str(&b, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9) == BR_OK);
    br_buf_fini(&b);
}

Test(cbor, put_past_buffer_max_fails_and_leaves_buffer_unchanged)
{
    br_buf b;
    br_buf_init(&b, 4);
    cr_assert(br_cbor_put_uint(&b, 1) == BR_OK);
    cr_assert(br_cbor_put_str(&b, "abcd", 4) == BR_ETOOBIG);
    cr_assert(br_cbor_put_uint(&b, 65536) == BR_ETOOBIG);
    cr_assert(b.len == 1 && b.data[0] == 0x01);
    br_buf_fini(&b);
}

/* ---- reader ---- */

static br_err next_hex(const char *h, struct br_cbor_item *it)
{
    static uint8_t in[512];
    size_t n = hex(h, in, sizeof in);
    struct br_cbor_reader r;
    br_cbor_reader_init(&r, in, n);
    return br_cbor_next(&r, it);
}

Test(cbor, next_reads_every_type)
{
    struct br_cbor_item it;
    cr_assert(next_hex("1b 00 00 00 01 00 00 00 00", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_UINT && it.u == 4294967296u);
    cr_assert(next_hex("38 ff", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_NEGINT && it.u == 255);
    cr_assert(next_hex("63 61 62 63", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_TEXT && it.len == 3 && memcmp(it.str, "abc", 3) == 0);
    cr_assert(next_hex("42 00 ff", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_BYTES && it.len == 2 && it.str[1] == 0xff);
    cr_assert(next_hex("82 01 02", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_ARRAY && it.len == 2);
    cr_assert(next_hex("a1 61 61 01", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_MAP && it.len == 1);
    cr_assert(next_hex("f9 3e 00", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_FLOAT && it.f == 1.5);
    cr_assert(next_hex("fa 47 c3 50 00", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_FLOAT && it.f == 100000.0);
    cr_assert(next_hex("fb 3f b9 99 99 99 99 99 9a", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_FLOAT && it.f == 0.1);
    cr_assert(next_hex("f5", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_BOOL && it.b);
    cr_assert(next_hex("f6", &it) == BR_OK);
    cr_assert(it.type == BR_CBOR_NULL);
}

Test(cbor, next_widens_half_subnormals_exactly)
{
    struct br_cbor_item it;
    cr_assert(next_hex("f9 00 01", &it) == BR_OK);
    cr_assert(it.f == ldexp(1, -24));
    cr_assert(next_hex("f9 80 00", &it) == BR_OK);
    cr_assert(it.f == 0 && signbit(it.f));
}

Test(cbor, next_rejects_every_truncation)
{
    static const char *const full[] = {
        "18 18",
        "19 01 00",
        "1a 00 01 00 00",
        "1b 00 00 00 01 00 00 00 00",
        "39 01 00",
        "63 61 62 63",
        "58 02 00 01",
        "79 00 01 61",
        "f9 3e 00",
        "fa 47 c3 50 00",
        "fb 3f b9 99 99 99 99 99 9a",
        "98 01",
        "b9 00 01",
    };
    for (size_t i = 0; i < sizeof full / sizeof full[0]; i++) {
        uint8_t in[32];
        size_t n = hex(full[i], in, sizeof in);
        for (size_t k = 0; k < n; k++) {
            struct br_cbor_reader r;
            struct br_cbor_item it;
            br_cbor_reader_init(&r, in, k);
            cr_assert(br_cbor_next(&r, &it) == BR_EPROTO, "%s cut at %zu", full[i], k);
            cr_assert(r.p == in, "reader moved on error");
        }
    }
}

Test(cbor, next_rejects_indefinite_lengths)
{
    struct br_cbor_item it;
    cr_assert(next_hex("5f 41 00 ff", &it) == BR_EPROTO);
    cr_assert(next_hex("7f 61 61 ff", &it) == BR_EPROTO);
    cr_assert(next_hex("9f 01 ff", &it) == BR_EPROTO);
    cr_assert(next_hex("bf 61 61 01 ff", &it) == BR_EPROTO);
    cr_assert(next_hex("ff", &it) == BR_EPROTO); /* a lone break */
}

Test(cbor, next_rejects_tags)
{
    struct br_cbor_item it;
    cr_assert(next_hex("c0 61 61", &it) == BR_EPROTO);
    cr_assert(next_hex("c6 01", &it) == BR_EPROTO);
    cr_assert(next_hex("d8 20 61 61", &it) == BR_EPROTO);
    cr_assert(next_hex("db 00 00 00 00 00 00 00 01 01", &it) == BR_EPROTO);
}

Test(cbor, next_rejects_undefined_and_other_simple_values)
{
    struct br_cbor_item it;
    cr_assert(next_hex("f7", &it) == BR_EPROTO);
    cr_assert(next_hex("f0", &it) == BR_EPROTO);
    cr_assert(next_hex("f8 20", &it) == BR_EPROTO);
    cr_assert(next_hex("fc", &it) == BR_EPROTO);
    cr_assert(next_hex("1c", &it) == BR_EPROTO); /* reserved additional info */
    cr_assert(next_hex("5c", &it) == BR_EPROTO);
}

Test(cbor, next_rejects_invalid_utf8_in_text)
{
    struct br_cbor_item it;
    cr_assert(next_hex("62 c3 28", &it) == BR_EPROTO);
    cr_assert(next_hex("62 c0 80", &it) == BR_EPROTO);
    cr_assert(next_hex("63 ed a0 80", &it) == BR_EPROTO);
    cr_assert(next_hex("61 ff", &it) == BR_EPROTO);
    cr_assert(next_hex("62 c3 a9", &it) == BR_OK);
    cr_assert(next_hex("42 c3 28", &it) == BR_OK); /* bytes are not checked */
}

Test(cbor, next_rejects_huge_announced_lengths)
{
    struct br_cbor_item it;
    cr_assert(next_hex("7b ff ff ff ff ff ff ff ff 61", &it) == BR_EPROTO);
    cr_assert(next_hex("5b 7f ff ff ff ff ff ff ff 61", &it) == BR_EPROTO);
    cr_assert(next_hex("9b ff ff ff ff ff ff ff ff 01", &it) == BR_EPROTO);
    cr_assert(next_hex("bb 00 00 00 01 00 00 00 00 01 01", &it) == BR_EPROTO);
    cr_assert(next_hex("83 01 02", &it) == BR_EPROTO);    /* 3 items, 2 bytes left */
    cr_assert(next_hex("a2 61 61 01", &it) == BR_EPROTO); /* 2 pairs, 3 bytes left */
    cr_assert(next_hex("82 01 02", &it) == BR_OK);
}

Test(cbor, skip_passes_whole_nested_item)
{
    uint8_t in[64];
    size_t n = hex("a2 61 61 82 01 a1 61 62 f6 61 63 f5 07", in, sizeof in);
    struct br_cbor_reader r;
    br_cbor_reader_init(&r, in, n);
    cr_assert(br_cbor_skip(&r, 3) == BR_OK);
    uint64_t v;
    cr_assert(br_cbor_read_uint(&r, &v) == BR_OK && v == 7);
    cr_assert(br_cbor_at_end(&r));
}

Test(cbor, skip_rejects_nesting_past_max_depth_without_moving)
{
    uint8_t in[64];
    size_t n = hex("81 81 81 01", in, sizeof in);
    struct br_cbor_reader r;
    br_cbor_reader_init(&r, in, n);
    cr_assert(br_cbor_skip(&r, 2) == BR_EPROTO);
    cr_assert(r.p == in);
    cr_assert(br_cbor_skip(&r, 3) == BR_OK);
    cr_assert(br_cbor_at_end(&r));
}

Test(cbor, read_helpers_check_type_and_keep_position_on_mismatch)
{
    uint8_t in[64];
    size_t n = hex("a1 63 6b 65 79 42 01 02 80 f4", in, sizeof in);
    struct br_cbor_reader r;
    br_cbor_reader_init(&r, in, n);
    size_t len;
    const char *s;
    const uint8_t *p;
    bool b;
    cr_assert(br_cbor_read_array(&r, &len) == BR_EPROTO);
    cr_assert(r.p == in);
    cr_assert(br_cbor_read_map(&r, &len) == BR_OK && len == 1);
    cr_assert(br_cbor_read_uint(&r, &(uint64_t){0}) == BR_EPROTO);
    cr_assert(br_cbor_read_text(&r, &s, &len) == BR_OK && len == 3 && memcmp(s, "key", 3) == 0);
    cr_assert(br_cbor_read_bytes(&r, &p, &len) == BR_OK && len == 2 && p[1] == 2);
    cr_assert(br_cbor_read_array(&r, &len) == BR_OK && len == 0);
    cr_assert(br_cbor_read_bool(&r, &b) == BR_OK && !b);
    cr_assert(br_cbor_at_end(&r));
    cr_assert(br_cbor_read_bool(&r, &b) == BR_EPROTO);
}

/* ---- documents ---- */

static br_err validate_hex(const char *h)
{
    uint8_t in[512];
    size_t n = hex(h, in, sizeof in);
    struct br_errbuf eb = {{0}};
    return br_cbor_doc_validate(in, n, 0, &eb);
}

static br_err canon_hex(const char *h, br_buf *out, struct br_errbuf *eb)
{
    uint8_t in[512];
    size_t n = hex(h, in, sizeof in);
    return br_cbor_doc_canonical(in, n, 0, out, eb);
}

static void expect_canonical(const char *in, const char *want)
{
    br_buf out;
    br_buf_init(&out, 0);
    struct br_errbuf eb = {{0}};
    br_err e = canon_hex(in, &out, &eb);
    cr_assert(e == BR_OK, "canonical(%s): %s", in, eb.msg);
    expect_bytes(&out, want);
    /* the result is valid and a fixed point */
    cr_assert(br_cbor_doc_validate(out.data, out.len, 0, &eb) == BR_OK);
    br_buf again;
    br_buf_init(&again, 0);
    cr_assert(br_cbor_doc_canonical(out.data, out.len, 0, &again, &eb) == BR_OK);
    cr_assert(again.len == out.len && memcmp(again.data, out.data, out.len) == 0);
    br_buf_fini(&again);
    br_buf_fini(&out);
}

static void expect_rejected(const char *in, br_err want)
{
    cr_assert(validate_hex(in) == want, "validate(%s)", in);
    br_buf out;
    br_buf_init(&out, 0);
    cr_assert(br_cbor_put_uint(&out, 9) == BR_OK);
    struct br_errbuf eb = {{0}};
    cr_assert(canon_hex(in, &out, &eb) == want, "canonical(%s)", in);
    cr_assert(eb.msg[0] != 0, "no reason given for %s", in);
    cr_assert(out.len == 1 && out.data[0] == 9, "output changed on error");
    br_buf_fini(&out);
}

Test(cbor, canonical_sorts_keys_shorter_first)
{
    /* {"b":1,"a":2,"aa":3} -> a, b, aa */
    expect_canonical("a3 61 62 01 61 61 02 62 61 61 03", "a3 61 61 02 61 62 01 62 61 61 03");
}

Test(cbor, canonical_sorts_nested_maps_and_keeps_array_order)
{
    expect_canonical("a2 61 7a 82 a2 61 79 01 61 78 02 03 61 61 a2 62 62 62 f6 61 63 f5",
                     "a2 61 61 a2 61 63 f5 62 62 62 f6 61 7a 82 a2 61 78 02 61 79 01 03");
}

Test(cbor, canonical_sorts_by_encoded_length_across_head_sizes)
{
    /* a 24-byte key (2-byte head) sorts after a 23-byte key even though "z" > "a" */
    br_buf in, out;
    br_buf_init(&in, 0);
    br_buf_init(&out, 0);
    char k24[24], k23[23];
    memset(k24, 'a', sizeof k24);
    memset(k23, 'z', sizeof k23);
    cr_assert(br_cbor_put_map(&in, 2) == BR_OK);
    cr_assert(br_cbor_put_str(&in, k24, sizeof k24) == BR_OK);
    cr_assert(br_cbor_put_null(&in) == BR_OK);
    cr_assert(br_cbor_put_str(&in, k23, sizeof k23) == BR_OK);
    cr_assert(br_cbor_put_null(&in) == BR_OK);
    struct br_errbuf eb = {{0}};
    cr_assert(br_cbor_doc_canonical(in.data, in.len, 0, &out, &eb) == BR_OK);
    cr_assert(out.data[1] == 0x77 && out.data[2] == 'z');
    cr_assert(out.data[25] == 0xf6 && out.data[26] == 0x78 && out.data[28] == 'a');
    br_buf_fini(&in);
    br_buf_fini(&out);
}

Test(cbor, canonical_shortens_ints_lengths_and_floats)
{
    /* {"a": 1 as 8 bytes, "b": 1.5 as double, "c": -1 as 2 bytes, "d": "x" with 1-byte
     * length, "e": [] with 2-byte count, "f": 1.0 as single} */
    expect_canonical("a6 61 61 1b 00 00 00 00 00 00 00 01 61 62 fb 3f f8 00 00 00 00 00 00"
                     " 61 63 38 00 61 64 78 01 78 61 65 99 00 00 61 66 fa 3f 80 00 00",
                     "a6 61 61 01 61 62 f9 3e 00 61 63 20 61 64 61 78 61 65 80 61 66 f9 3c 00");
    /* long map head and long key head */
    expect_canonical("b9 00 01 78 01 6b 18 18", "a1 61 6b 18 18");
}

Test(cbor, canonical_keeps_extreme_integers)
{
    expect_canonical("a2 61 61 1b ff ff ff ff ff ff ff ff 61 62 3b 7f ff ff ff ff ff ff ff",
                     "a2 61 61 1b ff ff ff ff ff ff ff ff 61 62 3b 7f ff ff ff ff ff ff ff");
}

Test(cbor, canonical_accepts_empty_map)
{
    expect_canonical("a0", "a0");
}

Test(cbor, canonical_rejects_duplicate_keys)
{
    br_buf out;
    br_buf_init(&out, 0);
    struct br_errbuf eb = {{0}};
    cr_assert(canon_hex("a2 61 61 01 61 61 02", &out, &eb) == BR_EPROTO);
    cr_assert(strstr(eb.msg, "duplicate") != NULL);
    /* the same key spelled with a longer head is still a duplicate */
    cr_assert(canon_hex("a2 61 61 01 78 01 61 02", &out, &eb) == BR_EPROTO);
    cr_assert(canon_hex("a1 61 78 a2 61 61 01 61 61 02", &out, &eb) == BR_EPROTO);
    cr_assert(out.len == 0);
    br_buf_fini(&out);
    /* validation alone does not look for duplicates */
    cr_assert(validate_hex("a2 61 61 01 61 61 02") == BR_OK);
}

Test(cbor, doc_rejects_non_map_body)
{
    expect_rejected("80", BR_EPROTO);
    expect_rejected("01", BR_EPROTO);
    expect_rejected("61 61", BR_EPROTO);
    expect_rejected("", BR_EPROTO);
}

Test(cbor, doc_rejects_non_json_types)
{
    expect_rejected("a1 61 61 42 00 01", BR_EPROTO);                   /* bytes */
    expect_rejected("a1 01 01", BR_EPROTO);                            /* int key */
    expect_rejected("a1 80 01", BR_EPROTO);                            /* array key */
    expect_rejected("a1 61 61 a1 f6 01", BR_EPROTO);                   /* null key, nested */
    expect_rejected("a1 61 61 3b 80 00 00 00 00 00 00 00", BR_EPROTO); /* below -2^63 */
    expect_rejected("a1 61 61 f9 7e 00", BR_EPROTO);                   /* NaN */
    expect_rejected("a1 61 61 fa 7f 80 00 00", BR_EPROTO);             /* +inf */
    expect_rejected("a1 61 61 fb ff f0 00 00 00 00 00 00", BR_EPROTO); /* -inf */
    expect_rejected("a1 61 61 f7", BR_EPROTO);                         /* undefined */
    expect_rejected("a1 61 61 c1 01", BR_EPROTO);                      /* tag */
    expect_rejected("a1 61 61 62 c3 28", BR_EPROTO);                   /* bad UTF-8 */
    expect_rejected("a1 62 c3 28 01", BR_EPROTO);                      /* bad UTF-8 key */
}

Test(cbor, doc_rejects_malformed_input)
{
    expect_rejected("a1 61 61", BR_EPROTO);             /* truncated: value missing */
    expect_rejected("a2 61 61 01", BR_EPROTO);          /* announced too many pairs */
    expect_rejected("a1 61 61 82 01", BR_EPROTO);       /* truncated array */
    expect_rejected("bf 61 61 01 ff", BR_EPROTO);       /* indefinite map */
    expect_rejected("a1 61 61 9f ff", BR_EPROTO);       /* indefinite array */
    expect_rejected("a1 61 61 7f 61 61 ff", BR_EPROTO); /* indefinite text */
    expect_rejected("a0 00", BR_EPROTO);                /* trailing bytes */
    expect_rejected("a1 61 61 9b ff ff ff ff ff ff ff ff 01", BR_EPROTO);
    expect_rejected("bb ff ff ff ff ff ff ff ff 61 61 01", BR_EPROTO);
    expect_rejected("a1 7b ff ff ff ff ff ff ff f0 61 01", BR_EPROTO);
}

/* A body nested `depth` containers deep: {"a":{"a":...{}}} or {"a":[[...[]]]}. */
static void nested_doc(br_buf *b, unsigned depth, bool arrays)
{
    br_buf_init(b, 0);
    cr_assert(br_cbor_put_map(b, depth > 1 ? 1 : 0) == BR_OK);
    for (unsigned i = 1; i < depth; i++) {
        size_t n = i + 1 < depth ? 1 : 0;
        if (!arrays || i == 1)
            cr_assert(br_cbor_put_cstr(b, "a") == BR_OK);
        if (arrays)
            cr_assert(br_cbor_put_array(b, n) == BR_OK);
        else
            cr_assert(br_cbor_put_map(b, n) == BR_OK);
    }
}

Test(cbor, doc_depth_64_accepted_and_65_rejected)
{
    for (int arrays = 0; arrays <= 1; arrays++) {
        br_buf ok, deep, out;
        nested_doc(&ok, 64, arrays);
        nested_doc(&deep, 65, arrays);
        br_buf_init(&out, 0);
        struct br_errbuf eb = {{0}};
        cr_assert(br_cbor_doc_validate(ok.data, ok.len, 0, &eb) == BR_OK, "%s", eb.msg);
        cr_assert(br_cbor_doc_canonical(ok.data, ok.len, 0, &out, &eb) == BR_OK, "%s", eb.msg);
        cr_assert(out.len == ok.len && memcmp(out.data, ok.data, ok.len) == 0);
        br_buf_reset(&out);
        cr_assert(br_cbor_doc_validate(deep.data, deep.len, 0, &eb) == BR_EPROTO);
        cr_assert(br_cbor_doc_canonical(deep.data, deep.len, 0, &out, &eb) == BR_EPROTO);
        cr_assert(out.len == 0);
        /* an explicit smaller cap */
        cr_assert(br_cbor_doc_validate(ok.data, ok.len, 63, &eb) == BR_EPROTO);
        cr_assert(br_cbor_doc_canonical(ok.data, ok.len, 63, &out, &eb) == BR_EPROTO);
        br_buf_fini(&ok);
        br_buf_fini(&deep);
        br_buf_fini(&out);
    }
}

Test(cbor, doc_canonical_survives_every_allocation_failure)
{
    const char *in_hex = "a3 61 7a 82 a2 61 79 01 61 78 02 a1 61 71 f6 61 61 a2 62 62 62 f6"
                         " 61 63 fb 3f f8 00 00 00 00 00 00 62 61 61 83 01 a0 a1 61 6b 61 76";
    uint8_t in[256];
    size_t n = hex(in_hex, in, sizeof in);
    br_buf ref;
    br_buf_init(&ref, 0);
    struct br_errbuf eb = {{0}};
    cr_assert(br_cbor_doc_canonical(in, n, 0, &ref, &eb) == BR_OK);
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        br_buf out;
        br_buf_init(&out, 0);
        br_alloc_fail_after(fail);
        br_err e = br_cbor_doc_canonical(in, n, 0, &out, &eb);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(out.len == ref.len && memcmp(out.data, ref.data, ref.len) == 0);
            br_buf_fini(&out);
            cr_assert(fail > 0);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
        cr_assert(out.len == 0);
        br_buf_fini(&out);
    }
    br_buf_fini(&ref);
}
