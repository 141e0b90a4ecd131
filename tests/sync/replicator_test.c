/* replicator_test.c — replication between real stores in temporary directories through the
 * local endpoint (BEHAVIOURS.md REP-02..REP-20 that apply without a network): documents,
 * updates, deletes, checkpoints, filters, HLCs, directions, chains, the no-progress guard,
 * conflicts and their resolution, a seeded random workload over three stores, attachments and
 * continuous mode. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/att.h"
#include "barrel/endpoint.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/replicator.h"
#include "barrel/store.h"

#include "testutil.h"

#define N_NODES 3
#include "stores_util.h"

static const char *NODE[N_NODES] = {"nodeA", "nodeB", "nodeC"};
enum { A = 0, B = 1, C = 2 };

TestSuite(rep, .init = stores_setup, .fini = stores_teardown, .timeout = 120);

/* The body of the winner as JSON text (caller frees). */
static char *body_json(int node, const char *id)
{
    struct br_doc *d = NULL;
    cr_assert_eq(br_db_get(db[node], id, strlen(id), NULL, &d, NULL), BR_OK);
    json_t *j = NULL;
    cr_assert_eq(br_json_from_cbor(d->body, d->body_len, &j, NULL), BR_OK);
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    br_doc_free(d);
    return s;
}

static struct br_endpoint *ep(int node)
{
    struct br_endpoint *e = NULL;
    struct br_endpoint_local_opts o = {.node = NODE[node], .sync = BR_SYNC_NONE};
    cr_assert_eq(br_endpoint_local_new(st[node], "db", &o, &e, NULL), BR_OK);
    return e;
}

struct run {
    br_err err;
    struct br_rep_stats stats;
    char reason[BR_ERRBUF_SIZE];
    char id[BR_REP_ID_LEN + 1];
};

static struct run replicate_f(int from, int to, const struct br_rep_opts *o)
{
    struct run out = {0};
    struct br_endpoint *s = ep(from), *t = ep(to);
    br_rep *r = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_rep_new(s, t, o, &r, &eb), BR_OK, "%s", eb.msg);
    out.err = br_rep_run(r, &eb);
    br_rep_get_stats(r, &out.stats);
    memcpy(out.reason, eb.msg, sizeof out.reason);
    memcpy(out.id, br_rep_id(r), sizeof out.id);
    br_rep_free(r);
    br_endpoint_free(s);
    br_endpoint_free(t);
    return out;
}

static struct run replicate(int from, int to)
{
    struct br_rep_opts o = {.batch_size = 0};
    struct run r = replicate_f(from, to, &o);
    cr_assert_eq(r.err, BR_OK, "replicate %d->%d: %s %s", from, to, br_strerror(r.err), r.reason);
    return r;
}

static void same_digest(int x, int y)
{
    struct br_db_digest a, b;
    cr_assert_eq(br_db_digest(db[x], &a), BR_OK);
    cr_assert_eq(br_db_digest(db[y], &b), BR_OK);
    cr_assert(memcmp(a.set_hash, b.set_hash, 16) == 0, "set hashes of %d and %d differ", x, y);
    cr_assert_eq(a.doc_count, b.doc_count);
}

static uint64_t doc_count(int node)
{
    struct br_db_digest d;
    cr_assert_eq(br_db_digest(db[node], &d), BR_OK);
    return d.doc_count;
}

Test(rep, rep02_single_doc_replicates)
{
    put_json(A, "d1", "{\"v\":1}");
    struct run r = replicate(A, B);
    cr_assert_geq(r.stats.docs_read, 1);
    cr_assert_geq(r.stats.docs_written, 1);
    cr_assert_eq(r.stats.doc_write_failures, 0);
    cr_assert(visible(B, "d1"));
    struct br_rev ra = winner(A, "d1"), rb = winner(B, "d1");
    cr_assert(br_rev_eq(&ra, &rb));
}

Test(rep, rep03_many_docs_replicate_with_bodies)
{
    for (int i = 0; i < 10; i++) {
        char id[16], js[64];
        snprintf(id, sizeof id, "doc%d", i);
        snprintf(js, sizeof js, "{\"n\":%d,\"name\":\"item %d\"}", i, i);
        put_json(A, id, js);
    }
    struct run r = replicate(A, B);
    cr_assert_eq(r.stats.docs_written, 10);
    for (int i = 0; i < 10; i++) {
        char id[16], want[64];
        snprintf(id, sizeof id, "doc%d", i);
        snprintf(want, sizeof want, "{\"n\":%d,\"name\":\"item %d\"}", i, i);
        char *got = body_json(B, id);
        cr_assert_str_eq(got, want);
        free(got);
    }
    same_digest(A, B);
}

