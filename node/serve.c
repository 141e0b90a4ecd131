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
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

#include "api.h"
#include "http.h"
#include "router.h"
#include "workers.h"

#define DRAIN_MAX_NS (30ull * 1000000000ull)

struct node {
    struct br_api api;
    br_http_server *http;
    br_workers *workers;
    atomic_bool stop;
    sigset_t sigs;
};

struct job {
    struct node *n;
    br_api_fn fn;
    br_http_ex *x;
};

static void job_run(void *arg)
{
    struct job *j = arg;
    j->fn(&j->n->api, j->x);
}

static void job_done(void *arg)
{
    struct job *j = arg;
    br_http_respond(j->x);
    br_free(j);
}

static void on_request(void *arg, br_http_ex *x)
{
    struct node *n = arg;
    struct br_route r;
    if (atomic_load(&n->stop)) {
        br_http_resp_error(&x->resp, 503, "service_unavailable", "the node is shutting down");
        x->close_after = true;
        br_http_respond(x);
        return;
    }
    if (!br_router_match(x, &r)) {
        br_http_respond(x);
        return;
    }
    if (!r.worker) {
        r.fn(&n->api, x);
        br_http_respond(x);
        return;
    }
    struct job *j = br_malloc(sizeof *j);
    br_err e = j ? BR_OK : BR_ENOMEM;
    if (j) {
        *j = (struct job){n, r.fn, x};
        e = br_workers_submit(n->workers, job_run, job_done, j);
    }
    if (e) {
        br_free(j);
        br_http_resp_error(&x->resp, 503, "service_unavailable", "cannot queue the request");
        br_http_respond(x);
    }
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

static void on_wake(void *arg)
{
    struct node *n = arg;
    br_workers_drain(n->workers);
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

int br_serve_run(const struct br_serve_opts *o, FILE *out, FILE *err)
{
    struct node n;
    memset(&n, 0, sizeof n);
    atomic_init(&n.stop, false);
    const char *bind = o->bind ? o->bind : BR_SERVE_DEFAULT_BIND;
    if (!is_loopback(bind)) {
        fprintf(err,
                "barrel: refusing to listen on %s: a non-loopback address needs admin "
                "credentials, which this version cannot configure yet\n",
                bind);
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
    struct br_store_opts so = {.path = o->data};
    br_err e = br_store_open(&so, &n.api.store, &eb);
    if (e) {
        fprintf(err, "barrel: %s\n", eb.msg[0] ? eb.msg : br_strerror(e));
        goto out;
    }
    n.api.start_mono_ns = br_env_mono_ns(br_store_env(n.api.store));
    n.api.max_body = o->max_body ? o->max_body : BR_SERVE_DEFAULT_MAX_BODY;
    struct br_http_opts ho = {
        .bind = bind,
        .port = o->port,
        .max_body = n.api.max_body,
        .request_timeout_s =
            o->request_timeout_s ? o->request_timeout_s : BR_SERVE_DEFAULT_TIMEOUT_S,
        .keepalive_timeout_s = 60,
        .on_request = on_request,
        .decorate = decorate,
        .on_wake = on_wake,
        .arg = &n,
    };
    if ((e = br_http_server_new(&ho, &n.http, &eb))) {
        fprintf(err, "barrel: %s\n", eb.msg);
        goto out;
    }
    if ((e = br_workers_new(o->workers ? o->workers : 2, wake, &n, &n.workers))) {
        fprintf(err, "barrel: cannot start worker threads: %s\n", br_strerror(e));
        goto out;
    }
    pthread_t sig_thread;
    if (pthread_create(&sig_thread, NULL, signal_main, &n) != 0) {
        fprintf(err, "barrel: cannot start the signal thread\n");
        goto out;
    }
    fprintf(out, "barrel: listening on http://%s:%d data=%s\n", bind, br_http_server_port(n.http),
            o->data);
    fflush(out);
    br_log(BR_LOG_INFO, "node", "event=listening addr=%s port=%d data=%s", bind,
           br_http_server_port(n.http), o->data);
    while (!atomic_load(&n.stop))
        br_http_server_service(n.http);
    /* Stopping: new requests get 503; in-flight ones finish and are answered. */
    uint64_t t0 = br_env_mono_ns(br_env_default());
    while ((br_workers_pending(n.workers) > 0 || br_http_server_inflight(n.http) > 0) &&
           br_env_mono_ns(br_env_default()) - t0 < DRAIN_MAX_NS)
        br_http_server_service(n.http);
    pthread_join(sig_thread, NULL);
    br_log(BR_LOG_INFO, "node", "event=stopped");
    rc = 0;
out:
    br_workers_free(n.workers);  /* finishes queued jobs; their answers are queued to write */
    br_http_server_free(n.http); /* closes connections */
    br_store_close(n.api.store);
    return rc;
}
