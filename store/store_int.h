/* store_int.h — the store's private structures and its storage layout.
 *
 * One RocksDB instance per node, with column families:
 *   meta     "N"                       -> next database id (u32 BE)
 *            "c" name                  -> catalog record: dbid u32 BE, revs_limit u32 BE
 *            dbid "d"                  -> digest record (struct db_state, DIGEST_LEN bytes)
 *            dbid "i"                  -> index policy: "A" (every path), or "P", varint n,
 *                                         n x (varint len, key pattern); absent: none
 *   docs     dbid docid                -> document record: version, seq HLC, [packed entry's
 *                                         HLC,] revision tree, and the data (body + attachment
 *                                         stubs) of every leaf
 *   changes  dbid HLC                  -> change entry: flags, winner rev, docid; or, for a
 *                                         commit that changed K >= 2 documents, one packed
 *                                         entry keyed by its greatest HLC (see CHANGE_PACKED)
 *   local    dbid id                   -> local doc: u64 BE counter, CBOR body
 *   atts     dbid 'b' key32            -> blob record: blob id, length, md5, refcount (leaves
 *                                         referencing it), chunk count
 *            dbid 'c' blobid u64 idx u32 BE -> one chunk (64 KiB) of a blob; blob files on
 *            dbid 'm' md5(16)          -> key32 (resolves CouchDB stubs by md5 digest)
 *            dbid 'p' blobid u64       -> a streaming upload in progress (swept at open)
 *   index    dbid esc(keys) tag value docid -> "" : one posting per path of each live winner
 *                                         (index.c: order-preserving, so equality, prefix and
 *                                         ranges are key-range scans)
 *   A blob's content key is BLAKE2b-256 of its bytes (peers can choose the bytes, so no MD5
 *   for addressing); the md5 is kept for CouchDB's "md5-<base64>" digests.
 * dbid is a 4-byte big-endian id never reused, so a deleted database's key range cannot leak
 * into a new one. Document ids hold no NUL byte. Every user write is one WriteBatch. */
#ifndef BARREL_STORE_INT_H
#define BARREL_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <rocksdb/c.h>

#include "barrel/buf.h"
#include "barrel/paths.h"
#include "barrel/query.h"
#include "barrel/revtree.h"
#include "barrel/store.h"

enum cf_id { CF_DEFAULT, CF_META, CF_DOCS, CF_CHANGES, CF_LOCAL, CF_ATTS, CF_INDEX, CF_COUNT };

#define DOCREC_VERSION 1
/* The same record with the key HLC of a packed change entry after the seq: the document's
 * latest change is an item of that entry (CHANGE_PACKED), which a later change of the document
 * removes the item from. */
#define DOCREC_VERSION_PACKED 2
#define DIGEST_VERSION 1
#define DIGEST_LEN (1 + 12 + 8 + 8 + 8 + 16 + 8)
#define ATT_CHUNK (64u * 1024u)

/* A database's counters and digest: its digest record (DIGEST_LEN bytes). */
struct db_state {
    struct br_db_digest digest;
    uint64_t del_count;
    uint64_t update_seq;
    uint64_t external_size;
};

struct watcher {
    uint64_t id;
    br_db_watch_fn fn;
    void *arg;
};

/* The shared state of one open database; br_db handles are references to it. */
struct br_db {
    br_store *s;
    char name[BR_DB_NAME_MAX + 1];
    uint8_t dbid[4];
    uint32_t revs_limit;
    int refs;            /* under s->cat_mu */
    atomic_bool deleted; /* written under wmu by br_store_db_delete; read anywhere */

    pthread_mutex_t wmu; /* serialises writers: HLC order == commit order within the db */
    /* A cleared write batch kept for the next write (docs.c): reusing its buffer spares every
     * batch the growth copies and fresh-page faults of a new one (bench/store_bench.c). */
    _Atomic(rocksdb_writebatch_t *) wb_spare;
    pthread_cond_t chg_cv;
    struct db_state st; /* as committed (under wmu) */

