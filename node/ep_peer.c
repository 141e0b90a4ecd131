/* ep_peer.c — the endpoint (endpoint.h) over a link to a peer: each call is one wire request
 * and its reply (p2p_request), made on the replication's thread while the loop moves the
 * frames. Replies are decoded into their own arena, which is handed whole to the caller's arena
 * (br_wire_arena_move), so nothing is copied twice.
 *
 * Waiting (continuous pull) needs no polling: the peer sends a `digest` whenever the database
 * gets a change after we read its changes, and wait() sleeps on the link's condition variable
 * until the announced head passes `since`. get_revs replies name each revision asked for by
 * position (wire.h `known`): the hash comes from the request, not the wire. atts_missing answers
 * "missing" for every attachment (allowed by endpoint.h: when it cannot tell, it says missing), so
 * pushes carry attachment data; hlc_merge sends a ping carrying our clock, which the peer merges.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "barrel/alloc.h"

#include "p2p_int.h"

struct peer {
    struct link *l;
    char db[BR_DB_NAME_MAX + 1];
    bool interrupted; /* under l->mu */
};

static br_err p_digest(void *ctx, struct br_db_digest *out, struct br_errbuf *eb)
{
    struct peer *q = ctx;
    (void)eb;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&q->l->mu);
    out->last = p2p_remote_last(q->l, q->db);
    pthread_mutex_unlock(&q->l->mu);
    return BR_OK;
}

/* Send m over the link and wait for its reply, which must be of type want (else BR_EPROTO,
 * the reply freed). On success *r is the reply (caller frees). */
static br_err call(struct peer *q, struct br_wire_msg *m, enum br_wire_type want,
                   struct br_wire_msg **r, struct br_errbuf *eb)
{
    br_err e = p2p_request(q->l, m, r, eb);
    if (e)
        return e;
    if ((*r)->type == want)
        return BR_OK;
    br_errbuf_set(eb, "%s: expected %s, got %s", br_wire_type_name(m->type),
                  br_wire_type_name(want), br_wire_type_name((*r)->type));
    br_wire_msg_free(*r);
    *r = NULL;
    return BR_EPROTO;
}

static br_err p_changes(void *ctx, struct br_hlc since, size_t limit,
                        const struct br_wire_filter *f, br_endpoint_change_cb cb, void *arg,
                        struct br_hlc *last, bool *more, struct br_errbuf *eb)
{
    struct peer *q = ctx;
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

static br_err p_revsdiff(void *ctx, const struct br_wire_docrevs *in, size_t n, br_wire_arena *a,
                         struct br_wire_diff **out, size_t *n_out, struct br_errbuf *eb)
{
    struct peer *q = ctx;
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

static br_err p_get_revs(void *ctx, const struct br_wire_docrevs *in, size_t n,
                         const char *const *have, size_t n_have, bool data, br_wire_arena *a,
                         struct br_wire_revdoc **out, size_t *n_out, struct br_errbuf *eb)
{
    struct peer *q = ctx;
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

static br_err p_atts_missing(void *ctx, const struct br_wire_att *atts, size_t n, bool *missing,
                             struct br_errbuf *eb)
{
    (void)ctx;
    (void)atts;
    (void)eb;
    for (size_t i = 0; i < n; i++)
        missing[i] = true;
    return BR_OK;
}

static br_err p_put_revs(void *ctx, const struct br_wire_revdoc *docs, size_t n, br_err *results,
                         struct br_errbuf *eb)
{
    struct peer *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_PUT_REVS};
    m.u.put_revs.db = q->db;
    m.u.put_revs.docs = (struct br_wire_revdoc *)docs;
    m.u.put_revs.n = n;
    struct br_wire_msg *r = NULL;
    br_err e = call(q, &m, BR_WIRE_PUT_REVS_REPLY, &r, eb);
    if (e)
        return e;
    if (r->u.put_revs_reply.n != n) {
        br_wire_msg_free(r);
        return br_fail(eb, BR_EPROTO, "put_revs: %zu results for %zu docs", r->u.put_revs_reply.n,
                       n);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t c = r->u.put_revs_reply.results[i];
        results[i] = c < BR_ERR_COUNT ? (br_err)c : BR_EPROTO;
    }
    br_wire_msg_free(r);
    return BR_OK;
}

static br_err p_local_get(void *ctx, const char *id, br_wire_arena *a, const uint8_t **body,
                          size_t *len, struct br_rev *rev, struct br_errbuf *eb)
{
    struct peer *q = ctx;
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

static br_err p_local_put(void *ctx, const char *id, const struct br_rev *rev, const uint8_t *body,
                          size_t len, struct br_rev *new_rev, struct br_errbuf *eb)
{
    struct peer *q = ctx;
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

static br_err p_hlc_merge(void *ctx, struct br_hlc remote)
{
    struct peer *q = ctx;
    struct br_wire_msg m = {.type = BR_WIRE_PING};
    m.u.ping.hlc = remote;
    struct br_wire_msg *r = NULL;
    br_err e = p2p_request(q->l, &m, &r, NULL);
    br_wire_msg_free(r);
    return e == BR_ECLOCK ? BR_ECLOCK : BR_OK;
}

static br_err p_wait(void *ctx, struct br_hlc since, uint64_t timeout_ms)
{
    struct peer *q = ctx;
    struct link *l = q->l;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000);
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    br_err e = BR_OK;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (q->interrupted || l->closed) {
            e = BR_ECLOSED;
            break;
        }
        if (br_hlc_cmp(p2p_remote_last(l, q->db), since) > 0)
            break;
        if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) != 0) {
            e = br_hlc_cmp(p2p_remote_last(l, q->db), since) > 0 ? BR_OK : BR_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return e;
}

static void p_interrupt(void *ctx)
{
    struct peer *q = ctx;
    pthread_mutex_lock(&q->l->mu);
    q->interrupted = true;
    pthread_cond_broadcast(&q->l->cv);
    pthread_mutex_unlock(&q->l->mu);
}

static void p_free(void *ctx)
{
    struct peer *q = ctx;
    p2p_link_unref(q->l);
    br_free(q);
}

static const struct br_endpoint_ops PEER_OPS = {
    .digest = p_digest,
    .changes = p_changes,
    .revsdiff = p_revsdiff,
    .get_revs = p_get_revs,
    .atts_missing = p_atts_missing,
    .put_revs = p_put_revs,
    .local_get = p_local_get,
    .local_put = p_local_put,
    .hlc_merge = p_hlc_merge,
    .wait = p_wait,
    .interrupt = p_interrupt,
    .free = p_free,
};

br_err p2p_endpoint_new(struct link *l, const char *db, struct br_endpoint **out)
{
    if (strlen(db) > BR_DB_NAME_MAX)
        return BR_EBADNAME;
    struct br_endpoint *ep = br_calloc(1, sizeof *ep);
    struct peer *q = br_calloc(1, sizeof *q);
    if (!ep || !q) {
        br_free(ep);
        br_free(q);
        return BR_ENOMEM;
    }
    q->l = l;
    snprintf(q->db, sizeof q->db, "%s", db);
    p2p_link_ref(l);
    ep->ops = &PEER_OPS;
    ep->ctx = q;
    snprintf(ep->name, sizeof ep->name, "%s/%s", l->peer_text, db);
    *out = ep;
    return BR_OK;
}
