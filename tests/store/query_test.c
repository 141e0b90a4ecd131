/* query_test.c — the query compiler, the Mango translator and the evaluator (query.h):
 * compile errors with their locations (QRY-01..04), the 6-document fixture of QRY-06..25 and the
 * numeric fixture of QRY-28..30 evaluated with br_query_match, unreachable "_" keys (QRY-35),
 * array membership (QRY-37), the typing and missing-path rules, every supported Mango operator
 * and the rejected ones, the caps, the regex backtracking bound, the patterns a query
 * subscription registers (SUB-25, with a soundness check against the documents' topics), the
 * JSON round trip, allocation torture of both compilers with jansson routed through
 * br_malloc, and query_match_stored (find's check of a stored body) against br_query_match.
 * Rows, ordering and paging belong to the planner; for those IDs the tests check what the
 * compiled query carries. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/json.h"
#include "barrel/paths.h"
#include "barrel/query.h"

#include "store_int.h" /* query_match_stored */

/* Test hook in query.c: regex matches that hit a PCRE2 limit. */
unsigned long br_query_regex_limit_hits(const br_query *q);

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
}

TestSuite(query, .init = setup);

/* ---- helpers ---- */

static json_t *J(const char *text)
{
    json_t *v = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_parse(text, strlen(text), 0, &v, &eb) == BR_OK, "parse(%s): %s", text,
              eb.msg);
    return v;
}

static br_err try_compile(const char *text, bool mango, br_query **q, struct br_errbuf *eb)
{
    json_t *v = J(text);
    br_err e = mango ? br_query_from_mango(v, q, eb) : br_query_compile(v, q, eb);
    json_decref(v);
    return e;
}

static br_query *compile(const char *text)
{
    br_query *q = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = try_compile(text, false, &q, &eb);
    cr_assert(e == BR_OK, "compile(%s): %d %s", text, e, eb.msg);
    return q;
}

static br_query *mango(const char *text)
{
    br_query *q = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = try_compile(text, true, &q, &eb);
    cr_assert(e == BR_OK, "mango(%s): %d %s", text, e, eb.msg);
    return q;
}

/* Compiling fails with BR_EINVAL and a reason containing `want`. */
static void expect_error(bool is_mango, const char *text, const char *want)
{
    br_query *q = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = try_compile(text, is_mango, &q, &eb);
    cr_assert(e == BR_EINVAL, "%s: expected BR_EINVAL, got %d", text, e);
    cr_assert(q == NULL);
    cr_assert(strstr(eb.msg, want), "%s: reason '%s' lacks '%s'", text, eb.msg, want);
}

static void compile_err(const char *text, const char *want)
{
    expect_error(false, text, want);
}

static void mango_err(const char *text, const char *want)
{
    expect_error(true, text, want);
}

/* A JSON document as canonical CBOR (any "_" keys kept: br_json_to_cbor converts values). */
static br_buf doc(const char *text)
{
    json_t *v = J(text);
    br_buf b;
    br_buf_init(&b, 0);
    struct br_errbuf eb = {{0}};
    cr_assert(br_json_to_cbor(v, &b, &eb) == BR_OK, "%s", eb.msg);
    json_decref(v);
    return b;
}

static bool matches(const br_query *q, const char *doc_text)
{
    br_buf b = doc(doc_text);
    bool m = br_query_match(q, b.data, b.len);
    br_buf_fini(&b);
    return m;
}

/* The barrel-form query (or Mango, with mango) matches doc_text. */
static bool qm(bool is_mango, const char *query, const char *doc_text)
{
    br_query *q = is_mango ? mango(query) : compile(query);
    bool m = matches(q, doc_text);
    br_query_free(q);
    return m;
}

/* One where condition against one document. */
static bool cm(const char *cond, const char *doc_text)
{
    char text[2048];
    snprintf(text, sizeof text, "{\"where\": [%s]}", cond);
    return qm(false, text, doc_text);
}

/* One Mango selector against one document. */
static bool sm(const char *selector, const char *doc_text)
{
    char text[2048];
    snprintf(text, sizeof text, "{\"selector\": %s}", selector);
    return qm(true, text, doc_text);
}

/* The where tree that br_query_to_json renders equals `want` (JSON text). */
static void expect_where(const br_query *q, const char *want)
{
    json_t *out = NULL;
    cr_assert(br_query_to_json(q, &out) == BR_OK);
    json_t *w = J(want);
    json_t *got = json_object_get(out, "where");
    char *gs = json_dumps(got, JSON_COMPACT);
    cr_assert(json_equal(got, w), "where: got %s, want %s", gs, want);
    jfree(gs);
    json_decref(w);
    json_decref(out);
}

static void expect_mango(const char *selector, const char *want_where)
{
    char text[4096];
    snprintf(text, sizeof text, "{\"selector\": %s}", selector);
    br_query *q = mango(text);
    expect_where(q, want_where);
    br_query_free(q);
}

/* ---- the fixtures ---- */

struct fixdoc {
    const char *id;
    const char *json;
};

static const struct fixdoc FIX6[] = {
    {"user1",
     "{\"type\":\"user\",\"name\":\"Alice\",\"age\":30,\"status\":\"active\",\"org\":\"org1\"}"},
    {"user2",
     "{\"type\":\"user\",\"name\":\"Bob\",\"age\":25,\"status\":\"active\",\"org\":\"org1\"}"},
    {"user3", "{\"type\":\"user\",\"name\":\"Charlie\",\"age\":35,\"status\":\"inactive\","
              "\"org\":\"org2\"}"},
    {"post1", "{\"type\":\"post\",\"title\":\"Hello\",\"author\":\"user1\","
              "\"tags\":[\"intro\",\"hello\"]}"},
    {"post2", "{\"type\":\"post\",\"title\":\"World\",\"author\":\"user2\"}"},
    {"nested1", "{\"type\":\"nested\",\"address\":{\"city\":\"Paris\",\"country\":\"France\"}}"},
};

static const struct fixdoc FIXN[] = {
    {"n1", "{\"type\":\"num\",\"n\":1,\"m\":1,\"name\":\"item1\"}"},
    {"n2", "{\"type\":\"num\",\"n\":2,\"m\":2,\"name\":\"item2\"}"},
    {"n3", "{\"type\":\"num\",\"n\":3,\"m\":3,\"name\":\"item3\"}"},
    {"n4", "{\"type\":\"num\",\"n\":4,\"m\":4,\"name\":\"item4\"}"},
    {"n5", "{\"type\":\"num\",\"n\":5,\"m\":5,\"name\":\"item5\"}"},
};

/* The ids of the fixture documents that q matches, comma-separated, in fixture order. Also
 * checks the subscription patterns of q against each matching document's topics. */
static void check_patterns_cover(const br_query *q, const uint8_t *body, size_t len);

/* Append ",s" (or "s" to an empty list) to the list in out. */
static void list_add(char *out, size_t cap, const char *s)
{
    size_t len = strlen(out);
    snprintf(out + len, cap - len, "%s%s", len ? "," : "", s);
}

static char *run(const br_query *q, const struct fixdoc *fx, size_t n, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        br_buf b = doc(fx[i].json);
        if (br_query_match(q, b.data, b.len)) {
            check_patterns_cover(q, b.data, b.len);
            list_add(out, cap, fx[i].id);
        }
        br_buf_fini(&b);
    }
    return out;
}

static void expect_ids(const char *query, const struct fixdoc *fx, size_t n, const char *want)
{
    char got[256];
    br_query *q = compile(query);
    run(q, fx, n, got, sizeof got);
    cr_assert_str_eq(got, want, "%s", query);
    br_query_free(q);
}

#define FIX6_IDS(query, want) expect_ids(query, FIX6, 6, want)
#define FIXN_IDS(query, want) expect_ids(query, FIXN, 5, want)

/* ---- QRY-01..04: compile, explain, matcher ---- */

Test(query, qry01_compile_keeps_conditions_and_explain_shows_them)
{
    br_query *q = compile("{\"where\": [{\"path\": [\"type\"], \"value\": \"user\"},"
                          " {\"path\": \"org/id\", \"op\": \">=\", \"value\": 3}]}");
    cr_assert_eq(q->root.op, BR_Q_AND);
    cr_assert_eq(q->root.n_kids, 2);
    cr_assert_eq(q->root.kids[0].op, BR_Q_EQ);
    cr_assert_str_eq(q->root.kids[0].path, "type");
    cr_assert_eq(q->root.kids[0].val.type, BR_PV_STRING);
    cr_assert_str_eq(q->root.kids[0].val.s, "user");
    cr_assert_eq(q->root.kids[1].op, BR_Q_GE);
    cr_assert_str_eq(q->root.kids[1].path, "org/id");
    cr_assert_eq(q->root.kids[1].path_len, 6);
    cr_assert_eq(q->root.kids[1].val.type, BR_PV_INT);
    cr_assert_eq(q->root.kids[1].val.i, 3);
    cr_assert(q->include_docs);
    expect_where(q, "[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"},"
                    "{\"path\":\"org/id\",\"op\":\">=\",\"value\":3}]");
    br_query_free(q);
}

Test(query, qry01_operator_aliases_and_array_paths_normalise)
{
    br_query *q =
        compile("{\"where\": [{\"path\": [\"a\", 0, \"b\"], \"op\": \"gte\", \"value\": 1},"
                "{\"path\": \"x\", \"op\": \"=<\", \"value\": 2},"
                "{\"path\": \"x\", \"op\": \"=/=\", \"value\": 2},"
                "{\"path\": \"x\", \"op\": \"eq\", \"value\": null}]}");
    expect_where(q, "[{\"path\":\"a/0/b\",\"op\":\">=\",\"value\":1},"
                    "{\"path\":\"x\",\"op\":\"<=\",\"value\":2},"
                    "{\"path\":\"x\",\"op\":\"!=\",\"value\":2},"
                    "{\"path\":\"x\",\"op\":\"==\",\"value\":null}]");
    br_query_free(q);
}

Test(query, qry02_non_map_spec_unknown_condition_bad_operator)
{
    compile_err("[1, 2]", "must be a JSON object");
    compile_err("\"where\"", "must be a JSON object");
    compile_err("{\"where\": [{\"foo\": 1}]}", "where[0]: unknown key 'foo'");
    compile_err("{\"where\": [5]}", "where[0]: expects a condition object");
    compile_err("{\"where\": [{\"path\":\"a\",\"value\":1},{\"path\":\"a\",\"value\":1},"
                "{\"path\":\"a\",\"op\":\"like\",\"value\":\"x\"}]}",
                "where[2].op: unknown operator 'like'");
    compile_err("{\"where\": [{\"path\":\"a\",\"op\":7,\"value\":1}]}", "where[0].op: expects");
    compile_err("{\"where\": [{\"and\": [{\"path\":\"a\",\"op\":\"~\",\"value\":1}]}]}",
                "where[0].and[0].op: unknown operator '~'");
    compile_err("{\"where\": [], \"colour\": 1}", "unknown key 'colour'");
}

