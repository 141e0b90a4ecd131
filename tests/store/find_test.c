/* find_test.c — br_db_find and br_db_explain (QRY-05..38): the planner's choices, results on
 * the six-document fixture of BEHAVIOURS.md, ordering, paging with continuation tokens on a
 * consistent snapshot, and the path index kept in step with every write (br_db_check). */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/find.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/query.h"
#include "barrel/store.h"

#include "store_int.h"
#include "testutil.h"

static char *dir;
static br_store *st;
static br_db *db;
static const struct br_write_opts NOSYNC = {BR_SYNC_NONE, true};

static br_err put(const char *id, const char *json, struct br_rev *rev)
{
    json_t *j;
    struct br_errbuf eb;
    cr_assert_eq(br_json_parse(json, strlen(json), 0, &j, &eb), BR_OK, "%s", eb.msg);
    struct br_json_doc d;
    br_err e = br_json_doc_parse(j, id, &d, &eb);
    json_decref(j);
    cr_assert_eq(e, BR_OK, "doc parse: %s", eb.msg);
    struct br_put_result res;
    e = br_db_put(db, &d.put, &NOSYNC, &res);
    if (!e && rev)
        *rev = res.rev;
    br_json_doc_fini(&d);
    return e;
}

static void check_clean(void)
{
    struct br_db_check ck;
    cr_assert_eq(br_db_check(db, &ck), BR_OK);
    cr_assert_eq(ck.problems, 0, "check: %s", ck.first);
}

static void fixture(void)
{
    cr_assert_eq(put("user1",
                     "{\"type\":\"user\",\"name\":\"Alice\",\"age\":30,"
                     "\"status\":\"active\",\"org\":\"org1\"}",
                     NULL),
                 BR_OK);
    cr_assert_eq(put("user2",
                     "{\"type\":\"user\",\"name\":\"Bob\",\"age\":25,"
                     "\"status\":\"active\",\"org\":\"org1\"}",
                     NULL),
                 BR_OK);
    cr_assert_eq(put("user3",
                     "{\"type\":\"user\",\"name\":\"Charlie\",\"age\":35,"
                     "\"status\":\"inactive\",\"org\":\"org2\"}",
                     NULL),
                 BR_OK);
    cr_assert_eq(
        put("post1", "{\"type\":\"post\",\"title\":\"Hello\",\"tags\":[\"x\",\"y\"]}", NULL),
        BR_OK);
    cr_assert_eq(put("post2", "{\"type\":\"post\",\"title\":\"World\"}", NULL), BR_OK);
    cr_assert_eq(put("nested1", "{\"type\":\"place\",\"address\":{\"city\":\"Paris\"}}", NULL),
                 BR_OK);
}

