/* rpc_test.c — the replication RPC (rpc.h) through an in-process loopback transport: every
 * request is encoded and decoded (br_wire_encode, br_wire_decode) as a link would carry it,
 * served by br_rpc_serve against another store, and its reply encoded and decoded back. One-shot
 * replications pull and push through it (documents, conflicts, deletions, attachments,
 * checkpoints); transports that misbehave (a reply of the wrong type, a get_revs reply of the
 * wrong length) give BR_EPROTO without leaking; the server refuses what is not a request and
 * reports a missing database. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/att.h"
#include "barrel/buf.h"
#include "barrel/endpoint.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/replicator.h"
#include "barrel/rpc.h"
#include "barrel/store.h"
#include "barrel/wire.h"

#include "testutil.h"

#define N_NODES 2
#include "stores_util.h"

static const char *NODE[N_NODES] = {"nodeA", "nodeB"};
enum { A = 0, B = 1 };

static const struct br_write_opts REPLICATED = {BR_SYNC_NONE, false};

TestSuite(rpc, .init = stores_setup, .fini = stores_teardown, .timeout = 120);

/* ---- documents ---- */

static struct br_doc *get_doc(int node, const char *id)
{
    struct br_doc *d = NULL;
    struct br_get_opts go = {.include_deleted = true, .conflicts = true};
    cr_assert_eq(br_db_get(db[node], id, strlen(id), &go, &d, NULL), BR_OK, "%s on %d", id, node);
    return d;
}

static void same_digest(int x, int y)
{
    struct br_db_digest a, b;
    cr_assert_eq(br_db_digest(db[x], &a), BR_OK);
    cr_assert_eq(br_db_digest(db[y], &b), BR_OK);
    cr_assert(memcmp(a.set_hash, b.set_hash, 16) == 0, "set hashes of %d and %d differ", x, y);
    cr_assert_eq(a.doc_count, b.doc_count);
}

/* ---- the loopback transport ---- */

enum lb_mode {
    LB_OK,
    LB_WRONG_TYPE,     /* every reply is a probe_reply */
    LB_SHORT_GET_REVS, /* get_revs replies lose their last entry */
};

struct lb {
    br_store *s; /* the store served (the "peer") */
    const char *node;
    enum lb_mode mode;
    uint64_t next_rid;
    size_t calls;
    int *freed; /* incremented by lb_free */
};

/* Encode m as a link would send it and decode it as the other side would receive it. */
static br_err wire_trip(const struct br_wire_msg *m, struct br_wire_msg **out, struct br_errbuf *eb)
{
    br_buf b;
    br_buf_init(&b, BR_WIRE_MAX_MSG);
    br_err e = br_wire_encode(m, &b, eb);
    if (!e)
        e = br_wire_decode(b.data, b.len, out, NULL, eb);
    br_buf_fini(&b);
    return e;
}

static br_err lb_call(void *ctx, struct br_wire_msg *req, struct br_wire_msg **reply,
                      struct br_errbuf *eb)
{
    struct lb *t = ctx;
    t->calls++;
    req->rid = ++t->next_rid;
    struct br_wire_msg *in = NULL;
    br_err e = wire_trip(req, &in, eb);
    if (e)
        return e;
    cr_assert_eq(in->rid, req->rid);
    br_wire_arena a = {0};
    struct br_wire_msg r;
    struct br_errbuf seb = {{0}};
    if (in->type == BR_WIRE_PING) { /* the carrier's job, as p2p's dispatch does it */
        br_err me = br_hlc_update(br_store_clock(t->s), in->u.ping.hlc, NULL);
        (void)me; /* one too far ahead is not adopted; the pong says so by its clock */
        r = (struct br_wire_msg){.type = BR_WIRE_PONG, .rid = in->rid};
        r.u.ping.hlc = br_hlc_peek(br_store_clock(t->s));
    } else {
        e = br_rpc_serve(t->s, t->node, in, &a, &r, &seb);
        if (e)
            br_rpc_error_reply(in, e, seb.msg, &r); /* sent as is: the endpoint turns it */
    }
    if (t->mode == LB_WRONG_TYPE) {
        r = (struct br_wire_msg){.type = BR_WIRE_PROBE_REPLY, .rid = in->rid};
        r.u.probe_reply.alive = true;
    }
    struct br_wire_msg *out = NULL;
    e = wire_trip(&r, &out, eb); /* r may point into in and a: encode first */
    br_wire_arena_fini(&a);
    br_wire_msg_free(in);
    if (e)
        return e;
    cr_assert_eq(out->rid, req->rid);
    if (t->mode == LB_SHORT_GET_REVS && out->type == BR_WIRE_GET_REVS_REPLY &&
        out->u.get_revs_reply.n > 0)
        out->u.get_revs_reply.n--;
    *reply = out;
    return BR_OK;
}

