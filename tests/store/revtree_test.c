/* revtree_test.c — the revision tree: building, winner and conflicts, history, pruning, merging
 * replicated paths, the storage encoding and its decoder on hostile input, and allocation
 * torture (BEHAVIOURS.md REV-13..REV-38 at tree level, RDF-06..RDF-09). Hashes in the tests are
 * short hex strings; the tree does not care how long they are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/revtree.h"

/* ---- helpers ---- */

static struct br_rev rev_of(const char *s)
{
    struct br_rev r;
    cr_assert_eq(br_rev_parse(s, strlen(s), &r), BR_OK, "parse '%s'", s);
    return r;
}

/* gen-hash where hash is tag in hex followed by the gen, e.g. grev(7, 0xb) = "7-b0007". */
static struct br_rev grev(uint64_t gen, unsigned tag)
{
    char s[64];
    snprintf(s, sizeof s, "%llu-%x%04llx", (unsigned long long)gen, tag, (unsigned long long)gen);
    return rev_of(s);
}

static void add(br_revtree *t, const char *rev, const char *parent, bool deleted)
{
    struct br_rev r = rev_of(rev), p;
    if (parent)
        p = rev_of(parent);
    cr_assert_eq(br_revtree_add(t, &r, parent ? &p : NULL, deleted), BR_OK, "add %s", rev);
}

/* n-long chain 1..n with tag; returns nothing, asserts. */
static void chain(br_revtree *t, uint64_t n, unsigned tag)
{
    for (uint64_t g = 1; g <= n; g++) {
        struct br_rev r = grev(g, tag), p;
        if (g > 1)
            p = grev(g - 1, tag);
        cr_assert_eq(br_revtree_add(t, &r, g > 1 ? &p : NULL, false), BR_OK);
    }
}

static const char *text(const br_revtree *t, uint32_t i, char buf[BR_REV_TEXT_MAX])
{
    if (i == BR_REVTREE_NONE)
        return "(none)";
    br_rev_format(&t->nodes[i].rev, buf);
    return buf;
}

static void assert_winner(const br_revtree *t, const char *want)
{
    char buf[BR_REV_TEXT_MAX];
    uint32_t w = br_revtree_winner(t);
    cr_assert(w != BR_REVTREE_NONE, "no winner, want %s", want);
    cr_assert_str_eq(text(t, w, buf), want);
}

/* The tree's invariants: parents precede children, child gen = parent gen + 1, leaf flags
 * match the children, valid and unique revisions. */
static void check_tree(const br_revtree *t)
{
    bool *has_child = calloc(t->n + 1, sizeof *has_child);
    cr_assert_not_null(has_child);
    for (uint32_t i = 0; i < t->n; i++) {
        const struct br_revtree_node *nd = &t->nodes[i];
        cr_assert(nd->rev.gen >= 1);
        cr_assert(nd->rev.hash_len >= 1 && nd->rev.hash_len <= BR_REV_HASH_MAX);
        cr_assert_eq(strlen(nd->rev.hash), nd->rev.hash_len);
        if (nd->parent != BR_REVTREE_NONE) {
            cr_assert_lt(nd->parent, i, "parent after child at %u", i);
            cr_assert_eq(nd->rev.gen, t->nodes[nd->parent].rev.gen + 1);
            has_child[nd->parent] = true;
        }
    }
    for (uint32_t i = 0; i < t->n; i++) {
        cr_assert_eq(t->nodes[i].leaf, !has_child[i], "leaf flag of %u", i);
        if (t->n < 2000)
            for (uint32_t j = i + 1; j < t->n; j++)
                cr_assert_not(br_rev_eq(&t->nodes[i].rev, &t->nodes[j].rev));
    }
    free(has_child);
}

/* Conflicts (live leaves other than the winner) as "a,b,c" in winner order. */
static void conflicts(const br_revtree *t, char *out, size_t cap)
{
    uint32_t *lv = NULL, n = 0, w = br_revtree_winner(t), count = 0;
    char buf[BR_REV_TEXT_MAX];
    out[0] = 0;
    cr_assert_eq(br_revtree_leaves(t, &lv, &n), BR_OK);
    for (uint32_t i = 0; i < n; i++) {
        if (lv[i] == w || t->nodes[lv[i]].deleted || t->nodes[w].deleted)
            continue;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? "," : "", text(t, lv[i], buf));
        count++;
    }
    cr_assert_eq(count, br_revtree_conflict_count(t));
    br_free(lv);
}

static void assert_conflicts(const br_revtree *t, const char *want)
{
    char got[4096];
    conflicts(t, got, sizeof got);
    cr_assert_str_eq(got, want);
}

/* Leaves as "a,b,c" in the order br_revtree_leaves gives. */
static void assert_leaves(const br_revtree *t, const char *want)
{
    uint32_t *lv = NULL, n = 0;
    char got[4096] = "", buf[BR_REV_TEXT_MAX];
    cr_assert_eq(br_revtree_leaves(t, &lv, &n), BR_OK);
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(got);
        snprintf(got + len, sizeof got - len, "%s%s", len ? "," : "", text(t, lv[i], buf));
    }
    if (n)
        cr_assert_eq(lv[0], br_revtree_winner(t), "winner first");
    br_free(lv);
    cr_assert_str_eq(got, want);
}

static void encode(const br_revtree *t, br_buf *b)
{
    br_buf_init(b, 0);
    cr_assert_eq(br_revtree_encode(t, b), BR_OK);
}

