/* serve_test.c — `barrel serve` as a client meets it: each test starts the built binary on a
 * fresh data directory and a free port, talks HTTP/1.1 to it over raw sockets (serve_util.h),
 * and stops it with SIGTERM. */
#include "serve_util.h"

TestSuite(serve, .init = setup, .fini = teardown, .timeout = 60);

/* ---- server routes ---- */

Test(serve, welcome_has_couchdb_shape_and_hlc_header)
{
    struct resp r;
    cr_assert_eq(get(&r, "/"), 200);
    cr_expect_str_eq(jstr(&r, "couchdb"), "Welcome");
    cr_expect(jstr(&r, "version"));
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(r.json, "vendor"), "name")),
                     "barrel");
    cr_expect(header(&r, "x-barrel-hlc"), "no X-Barrel-HLC");
    cr_expect_str_eq(header(&r, "content-type"), "application/json");
    resp_fini(&r);
}

Test(serve, node_reports_version_hlc_uptime)
{
    struct resp r;
    make_db("n1");
    put_doc("/n1/a", "{}", (char[128]){0}, 128);
    cr_assert_eq(get(&r, "/_node"), 200);
    cr_expect(jstr(&r, "version"));
    const char *h = jstr(&r, "hlc");
    cr_assert(h && strchr(h, ':') && strcmp(h, "0:0") != 0, "hlc %s", h);
    cr_expect(json_is_integer(json_object_get(r.json, "uptime")));
    /* the header carries the same clock, at least as new */
    cr_expect(header(&r, "x-barrel-hlc") && strcmp(header(&r, "x-barrel-hlc"), "0:0") != 0);
    resp_fini(&r);
}

