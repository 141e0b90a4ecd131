/* wire_test.c — the sync protocol's messages: every type round-trips through encode and decode,
 * and the decoder refuses malformed input for every type with BR_EPROTO and a reason (unknown
 * types and versions, duplicate, unknown and missing keys, wrong types, limits, truncation).
 * Ends with an allocation torture of the decoder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"
#include "barrel/wire.h"

static struct br_rev rev(const char *s)
{
    struct br_rev r;
    cr_assert_eq(br_rev_parse(s, strlen(s), &r), BR_OK, "%s", s);
    return r;
}

/* body {"a": 1} */
static const uint8_t BODY[] = {0xa1, 0x61, 0x61, 0x01};

static br_buf enc(const struct br_wire_msg *m)
{
    br_buf b;
    struct br_errbuf eb = {{0}};
    br_buf_init(&b, 0);
    br_err e = br_wire_encode(m, &b, &eb);
    cr_assert_eq(e, BR_OK, "encode %s: %s %s", br_wire_type_name(m->type), br_strerror(e), eb.msg);
    return b;
}

static struct br_wire_msg *dec_ok(const br_buf *b)
{
    struct br_wire_msg *m = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = br_wire_decode(b->data, b->len, &m, NULL, &eb);
    cr_assert_eq(e, BR_OK, "decode: %s %s", br_strerror(e), eb.msg);
    return m;
}

/* Encode, decode, re-encode: the two encodings are equal. Returns the decoded message. */
static struct br_wire_msg *roundtrip(const struct br_wire_msg *m)
{
    br_buf a = enc(m);
    struct br_wire_msg *d = dec_ok(&a);
    cr_assert_eq(d->type, m->type);
    cr_assert_eq(d->rid, m->rid);
    br_buf b = enc(d);
    cr_assert_eq(a.len, b.len);
    cr_assert(memcmp(a.data, b.data, a.len) == 0);
    br_buf_fini(&a);
    br_buf_fini(&b);
    return d;
}

/* Decode must fail with `want` and a reason containing `needle`. */
static void dec_bad(const uint8_t *p, size_t n, br_err want, const char *needle)
{
    struct br_wire_msg *m = (struct br_wire_msg *)0x1;
    struct br_errbuf eb = {{0}};
    br_err e = br_wire_decode(p, n, &m, NULL, &eb);
    cr_assert_eq(e, want, "want %s got %s (%s)", br_strerror(want), br_strerror(e), eb.msg);
    cr_assert_eq(m, (struct br_wire_msg *)0x1, "out written on error");
    cr_assert(strstr(eb.msg, needle), "reason \"%s\" lacks \"%s\"", eb.msg, needle);
}

Test(wire, hello_roundtrip)
{
    struct br_wire_dbdigest dbs[2] = {{"alpha", {{1700000000000, 3}, 10, {1, 2, 3}}},
                                      {"beta", {{0, 0}, 0, {0}}}};
    struct br_wire_msg m = {.type = BR_WIRE_HELLO, .rid = 7};
    m.u.hello.version = BR_WIRE_VERSION;
    m.u.hello.node = "ABCDEFG-node";
    m.u.hello.hlc = (struct br_hlc){1700000000001, 9};
    m.u.hello.dbs = dbs;
    m.u.hello.n_dbs = 2;
    struct br_wire_msg *d = roundtrip(&m);
    cr_assert_str_eq(d->u.hello.node, "ABCDEFG-node");
    cr_assert_eq(d->u.hello.n_dbs, 2);
    cr_assert_str_eq(d->u.hello.dbs[0].name, "alpha");
    cr_assert_eq(d->u.hello.dbs[0].digest.last.logical, 3);
    cr_assert_eq(d->u.hello.dbs[0].digest.doc_count, 10);
    cr_assert_eq(d->u.hello.dbs[0].digest.set_hash[2], 3);
    cr_assert_eq(d->u.hello.hlc.wall, 1700000000001);
    br_wire_msg_free(d);
}

Test(wire, digest_ping_pong_peers_error_roundtrip)
{
    struct br_wire_dbdigest dbs[1] = {{"db", {{5, 6}, 1, {9}}}};
    struct br_wire_msg m = {.type = BR_WIRE_DIGEST, .rid = 1};
    m.u.digest.dbs = dbs;
    m.u.digest.n_dbs = 1;
    struct br_wire_msg *d = roundtrip(&m);
    cr_assert_eq(d->u.digest.dbs[0].digest.last.wall, 5);
    br_wire_msg_free(d);

    m = (struct br_wire_msg){.type = BR_WIRE_PING, .rid = 2};
    m.u.ping.hlc = (struct br_hlc){42, 1};
    d = roundtrip(&m);
    cr_assert_eq(d->u.ping.hlc.wall, 42);
    br_wire_msg_free(d);
    m.type = BR_WIRE_PONG;
    br_wire_msg_free(roundtrip(&m));

    const char *addrs[] = {"ws://10.0.0.2:7070", "ws://[fe80::1]:7070"};
    struct br_wire_peer peers[2] = {{"NODE-B", addrs, 2, {77, 0}, 0},
                                    {"NODE-C", addrs, 1, {78, 0}, 2}};
    m = (struct br_wire_msg){.type = BR_WIRE_PEERS, .rid = 3};
    m.u.peers.peers = peers;
    m.u.peers.n = 2;
    d = roundtrip(&m);
    cr_assert_str_eq(d->u.peers.peers[0].addrs[1], "ws://[fe80::1]:7070");
    cr_assert_eq(d->u.peers.peers[0].state, 0);
    cr_assert_eq(d->u.peers.peers[1].state, 2);
    cr_assert_eq(d->u.peers.mhash, 0);
    br_wire_msg_free(d);
    m.u.peers.mhash = 0x1234567890abcdefull;
    d = roundtrip(&m);
    cr_assert_eq(d->u.peers.mhash, 0x1234567890abcdefull);
    br_wire_msg_free(d);

    m = (struct br_wire_msg){.type = BR_WIRE_PROBE, .rid = 5};
    m.u.probe.node = "NODE-C";
    d = roundtrip(&m);
    cr_assert_str_eq(d->u.probe.node, "NODE-C");
    br_wire_msg_free(d);
    m = (struct br_wire_msg){.type = BR_WIRE_PROBE_REPLY, .rid = 5};
    m.u.probe_reply.alive = true;
    d = roundtrip(&m);
    cr_assert(d->u.probe_reply.alive);
    br_wire_msg_free(d);

    m = (struct br_wire_msg){.type = BR_WIRE_ERROR, .rid = 4};
    m.u.error.code = BR_ENOTFOUND;
    m.u.error.reason = "no such database";
    d = roundtrip(&m);
    cr_assert_eq(d->u.error.code, BR_ENOTFOUND);
    cr_assert_str_eq(d->u.error.reason, "no such database");
    br_wire_msg_free(d);
}

