/* index.c — the path index: one posting per (path, value) of every live winning revision, kept
 * in the same WriteBatch as the document (store_int.h gives the key layout).
 *
 * Keys sort by path, then value type, then value, then document id, so an equality is one
 * prefix scan returning ids in order, and prefixes and ranges are key-range scans. The index is
 * a filter for the planner (find.c), never the last word: every candidate is checked against its
 * document, which is what lets numbers share one double-ordered space and long strings be cut. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

#include "store_int.h"

br_err index_put_string(br_buf *k, const char *s, size_t n, bool terminate)
{
    br_err e = br_buf_reserve(k, n + 2);
    for (size_t i = 0; !e && i < n; i++) {
        if (s[i] == 0) {
            static const uint8_t esc[2] = {0x00, 0xff};
            e = br_buf_append(k, esc, 2);
        } else {
            e = br_buf_append(k, &s[i], 1);
        }
    }
    if (!e && terminate) {
        static const uint8_t end[2] = {0x00, 0x01};
        e = br_buf_append(k, end, 2);
    }
    return e;
}

br_err index_path_prefix(br_buf *k, const uint8_t dbid[4], const char *keys, size_t len)
{
    br_buf_reset(k);
    br_err e = br_buf_append(k, dbid, 4);
    return e ? e : index_put_string(k, keys, len, true);
}

br_err index_put_number(br_buf *k, double d)
{
    uint8_t b[9];
    uint64_t u;
    if (d == 0)
        d = 0; /* -0 and 0 are one number */
    memcpy(&u, &d, sizeof u);
    u = u >> 63 ? ~u : u ^ (1ull << 63);
    b[0] = IDX_NUM;
    store_be64(b + 1, u);
    return br_buf_append(k, b, sizeof b);
}

br_err index_put_value(br_buf *k, enum br_pv_type t, int64_t i, double f, const char *s, size_t n)
{
    uint8_t tag;
    switch (t) {
    case BR_PV_NULL:
        tag = IDX_NULL;
        return br_buf_append(k, &tag, 1);
    case BR_PV_FALSE:
        tag = IDX_FALSE;
        return br_buf_append(k, &tag, 1);
    case BR_PV_TRUE:
        tag = IDX_TRUE;
        return br_buf_append(k, &tag, 1);
    case BR_PV_INT:
        return index_put_number(k, (double)i);
    case BR_PV_FLOAT:
        return index_put_number(k, f);
    case BR_PV_STRING:
        break;
    }
    tag = IDX_STR;
    br_err e = br_buf_append(k, &tag, 1);
    return e ? e : index_put_string(k, s, n < BR_PATH_STRING_CUT ? n : BR_PATH_STRING_CUT, true);
}

/* The document id inside a posting key whose path prefix is plen bytes long. */
bool index_posting_docid(const char *k, size_t kl, size_t plen, const char **id, size_t *len)
{
    if (kl <= plen)
        return false;
    size_t p = plen;
    uint8_t tag = (uint8_t)k[p++];
    if (tag == IDX_NUM) {
        p += 8;
    } else if (tag == IDX_STR) {
        for (;;) {
            if (p + 1 >= kl)
                return false;
            if (k[p] == 0 && (uint8_t)k[p + 1] == 0x01) {
                p += 2;
                break;
            }
            p += k[p] == 0 ? 2 : 1;
        }
    } else if (tag != IDX_NULL && tag != IDX_FALSE && tag != IDX_TRUE) {
        return false;
    }
    if (p >= kl)
        return false;
    *id = k + p;
    *len = kl - p;
    return true;
}

void index_batch_init(struct index_batch *ib)
{
    memset(ib, 0, sizeof *ib);
    br_buf_init(&ib->keys, 0);
}

void index_batch_fini(struct index_batch *ib)
{
    br_buf_fini(&ib->keys);
    br_free(ib->ops);
    memset(ib, 0, sizeof *ib);
}

struct upd {
    struct br_db *db;
    struct index_batch *ib;
    const char *id;
    size_t id_len;
    bool put;
    br_buf key;
    br_err err;
    br_paths_cb tap; /* also shown every path of the body being walked, or NULL */
    void *tap_arg;
};

