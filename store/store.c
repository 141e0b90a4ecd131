/* store.c — the node's RocksDB instance: opening and closing it, the database catalog, the
 * per-database digest record, and group commit (writers commit unsynced, then share WAL fsyncs).
 * Document operations live in docs.c, the changes feed in changes.c, local docs in local.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

#include "store_int.h"

static const char *const cf_names[CF_COUNT] = {"default", "meta", "docs", "changes",
                                               "local",   "atts", "index"};

br_err store_rdb_err(char *err, const char *what)
{
    br_log(BR_LOG_ERROR, "store", "op=%s err=\"%s\"", what, err ? err : "?");
    rocksdb_free(err);
    return BR_ESTORE;
}

size_t store_varint_at(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        p[n++] = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
    return n;
}

br_err store_put_varint(br_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    return br_buf_append(b, tmp, store_varint_at(tmp, v));
}

br_err store_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return BR_EPROTO;
        uint8_t c = *(*p)++;
        if (shift == 63 && c > 1)
            return BR_EPROTO;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return BR_OK;
        }
    }
    return BR_EPROTO;
}

br_err store_key(br_buf *k, const uint8_t dbid[4], const void *a, size_t alen)
{
    br_buf_reset(k);
    br_err e = br_buf_append(k, dbid, 4);
    if (!e && alen)
        e = br_buf_append(k, a, alen);
    return e;
}

br_err store_prefix_end(const uint8_t *prefix, size_t n, br_buf *out)
{
    br_buf_reset(out);
    br_err e = br_buf_append(out, prefix, n);
    if (e)
        return e;
    for (size_t i = n; i > 0; i--) {
        if (out->data[i - 1] != 0xff) {
            out->data[i - 1]++;
            out->len = i;
            return BR_OK;
        }
    }
    return BR_EINVAL; /* all 0xff: no end key; callers never build such prefixes */
}

br_err store_get(br_store *s, enum cf_id cf, const void *key, size_t klen, char **out, size_t *len)
{
    char *err = NULL;
    *out = rocksdb_get_cf(s->rdb, s->ro, s->cf[cf], key, klen, len, &err);
    if (err)
        return store_rdb_err(err, "get");
    return BR_OK;
}

br_err store_get_cached(br_store *s, enum cf_id cf, const void *key, size_t klen, char **out,
                        size_t *len)
{
    char *err = NULL;
    *out = rocksdb_get_cf(s->rdb, s->ro_cached, s->cf[cf], key, klen, len, &err);
    /* Status::Incomplete ("Result incomplete: no blocking io") is not an error: the block
     * the answer is in is not in memory */
    if (err && strncmp(err, "Result incomplete", 17) == 0) {
        rocksdb_free(err);
        return BR_EWOULDBLOCK;
    }
    if (err)
        return store_rdb_err(err, "get");
    return BR_OK;
}

br_err store_write(br_store *s, rocksdb_writebatch_t *wb, uint64_t *ticket)
{
    char *err = NULL;
    rocksdb_write(s->rdb, s->wo, wb, &err);
    if (err)
        return store_rdb_err(err, "write");
    uint64_t t = atomic_fetch_add(&s->written, 1) + 1;
    if (ticket)
        *ticket = t;
    return BR_OK;
}

br_err store_sync(br_store *s, uint64_t ticket)
{
    br_err rc = BR_OK;
    pthread_mutex_lock(&s->sync_mu);
    while (s->synced < ticket) {
        if (s->syncing) {
            pthread_cond_wait(&s->sync_cv, &s->sync_mu);
            continue;
        }
        /* Lead a group: one fsync covers every write completed before it starts. */
        s->syncing = true;
        uint64_t target = atomic_load(&s->written);
        pthread_mutex_unlock(&s->sync_mu);
        char *err = NULL;
        rocksdb_flush_wal(s->rdb, 1, &err);
        atomic_fetch_add(&s->fsyncs, 1);
        pthread_mutex_lock(&s->sync_mu);
        s->syncing = false;
        if (err) {
            rc = store_rdb_err(err, "sync_wal");
            pthread_cond_broadcast(&s->sync_cv);
            break;
        }
        if (target > s->synced)
            s->synced = target;
        pthread_cond_broadcast(&s->sync_cv);
    }
    pthread_mutex_unlock(&s->sync_mu);
    return rc;
}

