/* httpc.c — the blocking HTTP/1.1 client and its response parser (see httpc.h). */
#include "httpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netdb.h>
#include <poll.h>
#include <sodium.h>

#define READ_CHUNK 65536

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode n bytes of s into dst (cap > n); false on a bad escape or a NUL. */
static bool decode_userinfo(const char *s, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return false;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return false;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        dst[o++] = c;
    }
    dst[o] = '\0';
    return true;
}

br_err br_httpc_url_parse(const char *text, struct br_httpc_url *out, struct br_errbuf *eb)
{
    struct br_httpc_url u;
    memset(&u, 0, sizeof u);
    if (strncmp(text, "http://", 7) != 0)
        return br_fail(eb, BR_EINVAL, "the URL must start with http:// (no TLS here)");
    const char *p = text + 7;
    size_t auth_len = strcspn(p, "@/");
    if (p[auth_len] == '@') {
        size_t ul = strcspn(p, ":@");
        size_t pl = ul < auth_len ? auth_len - ul - 1 : 0;
        if (ul >= sizeof u.user || pl >= sizeof u.password)
            return br_fail(eb, BR_EINVAL, "the URL's credentials are too long");
        if (!decode_userinfo(p, ul, u.user) ||
            (ul < auth_len && !decode_userinfo(p + ul + 1, pl, u.password)))
            return br_fail(eb, BR_EINVAL, "bad %%-escape in the URL's credentials");
        u.has_user = true;
        p += auth_len + 1;
    }
    size_t hl;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close)
            return br_fail(eb, BR_EINVAL, "unclosed [ in the URL's host");
        hl = (size_t)(close - p - 1);
        if (hl == 0 || hl >= sizeof u.host)
            return br_fail(eb, BR_EINVAL, "bad host in the URL");
        memcpy(u.host, p + 1, hl);
        p = close + 1;
    } else {
        hl = strcspn(p, ":/");
        if (hl == 0 || hl >= sizeof u.host)
            return br_fail(eb, BR_EINVAL, "the URL has no host");
        memcpy(u.host, p, hl);
        p += hl;
    }
    snprintf(u.port, sizeof u.port, "80");
    if (*p == ':') {
        p++;
        size_t n = strspn(p, "0123456789");
        long port = n && n <= 5 ? strtol(p, NULL, 10) : 0;
        if (port < 1 || port > 65535)
            return br_fail(eb, BR_EINVAL, "bad port in the URL");
        snprintf(u.port, sizeof u.port, "%ld", port);
        p += n;
    }
    if (*p && strcmp(p, "/") != 0)
        return br_fail(eb, BR_EINVAL, "the URL must name the node only (no path)");
    *out = u;
    return BR_OK;
}

void br_httpc_resp_fini(struct br_httpc_resp *r)
{
    br_buf_fini(&r->body);
    r->status = 0;
    r->etag[0] = '\0';
}

