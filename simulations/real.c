/* real.c — barrel-real: the scenarios of SCENARIOS.md run by real `barrel serve` processes.
 *
 *   barrel-real SCENARIO_FILE --seed N [--nodes N] [--barrel PATH] [--base-port P] [--csv FILE]
 *               [--keep DIR] [--time-scale F] [--netns]
 *
 * N processes on 127.0.0.1 ports (or, with --netns, one per network namespace with its own
 * Avahi daemon, finding each other by mDNS: tests/netns/netns.sh), each with its own data
 * directory and one shared mesh key. The topology becomes links: `mesh` gives every node node 0
 * as its --peer and lets the mesh dial (up to max_links); `chain`, `star` and `full` give each
 * node --peer for the links the topology names and --no-dial, so no other link forms. Filters
 * become --mesh-db NAME=PAT|PAT on the filtered nodes; gossip timing becomes --gossip-interval,
 * --fanout, --probe-ms, --dead-ms; the net timeout becomes the links' timeout (config p2p).
 * The rest of the `net` line and `skew` cannot be applied to real processes on one host: they
 * are printed as ignored.
 *
 * The timeline runs on the wall clock (divided by --time-scale): writes, updates and deletes
 * through the HTTP API (one _bulk_docs per node, the nodes of one event in parallel), every
 * acknowledged revision recorded; crash = SIGKILL, restart = the same data dir and port, leave =
 * SIGTERM, join = a first start; cut = DELETE /_peers/{id} on one end; partition = each node
 * blocks the other side's members (DELETE /_peers/{id}?block=true), heal = PUT /_peers/{id}.
 *
 * After the last event it polls GET /{db} on every live node until the full replicas' set
 * hashes are equal, then checks the invariants of SCENARIOS.md over HTTP (_changes
 * style=all_docs for winners and leaves, _revs_diff for acknowledged revisions, open_revs=all
 * with revs for invented ones, the winners' paths for filters), until they hold or `settle`
 * passes. It prints a summary, appends a CSV row, and exits 0 when every invariant holds, 1
 * with the failed invariant and the command that reruns it otherwise, 2 on usage errors, 77
 * when --netns cannot create namespaces here. Every child is killed on any exit path. */
#define _GNU_SOURCE /* setns */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sched.h>

#include "barrel/err.h"

#include "scenario.h"

#define REAL_MAX_NODES 64       /* processes on one host */
#define REAL_MAX_WALL_MS 600000 /* a timeline longer than this needs --time-scale */
#define REAL_RESP_MAX ((size_t)256 << 20)
#define REAL_REQ_TIMEOUT_MS 20000
#define REAL_START_TIMEOUT_MS 20000
#define REAL_STOP_TIMEOUT_MS 15000
#define REAL_POLL_MS 20
#define REAL_REV_MAX 128

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sleep until mono_ms() >= t, in short naps; false when interrupted. */
static bool nap_until(uint64_t t)
{
    for (;;) {
        if (interrupted)
            return false;
        uint64_t now = mono_ms();
        if (now >= t)
            return true;
        uint64_t d = t - now < REAL_POLL_MS ? t - now : REAL_POLL_MS;
        struct timespec ts = {(time_t)(d / 1000), (long)(d % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- the run ---- */

struct node {
    unsigned idx;
    char dir[PATH_MAX];
    char log[PATH_MAX];
    char host[64]; /* address it serves on */
    char id[80];
    int port;
    pid_t pid;                          /* > 0 while running */
    bool ever;                          /* started once */
    bool late;                          /* named in a `join`: not started at 0 s */
    bool churned;                       /* down by churn, restart pending */
    int netns_fd;                       /* --netns: its namespace, for the HTTP client's sockets */
    CURL *curl;                         /* one connection, reused */
    const char *filter[SC_MAX_DBS];     /* per scenario db: patterns ('|'), NULL: full replica */
    json_t *wrote;                      /* {db: {id: true}}: documents it created */
    unsigned next_k;                    /* its next document number */
    uint64_t bytes_before, msgs_before; /* counters of earlier lives (a restart zeroes them) */
    uint64_t bytes_now, msgs_now;       /* the last sample of this life */
};

enum act_kind { ACT_EVENT, ACT_CHURN_TICK, ACT_CHURN_RESTART };

struct action {
    uint64_t at_ms; /* scenario time */
    uint64_t seq;   /* insertion order, for equal times */
    enum act_kind kind;
    const struct sc_event *ev;
    unsigned node; /* ACT_CHURN_RESTART */
};

struct opts {
    const char *scn;
    uint64_t seed;
    unsigned nodes; /* 0: the scenario's */
    const char *barrel;
    int base_port; /* 0: pick free ports */
    const char *csv;
    const char *keep;
    double time_scale;
    bool netns;
};

struct run {
    struct opts o;
    struct scenario sc;
    unsigned n;
    uint64_t rng;
    char root[PATH_MAX - 64]; /* every file of the run (room for the names under it) */
    char key[PATH_MAX], cfg[PATH_MAX];
    struct node *nodes;
    CURLM *multi;
    json_t *acked; /* [db index] -> {id: [rev, ...]}: every revision a client write got back */
    uint64_t changes, refused, skipped;
    unsigned shared_next[SC_MAX_DBS]; /* next s-<k> per database */
    struct action *acts;
    size_t n_acts, cap_acts;
    uint64_t next_seq;
    uint64_t t0;            /* mono ms at scenario time 0 */
    uint64_t last_write_ms; /* mono ms of the last acknowledged write */
    bool parted;            /* a partition is in force */
    bool side_a[REAL_MAX_NODES], side_b[REAL_MAX_NODES];
    char failure[1024]; /* the first failed invariant */
    char problem[512];  /* a process that misbehaved (exit status), reported as a failure */
    /* --netns */
    pid_t holder;  /* netns.sh hold */
    int holder_in; /* its stdin (closing it tears the namespaces down) */
    char prefix[64];
    char netns_sh[PATH_MAX];
};

static void say(const struct run *r, const char *fmt, ...) BR_PRINTF(2, 3);
static void say(const struct run *r, const char *fmt, ...)
{
    uint64_t t = r->t0 ? mono_ms() - r->t0 : 0;
    printf("[%7.3fs] ", (double)t / 1000.0);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void fail(struct run *r, const char *fmt, ...) BR_PRINTF(2, 3);
static void fail(struct run *r, const char *fmt, ...)
{
    if (r->failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->failure, sizeof r->failure, fmt, ap);
    va_end(ap);
}

/* ---- child processes ---- */

/* Run argv to completion with stdout captured into out (NUL-terminated, first line kept);
 * stdin from `in` when not NULL. Returns the exit status, -1 if it could not run. */
static int run_capture(char *const argv[], const char *in, char *out, size_t cap)
{
    int po[2], pi[2];
    if (pipe(po) != 0)
        return -1;
    if (pipe(pi) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t p = fork();
    if (p < 0) {
        close(po[0]);
        close(po[1]);
        close(pi[0]);
        close(pi[1]);
        return -1;
    }
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pi[0], 0);
        dup2(po[1], 1);
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0)
            dup2(nul, 2);
        close(po[0]);
        close(pi[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pi[0]);
    if (in) {
        size_t len = strlen(in);
        ssize_t w = write(pi[1], in, len);
        (void)w;
    }
    close(pi[1]);
    size_t n = 0;
    for (;;) {
        ssize_t k = read(po[0], out + n, cap - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        if (n >= cap - 1)
            break;
    }
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    close(po[0]);
    int st = 0;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Wait up to ms for pid to exit; its wait status in *st. False if still running. */
static bool wait_exit(pid_t pid, int ms, int *st)
{
    uint64_t end = mono_ms() + (uint64_t)ms;
    for (;;) {
        pid_t w = waitpid(pid, st, WNOHANG);
        if (w == pid || (w < 0 && errno == ECHILD))
            return true;
        if (mono_ms() >= end)
            return false;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void describe_status(int st, char *buf, size_t cap)
{
    if (WIFEXITED(st))
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, cap, "wait status %d", st);
}

/* ---- HTTP ---- */

struct rbuf {
    char *p;
    size_t len, cap;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct rbuf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n + 1 > REAL_RESP_MAX)
        return 0;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->len + n + 1)
            c *= 2;
        char *q = realloc(b->p, c);
        if (!q)
            return 0;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

/* --netns: the client's sockets for a node are made in its namespace. */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    const struct node *nd = arg;
    int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0 || setns(nd->netns_fd, CLONE_NEWNET) != 0) {
        if (self >= 0)
            close(self);
        return CURL_SOCKET_BAD;
    }
    int fd = socket(a->family, a->socktype, a->protocol);
    if (setns(self, CLONE_NEWNET) != 0) {
        /* cannot return to our own namespace: nothing else would work either */
        fprintf(stderr, "barrel-real: setns back to the root namespace failed\n");
        _exit(1);
    }
    close(self);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

struct req {
    unsigned node;
    const char *method;
    char path[600];
    char *body; /* owned; NULL: none */
    bool accept_json;
    long status; /* 0: no answer */
    struct rbuf resp;
    json_t *json; /* the answer parsed, when JSON */
    struct curl_slist *hdrs;
};

static void req_fini(struct req *q)
{
    free(q->body);
    free(q->resp.p);
    json_decref(q->json);
    curl_slist_free_all(q->hdrs);
    memset(q, 0, sizeof *q);
}

static void req_set(struct req *q, unsigned node, const char *method, char *body, const char *fmt,
                    ...) BR_PRINTF(5, 6);
static void req_set(struct req *q, unsigned node, const char *method, char *body, const char *fmt,
                    ...)
{
    memset(q, 0, sizeof *q);
    q->node = node;
    q->method = method;
    q->body = body;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->path, sizeof q->path, fmt, ap);
    va_end(ap);
}

/* Run the requests in parallel (at most one per node). Answers in each q. */
static void http_run(struct run *r, struct req *qs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct req *q = &qs[i];
        struct node *nd = &r->nodes[q->node];
        CURL *h = nd->curl;
        char url[800];
        snprintf(url, sizeof url, "http://%s:%d%s", nd->host, nd->port, q->path);
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)REAL_REQ_TIMEOUT_MS);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &q->resp);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
        if (r->o.netns) {
            curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
            curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, nd);
            curl_easy_setopt(h, CURLOPT_USERPWD, "admin:barrel-real");
        }
        q->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        if (q->accept_json)
            q->hdrs = curl_slist_append(q->hdrs, "Accept: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, q->hdrs);
        if (strcmp(q->method, "GET") == 0) {
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        } else { /* Content-Length even when 0: a PUT without one leaves the connection stuck */
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? q->body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(q->body ? strlen(q->body) : 0));
        }
        curl_easy_setopt(h, CURLOPT_PRIVATE, q);
        curl_multi_add_handle(r->multi, h);
    }
    int running = 1;
    while (running) {
        if (curl_multi_perform(r->multi, &running) != CURLM_OK)
            break;
        if (running)
            curl_multi_poll(r->multi, NULL, 0, 200, NULL);
    }
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(r->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct req *q = (struct req *)(void *)priv;
        long st = 0;
        if (m->data.result == CURLE_OK)
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &st);
        if (q)
            q->status = st;
    }
    for (size_t i = 0; i < n; i++) {
        struct req *q = &qs[i];
        curl_multi_remove_handle(r->multi, r->nodes[q->node].curl);
        if (q->resp.len && (q->resp.p[0] == '{' || q->resp.p[0] == '['))
            q->json = json_loadb(q->resp.p, q->resp.len, 0, NULL);
    }
}