bool br_db_name_valid(const char *name, size_t len, bool system)
{
    if (len == 0 || len > BR_DB_NAME_MAX)
        return false;
    size_t i = 0;
    if (name[0] == '_') {
        if (!system)
            return false;
        i = 1;
        if (len == 1)
            return false;
    } else if (name[0] < 'a' || name[0] > 'z') {
        return false;
    }
    for (; i < len; i++) {
        char c = name[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            continue;
        if (strchr("_$()+-/", c) && c != '\0')
            continue;
        return false;
    }
    return true;
}

/* ---- digest record ---- */

void store_digest_encode(const struct db_state *st, uint8_t out[DIGEST_LEN])
{
    uint8_t *p = out;
    *p++ = DIGEST_VERSION;
    br_hlc_encode(st->digest.last, p);
    p += 12;
    store_be64(p, st->digest.doc_count);
    p += 8;
    store_be64(p, st->del_count);
    p += 8;
    store_be64(p, st->update_seq);
    p += 8;
    memcpy(p, st->digest.set_hash, 16);
    p += 16;
    store_be64(p, st->external_size);
}

static br_err digest_decode(struct db_state *st, const uint8_t *p, size_t n)
{
    if (n != DIGEST_LEN || p[0] != DIGEST_VERSION)
        return BR_ESTORE;
    p++;
    st->digest.last = br_hlc_decode(p);
    p += 12;
    st->digest.doc_count = store_rd64(p);
    p += 8;
    st->del_count = store_rd64(p);
    p += 8;
    st->update_seq = store_rd64(p);
    p += 8;
    memcpy(st->digest.set_hash, p, 16);
    p += 16;
    st->external_size = store_rd64(p);
    return BR_OK;
}

/* ---- open / close ---- */

static rocksdb_options_t *cf_options(br_store *s, enum cf_id cf)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_compression(o, rocksdb_lz4_compression);
    /* Documents are read by point lookups (gets, find's candidates, each write's own lookup):
     * with a restart point every 4 keys rather than 16, a lookup steps over 1.5 keys after the
     * data block's hash index instead of 7.5 (bench/query_bench.c part 1: 8% fewer instructions
     * per find candidate), for 2% more bytes. The other families are read in key order, and keep
     * the longer prefix-compressed runs. The factory copies the table options it is given. */
    rocksdb_block_based_options_set_block_restart_interval(s->table, cf == CF_DOCS ? 4 : 16);
    rocksdb_options_set_block_based_table_factory(o, s->table);
    rocksdb_options_set_write_buffer_size(o, cf == CF_DOCS || cf == CF_CHANGES ? 64u << 20
                                                                               : 16u << 20);
    if (cf == CF_DOCS || cf == CF_LOCAL) {
        /* Every write looks its document up first, and most bulk and replicated writes look up
         * an id that is not there: a whole-key bloom filter in the memtable answers those
         * without walking the skiplist (bench/store_bench.c bulk phases). */
        rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0.05);
        rocksdb_options_set_memtable_whole_key_filtering(o, 1);
    }
    if (cf == CF_CHANGES) {
        /* items of packed entries are removed by merge operands; empty entries go in
         * compactions (store_int.h). The options own the operator, not the filter. */
        rocksdb_options_set_merge_operator(o, changes_merge_operator());
        rocksdb_options_set_compaction_filter(o, s->changes_filter);
    }
    if (cf == CF_ATTS) {
        rocksdb_options_set_enable_blob_files(o, 1);
        rocksdb_options_set_min_blob_size(o, 4096);
        rocksdb_options_set_blob_file_size(o, 256u << 20);
        rocksdb_options_set_enable_blob_gc(o, 1);
        rocksdb_options_set_blob_compression_type(o, rocksdb_no_compression);
    }
    return o;
}

static br_err restore_clock(br_store *s)
{
    /* The clock must never go back across restarts: start past every stored change. */
    struct br_hlc max = BR_HLC_MIN;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, s->ro, s->cf[CF_META]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl == 5 && k[4] == 'd' && vl == DIGEST_LEN) {
            struct br_hlc h = br_hlc_decode((const uint8_t *)v + 1);
            if (br_hlc_cmp(h, max) > 0)
                max = h;
        }
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err)
        return store_rdb_err(err, "restore_clock");
    br_hlc_clock_restore(s->clock, max);
    return BR_OK;
}