Test(wire, changes_request_and_reply_roundtrip)
{
    const char *paths[] = {"users/#", "type/user"};
    struct br_wire_msg m = {.type = BR_WIRE_CHANGES, .rid = 11};
    m.u.changes.db = "db";
    m.u.changes.since = (struct br_hlc){100, 2};
    m.u.changes.limit = 500;
    m.u.changes.has_filter = true;
    m.u.changes.filter = (struct br_wire_filter){paths, 2, BODY, sizeof BODY};
    struct br_wire_msg *d = roundtrip(&m);
    cr_assert_eq(d->u.changes.filter.n_paths, 2);
    cr_assert_str_eq(d->u.changes.filter.paths[0], "users/#");
    cr_assert_eq(d->u.changes.filter.query_len, sizeof BODY);
    br_wire_msg_free(d);
    m.u.changes.has_filter = false;
    d = roundtrip(&m);
    cr_assert_not(d->u.changes.has_filter);
    br_wire_msg_free(d);

    struct br_rev leaves[2] = {rev("2-aa"), rev("2-bb")};
    struct br_wire_change ch[2] = {{"doc1", 4, leaves, 2, false, {100, 3}},
                                   {"doc2", 4, leaves + 1, 1, true, {100, 4}}};
    m = (struct br_wire_msg){.type = BR_WIRE_CHANGES_REPLY, .rid = 11};
    m.u.changes_reply.changes = ch;
    m.u.changes_reply.n = 2;
    m.u.changes_reply.last = (struct br_hlc){100, 4};
    m.u.changes_reply.pending = 1;
    d = roundtrip(&m);
    cr_assert_eq(d->u.changes_reply.n, 2);
    cr_assert_eq(d->u.changes_reply.changes[0].n_revs, 2);
    cr_assert(br_rev_eq(&d->u.changes_reply.changes[0].revs[1], &leaves[1]));
    cr_assert(d->u.changes_reply.changes[1].deleted);
    br_wire_msg_free(d);
}

Test(wire, revsdiff_roundtrip)
{
    struct br_rev revs[2] = {rev("3-abc"), rev("3-abd")};
    struct br_wire_docrevs docs[1] = {{"x", 1, revs, 2}};
    struct br_wire_msg m = {.type = BR_WIRE_REVSDIFF, .rid = 5};
    m.u.revsdiff.db = "db";
    m.u.revsdiff.docs = docs;
    m.u.revsdiff.n = 1;
    br_wire_msg_free(roundtrip(&m));

    struct br_rev anc[1] = {rev("2-ff")};
    struct br_wire_diff df[1] = {{"x", 1, revs, 2, anc, 1}};
    m = (struct br_wire_msg){.type = BR_WIRE_REVSDIFF_REPLY, .rid = 5};
    m.u.revsdiff_reply.docs = df;
    m.u.revsdiff_reply.n = 1;
    struct br_wire_msg *d = roundtrip(&m);
    cr_assert_eq(d->u.revsdiff_reply.docs[0].n_missing, 2);
    cr_assert(br_rev_eq(&d->u.revsdiff_reply.docs[0].ancestors[0], &anc[0]));
    br_wire_msg_free(d);
}

Test(wire, get_revs_roundtrip_with_history_and_attachments)
{
    struct br_rev revs[1] = {rev("3-cc")};
    struct br_wire_docrevs docs[1] = {{"x", 1, revs, 1}};
    const char *have[] = {"md5-AAAAAAAAAAAAAAAAAAAAAA=="};
    struct br_wire_msg m = {.type = BR_WIRE_GET_REVS, .rid = 9};
    m.u.get_revs.db = "db";
    m.u.get_revs.docs = docs;
    m.u.get_revs.n = 1;
    m.u.get_revs.have = have;
    m.u.get_revs.n_have = 1;
    m.u.get_revs.data = true;
    struct br_wire_msg *d = roundtrip(&m);
    cr_assert(d->u.get_revs.data);
    cr_assert_str_eq(d->u.get_revs.have[0], have[0]);
    br_wire_msg_free(d);

    struct br_rev hist[3] = {rev("3-cc"), rev("2-bb"), rev("1-aa")};
    struct br_wire_att atts[2] = {
        {.name = "a.txt",
         .content_type = "text/plain",
         .digest = "md5-x",
         .length = 3,
         .revpos = 2,
         .has_key = true,
         .key = {7},
         .has_data = true,
         .data = (const uint8_t *)"abc",
         .data_len = 3},
        {.name = "b.bin",
         .content_type = "application/octet-stream",
         .digest = "md5-y",
         .length = 1000,
         .revpos = 1},
    };
    struct br_wire_revdoc rd[2] = {
        {.id = "x",
         .id_len = 1,
         .rev = hist[0],
         .body = BODY,
         .body_len = sizeof BODY,
         .history = hist,
         .n_history = 3,
         .atts = atts,
         .n_atts = 2},
        {.id = "y", .id_len = 1, .rev = hist[1], .missing = true},
    };
    m = (struct br_wire_msg){.type = BR_WIRE_GET_REVS_REPLY, .rid = 9};
    m.u.get_revs_reply.docs = rd;
    m.u.get_revs_reply.n = 2;
    d = roundtrip(&m);
    const struct br_wire_revdoc *x = &d->u.get_revs_reply.docs[0];
    cr_assert_eq(x->n_history, 3);
    cr_assert(br_rev_eq(&x->history[2], &hist[2]));
    cr_assert_eq(x->n_atts, 2);
    cr_assert(x->atts[0].has_data && x->atts[0].has_key);
    cr_assert(memcmp(x->atts[0].data, "abc", 3) == 0);
    cr_assert_not(x->atts[1].has_data);
    cr_assert(d->u.get_revs_reply.docs[1].missing);
    br_wire_msg_free(d);
}

Test(wire, encode_refuses_what_decode_would_refuse)
{
    br_buf b;
    br_buf_init(&b, 0);
    struct br_errbuf eb;
    struct br_wire_msg m = {.type = 99};
    cr_assert_eq(br_wire_encode(&m, &b, &eb), BR_EINVAL);
    /* a history that does not begin with rev */
    struct br_rev hist[2] = {rev("2-bb"), rev("1-aa")};
    struct br_wire_revdoc rd = {.id = "x",
                                .id_len = 1,
                                .rev = rev("3-cc"),
                                .body = BODY,
                                .body_len = sizeof BODY,
                                .history = hist,
                                .n_history = 2};
    m = (struct br_wire_msg){.type = BR_WIRE_GET_REVS_REPLY};
    m.u.get_revs_reply.docs = &rd;
    m.u.get_revs_reply.n = 1;
    cr_assert_eq(br_wire_encode(&m, &b, &eb), BR_EINVAL);
    /* a body that is not a map */
    rd.rev = hist[0];
    static const uint8_t arr[] = {0x80};
    rd.body = arr;
    rd.body_len = 1;
    cr_assert_eq(br_wire_encode(&m, &b, &eb), BR_EINVAL);
    cr_assert_eq(b.len, 0, "nothing appended on error");
    /* a message larger than the buffer's maximum */
    br_buf small;
    br_buf_init(&small, 8);
    m = (struct br_wire_msg){.type = BR_WIRE_ERROR};
    m.u.error.reason = "a reason longer than eight bytes";
    cr_assert_eq(br_wire_encode(&m, &small, &eb), BR_ETOOBIG);
    br_buf_fini(&small);
    br_buf_fini(&b);
}

/* ---- malformed input: hand-built CBOR ---- */

struct w {
    br_buf b;
};

static void w_init(struct w *w)
{
    br_buf_init(&w->b, 0);
}
static void w_map(struct w *w, size_t n)
{
    cr_assert_eq(br_cbor_put_map(&w->b, n), BR_OK);
}
static void w_arr(struct w *w, size_t n)
{
    cr_assert_eq(br_cbor_put_array(&w->b, n), BR_OK);
}
static void w_s(struct w *w, const char *s)
{
    cr_assert_eq(br_cbor_put_cstr(&w->b, s), BR_OK);
}
static void w_u(struct w *w, uint64_t v)
{
    cr_assert_eq(br_cbor_put_uint(&w->b, v), BR_OK);
}
static void w_bool(struct w *w, bool v)
{
    cr_assert_eq(br_cbor_put_bool(&w->b, v), BR_OK);
}
static void w_hlc(struct w *w)
{
    uint8_t h[12] = {0};
    cr_assert_eq(br_cbor_put_bytes(&w->b, h, 12), BR_OK);
}
static void w_head(struct w *w, size_t n, const char *type)
{
    w_map(w, n);
    w_s(w, "type");
    w_s(w, type);
    w_s(w, "rid");
    w_u(w, 1);
}
static void w_bad(struct w *w, const char *needle)
{
    dec_bad(w->b.data, w->b.len, BR_EPROTO, needle);
    br_buf_fini(&w->b);
}

