/* docs_test.c — the document store end to end: databases, interactive and replicated writes,
 * revision trees through the store, conflicts and their resolution, revsdiff, all_docs, the
 * changes feed, local documents, the digest and durability (BEHAVIOURS.md DOC, RDF, CHG, REP-01,
 * REV-38). Each test opens a fresh store in a temporary directory. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/store.h"

#include "store_int.h"
#include "testutil.h"

static char *dir;
static br_store *st;
static br_db *db;

static void open_store(void)
{
    struct br_store_opts o = {.path = dir};
    struct br_errbuf eb = {{0}};
    br_err e = br_store_open(&o, &st, &eb);
    cr_assert_eq(e, BR_OK, "open: %s %s", br_strerror(e), eb.msg);
}

static void setup(void)
{
    br_log_set_level(BR_LOG_ERROR);
    dir = tu_tmpdir("docs");
    open_store();
    cr_assert_eq(br_store_db_create(st, "db", NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
}

static void teardown(void)
{
    br_db_close(db);
    br_store_close(st);
    tu_rmtree(dir);
    free(dir);
}

static void reopen(void)
{
    br_db_close(db);
    br_store_close(st);
    open_store();
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
}

TestSuite(docs, .init = setup, .fini = teardown);

static const struct br_write_opts NOSYNC = {BR_SYNC_NONE, true};
static const struct br_write_opts REPL = {BR_SYNC_NONE, false};

/* Write a JSON document (with optional _rev/_deleted/_revisions) under id. */
static br_err put_json_opts(const char *id, const char *json, const struct br_write_opts *wo,
                            struct br_rev *rev)
{
    json_t *j;
    struct br_errbuf eb;
    cr_assert_eq(br_json_parse(json, strlen(json), 0, &j, &eb), BR_OK, "%s", eb.msg);
    struct br_json_doc d;
    br_err e = br_json_doc_parse(j, id, &d, &eb);
    json_decref(j);
    cr_assert_eq(e, BR_OK, "doc parse: %s", eb.msg);
    struct br_put_result res;
    e = br_db_put(db, &d.put, wo, &res);
    if (!e && rev)
        *rev = res.rev;
    br_json_doc_fini(&d);
    return e;
}

static br_err put_json(const char *id, const char *json, struct br_rev *rev)
{
    return put_json_opts(id, json, &NOSYNC, rev);
}

static struct br_rev R(const char *s) {
    struct br_rev r;
    cr_assert_eq(br_rev_parse(s, strlen(s), &r), BR_OK, "bad rev %s", s);
    return r;
}

static const char *
rtxt(const struct br_rev *r)
{
    static char buf[8][BR_REV_TEXT_MAX];
    static int i;
    char *b = buf[i++ % 8];
    br_rev_format(r, b);
    return b;
}

/* Render the winner of id as JSON text (caller frees), or NULL if not found. */
static char *get_json(const char *id, const struct br_get_opts *o)
{
    struct br_doc *d;
    if (br_db_get(db, id, strlen(id), o, &d, NULL) != BR_OK)
        return NULL;
    json_t *j;
    cr_assert_eq(br_json_doc_render(d, &j, NULL), BR_OK);
    br_doc_free(d);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

static json_t *get_obj(const char *id, const struct br_get_opts *o)
{
    char *s = get_json(id, o);
    if (!s)
        return NULL;
    json_t *j = json_loads(s, 0, NULL);
    free(s);
    return j;
}

/* A replicated write of a body with a newest-first history. */
static br_err put_rev(const char *id, const char *body_json, bool deleted, const char *const *hist,
                      size_t n)
{
    struct br_rev h[32];
    for (size_t i = 0; i < n; i++)
        h[i] = R(hist[i]);
    json_t *j = json_loads(body_json, 0, NULL);
    cr_assert(j);
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert_eq(br_json_to_cbor(j, &b, NULL), BR_OK);
    json_decref(j);
    struct br_put p = {.id = id,
                       .id_len = strlen(id),
                       .deleted = deleted,
                       .body = b.data,
                       .body_len = b.len,
                       .history = h,
                       .n_history = n};
    struct br_put_result res;
    br_err e = br_db_put(db, &p, &REPL, &res);
    br_buf_fini(&b);
    return e;
}

static size_t n_conflicts(const char *id)
{
    struct br_doc *d;
    struct br_get_opts o = {.conflicts = true, .include_deleted = true};
    if (br_db_get(db, id, strlen(id), &o, &d, NULL) != BR_OK)
        return (size_t)-1;
    size_t n = d->n_conflicts;
    br_doc_free(d);
    return n;
}

/* ---- databases ---- */

Test(docs, doc18_db_names_follow_couchdb_rule)
{
    const char *bad[] = {"../etc/passwd", "..", "", "MyDB", "a;b", "a b", "$x", "1db", "_x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect(!br_db_name_valid(bad[i], strlen(bad[i]), false), "accepted %s", bad[i]);
    char a63[64], a238[239], a239[240];
    memset(a63, 'a', 63);
    a63[63] = 0;
    memset(a238, 'a', 238);
    a238[238] = 0;
    memset(a239, 'a', 239);
    a239[239] = 0;
    const char *good[] = {"mydb", "my_db", "my-db", "db1", "a/b", "a$()+-/_", a63, a238};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        cr_expect(br_db_name_valid(good[i], strlen(good[i]), false), "rejected %s", good[i]);
    cr_expect(!br_db_name_valid(a239, 239, false));
    cr_expect(br_db_name_valid("_replicator", 11, true));
    cr_expect_eq(br_store_db_create(st, "../etc/passwd", NULL), BR_EBADNAME);
}

Test(docs, db_create_twice_is_eexist_and_list_is_sorted)
{
    cr_assert_eq(br_store_db_create(st, "db", NULL), BR_EEXIST);
    cr_assert_eq(br_store_db_create(st, "alpha", NULL), BR_OK);
    char **names;
    size_t n;
    cr_assert_eq(br_store_db_list(st, &names, &n), BR_OK);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(names[0], "alpha");
    cr_expect_str_eq(names[1], "db");
    br_store_names_free(names, n);
}

Test(docs, db_delete_removes_everything_and_name_can_be_reused)
{
    cr_assert_eq(put_json("a", "{\"x\":1}", NULL), BR_OK);
    cr_assert_eq(br_db_local_put(db, "cp", 2, NULL, NULL, 0, &NOSYNC, NULL), BR_OK);
    cr_assert_eq(br_store_db_delete(st, "db", NULL), BR_OK);
    struct br_db_info info;
    cr_expect_eq(br_db_info(db, &info), BR_ENOTFOUND);
    struct br_put_result res;
    struct br_put p = {.id = "b", .id_len = 1};
    cr_expect_eq(br_db_put(db, &p, &NOSYNC, &res), BR_ENOTFOUND);
    br_db_close(db);
    cr_assert_eq(br_store_db_delete(st, "db", NULL), BR_ENOTFOUND);
    cr_assert_eq(br_store_db_create(st, "db", NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    cr_expect_null(get_json("a", NULL));
    struct br_doc *d;
    cr_expect_eq(br_db_local_get(db, "cp", 2, &d), BR_ENOTFOUND);
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.doc_count, 0);
    /* Nothing of the old database is left in any family. */
    uint8_t lo[4] = {0, 0, 0, 1}, hi[4] = {0, 0, 0, 2};
    for (int cf = CF_DOCS; cf < CF_COUNT; cf++) {
        rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
        rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, 4);
        rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->rdb, ro, st->cf[cf]);
        rocksdb_iter_seek(it, (const char *)lo, 4);
        cr_expect(!rocksdb_iter_valid(it), "family %d still holds keys of the deleted db", cf);
        rocksdb_iter_destroy(it);
        rocksdb_readoptions_destroy(ro);
    }
}

Test(docs, store_refuses_a_second_opener)
{
    br_store *other = NULL;
    struct br_store_opts o = {.path = dir};
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_store_open(&o, &other, &eb), BR_EBUSY);
    cr_expect(strstr(eb.msg, "in use") != NULL, "%s", eb.msg);
}

Test(docs, info_counts_docs_and_deletions)
{
    struct br_rev r1;
    cr_assert_eq(put_json("a", "{}", &r1), BR_OK);
    cr_assert_eq(put_json("b", "{}", NULL), BR_OK);
    struct br_put p = {.id = "a", .id_len = 1, .rev = &r1, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &NOSYNC, &res), BR_OK);
    struct br_db_info info;
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.doc_count, 1);
    cr_expect_eq(info.doc_del_count, 1);
    cr_expect_eq(info.update_seq, 3);
    cr_expect_eq(info.revs_limit, 1000);
    reopen();
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.doc_count, 1);
    cr_expect_eq(info.doc_del_count, 1);
}