Test(query, qry03_missing_where_bad_path_bad_regex)
{
    compile_err("{}", "missing clause 'where'");
    compile_err("{\"limit\": 3}", "missing clause 'where'");
    compile_err("{\"where\": [{\"path\": 5, \"value\": 1}]}", "where[0].path: expects a string");
    compile_err("{\"where\": [{\"path\": {\"a\":1}, \"value\": 1}]}", "where[0].path");
    compile_err("{\"where\": [{\"path\": [\"a\", -1], \"value\": 1}]}", "where[0].path[1]");
    compile_err("{\"where\": [{\"path\": [], \"value\": 1}]}", "path is empty");
    compile_err("{\"where\": [{\"path\": \"a//b\", \"value\": 1}]}", "empty path segment");
    compile_err("{\"where\": [{\"path\": \"a/\", \"value\": 1}]}", "empty path segment");
    compile_err("{\"where\": [{\"path\": [\"a/b\"], \"value\": 1}]}", "contains '/'");
    compile_err("{\"where\": [{\"path\": \"a\", \"op\": \"regex\", \"value\": \"(a\"}]}",
                "where[0].value: bad regex at offset 2");
    compile_err("{\"where\": [{\"path\": \"a\", \"op\": \"regex\", \"value\": 5}]}",
                "regex expects a string");
    compile_err("{\"where\": [{\"path\": \"a\", \"op\": \"==\"}]}", "missing 'value'");
    compile_err("{\"where\": [{\"path\": \"a\", \"op\": \"exists\", \"value\": 1}]}",
                "exists takes no value");
    compile_err("{\"where\": [{\"path\": \"a\", \"value\": [1]}]}", "expects a scalar");
    compile_err("{\"where\": [{\"path\": \"a\", \"op\": \"in\", \"value\": 1}]}",
                "in expects an array");
    compile_err("{\"where\": [{\"path\": \"a\", \"op\": \"prefix\", \"value\": 1}]}",
                "prefix expects a string");
    compile_err("{\"where\": {}}", "where: expects an array");
    compile_err("{\"where\": [], \"limit\": -1}", "limit expects a non-negative integer");
    compile_err("{\"where\": [], \"offset\": \"1\"}", "offset expects");
    compile_err("{\"where\": [], \"include_docs\": 1}", "include_docs expects");
    compile_err("{\"where\": [], \"order_by\": [{\"path\": \"a\", \"dir\": \"up\"}]}",
                "order_by[0]: dir expects");
    compile_err("{\"where\": [], \"order_by\": [{\"field\": \"a\"}]}",
                "order_by[0]: unknown key 'field'");
    compile_err("{\"where\": [], \"id_prefix\": \"u\"}", "id_scan_with_where");
    compile_err("{\"id_prefix\": \"u\", \"id_range\": [null, null]}", "exclusive");
    compile_err("{\"id_range\": [1, null]}", "id_range expects");
    compile_err("{\"where\": [{\"not\": 1}]}", "where[0].not: expects a condition object");
    compile_err("{\"where\": [{\"or\": [], \"path\": \"a\"}]}", "unknown key 'path'");
    compile_err("{\"where\": [{\"elem_match\": {\"path\": [], \"value\": 1}}]}", "missing 'path'");
}

Test(query, qry04_matcher_equality_compare_and_empty_list)
{
    const char *d = "{\"type\":\"user\",\"age\":30}";
    cr_assert(cm("{\"path\":\"type\",\"value\":\"user\"}", d));
    cr_assert(!cm("{\"path\":\"type\",\"value\":\"post\"}", d));
    cr_assert(cm("{\"path\":\"age\",\"op\":\">\",\"value\":18}", d));
    cr_assert(!cm("{\"path\":\"age\",\"op\":\"<\",\"value\":18}", d));
    cr_assert(cm("{\"path\":\"type\",\"value\":\"user\"},{\"path\":\"age\",\"op\":\">\","
                 "\"value\":18}",
                 d));
    cr_assert(!cm("{\"path\":\"type\",\"value\":\"user\"},{\"path\":\"age\",\"op\":\">\","
                  "\"value\":40}",
                  d));
    br_query *q = compile("{\"where\": []}");
    cr_assert_eq(q->root.op, BR_Q_TRUE);
    cr_assert(matches(q, d));
    cr_assert(matches(q, "{}"));
    expect_where(q, "[]");
    br_query_free(q);
}

Test(query, qry04_id_scans_compile_without_where)
{
    br_query *q = compile("{\"id_prefix\": \"user:\"}");
    cr_assert_str_eq(q->id_prefix, "user:");
    cr_assert(matches(q, "{\"a\":1}"));
    br_query_free(q);
    q = compile("{\"id_range\": [\"a\", null], \"limit\": 2}");
    cr_assert_str_eq(q->id_start, "a");
    cr_assert_null(q->id_end);
    cr_assert_eq(q->limit, 2);
    br_query_free(q);
    q = compile("{\"id_range\": [null, null]}");
    cr_assert_str_eq(q->id_prefix, "");
    br_query_free(q);
}

/* ---- QRY-06..25 on the 6-document fixture ---- */

Test(query, qry06_equality_type_user)
{
    FIX6_IDS("{\"where\":[{\"path\":[\"type\"],\"value\":\"user\"}]}", "user1,user2,user3");
}

Test(query, qry07_type_and_status)
{
    FIX6_IDS("{\"where\":[{\"path\":\"type\",\"value\":\"user\"},"
             "{\"path\":\"status\",\"value\":\"active\"}]}",
             "user1,user2");
}

Test(query, qry08_age_greater_than_28)
{
    FIX6_IDS("{\"where\":[{\"path\":\"age\",\"op\":\">\",\"value\":28}]}", "user1,user3");
}

Test(query, qry09_age_less_than_30)
{
    FIX6_IDS("{\"where\":[{\"path\":\"age\",\"op\":\"<\",\"value\":30}]}", "user2");
}

Test(query, qry10_in_org1)
{
    FIX6_IDS("{\"where\":[{\"path\":\"org\",\"op\":\"in\",\"value\":[\"org1\"]}]}", "user1,user2");
}

Test(query, qry11_or_user_post)
{
    FIX6_IDS("{\"where\":[{\"or\":[{\"path\":\"type\",\"value\":\"user\"},"
             "{\"path\":\"type\",\"value\":\"post\"}]}]}",
             "user1,user2,user3,post1,post2");
}

Test(query, qry12_or_with_limit_keeps_limit)
{
    const char *text = "{\"where\":[{\"or\":[{\"path\":\"type\",\"value\":\"user\"},"
                       "{\"path\":\"type\",\"value\":\"post\"}]}], \"limit\": 2}";
    FIX6_IDS(text, "user1,user2,user3,post1,post2");
    br_query *q = compile(text);
    cr_assert_eq(q->limit, 2);
    br_query_free(q);
}

Test(query, qry13_eq_and_or_with_limit_1)
{
    const char *text = "{\"where\":[{\"path\":\"type\",\"value\":\"user\"},"
                       "{\"or\":[{\"path\":\"name\",\"value\":\"Alice\"},"
                       "{\"path\":\"name\",\"value\":\"Bob\"}]}], \"limit\": 1}";
    FIX6_IDS(text, "user1,user2");
    br_query *q = compile(text);
    cr_assert_eq(q->limit, 1);
    br_query_free(q);
}

Test(query, qry14_not_inactive)
{
    FIX6_IDS("{\"where\":[{\"path\":\"type\",\"value\":\"user\"},"
             "{\"not\":{\"path\":\"status\",\"value\":\"inactive\"}}]}",
             "user1,user2");
}

Test(query, qry15_exists_tags)
{
    FIX6_IDS("{\"where\":[{\"path\":\"tags\",\"op\":\"exists\"}]}", "post1");
}

Test(query, qry16_missing_tags)
{
    FIX6_IDS("{\"where\":[{\"path\":\"type\",\"value\":\"post\"},"
             "{\"path\":\"tags\",\"op\":\"missing\"}]}",
             "post2");
    FIX6_IDS("{\"where\":[{\"path\":\"tags\",\"op\":\"missing\"}]}",
             "user1,user2,user3,post2,nested1");
}

Test(query, qry17_prefix_A)
{
    FIX6_IDS("{\"where\":[{\"path\":\"name\",\"op\":\"prefix\",\"value\":\"A\"}]}", "user1");
}

Test(query, qry18_regex_A_or_B)
{
    FIX6_IDS("{\"where\":[{\"path\":\"name\",\"op\":\"regex\",\"value\":\"^[AB].*\"}]}",
             "user1,user2");
    /* unanchored */
    FIX6_IDS("{\"where\":[{\"path\":\"name\",\"op\":\"regex\",\"value\":\"li\"}]}", "user1,user3");
}

Test(query, qry19_nested_path_city_paris)
{
    FIX6_IDS("{\"where\":[{\"path\":[\"address\",\"city\"],\"value\":\"Paris\"}]}", "nested1");
    FIX6_IDS("{\"where\":[{\"path\":\"address/city\",\"value\":\"Paris\"}]}", "nested1");
}

Test(query, qry20_limit_2)
{
    br_query *q = compile("{\"where\":[{\"path\":\"type\",\"value\":\"user\"}], \"limit\": 2}");
    cr_assert_eq(q->limit, 2);
    cr_assert_eq(q->offset, 0);
    br_query_free(q);
}

Test(query, qry21_offset_1_limit_2)
{
    br_query *q = compile("{\"where\":[{\"path\":\"type\",\"value\":\"user\"}], \"limit\": 2,"
                          " \"offset\": 1}");
    cr_assert_eq(q->limit, 2);
    cr_assert_eq(q->offset, 1);
    json_t *out = NULL;
    cr_assert(br_query_to_json(q, &out) == BR_OK);
    cr_assert_eq(json_integer_value(json_object_get(out, "offset")), 1);
    json_decref(out);
    br_query_free(q);
}

Test(query, qry22_order_by_name_asc)
{
    br_query *q = compile("{\"where\":[{\"path\":\"type\",\"value\":\"user\"}],"
                          " \"order_by\": [{\"path\": [\"name\"], \"dir\": \"asc\"},"
                          " {\"path\": \"age\", \"dir\": \"desc\"}, {\"path\": \"org\"}]}");
    cr_assert_eq(q->n_order, 3);
    cr_assert_str_eq(q->order[0].path, "name");
    cr_assert(!q->order[0].desc);
    cr_assert_str_eq(q->order[1].path, "age");
    cr_assert(q->order[1].desc);
    cr_assert(!q->order[2].desc);
    br_query_free(q);
}

Test(query, qry23_include_docs)
{
    br_query *q = compile("{\"where\":[]}");
    cr_assert(q->include_docs);
    br_query_free(q);
    q = compile("{\"where\":[], \"include_docs\": false}");
    cr_assert(!q->include_docs);
    br_query_free(q);
}

Test(query, qry24_projected_fields)
{
    br_query *q = compile("{\"where\":[{\"path\":\"type\",\"value\":\"user\"}],"
                          " \"fields\": [\"org\", \"name\"]}");
    cr_assert_eq(q->n_fields, 2);
    cr_assert_str_eq(q->fields[0], "org");
    cr_assert_str_eq(q->fields[1], "name");
    br_query_free(q);
}

Test(query, qry25_three_way_intersection_and_zero_cardinality)
{
    FIX6_IDS("{\"where\":[{\"path\":\"type\",\"value\":\"user\"},"
             "{\"path\":\"status\",\"value\":\"active\"},{\"path\":\"org\",\"value\":\"org1\"}]}",
             "user1,user2");
    FIX6_IDS("{\"where\":[{\"path\":\"type\",\"value\":\"user\"},"
             "{\"path\":\"org\",\"value\":\"org3\"}]}",
             "");
}

/* ---- QRY-28..30 on n = 1..5 ---- */

Test(query, qry28_single_compare)
{
    FIXN_IDS("{\"where\":[{\"path\":\"n\",\"op\":\">=\",\"value\":2}]}", "n2,n3,n4,n5");
}

