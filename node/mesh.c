/* mesh.c — gossip, failure detection, dialling and digest-driven pulls over the links (see
 * mesh.h). Everything but the pull threads and the discovery queue runs on the loop. */
#include "mesh.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/gossip.h"
#include "barrel/log.h"
#include "barrel/replicator.h"

#include "p2p_int.h"

#define TAG "mesh"
#define PROBE_HELPERS 3
#define FULL_EXCHANGE_MIN_MS 2000
#define MAX_PROBES 64
#define DISC_QUEUE 64
#define SAMPLE 1
#define SHORT_LINK_NS 2000000000ull /* a dialled link that lives less is a failed dial */

/* What this node last told a link about one database. */
struct sent_db {
    char name[BR_DB_NAME_MAX + 1];
    struct br_hlc last;
    uint8_t hash[16];
    unsigned mismatch_rounds; /* received digests: rounds its set hash differed from ours */
    bool reported;
};

struct mlink {
    struct link *l;
    char peer[BR_GOSSIP_ID_MAX];
    bool counted; /* br_gossip_link_up was called */
    uint64_t last_full_ms;
    struct sent_db *sent; /* what we last told it, per database */
    size_t n_sent;
    struct sent_db *recv; /* what it last told us */
    size_t n_recv;
};

struct puller {
    struct puller *next;
    br_mesh *m;
    struct link *l; /* a reference */
    char db[BR_DB_NAME_MAX + 1];
    pthread_t t;
    br_rep *cur; /* under m->mu */
    bool cancel; /* under m->mu */
    atomic_bool done;
};

struct probe {
    uint64_t rid;
    char target[BR_GOSSIP_ID_MAX];
    uint64_t sent_ms;
};

struct disc {
    char id[BR_GOSSIP_ID_MAX];
    char addr[BR_GOSSIP_ADDR_MAX];
};

struct br_mesh {
    struct br_mesh_opts o;
    struct br_mesh_db *dbs; /* copies */
    size_t n_dbs;
    br_gossip *g;
    uint64_t next_round_ms;
    uint64_t rid;
    struct probe probes[MAX_PROBES];
    pthread_mutex_t mu; /* pullers' cur/cancel, the discovery queue */
    struct puller *pullers;
    struct disc queue[DISC_QUEUE];
    size_t n_queue;
    bool stopping;
    atomic_uint_fast64_t gossip_sent, gossip_received, digests_sent, digests_received;
    atomic_uint_fast64_t pulls_started, pulls_woken, refused, mismatches;
    /* arrival lag: a change's commit at the member we pulled it from -> written here */
    atomic_uint_fast64_t lag_buckets[BR_MESH_LAG_BUCKETS], lag_count, lag_sum_ms;
    char blocked[BR_MESH_MAX_BLOCKED][BR_GOSSIP_ID_MAX]; /* br_mesh_drop's block list (loop) */
    size_t n_blocked;
};

static uint64_t now_ms(void)
{
    return p2p_now_ns() / 1000000ull;
}

static uint64_t wall_ms(br_mesh *m)
{
    return br_hlc_peek(br_store_clock(m->o.store)).wall;
}

static struct br_hlc hlc_now(br_mesh *m)
{
    struct br_hlc h;
    if (br_hlc_now(br_store_clock(m->o.store), &h))
        h = br_hlc_peek(br_store_clock(m->o.store));
    return h;
}

static bool is_blocked(const br_mesh *m, const char *id)
{
    for (size_t i = 0; i < m->n_blocked; i++)
        if (strcmp(m->blocked[i], id) == 0)
            return true;
    return false;
}

static struct mlink *ml_of(struct link *l)
{
    return l->mesh;
}

/* Drop link l's mesh state (NULL is fine). */
static void mlink_free(struct link *l)
{
    struct mlink *ml = l->mesh;
    l->mesh = NULL;
    if (!ml)
        return;
    br_free(ml->sent);
    br_free(ml->recv);
    br_free(ml);
}

/* ---- configuration ---- */

static const struct br_mesh_db *mesh_db(br_mesh *m, const char *name)
{
    static const struct br_mesh_db all = {0};
    if (name[0] == '_')
        return NULL;
    if (!m->o.dbs)
        return &all;
    for (size_t i = 0; i < m->n_dbs; i++)
        if (strcmp(m->dbs[i].name, name) == 0)
            return &m->dbs[i];
    return NULL;
}