static void setup(void)
{
    br_log_set_level(BR_LOG_ERROR);
    dir = tu_tmpdir("find");
    struct br_store_opts o = {.path = dir};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_create(st, "db", NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    cr_assert_eq(br_db_set_index(db, true, NULL, 0, NULL), BR_OK); /* every path */
    fixture();
}

static void teardown(void)
{
    br_db_close(db);
    br_store_close(st);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(find, .init = setup, .fini = teardown);

static br_query *compile(const char *spec)
{
    json_t *j = json_loads(spec, 0, NULL);
    cr_assert(j, "bad test json %s", spec);
    br_query *q;
    struct br_errbuf eb = {{0}};
    br_err e = br_query_compile(j, &q, &eb);
    json_decref(j);
    cr_assert_eq(e, BR_OK, "compile %s: %s", spec, eb.msg);
    return q;
}

struct rows {
    char ids[400][64];
    size_t n;
    bool had_body;
};

static int row_cb(void *arg, const struct br_find_row *r)
{
    struct rows *rs = arg;
    cr_assert_lt(rs->n, 400);
    cr_assert_lt(r->id_len, 64);
    memcpy(rs->ids[rs->n], r->id, r->id_len);
    rs->ids[rs->n][r->id_len] = 0;
    rs->n++;
    rs->had_body = r->body && r->body_len > 0;
    return 0;
}

/* Run spec; the ids it returns, joined with ',', into out; returns the plan name. */
static const char *run(const char *spec, char *out, size_t cap)
{
    br_query *q = compile(spec);
    struct rows rs = {0};
    static struct br_find_result res;
    cr_assert_eq(br_db_find(db, q, row_cb, &rs, &res), BR_OK, "find %s", spec);
    out[0] = 0;
    for (size_t i = 0; i < rs.n; i++) {
        if (i)
            strncat(out, ",", cap - strlen(out) - 1);
        strncat(out, rs.ids[i], cap - strlen(out) - 1);
    }
    cr_assert_eq(res.rows, rs.n);
    br_query_free(q);
    return res.plan;
}

#define EXPECT(spec, want)                                                                         \
    do {                                                                                           \
        char got_[512];                                                                            \
        run(spec, got_, sizeof got_);                                                              \
        cr_expect_str_eq(got_, want, "%s", spec);                                                  \
    } while (0)

#define W1(path, op, val)                                                                          \
    "{\"where\":[{\"path\":\"" path "\",\"op\":\"" op "\",\"value\":" val "}]}"

Test(find, qry05_strategies)
{
    char got[512];
    cr_expect_str_eq(run(W1("type", "==", "\"user\""), got, sizeof got), "index_seek");
    cr_expect_str_eq(run(W1("age", ">", "28"), got, sizeof got), "index_scan");
    cr_expect_str_eq(run("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
                         "{\"path\":\"status\",\"op\":\"==\",\"value\":\"active\"}]}",
                         got, sizeof got),
                     "multi_index");
    cr_expect_str_eq(run("{\"where\":[{\"or\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"x\"},"
                         "{\"path\":\"age\",\"op\":\"!=\",\"value\":1}]}]}",
                         got, sizeof got),
                     "full_scan");
    cr_expect_str_eq(run("{\"id_prefix\":\"user\"}", got, sizeof got), "id_scan");
}

Test(find, qry06_to_19_fixture)
{
    EXPECT(W1("type", "==", "\"user\""), "user1,user2,user3");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"path\":\"status\",\"op\":\"==\",\"value\":\"active\"}]}",
           "user1,user2");
    EXPECT(W1("age", ">", "28"), "user1,user3");
    EXPECT(W1("age", "<", "30"), "user2");
    EXPECT(W1("org", "in", "[\"org1\"]"), "user1,user2");
    EXPECT("{\"where\":[{\"or\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"path\":\"type\",\"op\":\"==\",\"value\":\"post\"}]}]}",
           "post1,post2,user1,user2,user3");
    EXPECT("{\"where\":[{\"or\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"path\":\"type\",\"op\":\"==\",\"value\":\"post\"}]}],\"limit\":2}",
           "post1,post2");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"or\":[{\"path\":\"org\",\"op\":\"==\",\"value\":\"org1\"},"
           "{\"path\":\"org\",\"op\":\"==\",\"value\":\"org2\"}]}],\"limit\":1}",
           "user1");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"not\":{\"path\":\"status\",\"op\":\"==\",\"value\":\"inactive\"}}]}",
           "user1,user2");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"post\"},"
           "{\"path\":\"tags\",\"op\":\"exists\"}]}",
           "post1");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"post\"},"
           "{\"path\":\"tags\",\"op\":\"missing\"}]}",
           "post2");
    EXPECT(W1("name", "prefix", "\"A\""), "user1");
    EXPECT(W1("name", "regex", "\"^[AB].*\""), "user1,user2");
    EXPECT(W1("address/city", "==", "\"Paris\""), "nested1");
    EXPECT("{\"where\":[{\"path\":[\"address\",\"city\"],\"op\":\"==\",\"value\":\"Paris\"}]}",
           "nested1");
}

Test(find, qry20_21_22_limit_offset_order)
{
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}],\"limit\":2}",
           "user1,user2");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}],\"offset\":1,"
           "\"limit\":2}",
           "user2,user3");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}],"
           "\"order_by\":[{\"path\":\"name\",\"dir\":\"asc\"}]}",
           "user1,user2,user3");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}],"
           "\"order_by\":[{\"path\":\"age\",\"dir\":\"desc\"}]}",
           "user3,user1,user2");
    /* documents lacking the sort path come last, either direction */
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"exists\"}],"
           "\"order_by\":[{\"path\":\"age\",\"dir\":\"desc\"}]}",
           "user3,user1,user2,nested1,post1,post2");
}