Test(rep, rep04_updates_replicate_as_descendants_not_conflicts)
{
    put_json(A, "d", "{\"v\":1}");
    replicate(A, B);
    struct br_rev r1 = winner(A, "d");
    char js[160];
    char rt[BR_REV_TEXT_MAX];
    br_rev_format(&r1, rt);
    snprintf(js, sizeof js, "{\"_rev\":\"%s\",\"v\":2}", rt);
    put_json(A, "d", js);
    replicate(A, B);
    char *got = body_json(B, "d");
    cr_assert_str_eq(got, "{\"v\":2}");
    free(got);
    struct br_doc *d = NULL;
    struct br_get_opts go = {.conflicts = true};
    cr_assert_eq(br_db_get(db[B], "d", 1, &go, &d, NULL), BR_OK);
    cr_assert_eq(d->rev.gen, 2);
    cr_assert_eq(d->n_conflicts, 0, "an update must graft, not branch");
    br_doc_free(d);
    same_digest(A, B);
}

Test(rep, rep05_created_then_deleted_is_not_visible_on_target)
{
    put_json(A, "gone", "{\"v\":1}");
    delete_doc(A, "gone");
    replicate(A, B);
    cr_assert_not(visible(B, "gone"));
    same_digest(A, B);
}

Test(rep, rep06_replicated_then_deleted_becomes_deleted_on_target)
{
    put_json(A, "d", "{\"v\":1}");
    replicate(A, B);
    cr_assert(visible(B, "d"));
    struct br_rev tomb = delete_doc(A, "d");
    struct run r = replicate(A, B);
    cr_assert_eq(r.stats.docs_written, 1);
    cr_assert_not(visible(B, "d"));
    struct br_rev wb = winner(B, "d");
    cr_assert(br_rev_eq(&wb, &tomb));
    same_digest(A, B);
}

Test(rep, rep07_second_run_resumes_from_checkpoint_and_reads_only_new)
{
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "a%d", i);
        put_json(A, id, "{\"x\":1}");
    }
    struct run r1 = replicate(A, B);
    cr_assert_eq(r1.stats.changes_read, 5);
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "b%d", i);
        put_json(A, id, "{\"x\":2}");
    }
    struct run r2 = replicate(A, B);
    cr_assert(br_hlc_cmp(r2.stats.start_seq, r1.stats.last_seq) == 0);
    cr_assert_eq(r2.stats.changes_read, 3, "read %llu", (unsigned long long)r2.stats.changes_read);
    cr_assert_eq(r2.stats.docs_written, 3);
    cr_assert_eq(doc_count(B), 8);
    /* nothing new: the third run reads nothing */
    struct run r3 = replicate(A, B);
    cr_assert_eq(r3.stats.changes_read, 0);
    cr_assert_eq(r3.stats.docs_read, 0);
}

Test(rep, checkpoint_mismatch_falls_back_and_sends_nothing_twice)
{
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "k%d", i);
        put_json(A, id, "{\"x\":1}");
    }
    struct run r1 = replicate(A, B);
    /* the target loses its checkpoint: no common session, start from the beginning */
    cr_assert_eq(br_db_local_delete(db[B], r1.id, strlen(r1.id), NULL, &NOSYNC), BR_OK);
    struct run r2 = replicate(A, B);
    cr_assert(br_hlc_cmp(r2.stats.start_seq, BR_HLC_MIN) == 0);
    cr_assert_eq(r2.stats.changes_read, 4);
    cr_assert_eq(r2.stats.docs_read, 0, "revsdiff must stop resending");
    cr_assert_eq(r2.stats.docs_written, 0);
    /* and the run after it agrees again */
    put_json(A, "k9", "{}");
    struct run r3 = replicate(A, B);
    cr_assert_eq(r3.stats.changes_read, 1);
}

static void people(void)
{
    put_json(A, "u1", "{\"users\":{\"name\":\"ann\"},\"type\":\"user\",\"age\":30}");
    put_json(A, "u2", "{\"type\":\"user\",\"age\":12}");
    put_json(A, "o1", "{\"type\":\"order\",\"total\":5}");
}

static uint8_t *query_cbor(const char *json, size_t *len)
{
    json_t *j = json_loads(json, 0, NULL);
    cr_assert(j);
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert_eq(br_json_to_cbor(j, &b, NULL), BR_OK);
    json_decref(j);
    return br_buf_steal(&b, len);
}

Test(rep, rep08_query_filter_replicates_only_matching_docs)
{
    people();
    size_t ql;
    uint8_t *q = query_cbor("{\"where\":[{\"path\":[\"type\"],\"value\":\"user\"}]}", &ql);
    struct br_rep_opts o = {.filter = {.query = q, .query_len = ql}};
    struct run r = replicate_f(A, B, &o);
    cr_assert_eq(r.err, BR_OK, "%s", r.reason);
    cr_assert_eq(r.stats.docs_written, 2);
    cr_assert(visible(B, "u1") && visible(B, "u2"));
    cr_assert_not(visible(B, "o1"));
    br_free(q);
}

Test(rep, rep09_path_filter_replicates_only_that_doc)
{
    people();
    const char *paths[] = {"users/#"};
    struct br_rep_opts o = {.filter = {.paths = paths, .n_paths = 1}};
    struct run r = replicate_f(A, B, &o);
    cr_assert_eq(r.err, BR_OK, "%s", r.reason);
    cr_assert_eq(r.stats.docs_written, 1);
    cr_assert(visible(B, "u1"));
    cr_assert_not(visible(B, "u2"));
    cr_assert_not(visible(B, "o1"));
}