/* ---- documents, MVCC ---- */

Test(docs, doc01_create_without_rev)
{
    struct br_rev r;
    cr_assert_eq(put_json("a", "{\"x\":1}", &r), BR_OK);
    cr_expect_eq(r.gen, 1);
    cr_expect_eq(r.hash_len, 32);
    char *s = get_json("a", NULL);
    cr_assert(s);
    char want[200];
    snprintf(want, sizeof want, "{\"_id\":\"a\",\"_rev\":\"%s\",\"x\":1}", rtxt(&r));
    cr_expect_str_eq(s, want);
    free(s);
}

Test(docs, doc02_update_without_rev_conflicts_but_recreate_over_tombstone_needs_none)
{
    struct br_rev r1, r2, r3;
    cr_assert_eq(put_json("a", "{\"v\":1}", &r1), BR_OK);
    cr_expect_eq(put_json("a", "{\"v\":2}", NULL), BR_ECONFLICT);
    struct br_put p = {.id = "a", .id_len = 1, .rev = &r1, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &NOSYNC, &res), BR_OK);
    r2 = res.rev;
    cr_expect_eq(r2.gen, 2);
    cr_assert_eq(put_json("a", "{\"v\":3}", &r3), BR_OK);
    cr_expect_eq(r3.gen, 3, "re-creating extends the tombstone branch");
    cr_expect_eq(n_conflicts("a"), 0);
}

Test(docs, doc03_stale_rev_conflicts_and_doc04_current_rev_updates)
{
    struct br_rev r1, r2;
    cr_assert_eq(put_json("a", "{\"v\":1}", &r1), BR_OK);
    char j[200];
    snprintf(j, sizeof j, "{\"_rev\":\"%s\",\"v\":2}", rtxt(&r1));
    cr_assert_eq(put_json("a", j, &r2), BR_OK);
    cr_expect_eq(r2.gen, 2);
    cr_expect(!br_rev_eq(&r1, &r2));
    cr_expect_eq(put_json("a", j, NULL), BR_ECONFLICT, "stale rev");
    cr_expect_eq(put_json("a", "{\"_rev\":\"1-00000000000000000000000000000000\"}", NULL),
                 BR_ECONFLICT);
}

Test(docs, rev_hash_is_deterministic_across_databases)
{
    /* REV-03 through the store: the same edit on two nodes gives the same revision. */
    cr_assert_eq(br_store_db_create(st, "other", NULL), BR_OK);
    br_db *o;
    cr_assert_eq(br_store_db_open(st, "other", &o), BR_OK);
    struct br_rev r1, r2;
    cr_assert_eq(put_json("a", "{\"b\":1,\"a\":[1,2.5,\"x\"]}", &r1), BR_OK);
    br_db *keep = db;
    db = o;
    cr_assert_eq(put_json("a", "{\"a\":[1,2.5,\"x\"],\"b\":1}", &r2), BR_OK);
    db = keep;
    br_db_close(o);
    cr_expect(br_rev_eq(&r1, &r2), "%s vs %s", rtxt(&r1), rtxt(&r2));
}

Test(docs, doc05_fresh_doc_has_no_conflicts_key)
{
    struct br_rev r1;
    cr_assert_eq(put_json("a", "{}", &r1), BR_OK);
    struct br_get_opts o = {.conflicts = true};
    json_t *j = get_obj("a", &o);
    cr_assert(j);
    cr_expect_null(json_object_get(j, "_conflicts"));
    json_decref(j);
    char up[200];
    snprintf(up, sizeof up, "{\"_rev\":\"%s\",\"n\":2}", rtxt(&r1));
    cr_assert_eq(put_json("a", up, NULL), BR_OK);
    cr_expect_eq(n_conflicts("a"), 0);
}

Test(docs, doc06_doc07_replicated_sibling_is_one_conflict_shown_only_on_request)
{
    struct br_rev r1, r2;
    cr_assert_eq(put_json("a", "{\"v\":1}", &r1), BR_OK);
    char up[200];
    snprintf(up, sizeof up, "{\"_rev\":\"%s\",\"v\":2}", rtxt(&r1));
    cr_assert_eq(put_json("a", up, &r2), BR_OK);
    const char *h[] = {"2-ffffffffffffffffffffffffffffffff", rtxt(&r1)};
    cr_assert_eq(put_rev("a", "{\"v\":\"theirs\"}", false, h, 2), BR_OK);
    cr_expect_eq(n_conflicts("a"), 1);
    json_t *plain = get_obj("a", NULL);
    cr_expect_null(json_object_get(plain, "_conflicts"));
    /* the greater hash wins: the replicated sibling */
    cr_expect_str_eq(json_string_value(json_object_get(plain, "_rev")), h[0]);
    cr_expect_str_eq(json_string_value(json_object_get(plain, "v")), "theirs");
    json_decref(plain);
    struct br_get_opts o = {.conflicts = true};
    json_t *j = get_obj("a", &o);
    json_t *c = json_object_get(j, "_conflicts");
    cr_assert(json_is_array(c));
    cr_assert_eq(json_array_size(c), 1);
    cr_expect_str_eq(json_string_value(json_array_get(c, 0)), rtxt(&r2));
    json_decref(j);
}

Test(docs, doc08_two_siblings_two_conflicts_and_unknown_doc_not_found)
{
    const char *a[] = {"1-aaaa"}, *b[] = {"1-bbbb"}, *c[] = {"1-cccc"};
    cr_assert_eq(put_rev("d", "{}", false, a, 1), BR_OK);
    cr_assert_eq(put_rev("d", "{}", false, b, 1), BR_OK);
    cr_assert_eq(put_rev("d", "{}", false, c, 1), BR_OK);
    cr_expect_eq(n_conflicts("d"), 2);
    cr_expect_eq(n_conflicts("nope"), (size_t)-1);
}

Test(docs, doc19_winner_body_comes_with_winner_rev_after_losing_branch_arrives)
{
    const char *win[] = {"2-bbbb", "1-aaaa"}, *lose[] = {"2-aaaa", "1-aaaa"};
    cr_assert_eq(put_rev("a", "{\"who\":\"winner\"}", false, win, 2), BR_OK);
    cr_assert_eq(put_rev("a", "{\"who\":\"loser\"}", false, lose, 2), BR_OK);
    json_t *j = get_obj("a", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(j, "_rev")), "2-bbbb");
    cr_expect_str_eq(json_string_value(json_object_get(j, "who")), "winner");
    json_decref(j);
}

Test(docs, doc20_successive_updates_leave_no_stale_leaf)
{
    struct br_rev r;
    cr_assert_eq(put_json("a", "{\"n\":0}", &r), BR_OK);
    for (int i = 1; i <= 3; i++) {
        char up[200];
        snprintf(up, sizeof up, "{\"_rev\":\"%s\",\"n\":%d}", rtxt(&r), i);
        cr_assert_eq(put_json("a", up, &r), BR_OK);
    }
    cr_expect_eq(r.gen, 4);
    cr_expect_eq(n_conflicts("a"), 0);
    struct br_get_opts o = {.revs = true};
    struct br_doc *d;
    cr_assert_eq(br_db_get(db, "a", 1, &o, &d, NULL), BR_OK);
    cr_expect_eq(d->n_revisions, 4);
    cr_expect_eq(d->revisions[3].gen, 1);
    br_doc_free(d);
}

Test(docs, rev24_live_leaf_beats_deeper_tombstone_through_the_store)
{
    const char *live[] = {"2-aaaa", "1-aaaa"}, *dead[] = {"3-ffff", "2-ffff", "1-aaaa"};
    cr_assert_eq(put_rev("a", "{\"live\":true}", false, live, 2), BR_OK);
    cr_assert_eq(put_rev("a", "{}", true, dead, 3), BR_OK);
    json_t *j = get_obj("a", NULL);
    cr_assert(j, "a live leaf must keep the document readable");
    cr_expect_str_eq(json_string_value(json_object_get(j, "_rev")), "2-aaaa");
    json_decref(j);
    cr_expect_eq(n_conflicts("a"), 0, "a deleted leaf is not a conflict");
    struct br_doc *d;
    struct br_get_opts o = {.deleted_conflicts = true};
    cr_assert_eq(br_db_get(db, "a", 1, &o, &d, NULL), BR_OK);
    cr_assert_eq(d->n_deleted_conflicts, 1);
    cr_expect_str_eq(rtxt(&d->deleted_conflicts[0]), "3-ffff");
    br_doc_free(d);
}