static br_err sweep_all(br_store *s)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, s->ro, s->cf[CF_META]);
    br_err e = BR_OK;
    for (rocksdb_iter_seek(it, "c", 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl < 1 || k[0] != 'c')
            break;
        if (vl != 8) {
            br_log(BR_LOG_ERROR, "store", "op=open key=catalog:%.*s msg=\"corrupt record\"",
                   (int)(kl - 1), k + 1);
            e = BR_ESTORE;
            break;
        }
        e = att_sweep(s, (const uint8_t *)v);
        if (e)
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err && !e)
        e = store_rdb_err(err, "sweep");
    else
        rocksdb_free(err);
    return e;
}

br_err br_store_open(const struct br_store_opts *o, br_store **out, struct br_errbuf *eb)
{
    if (!o || !o->path || !*o->path)
        return br_fail(eb, BR_EINVAL, "no data directory given");
    if (mkdir(o->path, 0700) != 0 && errno != EEXIST)
        return br_fail(eb, BR_EIO, "cannot create data directory %s: %s", o->path, strerror(errno));
    br_store *s = br_calloc(1, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    br_err e = BR_OK;
    pthread_mutex_init(&s->cat_mu, NULL);
    pthread_mutex_init(&s->sync_mu, NULL);
    pthread_cond_init(&s->sync_cv, NULL);
    s->env = o->env ? o->env : br_env_default();
    s->max_doc_bytes = o->max_doc_bytes ? o->max_doc_bytes : BR_DEFAULT_MAX_DOC_BYTES;
    s->revs_limit = o->revs_limit ? o->revs_limit : BR_DEFAULT_REVS_LIMIT;
    s->path = br_strdup(o->path);
    if (!s->path) {
        e = BR_ENOMEM;
        goto fail;
    }
    e = br_hlc_clock_new(s->env, o->max_skew_ms ? o->max_skew_ms : BR_HLC_DEFAULT_MAX_SKEW_MS,
                         &s->clock);
    if (e)
        goto fail;

    s->cache = rocksdb_cache_create_lru(o->cache_bytes ? o->cache_bytes : 32u << 20);
    s->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(s->table, s->cache);
    rocksdb_block_based_options_set_filter_policy(s->table, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(s->table, 1);
    /* Point reads (get, find's candidates, every write's lookup) dominate: a hash index in
     * each data block finds a key without the binary search, and L0's index and filter
     * blocks stay pinned so a lookup does not pay cache lookups for them
     * (bench/query_bench.c part 1, bench/store_bench.c get). */
    rocksdb_block_based_options_set_data_block_index_type(
        s->table, rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
    rocksdb_block_based_options_set_data_block_hash_ratio(s->table, 0.75);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(s->table, 1);

    s->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->opts, 1);
    rocksdb_options_set_create_missing_column_families(s->opts, 1);
    rocksdb_options_increase_parallelism(s->opts, 2);
    /* All memtables together stay under 16 MiB: an idle node holding freshly written data
     * otherwise keeps up to 64 MiB per busy column family resident (bench/http_bench.sh). */
    rocksdb_options_set_db_write_buffer_size(s->opts, 16u << 20);
    rocksdb_options_set_max_background_jobs(s->opts, 2);
    rocksdb_options_set_keep_log_file_num(s->opts, 3);
    rocksdb_options_set_max_total_wal_size(s->opts, 256u << 20);
    rocksdb_options_set_allow_concurrent_memtable_write(s->opts, 0);
    s->changes_filter = changes_compaction_filter();
    for (int i = 0; i < CF_COUNT; i++)
        s->cf_opts[i] = cf_options(s, (enum cf_id)i);

    char *err = NULL;
    const rocksdb_options_t *cfo[CF_COUNT];
    for (int i = 0; i < CF_COUNT; i++)
        cfo[i] = s->cf_opts[i];
    s->rdb = rocksdb_open_column_families(s->opts, o->path, CF_COUNT, cf_names, cfo, s->cf, &err);
    if (err) {
        if (strstr(err, "lock") || strstr(err, "Resource temporarily unavailable")) {
            br_errbuf_set(eb, "data directory %s is in use by another process", o->path);
            rocksdb_free(err);
            e = BR_EBUSY;
        } else {
            br_errbuf_set(eb, "cannot open store at %s: %s", o->path, err);
            e = store_rdb_err(err, "open");
        }
        goto fail;
    }
    s->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wo, 0);
    s->ro = rocksdb_readoptions_create();
    s->ro_cached = rocksdb_readoptions_create();
    rocksdb_readoptions_set_read_tier(s->ro_cached, 1); /* kBlockCacheTier */
    e = restore_clock(s);
    if (!e)
        e = sweep_all(s);
    if (e) {
        br_errbuf_set(eb, "cannot read store metadata at %s", o->path);
        goto fail;
    }
    br_log(BR_LOG_DEBUG, "store", "op=open path=%s", o->path);
    *out = s;
    return BR_OK;
fail:
    br_store_close(s);
    return e;
}

void br_store_close(br_store *s)
{
    if (!s)
        return;
    if (s->open)
        br_log(BR_LOG_WARN, "store", "op=close msg=\"database handles still open\"");
    if (s->rdb) {
        char *err = NULL;
        rocksdb_flush_wal(s->rdb, 1, &err);
        if (err)
            (void)store_rdb_err(err, "close_sync");
        for (int i = 0; i < CF_COUNT; i++)
            if (s->cf[i])
                rocksdb_column_family_handle_destroy(s->cf[i]);
        rocksdb_close(s->rdb);
    }
    if (s->wo)
        rocksdb_writeoptions_destroy(s->wo);
    if (s->ro)
        rocksdb_readoptions_destroy(s->ro);
    if (s->ro_cached)
        rocksdb_readoptions_destroy(s->ro_cached);
    for (int i = 0; i < CF_COUNT; i++)
        if (s->cf_opts[i])
            rocksdb_options_destroy(s->cf_opts[i]);
    if (s->opts)
        rocksdb_options_destroy(s->opts);
    if (s->changes_filter) /* after the database: its compactions use it */
        rocksdb_compactionfilter_destroy(s->changes_filter);
    if (s->table)
        rocksdb_block_based_options_destroy(s->table);
    if (s->cache)
        rocksdb_cache_destroy(s->cache);
    br_hlc_clock_free(s->clock);
    pthread_mutex_destroy(&s->cat_mu);
    pthread_mutex_destroy(&s->sync_mu);
    pthread_cond_destroy(&s->sync_cv);
    br_free(s->path);
    br_free(s);
}

br_hlc_clock *br_store_clock(br_store *s)
{
    return s->clock;
}

uint64_t br_store_write_count(const br_store *s)
{
    return atomic_load(&((br_store *)s)->written);
}

br_err br_store_flush(br_store *s)
{
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    br_err e = BR_OK;
    for (int i = 0; i < CF_COUNT && !e; i++) {
        char *err = NULL;
        rocksdb_flush_cf(s->rdb, fo, s->cf[i], &err);
        if (err)
            e = store_rdb_err(err, "flush");
    }
    rocksdb_flushoptions_destroy(fo);
    return e;
}

const struct br_env *br_store_env(br_store *s)
{
    return s->env;
}

/* ---- catalog ---- */

static br_err catalog_get(br_store *s, const char *name, size_t len, uint8_t dbid[4],
                          uint32_t *revs_limit)
{
    uint8_t key[1 + BR_DB_NAME_MAX];
    key[0] = 'c';
    memcpy(key + 1, name, len);
    char *v;
    size_t vl;
    br_err e = store_get(s, CF_META, key, len + 1, &v, &vl);
    if (e)
        return e;
    if (!v)
        return BR_ENOTFOUND;
    if (vl != 8) {
        rocksdb_free(v);
        br_log(BR_LOG_ERROR, "store", "op=catalog db=%.*s msg=\"corrupt catalog record\"", (int)len,
               name);
        return BR_ESTORE;
    }
    memcpy(dbid, v, 4);
    *revs_limit = store_rd32((const uint8_t *)v + 4);
    rocksdb_free(v);
    return BR_OK;
}

static br_err catalog_put(br_store *s, rocksdb_writebatch_t *wb, const char *name,
                          const uint8_t dbid[4], uint32_t revs_limit)
{
    uint8_t key[1 + BR_DB_NAME_MAX], val[8];
    size_t len = strlen(name);
    key[0] = 'c';
    memcpy(key + 1, name, len);
    memcpy(val, dbid, 4);
    store_be32(val + 4, revs_limit);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_META], (const char *)key, len + 1, (const char *)val, 8);
    return BR_OK;
}

