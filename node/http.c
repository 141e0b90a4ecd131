/* http.c — the libwebsockets HTTP server (see http.h).
 *
 * States of an exchange: READING (headers parsed, body arriving), DISPATCHED (on_request has
 * it), RESPONDING (headers and body being written, one lws_write per WRITEABLE), FLUSHING
 * (all written, lws still holds part of the last piece: the exchange stays in flight, so a
 * shutdown waits for it, until lws reports WRITEABLE with nothing buffered). A connection
 * that closes while its exchange is DISPATCHED leaves the exchange orphaned (wsi NULL); the
 * handler's later br_http_respond() frees it. */
#include "http.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "barrel/alloc.h"
#include "barrel/env.h"
#include "barrel/log.h"

#define CHUNK (32u * 1024u)
#define HDR_SPACE 4096

enum { X_READING = 1, X_DISPATCHED, X_RESPONDING, X_FLUSHING };

struct br_http_server {
    struct br_http_opts o;
    struct lws_context *ctx;
    struct lws_vhost *vh;
    size_t inflight;     /* exchanges DISPATCHED or RESPONDING after dispatch */
    unsigned char *wbuf; /* LWS_PRE + max(CHUNK, HDR_SPACE) */
};

struct conn {
    br_http_ex *x;
};

static uint64_t mono_ns(void)
{
    return br_env_mono_ns(br_env_default());
}

void br_http_resp_header(struct br_http_resp *r, const char *name, const char *value)
{
    char *n = r->n_headers < BR_HTTP_RESP_HEADERS ? br_strdup(name) : NULL;
    char *v = n ? br_strdup(value) : NULL;
    if (!v) {
        br_free(n);
        br_log(BR_LOG_WARN, "http", "event=header_dropped name=%s", name);
        return;
    }
    r->hname[r->n_headers] = n;
    r->hvalue[r->n_headers] = v;
    r->n_headers++;
}

void br_http_resp_error(struct br_http_resp *r, int status, const char *error, const char *reason)
{
    r->status = status;
    r->content_type = NULL;
    br_buf_reset(&r->body);
    json_t *j = json_pack("{s:s,s:s}", "error", error, "reason", reason ? reason : "");
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s || br_buf_append_str(&r->body, s) || br_buf_append_byte(&r->body, '\n')) {
        br_buf_reset(&r->body);
        r->status = 500;
    }
    free(s);
}

static void ex_free(br_http_ex *x)
{
    if (!x)
        return;
    br_free(x->req.path);
    br_http_path_fini(&x->req.segs);
    br_http_args_fini(&x->req.args);
    br_free(x->req.content_type);
    br_free(x->req.if_match);
    br_free(x->req.accept);
    br_buf_fini(&x->req.body);
    br_buf_fini(&x->resp.body);
    for (size_t i = 0; i < x->resp.n_headers; i++) {
        br_free(x->resp.hname[i]);
        br_free(x->resp.hvalue[i]);
    }
    br_free(x);
}

static br_http_server *server_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

/* A copy of header h, or NULL when absent (or on allocation failure: treated as absent). */
static char *hdr_dup(struct lws *wsi, enum lws_token_indexes h)
{
    int n = lws_hdr_total_length(wsi, h);
    if (n <= 0)
        return NULL;
    char *s = br_malloc((size_t)n + 1);
    if (s && lws_hdr_copy(wsi, s, n + 1, h) < 0) {
        br_free(s);
        return NULL;
    }
    return s;
}

static enum br_http_method method_of(struct lws *wsi)
{
    static const struct {
        enum lws_token_indexes tok;
        enum br_http_method m;
    } tab[] = {
        {WSI_TOKEN_GET_URI, BR_HTTP_GET},   {WSI_TOKEN_POST_URI, BR_HTTP_POST},
        {WSI_TOKEN_PUT_URI, BR_HTTP_PUT},   {WSI_TOKEN_DELETE_URI, BR_HTTP_DELETE},
        {WSI_TOKEN_HEAD_URI, BR_HTTP_HEAD},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (lws_hdr_total_length(wsi, tab[i].tok) > 0)
            return tab[i].m;
    }
    return BR_HTTP_OTHER;
}

/* Start writing x's response. */
static void start_response(br_http_ex *x)
{
    x->state = X_RESPONDING;
    x->sent = 0;
    x->headers_sent = false;
    lws_callback_on_writable(x->wsi);
}

/* Answer now with an error and close the connection after it. */
static void fail_now(br_http_ex *x, int status, const char *error, const char *reason)
{
    br_http_resp_error(&x->resp, status, error, reason);
    x->close_after = true;
    start_response(x);
}

/* The exchange leaves the in-flight set (answered, or its client is gone). */
static void settle(br_http_ex *x)
{
    if (x->dispatched) {
        x->dispatched = false;
        x->srv->inflight--;
    }
}

static void dispatch(br_http_server *s, br_http_ex *x)
{
    x->state = X_DISPATCHED;
    x->dispatched = true;
    s->inflight++;
    s->o.on_request(s->o.arg, x);
}

