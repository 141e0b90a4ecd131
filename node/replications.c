/* replications.c — the replication manager (replications.h).
 *
 * A task is one replication named by a hash of its normalised spec (source, target, filter):
 * that hash is the `_local_id` a continuous start answers, and what cancel matches. A one-shot
 * task runs on the caller's thread (an HTTP worker) and is listed while it runs; a continuous
 * task owns a thread that opens both endpoints, runs the replicator until cancelled, and after a
 * failure waits (1 s doubling to 60 s, woken at once by a cancel) and starts again. The list of
 * continuous specs is rewritten to <data>/_replications.json (temp file, fsync, rename) whenever
 * one starts or is cancelled. */
#include "replications.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/env.h"
#include "barrel/ep_http.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/query.h"
#include "barrel/replicator.h"

#include "p2p.h"

#define TAG "rep"
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000

struct task {
    struct task *next;
    char id[33];
    json_t *spec; /* normalised: source, target, filter?, continuous, create_target */
    bool continuous;
    pthread_t th;
    bool has_thread;
    br_rep *rep; /* the run in progress, under m->mu */
    atomic_bool cancel;
    pthread_cond_t cv;
    uint64_t started_on, updated_on; /* wall ms */
    struct br_rep_stats stats;       /* of the last finished run, when none runs */
    char state[16];
    char error[BR_ERRBUF_SIZE];
};

struct br_repmgr {
    br_store *store;
    _Atomic(struct br_p2p *) p2p; /* links for ws:// and barrel:// endpoints, or NULL */
    atomic_bool stopped;
    char *path; /* <data>/_replications.json */
    pthread_mutex_t mu;
    struct task *tasks;
};

static uint64_t now_ms(void)
{
    return br_env_wall_ms(br_env_default());
}

static json_t *err_json(const char *error, const char *reason)
{
    return json_pack("{s:s,s:s}", "error", error, "reason", reason);
}

/* ---- specs ---- */

static bool is_peer_url(const char *s)
{
    return strncmp(s, "barrel://", 9) == 0 || strncmp(s, "ws://", 5) == 0 ||
           strncmp(s, "wss://", 6) == 0;
}

/* "db" or {"url": "..."} (CouchDB allows both) */
static const char *endpoint_str(const json_t *v)
{
    if (json_is_object(v))
        v = json_object_get(v, "url");
    return json_string_value(v);
}

/* Normalise a request body into a spec; on failure *status and *out are the answer. */
static json_t *parse_spec(const json_t *body, int *status, json_t **out)
{
    const char *src = endpoint_str(json_object_get(body, "source"));
    const char *tgt = endpoint_str(json_object_get(body, "target"));
    if (!json_is_object(body) || !src || !tgt || !*src || !*tgt) {
        *status = 400;
        *out = err_json("bad_request", "source and target are required (strings)");
        return NULL;
    }
    json_t *filter = json_object_get(body, "filter"), *sel = json_object_get(body, "selector");
    json_t *spec = json_pack("{s:s,s:s,s:b,s:b}", "source", src, "target", tgt, "continuous",
                             json_is_true(json_object_get(body, "continuous")), "create_target",
                             json_is_true(json_object_get(body, "create_target")));
    json_t *f = json_object();
    if (filter && !json_is_null(filter)) {
        json_t *paths = json_object_get(filter, "paths"), *q = json_object_get(filter, "query");
        if (!json_is_object(filter) || (paths && !json_is_array(paths)) ||
            (q && !json_is_object(q))) {
            *status = 400;
            *out = err_json("bad_request",
                            "filter must be {\"paths\": [pattern, ...], \"query\": {...}}");
            goto fail;
        }
        size_t i;
        json_t *p;
        json_array_foreach(paths, i, p) if (!json_is_string(p))
        {
            *status = 400;
            *out = err_json("bad_request", "filter paths must be strings");
            goto fail;
        }
        if (paths && json_array_size(paths))
            json_object_set(f, "paths", paths);
        if (q)
            json_object_set(f, "query", q);
    }
    if (sel && !json_is_null(sel)) {
        br_query *q = NULL;
        json_t *find = json_pack("{s:O}", "selector", sel), *qj = NULL;
        struct br_errbuf eb = {{0}};
        br_err e = br_query_from_mango(find, &q, &eb);
        json_decref(find);
        if (!e)
            e = br_query_to_json(q, &qj);
        br_query_free(q);
        if (e) {
            *status = 400;
            *out = err_json("bad_request", eb.msg[0] ? eb.msg : "selector does not translate");
            goto fail;
        }
        json_object_set_new(f, "query", qj);
    }
    if (json_object_size(f))
        json_object_set(spec, "filter", f);
    json_decref(f);
    return spec;
fail:
    json_decref(f);
    json_decref(spec);
    return NULL;
}