br_err br_store_db_create(br_store *s, const char *name, struct br_errbuf *eb)
{
    size_t len = strlen(name);
    if (!br_db_name_valid(name, len, true))
        return br_fail(eb, BR_EBADNAME,
                       "Name: '%.*s'. Only lowercase characters (a-z), digits (0-9), and any of "
                       "the characters _, $, (, ), +, -, and / are allowed. Must begin with a "
                       "letter.",
                       (int)(len > 64 ? 64 : len), name);
    br_err e;
    pthread_mutex_lock(&s->cat_mu);
    uint8_t dbid[4];
    uint32_t rl;
    e = catalog_get(s, name, len, dbid, &rl);
    if (e == BR_OK) {
        e = br_fail(eb, BR_EEXIST, "The database could not be created, the file already exists.");
        goto out;
    }
    if (e != BR_ENOTFOUND)
        goto out;
    char *v;
    size_t vl;
    e = store_get(s, CF_META, "N", 1, &v, &vl);
    if (e)
        goto out;
    uint32_t next = 1;
    if (v) {
        if (vl == 4)
            next = store_rd32((const uint8_t *)v);
        rocksdb_free(v);
        if (vl != 4) {
            e = BR_ESTORE;
            goto out;
        }
    }
    if (next == UINT32_MAX) {
        e = br_fail(eb, BR_ESTORE, "database ids exhausted");
        goto out;
    }
    store_be32(dbid, next);
    uint8_t nextb[4];
    store_be32(nextb, next + 1);
    struct db_state empty;
    memset(&empty, 0, sizeof empty);
    uint8_t dig[DIGEST_LEN];
    store_digest_encode(&empty, dig);
    uint8_t dkey[5];
    memcpy(dkey, dbid, 4);
    dkey[4] = 'd';
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(wb, s->cf[CF_META], "N", 1, (const char *)nextb, 4);
    (void)catalog_put(s, wb, name, dbid, s->revs_limit);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_META], (const char *)dkey, 5, (const char *)dig,
                              DIGEST_LEN);
    uint64_t ticket;
    e = store_write(s, wb, &ticket);
    rocksdb_writebatch_destroy(wb);
    if (!e)
        e = store_sync(s, ticket);
    if (!e)
        br_log(BR_LOG_INFO, "store", "op=db_create db=%s", name);