static bool same_bytes(const br_buf *a, const br_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Encode, decode, and check the copy has the same nodes, winner, leaves and conflicts. */
static void round_trip(const br_revtree *t)
{
    br_buf b, b2;
    br_revtree u;
    char c1[4096], c2[4096];
    encode(t, &b);
    br_revtree_init(&u);
    cr_assert_eq(br_revtree_decode(b.data, b.len, &u), BR_OK);
    check_tree(&u);
    cr_assert_eq(u.n, t->n);
    for (uint32_t i = 0; i < t->n; i++) {
        cr_assert(br_rev_eq(&u.nodes[i].rev, &t->nodes[i].rev));
        cr_assert_eq(u.nodes[i].parent, t->nodes[i].parent);
        cr_assert_eq(u.nodes[i].deleted, t->nodes[i].deleted);
        cr_assert_eq(u.nodes[i].leaf, t->nodes[i].leaf);
    }
    cr_assert_eq(br_revtree_winner(&u), br_revtree_winner(t));
    conflicts(t, c1, sizeof c1);
    conflicts(&u, c2, sizeof c2);
    cr_assert_str_eq(c1, c2);
    encode(&u, &b2);
    cr_assert(same_bytes(&b, &b2), "encoding is canonical");
    br_buf_fini(&b);
    br_buf_fini(&b2);
    br_revtree_fini(&u);
}

static br_err merge_s(br_revtree *t, const char *const *path, size_t n, bool deleted,
                      uint32_t *added)
{
    struct br_rev p[64];
    cr_assert_leq(n, 64);
    for (size_t i = 0; i < n; i++)
        p[i] = rev_of(path[i]);
    return br_revtree_merge(t, p, n, deleted, added);
}

static uint32_t idx(const br_revtree *t, const char *rev)
{
    struct br_rev r = rev_of(rev);
    return br_revtree_find(t, &r);
}

/* ---- building, winner, conflicts ---- */

/* REV-13 */
Test(revtree, rev13_empty_tree)
{
    br_revtree t;
    uint32_t *lv = (uint32_t *)1, n = 7;
    br_revtree_init(&t);
    cr_assert_eq(br_revtree_winner(&t), BR_REVTREE_NONE);
    cr_assert_eq(br_revtree_leaves(&t, &lv, &n), BR_OK);
    cr_assert_null(lv);
    cr_assert_eq(n, 0);
    cr_assert_eq(br_revtree_conflict_count(&t), 0);
    struct br_rev r = rev_of("1-a");
    cr_assert_not(br_revtree_contains(&t, &r));
    br_revtree_fini(&t);
    br_revtree_fini(&t); /* twice is fine */
}

/* REV-14 */
Test(revtree, rev14_single_root_is_leaf_and_winner)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-abc", NULL, false);
    cr_assert_eq(t.n, 1);
    cr_assert(t.nodes[0].leaf);
    cr_assert_eq(t.nodes[0].parent, BR_REVTREE_NONE);
    assert_winner(&t, "1-abc");
    assert_leaves(&t, "1-abc");
    assert_conflicts(&t, "");
    br_revtree_fini(&t);
}

/* REV-15 */
Test(revtree, rev15_child_is_only_leaf_and_winner)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-abc", NULL, false);
    add(&t, "2-def", "1-abc", false);
    cr_assert_not(t.nodes[0].leaf);
    cr_assert(t.nodes[1].leaf);
    cr_assert_eq(t.nodes[1].parent, 0);
    assert_winner(&t, "2-def");
    assert_leaves(&t, "2-def");
    check_tree(&t);
    br_revtree_fini(&t);
}

/* REV-16 */
Test(revtree, rev16_two_children_both_leaves)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "2-c", "1-a", false);
    assert_leaves(&t, "2-c,2-b");
    check_tree(&t);
    br_revtree_fini(&t);
}

/* REV-17 */
Test(revtree, rev17_chain_of_five_has_one_leaf)
{
    br_revtree t;
    br_revtree_init(&t);
    chain(&t, 5, 0xa);
    char buf[BR_REV_TEXT_MAX];
    struct br_rev last = grev(5, 0xa);
    br_rev_format(&last, buf);
    assert_leaves(&t, buf);
    assert_winner(&t, buf);
    check_tree(&t);
    br_revtree_fini(&t);
}

/* REV-18 */
Test(revtree, rev18_single_leaf_and_chain_have_no_conflicts)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    cr_assert_eq(br_revtree_conflict_count(&t), 0);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-c", "2-b", false);
    cr_assert_eq(br_revtree_conflict_count(&t), 0);
    assert_conflicts(&t, "");
    br_revtree_fini(&t);
}

/* REV-19 */
Test(revtree, rev19_same_gen_siblings_greater_hash_wins)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-abc", "1-a", false);
    add(&t, "2-def", "1-a", false);
    assert_winner(&t, "2-def");
    assert_conflicts(&t, "2-abc");
    br_revtree_fini(&t);
}

/* REV-20 */
Test(revtree, rev20_three_siblings)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-bbb", "1-a", false);
    add(&t, "2-fff", "1-a", false);
    add(&t, "2-aaa", "1-a", false);
    assert_winner(&t, "2-fff");
    assert_conflicts(&t, "2-bbb,2-aaa");
    cr_assert_eq(br_revtree_conflict_count(&t), 2);
    br_revtree_fini(&t);
}

/* REV-21: over many shapes, the winner is never listed as a conflict. */
Test(revtree, rev21_winner_never_in_conflicts)
{
    br_revtree t;
    unsigned seed = 12345;
    for (int round = 0; round < 50; round++) {
        br_revtree_init(&t);
        add(&t, "1-0", NULL, false);
        for (int k = 0; k < 30; k++) {
            seed = seed * 1103515245u + 12345u;
            uint32_t p = (seed >> 8) % t.n;
            struct br_rev r = grev(t.nodes[p].rev.gen + 1, (seed >> 4) & 0xfff);
            br_err e = br_revtree_add(&t, &r, &t.nodes[p].rev, (seed & 3) == 0);
            cr_assert(e == BR_OK || e == BR_EEXIST);
        }
        check_tree(&t);
        uint32_t *lv = NULL, n = 0, w = br_revtree_winner(&t);
        cr_assert_eq(br_revtree_leaves(&t, &lv, &n), BR_OK);
        cr_assert_eq(lv[0], w);
        for (uint32_t i = 1; i < n; i++)
            cr_assert_neq(lv[i], w);
        br_free(lv);
        char c[4096], buf[BR_REV_TEXT_MAX];
        conflicts(&t, c, sizeof c);
        cr_assert_null(strstr(c, text(&t, w, buf)));
        br_revtree_fini(&t);
    }
}

/* REV-22 */
Test(revtree, rev22_higher_generation_beats_greater_hash)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-fff", "1-a", false);
    add(&t, "2-aaa", "1-a", false);
    add(&t, "3-aaa", "2-aaa", false);
    assert_winner(&t, "3-aaa");
    assert_conflicts(&t, "2-fff");
    br_revtree_fini(&t);
}

/* REV-23 */
Test(revtree, rev23_deeper_branch_wins)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-b", "2-b", false);
    add(&t, "4-b", "3-b", false);
    add(&t, "2-f", "1-a", false);
    assert_winner(&t, "4-b");
    assert_conflicts(&t, "2-f");
    br_revtree_fini(&t);
}

/* REV-24 (D, CouchDB): a live leaf beats a deeper tombstone, which is not a conflict; only
 * when every leaf is deleted does the deepest tombstone win. */
