/* replicator.c — the replication algorithm over two endpoints (replicator.h).
 *
 * State of a run: `since` (the source seq replicated up to), the checkpoint documents' current
 * revisions on both sides and this run's session id. Each batch allocates in one arena that is
 * released when the batch ends. Checkpoint bodies are canonical CBOR maps:
 *   {"rep_id": hex, "history": [{"seq": "wall:logical", "start": "wall:logical",
 *    "end_ms": uint, "session": hex}, ...]}   newest first, at most 20 entries.
 * With a source of opaque seqs (CouchDB), "seq" and "start" hold the seqs' JSON text instead;
 * the mode follows from the source, which is part of the replication id. */
#include "barrel/replicator.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/paths.h"
#include "barrel/query.h"

#define TAG "sync"
#define SESSION_HEX 32

struct cp_entry {
    struct br_hlc seq, start;
    uint64_t end_ms;
    char session[SESSION_HEX + 1];
    char seq_text[BR_REP_SEQ_MAX], start_text[BR_REP_SEQ_MAX]; /* opaque mode */
};

struct checkpoint {
    bool exists;
    struct br_rev rev;
    struct cp_entry hist[BR_REP_CHECKPOINT_HISTORY];
    size_t n;
};

struct br_rep {
    struct br_endpoint *src, *tgt;
    size_t batch;
    bool continuous;
    bool serial;
    bool opaque; /* the source's seqs are opaque JSON text (changes_opaque) */
    uint64_t idle_ms;
    const struct br_env *env;
    void (*on_written)(void *arg, struct br_hlc newest, size_t written);
    void *arg;
    /* the filter, owned */
    char **paths;
    size_t n_paths;
    uint8_t *query;
    size_t query_len;
    struct br_wire_filter filter;
    bool has_filter;
    char id[BR_REP_ID_LEN + 1];
    char session[SESSION_HEX + 1];
    struct checkpoint cp_src, cp_tgt;
    atomic_bool cancelled;
    /* Each endpoint is called by one thread at a time (endpoint.h): the reader and the writer
     * of a run (see "pipeline" below) take its lock around every call. */
    pthread_mutex_t src_mu, tgt_mu;
    pthread_mutex_t mu; /* guards stats */
    struct br_rep_stats stats;
};

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void hash_field(crypto_generichash_state *st, const void *p, size_t n)
{
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    crypto_generichash_update(st, len, sizeof len);
    crypto_generichash_update(st, p, n);
}

/* BLAKE2b-128 over length-prefixed (source, target, sorted paths, canonical query). */
static void make_id(br_rep *r)
{
    crypto_generichash_state st;
    uint8_t h[16];
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    hash_field(&st, "barrel-rep/1", 12);
    hash_field(&st, r->src->name, strlen(r->src->name));
    hash_field(&st, r->tgt->name, strlen(r->tgt->name));
    for (size_t i = 0; i < r->n_paths; i++)
        hash_field(&st, r->paths[i], strlen(r->paths[i]));
    hash_field(&st, "query", 5);
    if (r->query)
        hash_field(&st, r->query, r->query_len);
    crypto_generichash_final(&st, h, sizeof h);
    hex(h, sizeof h, r->id);
}

static br_err copy_filter(br_rep *r, const struct br_wire_filter *f, struct br_errbuf *eb)
{
    if (f->n_paths) {
        r->paths = br_calloc(f->n_paths, sizeof *r->paths);
        if (!r->paths)
            return BR_ENOMEM;
        for (size_t i = 0; i < f->n_paths; i++) {
            br_err e = br_pattern_check(f->paths[i], strlen(f->paths[i]), eb);
            if (e)
                return e;
            r->paths[i] = br_strdup(f->paths[i]);
            if (!r->paths[i])
                return BR_ENOMEM;
            r->n_paths = i + 1;
        }
        qsort(r->paths, r->n_paths, sizeof *r->paths, cmp_str);
    }
    if (f->query) {
        br_buf b;
        json_t *j = NULL;
        br_query *q = NULL;
        br_buf_init(&b, BR_WIRE_MAX_MSG);
        br_err e = br_cbor_doc_canonical(f->query, f->query_len, 0, &b, eb);
        if (!e)
            e = br_json_from_cbor(b.data, b.len, &j, eb);
        if (!e)
            e = br_query_compile(j, &q, eb);
        json_decref(j);
        br_query_free(q);
        if (e) {
            br_buf_fini(&b);
            return e == BR_ENOMEM ? e : BR_EINVAL;
        }
        r->query = br_buf_steal(&b, &r->query_len);
        if (!r->query)
            return BR_ENOMEM;
    }
    r->filter =
        (struct br_wire_filter){(const char *const *)r->paths, r->n_paths, r->query, r->query_len};
    r->has_filter = r->n_paths || r->query;
    return BR_OK;
}

