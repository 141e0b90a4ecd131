/* router.h — maps a request's method and path segments onto an API handler (api.h).
 *
 *   /                     GET                   /_all_dbs  GET        /_node  GET
 *   /{db}                 GET HEAD PUT DELETE POST
 *   /{db}/_bulk_docs      POST                  /{db}/_revs_diff  POST
 *   /{db}/_changes        GET                   /{db}/_find       POST
 *   /{db}/_all_docs       GET
 *   /{db}/_local/{id}     GET PUT DELETE
 *   /{db}/_design/{name}  GET HEAD PUT DELETE   /{db}/{docid}     GET HEAD PUT DELETE
 * Anything else is 404 {"error":"not_found","reason":"missing"}; a known path with another
 * method is 405 method_not_allowed with an Allow header. Thread: any. */
#ifndef BARREL_NODE_ROUTER_H
#define BARREL_NODE_ROUTER_H

#include <stdbool.h>

#include "api.h"

struct br_route {
    br_api_fn fn;
    bool worker; /* touches the store: run on a worker thread */
};

/* Match x's request. True with *r filled, or false with x->resp set (404/405). */
bool br_router_match(br_http_ex *x, struct br_route *r);

#endif
