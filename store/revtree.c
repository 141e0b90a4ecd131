/* revtree.c — a document's revision tree (spec §2.4-2.6, 2.8; BEHAVIOURS.md REV, RDF). Nodes
 * live in one array in which parents precede children; a node stores its parent's index, and
 * the leaf flags are kept up to date by every change. The winner is CouchDB's (REV-24): live
 * leaves beat deleted ones, then the higher generation, then the greater hash. Merging a
 * replicated newest-first path grafts the unknown revisions below the newest known one in a
 * single pass over the tree (the path is consistent, so a node's generation says which path
 * entry it could be), never rewrites a parent link, and changes nothing when the newest is
 * already present. Pruning keeps every node within `depth` of some leaf, in one backward pass.
 *
 * Storage encoding (unsigned LEB128 varints, minimal form, like spec §2.8):
 *   varint node count, then per node in array order:
 *     flags byte: bit0 root, bit1 deleted, other bits zero;
 *     if not root: varint (index - parent index), >= 1;
 *     varint generation (1..2^53-1; a child's is its parent's + 1);
 *     varint number of hex digits of the hash (1..64), then the digits packed two per byte,
 *     high nibble first; for an odd count the last low nibble is zero.
 * Every tree has exactly one encoding, and the decoder, which treats its input as untrusted,
 * accepts only that one (non-minimal varints, stray flag or pad bits, trailing bytes, duplicate
 * revisions and inconsistent generations are all BR_EPROTO). */
#include "barrel/revtree.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/alloc.h"

#define MAX_NODES (BR_REVTREE_NONE - 1)
#define FLAG_ROOT 0x01u
#define FLAG_DELETED 0x02u
#define MIN_NODE_BYTES 4 /* flags, gen, hash length, one byte of hash */

/* A document revision as br_rev_parse makes it (gen >= 1, 1..64 lowercase hex digits). */
static bool rev_valid(const struct br_rev *r)
{
    return br_rev_path_check(r, 1) == BR_OK;
}

void br_revtree_init(br_revtree *t)
{
    t->nodes = NULL;
    t->n = t->cap = 0;
}

void br_revtree_fini(br_revtree *t)
{
    if (!t)
        return;
    br_free(t->nodes);
    br_revtree_init(t);
}

uint32_t br_revtree_find(const br_revtree *t, const struct br_rev *rev)
{
    /* Newest revisions are at the end, and they are the ones most often looked up. */
    for (uint32_t i = t->n; i-- > 0;)
        if (br_rev_eq(&t->nodes[i].rev, rev))
            return i;
    return BR_REVTREE_NONE;
}

/* Make room for `extra` more nodes, all at once, so that a change that fails for memory leaves
 * the tree as it was. */
static br_err reserve(br_revtree *t, size_t extra)
{
    if (extra > MAX_NODES - t->n)
        return BR_ETOOBIG;
    size_t need = t->n + extra;
    if (need <= t->cap)
        return BR_OK;
    size_t ncap = t->cap ? (size_t)t->cap * 2 : 8;
    if (ncap < need)
        ncap = need;
    if (ncap > MAX_NODES)
        ncap = MAX_NODES;
    if (ncap > SIZE_MAX / sizeof *t->nodes)
        return BR_ENOMEM;
    struct br_revtree_node *p = br_realloc(t->nodes, ncap * sizeof *p);
    if (!p)
        return BR_ENOMEM;
    t->nodes = p;
    t->cap = (uint32_t)ncap;
    return BR_OK;
}

/* Append a node; room must have been reserved. */
static void push(br_revtree *t, const struct br_rev *rev, uint32_t parent, bool deleted)
{
    struct br_revtree_node *nd = &t->nodes[t->n];
    memset(nd, 0, sizeof *nd);
    nd->rev.gen = rev->gen;
    nd->rev.hash_len = rev->hash_len;
    memcpy(nd->rev.hash, rev->hash, rev->hash_len);
    nd->rev.hash[rev->hash_len] = '\0';
    nd->parent = parent;
    nd->deleted = deleted;
    nd->leaf = true;
    if (parent != BR_REVTREE_NONE)
        t->nodes[parent].leaf = false;
    t->n++;
}

br_err br_revtree_add(br_revtree *t, const struct br_rev *rev, const struct br_rev *parent,
                      bool deleted)
{
    uint32_t p = BR_REVTREE_NONE;
    if (!rev_valid(rev))
        return BR_EBADREV;
    if (br_revtree_find(t, rev) != BR_REVTREE_NONE)
        return BR_EEXIST;
    if (parent) {
        p = br_revtree_find(t, parent);
        if (p == BR_REVTREE_NONE)
            return BR_ENOTFOUND;
        if (rev->gen != t->nodes[p].rev.gen + 1)
            return BR_EBADREV;
    }
    br_err e = reserve(t, 1);
    if (e)
        return e;
    push(t, rev, p, deleted);
    return BR_OK;
}