Test(revtree, rev24_live_leaf_beats_deeper_tombstone)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-b", "2-b", false);
    add(&t, "4-b", "3-b", true); /* deepest, deleted */
    add(&t, "2-c", "1-a", false);
    assert_winner(&t, "2-c");
    cr_assert_not(t.nodes[br_revtree_winner(&t)].deleted);
    assert_conflicts(&t, "");
    assert_leaves(&t, "2-c,4-b"); /* live before deleted */
    /* delete the live leaf too: now the deepest tombstone wins, no conflicts */
    add(&t, "3-c", "2-c", true);
    assert_winner(&t, "4-b");
    cr_assert(t.nodes[br_revtree_winner(&t)].deleted);
    assert_conflicts(&t, "");
    assert_leaves(&t, "4-b,3-c");
    /* a new live branch beats both tombstones even at a lower generation */
    add(&t, "2-0", "1-a", false);
    assert_winner(&t, "2-0");
    assert_leaves(&t, "2-0,4-b,3-c");
    br_revtree_fini(&t);
}

/* REV-25 */
Test(revtree, rev25_contains)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    struct br_rev a = rev_of("1-a"), b = rev_of("2-b"), m = rev_of("2-c"), g = rev_of("1-aa"),
                  h = rev_of("3-b"), junk = {.gen = 0, .hash_len = 0};
    cr_assert(br_revtree_contains(&t, &a));
    cr_assert(br_revtree_contains(&t, &b));
    cr_assert_not(br_revtree_contains(&t, &m));
    cr_assert_not(br_revtree_contains(&t, &g));
    cr_assert_not(br_revtree_contains(&t, &h));
    cr_assert_not(br_revtree_contains(&t, &junk));
    cr_assert_eq(br_revtree_find(&t, &b), 1);
    br_revtree_fini(&t);
}

static void assert_history(const br_revtree *t, const char *rev, uint32_t depth, const char *want)
{
    struct br_rev r = rev_of(rev), *h = NULL;
    uint32_t n = 0;
    char got[4096] = "", buf[BR_REV_TEXT_MAX];
    cr_assert_eq(br_revtree_history(t, &r, depth, &h, &n), BR_OK);
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(got);
        br_rev_format(&h[i], buf);
        snprintf(got + len, sizeof got - len, "%s%s", len ? "," : "", buf);
    }
    br_free(h);
    cr_assert_str_eq(got, want);
}

/* REV-26 */
Test(revtree, rev26_history_leaf_and_middle_to_root)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-c", "2-b", false);
    add(&t, "4-d", "3-c", false);
    add(&t, "3-e", "2-b", false);
    assert_history(&t, "4-d", 0, "4-d,3-c,2-b,1-a");
    assert_history(&t, "3-c", 0, "3-c,2-b,1-a");
    assert_history(&t, "3-e", 0, "3-e,2-b,1-a");
    assert_history(&t, "1-a", 0, "1-a");
    br_revtree_fini(&t);
}

/* REV-27 */
Test(revtree, rev27_history_depth_limit)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-c", "2-b", false);
    add(&t, "4-d", "3-c", false);
    assert_history(&t, "4-d", 1, "4-d");
    assert_history(&t, "4-d", 2, "4-d,3-c");
    assert_history(&t, "4-d", 3, "4-d,3-c,2-b");
    assert_history(&t, "4-d", 99, "4-d,3-c,2-b,1-a");
    br_revtree_fini(&t);
}

/* REV-28 */
Test(revtree, rev28_history_of_unknown_rev)
{
    br_revtree t;
    struct br_rev r = rev_of("9-abc"), *h = (struct br_rev *)1;
    uint32_t n = 5;
    br_revtree_init(&t);
    cr_assert_eq(br_revtree_history(&t, &r, 0, &h, &n), BR_ENOTFOUND);
    add(&t, "1-a", NULL, false);
    cr_assert_eq(br_revtree_history(&t, &r, 0, &h, &n), BR_ENOTFOUND);
    cr_assert_eq(h, (struct br_rev *)1);
    cr_assert_eq(n, 5);
    br_revtree_fini(&t);
}

/* ---- pruning ---- */

/* REV-29 */
Test(revtree, rev29_prune_empty_or_shallow_removes_nothing)
{
    br_revtree t;
    uint32_t removed = 99;
    br_revtree_init(&t);
    cr_assert_eq(br_revtree_prune(&t, 3, &removed), BR_OK);
    cr_assert_eq(removed, 0);
    chain(&t, 4, 1);
    cr_assert_eq(br_revtree_prune(&t, 4, &removed), BR_OK);
    cr_assert_eq(removed, 0);
    cr_assert_eq(br_revtree_prune(&t, 1000, NULL), BR_OK);
    cr_assert_eq(t.n, 4);
    br_revtree_fini(&t);
}

/* REV-30 */
Test(revtree, rev30_prune_chain_of_five_to_three)
{
    br_revtree t;
    uint32_t removed;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-c", "2-b", false);
    add(&t, "4-d", "3-c", false);
    add(&t, "5-e", "4-d", false);
    cr_assert_eq(br_revtree_prune(&t, 3, &removed), BR_OK);
    cr_assert_eq(removed, 2);
    cr_assert_eq(idx(&t, "1-a"), BR_REVTREE_NONE);
    cr_assert_eq(idx(&t, "2-b"), BR_REVTREE_NONE);
    cr_assert_eq(t.n, 3);
    cr_assert_eq(t.nodes[idx(&t, "3-c")].parent, BR_REVTREE_NONE); /* new root */
    assert_winner(&t, "5-e");
    assert_history(&t, "5-e", 0, "5-e,4-d,3-c");
    check_tree(&t);
    round_trip(&t);
    br_revtree_fini(&t);
}

/* REV-31 */
Test(revtree, rev31_prune_branched_to_depth_one_keeps_leaves)
{
    br_revtree t;
    uint32_t removed;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-b", "2-b", false);
    add(&t, "2-c", "1-a", false);
    add(&t, "3-c", "2-c", true);
    add(&t, "4-c", "3-c", false);
    assert_winner(&t, "4-c");
    cr_assert_eq(br_revtree_prune(&t, 1, &removed), BR_OK);
    cr_assert_eq(removed, 4);
    cr_assert_eq(t.n, 2);
    for (uint32_t i = 0; i < t.n; i++) {
        cr_assert(t.nodes[i].leaf);
        cr_assert_eq(t.nodes[i].parent, BR_REVTREE_NONE);
    }
    assert_winner(&t, "4-c");
    assert_conflicts(&t, "3-b");
    check_tree(&t);
    /* depth 0 is treated as 1 */
    cr_assert_eq(br_revtree_prune(&t, 0, &removed), BR_OK);
    cr_assert_eq(removed, 0);
    cr_assert_eq(t.n, 2);
    br_revtree_fini(&t);
}