/* The value of header `name` within [h, end) (lines "Name: value\r\n"), or NULL. */
static const char *find_header(const char *h, const char *end, const char *name, size_t *vlen)
{
    size_t n = strlen(name);
    while (h < end) {
        const char *eol = memchr(h, '\n', (size_t)(end - h));
        if (!eol)
            eol = end;
        if ((size_t)(eol - h) > n && strncasecmp(h, name, n) == 0 && h[n] == ':') {
            const char *v = h + n + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        h = eol + 1;
    }
    return NULL;
}

static br_err dechunk(const char *p, const char *end, br_buf *out, struct br_errbuf *eb)
{
    for (;;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return br_fail(eb, BR_EPROTO, "truncated chunk size line");
        size_t digits = 0;
        unsigned long long n = 0;
        while (p + digits < eol && strchr("0123456789abcdefABCDEF", p[digits]) && p[digits]) {
            if (n >> 60)
                return br_fail(eb, BR_EPROTO, "chunk size too large");
            char c = p[digits];
            n = n * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
            digits++;
        }
        char after = p[digits];
        if (!digits || (after != '\r' && after != ';' && after != '\n'))
            return br_fail(eb, BR_EPROTO, "bad chunk size");
        p = eol + 1;
        if (n == 0)
            return BR_OK; /* trailers, if any, are ignored */
        if ((unsigned long long)(end - p) < n + 2)
            return br_fail(eb, BR_EPROTO, "truncated chunk");
        br_err e = br_buf_append(out, p, (size_t)n);
        if (e)
            return e == BR_ETOOBIG ? br_fail(eb, e, "response body too large") : e;
        p += n;
        if (p[0] != '\r' || p[1] != '\n')
            return br_fail(eb, BR_EPROTO, "chunk not followed by CRLF");
        p += 2;
    }
}

br_err br_httpc_parse(const void *data, size_t len, size_t max_body, struct br_httpc_resp *out,
                      struct br_errbuf *eb)
{
    const char *s = data, *end = s + len;
    size_t scan = len < BR_HTTPC_MAX_HEADERS ? len : BR_HTTPC_MAX_HEADERS;
    const char *eoh = NULL;
    for (size_t i = 0; i + 3 < scan; i++) {
        if (s[i] == '\r' && s[i + 1] == '\n' && s[i + 2] == '\r' && s[i + 3] == '\n') {
            eoh = s + i;
            break;
        }
    }
    if (!eoh)
        return br_fail(eb, BR_EPROTO,
                       len >= BR_HTTPC_MAX_HEADERS ? "response headers too large"
                                                   : "truncated response headers");
    if (memchr(s, '\0', (size_t)(eoh - s)))
        return br_fail(eb, BR_EPROTO, "NUL byte in response headers");
    /* "HTTP/1.x NNN[ reason]" */
    if ((size_t)(eoh - s) < 12 || strncmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') ||
        s[8] != ' ' || s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' ||
        s[11] > '9' || (s[12] != ' ' && s[12] != '\r'))
        return br_fail(eb, BR_EPROTO, "bad status line");
    int status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    const char *h = memchr(s, '\n', (size_t)(eoh - s + 2));
    h = h ? h + 1 : eoh + 2;
    const char *hend = eoh + 2, *body = eoh + 4;
    struct br_httpc_resp r;
    memset(&r, 0, sizeof r);
    r.status = status;
    br_buf_init(&r.body, max_body);
    size_t vl;
    const char *v = find_header(h, hend, "etag", &vl);
    if (v)
        snprintf(r.etag, sizeof r.etag, "%.*s", (int)(vl < sizeof r.etag ? vl : 0), v);
    br_err e = BR_OK;
    const char *te = find_header(h, hend, "transfer-encoding", &vl);
    const char *cl = find_header(h, hend, "content-length", &vl);
    if (te && vl == 7 && strncasecmp(te, "chunked", 7) == 0) {
        e = dechunk(body, end, &r.body, eb);
    } else if (te) {
        e = br_fail(eb, BR_EPROTO, "unsupported transfer-encoding");
    } else if (cl) {
        size_t want = 0, k;
        for (k = 0; k < vl && cl[k] >= '0' && cl[k] <= '9' && want <= BR_HTTPC_MAX_BODY; k++)
            want = want * 10 + (size_t)(cl[k] - '0');
        if (k == 0 || k != vl)
            e = br_fail(eb, BR_EPROTO, "bad content-length");
        else if (want > max_body)
            e = br_fail(eb, BR_ETOOBIG, "response body too large");
        else if ((size_t)(end - body) < want)
            e = br_fail(eb, BR_EPROTO, "truncated response body (%zu of %zu bytes)",
                        (size_t)(end - body), want);
        else
            e = br_buf_append(&r.body, body, want);
    } else {
        e = br_buf_append(&r.body, body, (size_t)(end - body)); /* until the connection closed */
        if (e == BR_ETOOBIG)
            br_errbuf_set(eb, "response body too large");
    }
    if (e) {
        br_buf_fini(&r.body);
        return e;
    }
    *out = r;
    return BR_OK;
}

br_err br_httpc_escape(br_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    br_err e = BR_OK;
    for (size_t i = 0; !e && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            e = br_buf_append_byte(b, c);
        } else {
            char t[3] = {'%', hex[c >> 4], hex[c & 15]};
            e = br_buf_append(b, t, 3);
        }
    }
    return e;
}