    /* Index policy (index.c): which paths get postings. Changed under wmu and ipol_rw
     * write-held; find holds it read while it plans and takes its snapshot. */
    pthread_rwlock_t ipol_rw;
    bool ipol_all; /* every path */
    char **ipol;   /* else these key patterns (none: the default) */
    size_t n_ipol;
    br_pattern_trie *ipol_trie;
    uint64_t ipol_gen;             /* bumped by every change: continuation tokens check it */
    atomic_uint_fast64_t chg_fast; /* changes feeds that used the path index (changes.c; tests) */
    struct subs *subs;             /* subscriptions (subs.c), created under cur_mu */
    atomic_uint_fast64_t n_subs;
    pthread_mutex_t cur_mu; /* find cursors (find.c) */
    struct find_cursor *cursors[64];
    uint64_t next_cursor;

    pthread_rwlock_t watch_rw; /* watchers: read-held while calling them, write to change */
    struct watcher *watchers;
    size_t n_watchers;
    uint64_t next_watch_id;
    struct br_db *next; /* in s->open list */
};

struct br_store {
    rocksdb_t *rdb;
    rocksdb_options_t *opts;
    rocksdb_options_t *cf_opts[CF_COUNT];
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_column_family_handle_t *cf[CF_COUNT];
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
    rocksdb_readoptions_t *ro_cached; /* read tier: memtables and block cache only */
    const struct br_env *env;
    br_hlc_clock *clock;
    size_t max_doc_bytes;
    uint32_t revs_limit;
    char *path;

    pthread_mutex_t cat_mu; /* catalog and the open list */
    struct br_db *open;
    rocksdb_compactionfilter_t *changes_filter; /* set on the changes family's options */

    /* Group commit: writers write without sync, then share fsyncs of the WAL. */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    bool syncing;
    atomic_uint_fast64_t written; /* tickets of completed unsynced writes */
    uint64_t synced;
    atomic_uint_fast64_t fsyncs; /* how many WAL fsyncs were made (bench / tests) */
};

/* ---- helpers shared by the store's files ---- */

/* Translate a RocksDB error string (frees it) into BR_ESTORE with a logged reason. */
br_err store_rdb_err(char *err, const char *what);
/* Commit a batch for db (unsynced) and return the write ticket for store_sync. */
br_err store_write(br_store *s, rocksdb_writebatch_t *wb, uint64_t *ticket);
/* Wait until the WAL is fsync'd past `ticket` (group commit: one fsync serves many). */
br_err store_sync(br_store *s, uint64_t ticket);
/* Read one key; *out NULL when missing. Caller frees *out with rocksdb_free. */
br_err store_get(br_store *s, enum cf_id cf, const void *key, size_t klen, char **out, size_t *len);
/* store_get from memory only (memtables and block cache): BR_EWOULDBLOCK when the answer
 * needs a disk read. */
br_err store_get_cached(br_store *s, enum cf_id cf, const void *key, size_t klen, char **out,
                        size_t *len);
/* Build "dbid + suffix" keys into a buf. */
br_err store_key(br_buf *k, const uint8_t dbid[4], const void *a, size_t alen);
/* The key that follows every key beginning with prefix (prefix + 1 as a big number). */
br_err store_prefix_end(const uint8_t *prefix, size_t n, br_buf *out);
/* Digest record encoding. */
void store_digest_encode(const struct db_state *st, uint8_t out[DIGEST_LEN]);
/* Wake changes waiters and watchers after a commit that advanced db->digest.last. */
void store_notify(struct br_db *db, struct br_hlc seq);
/* Is the document id acceptable (1..1024 bytes of UTF-8, no NUL, "_" only for _design/)? */
bool store_docid_valid(const char *id, size_t len);

/* varints (LEB128), bounded */
br_err store_put_varint(br_buf *b, uint64_t v);
/* The same varint at p, which has room for 10 bytes; returns its length. */
size_t store_varint_at(uint8_t *p, uint64_t v);
br_err store_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);

static inline void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t store_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t store_rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- document records (docrec.c) ---- */