Test(docs, doc14_delete_hides_doc_unless_include_deleted)
{
    struct br_rev r1;
    cr_assert_eq(put_json("a", "{\"x\":1}", &r1), BR_OK);
    struct br_put p = {.id = "a", .id_len = 1, .rev = &r1, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &NOSYNC, &res), BR_OK);
    struct br_doc *d;
    struct br_errbuf eb = {{0}};
    cr_expect_eq(br_db_get(db, "a", 1, NULL, &d, &eb), BR_ENOTFOUND);
    cr_expect_str_eq(eb.msg, "deleted");
    struct br_get_opts o = {.include_deleted = true};
    json_t *j = get_obj("a", &o);
    cr_assert(j);
    cr_expect(json_is_true(json_object_get(j, "_deleted")));
    json_decref(j);
    /* deleting what does not exist */
    struct br_put p2 = {.id = "zz", .id_len = 2, .deleted = true};
    cr_expect_eq(br_db_put(db, &p2, &NOSYNC, &res), BR_ENOTFOUND);
}

Test(docs, doc15_recreate_after_delete_single_and_batch)
{
    struct br_rev r1;
    cr_assert_eq(put_json("a", "{\"x\":1}", &r1), BR_OK);
    struct br_put del = {.id = "a", .id_len = 1, .rev = &r1, .deleted = true};
    struct br_put_result res[2];
    cr_assert_eq(br_db_put(db, &del, &NOSYNC, &res[0]), BR_OK);
    cr_assert_eq(put_json("a", "{\"x\":2}", NULL), BR_OK);
    json_t *j = get_obj("a", NULL);
    cr_expect_eq(json_integer_value(json_object_get(j, "x")), 2);
    json_decref(j);
    /* batch: create b, delete it and re-create it in one batch */
    cr_assert_eq(put_json("b", "{}", &r1), BR_OK);
    struct br_rev tomb;
    del = (struct br_put){.id = "b", .id_len = 1, .rev = &r1, .deleted = true};
    cr_assert_eq(br_db_put(db, &del, &NOSYNC, &res[0]), BR_OK);
    tomb = res[0].rev;
    uint8_t body[] = {0xa1, 0x61, 'y', 0x01};
    struct br_put again = {.id = "b", .id_len = 1, .rev = &tomb, .body = body, .body_len = 4};
    cr_assert_eq(br_db_bulk(db, &again, 1, &NOSYNC, res), BR_OK);
    cr_assert_eq(res[0].err, BR_OK);
    j = get_obj("b", NULL);
    cr_expect_eq(json_integer_value(json_object_get(j, "y")), 1);
    json_decref(j);
}

Test(docs, doc16_bulk_returns_one_result_per_input_in_order)
{
    struct br_rev r1;
    cr_assert_eq(put_json("exists", "{}", &r1), BR_OK);
    struct br_put docs[4] = {
        {.id = "n1", .id_len = 2},
        {.id = "exists", .id_len = 6}, /* no rev: conflict */
        {.id = "_bad", .id_len = 4},   /* reserved id */
        {.id = NULL},                  /* generated id */
    };
    struct br_put_result res[4];
    cr_assert_eq(br_db_bulk(db, docs, 4, &NOSYNC, res), BR_OK);
    cr_expect_eq(res[0].err, BR_OK);
    cr_expect_str_eq(res[0].id, "n1");
    cr_expect_eq(res[1].err, BR_ECONFLICT);
    cr_expect_eq(res[2].err, BR_EBADNAME);
    cr_expect_eq(res[3].err, BR_OK);
    cr_expect_eq(strlen(res[3].id), 32);
    char *s = get_json(res[3].id, NULL);
    cr_expect(s);
    free(s);
}

Test(docs, bulk_docs_touching_one_id_apply_in_order)
{
    uint8_t b1[] = {0xa1, 0x61, 'n', 0x01}, b2[] = {0xa1, 0x61, 'n', 0x02};
    struct br_rev parent;
    struct br_put first = {.id = "a", .id_len = 1, .body = b1, .body_len = 4};
    struct br_put_result r0;
    cr_assert_eq(br_db_put(db, &first, &NOSYNC, &r0), BR_OK);
    parent = r0.rev;
    struct br_put docs[2] = {{.id = "a", .id_len = 1, .rev = &parent, .body = b2, .body_len = 4},
                             {.id = "a", .id_len = 1, .rev = &parent, .body = b1, .body_len = 4}};
    struct br_put_result res[2];
    cr_assert_eq(br_db_bulk(db, docs, 2, &NOSYNC, res), BR_OK);
    cr_expect_eq(res[0].err, BR_OK);
    cr_expect_eq(res[1].err, BR_ECONFLICT, "the first edit consumed the parent");
    json_t *j = get_obj("a", NULL);
    cr_expect_eq(json_integer_value(json_object_get(j, "n")), 2);
    json_decref(j);
    struct br_db_info info;
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.doc_count, 1);
}

static int count_change(void *arg, const struct br_change *c)
{
    (void)c;
    (*(int *)arg)++;
    return 0;
}

/* A batch's stored records are read together (wctx_prefetch): whether they sit in SST files or
 * the memtable, whatever the order of the batch's ids, and with an id given twice. */
Test(docs, bulk_reads_records_from_files_and_memtable_in_any_order)
{
    enum { N = 40 };
    char ids[2 * N][8];
    struct br_rev revs[2 * N];
    uint8_t b1[] = {0xa1, 0x61, 'v', 0x01}, b2[] = {0xa1, 0x61, 'v', 0x02};
    struct br_put puts[2 * N + 2];
    struct br_put_result res[2 * N + 2];
    /* N documents flushed to an SST file, N more left in the memtable */
    for (int half = 0; half < 2; half++) {
        for (int i = 0; i < N; i++) {
            int k = half * N + i;
            snprintf(ids[k], sizeof ids[k], "%c%02d", half ? 'm' : 'k', i);
            puts[i] = (struct br_put){.id = ids[k], .id_len = 3, .body = b1, .body_len = 4};
        }
        cr_assert_eq(br_db_bulk(db, puts, N, &NOSYNC, res), BR_OK);
        for (int i = 0; i < N; i++) {
            cr_assert_eq(res[i].err, BR_OK);
            revs[half * N + i] = res[i].rev;
        }
        if (!half)
            cr_assert_eq(br_store_flush(st), BR_OK);
    }
    /* update all of them, ids interleaved from both ends (not in key order), then one id a
     * second time with the same parent (a conflict) and a new document */
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        int a = 2 * N - 1 - i, b = i;
        puts[n++] =
            (struct br_put){.id = ids[a], .id_len = 3, .rev = &revs[a], .body = b2, .body_len = 4};
        puts[n++] =
            (struct br_put){.id = ids[b], .id_len = 3, .rev = &revs[b], .body = b2, .body_len = 4};
    }
    puts[n++] =
        (struct br_put){.id = ids[7], .id_len = 3, .rev = &revs[7], .body = b1, .body_len = 4};
    puts[n++] = (struct br_put){.id = "new", .id_len = 3, .body = b1, .body_len = 4};
    cr_assert_eq(br_db_bulk(db, puts, n, &NOSYNC, res), BR_OK);
    for (size_t i = 0; i < 2 * N; i++) {
        cr_expect_eq(res[i].err, BR_OK, "%s: %s", res[i].id, res[i].reason);
        cr_expect_eq(res[i].rev.gen, 2, "%s", res[i].id);
    }
    cr_expect_eq(res[2 * N].err, BR_ECONFLICT, "the first edit of k07 consumed its parent");
    cr_expect_eq(res[2 * N + 1].err, BR_OK);
    for (int k = 0; k < 2 * N; k++) {
        json_t *j = get_obj(ids[k], NULL);
        cr_expect_eq(json_integer_value(json_object_get(j, "v")), 2, "%s", ids[k]);
        json_decref(j);
    }
    struct br_db_info info;
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.doc_count, 2 * N + 1);
    int seen = 0;
    struct br_changes_opts co = {.since = BR_HLC_MIN};
    cr_assert_eq(br_db_changes(db, &co, count_change, &seen, NULL), BR_OK);
    cr_expect_eq(seen, 2 * N + 1, "one change per document: the old entries were removed");
}