out:
    pthread_mutex_unlock(&s->cat_mu);
    return e;
}

br_err br_store_db_delete(br_store *s, const char *name, struct br_errbuf *eb)
{
    size_t len = strlen(name);
    if (!br_db_name_valid(name, len, true))
        return br_fail(eb, BR_EBADNAME, "invalid database name");
    pthread_mutex_lock(&s->cat_mu);
    uint8_t dbid[4];
    uint32_t rl;
    br_err e = catalog_get(s, name, len, dbid, &rl);
    if (e) {
        if (e == BR_ENOTFOUND)
            br_errbuf_set(eb, "Database does not exist.");
        pthread_mutex_unlock(&s->cat_mu);
        return e;
    }
    /* Mark open handles dead first, so no writer commits into the range after the delete. */
    for (struct br_db *d = s->open; d; d = d->next) {
        if (memcmp(d->dbid, dbid, 4) == 0) {
            pthread_mutex_lock(&d->wmu);
            d->deleted = true;
            pthread_cond_broadcast(&d->chg_cv);
            pthread_mutex_unlock(&d->wmu);
        }
    }
    uint8_t ckey[1 + BR_DB_NAME_MAX], dkey[5], end[4];
    ckey[0] = 'c';
    memcpy(ckey + 1, name, len);
    memcpy(dkey, dbid, 4);
    dkey[4] = 'd';
    store_be32(end, store_rd32(dbid) + 1);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], (const char *)ckey, len + 1);
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], (const char *)dkey, 5);
    dkey[4] = 'i'; /* the index policy */
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], (const char *)dkey, 5);
    for (int cf = CF_DOCS; cf < CF_COUNT; cf++)
        rocksdb_writebatch_delete_range_cf(wb, s->cf[cf], (const char *)dbid, 4, (const char *)end,
                                           4);
    uint64_t ticket;
    e = store_write(s, wb, &ticket);
    rocksdb_writebatch_destroy(wb);
    if (!e)
        e = store_sync(s, ticket);
    pthread_mutex_unlock(&s->cat_mu);
    if (e)
        return e;
    /* Reclaim the files: compact the deleted range in every family. */
    for (int cf = CF_DOCS; cf < CF_COUNT; cf++)
        rocksdb_compact_range_cf(s->rdb, s->cf[cf], (const char *)dbid, 4, (const char *)end, 4);
    br_log(BR_LOG_INFO, "store", "op=db_delete db=%s", name);
    return BR_OK;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

