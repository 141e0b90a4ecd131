/* serve.c — `barrel serve`: the store, the HTTP server, the worker pool and the signal
 * thread, wired together (see serve.h).
 *
 * Signals: SIGINT and SIGTERM are blocked in every thread (the mask is set before any thread
 * starts, RocksDB's included); one small thread waits for them with sigwait() and wakes the
 * loop with lws_cancel_service(), the only libwebsockets call that is thread-safe. */
#include "barrel/serve.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <jansson.h>
#include <net/if.h>
#include <netinet/in.h>

#include "barrel/alloc.h"
#include "barrel/discovery.h"
#include "barrel/log.h"
#include "barrel/wire.h"

#include "api.h"
#include "attstream.h"
#include "auth.h"
#include "config.h"
#include "fastget.h"
#include "feed.h"
#include "http.h"
#include "idle.h"
#include "mesh.h"
#include "p2p.h"
#include "replications.h"
#include "router.h"
#include "subws.h"
#include "upload.h"
#include "workers.h"

#define DRAIN_MAX_NS (30ull * 1000000000ull)

struct node {
    struct br_api api;
    br_http_server *http;
    br_workers *workers;
    br_feeds *feeds;
    br_subws_set *subs;
    br_auth *auth; /* NULL: no credentials required */
    br_identity *identity;
    br_meshkey *mesh;
    br_trust *trust;
    br_p2p *p2p;
    br_mesh *gossip;         /* NULL: not in a mesh */
    br_discovery *discovery; /* NULL: no mDNS */
    struct br_mesh_db mesh_dbs[BR_MESH_MAX_DBS];
    char *mesh_db_text[BR_MESH_MAX_DBS];
    const char *mesh_paths[BR_MESH_MAX_DBS][16];
    char node_id[BR_NODE_ID_TEXT_LEN + 1];
    br_fastget *fast;
    br_idle *idle;
    struct upload_ctx up;
    struct br_config cfg;
    atomic_bool stop;
    sigset_t sigs;
};

struct job {
    struct node *n;
    struct br_route r;
    br_http_ex *x;
    bool verify; /* check the credentials first (slow: a worker's job) */
    bool denied;
    bool want_db; /* open the request's database for the fast GET path (fastget.h) */
    br_db *db;
};

static void unauthorized(br_http_ex *x, const char *reason)
{
    br_http_resp_error(&x->resp, 401, "unauthorized", reason);
    br_http_resp_header(&x->resp, "www-authenticate", "Basic realm=\"barrel\"");
}

static void job_run(void *arg)
{
    struct job *j = arg;
    if (j->verify && !br_auth_verify(j->n->auth, j->x->req.authorization)) {
        j->denied = true;
        return;
    }
    if (j->r.worker)
        j->r.fn(&j->n->api, j->x);
    if (j->want_db)
        j->db = br_fastget_open_for(j->n->api.store, j->x);
}

static void job_done(void *arg)
{
    struct job *j = arg;
    br_fastget_adopt(j->n->fast, j->db);
    if (j->denied) {
        unauthorized(j->x, "Name or password is incorrect.");
        br_http_respond(j->x);
        br_free(j);
        return;
    }
    if (!j->r.worker)
        j->r.fn(&j->n->api, j->x); /* a loop route that waited for the credential check */
    switch (api_cont_of(j->x)) {
    case API_CONT_FEED:
        br_feeds_start(j->n->feeds, j->x); /* a streaming _changes feed */
        break;
    case API_CONT_ATT:
        att_stream_start(j->n->workers, j->x); /* a large attachment, in pieces */
        break;
    default:
        br_http_respond(j->x);
    }
    br_free(j);
}

/* CouchDB's CORS defaults (chttpd_cors.erl). */
#define CORS_HEADERS                                                                               \
    "accept, accept-language, authorization, content-length, content-range, content-type, "        \
    "destination, if-match, if-modified-since, origin, referer, x-requested-with"
#define CORS_METHODS "GET, HEAD, POST, PUT, DELETE, COPY"
#define CORS_EXPOSE                                                                                \
    "content-type, cache-control, accept-ranges, etag, server, x-couch-request-id, "               \
    "x-couch-update-newedits, x-couchdb-body-time, x-barrel-hlc"

