/* find.c — br_db_find: plan a compiled query, gather candidates from the path index or a scan,
 * check each against its document on one snapshot, order, page, and mint continuation tokens
 * that resume on that same snapshot (find.h).
 *
 * A token is "1.<cursor id>.<query fingerprint>.<i|o>.<hex>": the held snapshot, a hash of
 * the query (without limit/offset, which may change between pages), and where to resume: after
 * a document id (id order) or at a row number (order_by order, which is stable on one
 * snapshot). Cursors are reference counted, so a snapshot evicted while a page is being read
 * is released only when that page is done. */
#include "barrel/find.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>

#include "barrel/alloc.h"
#include "barrel/env.h"

#include "store_int.h"

/* ---- cursors: snapshots held for continuation tokens ---- */

struct find_cursor {
    uint64_t id;
    uint64_t ipol_gen; /* the index policy the snapshot was planned with */
    int refs;          /* under db->cur_mu: the registry's, plus one per running page */
    const rocksdb_snapshot_t *snap;
    uint64_t last_used_ms;
};

static void cursor_unref(struct br_db *db, struct find_cursor *c)
{
    pthread_mutex_lock(&db->cur_mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&db->cur_mu);
    if (last) {
        rocksdb_release_snapshot(db->s->rdb, c->snap);
        br_free(c);
    }
}

static uint64_t now_ms(const struct br_db *db)
{
    return br_env_mono_ns(db->s->env) / 1000000u;
}

/* Drop registry entries idle past the TTL (under cur_mu); returns those to release. */
static size_t cursors_expire(struct br_db *db, uint64_t now, struct find_cursor **drop)
{
    size_t n = 0;
    for (size_t i = 0; i < BR_FIND_CURSORS; i++) {
        struct find_cursor *c = db->cursors[i];
        if (c && now - c->last_used_ms > BR_FIND_CURSOR_TTL_MS) {
            db->cursors[i] = NULL;
            drop[n++] = c;
        }
    }
    return n;
}

static void release_dropped(struct br_db *db, struct find_cursor **drop, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cursor_unref(db, drop[i]);
}

/* Find a live cursor and take a reference; NULL if it expired. */
static struct find_cursor *cursor_get(struct br_db *db, uint64_t id)
{
    struct find_cursor *drop[BR_FIND_CURSORS], *found = NULL;
    uint64_t now = now_ms(db);
    pthread_mutex_lock(&db->cur_mu);
    size_t nd = cursors_expire(db, now, drop);
    for (size_t i = 0; i < BR_FIND_CURSORS; i++) {
        struct find_cursor *c = db->cursors[i];
        if (c && c->id == id) {
            c->refs++;
            c->last_used_ms = now;
            found = c;
            break;
        }
    }
    pthread_mutex_unlock(&db->cur_mu);
    release_dropped(db, drop, nd);
    return found;
}

/* Register c (which holds the caller's reference) so later pages can find it. */
static void cursor_register(struct br_db *db, struct find_cursor *c)
{
    struct find_cursor *drop[BR_FIND_CURSORS + 1];
    uint64_t now = now_ms(db);
    pthread_mutex_lock(&db->cur_mu);
    size_t nd = cursors_expire(db, now, drop);
    size_t slot = BR_FIND_CURSORS, oldest = 0;
    for (size_t i = 0; i < BR_FIND_CURSORS; i++) {
        if (!db->cursors[i]) {
            slot = i;
            break;
        }
        if (db->cursors[i]->last_used_ms < db->cursors[oldest]->last_used_ms)
            oldest = i;
    }
    if (slot == BR_FIND_CURSORS) { /* full: the least recently used goes */
        drop[nd++] = db->cursors[oldest];
        slot = oldest;
    }
    c->id = ++db->next_cursor;
    c->refs++;
    c->last_used_ms = now;
    db->cursors[slot] = c;
    pthread_mutex_unlock(&db->cur_mu);
    release_dropped(db, drop, nd);
}

void find_cursors_release(struct br_db *db)
{
    for (size_t i = 0; i < BR_FIND_CURSORS; i++) {
        if (db->cursors[i]) {
            cursor_unref(db, db->cursors[i]);
            db->cursors[i] = NULL;
        }
    }
}

_Static_assert(sizeof(((struct br_db *)0)->cursors) / sizeof(void *) == BR_FIND_CURSORS,
               "store_int.h sizes the cursor registry as find.h says");

/* ---- the plan ---- */

enum plan_kind { PLAN_FULL, PLAN_ID, PLAN_SEEK, PLAN_MULTI, PLAN_SCAN };
static const char *const plan_names[] = {"full_scan", "id_scan", "index_seek", "multi_index",
                                         "index_scan"};