/* One request; returns its status (0: no answer). The answer stays in q. */
static long http1(struct run *r, struct req *q)
{
    http_run(r, q, 1);
    return q->status;
}

/* ---- nodes ---- */

static bool live(const struct node *nd)
{
    return nd->pid > 0;
}

/* Counters of p2p traffic from /_metrics: bytes sent, and mesh messages sent (gossip and
 * digests). False when the node did not answer. */
static bool sample_metrics(struct run *r, unsigned i)
{
    struct node *nd = &r->nodes[i];
    if (!live(nd))
        return false;
    struct req q;
    req_set(&q, i, "GET", NULL, "/_metrics");
    bool ok = http1(r, &q) == 200 && q.resp.p;
    uint64_t bytes = 0, gossip = 0, digests = 0;
    for (const char *l = ok ? q.resp.p : ""; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        const char *sp = memchr(l, ' ', len);
        if (sp && l[0] != '#') {
            uint64_t v = strtoull(sp + 1, NULL, 10);
            size_t kl = (size_t)(sp - l);
            if (kl == strlen("barrel_p2p_bytes_sent_total") &&
                strncmp(l, "barrel_p2p_bytes_sent_total", kl) == 0)
                bytes = v;
            else if (strncmp(l, "barrel_gossip_messages_total{dir=\"sent\"}", kl) == 0 &&
                     kl == strlen("barrel_gossip_messages_total{dir=\"sent\"}"))
                gossip = v;
            else if (strncmp(l, "barrel_digests_total{dir=\"sent\"}", kl) == 0 &&
                     kl == strlen("barrel_digests_total{dir=\"sent\"}"))
                digests = v;
        }
        l = e ? e + 1 : l + len;
    }
    req_fini(&q);
    if (ok) {
        nd->bytes_now = bytes;
        nd->msgs_now = gossip + digests;
    }
    return ok;
}

/* A life ends: its last sample joins the earlier lives'. */
static void bank_counters(struct node *nd)
{
    nd->bytes_before += nd->bytes_now;
    nd->msgs_before += nd->msgs_now;
    nd->bytes_now = nd->msgs_now = 0;
}

static void note_problem(struct run *r, unsigned i, const char *what, int st)
{
    char s[64];
    describe_status(st, s, sizeof s);
    if (!r->problem[0])
        snprintf(r->problem, sizeof r->problem, "node %u %s (%s; log %.300s)", i, what, s,
                 r->nodes[i].log);
    say(r, "node %u %s: %s", i, what, s);
}

/* Reap nodes that exited on their own (a crash of barrel: reported as a failure). */
static void reap_unexpected(struct run *r)
{
    for (unsigned i = 0; i < r->n; i++) {
        struct node *nd = &r->nodes[i];
        int st = 0;
        if (live(nd) && waitpid(nd->pid, &st, WNOHANG) == nd->pid) {
            nd->pid = 0;
            bank_counters(nd);
            note_problem(r, i, "exited on its own", st);
        }
    }
}

static void node_kill(struct run *r, unsigned i)
{
    struct node *nd = &r->nodes[i];
    if (!live(nd))
        return;
    sample_metrics(r, i);
    kill(nd->pid, SIGKILL);
    int st;
    while (waitpid(nd->pid, &st, 0) < 0 && errno == EINTR)
        ;
    nd->pid = 0;
    bank_counters(nd);
}

/* SIGTERM and wait; a node that does not stop, or stops with an error (a sanitizer's report),
 * is a problem. */
static void node_stop(struct run *r, unsigned i, bool sample)
{
    struct node *nd = &r->nodes[i];
    if (!live(nd))
        return;
    if (sample)
        sample_metrics(r, i);
    kill(nd->pid, SIGTERM);
    int st = 0;
    if (!wait_exit(nd->pid, REAL_STOP_TIMEOUT_MS, &st)) {
        kill(nd->pid, SIGKILL);
        waitpid(nd->pid, &st, 0);
        note_problem(r, i, "did not stop on SIGTERM", st);
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        note_problem(r, i, "stopped with an error", st);
    }
    nd->pid = 0;
    bank_counters(nd);
}

static void log_tail(const struct node *nd)
{
    FILE *f = fopen(nd->log, "r");
    if (!f)
        return;
    char lines[8][512];
    size_t n = 0;
    while (fgets(lines[n % 8], sizeof lines[0], f))
        n++;
    fclose(f);
    for (size_t k = n > 8 ? n - 8 : 0; k < n; k++)
        fprintf(stderr, "  | %s", lines[k % 8]);
}

static void block_side(struct run *r, unsigned i, bool block);

