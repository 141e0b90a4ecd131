/* replication_api_test.c — the HTTP routes and shapes PouchDB's replicator relies on, against a
 * real `barrel serve`: POST _bulk_get (revs, latest, error items, bad input), GET open_revs
 * with latest, and a request asking Connection: close getting it in the answer. */
#include "serve_util.h"

TestSuite(repl, .init = setup, .fini = teardown, .timeout = 60);

/* k: 1-11 -> 2-aa (leaf) and 1-11 -> 2-bb -> 3-cc (leaf, winner); bodies of 1-11 and 2-bb
 * are not kept (not leaves). */
static void make_tree(void)
{
    struct resp r;
    make_db("b");
    cr_assert_eq(post_json(&r, "/b/_bulk_docs",
                           "{\"new_edits\":false,\"docs\":["
                           "{\"_id\":\"k\",\"_rev\":\"2-aa\",\"v\":\"a\","
                           "\"_revisions\":{\"start\":2,\"ids\":[\"aa\",\"11\"]}},"
                           "{\"_id\":\"k\",\"_rev\":\"3-cc\",\"v\":\"c\","
                           "\"_revisions\":{\"start\":3,\"ids\":[\"cc\",\"bb\",\"11\"]}}]}"),
                 201, "%s", r.body);
    resp_fini(&r);
}

static json_t *result_docs(const struct resp *r, size_t i)
{
    return json_object_get(json_array_get(json_object_get(r->json, "results"), i), "docs");
}

static const char *ok_rev(json_t *docs, size_t i)
{
    return json_string_value(
        json_object_get(json_object_get(json_array_get(docs, i), "ok"), "_rev"));
}

Test(repl, bulk_get_answers_each_item_in_order)
{
    struct resp r;
    make_tree();
    cr_assert_eq(post_json(&r, "/b/_bulk_get?revs=true",
                           "{\"docs\":[{\"id\":\"k\",\"rev\":\"2-aa\"},{\"id\":\"k\"},"
                           "{\"id\":\"nope\",\"rev\":\"1-ab\"},{\"id\":\"k\",\"rev\":\"9-ff\"}]}"),
                 200, "%s", r.body);
    json_t *res = json_object_get(r.json, "results");
    cr_assert_eq(json_array_size(res), 4, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(res, 0), "id")), "k");
    cr_expect_str_eq(ok_rev(result_docs(&r, 0), 0), "2-aa");
    json_t *d0 = json_object_get(json_array_get(result_docs(&r, 0), 0), "ok");
    json_t *revs = json_object_get(d0, "_revisions");
    cr_expect_eq(json_integer_value(json_object_get(revs, "start")), 2, "%s", r.body);
    cr_expect_eq(json_array_size(json_object_get(revs, "ids")), 2);
    cr_expect_str_eq(ok_rev(result_docs(&r, 1), 0), "3-cc", "no rev: the winner");
    for (size_t i = 2; i < 4; i++) {
        json_t *err = json_object_get(json_array_get(result_docs(&r, i), 0), "error");
        cr_expect_str_eq(json_string_value(json_object_get(err, "error")), "not_found", "%s",
                         r.body);
        cr_expect_str_eq(json_string_value(json_object_get(err, "reason")), "missing");
        cr_expect_str_eq(json_string_value(json_object_get(err, "rev")), i == 2 ? "1-ab" : "9-ff");
    }
    resp_fini(&r);
}

Test(repl, bulk_get_without_revs_has_no_revisions)
{
    struct resp r;
    make_tree();
    cr_assert_eq(post_json(&r, "/b/_bulk_get", "{\"docs\":[{\"id\":\"k\",\"rev\":\"3-cc\"}]}"), 200,
                 "%s", r.body);
    json_t *d = json_object_get(json_array_get(result_docs(&r, 0), 0), "ok");
    cr_expect_str_eq(json_string_value(json_object_get(d, "v")), "c");
    cr_expect_null(json_object_get(d, "_revisions"), "%s", r.body);
    resp_fini(&r);
}

