/* json_test.c — strict JSON parsing, JSON <-> canonical CBOR conversion (key order, integer
 * and float forms, depth cap, values JSON cannot hold), the CouchDB split of a JSON document
 * into metadata and body (every "_" member and its errors), rendering of a read document, the
 * one-pass text converter (br_json_doc_parse_text) against the tree path it replaces, and
 * allocation torture of the converters with jansson routed through br_malloc. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"
#include "barrel/json.h"

#include "json_int.h"

static void *jalloc(size_t n)
{
    return br_malloc(n);
}

static void jfree(void *p)
{
    br_free(p);
}

/* jansson allocates through br_malloc so that torture runs can fail its allocations too. */
static void setup(void)
{
    json_set_alloc_funcs(jalloc, jfree);
}

TestSuite(json, .init = setup);

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

static json_t *parse(const char *text)
{
    json_t *v = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = br_json_parse(text, strlen(text), 0, &v, &eb);
    cr_assert(e == BR_OK, "parse(%s): %s", text, eb.msg);
    return v;
}

/* JSON text -> canonical CBOR, compared with the expected hex. */
static void expect_cbor(const char *text, const char *want_hex)
{
    uint8_t want[512];
    size_t n = hex(want_hex, want, sizeof want);
    json_t *v = parse(text);
    br_buf b;
    br_buf_init(&b, 0);
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_to_cbor(v, &b, &eb) == BR_OK, "%s: %s", text, eb.msg);
    char got[1600] = "";
    for (size_t i = 0; i < b.len && i < 500; i++)
        snprintf(got + 3 * i, sizeof got - 3 * i, "%02x ", b.data[i]);
    cr_assert(b.len == n && memcmp(b.data, want, n) == 0, "%s: got [%s], want [%s]", text, got,
              want_hex);
    /* and back to an equal JSON value */
    json_t *back = NULL;
    cr_assert(br_json_from_cbor(b.data, b.len, &back, &eb) == BR_OK, "%s", eb.msg);
    cr_assert(json_equal(v, back), "%s did not round-trip", text);
    json_decref(back);
    json_decref(v);
    br_buf_fini(&b);
}

/* ---- parsing ---- */

Test(json, parse_accepts_any_value)
{
    json_t *v = parse(" {\"a\": [1, 2.5, \"x\", true, null]} ");
    cr_assert(json_is_object(v));
    json_decref(v);
    v = parse("42");
    cr_assert(json_is_integer(v) && json_integer_value(v) == 42);
    json_decref(v);
}

Test(json, parse_rejects_duplicate_keys_with_line_and_column)
{
    const char *t = "{\n  \"a\": 1,\n  \"a\": 2\n}";
    json_t *v = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_parse(t, strlen(t), 0, &v, &eb) == BR_EINVAL);
    cr_assert(v == NULL);
    cr_assert(strstr(eb.msg, "line 3") != NULL, "%s", eb.msg);
    cr_assert(strstr(eb.msg, "column") != NULL, "%s", eb.msg);
    cr_assert(strstr(eb.msg, "duplicate") != NULL, "%s", eb.msg);
}

Test(json, parse_rejects_nul_trailing_garbage_and_bad_text)
{
    static const char *const bad[] = {
        "{\"a\": \"x\\u0000y\"}",
        "{\"a\": 1} x",
        "{\"a\": 1}{}",
        "{\"a\": }",
        "{\"a\": 1",
        "",
        "{\"a\": \"\xc3\x28\"}",
        "{\"a\": 99999999999999999999}",
        "[1e400]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = NULL;
        struct br_errbuf eb = {{0}};
        cr_assert(br_json_parse(bad[i], strlen(bad[i]), 0, &v, &eb) == BR_EINVAL, "%s", bad[i]);
        cr_assert(eb.msg[0] != 0);
    }
    /* a raw NUL byte inside the text */
    json_t *v = NULL;
    cr_assert(br_json_parse("{\"a\":\0 1}", 9, 0, &v, NULL) == BR_EINVAL);
}

Test(json, parse_rejects_text_past_max)
{
    const char *t = "{\"a\": \"0123456789\"}";
    json_t *v = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_parse(t, strlen(t), 10, &v, &eb) == BR_ETOOBIG);
    cr_assert(br_json_parse(t, strlen(t), strlen(t), &v, &eb) == BR_OK);
    json_decref(v);
}

/* ---- JSON -> CBOR ---- */

Test(json, to_cbor_sorts_keys_shorter_first)
{
    expect_cbor("{\"b\":1,\"a\":2,\"aa\":3}", "a3 61 61 02 61 62 01 62 61 61 03");
    /* bytewise within a length: "B" (0x42) < "a" (0x61) */
    expect_cbor("{\"a\":1,\"B\":2}", "a2 61 42 02 61 61 01");
}

Test(json, to_cbor_equal_documents_give_equal_bytes)
{
    json_t *x = parse("{\"z\": {\"q\": 1, \"p\": [1, {\"b\": 2, \"a\": 1}]}, \"y\": null}");
    json_t *y = parse("{\"y\": null, \"z\": {\"p\": [1, {\"a\": 1, \"b\": 2}], \"q\": 1}}");
    br_buf a, b;
    br_buf_init(&a, 0);
    br_buf_init(&b, 0);
    cr_assert(br_json_to_cbor(x, &a, NULL) == BR_OK);
    cr_assert(br_json_to_cbor(y, &b, NULL) == BR_OK);
    cr_assert(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    /* and it is what the CBOR canonicaliser makes */
    br_buf c;
    br_buf_init(&c, 0);
    cr_assert(br_cbor_doc_canonical(a.data, a.len, 0, &c, NULL) == BR_OK);
    cr_assert(c.len == a.len && memcmp(c.data, a.data, a.len) == 0);
    br_buf_fini(&a);
    br_buf_fini(&b);
    br_buf_fini(&c);
    json_decref(x);
    json_decref(y);
}

Test(json, to_cbor_uses_shortest_integers_at_each_boundary)
{
    expect_cbor("[23, 24, 255, 256]", "84 17 18 18 18 ff 19 01 00");
    expect_cbor("[65535, 65536]", "82 19 ff ff 1a 00 01 00 00");
    expect_cbor("[4294967295, 4294967296]", "82 1a ff ff ff ff 1b 00 00 00 01 00 00 00 00");
    expect_cbor("[-1, -24, -25, -256, -257]", "85 20 37 38 18 38 ff 39 01 00");
    expect_cbor("[9223372036854775807, -9223372036854775808]",
                "82 1b 7f ff ff ff ff ff ff ff 3b 7f ff ff ff ff ff ff ff");
}

Test(json, to_cbor_keeps_reals_as_shortest_floats)
{
    expect_cbor("[1.5]", "81 f9 3e 00");
    expect_cbor("[0.1]", "81 fb 3f b9 99 99 99 99 99 9a");
    expect_cbor("[1.0]", "81 f9 3c 00"); /* a real stays a float */
    expect_cbor("[1]", "81 01");
    expect_cbor("[100000.0, -0.0]", "82 fa 47 c3 50 00 f9 80 00");
}

Test(json, to_cbor_encodes_strings_and_literals)
{
    expect_cbor("{\"s\": \"h\\u00e9\", \"t\": true, \"f\": false, \"n\": null, \"e\": \"\"}",
                "a5 61 65 60 61 66 f4 61 6e f6 61 73 63 68 c3 a9 61 74 f5");
}

static json_t *nested(unsigned depth)
{
    json_t *v = json_object();
    for (unsigned i = 1; i < depth; i++) {
        json_t *outer = i % 2 ? json_array() : json_object();
        if (json_is_array(outer))
            cr_assert(json_array_append_new(outer, v) == 0);
        else
            cr_assert(json_object_set_new(outer, "k", v) == 0);
        v = outer;
    }
    return v;
}

Test(json, to_cbor_accepts_depth_64_and_rejects_65)
{
    json_t *ok = nested(64), *deep = nested(65);
    br_buf b;
    br_buf_init(&b, 0);
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_to_cbor(ok, &b, &eb) == BR_OK, "%s", eb.msg);
    json_t *back = NULL;
    cr_assert(br_json_from_cbor(b.data, b.len, &back, &eb) == BR_OK, "%s", eb.msg);
    cr_assert(json_equal(ok, back));
    json_decref(back);
    br_buf_reset(&b);
    cr_assert(br_json_to_cbor(deep, &b, &eb) == BR_EINVAL);
    cr_assert(b.len == 0);
    json_decref(ok);
    json_decref(deep);
    br_buf_fini(&b);
}

