/* rpc.h — the replication RPC: the endpoint (endpoint.h) as wire requests (wire.h) and their
 * replies, both halves, whatever carries the messages (a p2p link, a simulator's in-memory
 * network, a test's loopback).
 *
 * Client side: br_endpoint_rpc_new makes an endpoint whose every call is one request and its
 * reply through a transport (struct br_rpc_transport): changes, revsdiff, get_revs, put_revs,
 * local_get and local_put map onto the requests of the same names, hlc_merge onto a `ping`
 * carrying our clock (which the peer merges). A reply of another type than the request's is
 * BR_EPROTO. get_revs replies name each revision asked for by position (wire.h `known`): the
 * hash comes from the request, not the wire. atts_missing answers "missing" for every attachment
 * (allowed by endpoint.h: when it cannot tell, it says missing), so pushes carry attachment data.
 * digest and wait read what the peer announced (its `hello` and `digest` messages) through the
 * transport: waiting (continuous pull) needs no polling when the peer sends a digest whenever
 * the database gets a change after we read its changes.
 *
 * Server side: br_rpc_serve answers one request against a database of a local store (through
 * the local endpoint), br_rpc_error_reply makes the `error` message that answers a request that
 * failed. `ping` is not served here: the carrier answers it (merge the clock, reply `pong`).
 *
 * Thread: as endpoint.h for the endpoint; br_rpc_serve may run on any thread (a worker: it
 * reads and writes the store), concurrently with itself. */
#ifndef BARREL_RPC_H
#define BARREL_RPC_H

#include <stdint.h>

#include "barrel/endpoint.h"
#include "barrel/err.h"
#include "barrel/hlc.h"
#include "barrel/store.h"
#include "barrel/wire.h"

/* Server side: answer one wire request (changes, revsdiff, get_revs, put_revs, local_get,
 * local_put) against database req's db in `store`, as node `self_id` (node id text; it goes to
 * ep_local's opts.node). The reply (type, fields; rid copied from req) is written into *reply,
 * its allocations in arena a (caller frees with br_wire_arena_fini). On failure returns the error
 * with eb set; the caller then sends a BR_WIRE_ERROR (br_rpc_error_reply helps). BR_EPROTO for a
 * message that is not a request.
 * The reply may also point into req (ids of revsdiff and get_revs replies): encode it before
 * freeing req or a. *reply is written only on success; a may hold allocations either way.
 * Served writes (put_revs, local_put) are unsynced, in order (BR_SYNC_NONE, endpoint.h: a crash
 * keeps a prefix of them, so a checkpoint never outlives the revisions it counts). Thread: any. */
BR_NODISCARD br_err br_rpc_serve(br_store *store, const char *self_id,
                                 const struct br_wire_msg *req, br_wire_arena *a,
                                 struct br_wire_msg *reply, struct br_errbuf *eb);
/* Fill *reply as the BR_WIRE_ERROR answering req for error e (reason: eb's message or
 * br_strerror; a NULL or empty reason gives br_strerror(e)). reason is borrowed. Thread: any. */
void br_rpc_error_reply(const struct br_wire_msg *req, br_err e, const char *reason,
                        struct br_wire_msg *reply);

/* Client side: what a remote endpoint needs of the thing that carries its messages. */
struct br_rpc_transport {
    void *ctx;
    /* Send req (the transport assigns req->rid) and wait for its reply: BR_OK with *reply (any
     * type; caller frees with br_wire_msg_free), or an error (link closed, timeout) with eb set.
     * A BR_WIRE_ERROR reply may be returned as *reply or turned into its error: the endpoint
     * accepts both, turning an error reply into its code (BR_EPROTO for a code that is not an
     * error) with the reason in eb. p2p's transport turns it into its error itself (p2p_request).
     * Must time out rather than hang. eb may be NULL. On error *reply is untouched. */
    br_err (*call)(void *ctx, struct br_wire_msg *req, struct br_wire_msg **reply,
                   struct br_errbuf *eb);
    /* The newest change of db the peer has announced (digests, hello), BR_HLC_MIN if none. */
    struct br_hlc (*remote_last)(void *ctx, const char *db);
    /* Block until remote_last(db) passes since (BR_OK), timeout (BR_ETIMEDOUT) or interrupt
     * (BR_ECLOSED). May be NULL: wait then returns BR_ETIMEDOUT at once (one-shot users). */
    br_err (*wait)(void *ctx, const char *db, struct br_hlc since, uint64_t timeout_ms);
    /* Make the current and later waits return BR_ECLOSED. Any thread. May be NULL. */
    void (*interrupt)(void *ctx);
    /* Called once by the endpoint's free. May be NULL. */
    void (*free)(void *ctx);
};
/* An endpoint for database db at the peer, every call a request through t (copied; t->ctx is
 * owned by the endpoint from now on: freed by t->free when the endpoint is freed, also when this
 * fails). name: the endpoint's name (for logs), copied. The name also identifies the endpoint in
 * replication ids (endpoint.h): "<node>/<db>" by convention; one of BR_ENDPOINT_NAME_MAX bytes or
 * more is cut. BR_EBADNAME for a db name longer than BR_DB_NAME_MAX, BR_ENOMEM. On success *out
 * owns a new endpoint (br_endpoint_free). Thread: any. */
BR_NODISCARD br_err br_endpoint_rpc_new(const struct br_rpc_transport *t, const char *db,
                                        const char *name, struct br_endpoint **out);

#endif
