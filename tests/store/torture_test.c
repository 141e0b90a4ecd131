/* torture_test.c — allocation torture for the store (STYLE.md: curl's torture tests).
 *
 * What it proves: for N = 0, 1, 2, ... the Nth allocation made through br_malloc fails while one
 * operation runs, twice: alone (br_alloc_fail_once: code that ignores a failure carries on with
 * working allocations and shows it) and with every later one (br_alloc_fail_after: every cleanup
 * path runs out of memory too). Each time the operation returns BR_ENOMEM and leaves the
 * database exactly as it was: every key and value of the database in every column
 * family (records, changes, local docs, blobs and their reference counts, the digest record) is
 * unchanged, and so are the in-memory counters (br_db_info); br_db_check is clean; a document no
 * test writes still reads; the document under test reads as before (a write is either wholly
 * there or absent). Once N is past the operation's last allocation it succeeds, with the same
 * result as an undisturbed run of the same operation on a twin database ("ref") built the same
 * way (revision ids are deterministic), and the loop stops. Reads must leave the store unchanged
 * even when they succeed. Also reported: an operation that returns BR_OK although one of its
 * allocations failed (a swallowed failure), a torture loop that never reached an allocation
 * (nothing tortured), and a "corrupt" log line written for what was only a failed allocation.
 *
 * Operations: br_db_put (create with inline attachments, update keeping a stub, delete),
 * br_db_bulk of 5 documents, a replicated write (new_edits=false) whose 3-revision history grafts
 * into an existing tree as a conflict, a bulk of 20 documents with attachments (the batch's
 * tables grow), a bulk of replicated revisions (new document, graft, already held, tombstone), an
 * update past revs_limit (pruning), a streamed blob (br_att_writer), br_db_get with revs and
 * conflicts, br_db_get_open_revs, br_db_revsdiff, br_db_changes (style=all_docs, doc_ids filter),
 * a changes stream batch (its position must not move on failure), br_db_all_docs with documents,
 * br_db_resolve (choosing a loser; merging), local documents, br_db_check, and the JSON edge
 * (br_json_parse, br_json_doc_parse, br_json_doc_render; jansson allocates through br_malloc
 * here). Allocations inside RocksDB and libcbor are not counted. Deterministic: no seed.
 *
 * Each test ends by comparing the in-memory digest and counters with the stored digest record,
 * and under ASan by asking LeakSanitizer for a leak check (__lsan_do_recoverable_leak_check): it
 * fails by name if there is any; a leak left for the worker's exit still fails the binary
 * (abort_on_error=1, see tests/CMakeLists.txt). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>
#include <rocksdb/c.h>

#include "barrel/alloc.h"
#include "barrel/att.h"
#include "barrel/cbor.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/store.h"

#include "store_int.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_LSAN 1
#endif
#endif
#ifdef TEST_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define MAX_N 100000 /* no operation here makes this many allocations */

static char *dir;
static br_store *st;
static br_db *db;  /* the database under torture */
static br_db *ref; /* its twin: the same operations without failures */

static const struct br_write_opts NOSYNC = {BR_SYNC_NONE, true};
static const struct br_write_opts REPL = {BR_SYNC_NONE, false};

static struct br_rev rev_of(const char *s)
{
    struct br_rev r;
    cr_assert_eq(br_rev_parse(s, strlen(s), &r), BR_OK, "bad rev %s", s);
    return r;
}

static const char *rtxt(const struct br_rev *r)
{
    static char buf[8][BR_REV_TEXT_MAX];
    static int i;
    char *b = buf[i++ % 8];
    br_rev_format(r, b);
    return b;
}

/* Canonical CBOR of a JSON text (built before any failure is armed). */
static void cbor_of(const char *json, br_buf *out)
{
    json_t *j = json_loads(json, 0, NULL);
    cr_assert(j, "bad json %s", json);
    br_buf_init(out, 0);
    cr_assert_eq(br_json_to_cbor(j, out, NULL), BR_OK);
    json_decref(j);
}

static struct br_rev put_ok(br_db *d, const char *id, const struct br_rev *rev, const char *json,
                            const struct br_att_in *atts, size_t n_atts)
{
    br_buf b;
    cbor_of(json, &b);
    struct br_put p = {.id = id,
                       .id_len = strlen(id),
                       .rev = rev,
                       .body = b.data,
                       .body_len = b.len,
                       .atts = atts,
                       .n_atts = n_atts};
    struct br_put_result res;
    br_err e = br_db_put(d, &p, &NOSYNC, &res);
    br_buf_fini(&b);
    cr_assert_eq(e, BR_OK, "put %s: %s %s", id, br_strerror(e), res.reason);
    return res.rev;
}

static void put_rev_ok(br_db *d, const char *id, const char *json, bool deleted,
                       const char *const *hist, size_t n)
{
    struct br_rev h[8];
    for (size_t i = 0; i < n; i++)
        h[i] = rev_of(hist[i]);
    br_buf b;
    cbor_of(json, &b);
    struct br_put p = {.id = id,
                       .id_len = strlen(id),
                       .deleted = deleted,
                       .body = b.data,
                       .body_len = b.len,
                       .history = h,
                       .n_history = n};
    struct br_put_result res;
    br_err e = br_db_put(d, &p, &REPL, &res);
    br_buf_fini(&b);
    cr_assert_eq(e, BR_OK, "put_rev %s: %s %s", id, br_strerror(e), res.reason);
}

static const uint8_t HELLO[] = "hello, world";
static uint8_t big[70000]; /* two chunks */

/* The state both databases start from:
 *   u1, u2  live documents with attachment a.txt
 *   keep    a document no test writes (read after every failure)
 *   r1      replicated 1-aaa -> 2-bbb
 *   k1, k2  a conflict: 1-cccccccc -> 2-bbbbbbbb (winner) and 2-aaaaaaaa
 *   del1    deleted
 *   local ckpt at 0-1 */
