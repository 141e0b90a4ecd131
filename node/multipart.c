/* multipart.c — the streaming multipart parser (see multipart.h).
 *
 * The delimiter is D = CRLF "--" boundary. A part's content ends at the first D; while the
 * bytes read could still be the start of D they are held back (not copied: they equal D's
 * prefix), and released as content when the match breaks. D holds CR only at its start (a
 * boundary has no CR), so a broken match restarts at the byte that broke it. The body's first
 * delimiter has no CRLF before it: the parser starts with those two bytes matched. */
#include "multipart.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "barrel/alloc.h"

enum st {
    ST_BODY,  /* content (or, for the first delimiter, nothing) until D */
    ST_TAIL1, /* after D: CR (another part) or '-' (the last) */
    ST_TAIL2, /* after CR: LF; after '-': '-' */
    ST_HEADERS,
    ST_CLOSE, /* after the closing "--": an optional CRLF */
    ST_CLOSE_LF,
    ST_DONE,
    ST_FAILED,
};

struct br_mp {
    char delim[4 + BR_MP_BOUNDARY_MAX + 1];
    size_t dlen;
    size_t match; /* bytes of delim matched */
    enum st st;
    bool in_part; /* begin was called; end not yet */
    bool last;    /* the tail was "--" */
    size_t parts, parts_max;
    struct br_mp_cb cb;
    char hbuf[BR_MP_HEADER_MAX + 1];
    size_t hlen;
};

static bool bchar(unsigned char c)
{
    /* RFC 2046 bcharsnospace, plus space (not last) */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("'()+_,-./:=? ", c) != NULL);
}

br_err br_mp_boundary(const char *ct, const char *type, char out[BR_MP_BOUNDARY_MAX + 1],
                      struct br_errbuf *eb)
{
    size_t tl = strlen(type);
    if (!ct || strncasecmp(ct, type, tl) != 0 || (ct[tl] != ';' && ct[tl] != ' ' && ct[tl]))
        return br_fail(eb, BR_EINVAL, "Content-Type must be %s", type);
    const char *p = ct + tl;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        if (!*p)
            return br_fail(eb, BR_EINVAL, "%s without a boundary", type);
        const char *name = p;
        while (*p && *p != '=' && *p != ';')
            p++;
        size_t nl = (size_t)(p - name);
        while (nl && (name[nl - 1] == ' ' || name[nl - 1] == '\t'))
            nl--;
        if (*p != '=')
            return br_fail(eb, BR_EINVAL, "bad Content-Type parameter");
        p++;
        char val[BR_MP_BOUNDARY_MAX + 2];
        size_t vl = 0;
        bool quoted = *p == '"';
        if (quoted) {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (vl > BR_MP_BOUNDARY_MAX)
                    return br_fail(eb, BR_EINVAL, "Content-Type parameter too long");
                val[vl++] = *p;
            }
            if (*p != '"')
                return br_fail(eb, BR_EINVAL, "unterminated quoted Content-Type parameter");
            p++;
        } else {
            for (; *p && *p != ';' && *p != ' ' && *p != '\t'; p++) {
                if (vl > BR_MP_BOUNDARY_MAX)
                    return br_fail(eb, BR_EINVAL, "Content-Type parameter too long");
                val[vl++] = *p;
            }
        }
        val[vl] = '\0';
        if (nl != 8 || strncasecmp(name, "boundary", 8) != 0)
            continue;
        if (vl == 0 || vl > BR_MP_BOUNDARY_MAX || val[vl - 1] == ' ')
            return br_fail(eb, BR_EINVAL, "multipart boundary must be 1..%d characters",
                           BR_MP_BOUNDARY_MAX);
        for (size_t i = 0; i < vl; i++) {
            if (!bchar((unsigned char)val[i]))
                return br_fail(eb, BR_EINVAL, "bad character in multipart boundary");
        }
        memcpy(out, val, vl + 1);
        return BR_OK;
    }
}

