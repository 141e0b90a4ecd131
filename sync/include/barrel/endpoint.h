/* endpoint.h — what the replicator needs of one side of a replication: a table of function
 * pointers (SQLite's VFS idea), so that one algorithm runs between a local database, a peer over
 * a link and a CouchDB-compatible HTTP server.
 *
 * The calls are blocking: a replication runs on a worker thread (never the event loop), and an
 * endpoint backed by a link implements a call by sending a request and waiting for its reply
 * (every request is answered or fails; nothing hangs: a remote endpoint must time out). The
 * record types are the wire's (wire.h), so a remote endpoint only encodes and decodes them.
 * Results are allocated in an arena the caller passes and owns (br_wire_arena_fini frees them).
 *
 * Thread: an endpoint is used by one replication at a time (one thread), except `interrupt`,
 * which any thread may call to end a `wait` promptly. */
#ifndef BARREL_ENDPOINT_H
#define BARREL_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"
#include "barrel/hlc.h"
#include "barrel/rev.h"
#include "barrel/store.h"
#include "barrel/wire.h"

#define BR_ENDPOINT_NAME_MAX 512

typedef int (*br_endpoint_change_cb)(void *arg, const struct br_wire_change *c);

struct br_endpoint_ops {
    /* The database's digest (last change HLC, live docs, set hash). */
    br_err (*digest)(void *ctx, struct br_db_digest *out, struct br_errbuf *eb);
    /* Changes after `since` in HLC order, at most `limit` (> 0), each with every leaf (winner
     * first), filtered at this side (f may be NULL). *last gets the seq of the last entry
     * examined (filtered-out entries included), or `since` if none; *more is set when the limit
     * cut the feed. */
    br_err (*changes)(void *ctx, struct br_hlc since, size_t limit, const struct br_wire_filter *f,
                      br_endpoint_change_cb cb, void *arg, struct br_hlc *last, bool *more,
                      struct br_errbuf *eb);
    /* For each document, which of the given revisions this side lacks, and its leaves that
     * could be their ancestors. *out has one entry per input document with missing revisions. */
    br_err (*revsdiff)(void *ctx, const struct br_wire_docrevs *in, size_t n, br_wire_arena *a,
                       struct br_wire_diff **out, size_t *n_out, struct br_errbuf *eb);
    /* The given revisions with their history (newest first), bodies and attachment stubs;
     * with `data`, the content of each attachment whose digest is not in `have`. One entry per
     * revision asked for, in the order asked. A revision this side does not hold comes back
     * with `missing`. Entries come whole (rev_known may be set: wire.h). */
    br_err (*get_revs)(void *ctx, const struct br_wire_docrevs *in, size_t n,
                       const char *const *have, size_t n_have, bool data, br_wire_arena *a,
                       struct br_wire_revdoc **out, size_t *n_out, struct br_errbuf *eb);
    /* missing[i] = this side does not hold the content of atts[i] (by key when given, else by
     * digest; when it cannot tell, it says missing). */
    br_err (*atts_missing)(void *ctx, const struct br_wire_att *atts, size_t n, bool *missing,
                           struct br_errbuf *eb);
    /* Write revisions with their history (new_edits=false): idempotent merges into the trees.
     * An attachment without data must be one this side holds (by digest). results[i] answers
     * docs[i]; the return value is BR_OK unless the batch as a whole failed. */
    br_err (*put_revs)(void *ctx, const struct br_wire_revdoc *docs, size_t n, br_err *results,
                       struct br_errbuf *eb);
    /* Local (checkpoint) documents, id without "_local/". get: BR_ENOTFOUND; put: rev NULL to
     * create, else the current rev (BR_ECONFLICT otherwise). Bodies are CBOR maps. */
    br_err (*local_get)(void *ctx, const char *id, br_wire_arena *a, const uint8_t **body,
                        size_t *len, struct br_rev *rev, struct br_errbuf *eb);
    br_err (*local_put)(void *ctx, const char *id, const struct br_rev *rev, const uint8_t *body,
                        size_t len, struct br_rev *new_rev, struct br_errbuf *eb);
    /* Merge a timestamp seen from the other side into this side's clock; the clock only ever
     * moves forward. BR_ECLOCK when it is too far ahead (not adopted). */
    br_err (*hlc_merge)(void *ctx, struct br_hlc remote);
    /* Block until this side has a change after `since` (BR_OK), timeout_ms passes
     * (BR_ETIMEDOUT) or interrupt is called (BR_ECLOSED). No polling. */
    br_err (*wait)(void *ctx, struct br_hlc since, uint64_t timeout_ms);
    /* Make the current and every later wait return BR_ECLOSED at once. Thread: any. */
    void (*interrupt)(void *ctx);
    void (*free)(void *ctx);
    /* Optional, for a source whose sequence ids are opaque JSON values rather than HLCs (a
     * CouchDB server): when set, the replicator calls these instead of `changes` and `wait`.
     * `since` is the JSON text of a seq the source gave ("" : from the start); *last gets the JSON
     * text of the last entry's seq (allocated in a), or `since` if none. Changes then carry
     * BR_HLC_MIN as their seq. */
    br_err (*changes_opaque)(void *ctx, const char *since, size_t limit,
                             const struct br_wire_filter *f, br_endpoint_change_cb cb, void *arg,
                             br_wire_arena *a, const char **last, bool *more, struct br_errbuf *eb);
    br_err (*wait_opaque)(void *ctx, const char *since, uint64_t timeout_ms);
    /* Optional (CouchDB's _ensure_full_commit): make every write this endpoint acknowledged so
     * far (put_revs, local_put) durable. NULL: writes are as durable as the endpoint makes them
     * when it acknowledges them. */
    br_err (*commit)(void *ctx, struct br_errbuf *eb);
};

/* An endpoint: its ops, their context, and a stable name ("<node>/<db>") that identifies it in
 * replication ids. Created by a constructor such as br_endpoint_local_new; freed with
 * br_endpoint_free. */
struct br_endpoint {
    const struct br_endpoint_ops *ops;
    void *ctx;
    char name[BR_ENDPOINT_NAME_MAX];
};
void br_endpoint_free(struct br_endpoint *ep); /* NULL is a no-op */

/* ---- the local store endpoint ---- */

struct br_endpoint_local_opts {
    const char *node; /* this node's id (part of the endpoint's name); NULL: "local" */
    /* Durability of replicated writes and checkpoints (default FULL: each fsync'd). With NONE
     * they are written unsynced, in order (a crash keeps a prefix of them, so a checkpoint never
     * outlives the revisions it counts), and `commit` fsyncs them. */
    enum br_sync sync;
};

/* An endpoint over database `db` of store `s` (s must outlive it). BR_ENOTFOUND if the
 * database does not exist. On success *out owns a new endpoint. Thread: any. */
BR_NODISCARD br_err br_endpoint_local_new(br_store *s, const char *db,
                                          const struct br_endpoint_local_opts *o,
                                          struct br_endpoint **out, struct br_errbuf *eb);

#endif
