/* multipart_test.c — the streaming multipart parser (node/multipart.c): CouchDB's
 * multipart/related shape parsed whole and byte by byte with the same result, delimiters
 * split across pieces, near-delimiters kept as content, and every malformation rejected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "multipart.h"

struct got {
    size_t parts, ends;
    char ct[4][64], fn[4][64];
    bool has_len[4];
    uint64_t len[4];
    char data[4][256];
    size_t n[4];
};

static br_err begin(void *arg, const struct br_mp_part *p, struct br_errbuf *eb)
{
    struct got *g = arg;
    (void)eb;
    cr_assert_lt(p->index, 4);
    cr_assert_eq(p->index, g->parts);
    snprintf(g->ct[p->index], 64, "%s", p->content_type ? p->content_type : "-");
    snprintf(g->fn[p->index], 64, "%s", p->filename ? p->filename : "-");
    g->has_len[p->index] = p->has_length;
    g->len[p->index] = p->length;
    g->parts++;
    return BR_OK;
}

static br_err data(void *arg, const void *p, size_t n, struct br_errbuf *eb)
{
    struct got *g = arg;
    (void)eb;
    size_t i = g->parts - 1;
    cr_assert_leq(g->n[i] + n, sizeof g->data[i] - 1);
    memcpy(g->data[i] + g->n[i], p, n);
    g->n[i] += n;
    return BR_OK;
}

static br_err end(void *arg, struct br_errbuf *eb)
{
    struct got *g = arg;
    (void)eb;
    g->ends++;
    return BR_OK;
}

/* Parse body with boundary in pieces of `step` bytes (0: whole). */
static br_err parse(const char *boundary, const char *body, size_t step, size_t parts_max,
                    struct got *g, struct br_errbuf *eb)
{
    memset(g, 0, sizeof *g);
    struct br_mp_cb cb = {begin, data, end, g};
    br_mp *m = NULL;
    cr_assert_eq(br_mp_new(boundary, parts_max, &cb, &m), BR_OK);
    size_t n = strlen(body), off = 0;
    br_err e = BR_OK;
    while (!e && off < n) {
        size_t k = step && step < n - off ? step : n - off;
        e = br_mp_feed(m, body + off, k, eb);
        off += k;
    }
    if (!e)
        e = br_mp_finish(m, eb);
    br_mp_free(m);
    return e;
}

#define COUCH                                                                                      \
    "--abc\r\nContent-Type: application/json\r\n\r\n"                                              \
    "{\"_id\":\"d\",\"_attachments\":{\"a.txt\":{\"follows\":true,\"length\":5}}}\r\n"             \
    "--abc\r\nContent-Disposition: attachment; filename=\"a.txt\"\r\n"                             \
    "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello\r\n--abc--"

Test(multipart, couch_shape_parses_the_same_whole_and_byte_by_byte)
{
    for (size_t step = 0; step <= 7; step++) {
        struct got g;
        struct br_errbuf eb = {{0}};
        cr_assert_eq(parse("abc", COUCH, step, 8, &g, &eb), BR_OK, "step %zu: %s", step, eb.msg);
        cr_assert_eq(g.parts, 2);
        cr_assert_eq(g.ends, 2);
        cr_expect_str_eq(g.ct[0], "application/json");
        cr_expect_str_eq(g.fn[0], "-");
        cr_expect(strncmp(g.data[0], "{\"_id\":\"d\"", 10) == 0);
        cr_expect_str_eq(g.ct[1], "text/plain");
        cr_expect_str_eq(g.fn[1], "a.txt");
        cr_expect(g.has_len[1] && g.len[1] == 5);
        cr_expect_eq(g.n[1], 5);
        cr_expect(memcmp(g.data[1], "hello", 5) == 0);
    }
}

Test(multipart, near_delimiters_and_crs_are_content)
{
    const char *body = "--xyz\r\n\r\n\r\r\n\r\n--xy\r\n-\r\n--xyzz\r\n--xyz\r\n\r\n\r\n--xyz--\r\n";
    for (size_t step = 0; step <= 3; step++) {
        struct got g;
        struct br_errbuf eb = {{0}};
        /* "--xyzz" is the delimiter followed by 'z': malformed, not content */
        cr_assert_eq(parse("xyz", body, step, 8, &g, &eb), BR_EPROTO);
    }
    body = "--xyz\r\n\r\n\r\r\n\r\n--xy\r\n-\r\n--xyz\r\n\r\n\r\n--xyz--\r\n";
    for (size_t step = 0; step <= 3; step++) {
        struct got g;
        struct br_errbuf eb = {{0}};
        cr_assert_eq(parse("xyz", body, step, 8, &g, &eb), BR_OK, "%s", eb.msg);
        cr_assert_eq(g.parts, 2);
        cr_expect_eq(g.n[0], strlen("\r\r\n\r\n--xy\r\n-"));
        cr_expect(memcmp(g.data[0], "\r\r\n\r\n--xy\r\n-", g.n[0]) == 0);
        cr_expect_eq(g.n[1], 0); /* an empty header block, then no content */
        cr_expect_str_eq(g.ct[1], "-");
    }
}

