/* upload.c — streamed request bodies into a worker-side sink (see upload.h).
 *
 * The loop appends pieces to `pending`; a write job takes them (swapped into `batch`, which
 * the job owns until its done runs) and the loop keeps filling `pending` meanwhile. One job at
 * a time: open, then writes, then finish — or abort, when the client left or the queue could
 * not grow. x is answered only from the loop, and only when no job is running. */
#include "upload.h"

#include <string.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

enum job { J_NONE, J_OPEN, J_WRITE, J_FINISH, J_ABORT };

struct upload {
    int kind; /* 0: not one of api.h's continuation kinds */
    struct upload_ctx *c;
    br_http_ex *x;
    const struct upload_sink *sink;
    void *state;
    enum job job; /* the job running (J_NONE: none) */
    bool verify, denied;
    bool opened;   /* the sink holds state (open succeeded, not finished or aborted) */
    bool answered; /* a job answered x (x->resp set): respond when it is done */
    bool gone;     /* the client left: abort */
    bool oom;      /* the queue could not grow: abort, answer 500 */
    bool body_done;
    br_buf pending, batch;
};

static void up_free(struct upload *u)
{
    br_buf_fini(&u->pending);
    br_buf_fini(&u->batch);
    br_free(u->state);
    br_free(u);
}

/* Answer x (or free it, if orphaned) and free the upload. Thread: loop, no job running. */
static void up_respond(struct upload *u)
{
    br_http_ex *x = u->x;
    x->user = NULL;
    up_free(u);
    br_http_respond(x);
}

static void job_run(void *arg)
{
    struct upload *u = arg;
    br_http_ex *x = u->x;
    switch (u->job) {
    case J_OPEN:
        if (u->verify && !br_auth_verify(u->c->auth, x->req.authorization)) {
            u->denied = true;
            break;
        }
        u->opened = u->sink->open(u->c->api, x, u->state);
        u->answered = !u->opened;
        break;
    case J_WRITE:
        if (!u->sink->write(x, u->state, u->batch.data, u->batch.len)) {
            u->sink->abort(u->state);
            u->opened = false;
            u->answered = true;
        }
        break;
    case J_FINISH:
        u->sink->finish(x, u->state);
        u->opened = false;
        u->answered = true;
        break;
    case J_ABORT:
        if (u->opened)
            u->sink->abort(u->state);
        u->opened = false;
        break;
    case J_NONE:
        break;
    }
}

static void pump(struct upload *u);

static void job_done(void *arg)
{
    struct upload *u = arg;
    enum job j = u->job;
    u->job = J_NONE;
    br_http_ex *x = u->x;
    if (u->denied) {
        br_http_resp_error(&x->resp, 401, "unauthorized", "Name or password is incorrect.");
        br_http_resp_header(&x->resp, "www-authenticate", "Basic realm=\"barrel\"");
        up_respond(u);
        return;
    }
    if (u->answered) {
        up_respond(u);
        return;
    }
    if (j == J_ABORT) {
        if (u->oom)
            br_http_resp_error(&x->resp, 500, "internal_server_error", "out of memory");
        up_respond(u); /* an orphan is freed */
        return;
    }
    if (j == J_WRITE) {
        br_buf_reset(&u->batch);
        if (x->rx_paused && u->pending.len < UPLOAD_QUEUE_MAX)
            br_http_body_rx(x, true);
    }
    pump(u);
}

/* No worker to run on (stopping): abort here, on the loop, and answer 503. */
static void abort_inline(struct upload *u)
{
    if (u->opened)
        u->sink->abort(u->state);
    u->opened = false;
    br_http_resp_error(&u->x->resp, 503, "service_unavailable", "the node is shutting down");
    up_respond(u);
}

static void submit(struct upload *u, enum job j)
{
    u->job = j;
    if (!u->c->w || br_workers_submit(u->c->w, job_run, job_done, u) != BR_OK) {
        u->job = J_NONE;
        abort_inline(u);
    }
}

/* Start the next job, if any is due and none is running. */
static void pump(struct upload *u)
{
    if (u->job != J_NONE)
        return;
    if (u->gone || u->oom) {
        submit(u, J_ABORT);
        return;
    }
    if (u->pending.len > 0) {
        br_buf t = u->batch;
        u->batch = u->pending;
        u->pending = t;
        submit(u, J_WRITE);
        return;
    }
    if (u->body_done)
        submit(u, J_FINISH);
}

void upload_start(struct upload_ctx *c, br_http_ex *x, const struct upload_sink *sink, bool verify)
{
    struct upload *u = br_calloc(1, sizeof *u);
    void *st = u ? br_calloc(1, sink->state_size ? sink->state_size : 1) : NULL;
    if (!st) {
        br_free(u);
        br_http_resp_error(&x->resp, 500, "internal_server_error", "out of memory");
        br_http_respond(x);
        return;
    }
    u->c = c;
    u->x = x;
    u->sink = sink;
    u->state = st;
    u->verify = verify;
    /* hard maximum: the queue bound plus what lws delivers after a pause */
    br_buf_init(&u->pending, UPLOAD_QUEUE_MAX * 2);
    br_buf_init(&u->batch, UPLOAD_QUEUE_MAX * 2);
    x->user = u;
    submit(u, J_OPEN);
}

void upload_on_piece(br_http_ex *x, const void *p, size_t n)
{
    struct upload *u = x->user;
    if (!u || u->oom)
        return;
    if (br_buf_append(&u->pending, p, n) != BR_OK) {
        br_log(BR_LOG_WARN, "upload", "event=queue_full path=%s", x->req.path);
        u->oom = true;
        br_http_body_rx(x, false);
        pump(u);
        return;
    }
    if (u->pending.len + u->batch.len >= UPLOAD_QUEUE_MAX)
        br_http_body_rx(x, false);
    pump(u); /* a no-op while a job (the open, a write) runs */
}

void upload_on_end(br_http_ex *x)
{
    struct upload *u = x->user;
    if (!u)
        return;
    u->body_done = true;
    pump(u);
}

void upload_on_gone(br_http_ex *x)
{
    struct upload *u = x->user;
    if (!u)
        return;
    br_log(BR_LOG_INFO, "upload", "event=client_gone path=%s bytes=%llu", x->req.path,
           (unsigned long long)x->body_bytes);
    u->gone = true;
    if (u->job == J_NONE && !u->c->w) {
        abort_inline(u);
        return;
    }
    pump(u);
}

/* ---- the attachment sink ---- */

static bool att_open(struct br_api *api, br_http_ex *x, void *state)
{
    return api_att_put_open(api, x, state);
}

static bool att_write(br_http_ex *x, void *state, const void *p, size_t n)
{
    return api_att_put_write(x, state, p, n);
}

static void att_finish(br_http_ex *x, void *state)
{
    api_att_put_finish(x, state);
}

static void att_abort(void *state)
{
    api_att_put_abort(state);
}

const struct upload_sink upload_att_sink = {
    .state_size = sizeof(struct api_att_put),
    .open = att_open,
    .write = att_write,
    .finish = att_finish,
    .abort = att_abort,
};
