/* http.c — the libwebsockets HTTP server (see http.h).
 *
 * States of an exchange: READING (headers parsed, body arriving), DISPATCHED (on_request has
 * it), RESPONDING (headers and body being written, one lws_write per WRITEABLE), FLUSHING
 * (all written, lws still holds part of the last piece: the exchange stays in flight, so a
 * shutdown waits for it, until lws reports WRITEABLE with nothing buffered). A connection
 * that closes while its exchange is DISPATCHED leaves the exchange orphaned (wsi NULL); the
 * handler's later br_http_respond() frees it. STREAMING is a chunked response whose body
 * arrives piece by piece (br_http_stream_write) until br_http_stream_end. A streamed request
 * body (stream_body) is DISPATCHED as soon as its headers are in; its pieces go to the handler
 * while the exchange stays DISPATCHED, paused and resumed with lws_rx_flow_control.
 *
 * Request framing: a body is framed by Content-Length; lws 4.1 decodes no Transfer-Encoding,
 * so such a request is refused (411) and its connection closed. Two defects of lws 4.1 are
 * worked around here:
 * - It reads a POST, PUT or PATCH with neither header as a body of up to 100 MB, where HTTP/1.1
 *   (RFC 9112 §6.3) says the body is empty and what follows is the next request; it then
 *   discards everything the client sends on that connection. Such an "unframed" request is
 *   answered as body-less, and its connection then moves to a fresh wsi (handoff()). Bytes the
 *   client had already sent after it are in lws' hands and cannot be given back: then the
 *   answer closes the connection instead.
 * - When it parses a request with a body from bytes it had buffered (a request pipelined
 *   behind another), it hands the request its own header bytes as body, and for a
 *   Content-Length body then loops forever. Such a request is refused by closing the
 *   connection before any of those bytes reach the handler (refeed()). */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "barrel/alloc.h"
#include "barrel/env.h"
#include "barrel/log.h"

#define CHUNK (32u * 1024u) /* a piece of a streamed (chunked) body */
/* A piece of a whole body. A body up to WRITE_MAX - HDR_SPACE (a 100-doc _bulk_get answer)
 * goes out with its headers in one write. */
#define WRITE_MAX (128u * 1024u)
#define HDR_SPACE 4096
#define CHUNK_FRAME 16     /* "%zx\r\n" before a chunk, "\r\n" after */
#define COMPLETIONS_MAX 64 /* body completions of one request in one turn: lws is looping */

enum { X_READING = 1, X_DISPATCHED, X_RESPONDING, X_FLUSHING, X_STREAMING };

struct br_http_server {
    struct br_http_opts o;
    struct lws_context *ctx;
    struct lws_vhost *vh;
    size_t inflight;     /* exchanges DISPATCHED or RESPONDING after dispatch */
    unsigned char *wbuf; /* LWS_PRE + CHUNK_FRAME + max(CHUNK, WRITE_MAX) */
    lws_sorted_usec_list_t tick;
    void *connecting;         /* the user of a br_http_ws_connect call in progress */
    bool connect_failed;      /* its connection failed before the call returned */
    struct handoff *handoffs; /* connections waiting for their new wsi (handoff()) */
    unsigned turn;            /* turns of the loop (br_http_server_service calls) */
};

/* A connection between two wsis (handoff()). */
struct handoff {
    lws_sorted_usec_list_t sul;
    br_http_server *s;
    struct handoff *next;
    int fd;
};