Test(docs, bad_input_is_rejected_and_leaves_the_store_unchanged)
{
    struct br_put_result res;
    uint8_t notmap[] = {0x01};
    struct br_put p1 = {.id = "a", .id_len = 1, .body = notmap, .body_len = 1};
    cr_expect_eq(br_db_put(db, &p1, &NOSYNC, &res), BR_EINVAL);
    uint8_t trunc[] = {0xa1, 0x61};
    struct br_put p2 = {.id = "a", .id_len = 1, .body = trunc, .body_len = 2};
    cr_expect_eq(br_db_put(db, &p2, &NOSYNC, &res), BR_EINVAL);
    char longid[BR_DOCID_MAX + 2];
    memset(longid, 'x', sizeof longid);
    struct br_put p3 = {.id = longid, .id_len = BR_DOCID_MAX + 1};
    cr_expect_eq(br_db_put(db, &p3, &NOSYNC, &res), BR_EBADNAME);
    struct br_put p4 = {.id = "\xff\xfe", .id_len = 2};
    cr_expect_eq(br_db_put(db, &p4, &NOSYNC, &res), BR_EBADNAME, "ids are UTF-8");
    struct br_put p5 = {.id = "a\0b", .id_len = 3};
    cr_expect_eq(br_db_put(db, &p5, &NOSYNC, &res), BR_EBADNAME);
    /* body beyond the configured maximum */
    br_db_close(db);
    br_store_close(st);
    struct br_store_opts o = {.path = dir, .max_doc_bytes = 64};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    cr_expect_eq(
        put_json(
            "big",
            "{\"s\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
            NULL),
        BR_ETOOBIG);
    /* an inconsistent replicated history */
    const char *h[] = {"3-aaaa", "1-bbbb"};
    cr_expect_eq(put_rev("h", "{}", false, h, 2), BR_EBADREV);
    struct br_db_info info;
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.doc_count, 0);
    cr_expect_eq(info.update_seq, 0);
}

Test(docs, corrupted_record_is_estore_not_a_crash)
{
    cr_assert_eq(put_json("a", "{\"x\":1}", NULL), BR_OK);
    uint8_t key[5];
    memcpy(key, db->dbid, 4);
    key[4] = 'a';
    char *err = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    const char junk[] = "\x01garbage-that-is-not-a-record";
    rocksdb_put_cf(st->rdb, wo, st->cf[CF_DOCS], (const char *)key, 5, junk, sizeof junk, &err);
    rocksdb_writeoptions_destroy(wo);
    cr_assert_null(err);
    struct br_doc *d;
    cr_expect_eq(br_db_get(db, "a", 1, NULL, &d, NULL), BR_ESTORE);
    cr_expect_eq(put_json("a", "{\"x\":2}", NULL), BR_ESTORE);
}

/* ---- conflict resolution (DOC-09..13) ---- */

static void make_conflict(struct br_rev *winner, struct br_rev *loser)
{
    const char *a[] = {"2-aaaa", "1-0000"}, *b[] = {"2-bbbb", "1-0000"};
    cr_assert_eq(put_rev("c", "{\"side\":\"a\"}", false, a, 2), BR_OK);
    cr_assert_eq(put_rev("c", "{\"side\":\"b\"}", false, b, 2), BR_OK);
    *winner = R("2-bbbb");
    *loser = R("2-aaaa");
    cr_assert_eq(n_conflicts("c"), 1);
}

Test(docs, doc09_resolve_choosing_the_winner_writes_tombstones)
{
    struct br_rev w, l;
    make_conflict(&w, &l);
    struct br_resolve rs = {.base = &w, .choose = &w};
    struct br_resolve_result out;
    cr_assert_eq(br_db_resolve(db, "c", 1, &rs, &NOSYNC, &out, NULL), BR_OK);
    cr_expect_eq(out.conflicts_resolved, 1);
    cr_expect(br_rev_eq(&out.rev, &w));
    cr_expect_eq(n_conflicts("c"), 0);
    /* the resolution is a revision: the loser now has a tombstone child */
    struct br_revsdiff_in in = {.id = "c", .id_len = 1, .revs = &l, .n = 1};
    struct br_revsdiff_out o;
    cr_assert_eq(br_db_revsdiff(db, &in, 1, &o), BR_OK);
    cr_expect_eq(o.n_missing, 0);
    br_revsdiff_out_fini(&o, 1);
    struct br_doc *d;
    struct br_get_opts go = {.deleted_conflicts = true};
    cr_assert_eq(br_db_get(db, "c", 1, &go, &d, NULL), BR_OK);
    cr_assert_eq(d->n_deleted_conflicts, 1);
    cr_expect_eq(d->deleted_conflicts[0].gen, 3);
    br_doc_free(d);
}

Test(docs, doc10_resolve_choosing_the_loser_writes_a_child_of_it)
{
    struct br_rev w, l;
    make_conflict(&w, &l);
    struct br_resolve rs = {.base = &w, .choose = &l};
    struct br_resolve_result out;
    cr_assert_eq(br_db_resolve(db, "c", 1, &rs, &NOSYNC, &out, NULL), BR_OK);
    cr_expect_eq(out.rev.gen, 3);
    cr_expect_eq(n_conflicts("c"), 0);
    json_t *j = get_obj("c", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(j, "side")), "a");
    cr_expect_str_eq(json_string_value(json_object_get(j, "_rev")), rtxt(&out.rev));
    json_decref(j);
}

Test(docs, doc11_resolve_by_merge_serves_the_merged_body)
{
    struct br_rev w, l;
    make_conflict(&w, &l);
    uint8_t merged[] = {0xa1, 0x64, 's', 'i', 'd', 'e', 0x62, 'a', 'b'};
    struct br_resolve rs = {.base = &w, .merge_body = merged, .merge_body_len = sizeof merged};
    struct br_resolve_result out;
    cr_assert_eq(br_db_resolve(db, "c", 1, &rs, &NOSYNC, &out, NULL), BR_OK);
    cr_expect(!br_rev_eq(&out.rev, &w));
    cr_expect_eq(n_conflicts("c"), 0);
    json_t *j = get_obj("c", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(j, "side")), "ab");
    json_decref(j);
}

Test(docs, doc12_doc13_resolve_errors)
{
    struct br_rev r1;
    cr_assert_eq(put_json("plain", "{}", &r1), BR_OK);
    struct br_resolve rs = {.base = &r1, .choose = &r1};
    struct br_resolve_result out;
    cr_expect_eq(br_db_resolve(db, "plain", 5, &rs, &NOSYNC, &out, NULL), BR_ENOCONFLICT);
    struct br_rev w, l;
    make_conflict(&w, &l);
    struct br_rev root = R("1-0000");
    rs = (struct br_resolve){.base = &w, .choose = &root};
    cr_expect_eq(br_db_resolve(db, "c", 1, &rs, &NOSYNC, &out, NULL), BR_EBADREV);
    rs = (struct br_resolve){.base = &l, .choose = &w};
    cr_expect_eq(br_db_resolve(db, "c", 1, &rs, &NOSYNC, &out, NULL), BR_ECONFLICT);
    cr_expect_eq(br_db_resolve(db, "nope", 4, &rs, &NOSYNC, &out, NULL), BR_ENOTFOUND);
    cr_expect_eq(n_conflicts("c"), 1, "failed resolutions change nothing");
}

/* ---- revsdiff and replicated writes (RDF) ---- */

Test(docs, rdf01_to_rdf05_revsdiff)
{
    const char *h[] = {"2-bbbb", "1-aaaa"};
    cr_assert_eq(put_rev("known", "{}", false, h, 2), BR_OK);
    struct br_rev unk[] = {R("3-cccc"), R("1-ffee"), R("2-bbbb"), R("1-aaaa")};
    struct br_rev none[] = {R("1-aaaa"), R("2-bbbb")};
    struct br_revsdiff_in in[3] = {{.id = "unknown", .id_len = 7, .revs = unk, .n = 2},
                                   {.id = "known", .id_len = 5, .revs = unk, .n = 4},
                                   {.id = "known", .id_len = 5, .revs = none, .n = 2}};
    struct br_revsdiff_out out[3];
    cr_assert_eq(br_db_revsdiff(db, in, 3, out), BR_OK);
    /* RDF-01: unknown doc, everything missing in input order, no ancestors */
    cr_assert_eq(out[0].n_missing, 2);
    cr_expect_str_eq(rtxt(&out[0].missing[0]), "3-cccc");
    cr_expect_str_eq(rtxt(&out[0].missing[1]), "1-ffee");
    cr_expect_eq(out[0].n_possible_ancestors, 0);
    /* RDF-02, RDF-05: only absent revs; leaves of lower generation are possible ancestors */
    cr_assert_eq(out[1].n_missing, 2);
    cr_expect_str_eq(rtxt(&out[1].missing[0]), "3-cccc");
    cr_expect_str_eq(rtxt(&out[1].missing[1]), "1-ffee");
    cr_assert_eq(out[1].n_possible_ancestors, 1);
    cr_expect_str_eq(rtxt(&out[1].possible_ancestors[0]), "2-bbbb");
    /* RDF-03 */
    cr_expect_eq(out[2].n_missing, 0);
    br_revsdiff_out_fini(out, 3);
}

