/* revtree.h — a document's revision tree (CouchDB-compatible, BEHAVIOURS.md REV).
 *
 * Nodes are revisions; each has at most one parent; roots have none (a pruned or disconnected
 * history gives several roots). Leaves are nodes without children. The winner is CouchDB's:
 * live leaves beat deleted ones, then higher generation, then the greater hash (REV-24). The
 * conflicts are the live leaves other than the winner; deleted conflicts are the deleted
 * leaves other than the winner. Parent links are never rewritten (the upstream defect).
 *
 * The tree is a plain in-memory value: encode it for storage, decode what you read (decoding
 * treats bytes as untrusted: BR_EPROTO, never a crash). Not thread-safe; one owner. */
#ifndef BARREL_REVTREE_H
#define BARREL_REVTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/err.h"
#include "barrel/rev.h"

#define BR_REVTREE_NONE UINT32_MAX

struct br_revtree_node {
    struct br_rev rev;
    uint32_t parent; /* index of the parent, or BR_REVTREE_NONE for a root */
    bool deleted;
    bool leaf;       /* maintained by the tree */
};

typedef struct br_revtree {
    struct br_revtree_node *nodes; /* parents precede children in this array */
    uint32_t n, cap;
} br_revtree;

void br_revtree_init(br_revtree *t);
void br_revtree_fini(br_revtree *t);

/* Index of rev, or BR_REVTREE_NONE. */
uint32_t br_revtree_find(const br_revtree *t, const struct br_rev *rev);
static inline bool br_revtree_contains(const br_revtree *t, const struct br_rev *rev)
{
    return br_revtree_find(t, rev) != BR_REVTREE_NONE;
}

/* Add rev as a child of parent (NULL: as a root). BR_EEXIST if rev is already there,
 * BR_ENOTFOUND if parent is not, BR_EBADREV if rev.gen != parent.gen + 1. */
BR_NODISCARD br_err br_revtree_add(br_revtree *t, const struct br_rev *rev,
                                   const struct br_rev *parent, bool deleted);

/* Merge a newest-first history path (new_edits=false, RDF-06..09): find the newest entry
 * already present, graft the newer ones below it; if none is present, the oldest becomes a new
 * root. Only path[0] takes `deleted`; intermediate revisions are live. *added (may be NULL)
 * receives how many nodes were added (0: the newest was already there, an idempotent no-op).
 * BR_EBADREV if the path is inconsistent (see br_rev_path_check). */
BR_NODISCARD br_err br_revtree_merge(br_revtree *t, const struct br_rev *path, size_t n,
                                     bool deleted, uint32_t *added);

/* Index of the winning leaf, or BR_REVTREE_NONE for an empty tree. */
uint32_t br_revtree_winner(const br_revtree *t);
/* Indices of all leaves (winner first, then the rest in winner order: live before deleted,
 * higher gen, greater hash). *out is allocated (br_free), *n its length; an empty tree gives
 * NULL, 0. */
BR_NODISCARD br_err br_revtree_leaves(const br_revtree *t, uint32_t **out, uint32_t *n);
/* Number of live leaves other than the winner. */
uint32_t br_revtree_conflict_count(const br_revtree *t);

/* History from rev towards its root, newest first, at most `depth` entries (0 = unlimited).
 * *out allocated (br_free); unknown rev gives BR_ENOTFOUND (REV-28: empty history). */
BR_NODISCARD br_err br_revtree_history(const br_revtree *t, const struct br_rev *rev,
                                       uint32_t depth, struct br_rev **out, uint32_t *n);

/* Keep, for every leaf, the leaf and its ancestors up to `depth` nodes; remove the rest
 * (children of removed nodes become roots). *removed (may be NULL) gets the count. The winner
 * and conflicts are unchanged. depth 0 is treated as 1. */
BR_NODISCARD br_err br_revtree_prune(br_revtree *t, uint32_t depth, uint32_t *removed);

/* Storage form (a compact varint encoding, not a wire format). Appends to out. */
BR_NODISCARD br_err br_revtree_encode(const br_revtree *t, br_buf *out);
/* Decode into an initialised, empty tree. BR_EPROTO on any malformed input. */
BR_NODISCARD br_err br_revtree_decode(const uint8_t *p, size_t n, br_revtree *t);

#endif