struct conn {
    br_http_ex *x;
    void *ws_user;   /* a WebSocket accepted by on_ws_open */
    bool counted;    /* reported to on_conn */
    bool ws_closing; /* br_http_ws_close was called: send the reason and close */
    /* lws binds a fresh conn for every HTTP request; these describe the current one */
    bool unframed;     /* no framing header: its body is empty (see the top) */
    bool pipelined;    /* unframed, and bytes followed it: close after the answer */
    bool body_started; /* a body byte arrived */
    unsigned completion_turn, completions; /* BODY_COMPLETIONs in this turn of the loop */
    int ws_code;
    char ws_reason[124];
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
    br_free(x->req.authorization);
    br_free(x->req.origin);
    br_free(x->req.acr_method);
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

/* A copy of a header lws does not know by token (name lowercase with its colon), or NULL. */
static char *hdr_custom_dup(struct lws *wsi, const char *name)
{
    int nl = (int)strlen(name);
    int n = lws_hdr_custom_length(wsi, name, nl);
    if (n <= 0)
        return NULL;
    char *s = br_malloc((size_t)n + 1);
    if (s && lws_hdr_custom_copy(wsi, s, n + 1, name, nl) < 0) {
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
        {WSI_TOKEN_HEAD_URI, BR_HTTP_HEAD}, {WSI_TOKEN_OPTIONS_URI, BR_HTTP_OPTIONS},
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
    if (x->req.body_streamed && !x->body_done) {
        /* answered before the body is in: the rest is not read, the connection not reused */
        x->close_after = true;
        if (x->rx_paused)
            br_http_body_rx(x, true);
        lws_set_timeout(x->wsi, NO_PENDING_TIMEOUT, 0);
    }
    start_response(x);
}

void br_http_body_rx(br_http_ex *x, bool on)
{
    if (!x->wsi || x->rx_paused == !on)
        return;
    x->rx_paused = !on;
    uint64_t now = mono_ns();
    if (on) {
        x->paused_ns += now - x->paused_at_ns;
        if (!x->body_done && x->state == X_DISPATCHED)
            lws_set_timeout(x->wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)x->srv->o.request_timeout_s);
    } else {
        x->paused_at_ns = now;
        lws_set_timeout(x->wsi, NO_PENDING_TIMEOUT, 0); /* our pause is not the client's */
    }
    lws_rx_flow_control(x->wsi, on ? 1 : 0);
}

bool br_http_ex_alive(const br_http_ex *x)
{
    return x->wsi != NULL;
}

void br_http_stream_begin(br_http_ex *x)
{
    if (x->resp.status == 0)
        x->resp.status = 200;
    x->state = X_STREAMING;
    x->sent = 0;
    x->headers_sent = false;
    x->stream_end = false;
    lws_callback_on_writable(x->wsi);
}

br_err br_http_stream_write(br_http_ex *x, const void *p, size_t n)
{
    if (x->resp.body.len - x->sent + n > BR_HTTP_STREAM_PENDING_MAX)
        return BR_ETOOBIG;
    br_err e = br_buf_append(&x->resp.body, p, n);
    if (!e && x->headers_sent)
        lws_callback_on_writable(x->wsi);
    return e;
}

void br_http_stream_end(br_http_ex *x)
{
    x->stream_end = true;
    lws_set_timer_usecs(x->wsi, -1);
    lws_callback_on_writable(x->wsi);
}

void br_http_stream_timer(br_http_ex *x, uint64_t usecs)
{
    lws_set_timer_usecs(x->wsi, (lws_usec_t)usecs);
}

static int finish(struct lws *wsi, struct conn *c);
static int write_headers(br_http_server *s, struct lws *wsi, br_http_ex *x, bool inline_body);

/* One write of a streamed response: the headers, one chunk, or the last (empty) chunk. */
static int stream_writeable(br_http_server *s, struct lws *wsi, struct conn *c)
{
    br_http_ex *x = c->x;
    if (!x->headers_sent) {
        if (write_headers(s, wsi, x, false))
            return -1;
        x->headers_sent = true;
        if (x->req.method == BR_HTTP_HEAD)
            return finish(wsi, c);
        if (x->resp.body.len > 0 || x->stream_end)
            lws_callback_on_writable(wsi);
        return 0;
    }
    unsigned char *start = s->wbuf + LWS_PRE;
    size_t n = x->resp.body.len - x->sent;
    if (n > 0) {
        if (n > CHUNK)
            n = CHUNK;
        int k = snprintf((char *)start, CHUNK_FRAME, "%zx\r\n", n);
        memcpy(start + k, x->resp.body.data + x->sent, n);
        memcpy(start + (size_t)k + n, "\r\n", 2);
        size_t total = (size_t)k + n + 2;
        if (lws_write(wsi, start, total, LWS_WRITE_HTTP) < (int)total)
            return -1;
        x->sent += n;
        if (x->sent == x->resp.body.len) {
            br_buf_reset(&x->resp.body);
            x->sent = 0;
        }
        if (x->resp.body.len > 0 || x->stream_end)
            lws_callback_on_writable(wsi);
        else if (s->o.on_stream_drained)
            s->o.on_stream_drained(s->o.arg, x);
        return 0;
    }
    if (!x->stream_end)
        return 0;
    memcpy(start, "0\r\n\r\n", 5);
    if (lws_write(wsi, start, 5, LWS_WRITE_HTTP_FINAL) < 5)
        return -1;
    if (lws_partial_buffered(wsi)) {
        x->state = X_FLUSHING;
        lws_callback_on_writable(wsi);
        return 0;
    }
    return finish(wsi, c);
}

/* The client asked to close after this exchange ("Connection: close"). The answer then says
 * so too: a client that pools sockets (node's keep-alive agent) would otherwise reuse one we
 * are about to close, and its next request would fail with "socket hang up". */
static bool wants_close(struct lws *wsi)
{
    char v[64];
    if (lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_CONNECTION) <= 0)
        return false;
    for (char *p = v; *p; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    return strstr(v, "close") != NULL;
}

/* A new exchange with the request's method, path, arguments and headers. NULL when out of
 * memory; otherwise a request that cannot be parsed leaves its status and reason in x->resp
 * (400 or 500). */
static br_http_ex *new_exchange(br_http_server *s, struct lws *wsi, const char *path)
{
    br_http_ex *x = br_calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->wsi = wsi;
    x->srv = s;
    x->t_start_ns = mono_ns();
    x->state = X_READING;
    br_buf_init(&x->req.body, s->o.max_body);
    br_buf_init(&x->resp.body, 0);
    x->req.method = method_of(wsi);
    x->req.path = br_strdup(path ? path : "/");
    x->req.content_type = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    x->req.if_match = hdr_dup(wsi, WSI_TOKEN_HTTP_IF_MATCH);
    x->req.accept = hdr_dup(wsi, WSI_TOKEN_HTTP_ACCEPT);
    x->req.authorization = hdr_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    x->req.origin = hdr_dup(wsi, WSI_TOKEN_ORIGIN);
    if (x->req.method == BR_HTTP_OPTIONS)
        x->req.acr_method = hdr_custom_dup(wsi, "access-control-request-method:");
    x->close_after = wants_close(wsi);
    if (!x->req.path) {
        br_http_resp_error(&x->resp, 500, "internal_server_error", "out of memory");
        return x;
    }
    struct br_errbuf eb = {{0}};
    if (br_http_path_split(x->req.path, strlen(x->req.path), &x->req.segs, &eb) != BR_OK) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        return x;
    }
    char frag[BR_HTTP_ARG_MAX + 1];
    for (int i = 0; lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i) > 0; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
        br_err e = n < 0 ? br_fail(&eb, BR_EINVAL, "query argument too long")
                         : br_http_args_add(&x->req.args, frag, (size_t)n, &eb);
        if (e) {
            br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
            return x;
        }
    }
    return x;
}

