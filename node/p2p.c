/* p2p.c — links on WS /_p2p, serving wire requests from the local store, and static peers kept
 * in sync by continuous replications (see p2p.h for the protocol, failures and flow control).
 *
 * Structure: a link is created by an accepted upgrade (responder) or by a dialer (initiator).
 * The loop owns its handshake, framing state and reassembly buffer; its outbound queue, pending
 * requests and the peer's announced database heads are shared with replication threads under
 * the link's mutex. A link is freed when its last reference goes (the loop's is dropped when the
 * connection closes; endpoints and served jobs hold their own). */
#include "p2p.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "barrel/alloc.h"
#include "barrel/log.h"
#include "barrel/nodeid.h"
#include "barrel/replicator.h"
#include "barrel/rpc.h"

#include "mesh.h"
#include "p2p_int.h"

#define TAG "p2p"
#define FAIL_SLOTS 64
#define DIAL_BASE_MS 500
#define DIAL_MAX_MS 8000
#define OPEN_WAIT_MS 10000

struct fail_slot {
    char addr[64];
    unsigned fails;
    uint64_t until_ns;
};

struct repthread {
    struct dialer *d;
    char db[BR_DB_NAME_MAX + 1];
    bool pull;
    br_rep *cur; /* under p->mu */
    pthread_t t;
    bool started;
};

struct dialer {
    struct dialer *next;
    br_p2p *p;
    char url[256];
    char host[128];
    int port;
    struct link *ready;  /* under p->mu: the link once it said hello */
    unsigned fails_seen; /* under p->mu: dial attempts that ended without a link */
    /* loop only */
    struct link *cur;
    uint64_t next_try_ns;
    unsigned fails;
    struct repthread *reps;
    size_t n_reps;
};

struct br_p2p {
    struct br_p2p_opts o;
    char self_text[BR_NODE_ID_TEXT_LEN + 1];
    pthread_mutex_t mu; /* links list, dialers list, dialer->ready, stopping */
    pthread_cond_t cv;
    struct link *links;
    struct dialer *dialers;
    bool stopping;
    struct fail_slot fails[FAIL_SLOTS];
    atomic_uint_fast64_t bytes_sent, bytes_received; /* WebSocket frames, headers included */
    br_mesh *mesh;                                   /* loop */
};

/* Bytes of one WebSocket frame carrying n payload bytes (RFC 6455 5.2; clients mask). */
static uint64_t ws_frame_bytes(size_t n, bool masked)
{
    return (uint64_t)n + 2 + (n >= 126 ? 2 : 0) + (n >= 65536 ? 6 : 0) + (masked ? 4 : 0);
}

static uint64_t now_ns(void)
{
    return br_env_mono_ns(br_env_default());
}

const char *p2p_self_text(const br_p2p *p)
{
    return p->self_text;
}

/* ---- references ---- */

void p2p_link_ref(struct link *l)
{
    pthread_mutex_lock(&l->mu);
    l->refs++;
    pthread_mutex_unlock(&l->mu);
}

static void link_free(struct link *l)
{
    for (struct outmsg *m = l->q_head, *n; m; m = n) {
        n = m->next;
        br_free(m);
    }
    br_handshake_free(l->hs);
    br_frame_free(l->fr);
    br_buf_fini(&l->rx);
    br_buf_fini(&l->sealed);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    br_free(l);
}

void p2p_link_unref(struct link *l)
{
    pthread_mutex_lock(&l->mu);
    bool last = --l->refs == 0;
    pthread_mutex_unlock(&l->mu);
    if (last)
        link_free(l);
}

/* ---- failures by address (responder side) ---- */

static struct fail_slot *fail_find(br_p2p *p, const char *addr, bool make)
{
    struct fail_slot *free_slot = NULL, *oldest = &p->fails[0];
    for (size_t i = 0; i < FAIL_SLOTS; i++) {
        struct fail_slot *f = &p->fails[i];
        if (f->addr[0] && strcmp(f->addr, addr) == 0)
            return f;
        if (!f->addr[0] && !free_slot)
            free_slot = f;
        if (f->until_ns < oldest->until_ns)
            oldest = f;
    }
    if (!make)
        return NULL;
    struct fail_slot *f = free_slot ? free_slot : oldest;
    memset(f, 0, sizeof *f);
    snprintf(f->addr, sizeof f->addr, "%s", addr);
    return f;
}

static void fail_note(br_p2p *p, const char *addr)
{
    struct fail_slot *f = fail_find(p, addr, true);
    f->fails++;
    if (f->fails >= 3) {
        unsigned sh = f->fails - 3 < 6 ? f->fails - 3 : 6;
        uint64_t ms = 1000ull << sh;
        f->until_ns = now_ns() + (ms > 60000 ? 60000 : ms) * 1000000ull;
    }
}

static void fail_clear(br_p2p *p, const char *addr)
{
    struct fail_slot *f = fail_find(p, addr, false);
    if (f)
        memset(f, 0, sizeof *f);
}

/* ---- sending ---- */

static void wake_loop(br_p2p *p)
{
    br_http_wake(p->o.http);
}

/* Queue one message. From a thread (on_loop false) wait for room when the queue is full; the
 * loop never waits (it pauses reading instead, see update_rx). */
static br_err enqueue(struct link *l, const uint8_t *data, size_t len, bool raw, bool on_loop)
{
    struct outmsg *om = br_malloc(sizeof *om + len);
    if (!om)
        return BR_ENOMEM;
    om->next = NULL;
    om->raw = raw;
    om->len = len;
    memcpy(om->data, data, len);
    pthread_mutex_lock(&l->mu);
    while (!on_loop && !l->closed && l->q_bytes > 0 && l->q_bytes + len > P2P_QUEUE_MAX)
        pthread_cond_wait(&l->cv, &l->mu);
    if (l->closed || l->flushing) {
        pthread_mutex_unlock(&l->mu);
        br_free(om);
        return BR_ECLOSED;
    }
    if (l->q_tail)
        l->q_tail->next = om;
    else
        l->q_head = om;
    l->q_tail = om;
    l->q_bytes += len;
    pthread_mutex_unlock(&l->mu);
    if (on_loop) {
        if (l->ws)
            br_http_ws_want_write(l->ws);
    } else {
        atomic_store(&l->want_write, true);
        wake_loop(l->p);
    }
    return BR_OK;
}

