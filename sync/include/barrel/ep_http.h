/* ep_http.h — the endpoint (endpoint.h) over a CouchDB-compatible HTTP server: CouchDB,
 * PouchDB-server, or another barrel node's CouchDB API, given as
 * `http[s]://[user:pass@]host:port/db`.
 *
 * The server's sequence ids are opaque JSON values, so the endpoint implements the opaque
 * variants of changes and wait (endpoint.h). Filters are applied client-side (the documents come
 * with the changes). Every call is bounded by a timeout; interrupt aborts the call in flight.
 * Thread: as endpoint.h. */
#ifndef BARREL_EP_HTTP_H
#define BARREL_EP_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "barrel/endpoint.h"
#include "barrel/err.h"

struct br_endpoint_http_opts {
    uint64_t timeout_ms; /* one request's limit (longpoll waits add theirs); 0: 120000 */
    bool create;         /* create the database when it does not exist */
};

/* Open the database at `url` (checked with GET). BR_EINVAL for a URL that is not http(s) with a
 * database path, BR_ENOTFOUND when the database does not exist (and create is false), BR_EIO
 * when the server cannot be reached or answers with a server error, BR_EINVAL with "unauthorized"
 * for 401/403. The endpoint's name is the URL without credentials. Thread: any. */
BR_NODISCARD br_err br_endpoint_http_open(const char *url, const struct br_endpoint_http_opts *o,
                                          struct br_endpoint **out, struct br_errbuf *eb);

/* Whether `s` names an http(s) URL (what br_endpoint_http_open takes). */
bool br_endpoint_is_http_url(const char *s);

#endif
