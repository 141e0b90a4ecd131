/* cbor.h — barrel's CBOR: a canonical writer, a bounded pull reader, and the canonicaliser for
 * document bodies (RFC 8949 §4.2.1 core deterministic encoding).
 *
 * Documents are CBOR maps restricted to JSON's types: text-string keys, text strings (valid
 * UTF-8), integers (-2^63..2^64-1), finite floats, true, false, null, arrays, maps. Canonical
 * means: definite lengths, shortest integer and length forms, map keys sorted by their encoded
 * bytes (shorter first, then bytewise), no duplicate keys, floats in the shortest of
 * half/single/double that keeps the value exactly. Equal documents have equal bytes, which is
 * what makes the revision hash deterministic. The reader treats its input as untrusted:
 * malformed, truncated, too deep or too long input is BR_EPROTO, never a crash. Item heads are
 * decoded with libcbor's streaming decoder. */
#ifndef BARREL_CBOR_H
#define BARREL_CBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/err.h"

#define BR_CBOR_MAX_DEPTH 64 /* nesting cap for documents and messages */

/* ---- writer: each appends one item (or a container head) in canonical form ---- */
BR_NODISCARD br_err br_cbor_put_uint(br_buf *b, uint64_t v);
BR_NODISCARD br_err br_cbor_put_int(br_buf *b, int64_t v);
BR_NODISCARD br_err br_cbor_put_str(br_buf *b, const char *s, size_t n);
BR_NODISCARD br_err br_cbor_put_cstr(br_buf *b, const char *s);
BR_NODISCARD br_err br_cbor_put_bytes(br_buf *b, const void *p, size_t n);
BR_NODISCARD br_err br_cbor_put_array(br_buf *b, size_t n);
BR_NODISCARD br_err br_cbor_put_map(br_buf *b, size_t n);
BR_NODISCARD br_err br_cbor_put_bool(br_buf *b, bool v);
BR_NODISCARD br_err br_cbor_put_null(br_buf *b);
/* Shortest exact float form; an integral double stays a float (1.0 is not 1). BR_EINVAL for
 * NaN and infinities, which JSON cannot carry. */
BR_NODISCARD br_err br_cbor_put_double(br_buf *b, double v);
#define BR_CBOR_HEAD_MAX 9 /* bytes of the longest item head, and of a double */
/* The bytes br_cbor_put_double appends for v, written to out; returns their count (3, 5 or 9),
 * or 0 for NaN and infinities. For encoders that fill their own buffers. Thread: any. */
size_t br_cbor_double_encode(uint8_t out[BR_CBOR_HEAD_MAX], double v);

/* ---- reader ---- */
enum br_cbor_type {
    BR_CBOR_UINT,   /* u */
    BR_CBOR_NEGINT, /* value is -1 - u */
    BR_CBOR_BYTES,  /* str, len */
    BR_CBOR_TEXT,   /* str, len (UTF-8 checked) */
    BR_CBOR_ARRAY,  /* len = element count; elements follow */
    BR_CBOR_MAP,    /* len = pair count; key, value pairs follow */
    BR_CBOR_FLOAT,  /* f (half and single are widened) */
    BR_CBOR_BOOL,   /* b */
    BR_CBOR_NULL,
};

struct br_cbor_item {
    enum br_cbor_type type;
    uint64_t u;
    double f;
    bool b;
    const uint8_t *str; /* borrowed from the input */
    size_t len;
    const uint8_t *start; /* where the item began in the input */
};

struct br_cbor_reader {
    const uint8_t *p, *end;
};

static inline void br_cbor_reader_init(struct br_cbor_reader *r, const uint8_t *p, size_t n)
{
    r->p = p;
    r->end = p + n;
}
static inline bool br_cbor_at_end(const struct br_cbor_reader *r)
{
    return r->p >= r->end;
}
/* Read one item head (for strings, the whole string). BR_EPROTO on malformed or truncated
 * input, indefinite lengths, tags, undefined and other simple values, invalid UTF-8, and
 * containers announcing more items than bytes remain. */
BR_NODISCARD br_err br_cbor_next(struct br_cbor_reader *r, struct br_cbor_item *it);
/* Skip one whole item (with its contents), nesting at most max_depth. */
BR_NODISCARD br_err br_cbor_skip(struct br_cbor_reader *r, unsigned max_depth);
/* Convenience readers: BR_EPROTO if the next item is not of that type. */
BR_NODISCARD br_err br_cbor_read_uint(struct br_cbor_reader *r, uint64_t *v);
BR_NODISCARD br_err br_cbor_read_text(struct br_cbor_reader *r, const char **s, size_t *n);
BR_NODISCARD br_err br_cbor_read_bytes(struct br_cbor_reader *r, const uint8_t **p, size_t *n);
BR_NODISCARD br_err br_cbor_read_array(struct br_cbor_reader *r, size_t *n);
BR_NODISCARD br_err br_cbor_read_map(struct br_cbor_reader *r, size_t *n);
BR_NODISCARD br_err br_cbor_read_bool(struct br_cbor_reader *r, bool *v);

/* ---- documents ---- */

/* Check that (p, n) is exactly one document body: a map of JSON types as above, at most
 * max_depth deep (0: BR_CBOR_MAX_DEPTH). It need not be canonical. */
BR_NODISCARD br_err br_cbor_doc_validate(const uint8_t *p, size_t n, unsigned max_depth,
                                         struct br_errbuf *eb);
/* Re-encode one document body canonically into out (appended). Rejects what validate rejects,
 * plus duplicate keys. */
BR_NODISCARD br_err br_cbor_doc_canonical(const uint8_t *p, size_t n, unsigned max_depth,
                                          br_buf *out, struct br_errbuf *eb);

#endif
