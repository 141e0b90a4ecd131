/* open_revs_mixed_test.c — GET /{db}/{docid}?open_revs=...&attachments=true with
 * Accept: multipart/mixed against a real `barrel serve`, as CouchDB's replicator pulls: each
 * revision a part, one with attachments a nested multipart/related whose attachment parts
 * carry the stored bytes (a 3 MiB one streamed), a missing revision an error part; the
 * answer is read back with the node's own multipart parser. JSON stays the default. */
#define MAX_BODY (1 << 20)
#include "multipart.h"
#include "serve_util.h"

TestSuite(mixed, .init = setup, .fini = teardown, .timeout = 120);

struct part {
    char ct[256], fn[256];
    char *data;
    size_t n, cap;
};

struct parts {
    struct part p[8];
    size_t n;
};

static br_err on_begin(void *arg, const struct br_mp_part *h, struct br_errbuf *eb)
{
    struct parts *ps = arg;
    (void)eb;
    cr_assert_lt(ps->n, 8);
    struct part *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->ct, sizeof p->ct, "%s", h->content_type ? h->content_type : "");
    snprintf(p->fn, sizeof p->fn, "%s", h->filename ? h->filename : "");
    return BR_OK;
}

static br_err on_data(void *arg, const void *d, size_t n, struct br_errbuf *eb)
{
    struct parts *ps = arg;
    (void)eb;
    struct part *p = &ps->p[ps->n - 1];
    if (p->n + n + 1 > p->cap) {
        p->cap = (p->n + n + 1) * 2;
        p->data = realloc(p->data, p->cap);
        cr_assert(p->data);
    }
    memcpy(p->data + p->n, d, n);
    p->n += n;
    p->data[p->n] = '\0';
    return BR_OK;
}

static br_err on_end(void *arg, struct br_errbuf *eb)
{
    (void)arg;
    (void)eb;
    return BR_OK;
}

static void parse_parts(const char *ctype, const char *type, const char *body, size_t n,
                        struct parts *ps)
{
    char b[BR_MP_BOUNDARY_MAX + 1];
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_mp_boundary(ctype, type, b, &eb), BR_OK, "%s: %s", ctype, eb.msg);
    memset(ps, 0, sizeof *ps);
    struct br_mp_cb cb = {on_begin, on_data, on_end, ps};
    br_mp *m = NULL;
    cr_assert_eq(br_mp_new(b, 8, &cb, &m), BR_OK);
    cr_assert_eq(br_mp_feed(m, body, n, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(br_mp_finish(m, &eb), BR_OK, "%s", eb.msg);
    br_mp_free(m);
}

static void parts_fini(struct parts *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free(ps->p[i].data);
}

/* needle (lowercase) in s without regard to case, or NULL. */
static const char *ci_find(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s; s++) {
        if (strncasecmp(s, needle, n) == 0)
            return s;
    }
    return NULL;
}

/* GET path with Accept; the whole (chunked or not) body into *body. Returns the status. */
static int get_accept(const char *path, const char *accept, char *ctype, size_t cap, char **body,
                      size_t *n)
{
    int fd = connect_node();
    char extra[128];
    snprintf(extra, sizeof extra, "Accept: %s\r\n", accept);
    send_req(fd, "GET", path, NULL, extra, NULL);
    size_t rcap = 16 << 20, len = 0;
    char *raw = malloc(rcap + 1);
    for (;;) {
        ssize_t k = recv_deadline(fd, raw + len, rcap - len, 20000);
        if (k <= 0)
            break;
        len += (size_t)k;
        raw[len] = '\0';
        char *eoh = strstr(raw, "\r\n\r\n");
        if (!eoh)
            continue;
        char hdr[4096];
        snprintf(hdr, sizeof hdr, "%.*s", (int)(eoh - raw), raw);
        if (ci_find(hdr, "transfer-encoding: chunked")) {
            if (len >= 5 && memcmp(raw + len - 5, "0\r\n\r\n", 5) == 0)
                break;
        } else if (ci_find(hdr, "content-length:")) {
            size_t cl = strtoul(ci_find(hdr, "content-length:") + 15, NULL, 10);
            if (len - (size_t)(eoh + 4 - raw) >= cl)
                break;
        }
    }
    close(fd);
    raw[len] = '\0';
    char *eoh = strstr(raw, "\r\n\r\n");
    cr_assert(eoh);
    int status = 0;
    sscanf(raw, "HTTP/1.1 %d", &status);
    struct resp r;
    memset(&r, 0, sizeof r);
    snprintf(r.headers, sizeof r.headers, "%.*s", (int)(eoh + 4 - raw), raw);
    const char *ct = header(&r, "content-type");
    snprintf(ctype, cap, "%s", ct ? ct : "");
    bool chunked = header(&r, "transfer-encoding") != NULL;
    char *p = eoh + 4, *end = raw + len, *out = malloc(len + 1);
    size_t o = 0;
    if (!chunked) {
        memcpy(out, p, (size_t)(end - p));
        o = (size_t)(end - p);
    }
    while (chunked && p < end) {
        char *e;
        size_t k = strtoul(p, &e, 16);
        p = e + 2;
        if (k == 0)
            break;
        cr_assert_leq(k + 2, (size_t)(end - p), "truncated chunked body");
        memcpy(out + o, p, k);
        o += k;
        p += k + 2;
    }
    out[o] = '\0';
    free(raw);
    *body = out;
    *n = o;
    return status;
}