struct att_batch;

/* The data of one leaf revision: its body and attachment stubs. */
struct leafdata {
    uint32_t node;       /* index in the tree when decoded; the encoder looks the rev up again */
    struct br_rev rev;   /* which leaf this is (indices move when a tree is pruned) */
    const uint8_t *body; /* canonical CBOR map; borrowed from the record or owned via own */
    size_t body_len;
    struct br_att_stub *atts; /* owned */
    size_t n_atts;
    uint8_t *own; /* owned copy of body, or NULL when borrowed */
};

struct docrec {
    struct br_hlc seq;
    bool packed; /* the change at seq is an item of a packed entry (DOCREC_VERSION_PACKED) */
    struct br_hlc pack_key; /* that entry's key HLC (when packed) */
    br_revtree tree;
    struct leafdata *leaves;
    size_t n_leaves;
    /* While the winner is a tombstone: the body of the last live winner, so path and query
     * filters see a deletion as the document it deleted (CHG-26). Borrowed or owned (gone_own). */
    const uint8_t *gone;
    size_t gone_len;
    uint8_t *gone_own;
};

void docrec_init(struct docrec *r);
void docrec_fini(struct docrec *r);
/* Decode a stored record (untrusted: BR_ESTORE on corruption). Bodies are borrowed from p. */
br_err docrec_decode(const uint8_t *p, size_t n, struct docrec *r);
br_err docrec_encode(const struct docrec *r, br_buf *out);
struct leafdata *docrec_leaf(struct docrec *r, const struct br_rev *rev);
/* Drop the data of leaf `rev` (it stopped being a leaf), releasing its blob references. */
br_err docrec_drop_leaf(struct docrec *r, const struct br_rev *rev, struct att_batch *ab);
void att_stubs_free(struct br_att_stub *a, size_t n);
br_err att_stubs_copy(const struct br_att_stub *a, size_t n, struct br_att_stub **out);

/* ---- change entries (changes.c) ----
 *
 * A single entry (one document changed in its commit) is flags (0, or 1: deleted), rev length,
 * rev text, docid, keyed by the change's HLC. A commit that changes K >= 2 documents writes
 * packed entries instead (up to PACK_MAX items each, over consecutive HLC ranges): keyed by the
 * greatest HLC of its items, its value is CHANGE_PACKED, varint K, then K items in HLC order,
 * each varint (key wall - item wall), varint item logical, varint length, and a single entry's
 * value. Commits hold the write lock while they take their HLCs, so their ranges never
 * interleave: the first key after `since` is the entry holding the first item after it.
 *
 * When a document changes again, its old change goes in the same batch as the new one: a single
 * entry is deleted; an item is removed by a merge operand (CHANGE_DROP_LEN bytes: the item's
 * HLC) on its packed entry, whose key the record keeps (docrec.pack_key). The changes family's
 * merge operator applies the operands (on reads, and for good in compactions), so every item a
 * reader sees is its document's latest change, and superseded ones take no space once
 * compacted; its compaction filter drops an entry left with no items (K = 0). */
#define CHANGE_PACKED 0x80
/* Items per packed entry at most: a reader decodes a whole entry at once. */
#define PACK_MAX 1024

/* The changes of one stored entry, in HLC order; items borrow from the value. */
struct change_items {
    struct br_change *c;
    size_t n, cap;
    bool packed;
};
void change_items_fini(struct change_items *ci);
/* Decode the entry (key HLC `key`, value v) into ci (reused: its array grows as needed).
 * BR_ESTORE on malformed bytes, BR_ENOMEM. */
br_err change_items_decode(struct br_hlc key, const char *v, size_t vl, struct change_items *ci);
#define CHANGE_DROP_LEN 12
/* The packed entry v (key HLC key) without the items whose HLC is among the n drops (sorted
 * br_hlc_encode bytes, CHANGE_DROP_LEN each); malloc'd. NULL when v is not a well-formed
 * packed entry, or without memory. */
char *changes_drop_items(struct br_hlc key, const char *v, size_t vl, const uint8_t *drops,
                         size_t n, size_t *out_len);
