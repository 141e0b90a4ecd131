/* rpc.c — the replication RPC (rpc.h): the endpoint over a transport, and the server that answers
 * its requests from a local database.
 *
 * Client: each endpoint call is one wire request and its reply (t->call), made on the
 * replication's thread while the transport moves the messages (p2p: the loop moves the frames).
 * Replies are decoded into their own arena, which is handed whole to the caller's arena
 * (br_wire_arena_move), so nothing is copied twice.
 *
 * Waiting (continuous pull) needs no polling: the peer sends a `digest` whenever the database
 * gets a change after we read its changes, and the transport's wait sleeps (p2p: on the link's
 * condition variable) until the announced head passes `since`. get_revs replies name each
 * revision asked for by position (wire.h `known`): the hash comes from the request, not the
 * wire. atts_missing answers "missing" for every attachment (allowed by endpoint.h: when it
 * cannot tell, it says missing), so pushes carry attachment data; hlc_merge sends a ping carrying
 * our clock, which the peer merges.
 *
 * Server: each request opens a local endpoint (ep_local) on its database, unsynced (the writes
 * keep their order), answers through it into the caller's arena and closes it; the reply's
 * contents live in that arena or in the request. */
#include "barrel/rpc.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/replicator.h"

/* ---- client: the endpoint over a transport ---- */

struct rpc {
    struct br_rpc_transport t;
    char db[BR_DB_NAME_MAX + 1];
};

static const char *tname(enum br_wire_type t)
{
    const char *s = br_wire_type_name(t);
    return s ? s : "?";
}

static br_err r_digest(void *ctx, struct br_db_digest *out, struct br_errbuf *eb)
{
    struct rpc *q = ctx;
    (void)eb;
    memset(out, 0, sizeof *out);
    out->last = q->t.remote_last(q->t.ctx, q->db);
    return BR_OK;
}

/* Send m through the transport and wait for its reply, which must be of type want (else
 * BR_EPROTO, the reply freed). An `error` reply becomes its code, the reason in eb. On success
 * *r is the reply (caller frees). */
static br_err call(struct rpc *q, struct br_wire_msg *m, enum br_wire_type want,
                   struct br_wire_msg **r, struct br_errbuf *eb)
{
    struct br_wire_msg *rep = NULL;
    br_err e = q->t.call(q->t.ctx, m, &rep, eb);
    if (e)
        return e;
    if (!rep)
        return br_fail(eb, BR_EPROTO, "%s: no reply", tname(m->type));
    if (rep->type == want) {
        *r = rep;
        return BR_OK;
    }
    if (rep->type == BR_WIRE_ERROR) {
        uint64_t c = rep->u.error.code;
        e = c && c < BR_ERR_COUNT ? (br_err)c : BR_EPROTO;
        br_errbuf_set(eb, "%s: %s", tname(m->type),
                      rep->u.error.reason ? rep->u.error.reason : br_strerror(e));
    } else {
        e = br_fail(eb, BR_EPROTO, "%s: expected %s, got %s", tname(m->type), tname(want),
                    tname(rep->type));
    }
    br_wire_msg_free(rep);
    return e;
}

static br_err r_changes(void *ctx, struct br_hlc since, size_t limit,
                        const struct br_wire_filter *f, br_endpoint_change_cb cb, void *arg,
                        struct br_hlc *last, bool *more, struct br_errbuf *eb)
{
    struct rpc *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_CHANGES};
    m.u.changes.db = q->db;
    m.u.changes.since = since;
    m.u.changes.limit = limit > BR_WIRE_MAX_ITEMS ? BR_WIRE_MAX_ITEMS : limit;
    if (f && (f->n_paths || f->query)) {
        m.u.changes.has_filter = true;
        m.u.changes.filter = *f;
    }
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_CHANGES_REPLY, &r, eb);
    if (e)
        return e;
    for (size_t i = 0; i < r->u.changes_reply.n; i++)
        if (cb(arg, &r->u.changes_reply.changes[i]))
            break;
    *last = r->u.changes_reply.last;
    *more = r->u.changes_reply.pending != 0;
    br_wire_msg_free(r);
    return BR_OK;
}

static br_err r_revsdiff(void *ctx, const struct br_wire_docrevs *in, size_t n, br_wire_arena *a,
                         struct br_wire_diff **out, size_t *n_out, struct br_errbuf *eb)
{
    struct rpc *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_REVSDIFF};
    m.u.revsdiff.db = q->db;
    m.u.revsdiff.docs = (struct br_wire_docrevs *)in;
    m.u.revsdiff.n = n;
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_REVSDIFF_REPLY, &r, eb);
    if (e)
        return e;
    *out = r->u.revsdiff_reply.docs;
    *n_out = r->u.revsdiff_reply.n;
    br_wire_arena_move(a, &r->arena);
    br_wire_msg_free(r);
    return BR_OK;
}

