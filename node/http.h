/* http.h — the HTTP/1.1 server: one libwebsockets context and vhost, polled by one thread.
 *
 * It parses a request (method, path, query arguments, Content-Type / If-Match / Accept, the
 * body up to a maximum), hands it to on_request as an exchange, and writes the response the
 * handler fills in, one lws_write per WRITEABLE callback, the body in pieces, keeping the
 * connection alive when HTTP allows. Bodies larger than max_body get 413 and the connection is
 * closed; a request whose headers or body do not arrive within request_timeout_s is closed.
 * A body is framed by Content-Length: a request without one has an empty body (a POST, PUT or
 * PATCH too) and the connection stays usable, unless the client had already sent more behind
 * it (then it is closed after the answer). A Transfer-Encoding body is refused with 411, and a
 * body pipelined behind another request is refused, both by closing the connection
 * (libwebsockets 4.1 cannot frame them, see http.c).
 * A body the node asks to stream (stream_body: attachment uploads) is not collected but handed
 * over piece by piece, with flow control, up to max_stream_body.
 *
 * An exchange belongs to the server. The handler may answer at once or later (from a worker
 * completion), but always on the loop thread, with br_http_respond(). If the client went away
 * meanwhile, br_http_respond() just frees the exchange. Thread: loop, except br_http_wake. */
#ifndef BARREL_NODE_HTTP_H
#define BARREL_NODE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/err.h"

#include "httpreq.h"

#define BR_HTTP_RESP_HEADERS 16

struct br_http_req {
    enum br_http_method method;
    char *path; /* decoded path */
    struct br_http_path segs;
    struct br_http_args args;
    char *content_type; /* NULL when absent */
    char *if_match;
    char *accept;
    char *authorization; /* Authorization, NULL when absent */
    char *origin;        /* Origin (CORS) */
    char *acr_method;    /* Access-Control-Request-Method (CORS preflight) */
    br_buf body;         /* bounded by max_body; empty when body_streamed */
    bool body_streamed;  /* the body goes to on_body_piece instead (see stream_body) */
    uint64_t content_length;
};

struct br_http_resp {
    int status;               /* 0 until answered */
    const char *content_type; /* static string; NULL: application/json */
    br_buf body;
    size_t n_headers;
    char *hname[BR_HTTP_RESP_HEADERS]; /* lowercase, without the colon */
    char *hvalue[BR_HTTP_RESP_HEADERS];
};

/* Add a response header (copied). A header that does not fit (BR_HTTP_RESP_HEADERS, or out
 * of memory) is dropped with a warning: headers are never worth failing a response for. */
void br_http_resp_header(struct br_http_resp *r, const char *name, const char *value);
/* Set status and a CouchDB error body {"error": error, "reason": reason}. */
void br_http_resp_error(struct br_http_resp *r, int status, const char *error, const char *reason);

typedef struct br_http_ex br_http_ex;
struct br_http_ex {
    struct br_http_req req;
    struct br_http_resp resp;
    void *user; /* for the handler */
    /* for metrics: the route (metrics.h id, set by the node) and documents the handler read
     * or wrote; reported through on_done */
    unsigned route;
    uint32_t docs_read, docs_written;
    /* private to http.c */
    struct br_http_server *srv;
    struct lws *wsi;
    int state;
    bool close_after;
    bool headers_sent;
    bool dispatched;
    bool stream_end; /* streaming: finish once the pending bytes are out */
    bool body_done;  /* a streamed request body is complete */
    bool rx_paused;  /* reading the streamed body is paused (br_http_body_rx) */
    size_t sent;
    uint64_t t_start_ns;
    uint64_t body_bytes;   /* streamed body bytes received so far */
    uint64_t paused_at_ns; /* when rx_paused was set */
    uint64_t paused_ns;    /* time the body spent paused by the handler */
};

typedef struct br_http_server br_http_server;
typedef struct br_http_ws br_http_ws; /* see "WebSocket connections" below */