Test(docs, rdf06_rdf07_put_rev_creates_doc_at_that_rev)
{
    const char *one[] = {"1-abcd"}, *two[] = {"2-abc123", "1-def456"};
    cr_assert_eq(put_rev("x", "{\"k\":1}", false, one, 1), BR_OK);
    cr_assert_eq(put_rev("y", "{\"k\":2}", false, two, 2), BR_OK);
    json_t *j = get_obj("x", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(j, "_rev")), "1-abcd");
    cr_expect_eq(json_integer_value(json_object_get(j, "k")), 1);
    json_decref(j);
    j = get_obj("y", NULL);
    cr_expect_str_eq(json_string_value(json_object_get(j, "_rev")), "2-abc123");
    json_decref(j);
}

Test(docs, rdf08_graft_below_newest_known_and_rdf09_idempotent)
{
    const char *h1[] = {"2-bbbb", "1-aaaa"};
    cr_assert_eq(put_rev("g", "{}", false, h1, 2), BR_OK);
    const char *h2[] = {"4-dddd", "3-cccc", "2-bbbb", "1-aaaa"};
    cr_assert_eq(put_rev("g", "{\"v\":4}", false, h2, 4), BR_OK);
    cr_expect_eq(n_conflicts("g"), 0, "no extra leaf");
    struct br_db_info before, after;
    cr_assert_eq(br_db_info(db, &before), BR_OK);
    cr_assert_eq(put_rev("g", "{\"v\":4}", false, h2, 4), BR_OK);
    cr_assert_eq(br_db_info(db, &after), BR_OK);
    cr_expect_eq(before.update_seq, after.update_seq, "a no-op writes no change");
    cr_expect_eq(br_hlc_cmp(before.digest.last, after.digest.last), 0);
}

Test(docs, rev36_two_replicas_exchanging_revisions_agree)
{
    cr_assert_eq(br_store_db_create(st, "peer", NULL), BR_OK);
    br_db *a = db, *b;
    cr_assert_eq(br_store_db_open(st, "peer", &b), BR_OK);
    const char *root[] = {"1-aaaa"};
    const char *ha[] = {"2-a1a1", "1-aaaa"}, *hb[] = {"2-b2b2", "1-aaaa"};
    db = a;
    cr_assert_eq(put_rev("d", "{}", false, root, 1), BR_OK);
    cr_assert_eq(put_rev("d", "{\"s\":\"a\"}", false, ha, 2), BR_OK);
    cr_assert_eq(put_rev("d", "{\"s\":\"b\"}", false, hb, 2), BR_OK);
    db = b;
    cr_assert_eq(put_rev("d", "{}", false, root, 1), BR_OK);
    cr_assert_eq(put_rev("d", "{\"s\":\"b\"}", false, hb, 2), BR_OK);
    cr_assert_eq(put_rev("d", "{\"s\":\"a\"}", false, ha, 2), BR_OK);
    struct br_db_digest da, dbg;
    cr_assert_eq(br_db_digest(a, &da), BR_OK);
    cr_assert_eq(br_db_digest(b, &dbg), BR_OK);
    cr_expect_eq(memcmp(da.set_hash, dbg.set_hash, 16), 0, "equal sets, equal set hashes");
    char *sa, *sb;
    struct br_get_opts o = {.conflicts = true};
    db = a;
    sa = get_json("d", &o);
    db = b;
    sb = get_json("d", &o);
    cr_expect_str_eq(sa, sb);
    free(sa);
    free(sb);
    br_db_close(b);
    db = a;
}

Test(docs, set_hash_differs_when_sets_differ_and_matches_after_convergence)
{
    cr_assert_eq(br_store_db_create(st, "peer", NULL), BR_OK);
    br_db *a = db, *b;
    cr_assert_eq(br_store_db_open(st, "peer", &b), BR_OK);
    const char *h[] = {"1-aaaa"}, *h2[] = {"2-bbbb", "1-aaaa"};
    cr_assert_eq(put_rev("x", "{}", false, h, 1), BR_OK);
    db = b;
    cr_assert_eq(put_rev("x", "{}", false, h, 1), BR_OK);
    struct br_db_digest da, dbg;
    cr_assert_eq(br_db_digest(a, &da), BR_OK);
    cr_assert_eq(br_db_digest(b, &dbg), BR_OK);
    cr_expect_eq(memcmp(da.set_hash, dbg.set_hash, 16), 0);
    cr_assert_eq(put_rev("x", "{}", false, h2, 2), BR_OK);
    cr_assert_eq(br_db_digest(b, &dbg), BR_OK);
    cr_expect_neq(memcmp(da.set_hash, dbg.set_hash, 16), 0);
    db = a;
    cr_assert_eq(put_rev("x", "{}", false, h2, 2), BR_OK);
    cr_assert_eq(br_db_digest(a, &da), BR_OK);
    cr_expect_eq(memcmp(da.set_hash, dbg.set_hash, 16), 0);
    cr_expect_eq(da.doc_count, 1);
    br_db_close(b);
}

Test(docs, rev38_revs_limit_prunes_and_winner_body_survives_reopen)
{
    cr_assert_eq(br_db_set_revs_limit(db, 5), BR_OK);
    struct br_rev r;
    cr_assert_eq(put_json("p", "{\"n\":0}", &r), BR_OK);
    for (int i = 1; i < 30; i++) {
        char up[200];
        snprintf(up, sizeof up, "{\"_rev\":\"%s\",\"n\":%d}", rtxt(&r), i);
        cr_assert_eq(put_json("p", up, &r), BR_OK);
    }
    reopen();
    struct br_doc *d;
    struct br_get_opts o = {.revs = true};
    cr_assert_eq(br_db_get(db, "p", 1, &o, &d, NULL), BR_OK);
    cr_expect_eq(d->rev.gen, 30);
    cr_expect_eq(d->n_revisions, 5, "history pruned to revs_limit");
    br_doc_free(d);
    json_t *j = get_obj("p", NULL);
    cr_expect_eq(json_integer_value(json_object_get(j, "n")), 29);
    json_decref(j);
    /* an old revision id is gone from the tree: revsdiff reports it missing */
    struct br_rev old = R("1-00000000000000000000000000000000");
    struct br_revsdiff_in in = {.id = "p", .id_len = 1, .revs = &old, .n = 1};
    struct br_revsdiff_out out;
    cr_assert_eq(br_db_revsdiff(db, &in, 1, &out), BR_OK);
    cr_expect_eq(out.n_missing, 1);
    br_revsdiff_out_fini(&out, 1);
}

Test(docs, get_rev_and_open_revs)
{
    struct br_rev r1, r2;
    cr_assert_eq(put_json("a", "{\"v\":1}", &r1), BR_OK);
    char up[200];
    snprintf(up, sizeof up, "{\"_rev\":\"%s\",\"v\":2}", rtxt(&r1));
    cr_assert_eq(put_json("a", up, &r2), BR_OK);
    const char *sib[] = {"2-0000", rtxt(&r1)};
    cr_assert_eq(put_rev("a", "{\"v\":\"sib\"}", false, sib, 2), BR_OK);
    struct br_open_rev * or ;
    size_t n;
    cr_assert_eq(br_db_get_open_revs(db, "a", 1, NULL, 0, true, & or, &n), BR_OK);
    cr_assert_eq(n, 2, "all leaves");
    cr_expect(br_rev_eq(& or [0].rev, &r2), "winner first");
    cr_expect_eq(or [0].doc->n_revisions, 2);
    br_open_revs_free(or, n);
    struct br_rev ask[] = {r2, R("9-9999"), r1};
    cr_assert_eq(br_db_get_open_revs(db, "a", 1, ask, 3, false, & or, &n), BR_OK);
    cr_assert_eq(n, 3);
    cr_expect(! or [0].missing);
    cr_expect(or [1].missing);
    cr_expect(or [2].missing, "a non-leaf has no body any more");
    br_open_revs_free(or, n);
    struct br_get_opts o = {.rev = &r2};
    json_t *j = get_obj("a", &o);
    cr_expect_eq(json_integer_value(json_object_get(j, "v")), 2);
    json_decref(j);
}