static br_err send_msg(struct link *l, const struct br_wire_msg *m)
{
    br_buf b;
    br_buf_init(&b, BR_WIRE_MAX_MSG);
    struct br_errbuf eb = {{0}};
    br_err e = br_wire_encode(m, &b, &eb);
    if (!e)
        e = enqueue(l, b.data, b.len, false, true);
    else
        br_log(BR_LOG_WARN, TAG, "event=encode_failed type=%s err=%s reason=\"%s\"",
               br_wire_type_name(m->type), br_errname(e), eb.msg);
    br_buf_fini(&b);
    return e;
}

static void send_error(struct link *l, uint64_t rid, br_err code, const char *reason)
{
    struct br_wire_msg m = {.type = BR_WIRE_ERROR, .rid = rid};
    m.u.error.code = (uint64_t)code;
    m.u.error.reason = reason;
    (void)send_msg(l, &m);
}

/* Stop reading while the queue is full or enough requests are being served. */
static void update_rx(struct link *l)
{
    if (!l->ws || l->state != LINK_UP)
        return;
    pthread_mutex_lock(&l->mu);
    size_t q = l->q_bytes;
    pthread_mutex_unlock(&l->mu);
    bool pause = l->serving >= P2P_MAX_SERVING || q >= P2P_QUEUE_MAX;
    if (pause != l->rx_paused) {
        l->rx_paused = pause;
        br_http_ws_rx_enable(l->ws, !pause);
    }
}

/* ---- closing ---- */

static void mark_closed(struct link *l)
{
    pthread_mutex_lock(&l->mu);
    l->closed = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void link_close(struct link *l, const char *fmt, ...) BR_PRINTF(2, 3);
static void link_close(struct link *l, const char *fmt, ...)
{
    if (l->state == LINK_CLOSING || l->state == LINK_GONE)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->reason, sizeof l->reason, fmt, ap);
    va_end(ap);
    br_log(BR_LOG_WARN, TAG, "event=link_closed addr=%s peer=%s initiator=%d reason=%s", l->addr,
           l->peer_short[0] ? l->peer_short : "-", l->initiator, l->reason);
    if (l->state == LINK_HS && !l->initiator)
        fail_note(l->p, l->addr); /* a failed handshake: the address backs off */
    l->state = LINK_CLOSING;
    mark_closed(l);
    if (l->ws) {
        br_http_ws_close(l->ws, 1008, l->reason);
        br_http_ws_want_write(l->ws);
        if (l->rx_paused)
            br_http_ws_rx_enable(l->ws, true);
    }
}

static void unwatch_all(struct link *l)
{
    for (struct watch *w = l->watches, *n; w; w = n) {
        n = w->next;
        br_db_unwatch(w->db, w->id);
        br_db_close(w->db);
        br_free(w);
    }
    l->watches = NULL;
}

static void dialer_link_gone(struct dialer *d, struct link *l, bool was_up)
{
    br_p2p *p = d->p;
    pthread_mutex_lock(&p->mu);
    if (d->ready == l)
        d->ready = NULL;
    if (!was_up)
        d->fails_seen++; /* an endpoint open waiting for this dialer gives up at once */
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (d->cur == l)
        d->cur = NULL;
    d->fails = was_up ? 0 : d->fails + 1;
    unsigned sh = d->fails < 5 ? d->fails : 5;
    uint64_t ms = (uint64_t)DIAL_BASE_MS << sh;
    if (ms > DIAL_MAX_MS)
        ms = DIAL_MAX_MS;
    d->next_try_ns = now_ns() + ms * 1000000ull;
    br_log(BR_LOG_INFO, TAG, "event=redial url=%s in_ms=%llu fails=%u", d->url,
           (unsigned long long)ms, d->fails);
}

/* The connection is gone (or never came): drop the loop's reference. */
static void link_gone(struct link *l)
{
    br_p2p *p = l->p;
    if (l->state != LINK_CLOSING) {
        snprintf(l->reason, sizeof l->reason, "%s", l->ws ? "connection_closed" : "connect_failed");
        br_log(BR_LOG_INFO, TAG, "event=link_closed addr=%s peer=%s initiator=%d reason=%s",
               l->addr, l->peer_short[0] ? l->peer_short : "-", l->initiator, l->reason);
    }
    pthread_mutex_lock(&l->mu);
    bool was_up = l->ready;
    pthread_mutex_unlock(&l->mu);
    l->state = LINK_GONE;
    l->ws = NULL;
    mark_closed(l);
    unwatch_all(l);
    if (p->mesh)
        mesh_link_gone(p->mesh, l, was_up);
    pthread_mutex_lock(&p->mu);
    if (l->prev)
        l->prev->next = l->next;
    else if (p->links == l)
        p->links = l->next;
    if (l->next)
        l->next->prev = l->prev;
    pthread_mutex_unlock(&p->mu);
    if (l->dialer)
        dialer_link_gone(l->dialer, l, was_up);
    p2p_link_unref(l);
}

/* ---- links ---- */

