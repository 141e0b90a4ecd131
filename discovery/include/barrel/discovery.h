/* discovery.h — find barrel nodes on the local network with mDNS/DNS-SD (Avahi).
 *
 * A node publishes one `_barrel._tcp` service (instance "barrel-<short id>") on its port, with
 * TXT records `id=<node id text>`, `v=<protocol version>`, `mesh=<mesh fingerprint or empty>`
 * and `port=<port>`. It browses and resolves the same type on every interface and reports each
 * other node to the caller: found() once per address it is reachable at, lost() when the last
 * service instance of that node goes away. Nodes of another mesh (a different fingerprint, or
 * one side without a mesh key) are never reported, only logged once; TXT records that do not
 * parse, or whose `port` differs from the SRV record's, are dropped with a logged reason.
 * Everything is advisory: the node still checks the full id and the mesh key in the link
 * handshake.
 *
 * Avahi runs in its own thread (AvahiThreadedPoll), and found()/lost() are called on that
 * thread; the node queues them to its loop. When no Avahi daemon (or no system bus) is
 * reachable, br_discovery_start() still succeeds: the handle is off, one warning says so, and
 * it keeps trying in the background, so a daemon that appears (or comes back) later is used.
 * A node run with --no-mdns simply does not call br_discovery_start().
 *
 * The TXT parser and encoder at the end are pure functions (no Avahi, no I/O): they are what
 * the fuzzer and the unit tests exercise. */
#ifndef BARREL_DISCOVERY_H
#define BARREL_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

#define BR_DISCOVERY_SERVICE_TYPE "_barrel._tcp"
#define BR_DISCOVERY_ID_LEN 63   /* node id text: 8 groups of 7 of A-Z 2-7, joined by '-' */
#define BR_DISCOVERY_MESH_LEN 16 /* mesh fingerprint: lowercase hex digits */
#define BR_DISCOVERY_VERSION_MAX 65535
#define BR_DISCOVERY_ADDR_MAX 48   /* text form of an IPv4 or IPv6 address, with its NUL */
#define BR_DISCOVERY_RETRY_MS 5000 /* default delay before reconnecting to a lost daemon */

/* ---- Runtime: publish, browse, report ------------------------------------------------------ */

typedef struct br_discovery br_discovery;

/* One address at which another node of our mesh answers. A plain value: copy it freely. */
struct br_discovery_peer {
    char id[BR_DISCOVERY_ID_LEN + 1];     /* node id text, shape-checked only (see below) */
    uint32_t version;                     /* protocol version it announces, 1..65535 */
    char mesh[BR_DISCOVERY_MESH_LEN + 1]; /* its fingerprint, equal to ours ("" for none) */
    char addr[BR_DISCOVERY_ADDR_MAX];     /* "10.0.0.2" or "fe80::1" (no scope suffix) */
    int family;                           /* AF_INET or AF_INET6 */
    uint16_t port;                        /* from the SRV record */
    int ifindex;                          /* interface it was seen on (scope of link-local v6) */
};

/* Called on the Avahi thread, once per resolved address of a node (a node reachable on two
 * interfaces or over IPv4 and IPv6 is reported once for each), and again when an address
 * changes or a service reappears: the caller deduplicates. `p` is borrowed for the call. */
typedef void (*br_discovery_found_fn)(void *arg, const struct br_discovery_peer *p);
/* Called on the Avahi thread when the last service instance of node `id` (borrowed for the
 * call) has gone, or mDNS itself went away (daemon lost). Only for ids reported found. */
typedef void (*br_discovery_lost_fn)(void *arg, const char *id);

struct br_discovery_opts {
    const char *id;    /* our node id text (BR_DISCOVERY_ID_LEN characters); required */
    const char *mesh;  /* our mesh fingerprint (16 lowercase hex digits); NULL or "" for none */
    uint32_t version;  /* protocol version we speak, 1..BR_DISCOVERY_VERSION_MAX */
    uint16_t port;     /* port we listen on, 1..65535; published in SRV and TXT */
    bool ipv4_only;    /* publish, browse and resolve over IPv4 only (default: IPv4 and IPv6) */
    unsigned retry_ms; /* delay before recreating a failed Avahi client; 0: BR_DISCOVERY_RETRY_MS */
    br_discovery_found_fn found; /* may be NULL */
    br_discovery_lost_fn lost;   /* may be NULL */
    void *arg;                   /* passed to found() and lost() */
};

