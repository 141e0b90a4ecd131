/* gossip.h — the mesh's member table: who is in it, where they can be dialled, and whether they
 * are alive, suspect or dead (DESIGN.md "Gossip"). A pure state machine: no threads, no I/O,
 * no clock of its own. The node feeds it events (links up and down, entries gossiped by peers,
 * probe answers, the time) and asks it what to send and whom to dial, so the simulator can drive
 * the same code with a virtual clock.
 *
 * Failure detection follows SWIM (Das et al. 2002) with Lifeguard-style refutation:
 *   - every member has an incarnation, the HLC at which it last declared itself alive; a node
 *     starts with its HLC at start-up, so a restarted member is always newer than its past;
 *   - when the last link to a member goes, the member is probed indirectly: up to k other
 *     members are asked whether they reach it (the node sends the probes; this module keeps the
 *     deadline). No "yes" before BR_GOSSIP probe_ms: the member becomes suspect;
 *   - a suspect member that does not refute within dead_ms is dead; a member refutes by
 *     declaring itself alive with a newer incarnation (this module does that for the local node
 *     when it hears it is suspected);
 *   - precedence of two entries about one member: the newer incarnation wins; at equal
 *     incarnations dead beats suspect beats alive.
 * Changes of state are disseminated by piggybacking: each is sent retransmit_mult * log2(n+1)
 * times with the gossip messages. A membership hash (XOR of XXH3-64 over id, incarnation,
 * state) lets two nodes notice they disagree and exchange their whole tables.
 *
 * Hostile entries are refused one by one, with a reason (br_gossip_merge): an id that is not a
 * node id, addresses that are not host:port, an incarnation past the accepted clock skew, more
 * entries than BR_GOSSIP_MAX_ENTRIES in one message, a claim that this node is dead.
 *
 * Thread: a br_gossip belongs to one thread (the node's loop); nothing here locks. */
#ifndef BARREL_GOSSIP_H
#define BARREL_GOSSIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"
#include "barrel/hlc.h"
#include "barrel/wire.h"

#define BR_GOSSIP_ID_MAX 64 /* node id text and its NUL */
#define BR_GOSSIP_MAX_ADDRS 4
#define BR_GOSSIP_ADDR_MAX 80     /* "host:port" and its NUL */
#define BR_GOSSIP_MAX_ENTRIES 256 /* entries in one gossip message */

typedef struct br_gossip br_gossip;

enum br_member_state {
    BR_MEMBER_ALIVE = 0,
    BR_MEMBER_SUSPECT = 1,
    BR_MEMBER_DEAD = 2,
};

/* "alive", "suspect", "dead". */
const char *br_member_state_name(enum br_member_state s);

struct br_gossip_opts {
    const char *self;         /* this node's id (text form); copied */
    struct br_hlc self_inc;   /* this node's first incarnation: its HLC at start-up */
    unsigned probe_ms;        /* indirect probe answer wait; 0: 1000 */
    unsigned dead_ms;         /* suspect -> dead without refutation; 0: 3000 */
    unsigned forget_ms;       /* dead members are dropped after this; 0: 24 h */
    unsigned max_members;     /* table size (self excluded); 0: 1024 */
    unsigned retransmit_mult; /* piggyback count factor; 0: 3 */
    uint64_t max_skew_ms;  /* incarnations further ahead of the wall clock are refused; 0: 300 s */
    unsigned dial_base_ms; /* first redial delay after a failed dial; 0: 500 */
    unsigned dial_max_ms;  /* redial delay cap; 0: 8000 */
    unsigned reconnect_ms; /* dead members are dialled again this often; 0: 10000 */
};

/* One member, as the table holds it. Pointers to members are valid until the next call that
 * changes the table (merge, note, tick, free). */
struct br_gossip_member {
    char id[BR_GOSSIP_ID_MAX];
    char addrs[BR_GOSSIP_MAX_ADDRS][BR_GOSSIP_ADDR_MAX];
    size_t n_addrs;
    struct br_hlc inc; /* incarnation (BR_HLC_MIN: known only from a link or mDNS so far) */
    enum br_member_state state;
    uint64_t state_since_ms; /* when the state last changed (node's monotonic ms) */
    uint64_t heard_ms;       /* last message on a link from it, or news of it (0: never) */
    struct br_hlc last_hlc;  /* newest HLC it sent us on a link */
    int64_t skew_ms;         /* its wall clock minus ours at the last hello or ping */
    bool has_skew;
    unsigned links; /* links up to it right now */
    /* probing */
    bool probing;
    bool probe_sent; /* the node asked others (br_gossip_probe_sent) */
    uint64_t probe_deadline_ms;
    /* dialling */
    uint64_t next_dial_ms;
    unsigned dial_fails;
    unsigned sends_left; /* piggyback transmissions left for its latest change */
};

/* Counters of what merging refused and changed. */
struct br_gossip_merge_result {
    size_t accepted, refused, changed, learned;
    char reason[160]; /* the first refusal's reason */
};