br_err br_rep_new(struct br_endpoint *src, struct br_endpoint *tgt, const struct br_rep_opts *o,
                  br_rep **out, struct br_errbuf *eb)
{
    if (!src || !tgt || !o)
        return br_fail(eb, BR_EINVAL, "replication needs a source, a target and options");
    if (o->batch_size > BR_REP_MAX_BATCH)
        return br_fail(eb, BR_EINVAL, "batch size past %d", BR_REP_MAX_BATCH);
    br_rep *r = br_calloc(1, sizeof *r);
    if (!r)
        return BR_ENOMEM;
    r->src = src;
    r->tgt = tgt;
    r->batch = o->batch_size ? o->batch_size : BR_REP_DEFAULT_BATCH;
    r->continuous = o->continuous;
    r->serial = o->serial;
    r->opaque = src->ops->changes_opaque != NULL;
    r->stats.opaque_seq = r->opaque;
    r->idle_ms = o->idle_check_ms ? o->idle_check_ms : 30000;
    r->env = o->env ? o->env : br_env_default();
    r->on_written = o->on_written;
    r->arg = o->arg;
    atomic_init(&r->cancelled, false);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->src_mu, NULL);
    pthread_mutex_init(&r->tgt_mu, NULL);
    br_err e = copy_filter(r, &o->filter, eb);
    if (e) {
        br_rep_free(r);
        return e;
    }
    make_id(r);
    uint8_t s[16];
    br_env_random(r->env, s, sizeof s);
    hex(s, sizeof s, r->session);
    *out = r;
    return BR_OK;
}

void br_rep_free(br_rep *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_paths; i++)
        br_free(r->paths[i]);
    br_free(r->paths);
    br_free(r->query);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->src_mu);
    pthread_mutex_destroy(&r->tgt_mu);
    br_free(r);
}

const char *br_rep_id(const br_rep *r)
{
    return r->id;
}

void br_rep_cancel(br_rep *r)
{
    atomic_store(&r->cancelled, true);
    r->src->ops->interrupt(r->src->ctx);
}

void br_rep_get_stats(br_rep *r, struct br_rep_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

/* ---- checkpoints ---- */

static bool text_is(const struct br_cbor_item *it, const char *s)
{
    return it->type == BR_CBOR_TEXT && it->len == strlen(s) && memcmp(it->str, s, it->len) == 0;
}

static br_err copy_text(char *dst, const struct br_cbor_item *v)
{
    if (v->len >= BR_REP_SEQ_MAX)
        return BR_EPROTO;
    memcpy(dst, v->str, v->len);
    dst[v->len] = 0;
    return BR_OK;
}

static br_err cp_parse_entry(struct br_cbor_reader *rd, bool opaque, struct cp_entry *ce)
{
    size_t n;
    br_err e = br_cbor_read_map(rd, &n);
    memset(ce, 0, sizeof *ce);
    for (size_t i = 0; !e && i < n; i++) {
        struct br_cbor_item k, v;
        e = br_cbor_next(rd, &k);
        if (!e)
            e = br_cbor_next(rd, &v);
        if (e)
            break;
        if (v.type == BR_CBOR_ARRAY || v.type == BR_CBOR_MAP)
            return BR_EPROTO;
        if (text_is(&k, "seq") && v.type == BR_CBOR_TEXT)
            e = opaque ? copy_text(ce->seq_text, &v)
                       : br_hlc_parse((const char *)v.str, v.len, &ce->seq);
        else if (text_is(&k, "start") && v.type == BR_CBOR_TEXT)
            e = opaque ? copy_text(ce->start_text, &v)
                       : br_hlc_parse((const char *)v.str, v.len, &ce->start);
        else if (text_is(&k, "end_ms") && v.type == BR_CBOR_UINT)
            ce->end_ms = v.u;
        else if (text_is(&k, "session") && v.type == BR_CBOR_TEXT && v.len == SESSION_HEX) {
            memcpy(ce->session, v.str, SESSION_HEX);
            ce->session[SESSION_HEX] = 0;
        }
    }
    if (!e && !ce->session[0])
        e = BR_EPROTO;
    return e ? BR_EPROTO : BR_OK;
}

static br_err cp_parse(const uint8_t *p, size_t len, bool opaque, struct checkpoint *cp)
{
    struct br_cbor_reader rd;
    size_t n;
    br_cbor_reader_init(&rd, p, len);
    br_err e = br_cbor_read_map(&rd, &n);
    for (size_t i = 0; !e && i < n; i++) {
        struct br_cbor_item k;
        e = br_cbor_next(&rd, &k);
        if (e)
            break;
        if (!text_is(&k, "history")) {
            e = br_cbor_skip(&rd, BR_CBOR_MAX_DEPTH);
            continue;
        }
        size_t m;
        e = br_cbor_read_array(&rd, &m);
        for (size_t j = 0; !e && j < m; j++) {
            struct cp_entry ce;
            e = cp_parse_entry(&rd, opaque, &ce);
            if (!e && cp->n < BR_REP_CHECKPOINT_HISTORY)
                cp->hist[cp->n++] = ce;
        }
    }
    return e;
}

/* Read the checkpoint of one side; a missing or unreadable one is an empty history. */
static br_err cp_load(br_rep *r, struct br_endpoint *ep, struct checkpoint *cp,
                      struct br_errbuf *eb)
{
    br_wire_arena a = {0};
    const uint8_t *body = NULL;
    size_t len = 0;
    memset(cp, 0, sizeof *cp);
    br_err e = ep->ops->local_get(ep->ctx, r->id, &a, &body, &len, &cp->rev, eb);
    if (e == BR_ENOTFOUND) {
        br_wire_arena_fini(&a);
        return BR_OK;
    }
    if (!e) {
        cp->exists = true;
        if (cp_parse(body, len, r->opaque, cp) != BR_OK) {
            br_log(BR_LOG_WARN, TAG, "event=checkpoint_unreadable rep=%s side=%s", r->id, ep->name);
            cp->n = 0;
        }
    }
    br_wire_arena_fini(&a);
    return e;
}

/* The seq both checkpoints agree on: the newest session recorded on both sides. */
static struct br_hlc cp_common(const struct checkpoint *a, const struct checkpoint *b)
{
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < b->n; j++)
            if (strcmp(a->hist[i].session, b->hist[j].session) == 0) {
                struct br_hlc x = a->hist[i].seq, y = b->hist[j].seq;
                return br_hlc_cmp(x, y) <= 0 ? x : y;
            }
    return BR_HLC_MIN;
}

