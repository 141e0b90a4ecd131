/* local.c — local documents (_local/...): one record per id holding a counter and a CBOR body;
 * revision "0-N"; no tree, never in the changes feed, never replicated (REP-01). Replication
 * checkpoints live here. Writes take the database's writer mutex for the compare-and-set. */
#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"
#include "store_int.h"

static br_err local_load(struct br_db *db, const br_buf *k, uint64_t *counter, char **raw,
                         size_t *len)
{
    br_err e = store_get(db->s, CF_LOCAL, k->data, k->len, raw, len);
    if (e)
        return e;
    if (!*raw)
        return BR_ENOTFOUND;
    if (*len < 8) {
        rocksdb_free(*raw);
        *raw = NULL;
        return BR_ESTORE;
    }
    *counter = store_rd64((const uint8_t *)*raw);
    return BR_OK;
}

static bool local_id_valid(const char *id, size_t len)
{
    return len > 0 && len <= BR_DOCID_MAX && !memchr(id, 0, len);
}

static void local_rev(uint64_t n, struct br_rev *r)
{
    memset(r, 0, sizeof *r);
    int l = snprintf(r->hash, sizeof r->hash, "%llu", (unsigned long long)n);
    r->hash_len = (uint8_t)l;
}

br_err br_db_local_put(br_db *db, const char *id, size_t id_len, const struct br_rev *rev,
                       const uint8_t *body, size_t body_len, const struct br_write_opts *wo,
                       struct br_rev *new_rev)
{
    if (!local_id_valid(id, id_len))
        return BR_EBADNAME;
    if (body_len > db->s->max_doc_bytes)
        return BR_ETOOBIG;
    if (body && br_cbor_doc_validate(body, body_len, 0, NULL) != BR_OK)
        return BR_EINVAL;
    br_buf k, v;
    br_buf_init(&k, 0);
    br_buf_init(&v, 0);
    br_err e = store_key(&k, db->dbid, id, id_len);
    if (e)
        goto out;
    pthread_mutex_lock(&db->wmu);
    uint64_t cur = 0;
    char *raw = NULL;
    size_t rl;
    e = db->deleted ? BR_ENOTFOUND : local_load(db, &k, &cur, &raw, &rl);
    rocksdb_free(raw);
    if (e == BR_ENOTFOUND && !db->deleted) {
        e = BR_OK;
        cur = 0;
    }
    if (!e) {
        struct br_rev want;
        local_rev(cur, &want);
        /* CouchDB: a missing doc takes no rev (or any rev, as PouchDB's checkpointer sends);
         * an existing one needs its current rev. */
        if (cur > 0 && (!rev || !br_rev_eq(rev, &want)))
            e = BR_ECONFLICT;
    }
    uint64_t ticket = 0;
    if (!e) {
        uint8_t c[8];
        store_be64(c, cur + 1);
        e = br_buf_append(&v, c, 8);
        if (!e)
            e = br_buf_append(&v, body ? body : (const uint8_t *)"\xa0", body ? body_len : 1);
    }
    if (!e) {
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        rocksdb_writebatch_put_cf(wb, db->s->cf[CF_LOCAL], (const char *)k.data, k.len,
                                  (const char *)v.data, v.len);
        e = store_write(db->s, wb, &ticket);
        rocksdb_writebatch_destroy(wb);
    }
    pthread_mutex_unlock(&db->wmu);
    if (!e && (!wo || wo->sync == BR_SYNC_FULL))
        e = store_sync(db->s, ticket);
    if (!e && new_rev)
        local_rev(cur + 1, new_rev);
out:
    br_buf_fini(&k);
    br_buf_fini(&v);
    return e;
}

br_err br_db_local_get(br_db *db, const char *id, size_t id_len, struct br_doc **out)
{
    if (!local_id_valid(id, id_len))
        return BR_ENOTFOUND;
    br_buf k;
    br_buf_init(&k, 0);
    br_err e = store_key(&k, db->dbid, id, id_len);
    char *raw = NULL;
    size_t rl = 0;
    uint64_t cur = 0;
    if (!e)
        e = local_load(db, &k, &cur, &raw, &rl);
    br_buf_fini(&k);
    if (e)
        return e;
    if (br_cbor_doc_validate((const uint8_t *)raw + 8, rl - 8, 0, NULL) != BR_OK) {
        rocksdb_free(raw);
        return BR_ESTORE;
    }
    struct br_doc *d = br_calloc(1, sizeof *d);
    if (!d) {
        rocksdb_free(raw);
        return BR_ENOMEM;
    }
    d->id = br_strndup(id, id_len);
    d->id_len = id_len;
    d->body = br_memdup(raw + 8, rl - 8);
    d->body_len = rl - 8;
    local_rev(cur, &d->rev);
    rocksdb_free(raw);
    if (!d->id || !d->body) {
        br_doc_free(d);
        return BR_ENOMEM;
    }
    *out = d;
    return BR_OK;
}

br_err br_db_local_delete(br_db *db, const char *id, size_t id_len, const struct br_rev *rev,
                          const struct br_write_opts *wo)
{
    if (!local_id_valid(id, id_len))
        return BR_ENOTFOUND;
    br_buf k;
    br_buf_init(&k, 0);
    br_err e = store_key(&k, db->dbid, id, id_len);
    if (e)
        goto out;
    pthread_mutex_lock(&db->wmu);
    uint64_t cur = 0;
    char *raw = NULL;
    size_t rl;
    e = db->deleted ? BR_ENOTFOUND : local_load(db, &k, &cur, &raw, &rl);
    rocksdb_free(raw);
    if (!e && rev) {
        struct br_rev want;
        local_rev(cur, &want);
        if (!br_rev_eq(rev, &want))
            e = BR_ECONFLICT;
    }
    uint64_t ticket = 0;
    if (!e) {
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        rocksdb_writebatch_delete_cf(wb, db->s->cf[CF_LOCAL], (const char *)k.data, k.len);
        e = store_write(db->s, wb, &ticket);
        rocksdb_writebatch_destroy(wb);
    }
    pthread_mutex_unlock(&db->wmu);
    if (!e && (!wo || wo->sync == BR_SYNC_FULL))
        e = store_sync(db->s, ticket);
out:
    br_buf_fini(&k);
    return e;
}