static void base_state(br_db *d)
{
    struct br_att_in a = {.name = "a.txt", .data = HELLO, .len = sizeof HELLO - 1};
    put_ok(d, "u1", NULL, "{\"v\":1}", &a, 1);
    put_ok(d, "u2", NULL, "{\"v\":2}", &a, 1);
    put_ok(d, "keep", NULL, "{\"untouched\":true}", NULL, 0);
    const char *r1[] = {"2-bbbb", "1-aaaa"};
    put_rev_ok(d, "r1", "{\"r\":1}", false, r1, 2);
    const char *k1a[] = {"2-bbbbbbbb", "1-cccccccc"};
    const char *k1b[] = {"2-aaaaaaaa", "1-cccccccc"};
    put_rev_ok(d, "k1", "{\"win\":true}", false, k1a, 2);
    put_rev_ok(d, "k1", "{\"win\":false}", false, k1b, 2);
    put_rev_ok(d, "k2", "{\"side\":1}", false, k1a, 2);
    put_rev_ok(d, "k2", "{\"side\":2}", false, k1b, 2);
    struct br_rev dr = put_ok(d, "del1", NULL, "{\"d\":1}", NULL, 0);
    struct br_put p = {.id = "del1", .id_len = 4, .rev = &dr, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(d, &p, &NOSYNC, &res), BR_OK);
    struct br_rev lr;
    cr_assert_eq(br_db_local_put(d, "ckpt", 4, NULL, NULL, 0, &NOSYNC, &lr), BR_OK);
}

static void close_all(void)
{
    br_db_close(db);
    br_db_close(ref);
    br_store_close(st);
    db = ref = NULL;
    st = NULL;
}

/* jansson allocates through br_malloc, so the JSON edge is tortured too (strings it returns are
 * released with jfree). */
static void *jalloc(size_t n)
{
    return br_malloc(n);
}

static void jfree(void *p)
{
    br_free(p);
}

static void setup(void)
{
    json_set_alloc_funcs(jalloc, jfree);
    br_log_set_level(BR_LOG_ERROR);
    tu_log_capture(); /* an allocation failure is not corruption: no such log line */
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + i / 251);
    dir = tu_tmpdir("torture");
    struct br_store_opts o = {.path = dir};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_create(st, "db", NULL), BR_OK);
    cr_assert_eq(br_store_db_create(st, "ref", NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    cr_assert_eq(br_store_db_open(st, "ref", &ref), BR_OK);
    base_state(db);
    base_state(ref);
}

static void teardown(void)
{
    br_alloc_fail_after(-1);
    close_all();
    tu_rmtree(dir);
    free(dir);
}

TestSuite(torture, .init = setup, .fini = teardown);

/* ---- the loop ---- */

typedef br_err (*op_fn)(br_db *d, void *arg);
typedef void (*after_fn)(br_db *d, void *arg, long n);

/* Everything a failed operation must leave as it was: each key and value of the database in each
 * column family (a hash and a count per family; in `meta` the digest record and the catalog
 * entry) and the in-memory counters. */
struct state {
    uint64_t hash[CF_COUNT];
    size_t keys[CF_COUNT];
    struct br_db_info info;
};

static const char *const cf_name[CF_COUNT] = {"default", "meta",  "docs",
                                              "changes", "local", "atts"};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Hash every key and value of [lo, hi) in one column family (length-prefixed, so the split
 * between key and value counts). */
static void state_cf(struct state *s, enum cf_id cf, const void *lo, size_t lo_len, const void *hi,
                     size_t hi_len)
{
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(ro, lo, lo_len);
    rocksdb_readoptions_set_iterate_upper_bound(ro, hi, hi_len);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->rdb, ro, st->cf[cf]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        s->hash[cf] = fnv(s->hash[cf], &kl, sizeof kl);
        s->hash[cf] = fnv(s->hash[cf], k, kl);
        s->hash[cf] = fnv(s->hash[cf], &vl, sizeof vl);
        s->hash[cf] = fnv(s->hash[cf], v, vl);
        s->keys[cf]++;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    cr_assert(!err, "state: iterator: %s", err);
}

static void state_take(struct state *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < CF_COUNT; i++)
        s->hash[i] = 1469598103934665603ull;
    uint8_t lo[4], hi[4];
    memcpy(lo, db->dbid, 4);
    store_be32(hi, store_rd32(db->dbid) + 1);
    for (int cf = CF_META; cf < CF_COUNT; cf++)
        state_cf(s, (enum cf_id)cf, lo, 4, hi, 4); /* in meta: the digest record */
    state_cf(s, CF_META, "cdb", 3, "cdc", 3);      /* the catalog entry of "db": 'c' name */
    cr_assert_eq(br_db_info(db, &s->info), BR_OK);
}

/* `when` says, for a person, which attempt this was. */
static void state_same(const struct state *a, const struct state *b, const char *when)
{
    for (int cf = 0; cf < CF_COUNT; cf++)
        cr_assert(a->hash[cf] == b->hash[cf] && a->keys[cf] == b->keys[cf],
                  "%s: the %s family changed (%zu keys, now %zu)", when, cf_name[cf], a->keys[cf],
                  b->keys[cf]);
    const struct br_db_info *x = &a->info, *y = &b->info;
    bool same = br_hlc_cmp(x->digest.last, y->digest.last) == 0 &&
                x->digest.doc_count == y->digest.doc_count &&
                memcmp(x->digest.set_hash, y->digest.set_hash, 16) == 0 &&
                x->doc_count == y->doc_count && x->doc_del_count == y->doc_del_count &&
                x->update_seq == y->update_seq && x->revs_limit == y->revs_limit &&
                x->size_external == y->size_external;
    cr_assert(same,
              "%s: the in-memory counters changed (docs %llu -> %llu, deleted %llu -> %llu, "
              "update_seq %llu -> %llu)",
              when, (unsigned long long)x->doc_count, (unsigned long long)y->doc_count,
              (unsigned long long)x->doc_del_count, (unsigned long long)y->doc_del_count,
              (unsigned long long)x->update_seq, (unsigned long long)y->update_seq);
}