Test(wire, decode_rejects_framing_errors)
{
    struct w w;
    dec_bad((const uint8_t *)"", 0, BR_EPROTO, "empty");
    static const uint8_t arr[] = {0x81, 0x01};
    dec_bad(arr, sizeof arr, BR_EPROTO, "must be a map");
    static const uint8_t trunc[] = {0xa2, 0x64, 't', 'y', 'p'};
    dec_bad(trunc, sizeof trunc, BR_EPROTO, "truncated");
    static const uint8_t indef[] = {0xbf, 0xff};
    dec_bad(indef, sizeof indef, BR_EPROTO, "malformed");
    /* too big */
    uint8_t *big = calloc(1, (size_t)BR_WIRE_MAX_MSG + 1);
    dec_bad(big, (size_t)BR_WIRE_MAX_MSG + 1, BR_ETOOBIG, "limit");
    free(big);
    /* trailing bytes */
    w_init(&w);
    w_head(&w, 3, "ping");
    w_s(&w, "hlc");
    w_hlc(&w);
    w_u(&w, 0);
    w_bad(&w, "trailing");
    /* unknown type */
    w_init(&w);
    w_head(&w, 2, "gossip_everything");
    w_bad(&w, "unknown message type");
    /* missing type, missing rid */
    w_init(&w);
    w_map(&w, 1);
    w_s(&w, "rid");
    w_u(&w, 1);
    w_bad(&w, "missing key type");
    w_init(&w);
    w_map(&w, 1);
    w_s(&w, "type");
    w_s(&w, "ping");
    w_bad(&w, "missing key rid");
    /* duplicate type and rid */
    w_init(&w);
    w_head(&w, 3, "ping");
    w_s(&w, "type");
    w_s(&w, "pong");
    w_bad(&w, "duplicate key type");
    w_init(&w);
    w_head(&w, 3, "ping");
    w_s(&w, "rid");
    w_u(&w, 2);
    w_bad(&w, "duplicate key rid");
    /* type of the wrong type, rid negative, non-text key */
    w_init(&w);
    w_map(&w, 2);
    w_s(&w, "type");
    w_u(&w, 1);
    w_s(&w, "rid");
    w_u(&w, 1);
    w_bad(&w, "type must be a text string");
    w_init(&w);
    w_map(&w, 2);
    w_s(&w, "type");
    w_s(&w, "ping");
    w_s(&w, "rid");
    cr_assert_eq(br_cbor_put_int(&w.b, -5), BR_OK);
    w_bad(&w, "rid must be an unsigned integer");
    w_init(&w);
    w_head(&w, 3, "ping");
    w_u(&w, 1);
    w_hlc(&w);
    w_bad(&w, "keys must be text strings");
}

Test(wire, decode_rejects_bad_hello_and_digest)
{
    struct w w;
    /* wrong version */
    w_init(&w);
    w_head(&w, 6, "hello");
    w_s(&w, "version");
    w_u(&w, 1); /* version 1 had no z envelopes */
    w_s(&w, "node");
    w_s(&w, "n");
    w_s(&w, "hlc");
    w_hlc(&w);
    w_s(&w, "dbs");
    w_arr(&w, 0);
    w_bad(&w, "protocol version 1 is not supported");
    /* missing dbs */
    w_init(&w);
    w_head(&w, 5, "hello");
    w_s(&w, "version");
    w_u(&w, BR_WIRE_VERSION);
    w_s(&w, "node");
    w_s(&w, "n");
    w_s(&w, "hlc");
    w_hlc(&w);
    w_bad(&w, "missing key dbs");
    /* node id too long */
    char longnode[BR_WIRE_MAX_NODE + 2];
    memset(longnode, 'a', sizeof longnode - 1);
    longnode[sizeof longnode - 1] = 0;
    w_init(&w);
    w_head(&w, 3, "hello");
    w_s(&w, "node");
    w_s(&w, longnode);
    w_bad(&w, "node must be 1..128 bytes");
    /* hlc of the wrong length */
    w_init(&w);
    w_head(&w, 3, "hello");
    w_s(&w, "hlc");
    cr_assert_eq(br_cbor_put_bytes(&w.b, "abc", 3), BR_OK);
    w_bad(&w, "hlc must be 12 bytes");
    /* digest: a db entry missing its hash, and an unknown key in it */
    w_init(&w);
    w_head(&w, 3, "digest");
    w_s(&w, "dbs");
    w_arr(&w, 1);
    w_map(&w, 3);
    w_s(&w, "name");
    w_s(&w, "db");
    w_s(&w, "last");
    w_hlc(&w);
    w_s(&w, "count");
    w_u(&w, 1);
    w_bad(&w, "missing key hash");
    w_init(&w);
    w_head(&w, 3, "digest");
    w_s(&w, "dbs");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "colour");
    w_s(&w, "red");
    w_bad(&w, "unknown key \"colour\"");
    /* dbs not an array */
    w_init(&w);
    w_head(&w, 3, "digest");
    w_s(&w, "dbs");
    w_map(&w, 0);
    w_bad(&w, "dbs must be an array");
}

Test(wire, decode_rejects_bad_changes)
{
    struct w w;
    /* limit past the maximum */
    w_init(&w);
    w_head(&w, 5, "changes");
    w_s(&w, "db");
    w_s(&w, "db");
    w_s(&w, "since");
    w_hlc(&w);
    w_s(&w, "limit");
    w_u(&w, BR_WIRE_MAX_ITEMS + 1);
    w_bad(&w, "limit past");
    /* a query that is not a map; a path that is not text; an unknown filter key */
    w_init(&w);
    w_head(&w, 3, "changes");
    w_s(&w, "filter");
    w_map(&w, 1);
    w_s(&w, "query");
    w_arr(&w, 0);
    w_bad(&w, "query must be a map");
    w_init(&w);
    w_head(&w, 3, "changes");
    w_s(&w, "filter");
    w_map(&w, 1);
    w_s(&w, "paths");
    w_arr(&w, 1);
    w_u(&w, 3);
    w_bad(&w, "paths must be a text string");
    w_init(&w);
    w_head(&w, 3, "changes");
    w_s(&w, "filter");
    w_map(&w, 1);
    w_s(&w, "selector");
    w_map(&w, 0);
    w_bad(&w, "unknown key \"selector\"");
    /* a duplicate key inside the request */
    w_init(&w);
    w_head(&w, 4, "changes");
    w_s(&w, "db");
    w_s(&w, "a");
    w_s(&w, "db");
    w_s(&w, "b");
    w_bad(&w, "duplicate key db");
    /* reply: a change with a bad revision, and one with no revisions, and a bad id */
    w_init(&w);
    w_head(&w, 3, "changes_reply");
    w_s(&w, "changes");
    w_arr(&w, 1);
    w_map(&w, 2);
    w_s(&w, "id");
    w_s(&w, "d");
    w_s(&w, "revs");
    w_arr(&w, 1);
    w_s(&w, "1-XYZ");
    w_bad(&w, "not a revision id");
    w_init(&w);
    w_head(&w, 3, "changes_reply");
    w_s(&w, "changes");
    w_arr(&w, 1);
    w_map(&w, 4);
    w_s(&w, "id");
    w_s(&w, "d");
    w_s(&w, "revs");
    w_arr(&w, 0);
    w_s(&w, "deleted");
    w_bool(&w, false);
    w_s(&w, "hlc");
    w_hlc(&w);
    w_bad(&w, "at least one revision");
    w_init(&w);
    w_head(&w, 3, "changes_reply");
    w_s(&w, "changes");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "id");
    w_s(&w, "");
    w_bad(&w, "id must be 1..1024 bytes");
    /* a list announcing more items than allowed */
    w_init(&w);
    w_head(&w, 3, "changes_reply");
    w_s(&w, "changes");
    w_arr(&w, BR_WIRE_MAX_ITEMS + 1);
    for (size_t i = 0; i < BR_WIRE_MAX_ITEMS + 1; i++)
        w_u(&w, 0);
    w_bad(&w, "more than 10000");
    /* deleted of the wrong type */
    w_init(&w);
    w_head(&w, 3, "changes_reply");
    w_s(&w, "changes");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "deleted");
    w_u(&w, 1);
    w_bad(&w, "deleted must be a boolean");
}

