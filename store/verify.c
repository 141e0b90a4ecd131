/* verify.c — br_db_check: an offline-style consistency check (fsck) of one database, read on a
 * single snapshot. The crash test runs it after every kill -9; `barrel check DB` runs it for
 * people. It never repairs; it reports. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "barrel/log.h"

#include "store_int.h"

static void problem(struct br_db_check *c, const char *db, const char *fmt, ...) BR_PRINTF(3, 4);
static void problem(struct br_db_check *c, const char *db, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->problems++ == 0)
        snprintf(c->first, sizeof c->first, "%s", msg);
    br_log(BR_LOG_ERROR, "check", "db=%s problem=\"%s\"", db, msg);
}

static void xor_leaf(uint8_t acc[16], const char *id, size_t id_len, const struct br_rev *r)
{
    char rev[BR_REV_TEXT_MAX];
    size_t rl = br_rev_format(r, rev);
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    XXH3_128bits_update(&st, id, id_len);
    XXH3_128bits_update(&st, "", 1);
    XXH3_128bits_update(&st, rev, rl);
    XXH128_canonical_t cn;
    XXH128_canonicalFromHash(&cn, XXH3_128bits_digest(&st));
    for (int i = 0; i < 16; i++)
        acc[i] ^= cn.digest[i];
}

/* Does the change at the record's seq (a single entry at that key, or an item of the packed
 * entry the record names) name this document and its winner? */
static br_err check_change(br_db *db, const rocksdb_readoptions_t *ro, struct br_db_check *c,
                           const char *id, size_t id_len, const struct docrec *r, uint32_t win,
                           struct change_items *ci)
{
    uint8_t key[4 + BR_HLC_BYTES];
    memcpy(key, db->dbid, 4);
    br_hlc_encode(r->packed ? r->pack_key : r->seq, key + 4);
    char *err = NULL;
    size_t vl = 0;
    char *v = rocksdb_get_cf(db->s->rdb, ro, db->s->cf[CF_CHANGES], (const char *)key, sizeof key,
                             &vl, &err);
    if (err) {
        problem(c, db->name, "cannot read change entry: %s", err);
        rocksdb_free(err);
        return BR_OK;
    }
    const struct br_change *ch = NULL;
    br_err de = BR_OK;
    if (v) {
        de = change_items_decode(r->packed ? r->pack_key : r->seq, v, vl, ci);
        for (size_t i = 0; !de && i < ci->n && !ch; i++)
            if (br_hlc_cmp(ci->c[i].seq, r->seq) == 0 && ci->packed == r->packed)
                ch = &ci->c[i];
    }
    /* ch borrows from v: judge it before v goes */
    bool names = ch && br_rev_eq(&ch->rev, &r->tree.nodes[win].rev) &&
                 ch->deleted == r->tree.nodes[win].deleted && ch->id_len == id_len &&
                 memcmp(ch->id, id, id_len) == 0;
    rocksdb_free(v);
    if (de == BR_ENOMEM)
        return de;
    if (de)
        problem(c, db->name, "change entry of %.*s does not decode", (int)id_len, id);
    else if (!ch)
        problem(c, db->name, "document %.*s has no change entry at its seq", (int)id_len, id);
    else if (!names)
        problem(c, db->name, "change entry of %.*s does not name the document and its winner",
                (int)id_len, id);
    return BR_OK;
}

/* Every posting the live winner's body calls for must be in the index (counted, so that
 * postings nothing calls for show up as a count mismatch). */
struct icheck {
    br_db *db;
    const rocksdb_readoptions_t *ro;
    struct br_db_check *c;
    const char *id;
    size_t id_len;
    br_buf key;
    br_err err;
};

static int check_posting(void *arg, const struct br_path_value *pv)
{
    struct icheck *ic = arg;
    if (!index_wants(ic->db, pv->keys, pv->keys_len))
        return 0;
    br_err e = index_path_prefix(&ic->key, ic->db->dbid, pv->keys, pv->keys_len);
    if (!e)
        e = index_put_value(&ic->key, pv->type, pv->i, pv->f, pv->s, pv->s_len);
    if (!e)
        e = br_buf_append(&ic->key, ic->id, ic->id_len);
    if (e) {
        ic->err = e;
        return 1;
    }
    char *err = NULL;
    size_t vl;
    char *v = rocksdb_get_cf(ic->db->s->rdb, ic->ro, ic->db->s->cf[CF_INDEX],
                             (const char *)ic->key.data, ic->key.len, &vl, &err);
    if (err) {
        ic->err = store_rdb_err(err, "check_index");
        return 1;
    }
    ic->c->postings++;
    if (!v)
        problem(ic->c, ic->db->name, "document %.*s lacks the index posting for path %.*s",
                (int)ic->id_len, ic->id, (int)pv->keys_len, pv->keys);
    rocksdb_free(v);
    return 0;
}