/* The changes family's merge operator and compaction filter (store_open sets them). */
rocksdb_mergeoperator_t *changes_merge_operator(void);
rocksdb_compactionfilter_t *changes_compaction_filter(void);

/* ---- attachments (att.c): called by the write path under db->wmu ---- */

/* Per-batch state of att.c: blobs staged in this batch and reference-count deltas, so several
 * documents of one batch can share a blob before anything is committed. */
struct att_batch;
br_err att_batch_new(struct att_batch **out);
void att_batch_free(struct att_batch *ab); /* NULL is a no-op */

/* Turn the attachments of one revision write into stubs (sorted by name, owned by the caller,
 * freed with att_stubs_free): inline data is hashed (md5 + BLAKE2b-256) and, unless the
 * database or this batch already holds that content, chunked into wb; a blob_key names a blob
 * streamed in beforehand (br_att_writer); a stub keeps the parent leaf's attachment of that
 * name, or (replicated writes) any blob of this database with that md5 digest. New inline
 * attachments get revpos = `revpos` unless in->revpos is set. Errors: BR_EBADNAME (name),
 * BR_ENOTFOUND (a stub or blob key that resolves to nothing), BR_ENOMEM, BR_ESTORE. */
br_err att_prepare(struct br_db *db, rocksdb_writebatch_t *wb, struct att_batch *ab,
                   const struct br_att_in *in, size_t n, const struct leafdata *parent,
                   uint64_t revpos, struct br_att_stub **out, size_t *n_out, struct br_errbuf *eb);
/* A leaf gained (+1) or lost (-1) a reference to blob `key`. */
br_err att_ref(struct att_batch *ab, const uint8_t key[32], int delta);
/* Apply the batch's reference deltas to the stored counts in wb; a blob whose count reaches zero
 * is deleted (record, md5 index entry and chunks) in wb. Call once, just before committing. */
br_err att_batch_flush(struct br_db *db, rocksdb_writebatch_t *wb, struct att_batch *ab);
/* At store open: delete uploads left in progress by a crash and blobs nothing references. */
br_err att_sweep(br_store *s, const uint8_t dbid[4]);

/* ---- subscriptions (subs.c) ---- */

/* The topics of a batch's changes, gathered while index_update walks their bodies, so that one
 * walk of a body serves the index and the subscriptions (docs.c commit): each topic is
 * NUL-terminated in text at off[k]. */
struct subs_topics {
    br_buf text;
    size_t *off;
    size_t n, cap;
    br_err err; /* a topic could not be kept: the change's walk is redone by subs_publish */
};
void subs_topics_init(struct subs_topics *t);
void subs_topics_fini(struct subs_topics *t);
/* A br_paths_cb appending pv's topic to arg (a struct subs_topics); never stops the walk. */
int subs_topics_tap(void *arg, const struct br_path_value *pv);

/* One committed document change, as subscriptions see it. body: the live winner's, or for a
 * deletion the last live body (may be NULL). topics: when not NULL, the topics of body are
 * topics->off[t_from, t_to) (gathered by the index's walk); else subs_publish walks body. */
struct subs_change {
    const char *id;
    size_t id_len;
    struct br_rev rev;
    bool deleted;
    struct br_hlc seq;
    const uint8_t *body;
    size_t body_len;
    const struct subs_topics *topics;
    size_t t_from, t_to;
};
/* Queue committed changes for the subscriptions' delivery thread, which matches them (under
 * db->wmu, in commit order; never blocks on subscribers: with the change FIFO full, it matches
 * the oldest queued changes itself). */
void subs_publish(struct br_db *db, const struct subs_change *c, size_t n);
/* Tests: bound the change FIFO of db's subscriptions (registered already) to max changes (0:
 * the default); how many changes writers matched themselves because the FIFO was full. */
void subs_test_fifo_max(struct br_db *db, size_t max);
uint64_t subs_test_writer_matched(struct br_db *db);
/* Stop the delivery thread and free the registry (at the last br_db_close). */
void subs_release(struct br_db *db);