/* The reply has one entry per revision asked for, in order (wire.h): check that, and give
 * each `known` revision (sent without its hash) its hash and history head from the request. */
static br_err complete_known(const struct br_wire_docrevs *in, size_t n,
                             struct br_wire_revdoc *docs, size_t n_docs, br_wire_arena *a,
                             struct br_errbuf *eb)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < in[i].n_revs; j++, k++) {
            struct br_wire_revdoc *d = &docs[k];
            const struct br_rev *want = &in[i].revs[j];
            if (k >= n_docs)
                return br_fail(eb, BR_EPROTO, "get_revs: %zu revisions in the reply", n_docs);
            if (d->id_len != in[i].id_len || memcmp(d->id, in[i].id, d->id_len) != 0)
                return br_fail(eb, BR_EPROTO, "get_revs: reply entry %zu is another document", k);
            if (!d->rev_known)
                continue;
            if (d->rev.gen != want->gen)
                return br_fail(eb, BR_EPROTO, "get_revs: reply entry %zu has another generation",
                               k);
            struct br_rev *h = br_wire_alloc(a, (d->n_history + 1) * sizeof *h);
            if (!h)
                return BR_ENOMEM;
            h[0] = *want;
            if (d->n_history)
                memcpy(h + 1, d->history, d->n_history * sizeof *h);
            d->rev = *want;
            d->history = h;
            d->n_history++;
            d->rev_known = false;
        }
    }
    if (k != n_docs)
        return br_fail(eb, BR_EPROTO, "get_revs: %zu revisions in the reply for %zu asked", n_docs,
                       k);
    return BR_OK;
}

static br_err r_get_revs(void *ctx, const struct br_wire_docrevs *in, size_t n,
                         const char *const *have, size_t n_have, bool data, br_wire_arena *a,
                         struct br_wire_revdoc **out, size_t *n_out, struct br_errbuf *eb)
{
    struct rpc *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_GET_REVS};
    m.u.get_revs.db = q->db;
    m.u.get_revs.docs = (struct br_wire_docrevs *)in;
    m.u.get_revs.n = n;
    m.u.get_revs.have = have;
    m.u.get_revs.n_have = n_have;
    m.u.get_revs.data = data;
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_GET_REVS_REPLY, &r, eb);
    if (e)
        return e;
    struct br_wire_revdoc *docs = r->u.get_revs_reply.docs;
    size_t n_docs = r->u.get_revs_reply.n;
    br_wire_arena_move(a, &r->arena);
    br_wire_msg_free(r);
    e = complete_known(in, n, docs, n_docs, a, eb);
    if (e)
        return e;
    *out = docs;
    *n_out = n_docs;
    return BR_OK;
}

static br_err r_atts_missing(void *ctx, const struct br_wire_att *atts, size_t n, bool *missing,
                             struct br_errbuf *eb)
{
    (void)ctx;
    (void)atts;
    (void)eb;
    for (size_t i = 0; i < n; i++)
        missing[i] = true;
    return BR_OK;
}

static br_err r_put_revs(void *ctx, const struct br_wire_revdoc *docs, size_t n, br_err *results,
                         struct br_errbuf *eb)
{
    struct rpc *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_PUT_REVS};
    m.u.put_revs.db = q->db;
    m.u.put_revs.docs = (struct br_wire_revdoc *)docs;
    m.u.put_revs.n = n;
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_PUT_REVS_REPLY, &r, eb);
    if (e)
        return e;
    if (r->u.put_revs_reply.n != n) {
        size_t got = r->u.put_revs_reply.n;
        br_wire_msg_free(r);
        return br_fail(eb, BR_EPROTO, "put_revs: %zu results for %zu docs", got, n);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t c = r->u.put_revs_reply.results[i];
        results[i] = c < BR_ERR_COUNT ? (br_err)c : BR_EPROTO;
    }
    br_wire_msg_free(r);
    return BR_OK;
}

static br_err r_local_get(void *ctx, const char *id, br_wire_arena *a, const uint8_t **body,
                          size_t *len, struct br_rev *rev, struct br_errbuf *eb)
{
    struct rpc *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_LOCAL_GET};
    m.u.local.db = q->db;
    m.u.local.id = id;
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_LOCAL_GET_REPLY, &r, eb);
    if (e)
        return e;
    *body = r->u.local_reply.body;
    *len = r->u.local_reply.body_len;
    *rev = r->u.local_reply.rev;
    br_wire_arena_move(a, &r->arena);
    br_wire_msg_free(r);
    return BR_OK;
}

