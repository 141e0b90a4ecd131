/* httpc.h — a small blocking HTTP/1.1 client over a TCP socket, for the CLI's --url mode.
 *
 * One request per connection ("Connection: close"): connect, send, read to the end, parse.
 * The response parser is separate (br_httpc_parse) so it can be tested and fuzzed on bytes:
 * it takes a status line, headers (at most BR_HTTPC_MAX_HEADERS bytes), and a body framed by
 * Content-Length, chunked Transfer-Encoding, or the end of the connection; anything else is
 * BR_EPROTO with a reason. No TLS, no redirects, no proxies. Thread: any (no shared state). */
#ifndef BARREL_NODE_HTTPC_H
#define BARREL_NODE_HTTPC_H

#include <stdbool.h>
#include <stddef.h>

#include "barrel/buf.h"
#include "barrel/err.h"

#define BR_HTTPC_MAX_HEADERS (64u * 1024u)
#define BR_HTTPC_MAX_BODY ((size_t)1u << 30)

/* http://[user[:password]@]host[:port][/] — host is a name, an IPv4 address or [IPv6]. */
struct br_httpc_url {
    char host[256];
    char port[8];
    char user[128];
    char password[256];
    bool has_user;
};

/* Parse text into *out. BR_EINVAL with a reason (https, a path, a bad port...). */
BR_NODISCARD br_err br_httpc_url_parse(const char *text, struct br_httpc_url *out,
                                       struct br_errbuf *eb);

struct br_httpc_resp {
    int status;
    char etag[128]; /* the ETag header's value, "" if none */
    br_buf body;    /* the decoded body; owned, free with br_httpc_resp_fini */
};
void br_httpc_resp_fini(struct br_httpc_resp *r); /* zeroed or filled; safe twice */

/* Parse a whole response (the bytes read until the server closed the connection) into *out,
 * which the caller then finis. max_body bounds the decoded body. BR_EPROTO for a bad status
 * line, oversized or malformed headers, a bad chunk or a body shorter than its
 * Content-Length; BR_ETOOBIG past max_body. On error *out holds nothing to free. */
BR_NODISCARD br_err br_httpc_parse(const void *data, size_t len, size_t max_body,
                                   struct br_httpc_resp *out, struct br_errbuf *eb);

/* Send one request to u and read the answer into *out (caller finis it). target is the path
 * with its query ("/db/doc?revs=true"), already percent-encoded. body may be NULL; ctype is
 * sent when body is given. With u->has_user, HTTP basic credentials are sent. BR_EIO with a
 * reason when the node cannot be reached or the connection breaks; BR_ETIMEDOUT after
 * timeout_s seconds without progress; the parse errors above. */
BR_NODISCARD br_err br_httpc_request(const struct br_httpc_url *u, const char *method,
                                     const char *target, const char *ctype, const void *body,
                                     size_t body_len, unsigned timeout_s, struct br_httpc_resp *out,
                                     struct br_errbuf *eb);

/* Append s percent-encoded for a path segment or a query value (RFC 3986 unreserved kept). */
BR_NODISCARD br_err br_httpc_escape(br_buf *b, const char *s, size_t len);

#endif