/* ---- queries on stored bodies (query.c) ---- */

/* br_query_match for the body of a stored record, whose CBOR the write path validated (and
 * RocksDB checksums): it skips br_qnode_match's whole-body well-formedness pass (the walks stay
 * bounded on any bytes) and the conditions in proven[0..n_proven), which must be q's root or
 * children of its top-level AND that the caller has already established for this document
 * (find.c: conditions its index postings prove). Thread: any. */
bool query_match_stored(const br_query *q, const struct br_qnode *const *proven, size_t n_proven,
                        const uint8_t *body, size_t len);

/* Release the snapshots find cursors hold (at the last br_db_close). */
void find_cursors_release(struct br_db *db);

/* ---- path index (index.c) ---- */

/* Posting keys are dbid | esc(keys) | tag | value | docid, where esc() writes a byte string
 * order-preservingly (0x00 -> 00 ff, terminated by 00 01) and the tag orders the value types:
 * null < false < true < numbers < strings. Numbers (ints and floats together) are the 8-byte
 * order-preserving form of their double, so an int beyond 2^53 shares a key with its neighbours:
 * the index narrows, the query is always checked against the document. Strings are cut to
 * BR_PATH_STRING_CUT bytes as in paths.h, then escaped. */
enum { IDX_NULL = 0x10, IDX_FALSE = 0x20, IDX_TRUE = 0x21, IDX_NUM = 0x30, IDX_STR = 0x40 };

/* dbid | esc(keys) */
br_err index_path_prefix(br_buf *k, const uint8_t dbid[4], const char *keys, size_t len);
/* Append tag | value for a scalar (string values are cut). */
br_err index_put_value(br_buf *k, enum br_pv_type t, int64_t i, double f, const char *s, size_t n);
/* Append tag | the order-preserving 8 bytes of d (numbers). */
br_err index_put_number(br_buf *k, double d);
/* Append the escaped string s (no cut) and its terminator; without terminator for prefixes. */
br_err index_put_string(br_buf *k, const char *s, size_t n, bool terminate);
/* The index mutations of one write batch, added to the WriteBatch sorted by key. */
struct index_op {
    size_t off, len; /* the key, in keys */
    size_t seq;      /* order of making: for the same key, a later op wins */
    bool put;
};
struct index_batch {
    br_buf keys;
    struct index_op *ops;
    size_t n, cap;
};
void index_batch_init(struct index_batch *ib);
void index_batch_fini(struct index_batch *ib);
/* Queue the removal of old_body's postings and the addition of new_body's (either may be
 * NULL) for document id. A posting both bodies share is removed, then added again. When
 * tap_body is old_body or new_body (the same pointer) and that body is walked, tap is called
 * with every path of it too and *tapped set; tap's return value is ignored. */
br_err index_update(struct br_db *db, struct index_batch *ib, const char *id, size_t id_len,
                    const uint8_t *old_body, size_t old_len, const uint8_t *new_body,
                    size_t new_len, const uint8_t *tap_body, br_paths_cb tap, void *tap_arg,
                    bool *tapped);
/* The document id inside a posting key whose path prefix is plen bytes long (borrowed from
 * k); false for a malformed key. */
bool index_posting_docid(const char *k, size_t kl, size_t plen, const char **id, size_t *len);
/* Append the queued mutations to wb in key order. */
void index_batch_flush(struct br_db *db, rocksdb_writebatch_t *wb, struct index_batch *ib);
/* Does the policy index this path (joined keys)? */
bool index_wants(const struct br_db *db, const char *keys, size_t len);
/* Load the policy at database open (meta dbid 'i'; absent: every path); free it at close. */
br_err index_policy_load(struct br_db *db);
void index_policy_free(struct br_db *db);

/* The body filters see for a document record: the live winner's, or for a deleted winner the
 * last live body (gone); NULL when there is none. *deleted tells which. */
const uint8_t *docrec_filter_body(const struct docrec *r, size_t *len, bool *deleted);

#endif
