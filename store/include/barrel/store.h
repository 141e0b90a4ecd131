/* store.h — barrel's document store: one RocksDB instance per node holding many databases of
 * JSON-typed documents (canonical CBOR) with CouchDB revision trees, a changes feed keyed by the
 * node's HLC, local documents, content-addressed attachments and a per-database digest.
 *
 * Handles: br_store (the node's storage, owns the RocksDB instance and the HLC clock) and br_db
 * (one open database, reference-counted; keep it open while you use it). Every document write
 * is one atomic RocksDB batch covering the revision body, the tree, the change entry, the
 * attachment references and the digest. Writes with BR_SYNC_FULL are fsync'd before they are
 * acknowledged; concurrent writers share one fsync (group commit).
 *
 * Ownership: results marked "caller frees" are released with the named _free function. Strings
 * and byte spans inside callbacks are borrowed for the duration of the call.
 * Thread: every function may be called from any thread unless its comment says otherwise. */
#ifndef BARREL_STORE_H
#define BARREL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/env.h"
#include "barrel/err.h"
#include "barrel/hlc.h"
#include "barrel/rev.h"

typedef struct br_store br_store;
typedef struct br_db br_db;

#define BR_DB_NAME_MAX 238
#define BR_DOCID_MAX 1024
#define BR_DEFAULT_MAX_DOC_BYTES (64u << 20)
#define BR_DEFAULT_REVS_LIMIT 1000

enum br_sync {
    BR_SYNC_FULL = 0, /* fsync before acknowledging (default for client writes) */
    BR_SYNC_NONE = 1, /* acknowledge once in the OS: survives kill -9, not power loss */
};

struct br_store_opts {
    const char *path;          /* data directory; created if missing */
    const struct br_env *env;  /* NULL: br_env_default() */
    size_t max_doc_bytes;      /* largest accepted body; 0: BR_DEFAULT_MAX_DOC_BYTES */
    uint64_t max_skew_ms;      /* HLC skew bound; 0: BR_HLC_DEFAULT_MAX_SKEW_MS */
    uint32_t revs_limit;       /* default revs_limit of new databases; 0: 1000 */
    size_t cache_bytes;        /* block cache; 0: 32 MiB */
    bool read_only_lock_check; /* internal: fail rather than wait on a held lock */
};

/* Open (or create) the store at o->path. BR_EBUSY (with a message) if another process holds
 * it. On success *out owns a new handle; release it with br_store_close(). */
BR_NODISCARD br_err br_store_open(const struct br_store_opts *o, br_store **out,
                                  struct br_errbuf *eb);
/* Close the store. All br_db handles must be closed first. NULL is a no-op. */
void br_store_close(br_store *s);
/* The node's clock (borrowed, valid until br_store_close). */
br_hlc_clock *br_store_clock(br_store *s);
const struct br_env *br_store_env(br_store *s);
/* How many batches have been committed since open (reads and failed writes do not count): a
 * caller that sees it unchanged over a while knows the store has been idle. Thread: any. */
uint64_t br_store_write_count(const br_store *s);
/* Write every column family's memtable out to table files and wait, which hands the memtables'
 * memory back (an idle node's biggest part after the block cache). Nothing changes for readers.
 * BR_ESTORE if RocksDB fails (logged). Thread: any, but it blocks on disk I/O: not the loop. */
BR_NODISCARD br_err br_store_flush(br_store *s);

/* CouchDB's rule: ^[a-z][a-z0-9_$()+/-]*$, at most 238 bytes. `_`-prefixed names are reserved
 * for the node and accepted only when `system` is true. */
bool br_db_name_valid(const char *name, size_t len, bool system);

/* Create a database. BR_EBADNAME, BR_EEXIST. */
BR_NODISCARD br_err br_store_db_create(br_store *s, const char *name, struct br_errbuf *eb);
/* Delete a database and all it holds (a key-range delete; the files are reclaimed by a
 * compaction of the range). Open handles see BR_ENOTFOUND afterwards. BR_ENOTFOUND. */
BR_NODISCARD br_err br_store_db_delete(br_store *s, const char *name, struct br_errbuf *eb);
/* Names of all databases, sorted. Caller frees with br_store_names_free. */
BR_NODISCARD br_err br_store_db_list(br_store *s, char ***names, size_t *n);
void br_store_names_free(char **names, size_t n);
/* Open a database handle (reference-counted). BR_ENOTFOUND. */
BR_NODISCARD br_err br_store_db_open(br_store *s, const char *name, br_db **out);
void br_db_close(br_db *db); /* NULL is a no-op */
const char *br_db_name(const br_db *db);