#define MAX_DRIVERS 16

struct plan {
    enum plan_kind kind;
    const struct br_qnode *drv[MAX_DRIVERS];
    size_t n_drv;
    /* The drivers whose postings prove them for every candidate (proves_exactly): candidates
     * are checked against the rest of the query only. */
    const struct br_qnode *proven[MAX_DRIVERS];
    size_t n_proven;
};

static bool is_scalar_type(enum br_pv_type t)
{
    return t == BR_PV_NULL || t == BR_PV_FALSE || t == BR_PV_TRUE || t == BR_PV_INT ||
           t == BR_PV_FLOAT || t == BR_PV_STRING;
}

static bool is_range(const struct br_qnode *n)
{
    bool cmp = n->op == BR_Q_LT || n->op == BR_Q_LE || n->op == BR_Q_GT || n->op == BR_Q_GE;
    bool ordered_type =
        n->val.type == BR_PV_INT || n->val.type == BR_PV_FLOAT || n->val.type == BR_PV_STRING;
    return n->path && ((cmp && ordered_type) || (n->op == BR_Q_PREFIX && n->val.s));
}

/* Does a posting for v (path prefix | tag | value) mean that the document holds a value equal
 * to v, as the query compares? Strings short enough that no document string is cut to them
 * (paths.h cuts at BR_PATH_STRING_CUT bytes, backing up to a character boundary: at most 3),
 * booleans, null, and numbers whose double is exact and below 2^53 in magnitude (a document
 * number with the same double is then that number: larger integers share doubles). */
static bool posting_is_exact(const struct br_qval *v)
{
    switch (v->type) {
    case BR_PV_NULL:
    case BR_PV_FALSE:
    case BR_PV_TRUE:
        return true;
    case BR_PV_INT:
        return v->i > -(INT64_C(1) << 53) && v->i < (INT64_C(1) << 53);
    case BR_PV_FLOAT:
        return v->f > -9007199254740992.0 && v->f < 9007199254740992.0;
    case BR_PV_STRING:
        return v->s_len + 4 <= BR_PATH_STRING_CUT;
    }
    return false;
}

/* Does every posting a driving condition reads prove the condition for its document? Only for
 * one-segment paths: a posting's path is the document's keys joined with '/', and a key may
 * itself hold '/' ({"a/b": 1} and {"a": {"b": 1}} share postings), while a top-level key has
 * exactly one spelling. A one-segment query path reaches the value of that top-level key,
 * flattening arrays, as the paths of postings do. */
static bool proves_exactly(const struct br_qnode *c)
{
    if (!c->path || memchr(c->path, '/', c->path_len))
        return false;
    if (c->op == BR_Q_EQ)
        return posting_is_exact(&c->val);
    if (c->op != BR_Q_IN)
        return false;
    for (size_t i = 0; i < c->n_vals; i++)
        if (!posting_is_exact(&c->vals[i]))
            return false;
    return true;
}

static void plan_make(const struct br_db *db, const br_query *q, struct plan *p)
{
    memset(p, 0, sizeof *p);
    if (q->id_prefix || q->id_start || q->id_end) {
        p->kind = PLAN_ID;
        return;
    }
    const struct br_qnode *conds = &q->root;
    size_t n = 1;
    if (q->root.op == BR_Q_AND) {
        conds = q->root.kids;
        n = q->root.n_kids;
    }
    const struct br_qnode *scan = NULL, *exists = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct br_qnode *c = &conds[i];
        if (!c->path || !index_wants(db, c->path, c->path_len))
            continue; /* not a path condition, or a path the policy leaves unindexed */
        if ((c->op == BR_Q_EQ && is_scalar_type(c->val.type)) ||
            (c->op == BR_Q_IN && c->n_vals > 0)) {
            if (p->n_drv < MAX_DRIVERS)
                p->drv[p->n_drv++] = c;
        } else if (!scan && is_range(c)) {
            scan = c;
        } else if (!exists && c->op == BR_Q_EXISTS) {
            exists = c;
        }
    }
    if (p->n_drv) {
        p->kind = p->n_drv > 1 ? PLAN_MULTI : PLAN_SEEK;
        for (size_t i = 0; i < p->n_drv; i++)
            if (proves_exactly(p->drv[i]))
                p->proven[p->n_proven++] = p->drv[i];
    } else if (scan || exists) {
        p->kind = PLAN_SCAN;
        p->drv[p->n_drv++] = scan ? scan : exists;
    } else {
        p->kind = PLAN_FULL;
    }
}