Test(json, to_cbor_survives_every_allocation_failure)
{
    json_t *v = parse("{\"b\": [1, 2.5, {\"y\": \"t\", \"x\": null}], \"a\": {\"q\": {}, "
                      "\"p\": [true, false]}, \"long key here\": -7}");
    br_buf ref;
    br_buf_init(&ref, 0);
    cr_assert(br_json_to_cbor(v, &ref, NULL) == BR_OK);
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        br_buf out;
        br_buf_init(&out, 0);
        struct br_errbuf eb = {{0}};
        br_alloc_fail_after(fail);
        br_err e = br_json_to_cbor(v, &out, &eb);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(fail > 0);
            cr_assert(out.len == ref.len && memcmp(out.data, ref.data, ref.len) == 0);
            br_buf_fini(&out);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
        cr_assert(out.len == 0);
        br_buf_fini(&out);
    }
    br_buf_fini(&ref);
    json_decref(v);
}

/* ---- CBOR -> JSON ---- */

static br_err from_hex(const char *h, json_t **out)
{
    uint8_t in[256];
    size_t n = hex(h, in, sizeof in);
    struct br_errbuf eb = {{0}};
    br_err e = br_json_from_cbor(in, n, out, &eb);
    if (e)
        cr_assert(eb.msg[0] != 0, "no reason for %s", h);
    return e;
}

Test(json, from_cbor_rejects_what_json_cannot_hold)
{
    json_t *v = NULL;
    /* integers above INT64_MAX are refused rather than rounded into reals */
    cr_assert(from_hex("1b 80 00 00 00 00 00 00 00", &v) == BR_EPROTO);
    cr_assert(from_hex("3b 80 00 00 00 00 00 00 00", &v) == BR_EPROTO);
    cr_assert(from_hex("42 01 02", &v) == BR_EPROTO);             /* bytes */
    cr_assert(from_hex("f9 7e 00", &v) == BR_EPROTO);             /* NaN */
    cr_assert(from_hex("a1 01 01", &v) == BR_EPROTO);             /* int key */
    cr_assert(from_hex("a2 61 61 01 61 61 02", &v) == BR_EPROTO); /* duplicate key */
    cr_assert(from_hex("01 02", &v) == BR_EPROTO);                /* trailing bytes */
    cr_assert(from_hex("82 01", &v) == BR_EPROTO);                /* truncated */
    cr_assert(from_hex("9f ff", &v) == BR_EPROTO);                /* indefinite */
    cr_assert(from_hex("c1 01", &v) == BR_EPROTO);                /* tag */
    cr_assert(from_hex("", &v) == BR_EPROTO);
    cr_assert(v == NULL);
}

Test(json, from_cbor_reads_extremes_and_non_canonical_forms)
{
    json_t *v = NULL;
    cr_assert(from_hex("82 1b 7f ff ff ff ff ff ff ff 3b 7f ff ff ff ff ff ff ff", &v) == BR_OK);
    cr_assert(json_integer_value(json_array_get(v, 0)) == INT64_MAX);
    cr_assert(json_integer_value(json_array_get(v, 1)) == INT64_MIN);
    json_decref(v);
    cr_assert(from_hex("a1 78 01 61 fa 3f c0 00 00", &v) == BR_OK);
    cr_assert(json_real_value(json_object_get(v, "a")) == 1.5);
    json_decref(v);
}

Test(json, from_cbor_survives_every_allocation_failure)
{
    uint8_t in[128];
    size_t n = hex("a3 61 61 83 01 f9 3e 00 63 61 62 63 61 62 a1 61 63 f6 62 64 64 82 f5 80", in,
                   sizeof in);
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        json_t *v = NULL;
        br_alloc_fail_after(fail);
        br_err e = br_json_from_cbor(in, n, &v, NULL);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(fail > 0);
            json_decref(v);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
    }
}

/* ---- documents ---- */

static br_err doc_parse(const char *text, const char *url_id, struct br_json_doc *d,
                        struct br_errbuf *eb)
{
    json_t *v = parse(text);
    br_err e = br_json_doc_parse(v, url_id, d, eb);
    json_decref(v);
    return e;
}

static void expect_doc_error(const char *text, const char *url_id, br_err want,
                             const char *msg_part)
{
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    br_err e = doc_parse(text, url_id, &d, &eb);
    cr_assert(e == want, "%s: got %d (%s), want %d", text, e, eb.msg, want);
    if (msg_part)
        cr_assert(strstr(eb.msg, msg_part) != NULL, "%s: message '%s'", text, eb.msg);
    cr_assert(d.id == NULL && d.history == NULL && d.atts == NULL && d.body.data == NULL);
}

static void expect_body(const struct br_json_doc *d, const char *want_hex)
{
    uint8_t want[256];
    size_t n = hex(want_hex, want, sizeof want);
    cr_assert(d->put.body == d->body.data && d->put.body_len == d->body.len);
    cr_assert(d->body.len == n && memcmp(d->body.data, want, n) == 0);
}

Test(json, doc_parse_splits_body_from_metadata)
{
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert(doc_parse("{\"_id\": \"doc1\", \"b\": 1, \"a\": {\"_x\": 2}}", NULL, &d, &eb) ==
                  BR_OK,
              "%s", eb.msg);
    cr_assert(strcmp(d.id, "doc1") == 0);
    cr_assert(d.put.id == d.id && d.put.id_len == 4);
    cr_assert(d.put.rev == NULL && d.put.n_history == 0 && !d.put.deleted);
    cr_assert(d.put.n_atts == 0);
    /* only top-level "_" keys are metadata */
    expect_body(&d, "a2 61 61 a1 62 5f 78 02 61 62 01");
    br_json_doc_fini(&d);
}

Test(json, doc_parse_without_id_leaves_id_null_and_empty_body_is_a0)
{
    struct br_json_doc d;
    cr_assert(doc_parse("{}", NULL, &d, NULL) == BR_OK);
    cr_assert(d.put.id == NULL && d.id == NULL);
    expect_body(&d, "a0");
    br_json_doc_fini(&d);
}

Test(json, doc_parse_url_id_wins_and_must_match)
{
    struct br_json_doc d;
    cr_assert(doc_parse("{\"x\": 1}", "fromurl", &d, NULL) == BR_OK);
    cr_assert(strcmp(d.put.id, "fromurl") == 0 && d.put.id_len == 7);
    br_json_doc_fini(&d);
    cr_assert(doc_parse("{\"_id\": \"same\"}", "same", &d, NULL) == BR_OK);
    cr_assert(strcmp(d.put.id, "same") == 0);
    br_json_doc_fini(&d);
    expect_doc_error("{\"_id\": \"other\"}", "url", BR_EINVAL, "does not match url");
    expect_doc_error("{\"_id\": 5}", NULL, BR_EINVAL, "Document id must be a string");
}

Test(json, doc_parse_reads_rev_as_history_of_one)
{
    struct br_json_doc d;
    cr_assert(doc_parse("{\"_rev\": \"3-abc\", \"v\": 1}", NULL, &d, NULL) == BR_OK);
    cr_assert(d.put.rev == &d.rev && d.rev.gen == 3 && strcmp(d.rev.hash, "abc") == 0);
    cr_assert(d.put.n_history == 1 && d.put.history == d.history);
    cr_assert(br_rev_eq(&d.history[0], &d.rev));
    br_json_doc_fini(&d);
}

Test(json, doc_parse_rejects_bad_rev)
{
    expect_doc_error("{\"_rev\": \"abc\"}", NULL, BR_EBADREV, "Invalid rev format");
    expect_doc_error("{\"_rev\": \"0-abc\"}", NULL, BR_EBADREV, NULL);
    expect_doc_error("{\"_rev\": \"1-ABC\"}", NULL, BR_EBADREV, NULL);
    expect_doc_error("{\"_rev\": \"1-\"}", NULL, BR_EBADREV, NULL);
    expect_doc_error("{\"_rev\": 3}", NULL, BR_EBADREV, NULL);
}

Test(json, doc_parse_accepts_local_document_rev)
{
    struct br_json_doc d;
    cr_assert(doc_parse("{\"_rev\": \"0-7\"}", "_local/x", &d, NULL) == BR_OK);
    cr_assert(d.put.rev == &d.rev && d.rev.gen == 0 && strcmp(d.rev.hash, "7") == 0);
    cr_assert(d.put.n_history == 0);
    br_json_doc_fini(&d);
}

Test(json, doc_parse_reads_deleted)
{
    struct br_json_doc d;
    cr_assert(doc_parse("{\"_deleted\": true}", "x", &d, NULL) == BR_OK);
    cr_assert(d.put.deleted);
    br_json_doc_fini(&d);
    cr_assert(doc_parse("{\"_deleted\": false}", "x", &d, NULL) == BR_OK);
    cr_assert(!d.put.deleted);
    br_json_doc_fini(&d);
    expect_doc_error("{\"_deleted\": 1}", NULL, BR_EINVAL, "Bad special document member: _deleted");
}