Test(wire, decode_rejects_bad_revsdiff)
{
    struct w w;
    w_init(&w);
    w_head(&w, 3, "revsdiff");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "id");
    w_s(&w, "x");
    w_bad(&w, "missing key revs");
    w_init(&w);
    w_head(&w, 3, "revsdiff");
    w_s(&w, "db");
    w_s(&w, "db");
    w_bad(&w, "missing key docs");
    w_init(&w);
    w_head(&w, 3, "revsdiff_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 2);
    w_s(&w, "id");
    w_s(&w, "x");
    w_s(&w, "missing");
    w_arr(&w, 1);
    w_s(&w, "0-abc");
    w_bad(&w, "not a revision id");
    w_init(&w);
    w_head(&w, 3, "revsdiff_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 2);
    w_s(&w, "id");
    w_s(&w, "x");
    w_s(&w, "missing");
    w_arr(&w, 0);
    w_bad(&w, "missing key ancestors");
    /* id with a NUL inside */
    w_init(&w);
    w_head(&w, 3, "revsdiff");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "id");
    cr_assert_eq(br_cbor_put_str(&w.b, "a\0b", 3), BR_OK);
    w_bad(&w, "NUL");
}

Test(wire, decode_rejects_bad_get_revs)
{
    struct w w;
    w_init(&w);
    w_head(&w, 5, "get_revs");
    w_s(&w, "db");
    w_s(&w, "db");
    w_s(&w, "docs");
    w_arr(&w, 0);
    w_s(&w, "have");
    w_arr(&w, 0);
    w_bad(&w, "missing key data");
    w_init(&w);
    w_head(&w, 3, "get_revs");
    w_s(&w, "have");
    w_arr(&w, 1);
    w_s(&w, "md5-this-digest-is-far-too-long-to-be-any-md5-digest");
    w_bad(&w, "have must be 1..47 bytes");
    w_init(&w);
    w_head(&w, 3, "get_revs");
    w_s(&w, "data");
    w_s(&w, "yes");
    w_bad(&w, "data must be a boolean");
}

/* A get_revs_reply with one revision whose fields are given by `fill`. */
static void w_revdoc_head(struct w *w, size_t nkeys)
{
    w_init(w);
    w_head(w, 3, "get_revs_reply");
    w_s(w, "docs");
    w_arr(w, 1);
    w_map(w, nkeys);
    w_s(w, "id");
    w_s(w, "x");
    w_s(w, "rev");
    w_s(w, "2-bb");
}

Test(wire, decode_rejects_bad_get_revs_reply)
{
    struct w w;
    /* body not a map */
    w_revdoc_head(&w, 3);
    w_s(&w, "body");
    w_arr(&w, 0);
    w_bad(&w, "body must be a map");
    /* body with a tag (not a JSON type) */
    w_revdoc_head(&w, 3);
    w_s(&w, "body");
    static const uint8_t tagged[] = {0xa1, 0x61, 0x61, 0xc1, 0x01};
    cr_assert_eq(br_buf_append(&w.b, tagged, sizeof tagged), BR_OK);
    w_bad(&w, "malformed");
    /* ids before start */
    w_revdoc_head(&w, 3);
    w_s(&w, "ids");
    w_arr(&w, 1);
    w_s(&w, "bb");
    w_bad(&w, "start must come before ids");
    /* start smaller than the history */
    w_revdoc_head(&w, 4);
    w_s(&w, "start");
    w_u(&w, 1);
    w_s(&w, "ids");
    w_arr(&w, 2);
    w_s(&w, "bb");
    w_s(&w, "aa");
    w_bad(&w, "does not fit");
    /* uppercase hash in ids */
    w_revdoc_head(&w, 4);
    w_s(&w, "start");
    w_u(&w, 2);
    w_s(&w, "ids");
    w_arr(&w, 1);
    w_s(&w, "BB");
    w_bad(&w, "lowercase hex");
    /* history that does not begin with rev */
    w_revdoc_head(&w, 7);
    w_s(&w, "deleted");
    w_bool(&w, false);
    w_s(&w, "body");
    w_map(&w, 0);
    w_s(&w, "start");
    w_u(&w, 2);
    w_s(&w, "ids");
    w_arr(&w, 1);
    w_s(&w, "cc");
    w_s(&w, "atts");
    w_arr(&w, 0);
    w_bad(&w, "history does not begin with rev");
    /* a live revision without its body */
    w_revdoc_head(&w, 3);
    w_s(&w, "deleted");
    w_bool(&w, false);
    w_bad(&w, "needs deleted, body");
    /* missing: false, and missing with a body */
    w_revdoc_head(&w, 3);
    w_s(&w, "missing");
    w_bool(&w, false);
    w_bad(&w, "must be true");
    w_revdoc_head(&w, 4);
    w_s(&w, "missing");
    w_bool(&w, true);
    w_s(&w, "body");
    w_map(&w, 0);
    w_bad(&w, "carries only id and rev");
    /* attachment data whose size disagrees with its length */
    w_revdoc_head(&w, 3);
    w_s(&w, "atts");
    w_arr(&w, 1);
    w_map(&w, 6);
    w_s(&w, "name");
    w_s(&w, "a");
    w_s(&w, "type");
    w_s(&w, "text/plain");
    w_s(&w, "digest");
    w_s(&w, "md5-x");
    w_s(&w, "length");
    w_u(&w, 5);
    w_s(&w, "revpos");
    w_u(&w, 1);
    w_s(&w, "data");
    cr_assert_eq(br_cbor_put_bytes(&w.b, "abc", 3), BR_OK);
    w_bad(&w, "data is 3 bytes but length says 5");
    /* attachment key of the wrong size, and without its digest */
    w_revdoc_head(&w, 3);
    w_s(&w, "atts");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "key");
    cr_assert_eq(br_cbor_put_bytes(&w.b, "abc", 3), BR_OK);
    w_bad(&w, "key must be 32 bytes");
    w_revdoc_head(&w, 3);
    w_s(&w, "atts");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "name");
    w_s(&w, "a");
    w_bad(&w, "missing key type");
    /* a body nested deeper than the limit */
    w_revdoc_head(&w, 3);
    w_s(&w, "body");
    for (int i = 0; i < BR_CBOR_MAX_DEPTH + 2; i++) {
        w_map(&w, 1);
        w_s(&w, "k");
    }
    w_u(&w, 1);
    w_bad(&w, "too deeply nested");
}

