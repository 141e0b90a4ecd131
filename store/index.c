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

br_err index_put_value(br_buf *k, enum br_pv_type t, int64_t i, double f, const char *s,
                       size_t n)
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
};

static int posting(void *arg, const struct br_path_value *pv)
{
    struct upd *u = arg;
    struct index_batch *ib = u->ib;
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
        ib->ops[ib->n] = (struct index_op){.off = ib->keys.len, .len = u->key.len, .put = u->put,
                                           .seq = ib->n};
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
                    size_t new_len)
{
    if (old_body && new_body && old_len == new_len && memcmp(old_body, new_body, old_len) == 0)
        return BR_OK;
    struct upd u = {.db = db, .ib = ib, .id = id, .id_len = id_len};
    br_buf_init(&u.key, 0);
    br_err e = BR_OK;
    /* Stored bodies were validated on the way in; a body that no longer parses (a corrupt
     * record) has no postings to remove, and br_db_check reports it. */
    if (old_body) {
        e = br_paths_foreach(old_body, old_len, posting, &u);
        if (e == BR_EPROTO)
            e = BR_OK;
    }
    if (!e && !u.err && new_body) {
        u.put = true;
        e = br_paths_foreach(new_body, new_len, posting, &u);
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