/* The database is consistent and still serves reads. */
static void check_consistent(const char *when)
{
    struct br_db_check c;
    br_err e = br_db_check(db, &c);
    cr_assert_eq(e, BR_OK, "%s: check: %s", when, br_strerror(e));
    cr_assert_eq(c.problems, 0, "%s: br_db_check: %s", when, c.first);
    struct br_doc *d = NULL;
    e = br_db_get(db, "keep", 4, NULL, &d, NULL);
    cr_assert_eq(e, BR_OK, "%s: a read afterwards: %s", when, br_strerror(e));
    br_doc_free(d);
}

/* One attempt with allocation n failing: only that one (once) or every one from it on. */
static br_err attempt(op_fn op, void *arg, long n, bool once, long *tried)
{
    if (once)
        br_alloc_fail_once(n);
    else
        br_alloc_fail_after(n);
    br_err e = op(db, arg);
    *tried = br_alloc_count();
    br_alloc_fail_after(-1);
    return e;
}

/* Run op on db with allocation N failing, N = 0, 1, ...: for each N twice, with only the Nth
 * allocation failing (so code that ignores the failure and carries on meets working allocations
 * afterwards) and with every allocation from the Nth on failing (so every cleanup path runs out
 * of memory too). Each attempt must return BR_ENOMEM and leave the store as it was, and
 * `undone` checks more; once the operation succeeds without reaching allocation N, `done` checks
 * the result (for a read: the store as it was) and the loop stops. Returns the number of
 * allocations the operation needs (at least one: a loop that fails nothing proves nothing). */
static long torture_loop(const char *name, op_fn op, after_fn undone, after_fn done, void *arg,
                         bool read_only)
{
    struct state before, now;
    state_take(&before);
    for (long n = 0; n < MAX_N; n++) {
        for (int mode = 0; mode < 2; mode++) {
            bool once = mode == 0;
            char when[160];
            snprintf(when, sizeof when, "%s, %s %ld failing", name,
                     once ? "only allocation" : "every allocation from", n);
            long tried;
            br_err e = attempt(op, arg, n, once, &tried);
            cr_assert(!tu_log_contains("corrupt"), "%s: the store logged corruption", when);
            if (e == BR_OK) {
                cr_assert_leq(tried, n, "%s: BR_OK after %ld allocations: a swallowed failure",
                              when, tried);
                cr_assert(once, "%s: BR_OK, but not with only that one failing (not deterministic)",
                          when);
                cr_assert_gt(n, 0, "%s makes no allocation through br_malloc: nothing tortured",
                             name);
                if (read_only) {
                    state_take(&now);
                    state_same(&before, &now, name);
                }
                if (done)
                    done(db, arg, n);
                check_consistent(name);
                return n;
            }
            cr_assert_eq(e, BR_ENOMEM, "%s: it returned %s, not ENOMEM", when, br_strerror(e));
            state_take(&now);
            state_same(&before, &now, when);
            if (undone)
                undone(db, arg, n);
            check_consistent(when);
        }
    }
    cr_assert_fail("%s: still failing after %d allocations", name, MAX_N);
    return -1;
}

/* A write: `undone` checks the document after each failure, `done` after the success. */
static long torture(const char *name, op_fn op, after_fn undone, after_fn done, void *arg)
{
    return torture_loop(name, op, undone, done, arg, false);
}

/* A read (or a computation that does not touch the store): nothing may change, ever. */
static long torture_read(const char *name, op_fn op, void *arg)
{
    return torture_loop(name, op, NULL, NULL, arg, true);
}

/* The in-memory digest and counters equal the stored digest record byte for byte (nothing
 * half-applied in memory: a reopen would read the record), then leaks. */
static void finish(void)
{
    uint8_t mem[DIGEST_LEN], dk[5];
    store_digest_encode(&db->st, mem);
    memcpy(dk, db->dbid, 4);
    dk[4] = 'd';
    char *v = NULL;
    size_t vl = 0;
    cr_assert_eq(store_get(st, CF_META, dk, sizeof dk, &v, &vl), BR_OK);
    cr_assert(v && vl == DIGEST_LEN && memcmp(v, mem, DIGEST_LEN) == 0,
              "the in-memory digest and counters differ from the stored digest record");
    rocksdb_free(v);
#ifdef TEST_LSAN
    /* Whatever the store still holds is reachable; what a failed attempt dropped is not. */
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
                 "LeakSanitizer found leaks (see the report above)");
#endif
}

static struct br_doc *winner(br_db *d, const char *id)
{
    struct br_get_opts o = {.conflicts = true, .include_deleted = true, .revs = true};
    struct br_doc *doc = NULL;
    br_err e = br_db_get(d, id, strlen(id), &o, &doc, NULL);
    cr_assert(e == BR_OK || e == BR_ENOTFOUND, "get %s: %s", id, br_strerror(e));
    return doc;
}