Test(wire, decode_rejects_bad_peers_ping_error)
{
    struct w w;
    w_init(&w);
    w_head(&w, 3, "peers");
    w_s(&w, "peers");
    w_arr(&w, 1);
    w_map(&w, 2);
    w_s(&w, "node");
    w_s(&w, "n");
    w_s(&w, "addrs");
    w_arr(&w, 1);
    w_bool(&w, true);
    w_bad(&w, "addrs must be a text string");
    uint8_t hz[12] = {0};
    w_init(&w); /* a member state past dead */
    w_head(&w, 3, "peers");
    w_s(&w, "peers");
    w_arr(&w, 1);
    w_map(&w, 4);
    w_s(&w, "node");
    w_s(&w, "n");
    w_s(&w, "addrs");
    w_arr(&w, 0);
    w_s(&w, "hlc");
    cr_assert_eq(br_cbor_put_bytes(&w.b, hz, 12), BR_OK);
    w_s(&w, "state");
    w_u(&w, 3);
    w_bad(&w, "member state 3");
    w_init(&w);
    w_head(&w, 3, "probe");
    w_s(&w, "node");
    w_s(&w, "");
    w_bad(&w, "node");
    w_init(&w);
    w_head(&w, 3, "probe_reply");
    w_s(&w, "alive");
    w_u(&w, 1);
    w_bad(&w, "alive");
    w_init(&w);
    w_head(&w, 2, "pong");
    w_bad(&w, "missing key hlc");
    w_init(&w);
    w_head(&w, 3, "ping");
    w_s(&w, "hlc");
    uint8_t h[12];
    memset(h, 0xff, sizeof h);
    cr_assert_eq(br_cbor_put_bytes(&w.b, h, 12), BR_OK);
    w_bad(&w, "logical counter");
    w_init(&w);
    w_head(&w, 4, "error");
    w_s(&w, "code");
    w_u(&w, (uint64_t)UINT32_MAX + 1);
    w_s(&w, "reason");
    w_s(&w, "x");
    w_bad(&w, "code out of range");
    w_init(&w);
    w_head(&w, 3, "error");
    w_s(&w, "code");
    w_u(&w, 3);
    w_bad(&w, "missing key reason");
}

Test(wire, decode_reports_the_request_id_of_a_bad_request)
{
    struct w w;
    w_init(&w);
    w_map(&w, 3);
    w_s(&w, "rid");
    w_u(&w, 4242);
    w_s(&w, "type");
    w_s(&w, "revsdiff");
    w_s(&w, "db");
    w_u(&w, 1);
    struct br_wire_msg *m = NULL;
    uint64_t rid = 0;
    struct br_errbuf eb;
    cr_assert_eq(br_wire_decode(w.b.data, w.b.len, &m, &rid, &eb), BR_EPROTO);
    cr_assert_eq(rid, 4242);
    cr_assert(strstr(eb.msg, "db must be a text string"), "%s", eb.msg);
    br_buf_fini(&w.b);
}

Test(wire, decode_survives_every_failed_allocation)
{
    struct br_rev hist[2] = {rev("2-bb"), rev("1-aa")};
    struct br_wire_att att = {.name = "a",
                              .content_type = "text/plain",
                              .digest = "md5-x",
                              .length = 3,
                              .has_data = true,
                              .data = (const uint8_t *)"abc",
                              .data_len = 3};
    struct br_wire_revdoc rd[2] = {
        {.id = "x",
         .id_len = 1,
         .rev = hist[0],
         .body = BODY,
         .body_len = sizeof BODY,
         .history = hist,
         .n_history = 2,
         .atts = &att,
         .n_atts = 1},
        {.id = "y",
         .id_len = 1,
         .rev = hist[0],
         .body = BODY,
         .body_len = sizeof BODY,
         .history = hist,
         .n_history = 2},
    };
    struct br_wire_msg m = {.type = BR_WIRE_GET_REVS_REPLY, .rid = 1};
    m.u.get_revs_reply.docs = rd;
    m.u.get_revs_reply.n = 2;
    br_buf b = enc(&m);
    for (long n = 0;; n++) {
        struct br_wire_msg *d = NULL;
        struct br_errbuf eb;
        br_alloc_fail_after(n);
        br_err e = br_wire_decode(b.data, b.len, &d, NULL, &eb);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(n > 0);
            br_wire_msg_free(d);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM, "n=%ld: %s", n, eb.msg);
    }
    br_buf_fini(&b);
}

/* ---- the messages added for pushing to a peer: put_revs, local_get, local_put ---- */

/* A local document's revision 0-N. */
static struct br_rev lrev(const char *n)
{
    struct br_rev r = {0};
    r.hash_len = (uint8_t)strlen(n);
    memcpy(r.hash, n, r.hash_len);
    return r;
}

Test(wire, put_revs_and_local_docs_roundtrip)
{
    struct br_rev hist[2] = {rev("2-bb"), rev("1-aa")};
    struct br_wire_revdoc rd[1] = {{.id = "x",
                                    .id_len = 1,
                                    .rev = hist[0],
                                    .deleted = true,
                                    .body = BODY,
                                    .body_len = sizeof BODY,
                                    .history = hist,
                                    .n_history = 2}};
    struct br_wire_msg m = {.type = BR_WIRE_PUT_REVS, .rid = 4};
    m.u.put_revs.db = "db";
    m.u.put_revs.docs = rd;
    m.u.put_revs.n = 1;
    struct br_wire_msg *d = roundtrip(&m);
    cr_assert_str_eq(d->u.put_revs.db, "db");
    cr_assert_eq(d->u.put_revs.n, 1);
    cr_assert(d->u.put_revs.docs[0].deleted);
    cr_assert_eq(d->u.put_revs.docs[0].n_history, 2);
    br_wire_msg_free(d);

    uint64_t res[3] = {BR_OK, BR_ECONFLICT, BR_EBADREV};
    m = (struct br_wire_msg){.type = BR_WIRE_PUT_REVS_REPLY, .rid = 4};
    m.u.put_revs_reply.results = res;
    m.u.put_revs_reply.n = 3;
    d = roundtrip(&m);
    cr_assert_eq(d->u.put_revs_reply.n, 3);
    cr_assert_eq(d->u.put_revs_reply.results[1], BR_ECONFLICT);
    br_wire_msg_free(d);

    m = (struct br_wire_msg){.type = BR_WIRE_LOCAL_GET, .rid = 5};
    m.u.local.db = "db";
    m.u.local.id = "0123abcd";
    d = roundtrip(&m);
    cr_assert_str_eq(d->u.local.id, "0123abcd");
    cr_assert_not(d->u.local.has_rev);
    br_wire_msg_free(d);

    m = (struct br_wire_msg){.type = BR_WIRE_LOCAL_GET_REPLY, .rid = 5};
    m.u.local_reply.rev = lrev("3");
    m.u.local_reply.body = BODY;
    m.u.local_reply.body_len = sizeof BODY;
    d = roundtrip(&m);
    cr_assert(br_rev_eq(&d->u.local_reply.rev, &m.u.local_reply.rev));
    cr_assert_eq(d->u.local_reply.body_len, sizeof BODY);
    br_wire_msg_free(d);

    m = (struct br_wire_msg){.type = BR_WIRE_LOCAL_PUT, .rid = 6};
    m.u.local.db = "db";
    m.u.local.id = "cp";
    m.u.local.body = BODY;
    m.u.local.body_len = sizeof BODY;
    d = roundtrip(&m); /* create: no rev */
    cr_assert_not(d->u.local.has_rev);
    br_wire_msg_free(d);
    m.u.local.has_rev = true;
    m.u.local.rev = lrev("1");
    d = roundtrip(&m);
    cr_assert(d->u.local.has_rev);
    cr_assert(br_rev_eq(&d->u.local.rev, &m.u.local.rev));
    br_wire_msg_free(d);

    m = (struct br_wire_msg){.type = BR_WIRE_LOCAL_PUT_REPLY, .rid = 6};
    m.u.local_reply.rev = lrev("2");
    d = roundtrip(&m);
    cr_assert_str_eq(br_wire_type_name(d->type), "local_put_reply");
    br_wire_msg_free(d);
}