/* Start node i (first start, restart or join) and wait until it answers. */
static bool node_start(struct run *r, unsigned i)
{
    struct node *nd = &r->nodes[i];
    const struct scenario *sc = &r->sc;
    char port[16], interval[16], fanout[16], links[16], probe[16], dead[16];
    snprintf(port, sizeof port, "%d", nd->port);
    snprintf(interval, sizeof interval, "%u", sc->interval_ms);
    snprintf(fanout, sizeof fanout, "%u", sc->fanout);
    unsigned ml = sc->max_links;
    if (sc->topology != SC_TOPO_MESH && ml < r->n)
        ml = r->n; /* static links only: let every one be accepted (2x max_links) */
    snprintf(links, sizeof links, "%u", ml > 256 ? 256 : ml);
    snprintf(probe, sizeof probe, "%u", sc->probe_ms);
    snprintf(dead, sizeof dead, "%u", sc->dead_ms);
    char peers[REAL_MAX_NODES][96], mdbs[SC_MAX_DBS][SC_DB_MAX + SC_PATHS_MAX + 2];
    const char *argv[64 + 2 * REAL_MAX_NODES];
    size_t k = 0;
    char host[8];
    if (r->o.netns) {
        snprintf(host, sizeof host, "h%u", i + 1);
        argv[k++] = "/bin/bash"; /* netns.sh run execs the program in place: pid is barrel's */
        argv[k++] = r->netns_sh;
        argv[k++] = "run";
        argv[k++] = host;
    }
    const char *tail[] = {
        r->o.barrel,  "--log-level", "info",       "--data",      nd->dir,
        "serve",      "--port",      port,         "--bind",      nd->host,
        "--config",   r->cfg,        "--mesh-key", r->key,        "--gossip-interval",
        interval,     "--fanout",    fanout,       "--max-links", links,
        "--probe-ms", probe,         "--dead-ms",  dead};
    for (size_t t = 0; t < sizeof tail / sizeof tail[0]; t++)
        argv[k++] = tail[t];
    bool mdns = r->o.netns && sc->topology == SC_TOPO_MESH;
    if (!mdns)
        argv[k++] = "--no-mdns";
    if (sc->topology != SC_TOPO_MESH)
        argv[k++] = "--no-dial";
    size_t np = 0;
    for (unsigned j = 0; j < r->n && !mdns; j++) {
        bool link = false;
        switch (sc->topology) {
        case SC_TOPO_MESH:
        case SC_TOPO_STAR:
            link = i != 0 && j == 0;
            break;
        case SC_TOPO_CHAIN:
            link = j == i + 1;
            break;
        case SC_TOPO_FULL:
            link = j > i;
            break;
        }
        if (!link)
            continue;
        snprintf(peers[np], sizeof peers[np], "ws://%s:%d", r->nodes[j].host, r->nodes[j].port);
        argv[k++] = "--peer";
        argv[k++] = peers[np++];
    }
    bool filtered = false;
    for (size_t d = 0; d < sc->n_dbs; d++)
        filtered = filtered || nd->filter[d];
    for (size_t d = 0; filtered && d < sc->n_dbs; d++) {
        if (nd->filter[d])
            snprintf(mdbs[d], sizeof mdbs[d], "%s=%s", sc->dbs[d], nd->filter[d]);
        else
            snprintf(mdbs[d], sizeof mdbs[d], "%s", sc->dbs[d]);
        argv[k++] = "--mesh-db";
        argv[k++] = mdbs[d];
    }
    argv[k] = NULL;
    pid_t p = fork();
    if (p < 0) {
        fail(r, "setup: fork: %s", strerror(errno));
        return false;
    }
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(nd->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (nul >= 0)
            dup2(nul, 0);
        if (r->o.netns)
            setenv("NETNS_PREFIX", r->prefix, 1);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    nd->pid = p;
    bool first = !nd->ever;
    nd->ever = true;
    uint64_t end = mono_ms() + REAL_START_TIMEOUT_MS;
    for (;;) {
        int st = 0;
        if (waitpid(p, &st, WNOHANG) == p) {
            nd->pid = 0;
            char s[64];
            describe_status(st, s, sizeof s);
            fprintf(stderr, "barrel-real: node %u did not start (%s); log %s:\n", i, s, nd->log);
            log_tail(nd);
            fail(r, "process: node %u did not start (%s)", i, s);
            return false;
        }
        struct req q;
        req_set(&q, i, "GET", NULL, "/_node");
        bool up = http1(r, &q) == 200;
        if (up && first && json_is_string(json_object_get(q.json, "node_id")))
            snprintf(nd->id, sizeof nd->id, "%s",
                     json_string_value(json_object_get(q.json, "node_id")));
        req_fini(&q);
        if (up)
            break;
        if (mono_ms() >= end || interrupted) {
            fprintf(stderr, "barrel-real: node %u does not answer on %s:%d; log %s:\n", i, nd->host,
                    nd->port, nd->log);
            log_tail(nd);
            fail(r, "process: node %u does not answer", i);
            return false;
        }
        nap_until(mono_ms() + 20);
    }
    if (first) {
        for (size_t d = 0; d < sc->n_dbs; d++) {
            struct req q;
            req_set(&q, i, "PUT", NULL, "/%s", sc->dbs[d]);
            long st = http1(r, &q);
            req_fini(&q);
            if (st != 201 && st != 412) {
                fail(r, "setup: PUT /%s on node %u answered %ld", sc->dbs[d], i, st);
                return false;
            }
        }
    }
    if (r->parted && (r->side_a[i] || r->side_b[i]))
        block_side(r, i, true);
    return true;
}

/* ---- partitions and cuts ---- */

/* Node i blocks (or unblocks) every node of the other side of the partition. */
static void block_side(struct run *r, unsigned i, bool block)
{
    if (!live(&r->nodes[i]))
        return;
    for (unsigned j = 0; j < r->n; j++) {
        bool other = (r->side_a[i] && r->side_b[j]) || (r->side_b[i] && r->side_a[j]);
        if (!other || j == i)
            continue;
        struct req q;
        if (block)
            req_set(&q, i, "DELETE", NULL, "/_peers/%s?block=true", r->nodes[j].id);
        else
            req_set(&q, i, "PUT", NULL, "/_peers/%s", r->nodes[j].id);
        long st = http1(r, &q);
        if (st != 200 && !(st == 404 && !block))
            say(r, "warning: %s /_peers/%.8s on node %u answered %ld", q.method, r->nodes[j].id, i,
                st);
        req_fini(&q);
    }
}

static void heal(struct run *r)
{
    if (!r->parted)
        return;
    for (unsigned i = 0; i < r->n; i++)
        if (r->side_a[i] || r->side_b[i])
            block_side(r, i, false);
    r->parted = false;
    memset(r->side_a, 0, sizeof r->side_a);
    memset(r->side_b, 0, sizeof r->side_b);
}

/* ---- documents ---- */

static int db_index(const struct run *r, const char *db)
{
    for (size_t d = 0; d < r->sc.n_dbs; d++)
        if (strcmp(r->sc.dbs[d], db) == 0)
            return (int)d;
    return -1;
}

static void ack(struct run *r, int d, const char *id, const char *rev)
{
    json_t *m = json_array_get(r->acked, (size_t)d);
    json_t *a = json_object_get(m, id);
    if (!a) {
        a = json_array();
        json_object_set_new(m, id, a);
    }
    json_array_append_new(a, json_string(rev));
    r->changes++;
    r->last_write_ms = mono_ms();
}

static bool acked_has(const struct run *r, int d, const char *id, const char *rev)
{
    json_t *a = json_object_get(json_array_get(r->acked, (size_t)d), id);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (strcmp(json_string_value(v), rev) == 0)
            return true;
    }
    return false;
}

/* A value for a document body, drawn from the run's seed. */
static json_int_t draw_value(struct run *r)
{
    return (json_int_t)(sc_rand(&r->rng) % 1000000u);
}

/* write / update / delete on every selected live node, in parallel. */
static void do_docs(struct run *r, const struct sc_event *ev, const bool *sel)
{
    int d = db_index(r, ev->db);
    if (d < 0) {
        fail(r, "scenario: line %u: database %s has no `db` line", ev->line, ev->db);
        return;
    }
    struct req qs[REAL_MAX_NODES];
    size_t n = 0;
    unsigned shared_k = 0;
    /* updates and deletes read the first K documents each node holds */
    json_t *held[REAL_MAX_NODES] = {0};
    if (ev->kind != SC_WRITE) {
        for (unsigned i = 0; i < r->n; i++)
            if (sel[i] && live(&r->nodes[i]))
                req_set(&qs[n++], i, "GET", NULL, "/%s/_all_docs?include_docs=true&limit=%u",
                        ev->db, ev->docs);
        http_run(r, qs, n);
        for (size_t k = 0; k < n; k++) {
            json_t *rows = json_object_get(qs[k].json, "rows");
            if (qs[k].status == 200 && json_is_array(rows))
                held[qs[k].node] = json_incref(rows);
            req_fini(&qs[k]);
        }
        n = 0;
    }
    if (ev->kind == SC_WRITE && ev->shared) {
        shared_k = r->shared_next[d];
        r->shared_next[d] += ev->docs;
    }
    for (unsigned i = 0; i < r->n; i++) {
        if (!sel[i])
            continue;
        struct node *nd = &r->nodes[i];
        if (!live(nd)) {
            say(r, "  node %u is down: its %s is skipped", i, sc_kind_name(ev->kind));
            r->skipped++;
            continue;
        }
        json_t *docs = json_array();
        if (ev->kind == SC_WRITE) {
            for (unsigned k = 0; k < ev->docs; k++) {
                char id[64];
                if (ev->shared)
                    snprintf(id, sizeof id, "s-%u", shared_k + k);
                else
                    snprintf(id, sizeof id, "n%u-%u", i, nd->next_k++);
                char site[16];
                snprintf(site, sizeof site, "site-%u", i % 4);
                json_array_append_new(docs, json_pack("{s:s,s:s,s:i,s:I}", "_id", id, "site", site,
                                                      "node", (int)i, "value", draw_value(r)));
            }
        } else {
            size_t k;
            json_t *row;
            json_array_foreach(held[i], k, row)
            {
                json_t *doc = json_object_get(row, "doc");
                const char *id = json_string_value(json_object_get(row, "id"));
                const char *rev = json_string_value(json_object_get(doc, "_rev"));
                if (!id || !rev)
                    continue;
                if (ev->kind == SC_DELETE) {
                    json_array_append_new(
                        docs, json_pack("{s:s,s:s,s:b}", "_id", id, "_rev", rev, "_deleted", 1));
                } else {
                    json_t *site = json_object_get(doc, "site"),
                           *who = json_object_get(doc, "node");
                    json_t *u =
                        json_pack("{s:s,s:s,s:I}", "_id", id, "_rev", rev, "value", draw_value(r));
                    if (site)
                        json_object_set(u, "site", site);
                    if (who)
                        json_object_set(u, "node", who);
                    json_array_append_new(docs, u);
                }
            }
            if (json_array_size(docs) < ev->docs)
                say(r, "  node %u holds %zu of the %u documents to %s", i, json_array_size(docs),
                    ev->docs, sc_kind_name(ev->kind));
        }
        json_t *body = json_pack("{s:o}", "docs", docs);
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        req_set(&qs[n++], i, "POST", text, "/%s/_bulk_docs", ev->db);
    }
    http_run(r, qs, n);
    for (size_t k = 0; k < n; k++) {
        struct req *q = &qs[k];
        unsigned i = q->node;
        size_t ok = 0, refused = 0;
        if (q->status != 201 || !json_is_array(q->json)) {
            say(r, "  node %u: _bulk_docs answered %ld: nothing acknowledged", i, q->status);
            fail(r, "write: node %u answered _bulk_docs on %s with %ld", i, ev->db, q->status);
            json_t *sent = json_loads(q->body, 0, NULL);
            refused += json_array_size(json_object_get(sent, "docs"));
            json_decref(sent);
        }
        size_t j;
        json_t *res;
        json_array_foreach(q->json, j, res)
        {
            const char *id = json_string_value(json_object_get(res, "id"));
            const char *rev = json_string_value(json_object_get(res, "rev"));
            if (id && rev && json_is_true(json_object_get(res, "ok"))) {
                ack(r, d, id, rev);
                ok++;
                if (ev->kind == SC_WRITE) {
                    json_t *w = json_object_get(r->nodes[i].wrote, ev->db);
                    json_object_set_new(w, id, json_true());
                }
            } else {
                refused++;
            }
        }
        r->refused += refused;
        if (refused)
            say(r, "  node %u: %zu acknowledged, %zu refused (conflicts)", i, ok, refused);
        req_fini(q);
    }
    for (unsigned i = 0; i < r->n; i++)
        json_decref(held[i]);
}