Test(rep, rep10_paths_and_query_combine)
{
    people();
    const char *paths[] = {"type/user"};
    size_t ql;
    uint8_t *q = query_cbor("{\"where\":[{\"path\":[\"age\"],\"op\":\">\",\"value\":18}]}", &ql);
    struct br_rep_opts o = {.filter = {.paths = paths, .n_paths = 1, .query = q, .query_len = ql}};
    struct run r = replicate_f(A, B, &o);
    cr_assert_eq(r.err, BR_OK, "%s", r.reason);
    cr_assert_eq(r.stats.docs_written, 1);
    cr_assert(visible(B, "u1"));
    cr_assert_not(visible(B, "u2"));
    br_free(q);
}

Test(rep, rep11_filter_matching_nothing_writes_nothing)
{
    people();
    const char *paths[] = {"nothing/#"};
    struct br_rep_opts o = {.filter = {.paths = paths, .n_paths = 1}};
    struct run r = replicate_f(A, B, &o);
    cr_assert_eq(r.err, BR_OK, "%s", r.reason);
    cr_assert_eq(r.stats.docs_written, 0);
    cr_assert_eq(doc_count(B), 0);
    /* the checkpoint still moves past what the filter skipped */
    cr_assert(br_hlc_cmp(r.stats.last_seq, BR_HLC_MIN) > 0);
}

Test(rep, chg26_filtered_replication_carries_deletions)
{
    people();
    const char *paths[] = {"type/user"};
    struct br_rep_opts o = {.filter = {.paths = paths, .n_paths = 1}};
    cr_assert_eq(replicate_f(A, B, &o).err, BR_OK);
    cr_assert(visible(B, "u2"));
    delete_doc(A, "u2");
    struct run r = replicate_f(A, B, &o);
    cr_assert_eq(r.err, BR_OK, "%s", r.reason);
    cr_assert_eq(r.stats.docs_written, 1);
    cr_assert_not(visible(B, "u2"), "a tombstone matches what its last live revision matched");
}

Test(rep, filter_is_part_of_the_replication_id)
{
    people();
    const char *p1[] = {"type/user"}, *p2[] = {"type/order"};
    struct br_rep_opts o1 = {.filter = {.paths = p1, .n_paths = 1}};
    struct br_rep_opts o2 = {.filter = {.paths = p2, .n_paths = 1}};
    struct run r1 = replicate_f(A, B, &o1), r2 = replicate_f(A, B, &o2);
    cr_assert_str_neq(r1.id, r2.id);
    cr_assert_eq(r2.stats.docs_written, 1, "a new filter starts its own checkpoint");
    struct run r3 = replicate(A, B);
    cr_assert_str_neq(r3.id, r1.id);
    cr_assert_eq(r3.stats.docs_written, 0, "revsdiff: nothing is sent twice");
}

Test(rep, rep12_last_seq_and_next_start_seq_are_hlcs)
{
    put_json(A, "d", "{}");
    struct run r1 = replicate(A, B);
    struct br_db_digest da;
    cr_assert_eq(br_db_digest(db[A], &da), BR_OK);
    cr_assert(br_hlc_cmp(r1.stats.last_seq, da.last) == 0, "last_seq is the source's HLC");
    cr_assert(r1.stats.last_seq.wall > 1600000000000ull);
    struct run r2 = replicate(A, B);
    cr_assert(br_hlc_cmp(r2.stats.start_seq, r1.stats.last_seq) == 0);
}

Test(rep, rep13_replication_never_moves_the_target_clock_backwards)
{
    /* The source's clock is pushed ahead (within the skew bound). */
    struct br_hlc ahead = br_hlc_peek(br_store_clock(st[A]));
    ahead.wall += 20000;
    cr_assert_eq(br_hlc_update(br_store_clock(st[A]), ahead, NULL), BR_OK);
    put_json(A, "d", "{}");
    struct br_hlc before = br_hlc_peek(br_store_clock(st[B]));
    replicate(A, B);
    struct br_hlc after = br_hlc_peek(br_store_clock(st[B]));
    cr_assert(br_hlc_cmp(after, before) >= 0);
    struct br_db_digest da, dbb;
    cr_assert_eq(br_db_digest(db[A], &da), BR_OK);
    cr_assert_eq(br_db_digest(db[B], &dbb), BR_OK);
    cr_assert(br_hlc_cmp(after, da.last) >= 0, "target learned the source's newer clock");
    cr_assert(br_hlc_cmp(dbb.last, da.last) > 0, "the target stamps its own, later, change");
    /* replicating an older source back does not move it backwards either */
    put_json(C, "old", "{}");
    struct br_hlc b2 = br_hlc_peek(br_store_clock(st[B]));
    replicate(C, B);
    cr_assert(br_hlc_cmp(br_hlc_peek(br_store_clock(st[B])), b2) >= 0);
}

