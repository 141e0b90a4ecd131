/* fuzz_scenario.c — libFuzzer harness for the scenario parser (simulations/scenario.h). Parse
 * the input; if that succeeds, check what the parser promises (limits, ranges, valid selectors,
 * declared databases, events sorted by time and then by line), print the scenario back as
 * scenario text, parse that and print it again: both prints must be equal. Then resolve every
 * selector for the scenario's node count and for one node (refusals are fine, crashes are not).
 * A refusal must say why, on a line. Any violation aborts. Built with
 * -fsanitize=fuzzer,address,undefined, or linked with replay_main.c to replay the corpus. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

static void require(bool ok)
{
    if (!ok)
        abort();
}

struct text {
    char *p;
    size_t n, cap;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    require(k >= 0);
    if (t->n + (size_t)k + 1 > t->cap) {
        t->cap = (t->n + (size_t)k + 1) * 2;
        t->p = realloc(t->p, t->cap);
        require(t->p != NULL);
    }
    va_start(ap, fmt);
    vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
    va_end(ap);
    t->n += (size_t)k;
}

static void put_node(struct text *t, const char *key, unsigned v)
{
    if (v == UINT32_MAX)
        put(t, " %s=$", key);
    else
        put(t, " %s=%u", key, v);
}

/* The scenario as text the parser accepts (durations in ms, bandwidth in bytes/s). */
static void print(const struct scenario *s, struct text *t)
{
    t->n = 0;
    put(t, "name %s\nnodes %u\ntopology %s\nmax_links %u\n", s->name, s->nodes,
        sc_topology_name(s->topology), s->max_links);
    put(t, "gossip interval=%u fanout=%u probe=%u dead=%u\n", s->interval_ms, s->fanout,
        s->probe_ms, s->dead_ms);
    put(t,
        "net latency=%llu jitter=%llu loss=%.6f%% dup=%.6f%% reorder=%.6f%% bandwidth=%llu "
        "timeout=%llu\n",
        (unsigned long long)s->net.latency_ms, (unsigned long long)s->net.jitter_ms,
        s->net.loss * 100, s->net.dup * 100, s->net.reorder * 100,
        (unsigned long long)s->net.bandwidth_bps, (unsigned long long)s->net.timeout_ms);
    for (size_t i = 0; i < s->n_dbs; i++)
        put(t, "db %s\n", s->dbs[i]);
    for (size_t i = 0; i < s->n_filters; i++)
        put(t, "filter db=%s nodes=%s paths=%s\n", s->filters[i].db, s->filters[i].nodes,
            s->filters[i].paths);
    for (size_t i = 0; i < s->n_skews; i++)
        put(t, "skew nodes=%s ms=%lld\n", s->skews[i].nodes, (long long)s->skews[i].ms);
    for (size_t i = 0; i < s->n_events; i++) {
        const struct sc_event *e = &s->events[i];
        put(t, "at %llu %s", (unsigned long long)e->at_ms, sc_kind_name(e->kind));
        switch (e->kind) {
        case SC_WRITE:
        case SC_UPDATE:
        case SC_DELETE:
            put(t, " nodes=%s db=%s docs=%u%s", e->nodes, e->db, e->docs,
                e->shared ? " shared" : "");
            break;
        case SC_PARTITION:
            put(t, " %s | %s", e->nodes, e->nodes2);
            break;
        case SC_HEAL:
            break;
        case SC_CUT:
            put_node(t, "a", e->a);
            put_node(t, "b", e->b);
            break;
        case SC_CRASH:
        case SC_RESTART:
        case SC_LEAVE:
        case SC_JOIN:
            put(t, " nodes=%s", e->nodes);
            break;
        case SC_CHURN:
            put(t, " nodes=%s every=%llu down=%llu until=%llu", e->nodes,
                (unsigned long long)e->every_ms, (unsigned long long)e->down_ms,
                (unsigned long long)e->until_ms);
            break;
        }
        put(t, "\n");
    }
    put(t, "settle %llu\n", (unsigned long long)s->settle_ms);
}

static bool declared(const struct scenario *s, const char *db)
{
    for (size_t i = 0; i < s->n_dbs; i++)
        if (strcmp(s->dbs[i], db) == 0)
            return true;
    return false;
}

static void resolve(const char *sel, unsigned n, uint64_t *rng)
{
    static bool out[SC_MAX_NODES];
    struct br_errbuf eb;
    require(sc_sel_valid(sel));
    br_err e = sc_sel_resolve(sel, n, rng, out, &eb);
    require(e == BR_OK || (e == BR_EINVAL && eb.msg[0] != '\0'));
}

static void check(const struct scenario *s)
{
    require(s->nodes >= 1 && s->nodes <= SC_MAX_NODES);
    require(s->n_dbs >= 1 && s->n_dbs <= SC_MAX_DBS);
    require(s->n_filters <= SC_MAX_FILTERS && s->n_skews <= SC_MAX_SKEWS);
    require(s->n_events <= SC_MAX_EVENTS);
    require(s->net.loss >= 0 && s->net.loss <= 1 && s->net.dup >= 0 && s->net.dup <= 1 &&
            s->net.reorder >= 0 && s->net.reorder <= 1);
    for (size_t i = 0; i < s->n_filters; i++)
        require(declared(s, s->filters[i].db));
    for (size_t i = 0; i < s->n_events; i++) {
        const struct sc_event *e = &s->events[i];
        if (i > 0) {
            const struct sc_event *p = &s->events[i - 1];
            require(p->at_ms < e->at_ms || (p->at_ms == e->at_ms && p->line < e->line));
        }
        if (e->kind == SC_WRITE || e->kind == SC_UPDATE || e->kind == SC_DELETE)
            require(declared(s, e->db) && e->docs > 0);
        if (e->kind == SC_CHURN)
            require(e->until_ms > e->at_ms && e->every_ms > 0);
        if (e->kind == SC_CUT)
            require(e->a != e->b);
    }
    unsigned counts[2] = {s->nodes, 1};
    for (int c = 0; c < 2; c++) {
        uint64_t rng = 12345;
        for (size_t i = 0; i < s->n_filters; i++)
            resolve(s->filters[i].nodes, counts[c], &rng);
        for (size_t i = 0; i < s->n_skews; i++)
            resolve(s->skews[i].nodes, counts[c], &rng);
        for (size_t i = 0; i < s->n_events; i++) {
            if (s->events[i].nodes[0])
                resolve(s->events[i].nodes, counts[c], &rng);
            if (s->events[i].nodes2[0])
                resolve(s->events[i].nodes2, counts[c], &rng);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct scenario s, s2;
    struct br_errbuf eb;
    if (sc_parse((const char *)data, size, "fuzz", &s, &eb) != BR_OK) {
        /* a refusal says why, on a line: "LINE: message" */
        require(eb.msg[0] >= '0' && eb.msg[0] <= '9' && strstr(eb.msg, ": ") != NULL);
        return 0;
    }
    check(&s);
    struct text a = {0}, b = {0};
    print(&s, &a);
    if (sc_parse(a.p, a.n, "other", &s2, &eb) != BR_OK) {
        fprintf(stderr, "reprint refused: %s\n%s", eb.msg, a.p);
        abort();
    }
    print(&s2, &b);
    require(a.n == b.n && memcmp(a.p, b.p, a.n) == 0);
    require(s.n_events == s2.n_events);
    sc_free(&s2);
    sc_free(&s);
    free(a.p);
    free(b.p);
    return 0;
}