/* ---- candidate ids from the index ---- */

/* Candidate ids: pointers into chunks of one arena (no allocation per id), and whether they
 * arrived in strictly increasing order (one equality's postings do: no sort needed). */
struct idchunk {
    struct idchunk *next;
    size_t used, cap;
    char data[];
};

struct idlist {
    char **ids; /* NUL-terminated (document ids hold no NUL) */
    size_t n, cap;
    struct idchunk *chunks;
    bool unsorted;
};

static void idlist_fini(struct idlist *l)
{
    while (l->chunks) {
        struct idchunk *c = l->chunks;
        l->chunks = c->next;
        br_free(c);
    }
    br_free(l->ids);
    memset(l, 0, sizeof *l);
}

static br_err idlist_add(struct idlist *l, const char *id, size_t len)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        char **ni = br_realloc(l->ids, nc * sizeof *ni);
        if (!ni)
            return BR_ENOMEM;
        l->ids = ni;
        l->cap = nc;
    }
    struct idchunk *c = l->chunks;
    if (!c || c->cap - c->used < len + 1) {
        size_t cap = len + 1 > 65536 ? len + 1 : 65536;
        c = br_malloc(sizeof *c + cap);
        if (!c)
            return BR_ENOMEM;
        c->next = l->chunks;
        c->used = 0;
        c->cap = cap;
        l->chunks = c;
    }
    char *d = c->data + c->used;
    memcpy(d, id, len);
    d[len] = 0;
    c->used += len + 1;
    if (l->n && !l->unsorted && strcmp(l->ids[l->n - 1], d) >= 0)
        l->unsorted = true;
    l->ids[l->n++] = d;
    return BR_OK;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void idlist_sort_unique(struct idlist *l)
{
    if (l->n < 2 || !l->unsorted)
        return;
    qsort(l->ids, l->n, sizeof *l->ids, str_cmp);
    size_t w = 1;
    for (size_t i = 1; i < l->n; i++)
        if (strcmp(l->ids[i], l->ids[w - 1]) != 0)
            l->ids[w++] = l->ids[i];
    l->n = w;
    l->unsorted = false;
}

/* Keep in a only the ids also in b (both sorted and unique). */
static void idlist_intersect(struct idlist *a, const struct idlist *b)
{
    size_t i = 0, j = 0, w = 0;
    while (i < a->n) {
        int c = j < b->n ? strcmp(a->ids[i], b->ids[j]) : -1;
        if (c == 0) {
            a->ids[w++] = a->ids[i++];
            j++;
        } else if (c < 0) {
            i++;
        } else {
            j++;
        }
    }
    a->n = w;
}

struct fctx {
    struct br_db *db;
    const br_query *q;
    const struct plan *plan;
    const rocksdb_snapshot_t *snap;
    struct br_find_result *res;
    br_find_cb cb;
    void *arg;
    /* resuming */
    const char *after; /* id order: skip ids <= after */
    uint64_t start;    /* order_by: first row to deliver */
    /* delivery */
    uint64_t to_skip; /* offset still to skip (first page) */
    bool stop;
    char last_id[BR_DOCID_MAX + 1];
    /* order_by collection */
    struct srow *rows;
    size_t n_rows, cap_rows;
    br_err err;
};