/* Two reads of the same document in db and ref agree (ids, revs, bodies, stubs, lists). */
static void same_doc(const struct br_doc *a, const struct br_doc *b, const char *what)
{
    cr_assert(a && b, "%s: one side missing", what);
    json_t *ja, *jb;
    cr_assert_eq(br_json_doc_render(a, &ja, NULL), BR_OK);
    cr_assert_eq(br_json_doc_render(b, &jb, NULL), BR_OK);
    char *sa = json_dumps(ja, JSON_COMPACT | JSON_SORT_KEYS);
    char *sb = json_dumps(jb, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert_str_eq(sa, sb, "%s differs from the undisturbed run", what);
    jfree(sa);
    jfree(sb);
    json_decref(ja);
    json_decref(jb);
}

static void same_in_both(const char *id, const char *what)
{
    struct br_doc *a = winner(db, id), *b = winner(ref, id);
    if (!a || !b)
        cr_assert(!a && !b, "%s: %s exists on one side only", what, id);
    else
        same_doc(a, b, what);
    br_doc_free(a);
    br_doc_free(b);
}

/* ---- writes ---- */

struct put_arg {
    const char *name;
    struct br_put p;
    struct br_write_opts wo;
    struct br_put_result res;
    struct br_doc *before; /* the document's state before (NULL: absent) */
};

static br_err op_put(br_db *d, void *arg)
{
    struct put_arg *a = arg;
    return br_db_put(d, &a->p, &a->wo, &a->res);
}

static void put_undone(br_db *d, void *arg, long n)
{
    struct put_arg *a = arg;
    struct br_doc *now = winner(d, a->p.id);
    if (!a->before)
        cr_assert(now == NULL, "%s: allocation %ld failed but %s was written", a->name, n, a->p.id);
    else
        same_doc(now, a->before, a->name);
    br_doc_free(now);
}

static void put_done(br_db *d, void *arg, long n)
{
    (void)d;
    (void)n;
    struct put_arg *a = arg;
    same_in_both(a->p.id, a->name);
}

static void run_put(struct put_arg *a)
{
    a->before = winner(db, a->p.id);
    struct br_put_result rr;
    cr_assert_eq(br_db_put(ref, &a->p, &a->wo, &rr), BR_OK, "%s on ref: %s", a->name, rr.reason);
    long n = torture(a->name, op_put, put_undone, put_done, a);
    cr_assert(br_rev_eq(&a->res.rev, &rr.rev), "%s wrote %s, the undisturbed run %s", a->name,
              rtxt(&a->res.rev), rtxt(&rr.rev));
    br_doc_free(a->before);
    cr_log_info("%s: %ld allocations", a->name, n);
}

Test(torture, put_create_with_inline_attachments)
{
    br_buf b;
    cbor_of("{\"a\":1,\"b\":[1,2,{\"c\":\"d\"}],\"e\":\"text\"}", &b);
    struct br_att_in atts[] = {{.name = "x.txt", .data = HELLO, .len = sizeof HELLO - 1},
                               {.name = "y.bin", .data = big, .len = sizeof big}};
    struct put_arg a = {.name = "put create",
                        .p = {.id = "new1",
                              .id_len = 4,
                              .body = b.data,
                              .body_len = b.len,
                              .atts = atts,
                              .n_atts = 2},
                        .wo = NOSYNC};
    run_put(&a);
    br_buf_fini(&b);
    finish();
}

Test(torture, put_update_keeping_a_stub_and_adding_an_attachment)
{
    struct br_doc *cur = winner(db, "u1");
    br_buf b;
    cbor_of("{\"v\":2,\"w\":[true,false,null]}", &b);
    struct br_att_in atts[] = {{.name = "a.txt", .stub = true},
                               {.name = "z.bin", .data = big, .len = 1000}};
    struct put_arg a = {.name = "put update",
                        .p = {.id = "u1",
                              .id_len = 2,
                              .rev = &cur->rev,
                              .body = b.data,
                              .body_len = b.len,
                              .atts = atts,
                              .n_atts = 2},
                        .wo = NOSYNC};
    run_put(&a);
    br_buf_fini(&b);
    br_doc_free(cur);
    finish();
}

Test(torture, put_delete)
{
    struct br_doc *cur = winner(db, "u2");
    struct put_arg a = {.name = "put delete",
                        .p = {.id = "u2", .id_len = 2, .rev = &cur->rev, .deleted = true},
                        .wo = NOSYNC};
    run_put(&a);
    br_doc_free(cur);
    finish();
}

Test(torture, replicated_history_grafting_a_conflict)
{
    struct br_rev h[] = {rev_of("3-cccc"), rev_of("2-dddd"), rev_of("1-aaaa")};
    br_buf b;
    cbor_of("{\"branch\":\"other\"}", &b);
    struct br_att_in att = {.name = "r.txt", .data = HELLO, .len = 5, .revpos = 3};
    struct put_arg a = {.name = "replicated put",
                        .p = {.id = "r1",
                              .id_len = 2,
                              .body = b.data,
                              .body_len = b.len,
                              .atts = &att,
                              .n_atts = 1,
                              .history = h,
                              .n_history = 3},
                        .wo = REPL};
    run_put(&a);
    struct br_doc *d = winner(db, "r1");
    cr_assert_str_eq(rtxt(&d->rev), "3-cccc");
    cr_assert_eq(d->n_conflicts, 1, "the graft should make a conflict");
    br_doc_free(d);
    br_buf_fini(&b);
    finish();
}

/* A batch: each document either as before (absent if it was) after a failure, and as in the
 * undisturbed batch on ref after the success. */
struct bulk_arg {
    const char *name;
    size_t n;
    struct br_write_opts wo;
    struct br_put puts[20];
    struct br_put_result res[20];
    struct br_doc *before[20];
};

static br_err op_bulk(br_db *d, void *arg)
{
    struct bulk_arg *a = arg;
    return br_db_bulk(d, a->puts, a->n, &a->wo, a->res);
}

static void bulk_undone(br_db *d, void *arg, long n)
{
    struct bulk_arg *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        struct br_doc *now = winner(d, a->puts[i].id);
        if (!a->before[i])
            cr_assert(now == NULL, "%s: allocation %ld failed but %s was written", a->name, n,
                      a->puts[i].id);
        else
            same_doc(now, a->before[i], a->name);
        br_doc_free(now);
    }
}

static void bulk_done(br_db *d, void *arg, long n)
{
    (void)d;
    (void)n;
    struct bulk_arg *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        cr_assert_eq(a->res[i].err, BR_OK, "%s item %zu: %s", a->name, i, a->res[i].reason);
        same_in_both(a->puts[i].id, a->name);
    }
}

static void run_bulk(struct bulk_arg *a)
{
    struct br_put_result rr[20];
    for (size_t i = 0; i < a->n; i++)
        a->before[i] = winner(db, a->puts[i].id);
    cr_assert_eq(br_db_bulk(ref, a->puts, a->n, &a->wo, rr), BR_OK);
    long n = torture(a->name, op_bulk, bulk_undone, bulk_done, a);
    for (size_t i = 0; i < a->n; i++) {
        cr_assert(br_rev_eq(&a->res[i].rev, &rr[i].rev), "%s item %zu: %s vs %s", a->name, i,
                  rtxt(&a->res[i].rev), rtxt(&rr[i].rev));
        br_doc_free(a->before[i]);
    }
    cr_log_info("%s: %ld allocations", a->name, n);
}

