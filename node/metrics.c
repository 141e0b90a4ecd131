/* metrics.c — counters and the Prometheus text rendering (see metrics.h). */
#include "metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"

#define STATUS_MIN 100
#define STATUS_N 500 /* 100..599 */

static const double BUCKETS_S[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                   0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
#define N_BUCKETS (sizeof BUCKETS_S / sizeof BUCKETS_S[0])

struct route {
    _Atomic(const char *) name;
    atomic_uint_fast64_t status[STATUS_N];
    atomic_uint_fast64_t bucket[N_BUCKETS + 1]; /* last: +Inf */
    atomic_uint_fast64_t sum_ns;
};

struct br_metrics {
    struct route r[BR_METRICS_ROUTES];
    atomic_uint n_routes;
    atomic_uint_fast64_t docs_read, docs_written, ws_overflows;
    atomic_int_fast64_t connections;
};

br_err br_metrics_new(br_metrics **out)
{
    br_metrics *m = br_calloc(1, sizeof *m);
    if (!m)
        return BR_ENOMEM;
    atomic_store(&m->r[0].name, "unmatched");
    atomic_store(&m->n_routes, 1);
    *out = m;
    return BR_OK;
}

void br_metrics_free(br_metrics *m)
{
    br_free(m);
}

unsigned br_metrics_route_id(br_metrics *m, const char *name)
{
    unsigned n = atomic_load_explicit(&m->n_routes, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        const char *s = atomic_load_explicit(&m->r[i].name, memory_order_relaxed);
        if (s == name || strcmp(s, name) == 0)
            return i;
    }
    if (n >= BR_METRICS_ROUTES)
        return 0;
    atomic_store_explicit(&m->r[n].name, name, memory_order_relaxed);
    atomic_store_explicit(&m->n_routes, n + 1, memory_order_release);
    return n;
}

void br_metrics_request(br_metrics *m, unsigned route, int status, uint64_t latency_ns)
{
    if (!m)
        return;
    struct route *r = &m->r[route < BR_METRICS_ROUTES ? route : 0];
    if (status >= STATUS_MIN && status < STATUS_MIN + STATUS_N)
        atomic_fetch_add_explicit(&r->status[status - STATUS_MIN], 1, memory_order_relaxed);
    size_t b = 0;
    double s = (double)latency_ns / 1e9;
    while (b < N_BUCKETS && s > BUCKETS_S[b])
        b++;
    atomic_fetch_add_explicit(&r->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->sum_ns, latency_ns, memory_order_relaxed);
}

void br_metrics_docs(br_metrics *m, uint64_t read, uint64_t written)
{
    if (!m)
        return;
    if (read)
        atomic_fetch_add_explicit(&m->docs_read, read, memory_order_relaxed);
    if (written)
        atomic_fetch_add_explicit(&m->docs_written, written, memory_order_relaxed);
}

void br_metrics_connections(br_metrics *m, int delta)
{
    if (m)
        atomic_fetch_add_explicit(&m->connections, delta, memory_order_relaxed);
}

void br_metrics_ws_overflow(br_metrics *m)
{
    if (m)
        atomic_fetch_add_explicit(&m->ws_overflows, 1, memory_order_relaxed);
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static br_err
put(br_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        return BR_EINVAL;
    return br_buf_append(b, line, (size_t)n);
}

/* Database names may hold characters a label value must escape: \ " and newline never occur
 * in a valid name, so they are passed through as they are. */
static br_err render_requests(br_metrics *m, br_buf *b)
{
    br_err e = put(b, "# HELP barrel_http_requests_total HTTP requests answered, by route and "
                      "status.\n# TYPE barrel_http_requests_total counter\n");
    unsigned n = atomic_load(&m->n_routes);
    for (unsigned i = 0; !e && i < n; i++) {
        const char *name = atomic_load(&m->r[i].name);
        for (int s = 0; !e && s < STATUS_N; s++) {
            uint64_t v = atomic_load_explicit(&m->r[i].status[s], memory_order_relaxed);
            if (v)
                e = put(b, "barrel_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", name,
                        s + STATUS_MIN, (unsigned long long)v);
        }
    }
    if (!e)
        e = put(b, "# HELP barrel_http_request_duration_seconds Time from request line to last "
                   "byte written.\n# TYPE barrel_http_request_duration_seconds histogram\n");
    for (unsigned i = 0; !e && i < n; i++) {
        struct route *r = &m->r[i];
        const char *name = atomic_load(&r->name);
        uint64_t cum = 0;
        for (size_t k = 0; !e && k <= N_BUCKETS; k++) {
            cum += atomic_load_explicit(&r->bucket[k], memory_order_relaxed);
            if (k < N_BUCKETS)
                e = put(b,
                        "barrel_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                        "%llu\n",
                        name, BUCKETS_S[k], (unsigned long long)cum);
            else
                e = put(b,
                        "barrel_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} "
                        "%llu\n",
                        name, (unsigned long long)cum);
        }
        if (!e)
            e = put(b, "barrel_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n", name,
                    (double)atomic_load_explicit(&r->sum_ns, memory_order_relaxed) / 1e9);
        if (!e)
            e = put(b, "barrel_http_request_duration_seconds_count{route=\"%s\"} %llu\n", name,
                    (unsigned long long)cum);
    }
    return e;
}

static br_err render_store(br_store *store, br_buf *b)
{
    char **names = NULL;
    size_t n = 0;
    if (br_store_db_list(store, &names, &n) != BR_OK)
        return BR_OK; /* sizes are best effort */
    br_err e = put(b, "# HELP barrel_db_docs Live documents per database.\n"
                      "# TYPE barrel_db_docs gauge\n");
    struct br_db_info *in = br_calloc(n ? n : 1, sizeof *in);
    bool *ok = br_calloc(n ? n : 1, sizeof *ok);
    if (!in || !ok)
        e = BR_ENOMEM;
    for (size_t i = 0; !e && i < n; i++) {
        br_db *db = NULL;
        if (br_store_db_open(store, names[i], &db) == BR_OK) {
            ok[i] = br_db_info(db, &in[i]) == BR_OK;
            br_db_close(db);
        }
        if (ok[i])
            e = put(b, "barrel_db_docs{db=\"%s\"} %llu\n", names[i],
                    (unsigned long long)in[i].doc_count);
    }
    if (!e)
        e = put(b, "# HELP barrel_db_size_bytes Approximate bytes per database (file: on disk, "
                   "active: live revisions, external: user data).\n"
                   "# TYPE barrel_db_size_bytes gauge\n");
    for (size_t i = 0; !e && i < n; i++) {
        if (!ok[i])
            continue;
        e = put(b, "barrel_db_size_bytes{db=\"%s\",kind=\"file\"} %llu\n", names[i],
                (unsigned long long)in[i].size_file);
        if (!e)
            e = put(b, "barrel_db_size_bytes{db=\"%s\",kind=\"active\"} %llu\n", names[i],
                    (unsigned long long)in[i].size_active);
        if (!e)
            e = put(b, "barrel_db_size_bytes{db=\"%s\",kind=\"external\"} %llu\n", names[i],
                    (unsigned long long)in[i].size_external);
    }
    br_free(in);
    br_free(ok);
    br_store_names_free(names, n);
    return e;
}

br_err br_metrics_render(br_metrics *m, const struct br_metrics_gauges *g, br_store *store,
                         br_buf *out)
{
    br_err e = render_requests(m, out);
    if (!e)
        e = put(out,
                "# HELP barrel_docs_read_total Documents read through the API.\n"
                "# TYPE barrel_docs_read_total counter\nbarrel_docs_read_total %llu\n"
                "# HELP barrel_docs_written_total Documents written through the API.\n"
                "# TYPE barrel_docs_written_total counter\nbarrel_docs_written_total %llu\n",
                (unsigned long long)atomic_load(&m->docs_read),
                (unsigned long long)atomic_load(&m->docs_written));
    if (!e)
        e = put(out,
                "# HELP barrel_http_connections Open HTTP and WebSocket connections.\n"
                "# TYPE barrel_http_connections gauge\nbarrel_http_connections %lld\n"
                "# HELP barrel_changes_listeners Open streaming _changes feeds.\n"
                "# TYPE barrel_changes_listeners gauge\nbarrel_changes_listeners %llu\n",
                (long long)atomic_load(&m->connections), (unsigned long long)g->feeds);
    if (!e)
        e = put(out,
                "# HELP barrel_subscriptions Open WebSocket _subscribe streams.\n"
                "# TYPE barrel_subscriptions gauge\nbarrel_subscriptions %llu\n"
                "# HELP barrel_subscription_overflows_total Subscriptions closed for a slow "
                "consumer.\n# TYPE barrel_subscription_overflows_total counter\n"
                "barrel_subscription_overflows_total %llu\n"
                "# HELP barrel_uptime_seconds Seconds since the node started.\n"
                "# TYPE barrel_uptime_seconds gauge\nbarrel_uptime_seconds %llu\n",
                (unsigned long long)g->subscriptions,
                (unsigned long long)atomic_load(&m->ws_overflows), (unsigned long long)g->uptime_s);
    if (!e && g->p2p)
        e = put(out,
                "# HELP barrel_p2p_bytes_sent_total Bytes sent on /_p2p links (handshake and "
                "sealed frames with their WebSocket headers).\n"
                "# TYPE barrel_p2p_bytes_sent_total counter\nbarrel_p2p_bytes_sent_total %llu\n"
                "# HELP barrel_p2p_bytes_received_total Bytes received on /_p2p links.\n"
                "# TYPE barrel_p2p_bytes_received_total counter\n"
                "barrel_p2p_bytes_received_total %llu\n",
                (unsigned long long)g->p2p_bytes_sent, (unsigned long long)g->p2p_bytes_received);
    if (!e && g->mesh)
        e = put(out,
                "# HELP barrel_mesh_members Members of the mesh by state (this node excluded).\n"
                "# TYPE barrel_mesh_members gauge\n"
                "barrel_mesh_members{state=\"alive\"} %llu\n"
                "barrel_mesh_members{state=\"suspect\"} %llu\n"
                "barrel_mesh_members{state=\"dead\"} %llu\n",
                (unsigned long long)g->members_alive, (unsigned long long)g->members_suspect,
                (unsigned long long)g->members_dead);
    if (!e && g->mesh)
        e = put(out,
                "# HELP barrel_gossip_messages_total Gossip messages (member entries) by "
                "direction.\n"
                "# TYPE barrel_gossip_messages_total counter\n"
                "barrel_gossip_messages_total{dir=\"sent\"} %llu\n"
                "barrel_gossip_messages_total{dir=\"received\"} %llu\n"
                "# HELP barrel_digests_total Database digests sent by gossip rounds and received "
                "from members.\n"
                "# TYPE barrel_digests_total counter\n"
                "barrel_digests_total{dir=\"sent\"} %llu\n"
                "barrel_digests_total{dir=\"received\"} %llu\n",
                (unsigned long long)g->gossip_sent, (unsigned long long)g->gossip_received,
                (unsigned long long)g->digests_sent, (unsigned long long)g->digests_received);
    if (!e && g->mesh)
        e = put(out,
                "# HELP barrel_mesh_pulls_started_total Pulls of a mesh database started for a "
                "linked member.\n# TYPE barrel_mesh_pulls_started_total counter\n"
                "barrel_mesh_pulls_started_total %llu\n"
                "# HELP barrel_mesh_pulls_woken_total Digests that showed a member's database "
                "past what our pull had seen, waking it.\n"
                "# TYPE barrel_mesh_pulls_woken_total counter\n"
                "barrel_mesh_pulls_woken_total %llu\n",
                (unsigned long long)g->pulls_started, (unsigned long long)g->pulls_woken);
    if (!e && g->mesh)
        e = put(out,
                "# HELP barrel_gossip_refused_total Gossip entries refused (hostile or "
                "malformed).\n"
                "# TYPE barrel_gossip_refused_total counter\nbarrel_gossip_refused_total %llu\n"
                "# HELP barrel_digest_mismatches_total Members whose set hash of a database "
                "stayed different from ours with nothing left to pull.\n"
                "# TYPE barrel_digest_mismatches_total counter\n"
                "barrel_digest_mismatches_total %llu\n",
                (unsigned long long)g->gossip_refused, (unsigned long long)g->digest_mismatches);
    if (!e && g->mesh && g->n_lag <= 16) {
        e = put(out, "# HELP barrel_mesh_arrival_lag_seconds From a change's commit at the member "
                     "it was pulled from to its write here (per batch, its newest change).\n"
                     "# TYPE barrel_mesh_arrival_lag_seconds histogram\n");
        uint64_t cum = 0;
        for (size_t i = 0; !e && i < g->n_lag; i++) {
            cum += g->lag_buckets[i];
            e = put(out, "barrel_mesh_arrival_lag_seconds_bucket{le=\"%g\"} %llu\n",
                    (double)g->lag_bounds_ms[i] / 1000.0, (unsigned long long)cum);
        }
        if (!e)
            e = put(out,
                    "barrel_mesh_arrival_lag_seconds_bucket{le=\"+Inf\"} %llu\n"
                    "barrel_mesh_arrival_lag_seconds_sum %.3f\n"
                    "barrel_mesh_arrival_lag_seconds_count %llu\n",
                    (unsigned long long)g->lag_count, (double)g->lag_sum_ms / 1000.0,
                    (unsigned long long)g->lag_count);
    }
    if (!e)
        e = render_store(store, out);
    return e;
}