/* The method as lws recognised it (its request line starts with this). */
static const char *method_token(struct lws *wsi)
{
    static const struct {
        enum lws_token_indexes tok;
        const char *name;
    } tab[] = {
        {WSI_TOKEN_GET_URI, "GET"},       {WSI_TOKEN_POST_URI, "POST"},
        {WSI_TOKEN_PUT_URI, "PUT"},       {WSI_TOKEN_PATCH_URI, "PATCH"},
        {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
        {WSI_TOKEN_HEAD_URI, "HEAD"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (lws_hdr_total_length(wsi, tab[i].tok) > 0)
            return tab[i].name;
    }
    return NULL;
}

/* A request lws reads as a body of up to 100 MB: a POST, PUT or PATCH without Content-Length
 * (Transfer-Encoding is refused before this is asked). */
static bool is_unframed(struct lws *wsi)
{
    return lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 &&
           (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0 ||
            lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI) > 0 ||
            lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI) > 0);
}

/* HTTP/1.1, whose connections stay open unless "Connection: close" (lws' own test). */
static bool is_http11(struct lws *wsi)
{
    char v[16];
    return lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP) > 7 && v[5] == '1' && v[7] == '1';
}

static int on_http(br_http_server *s, struct lws *wsi, struct conn *c, const char *in)
{
    br_http_ex *x = new_exchange(s, wsi, in);
    if (!x)
        return -1;
    c->x = x;
    if (x->resp.status) { /* unparseable: answered as new_exchange set, then closed */
        x->close_after = true;
        start_response(x);
        return 0;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        /* lws would read the encoded bytes as the body, or as the next request */
        fail_now(x, 411, "length_required",
                 "Transfer-Encoding request bodies are not supported; send Content-Length");
        return 0;
    }
    if (is_unframed(wsi)) {
        c->unframed = true;
        if (!is_http11(wsi))
            x->close_after = true; /* no keep-alive: nothing to hand over */
    }
    char *cl = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (!cl && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
        /* lws frames the body by it: never read it as absent */
        fail_now(x, 500, "internal_server_error", "out of memory");
        return 0;
    }
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
    x->req.content_length = clen;
    bool has_body = clen > 0 && (x->req.method == BR_HTTP_POST || x->req.method == BR_HTTP_PUT ||
                                 x->req.method == BR_HTTP_DELETE || x->req.method == BR_HTTP_OTHER);
    if (has_body && s->o.stream_body && s->o.stream_body(s->o.arg, x)) {
        if (clen > s->o.max_stream_body) {
            char msg[96];
            snprintf(msg, sizeof msg, "attachment larger than %llu bytes",
                     (unsigned long long)s->o.max_stream_body);
            fail_now(x, 413, "too_large", msg);
            return 0;
        }
        x->req.body_streamed = true;
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)s->o.request_timeout_s);
        dispatch(s, x); /* the body follows in on_body_piece */
        return 0;
    }
    if (clen > s->o.max_body) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes", s->o.max_body);
        fail_now(x, 413, "too_large", msg);
        return 0;
    }
    if (has_body) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)s->o.request_timeout_s);
        return 0; /* wait for LWS_CALLBACK_HTTP_BODY(_COMPLETION) */
    }
    dispatch(s, x);
    return 0;
}