Test(wire, decode_rejects_bad_put_revs_and_local_docs)
{
    struct w w;
    /* put_revs without docs */
    w_init(&w);
    w_head(&w, 3, "put_revs");
    w_s(&w, "db");
    w_s(&w, "db");
    w_bad(&w, "missing key docs");
    /* put_revs carrying a "missing" revision: nothing to write */
    w_init(&w);
    w_head(&w, 4, "put_revs");
    w_s(&w, "db");
    w_s(&w, "db");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 3);
    w_s(&w, "id");
    w_s(&w, "x");
    w_s(&w, "rev");
    w_s(&w, "1-aa");
    w_s(&w, "missing");
    w_bool(&w, true);
    w_bad(&w, "missing revision cannot be written");
    /* put_revs_reply with a result that is not a number */
    w_init(&w);
    w_head(&w, 3, "put_revs_reply");
    w_s(&w, "results");
    w_arr(&w, 1);
    w_s(&w, "ok");
    w_bad(&w, "results");
    /* local_get with an empty id */
    w_init(&w);
    w_head(&w, 4, "local_get");
    w_s(&w, "db");
    w_s(&w, "db");
    w_s(&w, "id");
    w_s(&w, "");
    w_bad(&w, "id");
    /* local_put whose body is not a map */
    w_init(&w);
    w_head(&w, 5, "local_put");
    w_s(&w, "db");
    w_s(&w, "db");
    w_s(&w, "id");
    w_s(&w, "cp");
    w_s(&w, "body");
    w_u(&w, 3);
    w_bad(&w, "body");
    /* local_put_reply with a malformed rev */
    w_init(&w);
    w_head(&w, 3, "local_put_reply");
    w_s(&w, "rev");
    w_s(&w, "1-aa"); /* a document revision, not a local one */
    w_bad(&w, "not a local revision");
    /* local_get_reply without body */
    w_init(&w);
    w_head(&w, 3, "local_get_reply");
    w_s(&w, "rev");
    w_s(&w, "0-1");
    w_bad(&w, "missing key body");
}

/* ---- version 2: known revisions in get_revs replies, z envelopes ---- */

static bool contains(const br_buf *b, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, s, n) == 0)
            return true;
    return false;
}

Test(wire, known_revisions_travel_without_their_hash)
{
    struct br_rev hist[3] = {rev("3-cccc11"), rev("2-bb"), rev("1-aa")};
    struct br_rev one = rev("1-dddd22");
    struct br_wire_revdoc rd[2] = {
        {.id = "x",
         .id_len = 1,
         .rev = hist[0],
         .rev_known = true,
         .body = BODY,
         .body_len = sizeof BODY,
         .history = hist,
         .n_history = 3},
        {.id = "y",
         .id_len = 1,
         .rev = one,
         .rev_known = true,
         .deleted = true,
         .body = BODY,
         .body_len = sizeof BODY,
         .history = &one,
         .n_history = 1},
    };
    struct br_wire_msg m = {.type = BR_WIRE_GET_REVS_REPLY, .rid = 3};
    m.u.get_revs_reply.docs = rd;
    m.u.get_revs_reply.n = 2;
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert_eq(br_wire_encode_plain(&m, &b, NULL), BR_OK);
    cr_assert_not(contains(&b, "cccc11"), "the known hash travelled");
    cr_assert_not(contains(&b, "dddd22"), "the known hash travelled");
    br_buf_fini(&b);
    struct br_wire_msg *d = roundtrip(&m); /* re-encoding the decoded form gives the same bytes */
    const struct br_wire_revdoc *x = &d->u.get_revs_reply.docs[0], *y = &x[1];
    cr_assert(x->rev_known && y->rev_known);
    cr_assert_eq(x->rev.gen, 3);
    cr_assert_eq(x->rev.hash_len, 0);
    cr_assert_eq(x->n_history, 2, "the ancestors only");
    cr_assert(br_rev_eq(&x->history[0], &hist[1]) && br_rev_eq(&x->history[1], &hist[2]));
    cr_assert_eq(y->rev.gen, 1);
    cr_assert_eq(y->n_history, 0);
    cr_assert(y->deleted);
    br_wire_msg_free(d);
    /* put_revs ignores the flag and sends the whole revision */
    m = (struct br_wire_msg){.type = BR_WIRE_PUT_REVS, .rid = 4};
    m.u.put_revs.db = "db";
    m.u.put_revs.docs = rd;
    m.u.put_revs.n = 2;
    d = roundtrip(&m);
    cr_assert_not(d->u.put_revs.docs[0].rev_known);
    cr_assert(br_rev_eq(&d->u.put_revs.docs[0].rev, &hist[0]));
    br_wire_msg_free(d);
    /* a known revision whose history does not begin with it, or whose ancestors skip one */
    rd[0].history = hist + 1;
    rd[0].n_history = 2;
    m = (struct br_wire_msg){.type = BR_WIRE_GET_REVS_REPLY, .rid = 3};
    m.u.get_revs_reply.docs = rd;
    m.u.get_revs_reply.n = 1;
    br_buf_init(&b, 0);
    cr_assert_eq(br_wire_encode(&m, &b, NULL), BR_EINVAL);
    struct br_rev gap[2] = {hist[0], hist[2]};
    rd[0].history = gap;
    cr_assert_eq(br_wire_encode(&m, &b, NULL), BR_EINVAL);
    br_buf_fini(&b);
}

/* A revision entry {id, known, deleted, body, start, ids, atts} with the given extras. */
static void w_known(struct w *w, size_t extra, uint64_t start, size_t n_ids)
{
    w_map(w, 7 + extra);
    w_s(w, "id");
    w_s(w, "x");
    w_s(w, "known");
    w_bool(w, true);
    w_s(w, "deleted");
    w_bool(w, false);
    w_s(w, "body");
    cr_assert_eq(br_buf_append(&w->b, BODY, sizeof BODY), BR_OK);
    w_s(w, "atts");
    w_arr(w, 0);
    w_s(w, "start");
    w_u(w, start);
    w_s(w, "ids");
    w_arr(w, n_ids);
    for (size_t i = 0; i < n_ids; i++)
        w_s(w, "aa");
}