br_err br_revtree_merge(br_revtree *t, const struct br_rev *path, size_t n, bool deleted,
                        uint32_t *added)
{
    if (n == 0 || br_rev_path_check(path, n) != BR_OK)
        return BR_EBADREV;
    /* One pass: path[k] has generation path[0].gen - k, so a node can only be the entry of
     * its own generation. Keep the newest (smallest k) entry found. */
    size_t best = n;
    uint32_t at = BR_REVTREE_NONE;
    uint64_t top = path[0].gen;
    for (uint32_t i = t->n; i-- > 0 && best > 0;) {
        const struct br_rev *r = &t->nodes[i].rev;
        if (r->gen > top || top - r->gen >= best)
            continue;
        size_t k = (size_t)(top - r->gen);
        if (br_rev_eq(r, &path[k])) {
            best = k;
            at = i;
        }
    }
    if (best == 0) {
        if (added)
            *added = 0;
        return BR_OK; /* RDF-09: already there */
    }
    size_t from = best == n ? n - 1 : best - 1; /* oldest entry to add */
    br_err e = reserve(t, from + 1);
    if (e)
        return e;
    uint32_t parent = best == n ? BR_REVTREE_NONE : at;
    for (size_t k = from + 1; k-- > 0;) {
        push(t, &path[k], parent, k == 0 ? deleted : false);
        parent = t->n - 1;
    }
    if (added)
        *added = (uint32_t)(from + 1);
    return BR_OK;
}

/* > 0 if leaf a wins over leaf b: live before deleted, then higher gen, then greater hash. */
static int leaf_order(const struct br_revtree_node *a, const struct br_revtree_node *b)
{
    if (a->deleted != b->deleted)
        return a->deleted ? -1 : 1;
    return br_rev_cmp(&a->rev, &b->rev);
}

uint32_t br_revtree_winner(const br_revtree *t)
{
    uint32_t w = BR_REVTREE_NONE;
    for (uint32_t i = 0; i < t->n; i++) {
        if (!t->nodes[i].leaf)
            continue;
        if (w == BR_REVTREE_NONE || leaf_order(&t->nodes[i], &t->nodes[w]) > 0)
            w = i;
    }
    return w;
}

static int leaf_sort_cmp(const void *pa, const void *pb)
{
    const struct br_revtree_node *a = *(const struct br_revtree_node *const *)pa;
    const struct br_revtree_node *b = *(const struct br_revtree_node *const *)pb;
    return -leaf_order(a, b); /* best first */
}

br_err br_revtree_leaves(const br_revtree *t, uint32_t **out, uint32_t *n)
{
    br_err e = BR_OK;
    const struct br_revtree_node **tmp = NULL;
    uint32_t *idx = NULL, count = 0;

    for (uint32_t i = 0; i < t->n; i++)
        count += t->nodes[i].leaf;
    if (count == 0) {
        *out = NULL;
        *n = 0;
        return BR_OK;
    }
    tmp = br_calloc(count, sizeof *tmp);
    idx = br_calloc(count, sizeof *idx);
    if (!tmp || !idx) {
        e = BR_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0, j = 0; i < t->n; i++)
        if (t->nodes[i].leaf)
            tmp[j++] = &t->nodes[i];
    qsort(tmp, count, sizeof *tmp, leaf_sort_cmp);
    for (uint32_t j = 0; j < count; j++)
        idx[j] = (uint32_t)(tmp[j] - t->nodes);
    *out = idx;
    *n = count;
    idx = NULL;
out:
    br_free(idx);
    br_free(tmp);
    return e;
}

uint32_t br_revtree_conflict_count(const br_revtree *t)
{
    uint32_t w = br_revtree_winner(t), count = 0;
    if (w == BR_REVTREE_NONE || t->nodes[w].deleted)
        return 0; /* every leaf is deleted: nothing live to conflict with */
    for (uint32_t i = 0; i < t->n; i++)
        if (t->nodes[i].leaf && !t->nodes[i].deleted && i != w)
            count++;
    return count;
}

