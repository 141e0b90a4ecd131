/* http.h — the HTTP/1.1 server: one libwebsockets context and vhost, polled by one thread.
 *
 * It parses a request (method, path, query arguments, Content-Type / If-Match / Accept, the
 * body up to a maximum), hands it to on_request as an exchange, and writes the response the
 * handler fills in, one lws_write per WRITEABLE callback, the body in pieces, keeping the
 * connection alive when HTTP allows. Bodies larger than max_body get 413 and the connection is
 * closed; a request whose headers or body do not arrive within request_timeout_s is closed.
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

#define BR_HTTP_RESP_HEADERS 8

struct br_http_req {
    enum br_http_method method;
    char *path; /* decoded path */
    struct br_http_path segs;
    struct br_http_args args;
    char *content_type; /* NULL when absent */
    char *if_match;
    char *accept;
    br_buf body; /* bounded by max_body */
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
    /* private to http.c */
    struct br_http_server *srv;
    struct lws *wsi;
    int state;
    bool close_after;
    bool headers_sent;
    bool dispatched;
    size_t sent;
    uint64_t t_start_ns;
};

typedef struct br_http_server br_http_server;

struct br_http_opts {
    const char *bind;           /* address to listen on ("127.0.0.1") */
    int port;                   /* 0: any free port (see br_http_server_port) */
    size_t max_body;            /* largest request body accepted */
    unsigned request_timeout_s; /* headers, and body, must arrive within this */
    unsigned keepalive_timeout_s;
    /* A complete request: answer it (now or later) with br_http_respond(x). */
    void (*on_request)(void *arg, br_http_ex *x);
    /* Add headers every response carries, just before they are written. May be NULL. */
    void (*decorate)(void *arg, struct br_http_resp *r);
    /* The loop was woken by br_http_wake (worker completions). May be NULL. */
    void (*on_wake)(void *arg);
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

#endif