br_err br_mp_new(const char *boundary, size_t parts_max, const struct br_mp_cb *cb, br_mp **out)
{
    size_t bl = strlen(boundary);
    if (bl == 0 || bl > BR_MP_BOUNDARY_MAX || boundary[bl - 1] == ' ')
        return BR_EINVAL;
    for (size_t i = 0; i < bl; i++) {
        if (!bchar((unsigned char)boundary[i]))
            return BR_EINVAL;
    }
    br_mp *m = br_calloc(1, sizeof *m);
    if (!m)
        return BR_ENOMEM;
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, boundary, bl + 1);
    m->dlen = 4 + bl;
    m->match = 2; /* the first delimiter has no CRLF before it */
    m->st = ST_BODY;
    m->parts_max = parts_max ? parts_max : 1;
    m->cb = *cb;
    *out = m;
    return BR_OK;
}

void br_mp_free(br_mp *m)
{
    br_free(m);
}

size_t br_mp_parts(const br_mp *m)
{
    return m->parts;
}

static br_err fail(br_mp *m, struct br_errbuf *eb, br_err e, const char *why)
{
    m->st = ST_FAILED;
    if (why)
        br_errbuf_set(eb, "malformed multipart body: %s", why);
    return e;
}

/* Copy a header value (trimmed) into out; false if too long. */
static bool copy_value(const char *v, size_t n, char *out, size_t cap)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= cap)
        return false;
    memcpy(out, v, n);
    out[n] = '\0';
    return true;
}

/* filename="..." (or filename=token) of a Content-Disposition value into out; false if
 * malformed. *found tells whether it was there. */
static bool disposition_filename(const char *v, char *out, size_t cap, bool *found)
{
    *found = false;
    const char *p = v;
    while ((p = strchr(p, ';'))) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "filename=", 9) != 0)
            continue;
        p += 9;
        size_t n = 0;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (n + 1 >= cap)
                    return false;
                out[n++] = *p;
            }
            if (*p != '"')
                return false;
        } else {
            for (; *p && *p != ';' && *p != ' ' && *p != '\t'; p++) {
                if (n + 1 >= cap)
                    return false;
                out[n++] = *p;
            }
        }
        if (n == 0)
            return false;
        out[n] = '\0';
        *found = true;
        return true;
    }
    return true;
}