br_err br_revtree_history(const br_revtree *t, const struct br_rev *rev, uint32_t depth,
                          struct br_rev **out, uint32_t *n)
{
    uint32_t at = br_revtree_find(t, rev), len = 0;
    if (at == BR_REVTREE_NONE)
        return BR_ENOTFOUND;
    for (uint32_t i = at; i != BR_REVTREE_NONE && (depth == 0 || len < depth);
         i = t->nodes[i].parent)
        len++;
    struct br_rev *h = br_calloc(len, sizeof *h);
    if (!h)
        return BR_ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = at; k < len; i = t->nodes[i].parent)
        h[k++] = t->nodes[i].rev;
    *out = h;
    *n = len;
    return BR_OK;
}

br_err br_revtree_prune(br_revtree *t, uint32_t depth, uint32_t *removed)
{
    uint32_t *dist, kept = 0;
    if (depth == 0)
        depth = 1;
    /* A node is at most n - 1 edges above its nearest leaf, so a tree of at most `depth` nodes
     * keeps everything: the common case (revs_limit 1000), answered without allocating. */
    if (t->n <= depth) {
        if (removed)
            *removed = 0;
        return BR_OK;
    }
    dist = br_calloc(t->n, sizeof *dist);
    if (!dist)
        return BR_ENOMEM;
    /* dist[i] = distance from node i down to its nearest leaf; children come after parents,
     * so a backward pass sees every child before its parent. */
    for (uint32_t i = 0; i < t->n; i++)
        dist[i] = t->nodes[i].leaf ? 0 : BR_REVTREE_NONE;
    for (uint32_t i = t->n; i-- > 0;) {
        uint32_t p = t->nodes[i].parent;
        if (p != BR_REVTREE_NONE && dist[i] != BR_REVTREE_NONE && dist[i] + 1 < dist[p])
            dist[p] = dist[i] + 1;
    }
    /* Keep the nodes within depth of a leaf; dist[] becomes the old -> new index map. Parents
     * precede children, so a parent's new index is known when its child is moved. */
    for (uint32_t i = 0; i < t->n; i++) {
        if (dist[i] >= depth) {
            dist[i] = BR_REVTREE_NONE;
            continue;
        }
        struct br_revtree_node nd = t->nodes[i];
        nd.parent = nd.parent == BR_REVTREE_NONE ? BR_REVTREE_NONE : dist[nd.parent];
        t->nodes[kept] = nd;
        dist[i] = kept++;
    }
    if (removed)
        *removed = t->n - kept;
    t->n = kept;
    br_free(dist);
    return BR_OK;
}

/* ---- storage encoding ---- */

static size_t varint_put(uint8_t out[10], uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* The value of a lowercase hex digit (rev_valid checked it): one load per digit, since every
 * revision of a document is packed at each write of it. */
static const uint8_t HEX_VAL[256] = {
    ['0'] = 0, ['1'] = 1, ['2'] = 2,  ['3'] = 3,  ['4'] = 4,  ['5'] = 5,  ['6'] = 6,  ['7'] = 7,
    ['8'] = 8, ['9'] = 9, ['a'] = 10, ['b'] = 11, ['c'] = 12, ['d'] = 13, ['e'] = 14, ['f'] = 15,
};

static unsigned hex_val(char c)
{
    return HEX_VAL[(unsigned char)c];
}

br_err br_revtree_encode(const br_revtree *t, br_buf *out)
{
    br_err e = BR_OK;
    size_t start = out->len;
    uint8_t tmp[10 + 1 + 10 + 10 + 1 + BR_REV_HASH_MAX / 2];
    size_t k = varint_put(tmp, t->n);

    e = br_buf_append(out, tmp, k);
    for (uint32_t i = 0; !e && i < t->n; i++) {
        const struct br_revtree_node *nd = &t->nodes[i];
        if (!rev_valid(&nd->rev) ||
            (nd->parent != BR_REVTREE_NONE &&
             (nd->parent >= i || nd->rev.gen != t->nodes[nd->parent].rev.gen + 1))) {
            e = BR_EINVAL;
            break;
        }
        k = 0;
        tmp[k++] = (uint8_t)((nd->parent == BR_REVTREE_NONE ? FLAG_ROOT : 0) |
                             (nd->deleted ? FLAG_DELETED : 0));
        if (nd->parent != BR_REVTREE_NONE)
            k += varint_put(tmp + k, i - nd->parent);
        k += varint_put(tmp + k, nd->rev.gen);
        k += varint_put(tmp + k, nd->rev.hash_len);
        const char *h = nd->rev.hash;
        size_t j = 0;
        for (; j + 1 < nd->rev.hash_len; j += 2)
            tmp[k++] = (uint8_t)(hex_val(h[j]) << 4 | hex_val(h[j + 1]));
        if (j < nd->rev.hash_len) /* an odd count: the last low nibble is zero */
            tmp[k++] = (uint8_t)(hex_val(h[j]) << 4);
        e = br_buf_append(out, tmp, k);
    }
    if (e) {
        out->len = start;
        if (out->data)
            out->data[start] = 0;
    }
    return e;
}

struct reader {
    const uint8_t *p, *end;
};

/* A minimal-form LEB128 varint no greater than max. */
static br_err varint_get(struct reader *r, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return BR_EPROTO;
        uint8_t b = *r->p++;
        uint64_t bits = b & 0x7fu;
        if (shift == 63 && bits > 1)
            return BR_EPROTO; /* past 64 bits */
        v |= bits << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift > 0)
                return BR_EPROTO; /* non-minimal */
            if (v > max)
                return BR_EPROTO;
            *out = v;
            return BR_OK;
        }
    }
    return BR_EPROTO;
}