void br_http_respond(br_http_ex *x)
{
    if (!x->wsi) {
        settle(x);
        ex_free(x);
        return;
    }
    if (x->resp.status == 0)
        br_http_resp_error(&x->resp, 500, "internal_server_error", "no response");
    start_response(x);
}

static int on_http(br_http_server *s, struct lws *wsi, struct conn *c, const char *in)
{
    br_http_ex *x = br_calloc(1, sizeof *x);
    if (!x)
        return -1;
    c->x = x;
    x->wsi = wsi;
    x->srv = s;
    x->t_start_ns = mono_ns();
    x->state = X_READING;
    br_buf_init(&x->req.body, s->o.max_body);
    br_buf_init(&x->resp.body, 0);
    x->req.method = method_of(wsi);
    x->req.path = br_strdup(in ? in : "/");
    x->req.content_type = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    x->req.if_match = hdr_dup(wsi, WSI_TOKEN_HTTP_IF_MATCH);
    x->req.accept = hdr_dup(wsi, WSI_TOKEN_HTTP_ACCEPT);
    if (!x->req.path) {
        fail_now(x, 500, "internal_server_error", "out of memory");
        return 0;
    }
    struct br_errbuf eb = {{0}};
    if (br_http_path_split(x->req.path, strlen(x->req.path), &x->req.segs, &eb) != BR_OK) {
        fail_now(x, 400, "bad_request", eb.msg);
        return 0;
    }
    char frag[BR_HTTP_ARG_MAX + 1];
    for (int i = 0; lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i) > 0; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
        br_err e = n < 0 ? br_fail(&eb, BR_EINVAL, "query argument too long")
                         : br_http_args_add(&x->req.args, frag, (size_t)n, &eb);
        if (e) {
            fail_now(x, 400, "bad_request", eb.msg);
            return 0;
        }
    }
    char *cl = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    unsigned long long clen = 0;
    if (cl) {
        char *end = NULL;
        clen = strtoull(cl, &end, 10);
        bool bad = end == cl || *end != '\0' || cl[0] == '-';
        br_free(cl);
        if (bad) {
            fail_now(x, 400, "bad_request", "bad Content-Length");
            return 0;
        }
    }
    if (clen > s->o.max_body) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes", s->o.max_body);
        fail_now(x, 413, "too_large", msg);
        return 0;
    }
    if (clen > 0 && (x->req.method == BR_HTTP_POST || x->req.method == BR_HTTP_PUT ||
                     x->req.method == BR_HTTP_DELETE || x->req.method == BR_HTTP_OTHER)) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)s->o.request_timeout_s);
        return 0; /* wait for LWS_CALLBACK_HTTP_BODY(_COMPLETION) */
    }
    dispatch(s, x);
    return 0;
}

static int on_body(br_http_server *s, struct conn *c, const void *in, size_t len)
{
    br_http_ex *x = c->x;
    if (!x || x->state != X_READING)
        return 0; /* discarding after an early answer */
    /* lws restarts its content timeout at every chunk; a body trickled in slowly still has
     * to be complete within request_timeout_s of the request line. */
    if (mono_ns() - x->t_start_ns > (uint64_t)s->o.request_timeout_s * 1000000000u) {
        br_log(BR_LOG_INFO, "http", "event=body_timeout path=%s", x->req.path);
        return -1;
    }
    if (br_buf_append(&x->req.body, in, len) != BR_OK) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes", s->o.max_body);
        fail_now(x, 413, "too_large", msg);
    }
    return 0;
}

/* Write the status line and headers of x into one buffer and send them. */
static int write_headers(br_http_server *s, struct lws *wsi, br_http_ex *x)
{
    if (s->o.decorate)
        s->o.decorate(s->o.arg, &x->resp);
    unsigned char *start = s->wbuf + LWS_PRE, *p = start, *end = start + HDR_SPACE - 1;
    const char *ct = x->resp.content_type ? x->resp.content_type : "application/json";
    if (lws_add_http_header_status(wsi, (unsigned int)x->resp.status, &p, end))
        return -1;
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (const unsigned char *)ct,
                                     (int)strlen(ct), &p, end))
        return -1;
    if (x->req.method == BR_HTTP_HEAD) {
        char n[32];
        int k = snprintf(n, sizeof n, "%zu", x->resp.body.len);
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH,
                                         (const unsigned char *)n, k, &p, end))
            return -1;
    } else if (lws_add_http_header_content_length(wsi, x->resp.body.len, &p, end)) {
        return -1;
    }
    if (x->close_after && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                       (const unsigned char *)"close", 5, &p, end))
        return -1;
    for (size_t i = 0; i < x->resp.n_headers; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s:", x->resp.hname[i]);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                        (const unsigned char *)x->resp.hvalue[i],
                                        (int)strlen(x->resp.hvalue[i]), &p, end))
            return -1;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    return 0;
}