Test(find, qry25_intersection_and_zero)
{
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"path\":\"status\",\"op\":\"==\",\"value\":\"active\"},"
           "{\"path\":\"org\",\"op\":\"==\",\"value\":\"org1\"}]}",
           "user1,user2");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"path\":\"org\",\"op\":\"==\",\"value\":\"org9\"}]}",
           "");
    EXPECT("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
           "{\"path\":\"status\",\"op\":\"==\",\"value\":\"active\"}],\"limit\":1}",
           "user1");
}

Test(find, qry28_29_30_compares_and_prefix)
{
    for (int i = 1; i <= 5; i++) {
        char id[16], doc[64];
        snprintf(id, sizeof id, "n%d", i);
        snprintf(doc, sizeof doc, "{\"n\":%d,\"code\":\"c%d\"}", i, i);
        cr_assert_eq(put(id, doc, NULL), BR_OK);
    }
    EXPECT(W1("n", ">=", "2"), "n2,n3,n4,n5");
    EXPECT("{\"where\":[{\"path\":\"n\",\"op\":\">=\",\"value\":2},"
           "{\"path\":\"n\",\"op\":\"<=\",\"value\":3}]}",
           "n2,n3");
    EXPECT("{\"where\":[{\"path\":\"n\",\"op\":\">\",\"value\":1.5},"
           "{\"path\":\"n\",\"op\":\"<\",\"value\":4}]}",
           "n2,n3");
    EXPECT("{\"where\":[{\"path\":\"n\",\"op\":\">\",\"value\":2},"
           "{\"path\":\"n\",\"op\":\"<\",\"value\":5},{\"path\":\"n\",\"op\":\"!=\",\"value\":4}]}",
           "n3");
    EXPECT(W1("code", "prefix", "\"c\""), "n1,n2,n3,n4,n5");
    EXPECT("{\"where\":[{\"path\":\"code\",\"op\":\"prefix\",\"value\":\"c\"},"
           "{\"path\":\"n\",\"op\":\">=\",\"value\":3}]}",
           "n3,n4,n5");
    /* comparisons never cross types: a string never compares with a number */
    EXPECT(W1("n", ">", "\"0\""), "");
    EXPECT(W1("code", ">", "0"), "");
    /* an equality on a float finds the integer of the same value (numbers are one type) */
    EXPECT(W1("n", "==", "2.0"), "n2");
}

Test(find, qry31_32_33_id_scans)
{
    cr_assert_eq(put("user:1", "{\"a\":1}", NULL), BR_OK);
    cr_assert_eq(put("user:2", "{\"a\":1}", NULL), BR_OK);
    cr_assert_eq(put("usex", "{\"a\":1}", NULL), BR_OK);
    EXPECT("{\"id_prefix\":\"user:\"}", "user:1,user:2");
    struct br_rev r;
    cr_assert_eq(put("a", "{}", NULL), BR_OK);
    cr_assert_eq(put("b", "{}", NULL), BR_OK);
    cr_assert_eq(put("m", "{}", NULL), BR_OK);
    cr_assert_eq(put("z", "{}", &r), BR_OK);
    EXPECT("{\"id_range\":[\"a\",\"n\"]}", "a,b,m");
    EXPECT("{\"id_range\":[null,\"b\"]}", "a");
    EXPECT("{\"id_range\":[\"m\",\"n\"]}", "m");
    EXPECT("{\"id_range\":[\"x\",null]}", "z");
    struct br_put p = {.id = "z", .id_len = 1, .rev = &r, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &NOSYNC, &res), BR_OK);
    EXPECT("{\"id_range\":[\"x\",null]}", ""); /* QRY-33: tombstones are skipped */
}

Test(find, qry37_membership_and_qry35_meta)
{
    EXPECT(W1("tags", "==", "\"x\""), "post1");
    EXPECT(W1("tags", "==", "\"y\""), "post1");
    cr_assert_eq(put("m1", "{\"meta\":{\"x\":1}}", NULL), BR_OK);
    EXPECT(W1("meta/x", "==", "1"), "m1");
    /* top-level "_" keys are metadata, never stored in the body nor queryable */
    json_t *j = json_loads("{\"_meta\":1,\"x\":1}", 0, NULL);
    struct br_json_doc d;
    if (br_json_doc_parse(j, "m2", &d, NULL) == BR_OK) { /* dropped or refused: never indexed */
        struct br_put_result res;
        cr_assert_eq(br_db_put(db, &d.put, &NOSYNC, &res), BR_OK);
        br_json_doc_fini(&d);
    }
    json_decref(j);
    EXPECT(W1("_meta", "==", "1"), "");
}

