/* serve.h — `barrel serve`: run a node until SIGINT or SIGTERM.
 *
 * One event loop thread (the caller's) owns the HTTP server; store calls run on a small worker
 * pool and come back through a completion queue. On SIGINT/SIGTERM the node stops taking
 * requests, lets in-flight ones finish and answer, closes connections and the store, and
 * returns 0. */
#ifndef BARREL_SERVE_H
#define BARREL_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BR_SERVE_DEFAULT_PORT 7070
#define BR_SERVE_DEFAULT_BIND "127.0.0.1"
#define BR_SERVE_DEFAULT_MAX_BODY ((size_t)65u << 20)       /* 64 MiB documents + envelope */
#define BR_SERVE_DEFAULT_MAX_ATTACHMENT ((uint64_t)4 << 30) /* streamed: never in memory */
#define BR_SERVE_DEFAULT_TIMEOUT_S 30
#define BR_SERVE_DEFAULT_IDLE_FLUSH_S 5
#define BR_SERVE_DEFAULT_CACHE_BYTES ((size_t)32u << 20)

struct br_serve_opts {
    const char *data;           /* data directory */
    const char *config;         /* JSON config file (node/config.h) or NULL */
    const char *bind;           /* NULL: the config's, else BR_SERVE_DEFAULT_BIND. Any address
                                   but loopback needs admin credentials in the config */
    int port;                   /* -1: the config's, else BR_SERVE_DEFAULT_PORT; 0: any free
                                   port (printed on `out`) */
    size_t max_body;            /* 0: BR_SERVE_DEFAULT_MAX_BODY */
    uint64_t max_attachment;    /* a streamed attachment upload; 0: the default */
    unsigned request_timeout_s; /* headers and body; 0: BR_SERVE_DEFAULT_TIMEOUT_S */
    size_t workers;             /* 0: 2 */
    /* Links (node/p2p.h): peers to keep in sync (ws://host:port), each with the databases
     * peer_dbs (the config's "peers" add their own); a mesh key file (overrides the config's);
     * node ids to allow (added to the config's). */
    const char *const *peers;
    size_t n_peers;
    const char *const *peer_dbs;
    size_t n_peer_dbs;
    const char *mesh_key;
    const char *const *allow;
    size_t n_allow;
    int idle_flush_s;   /* flush memtables after this long without writes (node/idle.h);
                           -1: BR_SERVE_DEFAULT_IDLE_FLUSH_S, 0: never */
    size_t cache_bytes; /* RocksDB block cache; 0: BR_SERVE_DEFAULT_CACHE_BYTES */
    bool no_fast_get;   /* every GET /{db}/{id} on a worker (tests compare the paths) */
    /* The mesh (node/mesh.h): on when a mesh key is in use (or mesh is set), unless no_mesh.
     * Databases: all, or mesh_dbs ("name" or "name=pattern|pattern"). mDNS discovery runs
     * with the mesh unless no_mdns. Zeros take the defaults. */
    bool mesh;
    bool no_mesh;
    bool no_mdns;
    const char *const *mesh_dbs;
    size_t n_mesh_dbs;
    unsigned gossip_interval_ms;
    unsigned gossip_fanout;
    unsigned max_links;
    unsigned probe_ms;
    unsigned dead_ms;
    bool no_dial; /* the mesh dials no member itself: links come from --peer and from others */
};

/* Run the node. Prints "barrel: listening on http://ADDR:PORT data=DIR node=ID" on out once
 * serving (ID: the node id, from DIR/identity.key, created on first start); errors
 * go to err as one line. Returns the process exit code: 0 after a clean shutdown, 1 if the
 * node could not start (data directory held by another process, address in use, ...).
 * Thread: the calling thread becomes the event loop; call once per process (it handles
 * SIGINT and SIGTERM). */
int br_serve_run(const struct br_serve_opts *o, FILE *out, FILE *err);

#endif