/* REV-32 */
Test(revtree, rev32_prune_preserves_conflicts)
{
    br_revtree t;
    uint32_t removed;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "2-c", "1-a", false);
    cr_assert_eq(br_revtree_prune(&t, 2, &removed), BR_OK);
    cr_assert_eq(removed, 0);
    cr_assert_eq(t.n, 3);
    assert_winner(&t, "2-c");
    assert_conflicts(&t, "2-b");
    br_revtree_fini(&t);
}

/* REV-33 */
Test(revtree, rev33_prune_chain_of_twenty_to_five)
{
    br_revtree t;
    uint32_t removed;
    br_revtree_init(&t);
    chain(&t, 20, 0xc);
    cr_assert_eq(br_revtree_prune(&t, 5, &removed), BR_OK);
    cr_assert_eq(removed, 15);
    cr_assert_eq(t.n, 5);
    for (uint64_t g = 1; g <= 20; g++) {
        struct br_rev r = grev(g, 0xc);
        cr_assert_eq(br_revtree_contains(&t, &r), g >= 16, "gen %llu", (unsigned long long)g);
    }
    struct br_rev top = grev(20, 0xc);
    cr_assert(br_rev_eq(&t.nodes[br_revtree_winner(&t)].rev, &top));
    check_tree(&t);
    br_revtree_fini(&t);
}

/* Pruning keeps a node when it is within depth of any leaf, even if far from another. */
Test(revtree, prune_keeps_shared_ancestor_of_short_branch)
{
    br_revtree t;
    uint32_t removed;
    br_revtree_init(&t);
    chain(&t, 10, 0xa); /* 1..10 */
    struct br_rev p = grev(8, 0xa), r = grev(9, 0xb);
    cr_assert_eq(br_revtree_add(&t, &r, &p, false), BR_OK); /* short branch off gen 8 */
    cr_assert_eq(br_revtree_prune(&t, 2, &removed), BR_OK);
    /* kept: 10a, 9a (from leaf 10a), 9b, 8a (from leaf 9b) */
    cr_assert_eq(t.n, 4);
    cr_assert_eq(removed, 7);
    cr_assert(br_revtree_contains(&t, &p));
    cr_assert_eq(t.nodes[br_revtree_find(&t, &p)].parent, BR_REVTREE_NONE);
    check_tree(&t);
    round_trip(&t);
    br_revtree_fini(&t);
}

/* REV-38 (tree level; body retention is the store's): many updates and repeated pruning keep
 * the winner intact. */
Test(revtree, rev38_many_updates_pruned_keep_winner)
{
    br_revtree t;
    br_revtree_init(&t);
    for (uint64_t g = 1; g <= 300; g++) {
        struct br_rev r = grev(g, 0xd), p;
        if (g > 1)
            p = grev(g - 1, 0xd);
        cr_assert_eq(br_revtree_add(&t, &r, g > 1 ? &p : NULL, false), BR_OK);
        if (g % 17 == 0)
            cr_assert_eq(br_revtree_prune(&t, 10, NULL), BR_OK);
    }
    cr_assert_eq(br_revtree_prune(&t, 10, NULL), BR_OK);
    cr_assert_eq(t.n, 10);
    struct br_rev top = grev(300, 0xd);
    cr_assert(br_rev_eq(&t.nodes[br_revtree_winner(&t)].rev, &top));
    check_tree(&t);
    br_revtree_fini(&t);
}

/* ---- add errors ---- */

Test(revtree, add_rejects_duplicates_missing_parent_and_bad_gen)
{
    br_revtree t;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    struct br_rev a = rev_of("1-a"), b = rev_of("2-b"), c = rev_of("3-c"), x = rev_of("5-e");
    cr_assert_eq(br_revtree_add(&t, &a, NULL, false), BR_EEXIST);
    cr_assert_eq(br_revtree_add(&t, &c, &b, false), BR_ENOTFOUND);
    cr_assert_eq(br_revtree_add(&t, &c, &a, false), BR_EBADREV);
    cr_assert_eq(br_revtree_add(&t, &x, NULL, false), BR_OK); /* a root of any gen */
    struct br_rev junk = {.gen = 2, .hash_len = 2, .hash = "G!"};
    cr_assert_eq(br_revtree_add(&t, &junk, &a, false), BR_EBADREV);
    struct br_rev zero = {.gen = 0, .hash_len = 1, .hash = "a"};
    cr_assert_eq(br_revtree_add(&t, &zero, NULL, false), BR_EBADREV);
    cr_assert_eq(t.n, 2);
    check_tree(&t);
    br_revtree_fini(&t);
}

/* ---- merging replicated paths (put_rev, new_edits=false) ---- */

/* RDF-06 */
Test(revtree, rdf06_merge_single_rev_creates_doc)
{
    br_revtree t;
    uint32_t added = 99;
    const char *p[] = {"1-abcdef"};
    br_revtree_init(&t);
    cr_assert_eq(merge_s(&t, p, 1, false, &added), BR_OK);
    cr_assert_eq(added, 1);
    cr_assert_eq(t.n, 1);
    assert_winner(&t, "1-abcdef");
    cr_assert_not(t.nodes[0].deleted);
    br_revtree_fini(&t);
}

/* RDF-07 */
Test(revtree, rdf07_merge_history_creates_doc_at_newest)
{
    br_revtree t;
    uint32_t added;
    const char *p[] = {"2-a123", "1-b456"};
    br_revtree_init(&t);
    cr_assert_eq(merge_s(&t, p, 2, false, &added), BR_OK);
    cr_assert_eq(added, 2);
    assert_winner(&t, "2-a123");
    assert_leaves(&t, "2-a123");
    assert_history(&t, "2-a123", 0, "2-a123,1-b456");
    check_tree(&t);
    br_revtree_fini(&t);
}

/* RDF-08: the known part of the history is found, the rest grafted below the newest known
 * revision; no extra leaf, no link rewritten. */
Test(revtree, rdf08_merge_grafts_below_newest_known)
{
    br_revtree t;
    uint32_t added;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    const char *p[] = {"5-e", "4-d", "3-c", "2-b", "1-a"};
    cr_assert_eq(merge_s(&t, p, 5, true, &added), BR_OK);
    cr_assert_eq(added, 3);
    cr_assert_eq(t.n, 5);
    assert_leaves(&t, "5-e");
    cr_assert(t.nodes[idx(&t, "5-e")].deleted); /* only the newest takes `deleted` */
    cr_assert_not(t.nodes[idx(&t, "4-d")].deleted);
    cr_assert_not(t.nodes[idx(&t, "3-c")].deleted);
    cr_assert_eq(t.nodes[idx(&t, "3-c")].parent, idx(&t, "2-b"));
    assert_history(&t, "5-e", 0, "5-e,4-d,3-c,2-b,1-a");
    check_tree(&t);
    br_revtree_fini(&t);
}