Test(wire, decode_rejects_bad_known_revisions)
{
    struct w w;
    /* known with rev */
    w_init(&w);
    w_head(&w, 3, "get_revs_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 8);
    w_s(&w, "rev");
    w_s(&w, "2-aa");
    w_s(&w, "id");
    w_s(&w, "x");
    w_s(&w, "known");
    w_bool(&w, true);
    w_s(&w, "deleted");
    w_bool(&w, false);
    w_s(&w, "body");
    cr_assert_eq(br_buf_append(&w.b, BODY, sizeof BODY), BR_OK);
    w_s(&w, "atts");
    w_arr(&w, 0);
    w_s(&w, "start");
    w_u(&w, 2);
    w_s(&w, "ids");
    w_arr(&w, 0);
    w_bad(&w, "exclude each other");
    /* more ancestors than the generation allows */
    w_init(&w);
    w_head(&w, 3, "get_revs_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_known(&w, 0, 2, 2);
    w_bad(&w, "does not fit");
    /* generation 0 */
    w_init(&w);
    w_head(&w, 3, "get_revs_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_known(&w, 0, 0, 0);
    w_bad(&w, "does not fit");
    /* known: false */
    w_init(&w);
    w_head(&w, 3, "get_revs_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 2);
    w_s(&w, "id");
    w_s(&w, "x");
    w_s(&w, "known");
    w_bool(&w, false);
    w_bad(&w, "must be true");
    /* known in put_revs */
    w_init(&w);
    w_head(&w, 4, "put_revs");
    w_s(&w, "db");
    w_s(&w, "db");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_known(&w, 0, 1, 0);
    w_bad(&w, "only for get_revs_reply");
    /* neither rev nor known */
    w_init(&w);
    w_head(&w, 3, "get_revs_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 1);
    w_s(&w, "id");
    w_s(&w, "x");
    w_bad(&w, "missing key rev");
    /* a missing revision that says known */
    w_init(&w);
    w_head(&w, 3, "get_revs_reply");
    w_s(&w, "docs");
    w_arr(&w, 1);
    w_map(&w, 3);
    w_s(&w, "id");
    w_s(&w, "x");
    w_s(&w, "known");
    w_bool(&w, true);
    w_s(&w, "missing");
    w_bool(&w, true);
    w_bad(&w, "carries only id and rev");
}

/* A get_revs_reply of n sensor-like documents (what replication sends). */
static struct br_wire_msg *big_reply(size_t n, br_buf *bodies)
{
    struct br_wire_msg *m = calloc(1, sizeof *m);
    struct br_wire_revdoc *rd = calloc(n, sizeof *rd);
    struct br_rev *revs = calloc(n, sizeof *revs);
    char(*ids)[32] = calloc(n, 32);
    size_t *off = calloc(n + 1, sizeof *off);
    br_buf_init(bodies, 0);
    for (size_t i = 0; i < n; i++) {
        char t[64];
        snprintf(t, sizeof t, "1-%08zx%08zx%016zx", i * 2654435761u, i, i * 40503u);
        revs[i] = rev(t);
        snprintf(ids[i], 32, "doc-%08zu", i);
        off[i] = bodies->len;
        cr_assert_eq(br_cbor_put_map(bodies, 2), BR_OK);
        cr_assert_eq(br_cbor_put_cstr(bodies, "type"), BR_OK);
        cr_assert_eq(br_cbor_put_cstr(bodies, "sensor"), BR_OK);
        cr_assert_eq(br_cbor_put_cstr(bodies, "value"), BR_OK);
        cr_assert_eq(br_cbor_put_uint(bodies, i * 7), BR_OK);
    }
    off[n] = bodies->len;
    for (size_t i = 0; i < n; i++)
        rd[i] = (struct br_wire_revdoc){.id = ids[i],
                                        .id_len = strlen(ids[i]),
                                        .rev = revs[i],
                                        .body = bodies->data + off[i],
                                        .body_len = off[i + 1] - off[i],
                                        .history = &revs[i],
                                        .n_history = 1};
    free(off);
    m->type = BR_WIRE_GET_REVS_REPLY;
    m->rid = 77;
    m->u.get_revs_reply.docs = rd;
    m->u.get_revs_reply.n = n;
    return m;
}

static void big_reply_free(struct br_wire_msg *m, br_buf *bodies)
{
    free((void *)m->u.get_revs_reply.docs[0].id);
    free(m->u.get_revs_reply.docs[0].history);
    free(m->u.get_revs_reply.docs);
    free(m);
    br_buf_fini(bodies);
}

/* The type of an encoded message (its first key's value), for checking envelopes. */
static bool is_envelope(const br_buf *b)
{
    static const uint8_t head[] = {0xa3, 0x64, 't', 'y', 'p', 'e', 0x61, 'z'};
    return b->len > sizeof head && memcmp(b->data, head, sizeof head) == 0;
}

Test(wire, large_messages_are_compressed_transparently)
{
    br_buf bodies;
    struct br_wire_msg *m = big_reply(500, &bodies);
    br_buf plain, z;
    br_buf_init(&plain, 0);
    cr_assert_eq(br_wire_encode_plain(m, &plain, NULL), BR_OK);
    z = enc(m);
    cr_assert(is_envelope(&z));
    cr_assert_lt(z.len * 2, plain.len, "z %zu plain %zu", z.len, plain.len);
    struct br_wire_msg *d = roundtrip(m);
    cr_assert_eq(d->type, BR_WIRE_GET_REVS_REPLY, "the envelope is opened");
    cr_assert_eq(d->rid, 77);
    cr_assert_eq(d->u.get_revs_reply.n, 500);
    cr_assert_str_eq(d->u.get_revs_reply.docs[499].id, "doc-00000499");
    br_wire_msg_free(d);
    /* the plain encoding decodes too; a small message stays plain */
    d = dec_ok(&plain);
    cr_assert_eq(d->u.get_revs_reply.n, 500);
    br_wire_msg_free(d);
    struct br_wire_msg p = {.type = BR_WIRE_PING, .rid = 1};
    br_buf s = enc(&p);
    cr_assert_not(is_envelope(&s));
    br_buf_fini(&s);
    /* nobody encodes an envelope directly */
    p.type = BR_WIRE_Z;
    cr_assert_eq(br_wire_encode(&p, &s, NULL), BR_EINVAL);
    cr_assert_str_eq(br_wire_type_name(BR_WIRE_Z), "z");
    br_buf_fini(&plain);
    br_buf_fini(&z);
    big_reply_free(m, &bodies);
}

/* ---- hand-made zstd frames (RFC 8878), so hostile frames need no compressor ---- */

struct zf {
    br_buf b;
};

/* Frame header: single segment, 8-byte content size (or no size with a window descriptor). */
static void zf_begin(struct zf *f, bool has_size, uint64_t size, bool dict)
{
    static const uint8_t magic[] = {0x28, 0xb5, 0x2f, 0xfd};
    br_buf_init(&f->b, 0);
    cr_assert_eq(br_buf_append(&f->b, magic, 4), BR_OK);
    uint8_t fhd = has_size ? (uint8_t)(0xc0 | 0x20) : 0x00; /* FCS 8 bytes + single segment */
    if (dict)
        fhd |= 0x01;
    cr_assert_eq(br_buf_append_byte(&f->b, fhd), BR_OK);
    if (!has_size)
        cr_assert_eq(br_buf_append_byte(&f->b, 0x58), BR_OK); /* window 2^21 */
    if (dict)
        cr_assert_eq(br_buf_append_byte(&f->b, 0x07), BR_OK);
    for (int i = 0; has_size && i < 8; i++)
        cr_assert_eq(br_buf_append_byte(&f->b, (uint8_t)(size >> (8 * i))), BR_OK);
}

/* A block: type 0 raw (p[0..n)), 1 RLE (p[0] n times). */
static void zf_block(struct zf *f, int type, const uint8_t *p, size_t n, bool last)
{
    uint32_t h = (uint32_t)(last ? 1 : 0) | (uint32_t)type << 1 | (uint32_t)n << 3;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(br_buf_append_byte(&f->b, (uint8_t)(h >> (8 * i))), BR_OK);
    cr_assert_eq(br_buf_append(&f->b, p, type == 1 ? 1 : n), BR_OK);
}

/* {type: z, rid, z: frame} */
static void w_envelope(struct w *w, uint64_t rid, const br_buf *frame)
{
    w_init(w);
    w_map(w, 3);
    w_s(w, "type");
    w_s(w, "z");
    w_s(w, "rid");
    w_u(w, rid);
    w_s(w, "z");
    cr_assert_eq(br_cbor_put_bytes(&w->b, frame->data, frame->len), BR_OK);
}

/* The plain bytes of a ping with this rid. */
static br_buf ping_bytes(uint64_t rid)
{
    struct br_wire_msg p = {.type = BR_WIRE_PING, .rid = rid};
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert_eq(br_wire_encode_plain(&p, &b, NULL), BR_OK);
    return b;
}

Test(wire, a_hand_made_envelope_opens)
{
    br_buf in = ping_bytes(5);
    struct zf f;
    zf_begin(&f, true, in.len, false);
    zf_block(&f, 0, in.data, in.len, true);
    struct w w;
    w_envelope(&w, 5, &f.b);
    struct br_wire_msg *m = dec_ok(&w.b);
    cr_assert_eq(m->type, BR_WIRE_PING);
    cr_assert_eq(m->rid, 5);
    br_wire_msg_free(m);
    br_buf_fini(&w.b);
    br_buf_fini(&f.b);
    br_buf_fini(&in);
}

Test(wire, decode_rejects_bad_envelopes_and_bombs)
{
    br_buf in = ping_bytes(5);
    struct zf f;
    struct w w;
    uint8_t zero = 0;
    /* not a zstd frame */
    br_buf junk;
    br_buf_init(&junk, 0);
    cr_assert_eq(br_buf_append(&junk, "not zstd at all", 15), BR_OK);
    w_envelope(&w, 5, &junk);
    w_bad(&w, "not a zstd frame");
    br_buf_fini(&junk);
    /* z of the wrong type, missing z, unknown key */
    w_init(&w);
    w_head(&w, 3, "z");
    w_s(&w, "z");
    w_u(&w, 1);
    w_bad(&w, "z must be a byte string");
    w_init(&w);
    w_head(&w, 2, "z");
    w_bad(&w, "missing key z");
    w_init(&w);
    w_head(&w, 3, "z");
    w_s(&w, "data");
    w_u(&w, 1);
    w_bad(&w, "unknown key");
    /* a frame that does not declare its size */
    zf_begin(&f, false, 0, false);
    zf_block(&f, 0, in.data, in.len, true);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "does not declare");
    br_buf_fini(&f.b);
    /* a bomb: 1 GiB declared, RLE blocks */
    zf_begin(&f, true, 1ull << 30, false);
    zf_block(&f, 1, &zero, 1u << 17, true);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "past the");
    br_buf_fini(&f.b);
    /* a bomb that lies: 64 bytes declared, 2 MiB of RLE blocks behind */
    zf_begin(&f, true, 64, false);
    for (int i = 0; i < 16; i++)
        zf_block(&f, 1, &zero, 1u << 17, i == 15);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "zstd frame");
    br_buf_fini(&f.b);
    /* declared larger than the content */
    zf_begin(&f, true, in.len + 10, false);
    zf_block(&f, 0, in.data, in.len, true);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "zstd frame");
    br_buf_fini(&f.b);
    /* truncated frame, trailing bytes after it, a dictionary, an empty frame */
    zf_begin(&f, true, in.len, false);
    zf_block(&f, 0, in.data, in.len, true);
    f.b.len -= 2;
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "zstd frame");
    f.b.len += 2;
    cr_assert_eq(br_buf_append(&f.b, "xx", 2), BR_OK);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "after the zstd frame");
    br_buf_fini(&f.b);
    zf_begin(&f, true, in.len, true);
    zf_block(&f, 0, in.data, in.len, true);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "dictionary");
    br_buf_fini(&f.b);
    zf_begin(&f, true, 0, false);
    zf_block(&f, 0, in.data, 0, true);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "empty");
    br_buf_fini(&f.b);
    /* an envelope whose rid differs from its content's */
    zf_begin(&f, true, in.len, false);
    zf_block(&f, 0, in.data, in.len, true);
    w_envelope(&w, 6, &f.b);
    w_bad(&w, "differs");
    /* an envelope inside an envelope */
    struct w inner;
    w_envelope(&inner, 5, &f.b);
    br_buf_fini(&f.b);
    zf_begin(&f, true, inner.b.len, false);
    zf_block(&f, 0, inner.b.data, inner.b.len, true);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "inside a z envelope");
    br_buf_fini(&inner.b);
    br_buf_fini(&f.b);
    /* content that is not a message */
    zf_begin(&f, true, 3, false);
    zf_block(&f, 0, (const uint8_t *)"\x81\x01\x02", 3, true);
    w_envelope(&w, 5, &f.b);
    w_bad(&w, "must be a map");
    br_buf_fini(&f.b);
    br_buf_fini(&in);
}