Test(query, qry29_two_and_three_compares)
{
    FIXN_IDS("{\"where\":[{\"path\":\"n\",\"op\":\">=\",\"value\":2},"
             "{\"path\":\"n\",\"op\":\"<=\",\"value\":3}]}",
             "n2,n3");
    FIXN_IDS("{\"where\":[{\"path\":\"n\",\"op\":\">=\",\"value\":2},"
             "{\"path\":\"m\",\"op\":\"<=\",\"value\":3}]}",
             "n2,n3");
    FIXN_IDS(
        "{\"where\":[{\"path\":\"type\",\"value\":\"num\"},"
        "{\"path\":\"n\",\"op\":\">=\",\"value\":2},{\"path\":\"n\",\"op\":\"<=\",\"value\":3}]}",
        "n2,n3");
    FIXN_IDS(
        "{\"where\":[{\"path\":\"n\",\"op\":\">\",\"value\":2},"
        "{\"path\":\"n\",\"op\":\"<\",\"value\":5},{\"path\":\"n\",\"op\":\">=\",\"value\":3}]}",
        "n3,n4");
}

Test(query, qry30_prefix_sole_and_with_compare)
{
    FIXN_IDS("{\"where\":[{\"path\":\"name\",\"op\":\"prefix\",\"value\":\"item\"}]}",
             "n1,n2,n3,n4,n5");
    FIXN_IDS("{\"where\":[{\"path\":\"name\",\"op\":\"prefix\",\"value\":\"item\"},"
             "{\"path\":\"n\",\"op\":\">=\",\"value\":3}]}",
             "n3,n4,n5");
}

/* ---- QRY-35, QRY-37 ---- */

Test(query, qry35_underscore_meta_not_queryable_meta_is)
{
    const char *d = "{\"_meta\":{\"x\":1},\"meta\":{\"x\":1},\"_y\":2}";
    cr_assert(!cm("{\"path\":\"_meta/x\",\"value\":1}", d));
    cr_assert(!cm("{\"path\":\"_meta\",\"op\":\"exists\"}", d));
    cr_assert(cm("{\"path\":\"_meta\",\"op\":\"missing\"}", d));
    cr_assert(!cm("{\"path\":\"_y\",\"op\":\">\",\"value\":0}", d));
    cr_assert(cm("{\"path\":\"meta/x\",\"value\":1}", d));
    /* below the top level "_" keys are ordinary */
    cr_assert(cm("{\"path\":\"meta/_x\",\"value\":1}", "{\"meta\":{\"_x\":1}}"));
    mango_err("{\"selector\": {\"_meta.x\": 1}}", "selector._meta.x: fields starting with '_'");
    mango_err("{\"selector\": {\"_id\": {\"$gt\": null}}}", "not queryable");
    cr_assert(sm("{\"meta.x\": 1}", d));
}

Test(query, qry37_path_on_a_list_means_membership)
{
    const char *d = "{\"tags\":[\"a\",\"x\",\"b\"]}";
    cr_assert(cm("{\"path\":[\"tags\"],\"value\":\"x\"}", d));
    cr_assert(!cm("{\"path\":[\"tags\"],\"value\":\"y\"}", d));
    cr_assert(cm("{\"path\":\"tags\",\"op\":\"contains\",\"value\":\"x\"}", d));
    cr_assert(cm("{\"path\":\"tags\",\"op\":\"in\",\"value\":[\"q\",\"b\"]}", d));
    cr_assert(cm("{\"path\":\"tags\",\"op\":\"prefix\",\"value\":\"x\"}", d));
    /* != is true only when no element equals */
    cr_assert(!cm("{\"path\":\"tags\",\"op\":\"!=\",\"value\":\"x\"}", d));
    cr_assert(cm("{\"path\":\"tags\",\"op\":\"!=\",\"value\":\"y\"}", d));
    /* nested arrays flatten; objects in arrays continue the path */
    const char *n = "{\"m\":[[1,2],[3,[4]]],\"items\":[{\"sku\":\"A\"},{\"sku\":\"B\",\"q\":2}]}";
    cr_assert(cm("{\"path\":\"m\",\"value\":4}", n));
    cr_assert(cm("{\"path\":\"m\",\"op\":\">\",\"value\":3}", n));
    cr_assert(!cm("{\"path\":\"m\",\"op\":\">\",\"value\":4}", n));
    cr_assert(cm("{\"path\":\"items/sku\",\"value\":\"B\"}", n));
    cr_assert(cm("{\"path\":[\"items\",\"q\"],\"value\":2}", n));
    cr_assert(!cm("{\"path\":\"items/sku\",\"value\":\"C\"}", n));
    cr_assert(cm("{\"path\":\"items/q\",\"op\":\"exists\"}", n));
    cr_assert(!cm("{\"path\":\"items/z\",\"op\":\"exists\"}", n));
}

Test(query, array_positions_also_select_by_index)
{
    const char *d = "{\"tags\":[\"intro\",\"hello\"],\"pts\":[{\"x\":1},{\"x\":2}],"
                    "\"o\":[{\"0\":\"key\"}]}";
    cr_assert(cm("{\"path\":[\"tags\",0],\"value\":\"intro\"}", d));
    cr_assert(!cm("{\"path\":\"tags/0\",\"value\":\"hello\"}", d));
    cr_assert(cm("{\"path\":\"tags/1\",\"value\":\"hello\"}", d));
    cr_assert(cm("{\"path\":\"pts/1/x\",\"value\":2}", d));
    cr_assert(!cm("{\"path\":\"pts/0/x\",\"value\":2}", d));
    cr_assert(!cm("{\"path\":\"tags/2\",\"op\":\"exists\"}", d));
    /* a decimal segment is also a key of element objects (as MongoDB) */
    cr_assert(cm("{\"path\":\"o/0\",\"value\":\"key\"}", d));
    cr_assert(sm("{\"tags.1\": \"hello\"}", d));
}

Test(query, contains_needs_an_array)
{
    const char *d = "{\"tags\":[\"a\",[\"b\"]],\"name\":\"a\",\"obj\":[{\"t\":\"a\"}]}";
    cr_assert(cm("{\"path\":\"tags\",\"op\":\"contains\",\"value\":\"a\"}", d));
    cr_assert(cm("{\"path\":\"tags\",\"op\":\"contains\",\"value\":\"b\"}", d));
    cr_assert(!cm("{\"path\":\"name\",\"op\":\"contains\",\"value\":\"a\"}", d));
    cr_assert(!cm("{\"path\":\"obj/t\",\"op\":\"contains\",\"value\":\"a\"}", d));
    cr_assert(cm("{\"path\":\"name\",\"value\":\"a\"}", d));
}

/* ---- types and missing paths ---- */

Test(query, comparisons_never_cross_types)
{
    const char *d = "{\"age\":\"19\",\"n\":19,\"b\":true,\"z\":null,\"o\":{\"a\":1},\"l\":[]}";
    cr_assert(!cm("{\"path\":\"age\",\"op\":\">\",\"value\":18}", d));
    cr_assert(!cm("{\"path\":\"age\",\"op\":\"<\",\"value\":18}", d));
    cr_assert(!cm("{\"path\":\"age\",\"value\":19}", d));
    cr_assert(!cm("{\"path\":\"n\",\"value\":\"19\"}", d));
    cr_assert(!cm("{\"path\":\"n\",\"op\":\">\",\"value\":\"1\"}", d));
    cr_assert(cm("{\"path\":\"age\",\"op\":\">\",\"value\":\"18\"}", d));
    cr_assert(cm("{\"path\":\"b\",\"value\":true}", d));
    cr_assert(!cm("{\"path\":\"b\",\"value\":1}", d));
    cr_assert(!cm("{\"path\":\"b\",\"value\":false}", d));
    cr_assert(!cm("{\"path\":\"b\",\"op\":\">=\",\"value\":true}", d));
    cr_assert(!cm("{\"path\":\"b\",\"op\":\">\",\"value\":false}", d));
    cr_assert(cm("{\"path\":\"z\",\"value\":null}", d));
    cr_assert(!cm("{\"path\":\"z\",\"op\":\"<=\",\"value\":null}", d));
    cr_assert(!cm("{\"path\":\"z\",\"value\":false}", d));
    cr_assert(!cm("{\"path\":\"o\",\"value\":1}", d));
    cr_assert(cm("{\"path\":\"o\",\"op\":\"!=\",\"value\":1}", d));
    cr_assert(!cm("{\"path\":\"age\",\"op\":\"prefix\",\"value\":\"2\"}", d));
    cr_assert(!cm("{\"path\":\"n\",\"op\":\"prefix\",\"value\":\"1\"}", d));
    cr_assert(!cm("{\"path\":\"n\",\"op\":\"regex\",\"value\":\"1\"}", d));
    cr_assert(cm("{\"path\":\"age\",\"op\":\"regex\",\"value\":\"9$\"}", d));
    /* an empty array exists but holds no value */
    cr_assert(cm("{\"path\":\"l\",\"op\":\"exists\"}", d));
    cr_assert(!cm("{\"path\":\"l\",\"value\":null}", d));
    cr_assert(cm("{\"path\":\"l\",\"op\":\"!=\",\"value\":1}", d));
}