br_err br_db_check(br_db *db, struct br_db_check *out)
{
    br_store *s = db->s;
    memset(out, 0, sizeof *out);
    uint8_t lo[4], hi[4];
    memcpy(lo, db->dbid, 4);
    store_be32(hi, store_rd32(db->dbid) + 1);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    pthread_rwlock_rdlock(&db->ipol_rw); /* the postings checked are the policy's */
    const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(s->rdb);
    rocksdb_readoptions_set_snapshot(ro, snap);
    rocksdb_readoptions_set_iterate_lower_bound(ro, (const char *)lo, 4);
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, 4);

    br_err e = BR_OK;
    struct change_items ci;
    memset(&ci, 0, sizeof ci);
    uint64_t live = 0, dead = 0, bytes = 0;
    uint8_t set_hash[16] = {0};
    struct br_hlc max_seq = BR_HLC_MIN;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_DOCS]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        const char *id = k + 4;
        size_t id_len = kl - 4;
        out->docs++;
        struct docrec r;
        docrec_init(&r);
        br_err de = docrec_decode((const uint8_t *)v, vl, &r);
        if (de == BR_ENOMEM) {
            docrec_fini(&r);
            e = de;
            break;
        }
        uint32_t win = de ? BR_REVTREE_NONE : br_revtree_winner(&r.tree);
        if (de || win == BR_REVTREE_NONE) {
            problem(out, db->name, "record of %.*s does not decode", (int)id_len, id);
            docrec_fini(&r);
            continue;
        }
        if (r.tree.nodes[win].deleted)
            dead++;
        else
            live++;
        for (uint32_t i = 0; i < r.tree.n; i++)
            if (r.tree.nodes[i].leaf)
                xor_leaf(set_hash, id, id_len, &r.tree.nodes[i].rev);
        for (size_t i = 0; i < r.n_leaves; i++) {
            bytes += r.leaves[i].body_len;
            for (size_t j = 0; j < r.leaves[i].n_atts; j++)
                bytes += r.leaves[i].atts[j].length;
        }
        if (br_hlc_cmp(r.seq, max_seq) > 0)
            max_seq = r.seq;
        e = check_change(db, ro, out, id, id_len, &r, win, &ci);
        if (e) {
            docrec_fini(&r);
            break;
        }
        size_t bl;
        bool deleted;
        const uint8_t *body = docrec_filter_body(&r, &bl, &deleted);
        if (body && !deleted) {
            struct icheck ic = {db, ro, out, id, id_len, {0}, BR_OK};
            br_buf_init(&ic.key, 0);
            br_err pe = br_paths_foreach(body, bl, check_posting, &ic);
            br_buf_fini(&ic.key);
            if (ic.err || pe == BR_ENOMEM) {
                docrec_fini(&r);
                e = ic.err ? ic.err : pe;
                break;
            }
            if (pe)
                problem(out, db->name, "the body of %.*s does not parse", (int)id_len, id);
        }
        docrec_fini(&r);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err && !e)
        e = store_rdb_err(err, "check_docs");
    else
        rocksdb_free(err);

    /* Every change entry belongs to one document (counted; each document matched its own). */
    it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_CHANGES]);
    for (rocksdb_iter_seek_to_first(it); !e && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        br_err de = kl == 4 + BR_HLC_BYTES
                        ? change_items_decode(br_hlc_decode((const uint8_t *)k + 4), v, vl, &ci)
                        : BR_ESTORE;
        if (de == BR_ENOMEM)
            e = de;
        else if (de)
            problem(out, db->name, "a change entry does not decode");
        else /* each item counts: an orphan or a superseded item left behind shows below */
            out->changes += ci.n;
    }
    change_items_fini(&ci);
    err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err && !e)
        e = store_rdb_err(err, "check_changes");
    else
        rocksdb_free(err);
    uint64_t indexed = 0;
    it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_INDEX]);
    for (rocksdb_iter_seek_to_first(it); !e && rocksdb_iter_valid(it); rocksdb_iter_next(it))
        indexed++;
    err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err && !e)
        e = store_rdb_err(err, "check_index");
    else
        rocksdb_free(err);
    if (!e && indexed != out->postings)
        problem(out, db->name, "%llu index postings, the live documents call for %llu",
                (unsigned long long)indexed, (unsigned long long)out->postings);
    if (!e && out->changes != out->docs)
        problem(out, db->name, "%llu change entries for %llu documents",
                (unsigned long long)out->changes, (unsigned long long)out->docs);

    /* The stored digest must equal the recomputed one. */
    if (!e) {
        uint8_t dk[5];
        memcpy(dk, db->dbid, 4);
        dk[4] = 'd';
        size_t vl = 0;
        err = NULL;
        char *v = rocksdb_get_cf(s->rdb, ro, s->cf[CF_META], (const char *)dk, 5, &vl, &err);
        if (err) {
            e = store_rdb_err(err, "check_digest");
        } else if (!v || vl != DIGEST_LEN) {
            problem(out, db->name, "digest record missing or malformed");
        } else {
            const uint8_t *p = (const uint8_t *)v + 1;
            struct br_hlc last = br_hlc_decode(p);
            uint64_t dc = store_rd64(p + 12), dd = store_rd64(p + 20);
            const uint8_t *sh = p + 36;
            uint64_t ext = store_rd64(p + 52);
            if (out->docs && br_hlc_cmp(last, max_seq) != 0)
                problem(out, db->name, "digest last seq is not the newest document's seq");
            if (dc != live || dd != dead)
                problem(out, db->name, "digest counts %llu/%llu, records %llu/%llu",
                        (unsigned long long)dc, (unsigned long long)dd, (unsigned long long)live,
                        (unsigned long long)dead);
            if (memcmp(sh, set_hash, 16) != 0)
                problem(out, db->name, "digest set hash differs from the records'");
            if (ext != bytes)
                problem(out, db->name, "digest external size %llu, records %llu",
                        (unsigned long long)ext, (unsigned long long)bytes);
        }
        rocksdb_free(v);
    }
    pthread_rwlock_unlock(&db->ipol_rw);
    rocksdb_readoptions_destroy(ro);
    rocksdb_release_snapshot(s->rdb, snap);
    return e;
}
