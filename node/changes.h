/* changes.h — a _changes request as parsed from the query string and body, and the reading and
 * rendering of changes in CouchDB's shapes, shared by the normal feed (answered at once by
 * api_changes) and the streaming feeds (feed.h), which read again each time the database
 * changes. Everything here runs on a worker: it reads the store. Thread: any. */
#ifndef BARREL_NODE_CHANGES_H
#define BARREL_NODE_CHANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/query.h"
#include "barrel/store.h"

#include "http.h"

#define CHG_DOC_IDS_MAX 10000
#define CHG_PATHS_MAX 256
#define CHG_TIMEOUT_DEFAULT_MS 60000
#define CHG_NO_TIMEOUT UINT64_MAX

enum chg_feed { CHG_NORMAL, CHG_LONGPOLL, CHG_CONTINUOUS, CHG_EVENTSOURCE };

struct chg_req {
    enum chg_feed feed;
    struct br_changes_opts o; /* since, limit, style, filters (pointing into the fields below) */
    bool include_docs;
    uint64_t heartbeat_ms; /* 0: none */
    uint64_t timeout_ms;   /* CHG_NO_TIMEOUT: wait forever */
    char **doc_ids;
    size_t *doc_id_lens;
    size_t n_doc_ids;
    char **paths;
    size_t n_paths;
    br_query *query;
};

/* What api_changes leaves in x->user, with x->resp.status still 0, for a streaming feed: the
 * parsed request and the open database. feed_start (feed.h) takes both. */
struct chg_stream {
    int kind; /* API_CONT_FEED (api.h) */
    struct chg_req req;
    br_db *db;
};

/* Parse x's _changes request (GET arguments, and for POST the JSON body's doc_ids, selector or
 * query) for database db (since=now reads its digest). On failure x->resp holds the 400 and
 * false is returned; r needs chg_req_fini either way. */
bool chg_req_parse(br_http_ex *x, br_db *db, struct chg_req *r);
void chg_req_fini(struct chg_req *r);

/* Read up to `limit` (0: no limit) changes after `since` with r's filters and append them to
 * out rendered for r->feed: normal and longpoll rows separated by ",\n" (no brackets),
 * continuous rows one per line, eventsource as "data: ROW\nid: SEQ\n\n". *last gets the seq of
 * the last entry examined (since if none), *count the rows appended. */
BR_NODISCARD br_err chg_read(br_db *db, const struct chg_req *r, struct br_hlc since, size_t limit,
                             br_buf *out, struct br_hlc *last, size_t *count);

/* Append the closing of a normal or longpoll response:
 * "{\"results\":[\n" ROWS "\n],\n\"last_seq\":\"SEQ\",\"pending\":0}\n" — pass the rows. */
BR_NODISCARD br_err chg_wrap_results(br_buf *out, const br_buf *rows, struct br_hlc last);
/* The same in two steps, for rows written straight after the head: append CHG_RESULTS_HEAD,
 * the rows, then chg_results_tail (any_rows: some were appended). */
#define CHG_RESULTS_HEAD "{\"results\":[\n"
BR_NODISCARD br_err chg_results_tail(br_buf *out, bool any_rows, struct br_hlc last);

#endif