static bool origin_allowed(const struct br_config *c, const char *origin, bool *wildcard)
{
    *wildcard = false;
    for (size_t i = 0; i < c->n_cors_origins; i++) {
        if (strcmp(c->cors_origins[i], "*") == 0) {
            *wildcard = true;
            return true;
        }
        if (strcmp(c->cors_origins[i], origin) == 0)
            return true;
    }
    return false;
}

/* Add CORS headers for an allowed Origin; answer a preflight. True when x is answered. */
static bool cors(struct node *n, br_http_ex *x)
{
    const struct br_config *c = &n->cfg;
    bool wildcard;
    if (!c->n_cors_origins || !x->req.origin || !origin_allowed(c, x->req.origin, &wildcard))
        return false;
    /* "*" cannot go with credentials: then the request's own origin is echoed */
    bool star = wildcard && !c->cors_credentials;
    br_http_resp_header(&x->resp, "access-control-allow-origin", star ? "*" : x->req.origin);
    if (!star)
        br_http_resp_header(&x->resp, "vary", "Origin");
    if (c->cors_credentials)
        br_http_resp_header(&x->resp, "access-control-allow-credentials", "true");
    if (x->req.method != BR_HTTP_OPTIONS || !x->req.acr_method) {
        br_http_resp_header(&x->resp, "access-control-expose-headers", CORS_EXPOSE);
        return false;
    }
    char age[16];
    snprintf(age, sizeof age, "%u", c->cors_max_age);
    br_http_resp_header(&x->resp, "access-control-allow-methods",
                        c->cors_methods ? c->cors_methods : CORS_METHODS);
    br_http_resp_header(&x->resp, "access-control-allow-headers",
                        c->cors_headers ? c->cors_headers : CORS_HEADERS);
    br_http_resp_header(&x->resp, "access-control-max-age", age);
    x->resp.status = 204;
    br_http_respond(x);
    return true;
}

static void on_request(void *arg, br_http_ex *x)
{
    struct node *n = arg;
    struct br_route r;
    x->route = 0;
    if (cors(n, x))
        return;
    if (atomic_load(&n->stop)) {
        br_http_resp_error(&x->resp, 503, "service_unavailable", "the node is shutting down");
        x->close_after = true;
        br_http_respond(x);
        return;
    }
    bool matched = br_router_match(x, &r);
    x->route = br_metrics_route_id(n->api.metrics, r.name);
    if (!matched) {
        br_http_respond(x);
        return;
    }
    bool verify = false;
    if (n->auth) {
        switch (br_auth_check(n->auth, x->req.authorization)) {
        case BR_AUTH_OK:
            break;
        case BR_AUTH_VERIFY:
            verify = true;
            break;
        case BR_AUTH_MISSING:
            unauthorized(x, "Authentication required.");
            br_http_respond(x);
            return;
        default:
            unauthorized(x, "Name or password is incorrect.");
            br_http_respond(x);
            return;
        }
    }
    if (x->req.body_streamed) { /* an attachment upload: the body follows */
        if (r.fn == api_att_put) {
            upload_start(&n->up, x, &upload_att_sink, verify);
        } else if (r.fn == api_doc_put) {
            upload_start(&n->up, x, &upload_mp_doc_sink, verify);
        } else {
            br_http_resp_error(&x->resp, 500, "internal_server_error", "no streamed route");
            br_http_respond(x);
        }
        return;
    }
    if (!r.worker && !verify) {
        r.fn(&n->api, x);
        br_http_respond(x);
        return;
    }
    bool want_db = false;
    if (r.fn == api_doc_get && !verify && br_fastget_try(n->fast, x, &want_db)) {
        br_http_respond(x); /* answered from memory, on the loop */
        return;
    }
    struct job *j = br_malloc(sizeof *j);
    br_err e = j ? BR_OK : BR_ENOMEM;
    if (j) {
        *j = (struct job){.n = n, .r = r, .x = x, .verify = verify, .want_db = want_db};
        e = br_workers_submit(n->workers, job_run, job_done, j);
    }
    if (e) {
        br_free(j);
        br_http_resp_error(&x->resp, 503, "service_unavailable", "cannot queue the request");
        br_http_respond(x);
    }
}

static bool stream_body(void *arg, br_http_ex *x)
{
    (void)arg;
    return br_router_streams_body(x);
}

