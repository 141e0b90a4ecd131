/* router.h — maps a request's method and path segments onto an API handler (api.h).
 *
 *   /                     GET                   /_all_dbs  GET        /_node  GET
 *   /_metrics             GET (Prometheus text)
 *   /{db}                 GET HEAD PUT DELETE POST
 *   /{db}/_bulk_docs      POST                  /{db}/_revs_diff  POST
 *   /{db}/_changes        GET POST                 /{db}/_find       POST
 *   /{db}/_all_docs       GET
 *   /{db}/_local/{id}     GET PUT DELETE
 *   /{db}/_design/{name}  GET HEAD PUT DELETE   /{db}/{docid}     GET HEAD PUT DELETE
 *   /{db}/{docid}/{attachment}  GET PUT DELETE
 * Anything else is 404 {"error":"not_found","reason":"missing"}; a known path with another
 * method is 405 method_not_allowed with an Allow header. Thread: any. */
#ifndef BARREL_NODE_ROUTER_H
#define BARREL_NODE_ROUTER_H

#include <stdbool.h>

#include "api.h"

struct br_route {
    br_api_fn fn;
    bool worker;      /* touches the store: run on a worker thread */
    const char *name; /* the route's name for metrics ("doc", "changes", ...; static) */
};

/* Match x's request. True with *r filled, or false with x->resp set (404/405); r->name is set
 * in both cases ("unmatched" for a 404). */
bool br_router_match(br_http_ex *x, struct br_route *r);

/* True when x's body should be streamed (http.h stream_body) rather than collected: PUT of an
 * attachment, and PUT of a document as multipart/related. */
bool br_router_streams_body(const br_http_ex *x);

#endif