Test(find, qry34_rows_carry_bodies)
{
    br_query *q = compile(W1("type", "==", "\"post\""));
    struct rows rs = {0};
    struct br_find_result res;
    cr_assert_eq(br_db_find(db, q, row_cb, &rs, &res), BR_OK);
    cr_assert_eq(rs.n, 2);
    cr_assert(rs.had_body);
    br_query_free(q);
}

Test(find, qry38_index_follows_put_update_delete)
{
    struct br_rev r1, r2;
    cr_assert_eq(put("d1", "{\"color\":\"red\"}", &r1), BR_OK);
    EXPECT(W1("color", "==", "\"red\""), "d1");
    check_clean();
    char doc[128];
    snprintf(doc, sizeof doc, "{\"_rev\":\"%s\",\"color\":\"blue\"}", "");
    struct br_put p = {0};
    json_t *j = json_loads("{\"color\":\"blue\"}", 0, NULL);
    struct br_json_doc d;
    cr_assert_eq(br_json_doc_parse(j, "d1", &d, NULL), BR_OK);
    json_decref(j);
    d.put.rev = &r1;
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &d.put, &NOSYNC, &res), BR_OK);
    r2 = res.rev;
    br_json_doc_fini(&d);
    EXPECT(W1("color", "==", "\"red\""), "");
    EXPECT(W1("color", "==", "\"blue\""), "d1");
    check_clean();
    p = (struct br_put){.id = "d1", .id_len = 2, .rev = &r2, .deleted = true};
    cr_assert_eq(br_db_put(db, &p, &NOSYNC, &res), BR_OK);
    EXPECT(W1("color", "==", "\"blue\""), "");
    check_clean();
    /* the index survives a reopen */
    cr_assert_eq(put("d2", "{\"color\":\"green\"}", NULL), BR_OK);
    br_db_close(db);
    br_store_close(st);
    struct br_store_opts o = {.path = dir};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    EXPECT(W1("color", "==", "\"green\""), "d2");
    check_clean();
}

Test(find, conflicting_revisions_index_the_winner)
{
    /* two replicated branches: the index holds the winner's values only */
    const char *a = "{\"_id\":\"c\",\"_rev\":\"1-aaaa\",\"v\":\"low\"}";
    const char *b = "{\"_id\":\"c\",\"_rev\":\"1-bbbb\",\"v\":\"high\"}";
    const char *docs[] = {a, b};
    for (int i = 0; i < 2; i++) {
        json_t *j = json_loads(docs[i], 0, NULL);
        struct br_json_doc d;
        cr_assert_eq(br_json_doc_parse(j, NULL, &d, NULL), BR_OK);
        json_decref(j);
        struct br_write_opts wo = {BR_SYNC_NONE, false};
        struct br_put_result res;
        cr_assert_eq(br_db_put(db, &d.put, &wo, &res), BR_OK);
        br_json_doc_fini(&d);
    }
    EXPECT(W1("v", "==", "\"high\""), "c");
    EXPECT(W1("v", "==", "\"low\""), "");
    check_clean();
}

Test(find, long_strings_and_huge_ints_are_checked_against_the_document)
{
    char big1[300], big2[300], doc[400], q[600];
    memset(big1, 'a', 200);
    big1[200] = 0;
    memcpy(big2, big1, 201);
    big2[150] = 'b'; /* same first 100 bytes, different after */
    snprintf(doc, sizeof doc, "{\"s\":\"%s\"}", big1);
    cr_assert_eq(put("s1", doc, NULL), BR_OK);
    snprintf(doc, sizeof doc, "{\"s\":\"%s\"}", big2);
    cr_assert_eq(put("s2", doc, NULL), BR_OK);
    snprintf(q, sizeof q, W1("s", "==", "\"%s\""), big2);
    EXPECT(q, "s2");
    cr_assert_eq(put("i1", "{\"i\":9007199254740993}", NULL), BR_OK);
    cr_assert_eq(put("i2", "{\"i\":9007199254740992}", NULL), BR_OK);
    EXPECT(W1("i", "==", "9007199254740993"), "i1");
    EXPECT(W1("i", ">", "9007199254740992"), "i1");
}

struct pager {
    struct rows rs;
    int stop_after;
};

