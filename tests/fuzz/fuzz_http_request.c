/* fuzz_http_request.c — libFuzzer harness for the HTTP request parsing of node/httpreq.c.
 *
 * The input is "PATH\nQUERY\nHEADER-VALUE". The path is split into segments (which must then
 * be non-empty, slash-free, never "." or "..", and no longer in total than the path); the
 * query string is parsed into arguments, which are percent-encoded again and re-parsed: the
 * two argument lists must be equal. Typed readers (bool, u64), the media-type test and the
 * entity-tag reader run on the pieces and must not crash. Any broken property aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpreq.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Percent-encode every byte of s except unreserved ones. */
static size_t encode(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}

static void fuzz_path(const char *p, size_t n)
{
    struct br_http_path path;
    if (br_http_path_split(p, n, &path, NULL) != BR_OK)
        return;
    size_t total = 0;
    check(path.n <= BR_HTTP_SEGS_MAX);
    for (size_t i = 0; i < path.n; i++) {
        check(path.len[i] > 0 && strlen(path.seg[i]) == path.len[i]);
        check(!memchr(path.seg[i], '/', path.len[i]));
        check(strcmp(path.seg[i], ".") != 0 && strcmp(path.seg[i], "..") != 0);
        total += path.len[i] + 1;
    }
    check(total <= n);
    br_http_path_fini(&path);
}

static void fuzz_query(const char *q, size_t n)
{
    struct br_http_args a = {0}, b = {0};
    if (br_http_args_parse(&a, q, n, NULL) != BR_OK) {
        br_http_args_fini(&a);
        return;
    }
    check(a.n <= BR_HTTP_ARGS_MAX);
    /* re-encode and parse again: same arguments */
    size_t cap = 1;
    for (size_t i = 0; i < a.n; i++)
        cap += 3 * (strlen(a.name[i]) + a.value_len[i]) + 2;
    char *enc = malloc(cap);
    check(enc != NULL);
    size_t o = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (i)
            enc[o++] = '&';
        o += encode(a.name[i], strlen(a.name[i]), enc + o);
        enc[o++] = '=';
        o += encode(a.value[i], a.value_len[i], enc + o);
    }
    br_err e = br_http_args_parse(&b, enc, o, NULL);
    /* re-encoding can only push an argument past BR_HTTP_ARG_MAX (encoded text is longer) */
    if (e == BR_OK) {
        check(b.n == a.n);
        for (size_t i = 0; i < a.n; i++) {
            check(strcmp(a.name[i], b.name[i]) == 0);
            check(a.value_len[i] == b.value_len[i]);
            check(memcmp(a.value[i], b.value[i], a.value_len[i]) == 0);
        }
    }
    bool bv;
    uint64_t u;
    for (size_t i = 0; i < a.n; i++) {
        br_err e1 = br_http_arg_bool(&a, a.name[i], false, &bv, NULL);
        br_err e2 = br_http_arg_u64(&a, a.name[i], 0, &u, NULL);
        check(e1 == BR_OK || e1 == BR_EINVAL);
        check(e2 == BR_OK || e2 == BR_EINVAL);
    }
    free(enc);
    br_http_args_fini(&a);
    br_http_args_fini(&b);
}

static void fuzz_header(const char *h, size_t n)
{
    char *z = malloc(n + 1);
    check(z != NULL);
    memcpy(z, h, n);
    z[n] = '\0';
    (void)br_http_media_is(z, "application/json");
    char tag[128];
    if (br_http_etag_value(z, n, tag, sizeof tag) == BR_OK) {
        size_t t = strlen(tag);
        check(t > 0 && t < sizeof tag && !strchr(tag, '"'));
    }
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl1 = memchr(s, '\n', size);
    size_t plen = nl1 ? (size_t)(nl1 - s) : size;
    fuzz_path(s, plen);
    if (!nl1)
        return 0;
    const char *q = nl1 + 1;
    size_t rest = size - plen - 1;
    const char *nl2 = memchr(q, '\n', rest);
    size_t qlen = nl2 ? (size_t)(nl2 - q) : rest;
    fuzz_query(q, qlen);
    if (nl2)
        fuzz_header(nl2 + 1, rest - qlen - 1);
    return 0;
}