static int node_ptr_cmp(const void *pa, const void *pb)
{
    const struct br_revtree_node *a = *(const struct br_revtree_node *const *)pa;
    const struct br_revtree_node *b = *(const struct br_revtree_node *const *)pb;
    return br_rev_cmp(&a->rev, &b->rev);
}

/* BR_EPROTO if two nodes carry the same revision (sorts a scratch array: O(n log n)). */
static br_err check_unique(const br_revtree *t)
{
    const struct br_revtree_node **s;
    br_err e = BR_OK;
    if (t->n < 2)
        return BR_OK;
    s = br_calloc(t->n, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    for (uint32_t i = 0; i < t->n; i++)
        s[i] = &t->nodes[i];
    qsort(s, t->n, sizeof *s, node_ptr_cmp);
    for (uint32_t i = 1; i < t->n; i++) {
        if (br_rev_eq(&s[i - 1]->rev, &s[i]->rev)) {
            e = BR_EPROTO;
            break;
        }
    }
    br_free(s);
    return e;
}

static const char hex_digits[] = "0123456789abcdef";

br_err br_revtree_decode(const uint8_t *p, size_t n, br_revtree *t)
{
    br_err e = BR_OK;
    struct reader r;
    br_revtree tmp;
    uint64_t count, v;

    br_revtree_init(&tmp);
    if (t->n != 0)
        return BR_EINVAL;
    if (!p)
        return BR_EPROTO;
    r.p = p;
    r.end = p + n;
    e = varint_get(&r, MAX_NODES, &count);
    if (e)
        goto out;
    if (count > (size_t)(r.end - r.p) / MIN_NODE_BYTES) {
        e = BR_EPROTO;
        goto out;
    }
    e = reserve(&tmp, (size_t)count);
    if (e)
        goto out;
    for (uint32_t i = 0; i < count; i++) {
        struct br_rev rev;
        uint32_t parent = BR_REVTREE_NONE;
        if (r.p >= r.end) {
            e = BR_EPROTO;
            goto out;
        }
        uint8_t flags = *r.p++;
        if (flags & ~(FLAG_ROOT | FLAG_DELETED)) {
            e = BR_EPROTO;
            goto out;
        }
        if (!(flags & FLAG_ROOT)) {
            e = varint_get(&r, i, &v);
            if (e || v == 0) {
                e = BR_EPROTO;
                goto out;
            }
            parent = i - (uint32_t)v;
        }
        e = varint_get(&r, BR_REV_GEN_MAX, &rev.gen);
        if (e || rev.gen == 0 ||
            (parent != BR_REVTREE_NONE && rev.gen != tmp.nodes[parent].rev.gen + 1)) {
            e = BR_EPROTO;
            goto out;
        }
        e = varint_get(&r, BR_REV_HASH_MAX, &v);
        if (e || v == 0 || (size_t)(r.end - r.p) < (v + 1) / 2) {
            e = BR_EPROTO;
            goto out;
        }
        rev.hash_len = (uint8_t)v;
        for (size_t j = 0; j < v; j += 2) {
            uint8_t b = *r.p++;
            rev.hash[j] = hex_digits[b >> 4];
            if (j + 1 < v)
                rev.hash[j + 1] = hex_digits[b & 0xf];
            else if (b & 0xf) {
                e = BR_EPROTO; /* pad nibble must be zero */
                goto out;
            }
        }
        rev.hash[v] = '\0';
        push(&tmp, &rev, parent, (flags & FLAG_DELETED) != 0);
    }
    if (r.p != r.end) {
        e = BR_EPROTO;
        goto out;
    }
    e = check_unique(&tmp);
    if (e)
        goto out;
    *t = tmp;
    br_revtree_init(&tmp);
out:
    br_revtree_fini(&tmp);
    return e;
}