struct br_http_opts {
    const char *bind;           /* address to listen on ("127.0.0.1") */
    int port;                   /* 0: any free port (see br_http_server_port) */
    size_t max_body;            /* largest request body accepted (collected whole) */
    uint64_t max_stream_body;   /* largest streamed request body (see stream_body) */
    unsigned request_timeout_s; /* headers, and body, must arrive within this */
    unsigned keepalive_timeout_s;
    /* A complete request: answer it (now or later) with br_http_respond(x). */
    void (*on_request)(void *arg, br_http_ex *x);
    /* Add headers every response carries, just before they are written. May be NULL. */
    void (*decorate)(void *arg, struct br_http_resp *r);
    /* The loop was woken by br_http_wake (worker completions). May be NULL. */
    void (*on_wake)(void *arg);
    /* Streamed responses: the timer set with br_http_stream_timer fired; the client of a
     * stream went away (x is freed when this returns). May be NULL if nothing streams. */
    void (*on_stream_timer)(void *arg, br_http_ex *x);
    void (*on_stream_gone)(void *arg, br_http_ex *x);
    /* Everything queued on the stream has been written (backpressure for producers). */
    void (*on_stream_drained)(void *arg, br_http_ex *x);
    /* An exchange was answered (its last byte written) or abandoned (status 0). May be NULL. */
    void (*on_done)(void *arg, const br_http_ex *x);
    /* A connection opened (+1) or closed (-1). May be NULL. */
    void (*on_conn)(void *arg, int delta);
    /* WebSocket upgrades (any path): x holds the request as for on_request (x is freed when
     * this returns). Return the connection's user pointer to accept, or NULL to refuse (the
     * handshake fails). A refusal may set x->resp; it is logged. May be NULL: no WebSockets. */
    void *(*on_ws_open)(void *arg, br_http_ex *x, br_http_ws *ws);
    /* The socket can take one frame (after br_http_ws_want_write): send at most one with
     * br_http_ws_send. Return false to close the connection (after br_http_ws_close). */
    bool (*on_ws_writeable)(void *arg, void *user);
    /* The connection is gone; user is no longer used by the server. Also called for a client
     * connection (br_http_ws_connect) that failed to connect. */
    void (*on_ws_closed)(void *arg, void *user);
    /* A piece of a received frame (server or client side): `first` and `final` delimit one
     * message, `binary` says its kind. Return false to close the connection. May be NULL:
     * frames are ignored. */
    bool (*on_ws_receive)(void *arg, void *user, const void *in, size_t len, bool first, bool final,
                          bool binary);
    /* A client connection made with br_http_ws_connect completed its upgrade. May be NULL. */
    void (*on_ws_client_open)(void *arg, void *user, br_http_ws *ws);
    /* Streamed request bodies (attachment uploads). For a request with a body, stream_body is
     * asked once the headers are parsed; when it returns true the request is handed to
     * on_request at once, with x->req.body_streamed set and x->req.body empty, and the body
     * arrives in pieces: on_body_piece for each (the bytes are borrowed for the call), then
     * on_body_end once it is complete. It is limited by max_stream_body instead of max_body,
     * and must progress: a body that stays silent for request_timeout_s, or is slower on
     * average than BR_HTTP_BODY_MIN_RATE after the first request_timeout_s (time paused with
     * br_http_body_rx does not count), closes the connection. If the client leaves before the
     * end, on_body_gone is called (x is then orphaned: answer it with br_http_respond to free
     * it). The handler may answer before the body is complete: the rest is discarded and the
     * connection closed after the answer, with no more body callbacks. All may be NULL when
     * stream_body is. */
    bool (*stream_body)(void *arg, br_http_ex *x);
    void (*on_body_piece)(void *arg, br_http_ex *x, const void *p, size_t n);
    void (*on_body_end)(void *arg, br_http_ex *x);
    void (*on_body_gone)(void *arg, br_http_ex *x);
    /* Called every tick_ms on the loop when tick_ms > 0. */
    void (*on_tick)(void *arg);
    unsigned tick_ms;
    void *arg;
};

