/* serve.h — `barrel serve`: run a node until SIGINT or SIGTERM.
 *
 * One event loop thread (the caller's) owns the HTTP server; store calls run on a small worker
 * pool and come back through a completion queue. On SIGINT/SIGTERM the node stops taking
 * requests, lets in-flight ones finish and answer, closes connections and the store, and
 * returns 0. */
#ifndef BARREL_SERVE_H
#define BARREL_SERVE_H

#include <stddef.h>
#include <stdio.h>

#define BR_SERVE_DEFAULT_PORT 7070
#define BR_SERVE_DEFAULT_BIND "127.0.0.1"
#define BR_SERVE_DEFAULT_MAX_BODY ((size_t)65u << 20) /* 64 MiB documents + envelope */
#define BR_SERVE_DEFAULT_TIMEOUT_S 30

struct br_serve_opts {
    const char *data;           /* data directory */
    const char *bind;           /* NULL: BR_SERVE_DEFAULT_BIND; loopback only for now */
    int port;                   /* 0: any free port (printed on `out`) */
    size_t max_body;            /* 0: BR_SERVE_DEFAULT_MAX_BODY */
    unsigned request_timeout_s; /* headers and body; 0: BR_SERVE_DEFAULT_TIMEOUT_S */
    size_t workers;             /* 0: 2 */
};

/* Run the node. Prints "barrel: listening on http://ADDR:PORT" on out once serving; errors
 * go to err as one line. Returns the process exit code: 0 after a clean shutdown, 1 if the
 * node could not start (data directory held by another process, address in use, ...).
 * Thread: the calling thread becomes the event loop; call once per process (it handles
 * SIGINT and SIGTERM). */
int br_serve_run(const struct br_serve_opts *o, FILE *out, FILE *err);

#endif