Test(repl, bulk_get_latest_answers_the_leaf_of_an_old_rev)
{
    struct resp r;
    make_tree();
    /* 2-bb is no longer a leaf: without latest it is missing, with latest it is 3-cc */
    cr_assert_eq(post_json(&r, "/b/_bulk_get", "{\"docs\":[{\"id\":\"k\",\"rev\":\"2-bb\"}]}"),
                 200);
    cr_expect(json_object_get(json_array_get(result_docs(&r, 0), 0), "error"), "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/b/_bulk_get?latest=true&revs=true",
                           "{\"docs\":[{\"id\":\"k\",\"rev\":\"2-bb\"},"
                           "{\"id\":\"k\",\"rev\":\"1-11\"}]}"),
                 200);
    cr_expect_eq(json_array_size(result_docs(&r, 0)), 1, "%s", r.body);
    cr_expect_str_eq(ok_rev(result_docs(&r, 0), 0), "3-cc");
    /* 1-11 is the root: both leaves descend from it */
    cr_expect_eq(json_array_size(result_docs(&r, 1)), 2, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/b/k?open_revs=%5B%222-bb%22%5D&latest=true"), 200);
    cr_expect(json_is_array(r.json) && json_array_size(r.json) == 1, "%s", r.body);
    cr_expect_str_eq(ok_rev(r.json, 0), "3-cc");
    resp_fini(&r);
}

Test(repl, bulk_get_bad_input_is_400_or_an_error_item)
{
    struct resp r;
    make_tree();
    post_json(&r, "/b/_bulk_get", "{\"nodocs\":1}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    post_json(&r, "/b/_bulk_get", "[1,2]");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    post_json(&r, "/b/_bulk_get?revs=maybe", "{\"docs\":[]}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    req(&r, "POST", "/b/_bulk_get", "text/plain", NULL, "{\"docs\":[]}");
    expect_error(&r, 415, "bad_content_type");
    resp_fini(&r);
    post_json(&r, "/nodb/_bulk_get", "{\"docs\":[]}");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    cr_assert_eq(
        post_json(&r, "/b/_bulk_get", "{\"docs\":[{\"id\":7},{\"id\":\"k\",\"rev\":\"zz\"},5]}"),
        200, "%s", r.body);
    for (size_t i = 0; i < 3; i++) {
        json_t *err = json_object_get(json_array_get(result_docs(&r, i), 0), "error");
        cr_expect_str_eq(json_string_value(json_object_get(err, "error")), "bad_request", "%s",
                         r.body);
    }
    resp_fini(&r);
    cr_assert_eq(get(&r, "/b/k?conflicts=true"), 200, "the document is unchanged");
    cr_expect_str_eq(jstr(&r, "_rev"), "3-cc");
    resp_fini(&r);
}

Test(repl, connection_close_is_answered_and_honoured)
{
    struct resp r;
    make_db("cc");
    int fd = connect_node();
    send_req(fd, "PUT", "/cc/d", "application/json", "Connection: close\r\n", "{\"a\":1}");
    cr_assert(read_resp(fd, &r, 5000));
    cr_expect_eq(r.status, 201);
    cr_expect(r.closed, "the answer says Connection: close: %s", r.headers);
    resp_fini(&r);
    char b;
    cr_expect_eq(recv_deadline(fd, &b, 1, 2000), 0, "the server closed the connection");
    close(fd);
}

Test(repl, bulk_get_attachments_inline_or_stub)
{
    struct resp r;
    make_db("a");
    char rev[64];
    put_doc("/a/d",
            "{\"_attachments\":{\"n.txt\":{\"content_type\":\"text/plain\","
            "\"data\":\"aGVsbG8=\"}}}",
            rev, sizeof rev);
    char body[256];
    snprintf(body, sizeof body, "{\"docs\":[{\"id\":\"d\",\"rev\":\"%s\"}]}", rev);
    cr_assert_eq(post_json(&r, "/a/_bulk_get?attachments=true", body), 200, "%s", r.body);
    json_t *att = json_object_get(
        json_object_get(json_object_get(json_array_get(result_docs(&r, 0), 0), "ok"),
                        "_attachments"),
        "n.txt");
    cr_expect_str_eq(json_string_value(json_object_get(att, "data")), "aGVsbG8=", "%s", r.body);
    cr_expect_null(json_object_get(att, "stub"));
    cr_expect_str_eq(json_string_value(json_object_get(att, "digest")),
                     "md5-XUFAKrxLKna5cZ2REBfFkg==");
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/a/_bulk_get", body), 200, "%s", r.body);
    att = json_object_get(
        json_object_get(json_object_get(json_array_get(result_docs(&r, 0), 0), "ok"),
                        "_attachments"),
        "n.txt");
    cr_expect(json_is_true(json_object_get(att, "stub")), "%s", r.body);
    cr_expect_null(json_object_get(att, "data"));
    resp_fini(&r);
}

/* ---- the _bulk_get and _changes text against the jansson path ---- */

static void pct(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_')
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, cap - n, "%%%02X", c);
    }
    out[n] = 0;
}

