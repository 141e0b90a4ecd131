/* rev.h — revision ids "N-H" and the revision hash (BEHAVIOURS.md Decisions §2).
 *
 * N is the generation (>= 1, at most 2^53-1 so JavaScript peers read it exactly), H is 1..64
 * lowercase hex digits. Revisions barrel makes have H = 32 hex digits of BLAKE2b-128 over the
 * deterministic CBOR of [parent_rev or "", deleted, body, sorted attachment digests]. Revisions
 * from peers (PouchDB, CouchDB) are opaque "N-hex" strings. Local documents use "0-N". */
#ifndef BARREL_REV_H
#define BARREL_REV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

#define BR_REV_HASH_MAX 64
#define BR_REV_TEXT_MAX 96 /* 16 digits + '-' + 64 hex + NUL, with room */
#define BR_REV_GEN_MAX 9007199254740991ull

struct br_rev {
    uint64_t gen;
    uint8_t hash_len;                 /* number of hex digits in hash */
    char hash[BR_REV_HASH_MAX + 1];   /* lowercase hex, NUL-terminated */
};

/* Parse "N-hex". BR_EBADREV for anything else (no dash, N = 0 or out of range, leading zeros,
 * uppercase or non-hex digits, empty or too long hash). */
BR_NODISCARD br_err br_rev_parse(const char *s, size_t len, struct br_rev *out);
/* Parse a local document revision "0-N" (N decimal, 1..2^53-1) into {gen 0, hash "N"}. */
BR_NODISCARD br_err br_rev_parse_local(const char *s, size_t len, struct br_rev *out);
/* Writes "N-hex" (or "0-N" for a local revision) and a NUL into out; returns the length. */
size_t br_rev_format(const struct br_rev *r, char out[BR_REV_TEXT_MAX]);
/* Order of REV-07: generation, then hash string bytewise, then length. */
int br_rev_cmp(const struct br_rev *a, const struct br_rev *b);
bool br_rev_eq(const struct br_rev *a, const struct br_rev *b);

/* The revision barrel makes for an edit: gen = parent gen + 1 (1 without parent), hash as in
 * Decisions §2. `body` is the canonical CBOR map of the document body (no "_" keys);
 * `att_digests` are the attachments' digests as text ("md5-..."), in any order (they are sorted
 * here). Thread: any. */
BR_NODISCARD br_err br_rev_make(const struct br_rev *parent, bool deleted, const uint8_t *body,
                                size_t body_len, const char *const *att_digests, size_t n_atts,
                                struct br_rev *out);

/* CouchDB's _revisions: {start: gen of revs[0], ids: [hash...]} for a newest-first path.
 * br_rev_path_check verifies that revs[i].gen == revs[0].gen - i for every i (a consistent
 * history); BR_EBADREV otherwise. */
BR_NODISCARD br_err br_rev_path_check(const struct br_rev *revs, size_t n);

/* 32 lowercase hex chars from 16 random bytes of env (REV-12 document ids). out gets NUL. */
struct br_env;
void br_rev_gen_docid(const struct br_env *env, char out[33]);

#endif