/* The exchange is answered: log it, free it, and keep the connection or close it. */
static int finish(struct lws *wsi, struct conn *c)
{
    br_http_ex *x = c->x;
    bool close = x->close_after;
    br_log(BR_LOG_DEBUG, "http", "method=%s path=%s status=%d bytes=%zu us=%llu",
           br_http_method_name(x->req.method), x->req.path ? x->req.path : "?", x->resp.status,
           x->resp.body.len, (unsigned long long)((mono_ns() - x->t_start_ns) / 1000));
    settle(x);
    ex_free(x);
    c->x = NULL;
    if (close)
        return -1;
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

static int on_writeable(br_http_server *s, struct lws *wsi, struct conn *c)
{
    br_http_ex *x = c->x;
    if (x && x->state == X_FLUSHING) {
        /* lws took the last piece but kept part of it buffered: done once it is out */
        if (lws_partial_buffered(wsi)) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        return finish(wsi, c);
    }
    if (!x || x->state != X_RESPONDING)
        return 0;
    if (!x->headers_sent) {
        if (write_headers(s, wsi, x))
            return -1;
        x->headers_sent = true;
        if (x->req.method == BR_HTTP_HEAD || x->resp.body.len == 0)
            return finish(wsi, c);
        lws_callback_on_writable(wsi);
        return 0;
    }
    size_t done = x->sent;
    size_t n = x->resp.body.len - done;
    if (n > CHUNK)
        n = CHUNK;
    bool last = done + n == x->resp.body.len;
    memcpy(s->wbuf + LWS_PRE, x->resp.body.data + done, n);
    if (lws_write(wsi, s->wbuf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)n)
        return -1;
    x->sent = done + n;
    if (last && lws_partial_buffered(wsi)) {
        x->state = X_FLUSHING;
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (last)
        return finish(wsi, c);
    lws_callback_on_writable(wsi);
    return 0;
}

static void on_closed(br_http_server *s, struct conn *c)
{
    (void)s;
    br_http_ex *x = c->x;
    c->x = NULL;
    if (!x)
        return;
    if (x->state == X_DISPATCHED) {
        x->wsi = NULL; /* orphaned: br_http_respond frees it */
        return;
    }
    settle(x);
    ex_free(x);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct conn *c = user;
    br_http_server *s = wsi ? server_of(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (c->x) /* a pipelined request before the last was answered */
            return -1;
        return on_http(s, wsi, c, in);
    case LWS_CALLBACK_HTTP_BODY:
        return on_body(s, c, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (c->x && c->x->state == X_READING) {
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
            dispatch(s, c->x);
        }
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return on_writeable(s, wsi, c);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (s && c)
            on_closed(s, c);
        break;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (s && c)
            on_closed(s, c);
        break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (s && s->o.on_wake)
            s->o.on_wake(s->o.arg);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"http", callback, sizeof(struct conn), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_sink(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    enum br_log_level l = level & LLL_ERR    ? BR_LOG_ERROR
                          : level & LLL_WARN ? BR_LOG_WARN
                                             : BR_LOG_DEBUG;
    br_log(l, "lws", "%.*s", (int)n, line);
}

br_err br_http_server_new(const struct br_http_opts *o, br_http_server **out, struct br_errbuf *eb)
{
    br_http_server *s = br_calloc(1, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    s->o = *o;
    s->wbuf = br_malloc(LWS_PRE + (CHUNK > HDR_SPACE ? CHUNK : HDR_SPACE));
    if (!s->wbuf) {
        br_free(s);
        return BR_ENOMEM;
    }
    int levels = LLL_ERR | LLL_WARN;
    if (br_log_enabled(BR_LOG_TRACE))
        levels |= LLL_NOTICE | LLL_INFO;
    lws_set_log_level(levels, lws_log_sink);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.user = s;
    info.timeout_secs = o->request_timeout_s; /* lws reads the body timeout from here */
    s->ctx = lws_create_context(&info);
    if (!s->ctx) {
        br_free(s->wbuf);
        br_free(s);
        return br_fail(eb, BR_EIO, "cannot create the libwebsockets context");
    }
    memset(&info, 0, sizeof info);
    info.port = o->port;
    info.iface = o->bind;
    info.protocols = protocols;
    info.vhost_name = "barrel";
    info.timeout_secs = o->request_timeout_s;
    info.timeout_secs_ah_idle = o->request_timeout_s; /* headers must complete in time */
    info.keepalive_timeout = (int)o->keepalive_timeout_s;
    info.max_http_header_data = 16384;
    info.options = 0;
    s->vh = lws_create_vhost(s->ctx, &info);
    if (!s->vh) {
        lws_context_destroy(s->ctx);
        br_free(s->wbuf);
        br_free(s);
        return br_fail(eb, BR_EIO, "cannot listen on %s:%d (address in use or not local?)", o->bind,
                       o->port);
    }
    *out = s;
    return BR_OK;
}

void br_http_server_service(br_http_server *s)
{
    lws_service(s->ctx, 0);
}

int br_http_server_port(const br_http_server *s)
{
    return lws_get_vhost_listen_port(s->vh);
}

size_t br_http_server_inflight(const br_http_server *s)
{
    return s->inflight;
}

void br_http_wake(br_http_server *s)
{
    lws_cancel_service(s->ctx);
}

void br_http_server_free(br_http_server *s)
{
    if (!s)
        return;
    lws_context_destroy(s->ctx);
    br_free(s->wbuf);
    br_free(s);
}