Test(rep, rep14_push_pull_and_both_move_the_right_docs)
{
    put_json(A, "from_a", "{}");
    put_json(B, "from_b", "{}");
    /* push A -> B */
    replicate(A, B);
    cr_assert(visible(B, "from_a"));
    cr_assert_not(visible(A, "from_b"));
    /* pull B -> A */
    replicate(B, A);
    cr_assert(visible(A, "from_b"));
    /* both: A <-> C */
    put_json(C, "from_c", "{}");
    replicate(A, C);
    replicate(C, A);
    cr_assert(visible(C, "from_a") && visible(C, "from_b") && visible(A, "from_c"));
    cr_assert_not(visible(B, "from_c"));
}

Test(rep, rep15_chain_a_b_c_needs_nothing_special)
{
    struct br_rev r = put_json(A, "chained", "{\"hop\":0}");
    replicate(A, B);
    replicate(B, C);
    cr_assert(visible(C, "chained"));
    struct br_rev rc = winner(C, "chained");
    cr_assert(br_rev_eq(&rc, &r));
    same_digest(A, C);
}

/* ---- REP-17: a source whose last_seq never advances ---- */

struct stuck {
    struct br_endpoint *inner;
    int calls;
};

static br_err stuck_changes(void *ctx, struct br_hlc since, size_t limit,
                            const struct br_wire_filter *f, br_endpoint_change_cb cb, void *arg,
                            struct br_hlc *last, bool *more, struct br_errbuf *eb)
{
    struct stuck *s = ctx;
    s->calls++;
    br_err e = s->inner->ops->changes(s->inner->ctx, BR_HLC_MIN, limit, f, cb, arg, last, more, eb);
    *last = since; /* the defect: a non-empty batch, last_seq not advancing */
    *more = true;
    return e;
}

static br_err stuck_local_get(void *ctx, const char *id, br_wire_arena *a, const uint8_t **body,
                              size_t *len, struct br_rev *rev, struct br_errbuf *eb)
{
    struct stuck *s = ctx;
    return s->inner->ops->local_get(s->inner->ctx, id, a, body, len, rev, eb);
}

static br_err stuck_local_put(void *ctx, const char *id, const struct br_rev *rev,
                              const uint8_t *body, size_t len, struct br_rev *new_rev,
                              struct br_errbuf *eb)
{
    struct stuck *s = ctx;
    return s->inner->ops->local_put(s->inner->ctx, id, rev, body, len, new_rev, eb);
}

static br_err stuck_get_revs(void *ctx, const struct br_wire_docrevs *in, size_t n,
                             const char *const *have, size_t n_have, bool data, br_wire_arena *a,
                             struct br_wire_revdoc **out, size_t *n_out, struct br_errbuf *eb)
{
    struct stuck *s = ctx;
    return s->inner->ops->get_revs(s->inner->ctx, in, n, have, n_have, data, a, out, n_out, eb);
}

static void stuck_interrupt(void *ctx)
{
    struct stuck *s = ctx;
    s->inner->ops->interrupt(s->inner->ctx);
}

/* The source wrapper: the real local endpoint, except that changes never advance. */
static const struct br_endpoint_ops STUCK_OPS = {
    .changes = stuck_changes,
    .get_revs = stuck_get_revs,
    .local_get = stuck_local_get,
    .local_put = stuck_local_put,
    .interrupt = stuck_interrupt,
};

Test(rep, rep17_no_progress_stops_the_run)
{
    put_json(A, "x", "{}");
    put_json(A, "y", "{}");
    struct br_endpoint *inner = ep(A), *t = ep(B);
    struct stuck s = {inner, 0};
    struct br_endpoint broken = {.ops = &STUCK_OPS, .ctx = &s};
    snprintf(broken.name, sizeof broken.name, "broken/db");
    br_rep *r = NULL;
    struct br_rep_opts o = {.batch_size = 10};
    cr_assert_eq(br_rep_new(&broken, t, &o, &r, NULL), BR_OK);
    struct br_errbuf eb = {{0}};
    br_err e = br_rep_run(r, &eb);
    cr_assert_eq(e, BR_EPROTO);
    cr_assert(strncmp(eb.msg, "no_progress", 11) == 0, "%s", eb.msg);
    cr_assert_eq(s.calls, 1, "stopped at the first batch that did not advance");
    br_rep_free(r);
    br_endpoint_free(inner);
    br_endpoint_free(t);
}

/* ---- conflicts ---- */

static void sync_both(int x, int y)
{
    replicate(x, y);
    replicate(y, x);
}

