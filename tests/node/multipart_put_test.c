/* multipart_put_test.c — PUT /{db}/{docid} as multipart/related (CouchDB's replicator push)
 * against a real `barrel serve` with --max-body 1 MiB: a replicated revision with attachments
 * that follow is stored with its rev and read back; an attachment part far larger than
 * --max-body is streamed; malformed bodies, "follows" stubs without parts or parts without
 * stubs, and lengths or digests that do not match are 400 bad_request and store nothing. */
#define MAX_BODY (1 << 20)
#include "serve_util.h"

TestSuite(mpput, .init = setup, .fini = teardown, .timeout = 120);

#define B "bArReL-b0undary"
#define CT "multipart/related; boundary=\"" B "\""

/* PUT path with body (len bytes) as multipart/related; returns the status. */
static int put_mp(struct resp *r, const char *path, const char *ctype, const void *body, size_t len)
{
    int fd = connect_node();
    char head[1024];
    int n =
        snprintf(head, sizeof head,
                 "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                 path, ctype, len);
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
    bool ok = read_resp(fd, r, 60000);
    close(fd);
    cr_assert(ok, "PUT %s: no response", path);
    return r->status;
}

/* A growing body. */
struct body {
    char *p;
    size_t n, cap;
};

static void add(struct body *b, const void *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert(b->p);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void adds(struct body *b, const char *s)
{
    add(b, s, strlen(s));
}

static void doc_part(struct body *b, const char *json)
{
    adds(b, "--" B "\r\nContent-Type: application/json\r\n\r\n");
    adds(b, json);
}

static void att_part(struct body *b, const char *name, const char *ctype, const void *p, size_t n)
{
    char h[512];
    snprintf(h, sizeof h,
             "\r\n--" B "\r\nContent-Disposition: attachment; filename=\"%s\"\r\n"
             "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
             name, ctype, n);
    adds(b, h);
    add(b, p, n);
}

static void close_body(struct body *b)
{
    adds(b, "\r\n--" B "--");
}

static const char REV[] = "3-0123456789abcdef0123456789abcdef";

Test(mpput, replicated_revision_with_attachments_is_stored)
{
    make_db("r");
    struct body b = {0};
    char json[1024];
    /* md5("hello") = XUFAKrxLKna5cZ2REBfFkg== */
    snprintf(json, sizeof json,
             "{\"_id\":\"d\",\"_rev\":\"%s\",\"v\":7,\"_revisions\":{\"start\":3,\"ids\":["
             "\"0123456789abcdef0123456789abcdef\",\"11111111111111111111111111111111\","
             "\"22222222222222222222222222222222\"]},\"_attachments\":{"
             "\"a.txt\":{\"content_type\":\"text/plain\",\"revpos\":2,\"follows\":true,"
             "\"length\":5,\"digest\":\"md5-XUFAKrxLKna5cZ2REBfFkg==\"},"
             "\"b.bin\":{\"content_type\":\"application/octet-stream\",\"revpos\":3,"
             "\"follows\":true,\"length\":3}}}",
             REV);
    doc_part(&b, json);
    att_part(&b, "a.txt", "text/plain", "hello", 5);
    att_part(&b, "b.bin", "application/octet-stream", "\0\r\n", 3);
    close_body(&b);
    struct resp r;
    cr_assert_eq(put_mp(&r, "/r/d?new_edits=false", CT, b.p, b.n), 201, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/r/d"), 200);
    cr_expect_str_eq(jstr(&r, "_rev"), REV);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "v")), 7);
    json_t *a = json_object_get(json_object_get(r.json, "_attachments"), "a.txt");
    cr_assert(a, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(a, "digest")),
                     "md5-XUFAKrxLKna5cZ2REBfFkg==");
    cr_expect_eq(json_integer_value(json_object_get(a, "length")), 5);
    cr_expect(json_is_true(json_object_get(a, "stub")));
    resp_fini(&r);
    cr_assert_eq(get(&r, "/r/d/a.txt"), 200);
    cr_expect_eq(r.body_len, 5);
    cr_expect(memcmp(r.body, "hello", 5) == 0);
    cr_expect_str_eq(header(&r, "content-type"), "text/plain");
    resp_fini(&r);
    cr_assert_eq(get(&r, "/r/d/b.bin"), 200);
    cr_expect_eq(r.body_len, 3);
    cr_expect(memcmp(r.body, "\0\r\n", 3) == 0);
    resp_fini(&r);
    /* parts in another order than the stubs are matched by file name */
    free(b.p);
    memset(&b, 0, sizeof b);
    doc_part(&b, "{\"_id\":\"e\",\"_attachments\":{\"x\":{\"follows\":true,\"length\":1},"
                 "\"y\":{\"follows\":true,\"length\":2}}}");
    att_part(&b, "y", "text/plain", "yy", 2);
    att_part(&b, "x", "text/plain", "x", 1);
    close_body(&b);
    cr_assert_eq(put_mp(&r, "/r/e", CT, b.p, b.n), 201, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/r/e/y"), 200);
    cr_expect_eq(r.body_len, 2);
    resp_fini(&r);
    free(b.p);
}