Test(torture, bulk_of_five_documents)
{
    struct bulk_arg a = {.name = "bulk", .n = 5, .wo = NOSYNC};
    br_buf b[5];
    const char *ids[] = {"b1", "b2", "b3", "u2", "del1"};
    struct br_att_in att = {.name = "q.txt", .data = HELLO, .len = 3};
    struct br_doc *u2 = winner(db, "u2");
    for (int i = 0; i < 5; i++) {
        char json[64];
        snprintf(json, sizeof json, "{\"i\":%d,\"s\":\"%s\"}", i, ids[i]);
        cbor_of(json, &b[i]);
        a.puts[i] = (struct br_put){
            .id = ids[i], .id_len = strlen(ids[i]), .body = b[i].data, .body_len = b[i].len};
    }
    a.puts[1].atts = &att;
    a.puts[1].n_atts = 1;
    a.puts[3].rev = &u2->rev; /* update; del1 is re-created over its tombstone */
    run_bulk(&a);
    for (int i = 0; i < 5; i++)
        br_buf_fini(&b[i]);
    br_doc_free(u2);
    finish();
}

/* Twenty new documents, each with its own inline attachment: the batch's tables grow (document
 * slots, records, summaries, the attachment batch) while allocations fail. */
Test(torture, bulk_of_twenty_documents_with_attachments)
{
    struct bulk_arg a = {.name = "bulk 20", .n = 20, .wo = NOSYNC};
    char ids[20][8];
    struct br_att_in atts[20];
    for (int i = 0; i < 20; i++) {
        snprintf(ids[i], sizeof ids[i], "m%02d", i);
        atts[i] = (struct br_att_in){.name = "f.bin", .data = big + i, .len = 100 + (size_t)i};
        a.puts[i] = (struct br_put){.id = ids[i], .id_len = 3, .atts = &atts[i], .n_atts = 1};
    }
    run_bulk(&a);
    finish();
}

/* Replicated revisions in one batch (new_edits=false): a new document with a history, a child of
 * k2's winner (still in conflict with 2-aaaaaaaa), a revision r1 already holds (nothing to write
 * for it) and a tombstone child of u1's only revision (u1 becomes deleted; its blob loses a
 * reference). */
Test(torture, bulk_of_replicated_revisions)
{
    struct br_doc *u1 = winner(db, "u1");
    cr_assert_eq(u1->n_revisions, 1);
    struct br_rev h_new[] = {rev_of("2-0b0b"), rev_of("1-0a0a")};
    struct br_rev h_k2[] = {rev_of("3-e0e0"), rev_of("2-bbbbbbbb"), rev_of("1-cccccccc")};
    struct br_rev h_r1[] = {rev_of("2-bbbb"), rev_of("1-aaaa")};
    struct br_rev h_u1[] = {rev_of("2-dead"), u1->rev};
    br_buf b;
    cbor_of("{\"replicated\":true}", &b);
    struct bulk_arg a = {.name = "replicated bulk", .n = 4, .wo = REPL};
    a.puts[0] = (struct br_put){.id = "n1", .id_len = 2, .history = h_new, .n_history = 2};
    a.puts[1] = (struct br_put){.id = "k2", .id_len = 2, .history = h_k2, .n_history = 3};
    a.puts[2] = (struct br_put){.id = "r1", .id_len = 2, .history = h_r1, .n_history = 2};
    a.puts[3] =
        (struct br_put){.id = "u1", .id_len = 2, .deleted = true, .history = h_u1, .n_history = 2};
    for (int i = 0; i < 3; i++) {
        a.puts[i].body = b.data;
        a.puts[i].body_len = b.len;
    }
    run_bulk(&a);
    struct br_doc *k2 = winner(db, "k2");
    cr_assert_str_eq(rtxt(&k2->rev), "3-e0e0");
    cr_assert_eq(k2->n_conflicts, 1);
    br_doc_free(k2);
    br_doc_free(u1);
    br_buf_fini(&b);
    finish();
}

/* An update past revs_limit prunes the tree and drops the old leaf's attachment reference. */
Test(torture, update_past_revs_limit_prunes_the_tree)
{
    cr_assert_eq(br_db_set_revs_limit(db, 3), BR_OK);
    cr_assert_eq(br_db_set_revs_limit(ref, 3), BR_OK);
    for (int i = 0; i < 4; i++) {
        char json[32];
        snprintf(json, sizeof json, "{\"gen\":%d}", i + 2);
        struct br_att_in att = {.name = "g.bin", .data = big + i, .len = 500};
        struct br_doc *cur = winner(db, "u1");
        struct br_rev r1 = put_ok(db, "u1", &cur->rev, json, &att, 1);
        struct br_rev r2 = put_ok(ref, "u1", &cur->rev, json, &att, 1);
        cr_assert(br_rev_eq(&r1, &r2));
        br_doc_free(cur);
    }
    struct br_doc *cur = winner(db, "u1");
    br_buf b;
    cbor_of("{\"gen\":6}", &b);
    struct br_att_in att = {.name = "g.bin", .data = big + 9, .len = 500};
    struct put_arg a = {.name = "put past revs_limit",
                        .p = {.id = "u1",
                              .id_len = 2,
                              .rev = &cur->rev,
                              .body = b.data,
                              .body_len = b.len,
                              .atts = &att,
                              .n_atts = 1},
                        .wo = NOSYNC};
    run_put(&a);
    struct br_doc *d = winner(db, "u1");
    cr_assert_eq(d->rev.gen, 6);
    cr_assert_leq(d->n_revisions, 3);
    br_doc_free(d);
    br_doc_free(cur);
    br_buf_fini(&b);
    finish();
}

/* A streamed blob: writer open, two chunks, finish. A failed attempt leaves nothing behind (no
 * chunk, no upload marker: the state check of the loop covers the atts family). */
struct stream_arg {
    uint8_t key[32];
    uint64_t len;
};

static br_err op_stream(br_db *d, void *arg)
{
    struct stream_arg *a = arg;
    br_att_writer *w;
    char digest[48];
    br_err e = br_att_writer_open(d, &w);
    if (e)
        return e;
    e = br_att_writer_write(w, big, sizeof big);
    if (e) {
        br_att_writer_abort(w);
        return e;
    }
    return br_att_writer_finish(w, a->key, digest, &a->len);
}