/* ---- all_docs (DOC-17) ---- */

struct rows {
    char ids[32][16];
    int n;
    int stop_after;
};

static int collect_row(void *arg, const char *id, size_t id_len, const struct br_rev *rev,
                       const struct br_doc *doc)
{
    (void)rev;
    struct rows *r = arg;
    snprintf(r->ids[r->n++], 16, "%.*s", (int)id_len, id);
    if (doc)
        cr_expect(doc->body_len > 0);
    return r->stop_after && r->n >= r->stop_after;
}

Test(docs, doc17_all_docs_live_only_ordered_with_ranges)
{
    const char *ids[] = {"d", "b", "a", "e", "c"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(put_json(ids[i], "{}", NULL), BR_OK);
    struct br_rev rc;
    struct br_doc *d;
    cr_assert_eq(br_db_get(db, "c", 1, NULL, &d, NULL), BR_OK);
    rc = d->rev;
    br_doc_free(d);
    struct br_put del = {.id = "c", .id_len = 1, .rev = &rc, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &del, &NOSYNC, &res), BR_OK);
    struct rows r = {0};
    uint64_t total;
    cr_assert_eq(br_db_all_docs(db, NULL, collect_row, &r, &total), BR_OK);
    cr_assert_eq(r.n, 4);
    cr_expect_str_eq(r.ids[0], "a");
    cr_expect_str_eq(r.ids[2], "d");
    cr_expect_eq(total, 4);
    memset(&r, 0, sizeof r);
    struct br_alldocs_opts o = {.startkey = "b",
                                .startkey_len = 1,
                                .endkey = "d",
                                .endkey_len = 1,
                                .inclusive_end = false,
                                .include_docs = true};
    cr_assert_eq(br_db_all_docs(db, &o, collect_row, &r, NULL), BR_OK);
    cr_assert_eq(r.n, 1);
    cr_expect_str_eq(r.ids[0], "b");
    memset(&r, 0, sizeof r);
    o = (struct br_alldocs_opts){.descending = true, .limit = 2, .inclusive_end = true};
    cr_assert_eq(br_db_all_docs(db, &o, collect_row, &r, NULL), BR_OK);
    cr_assert_eq(r.n, 2);
    cr_expect_str_eq(r.ids[0], "e");
    cr_expect_str_eq(r.ids[1], "d");
    memset(&r, 0, sizeof r);
    r.stop_after = 1;
    cr_assert_eq(br_db_all_docs(db, NULL, collect_row, &r, NULL), BR_OK);
    cr_expect_eq(r.n, 1, "the callback stops the fold");
}

/* ---- changes feed (CHG) ---- */

struct feed {
    char ids[64][16];
    struct br_hlc seqs[64];
    size_t leaves[64];
    bool deleted[64];
    int n;
};

static int collect_change(void *arg, const struct br_change *c)
{
    struct feed *f = arg;
    snprintf(f->ids[f->n], 16, "%.*s", (int)c->id_len, c->id);
    f->seqs[f->n] = c->seq;
    f->leaves[f->n] = c->n_leaves;
    f->deleted[f->n] = c->deleted;
    f->n++;
    return 0;
}

static struct feed changes(struct br_changes_opts *o, struct br_hlc *last)
{
    struct feed f;
    memset(&f, 0, sizeof f);
    cr_assert_eq(br_db_changes(db, o, collect_change, &f, last), BR_OK);
    return f;
}

Test(docs, chg01_to_chg04_and_chg13_feed_order_since_limit_last_seq)
{
    struct br_hlc last;
    struct br_changes_opts o = {0};
    struct feed f = changes(&o, &last);
    cr_expect_eq(f.n, 0);
    cr_expect_eq(br_hlc_cmp(last, BR_HLC_MIN), 0, "CHG-13: empty db reports the minimum");
    for (int i = 0; i < 10; i++) {
        char id[8];
        snprintf(id, sizeof id, "d%d", i);
        cr_assert_eq(put_json(id, "{}", NULL), BR_OK);
    }
    f = changes(&o, &last);
    cr_assert_eq(f.n, 10);
    for (int i = 1; i < 10; i++)
        cr_expect_lt(br_hlc_cmp(f.seqs[i - 1], f.seqs[i]), 0, "ascending");
    cr_expect_eq(br_hlc_cmp(last, f.seqs[9]), 0);
    struct br_db_digest dg;
    cr_assert_eq(br_db_digest(db, &dg), BR_OK);
    cr_expect_eq(br_hlc_cmp(dg.last, f.seqs[9]), 0, "CHG-13: last seq is the newest");
    /* since is exclusive (CHG-02), limit (CHG-04) */
    struct br_changes_opts o2 = {.since = f.seqs[4]};
    struct feed g = changes(&o2, &last);
    cr_assert_eq(g.n, 5, "CHG-14: 5 after the middle");
    cr_expect_str_eq(g.ids[0], "d5");
    struct br_changes_opts o3 = {.limit = 3};
    g = changes(&o3, &last);
    cr_assert_eq(g.n, 3);
    cr_expect_eq(br_hlc_cmp(last, f.seqs[2]), 0, "last_seq is the third");
    struct br_changes_opts o4 = {.since = f.seqs[9]};
    g = changes(&o4, &last);
    cr_expect_eq(g.n, 0, "CHG-14: nothing after the end");
    cr_expect_eq(br_hlc_cmp(last, f.seqs[9]), 0, "an empty page echoes since");
}

Test(docs, chg16_pages_resume_from_last_seq)
{
    for (int i = 0; i < 10; i++) {
        char id[8];
        snprintf(id, sizeof id, "d%d", i);
        cr_assert_eq(put_json(id, "{}", NULL), BR_OK);
    }
    int sizes[5] = {0}, pages = 0, seen = 0;
    struct br_hlc since = BR_HLC_MIN;
    for (;;) {
        struct br_changes_opts o = {.since = since, .limit = 3};
        struct br_hlc last;
        struct feed f = changes(&o, &last);
        if (f.n == 0)
            break;
        sizes[pages++] = f.n;
        seen += f.n;
        since = last;
    }
    cr_expect_eq(pages, 4);
    cr_expect_eq(sizes[0], 3);
    cr_expect_eq(sizes[3], 1);
    cr_expect_eq(seen, 10);
}

Test(docs, chg21_updated_doc_appears_once_at_its_latest_change)
{
    struct br_rev r;
    cr_assert_eq(put_json("a", "{}", &r), BR_OK);
    cr_assert_eq(put_json("b", "{}", NULL), BR_OK);
    char up[200];
    snprintf(up, sizeof up, "{\"_rev\":\"%s\",\"v\":2}", rtxt(&r));
    cr_assert_eq(put_json("a", up, NULL), BR_OK);
    struct br_changes_opts o = {0};
    struct feed f = changes(&o, NULL);
    cr_assert_eq(f.n, 2);
    cr_expect_str_eq(f.ids[0], "b");
    cr_expect_str_eq(f.ids[1], "a");
}

Test(docs, chg05_doc_ids_filter_and_chg12_style_all_docs)
{
    cr_assert_eq(put_json("a", "{}", NULL), BR_OK);
    const char *h1[] = {"1-aaaa"}, *h2[] = {"1-bbbb"};
    cr_assert_eq(put_rev("b", "{}", false, h1, 1), BR_OK);
    cr_assert_eq(put_rev("b", "{}", false, h2, 1), BR_OK);
    cr_assert_eq(put_json("c", "{}", NULL), BR_OK);
    const char *ids[] = {"c", "a"};
    struct br_changes_opts o = {.doc_ids = ids, .n_doc_ids = 2};
    struct feed f = changes(&o, NULL);
    cr_assert_eq(f.n, 2);
    cr_expect_str_eq(f.ids[0], "a", "feed order, not filter order");
    cr_expect_str_eq(f.ids[1], "c");
    struct br_changes_opts main_only = {0}, all = {.all_docs = true};
    f = changes(&main_only, NULL);
    cr_expect_eq(f.leaves[1], 1);
    f = changes(&all, NULL);
    cr_expect_eq(f.leaves[1], 2, "all_docs lists every leaf");
}