static void on_body_piece(void *arg, br_http_ex *x, const void *p, size_t len)
{
    (void)arg;
    upload_on_piece(x, p, len);
}

static void on_body_end(void *arg, br_http_ex *x)
{
    (void)arg;
    upload_on_end(x);
}

static void on_body_gone(void *arg, br_http_ex *x)
{
    (void)arg;
    upload_on_gone(x);
}

static void decorate(void *arg, struct br_http_resp *r)
{
    struct node *n = arg;
    char h[BR_HLC_TEXT_MAX];
    br_hlc_format(br_hlc_peek(br_store_clock(n->api.store)), h);
    br_http_resp_header(r, "x-barrel-hlc", h);
    br_http_resp_header(r, "server", "barrel/" BARREL_VERSION);
    br_http_resp_header(r, "cache-control", "must-revalidate");
}

static void on_done(void *arg, const br_http_ex *x)
{
    struct node *n = arg;
    br_metrics_request(n->api.metrics, x->route, x->resp.status,
                       br_env_mono_ns(br_env_default()) - x->t_start_ns);
    br_metrics_docs(n->api.metrics, x->docs_read, x->docs_written);
}

static void on_conn(void *arg, int delta)
{
    struct node *n = arg;
    br_metrics_connections(n->api.metrics, delta);
}

static void gauges(void *arg, struct br_metrics_gauges *g)
{
    struct node *n = arg;
    g->feeds = br_feeds_count(n->feeds);
    g->subscriptions = br_subws_count(n->subs);
    if (n->p2p) {
        g->p2p = true;
        br_p2p_bytes(n->p2p, &g->p2p_bytes_sent, &g->p2p_bytes_received);
    }
    if (n->gossip) {
        struct br_mesh_stats st;
        br_mesh_stats(n->gossip, &st);
        g->mesh = true;
        g->members_alive = st.alive;
        g->members_suspect = st.suspect;
        g->members_dead = st.dead;
        g->gossip_sent = st.gossip_sent;
        g->gossip_received = st.gossip_received;
        g->digests_sent = st.digests_sent;
        g->digests_received = st.digests_received;
        g->pulls_started = st.pulls_started;
        g->pulls_woken = st.pulls_woken;
        g->gossip_refused = st.refused;
        g->digest_mismatches = st.mismatches;
        g->n_lag = BR_MESH_LAG_BUCKETS;
        g->lag_bounds_ms = br_mesh_lag_bounds_ms;
        memcpy(g->lag_buckets, st.lag_buckets, sizeof st.lag_buckets);
        g->lag_count = st.lag_count;
        g->lag_sum_ms = st.lag_sum_ms;
    }
}

static json_t *peers_json(void *arg)
{
    struct node *n = arg;
    return n->gossip ? br_mesh_peers_json(n->gossip) : NULL;
}

static br_err peer_drop(void *arg, const char *id, bool block, size_t *closed)
{
    struct node *n = arg;
    return br_mesh_drop(n->gossip, id, block, closed);
}

static br_err peer_unblock(void *arg, const char *id)
{
    struct node *n = arg;
    return br_mesh_unblock(n->gossip, id);
}

static void on_wake(void *arg)
{
    struct node *n = arg;
    br_workers_drain(n->workers);
    br_feeds_on_wake(n->feeds);
    br_subws_on_wake(n->subs);
    if (n->p2p)
        br_p2p_on_wake(n->p2p);
}

static void on_tick(void *arg)
{
    struct node *n = arg;
    if (n->p2p)
        br_p2p_on_tick(n->p2p);
    if (n->gossip)
        br_mesh_on_tick(n->gossip);
}

static size_t links_up(void *arg)
{
    struct node *n = arg;
    return n->p2p ? br_p2p_link_count(n->p2p) : 0;
}

static bool is_p2p(struct node *n, void *user)
{
    return n->p2p && br_p2p_owns(n->p2p, user);
}

static bool on_ws_receive(void *arg, void *user, const void *in, size_t len, bool first, bool final,
                          bool binary)
{
    struct node *n = arg;
    if (!is_p2p(n, user))
        return true; /* frames from a subscriber are ignored */
    return br_p2p_ws_receive(n->p2p, user, in, len, first, final, binary);
}

static void on_ws_client_open(void *arg, void *user, br_http_ws *ws)
{
    struct node *n = arg;
    br_p2p_ws_client_open(n->p2p, user, ws);
}