static struct link *link_new(br_p2p *p, bool initiator, const char *addr)
{
    struct link *l = br_calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->p = p;
    l->initiator = initiator;
    l->state = LINK_HS;
    l->refs = 1;
    snprintf(l->addr, sizeof l->addr, "%s", addr);
    br_buf_init(&l->rx, BR_HS_MAX_BYTES);
    br_buf_init(&l->sealed, BR_FRAME_WIRE_MAX(BR_WIRE_MAX_MSG));
    atomic_init(&l->want_write, false);
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    l->opened_ns = l->last_rx_ns = l->last_ping_ns = now_ns();
    struct br_handshake_opts ho = {
        .identity = p->o.identity, .mesh = p->o.mesh, .trust = p->o.trust, .env = NULL};
    if (br_handshake_new(&ho, initiator, &l->hs)) {
        link_free(l);
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    l->next = p->links;
    if (p->links)
        p->links->prev = l;
    p->links = l;
    pthread_mutex_unlock(&p->mu);
    return l;
}

bool br_p2p_is_path(const br_http_ex *x)
{
    return x->req.segs.n == 1 && strcmp(x->req.segs.seg[0], "_p2p") == 0;
}

bool br_p2p_owns(const br_p2p *p, const void *user)
{
    bool found = false;
    pthread_mutex_lock((pthread_mutex_t *)&p->mu);
    for (const struct link *l = p->links; l && !found; l = l->next)
        found = l == user;
    pthread_mutex_unlock((pthread_mutex_t *)&p->mu);
    return found;
}

void *br_p2p_ws_open(br_p2p *p, br_http_ex *x, br_http_ws *ws)
{
    char addr[64];
    br_http_ws_peer(ws, addr, sizeof addr);
    struct fail_slot *f = fail_find(p, addr, false);
    if (f && f->until_ns > now_ns()) {
        br_log(BR_LOG_WARN, TAG, "event=link_refused addr=%s reason=backoff fails=%u", addr,
               f->fails);
        br_http_resp_error(&x->resp, 429, "too_many_requests", "handshake failures: back off");
        return NULL;
    }
    struct link *l = p->stopping ? NULL : link_new(p, false, addr);
    if (!l) {
        br_http_resp_error(&x->resp, 503, "service_unavailable", "cannot open a link");
        return NULL;
    }
    l->ws = ws;
    br_log(BR_LOG_INFO, TAG, "event=link_accepted addr=%s", addr);
    return l;
}

void br_p2p_ws_client_open(br_p2p *p, void *user, br_http_ws *ws)
{
    (void)p;
    struct link *l = user;
    l->ws = ws;
    if (l->state != LINK_HS) { /* closed before it was established */
        br_http_ws_close(ws, 1008, l->reason);
        br_http_ws_want_write(ws);
        return;
    }
    br_buf b;
    br_buf_init(&b, BR_HS_MAX_BYTES);
    br_err e = br_handshake_start(l->hs, &b);
    if (!e)
        e = enqueue(l, b.data, b.len, true, true);
    br_buf_fini(&b);
    if (e)
        link_close(l, "handshake_start_failed err=%s", br_errname(e));
}

void br_p2p_ws_closed(br_p2p *p, void *user)
{
    (void)p;
    link_gone(user);
}

/* ---- hello and digests ---- */

static void send_hello(struct link *l)
{
    br_p2p *p = l->p;
    char **names = NULL;
    size_t n = 0;
    if (br_store_db_list(p->o.store, &names, &n))
        n = 0;
    if (n > BR_WIRE_MAX_ITEMS)
        n = BR_WIRE_MAX_ITEMS;
    struct br_wire_dbdigest *dbs = br_calloc(n ? n : 1, sizeof *dbs);
    size_t k = 0;
    for (size_t i = 0; dbs && i < n; i++) {
        br_db *db = NULL;
        if (br_store_db_open(p->o.store, names[i], &db))
            continue;
        if (br_db_digest(db, &dbs[k].digest) == BR_OK)
            dbs[k++].name = names[i];
        br_db_close(db);
    }
    struct br_wire_msg m = {.type = BR_WIRE_HELLO, .rid = 0};
    m.u.hello.version = BR_WIRE_VERSION;
    m.u.hello.node = p->self_text;
    m.u.hello.hlc = br_hlc_peek(br_store_clock(p->o.store));
    m.u.hello.dbs = dbs;
    m.u.hello.n_dbs = k;
    if (dbs && send_msg(l, &m))
        link_close(l, "hello_failed");
    br_free(dbs);
    br_store_names_free(names, n);
}

static void note_remote(struct link *l, const struct br_wire_dbdigest *dbs, size_t n)
{
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < n; i++) {
        struct remote_db *r = NULL;
        for (size_t j = 0; j < l->n_remote && !r; j++)
            if (strcmp(l->remote[j].name, dbs[i].name) == 0)
                r = &l->remote[j];
        if (!r && l->n_remote < P2P_REMOTE_DBS) {
            r = &l->remote[l->n_remote++];
            snprintf(r->name, sizeof r->name, "%s", dbs[i].name);
            r->last = BR_HLC_MIN;
        }
        if (r && br_hlc_cmp(dbs[i].digest.last, r->last) > 0)
            r->last = dbs[i].digest.last;
    }
    l->notify_gen++;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

struct br_hlc p2p_remote_last(struct link *l, const char *db)
{
    for (size_t j = 0; j < l->n_remote; j++)
        if (strcmp(l->remote[j].name, db) == 0)
            return l->remote[j].last;
    return BR_HLC_MIN;
}

static void on_watch(void *arg, br_db *db, struct br_hlc seq)
{
    (void)db;
    (void)seq;
    struct watch *w = arg;
    if (!atomic_exchange(&w->fired, true))
        wake_loop(w->l->p);
}

/* The peer reads changes of db: tell it about every new change from now on. */
static void ensure_watch(struct link *l, const char *name)
{
    for (struct watch *w = l->watches; w; w = w->next)
        if (strcmp(w->name, name) == 0)
            return;
    struct watch *w = br_calloc(1, sizeof *w);
    if (!w)
        return;
    w->l = l;
    atomic_init(&w->fired, false);
    snprintf(w->name, sizeof w->name, "%s", name);
    if (br_store_db_open(l->p->o.store, name, &w->db)) {
        br_free(w);
        return;
    }
    if (br_db_watch(w->db, on_watch, w, &w->id)) {
        br_db_close(w->db);
        br_free(w);
        return;
    }
    w->next = l->watches;
    l->watches = w;
}

static void notify_watches(struct link *l)
{
    for (struct watch *w = l->watches; w; w = w->next) {
        if (!atomic_exchange(&w->fired, false))
            continue;
        struct br_wire_dbdigest dd = {.name = w->name};
        if (br_db_digest(w->db, &dd.digest))
            continue;
        struct br_wire_msg m = {.type = BR_WIRE_DIGEST, .rid = 0};
        m.u.digest.dbs = &dd;
        m.u.digest.n_dbs = 1;
        (void)send_msg(l, &m);
    }
}

/* ---- serving requests (store calls on workers) ---- */

struct sjob {
    struct link *l;
    struct br_wire_msg *req;
    br_buf out;
    br_store *store;
    char self[BR_NODE_ID_TEXT_LEN + 1];
};

static void serve_run(void *arg)
{
    struct sjob *j = arg;
    struct br_errbuf eb = {{0}};
    br_wire_arena a = {0};
    struct br_wire_msg r;
    br_err e = br_rpc_serve(j->store, j->self, j->req, &a, &r, &eb);
    if (!e)
        e = br_wire_encode(&r, &j->out, &eb);
    if (e) {
        br_buf_reset(&j->out);
        br_rpc_error_reply(j->req, e, eb.msg, &r);
        if (br_wire_encode(&r, &j->out, NULL))
            br_buf_reset(&j->out);
    }
    br_wire_arena_fini(&a);
}

static void serve_done(void *arg)
{
    struct sjob *j = arg;
    struct link *l = j->l;
    if (l->state == LINK_UP) {
        l->serving--;
        if (j->out.len)
            (void)enqueue(l, j->out.data, j->out.len, false, true);
        update_rx(l);
    }
    br_buf_fini(&j->out);
    br_wire_msg_free(j->req);
    br_free(j);
    p2p_link_unref(l);
}

static void serve(struct link *l, struct br_wire_msg *m)
{
    br_p2p *p = l->p;
    if (m->type == BR_WIRE_CHANGES)
        ensure_watch(l, m->u.changes.db);
    struct sjob *j = br_calloc(1, sizeof *j);
    if (!j) {
        send_error(l, m->rid, BR_ENOMEM, "out of memory");
        br_wire_msg_free(m);
        return;
    }
    j->l = l;
    j->req = m;
    j->store = p->o.store;
    snprintf(j->self, sizeof j->self, "%s", p->self_text);
    br_buf_init(&j->out, BR_WIRE_MAX_MSG);
    p2p_link_ref(l);
    l->serving++;
    if (br_workers_submit(p->o.workers, serve_run, serve_done, j)) {
        l->serving--;
        send_error(l, m->rid, BR_ECLOSED, "the node is stopping");
        br_buf_fini(&j->out);
        br_wire_msg_free(m);
        br_free(j);
        p2p_link_unref(l);
        return;
    }
    update_rx(l);
}

/* ---- receiving ---- */

static void complete(struct link *l, struct br_wire_msg *m)
{
    pthread_mutex_lock(&l->mu);
    struct pending *q = l->pend;
    while (q && q->rid != m->rid)
        q = q->next;
    if (q && !q->reply) {
        q->reply = m;
        m = NULL;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    if (m && m->type == BR_WIRE_ERROR)
        br_log(BR_LOG_INFO, TAG, "event=peer_error peer=%s rid=%llu code=%llu reason=\"%s\"",
               l->peer_short, (unsigned long long)m->rid, (unsigned long long)m->u.error.code,
               m->u.error.reason);
    br_wire_msg_free(m); /* a reply nobody waits for any more (timed out) */
}

/* A peer's clock moves ours forward (never back); one too far ahead is ignored (logged). */
static void merge_clock(struct link *l, struct br_hlc remote)
{
    br_err e = br_hlc_update(br_store_clock(l->p->o.store), remote, NULL);
    if (e)
        br_log(BR_LOG_DEBUG, TAG, "event=clock_not_merged peer=%s err=%s", l->peer_short,
               br_errname(e));
}

static void on_hello(struct link *l, struct br_wire_msg *m)
{
    char t[BR_NODE_ID_TEXT_LEN + 1];
    struct br_node_id id;
    if (br_nodeid_parse(m->u.hello.node, strlen(m->u.hello.node), &id, NULL) ||
        !br_nodeid_equal(&id, &l->peer)) {
        br_nodeid_format(&l->peer, t);
        link_close(l, "hello_node_mismatch");
        return;
    }
    merge_clock(l, m->u.hello.hlc);
    note_remote(l, m->u.hello.dbs, m->u.hello.n_dbs);
    pthread_mutex_lock(&l->mu);
    l->ready = true;
    pthread_mutex_unlock(&l->mu);
    br_log(BR_LOG_INFO, TAG, "event=link_ready addr=%s peer=%s dbs=%zu", l->addr, l->peer_short,
           m->u.hello.n_dbs);
    if (l->dialer) {
        br_p2p *p = l->p;
        pthread_mutex_lock(&p->mu);
        l->dialer->ready = l;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    if (l->p->mesh && l->state == LINK_UP)
        mesh_link_ready(l->p->mesh, l);
}

static void dispatch(struct link *l, struct br_wire_msg *m)
{
    if (l->p->mesh && l->state == LINK_UP && mesh_on_message(l->p->mesh, l, m))
        return;
    switch (m->type) {
    case BR_WIRE_HELLO:
        on_hello(l, m);
        break;
    case BR_WIRE_DIGEST:
        note_remote(l, m->u.digest.dbs, m->u.digest.n_dbs);
        break;
    case BR_WIRE_PING: {
        merge_clock(l, m->u.ping.hlc);
        struct br_wire_msg r = {.type = BR_WIRE_PONG, .rid = m->rid};
        r.u.ping.hlc = br_hlc_peek(br_store_clock(l->p->o.store));
        (void)send_msg(l, &r);
        break;
    }
    case BR_WIRE_PONG:
        if (m->rid) {
            complete(l, m);
            return;
        }
        break;
    case BR_WIRE_PEERS:
    case BR_WIRE_PROBE_REPLY:
        break; /* gossip: the mesh's (ignored without one) */
    case BR_WIRE_PROBE: {
        struct br_wire_msg r = {.type = BR_WIRE_PROBE_REPLY, .rid = m->rid};
        (void)send_msg(l, &r); /* no mesh: no member table to answer from */
        break;
    }
    case BR_WIRE_CHANGES:
    case BR_WIRE_REVSDIFF:
    case BR_WIRE_GET_REVS:
    case BR_WIRE_PUT_REVS:
    case BR_WIRE_LOCAL_GET:
    case BR_WIRE_LOCAL_PUT:
        if (m->rid == 0) {
            link_close(l, "request_without_rid type=%s", br_wire_type_name(m->type));
            break;
        }
        serve(l, m);
        return;
    default: /* replies and errors */
        complete(l, m);
        return;
    }
    br_wire_msg_free(m);
}

static void on_handshake_msg(struct link *l)
{
    br_p2p *p = l->p;
    br_buf out;
    br_buf_init(&out, BR_HS_MAX_BYTES);
    br_err e = br_handshake_recv(l->hs, l->rx.data, l->rx.len, &out);
    if (e) {
        br_buf_fini(&out);
        link_close(l, "%s", br_hs_reason_name(br_handshake_reason(l->hs)));
        return;
    }
    if (out.len)
        e = enqueue(l, out.data, out.len, true, true);
    br_buf_fini(&out);
    if (e || !br_handshake_done(l->hs))
        return;
    struct br_frame_opts fo = {.max_plain = BR_WIRE_MAX_MSG};
    l->peer = *br_handshake_peer_id(l->hs);
    br_nodeid_format(&l->peer, l->peer_text);
    br_nodeid_short(&l->peer, l->peer_short);
    if (l->initiator && strcmp(l->peer_text, p->self_text) == 0) {
        /* we dialled our own address (a --peer list shared by every node): the dialling end
         * closes, so the answering end's address does not back off as a failed handshake */
        link_close(l, "self_link");
        return;
    }
    if (l->expect[0] && strcmp(l->expect, l->peer_text) != 0) {
        char want[BR_NODE_ID_SHORT_LEN + 1];
        snprintf(want, sizeof want, "%.*s", BR_NODE_ID_SHORT_LEN, l->expect);
        link_close(l, "peer_id_mismatch expected=%s", want);
        return;
    }
    e = br_handshake_link(l->hs, &fo, &l->fr);
    br_handshake_free(l->hs);
    l->hs = NULL;
    if (e) {
        link_close(l, "framing_failed err=%s", br_errname(e));
        return;
    }
    br_buf_fini(&l->rx);
    br_buf_init(&l->rx, BR_FRAME_WIRE_MAX(BR_WIRE_MAX_MSG));
    l->state = LINK_UP;
    if (!l->initiator)
        fail_clear(p, l->addr);
    br_log(BR_LOG_INFO, TAG, "event=link_up addr=%s peer=%s initiator=%d", l->addr, l->peer_short,
           l->initiator);
    send_hello(l);
}

static void on_frame(struct link *l)
{
    br_buf plain;
    br_buf_init(&plain, BR_WIRE_MAX_MSG);
    bool final = false;
    br_err e = br_frame_open(l->fr, l->rx.data, l->rx.len, &plain, &final);
    if (e) {
        br_buf_fini(&plain);
        link_close(l, "bad_frame err=%s", br_errname(e));
        return;
    }
    if (final) {
        br_buf_fini(&plain);
        link_close(l, "peer_finished");
        return;
    }
    struct br_wire_msg *m = NULL;
    uint64_t rid = 0;
    struct br_errbuf eb = {{0}};
    e = br_wire_decode(plain.data, plain.len, &m, &rid, &eb);
    br_buf_fini(&plain);
    if (e) {
        char *q;
        while ((q = strchr(eb.msg, ' ')) != NULL) /* one token in the log line */
            *q = '_';
        link_close(l, "bad_message err=%s detail=%s", br_errname(e), eb.msg);
        return;
    }
    dispatch(l, m);
}

bool br_p2p_ws_receive(br_p2p *p, void *user, const void *in, size_t len, bool first, bool final,
                       bool binary)
{
    (void)p;
    struct link *l = user;
    if (l->state != LINK_HS && l->state != LINK_UP)
        return true; /* closing: the close frame goes out at the next writeable */
    if (!binary) {
        link_close(l, "text_frame");
        return true;
    }
    atomic_fetch_add_explicit(&l->p->bytes_received, ws_frame_bytes(len, !l->initiator),
                              memory_order_relaxed);
    if (first)
        br_buf_reset(&l->rx);
    if (br_buf_append(&l->rx, in, len)) {
        link_close(l, "frame_too_big state=%s", l->state == LINK_HS ? "handshake" : "link");
        return true;
    }
    if (!final)
        return true;
    l->last_rx_ns = now_ns();
    if (l->state == LINK_HS)
        on_handshake_msg(l);
    else
        on_frame(l);
    return true;
}

bool br_p2p_ws_writeable(br_p2p *p, void *user)
{
    (void)p;
    struct link *l = user;
    if (l->state != LINK_HS && l->state != LINK_UP)
        return false;
    pthread_mutex_lock(&l->mu);
    struct outmsg *om = l->q_head;
    if (om) {
        l->q_head = om->next;
        if (!l->q_head)
            l->q_tail = NULL;
        l->q_bytes -= om->len;
        pthread_cond_broadcast(&l->cv);
    }
    bool more = l->q_head != NULL;
    pthread_mutex_unlock(&l->mu);
    if (!om) {
        if (l->close_when_sent)
            link_close(l, "%s", l->close_when_sent);
        return true;
    }
    bool ok;
    if (om->raw) {
        ok = br_http_ws_send_binary(l->ws, om->data, om->len);
        atomic_fetch_add_explicit(&l->p->bytes_sent, ws_frame_bytes(om->len, l->initiator),
                                  memory_order_relaxed);
    } else {
        br_buf_reset(&l->sealed);
        br_err e = l->fr ? br_frame_seal(l->fr, om->data, om->len, &l->sealed) : BR_EINVAL;
        if (e) {
            br_free(om);
            link_close(l, "seal_failed err=%s", br_errname(e));
            return true;
        }
        ok = br_http_ws_send_binary(l->ws, l->sealed.data, l->sealed.len);
        atomic_fetch_add_explicit(&l->p->bytes_sent, ws_frame_bytes(l->sealed.len, l->initiator),
                                  memory_order_relaxed);
    }
    br_free(om);
    if (!ok)
        return false;
    if (more)
        br_http_ws_want_write(l->ws);
    else if (l->close_when_sent)
        link_close(l, "%s", l->close_when_sent);
    update_rx(l);
    return true;
}

/* ---- requests from endpoint threads ---- */

br_err p2p_request(struct link *l, struct br_wire_msg *m, struct br_wire_msg **reply,
                   struct br_errbuf *eb)
{
    struct pending pd = {0};
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return br_fail(eb, BR_ECLOSED, "link to %s closed", l->peer_short);
    }
    pd.rid = ++l->next_rid;
    pd.next = l->pend;
    l->pend = &pd;
    pthread_mutex_unlock(&l->mu);
    m->rid = pd.rid;
    br_buf b;
    br_buf_init(&b, BR_WIRE_MAX_MSG);
    br_err e = br_wire_encode(m, &b, eb);
    if (!e)
        e = enqueue(l, b.data, b.len, false, false);
    br_buf_fini(&b);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += P2P_REQUEST_TIMEOUT_MS / 1000;
    pthread_mutex_lock(&l->mu);
    while (!e && !pd.reply && !l->closed)
        if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) != 0 && !pd.reply)
            e = BR_ETIMEDOUT;
    for (struct pending **pp = &l->pend; *pp; pp = &(*pp)->next)
        if (*pp == &pd) {
            *pp = pd.next;
            break;
        }
    pthread_mutex_unlock(&l->mu);
    if (!e && !pd.reply)
        e = BR_ECLOSED;
    if (e) {
        br_wire_msg_free(pd.reply);
        if (e == BR_ETIMEDOUT || e == BR_ECLOSED)
            br_errbuf_set(eb, "%s to %s: %s", br_wire_type_name(m->type), l->peer_short,
                          e == BR_ETIMEDOUT ? "no reply in time" : "link closed");
        return e;
    }
    if (pd.reply->type == BR_WIRE_ERROR) {
        br_err code = pd.reply->u.error.code && pd.reply->u.error.code < BR_ERR_COUNT
                          ? (br_err)pd.reply->u.error.code
                          : BR_EPROTO;
        br_errbuf_set(eb, "peer %s: %s", l->peer_short, pd.reply->u.error.reason);
        br_wire_msg_free(pd.reply);
        return code;
    }
    *reply = pd.reply;
    return BR_OK;
}