Test(serve, db_create_info_list_delete)
{
    struct resp r;
    cr_assert_eq(req(&r, "PUT", "/mydb", NULL, NULL, NULL), 201);
    cr_expect(json_is_true(json_object_get(r.json, "ok")));
    cr_expect_str_eq(header(&r, "location"), "/mydb");
    resp_fini(&r);
    req(&r, "PUT", "/mydb", NULL, NULL, NULL);
    expect_error(&r, 412, "file_exists");
    resp_fini(&r);
    cr_assert_eq(get(&r, "/mydb"), 200);
    cr_expect_str_eq(jstr(&r, "db_name"), "mydb");
    cr_expect_eq(json_integer_value(json_object_get(r.json, "doc_count")), 0);
    cr_expect(json_is_object(json_object_get(r.json, "sizes")));
    cr_expect(json_object_get(r.json, "update_seq"));
    resp_fini(&r);
    cr_assert_eq(get(&r, "/_all_dbs"), 200);
    cr_expect(json_is_array(r.json) && json_array_size(r.json) == 1 &&
                  strcmp(json_string_value(json_array_get(r.json, 0)), "mydb") == 0,
              "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(req(&r, "DELETE", "/mydb", NULL, NULL, NULL), 200);
    resp_fini(&r);
    get(&r, "/mydb");
    expect_error(&r, 404, "not_found");
    cr_expect_str_eq(jstr(&r, "reason"), "Database does not exist.");
    resp_fini(&r);
    req(&r, "DELETE", "/mydb", NULL, NULL, NULL);
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
}

Test(serve, illegal_db_names_are_400)
{
    static const char *const bad[] = {"/MyDb", "/a%20b", "/9lives", "/-x", "/a%3Bb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct resp r;
        req(&r, "PUT", bad[i], NULL, NULL, NULL);
        expect_error(&r, 400, "illegal_database_name");
        resp_fini(&r);
        get(&r, bad[i]);
        expect_error(&r, 400, "illegal_database_name");
        resp_fini(&r);
    }
    struct resp r;
    cr_assert_eq(get(&r, "/_all_dbs"), 200);
    cr_expect_eq(json_array_size(r.json), 0);
    resp_fini(&r);
}

/* ---- documents ---- */

Test(serve, doc_put_get_update_delete_with_etags)
{
    struct resp r;
    char rev1[128], rev2[128], tag[160];
    make_db("d");
    cr_assert_eq(put_json(&r, "/d/doc1", "{\"a\":1}"), 201);
    snprintf(rev1, sizeof rev1, "%s", jstr(&r, "rev"));
    cr_expect(strncmp(rev1, "1-", 2) == 0);
    snprintf(tag, sizeof tag, "\"%s\"", rev1);
    cr_expect_str_eq(header(&r, "etag"), tag);
    cr_expect_str_eq(header(&r, "location"), "/d/doc1");
    resp_fini(&r);

    cr_assert_eq(get(&r, "/d/doc1"), 200);
    cr_expect_str_eq(header(&r, "etag"), tag);
    cr_expect_str_eq(jstr(&r, "_id"), "doc1");
    cr_expect_str_eq(jstr(&r, "_rev"), rev1);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "a")), 1);
    resp_fini(&r);

    /* no rev: conflict; rev in the body: new rev */
    put_json(&r, "/d/doc1", "{\"a\":2}");
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    char body[256];
    snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"a\":2}", rev1);
    put_doc("/d/doc1", body, rev2, sizeof rev2);
    cr_expect(strncmp(rev2, "2-", 2) == 0);
    /* stale rev in the query: conflict */
    char path[256];
    snprintf(path, sizeof path, "/d/doc1?rev=%s", rev1);
    put_json(&r, path, "{\"a\":3}");
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    /* the store keeps leaf bodies only (a compacted CouchDB): the old body is gone */
    get(&r, path);
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    snprintf(path, sizeof path, "/d/doc1?rev=%s", rev2);
    cr_assert_eq(get(&r, path), 200);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "a")), 2);
    resp_fini(&r);
    /* If-Match names the rev for DELETE */
    req(&r, "DELETE", "/d/doc1", NULL, NULL, NULL);
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    req(&r, "DELETE", "/d/doc1?rev=bogus", NULL, NULL, NULL);
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    char im[200];
    snprintf(im, sizeof im, "If-Match: \"%s\"\r\n", rev2);
    cr_assert_eq(req(&r, "DELETE", "/d/doc1", NULL, im, NULL), 200, "%s", r.body);
    cr_expect(strncmp(jstr(&r, "rev"), "3-", 2) == 0);
    resp_fini(&r);
    get(&r, "/d/doc1");
    expect_error(&r, 404, "not_found");
    cr_expect_str_eq(jstr(&r, "reason"), "deleted");
    resp_fini(&r);
    get(&r, "/d/nope");
    expect_error(&r, 404, "not_found");
    cr_expect_str_eq(jstr(&r, "reason"), "missing");
    resp_fini(&r);
    get(&r, "/nodb/doc1");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
}

Test(serve, post_creates_doc_with_location)
{
    struct resp r;
    make_db("p");
    cr_assert_eq(post_json(&r, "/p", "{\"x\":true}"), 201, "%s", r.body);
    const char *id = jstr(&r, "id");
    cr_assert(id && strlen(id) == 32);
    char loc[128];
    snprintf(loc, sizeof loc, "/p/%s", id);
    cr_expect_str_eq(header(&r, "location"), loc);
    resp_fini(&r);
    cr_assert_eq(get(&r, loc), 200);
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/p", "{\"_id\":\"given\"}"), 201);
    cr_expect_str_eq(jstr(&r, "id"), "given");
    resp_fini(&r);
    cr_expect_eq(doc_count("p"), 2);
}