br_err br_mesh_new(const struct br_mesh_opts *o, br_mesh **out, struct br_errbuf *eb)
{
    br_mesh *m = br_calloc(1, sizeof *m);
    if (!m)
        return br_fail(eb, BR_ENOMEM, "out of memory");
    m->o = *o;
    if (!m->o.interval_ms)
        m->o.interval_ms = BR_MESH_DEFAULT_INTERVAL_MS;
    if (!m->o.fanout)
        m->o.fanout = BR_MESH_DEFAULT_FANOUT;
    if (!m->o.max_links)
        m->o.max_links = BR_MESH_DEFAULT_MAX_LINKS;
    m->o.dbs = NULL;
    if (o->dbs) {
        m->dbs = br_calloc(o->n_dbs ? o->n_dbs : 1, sizeof *m->dbs);
        if (!m->dbs) {
            br_free(m);
            return br_fail(eb, BR_ENOMEM, "out of memory");
        }
        memcpy(m->dbs, o->dbs, o->n_dbs * sizeof *m->dbs); /* strings outlive the node */
        m->n_dbs = o->n_dbs;
        m->o.dbs = m->dbs;
    }
    struct br_gossip_opts go = {
        .self = o->self_id, .self_inc = hlc_now(m), .probe_ms = o->probe_ms, .dead_ms = o->dead_ms};
    br_err e = br_gossip_new(&go, &m->g, eb);
    if (!e)
        e = br_gossip_set_self_addrs(m->g, o->self_addrs, o->n_self_addrs);
    if (e) {
        br_gossip_free(m->g);
        br_free(m->dbs);
        br_free(m);
        return e == BR_EINVAL ? br_fail(eb, e, "mesh: bad address to announce") : e;
    }
    pthread_mutex_init(&m->mu, NULL);
    m->rid = (uint64_t)1 << 62; /* far from the rids of endpoint requests */
    *out = m;
    return BR_OK;
}

/* ---- pulls ---- */

const uint64_t br_mesh_lag_bounds_ms[BR_MESH_LAG_BUCKETS] = {1,   5,   10,   25,   50,   100,
                                                             250, 500, 1000, 2500, 5000, 10000};

/* A pull wrote a batch: record how long after the member committed its newest change. */
static void on_written(void *arg, struct br_hlc newest, size_t written)
{
    (void)written;
    struct puller *pl = arg;
    br_mesh *m = pl->m;
    uint64_t now = wall_ms(m), lag = now > newest.wall ? now - newest.wall : 0;
    for (size_t i = 0; i < BR_MESH_LAG_BUCKETS; i++)
        if (lag <= br_mesh_lag_bounds_ms[i]) {
            atomic_fetch_add(&m->lag_buckets[i], 1);
            break;
        }
    atomic_fetch_add(&m->lag_count, 1);
    atomic_fetch_add(&m->lag_sum_ms, lag);
}

static void *pull_main(void *arg)
{
    struct puller *pl = arg;
    br_mesh *m = pl->m;
    struct br_errbuf eb = {{0}};
    struct br_endpoint *local = NULL, *peer = NULL;
    struct br_endpoint_local_opts lo = {.node = m->o.self_id, .sync = BR_SYNC_NONE};
    br_rep *r = NULL;
    const struct br_mesh_db *md = mesh_db(m, pl->db);
    struct br_rep_opts ro = {.continuous = true, .on_written = on_written, .arg = pl};
    if (md && md->n_paths) {
        ro.filter.paths = md->paths;
        ro.filter.n_paths = md->n_paths;
    }
    br_err e = br_endpoint_local_new(m->o.store, pl->db, &lo, &local, &eb);
    if (!e)
        e = p2p_endpoint_new(pl->l, pl->db, &peer);
    if (!e)
        e = br_rep_new(peer, local, &ro, &r, &eb);
    if (!e) {
        pthread_mutex_lock(&m->mu);
        bool stop = pl->cancel;
        pl->cur = stop ? NULL : r;
        pthread_mutex_unlock(&m->mu);
        if (!stop) {
            br_log(BR_LOG_INFO, TAG, "event=pull_start db=%s peer=%s", pl->db, pl->l->peer_short);
            e = br_rep_run(r, &eb);
        }
        pthread_mutex_lock(&m->mu);
        pl->cur = NULL;
        pthread_mutex_unlock(&m->mu);
    }
    if (e && e != BR_ECLOSED)
        br_log(BR_LOG_INFO, TAG, "event=pull_stopped db=%s peer=%s err=%s reason=\"%s\"", pl->db,
               pl->l->peer_short, br_errname(e), eb.msg);
    br_rep_free(r);
    br_endpoint_free(peer);
    br_endpoint_free(local);
    atomic_store(&pl->done, true);
    return NULL;
}

static bool has_puller(br_mesh *m, struct link *l, const char *db)
{
    for (struct puller *pl = m->pullers; pl; pl = pl->next)
        if (pl->l == l && strcmp(pl->db, db) == 0)
            return true;
    return false;
}

static void start_puller(br_mesh *m, struct link *l, const char *db)
{
    if (!m->o.sync || m->stopping || !mesh_db(m, db) || has_puller(m, l, db))
        return;
    br_db *d = NULL;
    if (br_store_db_open(m->o.store, db, &d) == BR_OK) {
        br_db_close(d);
    } else {
        struct br_errbuf eb = {{0}};
        br_err e = br_store_db_create(m->o.store, db, &eb);
        if (e && e != BR_EEXIST) {
            br_log(BR_LOG_WARN, TAG, "event=db_create_failed db=%s err=%s", db, br_errname(e));
            return;
        }
        br_log(BR_LOG_INFO, TAG, "event=db_created db=%s from=%s", db, l->peer_short);
    }
    struct puller *pl = br_calloc(1, sizeof *pl);
    if (!pl)
        return;
    pl->m = m;
    pl->l = l;
    size_t dl = strnlen(db, BR_DB_NAME_MAX);
    memcpy(pl->db, db, dl);
    pl->db[dl] = '\0';
    atomic_init(&pl->done, false);
    p2p_link_ref(l);
    if (pthread_create(&pl->t, NULL, pull_main, pl) != 0) {
        p2p_link_unref(l);
        br_free(pl);
        return;
    }
    pl->next = m->pullers;
    m->pullers = pl;
    atomic_fetch_add(&m->pulls_started, 1);
}