/* A streaming exchange's x->user begins with its kind (api.h). */
static int stream_kind(const br_http_ex *x)
{
    return x->user ? *(const int *)x->user : 0;
}

static void on_stream_timer(void *arg, br_http_ex *x)
{
    struct node *n = arg;
    if (stream_kind(x) == API_CONT_FEED)
        br_feeds_on_timer(n->feeds, x);
}

static void on_stream_gone(void *arg, br_http_ex *x)
{
    struct node *n = arg;
    if (stream_kind(x) == API_CONT_FEED)
        br_feeds_on_gone(n->feeds, x);
    else if (stream_kind(x) == API_CONT_ATT)
        att_stream_on_gone(x);
}

static void on_stream_drained(void *arg, br_http_ex *x)
{
    (void)arg;
    if (stream_kind(x) == API_CONT_ATT)
        att_stream_on_drained(x);
}

static void *on_ws_open(void *arg, br_http_ex *x, br_http_ws *ws)
{
    struct node *n = arg;
    if (atomic_load(&n->stop))
        return NULL;
    /* Links authenticate in their own handshake (node identities, mesh key, trust lists):
     * nodes do not hold the admin's password, so /_p2p needs no HTTP credentials. */
    if (br_p2p_is_path(x))
        return br_p2p_ws_open(n->p2p, x, ws);
    /* an upgrade is rare: a first-time credential is verified here, on the loop */
    if (n->auth && br_auth_check(n->auth, x->req.authorization) != BR_AUTH_OK &&
        !br_auth_verify(n->auth, x->req.authorization)) {
        unauthorized(x, "Name or password is incorrect.");
        return NULL;
    }
    return br_subws_open(n->subs, x, ws);
}

static bool on_ws_writeable(void *arg, void *user)
{
    struct node *n = arg;
    if (is_p2p(n, user))
        return br_p2p_ws_writeable(n->p2p, user);
    return br_subws_writeable(n->subs, user);
}

static void on_ws_closed(void *arg, void *user)
{
    struct node *n = arg;
    if (is_p2p(n, user))
        br_p2p_ws_closed(n->p2p, user);
    else
        br_subws_closed(n->subs, user);
}

static void wake(void *arg)
{
    struct node *n = arg;
    br_http_wake(n->http);
}

static void *signal_main(void *arg)
{
    struct node *n = arg;
    int sig = 0;
    sigwait(&n->sigs, &sig);
    br_log(BR_LOG_INFO, "node", "event=signal sig=%d", sig);
    atomic_store(&n->stop, true);
    br_http_wake(n->http);
    return NULL;
}

static int is_loopback(const char *addr)
{
    if (strcmp(addr, "localhost") == 0 || strcmp(addr, "::1") == 0)
        return 1;
    struct in_addr a;
    if (inet_pton(AF_INET, addr, &a) == 1)
        return (ntohl(a.s_addr) >> 24) == 127;
    return 0;
}

/* Identity, mesh key and trust lists for links. Errors are printed. */
static int load_link_keys(struct node *n, const struct br_serve_opts *o, FILE *err)
{
    struct br_errbuf eb = {{0}};
    int created = 0;
    br_err e = br_identity_open(o->data, NULL, &n->identity, &created, &eb);
    if (e) {
        fprintf(err, "barrel: identity: %s\n", eb.msg[0] ? eb.msg : br_strerror(e));
        return 1;
    }
    br_nodeid_format(br_identity_node_id(n->identity), n->node_id);
    if (created)
        br_log(BR_LOG_INFO, "node", "event=identity_created node=%s", n->node_id);
    const char *mk = o->mesh_key ? o->mesh_key : n->cfg.mesh_key_file;
    if (mk && (e = br_meshkey_load(mk, &n->mesh, &eb))) {
        fprintf(err, "barrel: mesh key %s: %s\n", mk, eb.msg[0] ? eb.msg : br_strerror(e));
        return 1;
    }
    if ((e = br_trust_new(&n->trust))) {
        fprintf(err, "barrel: %s\n", br_strerror(e));
        return 1;
    }
    struct {
        const char *const *v;
        size_t n;
        bool deny;
    } lists[] = {{(const char *const *)n->cfg.allow, n->cfg.n_allow, false},
                 {o->allow, o->n_allow, false},
                 {(const char *const *)n->cfg.deny, n->cfg.n_deny, true}};
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        for (size_t i = 0; i < lists[k].n; i++) {
            struct br_node_id id;
            const char *s = lists[k].v[i];
            if ((e = br_nodeid_parse(s, strlen(s), &id, &eb))) {
                fprintf(err, "barrel: %s node id \"%s\": %s\n", lists[k].deny ? "deny" : "allow", s,
                        eb.msg);
                return 1;
            }
            e = lists[k].deny ? br_trust_deny(n->trust, &id) : br_trust_allow(n->trust, &id);
            if (e) {
                fprintf(err, "barrel: %s\n", br_strerror(e));
                return 1;
            }
        }
    }
    return 0;
}