Test(serve, bad_bodies_are_rejected_and_change_nothing)
{
    struct resp r;
    make_db("b");
    post_json(&r, "/b", "{\"a\":");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    post_json(&r, "/b", "[1,2]");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    req(&r, "POST", "/b", "text/plain", NULL, "{\"a\":1}");
    expect_error(&r, 415, "bad_content_type");
    resp_fini(&r);
    req(&r, "POST", "/b", NULL, NULL, "{\"a\":1}");
    expect_error(&r, 415, "bad_content_type");
    resp_fini(&r);
    put_json(&r, "/b/x", "{\"a\":1} trailing");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    put_json(&r, "/b/x", "{\"_bogus\":1}");
    cr_expect_eq(r.status, 400, "%s", r.body);
    resp_fini(&r);
    put_json(&r, "/b/x", "{\"_rev\":\"not-a-rev\"}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    put_json(&r, "/b/x", "");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    post_json(&r, "/b/_bulk_docs", "{\"nodocs\":1}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    req(&r, "GET", "/b/_changes?limit=-1", NULL, NULL, NULL);
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    cr_expect_eq(doc_count("b"), 0);
}

Test(serve, conflicts_revs_and_open_revs)
{
    struct resp r;
    make_db("c");
    /* two replicated siblings under one parent */
    cr_assert_eq(post_json(&r, "/c/_bulk_docs",
                           "{\"new_edits\":false,\"docs\":["
                           "{\"_id\":\"k\",\"_rev\":\"2-aa\",\"v\":1,"
                           "\"_revisions\":{\"start\":2,\"ids\":[\"aa\",\"11\"]}},"
                           "{\"_id\":\"k\",\"_rev\":\"2-bb\",\"v\":2,"
                           "\"_revisions\":{\"start\":2,\"ids\":[\"bb\",\"11\"]}}]}"),
                 201, "%s", r.body);
    cr_expect(json_is_array(r.json) && json_array_size(r.json) == 0, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/c/k?conflicts=true"), 200);
    cr_expect_str_eq(jstr(&r, "_rev"), "2-bb");
    json_t *cf = json_object_get(r.json, "_conflicts");
    cr_expect(json_array_size(cf) == 1 &&
                  strcmp(json_string_value(json_array_get(cf, 0)), "2-aa") == 0,
              "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/c/k"), 200);
    cr_expect_null(json_object_get(r.json, "_conflicts"));
    resp_fini(&r);
    cr_assert_eq(get(&r, "/c/k?revs=true"), 200);
    json_t *rv = json_object_get(r.json, "_revisions");
    cr_expect_eq(json_integer_value(json_object_get(rv, "start")), 2);
    cr_expect_eq(json_array_size(json_object_get(rv, "ids")), 2);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/c/k?open_revs=all"), 200);
    cr_expect(json_is_array(r.json) && json_array_size(r.json) == 2, "%s", r.body);
    cr_expect(json_object_get(json_array_get(r.json, 0), "ok"));
    resp_fini(&r);
    cr_assert_eq(get(&r, "/c/k?open_revs=%5B%222-aa%22,%229-ff%22%5D"), 200);
    cr_expect(json_is_array(r.json) && json_array_size(r.json) == 2, "%s", r.body);
    cr_expect(json_object_get(json_array_get(r.json, 0), "ok"));
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(r.json, 1), "missing")),
                     "9-ff");
    resp_fini(&r);
    get(&r, "/c/k?open_revs=nonsense");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
}

Test(serve, bulk_docs_reports_per_doc_results)
{
    struct resp r;
    char rev[128];
    make_db("bk");
    put_doc("/bk/exists", "{}", rev, sizeof rev);
    cr_assert_eq(post_json(&r, "/bk/_bulk_docs",
                           "{\"docs\":[{\"_id\":\"a\",\"n\":1},{\"_id\":\"exists\",\"n\":2},"
                           "{\"n\":3}]}"),
                 201, "%s", r.body);
    cr_assert(json_is_array(r.json) && json_array_size(r.json) == 3, "%s", r.body);
    json_t *a = json_array_get(r.json, 0), *b = json_array_get(r.json, 1),
           *c = json_array_get(r.json, 2);
    cr_expect(json_is_true(json_object_get(a, "ok")));
    cr_expect_str_eq(json_string_value(json_object_get(a, "id")), "a");
    cr_expect_str_eq(json_string_value(json_object_get(b, "error")), "conflict");
    cr_expect_str_eq(json_string_value(json_object_get(b, "id")), "exists");
    cr_expect(json_is_true(json_object_get(c, "ok")));
    resp_fini(&r);
    cr_expect_eq(doc_count("bk"), 3);
}

