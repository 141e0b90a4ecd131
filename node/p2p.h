/* p2p.h — links between nodes on `WS /_p2p`, the wire requests they serve, and the static
 * peers a node keeps in sync (DESIGN.md "Links", "Sync protocol").
 *
 * Link protocol. A link is one WebSocket connection to /_p2p. Each of the three handshake
 * messages (handshake.h, crypto/HANDSHAKE.md) is one binary frame; then every wire message
 * (wire.h) is one encrypted frame (frame.h, plaintext up to BR_WIRE_MAX_MSG). As soon as its
 * handshake is done, each side sends `hello` (rid 0: node id, HLC, its databases' digests).
 * Requests carry a nonzero rid and are answered with the reply type or `error` with the same
 * rid. Unsolicited messages carry rid 0: `hello`, `ping`/`pong` heartbeats, and `digest`, which
 * a node sends whenever a database the other side has read changes from (a `changes` request
 * registers the interest) gets a new change: that is what wakes a continuous pull, no polling.
 *
 * Failures. Any failure (handshake reason, undecryptable or malformed frame, text frame, size
 * past the caps, heartbeat timeout) closes the link with one log line
 * `event=link_closed addr=A peer=ID reason=NAME`. An address whose handshakes keep failing is
 * refused for a while (doubling, up to 60 s). Dialled peers reconnect with exponential backoff
 * (0.5 s doubling to 8 s).
 *
 * Flow control. Each link has one outbound queue of whole messages, bounded by bytes. A thread
 * that sends a request (a replication's peer endpoint) waits while the queue is full; the loop,
 * which must not wait, stops reading from a link whose queue is full or which has
 * P2P_MAX_SERVING requests being served, and resumes once it drains. Nothing is buffered
 * without bound.
 *
 * Threads: everything here runs on the loop thread unless noted; store calls for served
 * requests run on the worker pool; replications run on their own threads. */
#ifndef BARREL_NODE_P2P_H
#define BARREL_NODE_P2P_H

#include <stdbool.h>
#include <stddef.h>

#include "barrel/endpoint.h"
#include "barrel/err.h"
#include "barrel/identity.h"
#include "barrel/meshkey.h"
#include "barrel/store.h"
#include "barrel/trust.h"

#include "http.h"
#include "workers.h"

#define P2P_PATH "/_p2p"
#define P2P_DEFAULT_HEARTBEAT_MS 2000
#define P2P_DEFAULT_TIMEOUT_MS 10000
#define P2P_QUEUE_MAX ((size_t)32 << 20) /* outbound bytes per link (at least one message) */
#define P2P_MAX_SERVING 4                /* requests of one link served at once */
#define P2P_REQUEST_TIMEOUT_MS 120000

typedef struct br_p2p br_p2p;

struct br_p2p_opts {
    br_store *store;             /* borrowed */
    br_workers *workers;         /* borrowed: served requests run here */
    br_http_server *http;        /* borrowed: the loop, for dialling and waking */
    const br_identity *identity; /* borrowed */
    const br_meshkey *mesh;      /* NULL: no mesh key */
    const br_trust *trust;       /* NULL: empty policy */
    unsigned heartbeat_ms;       /* 0: P2P_DEFAULT_HEARTBEAT_MS */
    unsigned timeout_ms;         /* a link silent this long is dead; 0: default */
};

/* Thread: loop. */
BR_NODISCARD br_err br_p2p_new(const struct br_p2p_opts *o, br_p2p **out);
/* Stop replications (joins their threads) and dialling; links close with the HTTP server. */
void br_p2p_stop(br_p2p *p);
/* Free (after br_http_server_free closed every link). NULL is a no-op. */
void br_p2p_free(br_p2p *p);

/* Keep databases dbs[0..n) in sync with the node at ws://host:port (continuous pull and push,
 * reconnecting with backoff). Local databases that are missing are created. Thread: loop,
 * before or while serving. */
BR_NODISCARD br_err br_p2p_add_peer(br_p2p *p, const char *url, const char *const *dbs, size_t n,
                                    struct br_errbuf *eb);

/* An endpoint (endpoint.h) for database db of a peer, for br_replicator: url_or_nodeid is a
 * ws://host:port URL (dialled if no link to it is up) or the text node id of a connected peer.
 * Blocks until the link is up and has said hello (at most 10 s: BR_ETIMEDOUT). On success *out
 * owns the endpoint (br_endpoint_free); its calls fail with BR_ECLOSED once the link goes.
 * Thread: any but the loop (it waits for the loop). This is the call POST /_replicate can use
 * for peer sources and targets. */
BR_NODISCARD br_err br_p2p_endpoint_open(br_p2p *p, const char *url_or_nodeid, const char *db,
                                         struct br_endpoint **out, struct br_errbuf *eb);

/* Hooks for the HTTP server (serve.c routes to them). Thread: loop. */
bool br_p2p_is_path(const br_http_ex *x);
void *br_p2p_ws_open(br_p2p *p, br_http_ex *x, br_http_ws *ws);
bool br_p2p_owns(const br_p2p *p, const void *user);
bool br_p2p_ws_writeable(br_p2p *p, void *user);
bool br_p2p_ws_receive(br_p2p *p, void *user, const void *in, size_t len, bool first, bool final,
                       bool binary);
void br_p2p_ws_client_open(br_p2p *p, void *user, br_http_ws *ws);
void br_p2p_ws_closed(br_p2p *p, void *user);
void br_p2p_on_wake(br_p2p *p);
void br_p2p_on_tick(br_p2p *p);
/* Attach the mesh (mesh.h) that hears of links and gossip; NULL detaches. Thread: loop. */
struct br_mesh;
void br_p2p_set_mesh(br_p2p *p, struct br_mesh *mesh);

/* Links with a finished handshake. */
size_t br_p2p_link_count(const br_p2p *p);

/* Bytes of link traffic sent and received since the start: every handshake message and
 * sealed frame with its WebSocket frame header (fragmentation by libwebsockets aside), for
 * GET /_metrics. Thread: any. */
void br_p2p_bytes(br_p2p *p, uint64_t *sent, uint64_t *received);

#endif