static void cancel_pullers(br_mesh *m, struct link *l)
{
    pthread_mutex_lock(&m->mu);
    for (struct puller *pl = m->pullers; pl; pl = pl->next)
        if (!l || pl->l == l) {
            pl->cancel = true;
            if (pl->cur)
                br_rep_cancel(pl->cur);
        }
    pthread_mutex_unlock(&m->mu);
}

/* Join the pulls that ended (all of them with wait). */
static void reap_pullers(br_mesh *m, bool wait)
{
    for (struct puller **pp = &m->pullers; *pp;) {
        struct puller *pl = *pp;
        if (!wait && !atomic_load(&pl->done)) {
            pp = &pl->next;
            continue;
        }
        pthread_join(pl->t, NULL);
        *pp = pl->next;
        p2p_link_unref(pl->l);
        br_free(pl);
    }
}

/* Start pulls for the mesh databases the member announced. */
static void pull_announced(br_mesh *m, struct link *l)
{
    char names[P2P_REMOTE_DBS][BR_DB_NAME_MAX + 1];
    size_t n = 0;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->n_remote; i++)
        snprintf(names[n++], sizeof names[0], "%s", l->remote[i].name);
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n; i++)
        start_puller(m, l, names[i]);
}

/* ---- sending ---- */

static void send_peers(br_mesh *m, struct mlink *ml, bool full)
{
    struct br_wire_peer e[BR_GOSSIP_MAX_ENTRIES];
    size_t n =
        full ? br_gossip_all(m->g, e, BR_GOSSIP_MAX_ENTRIES)
             : br_gossip_entries(m->g, e, BR_GOSSIP_MAX_ENTRIES, SAMPLE, randombytes_random());
    struct br_wire_msg msg = {.type = BR_WIRE_PEERS, .rid = 0};
    msg.u.peers.peers = e;
    msg.u.peers.n = n;
    msg.u.peers.mhash = br_gossip_mhash(m->g);
    if (p2p_send(ml->l, &msg) == BR_OK) {
        atomic_fetch_add(&m->gossip_sent, 1);
        ml->l->last_ping_ns = p2p_now_ns(); /* the gossip is this period's heartbeat */
    }
    if (full)
        ml->last_full_ms = now_ms();
}

/* Digests of the mesh databases, current. */
struct dbset {
    char **names;
    size_t n;
    struct br_wire_dbdigest *d;
    size_t nd;
};

static void dbset_load(br_mesh *m, struct dbset *s)
{
    memset(s, 0, sizeof *s);
    if (br_store_db_list(m->o.store, &s->names, &s->n))
        return;
    s->d = br_calloc(s->n ? s->n : 1, sizeof *s->d);
    for (size_t i = 0; s->d && i < s->n; i++) {
        if (!mesh_db(m, s->names[i]))
            continue;
        br_db *db = NULL;
        if (br_store_db_open(m->o.store, s->names[i], &db))
            continue;
        if (br_db_digest(db, &s->d[s->nd].digest) == BR_OK)
            s->d[s->nd++].name = s->names[i];
        br_db_close(db);
    }
}

static void dbset_free(struct dbset *s)
{
    br_free(s->d);
    br_store_names_free(s->names, s->n);
}

static struct sent_db *table_find(struct sent_db **tab, size_t *n, const char *name, bool make)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*tab)[i].name, name) == 0)
            return &(*tab)[i];
    if (!make || *n >= BR_MESH_MAX_DBS * 4)
        return NULL;
    struct sent_db *v = br_realloc(*tab, (*n + 1) * sizeof *v);
    if (!v)
        return NULL;
    *tab = v;
    struct sent_db *sd = &v[(*n)++];
    memset(sd, 0, sizeof *sd);
    snprintf(sd->name, sizeof sd->name, "%s", name);
    return sd;
}

/* Send the digests that changed since this link last heard them. */
static void send_digests(br_mesh *m, struct mlink *ml, const struct dbset *s)
{
    struct br_wire_dbdigest out[BR_MESH_MAX_DBS];
    size_t k = 0;
    for (size_t i = 0; i < s->nd && k < BR_MESH_MAX_DBS; i++) {
        struct sent_db *sd = table_find(&ml->sent, &ml->n_sent, s->d[i].name, false);
        if (!sd) /* never told: even an empty database is news */
            sd = table_find(&ml->sent, &ml->n_sent, s->d[i].name, true);
        else if (br_hlc_cmp(sd->last, s->d[i].digest.last) == 0 &&
                 memcmp(sd->hash, s->d[i].digest.set_hash, 16) == 0)
            continue;
        if (sd) {
            sd->last = s->d[i].digest.last;
            memcpy(sd->hash, s->d[i].digest.set_hash, 16);
        }
        out[k++] = s->d[i];
    }
    if (!k)
        return;
    struct br_wire_msg msg = {.type = BR_WIRE_DIGEST, .rid = 0};
    msg.u.digest.dbs = out;
    msg.u.digest.n_dbs = k;
    if (p2p_send(ml->l, &msg) == BR_OK)
        atomic_fetch_add(&m->digests_sent, 1);
}