/* A piece of a streamed body: the deadline grows with the bytes received (a large upload is
 * not cut at request_timeout_s, a trickle is) and with the time the handler kept it paused. */
static int on_stream_body(br_http_server *s, br_http_ex *x, const void *in, size_t len)
{
    x->body_bytes += len;
    uint64_t allow_ns = (uint64_t)s->o.request_timeout_s * 1000000000u + x->paused_ns +
                        x->body_bytes / BR_HTTP_BODY_MIN_RATE * 1000000000u;
    if (mono_ns() - x->t_start_ns > allow_ns) {
        br_log(BR_LOG_INFO, "http", "event=body_timeout path=%s bytes=%llu", x->req.path,
               (unsigned long long)x->body_bytes);
        return -1; /* closed: on_body_gone follows */
    }
    if (x->body_bytes > x->req.content_length) /* lws frames by Content-Length: not expected */
        return -1;
    s->o.on_body_piece(s->o.arg, x, in, len);
    return 0;
}

/* lws 4.1 hands a request it parsed from buffered bytes those bytes as its body (see the
 * top): the piece then starts with the request's own request line, the method, a space and an
 * origin-form target ("/..."), and, if the line is in the piece, " HTTP/1.x" before its CRLF.
 * A real body that starts like the request line of the request carrying it is refused too. */
static bool refeed(struct lws *wsi, const unsigned char *p, size_t n)
{
    const char *m = method_token(wsi);
    if (!m || n == 0)
        return false;
    size_t i = 0;
    while (i < n && (p[i] == '\r' || p[i] == '\n'))
        i++;
    char want[16];
    size_t wl = (size_t)snprintf(want, sizeof want, "%s /", m);
    size_t k = n - i < wl ? n - i : wl;
    if (k == 0 || memcmp(p + i, want, k) != 0)
        return false;
    const unsigned char *eol = memchr(p + i, '\n', n - i);
    if (!eol) /* the piece ends within the line: as far as it goes, it is one */
        return true;
    size_t ll = (size_t)(eol - (p + i)); /* up to the LF */
    return ll >= wl + 10 && memcmp(eol - 10, " HTTP/1.", 8) == 0 && eol[-1] == '\r';
}