Test(query, numbers_mix_int_and_float_exactly)
{
    const char *d = "{\"i\":30,\"f\":30.5,\"w\":30.0,\"big\":9007199254740993,"
                    "\"neg\":-9223372036854775808,\"h\":0.5}";
    cr_assert(cm("{\"path\":\"i\",\"value\":30.0}", d));
    cr_assert(cm("{\"path\":\"w\",\"value\":30}", d));
    cr_assert(cm("{\"path\":\"f\",\"op\":\">\",\"value\":30}", d));
    cr_assert(cm("{\"path\":\"f\",\"op\":\"<\",\"value\":31}", d));
    cr_assert(!cm("{\"path\":\"f\",\"value\":30}", d));
    cr_assert(cm("{\"path\":\"i\",\"op\":\"<\",\"value\":30.25}", d));
    cr_assert(cm("{\"path\":\"i\",\"op\":\">\",\"value\":29.75}", d));
    /* 2^53 + 1 is greater than the double 2^53 (no rounding through double) */
    cr_assert(cm("{\"path\":\"big\",\"op\":\">\",\"value\":9007199254740992.0}", d));
    cr_assert(!cm("{\"path\":\"big\",\"value\":9007199254740992.0}", d));
    cr_assert(cm("{\"path\":\"big\",\"value\":9007199254740993}", d));
    cr_assert(cm("{\"path\":\"neg\",\"value\":-9223372036854775808}", d));
    cr_assert(cm("{\"path\":\"neg\",\"op\":\"<\",\"value\":-9.2e18}", d));
    cr_assert(cm("{\"path\":\"h\",\"op\":\"<\",\"value\":1}", d));
    cr_assert(cm("{\"path\":\"h\",\"op\":\">\",\"value\":0}", d));
    cr_assert(cm("{\"path\":\"i\",\"op\":\"in\",\"value\":[\"30\", 30.0]}", d));
    /* {"u": 2^64 - 1}: a CBOR integer above INT64_MAX (JSON cannot carry it into jansson) */
    const uint8_t u[] = {0xa1, 0x61, 'u', 0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const struct {
        const char *cond;
        bool want;
    } uc[] = {
        {"{\"path\":\"u\",\"op\":\">\",\"value\":9223372036854775807}", true},
        {"{\"path\":\"u\",\"op\":\"<\",\"value\":1e30}", true},
        {"{\"path\":\"u\",\"op\":\">\",\"value\":1e19}", true},
        {"{\"path\":\"u\",\"op\":\"<\",\"value\":18446744073709551615.0}", true}, /* 2^64 */
        {"{\"path\":\"u\",\"value\":18446744073709551615.0}", false},
        {"{\"path\":\"u\",\"op\":\">\",\"value\":18446744073709549568.0}", true},
        {"{\"path\":\"u\",\"value\":-1}", false},
    };
    for (size_t k = 0; k < sizeof uc / sizeof uc[0]; k++) {
        char text[256];
        snprintf(text, sizeof text, "{\"where\":[%s]}", uc[k].cond);
        br_query *q = compile(text);
        cr_assert_eq(br_query_match(q, u, sizeof u), uc[k].want, "%s", uc[k].cond);
        br_query_free(q);
    }
}

Test(query, strings_compare_bytewise)
{
    const char *d = "{\"s\":\"Zebra\",\"e\":\"\\u00e9t\\u00e9\",\"x\":\"ab\"}";
    cr_assert(cm("{\"path\":\"s\",\"op\":\"<\",\"value\":\"apple\"}", d));
    cr_assert(cm("{\"path\":\"e\",\"op\":\">\",\"value\":\"z\"}", d));
    cr_assert(cm("{\"path\":\"x\",\"op\":\">\",\"value\":\"a\"}", d));
    cr_assert(cm("{\"path\":\"x\",\"op\":\"<\",\"value\":\"abc\"}", d));
    cr_assert(cm("{\"path\":\"x\",\"op\":\">=\",\"value\":\"ab\"}", d));
    cr_assert(cm("{\"path\":\"x\",\"op\":\"prefix\",\"value\":\"\"}", d));
    cr_assert(!cm("{\"path\":\"x\",\"op\":\"prefix\",\"value\":\"abc\"}", d));
}

Test(query, missing_path_makes_every_comparison_false)
{
    const char *d = "{\"a\":1,\"o\":{\"b\":2}}";
    const char *ops[] = {"==", "!=", "<", "<=", ">", ">=", "contains"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char c[128];
        snprintf(c, sizeof c, "{\"path\":\"zz\",\"op\":\"%s\",\"value\":1}", ops[i]);
        cr_assert(!cm(c, d), "%s", c);
        snprintf(c, sizeof c, "{\"path\":\"o/zz\",\"op\":\"%s\",\"value\":1}", ops[i]);
        cr_assert(!cm(c, d), "%s", c);
        snprintf(c, sizeof c, "{\"path\":\"a/b\",\"op\":\"%s\",\"value\":1}", ops[i]);
        cr_assert(!cm(c, d), "%s", c);
    }
    cr_assert(!cm("{\"path\":\"zz\",\"op\":\"in\",\"value\":[1]}", d));
    cr_assert(!cm("{\"path\":\"zz\",\"op\":\"nin\",\"value\":[1]}", d));
    cr_assert(!cm("{\"path\":\"zz\",\"op\":\"prefix\",\"value\":\"\"}", d));
    cr_assert(!cm("{\"path\":\"zz\",\"op\":\"regex\",\"value\":\"\"}", d));
    cr_assert(!cm("{\"path\":\"zz\",\"op\":\"exists\"}", d));
    cr_assert(cm("{\"path\":\"zz\",\"op\":\"missing\"}", d));
    /* NOT inverts: a document without the path satisfies not(==) */
    cr_assert(cm("{\"not\":{\"path\":\"zz\",\"value\":1}}", d));
    cr_assert(cm("{\"path\":\"a\",\"op\":\"nin\",\"value\":[2,3]}", d));
    cr_assert(!cm("{\"path\":\"a\",\"op\":\"nin\",\"value\":[1]}", d));
    cr_assert(cm("{\"path\":\"a\",\"op\":\"!=\",\"value\":2}", d));
}

Test(query, and_or_not_nest)
{
    const char *d = "{\"a\":1,\"b\":2}";
    cr_assert(cm("{\"or\":[{\"path\":\"a\",\"value\":5},{\"and\":[{\"path\":\"a\",\"value\":1},"
                 "{\"not\":{\"path\":\"b\",\"value\":3}}]}]}",
                 d));
    cr_assert(!cm("{\"or\":[]}", d));
    cr_assert(cm("{\"and\":[]}", d));
    cr_assert(!cm("{\"not\":{\"and\":[]}}", d));
}

Test(query, malformed_bodies_never_match)
{
    /* a query a malformed body could satisfy by negation */
    br_query *q = compile("{\"where\":[{\"not\":{\"path\":\"a\",\"value\":1}}]}");
    br_buf b = doc("{\"a\":2,\"b\":[1,2,3]}");
    cr_assert(br_query_match(q, b.data, b.len));
    /* every truncation, including those past the key the walk reads */
    for (size_t cut = 0; cut < b.len; cut++)
        cr_assert(!br_query_match(q, b.data, cut), "cut at %zu matched", cut);
    /* trailing bytes */
    uint8_t more[64];
    cr_assert(b.len < sizeof more);
    memcpy(more, b.data, b.len);
    more[b.len] = 0x01;
    cr_assert(!br_query_match(q, more, b.len + 1));
    const uint8_t arr[] = {0x81, 0x01}; /* [1]: not a map */
    cr_assert(!br_query_match(q, arr, sizeof arr));
    cr_assert(!br_query_match(q, NULL, 0));
    const uint8_t intkey[] = {0xa1, 0x01, 0x02}; /* {1: 2} */
    cr_assert(!br_query_match(q, intkey, sizeof intkey));
    const uint8_t badutf8[] = {0xa1, 0x61, 0x61, 0x61, 0xff}; /* {"a": "\xff"} */
    cr_assert(!br_query_match(q, badutf8, sizeof badutf8));
    br_query_free(q);
    q = compile("{\"where\":[]}");
    cr_assert(!br_query_match(q, arr, sizeof arr));
    cr_assert(!br_query_match(q, b.data, b.len - 1));
    br_query_free(q);
    br_buf_fini(&b);
}

Test(query, malformed_prefixes_of_a_body_are_safe)
{
    br_query *q = compile("{\"where\":[{\"or\":[{\"path\":\"z/q\",\"op\":\"missing\"},"
                          "{\"path\":\"a\",\"op\":\"regex\",\"value\":\"x\"}]}]}");
    br_buf b = doc("{\"a\":\"xx\",\"b\":[1,{\"c\":[\"x\"]}],\"z\":{\"q\":[[[1]]]}}");
    cr_assert(br_query_match(q, b.data, b.len));
    for (size_t cut = 0; cut < b.len; cut++)
        (void)br_query_match(q, b.data, cut); /* no crash, no sanitizer report */
    br_buf_fini(&b);
    br_query_free(q);
}

/* Bodies holding every kind of item a document or a stored record can: integers of each head
 * size, halves, singles and doubles, non-ASCII and long text (one- and two-byte lengths), nested
 * and empty containers, arrays of maps. */
static const char *const STORED_DOCS[] = {
    "{\"a\":1,\"b\":\"x\",\"n\":-1,\"f\":1.5,\"s\":0.1,\"t\":true,\"z\":null}",
    "{\"a\":23,\"b\":\"caf\\u00e9\",\"n\":-24,\"f\":65504.0,\"s\":1e300,\"t\":false,\"z\":[]}",
    "{\"a\":24,\"b\":\"\\u65e5\\u672c\\u8a9e\",\"n\":-256,\"f\":3.4028234663852886e38,"
    "\"s\":-0.0,\"z\":{}}",
    "{\"a\":65536,\"b\":\"abcdefghijklmnopqrstuvwxyz0123456789\",\"n\":-9223372036854775808,"
    "\"f\":0.5,\"arr\":[1,\"caf\\u00e9\",[2,[3]],{\"k\":\"v\"}],\"m\":{\"x\":{\"y\":[1,2]}}}",
    "{\"a\":4294967296,\"b\":\"e\\u0301\",\"arr\":[{\"k\":\"v\",\"n\":2},{\"k\":\"w\"}],"
    "\"m\":{\"x\":1,\"\\u00e9\":2},\"l\":\"LONG\"}",
    "{\"arr\":[],\"m\":{\"x\":{\"y\":\"\\u00e9\"}},\"_hidden\":1,\"a\":9007199254740993}",
};

static const char *const STORED_CONDS[] = {
    "{\"path\":\"a\",\"value\":1}",
    "{\"path\":\"a\",\"op\":\">\",\"value\":23.5}",
    "{\"path\":\"a\",\"op\":\"<=\",\"value\":65536}",
    "{\"path\":\"a\",\"op\":\"!=\",\"value\":24}",
    "{\"path\":\"b\",\"value\":\"caf\\u00e9\"}",
    "{\"path\":\"b\",\"op\":\">\",\"value\":\"b\"}",
    "{\"path\":\"b\",\"op\":\"prefix\",\"value\":\"\\u65e5\"}",
    "{\"path\":\"b\",\"op\":\"regex\",\"value\":\"^.\\u0301$\"}",
    "{\"path\":\"b\",\"op\":\"regex\",\"value\":\"[0-9]{4}\"}",
    "{\"path\":\"n\",\"op\":\"<\",\"value\":-100}",
    "{\"path\":\"n\",\"op\":\"in\",\"value\":[-1,-256,\"x\"]}",
    "{\"path\":\"f\",\"op\":\">=\",\"value\":1.5}",
    "{\"path\":\"f\",\"value\":0.5}",
    "{\"path\":\"s\",\"op\":\"<\",\"value\":1}",
    "{\"path\":\"s\",\"value\":0}",
    "{\"path\":\"t\",\"value\":true}",
    "{\"path\":\"t\",\"op\":\"nin\",\"value\":[false]}",
    "{\"path\":\"z\",\"value\":null}",
    "{\"path\":\"z\",\"op\":\"exists\"}",
    "{\"path\":\"z\",\"op\":\"missing\"}",
    "{\"path\":\"arr\",\"value\":\"caf\\u00e9\"}",
    "{\"path\":\"arr/2\",\"value\":2}",
    "{\"path\":\"arr\",\"op\":\"contains\",\"value\":1}",
    "{\"path\":\"arr/k\",\"value\":\"w\"}",
    "{\"path\":\"arr\",\"elem_match\":{\"and\":[{\"path\":\"k\",\"value\":\"v\"},"
    "{\"path\":\"n\",\"op\":\">\",\"value\":1}]}}",
    "{\"path\":\"m/x/y\",\"value\":2}",
    "{\"path\":\"m/x/y\",\"value\":\"\\u00e9\"}",
    "{\"path\":\"m/\\u00e9\",\"value\":2}",
    "{\"path\":\"m/x\",\"op\":\"exists\"}",
    "{\"path\":\"l\",\"op\":\"prefix\",\"value\":\"LO\"}",
    "{\"path\":\"_hidden\",\"op\":\"exists\"}",
    "{\"not\":{\"path\":\"a\",\"op\":\">\",\"value\":100}}",
    "{\"or\":[{\"path\":\"b\",\"value\":\"x\"},{\"path\":\"m/x\",\"value\":1}]}",
};

/* query_match_stored reads with its own path to br_cbor_next's items (query.c, "reading
 * bodies"): on well-formed bodies it answers as br_query_match does, for every condition, alone
 * and as the residual of a proven one. */
Test(query, stored_bodies_match_as_br_query_match_does)
{
    size_t nd = sizeof STORED_DOCS / sizeof STORED_DOCS[0];
    size_t nc = sizeof STORED_CONDS / sizeof STORED_CONDS[0];
    size_t hits = 0;
    for (size_t c = 0; c < nc; c++) {
        char text[1024];
        snprintf(text, sizeof text, "{\"where\":[%s]}", STORED_CONDS[c]);
        br_query *q = compile(text);
        snprintf(text, sizeof text, "{\"where\":[{\"path\":\"a\",\"op\":\"exists\"},%s]}",
                 STORED_CONDS[c]);
        br_query *q2 = compile(text);
        const struct br_qnode *proven[] = {&q2->root.kids[0]};
        for (size_t d = 0; d < nd; d++) {
            br_buf b = doc(STORED_DOCS[d]);
            bool want = br_query_match(q, b.data, b.len);
            hits += want;
            cr_assert_eq(query_match_stored(q, NULL, 0, b.data, b.len), want, "%s on %s",
                         STORED_CONDS[c], STORED_DOCS[d]);
            /* the proven condition is not evaluated: the residual alone decides */
            cr_assert_eq(query_match_stored(q2, proven, 1, b.data, b.len), want, "%s on %s",
                         STORED_CONDS[c], STORED_DOCS[d]);
            br_buf_fini(&b);
        }
        br_query_free(q);
        br_query_free(q2);
    }
    cr_assert_gt(hits, nc, "the fixture matches something for most conditions");
}

/* Items only raw CBOR holds: byte strings, a text head with a 2-byte length, a single float, a
 * tag and invalid UTF-8 (the last two are malformed: no match, and NOT does not invert that). */
Test(query, stored_bodies_raw_items_and_malformed_ones)
{
    br_query *qa = compile("{\"where\":[{\"path\":\"a\",\"value\":1}]}");
    br_query *qn = compile("{\"where\":[{\"not\":{\"path\":\"a\",\"value\":2}}]}");
    /* {"": h'0102', "a": 1}: the walk to "a" skips the value of "" */
    const uint8_t bytes[] = {0xa2, 0x60, 0x42, 0x01, 0x02, 0x61, 'a', 0x01};
    /* {"": "xy" with a two-byte length head, "a": 1} */
    const uint8_t text2[] = {0xa2, 0x60, 0x79, 0x00, 0x02, 'x', 'y', 0x61, 'a', 0x01};
    /* {"a": 1.0f} */
    const uint8_t single[] = {0xa1, 0x61, 'a', 0xfa, 0x3f, 0x80, 0x00, 0x00};
    /* {"a": 1.0 as a half} */
    const uint8_t half[] = {0xa1, 0x61, 'a', 0xf9, 0x3c, 0x00};
    const uint8_t *good[] = {bytes, text2, single, half};
    const size_t good_len[] = {sizeof bytes, sizeof text2, sizeof single, sizeof half};
    for (size_t i = 0; i < 4; i++) {
        cr_assert(br_query_match(qa, good[i], good_len[i]), "body %zu", i);
        cr_assert(query_match_stored(qa, NULL, 0, good[i], good_len[i]), "body %zu", i);
        cr_assert(query_match_stored(qn, NULL, 0, good[i], good_len[i]), "body %zu", i);
    }
    /* {"a": tag 1 (1)}, {"a": "\xff"}, {"\xff": 1, "a": 1} */
    const uint8_t tag[] = {0xa1, 0x61, 'a', 0xc1, 0x01};
    const uint8_t badval[] = {0xa1, 0x61, 'a', 0x61, 0xff};
    const uint8_t badkey[] = {0xa2, 0x61, 0xff, 0x01, 0x61, 'a', 0x01};
    const uint8_t *bad[] = {tag, badval, badkey};
    const size_t bad_len[] = {sizeof tag, sizeof badval, sizeof badkey};
    for (size_t i = 0; i < 3; i++) {
        cr_assert(!br_query_match(qn, bad[i], bad_len[i]), "body %zu", i);
        cr_assert(!query_match_stored(qa, NULL, 0, bad[i], bad_len[i]), "body %zu", i);
        cr_assert(!query_match_stored(qn, NULL, 0, bad[i], bad_len[i]), "body %zu", i);
    }
    /* a 0xff at every position of texts of 1 to 17 bytes, as the value read ({"a": T}) and as
     * one skipped on the way ({"": T, "a": 1}) */
    for (size_t n = 1; n <= 17; n++) {
        for (size_t at = 0; at < n; at++) {
            uint8_t read[32] = {0xa1, 0x61, 'a', (uint8_t)(0x60 + n)};
            uint8_t skip[32] = {0xa2, 0x60, (uint8_t)(0x60 + n)};
            memset(read + 4, 'x', n);
            memset(skip + 3, 'x', n);
            read[4 + at] = 0xff;
            skip[3 + at] = 0xff;
            memcpy(skip + 3 + n, (const uint8_t[]){0x61, 'a', 0x01}, 3);
            cr_assert(!query_match_stored(qn, NULL, 0, read, 4 + n), "%zu bytes, at %zu", n, at);
            cr_assert(!query_match_stored(qa, NULL, 0, skip, 6 + n), "%zu bytes, at %zu", n, at);
            skip[3 + at] = 'x'; /* and the same text well-formed */
            cr_assert(query_match_stored(qa, NULL, 0, skip, 6 + n), "%zu bytes", n);
        }
    }
    br_query_free(qa);
    br_query_free(qn);
}

/* Every truncation of every fixture body, under every condition: no crash, no sanitizer
 * report, whatever the answer (the stored path trusts the record's bytes to be one map). */
Test(query, stored_bodies_truncated_are_safe)
{
    size_t nd = sizeof STORED_DOCS / sizeof STORED_DOCS[0];
    size_t nc = sizeof STORED_CONDS / sizeof STORED_CONDS[0];
    for (size_t c = 0; c < nc; c++) {
        char text[1024];
        snprintf(text, sizeof text, "{\"where\":[%s]}", STORED_CONDS[c]);
        br_query *q = compile(text);
        for (size_t d = 0; d < nd; d++) {
            br_buf b = doc(STORED_DOCS[d]);
            for (size_t cut = 0; cut < b.len; cut++) {
                uint8_t *copy = br_malloc(cut ? cut : 1); /* ASan sees reads past the cut */
                cr_assert(copy);
                memcpy(copy, b.data, cut);
                (void)query_match_stored(q, NULL, 0, copy, cut);
                br_free(copy);
            }
            br_buf_fini(&b);
        }
        br_query_free(q);
    }
}

Test(query, qnode_match_evaluates_a_subtree)
{
    br_query *q =
        compile("{\"where\":[{\"path\":\"a\",\"value\":1},{\"path\":\"b\",\"value\":2}]}");
    br_buf b = doc("{\"a\":1,\"b\":3}");
    cr_assert(!br_query_match(q, b.data, b.len));
    cr_assert(br_qnode_match(&q->root.kids[0], b.data, b.len));
    cr_assert(!br_qnode_match(&q->root.kids[1], b.data, b.len));
    br_buf_fini(&b);
    br_query_free(q);
}

Test(query, elem_match_in_barrel_form)
{
    const char *d = "{\"items\":[{\"sku\":\"A\",\"q\":1},{\"sku\":\"B\",\"q\":5}],\"n\":[1,7]}";
    cr_assert(cm("{\"path\":\"items\",\"elem_match\":{\"and\":[{\"path\":\"sku\",\"value\":\"B\"},"
                 "{\"path\":\"q\",\"op\":\">\",\"value\":3}]}}",
                 d));
    cr_assert(!cm("{\"path\":\"items\",\"elem_match\":{\"and\":[{\"path\":\"sku\",\"value\":\"A\"},"
                  "{\"path\":\"q\",\"op\":\">\",\"value\":3}]}}",
                  d));
    cr_assert(cm("{\"path\":\"n\",\"elem_match\":{\"path\":[],\"op\":\">\",\"value\":5}}", d));
    cr_assert(!cm("{\"path\":\"n\",\"elem_match\":{\"path\":[],\"op\":\">\",\"value\":7}}", d));
    compile_err("{\"where\":[{\"path\":\"n\",\"elem_match\":{\"path\":\"a\",\"value\":1},"
                "\"op\":\"==\"}]}",
                "unknown key 'op'");
}

/* ---- Mango ---- */

Test(query, mango_implicit_equality_nested_and_dotted_paths)
{
    expect_mango("{\"a\": 5}", "[{\"path\":\"a\",\"op\":\"==\",\"value\":5}]");
    expect_mango("{\"a\": {\"b\": 5}}", "[{\"path\":\"a/b\",\"op\":\"==\",\"value\":5}]");
    expect_mango("{\"a.b\": 5}", "[{\"path\":\"a/b\",\"op\":\"==\",\"value\":5}]");
    expect_mango("{\"a\\\\.b\": 5}", "[{\"path\":\"a.b\",\"op\":\"==\",\"value\":5}]");
    expect_mango("{\"a\": {\"b.c\": {\"d\": \"x\"}}}",
                 "[{\"path\":\"a/b/c/d\",\"op\":\"==\",\"value\":\"x\"}]");
    expect_mango("{\"a\": 1, \"b\": \"x\"}", "[{\"path\":\"a\",\"op\":\"==\",\"value\":1},"
                                             "{\"path\":\"b\",\"op\":\"==\",\"value\":\"x\"}]");
    /* a root AND is rendered as the where list */
    expect_mango("{\"a\": {\"$gt\": 1, \"b\": 2}}",
                 "[{\"path\":\"a\",\"op\":\">\",\"value\":1},"
                 "{\"path\":\"a/b\",\"op\":\"==\",\"value\":2}]");
    expect_mango("{\"x\": 0, \"a\": {\"$gt\": 1, \"b\": 2}}",
                 "[{\"path\":\"x\",\"op\":\"==\",\"value\":0},"
                 "{\"and\":[{\"path\":\"a\",\"op\":\">\",\"value\":1},"
                 "{\"path\":\"a/b\",\"op\":\"==\",\"value\":2}]}]");
    expect_mango("{}", "[]");
    cr_assert(sm("{\"a\": {\"b\": 5}}", "{\"a\":{\"b\":5}}"));
    cr_assert(sm("{\"a.b\": 5}", "{\"a\":{\"b\":5}}"));
    cr_assert(sm("{\"a\\\\.b\": 5}", "{\"a.b\":5}"));
    cr_assert(!sm("{\"a\\\\.b\": 5}", "{\"a\":{\"b\":5}}"));
    cr_assert(sm("{}", "{}"));
}

Test(query, mango_comparison_operators)
{
    const char *d = "{\"n\":5,\"s\":\"abc\",\"t\":[\"x\",\"y\"]}";
    expect_mango("{\"n\": {\"$eq\": 5}}", "[{\"path\":\"n\",\"op\":\"==\",\"value\":5}]");
    expect_mango("{\"n\": {\"$ne\": 5}}", "[{\"path\":\"n\",\"op\":\"!=\",\"value\":5}]");
    expect_mango("{\"n\": {\"$gt\": 5}}", "[{\"path\":\"n\",\"op\":\">\",\"value\":5}]");
    expect_mango("{\"n\": {\"$gte\": 5}}", "[{\"path\":\"n\",\"op\":\">=\",\"value\":5}]");
    expect_mango("{\"n\": {\"$lt\": 5}}", "[{\"path\":\"n\",\"op\":\"<\",\"value\":5}]");
    expect_mango("{\"n\": {\"$lte\": 5}}", "[{\"path\":\"n\",\"op\":\"<=\",\"value\":5}]");
    cr_assert(sm("{\"n\": {\"$eq\": 5}}", d));
    cr_assert(!sm("{\"n\": {\"$ne\": 5}}", d));
    cr_assert(sm("{\"n\": {\"$ne\": 4}}", d));
    cr_assert(!sm("{\"zz\": {\"$ne\": 4}}", d));
    cr_assert(sm("{\"n\": {\"$gt\": 4, \"$lt\": 6}}", d));
    cr_assert(!sm("{\"n\": {\"$gt\": 5}}", d));
    cr_assert(sm("{\"n\": {\"$gte\": 5}}", d));
    cr_assert(sm("{\"n\": {\"$lte\": 5.0}}", d));
    cr_assert(!sm("{\"s\": {\"$gt\": 1}}", d));
    cr_assert(sm("{\"t\": \"y\"}", d));
}

Test(query, mango_in_nin_exists_regex_beginswith)
{
    const char *d = "{\"n\":5,\"s\":\"abc\",\"t\":[\"x\",\"y\"]}";
    expect_mango("{\"n\": {\"$in\": [1, \"a\", null]}}",
                 "[{\"path\":\"n\",\"op\":\"in\",\"value\":[1,\"a\",null]}]");
    expect_mango("{\"n\": {\"$nin\": [1]}}", "[{\"path\":\"n\",\"op\":\"nin\",\"value\":[1]}]");
    expect_mango("{\"n\": {\"$exists\": true}}", "[{\"path\":\"n\",\"op\":\"exists\"}]");
    expect_mango("{\"n\": {\"$exists\": false}}", "[{\"path\":\"n\",\"op\":\"missing\"}]");
    expect_mango("{\"s\": {\"$regex\": \"^a\"}}",
                 "[{\"path\":\"s\",\"op\":\"regex\",\"value\":\"^a\"}]");
    expect_mango("{\"s\": {\"$beginsWith\": \"ab\"}}",
                 "[{\"path\":\"s\",\"op\":\"prefix\",\"value\":\"ab\"}]");
    cr_assert(sm("{\"n\": {\"$in\": [4, 5]}}", d));
    cr_assert(!sm("{\"n\": {\"$in\": []}}", d));
    cr_assert(sm("{\"t\": {\"$in\": [\"y\"]}}", d));
    cr_assert(sm("{\"n\": {\"$nin\": [4]}}", d));
    cr_assert(!sm("{\"n\": {\"$nin\": [5]}}", d));
    cr_assert(!sm("{\"t\": {\"$nin\": [\"x\"]}}", d));
    cr_assert(!sm("{\"zz\": {\"$nin\": [1]}}", d));
    cr_assert(sm("{\"n\": {\"$exists\": true}}", d));
    cr_assert(!sm("{\"n\": {\"$exists\": false}}", d));
    cr_assert(sm("{\"zz\": {\"$exists\": false}}", d));
    cr_assert(sm("{\"s\": {\"$regex\": \"b\"}}", d));
    cr_assert(!sm("{\"s\": {\"$regex\": \"^b\"}}", d));
    cr_assert(sm("{\"t\": {\"$regex\": \"^y$\"}}", d));
    cr_assert(sm("{\"s\": {\"$beginsWith\": \"ab\"}}", d));
    cr_assert(!sm("{\"s\": {\"$beginsWith\": \"b\"}}", d));
}

Test(query, mango_combination_operators)
{
    const char *d = "{\"a\":1,\"b\":2}";
    expect_mango("{\"$and\": [{\"a\": 1}, {\"b\": 2}]}",
                 "[{\"path\":\"a\",\"op\":\"==\",\"value\":1},"
                 "{\"path\":\"b\",\"op\":\"==\",\"value\":2}]");
    expect_mango("{\"$or\": [{\"a\": 1}, {\"b\": 2}]}",
                 "[{\"or\":[{\"path\":\"a\",\"op\":\"==\",\"value\":1},"
                 "{\"path\":\"b\",\"op\":\"==\",\"value\":2}]}]");
    expect_mango("{\"$nor\": [{\"a\": 1}, {\"b\": 3}]}",
                 "[{\"not\":{\"or\":[{\"path\":\"a\",\"op\":\"==\",\"value\":1},"
                 "{\"path\":\"b\",\"op\":\"==\",\"value\":3}]}}]");
    expect_mango("{\"$not\": {\"a\": 1}}",
                 "[{\"not\":{\"path\":\"a\",\"op\":\"==\",\"value\":1}}]");
    expect_mango("{\"a\": {\"$not\": {\"$gt\": 3}}}",
                 "[{\"not\":{\"path\":\"a\",\"op\":\">\",\"value\":3}}]");
    expect_mango("{\"a\": {\"$or\": [{\"$lt\": 0}, {\"$gt\": 9}]}}",
                 "[{\"or\":[{\"path\":\"a\",\"op\":\"<\",\"value\":0},"
                 "{\"path\":\"a\",\"op\":\">\",\"value\":9}]}]");
    cr_assert(sm("{\"$and\": [{\"a\": 1}, {\"b\": 2}]}", d));
    cr_assert(!sm("{\"$and\": [{\"a\": 1}, {\"b\": 3}]}", d));
    cr_assert(sm("{\"$or\": [{\"a\": 7}, {\"b\": 2}]}", d));
    cr_assert(!sm("{\"$or\": [{\"a\": 7}, {\"b\": 7}]}", d));
    cr_assert(!sm("{\"$nor\": [{\"a\": 7}, {\"b\": 2}]}", d));
    cr_assert(sm("{\"$nor\": [{\"a\": 7}, {\"b\": 7}]}", d));
    cr_assert(!sm("{\"$not\": {\"a\": 1}}", d));
    cr_assert(sm("{\"a\": {\"$not\": {\"$gt\": 3}}}", d));
    cr_assert(sm("{\"zz\": {\"$not\": {\"$gt\": 3}}}", d));
    cr_assert(sm("{\"$and\": []}", d));
    cr_assert(!sm("{\"$or\": []}", d));
}

Test(query, mango_elem_match_operator_and_field_forms)
{
    const char *d = "{\"n\":[1,7],\"items\":[{\"sku\":\"A\",\"q\":1},{\"sku\":\"B\",\"q\":5}],"
                    "\"deep\":[[1,2],[8,9]],\"s\":7}";
    expect_mango("{\"n\": {\"$elemMatch\": {\"$gt\": 5}}}",
                 "[{\"path\":\"n\",\"elem_match\":{\"path\":[],\"op\":\">\",\"value\":5}}]");
    expect_mango("{\"items\": {\"$elemMatch\": {\"sku\": \"B\", \"q\": {\"$gt\": 3}}}}",
                 "[{\"path\":\"items\",\"elem_match\":{\"and\":["
                 "{\"path\":\"sku\",\"op\":\"==\",\"value\":\"B\"},"
                 "{\"path\":\"q\",\"op\":\">\",\"value\":3}]}}]");
    cr_assert(sm("{\"n\": {\"$elemMatch\": {\"$gt\": 5}}}", d));
    cr_assert(sm("{\"n\": {\"$elemMatch\": {\"$gt\": 5, \"$lt\": 8}}}", d));
    cr_assert(!sm("{\"n\": {\"$elemMatch\": {\"$gt\": 1, \"$lt\": 7}}}", d));
    cr_assert(sm("{\"items\": {\"$elemMatch\": {\"sku\": \"B\", \"q\": {\"$gt\": 3}}}}", d));
    /* the same element must satisfy both (unlike two membership conditions) */
    cr_assert(!sm("{\"items\": {\"$elemMatch\": {\"sku\": \"A\", \"q\": {\"$gt\": 3}}}}", d));
    cr_assert(sm("{\"items.sku\": \"A\", \"items.q\": {\"$gt\": 3}}", d));
    cr_assert(sm("{\"items\": {\"$elemMatch\": {\"$or\": [{\"sku\": \"Z\"}, {\"q\": 5}]}}}", d));
    /* nested arrays: an $elemMatch of an $elemMatch */
    cr_assert(sm("{\"deep\": {\"$elemMatch\": {\"$elemMatch\": {\"$gt\": 8}}}}", d));
    cr_assert(!sm("{\"deep\": {\"$elemMatch\": {\"$elemMatch\": {\"$gt\": 9}}}}", d));
    /* not an array: no element */
    cr_assert(!sm("{\"s\": {\"$elemMatch\": {\"$gt\": 1}}}", d));
    cr_assert(!sm("{\"zz\": {\"$elemMatch\": {\"$gt\": 1}}}", d));
    cr_assert(sm("{\"n\": {\"$elemMatch\": {}}}", d));
    cr_assert(!sm("{\"n\": {\"$elemMatch\": {}}}", "{\"n\":[]}"));
    /* inside $elemMatch "_" keys are ordinary fields */
    cr_assert(sm("{\"a\": {\"$elemMatch\": {\"_k\": 1}}}", "{\"a\":[{\"_k\":1}]}"));
}

Test(query, mango_all_is_and_of_contains)
{
    const char *d = "{\"t\":[\"x\",\"y\",\"z\"],\"s\":\"x\"}";
    expect_mango("{\"t\": {\"$all\": [\"x\", \"y\"]}, \"k\": 1}",
                 "[{\"and\":[{\"path\":\"t\",\"op\":\"contains\",\"value\":\"x\"},"
                 "{\"path\":\"t\",\"op\":\"contains\",\"value\":\"y\"}]},"
                 "{\"path\":\"k\",\"op\":\"==\",\"value\":1}]");
    cr_assert(sm("{\"t\": {\"$all\": [\"x\", \"y\"]}}", d));
    cr_assert(!sm("{\"t\": {\"$all\": [\"x\", \"w\"]}}", d));
    cr_assert(!sm("{\"s\": {\"$all\": [\"x\"]}}", d));
    cr_assert(!sm("{\"t\": {\"$all\": []}}", d));
}

Test(query, mango_options_fields_sort_limit_skip_bookmark)
{
    br_query *q = mango("{\"selector\": {\"a\": 1}, \"fields\": [\"a\", \"b.c\"],"
                        " \"sort\": [\"a\", {\"b.c\": \"desc\"}, {\"d\": \"asc\"}],"
                        " \"limit\": 10, \"skip\": 3, \"bookmark\": \"g1AAAA\","
                        " \"use_index\": \"idx\", \"execution_stats\": true, \"r\": 1}");
    cr_assert_eq(q->n_fields, 2);
    cr_assert_str_eq(q->fields[1], "b.c");
    cr_assert_eq(q->n_order, 3);
    cr_assert_str_eq(q->order[0].path, "a");
    cr_assert(!q->order[0].desc);
    cr_assert_str_eq(q->order[1].path, "b/c");
    cr_assert(q->order[1].desc);
    cr_assert(!q->order[2].desc);
    cr_assert_eq(q->limit, 10);
    cr_assert_eq(q->offset, 3);
    cr_assert_str_eq(q->bookmark, "g1AAAA");
    cr_assert(q->include_docs);
    br_query_free(q);
    q = mango("{\"selector\": {}}");
    cr_assert_eq(q->limit, 25); /* CouchDB's default */
    cr_assert_eq(q->offset, 0);
    cr_assert_null(q->fields);
    cr_assert_eq(q->root.op, BR_Q_TRUE);
    br_query_free(q);
}

Test(query, mango_unsupported_operators_are_named)
{
    mango_err("{\"selector\": {\"age\": {\"$size\": 3}}}",
              "selector.age: unsupported operator: $size");
    mango_err("{\"selector\": {\"age\": {\"$mod\": [2, 0]}}}", "unsupported operator: $mod");
    mango_err("{\"selector\": {\"age\": {\"$type\": \"number\"}}}", "unsupported operator: $type");
    mango_err("{\"selector\": {\"a\": {\"$allMatch\": {\"$gt\": 1}}}}",
              "unsupported operator: $allMatch");
    mango_err("{\"selector\": {\"a\": {\"$keyMapMatch\": {\"$eq\": \"x\"}}}}",
              "unsupported operator: $keyMapMatch");
    mango_err("{\"selector\": {\"$text\": \"hello\"}}", "selector: unsupported operator: $text");
    mango_err("{\"selector\": {\"a\": {\"$like\": \"x\"}}}", "unsupported operator: $like");
    mango_err("{\"selector\": {\"$or\": [{\"a\": 1}, {\"b\": {\"$size\": 1}}]}}",
              "selector.$or[1].b: unsupported operator: $size");
}

Test(query, mango_bad_types_are_errors)
{
    mango_err("[]", "_find body must be a JSON object");
    mango_err("{}", "missing required key 'selector'");
    mango_err("{\"selector\": []}", "selector: expects an object");
    mango_err("{\"selector\": {}, \"foo\": 1}", "unknown key 'foo'");
    mango_err("{\"selector\": {\"a\": {\"$in\": 5}}}", "selector.a.$in: $in expects an array");
    mango_err("{\"selector\": {\"a\": {\"$in\": [[1]]}}}", "selector.a.$in[0]: expects a scalar");
    mango_err("{\"selector\": {\"a\": {\"$nin\": {}}}}", "$nin expects an array");
    mango_err("{\"selector\": {\"a\": {\"$exists\": \"yes\"}}}",
              "selector.a.$exists: expects true or false");
    mango_err("{\"selector\": {\"a\": {\"$regex\": 5}}}", "$regex expects a string");
    mango_err("{\"selector\": {\"a\": {\"$regex\": \"[\"}}}", "selector.a.$regex: bad regex");
    mango_err("{\"selector\": {\"a\": {\"$beginsWith\": 1}}}", "$beginsWith expects a string");
    mango_err("{\"selector\": {\"a\": {\"$elemMatch\": 5}}}", "$elemMatch: expects a selector");
    mango_err("{\"selector\": {\"a\": {\"$all\": \"x\"}}}", "$all expects an array");
    mango_err("{\"selector\": {\"$and\": {\"a\": 1}}}", "selector.$and: expects an array");
    mango_err("{\"selector\": {\"$or\": [5]}}", "selector.$or[0]: expects a selector object");
    mango_err("{\"selector\": {\"$not\": [1]}}", "selector.$not: expects a selector object");
    mango_err("{\"selector\": {\"$gt\": 5}}", "selector: operator $gt needs a field");
    mango_err("{\"selector\": {\"a\": {\"$eq\": [1]}}}", "selector.a.$eq: expects a scalar");
    mango_err("{\"selector\": {\"a\": [1, 2]}}", "selector.a: equality with an array");
    mango_err("{\"selector\": {\"a\": {}}}", "selector.a: {} (equality with an object)");
    mango_err("{\"selector\": {\"a..b\": 1}}", "empty path segment");
    mango_err("{\"selector\": {\"a/b\": 1}}", "contains '/'");
    mango_err("{\"selector\": {\"\": 1}}", "empty path segment");
    mango_err("{\"selector\": {}, \"limit\": -5}", "limit expects a non-negative integer");
    mango_err("{\"selector\": {}, \"skip\": 1.5}", "skip expects");
    mango_err("{\"selector\": {}, \"sort\": {\"a\": \"asc\"}}", "sort expects an array");
    mango_err("{\"selector\": {}, \"sort\": [{\"a\": \"up\"}]}", "sort[0]: direction expects");
    mango_err("{\"selector\": {}, \"sort\": [5]}", "sort[0]: expects a field name");
    mango_err("{\"selector\": {}, \"fields\": [\"a\", 1]}", "fields[1]: a field expects a string");
    mango_err("{\"selector\": {}, \"fields\": [\"\"]}", "fields[0]: empty field name");
    mango_err("{\"selector\": {}, \"bookmark\": 5}", "bookmark expects a string");
}

/* ---- caps ---- */

/* "{prefix}{head x n}{mid}{tail x n}{suffix}" (caller frees with br_free). */
static char *nest(const char *prefix, const char *head, const char *mid, const char *tail,
                  const char *suffix, int n)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(!br_buf_append_str(&b, prefix));
    for (int i = 0; i < n; i++)
        cr_assert(!br_buf_append_str(&b, head));
    cr_assert(!br_buf_append_str(&b, mid));
    for (int i = 0; i < n; i++)
        cr_assert(!br_buf_append_str(&b, tail));
    cr_assert(!br_buf_append_str(&b, suffix));
    size_t len;
    return (char *)br_buf_steal(&b, &len);
}