/* ---- the timeline ---- */

static void act_push(struct run *r, uint64_t at, enum act_kind kind, const struct sc_event *ev,
                     unsigned node)
{
    if (r->n_acts == r->cap_acts) {
        size_t c = r->cap_acts ? 2 * r->cap_acts : 64;
        struct action *a = realloc(r->acts, c * sizeof *a);
        if (!a) {
            fprintf(stderr, "barrel-real: out of memory\n");
            exit(1);
        }
        r->acts = a;
        r->cap_acts = c;
    }
    /* keep sorted by (at, seq): insert after every action due at or before `at` */
    size_t pos = r->n_acts;
    while (pos > 0 && r->acts[pos - 1].at_ms > at)
        pos--;
    memmove(&r->acts[pos + 1], &r->acts[pos], (r->n_acts - pos) * sizeof r->acts[0]);
    r->acts[pos] = (struct action){at, r->next_seq++, kind, ev, node};
    r->n_acts++;
}

static bool resolve(struct run *r, const char *sel, bool *out, unsigned line)
{
    struct br_errbuf eb = {{0}};
    if (sc_sel_resolve(sel, r->n, &r->rng, out, &eb)) {
        fail(r, "scenario: line %u: %s", line, eb.msg);
        return false;
    }
    return true;
}

static void describe_sel(const bool *sel, unsigned n, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < n && off + 8 < cap; i++)
        if (sel[i])
            off += (size_t)snprintf(buf + off, cap - off, "%s%u", off ? "," : "", i);
}

static void run_event(struct run *r, const struct sc_event *ev)
{
    bool sel[SC_MAX_NODES] = {false}, sel2[SC_MAX_NODES] = {false};
    char who[256] = "";
    if (ev->kind != SC_HEAL && ev->kind != SC_CUT) {
        if (!resolve(r, ev->nodes, sel, ev->line))
            return;
        describe_sel(sel, r->n, who, sizeof who);
    }
    switch (ev->kind) {
    case SC_WRITE:
    case SC_UPDATE:
    case SC_DELETE:
        say(r, "%s nodes=%s db=%s docs=%u%s", sc_kind_name(ev->kind), who, ev->db, ev->docs,
            ev->shared ? " shared" : "");
        do_docs(r, ev, sel);
        break;
    case SC_CRASH:
        say(r, "crash nodes=%s (SIGKILL)", who);
        for (unsigned i = 0; i < r->n; i++)
            if (sel[i])
                node_kill(r, i);
        break;
    case SC_LEAVE:
        say(r, "leave nodes=%s (SIGTERM)", who);
        for (unsigned i = 0; i < r->n; i++)
            if (sel[i])
                node_stop(r, i, true);
        break;
    case SC_RESTART:
    case SC_JOIN:
        say(r, "%s nodes=%s", sc_kind_name(ev->kind), who);
        for (unsigned i = 0; i < r->n; i++) {
            if (!sel[i])
                continue;
            if (live(&r->nodes[i])) {
                say(r, "  node %u is running: not started again", i);
                continue;
            }
            if (ev->kind == SC_JOIN && r->nodes[i].ever)
                say(r, "  node %u ran before: a join restarts it", i);
            r->nodes[i].churned = false;
            node_start(r, i);
        }
        break;
    case SC_CUT: {
        unsigned a = ev->a == UINT32_MAX ? r->n - 1 : ev->a,
                 b = ev->b == UINT32_MAX ? r->n - 1 : ev->b;
        if (a >= r->n || b >= r->n) {
            fail(r, "scenario: line %u: cut a=%u b=%u: only %u nodes", ev->line, a, b, r->n);
            return;
        }
        unsigned on = live(&r->nodes[a]) ? a : b, other = on == a ? b : a;
        if (!live(&r->nodes[on])) {
            say(r, "cut a=%u b=%u: both are down, nothing to cut", a, b);
            break;
        }
        struct req q;
        req_set(&q, on, "DELETE", NULL, "/_peers/%s", r->nodes[other].id);
        long st = http1(r, &q);
        json_int_t closed = json_integer_value(json_object_get(q.json, "closed"));
        req_fini(&q);
        say(r, "cut a=%u b=%u: %s", a, b,
            st == 200   ? (closed ? "link closed" : "no link up between them")
            : st == 404 ? "not members of each other yet"
                        : "the node refused");
        break;
    }
    case SC_PARTITION: {
        if (!resolve(r, ev->nodes2, sel2, ev->line))
            return;
        char who2[256];
        describe_sel(sel2, r->n, who2, sizeof who2);
        say(r, "partition %s | %s (each side blocks the other: DELETE /_peers/ID?block=true)", who,
            who2);
        heal(r);
        memcpy(r->side_a, sel, r->n * sizeof sel[0]);
        memcpy(r->side_b, sel2, r->n * sizeof sel2[0]);
        r->parted = true;
        for (unsigned i = 0; i < r->n; i++)
            if (sel[i] || sel2[i])
                block_side(r, i, true);
        break;
    }
    case SC_HEAL:
        say(r, "heal");
        heal(r);
        break;
    case SC_CHURN: {
        say(r, "churn nodes=%s every=%llums down=%llums until=%llums", who,
            (unsigned long long)ev->every_ms, (unsigned long long)ev->down_ms,
            (unsigned long long)ev->until_ms);
        for (uint64_t t = ev->at_ms; t < ev->until_ms && ev->every_ms; t += ev->every_ms)
            act_push(r, t, ACT_CHURN_TICK, ev, 0);
        break;
    }
    }
}

static void churn_tick(struct run *r, const struct action *a, uint64_t now_scn)
{
    bool sel[SC_MAX_NODES] = {false};
    if (!resolve(r, a->ev->nodes, sel, a->ev->line))
        return;
    unsigned cand[SC_MAX_NODES], n = 0;
    for (unsigned i = 0; i < r->n; i++)
        if (sel[i] && live(&r->nodes[i]))
            cand[n++] = i;
    if (!n) {
        say(r, "churn: no live node to crash");
        return;
    }
    unsigned i = cand[sc_rand(&r->rng) % n];
    say(r, "churn: crash node %u (SIGKILL), back in %llums", i, (unsigned long long)a->ev->down_ms);
    node_kill(r, i);
    r->nodes[i].churned = true;
    act_push(r, now_scn + a->ev->down_ms, ACT_CHURN_RESTART, a->ev, i);
}