/* RDF-08 / DOC-06: a replicated sibling of the local gen-2 rev is exactly one conflict. */
Test(revtree, rdf08_merge_sibling_makes_one_conflict)
{
    br_revtree t;
    uint32_t added;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    const char *p[] = {"2-c", "1-a"};
    cr_assert_eq(merge_s(&t, p, 2, false, &added), BR_OK);
    cr_assert_eq(added, 1);
    assert_winner(&t, "2-c");
    assert_conflicts(&t, "2-b");
    br_revtree_fini(&t);
}

/* RDF-08: a pruned local tree grafts on its newest known rev and does not re-add older
 * entries of the incoming history. */
Test(revtree, rdf08_merge_into_pruned_tree)
{
    br_revtree t;
    uint32_t added;
    br_revtree_init(&t);
    add(&t, "3-c", NULL, false);
    const char *p[] = {"5-e", "4-d", "3-c", "2-b", "1-a"};
    cr_assert_eq(merge_s(&t, p, 5, false, &added), BR_OK);
    cr_assert_eq(added, 2);
    cr_assert_eq(idx(&t, "1-a"), BR_REVTREE_NONE);
    cr_assert_eq(idx(&t, "2-b"), BR_REVTREE_NONE);
    assert_history(&t, "5-e", 0, "5-e,4-d,3-c");
    check_tree(&t);
    br_revtree_fini(&t);
}

/* RDF-08: existing parent links are never rewritten, whatever the incoming history says. */
Test(revtree, rdf08_merge_never_rewrites_parent_links)
{
    br_revtree t;
    uint32_t added;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-c", "2-b", false);
    const char *p1[] = {"3-c", "2-f", "1-f"}; /* claims another parent for 3-c */
    cr_assert_eq(merge_s(&t, p1, 3, false, &added), BR_OK);
    cr_assert_eq(added, 0);
    const char *p2[] = {"4-d", "3-c", "2-f"};
    cr_assert_eq(merge_s(&t, p2, 3, false, &added), BR_OK);
    cr_assert_eq(added, 1);
    cr_assert_eq(idx(&t, "2-f"), BR_REVTREE_NONE);
    assert_history(&t, "4-d", 0, "4-d,3-c,2-b,1-a");
    check_tree(&t);
    br_revtree_fini(&t);
}

/* A history sharing nothing with the tree becomes a disconnected branch (a new root). */
Test(revtree, rdf08_merge_disconnected_branch_is_new_root)
{
    br_revtree t;
    uint32_t added;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    const char *p[] = {"3-ee", "2-dd"};
    cr_assert_eq(merge_s(&t, p, 2, false, &added), BR_OK);
    cr_assert_eq(added, 2);
    cr_assert_eq(t.nodes[idx(&t, "2-dd")].parent, BR_REVTREE_NONE);
    cr_assert_eq(t.nodes[idx(&t, "3-ee")].parent, idx(&t, "2-dd"));
    assert_winner(&t, "3-ee");
    assert_conflicts(&t, "2-b");
    check_tree(&t);
    round_trip(&t);
    br_revtree_fini(&t);
}

/* RDF-09: merging a path whose newest rev is present changes nothing (even the flag). */
Test(revtree, rdf09_merge_is_idempotent)
{
    br_revtree t;
    uint32_t added = 99;
    br_buf before, after;
    br_revtree_init(&t);
    const char *p[] = {"3-c", "2-b", "1-a"};
    cr_assert_eq(merge_s(&t, p, 3, false, &added), BR_OK);
    cr_assert_eq(added, 3);
    encode(&t, &before);
    cr_assert_eq(merge_s(&t, p, 3, false, &added), BR_OK);
    cr_assert_eq(added, 0);
    cr_assert_eq(merge_s(&t, p, 3, true, &added), BR_OK);
    cr_assert_eq(added, 0);
    cr_assert_eq(merge_s(&t, p, 1, false, NULL), BR_OK);
    cr_assert_eq(merge_s(&t, p + 1, 2, false, &added), BR_OK); /* an older prefix too */
    cr_assert_eq(added, 0);
    encode(&t, &after);
    cr_assert(same_bytes(&before, &after));
    br_buf_fini(&before);
    br_buf_fini(&after);
    br_revtree_fini(&t);
}

Test(revtree, merge_rejects_inconsistent_path)
{
    br_revtree t;
    uint32_t added = 77;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    const char *gap[] = {"3-c", "1-a"}, *up[] = {"1-a", "2-b"};
    cr_assert_eq(merge_s(&t, gap, 2, false, &added), BR_EBADREV);
    cr_assert_eq(merge_s(&t, up, 2, false, &added), BR_EBADREV);
    cr_assert_eq(merge_s(&t, gap, 0, false, &added), BR_EBADREV);
    cr_assert_eq(added, 77);
    cr_assert_eq(t.n, 1);
    br_revtree_fini(&t);
}

/* ---- replication scenarios ---- */

/* Give every leaf history of `from` to `to`, as a replicator would. */
static void replicate(const br_revtree *from, br_revtree *to)
{
    uint32_t *lv = NULL, n = 0;
    cr_assert_eq(br_revtree_leaves(from, &lv, &n), BR_OK);
    for (uint32_t i = 0; i < n; i++) {
        struct br_rev *h = NULL;
        uint32_t hn = 0;
        const struct br_revtree_node *leaf = &from->nodes[lv[i]];
        cr_assert_eq(br_revtree_history(from, &leaf->rev, 0, &h, &hn), BR_OK);
        cr_assert_eq(br_revtree_merge(to, h, hn, leaf->deleted, NULL), BR_OK);
        br_free(h);
    }
    br_free(lv);
}