enum br_discovery_state {
    BR_DISCOVERY_OFF = 0,      /* no Avahi daemon reachable: retrying in the background */
    BR_DISCOVERY_STARTING = 1, /* connected, the daemon is registering its host name */
    BR_DISCOVERY_ON = 2,       /* publishing and browsing */
    BR_DISCOVERY_STOPPED = 3,  /* br_discovery_stop() was called */
};

/* Start publishing and browsing as described by o (copied: o and its strings may be freed on
 * return). On success *out owns a new handle; release it with br_discovery_free(). Succeeds
 * without an Avahi daemon (the handle is then off, see above). Errors: BR_EINVAL with a reason
 * in eb (NULL allowed) for bad options; BR_ENOMEM; BR_EIO if the poll thread cannot start.
 * On error *out is untouched. Thread: any. */
BR_NODISCARD br_err br_discovery_start(const struct br_discovery_opts *o, br_discovery **out,
                                       struct br_errbuf *eb);

/* Withdraw our service and stop: joins the Avahi thread, so when it returns no callback is
 * running or will run. Waits for a callback in flight to return: a callback must not wait on
 * anything the calling thread holds. Calling it from found()/lost() of the same handle aborts
 * (a callback never stops its own handle; schedule it). Idempotent. Thread: any but the Avahi
 * thread, one at a time (not concurrently with another stop or free of d). */
void br_discovery_stop(br_discovery *d);

/* Stop (if not stopped) and free the handle. NULL is a no-op. Thread: as br_discovery_stop. */
void br_discovery_free(br_discovery *d);

/* Current state; a snapshot that may change right after. Thread: any, callbacks included. */
enum br_discovery_state br_discovery_state(const br_discovery *d);

/* Stable lowercase name of a state ("off", "starting", "on", "stopped"). Thread: any. */
const char *br_discovery_state_name(enum br_discovery_state s);

/* ---- TXT records: pure parser and encoder -------------------------------------------------- */

#define BR_DISCOVERY_TXT_MAX_ITEMS 32 /* more items than this are refused */
#define BR_DISCOVERY_TXT_ITEM_MAX 255 /* bytes per item, as in DNS */
#define BR_DISCOVERY_TXT_ENC_ITEMS 4  /* id, v, mesh, port */
#define BR_DISCOVERY_TXT_ENC_SIZE 72  /* the longest encoded item ("id=" + 63) with its NUL */

/* What a node announces. */
struct br_discovery_txt {
    char id[BR_DISCOVERY_ID_LEN + 1];     /* shape-checked node id text */
    uint32_t version;                     /* 1..BR_DISCOVERY_VERSION_MAX */
    char mesh[BR_DISCOVERY_MESH_LEN + 1]; /* "" when the node has no mesh key (or no `mesh`) */
    uint16_t port;                        /* 0 when the record has no `port` key */
};

/* Encoded items, ready for Avahi or for br_discovery_txt_parse(). */
struct br_discovery_txt_items {
    size_t n;
    char item[BR_DISCOVERY_TXT_ENC_ITEMS][BR_DISCOVERY_TXT_ENC_SIZE]; /* "key=value", NUL-ended */
    size_t len[BR_DISCOVERY_TXT_ENC_ITEMS];                           /* NUL not counted */
};

/* Parse the n raw TXT items items[i][0..lens[i]) ("key=value", as received; nothing is assumed
 * NUL-terminated). Keys are matched without regard to case (RFC 6763); unknown keys and empty
 * items are ignored. Required: exactly one `id` of the node-id shape (63 characters, A-Z and
 * 2-7 in 8 groups of 7 joined by '-'; checksums are the caller's business) and exactly one `v`
 * (decimal, no leading zero, 1..65535). Optional, at most once each: `mesh` (empty or 16
 * lowercase hex digits; absent means none) and `port` (decimal 1..65535, no leading zero).
 * Refused: more than BR_DISCOVERY_TXT_MAX_ITEMS items, an item over 255 bytes, a NUL byte.
 * On success writes *out. Errors: BR_EPROTO with a reason in eb (NULL allowed) that names the
 * problem but never echoes the bytes. Thread: any. */
BR_NODISCARD br_err br_discovery_txt_parse(const uint8_t *const *items, const size_t *lens,
                                           size_t n, struct br_discovery_txt *out,
                                           struct br_errbuf *eb);

/* Encode t as items `id`, `v`, `mesh` and `port` (the last left out when t->port is 0). What
 * it writes parses back to *t. Errors: BR_EINVAL with a reason if t would not parse (bad id
 * shape, version, mesh). On error *out is untouched. Thread: any. */
BR_NODISCARD br_err br_discovery_txt_encode(const struct br_discovery_txt *t,
                                            struct br_discovery_txt_items *out,
                                            struct br_errbuf *eb);

#endif