br_err br_store_db_list(br_store *s, char ***names, size_t *n)
{
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    br_err e = BR_OK;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, s->ro, s->cf[CF_META]);
    for (rocksdb_iter_seek(it, "c", 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 2 || k[0] != 'c')
            break;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nv = br_realloc(v, nc * sizeof *nv);
            if (!nv) {
                e = BR_ENOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        v[cnt] = br_strndup(k + 1, kl - 1);
        if (!v[cnt]) {
            e = BR_ENOMEM;
            break;
        }
        cnt++;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err && !e)
        e = store_rdb_err(err, "db_list");
    else
        rocksdb_free(err);
    if (e) {
        br_store_names_free(v, cnt);
        return e;
    }
    if (cnt)
        qsort(v, cnt, sizeof *v, cmp_names);
    *names = v;
    *n = cnt;
    return BR_OK;
}

void br_store_names_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        br_free(names[i]);
    br_free(names);
}

br_err br_store_db_open(br_store *s, const char *name, br_db **out)
{
    size_t len = strlen(name);
    if (!br_db_name_valid(name, len, true))
        return BR_EBADNAME;
    pthread_mutex_lock(&s->cat_mu);
    br_err e = BR_OK;
    for (struct br_db *d = s->open; d; d = d->next) {
        if (strcmp(d->name, name) == 0 && !d->deleted) {
            d->refs++;
            *out = d;
            goto out;
        }
    }
    uint8_t dbid[4];
    uint32_t rl;
    e = catalog_get(s, name, len, dbid, &rl);
    if (e)
        goto out;
    uint8_t dkey[5];
    memcpy(dkey, dbid, 4);
    dkey[4] = 'd';
    char *v;
    size_t vl;
    e = store_get(s, CF_META, dkey, 5, &v, &vl);
    if (e)
        goto out;
    struct br_db *db = br_calloc(1, sizeof *db);
    if (!db) {
        rocksdb_free(v);
        e = BR_ENOMEM;
        goto out;
    }
    e = v ? digest_decode(&db->st, (const uint8_t *)v, vl) : BR_ESTORE;
    rocksdb_free(v);
    if (e) {
        br_log(BR_LOG_ERROR, "store", "op=db_open db=%s msg=\"corrupt digest record\"", name);
        br_free(db);
        goto out;
    }
    db->s = s;
    memcpy(db->name, name, len + 1);
    memcpy(db->dbid, dbid, 4);
    db->revs_limit = rl;
    db->refs = 1;
    db->next_watch_id = 1;
    pthread_mutex_init(&db->wmu, NULL);
    pthread_mutex_init(&db->cur_mu, NULL);
    pthread_rwlock_init(&db->ipol_rw, NULL);
    pthread_rwlock_init(&db->watch_rw, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->chg_cv, &ca);
    pthread_condattr_destroy(&ca);
    e = index_policy_load(db);
    if (e) {
        index_policy_free(db);
        pthread_mutex_destroy(&db->wmu);
        pthread_mutex_destroy(&db->cur_mu);
        pthread_rwlock_destroy(&db->ipol_rw);
        pthread_rwlock_destroy(&db->watch_rw);
        pthread_cond_destroy(&db->chg_cv);
        br_free(db);
        goto out;
    }
    db->next = s->open;
    s->open = db;
    *out = db;
out:
    pthread_mutex_unlock(&s->cat_mu);
    return e;
}

