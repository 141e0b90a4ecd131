/* paths.h — the paths of a document and MQTT-style patterns over them (DESIGN.md "Paths,
 * queries, subscriptions"; BEHAVIOURS.md Decisions §5 and SUB-01..23).
 *
 * A document's paths are its field paths ending in a scalar: {"type":"user","org":{"id":"acme"}}
 * gives type/user and org/id/acme. Arrays are indexed by membership ({"tags":["a","b"]} gives
 * tags/a and tags/b; objects in arrays give items/sku/42), strings longer than 100 bytes are cut
 * to 100, top-level keys starting with "_" are never paths. A topic is the path joined with '/'
 * with the value last: integers in decimal, floats in shortest round-trip form, true, false,
 * null. Keys containing '/' make topics ambiguous; there is no escaping (as upstream).
 *
 * Patterns use MQTT syntax: '+' matches one segment, '#' (last segment only) matches zero or
 * more trailing segments, so `a/#` matches `a` too; wildcards occupy whole segments; a leading
 * wildcard never matches a first segment starting with '$'. Matching many patterns against a
 * topic goes through a trie (as MQTT brokers do), not one pattern at a time. */
#ifndef BARREL_PATHS_H
#define BARREL_PATHS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/err.h"

#define BR_PATH_STRING_CUT 100
#define BR_PATTERN_MAX 4096
#define BR_PATH_MAX_DEPTH 64

enum br_pv_type { BR_PV_NULL, BR_PV_FALSE, BR_PV_TRUE, BR_PV_INT, BR_PV_FLOAT, BR_PV_STRING };

/* One path of a document: the joined keys and the scalar at the end. Borrowed: valid during
 * the callback only. */
struct br_path_value {
    const char *keys; /* "org/id" (no value); empty only for the top-level key "" */
    size_t keys_len;
    enum br_pv_type type;
    int64_t i;        /* BR_PV_INT (CBOR uints above INT64_MAX are reported as floats) */
    double f;         /* BR_PV_FLOAT */
    const char *s;    /* BR_PV_STRING, cut to BR_PATH_STRING_CUT bytes */
    size_t s_len;
};

/* Calls cb for every path of a canonical CBOR document body, in document order (duplicates, e.g.
 * an array holding the same value twice, are reported once). cb returns nonzero to stop.
 * BR_EPROTO on malformed bodies, BR_ENOMEM; paths before the fault may already have been
 * reported. Thread: any. */
typedef int (*br_paths_cb)(void *arg, const struct br_path_value *pv);
BR_NODISCARD br_err br_paths_foreach(const uint8_t *body, size_t len, br_paths_cb cb, void *arg);
/* Append the topic of pv ("org/id/acme") to out; out is unchanged on error. A float always
 * shows a '.' or an exponent ("3.0", "1e+21"), so it never reads as an integer topic. */
BR_NODISCARD br_err br_path_topic(const struct br_path_value *pv, br_buf *out);

/* All topics of a body, sorted and unique, as one allocation: *out is an array of n pointers
 * into the same block (caller frees *out with br_free; NULL when n is 0). Used for diffs
 * (SUB-08). */
BR_NODISCARD br_err br_paths_topics(const uint8_t *body, size_t len, char ***out, size_t *n);

/* SUB-10: a valid pattern is 1..BR_PATTERN_MAX bytes, no NUL, '#' only as the whole last
 * segment, '+' only as a whole segment. BR_EINVAL with a reason otherwise. */
BR_NODISCARD br_err br_pattern_check(const char *p, size_t len, struct br_errbuf *eb);
/* Does one pattern match one topic? (The pattern must be valid.) */
bool br_pattern_match(const char *p, size_t plen, const char *topic, size_t tlen);

/* A set of (pattern, value) pairs matched against topics in one walk. Not thread-safe. */
typedef struct br_pattern_trie br_pattern_trie;
BR_NODISCARD br_err br_pattern_trie_new(br_pattern_trie **out);
void br_pattern_trie_free(br_pattern_trie *t); /* NULL is a no-op */
/* Add (pattern, value); the same pattern may hold many values, and a pair added twice is held
 * (and reported, and must be removed) twice. BR_EINVAL for a bad pattern. */
BR_NODISCARD br_err br_pattern_trie_add(br_pattern_trie *t, const char *p, size_t len,
                                        void *value);
/* Remove one (pattern, value) pair; BR_ENOTFOUND if absent, BR_EINVAL for a bad pattern. */
BR_NODISCARD br_err br_pattern_trie_remove(br_pattern_trie *t, const char *p, size_t len,
                                           void *value);
size_t br_pattern_trie_size(const br_pattern_trie *t); /* number of pairs */
/* Call cb(arg, value) once for every pair whose pattern matches topic (a value held under
 * several matching patterns is reported once per pattern; callers dedupe by value). Cost is
 * proportional to the topic's depth and the matches, not to the number of patterns. */
typedef void (*br_trie_cb)(void *arg, void *value);
void br_pattern_trie_match(const br_pattern_trie *t, const char *topic, size_t len,
                           br_trie_cb cb, void *arg);

#endif