static int on_body(br_http_server *s, struct lws *wsi, struct conn *c, const void *in, size_t len)
{
    br_http_ex *x = c->x;
    if (c->unframed) {
        /* not a body: bytes of the next request(s), which lws will not give back. They are
         * not even read: when lws parsed this request from its buffer, they can be memory
         * it has already freed. */
        c->pipelined = true;
        if (x)
            x->close_after = true;
        return 0;
    }
    if (len > 0 && !c->body_started) {
        c->body_started = true;
        if (refeed(wsi, in, len)) {
            br_log(BR_LOG_INFO, "http", "event=pipelined_body_refused path=%s",
                   x && x->req.path ? x->req.path : "?");
            return -1; /* closed before lws could loop on it */
        }
    }
    if (x && x->req.body_streamed && x->state == X_DISPATCHED && !x->body_done)
        return on_stream_body(s, x, in, len);
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

/* Write the status line and headers of x into one buffer and send them; with inline_body,
 * the whole (small) body follows in the same write, which then ends the response. */
static int write_headers(br_http_server *s, struct lws *wsi, br_http_ex *x, bool inline_body)
{
    if (s->o.decorate)
        s->o.decorate(s->o.arg, &x->resp);
    unsigned char *start = s->wbuf + LWS_PRE, *p = start, *end = start + HDR_SPACE - 1;
    const char *ct = x->resp.content_type ? x->resp.content_type : "application/json";
    for (size_t i = 0; i < x->resp.n_headers; i++) {
        if (strcmp(x->resp.hname[i], "content-type") == 0)
            ct = x->resp.hvalue[i]; /* a handler's own (an attachment's stored type) */
    }
    if (lws_add_http_header_status(wsi, (unsigned int)x->resp.status, &p, end))
        return -1;
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (const unsigned char *)ct,
                                     (int)strlen(ct), &p, end))
        return -1;
    if (x->state == X_STREAMING) {
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"transfer-encoding:",
                                        (const unsigned char *)"chunked", 7, &p, end))
            return -1;
    } else if (x->req.method == BR_HTTP_HEAD || inline_body) {
        /* by token, so lws does not count the bytes of the combined write against it */
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
        if (strcmp(x->resp.hname[i], "content-type") == 0)
            continue;
        char name[64];
        snprintf(name, sizeof name, "%s:", x->resp.hname[i]);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                        (const unsigned char *)x->resp.hvalue[i],
                                        (int)strlen(x->resp.hvalue[i]), &p, end))
            return -1;
    }
    if (!inline_body)
        return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
    if (lws_finalize_http_header(wsi, &p, end))
        return -1;
    memcpy(p, x->resp.body.data, x->resp.body.len);
    size_t total = (size_t)(p - start) + x->resp.body.len;
    if (lws_write(wsi, start, total, LWS_WRITE_HTTP_FINAL) < (int)total)
        return -1;
    return 0;
}

static int handoff(br_http_server *s, struct lws *wsi);

