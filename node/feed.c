/* feed.c — streaming _changes feeds on the loop (see feed.h). */
#include "feed.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/env.h"
#include "barrel/log.h"

#include "api.h"

struct feed {
    int kind; /* API_CONT_FEED: x->user points here (api.h) */
    struct feed *prev, *next;
    br_feeds *set;
    br_http_ex *x; /* NULL once ended or gone */
    struct chg_stream cs;
    struct br_hlc pos; /* changes up to here were examined */
    size_t sent;       /* rows written (for limit) */
    uint64_t watch_id;
    bool watching;
    bool busy;     /* a read job is in flight: it owns reading cs and pos */
    bool detached; /* out of the set; freed when no job is in flight */
    atomic_bool dirty;
    uint64_t deadline_ns; /* 0: none */
    uint64_t next_hb_ns;  /* 0: no heartbeat */
};

struct br_feeds {
    br_workers *w;
    void (*wake)(void *);
    void *wake_arg;
    atomic_bool kick; /* a watched database changed since the last on_wake */
    bool stopping;
    struct feed *head;
    size_t n;
};

struct job {
    struct feed *f;
    struct br_hlc since, last;
    size_t limit, count;
    br_buf out;
    br_err err;
};

static uint64_t now_ns(void)
{
    return br_env_mono_ns(br_env_default());
}