Test(serve, revs_diff_lists_missing)
{
    struct resp r;
    char rev[128], body[512];
    make_db("rd");
    put_doc("/rd/a", "{}", rev, sizeof rev);
    snprintf(body, sizeof body, "{\"a\":[\"%s\",\"2-beef\"],\"zz\":[\"1-abc\"]}", rev);
    cr_assert_eq(post_json(&r, "/rd/_revs_diff", body), 200, "%s", r.body);
    json_t *a = json_object_get(r.json, "a"), *zz = json_object_get(r.json, "zz");
    cr_expect(json_array_size(json_object_get(a, "missing")) == 1 &&
                  strcmp(json_string_value(json_array_get(json_object_get(a, "missing"), 0)),
                         "2-beef") == 0,
              "%s", r.body);
    cr_expect_eq(json_array_size(json_object_get(zz, "missing")), 1);
    resp_fini(&r);
    snprintf(body, sizeof body, "{\"a\":[\"%s\"]}", rev);
    cr_assert_eq(post_json(&r, "/rd/_revs_diff", body), 200);
    cr_expect_eq(json_object_size(r.json), 0, "%s", r.body);
    resp_fini(&r);
    post_json(&r, "/rd/_revs_diff", "{\"a\":[\"junk\"]}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
}

Test(serve, changes_normal_feed)
{
    struct resp r;
    char rev[128];
    make_db("ch");
    put_doc("/ch/a", "{\"v\":1}", rev, sizeof rev);
    put_doc("/ch/b", "{\"v\":2}", rev, sizeof rev);
    put_doc("/ch/c", "{\"v\":3}", rev, sizeof rev);
    cr_assert_eq(get(&r, "/ch/_changes"), 200);
    json_t *res = json_object_get(r.json, "results");
    cr_assert_eq(json_array_size(res), 3, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(res, 0), "id")), "a");
    char since[64];
    snprintf(since, sizeof since, "%s",
             json_string_value(json_object_get(json_array_get(res, 0), "seq")));
    cr_expect_str_eq(jstr(&r, "last_seq"),
                     json_string_value(json_object_get(json_array_get(res, 2), "seq")));
    resp_fini(&r);
    char path[256];
    snprintf(path, sizeof path, "/ch/_changes?since=%s&limit=1&include_docs=true&style=all_docs",
             since);
    cr_assert_eq(get(&r, path), 200);
    res = json_object_get(r.json, "results");
    cr_assert_eq(json_array_size(res), 1, "%s", r.body);
    json_t *e = json_array_get(res, 0);
    cr_expect_str_eq(json_string_value(json_object_get(e, "id")), "b");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(e, "doc"), "v")), 2);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/ch/_changes?since=now"), 200);
    cr_expect_eq(json_array_size(json_object_get(r.json, "results")), 0);
    resp_fini(&r);
    get(&r, "/ch/_changes?since=garbage");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    get(&r, "/ch/_changes?feed=sideways");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
}

Test(serve, local_docs_roundtrip_and_stay_out_of_changes)
{
    struct resp r;
    make_db("l");
    cr_assert_eq(put_json(&r, "/l/_local/ck", "{\"last_seq\":\"5\"}"), 201, "%s", r.body);
    cr_expect_str_eq(jstr(&r, "id"), "_local/ck");
    cr_expect_str_eq(jstr(&r, "rev"), "0-1");
    resp_fini(&r);
    cr_assert_eq(get(&r, "/l/_local/ck"), 200);
    cr_expect_str_eq(jstr(&r, "_id"), "_local/ck");
    cr_expect_str_eq(jstr(&r, "_rev"), "0-1");
    cr_expect_str_eq(jstr(&r, "last_seq"), "5");
    resp_fini(&r);
    put_json(&r, "/l/_local/ck", "{\"last_seq\":\"6\"}");
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    cr_assert_eq(put_json(&r, "/l/_local/ck", "{\"_rev\":\"0-1\",\"last_seq\":\"6\"}"), 201);
    cr_expect_str_eq(jstr(&r, "rev"), "0-2");
    resp_fini(&r);
    cr_assert_eq(get(&r, "/l/_changes"), 200);
    cr_expect_eq(json_array_size(json_object_get(r.json, "results")), 0);
    resp_fini(&r);
    cr_assert_eq(req(&r, "DELETE", "/l/_local/ck?rev=0-2", NULL, NULL, NULL), 200, "%s", r.body);
    resp_fini(&r);
    get(&r, "/l/_local/ck");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
}