/* Opaque mode: the source's seq of the newest session recorded on both sides ("" : none). The
 * source's checkpoint is written last, so its seq is never past what the target holds. */
static const char *cp_common_opaque(const struct checkpoint *src, const struct checkpoint *tgt)
{
    for (size_t i = 0; i < src->n; i++)
        for (size_t j = 0; j < tgt->n; j++)
            if (strcmp(src->hist[i].session, tgt->hist[j].session) == 0)
                return src->hist[i].seq_text;
    return "";
}

static br_err cp_encode(br_rep *r, const struct checkpoint *cp, br_buf *b)
{
    br_err e = br_cbor_put_map(b, 2);
    if (!e)
        e = br_cbor_put_cstr(b, "rep_id");
    if (!e)
        e = br_cbor_put_cstr(b, r->id);
    if (!e)
        e = br_cbor_put_cstr(b, "history");
    if (!e)
        e = br_cbor_put_array(b, cp->n);
    for (size_t i = 0; !e && i < cp->n; i++) {
        char t[BR_HLC_TEXT_MAX];
        e = br_cbor_put_map(b, 4);
        if (!e)
            e = br_cbor_put_cstr(b, "seq");
        if (!e)
            e = r->opaque ? br_cbor_put_cstr(b, cp->hist[i].seq_text)
                          : br_cbor_put_str(b, t, br_hlc_format(cp->hist[i].seq, t));
        if (!e)
            e = br_cbor_put_cstr(b, "start");
        if (!e)
            e = r->opaque ? br_cbor_put_cstr(b, cp->hist[i].start_text)
                          : br_cbor_put_str(b, t, br_hlc_format(cp->hist[i].start, t));
        if (!e)
            e = br_cbor_put_cstr(b, "end_ms");
        if (!e)
            e = br_cbor_put_uint(b, cp->hist[i].end_ms);
        if (!e)
            e = br_cbor_put_cstr(b, "session");
        if (!e)
            e = br_cbor_put_cstr(b, cp->hist[i].session);
    }
    return e;
}

/* The lock of endpoint ep (the source's when both sides are the same endpoint). */
static pthread_mutex_t *ep_mu(br_rep *r, const struct br_endpoint *ep)
{
    return ep == r->src ? &r->src_mu : &r->tgt_mu;
}

