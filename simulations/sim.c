/* sim.c — barrel-sim: run a scenario (SCENARIOS.md) on N simulated nodes with a seed, check the
 * invariants, print a summary, a CSV row and the replay command of a failing seed.
 *
 *   barrel-sim SCENARIO --seed N [--seeds A-B] [--nodes N] [--trace FILE] [--csv FILE]
 *              [--latency-csv FILE] [--quiet]
 *
 * Exit status: 0 when every run's invariants hold, 1 when one does not, 2 for bad usage. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ftw.h>

#include "barrel/alloc.h"
#include "barrel/json.h"
#include "barrel/log.h"

#include "sim_int.h"

#define CHECK_EVERY_US 20000 /* convergence is looked at every 20 ms of virtual time */

/* ---- shared with the other files ---- */

void sim_trace(struct sim *s, const char *fmt, ...)
{
    if (!s->trace)
        return;
    fprintf(s->trace, "%llu.%03llu ", (unsigned long long)(s->now_us / 1000),
            (unsigned long long)(s->now_us % 1000));
    va_list ap;
    va_start(ap, fmt);
    vfprintf(s->trace, fmt, ap);
    va_end(ap);
    fputc('\n', s->trace);
}

uint64_t sim_now_ms(const struct sim *s)
{
    return s->now_us / 1000;
}

void sim_at(struct sim *s, uint64_t at_us, br_timer_fn fn, void *arg)
{
    uint64_t id;
    if (br_timerq_add(s->q, at_us, fn, arg, &id)) {
        fprintf(stderr, "barrel-sim: out of memory\n");
        abort();
    }
}

/* ---- the scenario's events ---- */

struct ev_sc {
    struct sim *s;
    size_t i; /* index into sc->events; (size_t)-1: start node `node` */
    unsigned node;
    uint64_t churn_at; /* churn: this tick's time */
};

static bool *select_nodes(struct sim *s, const char *sel)
{
    bool *v = br_calloc(s->n, sizeof *v);
    if (!v)
        abort();
    struct br_errbuf eb = {{0}};
    if (sc_sel_resolve(sel, s->n, &s->sel_rng, v, &eb)) {
        fprintf(stderr, "barrel-sim: selector \"%s\": %s\n", sel, eb.msg);
        memset(v, 0, s->n * sizeof *v);
    }
    return v;
}

static void start_node(struct sim *s, unsigned i)
{
    struct snode *nd = &s->nodes[i];
    if (nd->up)
        return;
    struct br_errbuf eb = {{0}};
    if (sim_node_start(s, nd, &eb)) {
        fprintf(stderr, "barrel-sim: cannot start n%u: %s\n", i, eb.msg);
        exit(1);
    }
}

static unsigned doc_seq[SC_MAX_NODES][SC_MAX_DBS];
static unsigned shared_seq[SC_MAX_DBS];

static void client_put(struct sim *s, struct snode *nd, unsigned dbi, const char *id,
                       const struct br_rev *parent, bool deleted)
{
    char text[160];
    int len = snprintf(text, sizeof text, "{\"site\":\"site-%u\",\"node\":%u,\"value\":%llu}",
                       nd->idx % 4, nd->idx, (unsigned long long)(sc_rand(&s->data_rng) % 100000));
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    if (br_json_doc_parse_text(text, (size_t)len, 1u << 20, NULL, &d, &eb))
        abort();
    struct br_put p = {.id = id,
                       .id_len = strlen(id),
                       .rev = parent,
                       .deleted = deleted,
                       .body = deleted ? NULL : d.body.data,
                       .body_len = deleted ? 0 : d.body.len,
                       .body_trusted = true};
    struct br_put_result r;
    struct br_write_opts wo = {BR_SYNC_NONE, true};
    br_err e = br_db_put(nd->dbs[dbi], &p, &wo, &r);
    br_json_doc_fini(&d);
    if (e) {
        if (s->trace)
            sim_trace(s, "n%u write %s/%s refused err=%s", nd->idx, s->sc->dbs[dbi], id,
                      br_errname(e));
        return;
    }
    nd->writes++;
    s->last_write_us = s->now_us;
    if (!s->n_w) { /* the traffic the changes cause is counted from the first */
        s->msgs_changes = s->msgs;
        s->bytes_changes = s->bytes;
    }
    sim_record_write(s, nd->idx, dbi, id, &r.rev, deleted);
    if (s->trace) {
        char t[BR_REV_TEXT_MAX];
        br_rev_format(&r.rev, t);
        sim_trace(s, "n%u write %s/%s rev=%s%s", nd->idx, s->sc->dbs[dbi], id, t,
                  deleted ? " deleted" : "");
    }
}