/* REV-36 */
Test(revtree, rev36_union_of_two_replicas)
{
    br_revtree a, b;
    br_revtree_init(&a);
    br_revtree_init(&b);
    add(&a, "1-a", NULL, false);
    add(&b, "1-a", NULL, false);
    add(&a, "2-b", "1-a", false);
    add(&b, "2-c", "1-a", false);
    replicate(&a, &b);
    replicate(&b, &a);
    check_tree(&a);
    check_tree(&b);
    assert_leaves(&a, "2-c,2-b");
    assert_leaves(&b, "2-c,2-b");
    assert_winner(&a, "2-c");
    assert_winner(&b, "2-c");
    assert_conflicts(&a, "2-b");
    assert_conflicts(&b, "2-b");
    round_trip(&a);
    round_trip(&b);
    /* a second exchange changes nothing */
    cr_assert_eq(a.n, 3);
    replicate(&b, &a);
    cr_assert_eq(a.n, 3);
    br_revtree_fini(&a);
    br_revtree_fini(&b);
}

/* REV-36: random concurrent edits and deletions on two replicas, then an exchange of leaf
 * histories, leave both with the same leaves, winner and conflicts. */
Test(revtree, rev36_random_replicas_converge)
{
    unsigned seed = 777;
    for (int round = 0; round < 40; round++) {
        br_revtree r[2];
        br_revtree_init(&r[0]);
        br_revtree_init(&r[1]);
        add(&r[0], "1-0", NULL, false);
        add(&r[1], "1-0", NULL, false);
        for (int k = 0; k < 40; k++) {
            seed = seed * 1103515245u + 12345u;
            br_revtree *t = &r[(seed >> 16) & 1];
            uint32_t w = br_revtree_winner(t);
            if ((seed >> 20) % 4 == 0) { /* sometimes edit a random leaf or node */
                w = (seed >> 3) % t->n;
            }
            /* a unique hash per edit, as real hashes cover the parent */
            struct br_rev nr = grev(t->nodes[w].rev.gen + 1, (unsigned)(round * 100 + k + 1));
            cr_assert_eq(br_revtree_add(t, &nr, &t->nodes[w].rev, (seed & 7) == 0), BR_OK);
            if ((seed >> 12) % 10 == 0) /* partial sync one way */
                replicate(&r[0], &r[1]);
        }
        replicate(&r[0], &r[1]);
        replicate(&r[1], &r[0]);
        check_tree(&r[0]);
        check_tree(&r[1]);
        cr_assert_eq(r[0].n, r[1].n);
        char c0[8192], c1[8192], b0[BR_REV_TEXT_MAX], b1[BR_REV_TEXT_MAX];
        cr_assert_str_eq(text(&r[0], br_revtree_winner(&r[0]), b0),
                         text(&r[1], br_revtree_winner(&r[1]), b1));
        conflicts(&r[0], c0, sizeof c0);
        conflicts(&r[1], c1, sizeof c1);
        cr_assert_str_eq(c0, c1);
        round_trip(&r[0]);
        br_revtree_fini(&r[0]);
        br_revtree_fini(&r[1]);
    }
}

/* REV-37: a 100-rev chain built by replication (each merge carries the whole history). */
Test(revtree, rev37_chain_of_100)
{
    br_revtree t;
    struct br_rev path[100];
    br_revtree_init(&t);
    for (uint64_t g = 1; g <= 100; g++) {
        for (uint64_t k = 0; k < g; k++)
            path[k] = grev(g - k, 0xe);
        uint32_t added;
        cr_assert_eq(br_revtree_merge(&t, path, g, false, &added), BR_OK);
        cr_assert_eq(added, 1);
    }
    assert_leaves(&t, "100-e0064");
    char buf[BR_REV_TEXT_MAX];
    cr_assert_eq(strncmp(text(&t, br_revtree_winner(&t), buf), "100-", 4), 0);
    cr_assert_eq(br_revtree_conflict_count(&t), 0);
    check_tree(&t);
    round_trip(&t);
    br_revtree_fini(&t);
}

/* REV-37: deep histories (revs_limit 1000) stay linear per merge: 1000 merges of the full
 * 1000-long history, then 1000 no-op re-merges, finish quickly. */
Test(revtree, rev37_deep_history_merge_is_not_quadratic)
{
    enum { D = 1000 };
    br_revtree t;
    struct br_rev *path = calloc(D, sizeof *path);
    cr_assert_not_null(path);
    br_revtree_init(&t);
    for (uint64_t g = 1; g <= D; g++) {
        path[D - g] = grev(g, 0x1);
    }
    clock_t start = clock();
    for (uint64_t g = 1; g <= D; g++) /* grow one at a time: merge path[D-g .. D) */
        cr_assert_eq(br_revtree_merge(&t, path + (D - g), g, false, NULL), BR_OK);
    for (int i = 0; i < D; i++) {
        uint32_t added;
        cr_assert_eq(br_revtree_merge(&t, path, D, false, &added), BR_OK);
        cr_assert_eq(added, 0);
    }
    /* an unrelated 1000-long history: one scan, not one per entry */
    for (uint64_t g = 1; g <= D; g++)
        path[D - g] = grev(g + 5000, 0x2);
    cr_assert_eq(br_revtree_merge(&t, path, D, false, NULL), BR_OK);
    double secs = (double)(clock() - start) / CLOCKS_PER_SEC;
    cr_assert_eq(t.n, 2 * D);
    cr_assert_lt(secs, 5.0, "took %.2fs", secs);
    free(path);
    br_revtree_fini(&t);
}

/* ---- encoding ---- */