static struct br_hlc lb_remote_last(void *ctx, const char *name)
{
    struct lb *t = ctx;
    br_db *d = NULL;
    struct br_db_digest dg = {.last = BR_HLC_MIN};
    if (br_store_db_open(t->s, name, &d) == BR_OK) {
        if (br_db_digest(d, &dg) != BR_OK)
            dg.last = BR_HLC_MIN;
        br_db_close(d);
    }
    return dg.last;
}

static void lb_free(void *ctx)
{
    struct lb *t = ctx;
    if (t->freed)
        (*t->freed)++;
    free(t);
}

/* An endpoint for database dbname of store `node` through the loopback (one-shot: no wait). */
static struct br_endpoint *rpc_ep_mode(int node, const char *dbname, enum lb_mode mode, int *freed)
{
    struct lb *t = calloc(1, sizeof *t);
    cr_assert(t);
    t->s = st[node];
    t->node = NODE[node];
    t->mode = mode;
    t->freed = freed;
    struct br_rpc_transport tr = {
        .ctx = t, .call = lb_call, .remote_last = lb_remote_last, .free = lb_free};
    char name[BR_ENDPOINT_NAME_MAX];
    snprintf(name, sizeof name, "%s/%s", NODE[node], dbname);
    struct br_endpoint *ep = NULL;
    cr_assert_eq(br_endpoint_rpc_new(&tr, dbname, name, &ep), BR_OK);
    cr_assert_str_eq(ep->name, name);
    return ep;
}

static struct br_endpoint *rpc_ep(int node)
{
    return rpc_ep_mode(node, "db", LB_OK, NULL);
}

static struct br_endpoint *local_ep(int node)
{
    struct br_endpoint *e = NULL;
    struct br_endpoint_local_opts o = {.node = NODE[node], .sync = BR_SYNC_NONE};
    cr_assert_eq(br_endpoint_local_new(st[node], "db", &o, &e, NULL), BR_OK);
    return e;
}

static int count_cb(void *arg, const struct br_wire_change *c)
{
    (void)c;
    (*(size_t *)arg)++;
    return 0;
}

struct run {
    br_err err;
    struct br_rep_stats stats;
    char reason[BR_ERRBUF_SIZE];
};

/* Replicate once from s to t, then free both. */
static struct run run_once(struct br_endpoint *s, struct br_endpoint *t)
{
    struct run out = {0};
    br_rep *r = NULL;
    struct br_errbuf eb = {{0}};
    struct br_rep_opts o = {.batch_size = 3}; /* several batches, several checkpoints */
    cr_assert_eq(br_rep_new(s, t, &o, &r, &eb), BR_OK, "%s", eb.msg);
    out.err = br_rep_run(r, &eb);
    br_rep_get_stats(r, &out.stats);
    memcpy(out.reason, eb.msg, sizeof out.reason);
    br_rep_free(r);
    br_endpoint_free(s);
    br_endpoint_free(t);
    return out;
}

static struct run pull(void) /* A -> B, A through the rpc */
{
    struct run r = run_once(rpc_ep(A), local_ep(B));
    cr_assert_eq(r.err, BR_OK, "pull: %s %s", br_strerror(r.err), r.reason);
    return r;
}

#define REV_A "1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define REV_B "1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* ---- replication through the rpc ---- */