struct first_k {
    char (*ids)[32];
    struct br_rev *revs;
    size_t n, k;
};

static int take_doc(void *arg, const char *id, size_t id_len, const struct br_rev *rev,
                    const struct br_doc *doc)
{
    (void)doc;
    struct first_k *f = arg;
    if (f->n >= f->k)
        return 1;
    if (id_len >= 32)
        return 0;
    memcpy(f->ids[f->n], id, id_len);
    f->ids[f->n][id_len] = '\0';
    f->revs[f->n] = *rev;
    f->n++;
    return 0;
}

static void do_writes(struct sim *s, const struct sc_event *ev)
{
    int dbi = -1;
    for (size_t i = 0; i < s->sc->n_dbs; i++)
        if (strcmp(s->sc->dbs[i], ev->db) == 0)
            dbi = (int)i;
    if (dbi < 0)
        return;
    bool *sel = select_nodes(s, ev->nodes);
    unsigned base = shared_seq[dbi];
    if (ev->kind == SC_WRITE && ev->shared)
        shared_seq[dbi] += ev->docs;
    for (unsigned i = 0; i < s->n; i++) {
        struct snode *nd = &s->nodes[i];
        if (!sel[i] || !nd->up)
            continue;
        if (ev->kind == SC_WRITE) {
            for (unsigned k = 0; k < ev->docs; k++) {
                char id[32];
                if (ev->shared)
                    snprintf(id, sizeof id, "s-%u", base + k);
                else
                    snprintf(id, sizeof id, "n%u-%u", i, doc_seq[i][dbi]++);
                client_put(s, nd, (unsigned)dbi, id, NULL, false);
            }
            continue;
        }
        struct first_k f = {br_calloc(ev->docs ? ev->docs : 1, 32),
                            br_calloc(ev->docs ? ev->docs : 1, sizeof(struct br_rev)), 0, ev->docs};
        if (!f.ids || !f.revs)
            abort();
        struct br_alldocs_opts o = {.inclusive_end = true};
        if (br_db_all_docs(nd->dbs[dbi], &o, take_doc, &f, NULL) == BR_OK)
            for (size_t k = 0; k < f.n; k++)
                client_put(s, nd, (unsigned)dbi, f.ids[k], &f.revs[k], ev->kind == SC_DELETE);
        br_free(f.ids);
        br_free(f.revs);
    }
    br_free(sel);
}

static void ev_restart(void *arg)
{
    struct ev_sc *e = arg;
    if (!e->s->nodes[e->node].up && !e->s->stopping)
        start_node(e->s, e->node);
    br_free(e);
}

static void ev_churn(void *arg)
{
    struct ev_sc *e = arg;
    struct sim *s = e->s;
    if (s->stopping) {
        br_free(e);
        return;
    }
    const struct sc_event *ev = &s->sc->events[e->i];
    bool *sel = select_nodes(s, ev->nodes);
    unsigned live[SC_MAX_NODES], n = 0;
    for (unsigned i = 0; i < s->n; i++)
        if (sel[i] && s->nodes[i].up)
            live[n++] = i;
    br_free(sel);
    if (n) {
        unsigned v = live[sc_rand(&s->sel_rng) % n];
        sim_node_crash(s, &s->nodes[v], "crash (churn)");
        struct ev_sc *r = br_calloc(1, sizeof *r);
        if (!r)
            abort();
        r->s = s;
        r->node = v;
        sim_at(s, s->now_us + ev->down_ms * 1000, ev_restart, r);
    }
    uint64_t next = e->churn_at + ev->every_ms * 1000;
    if (next < ev->until_ms * 1000) {
        e->churn_at = next;
        sim_at(s, next, ev_churn, e);
    } else {
        br_free(e);
    }
}