Test(json, doc_parse_builds_history_from_revisions_newest_first)
{
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert(doc_parse("{\"_revisions\": {\"start\": 3, \"ids\": [\"ccc\", \"bbb\", \"aaa\"]}}",
                        "x", &d, &eb) == BR_OK,
              "%s", eb.msg);
    cr_assert(d.put.n_history == 3 && d.put.history == d.history);
    cr_assert(d.history[0].gen == 3 && strcmp(d.history[0].hash, "ccc") == 0);
    cr_assert(d.history[1].gen == 2 && strcmp(d.history[1].hash, "bbb") == 0);
    cr_assert(d.history[2].gen == 1 && strcmp(d.history[2].hash, "aaa") == 0);
    cr_assert(br_rev_path_check(d.history, d.n_history) == BR_OK);
    /* without _rev, the revision is the head of the path */
    cr_assert(d.put.rev == &d.rev && br_rev_eq(&d.rev, &d.history[0]));
    br_json_doc_fini(&d);

    cr_assert(doc_parse("{\"_rev\": \"5-e\", \"_revisions\": {\"start\": 5, \"ids\": [\"e\", "
                        "\"d\"]}}",
                        "x", &d, &eb) == BR_OK,
              "%s", eb.msg);
    cr_assert(d.put.n_history == 2 && d.history[1].gen == 4);
    br_json_doc_fini(&d);

    /* REV-08's empty form means no history */
    cr_assert(doc_parse("{\"_revisions\": {\"start\": 0, \"ids\": []}}", "x", &d, NULL) == BR_OK);
    cr_assert(d.put.n_history == 0 && d.put.rev == NULL);
    br_json_doc_fini(&d);
}

Test(json, doc_parse_rejects_revisions_inconsistent_or_malformed)
{
    expect_doc_error("{\"_rev\": \"3-abc\", \"_revisions\": {\"start\": 3, \"ids\": [\"abd\"]}}",
                     NULL, BR_EBADREV, "_rev does not match _revisions");
    expect_doc_error("{\"_rev\": \"2-abc\", \"_revisions\": {\"start\": 3, \"ids\": [\"abc\"]}}",
                     NULL, BR_EBADREV, "_rev does not match _revisions");
    expect_doc_error("{\"_revisions\": {\"start\": 1, \"ids\": [\"a\", \"b\"]}}", NULL, BR_EBADREV,
                     NULL); /* generation would reach 0 */
    expect_doc_error("{\"_revisions\": {\"start\": 2, \"ids\": [\"a\", \"XYZ\"]}}", NULL,
                     BR_EBADREV, "ids[1]");
    expect_doc_error("{\"_revisions\": {\"start\": 2, \"ids\": [\"a\", 7]}}", NULL, BR_EBADREV,
                     NULL);
    expect_doc_error("{\"_revisions\": {\"start\": 2, \"ids\": [\"\"]}}", NULL, BR_EBADREV, NULL);
    expect_doc_error("{\"_revisions\": {\"start\": -1, \"ids\": []}}", NULL, BR_EBADREV, NULL);
    expect_doc_error("{\"_revisions\": {\"start\": 9007199254740992, \"ids\": [\"a\"]}}", NULL,
                     BR_EBADREV, NULL);
    expect_doc_error("{\"_revisions\": {\"ids\": [\"a\"]}}", NULL, BR_EBADREV, NULL);
    expect_doc_error("{\"_revisions\": [\"1-a\"]}", NULL, BR_EBADREV, NULL);
    /* a hash longer than 64 digits */
    expect_doc_error("{\"_revisions\": {\"start\": 1, \"ids\": [\"0123456789abcdef0123456789abcdef"
                     "0123456789abcdef0123456789abcdef0\"]}}",
                     NULL, BR_EBADREV, NULL);
}

Test(json, doc_parse_reads_inline_and_stub_attachments)
{
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert(doc_parse("{\"_attachments\": {"
                        "\"a.txt\": {\"content_type\": \"text/plain\", \"data\": \"aGVsbG8=\"},"
                        "\"b.bin\": {\"stub\": true, \"digest\": \"md5-abc=\", \"revpos\": 2,"
                        " \"length\": 5},"
                        "\"empty\": {\"data\": \"\"}}}",
                        "x", &d, &eb) == BR_OK,
              "%s", eb.msg);
    cr_assert(d.put.n_atts == 3 && d.put.atts == d.atts);
    const struct br_att_in *a = NULL, *b = NULL, *c = NULL;
    for (size_t i = 0; i < d.n_atts; i++) {
        if (strcmp(d.atts[i].name, "a.txt") == 0)
            a = &d.atts[i];
        else if (strcmp(d.atts[i].name, "b.bin") == 0)
            b = &d.atts[i];
        else if (strcmp(d.atts[i].name, "empty") == 0)
            c = &d.atts[i];
    }
    cr_assert(a && b && c);
    cr_assert(!a->stub && a->len == 5 && memcmp(a->data, "hello", 5) == 0);
    cr_assert(strcmp(a->content_type, "text/plain") == 0 && a->digest == NULL);
    cr_assert(b->stub && strcmp(b->digest, "md5-abc=") == 0 && b->revpos == 2);
    cr_assert(b->data == NULL && b->content_type == NULL);
    cr_assert(!c->stub && c->len == 0);
    expect_body(&d, "a0");
    br_json_doc_fini(&d);
}

Test(json, doc_parse_rejects_bad_attachments)
{
    expect_doc_error("{\"_attachments\": {\"a\": {\"data\": \"not base64!\"}}}", NULL, BR_EINVAL,
                     "base64");
    expect_doc_error("{\"_attachments\": {\"a\": {\"data\": \"aGVsbG8\"}}}", NULL, BR_EINVAL,
                     "base64"); /* missing padding */
    expect_doc_error("{\"_attachments\": {\"a\": {\"content_type\": \"x\"}}}", NULL, BR_EINVAL,
                     "neither data nor stub");
    expect_doc_error("{\"_attachments\": {\"a\": {\"data\": 5}}}", NULL, BR_EINVAL, NULL);
    expect_doc_error("{\"_attachments\": {\"a\": {\"stub\": \"yes\"}}}", NULL, BR_EINVAL, NULL);
    expect_doc_error("{\"_attachments\": {\"a\": {\"stub\": true, \"revpos\": -1}}}", NULL,
                     BR_EINVAL, NULL);
    expect_doc_error("{\"_attachments\": {\"a\": 1}}", NULL, BR_EINVAL, NULL);
    expect_doc_error("{\"_attachments\": []}", NULL, BR_EINVAL, NULL);
    expect_doc_error("{\"_attachments\": {\"\": {\"data\": \"\"}}}", NULL, BR_EINVAL, NULL);
}

Test(json, doc_parse_ignores_members_couchdb_ignores)
{
    struct br_json_doc d;
    cr_assert(doc_parse("{\"_conflicts\": [\"1-a\"], \"_deleted_conflicts\": [], "
                        "\"_local_seq\": 3, \"_revs_info\": [], \"k\": 1}",
                        "x", &d, NULL) == BR_OK);
    expect_body(&d, "a1 61 6b 01");
    br_json_doc_fini(&d);
}

Test(json, doc_parse_rejects_unknown_special_member)
{
    expect_doc_error("{\"_foo\": 1}", NULL, BR_EINVAL, "Bad special document member: _foo");
    expect_doc_error("{\"a\": 1, \"_\": 1}", NULL, BR_EINVAL, "Bad special document member: _");
}

Test(json, doc_parse_rejects_non_object)
{
    static const char *const bad[] = {"[]", "1", "\"doc\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_doc_error(bad[i], NULL, BR_EINVAL, "must be a JSON object");
}

Test(json, doc_parse_rejects_too_deep_body)
{
    json_t *v = nested(65);
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_doc_parse(v, "x", &d, &eb) == BR_EINVAL);
    cr_assert(d.body.data == NULL && d.id == NULL);
    json_decref(v);
}

Test(json, doc_parse_survives_every_allocation_failure)
{
    json_t *v = parse("{\"_id\": \"d\", \"_rev\": \"2-b\", \"_deleted\": false, "
                      "\"_revisions\": {\"start\": 2, \"ids\": [\"b\", \"a\"]}, "
                      "\"_attachments\": {\"x\": {\"content_type\": \"t/p\", \"data\": \"AAE=\"},"
                      " \"y\": {\"stub\": true, \"digest\": \"md5-q\"}}, "
                      "\"z\": [1, {\"k\": \"v\"}], \"a\": 0.5}");
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        struct br_json_doc d;
        br_alloc_fail_after(fail);
        br_err e = br_json_doc_parse(v, NULL, &d, NULL);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(fail > 0);
            cr_assert(d.n_atts == 2 && d.n_history == 2);
            br_json_doc_fini(&d);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
    }
    json_decref(v);
}