/* The newest change of `db` our pull from link l has read (BR_HLC_MIN: none yet). */
static struct br_hlc pulled_upto(br_mesh *m, struct link *l, const char *db)
{
    struct br_hlc h = BR_HLC_MIN;
    pthread_mutex_lock(&m->mu);
    for (struct puller *pl = m->pullers; pl; pl = pl->next)
        if (pl->l == l && strcmp(pl->db, db) == 0 && pl->cur) {
            struct br_rep_stats st;
            br_rep_get_stats(pl->cur, &st);
            h = st.last_seq;
        }
    pthread_mutex_unlock(&m->mu);
    return h;
}

/* A member whose set hash of a database we take whole stays different from ours although our
 * pull has read everything it announced, round after round: the replicas diverged in a way
 * no pull can mend (checkpoints on both sides restart a pull from the start whenever either
 * side's history changes, so this means a store lost data, or a member filters it). Say so
 * once per member and database; /_peers shows it. */
static void check_mismatch(br_mesh *m, struct mlink *ml, const struct dbset *s)
{
    for (size_t i = 0; i < ml->n_recv; i++) {
        struct sent_db *rd = &ml->recv[i];
        const struct br_mesh_db *md = mesh_db(m, rd->name);
        const struct br_wire_dbdigest *ours = NULL;
        for (size_t j = 0; j < s->nd && !ours; j++)
            if (strcmp(s->d[j].name, rd->name) == 0)
                ours = &s->d[j];
        if (!md || md->n_paths || !ours)
            continue;
        bool differ = memcmp(rd->hash, ours->digest.set_hash, 16) != 0 &&
                      br_hlc_cmp(rd->last, pulled_upto(m, ml->l, rd->name)) <= 0;
        rd->mismatch_rounds = differ ? rd->mismatch_rounds + 1 : 0;
        if (!differ)
            rd->reported = false;
        if (rd->mismatch_rounds >= 5 && !rd->reported) {
            rd->reported = true;
            atomic_fetch_add(&m->mismatches, 1);
            br_log(BR_LOG_WARN, TAG,
                   "event=digest_mismatch db=%s peer=%.8s reason=\"set hashes differ with "
                   "nothing left to pull\"",
                   rd->name, ml->peer);
        }
    }
}

/* ---- links ---- */

static size_t up_links(br_mesh *m, struct mlink **out, size_t max)
{
    size_t n = 0;
    for (struct link *l = p2p_links(m->o.p2p); l && n < max; l = l->next)
        if (l->state == LINK_UP && ml_of(l))
            out[n++] = ml_of(l);
    return n;
}

static size_t busy_links(br_mesh *m)
{
    size_t n = 0;
    for (struct link *l = p2p_links(m->o.p2p); l; l = l->next)
        n += l->state == LINK_HS || l->state == LINK_UP;
    return n;
}

void mesh_link_ready(br_mesh *m, struct link *l)
{
    if (ml_of(l))
        return;
    if (is_blocked(m, l->peer_text)) { /* an admin's block (br_mesh_drop) */
        br_log(BR_LOG_INFO, TAG, "event=link_refused peer=%s reason=blocked", l->peer_short);
        /* as a refused handshake, not a lost link: a static peer's dialer backs off */
        pthread_mutex_lock(&l->mu);
        l->ready = false;
        pthread_mutex_unlock(&l->mu);
        p2p_close(l, "blocked");
        return;
    }
    /* The bound on links. This node dials members only while it holds fewer than max_links;
     * links others dial to it are accepted up to twice that, so a newcomer that knows only a
     * well-connected member still gets in. A static peer's link is always kept. */
    size_t up = 0;
    for (struct link *k = p2p_links(m->o.p2p); k; k = k->next)
        up += k->state == LINK_UP;
    size_t cap = l->by_mesh ? m->o.max_links : 2 * (size_t)m->o.max_links;
    if (!l->dialer && up > cap) {
        /* Over the bound, the newcomer still gets our member table before the link closes,
         * so it can dial the others (without it, a newcomer that knows only a full seed never
         * gets in: the simulator found that). */
        br_log(BR_LOG_INFO, TAG, "event=link_refused peer=%s reason=link_limit max=%zu",
               l->peer_short, cap);
        struct mlink tmp = {.l = l};
        send_peers(m, &tmp, true);
        p2p_close_flushed(l, "link_limit");
        return;
    }
    struct mlink *ml = br_calloc(1, sizeof *ml);
    if (!ml)
        return;
    ml->l = l;
    snprintf(ml->peer, sizeof ml->peer, "%s", l->peer_text);
    l->mesh = ml;
    uint64_t now = now_ms();
    /* Two mesh dials crossing: the node with the greater id drops its own, whichever of the
     * two links came up first (only that node acts, and only on a link it dialled for the
     * mesh, so a static peer's link is never closed and nothing churns). */
    if (strcmp(m->o.self_id, ml->peer) > 0) {
        for (struct link *k = p2p_links(m->o.p2p); k; k = k->next) {
            if (k == l || k->state != LINK_UP || strcmp(k->peer_text, ml->peer) != 0)
                continue;
            if (l->by_mesh) { /* ours came up second: drop it */
                br_gossip_link_up(m->g, ml->peer, now);
                ml->counted = true;
                p2p_close(l, "duplicate_link");
                return;
            }
            if (!l->initiator && k->initiator && k->by_mesh) /* ours came up first */
                p2p_close(k, "duplicate_link");
        }
    }
    if (l->initiator) {
        /* the address we dialled reached this member */
        char addr[BR_GOSSIP_ADDR_MAX];
        snprintf(addr, sizeof addr, "%s", l->addr);
        if (br_gossip_note(m->g, ml->peer, addr, now) == BR_ETOOBIG)
            br_log(BR_LOG_WARN, TAG, "event=member_table_full peer=%s", l->peer_short);
    } else if (br_gossip_note(m->g, ml->peer, NULL, now) == BR_ETOOBIG) {
        br_log(BR_LOG_WARN, TAG, "event=member_table_full peer=%s", l->peer_short);
    }
    br_gossip_link_up(m->g, ml->peer, now);
    ml->counted = true;
    send_peers(m, ml, true);
    pull_announced(m, l);
}

