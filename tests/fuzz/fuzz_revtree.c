/* fuzz_revtree.c — libFuzzer harness for the revision tree's storage decoder, and for merge and
 * prune driven by the same bytes. Decode; if that succeeds the tree must satisfy every
 * invariant, re-encode to exactly the input bytes (the decoder accepts only the canonical
 * form), and decode again to the same nodes, winner and leaves. Then a newest-first path built
 * from the input (partly from the decoded tree's own history, so grafting is exercised) is
 * merged, which must keep the invariants and be idempotent; then the tree is pruned, which must
 * keep the winner, the leaves and the conflicts. Any violation aborts. Built with
 * -fsanitize=fuzzer,address,undefined, or linked with replay_main.c to replay the corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/revtree.h"

#define MAX_PATH 16

static void require(bool ok)
{
    if (!ok)
        abort();
}

static void check_tree(const br_revtree *t)
{
    bool *has_child = calloc((size_t)t->n + 1, sizeof *has_child);
    require(has_child != NULL);
    for (uint32_t i = 0; i < t->n; i++) {
        const struct br_revtree_node *nd = &t->nodes[i];
        require(nd->rev.gen >= 1 && nd->rev.gen <= BR_REV_GEN_MAX);
        require(nd->rev.hash_len >= 1 && nd->rev.hash_len <= BR_REV_HASH_MAX);
        require(strlen(nd->rev.hash) == nd->rev.hash_len);
        if (nd->parent != BR_REVTREE_NONE) {
            require(nd->parent < i);
            require(nd->rev.gen == t->nodes[nd->parent].rev.gen + 1);
            has_child[nd->parent] = true;
        }
        /* find must return the node itself (so revisions are unique) */
        require(br_revtree_find(t, &nd->rev) == i);
    }
    for (uint32_t i = 0; i < t->n; i++)
        require(t->nodes[i].leaf == !has_child[i]);
    free(has_child);
}

/* Winner, then leaves in order, must match between two trees with equal revisions. */
static void same_outcome(const br_revtree *a, const br_revtree *b)
{
    uint32_t *la = NULL, *lb = NULL, na = 0, nb = 0;
    uint32_t wa = br_revtree_winner(a), wb = br_revtree_winner(b);
    require((wa == BR_REVTREE_NONE) == (wb == BR_REVTREE_NONE));
    if (wa != BR_REVTREE_NONE)
        require(br_rev_eq(&a->nodes[wa].rev, &b->nodes[wb].rev));
    require(br_revtree_conflict_count(a) == br_revtree_conflict_count(b));
    require(br_revtree_leaves(a, &la, &na) == BR_OK);
    require(br_revtree_leaves(b, &lb, &nb) == BR_OK);
    require(na == nb);
    require(na == 0 || la[0] == wa);
    for (uint32_t i = 0; i < na; i++) {
        require(br_rev_eq(&a->nodes[la[i]].rev, &b->nodes[lb[i]].rev));
        require(a->nodes[la[i]].deleted == b->nodes[lb[i]].deleted);
    }
    br_free(la);
    br_free(lb);
}

static void round_trip(const br_revtree *t, const uint8_t *expect, size_t expect_len)
{
    br_buf b;
    br_revtree u;
    br_buf_init(&b, 0);
    br_revtree_init(&u);
    require(br_revtree_encode(t, &b) == BR_OK);
    if (expect)
        require(b.len == expect_len && memcmp(b.data, expect, expect_len) == 0);
    require(br_revtree_decode(b.data, b.len, &u) == BR_OK);
    check_tree(&u);
    require(u.n == t->n);
    for (uint32_t i = 0; i < t->n; i++) {
        require(br_rev_eq(&u.nodes[i].rev, &t->nodes[i].rev));
        require(u.nodes[i].parent == t->nodes[i].parent);
        require(u.nodes[i].deleted == t->nodes[i].deleted);
    }
    same_outcome(t, &u);
    br_revtree_fini(&u);
    br_buf_fini(&b);
}