/* ---- timers and wake-ups ---- */

static void dial(br_p2p *p, struct dialer *d)
{
    char addr[160];
    snprintf(addr, sizeof addr, "%s:%d", d->host, d->port);
    struct link *l = link_new(p, true, addr);
    if (!l) {
        d->next_try_ns = now_ns() + (uint64_t)DIAL_MAX_MS * 1000000ull;
        return;
    }
    l->dialer = d;
    d->cur = l;
    if (br_http_ws_connect(p->o.http, d->host, d->port, P2P_PATH, l))
        link_gone(l);
}

void br_p2p_on_tick(br_p2p *p)
{
    uint64_t now = now_ns();
    uint64_t hb = (uint64_t)p->o.heartbeat_ms * 1000000ull;
    uint64_t to = (uint64_t)p->o.timeout_ms * 1000000ull;
    pthread_mutex_lock(&p->mu);
    struct link *first = p->links;
    pthread_mutex_unlock(&p->mu);
    for (struct link *l = first; l; l = l->next) {
        if (l->state == LINK_HS && l->ws && now - l->opened_ns > to) {
            link_close(l, "handshake_timeout");
        } else if (l->state == LINK_UP && now - l->last_rx_ns > to) {
            link_close(l, "heartbeat_timeout silent_ms=%llu",
                       (unsigned long long)((now - l->last_rx_ns) / 1000000ull));
        } else if (l->state == LINK_UP && now - l->last_ping_ns >= hb) {
            l->last_ping_ns = now;
            struct br_wire_msg m = {.type = BR_WIRE_PING, .rid = 0};
            m.u.ping.hlc = br_hlc_peek(br_store_clock(p->o.store));
            (void)send_msg(l, &m);
        }
    }
    pthread_mutex_lock(&p->mu);
    struct dialer *ds = p->stopping ? NULL : p->dialers;
    pthread_mutex_unlock(&p->mu);
    for (struct dialer *d = ds; d; d = d->next)
        if (!d->cur && now >= d->next_try_ns)
            dial(p, d);
}