/* The links module, and the peers to keep in sync. Errors are printed. */
static int start_p2p(struct node *n, const struct br_serve_opts *o, FILE *err)
{
    struct br_p2p_opts po = {.store = n->api.store,
                             .workers = n->workers,
                             .http = n->http,
                             .identity = n->identity,
                             .mesh = n->mesh,
                             .trust = n->trust,
                             .heartbeat_ms = n->cfg.heartbeat_ms,
                             .timeout_ms = n->cfg.timeout_ms};
    struct br_errbuf eb = {{0}};
    br_err e = br_p2p_new(&po, &n->p2p);
    for (size_t i = 0; !e && i < o->n_peers; i++)
        e = br_p2p_add_peer(n->p2p, o->peers[i], o->peer_dbs, o->n_peer_dbs, &eb);
    for (size_t i = 0; !e && i < n->cfg.n_peers; i++)
        e = br_p2p_add_peer(n->p2p, n->cfg.peers[i].url, (const char *const *)n->cfg.peers[i].dbs,
                            n->cfg.peers[i].n_dbs, &eb);
    if (e) {
        fprintf(err, "barrel: %s\n", eb.msg[0] ? eb.msg : br_strerror(e));
        return 1;
    }
    return 0;
}

/* The addresses this node announces: the bound address, or for a wildcard bind the
 * interfaces' IPv4 addresses (loopback only when there is nothing else). */
static size_t self_addrs(const char *bind, int port, char out[][BR_GOSSIP_ADDR_MAX], size_t max)
{
    size_t n = 0;
    if (strcmp(bind, "0.0.0.0") != 0 && strcmp(bind, "::") != 0) {
        if (strchr(bind, ':'))
            snprintf(out[n++], BR_GOSSIP_ADDR_MAX, "[%s]:%d", bind, port);
        else
            snprintf(out[n++], BR_GOSSIP_ADDR_MAX, "%s:%d", bind, port);
        return n;
    }
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i && n < max; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK))
                continue;
            char a[INET_ADDRSTRLEN];
            const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)i->ifa_addr;
            if (inet_ntop(AF_INET, &sin->sin_addr, a, sizeof a))
                snprintf(out[n++], BR_GOSSIP_ADDR_MAX, "%s:%d", a, port);
        }
        freeifaddrs(ifs);
    }
    if (!n)
        snprintf(out[n++], BR_GOSSIP_ADDR_MAX, "127.0.0.1:%d", port);
    return n;
}

