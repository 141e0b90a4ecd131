/* httpreq.c — request path, query argument and header value parsing (see httpreq.h). */
#include "httpreq.h"

#include <string.h>
#include <strings.h>

#include "barrel/alloc.h"

const char *br_http_method_name(enum br_http_method m)
{
    switch (m) {
    case BR_HTTP_GET:
        return "GET";
    case BR_HTTP_HEAD:
        return "HEAD";
    case BR_HTTP_POST:
        return "POST";
    case BR_HTTP_PUT:
        return "PUT";
    case BR_HTTP_DELETE:
        return "DELETE";
    case BR_HTTP_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

br_err br_http_path_split(const char *p, size_t len, struct br_http_path *out, struct br_errbuf *eb)
{
    memset(out, 0, sizeof *out);
    if (len == 0 || p[0] != '/')
        return br_fail(eb, BR_EINVAL, "path must begin with /");
    if (len > BR_HTTP_PATH_MAX)
        return br_fail(eb, BR_EINVAL, "path longer than %d bytes", BR_HTTP_PATH_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f)
            return br_fail(eb, BR_EINVAL, "control character in path");
    }
    size_t i = 0;
    while (i < len) {
        while (i < len && p[i] == '/')
            i++;
        size_t start = i;
        while (i < len && p[i] != '/')
            i++;
        size_t n = i - start;
        if (n == 0)
            break;
        if ((n == 1 && p[start] == '.') || (n == 2 && p[start] == '.' && p[start + 1] == '.')) {
            br_http_path_fini(out);
            return br_fail(eb, BR_EINVAL, "'.' and '..' are not allowed in paths");
        }
        if (out->n == BR_HTTP_SEGS_MAX) {
            br_http_path_fini(out);
            return br_fail(eb, BR_EINVAL, "path has more than %d segments", BR_HTTP_SEGS_MAX);
        }
        char *s = br_strndup(p + start, n);
        if (!s) {
            br_http_path_fini(out);
            return BR_ENOMEM;
        }
        out->seg[out->n] = s;
        out->len[out->n] = n;
        out->n++;
    }
    return BR_OK;
}

void br_http_path_fini(struct br_http_path *p)
{
    for (size_t i = 0; i < p->n; i++)
        br_free(p->seg[i]);
    memset(p, 0, sizeof *p);
}

br_err br_http_args_add(struct br_http_args *a, const char *frag, size_t len, struct br_errbuf *eb)
{
    if (a->n == BR_HTTP_ARGS_MAX)
        return br_fail(eb, BR_EINVAL, "more than %d query arguments", BR_HTTP_ARGS_MAX);
    if (len > BR_HTTP_ARG_MAX)
        return br_fail(eb, BR_EINVAL, "query argument longer than %d bytes", BR_HTTP_ARG_MAX);
    const char *eq = memchr(frag, '=', len);
    size_t nlen = eq ? (size_t)(eq - frag) : len;
    if (nlen == 0)
        return br_fail(eb, BR_EINVAL, "query argument without a name");
    if (memchr(frag, '\0', len))
        return br_fail(eb, BR_EINVAL, "NUL in query argument");
    char *name = br_strndup(frag, nlen);
    size_t vlen = eq ? len - nlen - 1 : 0;
    char *value = br_strndup(eq ? eq + 1 : "", vlen);
    if (!name || !value) {
        br_free(name);
        br_free(value);
        return BR_ENOMEM;
    }
    a->name[a->n] = name;
    a->value[a->n] = value;
    a->value_len[a->n] = vlen;
    a->n++;
    return BR_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode one raw fragment into dst (at least len bytes); returns the decoded length or -1. */
static long decode_frag(const char *s, size_t len, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            if (c == '\0')
                return -1;
            i += 2;
        }
        dst[o++] = c;
    }
    return (long)o;
}

br_err br_http_args_parse(struct br_http_args *a, const char *qs, size_t len, struct br_errbuf *eb)
{
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && qs[i] != '&')
            i++;
        size_t n = i - start;
        i++; /* skip '&' */
        if (n == 0)
            continue;
        if (n > BR_HTTP_ARG_MAX)
            return br_fail(eb, BR_EINVAL, "query argument longer than %d bytes", BR_HTTP_ARG_MAX);
        char *tmp = br_malloc(n + 1);
        if (!tmp)
            return BR_ENOMEM;
        long d = decode_frag(qs + start, n, tmp);
        br_err e = d < 0 ? br_fail(eb, BR_EINVAL, "bad percent-escape in query string")
                         : br_http_args_add(a, tmp, (size_t)d, eb);
        br_free(tmp);
        if (e)
            return e;
    }
    return BR_OK;
}

void br_http_args_fini(struct br_http_args *a)
{
    for (size_t i = 0; i < a->n; i++) {
        br_free(a->name[i]);
        br_free(a->value[i]);
    }
    memset(a, 0, sizeof *a);
}

const char *br_http_arg(const struct br_http_args *a, const char *name)
{
    for (size_t i = a->n; i-- > 0;) {
        if (strcmp(a->name[i], name) == 0)
            return a->value[i];
    }
    return NULL;
}

br_err br_http_arg_bool(const struct br_http_args *a, const char *name, bool dflt, bool *out,
                        struct br_errbuf *eb)
{
    const char *v = br_http_arg(a, name);
    if (!v) {
        *out = dflt;
        return BR_OK;
    }
    if (strcmp(v, "true") == 0) {
        *out = true;
        return BR_OK;
    }
    if (strcmp(v, "false") == 0) {
        *out = false;
        return BR_OK;
    }
    return br_fail(eb, BR_EINVAL, "Invalid boolean parameter: \"%s\"", name);
}

br_err br_http_arg_u64(const struct br_http_args *a, const char *name, uint64_t dflt, uint64_t *out,
                       struct br_errbuf *eb)
{
    const char *v = br_http_arg(a, name);
    if (!v) {
        *out = dflt;
        return BR_OK;
    }
    uint64_t n = 0;
    if (!*v || strlen(v) > 19)
        return br_fail(eb, BR_EINVAL, "Invalid value for %s: not a non-negative integer", name);
    for (const char *c = v; *c; c++) {
        if (*c < '0' || *c > '9')
            return br_fail(eb, BR_EINVAL, "Invalid value for %s: not a non-negative integer", name);
        n = n * 10 + (uint64_t)(*c - '0');
    }
    *out = n;
    return BR_OK;
}

bool br_http_media_is(const char *ct, const char *type)
{
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strlen(type);
    if (strncasecmp(ct, type, n) != 0)
        return false;
    char c = ct[n];
    return c == '\0' || c == ';' || c == ' ' || c == '\t';
}

br_err br_http_etag_value(const char *v, size_t len, char *out, size_t cap)
{
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len >= 2 && v[0] == 'W' && v[1] == '/') {
        v += 2;
        len -= 2;
    }
    bool q0 = len > 0 && v[0] == '"', q1 = len > 1 && v[len - 1] == '"';
    if (q0 != q1 || (q0 && len < 2))
        return BR_EINVAL;
    if (q0) {
        v++;
        len -= 2;
    }
    if (len == 0 || len >= cap || memchr(v, '"', len) || memchr(v, '\0', len))
        return BR_EINVAL;
    memcpy(out, v, len);
    out[len] = '\0';
    return BR_OK;
}