/* The digest gossip exchanges: kept in the same batch as every write. */
struct br_db_digest {
    struct br_hlc last;   /* HLC of the newest change (BR_HLC_MIN for an empty db) */
    uint64_t doc_count;   /* live documents */
    uint8_t set_hash[16]; /* XOR of XXH3-128(docid, 0, leaf rev) over every leaf */
};

struct br_db_info {
    struct br_db_digest digest;
    uint64_t doc_count;
    uint64_t doc_del_count;
    uint64_t update_seq; /* number of committed document writes */
    uint32_t revs_limit;
    uint64_t size_file;     /* approximate bytes on disk for this db's key ranges */
    uint64_t size_active;   /* bytes of live revision bodies and trees (estimate) */
    uint64_t size_external; /* bytes of user data (bodies + attachments) */
};

BR_NODISCARD br_err br_db_info(br_db *db, struct br_db_info *out);
BR_NODISCARD br_err br_db_digest(br_db *db, struct br_db_digest *out);
BR_NODISCARD br_err br_db_set_revs_limit(br_db *db, uint32_t limit);

/* The path index policy: which document paths get index postings (find's planner uses the
 * index only for those; other conditions are answered by scanning, with the same results).
 * A policy is a list of MQTT patterns over the joined keys of a path, without the value:
 * `site`, `tags`, `users/+/name`, `meta/#`; or every path (all). The default is none: as in
 * CouchDB, PouchDB and Couchbase Lite, indexes are declared, because each posting is a
 * memtable insert in the document's write (about 3 us here; indexing every path of the
 * benchmark's sensor document cuts bulk inserts from ~200k to ~70k docs/s). Changing the
 * policy rebuilds the database's index in one atomic, synced batch while writers wait.
 * BR_EINVAL for a bad pattern or more than BR_INDEX_PATTERNS_MAX. */
#define BR_INDEX_PATTERNS_MAX 256
BR_NODISCARD br_err br_db_set_index(br_db *db, bool all, const char *const *patterns, size_t n,
                                    struct br_errbuf *eb);
/* The current policy: *all, or *n patterns (caller frees each and the array with br_free). */
BR_NODISCARD br_err br_db_index_policy(br_db *db, bool *all, char ***patterns, size_t *n);

/* ---- documents ---- */

/* An attachment on a document write: inline data, a stub that keeps an attachment of the
 * parent revision (or, for replicated writes, one this database holds by digest), or a blob
 * already streamed in with br_att_writer (see att.h). */
struct br_att_in {
    const char *name;
    const char *content_type; /* NULL: derived from the name */
    bool stub;                /* keep the existing attachment `name` / `digest` */
    const char *digest;       /* for stubs: "md5-<base64>" (optional when the parent has it) */
    const uint8_t *data;      /* inline data (not a stub) */
    size_t len;
    const uint8_t *blob_key; /* 32-byte content key of a blob streamed in beforehand, or NULL */
    uint64_t revpos;         /* replicated writes: the revpos the source gives; 0 otherwise */
};

/* One document write. For interactive writes (new_edits=true), `rev` is the parent the client
 * edited (NULL to create); for replicated writes (new_edits=false), `history` is the revision
 * path newest first (history[0] is the revision being written). */
struct br_put {
    const char *id; /* NULL: a new id is generated (32 hex) */
    size_t id_len;
    const struct br_rev *rev;
    bool deleted;
    const uint8_t *body; /* canonical CBOR map (br_cbor_doc_canonical); NULL/0: empty map */
    size_t body_len;
    /* Set only by barrel's own JSON encoder (br_json_doc_parse, br_json_doc_parse_text), whose
     * bodies are valid canonical maps by construction (fuzz-checked against
     * br_cbor_doc_canonical): the write does not validate them a second time. Never set it for
     * bytes that came from outside as CBOR. */
    bool body_trusted;
    const struct br_att_in *atts;
    size_t n_atts;
    const struct br_rev *history;
    size_t n_history;
};

struct br_put_result {
    br_err err;                /* per document */
    char id[BR_DOCID_MAX + 1]; /* the document id (generated ones too) */
    struct br_rev rev;         /* the revision written (or already present) */
    char reason[160];          /* for a person, when err != BR_OK */
};

struct br_write_opts {
    enum br_sync sync;
    bool new_edits; /* true: interactive writes; false: replicated revisions with history */
};
#define BR_WRITE_DEFAULT ((struct br_write_opts){BR_SYNC_FULL, true})
/* Make every write committed so far durable: one WAL fsync, shared with concurrent ones (group
 * commit); what a writer using BR_SYNC_NONE calls once after a series of writes. BR_ESTORE if
 * RocksDB fails (logged). Thread: any, but it blocks on disk I/O: not the loop. */