Test(find, qry27_continuation_on_a_consistent_snapshot)
{
    const char *spec = "{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}],"
                       "\"limit\":2}";
    br_query *q = compile(spec);
    struct rows rs = {0};
    struct br_find_result res;
    cr_assert_eq(br_db_find(db, q, row_cb, &rs, &res), BR_OK);
    cr_assert_eq(rs.n, 2);
    cr_assert(res.has_more);
    cr_assert_neq(res.token[0], 0);
    /* a write between pages: the next page still reads the first page's snapshot */
    cr_assert_eq(put("user0", "{\"type\":\"user\"}", NULL), BR_OK);
    cr_assert_eq(put("user4", "{\"type\":\"user\"}", NULL), BR_OK);
    char tok[BR_FIND_TOKEN_MAX];
    strcpy(tok, res.token);
    q->bookmark = br_strdup(tok);
    struct rows rs2 = {0};
    cr_assert_eq(br_db_find(db, q, row_cb, &rs2, &res), BR_OK);
    cr_assert_eq(rs2.n, 1);
    cr_assert_str_eq(rs2.ids[0], "user3");
    cr_assert(!res.has_more);
    cr_assert_eq(res.token[0], 0);
    br_query_free(q);

    /* sorted pages resume by row on the same snapshot */
    q = compile("{\"where\":[{\"path\":\"type\",\"op\":\"exists\"}],"
                "\"order_by\":[{\"path\":\"name\",\"dir\":\"desc\"}],\"limit\":3}");
    struct rows a = {0}, b = {0};
    cr_assert_eq(br_db_find(db, q, row_cb, &a, &res), BR_OK);
    cr_assert(res.has_more);
    cr_assert_str_eq(a.ids[0], "user3");
    cr_assert_eq(put("zzz", "{\"type\":\"user\",\"name\":\"Zed\"}", NULL), BR_OK);
    int pages = 1;
    while (res.has_more) {
        br_free(q->bookmark);
        q->bookmark = br_strdup(res.token);
        cr_assert_eq(br_db_find(db, q, row_cb, &b, &res), BR_OK);
        pages++;
    }
    cr_assert_eq(pages, 3);
    cr_assert_eq(a.n + b.n, 8, "%zu + %zu", a.n, b.n); /* 6 fixture + user0 + user4 */
    for (size_t i = 0; i < b.n; i++)
        cr_assert_str_neq(b.ids[i], "zzz");
    br_query_free(q);
}

Test(find, bad_bookmarks_are_errors)
{
    br_query *q = compile("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}],"
                          "\"limit\":1}");
    struct rows rs = {0};
    struct br_find_result res;
    cr_assert_eq(br_db_find(db, q, row_cb, &rs, &res), BR_OK);
    char tok[BR_FIND_TOKEN_MAX];
    strcpy(tok, res.token);
    br_query *other = compile("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"post\"}],"
                              "\"limit\":1}");
    other->bookmark = br_strdup(tok);
    cr_expect_eq(br_db_find(db, other, row_cb, &rs, &res), BR_EINVAL, "token of another query");
    const char *junk[] = {"x", "1.", "1.zz.zz.i.00", "1.0000000000000001.0000000000000000.i.",
                          "1.0000000000000001.0000000000000000.q.41"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        br_free(q->bookmark);
        q->bookmark = br_strdup(junk[i]);
        cr_expect_eq(br_db_find(db, q, row_cb, &rs, &res), BR_EINVAL, "%s", junk[i]);
    }
    /* an unknown cursor id (expired) */
    char forged[BR_FIND_TOKEN_MAX];
    strcpy(forged, tok);
    forged[2] = forged[2] == 'f' ? 'e' : 'f';
    br_free(q->bookmark);
    q->bookmark = br_strdup(forged);
    cr_expect_eq(br_db_find(db, q, row_cb, &rs, &res), BR_EINVAL);
    br_query_free(q);
    br_query_free(other);
}

Test(find, explain_names_plan_and_index_conditions)
{
    br_query *q = compile("{\"where\":[{\"path\":\"site\",\"op\":\"==\",\"value\":\"s\"},"
                          "{\"path\":\"value\",\"op\":\">\",\"value\":0.5}]}");
    json_t *x;
    cr_assert_eq(br_db_explain(db, q, &x), BR_OK);
    cr_expect_str_eq(json_string_value(json_object_get(x, "plan")), "index_seek");
    json_t *idx = json_object_get(x, "index");
    cr_assert_eq(json_array_size(idx), 1);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(idx, 0), "path")), "site");
    cr_expect(json_object_get(x, "filter") != NULL);
    json_decref(x);
    br_query_free(q);
}