Test(serve, find_with_mango_selector)
{
    struct resp r;
    char rev[128];
    make_db("f");
    put_doc("/f/u1", "{\"type\":\"user\",\"age\":30,\"name\":\"ann\"}", rev, sizeof rev);
    put_doc("/f/u2", "{\"type\":\"user\",\"age\":20,\"name\":\"bob\"}", rev, sizeof rev);
    put_doc("/f/o1", "{\"type\":\"order\"}", rev, sizeof rev);
    cr_assert_eq(post_json(&r, "/f/_find",
                           "{\"selector\":{\"type\":\"user\",\"age\":{\"$gt\":25}},"
                           "\"fields\":[\"_id\",\"name\"]}"),
                 200, "%s", r.body);
    json_t *docs = json_object_get(r.json, "docs");
    cr_assert_eq(json_array_size(docs), 1, "%s", r.body);
    json_t *d = json_array_get(docs, 0);
    cr_expect_str_eq(json_string_value(json_object_get(d, "_id")), "u1");
    cr_expect_str_eq(json_string_value(json_object_get(d, "name")), "ann");
    cr_expect_null(json_object_get(d, "age"));
    resp_fini(&r);
    post_json(&r, "/f/_find", "{\"selector\":{\"a\":{\"$mod\":[2,0]}}}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    post_json(&r, "/f/_find", "{\"nothing\":1}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
}

/* ---- routing ---- */

Test(serve, unknown_routes_404_and_wrong_methods_405)
{
    struct resp r;
    make_db("rt");
    static const char *const missing[] = {"/_nothing", "/rt/_nothing", "/rt/a/b/c/d",
                                          "/_nothing/x"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        get(&r, missing[i]);
        expect_error(&r, 404, "not_found");
        cr_expect_str_eq(jstr(&r, "reason"), "missing");
        resp_fini(&r);
    }
    req(&r, "POST", "/_all_dbs", "application/json", NULL, "{}");
    expect_error(&r, 405, "method_not_allowed");
    cr_expect_str_eq(header(&r, "allow"), "GET");
    resp_fini(&r);
    req(&r, "GET", "/rt/_bulk_docs", NULL, NULL, NULL);
    expect_error(&r, 405, "method_not_allowed");
    resp_fini(&r);
    req(&r, "PATCH", "/rt", "application/json", NULL, "{}");
    expect_error(&r, 405, "method_not_allowed");
    resp_fini(&r);
    still_serving();
}

/* libwebsockets 4.1 decodes %XX and resolves dot segments (also encoded ones) before we see
 * the path, so "/t/..%2f..%2fetc" reaches the router as "/etc": a traversal can only alias one
 * legal route onto another, never leave the store (no name becomes a file path). This test
 * pins exactly that: every answer is a CouchDB-shaped response, the existing data is intact,
 * the only databases created are the ones the resolved paths name, and nothing appears
 * outside the data directory. */
Test(serve, traversal_attempts_stay_inside_the_store)
{
    struct resp r;
    char rev[128];
    make_db("t");
    put_doc("/t/doc", "{\"keep\":1}", rev, sizeof rev);
    static const char *const paths[] = {"/t/../_all_dbs",
                                        "/t/%2e%2e/%2e%2e/etc/passwd",
                                        "/../../etc/passwd",
                                        "/t/..%2f..%2fetc",
                                        "/%2e%2e",
                                        "/t/doc/../../x",
                                        "/t/%2e%2e%2f%2e%2e%2fdoc"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        for (int m = 0; m < 3; m++) {
            const char *meth = m == 0 ? "GET" : m == 1 ? "PUT" : "DELETE";
            int fd = connect_node();
            send_req(fd, meth, paths[i], "application/json", NULL, m == 1 ? "{}" : NULL);
            cr_assert(read_resp(fd, &r, 5000), "%s %s: no answer", meth, paths[i]);
            cr_expect(r.status < 500, "%s %s: %d", meth, paths[i], r.status);
            cr_expect(json_is_object(r.json) || json_is_array(r.json), "%s", r.body);
            resp_fini(&r);
            close(fd);
        }
    }
    cr_assert_eq(get(&r, "/t/doc"), 200);
    cr_expect_str_eq(jstr(&r, "_rev"), rev);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/_all_dbs"), 200);
    size_t i;
    json_t *v;
    json_array_foreach(r.json, i, v)
    {
        const char *n = json_string_value(v);
        cr_expect(strcmp(n, "t") == 0 || strcmp(n, "etc") == 0 || strcmp(n, "x") == 0,
                  "unexpected database %s", n);
    }
    resp_fini(&r);
    char outside[1024];
    snprintf(outside, sizeof outside, "%s/../etc", dir);
    cr_expect(access(outside, F_OK) != 0, "something was created outside the data dir");
    snprintf(outside, sizeof outside, "%s/etc", dir);
    cr_expect(access(outside, F_OK) != 0, "a name became a file in the data dir");
}

/* ---- limits, timeouts, broken clients ---- */

Test(serve, body_over_limit_is_413_and_closes)
{
    struct resp r;
    make_db("big");
    size_t n = MAX_BODY + 1000;
    char *body = malloc(n + 1);
    memset(body, ' ', n);
    memcpy(body, "{\"a\":1}", 7);
    body[n] = '\0';
    int fd = connect_node();
    send_req(fd, "PUT", "/big/x", "application/json", NULL, body);
    cr_assert(read_resp(fd, &r, 5000));
    expect_error(&r, 413, "too_large");
    cr_expect(r.closed, "no Connection: close");
    resp_fini(&r);
    close(fd);
    /* a Content-Length over the limit is refused before any body byte */
    fd = connect_node();
    char head[256];
    snprintf(head, sizeof head, "PUT /big/y HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
             MAX_BODY * 100);
    send_all(fd, head, strlen(head));
    cr_assert(read_resp(fd, &r, 5000));
    expect_error(&r, 413, "too_large");
    resp_fini(&r);
    close(fd);
    free(body);
    /* just under the limit is fine */
    body = malloc(MAX_BODY - 100);
    memset(body, ' ', MAX_BODY - 101);
    memcpy(body, "{\"a\":1}", 7);
    body[MAX_BODY - 101] = '\0';
    cr_expect_eq(put_json(&r, "/big/z", body), 201, "%s", r.body);
    resp_fini(&r);
    free(body);
    cr_expect_eq(doc_count("big"), 1);
}

/* Connect, send `data`, and measure how long until the node closes the connection. */
static double seconds_until_closed(const char *data, double trickle_every_s, const char *trickle)
{
    int fd = connect_node();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    send_all(fd, data, strlen(data));
    char buf[4096];
    for (;;) {
        int wait_ms = trickle ? (int)(trickle_every_s * 1000) : 20000;
        ssize_t k = recv_deadline(fd, buf, sizeof buf, wait_ms);
        if (k == 0)
            break; /* closed */
        if (k < 0 && trickle) {
            if (send(fd, trickle, strlen(trickle), MSG_NOSIGNAL) < 0)
                break;
            continue;
        }
        if (k < 0)
            break; /* 20 s and still open: the caller's bound fails */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fd);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

Test(serve, slow_loris_headers_are_cut_off)
{
    make_db("sl");
    /* a client trickling header lines forever */
    double t = seconds_until_closed("GET / HTTP/1.1\r\nHost: x\r\n", 0.3, "X-Slow: 1\r\n");
    cr_expect(t >= TIMEOUT_S - 0.5 && t < TIMEOUT_S + 3, "closed after %.2f s", t);
    /* a request line and nothing more */
    t = seconds_until_closed("GET / HTTP/1.1\r\n", 0, NULL);
    cr_expect(t < TIMEOUT_S + 3, "closed after %.2f s", t);
    still_serving();
}

Test(serve, slow_body_is_cut_off_and_writes_nothing)
{
    make_db("sb");
    double t = seconds_until_closed("PUT /sb/x HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                    "application/json\r\nContent-Length: 1000\r\n\r\n{\"a\":",
                                    0.3, " ");
    cr_expect(t >= TIMEOUT_S - 0.5 && t < TIMEOUT_S + 3, "closed after %.2f s", t);
    t = seconds_until_closed("PUT /sb/y HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{", 0,
                             NULL);
    cr_expect(t < TIMEOUT_S + 3, "closed after %.2f s", t);
    cr_expect_eq(doc_count("sb"), 0);
    still_serving();
}

Test(serve, idle_clients_do_not_block_others)
{
    make_db("idle");
    int idle[20];
    for (int i = 0; i < 20; i++) {
        idle[i] = connect_node();
        send_all(idle[i], "GET / HTTP/1.1\r\n", 16); /* half a request */
    }
    int half = connect_node();
    send_all(half, "PUT /idle/h HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{", 54);
    shutdown(half, SHUT_WR); /* half-open: we will never send the rest */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 20; i++)
        still_serving();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect(dt < 1.5, "20 requests took %.2f s beside idle clients", dt);
    /* truncated requests: connect, send part, close */
    for (int i = 0; i < 5; i++) {
        int fd = connect_node();
        send_all(fd, "POST /idle HTTP/1.1\r\nContent-Le", 31);
        close(fd);
    }
    for (int i = 0; i < 20; i++)
        close(idle[i]);
    char buf[64];
    cr_expect_eq(recv_deadline(half, buf, sizeof buf, (TIMEOUT_S + 3) * 1000), 0,
                 "half-open connection not closed");
    close(half);
    cr_expect_eq(doc_count("idle"), 0);
    still_serving();
}

Test(serve, keep_alive_serves_several_requests_on_one_connection)
{
    struct resp r;
    make_db("ka");
    int fd = connect_node();
    for (int i = 0; i < 5; i++) {
        char path[64], body[64];
        snprintf(path, sizeof path, "/ka/d%d", i);
        snprintf(body, sizeof body, "{\"i\":%d}", i);
        send_req(fd, "PUT", path, "application/json", NULL, body);
        cr_assert(read_resp(fd, &r, 5000), "request %d on the kept connection", i);
        cr_expect_eq(r.status, 201);
        resp_fini(&r);
        send_req(fd, "GET", path, NULL, NULL, NULL);
        cr_assert(read_resp(fd, &r, 5000));
        cr_expect_eq(json_integer_value(json_object_get(r.json, "i")), i);
        resp_fini(&r);
    }
    close(fd);
}

Test(serve, large_responses_stream_in_pieces)
{
    struct resp r;
    make_db("lg");
    /* 40 docs of ~1.5 KiB each: one _all_docs response of ~70 KiB (two or more pieces) */
    char *body = malloc(MAX_BODY);
    size_t off = (size_t)snprintf(body, MAX_BODY, "{\"docs\":[");
    char pad[1500];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < 40; i++)
        off += (size_t)snprintf(body + off, MAX_BODY - off,
                                "%s{\"_id\":\"doc%03d\",\"pad\":\"%s\"}", i ? "," : "", i, pad);
    snprintf(body + off, MAX_BODY - off, "]}");
    cr_assert_eq(post_json(&r, "/lg/_bulk_docs", body), 201, "%.200s", r.body);
    resp_fini(&r);
    free(body);
    cr_assert_eq(get(&r, "/lg/_all_docs?include_docs=true"), 200);
    cr_expect_gt(r.body_len, 60000);
    cr_assert(r.json, "response is not JSON");
    cr_expect_eq(json_array_size(json_object_get(r.json, "rows")), 40);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "total_rows")), 40);
    resp_fini(&r);
}