Test(torture, att_writer_stream_and_finish)
{
    struct stream_arg a;
    memset(&a, 0, sizeof a);
    long n = torture("att writer", op_stream, NULL, NULL, &a);
    cr_assert_eq(a.len, sizeof big);
    br_att_reader *rd;
    uint64_t len = 0;
    cr_assert_eq(br_att_reader_open(db, a.key, &rd, &len), BR_OK);
    cr_assert_eq(len, sizeof big);
    br_att_reader_close(rd);
    cr_log_info("att writer: %ld allocations", n);
    finish();
}

struct resolve_arg {
    const char *id;
    struct br_resolve rs;
    struct br_resolve_result out;
    struct br_doc *before;
};

static br_err op_resolve(br_db *d, void *arg)
{
    struct resolve_arg *a = arg;
    return br_db_resolve(d, a->id, strlen(a->id), &a->rs, &NOSYNC, &a->out, NULL);
}

static void resolve_undone(br_db *d, void *arg, long n)
{
    (void)n;
    struct resolve_arg *a = arg;
    struct br_doc *now = winner(d, a->id);
    same_doc(now, a->before, "resolve (failed)");
    br_doc_free(now);
}

static void resolve_done(br_db *d, void *arg, long n)
{
    (void)d;
    (void)n;
    struct resolve_arg *a = arg;
    same_in_both(a->id, "resolve");
}

static void run_resolve(struct resolve_arg *a, const char *name)
{
    a->before = winner(db, a->id);
    struct br_resolve_result rr;
    cr_assert_eq(br_db_resolve(ref, a->id, strlen(a->id), &a->rs, &NOSYNC, &rr, NULL), BR_OK);
    long n = torture(name, op_resolve, resolve_undone, resolve_done, a);
    cr_assert(br_rev_eq(&a->out.rev, &rr.rev));
    cr_assert_eq(a->out.conflicts_resolved, rr.conflicts_resolved);
    br_doc_free(a->before);
    cr_log_info("%s: %ld allocations", name, n);
}

Test(torture, resolve_choosing_the_loser)
{
    struct br_rev base = rev_of("2-bbbbbbbb"), loser = rev_of("2-aaaaaaaa");
    struct resolve_arg a = {.id = "k1", .rs = {.base = &base, .choose = &loser}};
    run_resolve(&a, "resolve choose");
    finish();
}

Test(torture, resolve_by_merge)
{
    struct br_rev base = rev_of("2-bbbbbbbb");
    br_buf b;
    cbor_of("{\"merged\":[1,2]}", &b);
    struct resolve_arg a = {.id = "k2",
                            .rs = {.base = &base, .merge_body = b.data, .merge_body_len = b.len}};
    run_resolve(&a, "resolve merge");
    br_buf_fini(&b);
    finish();
}

struct local_arg {
    struct br_rev rev, out;
    br_buf body;
};

static br_err op_local_put(br_db *d, void *arg)
{
    struct local_arg *a = arg;
    return br_db_local_put(d, "ckpt", 4, &a->rev, a->body.data, a->body.len, &NOSYNC, &a->out);
}

static void local_undone(br_db *d, void *arg, long n)
{
    struct local_arg *a = arg;
    struct br_doc *l = NULL;
    cr_assert_eq(br_db_local_get(d, "ckpt", 4, &l), BR_OK);
    cr_assert(br_rev_eq(&l->rev, &a->rev), "local put: allocation %ld failed but it moved to %s", n,
              rtxt(&l->rev));
    br_doc_free(l);
}

static br_err op_local_get(br_db *d, void *arg)
{
    struct br_doc **out = arg;
    return br_db_local_get(d, "ckpt", 4, out);
}

Test(torture, local_put_and_get)
{
    struct local_arg a;
    memset(&a, 0, sizeof a);
    cr_assert_eq(br_rev_parse_local("0-1", 3, &a.rev), BR_OK);
    cbor_of("{\"last_seq\":\"12-abc\"}", &a.body);
    torture("local put", op_local_put, local_undone, NULL, &a);
    cr_assert_str_eq(a.out.hash, "2");
    br_buf_fini(&a.body);
    struct br_doc *l = NULL;
    torture_read("local get", op_local_get, &l);
    cr_assert_str_eq(l->rev.hash, "2");
    br_doc_free(l);
    finish();
}

/* ---- reads ---- */

struct get_arg {
    const char *id;
    struct br_get_opts o;
    struct br_doc *out;
};

static br_err op_get(br_db *d, void *arg)
{
    struct get_arg *a = arg;
    return br_db_get(d, a->id, strlen(a->id), &a->o, &a->out, NULL);
}

Test(torture, get_with_revs_and_conflicts)
{
    /* give k1's winner attachments so the stubs are copied too */
    struct br_doc *k1 = winner(db, "k1");
    struct br_att_in atts[] = {{.name = "a.txt", .data = HELLO, .len = 4},
                               {.name = "b.bin", .data = big, .len = sizeof big}};
    put_ok(db, "k1", &k1->rev, "{\"win\":2}", atts, 2);
    put_ok(ref, "k1", &k1->rev, "{\"win\":2}", atts, 2);
    br_doc_free(k1);
    struct get_arg a = {.id = "k1",
                        .o = {.revs = true, .conflicts = true, .deleted_conflicts = true}};
    long n = torture_read("get", op_get, &a);
    struct br_doc *want = NULL;
    cr_assert_eq(br_db_get(ref, "k1", 2, &a.o, &want, NULL), BR_OK);
    same_doc(a.out, want, "get");
    cr_assert_eq(a.out->n_conflicts, 1);
    cr_assert_eq(a.out->n_atts, 2);
    br_doc_free(a.out);
    br_doc_free(want);
    cr_log_info("get: %ld allocations", n);
    finish();
}

struct open_revs_arg {
    const struct br_rev *revs;
    size_t n;
    struct br_open_rev *out;
    size_t n_out;
};