static br_err compile_text(const char *text, bool is_mango, struct br_errbuf *eb)
{
    br_query *q = NULL;
    br_err e = try_compile(text, is_mango, &q, eb);
    br_query_free(q);
    return e;
}

Test(query, cap_depth)
{
    struct br_errbuf eb = {{0}};
    /* 32 levels: the where item and 31 nested nots */
    const char *leaf = "{\"path\":\"a\",\"value\":1}";
    char *text = nest("{\"where\":[", "{\"not\":", leaf, "}", "]}", 31);
    cr_assert(compile_text(text, false, &eb) == BR_OK, "%s", eb.msg);
    br_free(text);
    text = nest("{\"where\":[", "{\"not\":", leaf, "}", "]}", 32);
    cr_assert(compile_text(text, false, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "deeper than 32 (BR_QUERY_MAX_DEPTH)"), "%s", eb.msg);
    br_free(text);
    /* Mango: nested $not */
    text = nest("{\"selector\":", "{\"$not\":", "{\"a\":1}", "}", "}", 31);
    cr_assert(compile_text(text, true, &eb) == BR_OK, "%s", eb.msg);
    br_free(text);
    text = nest("{\"selector\":", "{\"$not\":", "{\"a\":1}", "}", "}", 40);
    cr_assert(compile_text(text, true, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "BR_QUERY_MAX_DEPTH"), "%s", eb.msg);
    br_free(text);
    /* nested field objects extend the path, not the tree; the path cap stops them */
    text = nest("{\"selector\":", "{\"a\":", "1", "}", "}", 70);
    cr_assert(compile_text(text, true, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "deeper than 64 segments (BR_PATH_MAX_DEPTH)"), "%s", eb.msg);
    br_free(text);
    text = nest("{\"selector\":", "{\"a\":", "1", "}", "}", 64);
    cr_assert(compile_text(text, true, &eb) == BR_OK, "%s", eb.msg);
    br_free(text);
}