Test(mpput, attachment_part_larger_than_max_body_is_streamed)
{
    make_db("big");
    size_t n = (size_t)8 << 20;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)((i * 2654435761u) >> 11);
    struct body b = {0};
    char json[256];
    snprintf(json, sizeof json,
             "{\"_attachments\":{\"big.bin\":{\"content_type\":\"application/x-test\","
             "\"follows\":true,\"length\":%zu}}}",
             n);
    doc_part(&b, json);
    att_part(&b, "big.bin", "application/x-test", data, n);
    close_body(&b);
    struct resp r;
    cr_assert_eq(put_mp(&r, "/big/d", CT, b.p, b.n), 201, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/big/d"), 200);
    json_t *a = json_object_get(json_object_get(r.json, "_attachments"), "big.bin");
    cr_expect_eq(json_integer_value(json_object_get(a, "length")), (json_int_t)n, "%s", r.body);
    resp_fini(&r);
    free(b.p);
    free(data);
}

/* Expect a 400 bad_request for body, and no document d in db. */
static void rejected(const char *db, const char *ctype, const struct body *b, const char *what)
{
    struct resp r;
    char path[128];
    snprintf(path, sizeof path, "/%s/d", db);
    put_mp(&r, path, ctype, b->p, b->n);
    cr_expect_eq(r.status, 400, "%s: %d %s", what, r.status, r.body);
    cr_expect_str_eq(jstr(&r, "error"), "bad_request", "%s: %s", what, r.body);
    resp_fini(&r);
    get(&r, path);
    cr_expect_eq(r.status, 404, "%s: stored %s", what, r.body);
    resp_fini(&r);
}