struct cursor {
    const uint8_t *p;
    size_t n;
};

static uint8_t take(struct cursor *c)
{
    if (c->n == 0)
        return 0;
    c->n--;
    return *c->p++;
}

/* A revision of generation gen whose hash is 1..4 hex digits drawn from the input. */
static void make_rev(struct cursor *c, uint64_t gen, struct br_rev *r)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t len = (uint8_t)(take(c) % 4 + 1);
    r->gen = gen;
    r->hash_len = len;
    for (uint8_t i = 0; i < len; i++)
        r->hash[i] = hex[take(c) & 0xf];
    r->hash[len] = '\0';
}

/* A newest-first path: fresh revisions on top of (part of) an existing node's history, or a
 * free-standing run of revisions. Returns its length. */
static size_t make_path(struct cursor *c, const br_revtree *t, struct br_rev *path)
{
    size_t fresh = take(c) % 4, n = 0;
    uint8_t sel = take(c);
    struct br_rev *hist = NULL;
    uint32_t hn = 0;
    if (t->n > 0 && (sel & 1)) {
        uint32_t at = (uint32_t)(((size_t)take(c) << 8 | take(c)) % t->n);
        uint32_t depth = (uint32_t)(take(c) % (MAX_PATH - 4) + 1);
        if (br_revtree_history(t, &t->nodes[at].rev, depth, &hist, &hn) != BR_OK)
            return 0;
        if (hist[0].gen > BR_REV_GEN_MAX - fresh)
            fresh = 0;
        for (size_t k = 0; k < fresh; k++)
            make_rev(c, hist[0].gen + fresh - k, &path[n++]);
        for (uint32_t k = 0; k < hn; k++)
            path[n++] = hist[k];
        br_free(hist);
    } else {
        uint64_t top = (uint64_t)take(c) % 40 + 1;
        size_t len = take(c) % 6 + 1;
        if (len > top)
            len = (size_t)top;
        for (size_t k = 0; k < len; k++)
            make_rev(c, top - k, &path[n++]);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    br_revtree t;
    struct br_rev path[MAX_PATH];
    struct cursor c = {data, size};
    uint32_t added = 0;

    br_revtree_init(&t);
    if (br_revtree_decode(data, size, &t) == BR_OK) {
        check_tree(&t);
        round_trip(&t, data, size);
    } else {
        require(t.n == 0 && t.nodes == NULL);
    }

    /* merge twice: the second time is a no-op */
    for (int round = 0; round < 3; round++) {
        size_t n = make_path(&c, &t, path);
        if (n == 0)
            break;
        bool deleted = take(&c) & 1;
        uint32_t before = t.n;
        br_err e = br_revtree_merge(&t, path, n, deleted, &added);
        require(e == BR_OK || e == BR_EBADREV);
        if (e != BR_OK) {
            require(t.n == before);
            continue;
        }
        require(t.n == before + added);
        require(br_revtree_contains(&t, &path[0]));
        check_tree(&t);
        uint32_t after = t.n;
        require(br_revtree_merge(&t, path, n, !deleted, &added) == BR_OK);
        require(added == 0 && t.n == after);
    }
    check_tree(&t);
    round_trip(&t, NULL, 0);

    /* prune keeps the winner, the leaves and the conflicts */
    if (t.n > 0) {
        br_revtree copy;
        br_buf b;
        uint32_t removed = 0, depth = take(&c) % 8;
        br_buf_init(&b, 0);
        br_revtree_init(&copy);
        require(br_revtree_encode(&t, &b) == BR_OK);
        require(br_revtree_decode(b.data, b.len, &copy) == BR_OK);
        require(br_revtree_prune(&t, depth, &removed) == BR_OK);
        require(t.n + removed == copy.n);
        check_tree(&t);
        same_outcome(&t, &copy);
        round_trip(&t, NULL, 0);
        br_revtree_fini(&copy);
        br_buf_fini(&b);
    }
    br_revtree_fini(&t);
    return 0;
}