Test(wire, decode_of_an_envelope_survives_every_failed_allocation)
{
    br_buf bodies;
    struct br_wire_msg *m = big_reply(50, &bodies);
    br_buf b = enc(m);
    cr_assert(is_envelope(&b));
    for (long n = 0;; n++) {
        struct br_wire_msg *d = NULL;
        struct br_errbuf eb;
        br_alloc_fail_after(n);
        br_err e = br_wire_decode(b.data, b.len, &d, NULL, &eb);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(n > 0);
            br_wire_msg_free(d);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM, "n=%ld: %s", n, eb.msg);
    }
    br_buf_fini(&b);
    big_reply_free(m, &bodies);
}

/* The decoder reads type and rid at once when they come first (as the encoder writes them) and
 * scans for them otherwise: every key order decodes to the same message, and what follows the
 * quick header is still checked (duplicates, trailing bytes, also after an envelope). */
Test(wire, type_and_rid_decode_in_any_key_order)
{
    static const char *const orders[][3] = {
        {"type", "rid", "hlc"}, {"rid", "type", "hlc"}, {"hlc", "rid", "type"},
        {"type", "hlc", "rid"}, {"hlc", "type", "rid"}, {"rid", "hlc", "type"},
    };
    for (size_t o = 0; o < sizeof orders / sizeof orders[0]; o++) {
        struct w w;
        w_init(&w);
        w_map(&w, 3);
        for (int k = 0; k < 3; k++) {
            w_s(&w, orders[o][k]);
            if (strcmp(orders[o][k], "type") == 0)
                w_s(&w, "pong");
            else if (strcmp(orders[o][k], "rid") == 0)
                w_u(&w, 42);
            else
                w_hlc(&w);
        }
        struct br_wire_msg *m = NULL;
        uint64_t rid = 0;
        struct br_errbuf eb = {{0}};
        cr_assert_eq(br_wire_decode(w.b.data, w.b.len, &m, &rid, &eb), BR_OK, "order %zu: %s", o,
                     eb.msg);
        cr_assert_eq(m->type, BR_WIRE_PONG, "order %zu", o);
        cr_assert_eq(m->rid, 42, "order %zu", o);
        cr_assert_eq(rid, 42, "order %zu", o);
        br_wire_msg_free(m);
        br_buf_fini(&w.b);
    }
    /* quick header, then a body that repeats them or runs past the map */
    struct w w;
    w_init(&w);
    w_head(&w, 3, "pong");
    w_s(&w, "rid");
    w_u(&w, 7);
    w_bad(&w, "duplicate key rid");
    w_init(&w);
    w_head(&w, 2, "pong");
    w_bad(&w, "missing key hlc");
    /* a request id the quick header read is reported with a bad body */
    w_init(&w);
    w_head(&w, 3, "changes");
    w_s(&w, "db");
    w_u(&w, 3);
    struct br_wire_msg *m = NULL;
    uint64_t rid = 0;
    cr_assert_eq(br_wire_decode(w.b.data, w.b.len, &m, &rid, NULL), BR_EPROTO);
    cr_assert_eq(rid, 1);
    br_buf_fini(&w.b);
    /* an envelope with bytes after its map */
    br_buf in = ping_bytes(5);
    struct zf f;
    zf_begin(&f, true, in.len, false);
    zf_block(&f, 0, in.data, in.len, true);
    w_envelope(&w, 5, &f.b);
    w_u(&w, 0);
    w_bad(&w, "trailing");
    /* an envelope whose content has its rid first and its type last */
    br_buf_fini(&f.b);
    struct w inner;
    w_init(&inner);
    w_map(&inner, 3);
    w_s(&inner, "rid");
    w_u(&inner, 5);
    w_s(&inner, "hlc");
    w_hlc(&inner);
    w_s(&inner, "type");
    w_s(&inner, "ping");
    zf_begin(&f, true, inner.b.len, false);
    zf_block(&f, 0, inner.b.data, inner.b.len, true);
    w_envelope(&w, 5, &f.b);
    m = dec_ok(&w.b);
    cr_assert_eq(m->type, BR_WIRE_PING);
    cr_assert_eq(m->rid, 5);
    br_wire_msg_free(m);
    br_buf_fini(&w.b);
    br_buf_fini(&inner.b);
    br_buf_fini(&f.b);
    br_buf_fini(&in);
}