/* ---- rendering ---- */

static void make_rev(struct br_rev *r, uint64_t gen, const char *hash)
{
    r->gen = gen;
    r->hash_len = (uint8_t)strlen(hash);
    memcpy(r->hash, hash, r->hash_len + 1);
}

/* A read document with every optional part; bodies and strings are static. */
struct sample {
    struct br_doc doc;
    struct br_att_stub att;
    struct br_rev revs[2], conflicts[1], dconflicts[2];
    uint8_t body[64];
};

static void sample_init(struct sample *s)
{
    memset(s, 0, sizeof *s);
    static const char body_hex[] = "a2 61 61 01 61 62 82 f5 f6";
    s->doc.body = s->body;
    s->doc.body_len = hex(body_hex, s->body, sizeof s->body);
    s->doc.id = "doc1";
    s->doc.id_len = 4;
    make_rev(&s->doc.rev, 2, "bb");
    s->doc.deleted = true;
    s->att.name = "a.txt";
    s->att.content_type = "text/plain";
    s->att.length = 5;
    s->att.revpos = 1;
    memcpy(s->att.digest, "md5-XUFAKrxLKna5cZ2REBfFkg==", 29);
    s->doc.atts = &s->att;
    s->doc.n_atts = 1;
    make_rev(&s->revs[0], 2, "bb");
    make_rev(&s->revs[1], 1, "aa");
    s->doc.revisions = s->revs;
    s->doc.n_revisions = 2;
    make_rev(&s->conflicts[0], 2, "cc");
    s->doc.conflicts = s->conflicts;
    s->doc.n_conflicts = 1;
    make_rev(&s->dconflicts[0], 2, "dd");
    make_rev(&s->dconflicts[1], 3, "ee");
    s->doc.deleted_conflicts = s->dconflicts;
    s->doc.n_deleted_conflicts = 2;
}

Test(json, doc_render_produces_couchdb_json)
{
    struct sample s;
    sample_init(&s);
    json_t *out = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_doc_render(&s.doc, &out, &eb) == BR_OK, "%s", eb.msg);
    char *text = json_dumps(out, JSON_COMPACT);
    cr_assert(text != NULL);
    const char *want = "{\"_id\":\"doc1\",\"_rev\":\"2-bb\",\"a\":1,\"b\":[true,null],"
                       "\"_deleted\":true,\"_attachments\":{\"a.txt\":{\"content_type\":"
                       "\"text/plain\",\"revpos\":1,\"digest\":\"md5-XUFAKrxLKna5cZ2REBfFkg==\","
                       "\"length\":5,\"stub\":true}},\"_revisions\":{\"start\":2,\"ids\":"
                       "[\"bb\",\"aa\"]},\"_conflicts\":[\"2-cc\"],\"_deleted_conflicts\":"
                       "[\"2-dd\",\"3-ee\"]}";
    cr_assert(strcmp(text, want) == 0, "got %s", text);
    jfree(text);
    json_decref(out);
}

Test(json, doc_render_omits_absent_parts)
{
    struct br_doc d;
    memset(&d, 0, sizeof d);
    d.id = "x";
    d.id_len = 1;
    make_rev(&d.rev, 1, "a");
    json_t *out = NULL;
    cr_assert(br_json_doc_render(&d, &out, NULL) == BR_OK);
    char *text = json_dumps(out, JSON_COMPACT);
    cr_assert(strcmp(text, "{\"_id\":\"x\",\"_rev\":\"1-a\"}") == 0, "got %s", text);
    jfree(text);
    json_decref(out);
}

Test(json, doc_render_rejects_corrupt_body)
{
    struct br_doc d;
    memset(&d, 0, sizeof d);
    uint8_t body[] = {0x82, 0x01, 0x02};
    d.body = body;
    d.body_len = sizeof body;
    json_t *out = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_doc_render(&d, &out, &eb) == BR_EPROTO);
    body[0] = 0xa1; /* truncated map */
    cr_assert(br_json_doc_render(&d, &out, &eb) == BR_EPROTO);
    cr_assert(out == NULL);
}

Test(json, doc_render_then_parse_round_trips)
{
    struct sample s;
    sample_init(&s);
    s.doc.n_atts = 0; /* stubs render without data; parsed back they stay stubs */
    s.doc.n_conflicts = s.doc.n_deleted_conflicts = 0;
    json_t *out = NULL;
    cr_assert(br_json_doc_render(&s.doc, &out, NULL) == BR_OK);
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_doc_parse(out, NULL, &d, &eb) == BR_OK, "%s", eb.msg);
    cr_assert(strcmp(d.id, "doc1") == 0 && d.put.deleted);
    cr_assert(br_rev_eq(&d.rev, &s.doc.rev) && d.n_history == 2);
    cr_assert(d.body.len == s.doc.body_len && memcmp(d.body.data, s.doc.body, d.body.len) == 0);
    br_json_doc_fini(&d);
    json_decref(out);
}

Test(json, doc_render_survives_every_allocation_failure)
{
    struct sample s;
    sample_init(&s);
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        json_t *out = NULL;
        br_alloc_fail_after(fail);
        br_err e = br_json_doc_render(&s.doc, &out, NULL);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(fail > 0);
            json_decref(out);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
        cr_assert(out == NULL);
    }
}

/* ---- one pass from text (br_json_doc_parse_text) ---- */

/* The tree path's answer for text: br_json_parse, then br_json_doc_parse. */
static br_err tree_parse(const char *text, size_t len, size_t max, const char *url,
                         struct br_json_doc *d, struct br_errbuf *eb)
{
    json_t *j = NULL;
    memset(d, 0, sizeof *d);
    br_err e = br_json_parse(text, len, max, &j, eb);
    if (e)
        return e;
    e = br_json_doc_parse(j, url, d, eb);
    json_decref(j);
    return e;
}

static void expect_same_doc(const char *text, const struct br_json_doc *a,
                            const struct br_json_doc *b)
{
    cr_assert((a->id == NULL) == (b->id == NULL), "%s: id", text);
    cr_assert(!a->id || strcmp(a->id, b->id) == 0, "%s: id", text);
    cr_assert(a->put.id == a->id && b->put.id == b->id && a->put.id_len == b->put.id_len);
    cr_assert((a->put.rev == NULL) == (b->put.rev == NULL), "%s: rev", text);
    cr_assert(!a->put.rev || br_rev_eq(a->put.rev, b->put.rev), "%s: rev", text);
    cr_assert(a->put.deleted == b->put.deleted, "%s: deleted", text);
    cr_assert(a->n_history == b->n_history && b->put.n_history == b->n_history, "%s", text);
    for (size_t i = 0; i < a->n_history; i++)
        cr_assert(br_rev_eq(&a->history[i], &b->history[i]), "%s: history", text);
    cr_assert(a->n_atts == b->n_atts && b->put.n_atts == b->n_atts, "%s: atts", text);
    for (size_t i = 0; i < a->n_atts; i++) {
        cr_assert(strcmp(a->atts[i].name, b->atts[i].name) == 0);
        cr_assert(a->atts[i].len == b->atts[i].len && a->atts[i].stub == b->atts[i].stub);
        cr_assert(!a->atts[i].len || memcmp(a->atts[i].data, b->atts[i].data, a->atts[i].len) == 0);
    }
    cr_assert(b->put.body == b->body.data && b->put.body_len == b->body.len);
    cr_assert(a->put.body_trusted && b->put.body_trusted, "%s: body not marked", text);
    cr_assert(a->body.len == b->body.len && memcmp(a->body.data, b->body.data, a->body.len) == 0,
              "%s: body bytes differ", text);
}

/* text (len bytes) through the tree path, the one-pass converter alone, and the public call:
 * the same decision, the same document, and on error the same code and message. Returns the
 * code; *msg (if not NULL) receives the message. */
static br_err expect_agree_n(const char *text, size_t len, const char *url, char *msg)
{
    struct br_json_doc t, f, p;
    struct br_errbuf teb = {{0}}, peb = {{0}};
    br_err te = tree_parse(text, len, 0, url, &t, &teb);
    br_err fe = store_json_doc_fast(text, len, url, &f);
    br_err pe = br_json_doc_parse_text(text, len, 0, url, &p, &peb);
    cr_assert((te == BR_OK) == (fe == BR_OK), "%s: tree %d, one-pass %d (%s)", text, te, fe,
              teb.msg);
    cr_assert(pe == te, "%s: tree %d, text %d", text, te, pe);
    if (te == BR_OK) {
        expect_same_doc(text, &t, &f);
        expect_same_doc(text, &t, &p);
    } else {
        cr_assert(teb.msg[0] != 0, "%s: no message", text);
        cr_assert(strcmp(teb.msg, peb.msg) == 0, "%s: '%s' vs '%s'", text, teb.msg, peb.msg);
        cr_assert(p.id == NULL && p.history == NULL && p.atts == NULL && p.body.data == NULL);
        cr_assert(f.id == NULL && f.history == NULL && f.atts == NULL && f.body.data == NULL);
    }
    if (msg)
        memcpy(msg, teb.msg, sizeof teb.msg);
    br_json_doc_fini(&t);
    br_json_doc_fini(&f);
    br_json_doc_fini(&p);
    return te;
}