/* Run every action at its time; false when interrupted or a setup step failed. */
static bool run_timeline(struct run *r)
{
    for (size_t i = 0; i < r->sc.n_events; i++)
        act_push(r, r->sc.events[i].at_ms, ACT_EVENT, &r->sc.events[i], 0);
    while (r->n_acts) {
        struct action a = r->acts[0];
        memmove(&r->acts[0], &r->acts[1], (r->n_acts - 1) * sizeof r->acts[0]);
        r->n_acts--;
        uint64_t due = r->t0 + (uint64_t)((double)a.at_ms / r->o.time_scale);
        if (!nap_until(due))
            return false;
        reap_unexpected(r);
        switch (a.kind) {
        case ACT_EVENT:
            run_event(r, a.ev);
            break;
        case ACT_CHURN_TICK:
            churn_tick(r, &a, a.at_ms);
            break;
        case ACT_CHURN_RESTART:
            if (r->nodes[a.node].churned && !live(&r->nodes[a.node])) {
                say(r, "churn: restart node %u", a.node);
                r->nodes[a.node].churned = false;
                node_start(r, a.node);
            }
            break;
        }
        if (r->failure[0] && strncmp(r->failure, "scenario:", 9) != 0)
            return false;
    }
    return true;
}

/* ---- checking ---- */

/* MQTT match of one path against one pattern ('+' one level, '#' the rest). */
static bool mqtt_match(const char *pat, const char *path)
{
    for (;;) {
        const char *pe = strchr(pat, '/'), *te = strchr(path, '/');
        size_t pl = pe ? (size_t)(pe - pat) : strlen(pat);
        size_t tl = te ? (size_t)(te - path) : strlen(path);
        if (pl == 1 && pat[0] == '#')
            return true;
        if (!(pl == 1 && pat[0] == '+') && (pl != tl || strncmp(pat, path, pl) != 0))
            return false;
        if (!pe || !te)
            return !pe && !te;
        pat = pe + 1;
        path = te + 1;
    }
}

