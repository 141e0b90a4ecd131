/* httpreq.h — the pure parsing half of the HTTP server: splitting a request path into
 * segments, query arguments, and the few header values the API reads (Content-Type,
 * If-Match). No libwebsockets here, so the fuzz harness (tests/fuzz/fuzz_http_request.c) and
 * the unit tests drive it directly with arbitrary bytes.
 *
 * libwebsockets hands us the path already percent-decoded, with "/./" and "/../" collapsed;
 * this module still refuses "." and ".." segments, control bytes and oversize paths itself,
 * so nothing downstream depends on that. Thread: any (no shared state). */
#ifndef BARREL_NODE_HTTPREQ_H
#define BARREL_NODE_HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

#define BR_HTTP_PATH_MAX 8192 /* bytes of a decoded path */
#define BR_HTTP_SEGS_MAX 16   /* segments of a path */
#define BR_HTTP_ARGS_MAX 64   /* query arguments */
#define BR_HTTP_ARG_MAX 8192  /* bytes of one "name=value" */

enum br_http_method {
    BR_HTTP_GET,
    BR_HTTP_HEAD,
    BR_HTTP_POST,
    BR_HTTP_PUT,
    BR_HTTP_DELETE,
    BR_HTTP_OPTIONS, /* CORS preflight when CORS is on; else 405 */
    BR_HTTP_OTHER,   /* PATCH, ...: answered 405 by the router */
};
const char *br_http_method_name(enum br_http_method m);

/* A path split on '/': empty segments (a leading, trailing or doubled slash) are dropped. The
 * segments are NUL-terminated copies, owned by the struct. */
struct br_http_path {
    char *seg[BR_HTTP_SEGS_MAX];
    size_t len[BR_HTTP_SEGS_MAX];
    size_t n;
};
/* Split a decoded path. BR_EINVAL (reason in eb) for a path not starting with '/', a "." or
 * ".." segment, a byte below 0x20 or 0x7f, more than BR_HTTP_SEGS_MAX segments, or a path over
 * BR_HTTP_PATH_MAX. On success release with br_http_path_fini. */
BR_NODISCARD br_err br_http_path_split(const char *p, size_t len, struct br_http_path *out,
                                       struct br_errbuf *eb);
void br_http_path_fini(struct br_http_path *p);

/* Query arguments as name/value pairs (copies, owned by the struct), in request order. */
struct br_http_args {
    char *name[BR_HTTP_ARGS_MAX];
    char *value[BR_HTTP_ARGS_MAX];
    size_t value_len[BR_HTTP_ARGS_MAX];
    size_t n;
};
/* Add one decoded fragment "name=value" (or "name", value ""). BR_EINVAL past the caps or for an
 * empty name; BR_ENOMEM. */
BR_NODISCARD br_err br_http_args_add(struct br_http_args *a, const char *frag, size_t len,
                                     struct br_errbuf *eb);
/* Parse a raw (still percent-encoded) query string "a=1&b=%22x%22" ('+' is a space) into a.
 * BR_EINVAL for a bad escape, an encoded NUL, or the caps of br_http_args_add. */
BR_NODISCARD br_err br_http_args_parse(struct br_http_args *a, const char *qs, size_t len,
                                       struct br_errbuf *eb);
void br_http_args_fini(struct br_http_args *a);
/* The last value of `name`, or NULL (borrowed from a). */
const char *br_http_arg(const struct br_http_args *a, const char *name);

/* Argument values. Each returns BR_EINVAL (reason naming the argument) for a bad value. */
BR_NODISCARD br_err br_http_arg_bool(const struct br_http_args *a, const char *name, bool dflt,
                                     bool *out, struct br_errbuf *eb);
BR_NODISCARD br_err br_http_arg_u64(const struct br_http_args *a, const char *name, uint64_t dflt,
                                    uint64_t *out, struct br_errbuf *eb);

/* True when the Content-Type value `ct` names media type `type` (case-insensitive, parameters
 * such as "; charset=utf-8" ignored). ct may be NULL (false). */
bool br_http_media_is(const char *ct, const char *type);

/* An entity tag as sent in If-Match: strips surrounding quotes and a weak "W/" prefix into out
 * (NUL-terminated). BR_EINVAL if empty, unbalanced or longer than cap-1. */
BR_NODISCARD br_err br_http_etag_value(const char *v, size_t len, char *out, size_t cap);

#endif