static br_err op_open_revs(br_db *d, void *arg)
{
    struct open_revs_arg *a = arg;
    return br_db_get_open_revs(d, "k1", 2, a->revs, a->n, true, &a->out, &a->n_out);
}

static void same_open_revs(const struct open_revs_arg *a)
{
    struct open_revs_arg b = *a;
    cr_assert_eq(op_open_revs(ref, &b), BR_OK);
    cr_assert_eq(a->n_out, b.n_out);
    for (size_t i = 0; i < a->n_out; i++) {
        cr_assert_eq(a->out[i].missing, b.out[i].missing);
        cr_assert(br_rev_eq(&a->out[i].rev, &b.out[i].rev));
        if (!a->out[i].missing)
            same_doc(a->out[i].doc, b.out[i].doc, "open_revs");
    }
    br_open_revs_free(b.out, b.n_out);
}

Test(torture, get_open_revs_all_leaves_and_given_revs)
{
    struct open_revs_arg a = {0};
    long n = torture_read("open_revs all", op_open_revs, &a);
    cr_assert_eq(a.n_out, 2);
    same_open_revs(&a);
    br_open_revs_free(a.out, a.n_out);
    struct br_rev revs[] = {rev_of("2-aaaaaaaa"), rev_of("9-ffff"), rev_of("1-cccccccc")};
    struct open_revs_arg g = {.revs = revs, .n = 3};
    long m = torture_read("open_revs given", op_open_revs, &g);
    cr_assert_eq(g.n_out, 3);
    cr_assert(!g.out[0].missing && g.out[1].missing && g.out[2].missing);
    same_open_revs(&g);
    br_open_revs_free(g.out, g.n_out);
    cr_log_info("open_revs: %ld / %ld allocations", n, m);
    finish();
}

struct revsdiff_arg {
    struct br_revsdiff_in in[4];
    struct br_revsdiff_out out[4];
};

static br_err op_revsdiff(br_db *d, void *arg)
{
    struct revsdiff_arg *a = arg;
    return br_db_revsdiff(d, a->in, 4, a->out);
}

Test(torture, revsdiff)
{
    struct br_rev k1[] = {rev_of("2-aaaaaaaa"), rev_of("3-eeee"), rev_of("3-eeee"),
                          rev_of("4-ffff")};
    struct br_rev nope[] = {rev_of("1-abcd")};
    struct br_rev r1[] = {rev_of("2-bbbb"), rev_of("1-aaaa")};
    struct br_rev u1[] = {rev_of("5-abab")};
    struct revsdiff_arg a = {
        .in = {{"k1", 2, k1, 4}, {"nope", 4, nope, 1}, {"r1", 2, r1, 2}, {"u1", 2, u1, 1}}};
    long n = torture_read("revsdiff", op_revsdiff, &a);
    struct br_revsdiff_out want[4];
    cr_assert_eq(br_db_revsdiff(ref, a.in, 4, want), BR_OK);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(a.out[i].n_missing, want[i].n_missing, "doc %d", i);
        cr_assert_eq(a.out[i].n_possible_ancestors, want[i].n_possible_ancestors, "doc %d", i);
        for (size_t j = 0; j < a.out[i].n_missing; j++)
            cr_assert(br_rev_eq(&a.out[i].missing[j], &want[i].missing[j]));
        for (size_t j = 0; j < a.out[i].n_possible_ancestors; j++)
            cr_assert(br_rev_eq(&a.out[i].possible_ancestors[j], &want[i].possible_ancestors[j]));
    }
    cr_assert_eq(a.out[0].n_missing, 2);
    cr_assert_eq(a.out[1].n_missing, 1);
    cr_assert_eq(a.out[2].n_missing, 0);
    br_revsdiff_out_fini(a.out, 4);
    br_revsdiff_out_fini(want, 4);
    cr_log_info("revsdiff: %ld allocations", n);
    finish();
}

struct changes_arg {
    struct br_changes_opts o;
    size_t seen, leaves;
};

static int changes_cb(void *arg, const struct br_change *c)
{
    struct changes_arg *a = arg;
    a->seen++;
    a->leaves += c->n_leaves;
    return 0;
}

static br_err op_changes(br_db *d, void *arg)
{
    struct changes_arg *a = arg;
    a->seen = a->leaves = 0;
    return br_db_changes(d, &a->o, changes_cb, a, NULL);
}

Test(torture, changes_all_docs_style_and_doc_ids)
{
    struct changes_arg a = {.o = {.all_docs = true}};
    long n = torture_read("changes all_docs", op_changes, &a);
    struct changes_arg w = a;
    cr_assert_eq(op_changes(ref, &w), BR_OK);
    cr_assert(a.seen == w.seen && a.leaves == w.leaves && a.seen == 7 && a.leaves == 9,
              "changes: %zu entries / %zu leaves, ref %zu / %zu", a.seen, a.leaves, w.seen,
              w.leaves);
    const char *ids[] = {"k1", "r1", "zz"};
    struct changes_arg f = {.o = {.all_docs = true, .doc_ids = ids, .n_doc_ids = 3}};
    long m = torture_read("changes doc_ids", op_changes, &f);
    cr_assert(f.seen == 2 && f.leaves == 3, "filtered: %zu / %zu", f.seen, f.leaves);
    cr_log_info("changes: %ld / %ld allocations", n, m);
    finish();
}

/* A changes stream: a failed batch must not move the stream's position (the consumer gets the
 * batch again), and the batch that succeeds is the one an undisturbed stream delivers. */
struct stream_next_arg {
    br_changes_stream *cs;
    char ids[3][8];
    size_t seen;
    struct br_hlc last;
    struct br_hlc start; /* the position before */
};

static int stream_next_cb(void *arg, const struct br_change *c)
{
    struct stream_next_arg *a = arg;
    if (a->seen < 3)
        snprintf(a->ids[a->seen], sizeof a->ids[0], "%.*s", (int)c->id_len, c->id);
    a->seen++;
    return 0;
}

static br_err op_stream_next(br_db *d, void *arg)
{
    (void)d;
    struct stream_next_arg *a = arg;
    a->seen = 0;
    return br_changes_stream_next(a->cs, 3, 0, stream_next_cb, a, &a->last);
}