/* The mesh, when this node is in one. Errors are printed. */
static int start_mesh(struct node *n, const struct br_serve_opts *o, const char *bind, int port,
                      FILE *err)
{
    bool on = (n->mesh || o->mesh) && !o->no_mesh;
    if (!on)
        return 0;
    if (o->n_mesh_dbs > BR_MESH_MAX_DBS) {
        fprintf(err, "barrel: at most %d --mesh-db\n", BR_MESH_MAX_DBS);
        return 1;
    }
    for (size_t i = 0; i < o->n_mesh_dbs; i++) {
        char *t = br_malloc(strlen(o->mesh_dbs[i]) + 1);
        if (!t)
            return 1;
        memcpy(t, o->mesh_dbs[i], strlen(o->mesh_dbs[i]) + 1);
        n->mesh_db_text[i] = t;
        struct br_mesh_db *d = &n->mesh_dbs[i];
        char *eq = strchr(t, '=');
        d->name = t;
        d->paths = n->mesh_paths[i];
        if (eq) {
            *eq = '\0';
            for (char *p = eq + 1; p && *p && d->n_paths < 16;) {
                char *bar = strchr(p, '|');
                if (bar)
                    *bar = '\0';
                n->mesh_paths[i][d->n_paths++] = p;
                p = bar ? bar + 1 : NULL;
            }
        }
        if (!br_db_name_valid(d->name, strlen(d->name), false)) {
            fprintf(err, "barrel: --mesh-db %s: not a database name\n", d->name);
            return 1;
        }
    }
    char addrs[4][BR_GOSSIP_ADDR_MAX];
    size_t na = self_addrs(bind, port, addrs, 4);
    const char *ap[4];
    for (size_t i = 0; i < na; i++)
        ap[i] = addrs[i];
    struct br_mesh_opts mo = {.store = n->api.store,
                              .p2p = n->p2p,
                              .self_id = n->node_id,
                              .self_addrs = ap,
                              .n_self_addrs = na,
                              .sync = true,
                              .dial = !o->no_dial,
                              .dbs = o->n_mesh_dbs ? n->mesh_dbs : NULL,
                              .n_dbs = o->n_mesh_dbs,
                              .interval_ms = o->gossip_interval_ms,
                              .fanout = o->gossip_fanout,
                              .max_links = o->max_links,
                              .probe_ms = o->probe_ms,
                              .dead_ms = o->dead_ms};
    struct br_errbuf eb = {{0}};
    br_err e = br_mesh_new(&mo, &n->gossip, &eb);
    if (e) {
        fprintf(err, "barrel: %s\n", eb.msg[0] ? eb.msg : br_strerror(e));
        return 1;
    }
    br_p2p_set_mesh(n->p2p, n->gossip);
    n->api.peers = peers_json;
    n->api.peer_drop = peer_drop;
    n->api.peer_unblock = peer_unblock;
    /* static peers are members too: dialled by their dialers, known to gossip once linked */
    br_log(BR_LOG_INFO, "mesh", "event=mesh_on addr=%s dbs=%s", addrs[0],
           o->n_mesh_dbs ? "listed" : "all");
    return 0;
}

/* mDNS (Avahi's thread): a member found on the LAN goes to the mesh's queue. */
static void on_found(void *arg, const struct br_discovery_peer *p)
{
    struct node *n = arg;
    if (p->version != BR_WIRE_VERSION) {
        br_log(BR_LOG_INFO, "mdns", "event=mdns_ignored id=%.8s reason=version v=%u", p->id,
               (unsigned)p->version);
        return;
    }
    char addr[BR_GOSSIP_ADDR_MAX];
    if (p->family == AF_INET6) {
        if (strncmp(p->addr, "fe80", 4) == 0)
            return; /* link-local needs a scope this address form does not carry */
        snprintf(addr, sizeof addr, "[%s]:%u", p->addr, (unsigned)p->port);
    } else {
        snprintf(addr, sizeof addr, "%s:%u", p->addr, (unsigned)p->port);
    }
    br_log(BR_LOG_INFO, "mdns", "event=mdns_found id=%.8s addr=%s", p->id, addr);
    br_mesh_discovered(n->gossip, p->id, addr);
}

static void on_lost(void *arg, const char *id)
{
    (void)arg;
    br_log(BR_LOG_INFO, "mdns", "event=mdns_lost id=%.8s", id); /* gossip decides liveness */
}

static void start_mdns(struct node *n, const struct br_serve_opts *o, int port)
{
    if (!n->gossip || o->no_mdns)
        return;
    char fp[BR_MESHKEY_FINGERPRINT_LEN + 1] = "";
    if (n->mesh)
        br_meshkey_fingerprint(n->mesh, fp);
    struct br_discovery_opts d = {.id = n->node_id,
                                  .mesh = fp,
                                  .version = BR_WIRE_VERSION,
                                  .port = (uint16_t)port,
                                  .found = on_found,
                                  .lost = on_lost,
                                  .arg = n};
    struct br_errbuf eb = {{0}};
    if (br_discovery_start(&d, &n->discovery, &eb))
        br_log(BR_LOG_WARN, "mdns", "event=mdns_unavailable reason=\"%s\"", eb.msg);
}

