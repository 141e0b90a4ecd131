/* api.h — the HTTP API's handlers (CouchDB shapes, status codes and headers) and the helpers
 * they share. A handler reads x->req and fills x->resp; it runs on a worker thread or on the
 * loop as the router says (router.h), so it touches nothing but the store and x.
 *
 *   api.c         GET /  GET /_all_dbs  GET /_node  GET /_metrics  GET /_peers
 *                 DELETE|PUT /_peers/{id}
 *   api_db.c      PUT|GET|DELETE|POST /{db}, _bulk_docs, _revs_diff, _find, _all_docs
 *   changes.c     GET|POST /{db}/_changes (streaming feeds continue in feed.c)
 *   api_doc.c     PUT|GET|DELETE /{db}/{docid} (and _design/), /{db}/_local/{id}
 *   bulk_get.c    POST /{db}/_bulk_get, and the open_revs answer GET /{db}/{docid} shares
 *   api_att.c     PUT|GET|HEAD|DELETE /{db}/{docid}/{name} (large bodies stream: attstream.h)
 * Thread: any. */
#ifndef BARREL_NODE_API_H
#define BARREL_NODE_API_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "barrel/att.h"
#include "barrel/rev.h"
#include "barrel/store.h"

#include "http.h"
#include "metrics.h"

#ifndef BARREL_VERSION
#define BARREL_VERSION "0.0.0"
#endif

struct br_api {
    br_store *store;
    uint64_t start_mono_ns; /* for /_node uptime */
    size_t max_body;
    br_metrics *metrics; /* GET /_metrics */
    /* Samples the node's gauges for /_metrics (on the loop). */
    void (*gauges)(void *arg, struct br_metrics_gauges *g);
    void *gauges_arg;
    struct br_repmgr *reps;     /* POST /_replicate, GET /_active_tasks */
    const char *node_id;        /* text node id for /_node (borrowed); NULL: "unassigned" */
    size_t (*links)(void *arg); /* links up, for /_node; may be NULL */
    /* GET /_peers: the mesh's members as JSON (caller owns), on the loop; may be NULL. */
    json_t *(*peers)(void *arg);
    /* DELETE /_peers/{id} and PUT /_peers/{id} (mesh.h's br_mesh_drop, br_mesh_unblock), on
     * the loop; NULL when the node is not in a mesh. */
    br_err (*peer_drop)(void *arg, const char *id, bool block, size_t *closed);
    br_err (*peer_unblock)(void *arg, const char *id);
};

typedef void (*br_api_fn)(struct br_api *api, br_http_ex *x);

/* A handler that continues on the loop (a streamed response) leaves x->resp.status 0 and
 * x->user pointing at a struct whose first member is this kind; the node hands it on. */
enum api_cont {
    API_CONT_FEED = 1, /* struct chg_stream (changes.h), then struct feed (feed.c) */
    API_CONT_ATT,      /* struct att_stream (attstream.h) */
};
static inline enum api_cont api_cont_of(const br_http_ex *x)
{
    return x->resp.status == 0 && x->user ? (enum api_cont) * (const int *)x->user
                                          : (enum api_cont)0;
}

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
void api_replicate(struct br_api *api, br_http_ex *x); /* replications.c does the work */
void api_active_tasks(struct br_api *api, br_http_ex *x);
void api_peers(struct br_api *api, br_http_ex *x);
void api_peer_delete(struct br_api *api, br_http_ex *x); /* Thread: loop */
void api_peer_put(struct br_api *api, br_http_ex *x);    /* Thread: loop */
void api_metrics(struct br_api *api, br_http_ex *x);     /* Thread: loop (reads the gauges) */

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
/* api_doc_get on an open db from memory only (br_db_get's cache_only), for the loop: true when
 * x is answered; false, with x untouched, when api_doc_get must run on a worker instead (a
 * disk read, open_revs, attachments=true, or db deleted meanwhile: then *gone is set).
 * Thread: any. */
bool api_doc_get_cached(br_db *db, br_http_ex *x, bool *gone);
void api_doc_put(struct br_api *api, br_http_ex *x);
void api_doc_delete(struct br_api *api, br_http_ex *x);
void api_local_get(struct br_api *api, br_http_ex *x);
void api_local_put(struct br_api *api, br_http_ex *x);
void api_local_delete(struct br_api *api, br_http_ex *x);

/* open_revs (bulk_get.c): the given revisions of id (revs NULL/0: every leaf) as
 * [{"ok":doc} | {"missing":rev}, ...]. latest: a revision that is no longer a leaf answers
 * with the leaves descending from it. BR_ENOTFOUND when the document does not exist. On
 * success *out is a new array the caller json_decref()s. */
struct api_open_revs_opts {
    bool revs;        /* _revisions in each doc */
    bool latest;      /* see above */
    bool attachments; /* inline "data" instead of stubs */
};
BR_NODISCARD br_err api_open_revs_json(br_db *db, const char *id, const struct br_rev *revs,
                                       size_t n, const struct api_open_revs_opts *o, json_t **out);
void api_bulk_get(struct br_api *api, br_http_ex *x);
/* api_mixed.c: whether the request's Accept asks for multipart/mixed; and the open_revs
 * answer res (taken; rendered with attachment stubs) as multipart/mixed, attachments
 * following as parts when `attachments`: on success x->user is a stream (api_cont_of:
 * API_CONT_ATT) that takes db; on failure x is answered and db is still the caller's. */
bool api_wants_mixed(const br_http_ex *x);
void api_open_revs_mixed(br_http_ex *x, br_db *db, const char *id, json_t *res, bool attachments);

/* attachments=true: replace the stubs of doc (rendered from d) with inline base64 "data". */
BR_NODISCARD br_err api_att_inline(br_db *db, const struct br_doc *d, json_t *doc);
void api_att_get(struct br_api *api, br_http_ex *x);
void api_att_put(struct br_api *api, br_http_ex *x); /* the body collected whole */
/* PUT /{db}/{docid}/{name} in stages, the body streamed (upload.h): open (checks the name,
 * database and rev and starts a blob writer), write the body's bytes as they come, then finish
 * (stores the blob, writes the revision, answers) or abort (drops what was written). open
 * returns false with x answered and nothing held; write returns false with x answered (then
 * abort); finish and abort release p. Thread: a worker. */
struct api_att_put {
    br_db *db;
    br_att_writer *w;
    struct br_rev rev;
    bool has_rev;
};
bool api_att_put_open(struct br_api *api, br_http_ex *x, struct api_att_put *p);
bool api_att_put_write(br_http_ex *x, struct api_att_put *p, const void *data, size_t n);
void api_att_put_finish(br_http_ex *x, struct api_att_put *p);
void api_att_put_abort(struct api_att_put *p);
void api_att_delete(struct br_api *api, br_http_ex *x);

#endif
