/* query.h — barrel's query language and CouchDB Mango selectors, compiled to one condition tree
 * and evaluated against canonical CBOR document bodies (DESIGN.md "Paths, queries,
 * subscriptions"; BEHAVIOURS.md QRY).
 *
 * JSON form (barrel's own):
 *   {"where": [COND, ...],            implicit AND; required unless id_prefix / id_range
 *    "order_by": [{"path": P, "dir": "asc"|"desc"}], "limit": N, "offset": N,
 *    "include_docs": bool, "id_prefix": "user:", "id_range": [start|null, end|null],
 *    "fields": ["a", "b.c"], "bookmark": "..."}
 *   COND: {"path": P, "op": OP, "value": V}   OP: == != < <= > >= in nin contains prefix regex
 *         {"path": P, "op": "exists"|"missing"}
 *         {"and": [COND...]} | {"or": [COND...]} | {"not": COND}
 *         {"path": P, "elem_match": COND}  (Mango $elemMatch; inside, P [] is the element)
 *   P: ["org", "id"] or "org/id". Top-level "_" keys are not queryable (QRY-35).
 * Semantics: a path through an array reaches every element (membership: {"path":["tags"],
 * "value":"x"} is true when tags holds "x", QRY-37). A condition is true when some value at the
 * path satisfies it; comparisons never cross types (numbers with numbers — int and float mix —
 * strings with strings bytewise, booleans and null only by equality). A missing path makes
 * every comparison false, `!=` included. `!=` is true when the path exists and no value
 * equals. Regex: PCRE2, unanchored, pattern at most 1 KiB, matching bounded by PCRE2 match and
 * depth limits (a regex that hits them is false, counted, never slow).
 * Caps: nesting depth 32, `in` lists 1,000 values, 256 conditions: BR_EINVAL naming the cap. */
#ifndef BARREL_QUERY_H
#define BARREL_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "barrel/err.h"
#include "barrel/paths.h"

#define BR_QUERY_MAX_DEPTH 32
#define BR_QUERY_MAX_IN 1000
#define BR_QUERY_MAX_CONDS 256
#define BR_QUERY_REGEX_MAX 1024

enum br_qop {
    BR_Q_TRUE, /* matches everything (empty where) */
    BR_Q_EQ, BR_Q_NE, BR_Q_LT, BR_Q_LE, BR_Q_GT, BR_Q_GE,
    BR_Q_IN, BR_Q_NIN, BR_Q_CONTAINS, BR_Q_EXISTS, BR_Q_MISSING, BR_Q_PREFIX, BR_Q_REGEX,
    BR_Q_AND, BR_Q_OR, BR_Q_NOT,
    BR_Q_ELEM_MATCH, /* Mango $elemMatch: some element of the array at path matches kids[0] */
};

/* A scalar operand (strings are owned by the query). */
struct br_qval {
    enum br_pv_type type;
    int64_t i;
    double f;
    char *s;
    size_t s_len;
};

/* One node of the condition tree. Paths are the joined keys ("org/id"), as in paths.h, so a
 * condition on a scalar path can be answered from the path index. */
struct br_qnode {
    enum br_qop op;
    char *path; /* NULL for AND/OR/NOT/TRUE; for ELEM_MATCH the array's path */
    size_t path_len;
    struct br_qval val;   /* comparison operand, prefix, or regex source */
    struct br_qval *vals; /* IN / NIN */
    size_t n_vals;
    struct br_qnode *kids; /* AND/OR: n_kids children; NOT/ELEM_MATCH: one */
    size_t n_kids;
    void *re; /* compiled regex (private to query.c) */
};

struct br_qorder {
    char *path;
    size_t path_len;
    bool desc;
};

typedef struct br_query {
    struct br_qnode root;
    struct br_qorder *order;
    size_t n_order;
    uint64_t limit; /* 0: none */
    uint64_t offset;
    bool include_docs;       /* default true for barrel queries, Mango returns docs always */
    char *id_prefix;         /* or NULL */
    char *id_start, *id_end; /* id_range [start, end); either may be NULL (open) */
    char **fields;           /* Mango projection (top-level or dotted paths); NULL: all */
    size_t n_fields;
    char *bookmark;          /* Mango bookmark / barrel continuation, opaque, or NULL */
} br_query;

/* Compile barrel's JSON form. BR_EINVAL with a reason naming the problem (unknown operator,
 * wrong type, missing where, a cap exceeded, a bad regex, id scan combined with where). */
BR_NODISCARD br_err br_query_compile(const json_t *spec, br_query **out, struct br_errbuf *eb);
/* Compile a Mango _find body ({"selector":..., "fields", "sort", "limit", "skip",
 * "bookmark"}). Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $and $or $not $nor
 * $regex $elemMatch $all $beginsWith; implicit equality and nested objects; dotted field names.
 * Anything else ($size, $mod, $type, $allMatch, $keyMapMatch, $text, unknown) is BR_EINVAL
 * naming it. */
BR_NODISCARD br_err br_query_from_mango(const json_t *find, br_query **out,
                                        struct br_errbuf *eb);
void br_query_free(br_query *q); /* NULL is a no-op */

/* Evaluate the where tree against a document body (canonical CBOR map). A malformed body does
 * not match. Thread: any (a compiled query is read-only while evaluated; regex match data is
 * allocated per call). */
bool br_query_match(const br_query *q, const uint8_t *body, size_t len);
bool br_qnode_match(const struct br_qnode *n, const uint8_t *body, size_t len);

/* The patterns a query touches ("type/#", "total/#"; "#" if it touches everything): what a
 * query subscription registers in a pattern trie to skip documents it cannot match (SUB-25).
 * *out: n strings in one allocation (caller br_free's *out); n is 0 when nothing can match. */
BR_NODISCARD br_err br_query_patterns(const br_query *q, char ***out, size_t *n);

/* Render the condition tree as JSON (for explain and tests). */
BR_NODISCARD br_err br_query_to_json(const br_query *q, json_t **out);

#endif