/* Every posting in [lo, hi) whose path prefix is plen bytes: add its document id. */
static br_err scan_postings(struct fctx *f, const br_buf *lo, const br_buf *hi, size_t plen,
                            struct idlist *out)
{
    br_store *s = f->db->s;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, f->snap);
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi->data, hi->len);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_INDEX]);
    br_err e = BR_OK;
    for (rocksdb_iter_seek(it, (const char *)lo->data, lo->len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *id;
        size_t idl;
        f->res->postings++;
        if (!index_posting_docid(k, kl, plen, &id, &idl)) {
            e = BR_ESTORE;
            break;
        }
        e = idlist_add(out, id, idl);
        if (e)
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (err && !e)
        e = store_rdb_err(err, "find_postings");
    else
        rocksdb_free(err);
    return e;
}

/* hi = the first key after every key starting with k (k itself unchanged). */
static br_err after_prefix(const br_buf *k, br_buf *hi)
{
    return store_prefix_end(k->data, k->len, hi);
}

static br_err put_qval(br_buf *k, const struct br_qval *v)
{
    return index_put_value(k, v->type, v->i, v->f, v->s, v->s_len);
}

/* The ids one driving condition selects (sorted, unique). */
static br_err driver_ids(struct fctx *f, const struct br_qnode *c, struct idlist *out)
{
    br_buf lo, hi;
    br_buf_init(&lo, 0);
    br_buf_init(&hi, 0);
    br_err e = index_path_prefix(&lo, f->db->dbid, c->path, c->path_len);
    size_t plen = lo.len;
    if (e)
        goto out;
    if (c->op == BR_Q_EQ || c->op == BR_Q_IN) {
        const struct br_qval *vals = c->op == BR_Q_EQ ? &c->val : c->vals;
        size_t n = c->op == BR_Q_EQ ? 1 : c->n_vals;
        for (size_t i = 0; i < n && !e; i++) {
            lo.len = plen;
            e = put_qval(&lo, &vals[i]);
            if (!e)
                e = after_prefix(&lo, &hi);
            if (!e)
                e = scan_postings(f, &lo, &hi, plen, out);
        }
    } else if (c->op == BR_Q_EXISTS) {
        e = after_prefix(&lo, &hi);
        if (!e)
            e = scan_postings(f, &lo, &hi, plen, out);
    } else if (c->op == BR_Q_PREFIX) {
        size_t n = c->val.s_len < BR_PATH_STRING_CUT ? c->val.s_len : BR_PATH_STRING_CUT;
        uint8_t tag = IDX_STR;
        e = br_buf_append(&lo, &tag, 1);
        if (!e)
            e = index_put_string(&lo, c->val.s, n, false);
        if (!e)
            e = after_prefix(&lo, &hi);
        if (!e)
            e = scan_postings(f, &lo, &hi, plen, out);
    } else { /* a range on numbers or strings: inclusive bounds, the documents decide */
        bool lower = c->op == BR_Q_GT || c->op == BR_Q_GE;
        bool num = c->val.type != BR_PV_STRING;
        uint8_t tag = num ? IDX_NUM : IDX_STR;
        br_buf bound;
        br_buf_init(&bound, 0);
        e = br_buf_append(&bound, lo.data, plen);
        if (!e)
            e = put_qval(&bound, &c->val); /* tag | value */
        if (!e && lower) {
            lo.len = plen;
            e = br_buf_append(&lo, bound.data, bound.len);
            if (!e) { /* up to the end of this type */
                br_buf t;
                br_buf_init(&t, 0);
                e = br_buf_append(&t, lo.data, plen);
                if (!e)
                    e = br_buf_append(&t, &tag, 1);
                if (!e)
                    e = after_prefix(&t, &hi);
                br_buf_fini(&t);
            }
        } else if (!e) {
            e = after_prefix(&bound, &hi);
            lo.len = plen;
            if (!e)
                e = br_buf_append(&lo, &tag, 1);
        }
        br_buf_fini(&bound);
        if (!e)
            e = scan_postings(f, &lo, &hi, plen, out);
    }
out:
    br_buf_fini(&lo);
    br_buf_fini(&hi);
    if (!e)
        idlist_sort_unique(out);
    return e;
}

/* ---- checking and delivering rows ---- */

struct sortval {
    int rank; /* 0 null, 1 false, 2 true, 3 number, 4 string, 5 missing */
    double f;
    int64_t i;
    bool is_int;
    char *s;
    size_t s_len;
};

struct srow {
    char *id;
    size_t id_len;
    struct br_rev rev;
    uint8_t *body;
    size_t body_len;
    struct sortval *keys;
};

static void srows_free(struct fctx *f)
{
    for (size_t i = 0; i < f->n_rows; i++) {
        struct srow *r = &f->rows[i];
        for (size_t j = 0; r->keys && j < f->q->n_order; j++)
            br_free(r->keys[j].s);
        br_free(r->keys);
        br_free(r->id);
        br_free(r->body);
    }
    br_free(f->rows);
    f->rows = NULL;
    f->n_rows = f->cap_rows = 0;
}

struct keyfind {
    const char *path;
    size_t len;
    struct sortval *out;
    br_err err;
};

static int first_value(void *arg, const struct br_path_value *pv)
{
    struct keyfind *kf = arg;
    if (pv->keys_len != kf->len || memcmp(pv->keys, kf->path, kf->len) != 0)
        return 0;
    struct sortval *v = kf->out;
    switch (pv->type) {
    case BR_PV_NULL:
        v->rank = 0;
        break;
    case BR_PV_FALSE:
        v->rank = 1;
        break;
    case BR_PV_TRUE:
        v->rank = 2;
        break;
    case BR_PV_INT:
        v->rank = 3;
        v->is_int = true;
        v->i = pv->i;
        v->f = (double)pv->i;
        break;
    case BR_PV_FLOAT:
        v->rank = 3;
        v->f = pv->f;
        break;
    case BR_PV_STRING:
        v->rank = 4;
        v->s = br_strndup(pv->s, pv->s_len);
        v->s_len = pv->s_len;
        if (!v->s)
            kf->err = BR_ENOMEM;
        break;
    }
    return 1;
}

static br_err collect_row(struct fctx *f, const struct br_find_row *row)
{
    if (f->n_rows == f->cap_rows) {
        size_t nc = f->cap_rows ? f->cap_rows * 2 : 64;
        struct srow *nr = br_realloc(f->rows, nc * sizeof *nr);
        if (!nr)
            return BR_ENOMEM;
        f->rows = nr;
        f->cap_rows = nc;
    }
    struct srow *r = &f->rows[f->n_rows];
    memset(r, 0, sizeof *r);
    r->id = br_strndup(row->id, row->id_len);
    r->id_len = row->id_len;
    r->rev = row->rev;
    r->body = br_malloc(row->body_len ? row->body_len : 1);
    r->keys = br_calloc(f->q->n_order, sizeof *r->keys);
    f->n_rows++;
    if (!r->id || !r->body || !r->keys)
        return BR_ENOMEM;
    memcpy(r->body, row->body, row->body_len);
    r->body_len = row->body_len;
    for (size_t j = 0; j < f->q->n_order; j++) {
        r->keys[j].rank = 5;
        struct keyfind kf = {f->q->order[j].path, f->q->order[j].path_len, &r->keys[j], BR_OK};
        br_err e = br_paths_foreach(row->body, row->body_len, first_value, &kf);
        if (kf.err)
            return kf.err;
        if (e == BR_ENOMEM)
            return e;
    }
    return BR_OK;
}

static int sortval_cmp(const struct sortval *a, const struct sortval *b)
{
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->rank == 3) {
        if (a->is_int && b->is_int)
            return a->i < b->i ? -1 : a->i > b->i;
        return a->f < b->f ? -1 : a->f > b->f;
    }
    if (a->rank == 4) {
        size_t n = a->s_len < b->s_len ? a->s_len : b->s_len;
        int c = memcmp(a->s, b->s, n);
        if (c)
            return c < 0 ? -1 : 1;
        return a->s_len < b->s_len ? -1 : a->s_len > b->s_len;
    }
    return 0;
}