static void stop_mesh(struct node *n)
{
    br_discovery_free(n->discovery); /* its thread stops before the mesh goes */
    n->discovery = NULL;
    if (!n->gossip)
        return;
    br_mesh_stop(n->gossip);
    br_p2p_set_mesh(n->p2p, NULL);
    br_mesh_free(n->gossip);
    n->gossip = NULL;
    n->api.peers = NULL;
}

int br_serve_run(const struct br_serve_opts *o, FILE *out, FILE *err)
{
    struct node n;
    memset(&n, 0, sizeof n);
    atomic_init(&n.stop, false);
    n.cfg.port = -1;
    struct br_errbuf ceb = {{0}};
    if (o->config && br_config_load(o->config, &n.cfg, &ceb)) {
        fprintf(err, "barrel: %s\n", ceb.msg);
        return 1;
    }
    const char *bind = o->bind ? o->bind : n.cfg.bind ? n.cfg.bind : BR_SERVE_DEFAULT_BIND;
    int port = o->port >= 0 ? o->port : n.cfg.port >= 0 ? n.cfg.port : BR_SERVE_DEFAULT_PORT;
    if (n.cfg.admin_user && br_auth_new(n.cfg.admin_user, n.cfg.admin_hash, &n.auth, &ceb)) {
        fprintf(err, "barrel: config %s: %s\n", o->config, ceb.msg);
        br_config_fini(&n.cfg);
        return 1;
    }
    if (!is_loopback(bind) && !n.auth) {
        fprintf(err,
                "barrel: refusing to listen on %s without admin credentials: set \"admin\": "
                "{\"username\", \"password_hash\"} in the --config file (hash from `barrel "
                "passwd`), or bind to 127.0.0.1\n",
                bind);
        br_config_fini(&n.cfg);
        return 1;
    }
    sigemptyset(&n.sigs);
    sigaddset(&n.sigs, SIGINT);
    sigaddset(&n.sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &n.sigs, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client or a log reader that went away is not fatal */
    json_object_seed(0);      /* before any thread builds a JSON object */

    int rc = 1;
    struct br_errbuf eb = {{0}};
    struct br_store_opts so = {.path = o->data,
                               .cache_bytes =
                                   o->cache_bytes ? o->cache_bytes : BR_SERVE_DEFAULT_CACHE_BYTES};
    br_err e = br_store_open(&so, &n.api.store, &eb);
    if (e) {
        fprintf(err, "barrel: %s\n", eb.msg[0] ? eb.msg : br_strerror(e));
        goto out;
    }
    if (load_link_keys(&n, o, err))
        goto out;
    n.api.node_id = n.node_id;
    n.api.links = links_up;
    n.api.start_mono_ns = br_env_mono_ns(br_store_env(n.api.store));
    n.api.max_body = o->max_body ? o->max_body : BR_SERVE_DEFAULT_MAX_BODY;
    if ((e = br_metrics_new(&n.api.metrics))) {
        fprintf(err, "barrel: %s\n", br_strerror(e));
        goto out;
    }
    if ((e = br_repmgr_new(n.api.store, o->data, &n.api.reps))) {
        fprintf(err, "barrel: %s\n", br_strerror(e));
        goto out;
    }
    n.api.gauges = gauges;
    n.api.gauges_arg = &n;
    struct br_http_opts ho = {
        .bind = bind,
        .port = port,
        .max_body = n.api.max_body,
        .max_stream_body = o->max_attachment ? o->max_attachment : BR_SERVE_DEFAULT_MAX_ATTACHMENT,
        .stream_body = stream_body,
        .on_body_piece = on_body_piece,
        .on_body_end = on_body_end,
        .on_body_gone = on_body_gone,
        .request_timeout_s =
            o->request_timeout_s ? o->request_timeout_s : BR_SERVE_DEFAULT_TIMEOUT_S,
        .keepalive_timeout_s = 60,
        .on_request = on_request,
        .decorate = decorate,
        .on_wake = on_wake,
        .on_stream_timer = on_stream_timer,
        .on_stream_gone = on_stream_gone,
        .on_stream_drained = on_stream_drained,
        .on_done = on_done,
        .on_conn = on_conn,
        .on_ws_open = on_ws_open,
        .on_ws_writeable = on_ws_writeable,
        .on_ws_closed = on_ws_closed,
        .on_ws_receive = on_ws_receive,
        .on_ws_client_open = on_ws_client_open,
        .on_tick = on_tick,
        .tick_ms = 100,
        .arg = &n,
    };
    unsigned idle_s =
        o->idle_flush_s < 0 ? BR_SERVE_DEFAULT_IDLE_FLUSH_S : (unsigned)o->idle_flush_s;
    if ((e = br_idle_start(n.api.store, idle_s, &n.idle))) {
        fprintf(err, "barrel: %s\n", br_strerror(e));
        goto out;
    }
    if ((e = br_fastget_new(n.api.store, !o->no_fast_get, &n.fast))) {
        fprintf(err, "barrel: %s\n", br_strerror(e));
        goto out;
    }
    if ((e = br_subws_new(n.api.store, n.api.metrics, wake, &n, &n.subs))) {
        fprintf(err, "barrel: %s\n", br_strerror(e));
        goto out;
    }
    if ((e = br_http_server_new(&ho, &n.http, &eb))) {
        fprintf(err, "barrel: %s\n", eb.msg);
        goto out;
    }
    if ((e = br_workers_new(o->workers ? o->workers : 2, wake, &n, &n.workers))) {
        fprintf(err, "barrel: cannot start worker threads: %s\n", br_strerror(e));
        goto out;
    }
    n.up = (struct upload_ctx){.api = &n.api, .w = n.workers, .auth = n.auth};
    if ((e = br_feeds_new(n.workers, wake, &n, &n.feeds))) {
        fprintf(err, "barrel: %s\n", br_strerror(e));
        goto out;
    }
    if (start_p2p(&n, o, err))
        goto out;
    br_repmgr_set_p2p(n.api.reps, n.p2p);
    if (start_mesh(&n, o, bind, br_http_server_port(n.http), err))
        goto out;
    start_mdns(&n, o, br_http_server_port(n.http));
    pthread_t sig_thread;
    if (pthread_create(&sig_thread, NULL, signal_main, &n) != 0) {
        fprintf(err, "barrel: cannot start the signal thread\n");
        goto out;
    }
    fprintf(out, "barrel: listening on http://%s:%d data=%s node=%s\n", bind,
            br_http_server_port(n.http), o->data, n.node_id);
    fflush(out);
    br_log(BR_LOG_INFO, "node", "event=listening addr=%s port=%d data=%s node=%s", bind,
           br_http_server_port(n.http), o->data, n.node_id);
    while (!atomic_load(&n.stop))
        br_http_server_service(n.http);
    /* Stopping: new requests get 503; in-flight ones finish and are answered; feeds end as at
     * their timeout. */
    br_feeds_stop(n.feeds);
    br_repmgr_stop(n.api.reps); /* before the links stop: peer endpoints need the loop */
    stop_mesh(&n);              /* its pulls end; their threads are joined */
    br_p2p_stop(n.p2p);         /* replications end; their threads are joined */
    uint64_t t0 = br_env_mono_ns(br_env_default());
    while ((br_workers_pending(n.workers) > 0 || br_http_server_inflight(n.http) > 0) &&
           br_env_mono_ns(br_env_default()) - t0 < DRAIN_MAX_NS)
        br_http_server_service(n.http);
    pthread_join(sig_thread, NULL);
    br_log(BR_LOG_INFO, "node", "event=stopped");
    rc = 0;
out:
    br_repmgr_stop(n.api.reps);
    stop_mesh(&n);
    br_p2p_stop(n.p2p);
    br_workers_free(n.workers); /* finishes queued jobs; their answers are queued to write */
    n.up.w = NULL;              /* an upload whose client leaves now aborts on the loop */
    br_feeds_free(n.feeds);
    br_http_server_free(n.http); /* closes connections */
    br_fastget_free(n.fast);
    br_idle_stop(n.idle);
    br_subws_free(n.subs);
    br_repmgr_free(n.api.reps); /* cancels running replications; persisted ones stay */
    br_p2p_free(n.p2p);         /* after the server closed its links */
    br_store_close(n.api.store);
    br_trust_free(n.trust);
    br_meshkey_free(n.mesh);
    br_identity_free(n.identity);
    br_metrics_free(n.api.metrics);
    br_auth_free(n.auth);
    br_config_fini(&n.cfg);
    for (size_t i = 0; i < BR_MESH_MAX_DBS; i++)
        br_free(n.mesh_db_text[i]);
    return rc;
}
