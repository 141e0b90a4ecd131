/* simnode.c — the simulated nodes: their environment, links, the network between them, the
 * gossip layer's policy and the pulls (see sim_int.h).
 *
 * The policy mirrors node/mesh.c and node/p2p.c message for message: on a new link both ends
 * say hello (their databases' heads) and exchange their whole member tables; every gossip
 * period a node sends a `peers` message and the digests that changed to `fanout` random links,
 * runs the failure detector's timers, sends indirect probes and dials members (mesh topology);
 * a node that serves `changes` of a database to a link announces each later commit of it there
 * at once (p2p's watches); a digest or hello naming a database starts a continuous pull of it
 * from that member, or wakes the one waiting. What p2p does below the messages (TCP,
 * WebSocket, the handshake, encryption) is the network model here: a message costs its
 * encoded size plus SIM_FRAME_OVERHEAD bytes, and arrives after latency, jitter, its
 * transmission time at the link's bandwidth and, for each lost packet, TCP's retransmission
 * timeout; a byte stream never loses, duplicates or reorders messages, so duplicated packets
 * cost bytes and reordered packets cost time, as they do under TCP. A network cut holds the
 * messages (TCP retransmits them after a heal) until the link's timeout kills the link. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/nodeid.h"
#include "barrel/rpc.h"

#include "sim_int.h"

#define PROBE_HELPERS 3
#define FULL_EXCHANGE_MIN_MS 2000
#define STATIC_DIAL_BASE_MS 500
#define STATIC_DIAL_MAX_MS 8000
#define SHORT_LINK_US 2000000ull /* mesh.c's SHORT_LINK_NS */
#define PULL_STACK (512u << 10)

/* ---- the environment of one node ---- */

static uint64_t env_wall(void *ctx)
{
    struct snode *nd = ctx;
    struct sim *s = nd->s;
    int64_t w = (int64_t)(SIM_EPOCH_MS + s->now_us / 1000) + nd->skew_ms;
    return (uint64_t)w;
}

static uint64_t env_mono(void *ctx)
{
    struct snode *nd = ctx;
    struct sim *s = nd->s;
    return s->now_us * 1000ull;
}

static void env_random(void *ctx, void *buf, size_t n)
{
    struct snode *nd = ctx;
    uint8_t *p = buf;
    while (n) {
        uint64_t r = sc_rand(&nd->rng);
        size_t k = n < 8 ? n : 8;
        memcpy(p, &r, k);
        p += k;
        n -= k;
    }
}

static br_err env_timer_add(void *ctx, uint64_t delay_ms, br_timer_fn fn, void *arg, uint64_t *id)
{
    (void)ctx;
    (void)delay_ms;
    (void)fn;
    (void)arg;
    (void)id;
    return BR_EINVAL; /* nothing the simulator runs sets timers through the env */
}

static void env_timer_cancel(void *ctx, uint64_t id)
{
    (void)ctx;
    (void)id;
}

/* ---- small helpers ---- */

/* uniform in [0, n) (n > 0) */
static uint64_t rnd_below(uint64_t *st, uint64_t n)
{
    return n ? sc_rand(st) % n : 0;
}

static double rnd_unit(uint64_t *st)
{
    return (double)(sc_rand(st) >> 11) * (1.0 / 9007199254740992.0);
}

static int dbi_of(struct sim *s, const char *name)
{
    for (size_t i = 0; i < s->sc->n_dbs; i++)
        if (strcmp(s->sc->dbs[i], name) == 0)
            return (int)i;
    return -1;
}

static int node_of_id(struct sim *s, const char *id)
{
    for (unsigned i = 0; i < s->n; i++)
        if (strcmp(s->nodes[i].id, id) == 0)
            return (int)i;
    return -1;
}

static int node_of_addr(struct sim *s, const char *addr)
{
    unsigned a, b, c, d, port;
    if (sscanf(addr, "%u.%u.%u.%u:%u", &a, &b, &c, &d, &port) != 5 || a != 10)
        return -1;
    unsigned i = (b << 16) | (c << 8) | d;
    return i < s->n ? (int)i : -1;
}

static bool reachable(struct sim *s, unsigned a, unsigned b)
{
    if (!s->cut)
        return true;
    uint8_t pa = s->part[a], pb = s->part[b];
    return !(pa && pb && pa != pb);
}

static uint64_t one_way_us(struct sim *s)
{
    const struct sc_net *n = &s->sc->net;
    uint64_t us = n->latency_ms * 1000;
    if (n->jitter_ms)
        us += rnd_below(&s->net_rng, n->jitter_ms * 1000);
    return us;
}

/* ---- links ---- */

static void node_add_link(struct snode *nd, struct slink *lk)
{
    if (nd->n_links == nd->cap_links) {
        size_t cap = nd->cap_links ? nd->cap_links * 2 : 8;
        struct slink **v = br_realloc(nd->links, cap * sizeof *v);
        if (!v)
            abort(); /* the simulator cannot go on without memory */
        nd->links = v;
        nd->cap_links = cap;
    }
    nd->links[nd->n_links++] = lk;
}

static void node_drop_link(struct snode *nd, struct slink *lk)
{
    for (size_t i = 0; i < nd->n_links; i++)
        if (nd->links[i] == lk) {
            memmove(&nd->links[i], &nd->links[i + 1], (nd->n_links - i - 1) * sizeof lk);
            nd->n_links--;
            return;
        }
}

static int side_of(const struct slink *lk, unsigned node)
{
    return lk->n[0] == node ? 0 : 1;
}

static struct slink *link_between(struct snode *nd, unsigned peer)
{
    for (size_t i = 0; i < nd->n_links; i++) {
        struct slink *lk = nd->links[i];
        if (!lk->dead && lk->n[1 - side_of(lk, nd->idx)] == peer)
            return lk;
    }
    return NULL;
}

static size_t up_links(struct snode *nd, struct slink **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < nd->n_links && k < max; i++)
        if (nd->links[i]->up && !nd->links[i]->dead)
            out[k++] = nd->links[i];
    return k;
}

/* ---- the network ---- */

struct held {
    struct held *next;
    size_t len;
    uint8_t data[];
};

struct ev_msg {
    struct sim *s;
    struct slink *lk;
    uint64_t gen;
    int to; /* receiving side */
    uint64_t epoch;
    size_t len;
    uint8_t data[];
};

static void on_message(struct sim *s, struct slink *lk, int to, struct br_wire_msg *m);