static void ev_scenario(void *arg)
{
    struct ev_sc *e = arg;
    struct sim *s = e->s;
    if (s->stopping) {
        br_free(e);
        return;
    }
    if (e->i == (size_t)-1) {
        start_node(s, e->node);
        br_free(e);
        return;
    }
    const struct sc_event *ev = &s->sc->events[e->i];
    if (s->trace)
        sim_trace(s, "scenario line %u: %s", ev->line, sc_kind_name(ev->kind));
    bool *sel = NULL;
    switch (ev->kind) {
    case SC_WRITE:
    case SC_UPDATE:
    case SC_DELETE:
        do_writes(s, ev);
        break;
    case SC_PARTITION: {
        bool *a = select_nodes(s, ev->nodes), *b = select_nodes(s, ev->nodes2);
        for (unsigned i = 0; i < s->n; i++)
            s->part[i] = a[i] ? 1 : b[i] ? 2 : 0;
        br_free(a);
        br_free(b);
        s->cut = true;
        sim_partition_changed(s);
        break;
    }
    case SC_HEAL:
        memset(s->part, 0, s->n);
        s->cut = false;
        sim_partition_changed(s);
        break;
    case SC_CUT: {
        unsigned a = ev->a == UINT32_MAX ? s->n - 1 : ev->a;
        unsigned b = ev->b == UINT32_MAX ? s->n - 1 : ev->b;
        if (a < s->n && b < s->n)
            sim_cut_link(s, a, b);
        break;
    }
    case SC_CRASH:
    case SC_LEAVE:
        sel = select_nodes(s, ev->nodes);
        for (unsigned i = 0; i < s->n; i++)
            if (sel[i])
                sim_node_crash(s, &s->nodes[i], ev->kind == SC_CRASH ? "crash" : "leave");
        break;
    case SC_RESTART:
    case SC_JOIN:
        sel = select_nodes(s, ev->nodes);
        for (unsigned i = 0; i < s->n; i++)
            if (sel[i] && !s->nodes[i].up && (ev->kind == SC_JOIN || s->nodes[i].ever_started))
                start_node(s, i);
        break;
    case SC_CHURN: {
        struct ev_sc *c = br_calloc(1, sizeof *c);
        if (!c)
            abort();
        *c = (struct ev_sc){s, e->i, 0, s->now_us};
        ev_churn(c);
        break;
    }
    }
    br_free(sel);
    br_free(e);
}

/* ---- convergence watch ---- */

struct run_result {
    bool converged, ok;
    uint64_t conv_us;     /* virtual time of convergence */
    uint64_t msgs, bytes; /* sent from the first write to convergence */
    char msg[512];
};

static struct run_result *g_res; /* the result the check events fill */
static uint64_t g_deadline_us, g_quiet_from_us;

static void ev_check(void *arg)
{
    struct sim *s = arg;
    if (s->stopping)
        return;
    if (s->now_us >= g_quiet_from_us && sim_converged(s)) {
        g_res->converged = true;
        g_res->conv_us = s->now_us;
        g_res->msgs = s->msgs - s->msgs_changes;
        g_res->bytes = s->bytes - s->bytes_changes;
        s->stopping = true;
        return;
    }
    if (s->now_us >= g_deadline_us) {
        s->stopping = true;
        return;
    }
    sim_at(s, s->now_us + CHECK_EVERY_US, ev_check, s);
}

