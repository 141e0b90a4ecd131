/* find.h — running a compiled query (query.h) against a database: the planner, explain, and
 * continuation on a consistent snapshot (DESIGN.md "Paths, queries, subscriptions"; QRY).
 *
 * Plans, chosen from the query alone (no statistics):
 *   id_scan     id_prefix or id_range: a key-range scan of the documents;
 *   index_seek  one equality (or `in`) on a path: postings of that (path, value);
 *   multi_index several equalities / `in`s under the top-level AND: their postings intersected;
 *   index_scan  no equality, but a range (< <= > >=) or prefix: a key-range scan of postings;
 *   full_scan   anything else (or, not, !=, regex, exists, ... alone): every live document.
 * Whatever drives the plan, every candidate is then checked against the whole `where` on the
 * live winner's body, so the index only ever narrows. Deleted documents never match.
 *
 * Results come in document id order, or in `order_by` order (values compared within a type;
 * types ordered null < false < true < numbers < strings; documents lacking the path last; ties
 * by id). `offset` then `limit` apply. When `limit` stops a page early, the result carries a
 * continuation token: passing it back (q->bookmark, with the same query) resumes after the
 * last row on the same RocksDB snapshot, so pages never skip or repeat rows whatever is written
 * meanwhile. Snapshots are held by the database for BR_FIND_CURSOR_TTL_MS after their last use
 * (at most BR_FIND_CURSORS at once, the oldest dropped first); a token whose snapshot is gone is
 * BR_EINVAL "bookmark expired", never a silently different answer. */
#ifndef BARREL_FIND_H
#define BARREL_FIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "barrel/err.h"
#include "barrel/query.h"
#include "barrel/rev.h"
#include "barrel/store.h"

#define BR_FIND_CURSOR_TTL_MS 60000
#define BR_FIND_CURSORS 64
#define BR_FIND_TOKEN_MAX 2200 /* bytes of a continuation token, NUL included */

struct br_find_row {
    const char *id;
    size_t id_len;
    struct br_rev rev;   /* the winning revision */
    const uint8_t *body; /* its canonical CBOR body (borrowed: valid during the callback) */
    size_t body_len;
};
/* Return nonzero to stop (the result then has no token). */
typedef int (*br_find_cb)(void *arg, const struct br_find_row *row);

struct br_find_result {
    uint64_t rows;      /* rows delivered */
    uint64_t examined;  /* documents read and checked against `where` */
    uint64_t postings;  /* index postings read */
    bool has_more;      /* limit stopped the page and rows remain: token is set */
    char token[BR_FIND_TOKEN_MAX];
    const char *plan;   /* strategy name (static) */
};

/* Run q on db. BR_EINVAL for a malformed or expired bookmark, or one minted for another query.
 * Thread: any; a query may run while writers write (it reads one snapshot). */
BR_NODISCARD br_err br_db_find(br_db *db, const br_query *q, br_find_cb cb, void *arg,
                               struct br_find_result *res);

/* The plan br_db_find would choose, as JSON: {"plan": NAME, "index": [conditions that drive
 * it], "filter": the where tree, "order_by", "limit", "offset"}. */
BR_NODISCARD br_err br_db_explain(br_db *db, const br_query *q, json_t **out);

#endif