BR_NODISCARD br_err br_store_sync(br_store *s);

/* Write one document. The return value is the document's error (also in res->err).
 * Errors: BR_ECONFLICT (stale or missing _rev), BR_EBADREV, BR_EBADNAME (id out of rule),
 * BR_ETOOBIG (body past max_doc_bytes), BR_EINVAL (body not a canonical map), BR_ENOTFOUND
 * (deleting a document that does not exist). */
BR_NODISCARD br_err br_db_put(br_db *db, const struct br_put *p, const struct br_write_opts *wo,
                              struct br_put_result *res);
/* Write many documents in one atomic batch; res[i] answers docs[i]. Documents that fail are
 * left out of the batch; the others commit together. Docs in one batch that touch the same id
 * apply in order. Returns BR_OK unless the batch itself failed (then nothing was written). */
BR_NODISCARD br_err br_db_bulk(br_db *db, const struct br_put *docs, size_t n,
                               const struct br_write_opts *wo, struct br_put_result *res);

/* An attachment stub as read. */
struct br_att_stub {
    char *name;
    char *content_type;
    uint64_t length;
    char digest[48]; /* "md5-<base64>" */
    uint64_t revpos;
    uint8_t key[32]; /* content key (BLAKE2b-256) of the blob */
};

/* One revision of a document as read. Caller frees with br_doc_free. */
struct br_doc {
    char *id;
    size_t id_len;
    struct br_rev rev;
    bool deleted;
    uint8_t *body; /* canonical CBOR map */
    size_t body_len;
    struct br_att_stub *atts;
    size_t n_atts;
    struct br_rev *revisions; /* with opts.revs: history newest first (rev first) */
    size_t n_revisions;
    struct br_rev *conflicts; /* with opts.conflicts: live non-winning leaves */
    size_t n_conflicts;
    struct br_rev *deleted_conflicts; /* with opts.deleted_conflicts */
    size_t n_deleted_conflicts;
    struct br_hlc seq; /* HLC of the document's latest change */
};
void br_doc_free(struct br_doc *d); /* NULL is a no-op */

struct br_get_opts {
    const struct br_rev *rev; /* a specific revision (must still have its body) */
    bool revs;                /* fill revisions (limited by revs_limit) */
    bool conflicts;
    bool deleted_conflicts;
    bool include_deleted; /* return a deleted winner instead of BR_ENOTFOUND */
    bool cache_only;      /* answer from memory only: see br_db_get */
};

/* Read the winning revision (or opts->rev). BR_ENOTFOUND for a missing document, a deleted one
 * (unless include_deleted or rev is given; eb says "deleted"), or an unknown revision.
 * With opts->cache_only the read never touches the disk (RocksDB's memtables and block cache
 * only, so it is cheap enough for an event loop): it answers exactly as without the flag
 * (found, or definitely not found), or returns BR_EWOULDBLOCK when the answer needs a disk
 * read, or BR_ECLOSED when db has been deleted since it was opened; in both cases *out is
 * untouched, eb is not set, nothing is logged, and the caller asks again without the flag
 * (from a thread that may block). */
BR_NODISCARD br_err br_db_get(br_db *db, const char *id, size_t id_len, const struct br_get_opts *o,
                              struct br_doc **out, struct br_errbuf *eb);

/* open_revs: the given revisions (NULL/0: all leaves). For each, *out[i] is a document or, for a
 * revision not held, a struct with body NULL and `missing` set. Caller frees with
 * br_open_revs_free. BR_ENOTFOUND if the document does not exist at all. */
struct br_open_rev {
    bool missing;
    struct br_rev rev;  /* the revision asked for (or the leaf) */
    struct br_doc *doc; /* NULL when missing */
};
BR_NODISCARD br_err br_db_get_open_revs(br_db *db, const char *id, size_t id_len,
                                        const struct br_rev *revs, size_t n, bool with_revs,
                                        struct br_open_rev **out, size_t *n_out);
void br_open_revs_free(struct br_open_rev *r, size_t n);

/* Revisions of many documents at once (replication's get_revs): one multi-get on one
 * snapshot rather than a read per document. */