Test(docs, chg20_local_docs_never_in_feed_and_rep01_local_crud)
{
    struct br_doc *d;
    cr_expect_eq(br_db_local_get(db, "cp", 2, &d), BR_ENOTFOUND);
    uint8_t body[] = {0xa1, 0x61, 's', 0x05};
    struct br_rev r1, r2;
    cr_assert_eq(br_db_local_put(db, "cp", 2, NULL, body, 4, &NOSYNC, &r1), BR_OK);
    char t[BR_REV_TEXT_MAX];
    br_rev_format(&r1, t);
    cr_expect_str_eq(t, "0-1");
    cr_assert_eq(br_db_local_get(db, "cp", 2, &d), BR_OK);
    cr_expect_eq(d->body_len, 4);
    br_doc_free(d);
    cr_expect_eq(br_db_local_put(db, "cp", 2, NULL, body, 4, &NOSYNC, NULL), BR_ECONFLICT);
    cr_assert_eq(br_db_local_put(db, "cp", 2, &r1, body, 4, &NOSYNC, &r2), BR_OK);
    br_rev_format(&r2, t);
    cr_expect_str_eq(t, "0-2");
    cr_expect_eq(br_db_local_delete(db, "cp", 2, &r1, &NOSYNC), BR_ECONFLICT);
    cr_assert_eq(br_db_local_delete(db, "cp", 2, &r2, &NOSYNC), BR_OK);
    cr_expect_eq(br_db_local_get(db, "cp", 2, &d), BR_ENOTFOUND);
    struct br_changes_opts o = {0};
    struct feed f = changes(&o, NULL);
    cr_expect_eq(f.n, 0);
    struct br_db_info info;
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.update_seq, 0);
}

Test(docs, deletion_shows_in_the_feed_as_deleted)
{
    struct br_rev r;
    cr_assert_eq(put_json("a", "{}", &r), BR_OK);
    struct br_put del = {.id = "a", .id_len = 1, .rev = &r, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &del, &NOSYNC, &res), BR_OK);
    struct br_changes_opts o = {0};
    struct feed f = changes(&o, NULL);
    cr_assert_eq(f.n, 1);
    cr_expect(f.deleted[0]);
}

Test(docs, clock_never_goes_back_across_reopen)
{
    cr_assert_eq(put_json("a", "{}", NULL), BR_OK);
    struct br_db_digest before;
    cr_assert_eq(br_db_digest(db, &before), BR_OK);
    reopen();
    struct br_hlc now;
    cr_assert_eq(br_hlc_now(br_store_clock(st), &now), BR_OK);
    cr_expect_gt(br_hlc_cmp(now, before.last), 0);
}

/* ---- waiting and watching (CHG-17..19 in this store's shape) ---- */

static void *delayed_writer(void *arg)
{
    (void)arg;
    usleep(100 * 1000);
    uint8_t b[] = {0xa0};
    struct br_put p = {.id = "late", .id_len = 4, .body = b, .body_len = 1};
    struct br_put_result res;
    br_err e = br_db_put(db, &p, &NOSYNC, &res);
    return (void *)(intptr_t)e;
}

Test(docs, changes_wait_wakes_on_a_write_and_times_out_without_one)
{
    struct br_db_digest dg;
    cr_assert_eq(br_db_digest(db, &dg), BR_OK);
    cr_expect_eq(br_db_changes_wait(db, dg.last, 50), BR_ETIMEDOUT);
    pthread_t t;
    pthread_create(&t, NULL, delayed_writer, NULL);
    cr_expect_eq(br_db_changes_wait(db, dg.last, 10000), BR_OK);
    void *rv;
    pthread_join(t, &rv);
    cr_expect_eq((intptr_t)rv, BR_OK);
    struct br_changes_opts o = {.since = dg.last};
    struct feed f = changes(&o, NULL);
    cr_assert_eq(f.n, 1);
    cr_expect_str_eq(f.ids[0], "late");
}

static int watch_calls;
static struct br_hlc watch_seq;

static void on_watch(void *arg, br_db *wdb, struct br_hlc seq)
{
    (void)arg;
    (void)wdb;
    watch_calls++;
    watch_seq = seq;
}

Test(docs, watchers_hear_each_commit_until_unwatched)
{
    uint64_t id;
    watch_calls = 0;
    cr_assert_eq(br_db_watch(db, on_watch, NULL, &id), BR_OK);
    cr_assert_eq(put_json("a", "{}", NULL), BR_OK);
    cr_assert_eq(put_json("b", "{}", NULL), BR_OK);
    cr_expect_eq(watch_calls, 2);
    struct br_db_digest dg;
    cr_assert_eq(br_db_digest(db, &dg), BR_OK);
    cr_expect_eq(br_hlc_cmp(watch_seq, dg.last), 0);
    br_db_unwatch(db, id);
    cr_assert_eq(put_json("c", "{}", NULL), BR_OK);
    cr_expect_eq(watch_calls, 2);
}

/* ---- durability ---- */

Test(docs, sync_full_fsyncs_before_acknowledging_and_sync_none_does_not)
{
    uint64_t before = atomic_load(&st->fsyncs);
    cr_assert_eq(put_json_opts("a", "{}", &NOSYNC, NULL), BR_OK);
    cr_expect_eq(atomic_load(&st->fsyncs), before);
    const struct br_write_opts full = BR_WRITE_DEFAULT;
    cr_assert_eq(put_json_opts("b", "{}", &full, NULL), BR_OK);
    cr_expect_eq(atomic_load(&st->fsyncs), before + 1);
    cr_expect_geq(st->synced, atomic_load(&st->written) - 0, "the write is covered");
}

struct gc_arg {
    int idx;
    int n;
};

static void *gc_writer(void *p)
{
    struct gc_arg *a = p;
    const struct br_write_opts full = BR_WRITE_DEFAULT;
    for (int i = 0; i < a->n; i++) {
        char id[32];
        snprintf(id, sizeof id, "w%d-%d", a->idx, i);
        uint8_t b[] = {0xa0};
        struct br_put put = {.id = id, .id_len = strlen(id), .body = b, .body_len = 1};
        struct br_put_result res;
        if (br_db_put(db, &put, &full, &res) != BR_OK)
            return (void *)1;
    }
    return NULL;
}

Test(docs, group_commit_shares_fsyncs_between_concurrent_writers)
{
    enum { THREADS = 8, EACH = 50 };
    uint64_t before = atomic_load(&st->fsyncs);
    pthread_t t[THREADS];
    struct gc_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct gc_arg){i, EACH};
        pthread_create(&t[i], NULL, gc_writer, &a[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        cr_expect_null(rv);
    }
    uint64_t fs = atomic_load(&st->fsyncs) - before;
    struct br_db_info info;
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_expect_eq(info.doc_count, THREADS * EACH);
    cr_expect_lt(fs, THREADS * EACH, "%llu fsyncs for %d writes: none shared",
                 (unsigned long long)fs, THREADS * EACH);
    cr_expect_gt(fs, 0);
}

/* ---- consistency check ---- */

Test(docs, check_finds_a_consistent_database_consistent)
{
    struct br_rev r;
    cr_assert_eq(put_json("a", "{\"x\":1}", &r), BR_OK);
    char up[200];
    snprintf(up, sizeof up, "{\"_rev\":\"%s\",\"x\":2}", rtxt(&r));
    cr_assert_eq(put_json("a", up, &r), BR_OK);
    cr_assert_eq(put_json("b", "{}", NULL), BR_OK);
    const char *h[] = {"2-ffff", "1-aaaa"};
    cr_assert_eq(put_rev("c", "{}", false, h, 2), BR_OK);
    struct br_put del = {.id = "a", .id_len = 1, .rev = &r, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &del, &NOSYNC, &res), BR_OK);
    struct br_db_check chk;
    cr_assert_eq(br_db_check(db, &chk), BR_OK);
    cr_expect_eq(chk.problems, 0, "%s", chk.first);
    cr_expect_eq(chk.docs, 3);
    cr_expect_eq(chk.changes, 3);
}