static void stream_next_undone(br_db *d, void *arg, long n)
{
    (void)d;
    struct stream_next_arg *a = arg;
    cr_assert(br_hlc_cmp(br_changes_stream_position(a->cs), a->start) == 0,
              "changes stream: allocation %ld failed but the position moved", n);
}

Test(torture, changes_stream_batch)
{
    struct br_changes_opts o = {.all_docs = true};
    struct stream_next_arg a = {0}, w = {0};
    cr_assert_eq(br_changes_stream_open(db, &o, &a.cs), BR_OK);
    cr_assert_eq(br_changes_stream_open(ref, &o, &w.cs), BR_OK);
    /* Acknowledge the first batch, so the tortured one starts mid-feed. */
    cr_assert_eq(op_stream_next(db, &a), BR_OK);
    br_changes_stream_ack(a.cs, a.last);
    cr_assert_eq(op_stream_next(ref, &w), BR_OK);
    br_changes_stream_ack(w.cs, w.last);
    a.start = br_changes_stream_position(a.cs);
    long n = torture_loop("changes stream", op_stream_next, stream_next_undone, NULL, &a, true);
    cr_assert_eq(op_stream_next(ref, &w), BR_OK);
    cr_assert(a.seen == 3 && w.seen == 3, "stream batch: %zu entries, ref %zu", a.seen, w.seen);
    for (int i = 0; i < 3; i++)
        cr_assert_str_eq(a.ids[i], w.ids[i], "stream batch entry %d", i);
    br_changes_stream_close(a.cs);
    br_changes_stream_close(w.cs);
    cr_log_info("changes stream: %ld allocations", n);
    finish();
}

struct alldocs_arg {
    size_t rows, with_conflicts;
};

static int alldocs_cb(void *arg, const char *id, size_t id_len, const struct br_rev *rev,
                      const struct br_doc *doc)
{
    (void)id;
    (void)id_len;
    (void)rev;
    struct alldocs_arg *a = arg;
    a->rows++;
    a->with_conflicts += doc && doc->n_conflicts;
    return 0;
}

static br_err op_all_docs(br_db *d, void *arg)
{
    struct alldocs_arg *a = arg;
    struct br_alldocs_opts o = {.inclusive_end = true, .include_docs = true, .conflicts = true};
    uint64_t total;
    memset(a, 0, sizeof *a);
    return br_db_all_docs(d, &o, alldocs_cb, a, &total);
}

Test(torture, all_docs_with_docs_and_conflicts)
{
    struct alldocs_arg a;
    long n = torture_read("all_docs", op_all_docs, &a);
    cr_assert(a.rows == 6 && a.with_conflicts == 2, "all_docs: %zu rows, %zu conflicted", a.rows,
              a.with_conflicts);
    cr_log_info("all_docs: %ld allocations", n);
    finish();
}

static br_err op_check(br_db *d, void *arg)
{
    struct br_db_check *c = arg;
    return br_db_check(d, c);
}

Test(torture, check)
{
    struct br_db_check c;
    torture_read("check", op_check, &c);
    cr_assert_eq(c.problems, 0, "%s", c.first);
    cr_assert_eq(c.docs, 7);
    finish();
}

/* ---- the JSON edge ---- */

static const char DOC_JSON[] =
    "{\"_id\":\"j1\",\"_rev\":\"3-cccc\",\"_revisions\":{\"start\":3,\"ids\":[\"cccc\","
    "\"bbbb\",\"aaaa\"]},\"title\":\"x\",\"n\":[1,2.5,-3,{\"deep\":[true,null,\"\\u00e9\"]}],"
    "\"_attachments\":{\"a.txt\":{\"content_type\":\"text/plain\",\"data\":\"aGVsbG8=\"},"
    "\"s.bin\":{\"stub\":true,\"digest\":\"md5-XUFAKrxLKna5cZ2REBfFkg==\",\"revpos\":1}}}";

struct json_arg {
    json_t *obj;
    struct br_json_doc d;
    const struct br_doc *doc;
    json_t *out;
};

static br_err op_json_parse(br_db *d, void *arg)
{
    (void)d;
    json_t **out = arg;
    return br_json_parse(DOC_JSON, sizeof DOC_JSON - 1, 0, out, NULL);
}

static br_err op_json_doc_parse(br_db *d, void *arg)
{
    (void)d;
    struct json_arg *a = arg;
    return br_json_doc_parse(a->obj, NULL, &a->d, NULL);
}

static br_err op_json_render(br_db *d, void *arg)
{
    (void)d;
    struct json_arg *a = arg;
    return br_json_doc_render(a->doc, &a->out, NULL);
}

Test(torture, json_parse_doc_parse_and_render)
{
    json_t *j = NULL;
    long n1 = torture_read("json parse", op_json_parse, &j);
    struct json_arg a = {.obj = j};
    long n2 = torture_read("json doc parse", op_json_doc_parse, &a);
    cr_assert_str_eq(a.d.id, "j1");
    cr_assert_eq(a.d.n_history, 3);
    cr_assert_eq(a.d.n_atts, 2);
    br_json_doc_fini(&a.d);
    json_decref(j);

    struct br_doc *k1 = winner(db, "k1");
    struct br_att_in atts[] = {{.name = "a.txt", .data = HELLO, .len = 4}};
    put_ok(db, "k1", &k1->rev, "{\"win\":2,\"list\":[1,\"two\",3.5]}", atts, 1);
    br_doc_free(k1);
    struct br_get_opts o = {.revs = true, .conflicts = true};
    struct br_doc *doc = NULL;
    cr_assert_eq(br_db_get(db, "k1", 2, &o, &doc, NULL), BR_OK);
    a.doc = doc;
    long n3 = torture_read("json render", op_json_render, &a);
    char *s = json_dumps(a.out, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert(strstr(s, "\"_conflicts\":[\"2-aaaaaaaa\"]") && strstr(s, "\"_attachments\""), "%s",
              s);
    jfree(s);
    json_decref(a.out);
    br_doc_free(doc);
    cr_log_info("json: %ld / %ld / %ld allocations", n1, n2, n3);
    finish();
}
