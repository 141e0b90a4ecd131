/* ep_local.c — the endpoint over a database of this node's store (endpoint.h).
 *
 * Each call maps onto the store's public API: changes with style=all_docs and the filters,
 * revsdiff, the revisions of a batch with their history in one multi-get (br_db_read_revs), bulk
 * writes with new_edits=false, local documents, the node's clock, and a commit (one fsync) for
 * an endpoint that writes unsynced. Attachments are read whole into the caller's arena (the
 * in-process transfer is bounded by the store's own attachment sizes) and checked for presence by
 * content key. Waiting uses the store's watch: a writer's commit signals a condition variable, so a
 * waiting replication wakes on the write itself, never by polling. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/att.h"
#include "barrel/endpoint.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/query.h"

#define TAG "sync"

struct local {
    br_store *s;
    br_db *db;
    enum br_sync sync;
    uint64_t watch_id;
    bool watching;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct br_hlc latest; /* newest change seen by the watch */
    bool interrupted;
};

void br_endpoint_free(struct br_endpoint *ep)
{
    if (!ep)
        return;
    if (ep->ops && ep->ops->free)
        ep->ops->free(ep->ctx);
    br_free(ep);
}

static void on_write(void *arg, br_db *db, struct br_hlc seq)
{
    (void)db;
    struct local *l = arg;
    pthread_mutex_lock(&l->mu);
    if (br_hlc_cmp(seq, l->latest) > 0)
        l->latest = seq;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static br_err l_digest(void *ctx, struct br_db_digest *out, struct br_errbuf *eb)
{
    struct local *l = ctx;
    br_err e = br_db_digest(l->db, out);
    if (e)
        br_errbuf_set(eb, "digest of %s: %s", br_db_name(l->db), br_strerror(e));
    return e;
}

struct chg_arg {
    br_endpoint_change_cb cb;
    void *arg;
    size_t n;
};

static int chg_cb(void *arg, const struct br_change *c)
{
    struct chg_arg *a = arg;
    struct br_wire_change w = {
        .id = c->id,
        .id_len = c->id_len,
        .revs = (struct br_rev *)c->leaves,
        .n_revs = c->n_leaves,
        .deleted = c->deleted,
        .seq = c->seq,
    };
    if (!w.n_revs) {
        w.revs = (struct br_rev *)&c->rev;
        w.n_revs = 1;
    }
    a->n++;
    return a->cb(a->arg, &w);
}

/* Compile a query given as CBOR (a JSON-typed map). */
static br_err compile_query(const uint8_t *p, size_t n, br_query **q, struct br_errbuf *eb)
{
    json_t *j = NULL;
    br_err e = br_json_from_cbor(p, n, &j, eb);
    if (e)
        return e;
    e = br_query_compile(j, q, eb);
    json_decref(j);
    return e;
}

static br_err l_changes(void *ctx, struct br_hlc since, size_t limit,
                        const struct br_wire_filter *f, br_endpoint_change_cb cb, void *arg,
                        struct br_hlc *last, bool *more, struct br_errbuf *eb)
{
    struct local *l = ctx;
    br_query *q = NULL;
    br_err e = BR_OK;
    if (f && f->query) {
        e = compile_query(f->query, f->query_len, &q, eb);
        if (e)
            return e;
    }
    struct br_changes_opts o = {
        .since = since,
        .limit = limit,
        .all_docs = true,
        .paths = f ? f->paths : NULL,
        .n_paths = f ? f->n_paths : 0,
        .query = q,
    };
    struct chg_arg a = {cb, arg, 0};
    e = br_db_changes(l->db, &o, chg_cb, &a, last);
    br_query_free(q);
    if (e) {
        br_errbuf_set(eb, "changes of %s: %s", br_db_name(l->db), br_strerror(e));
        return e;
    }
    *more = limit && a.n >= limit;
    return BR_OK;
}

static br_err l_revsdiff(void *ctx, const struct br_wire_docrevs *in, size_t n, br_wire_arena *a,
                         struct br_wire_diff **out, size_t *n_out, struct br_errbuf *eb)
{
    struct local *l = ctx;
    struct br_revsdiff_in *ri = br_calloc(n ? n : 1, sizeof *ri);
    struct br_revsdiff_out *ro = br_calloc(n ? n : 1, sizeof *ro);
    struct br_wire_diff *v = br_wire_alloc(a, (n ? n : 1) * sizeof *v);
    br_err e = BR_ENOMEM;
    size_t k = 0;
    if (!ri || !ro || !v)
        goto done;
    for (size_t i = 0; i < n; i++)
        ri[i] = (struct br_revsdiff_in){in[i].id, in[i].id_len, in[i].revs, in[i].n_revs};
    e = br_db_revsdiff(l->db, ri, n, ro);
    if (e) {
        br_errbuf_set(eb, "revsdiff on %s: %s", br_db_name(l->db), br_strerror(e));
        br_free(ro);
        ro = NULL;
        goto done;
    }
    for (size_t i = 0; i < n && !e; i++) {
        if (!ro[i].n_missing)
            continue;
        v[k].id = in[i].id;
        v[k].id_len = in[i].id_len;
        v[k].missing = br_wire_memdup(a, ro[i].missing, ro[i].n_missing * sizeof(struct br_rev));
        v[k].n_missing = ro[i].n_missing;
        v[k].ancestors = br_wire_memdup(a, ro[i].possible_ancestors,
                                        ro[i].n_possible_ancestors * sizeof(struct br_rev));
        v[k].n_ancestors = ro[i].n_possible_ancestors;
        if (!v[k].missing || !v[k].ancestors)
            e = BR_ENOMEM;
        k++;
    }
    br_revsdiff_out_fini(ro, n);
done:
    br_free(ro);
    br_free(ri);
    if (!e) {
        *out = v;
        *n_out = k;
    }
    return e;
}

static bool in_list(const char *s, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, v[i]) == 0)
            return true;
    return false;
}