Test(rep, rep18_concurrent_edits_converge_to_the_same_winner)
{
    struct br_rev r1 = put_json(A, "doc", "{\"v\":0}");
    replicate(A, B);
    char rt[BR_REV_TEXT_MAX], js[128];
    br_rev_format(&r1, rt);
    snprintf(js, sizeof js, "{\"_rev\":\"%s\",\"v\":\"a\"}", rt);
    put_json(A, "doc", js);
    snprintf(js, sizeof js, "{\"_rev\":\"%s\",\"v\":\"b\"}", rt);
    put_json(B, "doc", js);
    sync_both(A, B);
    sync_both(A, B); /* quiescent */
    struct br_rev wa = winner(A, "doc"), wb = winner(B, "doc");
    cr_assert(br_rev_eq(&wa, &wb));
    struct br_doc *da = NULL, *db2 = NULL;
    struct br_get_opts go = {.conflicts = true};
    cr_assert_eq(br_db_get(db[A], "doc", 3, &go, &da, NULL), BR_OK);
    cr_assert_eq(br_db_get(db[B], "doc", 3, &go, &db2, NULL), BR_OK);
    cr_assert_eq(da->n_conflicts, 1);
    cr_assert_eq(db2->n_conflicts, 1);
    cr_assert(br_rev_eq(&da->conflicts[0], &db2->conflicts[0]));
    br_doc_free(da);
    br_doc_free(db2);
    same_digest(A, B);
}

Test(rep, rep19_conflict_resolution_replicates)
{
    struct br_rev r1 = put_json(A, "doc", "{\"v\":0}");
    replicate(A, B);
    char rt[BR_REV_TEXT_MAX], js[128];
    br_rev_format(&r1, rt);
    snprintf(js, sizeof js, "{\"_rev\":\"%s\",\"v\":\"a\"}", rt);
    put_json(A, "doc", js);
    snprintf(js, sizeof js, "{\"_rev\":\"%s\",\"v\":\"b\"}", rt);
    put_json(B, "doc", js);
    sync_both(A, B);
    struct br_rev w = winner(A, "doc");
    struct br_resolve rs = {.base = &w, .choose = &w};
    struct br_resolve_result rr;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_db_resolve(db[A], "doc", 3, &rs, &NOSYNC, &rr, &eb), BR_OK, "%s", eb.msg);
    sync_both(A, B);
    for (int n = A; n <= B; n++) {
        struct br_doc *d = NULL;
        struct br_get_opts go = {.conflicts = true};
        cr_assert_eq(br_db_get(db[n], "doc", 3, &go, &d, NULL), BR_OK);
        cr_assert_eq(d->n_conflicts, 0, "node %d still has conflicts", n);
        br_doc_free(d);
    }
    same_digest(A, B);
}

/* ---- REP-20: seeded random workload over three stores ---- */

static uint64_t rng;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int winners_cb(void *arg, const struct br_change *c)
{
    json_t *o = arg;
    char rt[BR_REV_TEXT_MAX];
    br_rev_format(&c->rev, rt);
    char id[64];
    snprintf(id, sizeof id, "%.*s", (int)c->id_len, c->id);
    json_object_set_new(o, id, json_string(rt));
    return 0;
}

static json_t *winners(int node)
{
    json_t *o = json_object();
    struct br_changes_opts co = {.since = BR_HLC_MIN};
    cr_assert_eq(br_db_changes(db[node], &co, winners_cb, o, NULL), BR_OK);
    return o;
}

Test(rep, rep20_random_workload_converges)
{
    rng = 0x9e3779b97f4a7c15ull;
    char id[16], js[160];
    for (int op = 0; op < 200; op++) {
        int node = (int)(next_rand() % N_NODES);
        snprintf(id, sizeof id, "k%d", (int)(next_rand() % 25));
        uint64_t kind = next_rand() % 10;
        if (kind < 6) { /* write (create or update the local winner) */
            struct br_doc *d = NULL;
            struct br_get_opts go = {.include_deleted = true};
            br_err e = br_db_get(db[node], id, strlen(id), &go, &d, NULL);
            if (e == BR_OK && !d->deleted) {
                char rt[BR_REV_TEXT_MAX];
                br_rev_format(&d->rev, rt);
                snprintf(js, sizeof js, "{\"_rev\":\"%s\",\"op\":%d}", rt, op);
            } else {
                snprintf(js, sizeof js, "{\"op\":%d}", op);
            }
            br_doc_free(d);
            put_json(node, id, js);
        } else if (kind < 8) { /* delete if live */
            if (visible(node, id))
                delete_doc(node, id);
        } else { /* a partial sync: one direction, small batches */
            int to = (node + 1 + (int)(next_rand() % 2)) % N_NODES;
            struct br_rep_opts o = {.batch_size = 1 + next_rand() % 7};
            struct run r = replicate_f(node, to, &o);
            cr_assert_eq(r.err, BR_OK, "%s", r.reason);
        }
    }
    /* heal: a ring of bidirectional syncs until nothing moves */
    for (int round = 0; round < 4; round++)
        for (int i = 0; i < N_NODES; i++)
            sync_both(i, (i + 1) % N_NODES);
    same_digest(A, B);
    same_digest(B, C);
    json_t *wa = winners(A), *wb = winners(B), *wc = winners(C);
    cr_assert(json_object_size(wa) > 0);
    cr_assert(json_equal(wa, wb) && json_equal(wb, wc), "winners differ");
    json_decref(wa);
    json_decref(wb);
    json_decref(wc);
}

/* ---- attachments ---- */