Test(query, cap_conditions)
{
    struct br_errbuf eb = {{0}};
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert(!br_buf_append_str(&b, "{\"where\":["));
    for (int i = 0; i < 256; i++)
        cr_assert(!br_buf_printf(&b, "%s{\"path\":\"a\",\"value\":%d}", i ? "," : "", i));
    cr_assert(!br_buf_append_str(&b, "]}"));
    cr_assert(compile_text((char *)b.data, false, &eb) == BR_OK, "%s", eb.msg);
    br_buf_reset(&b);
    cr_assert(!br_buf_append_str(&b, "{\"where\":[{\"or\":["));
    for (int i = 0; i < 256; i++)
        cr_assert(!br_buf_printf(&b, "%s{\"path\":\"a\",\"value\":%d}", i ? "," : "", i));
    cr_assert(!br_buf_append_str(&b, "]}]}"));
    cr_assert(compile_text((char *)b.data, false, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "more than 256 conditions (BR_QUERY_MAX_CONDS)"), "%s", eb.msg);
    br_buf_reset(&b);
    cr_assert(!br_buf_append_str(&b, "{\"selector\":{"));
    for (int i = 0; i < 300; i++)
        cr_assert(!br_buf_printf(&b, "%s\"f%d\":%d", i ? "," : "", i, i));
    cr_assert(!br_buf_append_str(&b, "}}"));
    cr_assert(compile_text((char *)b.data, true, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "BR_QUERY_MAX_CONDS"), "%s", eb.msg);
    br_buf_fini(&b);
}