/* ---- a run ---- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

struct figures {
    uint64_t changes, msgs, bytes, conv_after_write_us, conv_after_last_us;
    uint64_t p50, p90, p99, pmax;
    size_t n_lat;
    double wall_s;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int run(const struct scenario *sc, uint64_t seed, unsigned n, const char *trace_path,
               const char *lat_csv, struct run_result *res, struct figures *fig)
{
    struct sim *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    memset(res, 0, sizeof *res);
    memset(fig, 0, sizeof *fig);
    memset(doc_seq, 0, sizeof doc_seq);
    memset(shared_seq, 0, sizeof shared_seq);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    s->sc = sc;
    s->n = n;
    s->seed = seed;
    s->net_rng = seed * 0x2545f4914f6cdd1dull + 1;
    s->sel_rng = seed ^ 0x5e1ec7ull;
    s->data_rng = seed ^ 0xda7aull;
    /* The stores go to RAM when the machine has /dev/shm (fsync costs nothing there, and a
     * run's results do not depend on where its files are); BARREL_SIM_DIR overrides. */
    const char *tmp = getenv("BARREL_SIM_DIR");
    struct stat shm;
    if (!tmp || !*tmp)
        tmp = stat("/dev/shm", &shm) == 0 && S_ISDIR(shm.st_mode) ? "/dev/shm" : getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/barrel-sim-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s->dir)) {
        fprintf(stderr, "barrel-sim: mkdtemp %s: %s\n", s->dir, strerror(errno));
        free(s);
        return -1;
    }
    if (trace_path) {
        s->trace = fopen(trace_path, "w");
        if (!s->trace) {
            fprintf(stderr, "barrel-sim: %s: %s\n", trace_path, strerror(errno));
            free(s);
            return -1;
        }
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->main_cv, NULL);
    if (br_timerq_new(&s->q))
        abort();
    s->nodes = br_calloc(n, sizeof *s->nodes);
    s->part = br_calloc(n, 1);
    s->dirty = br_calloc(n, sizeof *s->dirty);
    if (!s->nodes || !s->part || !s->dirty)
        abort();
    struct br_errbuf eb = {{0}};
    for (unsigned i = 0; i < n; i++)
        if (sim_node_init(s, &s->nodes[i], i, &eb)) {
            fprintf(stderr, "barrel-sim: node %u: %s\n", i, eb.msg);
            abort();
        }
    sim_trace(s, "run scenario=%s seed=%llu nodes=%u", sc->name, (unsigned long long)seed, n);
    /* nodes named by a join start then; the others at 0 */
    uint64_t rj = seed ^ 0x5eed5eedull;
    bool *later = br_calloc(n, sizeof *later);
    if (!later)
        abort();
    for (size_t i = 0; i < sc->n_events; i++)
        if (sc->events[i].kind == SC_JOIN) {
            bool *v = br_calloc(n, sizeof *v);
            if (!v)
                abort();
            if (sc_sel_resolve(sc->events[i].nodes, n, &rj, v, NULL) == BR_OK)
                for (unsigned k = 0; k < n; k++)
                    later[k] = later[k] || v[k];
            br_free(v);
        }
    for (unsigned i = 0; i < n; i++)
        if (!later[i]) {
            struct ev_sc *e = br_calloc(1, sizeof *e);
            if (!e)
                abort();
            *e = (struct ev_sc){s, (size_t)-1, i, 0};
            sim_at(s, 0, ev_scenario, e);
        }
    br_free(later);
    uint64_t last_ms = 0;
    for (size_t i = 0; i < sc->n_events; i++) {
        struct ev_sc *e = br_calloc(1, sizeof *e);
        if (!e)
            abort();
        *e = (struct ev_sc){s, i, 0, 0};
        sim_at(s, sc->events[i].at_ms * 1000, ev_scenario, e);
        uint64_t end =
            sc->events[i].kind == SC_CHURN ? sc->events[i].until_ms : sc->events[i].at_ms;
        if (sc->events[i].kind == SC_CHURN)
            end += sc->events[i].down_ms;
        if (end > last_ms)
            last_ms = end;
    }
    g_res = res;
    g_quiet_from_us = last_ms * 1000;
    g_deadline_us = (last_ms + sc->settle_ms) * 1000;
    sim_at(s, last_ms * 1000, ev_check, s);
    s->last_event_us = last_ms * 1000;

    uint64_t dl;
    while (!s->stopping && br_timerq_next(s->q, &dl)) {
        s->now_us = dl;
        br_timerq_run(s->q, dl);
        sim_flush_dirty(s);
    }
    if (res->converged) {
        res->ok = sim_check_invariants(s, res->msg, sizeof res->msg);
        sim_trace(s, "converged at %llu ms", (unsigned long long)(res->conv_us / 1000));
    } else {
        res->ok = false;
        char why[400] = "";
        if (sim_check_invariants(s, why, sizeof why))
            snprintf(why, sizeof why, "the filtered replicas never matched");
        snprintf(res->msg, sizeof res->msg,
                 "not converged %llu ms after the last event [convergence]: %s",
                 (unsigned long long)sc->settle_ms, why);
    }
    sim_trace(s, "result %s %s", res->ok ? "ok" : "FAIL", res->msg);

    fig->changes = s->n_w;
    fig->msgs = res->converged ? res->msgs : s->msgs - s->msgs_changes;
    fig->bytes = res->converged ? res->bytes : s->bytes - s->bytes_changes;
    if (res->converged) {
        fig->conv_after_write_us = res->conv_us - s->last_write_us;
        fig->conv_after_last_us = res->conv_us - s->last_event_us;
    }
    fig->n_lat = s->n_lat;
    if (s->n_lat) {
        qsort(s->lat_us, s->n_lat, sizeof *s->lat_us, cmp_u64);
        fig->p50 = s->lat_us[s->n_lat / 2];
        fig->p90 = s->lat_us[s->n_lat * 9 / 10];
        fig->p99 = s->lat_us[s->n_lat * 99 / 100];
        fig->pmax = s->lat_us[s->n_lat - 1];
        if (lat_csv) {
            FILE *f = fopen(lat_csv, "w");
            if (f) {
                fprintf(f, "latency_ms\n");
                for (size_t i = 0; i < s->n_lat; i++)
                    fprintf(f, "%.3f\n", (double)s->lat_us[i] / 1000.0);
                fclose(f);
            }
        }
    }
    /* tear down */
    s->stopping = true;
    for (unsigned i = 0; i < n; i++)
        sim_node_fini(s, &s->nodes[i]);
    /* what is left runs with s->stopping set: every event then only frees its argument */
    for (uint64_t d2; br_timerq_next(s->q, &d2);)
        br_timerq_run(s->q, d2);
    br_timerq_free(s->q);
    sim_free_links(s);
    sim_checks_fini(s);
    br_free(s->nodes);
    br_free(s->part);
    br_free(s->dirty);
    if (s->trace)
        fclose(s->trace);
    pthread_cond_destroy(&s->main_cv);
    pthread_mutex_destroy(&s->mu);
    nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fig->wall_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    free(s);
    return 0;
}