static br_err expect_agree(const char *text, const char *url, char *msg)
{
    return expect_agree_n(text, strlen(text), url, msg);
}

/* text must be refused with code want and a message containing msg_part, by both paths. */
static void expect_text_error(const char *text, size_t len, br_err want, const char *msg_part)
{
    char msg[BR_ERRBUF_SIZE];
    br_err e = expect_agree_n(text, len, NULL, msg);
    cr_assert(e == want, "%s: got %d (%s), want %d", text, e, msg, want);
    cr_assert(strstr(msg, msg_part) != NULL, "%s: message '%s' lacks '%s'", text, msg, msg_part);
}

#define TEXT_ERROR(text, want, part) expect_text_error(text, sizeof text - 1, want, part)

/* text gives exactly the body want_hex, by both paths. */
static void expect_text_body(const char *text, const char *want_hex)
{
    uint8_t want[512];
    size_t n = hex(want_hex, want, sizeof want);
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert(expect_agree(text, NULL, NULL) == BR_OK, "%s", text);
    cr_assert(br_json_doc_parse_text(text, strlen(text), 0, NULL, &d, &eb) == BR_OK);
    cr_assert(d.body.len == n && memcmp(d.body.data, want, n) == 0, "%s: body", text);
    br_json_doc_fini(&d);
}

Test(json, text_parse_gives_the_tree_paths_document)
{
    static const char *const ok[] = {
        "{\"_id\":\"doc-00000042\",\"type\":\"sensor\",\"site\":\"site-7\",\"value\":23.4567,"
        "\"ts\":1700000000042123,\"tags\":[\"humidity\",\"rooftop\",\"indoor\"]}",
        " \r\n\t{ \"b\" : 1 ,\n \"a\" : [ 1 , 2 ] , \"c\" : { } , \"d\" : [ ] }\n ",
        "{}",
        "{\"z\":{\"q\":1,\"p\":[1,{\"bb\":2,\"a\":1,\"B\":3}]},\"y\":null,\"\":true}",
        "{\"a\":{\"_x\":1,\"_id\":2}}", /* only top-level "_" members are metadata */
        "{\"k\\\"ey\":1,\"k\\u0042\":{\"\\u00e9\":2,\"\\ud83d\\ude00\":3},\"kA\":4}",
        "{\"_id\":\"a\\u00e9\\n\",\"v\":\"caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80\"}",
        "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u007f\\u0080\\u07ff\\u0800\\uffff\\ud800"
        "\\udc00\\udbff\\udfff\"}",
        "{\"t\":true,\"f\":false,\"n\":null,\"x\":[true,false,null,[],{}]}",
        "{\"_id\":\"d\",\"_rev\":\"2-b\",\"_deleted\":false,\"_revisions\":{\"start\":2,"
        "\"ids\":[\"b\",\"a\"]},\"_attachments\":{\"x\":{\"content_type\":\"t/p\","
        "\"data\":\"AAE=\"},\"y\":{\"stub\":true,\"digest\":\"md5-q\"}},\"_conflicts\":[],"
        "\"_deleted_conflicts\":[1],\"_local_seq\":1,\"_revs_info\":{},\"z\":[1,{\"k\":\"v\"}],"
        "\"a\":0.5}",
        "{\"_rev\":\"0-1\",\"v\":1}",
        "{\"_deleted\":true}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cr_assert(expect_agree(ok[i], NULL, NULL) == BR_OK, "%s", ok[i]);
        expect_agree(ok[i], "d", NULL); /* matches one _id, conflicts with the others */
    }
}

Test(json, text_parse_handles_sizes_past_its_inline_scratch)
{
    /* arrays of 24+ items (wider heads), objects of 17+ members (qsort), strings longer than
     * the parser's scratch, values past the inline value scratch, deep mixed nesting */
    br_buf t;
    br_buf_init(&t, 0);
    cr_assert(br_buf_append_str(&t, "{\"arr\":[") == BR_OK);
    for (int i = 0; i < 70000; i++)
        cr_assert(br_buf_printf(&t, "%s%d", i ? "," : "", i * 7 - 1000) == BR_OK);
    cr_assert(br_buf_append_str(&t, "],\"obj\":{") == BR_OK);
    for (int i = 300; i > 0; i--)
        cr_assert(br_buf_printf(&t, "\"k%d\\u00e9\":{\"x%d\":[%d.5]},", i, i, i) == BR_OK);
    cr_assert(br_buf_append_str(&t, "\"last\":1},\"s\":\"") == BR_OK);
    for (int i = 0; i < 2000; i++)
        cr_assert(br_buf_append_str(&t, i % 3 ? "abc" : "\\n\\u00e9") == BR_OK);
    cr_assert(br_buf_append_str(&t, "\",\"deep\":") == BR_OK);
    for (int i = 0; i < 62; i++)
        cr_assert(br_buf_append_str(&t, i % 2 ? "[" : "{\"k\":") == BR_OK);
    cr_assert(br_buf_append_str(&t, "1") == BR_OK);
    for (int i = 61; i >= 0; i--)
        cr_assert(br_buf_append_str(&t, i % 2 ? "]" : "}") == BR_OK);
    cr_assert(br_buf_append_str(&t, "}") == BR_OK);
    cr_assert(expect_agree_n((const char *)t.data, t.len, NULL, NULL) == BR_OK);
    br_buf_fini(&t);
}

Test(json, text_parse_writes_canonical_cbor)
{
    expect_text_body("{\"b\":1,\"a\":2,\"aa\":3}", "a3 61 61 02 61 62 01 62 61 61 03");
    expect_text_body("{\"a\":1,\"B\":2}", "a2 61 42 02 61 61 01");
    expect_text_body("{\"_id\":\"x\",\"a\":[23,24,255,256]}",
                     "a1 61 61 84 17 18 18 18 ff 19 01 00");
    expect_text_body("{\"a\":-0,\"b\":-0.0,\"c\":1.0,\"d\":1}",
                     "a4 61 61 00 61 62 f9 80 00 61 63 f9 3c 00 61 64 01");
    expect_text_body("{\"a\":-9223372036854775808,\"b\":9223372036854775807}",
                     "a2 61 61 3b 7f ff ff ff ff ff ff ff 61 62 1b 7f ff ff ff ff ff ff ff");
    expect_text_body("{\"a\":1e-400,\"b\":0.1,\"c\":65504.0,\"d\":100000.0}",
                     "a4 61 61 f9 00 00 61 62 fb 3f b9 99 99 99 99 99 9a 61 63 f9 7b ff "
                     "61 64 fa 47 c3 50 00");
}

Test(json, text_parse_rejects_malformed_json_with_the_tree_paths_errors)
{
    TEXT_ERROR("", BR_EINVAL, "premature end of input");
    TEXT_ERROR("{\"a\":[1,2,{\"b\":\"c", BR_EINVAL, "premature end of input in string");
    TEXT_ERROR("{\"a\":[1,2", BR_EINVAL, "',' or ']' expected");
    TEXT_ERROR("{\"a\":1", BR_EINVAL, "',' or '}' expected");
    TEXT_ERROR("{\"a\" 1}", BR_EINVAL, "':' expected");
    TEXT_ERROR("{\"a\":1,}", BR_EINVAL, "string or '}' expected");
    TEXT_ERROR("{\"a\":[1,]}", BR_EINVAL, "invalid token");
    TEXT_ERROR("{\"a\":1} x", BR_EINVAL, "end of input expected");
    TEXT_ERROR("{\"a\":1}{}", BR_EINVAL, "end of input expected");
    TEXT_ERROR("{\"a\":tru}", BR_EINVAL, "invalid token");
    TEXT_ERROR("{\"a\":\"\\x\"}", BR_EINVAL, "invalid escape");
    TEXT_ERROR("{\"a\":\"\\u12g4\"}", BR_EINVAL, "invalid \\u escape");
    TEXT_ERROR("{\"a\":\"\\udc00\"}", BR_EINVAL, "lone low surrogate");
    TEXT_ERROR("{\"a\":\"\\ud800x\"}", BR_EINVAL, "unpaired high surrogate");
    TEXT_ERROR("{\"a\":\"\\ud800\\u0041\"}", BR_EINVAL, "unpaired high surrogate");
    TEXT_ERROR("{\"a\":\"\xc3\x28\"}", BR_EINVAL, "invalid UTF-8");
    TEXT_ERROR("{\"a\":\"\xed\xa0\x80\"}", BR_EINVAL, "invalid UTF-8");     /* a surrogate */
    TEXT_ERROR("{\"a\":\"\xc0\xaf\"}", BR_EINVAL, "invalid UTF-8");         /* overlong */
    TEXT_ERROR("{\"a\":\"\xf4\x90\x80\x80\"}", BR_EINVAL, "invalid UTF-8"); /* past U+10FFFF */
    TEXT_ERROR("{\"\xff\":1}", BR_EINVAL, "invalid UTF-8");
    TEXT_ERROR("{\"a\":\"x\\u0000y\"}", BR_EINVAL, "\\u0000 is not allowed");
    TEXT_ERROR("{\"a\":\"x\0y\"}", BR_EINVAL, "control character");
    TEXT_ERROR("{\"a\":\0 1}", BR_EINVAL, "invalid token");
    TEXT_ERROR("{\"a\":\"x\ty\"}", BR_EINVAL, "control character");
}