/* The task id: BLAKE2b-128 of the canonical JSON of (source, target, filter). */
static void spec_id(const json_t *spec, char out[33])
{
    json_t *k =
        json_pack("{s:O,s:O,s:O?}", "source", json_object_get(spec, "source"), "target",
                  json_object_get(spec, "target"), "filter", json_object_get(spec, "filter"));
    char *t = json_dumps(k, JSON_SORT_KEYS | JSON_COMPACT);
    uint8_t h[16];
    crypto_generichash(h, sizeof h, (const uint8_t *)(t ? t : ""), t ? strlen(t) : 0, NULL, 0);
    sodium_bin2hex(out, 33, h, sizeof h);
    free(t);
    json_decref(k);
}

/* ---- endpoints and one run ---- */

/* "ws://host:port/db" or "barrel://NODEID/db": the peer (URL or node id) and the db. */
static br_err split_peer(const char *s, char *peer, size_t cap, const char **db)
{
    bool by_id = strncmp(s, "barrel://", 9) == 0;
    const char *scheme_end = strstr(s, "://");
    if (!scheme_end)
        return BR_EINVAL;
    const char *host = scheme_end + 3;
    const char *slash = strchr(host, '/');
    if (!slash || slash == host || !slash[1] || strchr(slash + 1, '/'))
        return BR_EINVAL;
    const char *from = by_id ? host : s; /* a node id, or the whole ws:// URL up to the db */
    size_t n = (size_t)(slash - from);
    if (n >= cap)
        return BR_EINVAL;
    memcpy(peer, from, n);
    peer[n] = '\0';
    *db = slash + 1;
    return BR_OK;
}

static br_err open_ep(br_repmgr *m, const char *s, bool create, struct br_endpoint **out,
                      struct br_errbuf *eb)
{
    if (br_endpoint_is_http_url(s)) {
        struct br_endpoint_http_opts o = {.create = create};
        return br_endpoint_http_open(s, &o, out, eb);
    }
    if (is_peer_url(s)) {
        char peer[512];
        const char *db;
        if (split_peer(s, peer, sizeof peer, &db) != BR_OK)
            return br_fail(eb, BR_EINVAL, "%s: expected ws://host:port/db or barrel://NODEID/db",
                           s);
        struct br_p2p *p = atomic_load(&m->p2p);
        if (!p || atomic_load(&m->stopped))
            return br_fail(eb, BR_ECLOSED, "%s: this node's peer links are not running", s);
        return br_p2p_endpoint_open(p, peer, db, out, eb);
    }
    /* unsynced batches and checkpoints (a lost checkpoint only means reading a batch again;
     * revsdiff makes that idempotent); the replicator commits once at the end of a run and
     * whenever a continuous one has caught up */
    struct br_endpoint_local_opts o = {.sync = BR_SYNC_NONE};
    br_err e = br_endpoint_local_new(m->store, s, &o, out, eb);
    if (e == BR_ENOTFOUND && create) {
        e = br_store_db_create(m->store, s, NULL);
        if (e && e != BR_EEXIST)
            return br_fail(eb, e, "creating database %s: %s", s, br_strerror(e));
        e = br_endpoint_local_new(m->store, s, &o, out, eb);
    }
    if (e == BR_ENOTFOUND)
        br_errbuf_set(eb, "database %s does not exist", s);
    return e;
}