static int connect_to(const struct br_httpc_url *u, struct br_errbuf *eb)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(u->host, u->port, &hints, &ai);
    if (rc != 0) {
        br_errbuf_set(eb, "cannot resolve %s: %s", u->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        br_errbuf_set(eb, "cannot reach the node at %s:%s: %s", u->host, u->port,
                      strerror(err ? err : errno));
    return fd;
}

static br_err send_all(int fd, const void *p, size_t n, struct br_errbuf *eb)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return br_fail(eb, BR_EIO, "the connection to the node broke while sending: %s",
                           strerror(errno));
        c += k;
        n -= (size_t)k;
    }
    return BR_OK;
}

br_err br_httpc_request(const struct br_httpc_url *u, const char *method, const char *target,
                        const char *ctype, const void *body, size_t body_len, unsigned timeout_s,
                        struct br_httpc_resp *out, struct br_errbuf *eb)
{
    int fd = connect_to(u, eb);
    if (fd < 0)
        return BR_EIO;
    br_buf req, in;
    br_buf_init(&req, 0);
    br_buf_init(&in, BR_HTTPC_MAX_HEADERS + BR_HTTPC_MAX_BODY + (BR_HTTPC_MAX_BODY >> 4));
    char line[1024];
    snprintf(line, sizeof line, "%s ", method);
    br_err e = br_buf_append_str(&req, line);
    if (!e)
        e = br_buf_append_str(&req, target);
    snprintf(line, sizeof line,
             " HTTP/1.1\r\nHost: %s%s%s:%s\r\nConnection: close\r\nAccept: application/json\r\n",
             strchr(u->host, ':') ? "[" : "", u->host, strchr(u->host, ':') ? "]" : "", u->port);
    if (!e)
        e = br_buf_append_str(&req, line);
    if (!e && u->has_user) {
        char cred[sizeof u->user + sizeof u->password + 1];
        int cl = snprintf(cred, sizeof cred, "%s:%s", u->user, u->password);
        char b64[sodium_base64_ENCODED_LEN(sizeof cred, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof b64, (const unsigned char *)cred, (size_t)cl,
                          sodium_base64_VARIANT_ORIGINAL);
        sodium_memzero(cred, sizeof cred);
        e = br_buf_append_str(&req, "Authorization: Basic ");
        if (!e)
            e = br_buf_append_str(&req, b64);
        if (!e)
            e = br_buf_append_str(&req, "\r\n");
        sodium_memzero(b64, sizeof b64);
    }
    if (!e && body) {
        snprintf(line, sizeof line, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                 ctype ? ctype : "application/json", body_len);
        e = br_buf_append_str(&req, line);
    }
    if (!e)
        e = br_buf_append_str(&req, "\r\n");
    if (!e)
        e = send_all(fd, req.data, req.len, eb);
    if (!e && body)
        e = send_all(fd, body, body_len, eb);
    while (!e) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int pn = poll(&pf, 1, (int)(timeout_s ? timeout_s : 60) * 1000);
        if (pn < 0 && errno == EINTR)
            continue;
        if (pn == 0) {
            e = br_fail(eb, BR_ETIMEDOUT, "the node did not answer within %u s", timeout_s);
            break;
        }
        if ((e = br_buf_reserve(&in, READ_CHUNK)))
            break;
        ssize_t k = recv(fd, in.data + in.len, READ_CHUNK, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            e = br_fail(eb, BR_EIO, "the connection to the node broke: %s", strerror(errno));
            break;
        }
        if (k == 0)
            break;
        in.len += (size_t)k;
    }
    close(fd);
    if (!e && in.len == 0)
        e = br_fail(eb, BR_EIO, "the node closed the connection without answering");
    if (!e)
        e = br_httpc_parse(in.data, in.len, BR_HTTPC_MAX_BODY, out, eb);
    br_buf_fini(&req);
    br_buf_fini(&in);
    return e;
}