/* Record `seq` for this session in cp and write it to ep (one retry after a conflict). */
static br_err cp_save_side(br_rep *r, struct br_endpoint *ep, struct checkpoint *cp,
                           struct br_hlc seq, const char *seq_text, struct br_errbuf *eb)
{
    struct cp_entry ce = {
        .seq = seq, .start = r->stats.start_seq, .end_ms = br_env_wall_ms(r->env)};
    memcpy(ce.session, r->session, sizeof ce.session);
    if (r->opaque) {
        snprintf(ce.seq_text, sizeof ce.seq_text, "%s", seq_text);
        memcpy(ce.start_text, r->stats.start_seq_text, sizeof ce.start_text);
    }
    if (cp->n && strcmp(cp->hist[0].session, r->session) == 0) {
        cp->hist[0] = ce;
    } else {
        size_t keep = cp->n < BR_REP_CHECKPOINT_HISTORY ? cp->n : BR_REP_CHECKPOINT_HISTORY - 1;
        memmove(cp->hist + 1, cp->hist, keep * sizeof cp->hist[0]);
        cp->hist[0] = ce;
        cp->n = keep + 1;
    }
    br_buf b;
    br_buf_init(&b, 0);
    br_err e = cp_encode(r, cp, &b);
    pthread_mutex_t *mu = ep_mu(r, ep);
    pthread_mutex_lock(mu);
    for (int attempt = 0; !e && attempt < 2; attempt++) {
        struct br_rev nr;
        e = ep->ops->local_put(ep->ctx, r->id, cp->exists ? &cp->rev : NULL, b.data, b.len, &nr,
                               eb);
        if (!e) {
            cp->exists = true;
            cp->rev = nr;
            break;
        }
        if (e != BR_ECONFLICT || attempt)
            break;
        /* someone else wrote it (another run of the same replication): take its revision */
        br_wire_arena a = {0};
        const uint8_t *body;
        size_t len;
        struct br_rev cur;
        br_err e2 = ep->ops->local_get(ep->ctx, r->id, &a, &body, &len, &cur, eb);
        br_wire_arena_fini(&a);
        if (e2 == BR_ENOTFOUND) {
            cp->exists = false;
            e = BR_OK;
        } else if (e2) {
            e = e2;
        } else {
            cp->exists = true;
            cp->rev = cur;
            e = BR_OK;
        }
    }
    pthread_mutex_unlock(mu);
    br_buf_fini(&b);
    if (e)
        br_errbuf_set(eb, "saving checkpoint on %s: %s", ep->name, br_strerror(e));
    return e;
}

static br_err cp_save(br_rep *r, struct br_hlc seq, const char *seq_text, struct br_errbuf *eb)
{
    br_err e = cp_save_side(r, r->tgt, &r->cp_tgt, seq, seq_text, eb);
    if (!e)
        e = cp_save_side(r, r->src, &r->cp_src, seq, seq_text, eb);
    return e;
}

/* ---- one batch ---- */

/* A batch goes through two stages: the reader (changes, revsdiff, fetch) and the writer
 * (put_revs, checkpoint). Everything of a batch is allocated in its arena. */
struct batch {
    struct batch *next;
    br_wire_arena a;
    struct br_wire_docrevs *docs; /* the changes, as (id, leaves) */
    size_t n, cap;
    struct br_hlc max_seq;
    br_err err;
    /* for the writer */
    struct br_hlc last;             /* the seq to checkpoint */
    char last_text[BR_REP_SEQ_MAX]; /* opaque mode */
    bool more;                      /* the source said more may follow */
    bool diffed;                    /* the target lacked something: merge the clock */
    struct br_wire_revdoc *put;     /* what to write */
    size_t n_put;
    bool needs_drain;      /* read only after every earlier batch was written */
    struct br_rep_stats d; /* the reader's share of the stats */
};

static int collect(void *arg, const struct br_wire_change *c)
{
    struct batch *b = arg;
    if (b->n == b->cap) {
        b->err = BR_ENOMEM; /* more than the limit asked for: cannot happen with a sane source */
        return 1;
    }
    struct br_wire_docrevs *d = &b->docs[b->n];
    d->id = br_wire_memdup(&b->a, c->id, c->id_len);
    d->id_len = c->id_len;
    d->revs = br_wire_memdup(&b->a, c->revs, c->n_revs * sizeof *c->revs);
    d->n_revs = c->n_revs;
    if (!d->id || !d->revs) {
        b->err = BR_ENOMEM;
        return 1;
    }
    if (br_hlc_cmp(c->seq, b->max_seq) > 0)
        b->max_seq = c->seq;
    b->n++;
    return 0;
}

static void add_stats(br_rep *r, const struct br_rep_stats *d)
{
    pthread_mutex_lock(&r->mu);
    r->stats.changes_read += d->changes_read;
    r->stats.docs_read += d->docs_read;
    r->stats.docs_written += d->docs_written;
    r->stats.doc_read_failures += d->doc_read_failures;
    r->stats.doc_write_failures += d->doc_write_failures;
    r->stats.atts_sent += d->atts_sent;
    r->stats.bytes += d->bytes;
    r->stats.batches += d->batches;
    pthread_mutex_unlock(&r->mu);
}

static void batch_free(struct batch *b)
{
    if (!b)
        return;
    br_wire_arena_fini(&b->a);
    br_free(b);
}

/* ---- pipeline ----
 *
 * br_rep_run reads batch n+1 (on a reader thread) while it writes batch n (on the calling
 * thread): the classic CouchDB replicator overlap, which hides the round trips to a remote
 * source behind the target's writes. A queue of one batch joins the two. Order is kept:
 * batches are written and checkpointed in the order read, so a checkpoint never covers a batch
 * not yet written. Two waits keep the replicator's promises: a batch with attachment stubs
 * asks the target which contents it lacks only once every earlier batch is written (so no
 * content travels twice), and a continuous run waits for the source's next change only once
 * everything read is written. A target that writes unsynced (endpoint.h `commit`) is committed
 * there, before that wait, and once at the end of the run: one fsync per run rather than one or
 * two per batch. */