/* The exchange is answered: log it, free it, and keep the connection or close it. */
static int finish(struct lws *wsi, struct conn *c)
{
    br_http_ex *x = c->x;
    bool close = x->close_after;
    if (c->unframed && !close && lws_partial_buffered(wsi)) {
        /* the hand-over must not leave behind what lws still holds of the answer */
        x->state = X_FLUSHING;
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (x->rx_paused)
        lws_rx_flow_control(wsi, 1);
    if (x->srv->o.on_done)
        x->srv->o.on_done(x->srv->o.arg, x);
    br_log(BR_LOG_DEBUG, "http", "method=%s path=%s status=%d bytes=%zu us=%llu",
           br_http_method_name(x->req.method), x->req.path ? x->req.path : "?", x->resp.status,
           x->resp.body.len, (unsigned long long)((mono_ns() - x->t_start_ns) / 1000));
    settle(x);
    ex_free(x);
    c->x = NULL;
    if (close)
        return -1;
    if (c->unframed) /* lws would swallow the next requests: a fresh wsi reads them */
        return handoff(server_of(wsi), wsi);
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

/* ---- handing a connection to a fresh wsi (after an unframed request) ----
 * The wsi that read an unframed request cannot be told its body is empty, so once the answer
 * is out the socket moves to a new wsi: it is duplicated, the old descriptor number is
 * pointed at an unconnected socket (closing the old wsi must not shut the connection down:
 * lws does that with shutdown(2), which acts on the socket, not the descriptor), and on the
 * next turn of the loop the duplicate is adopted like a newly accepted connection. Only when
 * nothing followed the request (else the answer closed the connection): lws 4.1 cannot take
 * back bytes it has read without mis-framing them (see the top). Plain TCP only, poll loop
 * only (what the server uses). Returns -1: the old wsi closes. */
static void handoff_adopt(lws_sorted_usec_list_t *sul)
{
    struct handoff *h = lws_container_of(sul, struct handoff, sul);
    br_http_server *s = h->s;
    for (struct handoff **p = &s->handoffs; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    if (!lws_adopt_socket_vhost(s->vh, h->fd)) /* lws has closed the descriptor */
        br_log(BR_LOG_INFO, "http", "event=handoff_failed step=adopt");
    br_free(h);
}

static int handoff(br_http_server *s, struct lws *wsi)
{
    int fd = lws_get_socket_fd(wsi);
    int moved = -1, inert = -1;
    struct handoff *h = NULL;
    errno = 0; /* the log below names the call that failed, if one did */
    if (fd < 0 || lws_is_ssl(wsi))
        goto fail;
    h = br_calloc(1, sizeof *h);
    if (!h)
        goto fail;
    moved = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (moved < 0)
        goto fail;
    inert = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (inert < 0 || dup2(inert, fd) < 0)
        goto fail;
    close(inert);
    h->s = s;
    h->fd = moved;
    h->next = s->handoffs;
    s->handoffs = h;
    lws_sul_schedule(s->ctx, 0, &h->sul, handoff_adopt, 1);
    return -1;
fail:
    br_log(BR_LOG_INFO, "http", "event=handoff_failed errno=%d", errno);
    if (inert >= 0)
        close(inert);
    if (moved >= 0)
        close(moved);
    br_free(h);
    return -1; /* the client sees the connection close after its answer */
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
    if (x && x->state == X_STREAMING)
        return stream_writeable(s, wsi, c);
    if (!x || x->state != X_RESPONDING)
        return 0;
    if (!x->headers_sent) {
        /* a small body goes out with the headers: one send per response */
        bool inline_body = x->req.method != BR_HTTP_HEAD && x->resp.body.len > 0 &&
                           x->resp.body.len <= WRITE_MAX - HDR_SPACE;
        if (write_headers(s, wsi, x, inline_body))
            return -1;
        x->headers_sent = true;
        if (inline_body && lws_partial_buffered(wsi)) {
            x->sent = x->resp.body.len;
            x->state = X_FLUSHING;
            lws_callback_on_writable(wsi);
            return 0;
        }
        if (x->req.method == BR_HTTP_HEAD || x->resp.body.len == 0 || inline_body)
            return finish(wsi, c);
        lws_callback_on_writable(wsi);
        return 0;
    }
    size_t done = x->sent;
    size_t n = x->resp.body.len - done;
    if (n > WRITE_MAX)
        n = WRITE_MAX;
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
    br_http_ex *x = c->x;
    c->x = NULL;
    if (!x)
        return;
    if (x->state == X_DISPATCHED) {
        x->wsi = NULL; /* orphaned: br_http_respond frees it */
        if (x->req.body_streamed && !x->body_done)
            s->o.on_body_gone(s->o.arg, x);
        return;
    }
    if (x->state == X_STREAMING && !x->stream_end && s->o.on_stream_gone)
        s->o.on_stream_gone(s->o.arg, x);
    settle(x);
    ex_free(x);
}

/* ---- WebSockets ---- */

void br_http_ws_want_write(br_http_ws *ws)
{
    lws_callback_on_writable((struct lws *)ws);
}

static bool ws_send(br_http_ws *ws, const void *p, size_t n, enum lws_write_protocol kind)
{
    struct lws *wsi = (struct lws *)ws;
    br_http_server *s = server_of(wsi);
    unsigned char *buf = s->wbuf, *own = NULL;
    if (n > CHUNK) {
        own = br_malloc(LWS_PRE + n);
        if (!own)
            return false;
        buf = own;
    }
    memcpy(buf + LWS_PRE, p, n);
    int k = lws_write(wsi, buf + LWS_PRE, n, kind);
    br_free(own);
    return k >= (int)n;
}

bool br_http_ws_send(br_http_ws *ws, const char *p, size_t n)
{
    return ws_send(ws, p, n, LWS_WRITE_TEXT);
}

bool br_http_ws_send_binary(br_http_ws *ws, const void *p, size_t n)
{
    return ws_send(ws, p, n, LWS_WRITE_BINARY);
}

void br_http_ws_rx_enable(br_http_ws *ws, bool on)
{
    lws_rx_flow_control((struct lws *)ws, on ? 1 : 0);
}

void br_http_ws_peer(br_http_ws *ws, char *buf, size_t cap)
{
    if (!lws_get_peer_simple((struct lws *)ws, buf, cap))
        snprintf(buf, cap, "?");
}

br_err br_http_ws_connect(br_http_server *s, const char *host, int port, const char *path,
                          void *user)
{
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = s->ctx;
    i.vhost = s->vh;
    i.address = host;
    i.port = port;
    i.path = path;
    i.host = host;
    i.origin = host;
    i.local_protocol_name = "http";
    i.opaque_user_data = user;
    s->connecting = user;
    s->connect_failed = false;
    struct lws *wsi = lws_client_connect_via_info(&i);
    bool failed = s->connect_failed;
    s->connecting = NULL;
    if (failed) /* on_ws_closed was not called for it: the caller learns it here */
        return BR_EIO;
    if (!wsi)
        return BR_EIO;
    return BR_OK;
}

/* A client connection's user: the opaque pointer until it is established. */
static void *client_user(struct lws *wsi, struct conn *c)
{
    if (c && c->ws_user)
        return c->ws_user;
    return lws_get_opaque_user_data(wsi);
}

static void client_gone(br_http_server *s, struct lws *wsi, struct conn *c)
{
    void *u = client_user(wsi, c);
    lws_set_opaque_user_data(wsi, NULL);
    if (c)
        c->ws_user = NULL;
    if (!u)
        return;
    if (u == s->connecting) {
        s->connect_failed = true;
        return;
    }
    s->o.on_ws_closed(s->o.arg, u);
}

static int ws_writeable(br_http_server *s, struct lws *wsi, struct conn *c)
{
    if (!c || !c->ws_user)
        return -1;
    if (!c->ws_closing && s->o.on_ws_writeable(s->o.arg, c->ws_user))
        return 0;
    if (c->ws_closing)
        lws_close_reason(wsi, (enum lws_close_status)c->ws_code, (unsigned char *)c->ws_reason,
                         strlen(c->ws_reason));
    return -1;
}

static int ws_receive(br_http_server *s, struct lws *wsi, struct conn *c, void *in, size_t len)
{
    if (!c || !c->ws_user || !s->o.on_ws_receive)
        return 0;
    bool first = lws_is_first_fragment(wsi) != 0;
    bool final = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
    if (!s->o.on_ws_receive(s->o.arg, c->ws_user, in, len, first, final,
                            lws_frame_is_binary(wsi) != 0))
        return -1;
    return 0;
}

static void tick(lws_sorted_usec_list_t *sul)
{
    br_http_server *s = lws_container_of(sul, br_http_server, tick);
    s->o.on_tick(s->o.arg);
    lws_sul_schedule(s->ctx, 0, &s->tick, tick, (lws_usec_t)s->o.tick_ms * LWS_US_PER_MS);
}

void br_http_ws_close(br_http_ws *ws, int code, const char *reason)
{
    struct conn *c = lws_wsi_user((struct lws *)ws);
    if (!c)
        return;
    c->ws_closing = true;
    c->ws_code = code;
    snprintf(c->ws_reason, sizeof c->ws_reason, "%s", reason ? reason : "");
}

/* An upgrade request: build the exchange as for HTTP and let the node accept or refuse. */
static int on_ws_filter(br_http_server *s, struct lws *wsi, struct conn *c)
{
    if (!s->o.on_ws_open)
        return -1;
    char path[BR_HTTP_PATH_MAX + 1];
    if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) < 0)
        return -1;
    br_http_ex *x = new_exchange(s, wsi, path);
    if (!x)
        return -1;
    void *u = x->resp.status ? NULL : s->o.on_ws_open(s->o.arg, x, (br_http_ws *)wsi);
    if (!u)
        br_log(BR_LOG_INFO, "http", "event=ws_refused path=%s status=%d", path, x->resp.status);
    x->wsi = NULL;
    ex_free(x);
    if (!u)
        return -1;
    c->ws_user = u;
    return 0;
}

static void count_conn(br_http_server *s, struct conn *c, int delta)
{
    if (!s || !c || c->counted == (delta > 0))
        return;
    c->counted = delta > 0;
    if (s->o.on_conn)
        s->o.on_conn(s->o.arg, delta);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct conn *c = user;
    br_http_server *s = wsi ? server_of(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_HTTP_BIND_PROTOCOL:
    case LWS_CALLBACK_WS_SERVER_BIND_PROTOCOL:
        count_conn(s, c, +1);
        break;
    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
        count_conn(s, c, -1);
        break;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return c ? on_ws_filter(s, wsi, c) : -1;
    case LWS_CALLBACK_ESTABLISHED:
        return 0;
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return ws_receive(s, wsi, c, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return ws_writeable(s, wsi, c);
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!c || !lws_get_opaque_user_data(wsi))
            return -1;
        c->ws_user = lws_get_opaque_user_data(wsi);
        count_conn(s, c, +1);
        if (s->o.on_ws_client_open)
            s->o.on_ws_client_open(s->o.arg, c->ws_user, (br_http_ws *)wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        br_log(BR_LOG_INFO, "http", "event=ws_connect_failed reason=\"%s\"",
               in ? (const char *)in : "unknown");
        client_gone(s, wsi, c);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        client_gone(s, wsi, c);
        count_conn(s, c, -1);
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (c && c->ws_user) {
            void *u = c->ws_user;
            c->ws_user = NULL;
            s->o.on_ws_closed(s->o.arg, u);
        }
        count_conn(s, c, -1);
        return 0;
    case LWS_CALLBACK_HTTP:
        if (c->x) /* a pipelined request before the last was answered */
            return -1;
        return on_http(s, wsi, c, in);
    case LWS_CALLBACK_HTTP_BODY:
        return on_body(s, wsi, c, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /* lws repeats this while bytes wait behind a body whose answer is not out yet, once
         * per turn of the loop; many in one turn is it looping on a re-read body (refeed()
         * should have refused it): close rather than spin */
        if (c->completion_turn != s->turn) {
            c->completion_turn = s->turn;
            c->completions = 0;
        }
        if (++c->completions > COMPLETIONS_MAX) {
            br_log(BR_LOG_WARN, "http", "event=body_loop_broken");
            return -1;
        }
        if (c->x && c->x->req.body_streamed && c->x->state == X_DISPATCHED && !c->x->body_done) {
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
            c->x->body_done = true;
            s->o.on_body_end(s->o.arg, c->x);
            return 0;
        }
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
        if (c && !c->ws_user)
            count_conn(s, c, -1);
        break;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (s && c)
            on_closed(s, c);
        break;
    case LWS_CALLBACK_TIMER:
        if (s && c && c->x && c->x->state == X_STREAMING && !c->x->stream_end &&
            s->o.on_stream_timer)
            s->o.on_stream_timer(s->o.arg, c->x);
        return 0;
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
    s->wbuf = br_malloc(LWS_PRE + CHUNK_FRAME + (WRITE_MAX > CHUNK ? WRITE_MAX : CHUNK));
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
    /* WebSockets: PING after 30 s idle, hang up a peer that has not answered for 60 s (a
     * half-open connection). */
    static const lws_retry_bo_t idle = {.secs_since_valid_ping = 30, .secs_since_valid_hangup = 60};
    info.retry_and_idle_policy = &idle;
    info.options = 0;
    s->vh = lws_create_vhost(s->ctx, &info);
    if (!s->vh) {
        lws_context_destroy(s->ctx);
        br_free(s->wbuf);
        br_free(s);
        return br_fail(eb, BR_EIO, "cannot listen on %s:%d (address in use or not local?)", o->bind,
                       o->port);
    }
    if (o->on_tick && o->tick_ms)
        lws_sul_schedule(s->ctx, 0, &s->tick, tick, (lws_usec_t)o->tick_ms * LWS_US_PER_MS);
    *out = s;
    return BR_OK;
}

void br_http_server_service(br_http_server *s)
{
    s->turn++;
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
    lws_sul_cancel(&s->tick);
    while (s->handoffs) {
        struct handoff *h = s->handoffs;
        s->handoffs = h->next;
        lws_sul_cancel(&h->sul);
        close(h->fd);
        br_free(h);
    }
    lws_context_destroy(s->ctx);
    br_free(s->wbuf);
    br_free(s);
}