void br_p2p_on_wake(br_p2p *p)
{
    pthread_mutex_lock(&p->mu);
    struct link *first = p->links;
    bool new_dialer = false;
    for (struct dialer *d = p->dialers; d; d = d->next)
        new_dialer = new_dialer || (!d->cur && d->next_try_ns == 0);
    pthread_mutex_unlock(&p->mu);
    for (struct link *l = first; l; l = l->next) {
        if (atomic_exchange(&l->want_write, false) && l->ws && l->state != LINK_GONE)
            br_http_ws_want_write(l->ws);
        if (l->state == LINK_UP)
            notify_watches(l);
    }
    if (new_dialer)
        br_p2p_on_tick(p);
}

void br_p2p_bytes(br_p2p *p, uint64_t *sent, uint64_t *received)
{
    *sent = atomic_load_explicit(&p->bytes_sent, memory_order_relaxed);
    *received = atomic_load_explicit(&p->bytes_received, memory_order_relaxed);
}

size_t br_p2p_link_count(const br_p2p *p)
{
    size_t n = 0;
    for (const struct link *l = p->links; l; l = l->next)
        n += l->state == LINK_UP && !l->close_when_sent;
    return n;
}

/* ---- static peers: dialers and their replications ---- */

static br_err parse_url(const char *url, char *host, size_t cap, int *port)
{
    if (strncmp(url, "ws://", 5) != 0)
        return BR_EINVAL;
    const char *h = url + 5, *c = strrchr(h, ':');
    if (!c || c == h || (size_t)(c - h) >= cap)
        return BR_EINVAL;
    char *end = NULL;
    long n = strtol(c + 1, &end, 10);
    if (n <= 0 || n > 65535 || (*end && strcmp(end, "/") != 0 && strcmp(end, P2P_PATH) != 0))
        return BR_EINVAL;
    memcpy(host, h, (size_t)(c - h));
    host[c - h] = '\0';
    *port = (int)n;
    return BR_OK;
}