static int posting(void *arg, const struct br_path_value *pv)
{
    struct upd *u = arg;
    struct index_batch *ib = u->ib;
    if (u->tap)
        (void)u->tap(u->tap_arg, pv);
    if (!index_wants(u->db, pv->keys, pv->keys_len))
        return 0;
    br_err e = index_path_prefix(&u->key, u->db->dbid, pv->keys, pv->keys_len);
    if (!e)
        e = index_put_value(&u->key, pv->type, pv->i, pv->f, pv->s, pv->s_len);
    if (!e)
        e = br_buf_append(&u->key, u->id, u->id_len);
    if (!e && ib->n == ib->cap) {
        size_t nc = ib->cap ? ib->cap * 2 : 256;
        struct index_op *no = br_realloc(ib->ops, nc * sizeof *no);
        if (!no)
            e = BR_ENOMEM;
        else {
            ib->ops = no;
            ib->cap = nc;
        }
    }
    if (!e) {
        ib->ops[ib->n] =
            (struct index_op){.off = ib->keys.len, .len = u->key.len, .put = u->put, .seq = ib->n};
        e = br_buf_append(&ib->keys, u->key.data, u->key.len);
        if (!e)
            ib->n++;
    }
    if (e) {
        u->err = e;
        return 1;
    }
    return 0;
}

br_err index_update(struct br_db *db, struct index_batch *ib, const char *id, size_t id_len,
                    const uint8_t *old_body, size_t old_len, const uint8_t *new_body,
                    size_t new_len, const uint8_t *tap_body, br_paths_cb tap, void *tap_arg,
                    bool *tapped)
{
    if (old_body && new_body && old_len == new_len && memcmp(old_body, new_body, old_len) == 0)
        return BR_OK;
    if (!db->ipol_all && !db->ipol_trie)
        return BR_OK; /* no index declared (the default): nothing to walk */
    struct upd u = {.db = db, .ib = ib, .id = id, .id_len = id_len};
    br_buf_init(&u.key, 0);
    br_err e = BR_OK;
    /* Stored bodies were validated on the way in; a body that no longer parses (a corrupt
     * record) has no postings to remove, and br_db_check reports it. */
    if (old_body) {
        bool t = tap && tap_body == old_body;
        u.tap = t ? tap : NULL;
        u.tap_arg = tap_arg;
        e = br_paths_foreach(old_body, old_len, posting, &u);
        if (e == BR_EPROTO)
            e = BR_OK;
        if (t && tapped)
            *tapped = true;
    }
    if (!e && !u.err && new_body) {
        bool t = tap && tap_body == new_body;
        u.put = true;
        u.tap = t ? tap : NULL;
        u.tap_arg = tap_arg;
        e = br_paths_foreach(new_body, new_len, posting, &u);
        if (t && tapped)
            *tapped = true;
    }
    br_buf_fini(&u.key);
    return u.err ? u.err : e;
}

static const uint8_t *sort_base; /* qsort has no context; set under db->wmu by the writer */

static int op_cmp(const void *pa, const void *pb)
{
    const struct index_op *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(sort_base + a->off, sort_base + b->off, n);
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->seq < b->seq ? -1 : 1; /* the same key: keep the order they were made in */
}

static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER;

void index_batch_flush(struct br_db *db, rocksdb_writebatch_t *wb, struct index_batch *ib)
{
    if (!ib->n)
        return;
    /* In key order: the memtable's skiplist inserts each key next to the previous one (its
     * cached splice) instead of searching from the top, which is most of an index write. */
    pthread_mutex_lock(&sort_mu);
    sort_base = ib->keys.data;
    qsort(ib->ops, ib->n, sizeof *ib->ops, op_cmp);
    pthread_mutex_unlock(&sort_mu);
    rocksdb_column_family_handle_t *cf = db->s->cf[CF_INDEX];
    for (size_t i = 0; i < ib->n; i++) {
        const char *k = (const char *)ib->keys.data + ib->ops[i].off;
        if (ib->ops[i].put)
            rocksdb_writebatch_put_cf(wb, cf, k, ib->ops[i].len, "", 0);
        else
            rocksdb_writebatch_delete_cf(wb, cf, k, ib->ops[i].len);
    }
}

const uint8_t *docrec_filter_body(const struct docrec *r, size_t *len, bool *deleted)
{
    uint32_t win = br_revtree_winner(&r->tree);
    *len = 0;
    *deleted = false;
    if (win == BR_REVTREE_NONE)
        return NULL;
    if (r->tree.nodes[win].deleted) {
        *deleted = true;
        *len = r->gone_len;
        return r->gone;
    }
    for (size_t i = 0; i < r->n_leaves; i++) {
        if (br_rev_eq(&r->leaves[i].rev, &r->tree.nodes[win].rev)) {
            *len = r->leaves[i].body_len;
            return r->leaves[i].body;
        }
    }
    return NULL;
}

/* ---- the index policy ---- */

static void hit(void *arg, void *value)
{
    (void)value;
    *(bool *)arg = true;
}

bool index_wants(const struct br_db *db, const char *keys, size_t len)
{
    if (db->ipol_all)
        return true;
    if (!db->ipol_trie)
        return false;
    bool yes = false;
    br_pattern_trie_match(db->ipol_trie, keys, len, hit, &yes);
    return yes;
}