void mesh_link_gone(br_mesh *m, struct link *l, bool was_up)
{
    struct mlink *ml = ml_of(l);
    uint64_t now = now_ms();
    cancel_pullers(m, l);
    if (!ml) {
        if (l->by_mesh && l->expect[0] && !was_up) {
            if (strncmp(l->reason, "peer_id_mismatch", 16) == 0) {
                /* that address answered with another identity: it is not this member's */
                br_gossip_drop_addr(m->g, l->expect, l->addr);
                br_log(BR_LOG_WARN, TAG, "event=address_dropped id=%.8s addr=%s", l->expect,
                       l->addr);
            }
            br_gossip_dial_failed(m->g, l->expect, now);
            if (br_gossip_unreachable(m->g, l->expect, now))
                br_log(BR_LOG_INFO, TAG, "event=member_probe id=%.8s reason=unreachable",
                       l->expect);
        }
        return;
    }
    if (ml->counted && br_gossip_link_down(m->g, ml->peer, now))
        br_log(BR_LOG_INFO, TAG, "event=member_probe id=%.8s reason=link_lost", ml->peer);
    /* A link we dialled that the member closed at once (it is at its bound of links, or
     * refuses us) counts as a failed dial, so we do not redial it every tick. */
    if (l->by_mesh && l->initiator && p2p_now_ns() - l->opened_ns < SHORT_LINK_NS)
        br_gossip_dial_failed(m->g, ml->peer, now);
    mlink_free(l);
}

/* ---- receiving ---- */

/* Log the members whose state changed at `now` (by a timer, or by gossip from `via`). */
static void log_changes(br_mesh *m, uint64_t now, const char *via)
{
    for (size_t i = 0; i < br_gossip_count(m->g); i++) {
        const struct br_gossip_member *mm = br_gossip_at(m->g, i);
        if (mm->state_since_ms == now)
            br_log(BR_LOG_INFO, TAG, "event=member_state id=%.8s state=%s via=%.8s", mm->id,
                   br_member_state_name(mm->state), via);
    }
}

static void on_peers(br_mesh *m, struct mlink *ml, const struct br_wire_msg *msg)
{
    atomic_fetch_add(&m->gossip_received, 1);
    struct br_gossip_merge_result r;
    uint64_t now = now_ms();
    br_err e = br_gossip_merge(m->g, ml->peer, msg->u.peers.peers, msg->u.peers.n, now, wall_ms(m),
                               hlc_now(m), &r);
    if (e || r.refused) {
        atomic_fetch_add(&m->refused, r.refused);
        br_log(BR_LOG_WARN, TAG, "event=gossip_refused peer=%.8s refused=%zu reason=\"%s\"",
               ml->peer, r.refused, r.reason);
        if (e)
            return;
    }
    if (r.learned)
        br_log(BR_LOG_INFO, TAG, "event=members_learned peer=%.8s count=%zu", ml->peer, r.learned);
    if (r.changed)
        log_changes(m, now, ml->peer);
    if (msg->u.peers.mhash && msg->u.peers.mhash != br_gossip_mhash(m->g) &&
        now - ml->last_full_ms >= FULL_EXCHANGE_MIN_MS)
        send_peers(m, ml, true);
}

static void on_probe(br_mesh *m, struct mlink *ml, const struct br_wire_msg *msg)
{
    bool alive = false;
    uint64_t now = p2p_now_ns(), to = p2p_timeout_ns(m->o.p2p);
    for (struct link *k = p2p_links(m->o.p2p); k && !alive; k = k->next)
        alive = k->state == LINK_UP && strcmp(k->peer_text, msg->u.probe.node) == 0 &&
                now - k->last_rx_ns < to;
    struct br_wire_msg r = {.type = BR_WIRE_PROBE_REPLY, .rid = msg->rid};
    r.u.probe_reply.alive = alive;
    if (p2p_send(ml->l, &r))
        br_log(BR_LOG_DEBUG, TAG, "event=probe_reply_failed peer=%.8s", ml->peer);
}