void br_db_close(br_db *db)
{
    if (!db)
        return;
    br_store *s = db->s;
    pthread_mutex_lock(&s->cat_mu);
    if (--db->refs > 0) {
        pthread_mutex_unlock(&s->cat_mu);
        return;
    }
    for (struct br_db **pp = &s->open; *pp; pp = &(*pp)->next) {
        if (*pp == db) {
            *pp = db->next;
            break;
        }
    }
    pthread_mutex_unlock(&s->cat_mu);
    subs_release(db);
    find_cursors_release(db);
    index_policy_free(db);
    rocksdb_writebatch_t *spare = atomic_exchange(&db->wb_spare, NULL);
    if (spare)
        rocksdb_writebatch_destroy(spare);
    pthread_rwlock_destroy(&db->ipol_rw);
    pthread_mutex_destroy(&db->cur_mu);
    pthread_mutex_destroy(&db->wmu);
    pthread_rwlock_destroy(&db->watch_rw);
    pthread_cond_destroy(&db->chg_cv);
    br_free(db->watchers);
    br_free(db);
}

const char *br_db_name(const br_db *db)
{
    return db->name;
}

br_err br_db_digest(br_db *db, struct br_db_digest *out)
{
    pthread_mutex_lock(&db->wmu);
    br_err e = db->deleted ? BR_ENOTFOUND : BR_OK;
    if (!e)
        *out = db->st.digest;
    pthread_mutex_unlock(&db->wmu);
    return e;
}

br_err br_db_info(br_db *db, struct br_db_info *out)
{
    struct br_db_info info;
    memset(&info, 0, sizeof info);
    pthread_mutex_lock(&db->wmu);
    br_err e = db->deleted ? BR_ENOTFOUND : BR_OK;
    if (!e) {
        info.digest = db->st.digest;
        info.doc_count = db->st.digest.doc_count;
        info.doc_del_count = db->st.del_count;
        info.update_seq = db->st.update_seq;
        info.revs_limit = db->revs_limit;
        info.size_external = db->st.external_size;
    }
    pthread_mutex_unlock(&db->wmu);
    if (e)
        return e;
    uint8_t start[4], end[4];
    memcpy(start, db->dbid, 4);
    store_be32(end, store_rd32(db->dbid) + 1);
    const char *sk[1] = {(const char *)start}, *ek[1] = {(const char *)end};
    size_t skl[1] = {4}, ekl[1] = {4};
    for (int cf = CF_DOCS; cf < CF_COUNT; cf++) {
        uint64_t sz = 0;
        char *err = NULL;
        rocksdb_approximate_sizes_cf(db->s->rdb, db->s->cf[cf], 1, sk, skl, ek, ekl, &sz, &err);
        if (err)
            return store_rdb_err(err, "approximate_sizes");
        info.size_file += sz;
        if (cf == CF_DOCS)
            info.size_active += sz;
    }
    *out = info;
    return BR_OK;
}

br_err br_db_set_revs_limit(br_db *db, uint32_t limit)
{
    if (limit == 0)
        return BR_EINVAL;
    br_store *s = db->s;
    pthread_mutex_lock(&s->cat_mu);
    pthread_mutex_lock(&db->wmu);
    br_err e = db->deleted ? BR_ENOTFOUND : BR_OK;
    if (!e) {
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        (void)catalog_put(s, wb, db->name, db->dbid, limit);
        uint64_t t;
        e = store_write(s, wb, &t);
        rocksdb_writebatch_destroy(wb);
        if (!e)
            e = store_sync(s, t);
        if (!e)
            db->revs_limit = limit;
    }
    pthread_mutex_unlock(&db->wmu);
    pthread_mutex_unlock(&s->cat_mu);
    return e;
}

void store_notify(struct br_db *db, struct br_hlc seq)
{
    /* Called with wmu held: wake waiters now; watchers are called by the caller after unlock. */
    (void)seq;
    pthread_cond_broadcast(&db->chg_cv);
}