Test(docs, check_reports_an_orphaned_change_entry_and_a_stale_digest)
{
    cr_assert_eq(put_json("a", "{}", NULL), BR_OK);
    uint8_t key[4 + BR_HLC_BYTES];
    memcpy(key, db->dbid, 4);
    br_hlc_encode((struct br_hlc){1, 0}, key + 4);
    char *err = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_put_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)key, sizeof key,
                   "\x00\x06"
                   "1-aaaaghost",
                   11, &err);
    cr_assert_null(err);
    uint8_t dk[5];
    memcpy(dk, db->dbid, 4);
    dk[4] = 'd';
    uint8_t rec[DIGEST_LEN];
    struct db_state wrong = db->st;
    wrong.digest.doc_count = 7;
    store_digest_encode(&wrong, rec);
    rocksdb_put_cf(st->rdb, wo, st->cf[CF_META], (const char *)dk, 5, (const char *)rec, DIGEST_LEN,
                   &err);
    cr_assert_null(err);
    rocksdb_writeoptions_destroy(wo);
    struct br_db_check chk;
    cr_assert_eq(br_db_check(db, &chk), BR_OK);
    cr_expect_eq(chk.problems, 2, "orphan entry and wrong count: %s", chk.first);
}

/* ---- streams (CHG-15, CHG-17..19) ---- */

Test(docs, chg15_digest_answers_has_changes_since_without_false_negatives)
{
    struct br_db_digest dg;
    cr_assert_eq(br_db_digest(db, &dg), BR_OK);
    struct br_hlc before = dg.last;
    cr_expect_eq(br_hlc_cmp(dg.last, before), 0, "no change since now");
    cr_assert_eq(put_json("a", "{}", NULL), BR_OK);
    cr_assert_eq(br_db_digest(db, &dg), BR_OK);
    cr_expect_gt(br_hlc_cmp(dg.last, before), 0, "a change since `before` is seen");
}

Test(docs, chg17_stream_iterates_in_order_then_reports_done)
{
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "d%d", i);
        cr_assert_eq(put_json(id, "{}", NULL), BR_OK);
    }
    br_changes_stream *cs;
    cr_assert_eq(br_changes_stream_open(db, NULL, &cs), BR_OK);
    struct feed f;
    memset(&f, 0, sizeof f);
    struct br_hlc last;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(br_changes_stream_next(cs, 1, 0, collect_change, &f, &last), BR_OK);
        br_changes_stream_ack(cs, last);
    }
    cr_expect_eq(br_changes_stream_next(cs, 1, 0, collect_change, &f, &last), BR_ETIMEDOUT, "done");
    cr_assert_eq(f.n, 5);
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "d%d", i);
        cr_expect_str_eq(f.ids[i], id);
    }
    br_changes_stream_close(cs);
}

Test(docs, chg18_unacknowledged_batch_is_delivered_again_and_ack_moves_on)
{
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "d%d", i);
        cr_assert_eq(put_json(id, "{}", NULL), BR_OK);
    }
    br_changes_stream *cs;
    cr_assert_eq(br_changes_stream_open(db, NULL, &cs), BR_OK);
    struct feed f;
    memset(&f, 0, sizeof f);
    struct br_hlc last;
    cr_assert_eq(br_changes_stream_next(cs, 3, 0, collect_change, &f, &last), BR_OK);
    cr_assert_eq(f.n, 3);
    memset(&f, 0, sizeof f);
    cr_assert_eq(br_changes_stream_next(cs, 3, 0, collect_change, &f, &last), BR_OK);
    cr_expect_eq(f.n, 3, "not acknowledged: the same batch again");
    cr_expect_str_eq(f.ids[0], "d0");
    br_changes_stream_ack(cs, last);
    memset(&f, 0, sizeof f);
    cr_assert_eq(br_changes_stream_next(cs, 3, 0, collect_change, &f, &last), BR_OK);
    cr_assert_eq(f.n, 1);
    cr_expect_str_eq(f.ids[0], "d3");
    br_changes_stream_close(cs);
}

Test(docs, chg19_idle_stream_still_delivers_a_later_change)
{
    br_changes_stream *cs;
    cr_assert_eq(br_changes_stream_open(db, NULL, &cs), BR_OK);
    struct feed f;
    memset(&f, 0, sizeof f);
    struct br_hlc last;
    for (int i = 0; i < 5; i++) /* idle for several intervals */
        cr_expect_eq(br_changes_stream_next(cs, 10, 20, collect_change, &f, &last), BR_ETIMEDOUT);
    pthread_t t;
    pthread_create(&t, NULL, delayed_writer, NULL);
    cr_expect_eq(br_changes_stream_next(cs, 10, 10000, collect_change, &f, &last), BR_OK);
    pthread_join(t, NULL);
    cr_assert_eq(f.n, 1);
    cr_expect_str_eq(f.ids[0], "late");
    br_changes_stream_close(cs);
}

Test(docs, stream_with_doc_ids_waits_past_changes_it_filters_out)
{
    const char *ids[] = {"late"};
    struct br_changes_opts o = {.doc_ids = ids, .n_doc_ids = 1};
    br_changes_stream *cs;
    cr_assert_eq(br_changes_stream_open(db, &o, &cs), BR_OK);
    cr_assert_eq(put_json("other", "{}", NULL), BR_OK);
    struct feed f;
    memset(&f, 0, sizeof f);
    struct br_hlc last;
    pthread_t t;
    pthread_create(&t, NULL, delayed_writer, NULL);
    cr_expect_eq(br_changes_stream_next(cs, 10, 10000, collect_change, &f, &last), BR_OK);
    pthread_join(t, NULL);
    cr_assert_eq(f.n, 1);
    cr_expect_str_eq(f.ids[0], "late");
    br_changes_stream_close(cs);
}

/* cache_only answers like a plain get from memory, EWOULDBLOCK for what is only on disk, and
 * ECLOSED once the database is deleted; it never sets the reason. */
Test(docs, get_cache_only_answers_from_memory_or_would_block)
{
    struct br_rev rev;
    cr_assert_eq(put_json("a", "{\"x\":1}", &rev), BR_OK);
    struct br_get_opts co = {.cache_only = true};
    struct br_errbuf eb = {{0}};
    struct br_doc *d = NULL;
    cr_assert_eq(br_db_get(db, "a", 1, &co, &d, &eb), BR_OK, "in the memtable");
    cr_expect(br_rev_eq(&d->rev, &rev));
    br_doc_free(d);
    cr_expect_eq(br_db_get(db, "zz", 2, &co, &d, &eb), BR_ENOTFOUND, "definitely not there");

    reopen(); /* recovery writes the memtable to a table file; the block cache starts empty */
    d = NULL;
    memset(&eb, 0, sizeof eb);
    cr_assert_eq(br_db_get(db, "a", 1, &co, &d, &eb), BR_EWOULDBLOCK, "only on disk");
    cr_expect_null(d);
    cr_expect_eq(eb.msg[0], '\0');
    cr_assert_eq(br_db_get(db, "a", 1, NULL, &d, &eb), BR_OK); /* reads the block in */
    br_doc_free(d);
    d = NULL;
    cr_assert_eq(br_db_get(db, "a", 1, &co, &d, &eb), BR_OK, "now cached");
    cr_expect(br_rev_eq(&d->rev, &rev));
    br_doc_free(d);

    cr_assert_eq(br_store_db_delete(st, "db", NULL), BR_OK);
    d = NULL;
    cr_expect_eq(br_db_get(db, "a", 1, &co, &d, &eb), BR_ECLOSED, "deleted under the handle");
    cr_expect_null(d);
}

static uint64_t memtable_bytes(void)
{
    uint64_t total = 0;
    for (int i = 0; i < CF_COUNT; i++) {
        char *v = rocksdb_property_value_cf(st->rdb, st->cf[i], "rocksdb.cur-size-all-mem-tables");
        cr_assert(v);
        total += strtoull(v, NULL, 10);
        rocksdb_free(v);
    }
    return total;
}

/* br_store_flush empties the memtables (their memory goes back) and loses nothing;
 * br_store_write_count moves with commits only. */
Test(docs, flush_empties_memtables_and_keeps_every_document)
{
    uint64_t w0 = br_store_write_count(st);
    char id[16];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "d%03d", i);
        cr_assert_eq(put_json(id, "{\"v\":\"some text to fill the memtable a little\"}", NULL),
                     BR_OK);
    }
    uint64_t w1 = br_store_write_count(st);
    cr_expect_geq(w1, w0 + 200);
    uint64_t before = memtable_bytes();
    cr_assert_eq(br_store_flush(st), BR_OK);
    uint64_t after = memtable_bytes();
    cr_expect_lt(after, before / 4, "memtables %llu -> %llu bytes", (unsigned long long)before,
                 (unsigned long long)after);
    cr_expect_eq(br_store_write_count(st), w1, "a flush is not a commit");
    char *j = get_json("d123", NULL);
    cr_expect(j && strstr(j, "some text"), "%s", j ? j : "(null)");
    free(j);
}