Test(query, cap_in_list_and_regex_size)
{
    struct br_errbuf eb = {{0}};
    br_buf b;
    br_buf_init(&b, 0);
    for (int n = 1000; n <= 1001; n++) {
        br_buf_reset(&b);
        cr_assert(!br_buf_append_str(&b, "{\"selector\":{\"a\":{\"$in\":["));
        for (int i = 0; i < n; i++)
            cr_assert(!br_buf_printf(&b, "%s%d", i ? "," : "", i));
        cr_assert(!br_buf_append_str(&b, "]}}}"));
        br_err e = compile_text((char *)b.data, true, &eb);
        cr_assert_eq(e, n == 1000 ? BR_OK : BR_EINVAL, "%d: %s", n, eb.msg);
        if (e)
            cr_assert(strstr(eb.msg, "more than 1000 values (BR_QUERY_MAX_IN)"), "%s", eb.msg);
    }
    br_buf_reset(&b);
    cr_assert(!br_buf_append_str(&b, "{\"where\":[{\"path\":\"a\",\"op\":\"nin\",\"value\":["));
    for (int i = 0; i < 1001; i++)
        cr_assert(!br_buf_printf(&b, "%s\"v%d\"", i ? "," : "", i));
    cr_assert(!br_buf_append_str(&b, "]}]}"));
    cr_assert(compile_text((char *)b.data, false, &eb) == BR_EINVAL);
    cr_assert(strstr(eb.msg, "where[0].value: nin list has more than 1000"), "%s", eb.msg);
    for (int n = 1024; n <= 1025; n++) {
        br_buf_reset(&b);
        cr_assert(!br_buf_append_str(&b, "{\"selector\":{\"a\":{\"$regex\":\""));
        for (int i = 0; i < n; i++)
            cr_assert(!br_buf_append_byte(&b, 'a'));
        cr_assert(!br_buf_append_str(&b, "\"}}}"));
        br_err e = compile_text((char *)b.data, true, &eb);
        cr_assert_eq(e, n == 1024 ? BR_OK : BR_EINVAL, "%d: %s", n, eb.msg);
        if (e)
            cr_assert(strstr(eb.msg, "regex longer than 1024 bytes (BR_QUERY_REGEX_MAX)"), "%s",
                      eb.msg);
    }
    br_buf_fini(&b);
}

/* ---- regex bound ---- */