static const br_query *sort_q; /* qsort has no context argument; guarded by sort_mu */
static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER;

static int srow_cmp(const void *pa, const void *pb)
{
    const struct srow *a = pa, *b = pb;
    for (size_t j = 0; j < sort_q->n_order; j++) {
        bool am = a->keys[j].rank == 5, bm = b->keys[j].rank == 5;
        if (am != bm)
            return am ? 1 : -1; /* missing last, either direction */
        int c = sortval_cmp(&a->keys[j], &b->keys[j]);
        if (c)
            return sort_q->order[j].desc ? -c : c;
    }
    return strcmp(a->id, b->id);
}

/* A row that matched: deliver it (id order) or keep it for sorting. */
static void accept(struct fctx *f, const struct br_find_row *row)
{
    if (f->q->n_order) {
        f->err = collect_row(f, row);
        if (f->err)
            f->stop = true;
        return;
    }
    if (f->to_skip) {
        f->to_skip--;
        return;
    }
    if (f->q->limit && f->res->rows == f->q->limit) {
        f->res->has_more = true;
        f->stop = true;
        return;
    }
    f->res->rows++;
    memcpy(f->last_id, row->id, row->id_len);
    f->last_id[row->id_len] = 0;
    if (f->cb(f->arg, row))
        f->stop = true;
}

/* Check one document record against the query; accept it if it matches. */
static void consider(struct fctx *f, const char *id, size_t id_len, const char *v, size_t vl)
{
    if (f->after) {
        size_t al = strlen(f->after), n = al < id_len ? al : id_len;
        int c = memcmp(id, f->after, n);
        if (c < 0 || (c == 0 && id_len <= al))
            return;
    }
    struct docrec r;
    docrec_init(&r);
    br_err e = docrec_decode((const uint8_t *)v, vl, &r);
    if (e) {
        docrec_fini(&r);
        if (e == BR_ENOMEM) {
            f->err = e;
            f->stop = true;
        }
        return; /* a corrupt record matches nothing; br_db_check reports it */
    }
    f->res->examined++;
    size_t bl;
    bool deleted;
    const uint8_t *body = docrec_filter_body(&r, &bl, &deleted);
    if (body && !deleted &&
        query_match_stored(f->q, f->plan->proven, f->plan->n_proven, body, bl)) {
        struct br_find_row row = {id, id_len, r.tree.nodes[br_revtree_winner(&r.tree)].rev, body,
                                  bl};
        accept(f, &row);
    }
    docrec_fini(&r);
}