Test(json, text_parse_rejects_duplicate_keys_at_any_depth)
{
    TEXT_ERROR("{\"a\":1,\"b\":2,\"a\":3}", BR_EINVAL, "duplicate object key");
    TEXT_ERROR("{\"a\":{\"x\":1,\"y\":{\"k\":1,\"k\":2}}}", BR_EINVAL, "duplicate object key");
    TEXT_ERROR("{\"a\":[{\"k\":1},{\"k\":1,\"j\":2,\"k\":3}]}", BR_EINVAL, "duplicate");
    TEXT_ERROR("{\"a\":1,\"\\u0061\":2}", BR_EINVAL, "duplicate object key");
    TEXT_ERROR("{\"_id\":\"a\",\"_id\":\"b\"}", BR_EINVAL, "duplicate object key");
    TEXT_ERROR("{\"_rev\":\"1-a\",\"v\":1,\"_rev\":\"1-a\"}", BR_EINVAL, "duplicate");
    TEXT_ERROR("{\"_conflicts\":{\"a\":1,\"a\":2}}", BR_EINVAL, "duplicate object key");
    /* found after the whole text is read: a syntax error later still wins, as in the tree */
    TEXT_ERROR("{\"a\":1,\"a\":2,\"b\":}", BR_EINVAL, "duplicate object key");
}

static char *nest_text(unsigned containers, const char *prefix)
{
    br_buf t;
    br_buf_init(&t, 0);
    cr_assert(br_buf_append_str(&t, prefix) == BR_OK);
    for (unsigned i = 1; i < containers; i++)
        cr_assert(br_buf_append_str(&t, "[") == BR_OK);
    cr_assert(br_buf_append_str(&t, "1") == BR_OK);
    for (unsigned i = 1; i < containers; i++)
        cr_assert(br_buf_append_str(&t, "]") == BR_OK);
    cr_assert(br_buf_append_str(&t, "}") == BR_OK);
    size_t n;
    return (char *)br_buf_steal(&t, &n);
}

Test(json, text_parse_caps_depth_like_the_tree_path)
{
    char msg[BR_ERRBUF_SIZE];
    char *t = nest_text(64, "{\"a\":"); /* the document is the 64th container */
    cr_assert(expect_agree(t, NULL, msg) == BR_OK, "%s", msg);
    br_free(t);
    t = nest_text(65, "{\"a\":");
    cr_assert(expect_agree(t, NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "nested deeper than 64") != NULL, "%s", msg);
    br_free(t);
    /* metadata is not body: only the parser's own cap applies to it */
    t = nest_text(300, "{\"_conflicts\":");
    cr_assert(expect_agree(t, NULL, msg) == BR_OK, "%s", msg);
    br_free(t);
    t = nest_text(2100, "{\"a\":");
    cr_assert(expect_agree(t, NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "maximum parsing depth") != NULL, "%s", msg);
    br_free(t);
}

Test(json, text_parse_refuses_text_past_max)
{
    const char *t = "{\"a\": \"0123456789\"}";
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_doc_parse_text(t, strlen(t), strlen(t) - 1, NULL, &d, &eb) == BR_ETOOBIG);
    cr_assert(strstr(eb.msg, "larger than") != NULL, "%s", eb.msg);
    cr_assert(d.body.data == NULL && d.id == NULL);
    cr_assert(br_json_doc_parse_text(t, strlen(t), strlen(t), NULL, &d, &eb) == BR_OK);
    br_json_doc_fini(&d);
    cr_assert(br_json_doc_parse_text(NULL, 0, 0, NULL, &d, &eb) == BR_EINVAL);
    cr_assert(br_json_doc_parse_text(NULL, 3, 0, NULL, &d, &eb) == BR_EINVAL);
}

Test(json, text_parse_numbers_like_the_tree_path)
{
    TEXT_ERROR("{\"a\":1e400}", BR_EINVAL, "real number overflow");
    TEXT_ERROR("{\"a\":-1e400}", BR_EINVAL, "real number overflow");
    TEXT_ERROR("{\"a\":18446744073709551616}", BR_EINVAL, "too big integer");
    TEXT_ERROR("{\"a\":99999999999999999999}", BR_EINVAL, "too big integer");
    TEXT_ERROR("{\"a\":9223372036854775808}", BR_EINVAL, "too big integer");
    TEXT_ERROR("{\"a\":-9223372036854775809}", BR_EINVAL, "too big negative integer");
    TEXT_ERROR("{\"a\":01}", BR_EINVAL, "leading zero");
    TEXT_ERROR("{\"a\":1.}", BR_EINVAL, "digit expected after '.'");
    TEXT_ERROR("{\"a\":1e}", BR_EINVAL, "digit expected in exponent");
    TEXT_ERROR("{\"a\":1e+}", BR_EINVAL, "digit expected in exponent");
    TEXT_ERROR("{\"a\":-}", BR_EINVAL, "invalid number");
    TEXT_ERROR("{\"a\":+1}", BR_EINVAL, "invalid token");
    TEXT_ERROR("{\"a\":.5}", BR_EINVAL, "invalid token");
    static const char *const ok[] = {
        "{\"a\":[0,-0,0.0,-0.0,1,1.0,-1,1.5,0.1,1e0,1E+2,1e-2,0e400,-0e-400]}",
        "{\"a\":[65504.0,65505.0,3.4028234663852886e38,1e300,5e-324,2.2250738585072014e-308]}",
        "{\"a\":[123456789012345678901234567890.0,0.30000000000000004,1e22,1e23]}",
        "{\"a\":[9007199254740993.0,9007199254740992.0,9007199254740993e-22,4.35,-23.4567]}",
        "{\"a\":[1.7976931348623157e308,4.9e-324,1e-400,0.00000000000000000000000000001]}",
        "{\"a\":[12345678901234567890.5,1234567890123456789e3,1000000000000000000000000e-24]}",
        "{\"a\":[1e00000000000000000000000000000000000000001,1e-00000000000000000000000001]}",
        /* around the one-pass number reader's limits: 18/19 digits, 19 significant in a real */
        "{\"a\":[999999999999999999,-999999999999999999,1000000000000000000,"
        "-1000000000000000000,-0.5,0.0000000000000000001,123456789.123456789,"
        "1234567890.123456789,12345678901234567.8,9007199254740993.1,1.0000000000000000000001]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert(expect_agree(ok[i], NULL, NULL) == BR_OK, "%s", ok[i]);
}

/* Reals of every shape the exact fast path takes or declines, against strtod's bytes. */
Test(json, text_parse_reals_round_like_strtod)
{
    uint64_t s = 88172645463325252u;
    char text[128];
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        unsigned digits = 1 + (unsigned)(s % 20), point = (unsigned)(s >> 8) % (digits + 1);
        int exp = (int)((s >> 16) % 61) - 30;
        size_t n = 0;
        n += (size_t)snprintf(text + n, sizeof text - n, "{\"r\":%s", (s >> 40) & 1 ? "-" : "");
        uint64_t r = s >> 3;
        for (unsigned d = 0; d < digits; d++) {
            if (d == point && d > 0)
                text[n++] = '.';
            text[n++] = (char)('0' + (d == 0 && digits > 1 && point != 1 ? 1 + r % 9 : r % 10));
            r = r / 10 ? r / 10 : s * 2654435761u;
        }
        if (point == digits || point == 0 || (s >> 41) & 1)
            n += (size_t)snprintf(text + n, sizeof text - n, "e%d", exp);
        snprintf(text + n, sizeof text - n, "}");
        expect_agree(text, NULL, NULL);
    }
}

