/* json.h — JSON at the edges: conversion between JSON (jansson) and barrel's canonical CBOR, and
 * the split of a CouchDB-style JSON document into its metadata and its body.
 *
 * It lives in store/ because the store defines the document format, and every edge (CLI, HTTP
 * API, the CouchDB replication endpoint in sync/) needs the same conversion. Nothing inside the
 * store calls it. Thread: any (jansson objects are not shared between threads). */
#ifndef BARREL_JSON_H
#define BARREL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "barrel/buf.h"
#include "barrel/err.h"
#include "barrel/rev.h"
#include "barrel/store.h"

/* Parse one JSON text of at most max bytes (0: no limit beyond len) into *out (caller
 * json_decref()s). Duplicate object keys, NUL in strings and trailing garbage are rejected.
 * BR_EINVAL with line/column in eb; BR_ETOOBIG past max. */
BR_NODISCARD br_err br_json_parse(const char *text, size_t len, size_t max, json_t **out,
                                  struct br_errbuf *eb);

/* Append the canonical CBOR of any JSON value to out. Nesting deeper than BR_CBOR_MAX_DEPTH is
 * BR_EINVAL. Integers keep their integer type; reals stay floats. */
BR_NODISCARD br_err br_json_to_cbor(const json_t *v, br_buf *out, struct br_errbuf *eb);
/* Decode one CBOR value (a document body or any JSON-typed value) into a new JSON value. */
BR_NODISCARD br_err br_json_from_cbor(const uint8_t *p, size_t n, json_t **out,
                                      struct br_errbuf *eb);

#define BR_JSON_DOC_ID_SMALL 48 /* ids shorter than this are kept inside the struct */

/* A JSON document split for br_db_put: every pointer inside is owned by this struct, and some
 * point into it (put, id), so it is used in place and never copied by value. */
struct br_json_doc {
    struct br_put put; /* id, rev, deleted, body, atts, history point into the fields below */
    char *id;          /* id_small, or allocated when longer */
    char id_small[BR_JSON_DOC_ID_SMALL];
    struct br_rev rev;
    br_buf body;            /* canonical CBOR of the top-level keys not starting with "_" */
    struct br_rev *history; /* from _revisions (newest first), or {_rev} alone */
    size_t n_history;
    struct br_att_in *atts;
    size_t n_atts;
};

/* Split a JSON object into metadata and body. Accepts _id, _rev, _deleted, _revisions,
 * _attachments (stubs, or inline base64 "data"); other "_" keys are rejected (CouchDB's
 * doc_validation), except those CouchDB ignores on input (_conflicts, _deleted_conflicts,
 * _local_seq, _revs_info). id_from_url (may be NULL) wins over _id and must agree with it.
 * On success *d must be released with br_json_doc_fini. */
BR_NODISCARD br_err br_json_doc_parse(const json_t *obj, const char *id_from_url,
                                      struct br_json_doc *d, struct br_errbuf *eb);
void br_json_doc_fini(struct br_json_doc *d);

/* br_json_parse(text, len, max) then br_json_doc_parse, with the same result to the byte (body,
 * metadata, error code and message) but without building a jansson tree for the body: the
 * body's canonical CBOR is written while the text is read, which is several times faster. Use
 * it wherever a document arrives as JSON text. On error *d is left empty (fini is a no-op). */
BR_NODISCARD br_err br_json_doc_parse_text(const char *text, size_t len, size_t max,
                                           const char *id_from_url, struct br_json_doc *d,
                                           struct br_errbuf *eb);

/* Render a read document as CouchDB JSON: _id, _rev, body fields, _deleted, _attachments
 * (stubs), _revisions, _conflicts, _deleted_conflicts as present in d. */
BR_NODISCARD br_err br_json_doc_render(const struct br_doc *d, json_t **out, struct br_errbuf *eb);

/* Append to out the compact JSON text of d: the same bytes as json_dumps(JSON_COMPACT) of
 * br_json_doc_render's tree, with the same errors, but written straight from the CBOR body
 * without building the tree (several times faster; the rare document whose tree would differ
 * from a straight walk is rendered through the tree). On error out is as it was. */
BR_NODISCARD br_err br_json_doc_write(const struct br_doc *d, br_buf *out, struct br_errbuf *eb);

/* Append s (n bytes) to out as a JSON string, escaped as jansson's compact dump does ('"', '\\'
 * and control characters only). BR_EINVAL (out untouched) if s is not valid UTF-8. */
BR_NODISCARD br_err br_json_write_string(br_buf *out, const char *s, size_t n);

#endif
