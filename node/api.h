/* api.h — the HTTP API's handlers (CouchDB shapes, status codes and headers) and the helpers
 * they share. A handler reads x->req and fills x->resp; it runs on a worker thread or on the
 * loop as the router says (router.h), so it touches nothing but the store and x.
 *
 *   api_server.c  GET /  GET /_all_dbs  GET /_node
 *   api_db.c      PUT|GET|DELETE|POST /{db}, _bulk_docs, _revs_diff, _changes, _find, _all_docs
 *   api_doc.c     PUT|GET|DELETE /{db}/{docid} (and _design/), /{db}/_local/{id}
 * Thread: any. */
#ifndef BARREL_NODE_API_H
#define BARREL_NODE_API_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "barrel/rev.h"
#include "barrel/store.h"

#include "http.h"

#ifndef BARREL_VERSION
#define BARREL_VERSION "0.0.0"
#endif

struct br_api {
    br_store *store;
    uint64_t start_mono_ns; /* for /_node uptime */
    size_t max_body;
};

typedef void (*br_api_fn)(struct br_api *api, br_http_ex *x);

/* ---- helpers (api.c) ---- */

/* Answer status with JSON v (taken; NULL answers 500). */
void api_json(br_http_ex *x, int status, json_t *v);
/* Answer with CouchDB's status and error name for e; reason NULL/"" uses br_strerror. */
void api_fail(br_http_ex *x, br_err e, const char *reason);
/* Open the database named by path segment 0: 400 illegal_database_name, 404 not_found. On
 * failure the response is set and false returned. */
bool api_open_db(struct br_api *api, br_http_ex *x, br_db **db);
/* Parse the request body as JSON. When require_json, the Content-Type must be
 * application/json (415 bad_content_type otherwise). On failure the response is set (400
 * bad_request) and NULL returned. Caller json_decref()s. */
json_t *api_body(br_http_ex *x, bool require_json);
/* Parse a revision argument ("N-hex"); 400 bad_request "Invalid rev format" on failure. */
bool api_parse_rev(br_http_ex *x, const char *text, struct br_rev *out);
/* The revision a write names: ?rev= or If-Match (they must agree). *has is false when
 * neither is given. On failure the response is set and false returned. */
bool api_req_rev(br_http_ex *x, struct br_rev *out, bool *has);
json_t *api_rev_json(const struct br_rev *r);
json_t *api_hlc_json(struct br_hlc h);
/* ETag: "rev" */
void api_etag(br_http_ex *x, const struct br_rev *r);

/* Write one parsed document and answer CouchDB's way (201, ETag, Location). */
struct br_json_doc;
void api_write_doc(br_http_ex *x, br_db *db, struct br_json_doc *d, bool new_edits);

/* ---- handlers ---- */
void api_welcome(struct br_api *api, br_http_ex *x);
void api_all_dbs(struct br_api *api, br_http_ex *x);
void api_node(struct br_api *api, br_http_ex *x);

void api_db_create(struct br_api *api, br_http_ex *x);
void api_db_delete(struct br_api *api, br_http_ex *x);
void api_db_info(struct br_api *api, br_http_ex *x);
void api_db_post(struct br_api *api, br_http_ex *x);
void api_bulk_docs(struct br_api *api, br_http_ex *x);
void api_revs_diff(struct br_api *api, br_http_ex *x);
void api_changes(struct br_api *api, br_http_ex *x);
void api_find(struct br_api *api, br_http_ex *x);
void api_all_docs(struct br_api *api, br_http_ex *x);

void api_doc_get(struct br_api *api, br_http_ex *x);
void api_doc_put(struct br_api *api, br_http_ex *x);
void api_doc_delete(struct br_api *api, br_http_ex *x);
void api_local_get(struct br_api *api, br_http_ex *x);
void api_local_put(struct br_api *api, br_http_ex *x);
void api_local_delete(struct br_api *api, br_http_ex *x);

#endif
