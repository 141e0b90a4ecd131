/* sim_int.h — the deterministic simulator's internals, shared by its files (not an API).
 *
 * One process, one virtual clock (microseconds), one event queue (br_timerq: deadline, then
 * insertion order), one PRNG stream per purpose, all seeded from the run's seed. Each node has
 * its own RocksDB store (a temp dir), its own br_env (the virtual clock plus its skew, its own
 * PRNG), the real gossip state machine (gossip.h), and for every (link, database) the real
 * replicator (replicator.h, serial mode, continuous) pulling through the real RPC endpoint
 * (rpc.h) whose requests and replies are encoded and decoded with the real wire code (wire.h).
 *
 * Pulls run on their own threads, but only one thread ever runs at a time: a pull thread runs
 * only while the main loop waits for it, and hands control back ("parks") whenever it sends a
 * request or waits for the source; the main loop resumes it when the reply arrives in virtual
 * time. So every run is a pure function of (scenario, seed). simnode.c: nodes, links, the
 * network and pulls; simcheck.c: convergence, invariants, latency; sim.c: the command. */
#ifndef BARREL_SIM_INT_H
#define BARREL_SIM_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "barrel/buf.h"
#include "barrel/env.h"
#include "barrel/gossip.h"
#include "barrel/hlc.h"
#include "barrel/replicator.h"
#include "barrel/store.h"
#include "barrel/wire.h"

#include "scenario.h"

#define SIM_EPOCH_MS 1767225600000ull /* 2026-01-01T00:00:00Z: the virtual wall clock's zero */
#define SIM_PORT 7000
#define SIM_FRAME_OVERHEAD 24 /* per message: secretstream tag+header (17) and WebSocket (2-8) */
#define SIM_MSS 1400          /* bytes per packet, for loss, duplication and reordering */
#define SIM_RTO_US 200000     /* TCP's minimum retransmission timeout */

struct sim;
struct snode;
struct slink;

/* What one end of a link knows, per scenario database (index into sc->dbs). */
struct lside {
    struct br_hlc recv_last[SC_MAX_DBS]; /* newest change the peer announced */
    uint8_t recv_hash[SC_MAX_DBS][16];
    bool recv_known[SC_MAX_DBS];
    struct br_hlc sent_last[SC_MAX_DBS]; /* what we last announced to it */
    uint8_t sent_hash[SC_MAX_DBS][16];
    bool sent_known[SC_MAX_DBS];
    bool watch[SC_MAX_DBS]; /* it reads our changes: announce every new one at once */
    uint64_t last_full_ms;
};

/* One direction of a link's byte stream (TCP): bandwidth queue and FIFO delivery. */
struct sdir {
    uint64_t next_free_us; /* when the sender's queue is empty again */
    uint64_t last_arrival_us;
    struct held *held, *held_tail; /* sent while the network between them is cut */
};

struct slink {
    struct slink *next;   /* every link ever made (freed at the end) */
    uint64_t gen;         /* unique, for events that outlive it */
    unsigned n[2];        /* n[0] dialled n[1] */
    bool up, dead;        /* established; gone for good */
    uint64_t up_us;       /* when it came up */
    bool by_mesh;         /* dialled by the gossip layer (else a static peer) */
    struct lside side[2]; /* side[i] is n[i]'s end */
    struct sdir dir[2];   /* dir[i]: n[i] -> n[1-i] */
};

enum pull_state { PS_RUN, PS_CALL, PS_WAIT, PS_DONE };

struct spull {
    struct spull *next;
    struct sim *s;
    unsigned node, peer; /* the puller (target) and the member it pulls from (source) */
    unsigned dbi;
    struct slink *lk;
    int side; /* the puller's side of lk */
    pthread_t t;
    pthread_cond_t cv;
    enum pull_state st;
    bool go;
    bool closed; /* the link or the node is gone: every call fails */
    uint64_t rid;
    struct br_wire_msg *reply; /* the reply handed over on resume */
    br_err res;
    struct br_hlc wait_since;
    uint64_t wait_seq; /* identifies the current wait, for its timeout event */
    br_rep *rep;
    struct br_wire_msg *req_copy; /* get_revs: the request, to name what a reply delivers */
    uint64_t reqs;                /* requests made */
};

/* The argument of a node's commit watch on one database. */
struct wctx {
    struct sim *s;
    unsigned node, dbi;
};