static struct br_rev put_with_att(int node, const char *id, const struct br_rev *parent,
                                  const char *data, bool stub)
{
    struct br_att_in att = {.name = "file.txt",
                            .content_type = "text/plain",
                            .stub = stub,
                            .data = (const uint8_t *)data,
                            .len = stub ? 0 : strlen(data)};
    static const uint8_t body[] = {0xa1, 0x61, 0x6e, 0x01}; /* {"n":1} */
    static const uint8_t body2[] = {0xa1, 0x61, 0x6e, 0x02};
    struct br_put p = {.id = id,
                       .id_len = strlen(id),
                       .rev = parent,
                       .body = parent ? body2 : body,
                       .body_len = sizeof body,
                       .atts = &att,
                       .n_atts = 1};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db[node], &p, &NOSYNC, &res), BR_OK, "%s", res.reason);
    return res.rev;
}

Test(rep, attachments_are_sent_only_when_the_target_lacks_them)
{
    char big[5000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    struct br_rev r1 = put_with_att(A, "a1", NULL, big, false);
    struct run x = replicate(A, B);
    cr_assert_eq(x.stats.atts_sent, 1);
    cr_assert_geq(x.stats.bytes, sizeof big - 1);
    struct br_att_stub s;
    cr_assert_eq(br_db_att_info(db[B], "a1", 2, NULL, "file.txt", &s), BR_OK);
    cr_assert_eq(s.length, sizeof big - 1);
    br_att_stub_fini(&s);
    /* an update that keeps the attachment: the content does not travel again */
    put_with_att(A, "a1", &r1, NULL, true);
    /* another document with the same content: the target already holds it */
    put_with_att(A, "a2", NULL, big, false);
    struct run y = replicate(A, B);
    cr_assert_eq(y.stats.docs_written, 2);
    cr_assert_eq(y.stats.atts_sent, 0);
    cr_assert_lt(y.stats.bytes, 100);
    same_digest(A, B);
    /* and the attachment reads back whole on the target */
    cr_assert_eq(br_db_att_info(db[B], "a2", 2, NULL, "file.txt", &s), BR_OK);
    br_att_reader *rd = NULL;
    cr_assert_eq(br_att_reader_open(db[B], s.key, &rd, NULL), BR_OK);
    size_t total = 0;
    for (;;) {
        const uint8_t *p;
        size_t n;
        cr_assert_eq(br_att_reader_read(rd, &p, &n), BR_OK);
        if (!n)
            break;
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(p[i], 'z');
        total += n;
    }
    cr_assert_eq(total, sizeof big - 1);
    br_att_reader_close(rd);
    br_att_stub_fini(&s);
}

/* ---- continuous mode ---- */

struct cont {
    br_rep *r;
    br_err err;
};

static void *cont_main(void *arg)
{
    struct cont *c = arg;
    c->err = br_rep_run(c->r, NULL);
    return NULL;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

Test(rep, continuous_picks_up_a_write_without_polling_and_cancels_promptly)
{
    struct br_endpoint *s = ep(A), *t = ep(B);
    /* the idle re-check is far beyond the test's bounds: only the watch can wake the run */
    struct br_rep_opts o = {.continuous = true, .idle_check_ms = 600000};
    struct cont c = {0};
    cr_assert_eq(br_rep_new(s, t, &o, &c.r, NULL), BR_OK);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, cont_main, &c), 0);
    for (int round = 0; round < 3; round++) {
        struct timespec pause = {0, 50 * 1000000L}; /* let the run reach its wait */
        nanosleep(&pause, NULL);
        char id[16];
        snprintf(id, sizeof id, "live%d", round);
        uint64_t t0 = now_ms();
        put_json(A, id, "{}");
        while (!visible(B, id)) {
            cr_assert_lt(now_ms() - t0, 2000, "write not replicated within 2 s");
            struct timespec ms = {0, 1000000L};
            nanosleep(&ms, NULL);
        }
    }
    uint64_t t0 = now_ms();
    br_rep_cancel(c.r);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_lt(now_ms() - t0, 500, "cancel took %llu ms", (unsigned long long)(now_ms() - t0));
    cr_assert_eq(c.err, BR_OK);
    struct br_rep_stats stats;
    br_rep_get_stats(c.r, &stats);
    cr_assert_eq(stats.docs_written, 3);
    br_rep_free(c.r);
    br_endpoint_free(s);
    br_endpoint_free(t);
}

Test(rep, bad_options_are_refused)
{
    struct br_endpoint *s = ep(A), *t = ep(B);
    br_rep *r = NULL;
    struct br_errbuf eb;
    const char *bad[] = {"a/#/b"};
    struct br_rep_opts o = {.filter = {.paths = bad, .n_paths = 1}};
    cr_assert_neq(br_rep_new(s, t, &o, &r, &eb), BR_OK);
    size_t ql;
    uint8_t *q = query_cbor("{\"where\":[{\"path\":[\"a\"],\"op\":\"~~\",\"value\":1}]}", &ql);
    struct br_rep_opts o2 = {.filter = {.query = q, .query_len = ql}};
    cr_assert_eq(br_rep_new(s, t, &o2, &r, &eb), BR_EINVAL);
    struct br_rep_opts o3 = {.batch_size = BR_REP_MAX_BATCH + 1};
    cr_assert_eq(br_rep_new(s, t, &o3, &r, &eb), BR_EINVAL);
    br_free(q);
    br_endpoint_free(s);
    br_endpoint_free(t);
}