void index_policy_free(struct br_db *db)
{
    for (size_t i = 0; i < db->n_ipol; i++)
        br_free(db->ipol[i]);
    br_free(db->ipol);
    br_pattern_trie_free(db->ipol_trie);
    db->ipol = NULL;
    db->n_ipol = 0;
    db->ipol_trie = NULL;
    db->ipol_all = false;
}

/* Install a policy (patterns copied); n_all: every path. */
static br_err policy_set(struct br_db *db, bool all, const char *const *p, size_t n)
{
    char **v = NULL;
    br_pattern_trie *t = NULL;
    br_err e = BR_OK;
    if (!all) {
        e = br_pattern_trie_new(&t);
        if (!e && n) {
            v = br_calloc(n, sizeof *v);
            if (!v)
                e = BR_ENOMEM;
        }
        for (size_t i = 0; !e && i < n; i++) {
            v[i] = br_strdup(p[i]);
            e = v[i] ? br_pattern_trie_add(t, p[i], strlen(p[i]), v[i]) : BR_ENOMEM;
        }
        if (e) {
            for (size_t i = 0; v && i < n; i++)
                br_free(v[i]);
            br_free(v);
            br_pattern_trie_free(t);
            return e;
        }
    }
    index_policy_free(db);
    db->ipol_all = all;
    db->ipol = v;
    db->n_ipol = all ? 0 : n;
    db->ipol_trie = t;
    db->ipol_gen++;
    return BR_OK;
}

br_err index_policy_load(struct br_db *db)
{
    uint8_t k[5];
    memcpy(k, db->dbid, 4);
    k[4] = 'i';
    char *v;
    size_t vl;
    db->ipol_all = false; /* no record: no path is indexed (the default) */
    br_err e = store_get(db->s, CF_META, k, 5, &v, &vl);
    if (e || !v)
        return e;
    const uint8_t *p = (const uint8_t *)v, *end = p + vl;
    uint64_t n = 0;
    char **pats = NULL;
    size_t got = 0;
    if (vl == 1 && p[0] == 'A') {
        rocksdb_free(v);
        return policy_set(db, true, NULL, 0);
    }
    e = vl < 1 || *p++ != 'P' || store_get_varint(&p, end, &n) || n > vl ? BR_ESTORE : BR_OK;
    if (!e && n) {
        pats = br_calloc((size_t)n, sizeof *pats);
        if (!pats)
            e = BR_ENOMEM;
    }
    for (; !e && got < n; got++) {
        uint64_t l;
        if (store_get_varint(&p, end, &l) || l > (uint64_t)(end - p) ||
            br_pattern_check((const char *)p, (size_t)l, NULL) != BR_OK) {
            e = BR_ESTORE;
            break;
        }
        pats[got] = br_strndup((const char *)p, (size_t)l);
        if (!pats[got]) {
            e = BR_ENOMEM;
            break;
        }
        p += l;
    }
    if (!e && p != end)
        e = BR_ESTORE;
    if (!e)
        e = policy_set(db, false, (const char *const *)pats, (size_t)n);
    for (size_t i = 0; i < got; i++)
        br_free(pats[i]);
    br_free(pats);
    rocksdb_free(v);
    if (e == BR_ESTORE)
        br_log(BR_LOG_ERROR, "store", "op=db_open db=%s msg=\"corrupt index policy\"", db->name);
    return e;
}

br_err br_db_index_policy(br_db *db, bool *all, char ***patterns, size_t *n)
{
    pthread_rwlock_rdlock(&db->ipol_rw);
    br_err e = BR_OK;
    *all = db->ipol_all;
    *patterns = NULL;
    *n = 0;
    if (!db->ipol_all && db->n_ipol) {
        char **v = br_calloc(db->n_ipol, sizeof *v);
        e = v ? BR_OK : BR_ENOMEM;
        for (size_t i = 0; !e && i < db->n_ipol; i++) {
            v[i] = br_strdup(db->ipol[i]);
            if (!v[i])
                e = BR_ENOMEM;
        }
        if (e) {
            for (size_t i = 0; v && i < db->n_ipol; i++)
                br_free(v[i]);
            br_free(v);
        } else {
            *patterns = v;
            *n = db->n_ipol;
        }
    }
    pthread_rwlock_unlock(&db->ipol_rw);
    return e;
}