static void ev_deliver(void *arg)
{
    struct ev_msg *e = arg;
    struct sim *s = e->s;
    struct slink *lk = e->lk;
    struct snode *to = &s->nodes[lk->n[e->to]];
    if (!s->stopping && !lk->dead && lk->up && to->up && to->epoch == e->epoch) {
        struct br_wire_msg *m = NULL;
        struct br_errbuf eb = {{0}};
        br_err err = br_wire_decode(e->data, e->len, &m, NULL, &eb);
        if (err) { /* our own encoder wrote it: a decoder that refuses it is a bug */
            fprintf(stderr, "barrel-sim: undecodable message (%s: %s)\n", br_errname(err), eb.msg);
            abort();
        }
        on_message(s, lk, e->to, m);
    }
    br_free(e);
}

static void schedule_delivery(struct sim *s, struct slink *lk, int from, const uint8_t *data,
                              size_t len, uint64_t send_us)
{
    struct sdir *d = &lk->dir[from];
    const struct sc_net *n = &s->sc->net;
    size_t wire = len + SIM_FRAME_OVERHEAD;
    uint64_t start = send_us > d->next_free_us ? send_us : d->next_free_us;
    uint64_t tx = n->bandwidth_bps ? (uint64_t)wire * 1000000ull / n->bandwidth_bps : 0;
    d->next_free_us = start + tx;
    uint64_t extra = 0;
    size_t packets = (wire + SIM_MSS - 1) / SIM_MSS;
    if (n->loss > 0 || n->dup > 0 || n->reorder > 0) {
        for (size_t i = 0; i < packets; i++) {
            uint64_t x = 0, rto = SIM_RTO_US;
            while (n->loss > 0 && rnd_unit(&s->net_rng) < n->loss && rto < 60000000ull) {
                x += rto; /* lost: retransmitted after the timeout, which doubles */
                rto *= 2;
                s->bytes += SIM_MSS;
            }
            if (n->reorder > 0 && rnd_unit(&s->net_rng) < n->reorder)
                x += rnd_below(&s->net_rng, (n->latency_ms + n->jitter_ms + 1) * 1000);
            if (n->dup > 0 && rnd_unit(&s->net_rng) < n->dup)
                s->bytes += SIM_MSS < wire ? SIM_MSS : wire;
            if (x > extra)
                extra = x;
        }
    }
    uint64_t at = start + tx + one_way_us(s) + extra;
    if (at < d->last_arrival_us)
        at = d->last_arrival_us; /* a byte stream delivers in order */
    d->last_arrival_us = at;
    struct ev_msg *e = br_malloc(sizeof *e + len);
    if (!e)
        abort();
    e->s = s;
    e->lk = lk;
    e->gen = lk->gen;
    e->to = 1 - from;
    e->epoch = s->nodes[lk->n[1 - from]].epoch;
    e->len = len;
    memcpy(e->data, data, len);
    sim_at(s, at, ev_deliver, e);
}

/* Send m from node `from_node` over lk. */
static void send_msg(struct sim *s, struct slink *lk, unsigned from_node,
                     const struct br_wire_msg *m)
{
    if (lk->dead || !lk->up)
        return;
    int from = side_of(lk, from_node);
    br_buf b;
    br_buf_init(&b, BR_WIRE_MAX_MSG);
    struct br_errbuf eb = {{0}};
    br_err e = br_wire_encode(m, &b, &eb);
    if (e) {
        fprintf(stderr, "barrel-sim: cannot encode %s (%s: %s)\n", br_wire_type_name(m->type),
                br_errname(e), eb.msg);
        abort();
    }
    struct snode *nd = &s->nodes[from_node];
    nd->msgs_sent++;
    nd->bytes_sent += b.len + SIM_FRAME_OVERHEAD;
    s->msgs++;
    s->bytes += b.len + SIM_FRAME_OVERHEAD;
    if (s->trace)
        sim_trace(s, "n%u send %s to=n%u bytes=%zu", from_node, br_wire_type_name(m->type),
                  lk->n[1 - from], b.len);
    if (!reachable(s, lk->n[0], lk->n[1])) {
        struct held *h = br_malloc(sizeof *h + b.len);
        if (!h)
            abort();
        h->next = NULL;
        h->len = b.len;
        memcpy(h->data, b.data, b.len);
        struct sdir *d = &lk->dir[from];
        if (d->held_tail)
            d->held_tail->next = h;
        else
            d->held = h;
        d->held_tail = h;
    } else {
        schedule_delivery(s, lk, from, b.data, b.len, s->now_us);
    }
    br_buf_fini(&b);
}

static void drop_held(struct slink *lk)
{
    for (int i = 0; i < 2; i++) {
        for (struct held *h = lk->dir[i].held, *n; h; h = n) {
            n = h->next;
            br_free(h);
        }
        lk->dir[i].held = lk->dir[i].held_tail = NULL;
    }
}

/* ---- pulls: the thread handshake ---- */

/* Pull thread: hand control back to the main loop until it resumes us. */
static void park(struct spull *p, enum pull_state st)
{
    struct sim *s = p->s;
    pthread_mutex_lock(&s->mu);
    p->st = st;
    pthread_cond_signal(&s->main_cv);
    while (!p->go)
        pthread_cond_wait(&p->cv, &s->mu);
    p->go = false;
    pthread_mutex_unlock(&s->mu);
}

