/* mesh.h — the node's part in the mesh (DESIGN.md "Gossip"): it keeps the gossip member table
 * (gossip.h) fed from links, peers' gossip, mDNS and static peers; gossips every interval to a
 * few linked members (this node's entry, recent changes of membership, a sample, the
 * membership hash; digests of the mesh databases that changed since that link last heard);
 * probes members indirectly when the last link to one goes (SWIM); dials members it learned,
 * up to a bounded number of links; and keeps one continuous pull per (linked member, mesh
 * database), woken by the member's digests, so writes spread through the mesh hop by hop.
 *
 * Which databases are in the mesh: all (the default) or a list, each optionally filtered by
 * path patterns (the pull from every member is filtered at the member). A database a member
 * holds and we lack is created when the mesh takes all databases.
 *
 * Threads: loop, except br_mesh_discovered (any: queued for the loop). Pulls run on their own
 * threads. */
#ifndef BARREL_NODE_MESH_H
#define BARREL_NODE_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "barrel/err.h"
#include "barrel/gossip.h"
#include "barrel/store.h"

#include "p2p.h"

#define BR_MESH_DEFAULT_INTERVAL_MS 1000
#define BR_MESH_DEFAULT_FANOUT 3
#define BR_MESH_DEFAULT_MAX_LINKS 8
#define BR_MESH_MAX_DBS 64
#define BR_MESH_LAG_BUCKETS 12
/* Upper bounds (ms) of the arrival-lag histogram's buckets (the last one's bound is +Inf past
 * them: counted in lag_count only). */
extern const uint64_t br_mesh_lag_bounds_ms[BR_MESH_LAG_BUCKETS];

typedef struct br_mesh br_mesh;

struct br_mesh_db {
    const char *name;
    const char *const *paths; /* a filter run at the member; n_paths 0: none */
    size_t n_paths;
};

struct br_mesh_opts {
    br_store *store; /* borrowed */
    br_p2p *p2p;     /* borrowed */
    const char *self_id;
    const char *const *self_addrs; /* "host:port" others can dial us at */
    size_t n_self_addrs;
    bool sync;                    /* pull the mesh databases from linked members */
    bool dial;                    /* dial members learned by gossip and mDNS */
    const struct br_mesh_db *dbs; /* NULL: every database */
    size_t n_dbs;
    unsigned interval_ms; /* 0: default */
    unsigned fanout;      /* 0: default */
    unsigned max_links;   /* links this node dials (others' are accepted up to 2x); 0: default */
    unsigned probe_ms;    /* 0: gossip's default */
    unsigned dead_ms;     /* 0: gossip's default */
};

struct br_mesh_stats {
    uint64_t alive, suspect, dead; /* members by state (this node excluded) */
    uint64_t gossip_sent, gossip_received;
    uint64_t digests_sent, digests_received;
    uint64_t pulls_started, pulls_woken; /* pulls started for a link; woken by a digest */
    uint64_t refused;                    /* gossip entries refused */
    uint64_t mismatches;                 /* digest_mismatch reports (see mesh.c) */
    /* Arrival lag of pulled changes: from the commit at the member they were pulled from (its
     * HLC) to their write here, per batch (its newest change). Buckets are not cumulative. */
    uint64_t lag_buckets[BR_MESH_LAG_BUCKETS], lag_count, lag_sum_ms;
};

BR_NODISCARD br_err br_mesh_new(const struct br_mesh_opts *o, br_mesh **out, struct br_errbuf *eb);
/* Cancel the pulls and join their threads. Thread: loop, before the links close. */
void br_mesh_stop(br_mesh *m);
void br_mesh_free(br_mesh *m); /* NULL is a no-op */

/* Timers: gossip rounds, probes, dials, finished pulls. Thread: loop. */
void br_mesh_on_tick(br_mesh *m);
/* A member found on the LAN (mDNS) or configured: id (text), address host:port. Any thread. */
void br_mesh_discovered(br_mesh *m, const char *id, const char *addr);
/* GET /_peers. Caller owns the JSON. Thread: loop. */
json_t *br_mesh_peers_json(br_mesh *m);
void br_mesh_stats(br_mesh *m, struct br_mesh_stats *out);

/* Admin (DELETE /_peers/{id}, PUT /_peers/{id}): close this node's links to member id; with
 * block, also refuse it until br_mesh_unblock: it is not dialled, and a link to or from it
 * closes as soon as it is up (reason=blocked). Without block the member may be dialled again,
 * as after any lost link. *closed (may be NULL) is the number of links closed. BR_ENOTFOUND
 * when id is neither a member nor linked (block takes any id: a member yet unmet can be
 * refused); BR_ETOOBIG past BR_MESH_MAX_BLOCKED blocked ids. Thread: loop. */
#define BR_MESH_MAX_BLOCKED 256
BR_NODISCARD br_err br_mesh_drop(br_mesh *m, const char *id, bool block, size_t *closed);
/* Lift a block; BR_ENOTFOUND when id is not blocked. Thread: loop. */
BR_NODISCARD br_err br_mesh_unblock(br_mesh *m, const char *id);

/* Hooks for p2p.c (p2p_int.h's links). Thread: loop. */
struct link;
struct br_wire_msg;
void mesh_link_ready(br_mesh *m, struct link *l);
void mesh_link_gone(br_mesh *m, struct link *l, bool was_up);
/* peers, probe, probe_reply, digest, ping: returns true if it took ownership of msg */
bool mesh_on_message(br_mesh *m, struct link *l, struct br_wire_msg *msg);

#endif