/* Iterate document records in [lo, hi) in id order. */
static br_err scan_docs(struct fctx *f, const br_buf *lo, const br_buf *hi)
{
    br_store *s = f->db->s;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, f->snap);
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi->data, hi->len);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_DOCS]);
    for (rocksdb_iter_seek(it, (const char *)lo->data, lo->len); !f->stop && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl > 4)
            consider(f, k + 4, kl - 4, v, vl);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (err)
        return store_rdb_err(err, "find_scan");
    return BR_OK;
}

/* Read the candidates' records in id order, a chunk at a time with one batched MultiGet on
 * sorted keys (bench/query_bench.c: one point lookup per candidate was most of a find, and
 * chunks of 256 cost a third more than chunks of 1024 on the 2,000-hit query). */
#define MGET_CHUNK 4096

static br_err run_ids(struct fctx *f, const struct idlist *ids)
{
    br_store *s = f->db->s;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, f->snap);
    br_buf keys;
    br_buf_init(&keys, 0);
    struct mget_slot {
        const char *kp;
        size_t kl, koff;
        rocksdb_pinnableslice_t *val;
        char *err;
    };
    size_t chunk = ids->n < MGET_CHUNK ? ids->n : MGET_CHUNK;
    /* separate arrays, as rocksdb_batched_multi_get_cf wants them; one allocation */
    void *mem = br_malloc(chunk * sizeof(struct mget_slot) + 1);
    if (!mem) {
        br_buf_fini(&keys);
        rocksdb_readoptions_destroy(ro);
        return BR_ENOMEM;
    }
    const char **kp = mem;
    size_t *kl = (size_t *)(kp + chunk), *koff = kl + chunk;
    rocksdb_pinnableslice_t **vals = (rocksdb_pinnableslice_t **)(koff + chunk);
    char **errs = (char **)(vals + chunk);
    br_err e = BR_OK;
    for (size_t at = 0; at < ids->n && !f->stop && !e; at += MGET_CHUNK) {
        size_t n = ids->n - at < MGET_CHUNK ? ids->n - at : MGET_CHUNK;
        br_buf_reset(&keys);
        for (size_t i = 0; i < n && !e; i++) {
            size_t il = strlen(ids->ids[at + i]);
            koff[i] = keys.len;
            kl[i] = 4 + il;
            e = br_buf_append(&keys, f->db->dbid, 4);
            if (!e)
                e = br_buf_append(&keys, ids->ids[at + i], il);
        }
        if (e)
            break;
        for (size_t i = 0; i < n; i++)
            kp[i] = (const char *)keys.data + koff[i];
        memset(vals, 0, n * sizeof *vals);
        memset(errs, 0, n * sizeof *errs);
        rocksdb_batched_multi_get_cf(s->rdb, ro, s->cf[CF_DOCS], n, kp, kl, vals, errs, true);
        for (size_t i = 0; i < n; i++) {
            /* Candidates sit in blocks all over the table: start loading the record checked
             * four steps ahead, so that its cache misses overlap this one's work. */
            if (i + 4 < n && vals[i + 4]) {
                size_t pl;
                const char *pv = rocksdb_pinnableslice_value(vals[i + 4], &pl);
                for (size_t o = 0; pv && o < pl && o < 256; o += 64)
                    __builtin_prefetch(pv + o);
            }
            if (errs[i] && !e)
                e = store_rdb_err(errs[i], "find_get");
            else
                rocksdb_free(errs[i]);
            if (!e && !f->stop && vals[i]) { /* no record: a br_db_check problem, skipped */
                size_t vl;
                const char *v = rocksdb_pinnableslice_value(vals[i], &vl);
                if (v)
                    consider(f, ids->ids[at + i], kl[i] - 4, v, vl);
            }
            rocksdb_pinnableslice_destroy(vals[i]);
        }
    }
    br_free(mem);
    br_buf_fini(&keys);
    rocksdb_readoptions_destroy(ro);
    return e;
}