Test(serve, second_node_on_same_data_dir_refuses)
{
    char line[512];
    int p2 = 0;
    FILE *out2 = NULL;
    pid_t other = start_node(dir, &p2, line, sizeof line, &out2);
    int st = 0;
    cr_assert(waitpid(other, &st, 0) == other);
    fclose(out2);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) != 0, "second node exited %d", st);
    cr_expect_eq(p2, 0);
    cr_expect(strstr(line, "in use"), "message: %s", line);
    still_serving();
}

Test(serve, head_answers_headers_only)
{
    struct resp r;
    char rev[128];
    make_db("h");
    put_doc("/h/d", "{\"a\":1}", rev, sizeof rev);
    int fd = connect_node();
    send_req(fd, "HEAD", "/h/d", NULL, NULL, NULL);
    /* a HEAD response has Content-Length but no body: read the head only */
    char buf[4096] = "";
    size_t len = 0;
    while (!strstr(buf, "\r\n\r\n") && len < sizeof buf - 1) {
        ssize_t k = recv_deadline(fd, buf + len, sizeof buf - 1 - len, 5000);
        cr_assert_gt(k, 0);
        len += (size_t)k;
        buf[len] = '\0';
    }
    cr_expect(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
    cr_expect(strstr(buf, rev), "no ETag with the rev: %s", buf);
    cr_expect(strstr(buf, "\r\n\r\n")[4] == '\0', "HEAD response has a body");
    /* the connection still serves the next request */
    send_req(fd, "GET", "/h/d", NULL, NULL, NULL);
    cr_assert(read_resp(fd, &r, 5000));
    cr_expect_eq(r.status, 200);
    resp_fini(&r);
    close(fd);
}

Test(serve, sigterm_lets_in_flight_writes_finish)
{
    struct resp r;
    make_db("sd");
    /* a batch big enough to still be running when the signal lands */
    size_t cap = MAX_BODY;
    char *body = malloc(cap);
    size_t off = (size_t)snprintf(body, cap, "{\"docs\":[");
    for (int i = 0; i < 400; i++)
        off += (size_t)snprintf(body + off, cap - off, "%s{\"_id\":\"d%04d\",\"n\":%d}",
                                i ? "," : "", i, i);
    snprintf(body + off, cap - off, "]}");
    int fd = connect_node();
    send_req(fd, "POST", "/sd/_bulk_docs", "application/json", NULL, body);
    free(body);
    usleep(20000); /* let the node read the request */
    kill(pid, SIGTERM);
    bool answered = read_resp(fd, &r, 10000);
    close(fd);
    cr_expect(answered, "the in-flight request got no answer");
    int expect_docs = answered && r.status == 201 ? 400 : 0;
    if (answered)
        cr_expect(r.status == 201 || r.status == 503, "status %d", r.status);
    resp_fini(&r);
    int st = 0;
    cr_assert(waitpid(pid, &st, 0) == pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    fclose(node_out);
    /* restart on the same data: what was acknowledged is there */
    char line[512];
    pid = start_node(dir, &port, line, sizeof line, &node_out);
    cr_assert(port > 0, "restart failed: %s", line);
    cr_expect_eq(doc_count("sd"), expect_docs);
}

Test(serve, design_docs_and_all_docs)
{
    struct resp r;
    char rev[128];
    make_db("dd");
    put_doc("/dd/_design/app", "{\"views\":{}}", rev, sizeof rev);
    cr_assert_eq(get(&r, "/dd/_design/app"), 200, "%s", r.body);
    cr_expect_str_eq(jstr(&r, "_id"), "_design/app");
    resp_fini(&r);
    put_doc("/dd/b", "{\"n\":2}", rev, sizeof rev);
    put_doc("/dd/a", "{\"n\":1}", rev, sizeof rev);
    put_doc("/dd/c", "{\"n\":3}", rev, sizeof rev);
    cr_assert_eq(get(&r, "/dd/_all_docs?startkey=%22a%22&endkey=%22b%22&include_docs=true"), 200);
    json_t *rows = json_object_get(r.json, "rows");
    cr_assert_eq(json_array_size(rows), 2, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "a");
    cr_expect_eq(
        json_integer_value(json_object_get(json_object_get(json_array_get(rows, 1), "doc"), "n")),
        2);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/dd/_all_docs?descending=true&limit=1"), 200);
    rows = json_object_get(r.json, "rows");
    cr_assert_eq(json_array_size(rows), 1, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "id")), "c");
    cr_expect_eq(json_integer_value(json_object_get(r.json, "total_rows")), 4);
    resp_fini(&r);
    get(&r, "/dd/_all_docs?startkey=%7B%7D");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    /* an id with a reserved prefix is refused */
    put_json(&r, "/dd/_bogus", "{}");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    post_json(&r, "/dd", "{\"_id\":\"_bogus\"}");
    expect_error(&r, 400, "illegal_docid");
    resp_fini(&r);
}