struct pipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct batch *head, *tail;
    size_t queued;
    uint64_t read, written; /* batches handed to the writer, batches it finished */
    bool stop;              /* the writer failed or the run was cancelled */
    bool reader_done;
    br_err reader_err;
    struct br_errbuf reader_eb;
};

#define PIPE_DEPTH 1 /* batches read ahead of the one being written */

/* Wait until every batch read so far is written; false if the run stops meanwhile. */
static bool pipe_drain(struct pipe *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->stop && p->written < p->read)
        pthread_cond_wait(&p->cv, &p->mu);
    bool ok = !p->stop;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* Fetch the missing revisions of the diff, with attachment content only where the target
 * lacks it. */
static br_err fetch(br_rep *r, struct pipe *p, struct batch *b, const struct br_wire_diff *diff,
                    size_t n_diff, struct br_wire_revdoc **out, size_t *n_out, struct br_errbuf *eb)
{
    struct br_endpoint *src = r->src, *tgt = r->tgt;
    struct br_wire_docrevs *want = br_wire_alloc(&b->a, (n_diff ? n_diff : 1) * sizeof *want);
    if (!want)
        return BR_ENOMEM;
    for (size_t i = 0; i < n_diff; i++)
        want[i] = (struct br_wire_docrevs){diff[i].id, diff[i].id_len, diff[i].missing,
                                           diff[i].n_missing};
    struct br_wire_revdoc *docs = NULL;
    size_t n_docs = 0;
    pthread_mutex_lock(&r->src_mu);
    br_err e =
        src->ops->get_revs(src->ctx, want, n_diff, NULL, 0, false, &b->a, &docs, &n_docs, eb);
    pthread_mutex_unlock(&r->src_mu);
    if (e)
        return e;
    size_t n_atts = 0;
    for (size_t i = 0; i < n_docs; i++)
        if (!docs[i].missing)
            n_atts += docs[i].n_atts;
    if (n_atts) {
        struct br_wire_att *all = br_wire_alloc(&b->a, n_atts * sizeof *all);
        bool *miss = br_wire_alloc(&b->a, n_atts * sizeof *miss);
        if (!all || !miss)
            return BR_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n_docs; i++)
            for (size_t j = 0; !docs[i].missing && j < docs[i].n_atts; j++)
                all[k++] = docs[i].atts[j];
        if (!pipe_drain(p))
            return br_fail(eb, BR_ECLOSED, "the run stopped");
        pthread_mutex_lock(&r->tgt_mu);
        e = tgt->ops->atts_missing(tgt->ctx, all, n_atts, miss, eb);
        pthread_mutex_unlock(&r->tgt_mu);
        if (e)
            return e;
        /* Re-fetch, with content, the revisions that carry an attachment the target lacks. */
        struct br_wire_docrevs *again = br_wire_alloc(&b->a, n_docs * sizeof *again);
        const char **have = br_wire_alloc(&b->a, n_atts * sizeof *have);
        size_t *where = br_wire_alloc(&b->a, n_docs * sizeof *where);
        size_t n_again = 0, n_have = 0;
        if (!again || !have || !where)
            return BR_ENOMEM;
        k = 0;
        for (size_t i = 0; i < n_docs; i++) {
            bool need = false;
            for (size_t j = 0; !docs[i].missing && j < docs[i].n_atts; j++, k++) {
                if (miss[k])
                    need = true;
                else
                    have[n_have++] = all[k].digest;
            }
            if (need) {
                again[n_again] =
                    (struct br_wire_docrevs){docs[i].id, docs[i].id_len, &docs[i].rev, 1};
                where[n_again++] = i;
            }
        }
        if (n_again) {
            struct br_wire_revdoc *full = NULL;
            size_t n_full = 0;
            pthread_mutex_lock(&r->src_mu);
            e = src->ops->get_revs(src->ctx, again, n_again, have, n_have, true, &b->a, &full,
                                   &n_full, eb);
            pthread_mutex_unlock(&r->src_mu);
            if (e)
                return e;
            if (n_full != n_again)
                return br_fail(eb, BR_EPROTO, "source answered %zu revisions of %zu", n_full,
                               n_again);
            for (size_t i = 0; i < n_again; i++)
                docs[where[i]] = full[i];
        }
    }
    *out = docs;
    *n_out = n_docs;
    return BR_OK;
}

/* Read one batch after (since, since_text): changes, revsdiff, fetch. *out is NULL when the
 * source had nothing after since (not even filtered-out entries). */