Test(rpc, one_shot_pull_replicates_docs_conflicts_and_deletions_then_resumes)
{
    char id[16], js[64];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "d%d", i);
        snprintf(js, sizeof js, "{\"n\":%d}", i);
        put_json(A, id, js);
    }
    /* two branches of "c" written as a replicator would: a conflict */
    put_json_opts(A, "c", "{\"_rev\":\"" REV_A "\",\"v\":\"a\"}", &REPLICATED);
    put_json_opts(A, "c", "{\"_rev\":\"" REV_B "\",\"v\":\"b\"}", &REPLICATED);
    put_json(A, "gone", "{\"v\":1}");
    struct br_rev tomb = delete_doc(A, "gone");

    struct run r1 = pull();
    cr_assert_eq(r1.stats.changes_read, 7);
    cr_assert_eq(r1.stats.doc_write_failures, 0);
    cr_assert_geq(r1.stats.batches, 3);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "d%d", i);
        cr_assert(visible(B, id), "%s", id);
    }
    struct br_doc *ca = get_doc(A, "c"), *cb = get_doc(B, "c");
    cr_assert(br_rev_eq(&ca->rev, &cb->rev));
    cr_assert_eq(cb->n_conflicts, 1, "the conflict travels");
    cr_assert(br_rev_eq(&ca->conflicts[0], &cb->conflicts[0]));
    br_doc_free(ca);
    br_doc_free(cb);
    cr_assert_not(visible(B, "gone"));
    struct br_doc *g = get_doc(B, "gone");
    cr_assert(g->deleted);
    cr_assert(br_rev_eq(&g->rev, &tomb));
    br_doc_free(g);
    same_digest(A, B);

    /* the next run starts from the checkpoint (read through local_get on the rpc side) */
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "e%d", i);
        put_json(A, id, "{\"x\":2}");
    }
    struct run r2 = pull();
    cr_assert(br_hlc_cmp(r2.stats.start_seq, r1.stats.last_seq) == 0);
    cr_assert_eq(r2.stats.changes_read, 3, "read %llu", (unsigned long long)r2.stats.changes_read);
    cr_assert_eq(r2.stats.docs_written, 3);
    same_digest(A, B);
    struct run r3 = pull();
    cr_assert_eq(r3.stats.changes_read, 0);
    cr_assert_eq(r3.stats.docs_read, 0);
}

Test(rpc, one_shot_push_writes_through_put_revs_with_attachments)
{
    put_json(A, "p1", "{\"v\":1}");
    put_json_opts(A, "c", "{\"_rev\":\"" REV_A "\",\"v\":\"a\"}", &REPLICATED);
    put_json_opts(A, "c", "{\"_rev\":\"" REV_B "\",\"v\":\"b\"}", &REPLICATED);
    static const char data[] = "attachment content";
    struct br_att_in att = {.name = "f.txt",
                            .content_type = "text/plain",
                            .data = (const uint8_t *)data,
                            .len = sizeof data - 1};
    static const uint8_t body[] = {0xa1, 0x61, 0x6e, 0x01}; /* {"n":1} */
    struct br_put p = {
        .id = "att", .id_len = 3, .body = body, .body_len = sizeof body, .atts = &att, .n_atts = 1};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db[A], &p, &NOSYNC, &res), BR_OK, "%s", res.reason);
    put_json(A, "gone", "{}");
    delete_doc(A, "gone");

    struct run r = run_once(local_ep(A), rpc_ep(B));
    cr_assert_eq(r.err, BR_OK, "push: %s %s", br_strerror(r.err), r.reason);
    cr_assert_eq(r.stats.doc_write_failures, 0);
    cr_assert_eq(r.stats.atts_sent, 1, "the rpc endpoint says every attachment is missing");
    same_digest(A, B);
    struct br_doc *cb = get_doc(B, "c");
    cr_assert_eq(cb->n_conflicts, 1);
    br_doc_free(cb);
    struct br_att_stub s;
    cr_assert_eq(br_db_att_info(db[B], "att", 3, NULL, "f.txt", &s), BR_OK);
    cr_assert_eq(s.length, sizeof data - 1);
    br_att_stub_fini(&s);
    cr_assert_not(visible(B, "gone"));

    /* resumes: the checkpoint was written on the rpc side with local_put */
    put_json(A, "p2", "{\"v\":2}");
    struct run r2 = run_once(local_ep(A), rpc_ep(B));
    cr_assert_eq(r2.err, BR_OK, "%s", r2.reason);
    cr_assert(br_hlc_cmp(r2.stats.start_seq, r.stats.last_seq) == 0);
    cr_assert_eq(r2.stats.changes_read, 1);
    same_digest(A, B);
}