/* Read blob `key` whole into the arena. */
static br_err read_blob(struct local *l, const uint8_t key[32], uint64_t length, br_wire_arena *a,
                        const uint8_t **out)
{
    br_att_reader *r = NULL;
    uint64_t len = 0;
    br_err e = br_att_reader_open(l->db, key, &r, &len);
    if (e)
        return e;
    if (len != length || len > SIZE_MAX / 2) {
        br_att_reader_close(r);
        return BR_ESTORE;
    }
    uint8_t *buf = br_wire_alloc(a, len ? (size_t)len : 1);
    size_t off = 0;
    if (!buf) {
        br_att_reader_close(r);
        return BR_ENOMEM;
    }
    for (;;) {
        const uint8_t *p;
        size_t n;
        e = br_att_reader_read(r, &p, &n);
        if (e || n == 0)
            break;
        if (n > len - off) {
            e = BR_ESTORE;
            break;
        }
        memcpy(buf + off, p, n);
        off += n;
    }
    br_att_reader_close(r);
    if (!e && off != len)
        e = BR_ESTORE;
    if (!e)
        *out = buf;
    return e;
}

static const uint8_t EMPTY_MAP[1] = {0xa0};

/* Fill w (whose id and rev are set) from revision r as read, copying into the arena. */
static br_err fill_revdoc(struct local *l, const struct br_rev_read *r, const char *const *have,
                          size_t n_have, bool data, br_wire_arena *a, struct br_wire_revdoc *w)
{
    w->deleted = r->deleted;
    if (r->body && r->body_len) {
        w->body = br_wire_memdup(a, r->body, r->body_len);
        w->body_len = r->body_len;
    } else {
        w->body = EMPTY_MAP;
        w->body_len = 1;
    }
    if (r->n_history) {
        w->history = br_wire_memdup(a, r->history, r->n_history * sizeof(struct br_rev));
        w->n_history = r->n_history;
    } else {
        w->history = br_wire_memdup(a, &r->rev, sizeof r->rev);
        w->n_history = 1;
    }
    w->atts = br_wire_alloc(a, (r->n_atts ? r->n_atts : 1) * sizeof *w->atts);
    if (!w->body || !w->history || !w->atts)
        return BR_ENOMEM;
    w->n_atts = r->n_atts;
    for (size_t i = 0; i < r->n_atts; i++) {
        const struct br_att_stub *s = &r->atts[i];
        struct br_wire_att *t = &w->atts[i];
        t->name = br_wire_strndup(a, s->name, strlen(s->name));
        t->content_type = br_wire_strndup(a, s->content_type, strlen(s->content_type));
        t->digest = br_wire_strndup(a, s->digest, strlen(s->digest));
        if (!t->name || !t->content_type || !t->digest)
            return BR_ENOMEM;
        t->length = s->length;
        t->revpos = s->revpos;
        t->has_key = true;
        memcpy(t->key, s->key, 32);
        if (data && !in_list(s->digest, have, n_have)) {
            br_err e = read_blob(l, s->key, s->length, a, &t->data);
            if (e)
                return e;
            t->has_data = true;
            t->data_len = (size_t)s->length;
        }
    }
    return BR_OK;
}