/* ---- durability: unsynced writes, one commit ---- */

/* A target wrapper that counts commits and the writes made after the last one. */
struct counting {
    struct br_endpoint *inner;
    pthread_mutex_t mu;
    int commits, puts, uncommitted;
};

static void counted_write(struct counting *c, bool commit)
{
    pthread_mutex_lock(&c->mu);
    if (commit) {
        c->commits++;
        c->uncommitted = 0;
    } else {
        c->puts++;
        c->uncommitted++;
    }
    pthread_mutex_unlock(&c->mu);
}

static br_err cnt_revsdiff(void *ctx, const struct br_wire_docrevs *in, size_t n, br_wire_arena *a,
                           struct br_wire_diff **out, size_t *n_out, struct br_errbuf *eb)
{
    struct counting *c = ctx;
    return c->inner->ops->revsdiff(c->inner->ctx, in, n, a, out, n_out, eb);
}

static br_err cnt_atts_missing(void *ctx, const struct br_wire_att *atts, size_t n, bool *missing,
                               struct br_errbuf *eb)
{
    struct counting *c = ctx;
    return c->inner->ops->atts_missing(c->inner->ctx, atts, n, missing, eb);
}

static br_err cnt_put_revs(void *ctx, const struct br_wire_revdoc *docs, size_t n, br_err *results,
                           struct br_errbuf *eb)
{
    struct counting *c = ctx;
    counted_write(c, false);
    return c->inner->ops->put_revs(c->inner->ctx, docs, n, results, eb);
}

static br_err cnt_local_get(void *ctx, const char *id, br_wire_arena *a, const uint8_t **body,
                            size_t *len, struct br_rev *rev, struct br_errbuf *eb)
{
    struct counting *c = ctx;
    return c->inner->ops->local_get(c->inner->ctx, id, a, body, len, rev, eb);
}

static br_err cnt_local_put(void *ctx, const char *id, const struct br_rev *rev,
                            const uint8_t *body, size_t len, struct br_rev *new_rev,
                            struct br_errbuf *eb)
{
    struct counting *c = ctx;
    counted_write(c, false);
    return c->inner->ops->local_put(c->inner->ctx, id, rev, body, len, new_rev, eb);
}

static br_err cnt_hlc_merge(void *ctx, struct br_hlc remote)
{
    struct counting *c = ctx;
    return c->inner->ops->hlc_merge(c->inner->ctx, remote);
}

static br_err cnt_commit(void *ctx, struct br_errbuf *eb)
{
    struct counting *c = ctx;
    br_err e = c->inner->ops->commit(c->inner->ctx, eb);
    counted_write(c, true);
    return e;
}

static const struct br_endpoint_ops COUNTING_OPS = {
    .revsdiff = cnt_revsdiff,
    .atts_missing = cnt_atts_missing,
    .put_revs = cnt_put_revs,
    .local_get = cnt_local_get,
    .local_put = cnt_local_put,
    .hlc_merge = cnt_hlc_merge,
    .commit = cnt_commit,
};

static void counting_init(struct counting *c, struct br_endpoint *wrapper, int node)
{
    memset(c, 0, sizeof *c);
    c->inner = ep(node);
    pthread_mutex_init(&c->mu, NULL);
    *wrapper = (struct br_endpoint){.ops = &COUNTING_OPS, .ctx = c};
    snprintf(wrapper->name, sizeof wrapper->name, "%s", c->inner->name);
}

static void counting_fini(struct counting *c)
{
    br_endpoint_free(c->inner);
    pthread_mutex_destroy(&c->mu);
}