static bool any_pattern(const char *patterns, const char *path)
{
    char pat[SC_PATHS_MAX];
    for (const char *p = patterns; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l < sizeof pat) {
            memcpy(pat, p, l);
            pat[l] = '\0';
            if (mqtt_match(pat, path))
                return true;
        }
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

/* Whether one of doc's paths (README "Queries": field paths to a scalar, value last) matches. */
static bool doc_matches(json_t *v, char *prefix, size_t plen, size_t cap, const char *patterns)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c)
        {
            if (plen == 0 && k[0] == '_')
                continue;
            int w = snprintf(prefix + plen, cap - plen, "%s%s", plen ? "/" : "", k);
            if (w < 0 || (size_t)w >= cap - plen)
                continue;
            if (doc_matches(c, prefix, plen + (size_t)w, cap, patterns))
                return true;
        }
        prefix[plen] = '\0';
        return false;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            if (doc_matches(c, prefix, plen, cap, patterns))
                return true;
        }
        return false;
    }
    char val[128];
    if (json_is_string(v))
        snprintf(val, sizeof val, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(val, sizeof val, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(val, sizeof val, "%.17g", json_real_value(v));
    else
        snprintf(val, sizeof val, "%s",
                 json_is_true(v)    ? "true"
                 : json_is_false(v) ? "false"
                                    : "null");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", prefix, val);
    return any_pattern(patterns, path);
}

/* What one node holds of one database: {id: {"leaves":[winner first...], "deleted":bool,
 * "doc": winner (with_docs)}}, from _changes?style=all_docs. NULL when it did not answer. */
static json_t *holdings(struct run *r, unsigned i, const char *db, bool with_docs)
{
    struct req q;
    req_set(&q, i, "GET", NULL, "/%s/_changes?style=all_docs%s", db,
            with_docs ? "&include_docs=true" : "");
    json_t *out = NULL;
    if (http1(r, &q) == 200 && json_is_array(json_object_get(q.json, "results"))) {
        out = json_object();
        size_t k;
        json_t *row;
        json_array_foreach(json_object_get(q.json, "results"), k, row)
        {
            json_t *leaves = json_array();
            size_t j;
            json_t *c;
            json_array_foreach(json_object_get(row, "changes"), j, c)
                json_array_append(leaves, json_object_get(c, "rev"));
            json_t *e = json_pack("{s:o,s:b}", "leaves", leaves, "deleted",
                                  json_is_true(json_object_get(row, "deleted")));
            if (with_docs && json_object_get(row, "doc"))
                json_object_set(e, "doc", json_object_get(row, "doc"));
            json_object_set_new(out, json_string_value(json_object_get(row, "id")), e);
        }
    }
    req_fini(&q);
    return out;
}

static const char *winner_of(json_t *h, const char *id)
{
    return json_string_value(json_array_get(json_object_get(json_object_get(h, id), "leaves"), 0));
}

/* The set hashes of db on the live nodes (digest from GET /{db}), in parallel. */
static void digests(struct run *r, const char *db, char (*out)[80])
{
    struct req qs[REAL_MAX_NODES];
    size_t n = 0;
    for (unsigned i = 0; i < r->n; i++) {
        out[i][0] = '\0';
        if (live(&r->nodes[i]))
            req_set(&qs[n++], i, "GET", NULL, "/%s", db);
    }
    http_run(r, qs, n);
    for (size_t k = 0; k < n; k++) {
        const char *dg = json_string_value(json_object_get(qs[k].json, "digest"));
        if (qs[k].status == 200 && dg)
            snprintf(out[qs[k].node], 80, "%lld %s",
                     (long long)json_integer_value(json_object_get(qs[k].json, "doc_count")), dg);
        req_fini(&qs[k]);
    }
}

static bool full_replica(const struct run *r, unsigned i, size_t d)
{
    return live(&r->nodes[i]) && !r->nodes[i].filter[d];
}

/* Invariant 1's cheap half: the live full replicas of every database have one set hash. */
static bool hashes_equal(struct run *r)
{
    for (size_t d = 0; d < r->sc.n_dbs; d++) {
        char dg[REAL_MAX_NODES][80];
        digests(r, r->sc.dbs[d], dg);
        const char *first = NULL;
        for (unsigned i = 0; i < r->n; i++) {
            if (!full_replica(r, i, d))
                continue;
            if (!dg[i][0])
                return false;
            if (!first)
                first = dg[i];
            else if (strcmp(first, dg[i]) != 0)
                return false;
        }
    }
    return true;
}

/* Invariant 3 on node i: every revision in every tree was acknowledged to some client. */
static bool no_invented(struct run *r, unsigned i, int d, json_t *h, char *why, size_t cap)
{
    const char *db = r->sc.dbs[d];
    const char *id;
    json_t *e;
    json_object_foreach(h, id, e)
    {
        (void)e;
        char *esc = curl_easy_escape(r->nodes[i].curl, id, 0);
        struct req q;
        req_set(&q, i, "GET", NULL, "/%s/%s?open_revs=all&revs=true", db, esc ? esc : id);
        curl_free(esc);
        q.accept_json = true;
        bool ok = http1(r, &q) == 200 && json_is_array(q.json);
        if (!ok) {
            snprintf(why, cap, "node %u: GET %s answered %ld", i, q.path, q.status);
            req_fini(&q);
            return false;
        }
        size_t k;
        json_t *item;
        json_array_foreach(q.json, k, item)
        {
            json_t *doc = json_object_get(item, "ok"), *rv = json_object_get(doc, "_revisions");
            json_int_t start = json_integer_value(json_object_get(rv, "start"));
            size_t j;
            json_t *hx;
            json_array_foreach(json_object_get(rv, "ids"), j, hx)
            {
                char rev[REAL_REV_MAX];
                snprintf(rev, sizeof rev, "%lld-%s", (long long)(start - (json_int_t)j),
                         json_string_value(hx));
                if (!acked_has(r, d, id, rev)) {
                    snprintf(why, cap, "node %u holds %s/%s rev %s, which no client wrote", i, db,
                             id, rev);
                    req_fini(&q);
                    return false;
                }
            }
        }
        req_fini(&q);
    }
    return true;
}

/* Every invariant of SCENARIOS.md; the first failure in why. */
static bool check_all(struct run *r, bool deep, char *why, size_t cap)
{
    bool ok = true;
    for (size_t d = 0; ok && d < r->sc.n_dbs; d++) {
        const char *db = r->sc.dbs[d];
        json_t *h[REAL_MAX_NODES] = {0};
        int ref = -1;
        for (unsigned i = 0; i < r->n; i++) {
            if (!live(&r->nodes[i]))
                continue;
            bool full = full_replica(r, i, d);
            h[i] = holdings(r, i, db, full && ref < 0);
            if (!h[i]) {
                snprintf(why, cap, "node %u did not answer _changes on %s", i, db);
                ok = false;
            }
            if (full && ref < 0)
                ref = (int)i;
        }
        /* 1. convergence: same winners and leaves (so the same conflicts) */
        for (unsigned i = 0; ok && ref >= 0 && i < r->n; i++) {
            if (!full_replica(r, i, d) || (int)i == ref)
                continue;
            const char *id;
            json_t *e;
            json_object_foreach(h[ref], id, e)
            {
                json_t *o = json_object_get(h[i], id);
                if (!o) {
                    snprintf(why, cap, "convergence: node %u lacks %s/%s (node %d has it)", i, db,
                             id, ref);
                    ok = false;
                    break;
                }
                if (!json_equal(json_object_get(o, "leaves"), json_object_get(e, "leaves")) ||
                    !json_equal(json_object_get(o, "deleted"), json_object_get(e, "deleted"))) {
                    snprintf(why, cap,
                             "convergence: %s/%s: node %u has winner %s (%zu leaves), node %d "
                             "has %s (%zu leaves)",
                             db, id, i, winner_of(h[i], id),
                             json_array_size(json_object_get(o, "leaves")), ref,
                             winner_of(h[ref], id), json_array_size(json_object_get(e, "leaves")));
                    ok = false;
                    break;
                }
            }
            if (ok && json_object_size(h[i]) != json_object_size(h[ref])) {
                snprintf(why, cap, "convergence: node %u holds %zu documents of %s, node %d %zu", i,
                         json_object_size(h[i]), db, ref, json_object_size(h[ref]));
                ok = false;
            }
        }
        /* 2. no acknowledged write lost on a live full replica */
        json_t *acked = json_array_get(r->acked, d);
        char *diff = json_object_size(acked) ? json_dumps(acked, JSON_COMPACT) : NULL;
        for (unsigned i = 0; ok && diff && i < r->n; i++) {
            if (!full_replica(r, i, d))
                continue;
            struct req q;
            req_set(&q, i, "POST", strdup(diff), "/%s/_revs_diff", db);
            long st = http1(r, &q);
            if (st != 200 || !json_is_object(q.json)) {
                snprintf(why, cap, "node %u: _revs_diff on %s answered %ld", i, db, st);
                ok = false;
            } else if (json_object_size(q.json)) {
                const char *id = json_object_iter_key(json_object_iter(q.json));
                json_t *miss = json_object_get(json_object_get(q.json, id), "missing");
                snprintf(
                    why, cap,
                    "lost write: node %u lacks %zu acknowledged revision(s) of %s, e.g. %s rev "
                    "%s",
                    i, json_object_size(q.json), db, id,
                    json_string_value(json_array_get(miss, 0)));
                ok = false;
            }
            req_fini(&q);
        }
        free(diff);
        /* 4. filters: exactly what the patterns select (winners), plus its own documents */
        for (unsigned i = 0; ok && ref >= 0 && i < r->n; i++) {
            const char *pats = r->nodes[i].filter[d];
            if (!live(&r->nodes[i]) || !pats)
                continue;
            json_t *own = json_object_get(r->nodes[i].wrote, db);
            const char *id;
            json_t *e;
            json_object_foreach(h[ref], id, e)
            {
                if (json_object_get(own, id))
                    continue;
                char prefix[512] = "";
                bool live_doc = !json_is_true(json_object_get(e, "deleted"));
                json_t *doc = json_object_get(e, "doc");
                bool want = live_doc && doc && doc_matches(doc, prefix, 0, sizeof prefix, pats);
                json_t *o = json_object_get(h[i], id);
                bool has = o && !json_is_true(json_object_get(o, "deleted"));
                if (want != has) {
                    snprintf(why, cap, "filter: node %u (%s=%s) %s %s/%s", i, db, pats,
                             want ? "lacks" : "holds", db, id);
                    ok = false;
                    break;
                }
                if (want && strcmp(winner_of(h[i], id), winner_of(h[ref], id)) != 0) {
                    snprintf(why, cap, "filter: node %u has winner %s of %s/%s, node %d %s", i,
                             winner_of(h[i], id), db, id, ref, winner_of(h[ref], id));
                    ok = false;
                    break;
                }
            }
            json_object_foreach(h[i], id, e)
            {
                if (!ok || json_object_get(own, id) || json_object_get(h[ref], id) ||
                    json_is_true(json_object_get(e, "deleted")))
                    continue;
                snprintf(why, cap, "filter: node %u (%s=%s) holds %s/%s, which no full replica has",
                         i, db, pats, db, id);
                ok = false;
            }
        }
        /* 3. no invented revision (one read per document: last) */
        for (unsigned i = 0; ok && deep && i < r->n; i++)
            if (h[i])
                ok = no_invented(r, i, (int)d, h[i], why, cap);
        for (unsigned i = 0; i < r->n; i++)
            json_decref(h[i]);
    }
    return ok;
}

/* ---- setup ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static bool port_free(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Ports base..base+n-1, all free now (20000-31999, below the usual ephemeral range). */
static int pick_ports(struct run *r)
{
    uint64_t s = r->o.seed ^ ((uint64_t)getpid() << 20);
    for (int tries = 0; tries < 64; tries++) {
        int base = 20000 + (int)(sc_rand(&s) % (12000 - r->n));
        bool ok = true;
        for (unsigned i = 0; ok && i < r->n; i++)
            ok = port_free("127.0.0.1", base + (int)i);
        if (ok)
            return base;
    }
    return -1;
}

static bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* --netns: start `netns.sh hold N` and wait for its ready line. 77: cannot here. */
static int netns_up(struct run *r)
{
    /* the build tree does not hold netns.sh: the source tree does (BARREL_SOURCE_DIR) */
    snprintf(r->netns_sh, sizeof r->netns_sh, "%s/tests/netns/netns.sh", BARREL_SOURCE_DIR);
    if (access(r->netns_sh, R_OK) != 0) {
        fprintf(stderr, "barrel-real: --netns needs %s\n", r->netns_sh);
        return 1;
    }
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0)
        return 1;
    char outlog[PATH_MAX];
    snprintf(outlog, sizeof outlog, "%s/netns.log", r->root);
    pid_t p = fork();
    if (p < 0)
        return 1;
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(in[0], 0);
        dup2(out[1], 1);
        int fd = open(outlog, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        close(in[1]);
        close(out[0]);
        char n[16];
        snprintf(n, sizeof n, "%u", r->n);
        execl("/bin/bash", "bash", r->netns_sh, "hold", n, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    r->holder = p;
    r->holder_in = in[1];
    FILE *f = fdopen(out[0], "r");
    char line[512];
    int rc = 1;
    while (f && fgets(line, sizeof line, f)) {
        const char *q = strstr(line, "netns: ready prefix=");
        if (!q)
            continue;
        q += strlen("netns: ready prefix=");
        size_t l = strcspn(q, " \n");
        snprintf(r->prefix, sizeof r->prefix, "%.*s", (int)l, q);
        rc = 0;
        break;
    }
    if (f)
        fclose(f);
    if (rc) {
        int st = 0;
        waitpid(p, &st, 0);
        r->holder = 0;
        close(r->holder_in);
        rc = WIFEXITED(st) && WEXITSTATUS(st) == 77 ? 77 : 1;
        FILE *lg = fopen(outlog, "r");
        while (lg && fgets(line, sizeof line, lg))
            fprintf(stderr, "barrel-real: %s", line);
        if (lg)
            fclose(lg);
        return rc;
    }
    for (unsigned i = 0; i < r->n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/run/netns/%sh%u", r->prefix, i + 1);
        r->nodes[i].netns_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (r->nodes[i].netns_fd < 0) {
            fprintf(stderr, "barrel-real: cannot open %s: %s\n", path, strerror(errno));
            return 1;
        }
        snprintf(r->nodes[i].host, sizeof r->nodes[i].host, "10.99.0.%u", i + 1);
        r->nodes[i].port = 7070;
    }
    return 0;
}

static int setup(struct run *r)
{
    const struct scenario *sc = &r->sc;
    if (r->o.keep) {
        /* a fresh directory: data dirs left by another run would be reused */
        if (mkdir(r->o.keep, 0700) != 0 &&
            (errno != EEXIST || rmdir(r->o.keep) != 0 || mkdir(r->o.keep, 0700) != 0)) {
            fprintf(stderr, "barrel-real: --keep %s: %s (it must not exist, or be empty)\n",
                    r->o.keep, strerror(errno));
            return 2;
        }
        char full[PATH_MAX];
        if (!realpath(r->o.keep, full) || strlen(full) >= sizeof r->root) {
            fprintf(stderr, "barrel-real: --keep %s: no such directory, or too long\n", r->o.keep);
            return 2;
        }
        memcpy(r->root, full, strlen(full) + 1);
    } else {
        snprintf(r->root, sizeof r->root, "/tmp/barrel-real.XXXXXX");
        if (!mkdtemp(r->root)) {
            fprintf(stderr, "barrel-real: mkdtemp: %s\n", strerror(errno));
            r->root[0] = '\0';
            return 1;
        }
    }
    r->nodes = calloc(r->n, sizeof *r->nodes);
    r->multi = curl_multi_init();
    r->acked = json_array();
    if (!r->nodes || !r->multi || !r->acked)
        return 1;
    for (size_t d = 0; d < sc->n_dbs; d++)
        json_array_append_new(r->acked, json_object());
    for (unsigned i = 0; i < r->n; i++) {
        struct node *nd = &r->nodes[i];
        nd->idx = i;
        nd->netns_fd = -1;
        snprintf(nd->dir, sizeof nd->dir, "%s/n%u", r->root, i);
        snprintf(nd->log, sizeof nd->log, "%s/n%u.log", r->root, i);
        snprintf(nd->host, sizeof nd->host, "127.0.0.1");
        nd->curl = curl_easy_init();
        nd->wrote = json_object();
        for (size_t d = 0; d < sc->n_dbs; d++)
            json_object_set_new(nd->wrote, sc->dbs[d], json_object());
        if (!nd->curl || !nd->wrote)
            return 1;
    }
    /* filters, then the nodes named by `join` (they wait for it) */
    for (size_t f = 0; f < sc->n_filters; f++) {
        bool sel[SC_MAX_NODES] = {false};
        int d = db_index(r, sc->filters[f].db);
        if (d < 0 || !resolve(r, sc->filters[f].nodes, sel, 0))
            return 1;
        for (unsigned i = 0; i < r->n; i++)
            if (sel[i])
                r->nodes[i].filter[d] = sc->filters[f].paths;
    }
    for (size_t e = 0; e < sc->n_events; e++) {
        bool sel[SC_MAX_NODES] = {false};
        uint64_t keep = r->rng; /* joins name their nodes again when they run */
        if (sc->events[e].kind == SC_JOIN && resolve(r, sc->events[e].nodes, sel, 0))
            for (unsigned i = 0; i < r->n; i++)
                r->nodes[i].late = r->nodes[i].late || sel[i];
        r->rng = keep;
    }
    if (r->o.netns) {
        int rc = netns_up(r);
        if (rc)
            return rc;
    } else {
        int base = r->o.base_port ? r->o.base_port : pick_ports(r);
        if (base <= 0 || base + (int)r->n > 65535) {
            fprintf(stderr, "barrel-real: no %u free ports\n", r->n);
            return 1;
        }
        for (unsigned i = 0; i < r->n; i++)
            r->nodes[i].port = base + (int)i;
    }
    /* the mesh key, the config (link timeout; admin credentials off loopback) */
    snprintf(r->key, sizeof r->key, "%s/mesh.key", r->root);
    snprintf(r->cfg, sizeof r->cfg, "%s/config.json", r->root);
    char out[512];
    char *mk[] = {(char *)r->o.barrel, "mesh-key", "new", r->key, NULL};
    if (run_capture(mk, NULL, out, sizeof out) != 0) {
        fprintf(stderr, "barrel-real: %s mesh-key new failed\n", r->o.barrel);
        return 1;
    }
    unsigned to = (unsigned)(sc->net.timeout_ms < 200 ? 200 : sc->net.timeout_ms);
    json_t *cfg = json_pack("{s:{s:I,s:I}}", "p2p", "heartbeat_ms", (json_int_t)(to / 4),
                            "timeout_ms", (json_int_t)to);
    if (r->o.netns) {
        char *pw[] = {(char *)r->o.barrel, "passwd", NULL};
        if (run_capture(pw, "barrel-real\n", out, sizeof out) != 0) {
            fprintf(stderr, "barrel-real: %s passwd failed\n", r->o.barrel);
            json_decref(cfg);
            return 1;
        }
        json_object_set_new(cfg, "admin",
                            json_pack("{s:s,s:s}", "username", "admin", "password_hash", out));
    }
    char *text = json_dumps(cfg, JSON_COMPACT);
    json_decref(cfg);
    bool ok = text && write_file(r->cfg, text);
    free(text);
    if (!ok) {
        fprintf(stderr, "barrel-real: cannot write %s\n", r->cfg);
        return 1;
    }
    /* identities first: a partition blocks members that never ran yet */
    for (unsigned i = 0; i < r->n; i++) {
        char *id[] = {(char *)r->o.barrel, "--data", r->nodes[i].dir, "id", NULL};
        if (run_capture(id, NULL, r->nodes[i].id, sizeof r->nodes[i].id) != 0 ||
            !r->nodes[i].id[0]) {
            fprintf(stderr, "barrel-real: %s --data %s id failed\n", r->o.barrel, r->nodes[i].dir);
            return 1;
        }
    }
    return 0;
}

/* Kill every child, close what setup opened; remove the files unless kept. */
static void teardown(struct run *r, bool graceful)
{
    for (unsigned i = 0; r->nodes && i < r->n; i++) {
        if (graceful)
            node_stop(r, i, false);
        else
            node_kill(r, i);
    }
    if (r->holder > 0) {
        close(r->holder_in);
        int st;
        if (!wait_exit(r->holder, 30000, &st)) {
            kill(r->holder, SIGKILL);
            waitpid(r->holder, &st, 0);
        }
        r->holder = 0;
    }
    for (unsigned i = 0; r->nodes && i < r->n; i++) {
        curl_easy_cleanup(r->nodes[i].curl);
        json_decref(r->nodes[i].wrote);
        if (r->nodes[i].netns_fd >= 0)
            close(r->nodes[i].netns_fd);
    }
    if (r->multi)
        curl_multi_cleanup(r->multi);
    free(r->nodes);
    free(r->acts);
    json_decref(r->acked);
    if (r->root[0] && !r->o.keep)
        nftw(r->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- the report ---- */

struct result {
    bool converged, ok;
    uint64_t timeline_ms, conv_after_event_ms, conv_after_write_ms;
    uint64_t bytes, msgs;
};

static void print_rerun(const struct run *r, FILE *f)
{
    fprintf(f, "rerun: %s %s --seed %llu --nodes %u --barrel %s", "barrel-real", r->o.scn,
            (unsigned long long)r->o.seed, r->n, r->o.barrel);
    if (r->o.time_scale != 1.0)
        fprintf(f, " --time-scale %g", r->o.time_scale);
    if (r->o.netns)
        fprintf(f, " --netns");
    fprintf(f, " --keep /tmp/barrel-real-%s-%llu\n", r->sc.name, (unsigned long long)r->o.seed);
}

static void report(struct run *r, const struct result *res)
{
    double per = r->changes ? (double)r->changes * r->n : 1.0;
    char conv[32], after[32];
    if (res->converged) {
        snprintf(conv, sizeof conv, "%llu", (unsigned long long)res->conv_after_event_ms);
        snprintf(after, sizeof after, "%llu", (unsigned long long)res->conv_after_write_ms);
    } else {
        snprintf(conv, sizeof conv, "-");
        snprintf(after, sizeof after, "-");
    }
    printf("\n%-16s %8s %5s %7s %7s %11s %13s %10s %12s %11s %s\n", "scenario", "seed", "nodes",
           "changes", "refused", "conv_ms", "after_write", "bytes_sent", "bytes/chg/nd",
           "msgs/chg/nd", "result");
    printf("%-16s %8llu %5u %7llu %7llu %11s %13s %10llu %12.1f %11.2f %s\n", r->sc.name,
           (unsigned long long)r->o.seed, r->n, (unsigned long long)r->changes,
           (unsigned long long)r->refused, conv, after, (unsigned long long)res->bytes,
           (double)res->bytes / per, (double)res->msgs / per, res->ok ? "ok" : "FAIL");
    printf("(conv_ms: from the last event to equal set hashes; after_write: from the last "
           "acknowledged write; bytes and messages: /_p2p bytes and mesh messages sent by all "
           "nodes over the run, per change per node)\n");
    if (!r->o.csv)
        return;
    struct stat st;
    bool header = stat(r->o.csv, &st) != 0 || st.st_size == 0;
    FILE *f = fopen(r->o.csv, "a");
    if (!f) {
        fprintf(stderr, "barrel-real: --csv %s: %s\n", r->o.csv, strerror(errno));
        return;
    }
    if (header)
        fprintf(f, "scenario,seed,nodes,topology,changes,refused,skipped,timeline_ms,converged,"
                   "conv_after_event_ms,conv_after_write_ms,bytes_sent,msgs_sent,"
                   "bytes_per_change_node,msgs_per_change_node,result,failure\n");
    char failure[1100];
    size_t k = 0;
    for (const char *p = r->failure; *p && k + 2 < sizeof failure; p++)
        failure[k++] = *p == '"' ? '\'' : *p;
    failure[k] = '\0';
    fprintf(f, "%s,%llu,%u,%s,%llu,%llu,%llu,%llu,%d,%s,%s,%llu,%llu,%.1f,%.2f,%s,\"%s\"\n",
            r->sc.name, (unsigned long long)r->o.seed, r->n, sc_topology_name(r->sc.topology),
            (unsigned long long)r->changes, (unsigned long long)r->refused,
            (unsigned long long)r->skipped, (unsigned long long)res->timeline_ms, res->converged,
            res->converged ? conv : "", res->converged ? after : "", (unsigned long long)res->bytes,
            (unsigned long long)res->msgs, (double)res->bytes / per, (double)res->msgs / per,
            res->ok ? "ok" : "fail", failure);
    fclose(f);
}

/* After the timeline: wait for equal set hashes, then for every invariant, within settle. */
static void converge(struct run *r, struct result *res)
{
    uint64_t end_ev = mono_ms();
    res->timeline_ms = end_ev - r->t0;
    uint64_t deadline = end_ev + r->sc.settle_ms;
    uint64_t eq_since = 0;
    char why[1024] = "";
    say(r, "timeline done: waiting for convergence (settle %llums)",
        (unsigned long long)r->sc.settle_ms);
    for (;;) {
        reap_unexpected(r);
        uint64_t now = mono_ms();
        bool eq = hashes_equal(r);
        if (!eq) {
            eq_since = 0;
            snprintf(why, sizeof why, "convergence: the set hashes still differ");
        } else {
            if (!eq_since)
                eq_since = now;
            if (check_all(r, false, why, sizeof why)) {
                for (unsigned i = 0; i < r->n; i++)
                    sample_metrics(r, i);
                res->converged = true;
                res->conv_after_event_ms = eq_since - end_ev;
                res->conv_after_write_ms = r->last_write_ms ? eq_since - r->last_write_ms : 0;
                say(r, "converged %llums after the last event",
                    (unsigned long long)(eq_since - end_ev));
                break;
            }
        }
        if (now >= deadline || interrupted)
            break;
        nap_until(now + (eq ? 200 : REAL_POLL_MS));
    }
    /* the last word: every invariant, invented revisions included */
    if (!interrupted && check_all(r, true, why, sizeof why))
        res->ok = res->converged;
    else if (!interrupted)
        fail(r, "%s", why);
    if (!res->converged) {
        fail(r, "%s (after settle %llums)", why[0] ? why : "convergence: never reached",
             (unsigned long long)r->sc.settle_ms);
        for (unsigned i = 0; i < r->n; i++)
            sample_metrics(r, i);
    }
    for (unsigned i = 0; i < r->n; i++) {
        res->bytes += r->nodes[i].bytes_before + r->nodes[i].bytes_now;
        res->msgs += r->nodes[i].msgs_before + r->nodes[i].msgs_now;
    }
}

/* ---- main ---- */

static int usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "barrel-real: %s\n", msg);
    fprintf(stderr,
            "usage: barrel-real SCENARIO_FILE --seed N [--nodes N] [--barrel PATH]\n"
            "                   [--base-port P] [--csv FILE] [--keep DIR] [--time-scale F]\n"
            "                   [--netns]\n");
    return 2;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_args(int argc, char **argv, struct opts *o)
{
    bool seed = false;
    o->time_scale = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        if (strcmp(a, "--netns") == 0) {
            o->netns = true;
            continue;
        }
        if (a[0] != '-') {
            if (o->scn)
                return false;
            o->scn = a;
            continue;
        }
        if (!v)
            return false;
        i++;
        if (strcmp(a, "--seed") == 0 && parse_u64(v, UINT64_MAX, &n)) {
            o->seed = n;
            seed = true;
        } else if (strcmp(a, "--nodes") == 0 && parse_u64(v, REAL_MAX_NODES, &n) && n > 0) {
            o->nodes = (unsigned)n;
        } else if (strcmp(a, "--base-port") == 0 && parse_u64(v, 65000, &n) && n >= 1024) {
            o->base_port = (int)n;
        } else if (strcmp(a, "--barrel") == 0) {
            o->barrel = v;
        } else if (strcmp(a, "--csv") == 0) {
            o->csv = v;
        } else if (strcmp(a, "--keep") == 0) {
            o->keep = v;
        } else if (strcmp(a, "--time-scale") == 0) {
            char *end = NULL;
            o->time_scale = strtod(v, &end);
            if (*end || !(o->time_scale >= 1.0))
                return false;
        } else {
            return false;
        }
    }
    return o->scn && seed;
}

/* The barrel binary beside this one (the build tree's), unless --barrel names one. */
static void default_barrel(char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    out[0] = '\0';
    if (k <= 0)
        return;
    self[k] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return;
    *slash = '\0';
    char *up = strrchr(self, '/');
    /* build/simulations/barrel-real -> build/barrel */
    if (up && strcmp(up + 1, "simulations") == 0)
        *up = '\0';
    if (strlen(self) + sizeof "/barrel" <= cap)
        snprintf(out, cap, "%.*s/barrel", (int)(cap - sizeof "/barrel"), self);
}

static void print_ignored(const struct run *r)
{
    const struct sc_net *n = &r->sc.net;
    if (n->latency_ms != 5 || n->jitter_ms || n->loss > 0 || n->dup > 0 || n->reorder > 0 ||
        n->bandwidth_bps)
        printf("net: latency=%llums jitter=%llums loss=%g%% dup=%g%% reorder=%g%% bandwidth=%llu "
               "B/s: not applied on loopback, ignored (timeout=%llums is: the links' timeout)\n",
               (unsigned long long)n->latency_ms, (unsigned long long)n->jitter_ms, n->loss * 100,
               n->dup * 100, n->reorder * 100, (unsigned long long)n->bandwidth_bps,
               (unsigned long long)n->timeout_ms);
    if (r->sc.n_skews)
        printf("skew: %zu line(s): real processes share the host's clock, ignored\n",
               r->sc.n_skews);
}

int main(int argc, char **argv)
{
    struct run run;
    memset(&run, 0, sizeof run);
    struct run *r = &run;
    if (!parse_args(argc, argv, &r->o))
        return usage(NULL);
    char barrel[PATH_MAX];
    if (!r->o.barrel) {
        default_barrel(barrel, sizeof barrel);
        r->o.barrel = barrel;
    }
    if (access(r->o.barrel, X_OK) != 0) {
        fprintf(stderr, "barrel-real: no barrel program at %s (--barrel PATH)\n", r->o.barrel);
        return 2;
    }
    struct br_errbuf eb = {{0}};
    if (sc_load(r->o.scn, &r->sc, &eb)) {
        fprintf(stderr, "barrel-real: %s\n", eb.msg);
        return 2;
    }
    r->n = r->o.nodes ? r->o.nodes : r->sc.nodes;
    if (r->n > REAL_MAX_NODES) {
        fprintf(stderr, "barrel-real: %u nodes: at most %d real processes (--nodes N)\n", r->n,
                REAL_MAX_NODES);
        sc_free(&r->sc);
        return 2;
    }
    uint64_t span = r->sc.n_events ? r->sc.events[r->sc.n_events - 1].at_ms : 0;
    for (size_t i = 0; i < r->sc.n_events; i++)
        if (r->sc.events[i].kind == SC_CHURN && r->sc.events[i].until_ms > span)
            span = r->sc.events[i].until_ms;
    if ((double)span / r->o.time_scale > REAL_MAX_WALL_MS) {
        fprintf(stderr,
                "barrel-real: %s: the timeline lasts %llus, too long for the wall clock: give "
                "--time-scale F (event times are divided by F)\n",
                r->o.scn, (unsigned long long)(span / 1000));
        sc_free(&r->sc);
        return 2;
    }
    r->rng = r->o.seed;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    printf("barrel-real: %s (%s, topology %s) seed %llu, %u nodes%s, barrel %s\n", r->sc.name,
           r->o.scn, sc_topology_name(r->sc.topology), (unsigned long long)r->o.seed, r->n,
           r->o.netns ? " in network namespaces (mDNS)" : " on loopback", r->o.barrel);
    print_ignored(r);
    fflush(stdout);
    int rc = setup(r);
    if (rc) {
        if (r->failure[0])
            fprintf(stderr, "barrel-real: %s\n", r->failure);
        teardown(r, false);
        sc_free(&r->sc);
        curl_global_cleanup();
        return rc;
    }
    printf("files in %s%s\n", r->root,
           r->o.keep ? "" : " (removed at the end; --keep DIR keeps them)");
    struct result res = {0};
    r->t0 = mono_ms();
    bool ok = true;
    unsigned started = 0;
    for (unsigned i = 0; ok && i < r->n; i++) {
        /* static links dial ahead: start first the nodes that others dial */
        bool down = r->sc.topology == SC_TOPO_CHAIN || r->sc.topology == SC_TOPO_FULL;
        unsigned k = down ? r->n - 1 - i : i;
        if (!r->nodes[k].late) {
            ok = node_start(r, k);
            started++;
        }
    }
    if (ok)
        say(r, "%u nodes up", started);
    r->t0 = mono_ms(); /* scenario time 0: every node started */
    if (ok && run_timeline(r) && !interrupted)
        converge(r, &res);
    if (interrupted) {
        fprintf(stderr, "barrel-real: interrupted\n");
        teardown(r, false);
        rc = 130;
    } else {
        teardown(r, true);
        if (r->problem[0])
            fail(r, "process: %s", r->problem);
        if (r->failure[0]) /* a scenario error, a refused write, a process that failed */
            res.ok = false;
        if (!res.ok)
            fail(r, "%s", "the run stopped early");
        report(r, &res);
        rc = res.ok ? 0 : 1;
        if (!res.ok) {
            printf("FAIL: %s\n", r->failure);
            print_rerun(r, stdout);
        }
    }
    sc_free(&r->sc);
    curl_global_cleanup();
    return rc;
}