Test(multipart, malformed_bodies_are_rejected)
{
    static const char *bad[] = {
        "preamble\r\n--abc\r\n\r\nx\r\n--abc--",           /* a preamble */
        "--abc\r\nX: y\r\n z\r\n\r\nx\r\n--abc--",         /* a folded header */
        "--abc\r\nX: y\n\r\nx\r\n--abc--",                 /* a bare LF */
        "--abc\r\nnocolon\r\n\r\nx\r\n--abc--",            /* a line without a name */
        "--abc\r\nContent-Length: 1x\r\n\r\nx\r\n--abc--", /* a bad length */
        "--abc\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx\r\n--abc--",
        "--abc\r\nContent-Transfer-Encoding: base64\r\n\r\nx\r\n--abc--",
        "--abc\r\n\r\nx\r\n--abc",               /* no closing boundary */
        "--abc\r\n\r\nx\r\n--abc--\r\nepilogue", /* bytes after it */
        "--abc\r\n\r\nx",                        /* truncated content */
        "--abc--",                               /* no parts */
        "--abc \r\n\r\nx\r\n--abc--",            /* transport padding */
        "",                                      /* nothing */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (size_t step = 0; step <= 1; step++) {
            struct got g;
            struct br_errbuf eb = {{0}};
            cr_expect_eq(parse("abc", bad[i], step, 8, &g, &eb), BR_EPROTO, "case %zu step %zu", i,
                         step);
            cr_expect(strstr(eb.msg, "multipart"), "case %zu: %s", i, eb.msg);
        }
    }
}

Test(multipart, limits_on_parts_and_header_size)
{
    struct got g;
    struct br_errbuf eb = {{0}};
    const char *three = "--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b\r\n\r\n3\r\n--b--";
    cr_expect_eq(parse("b", three, 0, 3, &g, &eb), BR_OK, "%s", eb.msg);
    cr_expect_eq(parse("b", three, 0, 2, &g, &eb), BR_EPROTO);
    cr_expect(strstr(eb.msg, "too many parts"), "%s", eb.msg);
    size_t n = BR_MP_HEADER_MAX + 64;
    char *big = malloc(n + 64);
    strcpy(big, "--b\r\nX-Pad: ");
    size_t l = strlen(big);
    memset(big + l, 'a', n - l);
    strcpy(big + n, "\r\n\r\nx\r\n--b--");
    memset(&g, 0, sizeof g);
    cr_expect_eq(parse("b", big, 0, 3, &g, &eb), BR_EPROTO);
    cr_expect(strstr(eb.msg, "headers too large"), "%s", eb.msg);
    free(big);
}

Test(multipart, boundary_from_content_type)
{
    char b[BR_MP_BOUNDARY_MAX + 1];
    struct br_errbuf eb = {{0}};
    cr_assert_eq(
        br_mp_boundary("multipart/related; boundary=\"e3b0c442\"", "multipart/related", b, &eb),
        BR_OK, "%s", eb.msg);
    cr_expect_str_eq(b, "e3b0c442");
    cr_assert_eq(br_mp_boundary("Multipart/Related;type=\"application/json\"; boundary=x-y_z",
                                "multipart/related", b, &eb),
                 BR_OK, "%s", eb.msg);
    cr_expect_str_eq(b, "x-y_z");
    cr_expect_eq(br_mp_boundary("application/json", "multipart/related", b, &eb), BR_EINVAL);
    cr_expect_eq(br_mp_boundary("multipart/related", "multipart/related", b, &eb), BR_EINVAL);
    cr_expect_eq(br_mp_boundary("multipart/related; boundary=", "multipart/related", b, &eb),
                 BR_EINVAL);
    cr_expect_eq(br_mp_boundary("multipart/related; boundary=a{b", "multipart/related", b, &eb),
                 BR_EINVAL);
    char longb[128] = "multipart/related; boundary=";
    memset(longb + strlen(longb), 'a', 71);
    cr_expect_eq(br_mp_boundary(longb, "multipart/related", b, &eb), BR_EINVAL);
    cr_expect_eq(
        br_mp_boundary("multipart/related; boundary=\"unterminated", "multipart/related", b, &eb),
        BR_EINVAL);
}