static br_err read_batch(br_rep *r, struct pipe *p, struct br_hlc since, const char *since_text,
                         struct batch **out, struct br_errbuf *eb)
{
    struct br_endpoint *src = r->src, *tgt = r->tgt;
    struct batch *b = br_calloc(1, sizeof *b);
    struct br_hlc last = since;
    const char *last_text = since_text;
    br_err e = BR_ENOMEM;
    *out = NULL;
    if (!b)
        return e;
    b->cap = r->batch;
    b->docs = br_wire_alloc(&b->a, b->cap * sizeof *b->docs);
    if (!b->docs)
        goto fail;
    pthread_mutex_lock(&r->src_mu);
    if (r->opaque)
        e = src->ops->changes_opaque(src->ctx, since_text, r->batch,
                                     r->has_filter ? &r->filter : NULL, collect, b, &b->a,
                                     &last_text, &b->more, eb);
    else
        e = src->ops->changes(src->ctx, since, r->batch, r->has_filter ? &r->filter : NULL, collect,
                              b, &last, &b->more, eb);
    pthread_mutex_unlock(&r->src_mu);
    if (!e && r->opaque && strlen(last_text) >= BR_REP_SEQ_MAX)
        e = br_fail(eb, BR_EPROTO, "the source's seq is longer than %d bytes", BR_REP_SEQ_MAX - 1);
    if (!e && b->err)
        e = br_fail(eb, b->err, "collecting changes: %s", br_strerror(b->err));
    if (e)
        goto fail;
    b->d.changes_read = b->n;
    b->last = last;
    snprintf(b->last_text, sizeof b->last_text, "%s", r->opaque ? last_text : "");
    /* opaque seqs have no order: "advanced" means "differs" */
    bool advanced = r->opaque ? strcmp(last_text, since_text) != 0 : br_hlc_cmp(last, since) > 0;
    if (b->n == 0) {
        if (advanced) { /* the filter skipped entries: move past them */
            *out = b;
            return BR_OK;
        }
        batch_free(b);
        return BR_OK;
    }
    if (r->opaque && !advanced) {
        e = br_fail(eb, BR_EPROTO,
                    "no_progress: the source returned %zu changes after %.64s but the same "
                    "last_seq",
                    b->n, since_text);
        br_log(BR_LOG_ERROR, TAG, "event=no_progress rep=%s since=%.64s", r->id, since_text);
        goto fail;
    }
    if (!advanced) {
        char t1[BR_HLC_TEXT_MAX], t2[BR_HLC_TEXT_MAX];
        br_hlc_format(since, t1);
        br_hlc_format(last, t2);
        e = br_fail(eb, BR_EPROTO,
                    "no_progress: the source returned %zu changes after %s but last_seq %s", b->n,
                    t1, t2);
        br_log(BR_LOG_ERROR, TAG, "event=no_progress rep=%s since=%s last=%s", r->id, t1, t2);
        goto fail;
    }
    struct br_wire_diff *diff = NULL;
    size_t n_diff = 0;
    pthread_mutex_lock(&r->tgt_mu);
    e = tgt->ops->revsdiff(tgt->ctx, b->docs, b->n, &b->a, &diff, &n_diff, eb);
    pthread_mutex_unlock(&r->tgt_mu);
    if (e)
        goto fail;
    if (n_diff) {
        struct br_wire_revdoc *docs = NULL;
        size_t n_docs = 0, n_put = 0;
        e = fetch(r, p, b, diff, n_diff, &docs, &n_docs, eb);
        if (e)
            goto fail;
        /* keep what the source still had (compaction may have dropped a body meanwhile) */
        for (size_t i = 0; i < n_docs; i++) {
            if (docs[i].missing) {
                b->d.doc_read_failures++;
                continue;
            }
            b->d.docs_read++;
            b->d.bytes += docs[i].body_len;
            for (size_t j = 0; j < docs[i].n_atts; j++)
                if (docs[i].atts[j].has_data) {
                    b->d.atts_sent++;
                    b->d.bytes += docs[i].atts[j].data_len;
                }
            docs[n_put++] = docs[i];
        }
        b->diffed = true;
        b->put = docs;
        b->n_put = n_put;
    }
    *out = b;
    return BR_OK;
fail:
    batch_free(b);
    return e;
}

/* Write one batch read by read_batch and save the checkpoint. */
static br_err write_batch(br_rep *r, struct batch *b, struct br_errbuf *eb)
{
    struct br_endpoint *tgt = r->tgt;
    struct br_rep_stats d = b->d;
    br_err e = BR_OK;
    /* The target's clock learns the source's newest stamp of the batch: it only moves forward,
     * and a peer too far ahead is refused (logged), never adopted (REP-13). */
    if (b->diffed && !r->opaque) {
        pthread_mutex_lock(&r->tgt_mu);
        br_err ce = tgt->ops->hlc_merge(tgt->ctx, b->max_seq);
        pthread_mutex_unlock(&r->tgt_mu);
        if (ce == BR_ECLOCK)
            br_log(BR_LOG_WARN, TAG, "event=hlc_skew rep=%s source=%s", r->id, r->src->name);
    }
    if (b->n_put) {
        br_err *res = br_wire_alloc(&b->a, b->n_put * sizeof *res);
        if (!res) {
            e = BR_ENOMEM;
            goto out;
        }
        pthread_mutex_lock(&r->tgt_mu);
        e = tgt->ops->put_revs(tgt->ctx, b->put, b->n_put, res, eb);
        pthread_mutex_unlock(&r->tgt_mu);
        if (e)
            goto out;
        for (size_t i = 0; i < b->n_put; i++) {
            if (res[i])
                d.doc_write_failures++;
            else
                d.docs_written++;
        }
    }
    d.batches = 1;
    if (d.docs_written && !r->opaque && r->on_written)
        r->on_written(r->arg, b->max_seq, (size_t)d.docs_written);
    e = cp_save(r, b->last, b->last_text, eb);
    if (e)
        goto out;
    pthread_mutex_lock(&r->mu);
    r->stats.last_seq = b->last;
    if (r->opaque)
        snprintf(r->stats.last_seq_text, sizeof r->stats.last_seq_text, "%s", b->last_text);
    pthread_mutex_unlock(&r->mu);
out:
    add_stats(r, &d);
    return e;
}