/* Rebuild: every live winner's postings under the installed policy, into wb. */
static br_err reindex_all(struct br_db *db, rocksdb_writebatch_t *wb)
{
    br_store *s = db->s;
    uint8_t lo[4], hi[4];
    memcpy(lo, db->dbid, 4);
    store_be32(hi, store_rd32(db->dbid) + 1);
    rocksdb_writebatch_delete_range_cf(wb, s->cf[CF_INDEX], (const char *)lo, 4, (const char *)hi,
                                       4);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, 4);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_DOCS]);
    br_err e = BR_OK;
    struct index_batch ib;
    index_batch_init(&ib);
    for (rocksdb_iter_seek(it, (const char *)lo, 4); !e && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        struct docrec r;
        docrec_init(&r);
        e = docrec_decode((const uint8_t *)v, vl, &r);
        if (e == BR_ESTORE) {
            br_log(BR_LOG_ERROR, "store", "op=reindex db=%s msg=\"corrupt record skipped\"",
                   db->name);
            e = BR_OK;
        } else if (!e) {
            size_t bl;
            bool deleted;
            const uint8_t *body = docrec_filter_body(&r, &bl, &deleted);
            if (body && !deleted)
                e = index_update(db, &ib, k + 4, kl - 4, NULL, 0, body, bl, NULL, NULL, NULL, NULL);
        }
        docrec_fini(&r);
        if (!e && ib.n > 65536) { /* bound memory: flush in key order chunk by chunk */
            index_batch_flush(db, wb, &ib);
            index_batch_fini(&ib);
            index_batch_init(&ib);
        }
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (err && !e)
        e = store_rdb_err(err, "reindex");
    else
        rocksdb_free(err);
    if (!e)
        index_batch_flush(db, wb, &ib);
    index_batch_fini(&ib);
    return e;
}

br_err br_db_set_index(br_db *db, bool all, const char *const *patterns, size_t n,
                       struct br_errbuf *eb)
{
    if (!all && n > BR_INDEX_PATTERNS_MAX)
        return br_fail(eb, BR_EINVAL, "at most %d index patterns", BR_INDEX_PATTERNS_MAX);
    for (size_t i = 0; !all && i < n; i++) {
        br_err e = br_pattern_check(patterns[i], strlen(patterns[i]), eb);
        if (e)
            return e;
    }
    br_store *s = db->s;
    br_buf rec;
    br_buf_init(&rec, 0);
    br_err e = BR_OK;
    if (all) {
        e = br_buf_append(&rec, "A", 1);
    } else if (n) {
        e = br_buf_append(&rec, "P", 1);
        if (!e)
            e = store_put_varint(&rec, n);
        for (size_t i = 0; !e && i < n; i++) {
            size_t l = strlen(patterns[i]);
            e = store_put_varint(&rec, l);
            if (!e)
                e = br_buf_append(&rec, patterns[i], l);
        }
    }
    if (e) {
        br_buf_fini(&rec);
        return e;
    }
    pthread_mutex_lock(&db->wmu);
    pthread_rwlock_wrlock(&db->ipol_rw);
    /* Keep the old policy to restore if the rebuild cannot be committed. */
    bool old_all = db->ipol_all;
    char **old = db->ipol;
    size_t old_n = db->n_ipol;
    br_pattern_trie *old_trie = db->ipol_trie;
    db->ipol = NULL;
    db->n_ipol = 0;
    db->ipol_trie = NULL;
    rocksdb_writebatch_t *wb = NULL;
    if (db->deleted)
        e = BR_ENOTFOUND;
    if (!e)
        e = policy_set(db, all, patterns, n);
    if (!e) {
        wb = rocksdb_writebatch_create();
        uint8_t k[5];
        memcpy(k, db->dbid, 4);
        k[4] = 'i';
        if (!rec.len) /* none: the default, no record */
            rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], (const char *)k, 5);
        else
            rocksdb_writebatch_put_cf(wb, s->cf[CF_META], (const char *)k, 5,
                                      (const char *)rec.data, rec.len);
        e = reindex_all(db, wb);
    }
    uint64_t ticket = 0;
    if (!e)
        e = store_write(s, wb, &ticket);
    if (!e)
        e = store_sync(s, ticket);
    if (e) {
        index_policy_free(db);
        db->ipol_all = old_all;
        db->ipol = old;
        db->n_ipol = old_n;
        db->ipol_trie = old_trie;
        db->ipol_gen++;
    } else {
        for (size_t i = 0; i < old_n; i++)
            br_free(old[i]);
        br_free(old);
        br_pattern_trie_free(old_trie);
    }
    pthread_rwlock_unlock(&db->ipol_rw);
    pthread_mutex_unlock(&db->wmu);
    if (wb)
        rocksdb_writebatch_destroy(wb);
    br_buf_fini(&rec);
    if (!e)
        br_log(BR_LOG_INFO, "store", "op=set_index db=%s all=%d patterns=%zu", db->name, all, n);
    return e;
}
