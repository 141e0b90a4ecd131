/* scenario.h — the scenario language shared by barrel-sim and the real-process harness
 * (SCENARIOS.md): parsing, and resolving node selectors once the node count is known.
 *
 * A parsed scenario is plain data (no pointers into the source text). Errors name the line:
 * "LINE: message" in eb (sc_load prefixes the file name). Parsing never crashes on any input
 * (fuzz_scenario). Thread: no shared state. */
#ifndef BARREL_SIM_SCENARIO_H
#define BARREL_SIM_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

#define SC_NAME_MAX 64
#define SC_SEL_MAX 64    /* selector text, NUL included */
#define SC_DB_MAX 64     /* database name, NUL included */
#define SC_PATHS_MAX 256 /* filter patterns, '|'-separated, NUL included */
#define SC_MAX_DBS 8
#define SC_MAX_FILTERS 16
#define SC_MAX_SKEWS 16
#define SC_MAX_EVENTS 4096
#define SC_MAX_NODES 1000

enum sc_topology { SC_TOPO_MESH, SC_TOPO_CHAIN, SC_TOPO_FULL, SC_TOPO_STAR };

enum sc_kind {
    SC_WRITE,
    SC_UPDATE,
    SC_DELETE,
    SC_PARTITION,
    SC_HEAL,
    SC_CUT,
    SC_CRASH,
    SC_RESTART,
    SC_LEAVE,
    SC_JOIN,
    SC_CHURN,
};

struct sc_net {
    uint64_t latency_ms, jitter_ms;
    double loss, dup, reorder; /* probabilities in [0, 1] (the file says percent) */
    uint64_t bandwidth_bps;    /* bytes per second; 0: unlimited */
    uint64_t timeout_ms;       /* a silent link is dead after this */
};

struct sc_filter {
    char db[SC_DB_MAX];
    char nodes[SC_SEL_MAX];
    char paths[SC_PATHS_MAX]; /* '|'-separated MQTT patterns */
};

struct sc_skew {
    char nodes[SC_SEL_MAX];
    int64_t ms;
};

struct sc_event {
    uint64_t at_ms;
    enum sc_kind kind;
    unsigned line;          /* in the file, for messages */
    char nodes[SC_SEL_MAX]; /* write/update/delete/crash/restart/leave/join/churn; partition: side A
                             */
    char nodes2[SC_SEL_MAX];              /* partition: side B */
    char db[SC_DB_MAX];                   /* write/update/delete */
    unsigned docs;                        /* write/update/delete */
    bool shared;                          /* write: the nodes write the same ids */
    unsigned a, b;                        /* cut ($ is stored as UINT32_MAX: the last node) */
    uint64_t every_ms, down_ms, until_ms; /* churn */
};

struct scenario {
    char name[SC_NAME_MAX];
    unsigned nodes;
    enum sc_topology topology;
    unsigned max_links;
    unsigned interval_ms, fanout, probe_ms, dead_ms;
    struct sc_net net;
    char dbs[SC_MAX_DBS][SC_DB_MAX];
    size_t n_dbs;
    struct sc_filter filters[SC_MAX_FILTERS];
    size_t n_filters;
    struct sc_skew skews[SC_MAX_SKEWS];
    size_t n_skews;
    struct sc_event *events; /* sorted by at_ms, stable (file order at equal times) */
    size_t n_events;
    uint64_t settle_ms;
};

/* Parse a scenario's text (len bytes, need not be NUL-terminated). Defaults as SCENARIOS.md
 * says. BR_EINVAL with "LINE: message" for any error; on success *out owns the events
 * (sc_free). `name` defaults to default_name (may be NULL: "scenario"). */
BR_NODISCARD br_err sc_parse(const char *text, size_t len, const char *default_name,
                             struct scenario *out, struct br_errbuf *eb);
/* Read and parse a file; messages are "PATH:LINE: message". BR_EIO if it cannot be read. */
BR_NODISCARD br_err sc_load(const char *path, struct scenario *out, struct br_errbuf *eb);
void sc_free(struct scenario *s); /* frees the events; NULL is fine */

/* Check a selector's syntax (done by sc_parse for every selector it reads). */
bool sc_sel_valid(const char *sel);
/* Resolve a selector for n nodes: out[i] = node i selected (out has n entries). `random:K`
 * and `P%` draw with *rng (a splitmix64 state the caller owns: the draw is a pure function of
 * it, and it advances). BR_EINVAL (with a message) for an index >= n or K > n. */
BR_NODISCARD br_err sc_sel_resolve(const char *sel, unsigned n, uint64_t *rng, bool *out,
                                   struct br_errbuf *eb);
/* splitmix64: the one PRNG step both harnesses use. */
uint64_t sc_rand(uint64_t *state);

const char *sc_kind_name(enum sc_kind k);
const char *sc_topology_name(enum sc_topology t);

#endif