Test(json, text_parse_keeps_metadata_errors_and_their_order)
{
    char msg[BR_ERRBUF_SIZE];
    cr_assert(expect_agree("{\"_rev\":\"x\",\"a\":1}", NULL, msg) == BR_EBADREV);
    cr_assert(strstr(msg, "Invalid rev format") != NULL, "%s", msg);
    /* the whole text is checked before the metadata, as in the tree path */
    cr_assert(expect_agree("{\"_rev\":\"x\",\"a\":}", NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "invalid token") != NULL, "%s", msg);
    cr_assert(expect_agree("{\"_id\":5}", NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "Document id must be a string") != NULL, "%s", msg);
    cr_assert(expect_agree("{\"a\":1,\"_foo\":2}", NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "Bad special document member: _foo") != NULL, "%s", msg);
    cr_assert(expect_agree("{\"_deleted\":1}", NULL, msg) == BR_EINVAL);
    cr_assert(expect_agree("{\"_rev\":\"2-a\",\"_revisions\":{\"start\":2,\"ids\":[\"b\"]}}", NULL,
                           msg) == BR_EBADREV);
    cr_assert(expect_agree("{\"_attachments\":{\"x\":{\"data\":\"!!\"}}}", NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "not valid base64") != NULL, "%s", msg);
    /* the first bad "_" member in text order is the one reported */
    cr_assert(expect_agree("{\"_foo\":1,\"_rev\":\"x\"}", NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "_foo") != NULL, "%s", msg);
    cr_assert(expect_agree("{\"_rev\":\"x\",\"_foo\":1}", NULL, msg) == BR_EBADREV);
    /* a body too deep is reported after bad metadata */
    char *t = nest_text(65, "{\"_rev\":\"x\",\"a\":");
    cr_assert(expect_agree(t, NULL, msg) == BR_EBADREV);
    br_free(t);
    cr_assert(expect_agree("[]", NULL, msg) == BR_EINVAL);
    cr_assert(strstr(msg, "must be a JSON object") != NULL, "%s", msg);
    cr_assert(expect_agree("\"doc\"", NULL, msg) == BR_EINVAL);
}

Test(json, text_parse_url_id_wins_and_must_match)
{
    char msg[BR_ERRBUF_SIZE];
    struct br_json_doc d;
    cr_assert(br_json_doc_parse_text("{\"v\":1}", 7, 0, "url", &d, NULL) == BR_OK);
    cr_assert(strcmp(d.id, "url") == 0 && d.put.id_len == 3);
    br_json_doc_fini(&d);
    cr_assert(expect_agree("{\"_id\":\"url\"}", "url", NULL) == BR_OK);
    cr_assert(expect_agree("{\"_id\":\"u\\u0072l\"}", "url", NULL) == BR_OK);
    cr_assert(expect_agree("{\"_id\":\"other\"}", "url", msg) == BR_EINVAL);
    cr_assert(strstr(msg, "does not match url") != NULL, "%s", msg);
}

Test(json, text_parse_survives_every_allocation_failure)
{
    static const char *const texts[] = {
        "{\"_id\": \"d\", \"_rev\": \"2-b\", \"_deleted\": false, "
        "\"_revisions\": {\"start\": 2, \"ids\": [\"b\", \"a\"]}, "
        "\"_attachments\": {\"x\": {\"content_type\": \"t/p\", \"data\": \"AAE=\"},"
        " \"y\": {\"stub\": true, \"digest\": \"md5-q\"}}, "
        "\"z\": [1, {\"k\": \"v\"}], \"a\": 0.5}",
        "{\"_id\":\"doc-1\",\"type\":\"sensor\",\"value\":23.4567,\"tags\":[\"a\",\"b\"]}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct br_json_doc ref;
        cr_assert(br_json_doc_parse_text(texts[i], strlen(texts[i]), 0, NULL, &ref, NULL) == BR_OK);
        for (long fail = 0;; fail++) {
            cr_assert(fail < 1000, "never succeeded");
            struct br_json_doc d;
            struct br_errbuf eb = {{0}};
            br_alloc_fail_after(fail);
            br_err e = br_json_doc_parse_text(texts[i], strlen(texts[i]), 0, NULL, &d, &eb);
            br_alloc_fail_after(-1);
            if (e == BR_OK) {
                expect_same_doc(texts[i], &ref, &d);
                br_json_doc_fini(&d);
                break;
            }
            cr_assert(e == BR_ENOMEM, "fail=%ld gave %d (%s)", fail, e, eb.msg);
            cr_assert(d.id == NULL && d.history == NULL && d.atts == NULL && d.body.data == NULL);
        }
        br_json_doc_fini(&ref);
    }
}

/* ---- writing a read document as text (br_json_doc_write) ---- */

/* The tree path's text for d (NULL when it fails), and its error. */
static char *tree_text(const struct br_doc *d, br_err *err)
{
    json_t *j = NULL;
    *err = br_json_doc_render(d, &j, NULL);
    if (*err)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        *err = BR_ENOMEM;
    return s;
}

/* br_json_doc_write appends the tree path's bytes after what out held, or fails as it does and
 * leaves out as it was. */
static void expect_write_like_tree(const struct br_doc *d, const char *what)
{
    br_err want_e;
    char *want = tree_text(d, &want_e);
    br_buf out;
    br_buf_init(&out, 0);
    cr_assert(br_buf_append_str(&out, "prefix") == BR_OK);
    struct br_errbuf eb = {{0}};
    br_err e = br_json_doc_write(d, &out, &eb);
    cr_assert(e == want_e, "%s: write gave %d, tree %d (%s)", what, e, want_e, eb.msg);
    if (!e) {
        cr_assert(out.len == 6 + strlen(want) && memcmp(out.data + 6, want, out.len - 6) == 0,
                  "%s:\nwrite %.*s\ntree  %s", what, (int)(out.len - 6), (char *)out.data + 6,
                  want);
    } else {
        cr_assert(out.len == 6, "%s: output left after an error", what);
    }
    jfree(want);
    br_buf_fini(&out);
}

/* A document with d's metadata and the body of the JSON text `body` (the text path's CBOR). */
static void expect_body_like_tree(struct br_doc *d, const char *body)
{
    struct br_json_doc jd;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_doc_parse_text(body, strlen(body), 0, NULL, &jd, &eb) == BR_OK, "%s: %s",
              body, eb.msg);
    d->body = jd.body.data;
    d->body_len = jd.body.len;
    expect_write_like_tree(d, body);
    br_json_doc_fini(&jd);
    d->body = NULL;
    d->body_len = 0;
}

Test(json, doc_write_gives_the_tree_paths_text)
{
    struct sample s;
    sample_init(&s);
    expect_write_like_tree(&s.doc, "sample");
    static const char *const bodies[] = {
        "{}",
        "{\"type\":\"sensor\",\"site\":\"site-1\",\"value\":61.958,\"ts\":1700000001000,"
        "\"tags\":[\"blue\",\"red\",\"hot\"]}",
        "{\"a\":{},\"b\":[],\"c\":[[]],\"d\":{\"e\":{\"f\":[1,{\"g\":null}]}}}",
        "{\"t\":true,\"f\":false,\"n\":null,\"z\":0,\"m\":-1,\"neg\":-9223372036854775808,"
        "\"pos\":9223372036854775807,\"u8\":255,\"u16\":65536}",
        "{\"r\":[0.1,0.5,1.5,-0.0,0.0,1e300,-1e-300,1e21,1e22,123456789012345680000.0,"
        "5e-324,1.7976931348623157e308,2.2250738585072014e-308,3.14159,100.0,1e-7,0.000001]}",
        "{\"esc\":\"quote\\\" backslash\\\\ slash/ \\b\\f\\n\\r\\t \\u0001\\u001f\\u007f\"}",
        "{\"uni\":\"h\\u00e9llo \\u2028\\u2029 \\ud83d\\ude00 \\u4e2d\\u6587 caf\\u00e9\","
        "\"k\\u00e9y\\n\":\"v\",\"\":\"empty key\"}",
        "{\"deep\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}",
        "{\"long\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        expect_body_like_tree(&s.doc, bodies[i]);
        struct br_doc plain = {0};
        plain.id = "doc-00000001";
        plain.id_len = 12;
        make_rev(&plain.rev, 1, "242960637ec692800a6f55a11ca16eb2");
        expect_body_like_tree(&plain, bodies[i]);
    }
}