static br_err run_plan(struct fctx *f, const struct plan *p)
{
    br_buf lo, hi;
    br_buf_init(&lo, 0);
    br_buf_init(&hi, 0);
    br_err e = BR_OK;
    const br_query *q = f->q;
    if (p->kind == PLAN_FULL || p->kind == PLAN_ID) {
        if (q->id_prefix) {
            e = store_key(&lo, f->db->dbid, q->id_prefix, strlen(q->id_prefix));
            if (!e)
                e = after_prefix(&lo, &hi);
        } else {
            e = store_key(&lo, f->db->dbid, q->id_start ? q->id_start : "",
                          q->id_start ? strlen(q->id_start) : 0);
            if (!e && q->id_end)
                e = store_key(&hi, f->db->dbid, q->id_end, strlen(q->id_end));
            else if (!e)
                e = store_prefix_end(f->db->dbid, 4, &hi);
        }
        if (!e && f->after) { /* resume: seek past the last delivered id */
            br_buf at;
            br_buf_init(&at, 0);
            e = store_key(&at, f->db->dbid, f->after, strlen(f->after));
            if (!e && (at.len > lo.len ? memcmp(at.data, lo.data, lo.len) >= 0
                                       : memcmp(at.data, lo.data, at.len) > 0)) {
                br_buf t = lo;
                lo = at;
                at = t;
            }
            br_buf_fini(&at);
        }
        if (!e)
            e = scan_docs(f, &lo, &hi);
    } else {
        struct idlist ids = {0};
        for (size_t i = 0; i < p->n_drv && !e; i++) {
            struct idlist one = {0};
            e = driver_ids(f, p->drv[i], i == 0 ? &ids : &one);
            if (!e && i > 0)
                idlist_intersect(&ids, &one);
            idlist_fini(&one);
        }
        if (!e)
            e = run_ids(f, &ids);
        idlist_fini(&ids);
    }
    br_buf_fini(&lo);
    br_buf_fini(&hi);
    return e ? e : f->err;
}

/* ---- tokens ---- */

static br_err fingerprint(const br_query *q, uint64_t *out)
{
    json_t *j;
    br_err e = br_query_to_json(q, &j);
    if (e)
        return e;
    json_object_del(j, "limit");
    json_object_del(j, "offset");
    json_object_del(j, "bookmark");
    char *txt = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!txt)
        return BR_ENOMEM;
    *out = XXH3_64bits(txt, strlen(txt));
    free(txt);
    return BR_OK;
}

struct token {
    uint64_t cursor, fp;
    bool by_row;
    uint64_t row;
    char id[BR_DOCID_MAX + 1];
};

static br_err token_parse(const char *t, struct token *out)
{
    memset(out, 0, sizeof *out);
    unsigned long long c, fp;
    char mode;
    int used = 0;
    if (strlen(t) >= BR_FIND_TOKEN_MAX ||
        sscanf(t, "1.%16llx.%16llx.%c.%n", &c, &fp, &mode, &used) != 3 || used == 0)
        return BR_EINVAL;
    out->cursor = c;
    out->fp = fp;
    const char *rest = t + used;
    if (mode == 'o') {
        char *end;
        out->by_row = true;
        out->row = strtoull(rest, &end, 16);
        return *rest && !*end ? BR_OK : BR_EINVAL;
    }
    if (mode != 'i')
        return BR_EINVAL;
    size_t bin = 0;
    if (sodium_hex2bin((unsigned char *)out->id, BR_DOCID_MAX, rest, strlen(rest), NULL, &bin,
                       NULL) != 0 ||
        bin == 0 || memchr(out->id, 0, bin))
        return BR_EINVAL;
    out->id[bin] = 0;
    return BR_OK;
}

static void token_make(char *out, uint64_t cursor, uint64_t fp, bool by_row, uint64_t row,
                       const char *id)
{
    int n = snprintf(out, BR_FIND_TOKEN_MAX, "1.%016" PRIx64 ".%016" PRIx64 ".%c.", cursor, fp,
                     by_row ? 'o' : 'i');
    if (by_row)
        snprintf(out + n, BR_FIND_TOKEN_MAX - (size_t)n, "%" PRIx64, row);
    else
        sodium_bin2hex(out + n, BR_FIND_TOKEN_MAX - (size_t)n, (const unsigned char *)id,
                       strlen(id));
}

/* ---- the entry points ---- */