/* The index agrees with a full evaluation for many random documents and queries. */
Test(find, index_plans_agree_with_full_scan)
{
    unsigned seed = 7;
    for (int i = 0; i < 300; i++) {
        char id[16], doc[160];
        seed = seed * 1103515245u + 12345u;
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(doc, sizeof doc,
                 "{\"k\":\"v%u\",\"n\":%u,\"f\":%u.5,\"arr\":[\"a%u\",\"b%u\"],\"b\":%s}", seed % 7,
                 (seed >> 8) % 50, (seed >> 12) % 9, (seed >> 4) % 3, (seed >> 6) % 3,
                 (seed >> 3) % 2 ? "true" : "false");
        cr_assert_eq(put(id, doc, NULL), BR_OK);
    }
    const char *conds[] = {
        "{\"path\":\"k\",\"op\":\"==\",\"value\":\"v3\"}",
        "{\"path\":\"n\",\"op\":\">\",\"value\":20}",
        "{\"path\":\"n\",\"op\":\"<=\",\"value\":7}",
        "{\"path\":\"f\",\"op\":\">=\",\"value\":4.5}",
        "{\"path\":\"arr\",\"op\":\"==\",\"value\":\"a1\"}",
        "{\"path\":\"arr\",\"op\":\"in\",\"value\":[\"b0\",\"a2\"]}",
        "{\"path\":\"k\",\"op\":\"prefix\",\"value\":\"v\"}",
        "{\"path\":\"b\",\"op\":\"==\",\"value\":true}",
    };
    size_t nc = sizeof conds / sizeof conds[0];
    for (size_t a = 0; a < nc; a++) {
        for (size_t b = 0; b < nc; b++) {
            char indexed[1024], scan[1024], got1[4096], got2[4096];
            snprintf(indexed, sizeof indexed, "{\"where\":[%s,%s]}", conds[a], conds[b]);
            /* wrapping in an OR of one forces a full scan */
            snprintf(scan, sizeof scan, "{\"where\":[{\"or\":[{\"and\":[%s,%s]}]}]}", conds[a],
                     conds[b]);
            struct rows r1 = {0}, r2 = {0};
            br_query *q1 = compile(indexed), *q2 = compile(scan);
            struct br_find_result res1, res2;
            (void)got1;
            (void)got2;
            cr_assert_eq(br_db_find(db, q1, row_cb, &r1, &res1), BR_OK);
            cr_assert_eq(br_db_find(db, q2, row_cb, &r2, &res2), BR_OK);
            cr_assert_str_eq(res2.plan, "full_scan");
            cr_assert_str_neq(res1.plan, "full_scan", "%s", indexed);
            cr_assert_eq(r1.n, r2.n, "%s: %zu vs %zu", indexed, r1.n, r2.n);
            for (size_t i = 0; i < r1.n; i++)
                cr_assert_str_eq(r1.ids[i], r2.ids[i]);
            br_query_free(q1);
            br_query_free(q2);
        }
    }
}