/* The dialer for url, made if missing. Caller holds p->mu. */
static br_err dialer_get(br_p2p *p, const char *url, struct dialer **out)
{
    for (struct dialer *d = p->dialers; d; d = d->next)
        if (strcmp(d->url, url) == 0) {
            *out = d;
            return BR_OK;
        }
    struct dialer *d = br_calloc(1, sizeof *d);
    if (!d)
        return BR_ENOMEM;
    d->p = p;
    snprintf(d->url, sizeof d->url, "%s", url);
    if (parse_url(url, d->host, sizeof d->host, &d->port)) {
        br_free(d);
        return BR_EINVAL;
    }
    d->next = p->dialers;
    p->dialers = d;
    *out = d;
    return BR_OK;
}

static void *rep_main(void *arg)
{
    struct repthread *rt = arg;
    struct dialer *d = rt->d;
    br_p2p *p = d->p;
    const char *dir = rt->pull ? "pull" : "push";
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        struct link *l = d->ready;
        if (!l) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        p2p_link_ref(l);
        pthread_mutex_unlock(&p->mu);
        struct br_errbuf eb = {{0}};
        struct br_endpoint *local = NULL, *peer = NULL;
        struct br_endpoint_local_opts lo = {.node = p->self_text, .sync = BR_SYNC_NONE};
        br_rep *r = NULL;
        br_err e = br_endpoint_local_new(p->o.store, rt->db, &lo, &local, &eb);
        if (!e)
            e = p2p_endpoint_new(l, rt->db, &peer);
        struct br_rep_opts ro = {.continuous = true};
        if (!e)
            e = br_rep_new(rt->pull ? peer : local, rt->pull ? local : peer, &ro, &r, &eb);
        if (!e) {
            pthread_mutex_lock(&p->mu);
            bool stop = p->stopping;
            rt->cur = stop ? NULL : r;
            pthread_mutex_unlock(&p->mu);
            if (!stop) {
                br_log(BR_LOG_INFO, TAG, "event=replication_start db=%s dir=%s peer=%s", rt->db,
                       dir, l->peer_short);
                e = br_rep_run(r, &eb);
            }
            pthread_mutex_lock(&p->mu);
            rt->cur = NULL;
            pthread_mutex_unlock(&p->mu);
        }
        if (e)
            br_log(BR_LOG_INFO, TAG, "event=replication_stopped db=%s dir=%s err=%s reason=\"%s\"",
                   rt->db, dir, br_errname(e), eb.msg);
        br_rep_free(r);
        br_endpoint_free(peer);
        br_endpoint_free(local);
        pthread_mutex_lock(&p->mu);
        /* the same link still up after an error: wait a little before trying again */
        if (e && d->ready == l && !p->stopping) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_sec += 1;
            pthread_cond_timedwait(&p->cv, &p->mu, &dl);
        }
        pthread_mutex_unlock(&p->mu);
        p2p_link_unref(l);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