Test(mpput, malformed_and_mismatched_bodies_store_nothing)
{
    make_db("m");
    static const char DOC1[] = "{\"_attachments\":{\"a\":{\"follows\":true,\"length\":5}}}";
    struct body b = {0};
    struct resp r;
    /* no closing boundary */
    doc_part(&b, DOC1);
    att_part(&b, "a", "text/plain", "hello", 5);
    rejected("m", CT, &b, "truncated");
    /* a preamble */
    free(b.p);
    memset(&b, 0, sizeof b);
    adds(&b, "junk\r\n");
    doc_part(&b, DOC1);
    att_part(&b, "a", "text/plain", "hello", 5);
    close_body(&b);
    rejected("m", CT, &b, "preamble");
    /* the Content-Type has no boundary, or another one */
    rejected("m", "multipart/related", &b, "no boundary");
    rejected("m", "multipart/related; boundary=other", &b, "wrong boundary");
    /* a follows stub without its part */
    free(b.p);
    memset(&b, 0, sizeof b);
    doc_part(&b, "{\"_attachments\":{\"a\":{\"follows\":true,\"length\":5},"
                 "\"b\":{\"follows\":true,\"length\":1}}}");
    att_part(&b, "a", "text/plain", "hello", 5);
    close_body(&b);
    rejected("m", CT, &b, "missing part");
    /* a part without a stub */
    free(b.p);
    memset(&b, 0, sizeof b);
    doc_part(&b, DOC1);
    att_part(&b, "a", "text/plain", "hello", 5);
    att_part(&b, "z", "text/plain", "z", 1);
    close_body(&b);
    rejected("m", CT, &b, "extra part");
    /* lengths that do not match: shorter, longer, and the part's Content-Length */
    free(b.p);
    memset(&b, 0, sizeof b);
    doc_part(&b, DOC1);
    att_part(&b, "a", "text/plain", "hell", 4);
    close_body(&b);
    rejected("m", CT, &b, "shorter");
    free(b.p);
    memset(&b, 0, sizeof b);
    doc_part(&b, DOC1);
    att_part(&b, "a", "text/plain", "hello!", 6);
    close_body(&b);
    rejected("m", CT, &b, "longer");
    free(b.p);
    memset(&b, 0, sizeof b);
    doc_part(&b, "{\"_attachments\":{\"a\":{\"follows\":true}}}");
    adds(&b, "\r\n--" B "\r\nContent-Length: 9\r\n\r\nhello");
    close_body(&b);
    rejected("m", CT, &b, "part Content-Length");
    /* a document part that is not JSON */
    free(b.p);
    memset(&b, 0, sizeof b);
    doc_part(&b, "{\"_attachments\":");
    att_part(&b, "a", "text/plain", "hello", 5);
    close_body(&b);
    rejected("m", CT, &b, "bad JSON");
    free(b.p);
    /* a client that leaves in the middle of an attachment part */
    memset(&b, 0, sizeof b);
    doc_part(&b, "{\"_attachments\":{\"a\":{\"follows\":true,\"length\":4000000}}}");
    char *half = calloc(1, 2000000);
    att_part(&b, "a", "text/plain", half, 2000000);
    free(half);
    int fd = connect_node();
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "PUT /m/d HTTP/1.1\r\nHost: x\r\nContent-Type: " CT
                      "\r\nContent-Length: %zu\r\n\r\n",
                      b.n + 2000000 + 64);
    send_all(fd, head, (size_t)hn);
    send_all(fd, b.p, b.n);
    usleep(300 * 1000);
    close(fd);
    free(b.p);
    usleep(300 * 1000);
    get(&r, "/m/d");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    cr_expect_eq(doc_count("m"), 0);
    still_serving();
    /* nothing half-written stays behind: the store's next open has nothing to sweep */
    int st = stop_node(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "%s/barrel --data %s --log-level info check m 2>&1",
             BARREL_BINARY_DIR, dir);
    FILE *p = popen(cmd, "r");
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    cr_expect_eq(pclose(p), 0, "%s", out);
    cr_expect_null(strstr(out, "swept"), "left behind: %s", out);
    char line[512];
    fclose(node_out);
    pid = start_node(dir, &port, line, sizeof line, &node_out);
    cr_assert(port > 0, "node did not restart: %s", line);
}

Test(mpput, digest_mismatch_and_encoded_attachments_are_rejected)
{
    make_db("dg");
    struct body b = {0};
    doc_part(&b, "{\"_attachments\":{\"a\":{\"follows\":true,\"length\":5,"
                 "\"digest\":\"md5-AAAAAAAAAAAAAAAAAAAAAA==\"}}}");
    att_part(&b, "a", "text/plain", "hello", 5);
    close_body(&b);
    rejected("dg", CT, &b, "digest");
    free(b.p);
    /* an encoded (gzip) attachment is refused, not stored as its compressed bytes */
    memset(&b, 0, sizeof b);
    doc_part(&b, "{\"_attachments\":{\"a\":{\"follows\":true,\"length\":5,"
                 "\"encoding\":\"gzip\",\"encoded_length\":3}}}");
    att_part(&b, "a", "text/plain", "xyz", 3);
    close_body(&b);
    struct resp r;
    put_mp(&r, "/dg/g", CT, b.p, b.n);
    expect_error(&r, 415, "bad_content_type");
    resp_fini(&r);
    get(&r, "/dg/g");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    free(b.p);
    still_serving();
}