static br_err r_local_put(void *ctx, const char *id, const struct br_rev *rev, const uint8_t *body,
                          size_t len, struct br_rev *new_rev, struct br_errbuf *eb)
{
    struct rpc *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_LOCAL_PUT};
    m.u.local.db = q->db;
    m.u.local.id = id;
    m.u.local.has_rev = rev != NULL;
    if (rev)
        m.u.local.rev = *rev;
    m.u.local.body = body;
    m.u.local.body_len = len;
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_LOCAL_PUT_REPLY, &r, eb);
    if (e)
        return e;
    *new_rev = r->u.local_reply.rev;
    br_wire_msg_free(r);
    return BR_OK;
}

/* Only a clock too far ahead matters to the replicator: any other failure (link gone, a reply
 * of another type) leaves the clocks as they are and is not the merge's to report. */
static br_err r_hlc_merge(void *ctx, struct br_hlc remote)
{
    struct rpc *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_PING};
    m.u.ping.hlc = remote;
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_PONG, &r, NULL);
    br_wire_msg_free(r);
    return e == BR_ECLOCK ? BR_ECLOCK : BR_OK;
}

static br_err r_wait(void *ctx, struct br_hlc since, uint64_t timeout_ms)
{
    struct rpc *q = ctx;
    if (!q->t.wait)
        return BR_ETIMEDOUT;
    return q->t.wait(q->t.ctx, q->db, since, timeout_ms);
}

static void r_interrupt(void *ctx)
{
    struct rpc *q = ctx;
    if (q->t.interrupt)
        q->t.interrupt(q->t.ctx);
}

static void r_free(void *ctx)
{
    struct rpc *q = ctx;
    if (q->t.free)
        q->t.free(q->t.ctx);
    br_free(q);
}

static const struct br_endpoint_ops RPC_OPS = {
    .digest = r_digest,
    .changes = r_changes,
    .revsdiff = r_revsdiff,
    .get_revs = r_get_revs,
    .atts_missing = r_atts_missing,
    .put_revs = r_put_revs,
    .local_get = r_local_get,
    .local_put = r_local_put,
    .hlc_merge = r_hlc_merge,
    .wait = r_wait,
    .interrupt = r_interrupt,
    .free = r_free,
};

br_err br_endpoint_rpc_new(const struct br_rpc_transport *t, const char *db, const char *name,
                           struct br_endpoint **out)
{
    assert(t && t->call && t->remote_last && db && name);
    struct br_endpoint *ep = NULL;
    struct rpc *q = NULL;
    br_err e = BR_EBADNAME;
    if (strlen(db) > BR_DB_NAME_MAX)
        goto fail;
    e = BR_ENOMEM;
    ep = br_calloc(1, sizeof *ep);
    q = br_calloc(1, sizeof *q);
    if (!ep || !q)
        goto fail;
    q->t = *t;
    snprintf(q->db, sizeof q->db, "%s", db);
    ep->ops = &RPC_OPS;
    ep->ctx = q;
    snprintf(ep->name, sizeof ep->name, "%s", name);
    *out = ep;
    return BR_OK;
fail:
    br_free(q);
    br_free(ep);
    if (t->free)
        t->free(t->ctx);
    return e;
}

/* ---- server: answering requests from a local database ---- */

struct collect {
    br_wire_arena *a;
    struct br_wire_change *v;
    size_t n, cap;
    br_err e;
};

static int collect_change(void *arg, const struct br_wire_change *c)
{
    struct collect *k = arg;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        struct br_wire_change *v = br_wire_alloc(k->a, cap * sizeof *v);
        if (!v) {
            k->e = BR_ENOMEM;
            return 1;
        }
        if (k->n)
            memcpy(v, k->v, k->n * sizeof *v);
        k->v = v;
        k->cap = cap;
    }
    struct br_wire_change *d = &k->v[k->n];
    *d = *c;
    d->id = br_wire_strndup(k->a, c->id, c->id_len);
    d->revs = br_wire_memdup(k->a, c->revs, c->n_revs * sizeof *c->revs);
    if (!d->id || !d->revs) {
        k->e = BR_ENOMEM;
        return 1;
    }
    k->n++;
    return 0;
}

/* The database a request names; NULL for a message that is not a request. */
static const char *req_db(const struct br_wire_msg *m)
{
    switch (m->type) {
    case BR_WIRE_CHANGES:
        return m->u.changes.db;
    case BR_WIRE_REVSDIFF:
        return m->u.revsdiff.db;
    case BR_WIRE_GET_REVS:
        return m->u.get_revs.db;
    case BR_WIRE_PUT_REVS:
        return m->u.put_revs.db;
    case BR_WIRE_LOCAL_GET:
    case BR_WIRE_LOCAL_PUT:
        return m->u.local.db;
    default:
        return NULL;
    }
}

