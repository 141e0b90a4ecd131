/* multipart.h — a strict, streaming parser of MIME multipart bodies (RFC 2046), for CouchDB's
 * multipart/related document uploads.
 *
 * Bytes are pushed in pieces of any size (br_mp_feed); each part's headers are read into a
 * bounded buffer and handed to begin, its content goes to data in the pieces it arrived in
 * (never collected), and end closes it. Nothing else is held: memory is one header block.
 *
 * Strict: the body starts with the first delimiter (no preamble), every delimiter is followed
 * by CRLF or, for the last, "--" and at most one CRLF (no epilogue, no transport padding);
 * header lines are "Name: value" with no folding, no NUL, at most BR_MP_HEADER_MAX bytes per
 * part; Content-Length, when given, must be a decimal number; Content-Transfer-Encoding, when
 * given, must be binary, 8bit or 7bit; at most parts_max parts. Anything else is BR_EPROTO
 * with a reason, and the parser stays failed. Thread: one thread at a time per parser. */
#ifndef BARREL_NODE_MULTIPART_H
#define BARREL_NODE_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

#define BR_MP_BOUNDARY_MAX 70 /* RFC 2046 */
#define BR_MP_HEADER_MAX 8192 /* one part's header block */
#define BR_MP_VALUE_MAX 1024  /* a Content-Type or file name */

/* A part's headers: valid during the begin callback only. */
struct br_mp_part {
    size_t index;             /* 0 for the first part */
    const char *content_type; /* NULL when absent */
    const char *filename;     /* Content-Disposition's filename, NULL when absent */
    bool has_length;          /* a Content-Length header was given */
    uint64_t length;
};

/* Callbacks; a non-BR_OK return stops the parser with that error (the callback fills eb). */
struct br_mp_cb {
    br_err (*begin)(void *arg, const struct br_mp_part *p, struct br_errbuf *eb);
    br_err (*data)(void *arg, const void *p, size_t n, struct br_errbuf *eb);
    br_err (*end)(void *arg, struct br_errbuf *eb);
    void *arg;
};

typedef struct br_mp br_mp;

/* The boundary parameter of a Content-Type header whose media type is `type` (compared
 * without case, e.g. "multipart/related"), copied into out. BR_EINVAL with a reason when the
 * type differs, or the boundary is missing, longer than BR_MP_BOUNDARY_MAX or has characters
 * RFC 2046 does not allow. Thread: any. */
BR_NODISCARD br_err br_mp_boundary(const char *content_type, const char *type,
                                   char out[BR_MP_BOUNDARY_MAX + 1], struct br_errbuf *eb);

/* A parser for parts delimited by boundary (as br_mp_boundary returns it), calling cb. At most
 * parts_max parts (0: 1). On success *out owns it; free with br_mp_free. */
BR_NODISCARD br_err br_mp_new(const char *boundary, size_t parts_max, const struct br_mp_cb *cb,
                              br_mp **out);
/* Parse the next n bytes. BR_EPROTO (malformed) or a callback's error, with eb filled. */
BR_NODISCARD br_err br_mp_feed(br_mp *m, const void *p, size_t n, struct br_errbuf *eb);
/* The body ended: BR_EPROTO unless the closing delimiter was read. */
BR_NODISCARD br_err br_mp_finish(br_mp *m, struct br_errbuf *eb);
/* Parts begun so far. */
size_t br_mp_parts(const br_mp *m);
void br_mp_free(br_mp *m); /* NULL is a no-op */

#endif