static int put_bytes(const char *path, const void *data, size_t len)
{
    int fd = connect_node();
    char head[512];
    int n = snprintf(head, sizeof head,
                     "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-big\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     path, len);
    send_all(fd, head, (size_t)n);
    send_all(fd, data, len);
    struct resp r;
    cr_assert(read_resp(fd, &r, 30000));
    close(fd);
    int st = r.status;
    resp_fini(&r);
    return st;
}

Test(mixed, open_revs_with_attachments_as_multipart)
{
    make_db("o");
    struct resp r;
    cr_assert_eq(put_json(&r, "/o/d",
                          "{\"v\":1,\"_attachments\":{\"a.txt\":{\"content_type\":\"text/plain\","
                          "\"data\":\"aGVsbG8=\"}}}"),
                 201, "%s", r.body);
    char rev[64], path[512];
    snprintf(rev, sizeof rev, "%s", jstr(&r, "rev"));
    resp_fini(&r);
    size_t n = (size_t)3 << 20;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (unsigned char)((i * 2654435761u) >> 9);
    snprintf(path, sizeof path, "/o/d/big.bin?rev=%s", rev);
    cr_assert_eq(put_bytes(path, big, n), 201);
    cr_assert_eq(get(&r, "/o/d"), 200);
    snprintf(rev, sizeof rev, "%s", jstr(&r, "_rev"));
    resp_fini(&r);
    snprintf(path, sizeof path,
             "/o/d?open_revs=[\"%s\",\"9-00000000000000000000000000000000\"]&revs=true&"
             "latest=true&attachments=true",
             rev);
    char ct[256], *body;
    size_t len;
    cr_assert_eq(get_accept(path, "multipart/mixed", ct, sizeof ct, &body, &len), 200);
    struct parts outer, inner;
    parse_parts(ct, "multipart/mixed", body, len, &outer);
    cr_assert_eq(outer.n, 2);
    /* the revision, with its attachments following */
    parse_parts(outer.p[0].ct, "multipart/related", outer.p[0].data, outer.p[0].n, &inner);
    cr_assert_eq(inner.n, 3, "%zu parts", inner.n);
    cr_expect(strncmp(inner.p[0].ct, "application/json", 16) == 0);
    json_t *doc = json_loads(inner.p[0].data, 0, NULL);
    cr_assert(doc, "%s", inner.p[0].data);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "_rev")), rev);
    cr_expect(json_object_get(doc, "_revisions"));
    json_t *atts = json_object_get(doc, "_attachments");
    const char *order[2];
    size_t k = 0;
    const char *name;
    json_t *a;
    json_object_foreach(atts, name, a)
    {
        cr_expect(json_is_true(json_object_get(a, "follows")), "%s", name);
        cr_expect_null(json_object_get(a, "stub"));
        cr_assert_lt(k, 2);
        order[k++] = name;
    }
    cr_assert_eq(k, 2);
    for (size_t i = 0; i < 2; i++) {
        struct part *p = &inner.p[1 + i];
        cr_expect_str_eq(p->fn, order[i]);
        if (strcmp(order[i], "a.txt") == 0) {
            cr_expect_str_eq(p->ct, "text/plain");
            cr_expect_eq(p->n, 5);
            cr_expect(memcmp(p->data, "hello", 5) == 0);
        } else {
            cr_expect_str_eq(p->ct, "application/x-big");
            cr_expect_eq(p->n, n);
            cr_expect(p->n == n && memcmp(p->data, big, n) == 0, "big.bin differs");
        }
    }
    json_decref(doc);
    parts_fini(&inner);
    /* the missing revision */
    cr_expect(strstr(outer.p[1].ct, "error=\"true\""), "%s", outer.p[1].ct);
    cr_expect(strstr(outer.p[1].data, "\"missing\""), "%s", outer.p[1].data);
    parts_fini(&outer);
    free(body);
    /* without attachments=true: one JSON part with stubs */
    snprintf(path, sizeof path, "/o/d?open_revs=[\"%s\"]", rev);
    cr_assert_eq(get_accept(path, "multipart/mixed", ct, sizeof ct, &body, &len), 200);
    parse_parts(ct, "multipart/mixed", body, len, &outer);
    cr_assert_eq(outer.n, 1);
    cr_expect(strncmp(outer.p[0].ct, "application/json", 16) == 0, "%s", outer.p[0].ct);
    cr_expect(strstr(outer.p[0].data, "\"stub\":true"), "%s", outer.p[0].data);
    parts_fini(&outer);
    free(body);
    /* JSON stays the default */
    cr_assert_eq(get_accept(path, "application/json", ct, sizeof ct, &body, &len), 200);
    cr_expect(strncmp(ct, "application/json", 16) == 0, "%s", ct);
    json_t *arr = json_loads(body, 0, NULL);
    cr_expect(json_is_array(arr), "%s", body);
    cr_expect(json_object_get(json_object_get(json_array_get(arr, 0), "ok"), "_attachments"));
    json_decref(arr);
    free(body);
    free(big);
    still_serving();
}