Test(rpc, hlc_merge_pings_the_peer_and_digest_reads_what_it_announced)
{
    put_json(A, "x", "{}");
    struct br_endpoint *ep = rpc_ep(A);
    struct br_db_digest want, got;
    cr_assert_eq(br_db_digest(db[A], &want), BR_OK);
    cr_assert_eq(ep->ops->digest(ep->ctx, &got, NULL), BR_OK);
    cr_assert(br_hlc_cmp(got.last, want.last) == 0);
    /* a clock a little ahead of A's moves A's clock forward */
    struct br_hlc ahead = br_hlc_peek(br_store_clock(st[A]));
    ahead.wall += 1000; /* 1 s */
    cr_assert_eq(ep->ops->hlc_merge(ep->ctx, ahead), BR_OK);
    cr_assert_geq(br_hlc_cmp(br_hlc_peek(br_store_clock(st[A])), ahead), 0);
    /* no transport wait: a one-shot endpoint's wait times out at once */
    cr_assert_eq(ep->ops->wait(ep->ctx, want.last, 60000), BR_ETIMEDOUT);
    ep->ops->interrupt(ep->ctx); /* no transport interrupt: nothing to do */
    br_endpoint_free(ep);
}

/* ---- failures ---- */

Test(rpc, a_reply_of_the_wrong_type_is_eproto_and_leaks_nothing)
{
    put_json(A, "x", "{}");
    int freed = 0;
    struct br_endpoint *ep = rpc_ep_mode(A, "db", LB_WRONG_TYPE, &freed);
    struct br_errbuf eb = {{0}};
    struct br_hlc last;
    bool more;
    size_t seen = 0;
    br_err e = ep->ops->changes(ep->ctx, BR_HLC_MIN, 10, NULL, count_cb, &seen, &last, &more, &eb);
    cr_assert_eq(e, BR_EPROTO);
    cr_assert_eq(seen, 0);
    cr_assert(strstr(eb.msg, "expected changes_reply"), "%s", eb.msg);
    br_wire_arena a = {0};
    const uint8_t *body = NULL;
    size_t len = 0;
    struct br_rev rev;
    cr_assert_eq(ep->ops->local_get(ep->ctx, "ck", &a, &body, &len, &rev, &eb), BR_EPROTO);
    br_wire_arena_fini(&a);
    /* hlc_merge reports only a clock too far ahead */
    cr_assert_eq(ep->ops->hlc_merge(ep->ctx, BR_HLC_MIN), BR_OK);
    /* a whole run fails the same way */
    struct run r = run_once(ep, local_ep(B));
    cr_assert_eq(r.err, BR_EPROTO, "%s", r.reason);
    cr_assert_eq(freed, 1, "the transport is freed with its endpoint");
}

Test(rpc, a_get_revs_reply_with_the_wrong_count_is_eproto)
{
    struct br_rev rx = put_json(A, "x", "{\"v\":1}");
    struct br_rev ry = put_json(A, "y", "{\"v\":2}");
    struct br_wire_docrevs in[2] = {{.id = "x", .id_len = 1, .revs = &rx, .n_revs = 1},
                                    {.id = "y", .id_len = 1, .revs = &ry, .n_revs = 1}};
    /* first the same call through a transport that behaves */
    struct br_endpoint *ok = rpc_ep(A);
    br_wire_arena a = {0};
    struct br_wire_revdoc *out = NULL;
    size_t n_out = 0;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(ok->ops->get_revs(ok->ctx, in, 2, NULL, 0, true, &a, &out, &n_out, &eb), BR_OK,
                 "%s", eb.msg);
    cr_assert_eq(n_out, 2);
    cr_assert(br_rev_eq(&out[0].rev, &rx), "the known revision gets its hash back");
    cr_assert(br_rev_eq(&out[0].history[0], &rx));
    cr_assert(br_rev_eq(&out[1].rev, &ry));
    cr_assert_not(out[0].rev_known);
    br_wire_arena_fini(&a);
    br_endpoint_free(ok);

    struct br_endpoint *ep = rpc_ep_mode(A, "db", LB_SHORT_GET_REVS, NULL);
    out = NULL;
    n_out = 0;
    br_err e = ep->ops->get_revs(ep->ctx, in, 2, NULL, 0, true, &a, &out, &n_out, &eb);
    cr_assert_eq(e, BR_EPROTO);
    cr_assert(strstr(eb.msg, "get_revs"), "%s", eb.msg);
    cr_assert_null(out, "out-parameters are written only on success");
    cr_assert_eq(n_out, 0);
    br_wire_arena_fini(&a);
    br_endpoint_free(ep);
}

