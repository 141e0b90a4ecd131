/* subws.c — WebSocket subscriptions (see subws.h). */
#include "subws.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/query.h"
#include "barrel/subs.h"

struct br_subws_set {
    br_store *store;
    br_metrics *metrics;
    void (*wake)(void *);
    void *wake_arg;
    struct subws *head; /* loop-owned list */
    size_t n;
};

struct subws {
    br_subws_set *set;
    br_http_ws *ws;
    br_db *db;
    br_sub *sub;
    br_query *q;
    bool include_docs;
    struct subws *next, *prev;
    atomic_bool pending; /* a message or the overflow is waiting for the loop */
    bool closing;        /* loop: the overflow frame was sent */
    pthread_mutex_t mu;  /* guards the ring and the overflow state */
    char *ring[SUBWS_QUEUE_MAX];
    size_t ring_len[SUBWS_QUEUE_MAX];
    size_t head, count, bytes;
    bool overflow;
    uint64_t dropped;
};

br_err br_subws_new(br_store *store, br_metrics *m, void (*wake)(void *), void *wake_arg,
                    br_subws_set **out)
{
    br_subws_set *s = br_calloc(1, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    *s = (br_subws_set){store, m, wake, wake_arg, NULL, 0};
    *out = s;
    return BR_OK;
}

static void notify(struct subws *w)
{
    if (!atomic_exchange(&w->pending, true))
        w->set->wake(w->set->wake_arg);
}

/* A change as one JSON text (caller frees), or NULL. Runs on the delivery thread. */
static char *message(struct subws *w, const struct br_sub_event *ev, size_t *len)
{
    char rev[BR_REV_TEXT_MAX], seq[BR_HLC_TEXT_MAX];
    br_rev_format(&ev->rev, rev);
    br_hlc_format(ev->seq, seq);
    json_t *m = json_pack("{s:s%,s:s,s:s,s:b}", "id", ev->id, ev->id_len, "rev", rev, "seq", seq,
                          "deleted", ev->deleted);
    if (m && w->include_docs && !ev->deleted) {
        struct br_doc *d = NULL;
        struct br_get_opts go = {.rev = &ev->rev};
        json_t *doc = NULL;
        if (br_db_get(w->db, ev->id, ev->id_len, &go, &d, NULL) == BR_OK &&
            br_json_doc_render(d, &doc, NULL) == BR_OK)
            json_object_set_new(m, "doc", doc);
        br_doc_free(d);
    }
    char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    *len = s ? strlen(s) : 0;
    return s;
}

static void on_event(void *arg, const struct br_sub_event *ev)
{
    struct subws *w = arg;
    size_t len = 0;
    char *msg = ev->kind == BR_SUB_CHANGE ? message(w, ev, &len) : NULL;
    pthread_mutex_lock(&w->mu);
    if (ev->kind == BR_SUB_OVERFLOW) {
        w->overflow = true;
        w->dropped += ev->dropped;
    } else if (w->overflow || w->count == SUBWS_QUEUE_MAX || w->bytes + len > SUBWS_QUEUE_BYTES ||
               !msg) {
        w->overflow = true; /* a slow consumer (or no memory): stop queueing */
        w->dropped++;
        free(msg);
    } else {
        size_t i = (w->head + w->count) % SUBWS_QUEUE_MAX;
        w->ring[i] = msg;
        w->ring_len[i] = len;
        w->count++;
        w->bytes += len;
    }
    pthread_mutex_unlock(&w->mu);
    notify(w);
}

static void refuse(br_http_ex *x, int status, const char *error, const char *reason)
{
    br_http_resp_error(&x->resp, status, error, reason);
}

static void subws_free(struct subws *w)
{
    br_sub_close(w->sub); /* after this, on_event is not running and will not run */
    for (size_t k = 0; k < w->count; k++)
        free(w->ring[(w->head + k) % SUBWS_QUEUE_MAX]);
    br_query_free(w->q);
    br_db_close(w->db);
    pthread_mutex_destroy(&w->mu);
    br_free(w);
}

void *br_subws_open(br_subws_set *s, br_http_ex *x, br_http_ws *ws)
{
    const struct br_http_path *p = &x->req.segs;
    if (p->n != 2 || strcmp(p->seg[1], "_subscribe") != 0) {
        refuse(x, 404, "not_found", "missing");
        return NULL;
    }
    if (!br_db_name_valid(p->seg[0], p->len[0], false)) {
        refuse(x, 400, "illegal_database_name", "invalid database name");
        return NULL;
    }
    struct subws *w = br_calloc(1, sizeof *w);
    const char **pats = br_calloc(x->req.args.n + 1, sizeof *pats);
    if (!w || !pats) {
        br_free(w);
        br_free(pats);
        refuse(x, 500, "internal_server_error", "out of memory");
        return NULL;
    }
    w->set = s;
    w->ws = ws;
    pthread_mutex_init(&w->mu, NULL);
    atomic_init(&w->pending, false);
    struct br_sub_opts so = {.patterns = pats, .queue_max = SUBWS_QUEUE_MAX};
    struct br_errbuf eb = {{0}};
    br_err e = br_store_db_open(s->store, p->seg[0], &w->db);
    if (e) {
        refuse(x, 404, "not_found", "Database does not exist.");
        goto fail;
    }
    for (size_t i = 0; i < x->req.args.n; i++) {
        const char *name = x->req.args.name[i], *v = x->req.args.value[i];
        if (strcmp(name, "paths") == 0 || strcmp(name, "path") == 0) {
            pats[so.n_patterns++] = v;
        } else if (strcmp(name, "query") == 0) {
            json_t *j = NULL;
            e = br_json_parse(v, strlen(v), 0, &j, &eb);
            if (!e)
                e = br_query_compile(j, &w->q, &eb);
            json_decref(j);
            if (e) {
                refuse(x, 400, "bad_request", eb.msg);
                goto fail;
            }
            so.query = w->q;
        } else if (strcmp(name, "include_docs") == 0) {
            w->include_docs = strcmp(v, "true") == 0;
        } else {
            refuse(x, 400, "bad_request", "unknown argument");
            goto fail;
        }
    }
    if (!so.n_patterns && !so.query) {
        refuse(x, 400, "bad_request", "give paths=PATTERN (repeatable) or query=JSON");
        goto fail;
    }
    e = br_db_subscribe(w->db, &so, on_event, w, &w->sub, &eb);
    if (e) {
        refuse(x, 400, "bad_request", eb.msg[0] ? eb.msg : br_strerror(e));
        goto fail;
    }
    br_free(pats);
    w->next = s->head;
    if (s->head)
        s->head->prev = w;
    s->head = w;
    s->n++;
    br_log(BR_LOG_INFO, "subws", "event=open db=%s patterns=%zu query=%d", p->seg[0], so.n_patterns,
           so.query != NULL);
    return w;
fail:
    br_free(pats);
    subws_free(w);
    return NULL;
}

bool br_subws_writeable(br_subws_set *s, void *user)
{
    struct subws *w = user;
    char *msg = NULL;
    size_t len = 0;
    bool more, overflow;
    uint64_t dropped;
    pthread_mutex_lock(&w->mu);
    if (w->count) {
        msg = w->ring[w->head];
        len = w->ring_len[w->head];
        w->head = (w->head + 1) % SUBWS_QUEUE_MAX;
        w->count--;
        w->bytes -= len;
    }
    more = w->count > 0;
    overflow = w->overflow;
    dropped = w->dropped;
    pthread_mutex_unlock(&w->mu);
    if (msg) {
        bool ok = br_http_ws_send(w->ws, msg, len);
        free(msg);
        if (!ok)
            return false;
        if (more || overflow)
            br_http_ws_want_write(w->ws);
        return true;
    }
    if (!overflow || w->closing)
        return true;
    /* everything queued before the overflow is out: say what was lost, then close */
    char reason[96], frame[256];
    snprintf(reason, sizeof reason, "slow consumer: %llu changes dropped",
             (unsigned long long)dropped);
    int n =
        snprintf(frame, sizeof frame, "{\"error\":\"overflow\",\"reason\":\"%s\",\"dropped\":%llu}",
                 reason, (unsigned long long)dropped);
    w->closing = true;
    br_metrics_ws_overflow(s->metrics);
    br_log(BR_LOG_INFO, "subws", "event=overflow dropped=%llu", (unsigned long long)dropped);
    if (!br_http_ws_send(w->ws, frame, (size_t)n))
        return false;
    br_http_ws_close(w->ws, 1013, reason);
    br_http_ws_want_write(w->ws);
    return true;
}

void br_subws_closed(br_subws_set *s, void *user)
{
    struct subws *w = user;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    s->n--;
    subws_free(w);
}

void br_subws_on_wake(br_subws_set *s)
{
    for (struct subws *w = s->head; w; w = w->next) {
        if (atomic_exchange(&w->pending, false))
            br_http_ws_want_write(w->ws);
    }
}

size_t br_subws_count(const br_subws_set *s)
{
    return s ? s->n : 0;
}

void br_subws_free(br_subws_set *s)
{
    if (!s)
        return;
    while (s->head)
        br_subws_closed(s, s->head);
    br_free(s);
}