/* GET /w/{id}?open_revs=["rev"]&... (answered through the jansson tree): its text, without the
 * final newline. Caller frees. */
static char *open_revs_text(const char *id, const char *rev, const char *args)
{
    char eid[512], path[1024], revs[128];
    pct(id, eid, sizeof eid);
    snprintf(revs, sizeof revs, "[\"%s\"]", rev);
    char prevs[256];
    pct(revs, prevs, sizeof prevs);
    snprintf(path, sizeof path, "/w/%s?open_revs=%s%s", eid, prevs, args);
    struct resp r;
    cr_assert_eq(get(&r, path), 200, "%s: %s", path, r.body);
    cr_assert(r.body_len > 0 && r.body[r.body_len - 1] == '\n');
    char *t = strndup(r.body, r.body_len - 1);
    resp_fini(&r);
    return t;
}

/* Documents of every shape a replicator meets: escapes and unicode in ids and bodies, reals,
 * conflicts, a deletion, an attachment stub. Fills ids/revs (static texts) and returns n. */
static size_t make_shapes(const char **ids, char revs[][64], size_t cap)
{
    struct resp r;
    make_db("w");
    cr_assert_eq(post_json(&r, "/w/_bulk_docs",
                           "{\"new_edits\":false,\"docs\":["
                           "{\"_id\":\"c\",\"_rev\":\"1-aa\",\"v\":\"peer-a\"},"
                           "{\"_id\":\"c\",\"_rev\":\"1-bb\",\"v\":\"peer-b\"},"
                           "{\"_id\":\"x\",\"_rev\":\"2-dd\",\"_deleted\":true,"
                           "\"_revisions\":{\"start\":2,\"ids\":[\"dd\",\"cc\"]}}]}"),
                 201, "%s", r.body);
    resp_fini(&r);
    static const char *const shapes[][2] = {
        {"sensor", "{\"type\":\"sensor\",\"site\":\"site-1\",\"value\":61.958,\"ts\":1700000001000,"
                   "\"tags\":[\"blue\",\"red\",\"hot\"],\"n\":-3,\"r\":[0.1,1e300,-0.0,100.0]}"},
        {"caf\xc3\xa9 \xe4\xb8\xad \"q\"", "{\"s\":\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\","
                                           "\"u\":\"\\u00e9\\u2028\\ud83d\\ude00\","
                                           "\"k\\u00e9y\":{\"\":[{},[]]},\"nul\":null}"},
        {"att", "{\"_attachments\":{\"n \\\"1\\\".txt\":{\"content_type\":\"text/plain\","
                "\"data\":\"aGVsbG8=\"},\"b.bin\":{\"data\":\"AAE=\"}},\"t\":true}"},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0] && n < cap; i++, n++) {
        char eid[256], path[300];
        pct(shapes[i][0], eid, sizeof eid);
        snprintf(path, sizeof path, "/w/%s", eid);
        put_doc(path, shapes[i][1], revs[n], 64);
        ids[n] = shapes[i][0];
    }
    ids[n] = "c";
    snprintf(revs[n++], 64, "1-aa");
    ids[n] = "c";
    snprintf(revs[n++], 64, "1-bb");
    ids[n] = "x";
    snprintf(revs[n++], 64, "2-dd");
    return n;
}