/* Filter options from a spec (the strings point into spec; query is allocated). */
static br_err spec_filter(const json_t *spec, const char **paths, size_t max,
                          struct br_wire_filter *f, br_buf *query, struct br_errbuf *eb)
{
    memset(f, 0, sizeof *f);
    json_t *fj = json_object_get(spec, "filter");
    json_t *pj = json_object_get(fj, "paths"), *qj = json_object_get(fj, "query");
    size_t i;
    json_t *p;
    json_array_foreach(pj, i, p)
    {
        if (i >= max)
            return br_fail(eb, BR_EINVAL, "too many path patterns");
        paths[i] = json_string_value(p);
        f->n_paths = i + 1;
    }
    f->paths = paths;
    if (qj) {
        br_err e = br_json_to_cbor(qj, query, eb);
        if (e)
            return e;
        f->query = query->data;
        f->query_len = query->len;
    }
    return BR_OK;
}

/* Open both sides and make the replication; the caller runs and frees. */
static br_err prepare(br_repmgr *m, const json_t *spec, struct br_endpoint **src,
                      struct br_endpoint **tgt, br_rep **rep, struct br_errbuf *eb)
{
    const char *paths[64];
    struct br_rep_opts o = {.continuous = json_is_true(json_object_get(spec, "continuous"))};
    br_buf q;
    br_buf_init(&q, 0);
    *src = *tgt = NULL;
    br_err e = spec_filter(spec, paths, 64, &o.filter, &q, eb);
    if (!e)
        e = open_ep(m, json_string_value(json_object_get(spec, "source")), false, src, eb);
    if (!e)
        e = open_ep(m, json_string_value(json_object_get(spec, "target")),
                    json_is_true(json_object_get(spec, "create_target")), tgt, eb);
    if (!e)
        e = br_rep_new(*src, *tgt, &o, rep, eb);
    br_buf_fini(&q);
    if (e) {
        br_endpoint_free(*src);
        br_endpoint_free(*tgt);
        *src = *tgt = NULL;
    }
    return e;
}

static json_t *seq_json(const struct br_rep_stats *s, bool last)
{
    if (s->opaque_seq) {
        const char *t = last ? s->last_seq_text : s->start_seq_text;
        json_t *j = *t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
        return j ? j : json_integer(0);
    }
    char t[BR_HLC_TEXT_MAX];
    br_hlc_format(last ? s->last_seq : s->start_seq, t);
    return json_string(t);
}

/* ---- the task list ---- */

static void task_free(struct task *t)
{
    json_decref(t->spec);
    pthread_cond_destroy(&t->cv);
    br_free(t);
}