BR_NODISCARD br_err br_gossip_new(const struct br_gossip_opts *o, br_gossip **out,
                                  struct br_errbuf *eb);
void br_gossip_free(br_gossip *g); /* NULL is a no-op */

/* This node's entry (its id, addresses and current incarnation; borrowed). */
const struct br_gossip_member *br_gossip_self(const br_gossip *g);
/* Set the addresses others can dial this node at ("host:port", at most BR_GOSSIP_MAX_ADDRS). */
BR_NODISCARD br_err br_gossip_set_self_addrs(br_gossip *g, const char *const *addrs, size_t n);

/* A member learned out of band (mDNS, a static peer, an accepted link): added alive if new, its
 * address added (the newest first) if it has room. BR_EINVAL for a bad id or address;
 * BR_ETOOBIG when the table is full. */
BR_NODISCARD br_err br_gossip_note(br_gossip *g, const char *id, const char *addr, uint64_t now_ms);

/* Link events. link_up: the member is reachable now (alive here, probing cancelled, dial
 * backoff reset). link_down: when it was the last link, an indirect probe starts: returns
 * true, and the caller sends probe requests and reports answers with br_gossip_probe_answer. */
void br_gossip_link_up(br_gossip *g, const char *id, uint64_t now_ms);
bool br_gossip_link_down(br_gossip *g, const char *id, uint64_t now_ms);
/* A message on a link from id: hlc is what it carried (ping, hello). */
void br_gossip_heard(br_gossip *g, const char *id, struct br_hlc hlc, int64_t skew_ms,
                     uint64_t now_ms);
/* The node sent the indirect probe requests for id's current probe. */
void br_gossip_probe_sent(br_gossip *g, const char *id);
/* An answer to an indirect probe of id: alive cancels the probe. */
void br_gossip_probe_answer(br_gossip *g, const char *id, bool alive, uint64_t now_ms);
/* A dial of id failed (backoff doubles) or was made (next_dial_ms is pushed). */
void br_gossip_dial_failed(br_gossip *g, const char *id, uint64_t now_ms);
/* Dials of id keep failing and nothing links us to it: if it is alive here, unlinked, not
 * probed yet and dial_fails >= 3, an indirect probe starts (returns true: send the probes), so
 * a member nobody can reach ends up suspect and dead like one whose link dropped. */
bool br_gossip_unreachable(br_gossip *g, const char *id, uint64_t now_ms);
/* addr is not id's (a dial there proved another node): forget it. */
void br_gossip_drop_addr(br_gossip *g, const char *id, const char *addr);

/* Merge entries gossiped by member `from` (already authenticated by the link). Each entry is
 * checked and refused alone (r->refused, first reason in r->reason); a message with more than
 * BR_GOSSIP_MAX_ENTRIES entries is refused whole (BR_EPROTO). now_wall_ms bounds incarnations
 * (max_skew_ms). Entries about this node: a suspicion or a death at our incarnation or newer is
 * refuted (our incarnation moves to refute_inc, which must be newer: the caller's HLC now). */
BR_NODISCARD br_err br_gossip_merge(br_gossip *g, const char *from,
                                    const struct br_wire_peer *entries, size_t n, uint64_t now_ms,
                                    uint64_t now_wall_ms, struct br_hlc refute_inc,
                                    struct br_gossip_merge_result *r);

/* Advance timers: probes past their deadline make members suspect, suspects past dead_ms die,
 * the long dead are forgotten. Returns how many members changed state. */
size_t br_gossip_tick(br_gossip *g, uint64_t now_ms);

/* What to gossip. Fills out[0..max) with the changes still to be piggybacked (this node's own
 * first; each call counts one transmission), then up to `sample` other members chosen with rnd
 * (any 64-bit random value). Entries point into the table: valid until it changes. Returns the
 * count (0 is possible: an idle mesh only compares membership hashes). */
size_t br_gossip_entries(br_gossip *g, struct br_wire_peer *out, size_t max, size_t sample,
                         uint64_t rnd);
/* Every member (this node first), for a full exchange when membership hashes differ. */
size_t br_gossip_all(br_gossip *g, struct br_wire_peer *out, size_t max);
/* The membership hash (never 0). */
uint64_t br_gossip_mhash(const br_gossip *g);

/* Members (this node excluded), for iteration and GET /_peers. */
size_t br_gossip_count(const br_gossip *g);
const struct br_gossip_member *br_gossip_at(const br_gossip *g, size_t i);
const struct br_gossip_member *br_gossip_find(const br_gossip *g, const char *id);
/* Members by state. */
void br_gossip_counts(const br_gossip *g, size_t *alive, size_t *suspect, size_t *dead);
/* Members worth dialling now, best first: alive, then suspect, then dead ones not tried for
 * reconnect_ms (so a healed partition reconnects); each with an address, no link, not in dial
 * backoff. Writes up to max pointers; returns the count. */
size_t br_gossip_dial_candidates(const br_gossip *g, uint64_t now_ms,
                                 const struct br_gossip_member **out, size_t max);

#endif