Test(query, regex_catastrophic_backtracking_is_bounded)
{
    char d[128];
    snprintf(d, sizeof d, "{\"s\":\"%s\"}", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"); /* 30 a's */
    br_query *q = compile("{\"where\":[{\"path\":\"s\",\"op\":\"regex\",\"value\":\"(a+)+$\"}]}");
    cr_assert_eq(br_query_regex_limit_hits(q), 0);
    cr_assert(!matches(q, d)); /* returns: the match limit ends it */
    cr_assert_geq(br_query_regex_limit_hits(q), 1);
    /* the query stays usable */
    cr_assert(matches(q, "{\"s\":\"aaa\"}"));
    br_query_free(q);
    /* nested quantifiers through the depth limit */
    q = compile("{\"where\":[{\"path\":\"s\",\"op\":\"regex\",\"value\":\"^(a|aa)+$\"}]}");
    cr_assert(!matches(q, d));
    br_query_free(q);
}

Test(query, regex_is_utf8_and_rejects_backslash_c)
{
    cr_assert(
        cm("{\"path\":\"s\",\"op\":\"regex\",\"value\":\"^.t.$\"}", "{\"s\":\"\\u00e9t\\u00e9\"}"));
    compile_err("{\"where\":[{\"path\":\"s\",\"op\":\"regex\",\"value\":\"\\\\C\"}]}", "bad regex");
}

/* ---- patterns (SUB-25) ---- */

/* Every document a query matches has a topic that one of its patterns matches, unless the
 * pattern set is "#" (evaluate everything). */
static void check_patterns_cover(const br_query *q, const uint8_t *body, size_t len)
{
    char **pats = NULL, **topics = NULL;
    size_t np = 0, nt = 0;
    cr_assert(br_query_patterns(q, &pats, &np) == BR_OK);
    if (np == 1 && strcmp(pats[0], "#") == 0) {
        br_free(pats);
        return;
    }
    cr_assert(br_paths_topics(body, len, &topics, &nt) == BR_OK);
    bool covered = false;
    for (size_t i = 0; i < np && !covered; i++) {
        cr_assert(br_pattern_check(pats[i], strlen(pats[i]), NULL) == BR_OK, "%s", pats[i]);
        for (size_t j = 0; j < nt && !covered; j++)
            covered = br_pattern_match(pats[i], strlen(pats[i]), topics[j], strlen(topics[j]));
    }
    cr_assert(covered, "a matching document has no topic under the query's %zu patterns", np);
    br_free(topics);
    br_free(pats);
}

static void expect_patterns(bool is_mango, const char *text, const char *want)
{
    br_query *q = is_mango ? mango(text) : compile(text);
    char **p = NULL;
    size_t n = 0;
    cr_assert(br_query_patterns(q, &p, &n) == BR_OK);
    char got[512] = "";
    for (size_t i = 0; i < n; i++)
        list_add(got, sizeof got, p[i]);
    cr_assert_str_eq(got, want, "%s", text);
    br_free(p);
    br_query_free(q);
}

Test(query, sub25_query_paths_give_patterns)
{
    expect_patterns(false, "{\"where\":[{\"path\":\"type\",\"value\":\"user\"}]}", "type/#");
    expect_patterns(false,
                    "{\"where\":[{\"path\":\"type\",\"value\":\"order\"},"
                    "{\"path\":\"total\",\"op\":\">\",\"value\":100}]}",
                    "total/#,type/#");
    expect_patterns(false,
                    "{\"where\":[{\"or\":[{\"path\":\"a/b\",\"value\":1},"
                    "{\"path\":\"c\",\"op\":\"prefix\",\"value\":\"x\"}]},"
                    "{\"path\":\"a/b\",\"value\":2}]}",
                    "a/b/#,c/#");
    /* a document without the path can match: everything */
    expect_patterns(false, "{\"where\":[{\"not\":{\"path\":\"a\",\"value\":1}}]}", "#");
    expect_patterns(false, "{\"where\":[{\"path\":\"a\",\"op\":\"missing\"}]}", "#");
    expect_patterns(false, "{\"where\":[{\"path\":\"a\",\"op\":\"!=\",\"value\":1}]}", "#");
    expect_patterns(false, "{\"where\":[{\"path\":\"a\",\"op\":\"exists\"}]}", "#");
    expect_patterns(false, "{\"where\":[]}", "#");
    expect_patterns(false, "{\"id_prefix\":\"u\"}", "#");
    expect_patterns(false,
                    "{\"where\":[{\"or\":[{\"path\":\"a\",\"value\":1},"
                    "{\"path\":\"b\",\"op\":\"missing\"}]}]}",
                    "#");
    /* one constrained conjunct is enough */
    expect_patterns(false,
                    "{\"where\":[{\"path\":\"a\",\"op\":\"missing\"},"
                    "{\"path\":\"type\",\"value\":\"x\"}]}",
                    "type/#");
    /* positions are cut (topics index arrays by membership), duplicates merged */
    expect_patterns(false,
                    "{\"where\":[{\"path\":\"tags/0\",\"value\":\"x\"},"
                    "{\"path\":\"tags\",\"value\":\"y\"},{\"path\":\"0/a\",\"value\":1}]}",
                    "0/a/#,tags/#");
    /* wildcard characters in keys are cut too */
    expect_patterns(false, "{\"where\":[{\"path\":\"a/b+c/d\",\"value\":1}]}", "a/#");
    expect_patterns(false, "{\"where\":[{\"path\":\"#\",\"value\":1}]}", "#");
    /* nothing can match: no pattern */
    expect_patterns(false, "{\"where\":[{\"path\":\"a\",\"op\":\"in\",\"value\":[]}]}", "");
    expect_patterns(true, "{\"selector\":{\"items\":{\"$elemMatch\":{\"q\":{\"$gt\":1}}}}}",
                    "items/#");
    expect_patterns(true, "{\"selector\":{\"items\":{\"$elemMatch\":{\"q\":{\"$exists\":false}}}}}",
                    "#");
    expect_patterns(true, "{\"selector\":{\"t\":{\"$all\":[\"a\",\"b\"]},\"a.b\":1}}", "a/b/#,t/#");
}

Test(query, sub25_patterns_cover_matching_documents)
{
    static const char *queries[] = {
        "{\"where\":[{\"path\":\"tags\",\"value\":\"intro\"}]}",
        "{\"where\":[{\"path\":\"tags/1\",\"value\":\"hello\"}]}",
        "{\"where\":[{\"path\":\"address/city\",\"op\":\"regex\",\"value\":\"a\"}]}",
        "{\"where\":[{\"or\":[{\"path\":\"age\",\"op\":\"<\",\"value\":30},"
        "{\"path\":\"tags\",\"op\":\"contains\",\"value\":\"hello\"}]}]}",
        "{\"where\":[{\"path\":\"name\",\"op\":\"in\",\"value\":[\"Bob\",\"Alice\"]},"
        "{\"path\":\"zz\",\"op\":\"missing\"}]}",
    };
    char got[256];
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        br_query *q = compile(queries[i]);
        run(q, FIX6, 6, got, sizeof got); /* run() checks coverage of each match */
        cr_assert(got[0], "%s matched nothing", queries[i]);
        br_query_free(q);
    }
}

/* ---- round trip ---- */

static void round_trip(bool is_mango, const char *text)
{
    br_query *q = is_mango ? mango(text) : compile(text), *q2 = NULL;
    json_t *j1 = NULL, *j2 = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert(br_query_to_json(q, &j1) == BR_OK);
    cr_assert(br_query_compile(j1, &q2, &eb) == BR_OK, "%s: %s", text, eb.msg);
    cr_assert(br_query_to_json(q2, &j2) == BR_OK);
    char *s1 = json_dumps(j1, JSON_COMPACT | JSON_SORT_KEYS);
    char *s2 = json_dumps(j2, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert(json_equal(j1, j2), "%s\n  %s\n  %s", text, s1, s2);
    jfree(s1);
    jfree(s2);
    json_decref(j1);
    json_decref(j2);
    br_query_free(q);
    br_query_free(q2);
}

Test(query, to_json_round_trips)
{
    round_trip(false, "{\"where\":[{\"path\":[\"a\",3],\"op\":\"in\",\"value\":[1,2.5,\"x\",null,"
                      "true,false]},{\"not\":{\"or\":[{\"path\":\"b\",\"op\":\"exists\"},"
                      "{\"path\":\"c\",\"op\":\"regex\",\"value\":\"^x\"}]}}],"
                      "\"order_by\":[{\"path\":\"a\",\"dir\":\"desc\"}],\"limit\":5,\"offset\":2,"
                      "\"include_docs\":false,\"fields\":[\"a\"],\"bookmark\":\"b\"}");
    round_trip(false, "{\"id_range\":[null,\"m\"]}");
    round_trip(false, "{\"id_range\":[null,null]}");
    round_trip(true, "{\"selector\":{\"a\":{\"$elemMatch\":{\"$elemMatch\":{\"$gt\":1}}},"
                     "\"$nor\":[{\"b\":{\"$all\":[1]}}],\"c\":{\"$nin\":[]},"
                     "\"d\":{\"$all\":[]}},\"sort\":[\"a\"],\"fields\":[\"x.y\"],\"limit\":0}");
    round_trip(true, "{\"selector\":{\"$and\":[]}}");
    round_trip(true, "{\"selector\":{\"a\":{\"$elemMatch\":{}}}}");
}

/* ---- allocation torture ---- */

static void torture(bool is_mango, const char *text)
{
    json_t *spec = J(text);
    br_query *ref = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert((is_mango ? br_query_from_mango(spec, &ref, &eb)
                        : br_query_compile(spec, &ref, &eb)) == BR_OK,
              "%s", eb.msg);
    json_t *want = NULL;
    cr_assert(br_query_to_json(ref, &want) == BR_OK);
    for (long fail = 0;; fail++) {
        br_query *q = NULL;
        br_alloc_fail_after(fail);
        br_err e = is_mango ? br_query_from_mango(spec, &q, &eb) : br_query_compile(spec, &q, &eb);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(fail > 0);
            json_t *got = NULL;
            cr_assert(br_query_to_json(q, &got) == BR_OK);
            cr_assert(json_equal(got, want));
            json_decref(got);
            br_query_free(q);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM, "fail=%ld gave %d (%s)", fail, e, eb.msg);
        cr_assert_null(q);
    }
    /* to_json and patterns fail cleanly too */
    for (long fail = 0;; fail++) {
        json_t *got = NULL;
        br_alloc_fail_after(fail);
        br_err e = br_query_to_json(ref, &got);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(json_equal(got, want));
            json_decref(got);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM);
    }
    for (long fail = 0;; fail++) {
        char **p = NULL;
        size_t n = 0;
        br_alloc_fail_after(fail);
        br_err e = br_query_patterns(ref, &p, &n);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            br_free(p);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM);
    }
    json_decref(want);
    json_decref(spec);
    br_query_free(ref);
}

Test(query, torture_compile)
{
    torture(false,
            "{\"where\":[{\"path\":[\"a\",\"b\"],\"value\":\"x\"},"
            "{\"or\":[{\"path\":\"n\",\"op\":\">\",\"value\":1.5},"
            "{\"not\":{\"path\":\"s\",\"op\":\"regex\",\"value\":\"^(a|b)+[0-9]{2}$\"}}]},"
            "{\"path\":\"t\",\"op\":\"in\",\"value\":[\"p\",\"q\",3]},"
            "{\"path\":\"i\",\"elem_match\":{\"path\":[],\"op\":\"prefix\",\"value\":\"z\"}}],"
            "\"order_by\":[{\"path\":\"a/b\",\"dir\":\"desc\"}],\"limit\":3,"
            "\"fields\":[\"a\",\"b\"],\"bookmark\":\"bm\"}");
    torture(false, "{\"id_range\":[\"a\",\"b\"]}");
}

Test(query, torture_from_mango)
{
    torture(true, "{\"selector\":{\"type\":\"user\",\"age\":{\"$gte\":18,\"$lt\":65},"
                  "\"name\":{\"$regex\":\"^A.*e$\"},\"tags\":{\"$all\":[\"a\",\"b\"]},"
                  "\"$or\":[{\"org.id\":{\"$in\":[1,2]}},{\"x\":{\"$exists\":false}}],"
                  "\"items\":{\"$elemMatch\":{\"sku\":\"q\",\"n\":{\"$nin\":[0]}}},"
                  "\"$nor\":[{\"z\":{\"$beginsWith\":\"k\"}}],\"w\":{\"$not\":{\"$eq\":null}}},"
                  "\"fields\":[\"type\",\"org.id\"],\"sort\":[{\"age\":\"desc\"},\"name\"],"
                  "\"limit\":7,\"skip\":2,\"bookmark\":\"nil\"}");
}