/* REV-34 */
Test(revtree, rev34_round_trip_empty_single_chain_branched)
{
    br_revtree t;
    br_revtree_init(&t);
    round_trip(&t);
    add(&t, "1-abc", NULL, false);
    round_trip(&t);
    add(&t, "2-def", "1-abc", false);
    add(&t, "3-0123456789abcdef0123456789abcdef", "2-def", false);
    round_trip(&t);
    add(&t, "2-fff", "1-abc", true);
    add(&t, "3-1", "2-def", false);
    add(&t, "7-ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", NULL, false);
    round_trip(&t);
    assert_winner(&t, "7-ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    br_revtree_fini(&t);
}

/* REV-34: the exact bytes, so the storage form cannot drift silently. */
/* Every hex digit packs to its nibble (revtree.c packs through a table), odd counts too. */
Test(revtree, encoding_packs_every_digit)
{
    br_revtree t;
    br_buf b;
    br_revtree_init(&t);
    add(&t, "1-0123456789abcdef", NULL, false);
    add(&t, "2-fedcba9876543210a", "1-0123456789abcdef", false);
    const uint8_t want[] = {0x02, 0x01, 0x01, 0x10, 0x01, 0x23, 0x45, 0x67, 0x89,
                            0xab, 0xcd, 0xef, 0x00, 0x01, 0x02, 0x11, 0xfe, 0xdc,
                            0xba, 0x98, 0x76, 0x54, 0x32, 0x10, 0xa0};
    encode(&t, &b);
    cr_assert_eq(b.len, sizeof want);
    cr_assert_eq(memcmp(b.data, want, sizeof want), 0);
    br_buf_fini(&b);
    round_trip(&t);
    br_revtree_fini(&t);
}

Test(revtree, rev34_encoding_bytes)
{
    br_revtree t;
    br_buf b;
    br_revtree_init(&t);
    encode(&t, &b);
    cr_assert_eq(b.len, 1);
    cr_assert_eq(b.data[0], 0);
    br_buf_fini(&b);
    add(&t, "1-ab", NULL, false);
    add(&t, "2-c", "1-ab", true);
    add(&t, "200-0f", NULL, false);
    const uint8_t want[] = {0x03,                          /* three nodes */
                            0x01, 0x01, 0x02, 0xab,        /* root, gen 1, 2 digits "ab" */
                            0x02, 0x01, 0x02, 0x01, 0xc0,  /* deleted, parent -1, gen 2, "c" */
                            0x01, 0xc8, 0x01, 0x02, 0x0f}; /* root, gen 200, "0f" */
    encode(&t, &b);
    cr_assert_eq(b.len, sizeof want);
    cr_assert_eq(memcmp(b.data, want, sizeof want), 0);
    /* appends, and leaves earlier bytes alone */
    cr_assert_eq(br_revtree_encode(&t, &b), BR_OK);
    cr_assert_eq(b.len, 2 * sizeof want);
    br_buf_fini(&b);
    /* a bounded buffer that is too small: BR_ETOOBIG and nothing appended */
    br_buf_init(&b, 5);
    cr_assert_eq(br_buf_append(&b, "xy", 2), BR_OK);
    cr_assert_eq(br_revtree_encode(&t, &b), BR_ETOOBIG);
    cr_assert_eq(b.len, 2);
    br_buf_fini(&b);
    br_revtree_fini(&t);
}

/* REV-35: the decoder's winner, conflicts and leaves are the encoder's, deleted leaves and
 * several roots included. */
Test(revtree, rev35_decoded_winner_conflicts_leaves)
{
    br_revtree t, u;
    br_buf b;
    br_revtree_init(&t);
    add(&t, "1-a", NULL, false);
    add(&t, "2-b", "1-a", false);
    add(&t, "3-b", "2-b", true);
    add(&t, "2-c", "1-a", false);
    add(&t, "2-d", "1-a", false);
    add(&t, "4-e", NULL, true);
    encode(&t, &b);
    br_revtree_init(&u);
    cr_assert_eq(br_revtree_decode(b.data, b.len, &u), BR_OK);
    assert_winner(&u, "2-d");
    assert_conflicts(&u, "2-c");
    assert_leaves(&u, "2-d,2-c,4-e,3-b");
    cr_assert_eq(br_revtree_conflict_count(&u), 1);
    br_buf_fini(&b);
    br_revtree_fini(&t);
    br_revtree_fini(&u);
}

static br_err decode_bytes(const uint8_t *p, size_t n)
{
    br_revtree t;
    br_revtree_init(&t);
    br_err e = br_revtree_decode(p, n, &t);
    if (e == BR_OK)
        check_tree(&t);
    else
        cr_assert(t.n == 0 && t.nodes == NULL, "tree left empty on error");
    br_revtree_fini(&t);
    return e;
}

#define DECODE(...)                                                                                \
    do {                                                                                           \
        const uint8_t in_[] = {__VA_ARGS__};                                                       \
        e = decode_bytes(in_, sizeof in_);                                                         \
    } while (0)

Test(revtree, decode_rejects_truncated)
{
    br_revtree t;
    br_buf b;
    br_revtree_init(&t);
    add(&t, "1-ab", NULL, false);
    add(&t, "2-c", "1-ab", true);
    add(&t, "3-0123456789abcdef", "2-c", false);
    add(&t, "300-0f", NULL, false);
    encode(&t, &b);
    cr_assert_eq(decode_bytes(b.data, b.len), BR_OK);
    for (size_t n = 0; n < b.len; n++)
        cr_assert_eq(decode_bytes(b.data, n), BR_EPROTO, "prefix %zu", n);
    cr_assert_eq(br_revtree_decode(NULL, 0, &t), BR_EINVAL); /* t is not empty */
    br_revtree_fini(&t);
    br_revtree_init(&t);
    cr_assert_eq(br_revtree_decode(NULL, 0, &t), BR_EPROTO);
    br_buf_fini(&b);
    br_revtree_fini(&t);
}

Test(revtree, decode_rejects_trailing_bytes)
{
    br_err e;
    DECODE(0x00);
    cr_assert_eq(e, BR_OK);
    DECODE(0x00, 0x00);
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x01, 0x01, 0x01, 0xa0, 0x00);
    cr_assert_eq(e, BR_EPROTO);
}

Test(revtree, decode_rejects_bad_parent_delta)
{
    br_err e;
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0,  /* root 1-a */
           0x00, 0x01, 0x02, 0x01, 0xb0); /* 2-b, delta 1 */
    cr_assert_eq(e, BR_OK);
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0, 0x00, 0x00, 0x02, 0x01, 0xb0); /* delta 0 */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0, 0x00, 0x02, 0x02, 0x01, 0xb0); /* before index 0 */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x02, 0x01, 0xb0);
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x00, 0x01, 0x01, 0x01, 0xa0); /* first node not a root */
    cr_assert_eq(e, BR_EPROTO);
}

Test(revtree, decode_rejects_gen_mismatch)
{
    br_err e;
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0, 0x00, 0x01, 0x03, 0x01, 0xb0); /* 3 under 1 */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x02, 0x01, 0x05, 0x01, 0xa0, 0x00, 0x01, 0x05, 0x01, 0xb0); /* same gen */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x01, 0x00, 0x01, 0xa0); /* gen 0 */
    cr_assert_eq(e, BR_EPROTO);
    /* gen 2^53 (one past BR_REV_GEN_MAX) */
    DECODE(0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0x01, 0xa0);
    cr_assert_eq(e, BR_EPROTO);
    /* gen 2^53 - 1 is fine as a root */
    DECODE(0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0xa0);
    cr_assert_eq(e, BR_OK);
    /* but a child would pass the maximum */
    DECODE(0x02, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0xa0, 0x00, 0x01, 0x80,
           0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0x01, 0xb0);
    cr_assert_eq(e, BR_EPROTO);
}