Test(json, doc_write_covers_each_optional_part_alone)
{
    struct sample s;
    sample_init(&s);
    for (unsigned mask = 0; mask < 256; mask++) { /* every subset of the parts */
        struct br_doc d = s.doc;
        if (!(mask & 1))
            d.id = NULL;
        if (!(mask & 2))
            memset(&d.rev, 0, sizeof d.rev);
        if (!(mask & 4))
            d.body = NULL, d.body_len = 0;
        d.deleted = mask & 8;
        if (!(mask & 16))
            d.n_atts = 0;
        if (!(mask & 32))
            d.n_revisions = 0;
        if (!(mask & 64))
            d.n_conflicts = 0;
        if (!(mask & 128))
            d.n_deleted_conflicts = 0;
        char what[32];
        snprintf(what, sizeof what, "mask %u", mask);
        expect_write_like_tree(&d, what);
    }
}

Test(json, doc_write_attachment_stubs_like_the_tree)
{
    struct sample s;
    sample_init(&s);
    struct br_att_stub atts[3];
    memset(atts, 0, sizeof atts);
    atts[0] = s.att;
    atts[1].name = "b \"quoted\"\n\xc3\xa9.bin";
    atts[1].content_type = NULL; /* no content_type member */
    atts[1].length = UINT64_MAX; /* clamped to int64 */
    atts[1].revpos = 3;
    memcpy(atts[1].digest, "md5-AAAA", 9);
    atts[2].name = NULL; /* rendered as "" */
    atts[2].content_type = "application/json; charset=\"utf-8\"";
    s.doc.atts = atts;
    s.doc.n_atts = 3;
    expect_write_like_tree(&s.doc, "three stubs");
    atts[2].name = "a.txt"; /* a repeated name: the tree keeps one */
    expect_write_like_tree(&s.doc, "repeated name");
    atts[2].name = "bad \xff utf-8";
    expect_write_like_tree(&s.doc, "bad name");
    atts[2].name = "c";
    atts[2].content_type = "bad \xc3";
    expect_write_like_tree(&s.doc, "bad content_type");
}

Test(json, doc_write_unicode_and_escapes_in_ids_and_keys)
{
    struct br_doc d = {0};
    static const char *const ids[] = {"plain",        "sp ace/slash",
                                      "q\"b\\",       "nl\ntab\t",
                                      "\x01\x1f\x7f", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
                                      "_design/app",  "\xff bad"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        d.id = (char *)ids[i];
        d.id_len = strlen(ids[i]);
        make_rev(&d.rev, 7, "abc");
        expect_write_like_tree(&d, ids[i]);
    }
    /* every control character and the ASCII range, in a key and in a value */
    uint8_t body[512];
    size_t n = 0;
    body[n++] = 0xa1;
    body[n++] = 0x78;
    body[n++] = 128; /* text(128): bytes 0..127 */
    for (unsigned c = 0; c < 128; c++)
        body[n++] = (uint8_t)c;
    body[n++] = 0x78;
    body[n++] = 128;
    for (unsigned c = 0; c < 128; c++)
        body[n++] = (uint8_t)(127 - c);
    d.body = body;
    d.body_len = n;
    expect_write_like_tree(&d, "ascii");
}

Test(json, doc_write_takes_the_tree_path_where_a_walk_would_differ)
{
    struct br_doc d = {0};
    d.id = "x";
    d.id_len = 1;
    make_rev(&d.rev, 1, "a");
    uint8_t b[64];
    /* keys out of canonical order ({"b":1,"a":2}), and a duplicate ({"a":1,"a":2}) */
    d.body = b;
    d.body_len = hex("a2 61 62 01 61 61 02", b, sizeof b);
    expect_write_like_tree(&d, "out of order");
    d.body_len = hex("a2 61 61 01 61 61 02", b, sizeof b);
    expect_write_like_tree(&d, "duplicate");
    d.body_len = hex("a1 61 6b a2 61 61 01 61 61 02", b, sizeof b); /* nested duplicate */
    expect_write_like_tree(&d, "nested duplicate");
    /* top-level "_id", "_rev", "_deleted" and "_x" in the body */
    d.body_len = hex("a2 61 61 01 63 5f 69 64 61 7a", b, sizeof b);
    expect_write_like_tree(&d, "_id in body");
    d.deleted = true;
    d.body_len = hex("a1 68 5f 64 65 6c 65 74 65 64 f4", b, sizeof b);
    expect_write_like_tree(&d, "_deleted in body");
    d.deleted = false;
    d.body_len = hex("a1 62 5f 78 01", b, sizeof b);
    expect_write_like_tree(&d, "_x in body");
}

Test(json, doc_write_fails_like_the_tree_on_corrupt_bodies)
{
    struct br_doc d = {0};
    d.id = "x";
    d.id_len = 1;
    uint8_t b[256];
    d.body = b;
    static const char *const bad[] = {
        "82 01 02",                            /* not a map */
        "a1 61",                               /* truncated */
        "a1 61 61 01 00",                      /* trailing bytes */
        "a1 01 02",                            /* key not text */
        "a1 61 61 1b ff ff ff ff ff ff ff ff", /* > int64 */
        "a1 61 61 3b ff ff ff ff ff ff ff ff", /* < -2^63 */
        "a1 61 61 fb 7f f8 00 00 00 00 00 00", /* NaN */
        "a1 61 61 f9 7c 00",                   /* infinity */
        "a1 61 61 42 00 01",                   /* bytes */
        "a1 61 61 62 c3 28",                   /* invalid UTF-8 */
        "a1 61 61 f7",                         /* undefined */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d.body_len = hex(bad[i], b, sizeof b);
        expect_write_like_tree(&d, bad[i]);
    }
    /* nesting: 63 arrays inside the body map pass, 64 fail */
    for (size_t depth = 62; depth <= 65; depth++) {
        size_t n = 0;
        b[n++] = 0xa1;
        b[n++] = 0x61;
        b[n++] = 'a';
        for (size_t k = 0; k < depth; k++)
            b[n++] = 0x81;
        b[n++] = 0x01;
        d.body_len = n;
        char what[32];
        snprintf(what, sizeof what, "depth %zu", depth);
        expect_write_like_tree(&d, what);
    }
}

Test(json, doc_write_reals_like_jansson)
{
    struct br_doc d = {0};
    uint8_t b[32];
    d.body = b;
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double v;
        uint64_t bits = x;
        if (i % 3 == 0) /* also short decimals, as sensors send */
            v = (double)(int64_t)(x % 2000000) / 1000.0 - 1000.0;
        else
            memcpy(&v, &bits, sizeof v);
        if (!isfinite(v))
            continue;
        br_buf enc;
        br_buf_init(&enc, 0);
        cr_assert(br_cbor_put_map(&enc, 1) == BR_OK && br_cbor_put_cstr(&enc, "v") == BR_OK &&
                  br_cbor_put_double(&enc, v) == BR_OK);
        memcpy(b, enc.data, enc.len);
        d.body_len = enc.len;
        br_buf_fini(&enc);
        char what[48];
        snprintf(what, sizeof what, "%.17g", v);
        expect_write_like_tree(&d, what);
    }
}

Test(json, doc_write_survives_every_allocation_failure)
{
    struct sample s;
    sample_init(&s);
    br_err want_e;
    char *want = tree_text(&s.doc, &want_e);
    cr_assert(want_e == BR_OK);
    for (long fail = 0;; fail++) {
        cr_assert(fail < 1000, "never succeeded");
        br_buf out;
        br_buf_init(&out, 0);
        br_alloc_fail_after(fail);
        br_err e = br_json_doc_write(&s.doc, &out, NULL);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(out.len == strlen(want) && memcmp(out.data, want, out.len) == 0);
            br_buf_fini(&out);
            break;
        }
        cr_assert(e == BR_ENOMEM, "fail=%ld gave %d", fail, e);
        cr_assert(out.len == 0);
        br_buf_fini(&out);
    }
    jfree(want);
}

Test(json, write_string_escapes_like_jansson_and_checks_utf8)
{
    static const char *const strs[] = {"", "abc", "a\"b\\c/d", "\b\f\n\r\t\x01\x1f\x7f",
                                       "\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        json_t *j = json_string(strs[i]);
        char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        br_buf out;
        br_buf_init(&out, 0);
        cr_assert(br_json_write_string(&out, strs[i], strlen(strs[i])) == BR_OK);
        cr_assert(out.len == strlen(want) && memcmp(out.data, want, out.len) == 0,
                  "got %.*s want %s", (int)out.len, (char *)out.data, want);
        br_buf_fini(&out);
        jfree(want);
        json_decref(j);
    }
    br_buf out;
    br_buf_init(&out, 0);
    cr_assert(br_json_write_string(&out, "a\xff", 2) == BR_EINVAL && out.len == 0);
    cr_assert(br_json_write_string(&out, "\xed\xa0\x80", 3) == BR_EINVAL && out.len == 0);
    cr_assert(br_json_write_string(&out, "a\0b", 3) == BR_OK);
    cr_assert(out.len == 10 && memcmp(out.data, "\"a\\u0000b\"", 10) == 0);
    br_buf_fini(&out);
}