struct revs_arg {
    struct local *l;
    const struct br_wire_docrevs *in;
    const char *const *have;
    size_t n_have;
    bool data;
    br_wire_arena *a;
    struct br_wire_revdoc *v;
    size_t k, total;
    br_err e;
};

static int revs_cb(void *arg, const struct br_rev_read *r)
{
    struct revs_arg *g = arg;
    if (g->k >= g->total)
        return 1;
    const struct br_wire_docrevs *d = &g->in[r->doc];
    struct br_wire_revdoc *w = &g->v[g->k++];
    *w = (struct br_wire_revdoc){.id = d->id, .id_len = d->id_len, .rev = r->rev};
    w->missing = r->missing;
    if (!r->missing)
        g->e = fill_revdoc(g->l, r, g->have, g->n_have, g->data, g->a, w);
    w->rev_known = !w->missing; /* asked for by name: the wire may skip its hash */
    return g->e != BR_OK;
}

/* All the revisions asked for are read with one multi-get (br_db_read_revs). */
static br_err l_get_revs(void *ctx, const struct br_wire_docrevs *in, size_t n,
                         const char *const *have, size_t n_have, bool data, br_wire_arena *a,
                         struct br_wire_revdoc **out, size_t *n_out, struct br_errbuf *eb)
{
    struct local *l = ctx;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += in[i].n_revs;
    struct br_wire_revdoc *v = br_wire_alloc(a, (total ? total : 1) * sizeof *v);
    struct br_revs_want *want = br_calloc(n ? n : 1, sizeof *want);
    if (!v || !want) {
        br_free(want);
        return BR_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        want[i] = (struct br_revs_want){in[i].id, in[i].id_len, in[i].revs, in[i].n_revs};
    struct revs_arg g = {l, in, have, n_have, data, a, v, 0, total, BR_OK};
    br_err e = br_db_read_revs(l->db, want, n, revs_cb, &g);
    br_free(want);
    if (!e)
        e = g.e;
    if (e)
        return br_fail(eb, e, "get_revs on %s: %s", br_db_name(l->db), br_strerror(e));
    *out = v;
    *n_out = g.k;
    return BR_OK;
}

static br_err l_atts_missing(void *ctx, const struct br_wire_att *atts, size_t n, bool *missing,
                             struct br_errbuf *eb)
{
    struct local *l = ctx;
    for (size_t i = 0; i < n; i++) {
        missing[i] = true;
        if (!atts[i].has_key)
            continue;
        br_att_reader *r = NULL;
        br_err e = br_att_reader_open(l->db, atts[i].key, &r, NULL);
        if (e == BR_OK) {
            missing[i] = false;
            br_att_reader_close(r);
        } else if (e != BR_ENOTFOUND) {
            return br_fail(eb, e, "attachment lookup: %s", br_strerror(e));
        }
    }
    return BR_OK;
}

static br_err l_put_revs(void *ctx, const struct br_wire_revdoc *docs, size_t n, br_err *results,
                         struct br_errbuf *eb)
{
    struct local *l = ctx;
    size_t n_atts = 0;
    for (size_t i = 0; i < n; i++)
        n_atts += docs[i].n_atts;
    struct br_put *puts = br_calloc(n ? n : 1, sizeof *puts);
    struct br_att_in *ins = br_calloc(n_atts ? n_atts : 1, sizeof *ins);
    struct br_put_result *res = br_calloc(n ? n : 1, sizeof *res);
    br_err e = BR_ENOMEM;
    if (!puts || !ins || !res)
        goto done;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct br_wire_revdoc *d = &docs[i];
        puts[i] = (struct br_put){
            .id = d->id,
            .id_len = d->id_len,
            .deleted = d->deleted,
            .body = d->body,
            .body_len = d->body_len,
            .history = d->history,
            .n_history = d->n_history,
            .atts = ins + k,
            .n_atts = d->n_atts,
        };
        for (size_t j = 0; j < d->n_atts; j++, k++) {
            const struct br_wire_att *t = &d->atts[j];
            ins[k] = (struct br_att_in){
                .name = t->name,
                .content_type = t->content_type,
                .stub = !t->has_data,
                .digest = t->digest,
                .data = t->has_data ? t->data : NULL,
                .len = t->has_data ? t->data_len : 0,
                .revpos = t->revpos,
            };
        }
    }
    struct br_write_opts wo = {l->sync, false};
    e = br_db_bulk(l->db, puts, n, &wo, res);
    if (e) {
        br_errbuf_set(eb, "bulk write to %s: %s", br_db_name(l->db), br_strerror(e));
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        results[i] = res[i].err;
        if (res[i].err)
            br_log(BR_LOG_WARN, TAG, "event=put_rev_failed db=%s id=%.*s err=%s reason=\"%s\"",
                   br_db_name(l->db), (int)(docs[i].id_len > 64 ? 64 : docs[i].id_len), docs[i].id,
                   br_errname(res[i].err), res[i].reason);
    }
done:
    br_free(res);
    br_free(ins);
    br_free(puts);
    return e;
}