static void on_probe_reply(br_mesh *m, const struct br_wire_msg *msg)
{
    for (size_t i = 0; i < MAX_PROBES; i++)
        if (m->probes[i].rid == msg->rid) {
            br_gossip_probe_answer(m->g, m->probes[i].target, msg->u.probe_reply.alive, now_ms());
            if (msg->u.probe_reply.alive)
                br_log(BR_LOG_INFO, TAG, "event=probe_ack id=%.8s", m->probes[i].target);
            m->probes[i].rid = 0;
            return;
        }
}

bool mesh_on_message(br_mesh *m, struct link *l, struct br_wire_msg *msg)
{
    struct mlink *ml = ml_of(l);
    if (!ml)
        return false;
    switch (msg->type) {
    case BR_WIRE_PEERS:
        on_peers(m, ml, msg);
        break;
    case BR_WIRE_PROBE:
        if (!msg->rid) {
            p2p_close(l, "probe_without_rid");
            break;
        }
        on_probe(m, ml, msg);
        break;
    case BR_WIRE_PROBE_REPLY:
        on_probe_reply(m, msg);
        break;
    case BR_WIRE_DIGEST:
        atomic_fetch_add(&m->digests_received, 1);
        for (size_t i = 0; i < msg->u.digest.n_dbs; i++) {
            const char *name = msg->u.digest.dbs[i].name;
            struct sent_db *rd = table_find(&ml->recv, &ml->n_recv, name, true);
            if (rd) {
                rd->last = msg->u.digest.dbs[i].digest.last;
                memcpy(rd->hash, msg->u.digest.dbs[i].digest.set_hash, 16);
            }
            if (has_puller(m, l, name)) {
                pthread_mutex_lock(&l->mu);
                struct br_hlc last = p2p_remote_last(l, name);
                pthread_mutex_unlock(&l->mu);
                if (br_hlc_cmp(msg->u.digest.dbs[i].digest.last, last) > 0)
                    atomic_fetch_add(&m->pulls_woken, 1);
            } else {
                start_puller(m, l, name); /* a database new to us, or new on that member */
            }
        }
        return false; /* p2p notes the heads and wakes the pulls */
    case BR_WIRE_PING: {
        int64_t skew = (int64_t)msg->u.ping.hlc.wall - (int64_t)wall_ms(m);
        br_gossip_heard(m->g, ml->peer, msg->u.ping.hlc, skew, now_ms());
        return false;
    }
    default:
        return false;
    }
    br_wire_msg_free(msg);
    return true;
}

/* ---- timers ---- */

static void send_probes(br_mesh *m, const char *target, struct mlink **ups, size_t n_up)
{
    size_t sent = 0;
    for (size_t i = 0; i < n_up && sent < PROBE_HELPERS; i++) {
        struct mlink *h = ups[(i + randombytes_uniform((uint32_t)n_up)) % n_up];
        if (strcmp(h->peer, target) == 0)
            continue;
        size_t slot = MAX_PROBES;
        for (size_t k = 0; k < MAX_PROBES && slot == MAX_PROBES; k++)
            if (!m->probes[k].rid || now_ms() - m->probes[k].sent_ms > 10000)
                slot = k;
        if (slot == MAX_PROBES)
            return;
        struct br_wire_msg msg = {.type = BR_WIRE_PROBE, .rid = ++m->rid};
        msg.u.probe.node = target;
        if (p2p_send(h->l, &msg) == BR_OK) {
            m->probes[slot].rid = msg.rid;
            snprintf(m->probes[slot].target, sizeof m->probes[slot].target, "%s", target);
            m->probes[slot].sent_ms = now_ms();
            sent++;
        }
    }
}

static void take_discovered(br_mesh *m, uint64_t now)
{
    struct disc q[DISC_QUEUE];
    pthread_mutex_lock(&m->mu);
    size_t n = m->n_queue;
    memcpy(q, m->queue, n * sizeof q[0]);
    m->n_queue = 0;
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        br_err e = br_gossip_note(m->g, q[i].id, q[i].addr, now);
        if (e)
            br_log(BR_LOG_WARN, TAG, "event=discovered_refused id=%.8s addr=%s err=%s", q[i].id,
                   q[i].addr, br_errname(e));
    }
}

static bool split_addr(const char *a, char *host, size_t cap, int *port)
{
    const char *c = strrchr(a, ':');
    if (!c || c == a)
        return false;
    const char *h = a;
    size_t hl = (size_t)(c - a);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= cap)
        return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = atoi(c + 1);
    return *port > 0 && *port < 65536;
}