Test(repl, bulk_get_text_is_the_jansson_paths_text)
{
    const char *ids[8];
    char revs[8][64];
    size_t n = make_shapes(ids, revs, 8);
    for (int latest = 0; latest < 2; latest++) {
        for (int with_revs = 0; with_revs < 2; with_revs++) {
            char args[64];
            snprintf(args, sizeof args, "%s%s", with_revs ? "&revs=true" : "",
                     latest ? "&latest=true" : "");
            char req_body[4096] = "{\"docs\":[", want[16384] = "{\"results\":[";
            for (size_t i = 0; i < n; i++) {
                json_t *idj = json_string(ids[i]);
                char *idt = json_dumps(idj, JSON_ENCODE_ANY | JSON_COMPACT);
                char *docs = open_revs_text(ids[i], revs[i], args);
                size_t rl = strlen(req_body), wl = strlen(want);
                snprintf(req_body + rl, sizeof req_body - rl, "%s{\"id\":%s,\"rev\":\"%s\"}",
                         i ? "," : "", idt, revs[i]);
                snprintf(want + wl, sizeof want - wl, "%s{\"id\":%s,\"docs\":%s}", i ? "," : "",
                         idt, docs);
                free(docs);
                free(idt);
                json_decref(idj);
            }
            strcat(req_body, "]}");
            strcat(want, "]}\n");
            char path[128];
            snprintf(path, sizeof path, "/w/_bulk_get?x=1%s", args);
            struct resp r;
            cr_assert_eq(post_json(&r, path, req_body), 200, "%s", r.body);
            cr_expect(r.body_len == strlen(want) && memcmp(r.body, want, r.body_len) == 0,
                      "%s\n got %.*s\nwant %s", args, (int)r.body_len, r.body, want);
            resp_fini(&r);
        }
    }
}

Test(repl, changes_doc_text_is_the_jansson_paths_text)
{
    const char *ids[8];
    char revs[8][64];
    size_t n = make_shapes(ids, revs, 8);
    struct resp r;
    cr_assert_eq(get(&r, "/w/_changes?style=all_docs&include_docs=true"), 200, "%s", r.body);
    cr_assert(r.json != NULL, "%s", r.body);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ids[i], "c") == 0)
            continue; /* the row's doc is the winner's */
        char *docs = open_revs_text(ids[i], revs[i], "");
        cr_assert(strncmp(docs, "[{\"ok\":", 7) == 0 && strlen(docs) > 9, "%s", docs);
        /* "doc": then the ok document, then the row's closing brace */
        char want[4096];
        snprintf(want, sizeof want, "\"doc\":%.*s}", (int)(strlen(docs) - 9), docs + 7);
        cr_expect(strstr(r.body, want) != NULL, "no %s in\n%s", want, r.body);
        free(docs);
    }
    /* the rows themselves: all leaves of the conflicted doc, the deletion flagged */
    cr_expect(strstr(r.body, "\"id\":\"c\",\"changes\":[{\"rev\":\"1-bb\"},{\"rev\":\"1-aa\"}]") !=
                  NULL,
              "%s", r.body);
    cr_expect(strstr(r.body, "\"id\":\"x\",\"changes\":[{\"rev\":\"2-dd\"}],\"deleted\":true") !=
                  NULL,
              "%s", r.body);
    cr_expect(strstr(r.body, "\"id\":\"caf\xc3\xa9 \xe4\xb8\xad \\\"q\\\"\"") != NULL, "%s",
              r.body);
    resp_fini(&r);
}
