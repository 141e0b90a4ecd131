/* attachments_test.c — attachments over HTTP against a real `barrel serve`: standalone
 * PUT/GET/DELETE with CouchDB's shapes, a 5 MiB attachment streamed both ways, inline base64 in
 * and out, and the bad cases (404/409/400) after which the node keeps serving. */
#define MAX_BODY (16 << 20)
#include "serve_util.h"

TestSuite(att, .init = setup, .fini = teardown, .timeout = 60);

/* PUT raw bytes; returns the status, the JSON answer in r. */
static int put_bytes(struct resp *r, const char *path, const char *ctype, const char *extra,
                     const void *data, size_t len)
{
    int fd = connect_node();
    char head[1024];
    int n =
        snprintf(head, sizeof head,
                 "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%sContent-Length: %zu\r\n\r\n",
                 path, ctype, extra ? extra : "", len);
    send_all(fd, head, (size_t)n);
    send_all(fd, data, len);
    bool ok = read_resp(fd, r, 20000);
    close(fd);
    cr_assert(ok, "PUT %s: no response", path);
    return r->status;
}

Test(att, put_get_delete_with_couch_shapes)
{
    make_db("a");
    char rev[128], path[256];
    put_doc("/a/d", "{\"k\":1}", rev, sizeof rev);
    struct resp r;
    snprintf(path, sizeof path, "/a/d/note.txt?rev=%s", rev);
    cr_assert_eq(put_bytes(&r, path, "text/plain", NULL, "hello, world", 12), 201, "%s", r.body);
    cr_expect(json_is_true(json_object_get(r.json, "ok")));
    cr_expect_str_eq(jstr(&r, "id"), "d");
    cr_expect(strncmp(jstr(&r, "rev"), "2-", 2) == 0, "%s", r.body);
    cr_expect_str_eq(header(&r, "location"), "/a/d/note.txt");
    snprintf(rev, sizeof rev, "%s", jstr(&r, "rev"));
    resp_fini(&r);
    cr_assert_eq(get(&r, "/a/d/note.txt"), 200);
    cr_expect_eq(r.body_len, 12);
    cr_expect(memcmp(r.body, "hello, world", 12) == 0);
    cr_expect_str_eq(header(&r, "content-type"), "text/plain");
    char md5[64];
    snprintf(md5, sizeof md5, "%s", header(&r, "content-md5"));
    resp_fini(&r);
    /* the document lists the stub, with the same digest; its body is kept */
    cr_assert_eq(get(&r, "/a/d"), 200);
    json_t *st = json_object_get(json_object_get(r.json, "_attachments"), "note.txt");
    cr_assert(st, "%s", r.body);
    char want[80];
    snprintf(want, sizeof want, "md5-%s", md5);
    cr_expect_str_eq(json_string_value(json_object_get(st, "digest")), want);
    cr_expect(json_is_true(json_object_get(st, "stub")));
    cr_expect_eq(json_integer_value(json_object_get(st, "length")), 12);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "k")), 1);
    resp_fini(&r);
    /* a PUT without rev to a new document creates it */
    cr_assert_eq(put_bytes(&r, "/a/fresh/x.bin", "application/octet-stream", NULL, "\0\1\2", 3),
                 201, "%s", r.body);
    resp_fini(&r);
    /* DELETE needs the rev */
    req(&r, "DELETE", "/a/d/note.txt", NULL, NULL, NULL);
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    snprintf(path, sizeof path, "/a/d/note.txt?rev=%s", rev);
    cr_assert_eq(req(&r, "DELETE", path, NULL, NULL, NULL), 200, "%s", r.body);
    cr_expect(strncmp(jstr(&r, "rev"), "3-", 2) == 0);
    resp_fini(&r);
    get(&r, "/a/d/note.txt");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
}

Test(att, five_mib_attachment_streams_both_ways)
{
    make_db("big");
    size_t n = 5u << 20;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)((i * 2654435761u) >> 13);
    struct resp r;
    cr_assert_eq(put_bytes(&r, "/big/d/blob.dat", "application/x-test", NULL, data, n), 201, "%s",
                 r.body);
    resp_fini(&r);
    struct stream s;
    open_stream(&s, "/big/d/blob.dat");
    cr_assert_eq(s.status, 200);
    cr_expect_str_eq(stream_header(&s, "content-type"), "application/x-test");
    cr_expect(stream_header(&s, "content-md5"));
    cr_assert(wait_done(&s, 20000), "got %zu bytes", s.body_len);
    cr_assert_eq(s.body_len, n);
    cr_expect(memcmp(s.body, data, n) == 0);
    close_stream(&s);
    /* a client that leaves mid-download does not disturb the node */
    open_stream(&s, "/big/d/blob.dat");
    close_stream(&s);
    free(data);
    still_serving();
}

Test(att, inline_base64_in_and_out)
{
    make_db("in");
    struct resp r;
    cr_assert_eq(put_json(&r, "/in/d",
                          "{\"v\":1,\"_attachments\":{\"a.txt\":{\"content_type\":\"text/plain\","
                          "\"data\":\"aGVsbG8=\"}}}"),
                 201, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/in/d/a.txt"), 200);
    cr_expect_eq(r.body_len, 5);
    cr_expect(memcmp(r.body, "hello", 5) == 0);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/in/d?attachments=true"), 200);
    json_t *a = json_object_get(json_object_get(r.json, "_attachments"), "a.txt");
    cr_assert(a, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(a, "data")), "aGVsbG8=");
    cr_expect_null(json_object_get(a, "stub"));
    cr_expect_str_eq(json_string_value(json_object_get(a, "content_type")), "text/plain");
    resp_fini(&r);
    cr_assert_eq(get(&r, "/in/d?attachments=true&att_encoding_info=true"), 200);
    resp_fini(&r);
}

Test(att, bad_requests_get_couch_errors_and_change_nothing)
{
    make_db("bad");
    char rev[128], path[256];
    struct resp r;
    put_json(&r, "/bad/d",
             "{\"_attachments\":{\"a\":{\"content_type\":\"text/plain\","
             "\"data\":\"!!!not base64\"}}}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    put_doc("/bad/e", "{}", rev, sizeof rev);
    /* to an existing document without its rev, or with a stale one */
    put_bytes(&r, "/bad/e/x.txt", "text/plain", NULL, "x", 1);
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    put_bytes(&r, "/bad/e/x.txt?rev=1-00000000000000000000000000000000", "text/plain", NULL, "x",
              1);
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    put_bytes(&r, "/bad/e/x.txt?rev=garbage", "text/plain", NULL, "x", 1);
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    /* to a missing document with a rev */
    snprintf(path, sizeof path, "/bad/missing/x.txt?rev=%s", rev);
    put_bytes(&r, path, "text/plain", NULL, "x", 1);
    expect_error(&r, 409, "conflict");
    resp_fini(&r);
    /* a bad name */
    put_bytes(&r, "/bad/e/_x", "text/plain", NULL, "x", 1);
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    get(&r, "/bad/missing/x.txt");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    snprintf(path, sizeof path, "/bad/e/nothere?rev=%s", rev);
    req(&r, "DELETE", path, NULL, NULL, NULL);
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    put_bytes(&r, "/nodb/e/x", "text/plain", NULL, "x", 1);
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    cr_assert_eq(get(&r, "/bad/e"), 200);
    cr_expect_str_eq(jstr(&r, "_rev"), rev);
    cr_expect_null(json_object_get(r.json, "_attachments"));
    resp_fini(&r);
    still_serving();
}