Test(find, index_policy_limits_postings_and_the_planner)
{
    const char *pats[] = {"type", "address/+"};
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_db_set_index(db, false, pats, 2, &eb), BR_OK, "%s", eb.msg);
    check_clean(); /* the rebuild left exactly the policy's postings */
    char got[512];
    /* indexed paths still seek; the others scan, with the same answers */
    cr_expect_str_eq(run(W1("type", "==", "\"user\""), got, sizeof got), "index_seek");
    cr_expect_str_eq(got, "user1,user2,user3");
    cr_expect_str_eq(run(W1("address/city", "==", "\"Paris\""), got, sizeof got), "index_seek");
    cr_expect_str_eq(got, "nested1");
    cr_expect_str_eq(run(W1("age", ">", "28"), got, sizeof got), "full_scan");
    cr_expect_str_eq(got, "user1,user3");
    cr_expect_str_eq(run("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
                         "{\"path\":\"status\",\"op\":\"==\",\"value\":\"active\"}]}",
                         got, sizeof got),
                     "index_seek");
    cr_expect_str_eq(got, "user1,user2");
    /* writes follow the policy */
    cr_assert_eq(put("user9", "{\"type\":\"user\",\"age\":99}", NULL), BR_OK);
    check_clean();
    /* it survives a reopen */
    br_db_close(db);
    br_store_close(st);
    struct br_store_opts o = {.path = dir};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    bool all;
    char **p;
    size_t n;
    cr_assert_eq(br_db_index_policy(db, &all, &p, &n), BR_OK);
    cr_assert(!all);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(p[0], "type");
    for (size_t i = 0; i < n; i++)
        br_free(p[i]);
    br_free(p);
    cr_expect_str_eq(run(W1("age", ">", "90"), got, sizeof got), "full_scan");
    cr_expect_str_eq(got, "user9");
    /* none at all, then every path again */
    cr_assert_eq(br_db_set_index(db, false, NULL, 0, &eb), BR_OK);
    check_clean();
    cr_expect_str_eq(run(W1("type", "==", "\"post\""), got, sizeof got), "full_scan");
    cr_expect_str_eq(got, "post1,post2");
    cr_assert_eq(br_db_set_index(db, true, NULL, 0, &eb), BR_OK);
    check_clean();
    cr_expect_str_eq(run(W1("age", ">", "90"), got, sizeof got), "index_scan");
    cr_expect_str_eq(got, "user9");
    const char *bad[] = {"a/#/b"};
    cr_expect_eq(br_db_set_index(db, false, bad, 1, &eb), BR_EINVAL);
    check_clean();
}

Test(find, a_token_dies_when_the_index_policy_changes)
{
    br_query *q = compile("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}],"
                          "\"limit\":1}");
    struct rows rs = {0};
    struct br_find_result res;
    cr_assert_eq(br_db_find(db, q, row_cb, &rs, &res), BR_OK);
    cr_assert(res.has_more);
    q->bookmark = br_strdup(res.token);
    const char *pats[] = {"org"};
    cr_assert_eq(br_db_set_index(db, false, pats, 1, NULL), BR_OK);
    cr_expect_eq(br_db_find(db, q, row_cb, &rs, &res), BR_EINVAL);
    br_query_free(q);
}

Test(find, no_index_by_default_and_the_same_answers)
{
    cr_assert_eq(br_store_db_create(st, "plain", NULL), BR_OK);
    br_db *main_db = db;
    cr_assert_eq(br_store_db_open(st, "plain", &db), BR_OK);
    bool all;
    char **p;
    size_t n;
    cr_assert_eq(br_db_index_policy(db, &all, &p, &n), BR_OK);
    cr_assert(!all);
    cr_assert_eq(n, 0);
    fixture();
    check_clean();
    struct br_db_check ck;
    cr_assert_eq(br_db_check(db, &ck), BR_OK);
    cr_expect_eq(ck.postings, 0);
    char got[512];
    cr_expect_str_eq(run(W1("type", "==", "\"user\""), got, sizeof got), "full_scan");
    cr_expect_str_eq(got, "user1,user2,user3");
    br_db_close(db);
    db = main_db;
}

/* find checks each candidate's stored body with query_match_stored, which reads with its own
 * path to br_cbor_next's items (query.c, "reading bodies"): over documents holding every kind of
 * item (integers of each head size, halves, singles and doubles, non-ASCII and long text, nested
 * and empty containers, arrays of maps), an indexed find with a residual condition returns
 * exactly the documents br_query_match accepts, in id order. */