static br_err l_local_get(void *ctx, const char *id, br_wire_arena *a, const uint8_t **body,
                          size_t *len, struct br_rev *rev, struct br_errbuf *eb)
{
    struct local *l = ctx;
    struct br_doc *d = NULL;
    br_err e = br_db_local_get(l->db, id, strlen(id), &d);
    if (e) {
        if (e != BR_ENOTFOUND)
            br_errbuf_set(eb, "local doc %s: %s", id, br_strerror(e));
        return e;
    }
    const uint8_t *p = d->body && d->body_len ? br_wire_memdup(a, d->body, d->body_len) : EMPTY_MAP;
    if (!p) {
        br_doc_free(d);
        return BR_ENOMEM;
    }
    *body = p;
    *len = d->body && d->body_len ? d->body_len : 1;
    *rev = d->rev;
    br_doc_free(d);
    return BR_OK;
}

static br_err l_local_put(void *ctx, const char *id, const struct br_rev *rev, const uint8_t *body,
                          size_t len, struct br_rev *new_rev, struct br_errbuf *eb)
{
    struct local *l = ctx;
    struct br_write_opts wo = {l->sync, true};
    br_err e = br_db_local_put(l->db, id, strlen(id), rev, body, len, &wo, new_rev);
    if (e && e != BR_ECONFLICT)
        br_errbuf_set(eb, "local doc %s: %s", id, br_strerror(e));
    return e;
}