struct snode {
    struct sim *s;
    unsigned idx;
    char id[BR_GOSSIP_ID_MAX];
    char addr[BR_GOSSIP_ADDR_MAX];
    bool up, ever_started, joins_later;
    uint64_t epoch; /* +1 at every crash or leave: stale events are dropped */
    int64_t skew_ms;
    uint64_t rng;
    struct br_env env;
    br_store *store;
    br_db *dbs[SC_MAX_DBS];
    uint64_t watch_ids[SC_MAX_DBS];
    struct wctx wctx[SC_MAX_DBS];
    bool dirty[SC_MAX_DBS]; /* committed since the last announcement */
    bool in_dirty_list;
    char filter[SC_MAX_DBS][SC_PATHS_MAX]; /* "" : full replica */
    const char *paths[SC_MAX_DBS][8];
    size_t n_paths[SC_MAX_DBS];
    char path_buf[SC_MAX_DBS][SC_PATHS_MAX];
    br_gossip *g;
    struct slink **links; /* links this node is an end of (alive or not yet dead) */
    size_t n_links, cap_links;
    struct spull *pulls;
    uint64_t probe_rid;
    struct {
        uint64_t rid;
        char target[BR_GOSSIP_ID_MAX];
    } probes[16];
    unsigned *static_peers; /* dialled and redialled (chain, star, full) */
    size_t n_static;
    uint64_t next_static_dial_ms;
    unsigned static_fails;
    /* counters */
    uint64_t msgs_sent, bytes_sent, writes, crashes;
};

/* One acknowledged client write, for the invariants and the latency figures. */
struct swrite {
    unsigned node, dbi;
    char id[32];
    struct br_rev rev;
    bool deleted;
    uint64_t at_us;
    uint32_t reached; /* nodes that hold it (the writer included) */
    uint8_t *seen;    /* n bytes: node i got it */
};

struct sim {
    const struct scenario *sc;
    unsigned n;
    uint64_t seed;
    char dir[256];
    uint64_t now_us;
    br_timerq *q;
    uint64_t net_rng, sel_rng, data_rng;
    struct snode *nodes;
    struct slink *links;
    uint64_t link_gen;
    uint64_t rid;
    FILE *trace;
    /* partition: side of each node (0: in neither group) */
    uint8_t *part;
    bool cut;
    uint64_t part_gen;
    /* the pull thread handshake */
    pthread_mutex_t mu;
    pthread_cond_t main_cv;
    /* nodes with commits not yet announced */
    unsigned *dirty;
    size_t n_dirty;
    /* writes */
    struct swrite *w;
    size_t n_w, cap_w;
    uint64_t *wmap; /* open addressing: hash of (db, id, rev) -> index + 1 */
    size_t wmap_cap;
    uint64_t last_write_us, last_event_us;
    /* figures */
    uint64_t msgs, bytes, msgs_changes, bytes_changes; /* total; since the last write event */
    uint64_t *lat_us;                                  /* propagation latency samples */
    size_t n_lat, cap_lat;
    uint64_t pulls_started, pull_errors, dials, links_up, links_down;
    bool stopping;
};

/* ---- simnode.c ---- */
BR_NODISCARD br_err sim_node_init(struct sim *s, struct snode *nd, unsigned idx,
                                  struct br_errbuf *eb);
BR_NODISCARD br_err sim_node_start(struct sim *s, struct snode *nd, struct br_errbuf *eb);
void sim_node_crash(struct sim *s, struct snode *nd, const char *why);
void sim_node_fini(struct sim *s, struct snode *nd);
void sim_cut_link(struct sim *s, unsigned a, unsigned b);
void sim_partition_changed(struct sim *s);
/* After each event: announce the commits the event made. */
void sim_flush_dirty(struct sim *s);
void sim_free_links(struct sim *s);

/* ---- simcheck.c ---- */
/* Record an acknowledged write. */
void sim_record_write(struct sim *s, unsigned node, unsigned dbi, const char *id,
                      const struct br_rev *rev, bool deleted);
/* Node `node` received revision (id, rev) of database dbi (from a get_revs reply). */
void sim_note_arrival(struct sim *s, unsigned node, unsigned dbi, const char *id, size_t id_len,
                      const struct br_rev *rev);
/* Do all live full replicas agree (set hashes)? */
bool sim_converged(struct sim *s);
/* The four invariants; false with a message naming the first one that fails. */
bool sim_check_invariants(struct sim *s, char *msg, size_t cap);
void sim_checks_fini(struct sim *s);

/* ---- sim.c ---- */
void sim_trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t sim_now_ms(const struct sim *s);
/* Schedule fn(arg) at virtual time at_us (arg freed by fn). */
void sim_at(struct sim *s, uint64_t at_us, br_timer_fn fn, void *arg);
bool sim_is_full(const struct sim *s, unsigned node, unsigned dbi);

#endif