struct br_revs_want {
    const char *id;
    size_t id_len;
    const struct br_rev *revs;
    size_t n;
};
/* One revision asked for, as read: borrowed, valid during the callback only. */
struct br_rev_read {
    size_t doc;        /* index of its document in the request */
    struct br_rev rev; /* the revision asked for */
    bool missing;      /* not held, or no longer a leaf (its body is gone) */
    bool deleted;
    const uint8_t *body; /* canonical CBOR map */
    size_t body_len;
    const struct br_rev *history; /* newest first (rev itself first), up to revs_limit */
    size_t n_history;
    const struct br_att_stub *atts;
    size_t n_atts;
};
typedef int (*br_rev_read_cb)(void *arg, const struct br_rev_read *r);
/* Call cb for each revision of docs[i].revs, in request order, with what br_db_get_open_revs
 * would give (a document that does not exist: each revision missing). A non-zero return from cb
 * stops the read (BR_OK). BR_ENOMEM, BR_ESTORE. Thread: any. */
BR_NODISCARD br_err br_db_read_revs(br_db *db, const struct br_revs_want *docs, size_t n,
                                    br_rev_read_cb cb, void *arg);

/* revsdiff (CouchDB _revs_diff): which of the offered revisions this database lacks, and for
 * each document the local leaves that could be their ancestors. */
struct br_revsdiff_in {
    const char *id;
    size_t id_len;
    const struct br_rev *revs;
    size_t n;
};
struct br_revsdiff_out {
    struct br_rev *missing; /* in input order */
    size_t n_missing;
    struct br_rev *possible_ancestors; /* sorted, unique */
    size_t n_possible_ancestors;
};
BR_NODISCARD br_err br_db_revsdiff(br_db *db, const struct br_revsdiff_in *in, size_t n,
                                   struct br_revsdiff_out *out);
void br_revsdiff_out_fini(struct br_revsdiff_out *out, size_t n);

/* Conflict resolution that writes revisions (Decisions §8, DOC-09..13): tombstones under every
 * losing live leaf, and either a child of `choose` (if it is not the winner already) or, with a
 * merge body, a child of the winner carrying that body. `base` must be the current winner.
 * Errors: BR_ENOTFOUND, BR_ENOCONFLICT, BR_ECONFLICT (base is not the winner), BR_EBADREV
 * (choose is not a live leaf). */
struct br_resolve {
    const struct br_rev *base;
    const struct br_rev *choose; /* or NULL with a merge body */
    const uint8_t *merge_body;   /* canonical CBOR map, or NULL */
    size_t merge_body_len;
};
struct br_resolve_result {
    struct br_rev rev; /* the winner afterwards */
    uint32_t conflicts_resolved;
};
BR_NODISCARD br_err br_db_resolve(br_db *db, const char *id, size_t id_len,
                                  const struct br_resolve *r, const struct br_write_opts *wo,
                                  struct br_resolve_result *out, struct br_errbuf *eb);

/* All documents in id order (CouchDB _all_docs). Deleted documents are skipped. The callback
 * returns nonzero to stop. `doc` is NULL unless include_docs. */
struct br_alldocs_opts {
    const char *startkey; /* NULL: from the first (or last, descending) */
    size_t startkey_len;
    const char *endkey; /* NULL: to the end */
    size_t endkey_len;
    bool inclusive_end; /* CouchDB default true */
    bool descending;
    size_t limit; /* 0: no limit */
    size_t skip;
    bool include_docs;
    bool conflicts; /* with include_docs */
};
typedef int (*br_alldocs_cb)(void *arg, const char *id, size_t id_len, const struct br_rev *rev,
                             const struct br_doc *doc);
BR_NODISCARD br_err br_db_all_docs(br_db *db, const struct br_alldocs_opts *o, br_alldocs_cb cb,
                                   void *arg, uint64_t *total_rows);

/* ---- changes feed: one entry per document, at its latest change ---- */

struct br_query; /* query.h */

struct br_change {
    const char *id;
    size_t id_len;
    struct br_hlc seq;
    struct br_rev rev;           /* the winning revision */
    bool deleted;                /* the winner is a tombstone */
    const struct br_rev *leaves; /* style=all_docs: every leaf, winner first; else just rev */
    size_t n_leaves;
};
typedef int (*br_changes_cb)(void *arg, const struct br_change *c);

struct br_changes_opts {
    struct br_hlc since; /* exclusive; BR_HLC_MIN: from the start */
    size_t limit;        /* 0: no limit */
    bool all_docs;       /* style=all_docs */
    bool descending;
    const char *const *doc_ids; /* filter; NULL: all */
    const size_t *doc_id_lens;
    size_t n_doc_ids;
    /* Path patterns (paths.h, MQTT syntax): keep documents with a topic some pattern matches.
     * A deletion is judged by the last live revision it deleted (CHG-26). */
    const char *const *paths;
    size_t n_paths;
    /* A compiled query (query.h): keep documents whose body matches its where clause (a
     * deletion: the last live body). doc_ids, paths and query combine with AND. */
    const struct br_query *query;
};