static br_err l_commit(void *ctx, struct br_errbuf *eb)
{
    struct local *l = ctx;
    if (l->sync == BR_SYNC_FULL)
        return BR_OK; /* each write was synced before it was acknowledged */
    br_err e = br_store_sync(l->s);
    if (e)
        br_errbuf_set(eb, "syncing %s: %s", br_db_name(l->db), br_strerror(e));
    return e;
}

static br_err l_hlc_merge(void *ctx, struct br_hlc remote)
{
    struct local *l = ctx;
    return br_hlc_update(br_store_clock(l->s), remote, NULL);
}

static br_err l_wait(void *ctx, struct br_hlc since, uint64_t timeout_ms)
{
    struct local *l = ctx;
    struct timespec dl;
    br_err e = BR_OK;
    /* A deadline for the condition variable (monotonic, as set at creation); the wait's only
     * use of a clock. */
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000);
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (l->interrupted) {
            e = BR_ECLOSED;
            break;
        }
        if (br_hlc_cmp(l->latest, since) > 0)
            break;
        if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) != 0) {
            e = l->interrupted                     ? BR_ECLOSED
                : br_hlc_cmp(l->latest, since) > 0 ? BR_OK
                                                   : BR_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return e;
}

static void l_interrupt(void *ctx)
{
    struct local *l = ctx;
    pthread_mutex_lock(&l->mu);
    l->interrupted = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void l_free(void *ctx)
{
    struct local *l = ctx;
    if (!l)
        return;
    if (l->watching)
        br_db_unwatch(l->db, l->watch_id);
    br_db_close(l->db);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    br_free(l);
}

static const struct br_endpoint_ops LOCAL_OPS = {
    .digest = l_digest,
    .changes = l_changes,
    .revsdiff = l_revsdiff,
    .get_revs = l_get_revs,
    .atts_missing = l_atts_missing,
    .put_revs = l_put_revs,
    .local_get = l_local_get,
    .local_put = l_local_put,
    .hlc_merge = l_hlc_merge,
    .wait = l_wait,
    .interrupt = l_interrupt,
    .free = l_free,
    .commit = l_commit,
};

br_err br_endpoint_local_new(br_store *s, const char *db, const struct br_endpoint_local_opts *o,
                             struct br_endpoint **out, struct br_errbuf *eb)
{
    const char *node = o && o->node ? o->node : "local";
    struct br_endpoint *ep = br_calloc(1, sizeof *ep);
    struct local *l = br_calloc(1, sizeof *l);
    pthread_condattr_t ca;
    br_err e = BR_ENOMEM;
    if (!ep || !l)
        goto fail;
    if (strlen(node) + 1 + strlen(db) >= sizeof ep->name) {
        e = br_fail(eb, BR_EINVAL, "endpoint name too long");
        goto fail;
    }
    l->s = s;
    l->sync = o ? o->sync : BR_SYNC_FULL;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    e = br_store_db_open(s, db, &l->db);
    if (e) {
        br_errbuf_set(eb, "database %s: %s", db, br_strerror(e));
        goto fail_sync;
    }
    e = br_db_watch(l->db, on_write, l, &l->watch_id);
    if (e)
        goto fail_db;
    l->watching = true;
    struct br_db_digest dg;
    e = br_db_digest(l->db, &dg);
    if (e)
        goto fail_db;
    on_write(l, l->db, dg.last); /* writes before the watch began */
    snprintf(ep->name, sizeof ep->name, "%s/%s", node, db);
    ep->ops = &LOCAL_OPS;
    ep->ctx = l;
    *out = ep;
    return BR_OK;
fail_db:
    if (l->watching)
        br_db_unwatch(l->db, l->watch_id);
    br_db_close(l->db);
fail_sync:
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
fail:
    br_free(l);
    br_free(ep);
    return e;
}