/* ---- the command ---- */

static void quiet_sink(void *arg, enum br_log_level level, const char *tag, const char *line)
{
    (void)arg;
    (void)level;
    (void)tag;
    (void)line;
}

static void usage(void)
{
    fprintf(stderr, "usage: barrel-sim SCENARIO_FILE --seed N [--seeds A-B] [--nodes N] "
                    "[--trace FILE] [--csv FILE] [--latency-csv FILE] [--quiet]\n");
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    const char *file = NULL, *trace = NULL, *csv = NULL, *lat_csv = NULL;
    uint64_t seed_a = 1, seed_b = 1, nodes = 0;
    bool have_seed = false, quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--seed") == 0 && v) {
            if (!parse_u64(v, &seed_a)) {
                fprintf(stderr, "barrel-sim: --seed: not a number: %s\n", v);
                return 2;
            }
            seed_b = seed_a;
            have_seed = true;
            i++;
        } else if (strcmp(a, "--seeds") == 0 && v) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            char *dash = strchr(buf, '-');
            if (!dash || (*dash = '\0', !parse_u64(buf, &seed_a)) ||
                !parse_u64(dash + 1, &seed_b) || seed_b < seed_a) {
                fprintf(stderr, "barrel-sim: --seeds: expected A-B with A <= B: %s\n", v);
                return 2;
            }
            have_seed = true;
            i++;
        } else if (strcmp(a, "--nodes") == 0 && v) {
            if (!parse_u64(v, &nodes) || nodes < 1 || nodes > SC_MAX_NODES) {
                fprintf(stderr, "barrel-sim: --nodes: expected 1..%d: %s\n", SC_MAX_NODES, v);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--trace") == 0 && v) {
            trace = v;
            i++;
        } else if (strcmp(a, "--csv") == 0 && v) {
            csv = v;
            i++;
        } else if (strcmp(a, "--latency-csv") == 0 && v) {
            lat_csv = v;
            i++;
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = true;
        } else if (a[0] == '-' || file) {
            fprintf(stderr, "barrel-sim: unexpected argument: %s\n", a);
            usage();
            return 2;
        } else {
            file = a;
        }
    }
    if (!file || !have_seed) {
        usage();
        return 2;
    }
    struct scenario sc;
    struct br_errbuf eb = {{0}};
    if (sc_load(file, &sc, &eb)) {
        fprintf(stderr, "barrel-sim: %s\n", eb.msg);
        return 2;
    }
    unsigned n = nodes ? (unsigned)nodes : sc.nodes;
    br_log_set_level(BR_LOG_ERROR);
    br_log_set_sink(quiet_sink, NULL); /* a pull that ends with its link logs an error: noise */
    FILE *out = NULL;
    if (csv) {
        struct stat st;
        bool fresh = stat(csv, &st) != 0 || st.st_size == 0;
        out = fopen(csv, "a");
        if (!out) {
            fprintf(stderr, "barrel-sim: %s: %s\n", csv, strerror(errno));
            sc_free(&sc);
            return 2;
        }
        if (fresh)
            fprintf(out, "scenario,seed,nodes,changes,converged,conv_after_write_ms,"
                         "conv_after_last_event_ms,messages,bytes,msgs_per_change_per_node,"
                         "bytes_per_change_per_node,lat_p50_ms,lat_p90_ms,lat_p99_ms,"
                         "lat_max_ms,ok\n");
    }
    int failed = 0;
    for (uint64_t seed = seed_a; seed <= seed_b; seed++) {
        struct run_result res;
        struct figures f;
        if (run(&sc, seed, n, seed == seed_a ? trace : NULL, seed == seed_a ? lat_csv : NULL, &res,
                &f)) {
            failed++;
            continue;
        }
        double per = f.changes ? 1.0 / ((double)f.changes * n) : 0;
        if (out)
            fprintf(
                out, "%s,%llu,%u,%llu,%d,%.1f,%.1f,%llu,%llu,%.2f,%.1f,%.1f,%.1f,%.1f,%.1f,%d\n",
                sc.name, (unsigned long long)seed, n, (unsigned long long)f.changes, res.converged,
                (double)f.conv_after_write_us / 1000.0, (double)f.conv_after_last_us / 1000.0,
                (unsigned long long)f.msgs, (unsigned long long)f.bytes, (double)f.msgs * per,
                (double)f.bytes * per, (double)f.p50 / 1000.0, (double)f.p90 / 1000.0,
                (double)f.p99 / 1000.0, (double)f.pmax / 1000.0, res.ok);
        if (!quiet || !res.ok) {
            if (seed_a == seed_b) {
                printf("scenario   %s (%s)\nseed       %llu\nnodes      %u\n", sc.name, file,
                       (unsigned long long)seed, n);
                printf("changes    %llu acknowledged writes\n", (unsigned long long)f.changes);
                if (res.converged)
                    printf("converged  %.1f ms after the last write, %.1f ms after the last "
                           "event\n",
                           (double)f.conv_after_write_us / 1000.0,
                           (double)f.conv_after_last_us / 1000.0);
                else
                    printf("converged  no\n");
                printf("traffic    %llu messages, %llu bytes from the first write to "
                       "convergence: %.2f messages and %.0f bytes per change per node\n",
                       (unsigned long long)f.msgs, (unsigned long long)f.bytes,
                       (double)f.msgs * per, (double)f.bytes * per);
                printf("latency    p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (%zu "
                       "arrivals)\n",
                       (double)f.p50 / 1000.0, (double)f.p90 / 1000.0, (double)f.p99 / 1000.0,
                       (double)f.pmax / 1000.0, f.n_lat);
                printf("wall time  %.2f s\n", f.wall_s);
                printf("invariants %s\n", res.ok ? "all hold" : "FAILED");
            } else {
                printf("%s seed=%llu nodes=%u changes=%llu conv_ms=%.1f bytes/change/node=%.0f "
                       "%s\n",
                       sc.name, (unsigned long long)seed, n, (unsigned long long)f.changes,
                       (double)f.conv_after_write_us / 1000.0, (double)f.bytes * per,
                       res.ok ? "ok" : "FAIL");
            }
        }
        if (!res.ok) {
            failed++;
            printf("FAIL: %s\nreplay: %s %s --seed %llu --nodes %u --trace trace.txt\n", res.msg,
                   argv[0], file, (unsigned long long)seed, n);
        }
        fflush(stdout);
    }
    if (out)
        fclose(out);
    if (seed_a != seed_b || quiet)
        printf("%s: %llu runs, %d failed\n", sc.name, (unsigned long long)(seed_b - seed_a + 1),
               failed);
    sc_free(&sc);
    return failed ? 1 : 0;
}
