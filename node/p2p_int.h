/* p2p_int.h — what p2p.c shares with ep_peer.c: the link structure and the two calls a peer
 * endpoint makes from its replication thread (send a request and wait for its reply; wait for a
 * peer database's next change). */
#ifndef BARREL_NODE_P2P_INT_H
#define BARREL_NODE_P2P_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "barrel/frame.h"
#include "barrel/handshake.h"
#include "barrel/wire.h"

#include "p2p.h"

#define P2P_REMOTE_DBS 256

enum link_state { LINK_HS = 1, LINK_UP, LINK_CLOSING, LINK_GONE };

struct outmsg {
    struct outmsg *next;
    bool raw; /* a handshake message: sent as is */
    size_t len;
    uint8_t data[];
};

struct pending {
    struct pending *next;
    uint64_t rid;
    struct br_wire_msg *reply; /* set by the loop */
};

struct remote_db {
    char name[BR_DB_NAME_MAX + 1];
    struct br_hlc last;
};

struct watch {
    struct watch *next;
    struct link *l;
    br_db *db;
    uint64_t id;
    char name[BR_DB_NAME_MAX + 1];
    atomic_bool fired;
};

struct dialer;

struct link {
    br_p2p *p;
    struct link *next, *prev; /* the loop's list */
    br_http_ws *ws;           /* NULL until a client connection is established */
    struct dialer *dialer;    /* the dialer that made it (client side), or NULL */
    bool initiator;
    char addr[64];
    enum link_state state; /* loop */
    br_handshake *hs;
    br_frame *fr;
    br_buf rx;     /* reassembly of one WebSocket message */
    br_buf sealed; /* one frame being sent */
    uint64_t opened_ns, last_rx_ns, last_ping_ns;
    size_t serving; /* requests on workers */
    bool rx_paused;
    struct watch *watches;
    char reason[160]; /* why it closes */
    struct br_node_id peer;
    char peer_text[BR_NODE_ID_TEXT_LEN + 1];
    char peer_short[BR_NODE_ID_SHORT_LEN + 1];
    atomic_bool want_write;
    void *mesh;                           /* mesh.c's state for this link (loop) */
    char expect[BR_NODE_ID_TEXT_LEN + 1]; /* dialled for this member: "" any */
    bool by_mesh;                         /* dialled by the mesh */
    const char *close_when_sent; /* p2p_close_flushed's reason (a literal), or NULL (loop) */

    /* shared with endpoint threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;      /* the loop's (until gone), endpoints', jobs' */
    bool ready;    /* hello received */
    bool closed;   /* no more sending or replies */
    bool flushing; /* p2p_close_flushed: nothing more is queued */
    struct outmsg *q_head, *q_tail;
    size_t q_bytes;
    struct pending *pend;
    uint64_t next_rid;
    struct remote_db remote[P2P_REMOTE_DBS];
    size_t n_remote;
    uint64_t notify_gen; /* bumped by every digest */
};

/* Close l once what is queued for it has gone out (nothing more is queued from now on; NULL
 * reason: "closed"). A link closing this way no longer counts as up. Thread: the loop. */
void p2p_close_flushed(struct link *l, const char *reason);

void p2p_link_ref(struct link *l);
void p2p_link_unref(struct link *l);
/* Send request m (its rid is set here) and wait for the reply: *reply is the decoded reply
 * (caller frees), or an `error` reply is turned into its code with the reason in eb.
 * BR_ECLOSED when the link goes, BR_ETIMEDOUT after P2P_REQUEST_TIMEOUT_MS.
 * Thread: not the loop. */
BR_NODISCARD br_err p2p_request(struct link *l, struct br_wire_msg *m, struct br_wire_msg **reply,
                                struct br_errbuf *eb);
/* The newest change the peer announced for db (BR_HLC_MIN if none). Caller holds l->mu. */
struct br_hlc p2p_remote_last(struct link *l, const char *db);
/* This node's id in text. */
const char *p2p_self_text(const br_p2p *p);

/* For mesh.c (loop thread): the links, sending, closing and dialling. */
struct link *p2p_links(br_p2p *p);
BR_NODISCARD br_err p2p_send(struct link *l, const struct br_wire_msg *m);
void p2p_close(struct link *l, const char *reason);
/* Dial host:port expecting member expect_id (the link closes with peer_id_mismatch if the
 * handshake proves another id). */
BR_NODISCARD br_err p2p_dial(br_p2p *p, const char *host, int port, const char *expect_id);
uint64_t p2p_now_ns(void);
uint64_t p2p_timeout_ns(const br_p2p *p);
br_store *p2p_store(br_p2p *p);

/* ep_peer.c: an endpoint over link l for database db (takes a reference on l). */
BR_NODISCARD br_err p2p_endpoint_new(struct link *l, const char *db, struct br_endpoint **out);

#endif