Test(rep, a_one_shot_run_writes_unsynced_and_commits_once_at_the_end)
{
    for (int i = 0; i < 25; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%02d", i);
        put_json(A, id, "{\"v\": 1}");
    }
    struct counting c;
    struct br_endpoint t;
    counting_init(&c, &t, B);
    struct br_endpoint *s = ep(A);
    struct br_rep_opts o = {.batch_size = 10};
    br_rep *r = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_rep_new(s, &t, &o, &r, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(br_rep_run(r, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(doc_count(B), 25);
    cr_assert_eq(c.puts, 6, "3 batches and 3 checkpoints: %d writes", c.puts);
    cr_assert_eq(c.commits, 1);
    cr_assert_eq(c.uncommitted, 0, "the commit comes after the last write");
    /* a run with nothing to write commits nothing */
    cr_assert_eq(br_rep_run(r, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(c.commits, 1);
    /* the target's store syncs on request */
    cr_assert_eq(br_store_sync(st[B]), BR_OK);
    br_rep_free(r);
    br_endpoint_free(s);
    counting_fini(&c);
}

Test(rep, a_continuous_run_commits_when_it_has_caught_up)
{
    struct counting c;
    struct br_endpoint t;
    counting_init(&c, &t, B);
    struct br_endpoint *s = ep(A);
    struct br_rep_opts o = {.continuous = true, .idle_check_ms = 600000};
    struct cont k = {0};
    cr_assert_eq(br_rep_new(s, &t, &o, &k.r, NULL), BR_OK);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, cont_main, &k), 0);
    put_json(A, "live", "{}");
    uint64_t t0 = now_ms();
    for (;;) { /* written, then committed before the run waits again */
        pthread_mutex_lock(&c.mu);
        bool done = visible(B, "live") && c.commits >= 1 && c.uncommitted == 0;
        pthread_mutex_unlock(&c.mu);
        if (done)
            break;
        cr_assert_lt(now_ms() - t0, 2000, "no commit within 2 s");
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
    br_rep_cancel(k.r);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(k.err, BR_OK);
    cr_assert_eq(c.uncommitted, 0);
    br_rep_free(k.r);
    br_endpoint_free(s);
    counting_fini(&c);
}

/* ---- get_revs of the local endpoint: one multi-get for the batch ---- */

/* Check entry w against what br_db_get_open_revs reads for (id, want). */
static void same_as_open_revs(int node, const char *id, const struct br_rev *want,
                              const struct br_wire_revdoc *w)
{
    struct br_open_rev *orv = NULL;
    size_t n = 0;
    br_err e = br_db_get_open_revs(db[node], id, strlen(id), want, 1, true, &orv, &n);
    cr_assert_eq(w->id_len, strlen(id));
    cr_assert(memcmp(w->id, id, w->id_len) == 0);
    cr_assert(br_rev_eq(&w->rev, want));
    if (e == BR_ENOTFOUND || orv[0].missing || !orv[0].doc) {
        cr_assert(w->missing, "%s: missing", id);
        cr_assert_not(w->rev_known);
        br_open_revs_free(orv, n);
        return;
    }
    cr_assert_eq(e, BR_OK);
    const struct br_doc *d = orv[0].doc;
    cr_assert_not(w->missing, "%s: present", id);
    cr_assert(w->rev_known);
    cr_assert_eq(w->deleted, d->deleted);
    cr_assert_eq(w->body_len, d->body_len);
    cr_assert(memcmp(w->body, d->body, d->body_len) == 0);
    cr_assert_eq(w->n_history, d->n_revisions);
    for (size_t i = 0; i < d->n_revisions; i++)
        cr_assert(br_rev_eq(&w->history[i], &d->revisions[i]));
    cr_assert_eq(w->n_atts, d->n_atts);
    br_open_revs_free(orv, n);
}

Test(rep, local_get_revs_reads_a_batch_as_open_revs_does)
{
    /* x: 1 -> 2 (1 is no longer a leaf); y: a leaf; z: deleted; a conflict on y from B */
    struct br_rev x1 = put_json(A, "x", "{\"v\": 1}");
    char js[160], rt[BR_REV_TEXT_MAX];
    br_rev_format(&x1, rt);
    snprintf(js, sizeof js, "{\"_rev\":\"%s\",\"v\":2}", rt);
    struct br_rev x2 = put_json(A, "x", js);
    put_json(B, "y", "{\"from\": \"b\"}");
    replicate(B, A);
    struct br_rev yb = winner(A, "y");
    struct br_rev ya = put_json(C, "y", "{\"from\": \"c\", \"n\": [1, 2]}");
    replicate(C, A);
    put_json(A, "z", "{}");
    struct br_rev z2 = delete_doc(A, "z");
    struct br_rev bogus;
    cr_assert_eq(br_rev_parse("9-0123456789abcdef0123456789abcdef", 34, &bogus), BR_OK);
    struct br_rev xrevs[] = {x2, x1, bogus}, yrevs[] = {ya, yb}, zrevs[] = {z2}, nrevs[] = {x1};
    struct br_wire_docrevs in[] = {
        {"x", 1, xrevs, 3},    {"nope", 4, nrevs, 1}, {"y", 1, yrevs, 2},
        {"_bad", 4, nrevs, 1}, {"z", 1, zrevs, 1},    {"x", 1, xrevs, 0},
    };
    struct br_endpoint *e = ep(A);
    br_wire_arena a = {0};
    struct br_wire_revdoc *out = NULL;
    size_t n = 0;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(e->ops->get_revs(e->ctx, in, 6, NULL, 0, false, &a, &out, &n, &eb), BR_OK, "%s",
                 eb.msg);
    cr_assert_eq(n, 8, "one entry per revision asked for: %zu", n);
    const char *ids[] = {"x", "x", "x", "nope", "y", "y", "_bad", "z"};
    const struct br_rev *revs[] = {&x2, &x1, &bogus, &x1, &ya, &yb, &x1, &z2};
    for (size_t i = 0; i < n; i++)
        same_as_open_revs(A, ids[i], revs[i], &out[i]);
    cr_assert_not(out[0].missing);
    cr_assert(out[1].missing, "a non-leaf has no body");
    cr_assert(out[2].missing && out[3].missing && out[6].missing);
    cr_assert(!out[4].missing && !out[5].missing, "both leaves of a conflict");
    cr_assert(out[7].deleted);
    br_wire_arena_fini(&a);
    br_endpoint_free(e);
}