/* Make the target's writes so far durable (endpoint.h `commit`), when it has the call. */
static br_err commit(br_rep *r, struct br_errbuf *eb)
{
    struct br_endpoint *tgt = r->tgt;
    if (!tgt->ops->commit)
        return BR_OK;
    pthread_mutex_lock(&r->tgt_mu);
    br_err e = tgt->ops->commit(tgt->ctx, eb);
    pthread_mutex_unlock(&r->tgt_mu);
    return e;
}

/* A continuous run caught up: what it wrote since its last commit (*written) becomes durable
 * (*written is cleared once it is), then it waits for the source's next change (BR_OK also
 * after the idle timeout). *closed: the source was interrupted, the run ends without an
 * error. */
static br_err wait_source(br_rep *r, bool *written, struct br_hlc since, const char *since_text,
                          bool *closed, struct br_errbuf *eb)
{
    if (*written) {
        br_err ce = commit(r, eb);
        if (ce)
            return ce;
        *written = false;
    }
    pthread_mutex_lock(&r->src_mu);
    br_err e = r->opaque ? r->src->ops->wait_opaque(r->src->ctx, since_text, r->idle_ms)
                         : r->src->ops->wait(r->src->ctx, since, r->idle_ms);
    pthread_mutex_unlock(&r->src_mu);
    if (e == BR_ETIMEDOUT)
        return BR_OK;
    if (e == BR_ECLOSED) {
        *closed = true;
        return BR_OK;
    }
    if (e)
        return br_fail(eb, e, "waiting for changes on %s: %s", r->src->name, br_strerror(e));
    return BR_OK;
}

struct reader {
    br_rep *r;
    struct pipe *p;
};

/* The reader thread: read batches into the queue until the source has nothing more (one-shot),
 * the run is cancelled, the writer stops, or an error. */
static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    br_rep *r = rd->r;
    struct pipe *p = rd->p;
    struct br_errbuf *eb = &p->reader_eb;
    struct br_hlc since;
    char since_text[BR_REP_SEQ_MAX];
    uint64_t committed = 0; /* batches written when the target last committed */
    br_err e = BR_OK;
    pthread_mutex_lock(&r->mu);
    since = r->stats.last_seq;
    snprintf(since_text, sizeof since_text, "%s", r->stats.last_seq_text);
    pthread_mutex_unlock(&r->mu);
    while (!atomic_load(&r->cancelled)) {
        struct batch *b = NULL;
        e = read_batch(r, p, since, since_text, &b, eb);
        if (e)
            break;
        if (!b) {
            /* nothing new: a one-shot run is done; a continuous one waits for the source,
             * once everything read is written (so the wait is the source's only call) */
            if (!r->continuous || !pipe_drain(p))
                break;
            pthread_mutex_lock(&p->mu);
            uint64_t written = p->written;
            pthread_mutex_unlock(&p->mu);
            bool closed = false, pending = written != committed;
            e = wait_source(r, &pending, since, since_text, &closed, eb);
            if (!pending)
                committed = written;
            if (e || closed)
                break;
            continue;
        }
        since = b->last;
        snprintf(since_text, sizeof since_text, "%s", b->last_text);
        bool last = !b->more && !r->continuous; /* the source said this was the end */
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->queued >= PIPE_DEPTH)
            pthread_cond_wait(&p->cv, &p->mu);
        bool stop = p->stop;
        if (!stop) {
            if (p->tail)
                p->tail->next = b;
            else
                p->head = b;
            p->tail = b;
            p->queued++;
            p->read++;
            pthread_cond_broadcast(&p->cv);
        }
        pthread_mutex_unlock(&p->mu);
        if (stop) {
            batch_free(b);
            break;
        }
        if (last)
            break;
    }
    pthread_mutex_lock(&p->mu);
    p->reader_done = true;
    p->reader_err = e;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* opts.serial: this thread reads a batch, writes it, and only then reads the next (no reader
 * thread). Same calls, same checkpoints and the same commit points as the pipelined run. */
