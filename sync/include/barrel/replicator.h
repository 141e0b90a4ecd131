/* replicator.h — one replication algorithm between two endpoints (endpoint.h), one-shot or
 * continuous, with checkpoints, filters and the no-progress guard (DESIGN.md "Sync protocol").
 *
 * A run: read the checkpoint `_local/<repid>` on both sides (CouchDB-style session history, so
 * mismatched checkpoints fall back to the last session both recorded, else to the start); then
 * per batch: changes since the checkpoint (filtered at the source), revsdiff at the target,
 * fetch the missing revisions with their history (attachments' content only for those the
 * target lacks), merge the batch's newest source HLC into the target clock (it only moves
 * forward), write with new_edits=false, save the checkpoint on both sides. A batch whose
 * last_seq does not advance stops the run with "no_progress" (REP-17). A source whose seqs are
 * opaque JSON values (CouchDB's) is read through changes_opaque: its seqs are kept as text in the
 * checkpoint (same format, "seq" is the JSON text), compared only for equality, never merged
 * into a clock. The replication id is a
 * BLAKE2b-128 over (source name, target name, sorted path patterns, canonical query).
 *
 * Batches are pipelined: while the calling thread writes batch n and saves its checkpoint, a
 * reader thread of the run reads batch n+1 (changes, revsdiff, fetch). Batches are written and
 * checkpointed in order; each endpoint is still called by one thread at a time (the run holds a
 * lock per endpoint around every call); attachment contents are checked against the target only
 * once the earlier batches are written, and a continuous run waits for the source only once
 * everything read is written.
 *
 * br_rep_run blocks the calling thread: run it on a worker thread, never the event loop.
 * br_rep_cancel and br_rep_get_stats may be called from any thread meanwhile. */
#ifndef BARREL_REPLICATOR_H
#define BARREL_REPLICATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/endpoint.h"
#include "barrel/env.h"
#include "barrel/err.h"
#include "barrel/hlc.h"

#define BR_REP_DEFAULT_BATCH 1000
#define BR_REP_MAX_BATCH BR_WIRE_MAX_ITEMS
#define BR_REP_CHECKPOINT_HISTORY 20
#define BR_REP_ID_LEN 32    /* hex digits */
#define BR_REP_SEQ_MAX 1024 /* bytes of an opaque (CouchDB) seq's JSON text, NUL included */

typedef struct br_rep br_rep;

struct br_rep_opts {
    size_t batch_size; /* changes per batch; 0: BR_REP_DEFAULT_BATCH; at most BR_REP_MAX_BATCH */
    bool continuous;   /* keep running, woken by the source's changes, until br_rep_cancel */
    struct br_wire_filter filter; /* paths and/or query (copied by br_rep_new); empty: none */
    uint64_t idle_check_ms;   /* continuous: re-read the source after this long without a wake-up
                                 (a safety net, not the mechanism); 0: 30000 */
    const struct br_env *env; /* randomness (session ids) and wall clock; NULL: default */
    /* Read a batch, write it, then read the next, all on the calling thread (no reader
     * thread, no read-ahead): every endpoint call is made by that one thread, in an order
     * that depends only on the data, which is what the deterministic simulator needs. */
    bool serial;
    /* After each batch of which the target accepted revisions: the newest source seq of the
     * batch (an HLC: the source's clock when it committed that change; never called for opaque
     * seqs) and how many revisions were written. On the thread that runs br_rep_run. May be
     * NULL. */
    void (*on_written)(void *arg, struct br_hlc newest, size_t written);
    void *arg;
};

struct br_rep_stats {
    uint64_t changes_read;       /* change entries read from the source */
    uint64_t docs_read;          /* revisions fetched from the source */
    uint64_t docs_written;       /* revisions the target accepted */
    uint64_t doc_read_failures;  /* revisions the source no longer had */
    uint64_t doc_write_failures; /* revisions the target refused */
    uint64_t atts_sent;          /* attachments whose content was transferred */
    uint64_t bytes;              /* body and attachment bytes transferred */
    uint64_t batches;
    struct br_hlc start_seq; /* the checkpoint the run started from (BR_HLC_MIN: the start) */
    struct br_hlc last_seq;  /* the source seq replicated up to */
    /* A source with opaque seqs (endpoint.h changes_opaque): the two seqs above stay
     * BR_HLC_MIN and these hold the seqs' JSON text ("": the start). */
    bool opaque_seq;
    char start_seq_text[BR_REP_SEQ_MAX];
    char last_seq_text[BR_REP_SEQ_MAX];
};

/* A replication from src to tgt (borrowed: they must outlive it and not be shared with another
 * running replication). BR_EINVAL for bad options (a batch size past the maximum, an invalid
 * path pattern, a query that does not compile). On success *out owns a new handle. */
BR_NODISCARD br_err br_rep_new(struct br_endpoint *src, struct br_endpoint *tgt,
                               const struct br_rep_opts *o, br_rep **out, struct br_errbuf *eb);
void br_rep_free(br_rep *r); /* NULL is a no-op; the run must have returned */
/* The replication id: 32 lowercase hex digits (borrowed, valid while r lives). */
const char *br_rep_id(const br_rep *r);

/* Run: one-shot returns BR_OK once the source has nothing new for the target; continuous
 * returns BR_OK after br_rep_cancel. Errors: what an endpoint returned (eb names the step), or
 * BR_EPROTO with a reason beginning "no_progress" when the source's last_seq stops advancing.
 * Checkpoints are saved after every batch, so a failed run resumes where it stopped. */
BR_NODISCARD br_err br_rep_run(br_rep *r, struct br_errbuf *eb);
/* End a run promptly (a continuous wait returns at once; a batch in flight completes). Any
 * thread. The source endpoint stays interrupted: create a new one to run again. */
void br_rep_cancel(br_rep *r);
/* A consistent copy of the counters. Any thread. */
void br_rep_get_stats(br_rep *r, struct br_rep_stats *out);

#endif