br_err br_p2p_add_peer(br_p2p *p, const char *url, const char *const *dbs, size_t n,
                       struct br_errbuf *eb)
{
    for (size_t i = 0; i < n; i++) {
        br_err e = br_store_db_create(p->o.store, dbs[i], eb);
        if (e && e != BR_EEXIST)
            return e;
    }
    pthread_mutex_lock(&p->mu);
    struct dialer *d = NULL;
    br_err e = dialer_get(p, url, &d);
    pthread_mutex_unlock(&p->mu);
    if (e)
        return br_fail(eb, e, "peer %s: give ws://HOST:PORT", url);
    struct repthread *v = br_realloc(d->reps, (d->n_reps + 2 * n) * sizeof *v);
    if (!v)
        return BR_ENOMEM;
    d->reps = v;
    size_t base = d->n_reps;
    for (size_t i = 0; i < 2 * n; i++) {
        struct repthread *rt = &v[base + i];
        memset(rt, 0, sizeof *rt);
        rt->d = d;
        rt->pull = i % 2 == 0;
        snprintf(rt->db, sizeof rt->db, "%s", dbs[i / 2]);
    }
    /* thread arguments point into d->reps: start them once it stops moving */
    for (size_t i = 0; i < 2 * n; i++) {
        struct repthread *rt = &v[base + i];
        if (pthread_create(&rt->t, NULL, rep_main, rt) != 0)
            return br_fail(eb, BR_ENOMEM, "cannot start a replication thread");
        rt->started = true;
        d->n_reps++;
    }
    br_log(BR_LOG_INFO, TAG, "event=peer_added url=%s dbs=%zu", url, n);
    return BR_OK;
}