/* The header block in hbuf (lines, each ending CRLF, then the empty line) is complete. */
static br_err headers_done(br_mp *m, struct br_errbuf *eb)
{
    char ct[BR_MP_VALUE_MAX], fname[BR_MP_VALUE_MAX], tmp[BR_MP_VALUE_MAX];
    struct br_mp_part part = {.index = m->parts - 1};
    bool have_cd = false, have_cte = false;
    char *p = m->hbuf, *end = m->hbuf + m->hlen - 2; /* before the final empty line */
    while (p < end) {
        char *eol = p;
        while (eol + 1 < end + 2 && !(eol[0] == '\r' && eol[1] == '\n'))
            eol++;
        if (eol >= end)
            return fail(m, eb, BR_EPROTO, "bad header line");
        if (*p == ' ' || *p == '\t')
            return fail(m, eb, BR_EPROTO, "folded header line");
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return fail(m, eb, BR_EPROTO, "header line without a name");
        for (char *c = p; c < colon; c++) {
            unsigned char u = (unsigned char)*c;
            if (u <= ' ' || u >= 127)
                return fail(m, eb, BR_EPROTO, "bad header name");
        }
        for (char *c = colon + 1; c < eol; c++) {
            if (*c == '\0' || *c == '\r' || *c == '\n')
                return fail(m, eb, BR_EPROTO, "bad header value");
        }
        size_t nl = (size_t)(colon - p), vl = (size_t)(eol - colon - 1);
        const char *v = colon + 1;
        if (nl == 12 && strncasecmp(p, "content-type", 12) == 0) {
            if (part.content_type || !copy_value(v, vl, ct, sizeof ct))
                return fail(m, eb, BR_EPROTO, "bad or repeated Content-Type");
            part.content_type = ct;
        } else if (nl == 14 && strncasecmp(p, "content-length", 14) == 0) {
            if (part.has_length || !copy_value(v, vl, tmp, 24) || !tmp[0])
                return fail(m, eb, BR_EPROTO, "bad or repeated Content-Length");
            uint64_t n = 0;
            for (const char *c = tmp; *c; c++) {
                if (*c < '0' || *c > '9' || n > (UINT64_MAX - 9) / 10)
                    return fail(m, eb, BR_EPROTO, "bad Content-Length");
                n = n * 10 + (uint64_t)(*c - '0');
            }
            part.has_length = true;
            part.length = n;
        } else if (nl == 19 && strncasecmp(p, "content-disposition", 19) == 0) {
            bool found;
            if (have_cd || !copy_value(v, vl, tmp, sizeof tmp) ||
                !disposition_filename(tmp, fname, sizeof fname, &found))
                return fail(m, eb, BR_EPROTO, "bad or repeated Content-Disposition");
            have_cd = true;
            if (found)
                part.filename = fname;
        } else if (nl == 25 && strncasecmp(p, "content-transfer-encoding", 25) == 0) {
            if (have_cte || !copy_value(v, vl, tmp, sizeof tmp) ||
                (strcasecmp(tmp, "binary") != 0 && strcasecmp(tmp, "8bit") != 0 &&
                 strcasecmp(tmp, "7bit") != 0))
                return fail(m, eb, BR_EPROTO, "unsupported Content-Transfer-Encoding");
            have_cte = true;
        }
        p = eol + 2;
    }
    br_err e = m->cb.begin(m->cb.arg, &part, eb);
    if (e)
        return fail(m, eb, e, NULL);
    m->in_part = true;
    return BR_OK;
}

static br_err emit(br_mp *m, const void *p, size_t n, struct br_errbuf *eb)
{
    if (n == 0)
        return BR_OK;
    if (!m->in_part) /* before the first delimiter: a preamble */
        return fail(m, eb, BR_EPROTO, "bytes before the first boundary");
    br_err e = m->cb.data(m->cb.arg, p, n, eb);
    return e ? fail(m, eb, e, NULL) : BR_OK;
}

/* Content bytes from in[*i]: up to D, or the end of the input. Content is handed on in runs
 * as long as the input allows: a partial match that breaks inside the input stays part of the
 * run; only one begun in an earlier input was held back, and is released from D's text. */
static br_err body(br_mp *m, const uint8_t *in, size_t n, size_t *i, struct br_errbuf *eb)
{
    size_t run = *i;          /* start of content not yet emitted */
    size_t mstart = SIZE_MAX; /* where the current match began, if in this input */
    br_err e;
    while (*i < n) {
        if (m->match == 0) {
            const uint8_t *cr = memchr(in + *i, '\r', n - *i);
            if (!cr) {
                *i = n;
                break;
            }
            *i = (size_t)(cr - in);
        }
        uint8_t c = in[*i];
        if (c == (uint8_t)m->delim[m->match]) {
            if (m->match == 0)
                mstart = *i;
            m->match++;
            (*i)++;
            if (m->match < m->dlen)
                continue;
            /* a delimiter: the content ends where it began */
            m->match = 0;
            if (mstart != SIZE_MAX && mstart > run && (e = emit(m, in + run, mstart - run, eb)))
                return e;
            if (m->in_part) {
                m->in_part = false;
                if ((e = m->cb.end(m->cb.arg, eb)))
                    return fail(m, eb, e, NULL);
            }
            m->st = ST_TAIL1;
            return BR_OK;
        }
        if (m->match > 0) { /* the bytes matched were content after all */
            if (mstart == SIZE_MAX) {
                /* begun in an earlier input: release what was held, this input's part too */
                if ((e = emit(m, m->delim, m->match, eb)))
                    return e;
                run = *i;
            }
            m->match = 0;
            mstart = SIZE_MAX;
            continue; /* look at c again */
        }
        (*i)++;
    }
    /* the end of the input: hold back a match in progress */
    size_t stop = m->match > 0 && mstart != SIZE_MAX ? mstart : n;
    if (m->match > 0 && mstart == SIZE_MAX)
        stop = run; /* all of this input so far belongs to the held match */
    if (stop > run)
        return emit(m, in + run, stop - run, eb);
    return BR_OK;
}