br_err br_feeds_new(br_workers *w, void (*wake)(void *), void *wake_arg, br_feeds **out)
{
    br_feeds *s = br_calloc(1, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    s->w = w;
    s->wake = wake;
    s->wake_arg = wake_arg;
    atomic_init(&s->kick, false);
    *out = s;
    return BR_OK;
}

size_t br_feeds_count(const br_feeds *s)
{
    return s->n;
}

/* Writer thread: mark the feed and wake the loop once per burst. */
static void on_db_change(void *arg, br_db *db, struct br_hlc seq)
{
    (void)db;
    (void)seq;
    struct feed *f = arg;
    atomic_store(&f->dirty, true);
    if (!atomic_exchange(&f->set->kick, true))
        f->set->wake(f->set->wake_arg);
}

static void feed_free(struct feed *f)
{
    chg_req_fini(&f->cs.req);
    br_db_close(f->cs.db);
    br_free(f);
}

/* Leave the set and stop watching; free unless a job still holds f. */
static void detach(struct feed *f)
{
    if (f->detached)
        return;
    f->detached = true;
    if (f->watching)
        br_db_unwatch(f->cs.db, f->watch_id);
    f->watching = false;
    if (f->prev)
        f->prev->next = f->next;
    else
        f->set->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->set->n--;
    if (!f->busy)
        feed_free(f);
}

/* Write the timeout ending (with_tail) and finish the response. */
static void end_feed(struct feed *f, bool with_tail)
{
    br_http_ex *x = f->x;
    if (!x)
        return;
    if (with_tail) {
        char seq[BR_HLC_TEXT_MAX], line[BR_HLC_TEXT_MAX + 32];
        br_hlc_format(f->pos, seq);
        br_buf tail, none;
        br_buf_init(&tail, 0);
        br_buf_init(&none, 0);
        br_err e = BR_OK;
        if (f->cs.req.feed == CHG_CONTINUOUS) {
            snprintf(line, sizeof line, "{\"last_seq\":\"%s\"}\n", seq);
            e = br_buf_append_str(&tail, line);
        } else if (f->cs.req.feed == CHG_LONGPOLL) {
            e = chg_wrap_results(&tail, &none, f->pos);
        }
        if (!e && tail.len)
            e = br_http_stream_write(x, tail.data, tail.len);
        if (e)
            br_log(BR_LOG_WARN, "feed", "event=tail_lost err=%s", br_strerror(e));
        br_buf_fini(&tail);
        br_buf_fini(&none);
    }
    br_http_stream_end(x);
    x->user = NULL;
    f->x = NULL;
    detach(f);
}

static void arm_timer(struct feed *f)
{
    uint64_t t = f->deadline_ns;
    if (f->next_hb_ns && (!t || f->next_hb_ns < t))
        t = f->next_hb_ns;
    if (!t)
        return;
    uint64_t now = now_ns();
    uint64_t us = t > now ? (t - now) / 1000 : 0;
    br_http_stream_timer(f->x, us ? us : 1);
}

static void job_run(void *arg)
{
    struct job *j = arg;
    j->err = chg_read(j->f->cs.db, &j->f->cs.req, j->since, j->limit, &j->out, &j->last, &j->count);
}

static void read_next(struct feed *f);

static void job_done(void *arg)
{
    struct job *j = arg;
    struct feed *f = j->f;
    f->busy = false;
    if (f->detached) {
        feed_free(f);
        goto out;
    }
    if (j->err) {
        br_log(j->err == BR_ENOTFOUND ? BR_LOG_INFO : BR_LOG_WARN, "feed",
               "event=read_failed db=%s err=%s", br_db_name(f->cs.db), br_strerror(j->err));
        end_feed(f, false);
        goto out;
    }
    f->pos = j->last;
    f->sent += j->count;
    const struct chg_req *r = &f->cs.req;
    if (r->feed == CHG_LONGPOLL) {
        if (j->count == 0)
            goto more;
        br_buf body;
        br_buf_init(&body, 0);
        br_err e = chg_wrap_results(&body, &j->out, f->pos);
        if (!e)
            e = br_http_stream_write(f->x, body.data, body.len);
        if (e)
            br_log(BR_LOG_WARN, "feed", "event=longpoll_lost err=%s", br_strerror(e));
        br_buf_fini(&body);
        end_feed(f, false);
        goto out;
    }
    if (j->count && br_http_stream_write(f->x, j->out.data, j->out.len) != BR_OK) {
        br_log(BR_LOG_INFO, "feed", "event=client_too_slow db=%s", br_db_name(f->cs.db));
        end_feed(f, false);
        goto out;
    }
    if (r->o.limit && f->sent >= r->o.limit) {
        end_feed(f, true);
        goto out;
    }
    if (j->count == j->limit)
        atomic_store(&f->dirty, true); /* a full batch: there may be more */
more:
    read_next(f);
out:
    br_buf_fini(&j->out);
    br_free(j);
}

/* Queue a read if the feed is dirty and none is in flight. */
static void read_next(struct feed *f)
{
    if (f->busy || !f->x || !atomic_exchange(&f->dirty, false))
        return;
    struct job *j = br_calloc(1, sizeof *j);
    const struct chg_req *r = &f->cs.req;
    size_t left = r->o.limit ? r->o.limit - f->sent : 0;
    if (r->feed != CHG_LONGPOLL && (left == 0 || left > FEED_BATCH))
        left = FEED_BATCH;
    if (j) {
        j->f = f;
        j->since = f->pos;
        j->limit = left;
        br_buf_init(&j->out, 0);
    }
    if (!j || br_workers_submit(f->set->w, job_run, job_done, j) != BR_OK) {
        br_free(j);
        br_log(BR_LOG_WARN, "feed", "event=read_not_queued db=%s", br_db_name(f->cs.db));
        end_feed(f, true);
        return;
    }
    f->busy = true;
}

void br_feeds_start(br_feeds *s, br_http_ex *x)
{
    struct chg_stream *cs = x->user;
    x->user = NULL;
    struct feed *f = br_http_ex_alive(x) ? br_calloc(1, sizeof *f) : NULL;
    if (!f) {
        if (br_http_ex_alive(x))
            br_http_resp_error(&x->resp, 500, "internal_server_error", "out of memory");
        chg_req_fini(&cs->req);
        br_db_close(cs->db);
        br_free(cs);
        br_http_respond(x);
        return;
    }
    f->kind = API_CONT_FEED;
    f->set = s;
    f->cs = *cs;
    br_free(cs);
    f->pos = f->cs.req.o.since;
    f->x = x;
    atomic_init(&f->dirty, true);
    x->user = f;
    f->next = s->head;
    if (s->head)
        s->head->prev = f;
    s->head = f;
    s->n++;
    x->resp.status = 200;
    x->resp.content_type =
        f->cs.req.feed == CHG_EVENTSOURCE ? "text/event-stream" : "application/json";
    br_http_stream_begin(x);
    if (s->stopping) {
        end_feed(f, true);
        return;
    }
    uint64_t now = now_ns();
    const struct chg_req *r = &f->cs.req;
    if (r->timeout_ms != CHG_NO_TIMEOUT)
        f->deadline_ns = now + (r->timeout_ms ? r->timeout_ms : 1) * 1000000u;
    if (r->heartbeat_ms)
        f->next_hb_ns = now + r->heartbeat_ms * 1000000u;
    arm_timer(f);
    if (br_db_watch(f->cs.db, on_db_change, f, &f->watch_id) != BR_OK) {
        end_feed(f, true);
        return;
    }
    f->watching = true;
    read_next(f); /* the first read: changes already there */
}

void br_feeds_on_wake(br_feeds *s)
{
    if (!atomic_exchange(&s->kick, false))
        return;
    for (struct feed *f = s->head, *next; f; f = next) {
        next = f->next;
        read_next(f);
    }
}

void br_feeds_on_timer(br_feeds *s, br_http_ex *x)
{
    (void)s;
    struct feed *f = x->user;
    if (!f)
        return;
    uint64_t now = now_ns();
    if (f->deadline_ns && now >= f->deadline_ns) {
        end_feed(f, true);
        return;
    }
    if (f->next_hb_ns && now >= f->next_hb_ns) {
        const char *hb = f->cs.req.feed == CHG_EVENTSOURCE ? "event: heartbeat\ndata: \n\n" : "\n";
        if (br_http_stream_write(x, hb, strlen(hb)) != BR_OK) {
            end_feed(f, false);
            return;
        }
        f->next_hb_ns = now + f->cs.req.heartbeat_ms * 1000000u;
    }
    arm_timer(f);
}

void br_feeds_on_gone(br_feeds *s, br_http_ex *x)
{
    (void)s;
    struct feed *f = x->user;
    if (!f)
        return;
    x->user = NULL;
    f->x = NULL;
    detach(f);
}

void br_feeds_stop(br_feeds *s)
{
    s->stopping = true;
    for (struct feed *f = s->head, *next; f; f = next) {
        next = f->next;
        end_feed(f, true);
    }
}

void br_feeds_free(br_feeds *s)
{
    if (!s)
        return;
    while (s->head) {
        struct feed *f = s->head;
        if (f->x)
            f->x->user = NULL;
        f->x = NULL;
        f->busy = false; /* the workers are gone: no job holds it */
        detach(f);
    }
    br_free(s);
}