static void dial_members(br_mesh *m, uint64_t now)
{
    size_t busy = busy_links(m);
    if (busy >= m->o.max_links)
        return;
    const struct br_gossip_member *c[16];
    size_t n = br_gossip_dial_candidates(m->g, now, c, 16);
    for (size_t i = 0; i < n && busy < m->o.max_links; i++) {
        bool dialling = false;
        for (struct link *l = p2p_links(m->o.p2p); l && !dialling; l = l->next)
            dialling = (l->state == LINK_HS || l->state == LINK_UP) &&
                       (strcmp(l->expect, c[i]->id) == 0 || strcmp(l->peer_text, c[i]->id) == 0);
        if (dialling || is_blocked(m, c[i]->id))
            continue;
        char host[BR_GOSSIP_ADDR_MAX];
        int port = 0;
        char id[BR_GOSSIP_ID_MAX];
        snprintf(id, sizeof id, "%s", c[i]->id);
        /* try the addresses in turn, one per attempt */
        const char *addr = c[i]->addrs[c[i]->dial_fails % c[i]->n_addrs];
        if (!split_addr(addr, host, sizeof host, &port)) {
            br_gossip_dial_failed(m->g, id, now);
            continue;
        }
        br_log(BR_LOG_INFO, TAG, "event=dial id=%.8s addr=%s", id, addr);
        if (p2p_dial(m->o.p2p, host, port, id) == BR_OK) /* a failure comes back through */
            busy++;                                      /* mesh_link_gone: backoff */
    }
}

void br_mesh_on_tick(br_mesh *m)
{
    uint64_t now = now_ms();
    take_discovered(m, now);
    reap_pullers(m, false);
    struct mlink *ups[256];
    size_t n_up = up_links(m, ups, 256);
    /* states before and after the timers, for the log */
    if (br_gossip_tick(m->g, now))
        log_changes(m, now, "timer");
    for (size_t i = 0; i < br_gossip_count(m->g); i++) {
        const struct br_gossip_member *mm = br_gossip_at(m->g, i);
        if (mm->probing && !mm->probe_sent) {
            char t[BR_GOSSIP_ID_MAX];
            snprintf(t, sizeof t, "%s", mm->id);
            send_probes(m, t, ups, n_up);
            br_gossip_probe_sent(m->g, t);
        }
    }
    if (m->o.dial)
        dial_members(m, now);
    if (now < m->next_round_ms)
        return;
    m->next_round_ms = now + m->o.interval_ms;
    if (!n_up)
        return;
    struct dbset s;
    dbset_load(m, &s);
    /* fanout distinct links, from a random start */
    size_t k = n_up < m->o.fanout ? n_up : m->o.fanout;
    size_t start = randombytes_uniform((uint32_t)n_up);
    for (size_t i = 0; i < k; i++) {
        struct mlink *ml = ups[(start + i) % n_up];
        send_peers(m, ml, false);
        send_digests(m, ml, &s);
    }
    for (size_t i = 0; i < n_up; i++)
        check_mismatch(m, ups[i], &s);
    dbset_free(&s);
}

/* ---- outside ---- */

void br_mesh_discovered(br_mesh *m, const char *id, const char *addr)
{
    pthread_mutex_lock(&m->mu);
    if (m->n_queue < DISC_QUEUE) {
        snprintf(m->queue[m->n_queue].id, BR_GOSSIP_ID_MAX, "%s", id);
        snprintf(m->queue[m->n_queue].addr, BR_GOSSIP_ADDR_MAX, "%s", addr);
        m->n_queue++;
    }
    pthread_mutex_unlock(&m->mu);
}

static json_t *hlc_json(struct br_hlc h)
{
    char b[48];
    snprintf(b, sizeof b, "%llu:%u", (unsigned long long)h.wall, h.logical);
    return json_string(b);
}

static json_t *member_json(br_mesh *m, const struct br_gossip_member *mm, bool self)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(mm->id));
    json_object_set_new(o, "state", json_string(self ? "self" : br_member_state_name(mm->state)));
    json_t *a = json_array();
    for (size_t i = 0; i < mm->n_addrs; i++)
        json_array_append_new(a, json_string(mm->addrs[i]));
    json_object_set_new(o, "addresses", a);
    json_object_set_new(o, "incarnation", hlc_json(mm->inc));
    if (self)
        return o;
    uint64_t now = now_ms();
    json_object_set_new(o, "since_ms", json_integer((json_int_t)(now - mm->state_since_ms)));
    json_object_set_new(o, "last_hlc", hlc_json(mm->last_hlc));
    if (mm->has_skew)
        json_object_set_new(o, "clock_skew_ms", json_integer((json_int_t)mm->skew_ms));
    else
        json_object_set_new(o, "clock_skew_ms", json_null());
    /* link state and the last digest per database, from a link to it */
    struct link *l = NULL;
    for (struct link *k = p2p_links(m->o.p2p); k && !l; k = k->next)
        if (k->state == LINK_UP && strcmp(k->peer_text, mm->id) == 0)
            l = k;
    json_object_set_new(o, "link", json_string(l ? "up" : mm->links ? "opening" : "none"));
    json_t *dd = json_object();
    if (l) {
        json_object_set_new(o, "link_addr", json_string(l->addr));
        json_object_set_new(o, "initiator", json_boolean(l->initiator));
        pthread_mutex_lock(&l->mu);
        for (size_t i = 0; i < l->n_remote; i++)
            json_object_set_new(dd, l->remote[i].name,
                                json_pack("{s:o}", "last", hlc_json(l->remote[i].last)));
        pthread_mutex_unlock(&l->mu);
        struct mlink *ml = ml_of(l);
        for (size_t i = 0; ml && i < ml->n_recv; i++) {
            json_t *e = json_object_get(dd, ml->recv[i].name);
            if (!e)
                continue;
            char hex[33];
            sodium_bin2hex(hex, sizeof hex, ml->recv[i].hash, 16);
            json_object_set_new(e, "set_hash", json_string(hex));
            json_object_set_new(e, "diverged", json_boolean(ml->recv[i].reported));
        }
    }
    json_object_set_new(o, "digests", dd);
    return o;
}