Test(revtree, decode_rejects_huge_count)
{
    br_err e;
    DECODE(0xff, 0xff, 0xff, 0xff, 0x0f); /* 2^32 - 1 nodes, no bytes */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01); /* 2^64 - 1 */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0); /* two announced, one present */
    cr_assert_eq(e, BR_EPROTO);
    /* 1000 announced, bytes for far fewer: refused before allocating for 1000 */
    DECODE(0xe8, 0x07, 0x01, 0x01, 0x01, 0xa0, 0x01, 0x01, 0x01, 0xb0);
    cr_assert_eq(e, BR_EPROTO);
}

Test(revtree, decode_rejects_bad_varints_flags_and_hashes)
{
    br_err e;
    DECODE(0x80, 0x00); /* non-minimal count */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x01, 0x81, 0x00, 0x01, 0xa0); /* non-minimal gen */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01); /* > 64 bits */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02); /* 2^64 exactly */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x05, 0x01, 0x01, 0xa0); /* unknown flag bit */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x81, 0x01, 0x01, 0xa0);
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x01, 0x01, 0x00, 0x00); /* empty hash */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x01, 0x01, 0x01, 0x01, 0xa5); /* odd length, nonzero pad nibble */
    cr_assert_eq(e, BR_EPROTO);
    {
        uint8_t in[4 + 33] = {0x01, 0x01, 0x01, 65}; /* 65 digits */
        cr_assert_eq(decode_bytes(in, sizeof in), BR_EPROTO);
        in[3] = 64;
        cr_assert_eq(decode_bytes(in, sizeof in - 1), BR_OK);
        in[3] = 66;
        cr_assert_eq(decode_bytes(in, sizeof in), BR_EPROTO);
    }
}

Test(revtree, decode_rejects_duplicate_revisions)
{
    br_err e;
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0, 0x01, 0x01, 0x01, 0xa0); /* two roots 1-a */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x03, 0x01, 0x01, 0x01, 0xa0, 0x00, 0x01, 0x02, 0x01, 0xb0, /* 1-a, 2-b */
           0x01, 0x02, 0x01, 0xb0);                                    /* root 2-b again */
    cr_assert_eq(e, BR_EPROTO);
    DECODE(0x02, 0x01, 0x01, 0x01, 0xa0, 0x01, 0x01, 0x02, 0xa0); /* 1-a vs 1-a0 */
    cr_assert_eq(e, BR_OK);
}

/* Flipping any bit of a valid encoding gives BR_EPROTO or a valid tree, never a crash. */
Test(revtree, decode_survives_bit_flips)
{
    br_revtree t;
    br_buf b;
    br_revtree_init(&t);
    add(&t, "1-ab", NULL, false);
    add(&t, "2-c", "1-ab", true);
    add(&t, "3-0123456789abcdef", "2-c", false);
    add(&t, "2-d", "1-ab", false);
    add(&t, "300-0f", NULL, false);
    encode(&t, &b);
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.data[i] ^= (uint8_t)(1u << bit);
            br_err e = decode_bytes(b.data, b.len);
            cr_assert(e == BR_OK || e == BR_EPROTO);
            b.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    br_buf_fini(&b);
    br_revtree_fini(&t);
}

/* ---- allocation torture ---- */

Test(revtree, merge_allocation_torture)
{
    br_revtree t;
    br_buf before, after;
    br_revtree_init(&t);
    chain(&t, 8, 0x5); /* fills the first allocation exactly: merge must grow */
    cr_assert_eq(t.n, t.cap);
    struct br_rev path[4] = {grev(11, 0x5), grev(10, 0x5), grev(9, 0x5), grev(8, 0x5)};
    encode(&t, &before);
    for (long n = 0;; n++) {
        uint32_t added = 99;
        br_alloc_fail_after(n);
        br_err e = br_revtree_merge(&t, path, 4, false, &added);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert_eq(added, 3);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM, "n=%ld", n);
        cr_assert_eq(added, 99);
        check_tree(&t);
        encode(&t, &after);
        cr_assert(same_bytes(&before, &after), "tree changed on failure n=%ld", n);
        br_buf_fini(&after);
        cr_assert_lt(n, 100);
    }
    check_tree(&t);
    cr_assert_eq(t.n, 11);
    br_buf_fini(&before);
    br_revtree_fini(&t);
}

Test(revtree, decode_allocation_torture)
{
    br_revtree t, u;
    br_buf b;
    br_revtree_init(&t);
    chain(&t, 30, 0x6);
    add(&t, "3-ffff", "2-60002", true);
    encode(&t, &b);
    for (long n = 0;; n++) {
        br_revtree_init(&u);
        br_alloc_fail_after(n);
        br_err e = br_revtree_decode(b.data, b.len, &u);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert_eq(u.n, t.n);
            br_revtree_fini(&u);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM, "n=%ld", n);
        cr_assert(u.n == 0 && u.nodes == NULL);
        cr_assert_lt(n, 100);
    }
    br_buf_fini(&b);
    br_revtree_fini(&t);
}

Test(revtree, prune_leaves_history_allocation_torture)
{
    br_revtree t;
    br_buf before, after;
    br_revtree_init(&t);
    chain(&t, 12, 0x7);
    add(&t, "3-ffff", "2-70002", false);
    encode(&t, &before);
    struct br_rev top = grev(12, 0x7);
    for (long n = 0;; n++) {
        uint32_t *lv = (uint32_t *)1, ln = 5;
        struct br_rev *h = (struct br_rev *)1;
        uint32_t hn = 5, removed = 99;
        br_alloc_fail_after(n);
        br_err e1 = br_revtree_leaves(&t, &lv, &ln);
        br_err e2 = br_revtree_history(&t, &top, 0, &h, &hn);
        br_alloc_fail_after(-1);
        cr_assert(e1 == BR_OK || (e1 == BR_ENOMEM && lv == (uint32_t *)1 && ln == 5));
        cr_assert(e2 == BR_OK || (e2 == BR_ENOMEM && h == (struct br_rev *)1 && hn == 5));
        if (e1 == BR_OK)
            br_free(lv);
        if (e2 == BR_OK)
            br_free(h);
        br_alloc_fail_after(n);
        br_err e3 = br_revtree_prune(&t, 3, &removed);
        br_alloc_fail_after(-1);
        if (e3 == BR_OK) {
            cr_assert_eq(removed, 7);
            break;
        }
        cr_assert_eq(e3, BR_ENOMEM);
        cr_assert_eq(removed, 99);
        encode(&t, &after);
        cr_assert(same_bytes(&before, &after));
        br_buf_fini(&after);
        cr_assert_lt(n, 100);
    }
    check_tree(&t);
    br_buf_fini(&before);
    br_revtree_fini(&t);
}
