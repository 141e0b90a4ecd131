/* metrics.h — the node's counters and gauges, served as Prometheus text at GET /_metrics.
 *
 * Every counter is a relaxed atomic, so recording is one uncontended add from any thread (the
 * loop records requests; workers record documents read and written). Requests are counted by
 * route name (router.h) and exact status, with a latency histogram per route. Gauges that
 * belong to other modules (open connections, feed listeners, subscriptions) are sampled by
 * the node when it renders. Thread: any. */
#ifndef BARREL_NODE_METRICS_H
#define BARREL_NODE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/err.h"
#include "barrel/store.h"

#define BR_METRICS_ROUTES 32 /* route ids 0..31; 0 is "unmatched" */

typedef struct br_metrics br_metrics;

BR_NODISCARD br_err br_metrics_new(br_metrics **out);
void br_metrics_free(br_metrics *m); /* NULL is a no-op */

/* The id of route `name` (a string that outlives m), registered on first use; 0 ("unmatched")
 * when the table is full. Thread: loop (the only registrar); the other calls: any. */
unsigned br_metrics_route_id(br_metrics *m, const char *name);
/* One answered request. */
void br_metrics_request(br_metrics *m, unsigned route, int status, uint64_t latency_ns);
void br_metrics_docs(br_metrics *m, uint64_t read, uint64_t written);
void br_metrics_connections(br_metrics *m, int delta);
void br_metrics_ws_overflow(br_metrics *m);

/* Gauges sampled at render time. */
struct br_metrics_gauges {
    uint64_t feeds;         /* open streaming _changes feeds */
    uint64_t subscriptions; /* open WebSocket subscriptions */
    uint64_t uptime_s;
    bool p2p;                /* the node has links: the two counters below are rendered */
    uint64_t p2p_bytes_sent; /* link traffic (br_p2p_bytes) */
    uint64_t p2p_bytes_received;
    bool mesh; /* the node is in a mesh: the gossip figures below are rendered */
    uint64_t members_alive, members_suspect, members_dead;
    uint64_t gossip_sent, gossip_received, digests_sent, digests_received;
    uint64_t pulls_started, pulls_woken, gossip_refused, digest_mismatches;
    /* arrival lag of pulled changes (mesh.h): bucket counts (not cumulative) for the upper
     * bounds lag_bounds_ms[0..n_lag), then the total count and sum */
    size_t n_lag;
    const uint64_t *lag_bounds_ms;
    uint64_t lag_buckets[16], lag_count, lag_sum_ms;
};

/* Append the Prometheus text exposition (version 0.0.4) to out: the counters, g, and per
 * database doc counts and sizes read from store (skipped on a store error). */
BR_NODISCARD br_err br_metrics_render(br_metrics *m, const struct br_metrics_gauges *g,
                                      br_store *store, br_buf *out);

#endif
