/* json_test.c — strict JSON parsing, JSON <-> canonical CBOR conversion (key order, integer
 * and float forms, depth cap, values JSON cannot hold), the CouchDB split of a JSON document
 * into metadata and body (every "_" member and its errors), rendering of a read document, and
 * allocation torture of the converters with jansson routed through br_malloc. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"
#include "barrel/json.h"

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