static struct task *find_locked(br_repmgr *m, const char *id)
{
    for (struct task *t = m->tasks; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

static void unlink_locked(br_repmgr *m, struct task *t)
{
    for (struct task **p = &m->tasks; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            return;
        }
}

/* Rewrite the persisted list of continuous specs (caller holds mu). */
static void persist_locked(br_repmgr *m)
{
    json_t *arr = json_array();
    for (struct task *t = m->tasks; t; t = t->next)
        if (t->continuous && !atomic_load(&t->cancel))
            json_array_append(arr, t->spec);
    json_t *root = json_pack("{s:o}", "replications", arr);
    char *text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    size_t n = strlen(m->path) + 8;
    char *tmp = br_malloc(n);
    if (!text || !tmp)
        goto out;
    snprintf(tmp, n, "%s.tmp", m->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    if (!ok || rename(tmp, m->path) != 0)
        br_log(BR_LOG_ERROR, TAG, "event=persist_failed path=%s", m->path);
out:
    free(text);
    br_free(tmp);
}

static void *task_main(void *arg)
{
    struct task *t = arg;
    br_repmgr *m = *(br_repmgr **)(t + 1);
    uint64_t backoff = BACKOFF_MIN_MS;
    while (!atomic_load(&t->cancel)) {
        struct br_endpoint *src, *tgt;
        br_rep *rep = NULL;
        struct br_errbuf eb = {{0}};
        br_err e = prepare(m, t->spec, &src, &tgt, &rep, &eb);
        if (!e) {
            pthread_mutex_lock(&m->mu);
            t->rep = rep;
            snprintf(t->state, sizeof t->state, "running");
            bool stop = atomic_load(&t->cancel);
            pthread_mutex_unlock(&m->mu);
            if (!stop)
                e = br_rep_run(rep, &eb);
            pthread_mutex_lock(&m->mu);
            br_rep_get_stats(rep, &t->stats);
            t->rep = NULL;
            pthread_mutex_unlock(&m->mu);
            br_rep_free(rep);
            br_endpoint_free(src);
            br_endpoint_free(tgt);
            if (!e)
                backoff = BACKOFF_MIN_MS;
        }
        if (atomic_load(&t->cancel) || !e)
            continue; /* a continuous run returns BR_OK only when cancelled */
        br_log(BR_LOG_WARN, TAG, "event=rep_failed id=%s retry_ms=%llu reason=\"%s\"", t->id,
               (unsigned long long)backoff, eb.msg);
        pthread_mutex_lock(&m->mu);
        snprintf(t->state, sizeof t->state, "retrying");
        snprintf(t->error, sizeof t->error, "%s", eb.msg[0] ? eb.msg : br_strerror(e));
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (backoff % 1000) * 1000000u;
        ts.tv_sec += (time_t)(backoff / 1000 + ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        while (!atomic_load(&t->cancel) && pthread_cond_timedwait(&t->cv, &m->mu, &ts) == 0)
            ;
        pthread_mutex_unlock(&m->mu);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return NULL;
}

/* A new task (with room after it for the manager pointer task_main reads). */
static struct task *task_new(br_repmgr *m, json_t *spec, const char *id)
{
    struct task *t = br_calloc(1, sizeof *t + sizeof m);
    if (!t)
        return NULL;
    *(br_repmgr **)(t + 1) = m;
    memcpy(t->id, id, sizeof t->id);
    t->spec = json_incref(spec);
    t->continuous = json_is_true(json_object_get(spec, "continuous"));
    atomic_init(&t->cancel, false);
    pthread_cond_init(&t->cv, NULL);
    t->started_on = t->updated_on = now_ms();
    snprintf(t->state, sizeof t->state, "starting");
    return t;
}

/* Start a continuous task (caller holds mu). */
static br_err start_locked(br_repmgr *m, json_t *spec, const char *id)
{
    struct task *t = task_new(m, spec, id);
    if (!t)
        return BR_ENOMEM;
    if (pthread_create(&t->th, NULL, task_main, t) != 0) {
        task_free(t);
        return BR_ENOMEM;
    }
    t->has_thread = true;
    t->next = m->tasks;
    m->tasks = t;
    return BR_OK;
}

static void stop_task(br_repmgr *m, struct task *t)
{
    pthread_mutex_lock(&m->mu);
    atomic_store(&t->cancel, true);
    if (t->rep)
        br_rep_cancel(t->rep);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&m->mu);
    if (t->has_thread)
        pthread_join(t->th, NULL);
}

br_err br_repmgr_new(br_store *s, const char *data_dir, br_repmgr **out)
{
    br_repmgr *m = br_calloc(1, sizeof *m);
    if (!m)
        return BR_ENOMEM;
    m->store = s;
    size_t n = strlen(data_dir) + 32;
    m->path = br_malloc(n);
    if (!m->path) {
        br_free(m);
        return BR_ENOMEM;
    }
    snprintf(m->path, n, "%s/_replications.json", data_dir);
    pthread_mutex_init(&m->mu, NULL);
    json_error_t je;
    json_t *root = json_load_file(m->path, 0, &je);
    size_t i;
    json_t *spec;
    pthread_mutex_lock(&m->mu);
    json_array_foreach(json_object_get(root, "replications"), i, spec)
    {
        char id[33];
        spec_id(spec, id);
        if (json_is_object(spec) && !find_locked(m, id) && start_locked(m, spec, id) == BR_OK)
            br_log(BR_LOG_INFO, TAG, "event=rep_restored id=%s", id);
    }
    pthread_mutex_unlock(&m->mu);
    json_decref(root);
    *out = m;
    return BR_OK;
}

void br_repmgr_set_p2p(br_repmgr *m, struct br_p2p *p)
{
    atomic_store(&m->p2p, p);
}

void br_repmgr_stop(br_repmgr *m)
{
    if (!m)
        return;
    atomic_store(&m->stopped, true);
    for (;;) {
        pthread_mutex_lock(&m->mu);
        struct task *t = m->tasks;
        while (t && !t->has_thread)
            t = t->next; /* one-shots belong to their caller */
        if (t)
            unlink_locked(m, t);
        pthread_mutex_unlock(&m->mu);
        if (!t)
            break;
        stop_task(m, t);
        task_free(t);
    }
}

void br_repmgr_free(br_repmgr *m)
{
    if (!m)
        return;
    br_repmgr_stop(m);
    pthread_mutex_destroy(&m->mu);
    br_free(m->path);
    br_free(m);
}

static int err_status(br_err e)
{
    switch (e) {
    case BR_ENOTFOUND:
        return 404;
    case BR_EINVAL:
    case BR_EBADNAME:
        return 400;
    case BR_ECLOSED:
    case BR_ETIMEDOUT:
    case BR_ECRYPTO:
    case BR_EPROTO:
        return 502; /* the other side: unreachable, refused the link, or spoke nonsense */
    default:
        return 500;
    }
}

static int cancel(br_repmgr *m, const json_t *body, json_t **out)
{
    char id[33];
    const char *rid = json_string_value(json_object_get(body, "replication_id"));
    if (rid) {
        snprintf(id, sizeof id, "%s", rid);
    } else {
        int st;
        json_t *spec = parse_spec(body, &st, out);
        if (!spec)
            return st;
        spec_id(spec, id);
        json_decref(spec);
    }
    pthread_mutex_lock(&m->mu);
    struct task *t = find_locked(m, id);
    if (t && t->has_thread) {
        unlink_locked(m, t);
        persist_locked(m);
    } else {
        t = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    if (!t) {
        *out = err_json("not_found", "no such continuous replication");
        return 404;
    }
    stop_task(m, t);
    task_free(t);
    br_log(BR_LOG_INFO, TAG, "event=rep_cancelled id=%s", id);
    *out = json_pack("{s:b,s:s}", "ok", 1, "_local_id", id);
    return 200;
}

static int one_shot(br_repmgr *m, json_t *spec, const char *id, json_t **out)
{
    struct br_endpoint *src, *tgt;
    br_rep *rep = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = prepare(m, spec, &src, &tgt, &rep, &eb);
    if (e) {
        *out = err_json(e == BR_ENOTFOUND ? "not_found" : "replication_failed", eb.msg);
        return err_status(e);
    }
    struct task *t = task_new(m, spec, id);
    if (!t) {
        br_rep_free(rep);
        br_endpoint_free(src);
        br_endpoint_free(tgt);
        *out = err_json("internal_server_error", "out of memory");
        return 500;
    }
    pthread_mutex_lock(&m->mu);
    t->rep = rep;
    snprintf(t->state, sizeof t->state, "running");
    t->next = m->tasks;
    m->tasks = t;
    pthread_mutex_unlock(&m->mu);
    uint64_t t0 = now_ms();
    e = br_rep_run(rep, &eb);
    pthread_mutex_lock(&m->mu);
    unlink_locked(m, t);
    pthread_mutex_unlock(&m->mu);
    struct br_rep_stats s;
    br_rep_get_stats(rep, &s);
    br_rep_free(rep);
    br_endpoint_free(src);
    br_endpoint_free(tgt);
    task_free(t);
    if (e) {
        *out = err_json("replication_failed", eb.msg[0] ? eb.msg : br_strerror(e));
        return 500;
    }
    uint8_t r[16];
    char session[33];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(session, sizeof session, r, sizeof r);
    json_t *h = json_pack(
        "{s:s,s:I,s:I,s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:I,s:I}", "session_id", session, "start_time",
        (json_int_t)t0, "end_time", (json_int_t)now_ms(), "start_last_seq", seq_json(&s, false),
        "end_last_seq", seq_json(&s, true), "recorded_seq", seq_json(&s, true), "missing_checked",
        (json_int_t)s.changes_read, "missing_found",
        (json_int_t)(s.docs_read + s.doc_read_failures), "docs_read", (json_int_t)s.docs_read,
        "docs_written", (json_int_t)s.docs_written, "doc_write_failures",
        (json_int_t)s.doc_write_failures, "doc_read_failures", (json_int_t)s.doc_read_failures);
    *out = json_pack("{s:b,s:s,s:s,s:o,s:[o]}", "ok", 1, "session_id", session, "replication_id",
                     id, "source_last_seq", seq_json(&s, true), "history", h);
    return 200;
}

int br_repmgr_replicate(br_repmgr *m, const json_t *body, json_t **out)
{
    if (atomic_load(&m->stopped)) {
        *out = err_json("service_unavailable", "the node is stopping");
        return 503;
    }
    if (!json_is_object(body)) {
        *out = err_json("bad_request", "the body must be a JSON object");
        return 400;
    }
    if (json_is_true(json_object_get(body, "cancel")))
        return cancel(m, body, out);
    int st;
    json_t *spec = parse_spec(body, &st, out);
    if (!spec)
        return st;
    const char *ends[2] = {json_string_value(json_object_get(spec, "source")),
                           json_string_value(json_object_get(spec, "target"))};
    for (int i = 0; i < 2; i++)
        if (is_peer_url(ends[i]) && !atomic_load(&m->p2p)) {
            *out = err_json("not_implemented",
                            "replication with peers (barrel://, ws://) needs the node's links");
            json_decref(spec);
            return 501;
        }
    char id[33];
    spec_id(spec, id);
    if (!json_is_true(json_object_get(spec, "continuous"))) {
        st = one_shot(m, spec, id, out);
        json_decref(spec);
        return st;
    }
    /* continuous: check that both sides open now (a clear 404 beats a silent retry loop) */
    struct br_endpoint *src, *tgt;
    br_rep *rep = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = prepare(m, spec, &src, &tgt, &rep, &eb);
    if (e) {
        *out = err_json(e == BR_ENOTFOUND ? "not_found" : "replication_failed", eb.msg);
        json_decref(spec);
        return err_status(e);
    }
    br_rep_free(rep);
    br_endpoint_free(src);
    br_endpoint_free(tgt);
    pthread_mutex_lock(&m->mu);
    e = find_locked(m, id) ? BR_OK : start_locked(m, spec, id);
    if (!e)
        persist_locked(m);
    pthread_mutex_unlock(&m->mu);
    json_decref(spec);
    if (e) {
        *out = err_json("internal_server_error", br_strerror(e));
        return 500;
    }
    *out = json_pack("{s:b,s:s}", "ok", 1, "_local_id", id);
    return 202;
}

json_t *br_repmgr_tasks(br_repmgr *m)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&m->mu);
    for (struct task *t = m->tasks; t; t = t->next) {
        struct br_rep_stats s = t->stats;
        if (t->rep)
            br_rep_get_stats(t->rep, &s);
        if (s.docs_written != t->stats.docs_written || s.changes_read != t->stats.changes_read) {
            t->updated_on = now_ms();
            if (t->rep)
                t->stats = s;
        }
        json_t *o = json_pack(
            "{s:s,s:s,s:O,s:O,s:b,s:I,s:I,s:I,s:I,s:I,s:o,s:s}", "type", "replication",
            "replication_id", t->id, "source", json_object_get(t->spec, "source"), "target",
            json_object_get(t->spec, "target"), "continuous", t->continuous, "docs_read",
            (json_int_t)s.docs_read, "docs_written", (json_int_t)s.docs_written,
            "doc_write_failures", (json_int_t)s.doc_write_failures, "started_on",
            (json_int_t)(t->started_on / 1000), "updated_on", (json_int_t)(t->updated_on / 1000),
            "checkpointed_source_seq", seq_json(&s, true), "state", t->state);
        if (t->error[0])
            json_object_set_new(o, "error", json_string(t->error));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&m->mu);
    return arr;
}