static br_err run_serial(br_rep *r, struct pipe *p, struct br_errbuf *eb)
{
    struct br_hlc since;
    char since_text[BR_REP_SEQ_MAX];
    bool dirty = false;
    br_err e = BR_OK;
    pthread_mutex_lock(&r->mu);
    since = r->stats.last_seq;
    snprintf(since_text, sizeof since_text, "%s", r->stats.last_seq_text);
    pthread_mutex_unlock(&r->mu);
    while (!atomic_load(&r->cancelled)) {
        struct batch *b = NULL;
        e = read_batch(r, p, since, since_text, &b, eb);
        if (e)
            break;
        if (!b) {
            if (!r->continuous)
                break;
            bool closed = false;
            e = wait_source(r, &dirty, since, since_text, &closed, eb);
            if (e || closed)
                break;
            continue;
        }
        since = b->last;
        snprintf(since_text, sizeof since_text, "%s", b->last_text);
        bool last = !b->more && !r->continuous;
        p->read++;
        e = write_batch(r, b, eb);
        batch_free(b);
        p->written++;
        dirty = true;
        if (e || last)
            break;
    }
    if (dirty) { /* the run's writes, even those before an error, become durable */
        br_err ce = commit(r, e ? NULL : eb);
        if (!e)
            e = ce;
    }
    return e;
}

br_err br_rep_run(br_rep *r, struct br_errbuf *eb)
{
    br_err e = cp_load(r, r->src, &r->cp_src, eb);
    if (!e)
        e = cp_load(r, r->tgt, &r->cp_tgt, eb);
    if (e)
        return e;
    struct br_hlc start = r->opaque ? BR_HLC_MIN : cp_common(&r->cp_src, &r->cp_tgt);
    pthread_mutex_lock(&r->mu);
    r->stats.start_seq = start;
    r->stats.last_seq = start;
    if (r->opaque) {
        const char *st = cp_common_opaque(&r->cp_src, &r->cp_tgt);
        snprintf(r->stats.start_seq_text, sizeof r->stats.start_seq_text, "%s", st);
        snprintf(r->stats.last_seq_text, sizeof r->stats.last_seq_text, "%s", st);
    }
    pthread_mutex_unlock(&r->mu);
    char t[BR_REP_SEQ_MAX];
    if (r->opaque)
        snprintf(t, sizeof t, "%.64s", r->stats.start_seq_text);
    else
        br_hlc_format(start, t);
    br_log(BR_LOG_INFO, TAG, "event=rep_start rep=%s source=%s target=%s since=%s continuous=%d",
           r->id, r->src->name, r->tgt->name, t, r->continuous);

    struct pipe p = {0};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    struct reader rd = {r, &p};
    bool dirty = false; /* the writer wrote batches since the target's last commit */
    pthread_t th;
    if (r->serial) {
        e = run_serial(r, &p, eb);
        goto done;
    }
    if (pthread_create(&th, NULL, reader_main, &rd) != 0) {
        e = br_fail(eb, BR_ENOMEM, "cannot start the replication's reader thread");
        goto done;
    }
    /* the writer: this thread */
    for (;;) {
        pthread_mutex_lock(&p.mu);
        while (!p.head && !p.reader_done)
            pthread_cond_wait(&p.cv, &p.mu);
        struct batch *b = p.head;
        if (b) {
            p.head = b->next;
            if (!p.head)
                p.tail = NULL;
            p.queued--;
            pthread_cond_broadcast(&p.cv);
        }
        pthread_mutex_unlock(&p.mu);
        if (!b)
            break;
        bool wrote = !atomic_load(&r->cancelled); /* a cancelled run writes nothing more */
        e = wrote ? write_batch(r, b, eb) : BR_OK;
        batch_free(b);
        dirty = dirty || wrote;
        pthread_mutex_lock(&p.mu);
        p.written++;
        if (e || atomic_load(&r->cancelled))
            p.stop = true;
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
        if (e)
            break;
    }
    if (e) { /* a reader waiting on the source must not wait out its idle time */
        pthread_mutex_lock(&p.mu);
        p.stop = true;
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
    }
    pthread_join(th, NULL);
    if (dirty) { /* the run's writes, even those before an error, become durable */
        br_err ce = commit(r, e ? NULL : eb);
        if (!e)
            e = ce;
    }
    for (struct batch *b = p.head, *n; b; b = n) {
        n = b->next;
        batch_free(b);
    }
    if (!e && p.reader_err && !atomic_load(&r->cancelled)) {
        e = p.reader_err;
        br_errbuf_set(eb, "%s", p.reader_eb.msg);
    }
done:
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    if (r->opaque)
        snprintf(t, sizeof t, "%.64s", r->stats.last_seq_text);
    else
        br_hlc_format(r->stats.last_seq, t);
    br_log(e ? BR_LOG_ERROR : BR_LOG_INFO, TAG, "event=rep_end rep=%s last=%s written=%llu err=%s",
           r->id, t, (unsigned long long)r->stats.docs_written, br_errname(e));
    return e;
}