Test(rpc, serve_refuses_a_message_that_is_not_a_request)
{
    static const enum br_wire_type NOT_REQUESTS[] = {
        BR_WIRE_PING,           BR_WIRE_PONG,  BR_WIRE_HELLO,           BR_WIRE_DIGEST,
        BR_WIRE_CHANGES_REPLY,  BR_WIRE_ERROR, BR_WIRE_GET_REVS_REPLY,  BR_WIRE_PEERS,
        BR_WIRE_PUT_REVS_REPLY, BR_WIRE_PROBE, BR_WIRE_LOCAL_GET_REPLY,
    };
    for (size_t i = 0; i < sizeof NOT_REQUESTS / sizeof NOT_REQUESTS[0]; i++) {
        struct br_wire_msg req = {.type = NOT_REQUESTS[i], .rid = 7};
        struct br_wire_msg reply = {.type = BR_WIRE_HELLO, .rid = 99};
        br_wire_arena a = {0};
        struct br_errbuf eb = {{0}};
        cr_assert_eq(br_rpc_serve(st[A], NODE[A], &req, &a, &reply, &eb), BR_EPROTO, "%s",
                     br_wire_type_name(req.type));
        cr_assert(eb.msg[0]);
        cr_assert_eq(reply.type, BR_WIRE_HELLO, "*reply untouched on failure");
        cr_assert_eq(reply.rid, 99);
        br_wire_arena_fini(&a);
    }
}

Test(rpc, a_request_for_a_missing_database_is_an_error)
{
    /* the server side */
    struct br_wire_msg req = {.type = BR_WIRE_CHANGES, .rid = 42};
    req.u.changes.db = "nope";
    req.u.changes.limit = 10;
    struct br_wire_msg reply;
    br_wire_arena a = {0};
    struct br_errbuf eb = {{0}};
    br_err e = br_rpc_serve(st[A], NODE[A], &req, &a, &reply, &eb);
    cr_assert_eq(e, BR_ENOTFOUND, "%s", br_strerror(e));
    cr_assert(strstr(eb.msg, "nope"), "%s", eb.msg);
    br_rpc_error_reply(&req, e, eb.msg, &reply);
    cr_assert_eq(reply.type, BR_WIRE_ERROR);
    cr_assert_eq(reply.rid, 42);
    cr_assert_eq(reply.u.error.code, (uint64_t)BR_ENOTFOUND);
    cr_assert_eq(reply.u.error.reason, eb.msg, "reason is borrowed");
    br_wire_arena_fini(&a);

    /* the client side: the error reply becomes its error */
    struct br_endpoint *ep = rpc_ep_mode(A, "nope", LB_OK, NULL);
    struct br_hlc last;
    bool more;
    size_t seen = 0;
    memset(&eb, 0, sizeof eb);
    e = ep->ops->changes(ep->ctx, BR_HLC_MIN, 10, NULL, count_cb, &seen, &last, &more, &eb);
    cr_assert_eq(e, BR_ENOTFOUND, "%s", br_strerror(e));
    cr_assert(strstr(eb.msg, "nope"), "%s", eb.msg);
    struct run r = run_once(ep, local_ep(B));
    cr_assert_eq(r.err, BR_ENOTFOUND, "%s %s", br_strerror(r.err), r.reason);
}

Test(rpc, error_reply_without_a_reason_says_the_error)
{
    struct br_wire_msg req = {.type = BR_WIRE_LOCAL_GET, .rid = 5};
    struct br_wire_msg reply;
    br_rpc_error_reply(&req, BR_ENOMEM, NULL, &reply);
    cr_assert_eq(reply.type, BR_WIRE_ERROR);
    cr_assert_eq(reply.rid, 5);
    cr_assert_str_eq(reply.u.error.reason, br_strerror(BR_ENOMEM));
    br_rpc_error_reply(&req, BR_ESTORE, "", &reply);
    cr_assert_str_eq(reply.u.error.reason, br_strerror(BR_ESTORE));
}

Test(rpc, endpoint_new_frees_the_transport_when_it_fails)
{
    int freed = 0;
    struct lb *t = calloc(1, sizeof *t);
    cr_assert(t);
    t->freed = &freed;
    struct br_rpc_transport tr = {
        .ctx = t, .call = lb_call, .remote_last = lb_remote_last, .free = lb_free};
    char longname[BR_DB_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    struct br_endpoint *ep = NULL;
    cr_assert_eq(br_endpoint_rpc_new(&tr, longname, "x", &ep), BR_EBADNAME);
    cr_assert_null(ep);
    cr_assert_eq(freed, 1);
}