Test(find, residual_conditions_agree_with_query_match)
{
    static const char *const docs[] = {
        "{\"g\":\"all\",\"a\":1,\"b\":\"x\",\"n\":-1,\"f\":1.5,\"s\":0.1,\"t\":true,\"z\":null}",
        "{\"g\":\"all\",\"a\":23,\"b\":\"caf\\u00e9\",\"n\":-24,\"f\":65504.0,\"s\":1e300,"
        "\"t\":false,\"z\":[]}",
        "{\"g\":\"all\",\"a\":24,\"b\":\"\\u65e5\\u672c\",\"n\":-256,\"f\":3.4028234663852886e38,"
        "\"s\":-0.0,\"z\":{}}",
        "{\"g\":\"all\",\"a\":65536,\"b\":\"abcdefghijklmnopqrstuvwxyz0123456789\","
        "\"n\":-9223372036854775808,\"f\":0.5,\"arr\":[1,\"caf\\u00e9\",[2,[3]],{\"k\":\"v\"}],"
        "\"m\":{\"x\":{\"y\":[1,2]}}}",
        "{\"g\":\"all\",\"a\":4294967296,\"b\":\"e\\u0301\",\"arr\":[{\"k\":\"v\",\"n\":2},"
        "{\"k\":\"w\"}],\"m\":{\"x\":1,\"\\u00e9\":2}}",
        "{\"g\":\"all\",\"arr\":[],\"m\":{\"x\":{\"y\":\"\\u00e9\"}},\"a\":9007199254740993}",
    };
    static const char *const conds[] = {
        "{\"path\":\"a\",\"op\":\">\",\"value\":23.5}",
        "{\"path\":\"a\",\"op\":\"!=\",\"value\":24}",
        "{\"path\":\"b\",\"value\":\"caf\\u00e9\"}",
        "{\"path\":\"b\",\"op\":\"prefix\",\"value\":\"\\u65e5\"}",
        "{\"path\":\"b\",\"op\":\"regex\",\"value\":\"^.\\u0301$\"}",
        "{\"path\":\"n\",\"op\":\"in\",\"value\":[-1,-256]}",
        "{\"path\":\"f\",\"op\":\">=\",\"value\":1.5}",
        "{\"path\":\"s\",\"value\":0}",
        "{\"path\":\"t\",\"op\":\"nin\",\"value\":[false]}",
        "{\"path\":\"z\",\"op\":\"missing\"}",
        "{\"path\":\"arr\",\"value\":\"caf\\u00e9\"}",
        "{\"path\":\"arr/k\",\"value\":\"w\"}",
        "{\"path\":\"arr\",\"elem_match\":{\"and\":[{\"path\":\"k\",\"value\":\"v\"},"
        "{\"path\":\"n\",\"op\":\">\",\"value\":1}]}}",
        "{\"path\":\"m/x/y\",\"value\":\"\\u00e9\"}",
        "{\"path\":\"m/\\u00e9\",\"value\":2}",
        "{\"not\":{\"path\":\"a\",\"op\":\">\",\"value\":100}}",
    };
    size_t nd = sizeof docs / sizeof docs[0], nc = sizeof conds / sizeof conds[0];
    br_buf bodies[sizeof docs / sizeof docs[0]];
    for (size_t i = 0; i < nd; i++) {
        char id[8];
        snprintf(id, sizeof id, "v%02zu", i);
        json_t *j;
        struct br_errbuf eb = {{0}};
        cr_assert_eq(br_json_parse(docs[i], strlen(docs[i]), 0, &j, &eb), BR_OK, "%s", eb.msg);
        struct br_json_doc d;
        cr_assert_eq(br_json_doc_parse(j, id, &d, &eb), BR_OK, "%s", eb.msg);
        json_decref(j);
        br_buf_init(&bodies[i], 0);
        cr_assert_eq(br_buf_append(&bodies[i], d.put.body, d.put.body_len), BR_OK);
        struct br_put_result res;
        cr_assert_eq(br_db_put(db, &d.put, &NOSYNC, &res), BR_OK);
        br_json_doc_fini(&d);
    }
    size_t hits = 0;
    for (size_t c = 0; c < nc; c++) {
        char spec[1024], want[256] = "", got[1024];
        snprintf(spec, sizeof spec, "{\"where\":[%s]}", conds[c]);
        br_query *alone = compile(spec);
        for (size_t i = 0; i < nd; i++) {
            if (!br_query_match(alone, bodies[i].data, bodies[i].len))
                continue;
            char id[8];
            snprintf(id, sizeof id, "%sv%02zu", want[0] ? "," : "", i);
            strncat(want, id, sizeof want - strlen(want) - 1);
            hits++;
        }
        br_query_free(alone);
        snprintf(spec, sizeof spec, "{\"where\":[{\"path\":\"g\",\"value\":\"all\"},%s]}",
                 conds[c]);
        cr_expect_str_neq(run(spec, got, sizeof got), "full_scan", "%s", spec);
        cr_expect_str_eq(got, want, "%s", spec);
    }
    cr_assert_gt(hits, nc, "the fixture matches something for most conditions");
    for (size_t i = 0; i < nd; i++)
        br_buf_fini(&bodies[i]);
    check_clean();
}