json_t *br_mesh_peers_json(br_mesh *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "self", member_json(m, br_gossip_self(m->g), true));
    json_t *a = json_array();
    for (size_t i = 0; i < br_gossip_count(m->g); i++)
        json_array_append_new(a, member_json(m, br_gossip_at(m->g, i), false));
    json_object_set_new(o, "members", a);
    size_t al, su, de;
    br_gossip_counts(m->g, &al, &su, &de);
    json_object_set_new(o, "counts",
                        json_pack("{s:I,s:I,s:I}", "alive", (json_int_t)al, "suspect",
                                  (json_int_t)su, "dead", (json_int_t)de));
    json_object_set_new(o, "mesh_sync", json_boolean(m->o.sync));
    json_t *b = json_array();
    for (size_t i = 0; i < m->n_blocked; i++)
        json_array_append_new(b, json_string(m->blocked[i]));
    json_object_set_new(o, "blocked", b);
    return o;
}

br_err br_mesh_drop(br_mesh *m, const char *id, bool block, size_t *closed)
{
    size_t n = 0;
    bool known = br_gossip_find(m->g, id) != NULL;
    if (block && !is_blocked(m, id)) {
        if (m->n_blocked >= BR_MESH_MAX_BLOCKED || strlen(id) >= BR_GOSSIP_ID_MAX)
            return BR_ETOOBIG;
        snprintf(m->blocked[m->n_blocked++], BR_GOSSIP_ID_MAX, "%s", id);
        br_log(BR_LOG_INFO, TAG, "event=member_blocked id=%.8s", id);
    }
    for (struct link *l = p2p_links(m->o.p2p); l; l = l->next) {
        /* links up with it, and our dials to it (closing an accepted handshake would make
         * its address back off: blocked links close at mesh_link_ready instead) */
        bool up = l->state == LINK_UP && strcmp(l->peer_text, id) == 0;
        bool dialling = l->state == LINK_HS && l->initiator && strcmp(l->expect, id) == 0;
        if (!up && !dialling)
            continue;
        p2p_close(l, block ? "blocked" : "dropped");
        n++;
    }
    if (!known && !n && !block)
        return BR_ENOTFOUND;
    br_log(BR_LOG_INFO, TAG, "event=member_dropped id=%.8s links=%zu block=%d", id, n, block);
    if (closed)
        *closed = n;
    return BR_OK;
}

br_err br_mesh_unblock(br_mesh *m, const char *id)
{
    for (size_t i = 0; i < m->n_blocked; i++)
        if (strcmp(m->blocked[i], id) == 0) {
            memmove(m->blocked[i], m->blocked[i + 1],
                    (m->n_blocked - i - 1) * sizeof m->blocked[0]);
            m->n_blocked--;
            br_log(BR_LOG_INFO, TAG, "event=member_unblocked id=%.8s", id);
            return BR_OK;
        }
    return BR_ENOTFOUND;
}

void br_mesh_stats(br_mesh *m, struct br_mesh_stats *out)
{
    size_t a, su, d;
    br_gossip_counts(m->g, &a, &su, &d);
    out->alive = a;
    out->suspect = su;
    out->dead = d;
    out->gossip_sent = atomic_load(&m->gossip_sent);
    out->gossip_received = atomic_load(&m->gossip_received);
    out->digests_sent = atomic_load(&m->digests_sent);
    out->digests_received = atomic_load(&m->digests_received);
    out->pulls_started = atomic_load(&m->pulls_started);
    out->pulls_woken = atomic_load(&m->pulls_woken);
    out->refused = atomic_load(&m->refused);
    out->mismatches = atomic_load(&m->mismatches);
    for (size_t i = 0; i < BR_MESH_LAG_BUCKETS; i++)
        out->lag_buckets[i] = atomic_load(&m->lag_buckets[i]);
    out->lag_count = atomic_load(&m->lag_count);
    out->lag_sum_ms = atomic_load(&m->lag_sum_ms);
}

void br_mesh_stop(br_mesh *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_mutex_unlock(&m->mu);
    cancel_pullers(m, NULL);
    for (struct link *l = p2p_links(m->o.p2p); l; l = l->next) {
        pthread_mutex_lock(&l->mu);
        l->closed = true; /* peer endpoints' waits and requests return at once */
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
    reap_pullers(m, true);
}

void br_mesh_free(br_mesh *m)
{
    if (!m)
        return;
    br_mesh_stop(m);
    for (struct link *l = p2p_links(m->o.p2p); l; l = l->next)
        mlink_free(l);
    br_gossip_free(m->g);
    br_free(m->dbs);
    pthread_mutex_destroy(&m->mu);
    br_free(m);
}