/* Main loop: let p run until it parks again or ends. */
static void resume(struct spull *p)
{
    struct sim *s = p->s;
    pthread_mutex_lock(&s->mu);
    p->st = PS_RUN;
    p->go = true;
    pthread_cond_signal(&p->cv);
    while (p->st == PS_RUN)
        pthread_cond_wait(&s->main_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

/* Join and free the node's pulls that ended. */
static void reap(struct snode *nd)
{
    for (struct spull **pp = &nd->pulls; *pp;) {
        struct spull *p = *pp;
        if (p->st != PS_DONE) {
            pp = &p->next;
            continue;
        }
        pthread_join(p->t, NULL);
        pthread_cond_destroy(&p->cv);
        *pp = p->next;
        br_free(p);
    }
}

/* End every pull of nd (on link lk only, when given): each parked call or wait fails. */
static void close_pulls(struct sim *s, struct snode *nd, struct slink *lk)
{
    (void)s;
    for (struct spull *p = nd->pulls; p; p = p->next) {
        if (lk && p->lk != lk)
            continue;
        p->closed = true;
        if (p->st == PS_CALL || p->st == PS_WAIT) {
            p->res = BR_ECLOSED;
            p->reply = NULL;
            resume(p);
        }
    }
    reap(nd);
}

/* ---- pulls: the transport (runs on the pull's thread) ---- */

static br_err t_call(void *ctx, struct br_wire_msg *req, struct br_wire_msg **reply,
                     struct br_errbuf *eb)
{
    struct spull *p = ctx;
    struct sim *s = p->s;
    if (p->closed)
        return br_fail(eb, BR_ECLOSED, "the link is closed");
    req->rid = ++s->rid;
    p->rid = req->rid;
    p->reply = NULL;
    p->res = BR_OK;
    p->reqs++;
    send_msg(s, p->lk, p->node, req);
    park(p, PS_CALL);
    if (p->res)
        return br_fail(eb, p->res, "%s",
                       p->res == BR_ECLOSED ? "the link is closed" : "peer error");
    struct br_wire_msg *r = p->reply;
    p->reply = NULL;
    if (r->type == BR_WIRE_ERROR) {
        uint64_t c = r->u.error.code;
        br_err err = c > 0 && c < BR_ERR_COUNT ? (br_err)c : BR_EPROTO;
        br_errbuf_set(eb, "peer: %s", r->u.error.reason ? r->u.error.reason : "error");
        br_wire_msg_free(r);
        return err;
    }
    if (req->type == BR_WIRE_GET_REVS && r->type == BR_WIRE_GET_REVS_REPLY) {
        size_t k = 0;
        for (size_t i = 0; i < req->u.get_revs.n; i++)
            for (size_t j = 0; j < req->u.get_revs.docs[i].n_revs; j++, k++)
                if (k < r->u.get_revs_reply.n && !r->u.get_revs_reply.docs[k].missing)
                    sim_note_arrival(s, p->node, p->dbi, req->u.get_revs.docs[i].id,
                                     req->u.get_revs.docs[i].id_len,
                                     &req->u.get_revs.docs[i].revs[j]);
    }
    *reply = r;
    return BR_OK;
}

static struct br_hlc t_remote_last(void *ctx, const char *db)
{
    struct spull *p = ctx;
    int i = dbi_of(p->s, db);
    if (i < 0 || !p->lk->side[p->side].recv_known[i])
        return BR_HLC_MIN;
    return p->lk->side[p->side].recv_last[i];
}

struct ev_wait {
    struct sim *s;
    unsigned node;
    uint64_t epoch, seq;
};

static void ev_wait_timeout(void *arg)
{
    struct ev_wait *w = arg;
    struct snode *nd = &w->s->nodes[w->node];
    if (nd->up && nd->epoch == w->epoch)
        for (struct spull *p = nd->pulls; p; p = p->next)
            if (p->st == PS_WAIT && p->wait_seq == w->seq) {
                p->res = BR_ETIMEDOUT;
                resume(p);
                reap(nd);
                break;
            }
    br_free(w);
}

static br_err t_wait(void *ctx, const char *db, struct br_hlc since, uint64_t timeout_ms)
{
    struct spull *p = ctx;
    struct sim *s = p->s;
    if (p->closed)
        return BR_ECLOSED;
    if (br_hlc_cmp(t_remote_last(ctx, db), since) > 0)
        return BR_OK;
    p->wait_since = since;
    p->wait_seq = ++s->rid;
    struct ev_wait *w = br_malloc(sizeof *w);
    if (!w)
        abort();
    *w = (struct ev_wait){s, p->node, s->nodes[p->node].epoch, p->wait_seq};
    sim_at(s, s->now_us + timeout_ms * 1000, ev_wait_timeout, w);
    p->res = BR_OK;
    park(p, PS_WAIT);
    return p->res;
}

static void *pull_main(void *arg)
{
    struct spull *p = arg;
    struct sim *s = p->s;
    struct snode *nd = &s->nodes[p->node];
    pthread_mutex_lock(&s->mu);
    while (!p->go)
        pthread_cond_wait(&p->cv, &s->mu);
    p->go = false;
    pthread_mutex_unlock(&s->mu);

    struct br_errbuf eb = {{0}};
    struct br_endpoint *local = NULL, *peer = NULL;
    struct br_endpoint_local_opts lo = {.node = nd->id, .sync = BR_SYNC_NONE};
    const char *db = s->sc->dbs[p->dbi];
    struct br_rpc_transport t = {
        .ctx = p, .call = t_call, .remote_last = t_remote_last, .wait = t_wait};
    char name[BR_ENDPOINT_NAME_MAX];
    snprintf(name, sizeof name, "n%u/%s", p->peer, db);
    struct br_rep_opts ro = {.continuous = true, .serial = true, .env = &nd->env};
    if (nd->n_paths[p->dbi]) {
        ro.filter.paths = nd->paths[p->dbi];
        ro.filter.n_paths = nd->n_paths[p->dbi];
    }
    br_err e = br_endpoint_local_new(nd->store, db, &lo, &local, &eb);
    if (!e)
        e = br_endpoint_rpc_new(&t, db, name, &peer);
    if (!e)
        e = br_rep_new(peer, local, &ro, &p->rep, &eb);
    if (!e)
        e = br_rep_run(p->rep, &eb);
    if (e && e != BR_ECLOSED)
        s->pull_errors++;
    if (s->trace)
        sim_trace(s, "n%u pull_end from=n%u db=%s err=%s reqs=%llu", p->node, p->peer, db,
                  br_errname(e), (unsigned long long)p->reqs);
    br_rep_free(p->rep);
    p->rep = NULL;
    br_endpoint_free(peer);
    br_endpoint_free(local);
    pthread_mutex_lock(&s->mu);
    p->st = PS_DONE;
    pthread_cond_signal(&s->main_cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static struct spull *find_pull(struct snode *nd, struct slink *lk, unsigned dbi)
{
    for (struct spull *p = nd->pulls; p; p = p->next)
        if (p->lk == lk && p->dbi == dbi && p->st != PS_DONE)
            return p;
    return NULL;
}

static void start_pull(struct sim *s, struct snode *nd, struct slink *lk, unsigned dbi)
{
    if (find_pull(nd, lk, dbi))
        return;
    struct spull *p = br_calloc(1, sizeof *p);
    if (!p)
        abort();
    p->s = s;
    p->node = nd->idx;
    p->side = side_of(lk, nd->idx);
    p->peer = lk->n[1 - p->side];
    p->dbi = dbi;
    p->lk = lk;
    pthread_cond_init(&p->cv, NULL);
    p->st = PS_RUN;
    p->go = true;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, PULL_STACK);
    pthread_mutex_lock(&s->mu);
    if (pthread_create(&p->t, &at, pull_main, p) != 0) {
        fprintf(stderr, "barrel-sim: cannot start a pull thread\n");
        abort();
    }
    pthread_attr_destroy(&at);
    pthread_cond_signal(&p->cv);
    while (p->st == PS_RUN)
        pthread_cond_wait(&s->main_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    p->next = nd->pulls;
    nd->pulls = p;
    s->pulls_started++;
    if (s->trace)
        sim_trace(s, "n%u pull_start from=n%u db=%s", nd->idx, p->peer, s->sc->dbs[dbi]);
    reap(nd);
}

/* ---- gossip and digests ---- */

static void send_peers(struct sim *s, struct snode *nd, struct slink *lk, bool full)
{
    struct br_wire_peer e[BR_GOSSIP_MAX_ENTRIES];
    size_t n = full ? br_gossip_all(nd->g, e, BR_GOSSIP_MAX_ENTRIES)
                    : br_gossip_entries(nd->g, e, BR_GOSSIP_MAX_ENTRIES, 1, sc_rand(&nd->rng));
    struct br_wire_msg m = {.type = BR_WIRE_PEERS};
    m.u.peers.peers = e;
    m.u.peers.n = n;
    m.u.peers.mhash = br_gossip_mhash(nd->g);
    send_msg(s, lk, nd->idx, &m);
    if (full)
        lk->side[side_of(lk, nd->idx)].last_full_ms = sim_now_ms(s);
}

/* Send the digests of the databases in `which` (all when NULL) that changed since lk last
 * heard them (all of them with force); as a hello when hello is set. */
static void send_digests(struct sim *s, struct snode *nd, struct slink *lk, const bool *which,
                         bool force, bool hello)
{
    struct br_wire_dbdigest d[SC_MAX_DBS];
    size_t k = 0;
    struct lside *ls = &lk->side[side_of(lk, nd->idx)];
    for (size_t i = 0; i < s->sc->n_dbs; i++) {
        if (which && !which[i])
            continue;
        struct br_db_digest dg;
        if (br_db_digest(nd->dbs[i], &dg))
            continue;
        if (!force && ls->sent_known[i] && br_hlc_cmp(ls->sent_last[i], dg.last) == 0 &&
            memcmp(ls->sent_hash[i], dg.set_hash, 16) == 0)
            continue;
        ls->sent_known[i] = true;
        ls->sent_last[i] = dg.last;
        memcpy(ls->sent_hash[i], dg.set_hash, 16);
        d[k].name = s->sc->dbs[i];
        d[k].digest = dg;
        k++;
    }
    if (!k && !hello)
        return;
    struct br_wire_msg m = {.type = hello ? BR_WIRE_HELLO : BR_WIRE_DIGEST};
    if (hello) {
        m.u.hello.version = BR_WIRE_VERSION;
        m.u.hello.node = nd->id;
        m.u.hello.hlc = br_hlc_peek(br_store_clock(nd->store));
        m.u.hello.dbs = d;
        m.u.hello.n_dbs = k;
    } else {
        m.u.digest.dbs = d;
        m.u.digest.n_dbs = k;
    }
    send_msg(s, lk, nd->idx, &m);
}

static void trace_member_changes(struct sim *s, struct snode *nd, uint64_t now, const char *via)
{
    if (!s->trace)
        return;
    for (size_t i = 0; i < br_gossip_count(nd->g); i++) {
        const struct br_gossip_member *mm = br_gossip_at(nd->g, i);
        if (mm->state_since_ms == now)
            sim_trace(s, "n%u member n%d %s via=%s", nd->idx, node_of_id(s, mm->id),
                      br_member_state_name(mm->state), via);
    }
}

/* A digest or hello from the peer at the other end of lk. */
static void on_heads(struct sim *s, struct snode *nd, struct slink *lk,
                     const struct br_wire_dbdigest *d, size_t n)
{
    struct lside *ls = &lk->side[side_of(lk, nd->idx)];
    for (size_t i = 0; i < n; i++) {
        int dbi = dbi_of(s, d[i].name);
        if (dbi < 0)
            continue;
        if (!ls->recv_known[dbi] || br_hlc_cmp(d[i].digest.last, ls->recv_last[dbi]) > 0)
            ls->recv_last[dbi] = d[i].digest.last;
        memcpy(ls->recv_hash[dbi], d[i].digest.set_hash, 16);
        ls->recv_known[dbi] = true;
        struct spull *p = find_pull(nd, lk, (unsigned)dbi);
        if (!p) {
            start_pull(s, nd, lk, (unsigned)dbi);
        } else if (p->st == PS_WAIT && br_hlc_cmp(ls->recv_last[dbi], p->wait_since) > 0) {
            p->res = BR_OK;
            resume(p);
            reap(nd);
        }
    }
}

static void serve(struct sim *s, struct snode *nd, struct slink *lk, struct br_wire_msg *req)
{
    br_wire_arena a = {0};
    struct br_wire_msg r = {.rid = req->rid};
    struct br_errbuf eb = {{0}};
    if (req->type == BR_WIRE_CHANGES) {
        int dbi = dbi_of(s, req->u.changes.db);
        if (dbi >= 0)
            lk->side[side_of(lk, nd->idx)].watch[dbi] = true;
    }
    br_err e = br_rpc_serve(nd->store, nd->id, req, &a, &r, &eb);
    if (e) {
        memset(&r, 0, sizeof r);
        br_rpc_error_reply(req, e, eb.msg[0] ? eb.msg : br_strerror(e), &r);
    }
    send_msg(s, lk, nd->idx, &r);
    br_wire_arena_fini(&a);
}

static void on_reply(struct sim *s, struct snode *nd, struct br_wire_msg *m)
{
    for (struct spull *p = nd->pulls; p; p = p->next)
        if (p->st == PS_CALL && p->rid == m->rid) {
            p->reply = m;
            p->res = BR_OK;
            resume(p);
            reap(nd);
            return;
        }
    (void)s;
    br_wire_msg_free(m); /* its pull is gone */
}

static void on_message(struct sim *s, struct slink *lk, int to, struct br_wire_msg *m)
{
    struct snode *nd = &s->nodes[lk->n[to]];
    unsigned from = lk->n[1 - to];
    struct snode *peer = &s->nodes[from];
    uint64_t now = sim_now_ms(s);
    if (s->trace)
        sim_trace(s, "n%u recv %s from=n%u", nd->idx, br_wire_type_name(m->type), from);
    switch (m->type) {
    case BR_WIRE_HELLO:
        on_heads(s, nd, lk, m->u.hello.dbs, m->u.hello.n_dbs);
        break;
    case BR_WIRE_DIGEST:
        on_heads(s, nd, lk, m->u.digest.dbs, m->u.digest.n_dbs);
        break;
    case BR_WIRE_PEERS: {
        struct br_gossip_merge_result r;
        struct br_hlc inc;
        if (br_hlc_now(br_store_clock(nd->store), &inc))
            inc = br_hlc_peek(br_store_clock(nd->store));
        br_err e = br_gossip_merge(nd->g, peer->id, m->u.peers.peers, m->u.peers.n, now,
                                   nd->env.wall_ms(nd->env.ctx), inc, &r);
        if (!e && r.changed)
            trace_member_changes(s, nd, now, peer->id[0] ? "gossip" : "?");
        struct lside *ls = &lk->side[to];
        if (!e && m->u.peers.mhash && m->u.peers.mhash != br_gossip_mhash(nd->g) &&
            now - ls->last_full_ms >= FULL_EXCHANGE_MIN_MS)
            send_peers(s, nd, lk, true);
        break;
    }
    case BR_WIRE_PROBE: {
        bool alive = false;
        int t = node_of_id(s, m->u.probe.node);
        if (t >= 0) {
            struct slink *k = link_between(nd, (unsigned)t);
            alive = k && k->up && reachable(s, nd->idx, (unsigned)t) && s->nodes[t].up;
        }
        struct br_wire_msg r = {.type = BR_WIRE_PROBE_REPLY, .rid = m->rid};
        r.u.probe_reply.alive = alive;
        send_msg(s, lk, nd->idx, &r);
        break;
    }
    case BR_WIRE_PROBE_REPLY:
        for (size_t i = 0; i < 16; i++)
            if (nd->probes[i].rid && nd->probes[i].rid == m->rid) {
                br_gossip_probe_answer(nd->g, nd->probes[i].target, m->u.probe_reply.alive, now);
                nd->probes[i].rid = 0;
                break;
            }
        break;
    case BR_WIRE_PING: {
        br_err ce = br_hlc_update(br_store_clock(nd->store), m->u.ping.hlc, NULL);
        if (ce && s->trace) /* too far ahead: not adopted, as p2p does */
            sim_trace(s, "n%u clock_not_merged from=n%u", nd->idx, from);
        struct br_wire_msg r = {.type = BR_WIRE_PONG, .rid = m->rid};
        r.u.ping.hlc = br_hlc_peek(br_store_clock(nd->store));
        send_msg(s, lk, nd->idx, &r);
        break;
    }
    case BR_WIRE_CHANGES:
    case BR_WIRE_REVSDIFF:
    case BR_WIRE_GET_REVS:
    case BR_WIRE_PUT_REVS:
    case BR_WIRE_LOCAL_GET:
    case BR_WIRE_LOCAL_PUT:
        serve(s, nd, lk, m);
        break;
    case BR_WIRE_CHANGES_REPLY:
    case BR_WIRE_REVSDIFF_REPLY:
    case BR_WIRE_GET_REVS_REPLY:
    case BR_WIRE_PUT_REVS_REPLY:
    case BR_WIRE_LOCAL_GET_REPLY:
    case BR_WIRE_LOCAL_PUT_REPLY:
    case BR_WIRE_PONG:
    case BR_WIRE_ERROR:
        on_reply(s, nd, m);
        return; /* on_reply owns m */
    default:
        break;
    }
    br_wire_msg_free(m);
}

/* ---- link life ---- */

static void link_ready(struct sim *s, struct snode *nd, struct slink *lk)
{
    int sd = side_of(lk, nd->idx);
    struct snode *peer = &s->nodes[lk->n[1 - sd]];
    uint64_t now = sim_now_ms(s);
    if (br_gossip_note(nd->g, peer->id, sd == 0 ? peer->addr : NULL, now) && s->trace)
        sim_trace(s, "n%u member_table_full", nd->idx);
    br_gossip_link_up(nd->g, peer->id, now);
    send_digests(s, nd, lk, NULL, true, true);
    send_peers(s, nd, lk, true);
}

/* nd's end of lk is gone (the link broke, or the peer's process died). */
static void link_gone(struct sim *s, struct snode *nd, struct slink *lk)
{
    close_pulls(s, nd, lk);
    node_drop_link(nd, lk);
    if (!nd->up)
        return;
    struct snode *peer = &s->nodes[lk->n[1 - side_of(lk, nd->idx)]];
    if (br_gossip_link_down(nd->g, peer->id, sim_now_ms(s)) && s->trace)
        sim_trace(s, "n%u probe n%u reason=link_lost", nd->idx, peer->idx);
    /* a dialled link the member closed at once counts as a failed dial (mesh.c) */
    if (lk->by_mesh && side_of(lk, nd->idx) == 0 && s->now_us - lk->up_us < SHORT_LINK_US)
        br_gossip_dial_failed(nd->g, peer->id, sim_now_ms(s));
}

struct ev_link {
    struct sim *s;
    struct slink *lk;
    unsigned node;
    uint64_t epoch, part_gen;
};

static void kill_link(struct sim *s, struct slink *lk, const char *why)
{
    if (lk->dead)
        return;
    bool was_up = lk->up;
    lk->dead = true;
    lk->up = false;
    drop_held(lk);
    s->links_down += was_up;
    if (s->trace)
        sim_trace(s, "link n%u-n%u down reason=%s", lk->n[0], lk->n[1], why);
    for (int i = 0; i < 2; i++) {
        struct snode *nd = &s->nodes[lk->n[i]];
        if (nd->up)
            link_gone(s, nd, lk);
    }
}

/* One end learns, a little later, that the other end's process died (TCP RST). */
static void ev_peer_gone(void *arg)
{
    struct ev_link *e = arg;
    struct snode *nd = &e->s->nodes[e->node];
    if (nd->up && nd->epoch == e->epoch)
        link_gone(e->s, nd, e->lk);
    br_free(e);
}

static void ev_cut_check(void *arg)
{
    struct ev_link *e = arg;
    struct sim *s = e->s;
    if (!s->stopping && !e->lk->dead && s->part_gen == e->part_gen &&
        !reachable(s, e->lk->n[0], e->lk->n[1]))
        kill_link(s, e->lk, "timeout");
    br_free(e);
}

void sim_partition_changed(struct sim *s)
{
    s->part_gen++;
    for (struct slink *lk = s->links; lk; lk = lk->next) {
        if (lk->dead)
            continue;
        if (!reachable(s, lk->n[0], lk->n[1])) {
            struct ev_link *e = br_calloc(1, sizeof *e);
            if (!e)
                abort();
            e->s = s;
            e->lk = lk;
            e->part_gen = s->part_gen;
            sim_at(s, s->now_us + s->sc->net.timeout_ms * 1000, ev_cut_check, e);
        } else {
            /* healed: TCP retransmits what it held, in order */
            for (int i = 0; i < 2; i++) {
                struct held *h = lk->dir[i].held;
                lk->dir[i].held = lk->dir[i].held_tail = NULL;
                while (h) {
                    struct held *n = h->next;
                    if (lk->up)
                        schedule_delivery(s, lk, i, h->data, h->len, s->now_us + SIM_RTO_US);
                    br_free(h);
                    h = n;
                }
            }
        }
    }
}

void sim_cut_link(struct sim *s, unsigned a, unsigned b)
{
    struct slink *lk = link_between(&s->nodes[a], b);
    if (lk)
        kill_link(s, lk, "cut");
}

static void ev_limit_close(void *arg)
{
    struct ev_link *e = arg;
    struct sim *s = e->s;
    struct slink *lk = e->lk;
    if (!s->stopping && !lk->dead) {
        kill_link(s, lk, "link_limit");
    }
    br_free(e);
}

struct ev_dial {
    struct sim *s;
    struct slink *lk;
    uint64_t epoch;
};

static void ev_dial_done(void *arg)
{
    struct ev_dial *e = arg;
    struct sim *s = e->s;
    struct slink *lk = e->lk;
    struct snode *a = &s->nodes[lk->n[0]], *b = &s->nodes[lk->n[1]];
    br_free(e);
    if (lk->dead)
        return;
    if (!a->up) {
        lk->dead = true;
        return;
    }
    uint64_t now = sim_now_ms(s);
    const char *fail = NULL;
    if (!b->up)
        fail = "refused";
    else if (!reachable(s, a->idx, b->idx))
        fail = "timeout";
    bool over = false;
    if (!fail) {
        struct slink *ups[256];
        size_t n_up = up_links(b, ups, 256);
        over = n_up >= 2 * (size_t)s->sc->max_links && lk->by_mesh;
    }
    bool dup = !fail && link_between(b, a->idx);
    if (dup)
        fail = "duplicate_link";
    if (fail) {
        lk->dead = true;
        node_drop_link(a, lk);
        if (s->trace)
            sim_trace(s, "n%u dial n%u failed reason=%s", a->idx, b->idx, fail);
        if (!dup) {
            br_gossip_dial_failed(a->g, b->id, now);
            if (br_gossip_unreachable(a->g, b->id, now) && s->trace)
                sim_trace(s, "n%u probe n%u reason=unreachable", a->idx, b->idx);
        }
        return;
    }
    lk->up = true;
    lk->up_us = s->now_us;
    s->links_up++;
    node_add_link(b, lk);
    if (s->trace)
        sim_trace(s, "link n%u-n%u up%s", a->idx, b->idx, over ? " over_limit" : "");
    link_ready(s, a, lk);
    if (over) {
        /* Over its bound, the member still hands the newcomer its member table (so it can
         * dial others) and closes the link once that has gone out (mesh.c does the same):
         * the close reaches the newcomer right behind the message. */
        send_peers(s, b, lk, true);
        struct ev_link *c = br_calloc(1, sizeof *c);
        if (!c)
            abort();
        c->s = s;
        c->lk = lk;
        c->node = a->idx;
        sim_at(s, lk->dir[1].last_arrival_us + 1, ev_limit_close, c);
        return;
    }
    link_ready(s, b, lk);
}

static void dial(struct sim *s, struct snode *a, unsigned to, bool by_mesh)
{
    struct slink *lk = br_calloc(1, sizeof *lk);
    if (!lk)
        abort();
    lk->gen = ++s->link_gen;
    lk->n[0] = a->idx;
    lk->n[1] = to;
    lk->by_mesh = by_mesh;
    lk->next = s->links;
    s->links = lk;
    node_add_link(a, lk);
    s->dials++;
    if (s->trace)
        sim_trace(s, "n%u dial n%u", a->idx, to);
    struct ev_dial *e = br_malloc(sizeof *e);
    if (!e)
        abort();
    *e = (struct ev_dial){s, lk, a->epoch};
    /* connect + WebSocket upgrade + handshake: three one-way trips when it works; a refused
     * connection costs one round trip; a cut network, the connect timeout */
    uint64_t d;
    if (!reachable(s, a->idx, to))
        d = s->sc->net.timeout_ms * 1000;
    else if (!s->nodes[to].up)
        d = 2 * one_way_us(s);
    else
        d = one_way_us(s) + one_way_us(s) + one_way_us(s);
    sim_at(s, s->now_us + d, ev_dial_done, e);
}

/* ---- the gossip period ---- */

static void send_probes(struct sim *s, struct snode *nd, const char *target, struct slink **ups,
                        size_t n_up)
{
    size_t sent = 0;
    for (size_t i = 0; i < n_up && sent < PROBE_HELPERS; i++) {
        struct slink *h = ups[(i + rnd_below(&nd->rng, n_up)) % n_up];
        struct snode *hp = &s->nodes[h->n[1 - side_of(h, nd->idx)]];
        if (strcmp(hp->id, target) == 0)
            continue;
        size_t slot = 16;
        for (size_t k = 0; k < 16 && slot == 16; k++)
            if (!nd->probes[k].rid)
                slot = k;
        if (slot == 16)
            slot = rnd_below(&nd->rng, 16); /* reuse one: its answer is late anyway */
        struct br_wire_msg m = {.type = BR_WIRE_PROBE, .rid = ++s->rid};
        m.u.probe.node = target;
        send_msg(s, h, nd->idx, &m);
        nd->probes[slot].rid = m.rid;
        snprintf(nd->probes[slot].target, sizeof nd->probes[slot].target, "%s", target);
        sent++;
    }
}

static void dial_members(struct sim *s, struct snode *nd, uint64_t now)
{
    size_t busy = 0;
    for (size_t i = 0; i < nd->n_links; i++)
        busy += !nd->links[i]->dead;
    if (busy >= s->sc->max_links)
        return;
    const struct br_gossip_member *c[16];
    size_t n = br_gossip_dial_candidates(nd->g, now, c, 16);
    unsigned to[16];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!c[i]->n_addrs)
            continue;
        int t = node_of_addr(s, c[i]->addrs[c[i]->dial_fails % c[i]->n_addrs]);
        if (t < 0 || (unsigned)t == nd->idx)
            continue;
        to[k++] = (unsigned)t;
    }
    for (size_t i = 0; i < k && busy < s->sc->max_links; i++) {
        if (link_between(nd, to[i]))
            continue;
        dial(s, nd, to[i], true);
        busy++;
    }
}

struct ev_tick {
    struct sim *s;
    unsigned node;
    uint64_t epoch;
};

static void ev_tick(void *arg)
{
    struct ev_tick *e = arg;
    struct sim *s = e->s;
    struct snode *nd = &s->nodes[e->node];
    if (!nd->up || nd->epoch != e->epoch || s->stopping) {
        br_free(e);
        return;
    }
    uint64_t now = sim_now_ms(s);
    struct slink *ups[256];
    size_t n_up = up_links(nd, ups, 256);
    if (br_gossip_tick(nd->g, now))
        trace_member_changes(s, nd, now, "timer");
    for (size_t i = 0; i < br_gossip_count(nd->g); i++) {
        const struct br_gossip_member *mm = br_gossip_at(nd->g, i);
        if (mm->probing && !mm->probe_sent) {
            char t[BR_GOSSIP_ID_MAX];
            snprintf(t, sizeof t, "%s", mm->id);
            send_probes(s, nd, t, ups, n_up);
            br_gossip_probe_sent(nd->g, t);
        }
    }
    if (s->sc->topology == SC_TOPO_MESH)
        dial_members(s, nd, now);
    if (now >= nd->next_static_dial_ms) {
        /* p2p's static dialers: 500 ms after a failure, doubling up to 8 s */
        bool missing = false;
        for (size_t i = 0; i < nd->n_static; i++)
            if (!link_between(nd, nd->static_peers[i])) {
                dial(s, nd, nd->static_peers[i], false);
                missing = true;
            }
        nd->static_fails = missing ? nd->static_fails + 1 : 0;
        unsigned sh = nd->static_fails > 5 ? 5 : nd->static_fails;
        uint64_t wait = (uint64_t)STATIC_DIAL_BASE_MS << sh;
        nd->next_static_dial_ms = now + (wait > STATIC_DIAL_MAX_MS ? STATIC_DIAL_MAX_MS : wait);
    }
    if (n_up) {
        size_t k = n_up < s->sc->fanout ? n_up : s->sc->fanout;
        size_t start = rnd_below(&nd->rng, n_up);
        for (size_t i = 0; i < k; i++) {
            struct slink *lk = ups[(start + i) % n_up];
            send_peers(s, nd, lk, false);
            send_digests(s, nd, lk, NULL, false, false);
        }
    }
    sim_at(s, s->now_us + (uint64_t)s->sc->interval_ms * 1000, ev_tick, e);
}

/* ---- announcing commits (p2p's watches) ---- */

static void on_commit(void *arg, br_db *db, struct br_hlc seq)
{
    (void)db;
    (void)seq;
    struct wctx *w = arg;
    struct sim *s = w->s;
    struct snode *nd = &s->nodes[w->node];
    nd->dirty[w->dbi] = true;
    if (!nd->in_dirty_list) {
        nd->in_dirty_list = true;
        s->dirty[s->n_dirty++] = nd->idx;
    }
}

void sim_flush_dirty(struct sim *s)
{
    for (size_t i = 0; i < s->n_dirty; i++) {
        struct snode *nd = &s->nodes[s->dirty[i]];
        nd->in_dirty_list = false;
        if (!nd->up) {
            memset(nd->dirty, 0, sizeof nd->dirty);
            continue;
        }
        bool which[SC_MAX_DBS];
        memcpy(which, nd->dirty, sizeof which);
        memset(nd->dirty, 0, sizeof nd->dirty);
        for (size_t k = 0; k < nd->n_links; k++) {
            struct slink *lk = nd->links[k];
            if (!lk->up || lk->dead)
                continue;
            struct lside *ls = &lk->side[side_of(lk, nd->idx)];
            bool w[SC_MAX_DBS] = {0}, any = false;
            for (size_t d = 0; d < s->sc->n_dbs; d++)
                if (which[d] && ls->watch[d])
                    w[d] = any = true;
            if (any)
                send_digests(s, nd, lk, w, false, false);
        }
    }
    s->n_dirty = 0;
}

/* ---- node life ---- */

br_err sim_node_init(struct sim *s, struct snode *nd, unsigned idx, struct br_errbuf *eb)
{
    (void)eb;
    memset(nd, 0, sizeof *nd);
    nd->idx = idx;
    nd->s = s;
    nd->rng = s->seed ^ (0x9e3779b97f4a7c15ull * (idx + 1));
    (void)sc_rand(&nd->rng);
    uint8_t pk[32];
    for (size_t i = 0; i < 32; i += 8) {
        uint64_t r = sc_rand(&nd->rng);
        memcpy(pk + i, &r, 8);
    }
    struct br_node_id id;
    br_nodeid_from_public_key(pk, &id);
    br_nodeid_format(&id, nd->id);
    snprintf(nd->addr, sizeof nd->addr, "10.%u.%u.%u:%u", (idx >> 16) & 255, (idx >> 8) & 255,
             idx & 255, SIM_PORT);
    nd->env = (struct br_env){.ctx = nd,
                              .wall_ms = env_wall,
                              .mono_ns = env_mono,
                              .random = env_random,
                              .timer_add = env_timer_add,
                              .timer_cancel = env_timer_cancel};
    const struct scenario *sc = s->sc;
    uint64_t r = s->seed ^ 0x5eed5eedull;
    for (size_t i = 0; i < sc->n_skews; i++) {
        bool *sel = br_calloc(s->n, sizeof *sel);
        if (!sel)
            return BR_ENOMEM;
        if (sc_sel_resolve(sc->skews[i].nodes, s->n, &r, sel, NULL) == BR_OK && sel[idx])
            nd->skew_ms = sc->skews[i].ms;
        br_free(sel);
    }
    for (size_t f = 0; f < sc->n_filters; f++) {
        int dbi = dbi_of(s, sc->filters[f].db);
        bool *sel = br_calloc(s->n, sizeof *sel);
        if (!sel)
            return BR_ENOMEM;
        if (dbi >= 0 && sc_sel_resolve(sc->filters[f].nodes, s->n, &r, sel, NULL) == BR_OK &&
            sel[idx]) {
            snprintf(nd->filter[dbi], sizeof nd->filter[dbi], "%s", sc->filters[f].paths);
            snprintf(nd->path_buf[dbi], sizeof nd->path_buf[dbi], "%s", sc->filters[f].paths);
            char *save = NULL;
            nd->n_paths[dbi] = 0;
            for (char *t = strtok_r(nd->path_buf[dbi], "|", &save); t && nd->n_paths[dbi] < 8;
                 t = strtok_r(NULL, "|", &save))
                nd->paths[dbi][nd->n_paths[dbi]++] = t;
        }
        br_free(sel);
    }
    /* static peers */
    nd->static_peers = br_calloc(s->n, sizeof *nd->static_peers);
    if (!nd->static_peers)
        return BR_ENOMEM;
    switch (sc->topology) {
    case SC_TOPO_CHAIN:
        if (idx + 1 < s->n)
            nd->static_peers[nd->n_static++] = idx + 1;
        break;
    case SC_TOPO_STAR:
        if (idx > 0)
            nd->static_peers[nd->n_static++] = 0;
        break;
    case SC_TOPO_FULL:
        for (unsigned j = idx + 1; j < s->n; j++)
            nd->static_peers[nd->n_static++] = j;
        break;
    case SC_TOPO_MESH: /* node 0 is every node's seed: a --peer, redialled like p2p does */
        if (idx > 0)
            nd->static_peers[nd->n_static++] = 0;
        break;
    }
    return BR_OK;
}

br_err sim_node_start(struct sim *s, struct snode *nd, struct br_errbuf *eb)
{
    char path[400];
    snprintf(path, sizeof path, "%s/n%u", s->dir, nd->idx);
    struct br_store_opts so = {.path = path, .env = &nd->env, .cache_bytes = 1u << 20};
    br_err e = br_store_open(&so, &nd->store, eb);
    if (e)
        return e;
    for (size_t i = 0; i < s->sc->n_dbs; i++) {
        e = br_store_db_create(nd->store, s->sc->dbs[i], NULL);
        if (e && e != BR_EEXIST)
            return br_fail(eb, e, "creating %s", s->sc->dbs[i]);
        e = br_store_db_open(nd->store, s->sc->dbs[i], &nd->dbs[i]);
        if (e)
            return br_fail(eb, e, "opening %s", s->sc->dbs[i]);
        struct wctx *w = &nd->wctx[i];
        *w = (struct wctx){s, nd->idx, (unsigned)i};
        e = br_db_watch(nd->dbs[i], on_commit, w, &nd->watch_ids[i]);
        if (e)
            return br_fail(eb, e, "watching %s", s->sc->dbs[i]);
    }
    struct br_hlc inc;
    e = br_hlc_now(br_store_clock(nd->store), &inc);
    if (e)
        return br_fail(eb, e, "clock");
    struct br_gossip_opts go = {
        .self = nd->id, .self_inc = inc, .probe_ms = s->sc->probe_ms, .dead_ms = s->sc->dead_ms};
    e = br_gossip_new(&go, &nd->g, eb);
    if (e)
        return e;
    const char *addrs[1] = {nd->addr};
    e = br_gossip_set_self_addrs(nd->g, addrs, 1);
    if (e)
        return br_fail(eb, e, "self address");
    nd->up = true;
    nd->ever_started = true;
    nd->next_static_dial_ms = 0;
    if (s->trace)
        sim_trace(s, "n%u start id=%.8s", nd->idx, nd->id);
    struct ev_tick *t = br_malloc(sizeof *t);
    if (!t)
        return BR_ENOMEM;
    *t = (struct ev_tick){s, nd->idx, nd->epoch};
    /* the first period starts at a random point, as real nodes' do */
    sim_at(s, s->now_us + rnd_below(&nd->rng, (uint64_t)s->sc->interval_ms * 1000) + 1, ev_tick, t);
    return BR_OK;
}

static void close_store(struct snode *nd, const struct sim *s)
{
    for (size_t i = 0; i < s->sc->n_dbs; i++) {
        if (nd->dbs[i]) {
            br_db_unwatch(nd->dbs[i], nd->watch_ids[i]);
            br_db_close(nd->dbs[i]);
            nd->dbs[i] = NULL;
        }
    }
    br_store_close(nd->store);
    nd->store = NULL;
}

void sim_node_crash(struct sim *s, struct snode *nd, const char *why)
{
    if (!nd->up)
        return;
    if (s->trace)
        sim_trace(s, "n%u %s", nd->idx, why);
    nd->up = false;
    nd->epoch++;
    nd->crashes++;
    close_pulls(s, nd, NULL);
    /* the peers hear of it: at once over a working network (the kernel resets the
     * connections), after their timeout across a cut */
    for (size_t i = 0; i < nd->n_links; i++) {
        struct slink *lk = nd->links[i];
        if (lk->dead)
            continue;
        bool was_up = lk->up;
        lk->dead = true;
        lk->up = false;
        drop_held(lk);
        s->links_down += was_up;
        unsigned other = lk->n[1 - side_of(lk, nd->idx)];
        if (!was_up)
            continue;
        struct ev_link *e = br_calloc(1, sizeof *e);
        if (!e)
            abort();
        e->s = s;
        e->lk = lk;
        e->node = other;
        e->epoch = s->nodes[other].epoch;
        uint64_t d = reachable(s, nd->idx, other) ? one_way_us(s) : s->sc->net.timeout_ms * 1000;
        sim_at(s, s->now_us + d, ev_peer_gone, e);
    }
    nd->n_links = 0;
    br_gossip_free(nd->g);
    nd->g = NULL;
    memset(nd->probes, 0, sizeof nd->probes);
    memset(nd->dirty, 0, sizeof nd->dirty);
    close_store(nd, s);
}

void sim_node_fini(struct sim *s, struct snode *nd)
{
    if (nd->up)
        sim_node_crash(s, nd, "stop");
    br_free(nd->links);
    nd->links = NULL;
    br_free(nd->static_peers);
    nd->static_peers = NULL;
}

void sim_free_links(struct sim *s)
{
    for (struct slink *lk = s->links, *n; lk; lk = n) {
        n = lk->next;
        drop_held(lk);
        br_free(lk);
    }
    s->links = NULL;
}