br_err br_db_find(br_db *db, const br_query *q, br_find_cb cb, void *arg,
                  struct br_find_result *res)
{
    memset(res, 0, sizeof *res);
    if (db->deleted)
        return BR_ENOTFOUND;
    uint64_t fp;
    br_err e = fingerprint(q, &fp);
    if (e)
        return e;
    struct token tok;
    struct find_cursor *cur = NULL;
    bool resuming = q->bookmark && *q->bookmark;
    if (resuming) {
        if (token_parse(q->bookmark, &tok) || tok.fp != fp)
            return BR_EINVAL; /* not a token of this query */
        if (tok.by_row != (q->n_order > 0))
            return BR_EINVAL;
        cur = cursor_get(db, tok.cursor);
        if (!cur)
            return BR_EINVAL; /* expired: the snapshot is gone */
    } else {
        cur = br_calloc(1, sizeof *cur);
        if (!cur)
            return BR_ENOMEM;
        cur->refs = 1;
    }
    /* Plan and snapshot under one policy: the postings a plan reads are the policy's. */
    struct plan p;
    pthread_rwlock_rdlock(&db->ipol_rw);
    plan_make(db, q, &p);
    if (!resuming) {
        cur->snap = rocksdb_create_snapshot(db->s->rdb);
        cur->ipol_gen = db->ipol_gen;
    } else if (cur->ipol_gen != db->ipol_gen) {
        e = BR_EINVAL; /* the index changed under this cursor's plan */
    }
    pthread_rwlock_unlock(&db->ipol_rw);
    res->plan = plan_names[p.kind];
    if (e) {
        cursor_unref(db, cur);
        return e;
    }
    struct fctx f = {
        .db = db, .q = q, .plan = &p, .snap = cur->snap, .res = res, .cb = cb, .arg = arg};
    if (resuming && !tok.by_row)
        f.after = tok.id;
    else if (!resuming)
        f.to_skip = q->offset;
    e = run_plan(&f, &p);
    uint64_t next_row = 0;
    if (!e && q->n_order) {
        pthread_mutex_lock(&sort_mu);
        sort_q = q;
        qsort(f.rows, f.n_rows, sizeof *f.rows, srow_cmp);
        pthread_mutex_unlock(&sort_mu);
        uint64_t i = resuming ? tok.row : q->offset;
        for (; i < f.n_rows; i++) {
            if (q->limit && res->rows == q->limit) {
                res->has_more = true;
                break;
            }
            struct srow *r = &f.rows[i];
            struct br_find_row row = {r->id, r->id_len, r->rev, r->body, r->body_len};
            res->rows++;
            if (cb(arg, &row)) {
                i++;
                break;
            }
        }
        next_row = i;
    }
    srows_free(&f);
    if (!e && res->has_more) {
        if (!resuming)
            cursor_register(db, cur);
        token_make(res->token, cur->id, fp, q->n_order > 0, next_row, f.last_id);
    }
    cursor_unref(db, cur);
    return e;
}

static json_t *cond_json(const struct br_qnode *c)
{
    static const char *const ops[] = {
        [BR_Q_EQ] = "==", [BR_Q_IN] = "in", [BR_Q_LT] = "<",          [BR_Q_LE] = "<=",
        [BR_Q_GT] = ">",  [BR_Q_GE] = ">=", [BR_Q_PREFIX] = "prefix", [BR_Q_EXISTS] = "exists"};
    return json_pack("{s:s%, s:s}", "path", c->path, c->path_len, "op",
                     (size_t)c->op < sizeof ops / sizeof ops[0] && ops[c->op] ? ops[c->op] : "?");
}

br_err br_db_explain(br_db *db, const br_query *q, json_t **out)
{
    struct plan p;
    pthread_rwlock_rdlock(&db->ipol_rw);
    plan_make(db, q, &p);
    pthread_rwlock_unlock(&db->ipol_rw);
    json_t *qj;
    br_err e = br_query_to_json(q, &qj);
    if (e)
        return e;
    json_t *o = json_object(), *idx = json_array();
    if (!o || !idx || json_object_set_new(o, "plan", json_string(plan_names[p.kind])) ||
        json_object_set_new(o, "index", idx)) {
        json_decref(o);
        json_decref(qj);
        return BR_ENOMEM;
    }
    for (size_t i = 0; i < p.n_drv; i++)
        if (json_array_append_new(idx, cond_json(p.drv[i])))
            e = BR_ENOMEM;
    if (p.kind == PLAN_FULL &&
        json_object_set_new(o, "warning",
                            json_string("No matching index found: every document is read. "
                                        "Index the paths the query uses (br_db_set_index, "
                                        "barrel db index DB PATH...).")))
        e = BR_ENOMEM;
    json_t *w = json_object_get(qj, "where");
    if (w && json_object_set(o, "filter", w))
        e = BR_ENOMEM;
    const char *keys[] = {"order_by", "limit", "offset", "id_prefix", "id_range"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(qj, keys[i]);
        if (v && json_object_set(o, keys[i], v))
            e = BR_ENOMEM;
    }
    json_decref(qj);
    if (e) {
        json_decref(o);
        return e;
    }
    *out = o;
    return BR_OK;
}