/* Create the context and listen. BR_EIO (reason in eb) if the address cannot be bound. */
BR_NODISCARD br_err br_http_server_new(const struct br_http_opts *o, br_http_server **out,
                                       struct br_errbuf *eb);
/* Serve events once (blocks until something happens or br_http_wake). */
void br_http_server_service(br_http_server *s);
/* The port actually bound. */
int br_http_server_port(const br_http_server *s);
/* Exchanges handed to on_request and not yet fully answered (written or abandoned): what a
 * clean shutdown waits for. */
size_t br_http_server_inflight(const br_http_server *s);
/* Wake the loop from any thread (lws_cancel_service). Thread: any. */
void br_http_wake(br_http_server *s);
/* Close every connection and free. In-flight exchanges must have been answered. NULL no-op. */
void br_http_server_free(br_http_server *s);

/* Send x's response (x->resp filled in). Thread: loop. */
void br_http_respond(br_http_ex *x);
/* Pause (false) or resume (true) reading x's streamed request body: flow control while the
 * handler's consumer catches up. Thread: loop. */
void br_http_body_rx(br_http_ex *x, bool on);
#define BR_HTTP_BODY_MIN_RATE ((uint64_t)64 << 10) /* bytes/s, see stream_body */

/* False once x's client has gone (x orphaned: answer it with br_http_respond to free it). */
bool br_http_ex_alive(const br_http_ex *x);

/* ---- WebSocket connections (text frames, server to client) ----
 * A br_http_ws is a connection accepted through on_ws_open; valid until on_ws_closed.
 * Thread: loop. */
/* Ask for one on_ws_writeable callback. */
void br_http_ws_want_write(br_http_ws *ws);
/* Send one text frame (copied). False if the connection failed. */
bool br_http_ws_send(br_http_ws *ws, const char *p, size_t n);
/* Set the close code and reason sent when on_ws_writeable next returns false. */
void br_http_ws_close(br_http_ws *ws, int code, const char *reason);
/* Send one binary frame (copied; lws may buffer the unsent rest, and then calls
 * on_ws_writeable only once it is out). False if the connection failed. */
bool br_http_ws_send_binary(br_http_ws *ws, const void *p, size_t n);
/* Stop (false) or resume (true) reading from the connection: flow control. */
void br_http_ws_rx_enable(br_http_ws *ws, bool on);
/* The peer's numeric address into buf ("127.0.0.1"); "?" when unknown. */
void br_http_ws_peer(br_http_ws *ws, char *buf, size_t cap);
/* Dial ws://host:port/path as a client on this server's loop. user is handed back in
 * on_ws_client_open, on_ws_receive, on_ws_writeable and, exactly once, on_ws_closed — unless
 * this returns an error (BR_EIO: the connection could not even start), in which case no
 * callback is made for user. */
BR_NODISCARD br_err br_http_ws_connect(br_http_server *s, const char *host, int port,
                                       const char *path, void *user);

/* ---- streamed responses (Transfer-Encoding: chunked; the changes feeds) ----
 * br_http_stream_begin sends x->resp's status and headers, and x->resp.body so far as the
 * first chunk. br_http_stream_write queues more (BR_ETOOBIG once BR_HTTP_STREAM_PENDING_MAX
 * bytes wait for a client that does not read); br_http_stream_end finishes the response when
 * the queue is out, after which x belongs to the server again (no more callbacks). Until then
 * the stream's owner gets on_stream_timer and, if the client leaves, on_stream_gone.
 * Thread: loop. */
#define BR_HTTP_STREAM_PENDING_MAX ((size_t)8 << 20)
void br_http_stream_begin(br_http_ex *x);
BR_NODISCARD br_err br_http_stream_write(br_http_ex *x, const void *p, size_t n);
void br_http_stream_end(br_http_ex *x);
/* (Re)arm the stream's one timer: on_stream_timer after usecs. */
void br_http_stream_timer(br_http_ex *x, uint64_t usecs);

#endif