/* Feed the changes after o->since to cb in HLC order (reverse with descending) until it returns
 * nonzero or limit entries were delivered. *last_seq (may be NULL) receives the seq of the last
 * entry examined, or `since` when there was none (filters included: a follower moves past
 * non-matching entries). The feed is read on one snapshot. */
BR_NODISCARD br_err br_db_changes(br_db *db, const struct br_changes_opts *o, br_changes_cb cb,
                                  void *arg, struct br_hlc *last_seq);
/* Block until the database has a change after `since` or timeout_ms passes (BR_ETIMEDOUT);
 * BR_ENOTFOUND if the database is deleted meanwhile. No polling: writers signal waiters. */
BR_NODISCARD br_err br_db_changes_wait(br_db *db, struct br_hlc since, uint64_t timeout_ms);

/* A changes stream: a cursor over the feed that waits for new changes instead of polling. Each
 * call delivers the next batch after the stream's position; the position moves when the caller
 * acknowledges (br_changes_stream_ack), so an unacknowledged batch is delivered again — what a
 * push consumer that may fail wants. Thread: one thread per stream. */
typedef struct br_changes_stream br_changes_stream;
/* o is copied (doc_ids are borrowed: keep them alive while the stream is open). */
BR_NODISCARD br_err br_changes_stream_open(br_db *db, const struct br_changes_opts *o,
                                           br_changes_stream **out);
/* Deliver up to `max` changes after the position (0: o->limit or 100), waiting up to timeout_ms
 * for the first one. *batch_last gets the seq to acknowledge. BR_ETIMEDOUT when nothing came
 * (the stream stays usable), BR_ENOTFOUND if the database was deleted. */
BR_NODISCARD br_err br_changes_stream_next(br_changes_stream *cs, size_t max, uint64_t timeout_ms,
                                           br_changes_cb cb, void *arg, struct br_hlc *batch_last);
/* Move the position to `upto` (never backwards). */
void br_changes_stream_ack(br_changes_stream *cs, struct br_hlc upto);
struct br_hlc br_changes_stream_position(const br_changes_stream *cs);
void br_changes_stream_close(br_changes_stream *cs); /* NULL is a no-op */

/* Called after every committed write to the database, on the writer's thread, outside the
 * store's locks; it must be quick (queue work elsewhere). Returns an id for br_db_unwatch. */
typedef void (*br_db_watch_fn)(void *arg, br_db *db, struct br_hlc seq);
BR_NODISCARD br_err br_db_watch(br_db *db, br_db_watch_fn fn, void *arg, uint64_t *id);
void br_db_unwatch(br_db *db, uint64_t id);

/* ---- local documents (_local/...): no tree, rev "0-N", never in the changes feed ---- */

/* Put: `rev` must be the current "0-N" (NULL to create); BR_ECONFLICT otherwise. id is without
 * the "_local/" prefix. *new_rev gets "0-(N+1)". */
BR_NODISCARD br_err br_db_local_put(br_db *db, const char *id, size_t id_len,
                                    const struct br_rev *rev, const uint8_t *body, size_t body_len,
                                    const struct br_write_opts *wo, struct br_rev *new_rev);
/* Get: *out is a br_doc (caller frees with br_doc_free). BR_ENOTFOUND. */
BR_NODISCARD br_err br_db_local_get(br_db *db, const char *id, size_t id_len, struct br_doc **out);
/* Delete: rev must match when given; BR_ENOTFOUND, BR_ECONFLICT. */
BR_NODISCARD br_err br_db_local_delete(br_db *db, const char *id, size_t id_len,
                                       const struct br_rev *rev, const struct br_write_opts *wo);

/* ---- verification (fsck) ---- */

struct br_db_check {
    uint64_t docs;     /* document records read */
    uint64_t changes;  /* change entries read */
    uint64_t postings; /* path index postings the live documents call for */
    uint64_t problems; /* inconsistencies found (each is logged at error level) */
    char first[256];   /* the first problem, for a person */
};

/* Read the whole database on one snapshot and check that the document records, the changes
 * feed, the attachment references and the digest agree: every record decodes; every document
 * has exactly one change entry, at its seq, naming its winner; no change entry is orphaned; the
 * path index holds exactly the postings of the live winners; the stored digest (counts, set hash,
 * last seq) equals one recomputed from the records. BR_OK with out->problems == 0 means consistent.
 * Thread: any (writers may run; the check reads a snapshot, and the digest is compared against the
 * same snapshot). */
BR_NODISCARD br_err br_db_check(br_db *db, struct br_db_check *out);

#endif