static br_err serve_one(struct br_endpoint *ep, const struct br_wire_msg *q, br_wire_arena *a,
                        struct br_wire_msg *r, struct br_errbuf *eb)
{
    const struct br_endpoint_ops *ops = ep->ops;
    br_err e;
    switch (q->type) {
    case BR_WIRE_CHANGES: {
        struct collect k = {.a = a};
        bool more = false;
        size_t limit = q->u.changes.limit ? (size_t)q->u.changes.limit : BR_REP_DEFAULT_BATCH;
        if (limit > BR_WIRE_MAX_ITEMS)
            limit = BR_WIRE_MAX_ITEMS; /* what a reply can carry (the decoder refuses more) */
        r->type = BR_WIRE_CHANGES_REPLY;
        e = ops->changes(ep->ctx, q->u.changes.since, limit,
                         q->u.changes.has_filter ? &q->u.changes.filter : NULL, collect_change, &k,
                         &r->u.changes_reply.last, &more, eb);
        if (!e)
            e = k.e;
        r->u.changes_reply.changes = k.v;
        r->u.changes_reply.n = k.n;
        r->u.changes_reply.pending = more ? 1 : 0;
        return e;
    }
    case BR_WIRE_REVSDIFF:
        r->type = BR_WIRE_REVSDIFF_REPLY;
        return ops->revsdiff(ep->ctx, q->u.revsdiff.docs, q->u.revsdiff.n, a,
                             &r->u.revsdiff_reply.docs, &r->u.revsdiff_reply.n, eb);
    case BR_WIRE_GET_REVS:
        r->type = BR_WIRE_GET_REVS_REPLY;
        return ops->get_revs(ep->ctx, q->u.get_revs.docs, q->u.get_revs.n, q->u.get_revs.have,
                             q->u.get_revs.n_have, q->u.get_revs.data, a, &r->u.get_revs_reply.docs,
                             &r->u.get_revs_reply.n, eb);
    case BR_WIRE_PUT_REVS: {
        size_t n = q->u.put_revs.n;
        br_err *res = br_wire_alloc(a, (n ? n : 1) * sizeof *res);
        uint64_t *out = br_wire_alloc(a, (n ? n : 1) * sizeof *out);
        if (!res || !out)
            return BR_ENOMEM;
        e = ops->put_revs(ep->ctx, q->u.put_revs.docs, n, res, eb);
        for (size_t i = 0; i < n; i++)
            out[i] = (uint64_t)res[i];
        r->type = BR_WIRE_PUT_REVS_REPLY;
        r->u.put_revs_reply.results = out;
        r->u.put_revs_reply.n = n;
        return e;
    }
    case BR_WIRE_LOCAL_GET:
        r->type = BR_WIRE_LOCAL_GET_REPLY;
        return ops->local_get(ep->ctx, q->u.local.id, a, &r->u.local_reply.body,
                              &r->u.local_reply.body_len, &r->u.local_reply.rev, eb);
    case BR_WIRE_LOCAL_PUT:
        r->type = BR_WIRE_LOCAL_PUT_REPLY;
        return ops->local_put(ep->ctx, q->u.local.id, q->u.local.has_rev ? &q->u.local.rev : NULL,
                              q->u.local.body, q->u.local.body_len, &r->u.local_reply.rev, eb);
    default:
        return br_fail(eb, BR_EPROTO, "not a request");
    }
}

br_err br_rpc_serve(br_store *store, const char *self_id, const struct br_wire_msg *req,
                    br_wire_arena *a, struct br_wire_msg *reply, struct br_errbuf *eb)
{
    const char *db = req_db(req);
    if (!db)
        return br_fail(eb, BR_EPROTO, "%s is not a request", tname(req->type));
    struct br_endpoint *ep = NULL;
    struct br_endpoint_local_opts lo = {.node = self_id, .sync = BR_SYNC_NONE};
    br_err e = br_endpoint_local_new(store, db, &lo, &ep, eb);
    if (e)
        return e;
    struct br_wire_msg r = {.rid = req->rid};
    e = serve_one(ep, req, a, &r, eb);
    br_endpoint_free(ep); /* the reply lives in a and req, not in the endpoint */
    if (e)
        return e;
    *reply = r;
    return BR_OK;
}

void br_rpc_error_reply(const struct br_wire_msg *req, br_err e, const char *reason,
                        struct br_wire_msg *reply)
{
    memset(reply, 0, sizeof *reply);
    reply->type = BR_WIRE_ERROR;
    reply->rid = req->rid;
    reply->u.error.code = (uint64_t)e;
    reply->u.error.reason = reason && reason[0] ? reason : br_strerror(e);
}