br_err br_p2p_endpoint_open(br_p2p *p, const char *url_or_nodeid, const char *db,
                            struct br_endpoint **out, struct br_errbuf *eb)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += OPEN_WAIT_MS / 1000;
    bool by_url = strncmp(url_or_nodeid, "ws://", 5) == 0;
    struct br_node_id id;
    if (!by_url && br_nodeid_parse(url_or_nodeid, strlen(url_or_nodeid), &id, eb))
        return BR_EINVAL;
    struct link *l = NULL;
    br_err e = BR_OK;
    struct dialer *d = NULL;
    pthread_mutex_lock(&p->mu);
    if (by_url) {
        e = dialer_get(p, url_or_nodeid, &d);
        if (e)
            br_errbuf_set(eb, "peer %s: give ws://HOST:PORT", url_or_nodeid);
    }
    unsigned fails0 = d ? d->fails_seen : 0;
    bool woke = false;
    while (!e && !l) {
        if (p->stopping) {
            e = BR_ECLOSED;
            break;
        }
        if (d) {
            l = d->ready;
            if (!l && d->fails_seen != fails0) {
                e = br_fail(eb, BR_ECLOSED, "could not link to %s", url_or_nodeid);
                break;
            }
        } else {
            for (struct link *k = p->links; k && !l; k = k->next)
                if (k->state == LINK_UP && br_nodeid_equal(&k->peer, &id))
                    l = k;
        }
        if (l) {
            p2p_link_ref(l);
            break;
        }
        if (d && !woke) {
            woke = true;
            pthread_mutex_unlock(&p->mu);
            wake_loop(p);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) != 0)
            e = br_fail(eb, BR_ETIMEDOUT, "no link to %s", url_or_nodeid);
    }
    pthread_mutex_unlock(&p->mu);
    if (e)
        return e;
    /* a link found by id may not have said hello yet */
    pthread_mutex_lock(&l->mu);
    while (!l->ready && !l->closed)
        if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) != 0)
            break;
    bool ok = l->ready && !l->closed;
    pthread_mutex_unlock(&l->mu);
    if (!ok)
        e = br_fail(eb, BR_ECLOSED, "link to %s not ready", url_or_nodeid);
    if (!e)
        e = p2p_endpoint_new(l, db, out);
    p2p_link_unref(l);
    return e;
}

/* ---- for mesh.c ---- */

struct link *p2p_links(br_p2p *p)
{
    return p->links;
}

br_err p2p_send(struct link *l, const struct br_wire_msg *m)
{
    if (l->state != LINK_UP)
        return BR_ECLOSED;
    return send_msg(l, m);
}

void p2p_close(struct link *l, const char *reason)
{
    link_close(l, "%s", reason);
}

void p2p_close_flushed(struct link *l, const char *reason)
{
    if (l->state != LINK_UP && l->state != LINK_HS)
        return;
    pthread_mutex_lock(&l->mu);
    l->flushing = true; /* enqueue takes nothing more */
    bool empty = l->q_head == NULL;
    pthread_mutex_unlock(&l->mu);
    l->close_when_sent = reason ? reason : "closed";
    if (empty || !l->ws)
        link_close(l, "%s", l->close_when_sent);
    else
        br_http_ws_want_write(l->ws);
}

br_err p2p_dial(br_p2p *p, const char *host, int port, const char *expect_id)
{
    if (p->stopping)
        return BR_ECLOSED;
    char addr[160];
    snprintf(addr, sizeof addr, "%s:%d", host, port);
    struct link *l = link_new(p, true, addr);
    if (!l)
        return BR_ENOMEM;
    snprintf(l->expect, sizeof l->expect, "%s", expect_id ? expect_id : "");
    l->by_mesh = true;
    if (br_http_ws_connect(p->o.http, host, port, P2P_PATH, l)) {
        link_gone(l);
        return BR_EIO;
    }
    return BR_OK;
}

uint64_t p2p_now_ns(void)
{
    return now_ns();
}

uint64_t p2p_timeout_ns(const br_p2p *p)
{
    return (uint64_t)p->o.timeout_ms * 1000000ull;
}

br_store *p2p_store(br_p2p *p)
{
    return p->o.store;
}

void br_p2p_set_mesh(br_p2p *p, struct br_mesh *mesh)
{
    p->mesh = mesh;
}

/* ---- life ---- */

br_err br_p2p_new(const struct br_p2p_opts *o, br_p2p **out)
{
    br_p2p *p = br_calloc(1, sizeof *p);
    if (!p)
        return BR_ENOMEM;
    p->o = *o;
    if (!p->o.heartbeat_ms)
        p->o.heartbeat_ms = P2P_DEFAULT_HEARTBEAT_MS;
    if (!p->o.timeout_ms)
        p->o.timeout_ms = P2P_DEFAULT_TIMEOUT_MS;
    br_nodeid_format(br_identity_node_id(o->identity), p->self_text);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    *out = p;
    return BR_OK;
}

void br_p2p_stop(br_p2p *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    for (struct dialer *d = p->dialers; d; d = d->next)
        for (size_t i = 0; i < d->n_reps; i++)
            if (d->reps[i].cur)
                br_rep_cancel(d->reps[i].cur);
    for (struct link *l = p->links; l; l = l->next)
        mark_closed(l); /* requests in flight fail at once */
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (struct dialer *d = p->dialers; d; d = d->next)
        for (size_t i = 0; i < d->n_reps; i++)
            if (d->reps[i].started) {
                pthread_join(d->reps[i].t, NULL);
                d->reps[i].started = false;
            }
}

void br_p2p_free(br_p2p *p)
{
    if (!p)
        return;
    br_p2p_stop(p);
    while (p->links) /* only if the server did not close them */
        link_gone(p->links);
    for (struct dialer *d = p->dialers, *n; d; d = n) {
        n = d->next;
        br_free(d->reps);
        br_free(d);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    br_free(p);
}