br_err br_mp_feed(br_mp *m, const void *p, size_t n, struct br_errbuf *eb)
{
    const uint8_t *in = p;
    size_t i = 0;
    if (m->st == ST_FAILED)
        return br_fail(eb, BR_EPROTO, "malformed multipart body");
    while (i < n) {
        uint8_t c = in[i];
        br_err e;
        switch (m->st) {
        case ST_BODY:
            if ((e = body(m, in, n, &i, eb)))
                return e;
            break;
        case ST_TAIL1:
            i++;
            if (c == '\r') {
                m->last = false;
            } else if (c == '-') {
                m->last = true;
            } else {
                return fail(m, eb, BR_EPROTO, "boundary not followed by CRLF or \"--\"");
            }
            m->st = ST_TAIL2;
            break;
        case ST_TAIL2:
            i++;
            if (c != (m->last ? '-' : '\n'))
                return fail(m, eb, BR_EPROTO, "boundary not followed by CRLF or \"--\"");
            if (m->last) {
                if (m->parts == 0)
                    return fail(m, eb, BR_EPROTO, "no parts");
                m->st = ST_CLOSE;
                break;
            }
            if (m->parts >= m->parts_max)
                return fail(m, eb, BR_EPROTO, "too many parts");
            m->parts++;
            m->hlen = 0;
            m->st = ST_HEADERS;
            break;
        case ST_HEADERS:
            i++;
            if (m->hlen >= BR_MP_HEADER_MAX)
                return fail(m, eb, BR_EPROTO, "part headers too large");
            m->hbuf[m->hlen++] = (char)c;
            if (c == '\n' && (m->hlen < 2 || m->hbuf[m->hlen - 2] != '\r'))
                return fail(m, eb, BR_EPROTO, "bare LF in part headers");
            if ((m->hlen == 2 && memcmp(m->hbuf, "\r\n", 2) == 0) ||
                (m->hlen >= 4 && memcmp(m->hbuf + m->hlen - 4, "\r\n\r\n", 4) == 0)) {
                if ((e = headers_done(m, eb)))
                    return e;
                m->st = ST_BODY;
            }
            break;
        case ST_CLOSE:
            i++;
            if (c != '\r')
                return fail(m, eb, BR_EPROTO, "bytes after the closing boundary");
            m->st = ST_CLOSE_LF;
            break;
        case ST_CLOSE_LF:
            i++;
            if (c != '\n')
                return fail(m, eb, BR_EPROTO, "bytes after the closing boundary");
            m->st = ST_DONE;
            break;
        case ST_DONE:
            return fail(m, eb, BR_EPROTO, "bytes after the closing boundary");
        case ST_FAILED:
            return br_fail(eb, BR_EPROTO, "malformed multipart body");
        }
    }
    return BR_OK;
}

br_err br_mp_finish(br_mp *m, struct br_errbuf *eb)
{
    if (m->st == ST_DONE || m->st == ST_CLOSE)
        return BR_OK;
    if (m->st == ST_FAILED)
        return br_fail(eb, BR_EPROTO, "malformed multipart body");
    return fail(m, eb, BR_EPROTO, "the body ends before the closing boundary");
}
