/* json.c — JSON at the edges: strict parsing with jansson (duplicate keys, NUL and trailing
 * garbage rejected, errors with line and column), conversion from any JSON value to barrel's
 * canonical CBOR (object keys sorted by encoded bytes, integers as CBOR integers, reals as the
 * shortest exact float) and back through the bounded CBOR reader, the CouchDB split of a JSON
 * document into its metadata (_id, _rev, _deleted, _revisions, _attachments) and its body, and
 * the same split done in one pass from the text, without a tree (br_json_doc_parse_text).
 * jansson errors are translated here (BR_EINVAL for bad JSON, BR_ENOMEM for failed
 * allocations) and never travel upward. */
#include "barrel/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <float.h>
#include <jansson.h>
#include <locale.h>
#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"

#include "json_int.h"

/* ---- parsing ----
 *
 * A strict recursive-descent parser (RFC 8259) that builds jansson values directly. It accepts
 * exactly what json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY) accepts: any value at the
 * top, no duplicate object keys, no \u0000, well-formed UTF-8 and escapes (surrogates paired),
 * integers within json_int_t, finite reals, nesting up to JSON_PARSER_MAX_DEPTH, nothing but
 * whitespace after the value. It replaces jansson's own reader because that one reads a byte at
 * a time through a stream layer and was most of the cost of a document write on the JSON path
 * (bench/store_bench.c: about 28,000 of the 38,000 instructions spent per document between
 * the JSON text and its split). */

#define JP_SCRATCH 256 /* strings and numbers that fit are unescaped on the stack */

struct jparser {
    const char *p, *end;
    const char *line_start;
    int line;
    br_err err;
    struct br_errbuf *eb;
    char small[JP_SCRATCH]; /* scratch for unescaped strings and number text */
    char *heap;             /* scratch for longer ones */
    size_t heap_cap;
};

static void jp_fail(struct jparser *jp, const char *what)
{
    if (jp->err)
        return;
    jp->err = BR_EINVAL;
    br_errbuf_set(jp->eb, "invalid JSON at line %d column %d: %s", jp->line,
                  (int)(jp->p - jp->line_start) + 1, what);
}

static void jp_oom(struct jparser *jp)
{
    if (jp->err)
        return;
    jp->err = BR_ENOMEM;
    br_errbuf_set(jp->eb, "out of memory parsing JSON");
}

static void jp_ws_slow(struct jparser *jp)
{
    while (jp->p < jp->end) {
        char c = *jp->p;
        if (c == ' ' || c == '\t' || c == '\r') {
            jp->p++;
        } else if (c == '\n') {
            jp->p++;
            jp->line++;
            jp->line_start = jp->p;
        } else {
            break;
        }
    }
}

/* Skip whitespace; most tokens have none before them. */
static inline void jp_ws(struct jparser *jp)
{
    if (jp->p < jp->end && (unsigned char)*jp->p > ' ')
        return;
    jp_ws_slow(jp);
}

/* How many bytes from p on are plain string content (ASCII 0x20..0x7f other than '"' and
 * '\\'), looked at eight at a time; the byte loops take over from the first other byte. In each
 * test below a byte's flag can be wrong only above a byte that is truly flagged, so the lowest
 * flag of their union marks the first byte that is not plain. */
static inline size_t plain_run(const char *p, const char *end)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    const char *s = p;
    while (end - s >= 8) {
        uint64_t x;
        memcpy(&x, s, sizeof x);
        uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
        uint64_t m = (x | ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
        if (m)
            return (size_t)(s - p) + (size_t)__builtin_ctzll(m) / 8;
        s += 8;
    }
    return (size_t)(s - p);
#else
    (void)p;
    (void)end;
    return 0;
#endif
}

/* Length of the well-formed UTF-8 sequence at p (first byte >= 0x80), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* Make room for n bytes of unescaped string in the heap scratch. */
static char *jp_room(struct jparser *jp, size_t n)
{
    if (n <= jp->heap_cap)
        return jp->heap;
    size_t cap = jp->heap_cap ? jp->heap_cap : 1024;
    while (cap < n)
        cap *= 2;
    char *h = br_realloc(jp->heap, cap);
    if (!h) {
        jp_oom(jp);
        return NULL;
    }
    jp->heap = h;
    jp->heap_cap = cap;
    return h;
}

/* A string token (jp->p at the opening quote). *s, *n receive its bytes: a span of the input
 * when it has no escapes, else the unescaped copy in the scratch (valid until the next token).
 * The result never holds NUL and is valid UTF-8. */
static bool jp_string(struct jparser *jp, const char **s, size_t *n)
{
    const char *start = ++jp->p; /* past the quote */
    /* Fast path: no escapes. */
    while (jp->p < jp->end) {
        jp->p += plain_run(jp->p, jp->end);
        if (jp->p >= jp->end)
            break;
        unsigned char c = (unsigned char)*jp->p;
        if (c == '"') {
            *s = start;
            *n = (size_t)(jp->p - start);
            jp->p++;
            return true;
        }
        if (c == '\\')
            break;
        if (c < 0x20) {
            jp_fail(jp, "control character in string");
            return false;
        }
        if (c < 0x80) {
            jp->p++;
            continue;
        }
        size_t k = utf8_seq((const unsigned char *)jp->p, (const unsigned char *)jp->end);
        if (!k) {
            jp_fail(jp, "invalid UTF-8 in string");
            return false;
        }
        jp->p += k;
    }
    if (jp->p >= jp->end) {
        jp_fail(jp, "premature end of input in string");
        return false;
    }
    /* Slow path: copy what we have, then unescape. The output is never longer than the
     * input (an escape is at least as long as what it stands for). */
    const char *q = jp->p;
    while (q < jp->end && *q != '"') /* an upper bound of the string's length */
        q += *q == '\\' && q + 1 < jp->end ? 2 : 1;
    size_t bound = (size_t)(q - start);
    char *out = jp->small;
    if (bound > JP_SCRATCH) {
        out = jp_room(jp, bound);
        if (!out)
            return false;
    }
    size_t o = (size_t)(jp->p - start);
    memcpy(out, start, o);
    while (jp->p < jp->end) {
        unsigned char c = (unsigned char)*jp->p;
        if (c == '"') {
            jp->p++;
            *s = out;
            *n = o;
            return true;
        }
        if (c < 0x20) {
            jp_fail(jp, "control character in string");
            return false;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq((const unsigned char *)jp->p, (const unsigned char *)jp->end);
            if (!k) {
                jp_fail(jp, "invalid UTF-8 in string");
                return false;
            }
            memcpy(out + o, jp->p, k);
            o += k;
            jp->p += k;
            continue;
        }
        if (c != '\\') {
            out[o++] = (char)c;
            jp->p++;
            continue;
        }
        if (jp->end - jp->p < 2) {
            jp_fail(jp, "premature end of input in string");
            return false;
        }
        char e = jp->p[1];
        jp->p += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[o++] = e;
            continue;
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'u':
            break;
        default:
            jp->p -= 2;
            jp_fail(jp, "invalid escape in string");
            return false;
        }
        int cp = jp->end - jp->p >= 4 ? hex4(jp->p) : -1;
        if (cp < 0) {
            jp_fail(jp, "invalid \\u escape");
            return false;
        }
        jp->p += 4;
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            jp_fail(jp, "invalid Unicode escape (lone low surrogate)");
            return false;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
            int lo =
                jp->end - jp->p >= 6 && jp->p[0] == '\\' && jp->p[1] == 'u' ? hex4(jp->p + 2) : -1;
            if (lo < 0xdc00 || lo > 0xdfff) {
                jp_fail(jp, "invalid Unicode escape (unpaired high surrogate)");
                return false;
            }
            jp->p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (cp == 0) {
            jp_fail(jp, "\\u0000 is not allowed");
            return false;
        }
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xc0 | cp >> 6);
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out[o++] = (char)(0xe0 | cp >> 12);
            out[o++] = (char)(0x80 | (cp >> 6 & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | cp >> 18);
            out[o++] = (char)(0x80 | (cp >> 12 & 0x3f));
            out[o++] = (char)(0x80 | (cp >> 6 & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    jp_fail(jp, "premature end of input in string");
    return false;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number token, checked against RFC 8259's grammar by jp_number_scan. */
struct jnum {
    const char *start, *end; /* the whole token */
    const char *int_end;     /* end of the integer part's digits */
    bool neg, real;          /* a leading '-'; a fraction or an exponent */
};

/* Check the grammar of the number at jp->p (which is left there) into *n. */
static bool jp_number_scan(struct jparser *jp, struct jnum *n)
{
    const char *p = jp->p, *end = jp->end;
    n->start = p;
    n->neg = n->real = false;
    if (p < end && *p == '-') {
        n->neg = true;
        p++;
    }
    if (p >= end || !is_digit(*p)) {
        jp_fail(jp, "invalid number");
        return false;
    }
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            jp_fail(jp, "invalid number (leading zero)");
            return false;
        }
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    n->int_end = p;
    if (p < end && *p == '.') {
        n->real = true;
        p++;
        if (p >= end || !is_digit(*p)) {
            jp->p = p;
            jp_fail(jp, "invalid number (digit expected after '.')");
            return false;
        }
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        n->real = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p)) {
            jp->p = p;
            jp_fail(jp, "invalid number (digit expected in exponent)");
            return false;
        }
        while (p < end && is_digit(*p))
            p++;
    }
    n->end = p;
    return true;
}

/* The value of an integer token (no fraction, no exponent); it must fit json_int_t. */
static bool jp_number_int(struct jparser *jp, const struct jnum *n, json_int_t *out)
{
    uint64_t u = 0;
    const char *d = n->start + n->neg;
    if (n->int_end - d <= 19) { /* below 10^19 < 2^64: no overflow to check */
        for (; d < n->int_end; d++)
            u = u * 10 + (unsigned)(*d - '0');
    }
    for (; d < n->int_end; d++) {
        unsigned dig = (unsigned)(*d - '0');
        if (u > (UINT64_MAX - dig) / 10) {
            jp_fail(jp, "too big integer");
            return false;
        }
        u = u * 10 + dig;
    }
    if (u > (uint64_t)INT64_MAX + (n->neg ? 1u : 0u)) {
        jp_fail(jp, n->neg ? "too big negative integer" : "too big integer");
        return false;
    }
    *out = n->neg ? (u == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(json_int_t)u) : (json_int_t)u;
    return true;
}

/* The value of a real token, by strtod (correctly rounded); it must be finite. */
static bool jp_number_strtod(struct jparser *jp, const struct jnum *n, double *out)
{
    /* strtod wants a NUL-terminated copy, with the locale's decimal point. */
    size_t len = (size_t)(n->end - n->start);
    char *buf = jp->small;
    if (len + 1 > JP_SCRATCH) {
        buf = jp_room(jp, len + 1);
        if (!buf)
            return false;
    }
    memcpy(buf, n->start, len);
    buf[len] = '\0';
    const char *dp = localeconv()->decimal_point;
    if (dp[0] != '.' && dp[0] && !dp[1]) {
        char *dot = memchr(buf, '.', len);
        if (dot)
            *dot = dp[0];
    }
    errno = 0;
    char *stop;
    double d = strtod(buf, &stop);
    if (stop != buf + len || (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL))) {
        jp_fail(jp, "real number overflow");
        return false;
    }
    *out = d;
    return true;
}

/* A number: an integer (json_int_t) unless it has a fraction or an exponent. */
static json_t *jp_number(struct jparser *jp)
{
    struct jnum n;
    json_t *v;
    if (!jp_number_scan(jp, &n))
        return NULL;
    if (!n.real) {
        json_int_t iv;
        if (!jp_number_int(jp, &n, &iv))
            return NULL;
        v = json_integer(iv);
    } else {
        double d;
        if (!jp_number_strtod(jp, &n, &d))
            return NULL;
        v = json_real(d);
    }
    if (!v) {
        jp_oom(jp);
        return NULL;
    }
    jp->p = n.end;
    return v;
}

static json_t *jp_value(struct jparser *jp, unsigned depth);

static json_t *jp_object(struct jparser *jp, unsigned depth)
{
    json_t *obj = json_object();
    if (!obj) {
        jp_oom(jp);
        return NULL;
    }
    jp->p++; /* '{' */
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == '}') {
        jp->p++;
        return obj;
    }
    for (;;) {
        if (jp->p >= jp->end || *jp->p != '"') {
            jp_fail(jp, "string or '}' expected");
            goto fail;
        }
        const char *k;
        size_t klen;
        if (!jp_string(jp, &k, &klen))
            goto fail;
        if (json_object_getn(obj, k, klen)) {
            jp_fail(jp, "duplicate object key");
            goto fail;
        }
        /* A key with escapes lives in the scratch, which the value reuses: copy it. */
        char *kcopy = NULL;
        if (k == jp->small || k == jp->heap) {
            kcopy = br_strndup(k, klen);
            if (!kcopy) {
                jp_oom(jp);
                goto fail;
            }
            k = kcopy;
        }
        jp_ws(jp);
        if (jp->p >= jp->end || *jp->p != ':') {
            br_free(kcopy);
            jp_fail(jp, "':' expected");
            goto fail;
        }
        jp->p++;
        json_t *v = jp_value(jp, depth);
        if (!v) {
            br_free(kcopy);
            goto fail;
        }
        int rc = json_object_setn_new_nocheck(obj, k, klen, v); /* takes v, even on failure */
        br_free(kcopy);
        if (rc) {
            jp_oom(jp);
            goto fail;
        }
        jp_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            jp_ws(jp);
            continue;
        }
        if (jp->p < jp->end && *jp->p == '}') {
            jp->p++;
            return obj;
        }
        jp_fail(jp, "',' or '}' expected");
        goto fail;
    }
fail:
    json_decref(obj);
    return NULL;
}

static json_t *jp_array(struct jparser *jp, unsigned depth)
{
    json_t *arr = json_array();
    if (!arr) {
        jp_oom(jp);
        return NULL;
    }
    jp->p++; /* '[' */
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == ']') {
        jp->p++;
        return arr;
    }
    for (;;) {
        json_t *v = jp_value(jp, depth);
        if (!v)
            goto fail;
        if (json_array_append_new(arr, v)) {
            jp_oom(jp);
            goto fail;
        }
        jp_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            continue;
        }
        if (jp->p < jp->end && *jp->p == ']') {
            jp->p++;
            return arr;
        }
        jp_fail(jp, "',' or ']' expected");
        goto fail;
    }
fail:
    json_decref(arr);
    return NULL;
}

static bool jp_word(struct jparser *jp, const char *w, size_t n)
{
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, w, n) != 0)
        return false;
    jp->p += n;
    return true;
}

static json_t *jp_value(struct jparser *jp, unsigned depth)
{
    json_t *v = NULL;
    jp_ws(jp);
    if (jp->p >= jp->end) {
        jp_fail(jp, "premature end of input");
        return NULL;
    }
    if (depth >= JSON_PARSER_MAX_DEPTH) { /* jansson counts every value, scalars too */
        jp_fail(jp, "maximum parsing depth reached");
        return NULL;
    }
    switch (*jp->p) {
    case '{':
    case '[':
        return *jp->p == '{' ? jp_object(jp, depth + 1) : jp_array(jp, depth + 1);
    case '"': {
        const char *s;
        size_t n;
        if (!jp_string(jp, &s, &n))
            return NULL;
        v = json_stringn_nocheck(s, n); /* checked above */
        break;
    }
    case 't':
        if (!jp_word(jp, "true", 4))
            goto bad;
        v = json_true();
        break;
    case 'f':
        if (!jp_word(jp, "false", 5))
            goto bad;
        v = json_false();
        break;
    case 'n':
        if (!jp_word(jp, "null", 4))
            goto bad;
        v = json_null();
        break;
    default:
        if (*jp->p == '-' || is_digit(*jp->p))
            return jp_number(jp);
        goto bad;
    }
    if (!v)
        jp_oom(jp);
    return v;
bad:
    jp_fail(jp, "invalid token");
    return NULL;
}

br_err br_json_parse(const char *text, size_t len, size_t max, json_t **out, struct br_errbuf *eb)
{
    if (!text && len)
        return br_fail(eb, BR_EINVAL, "no JSON text");
    if (max && len > max)
        return br_fail(eb, BR_ETOOBIG, "JSON text of %zu bytes is larger than %zu", len, max);
    struct jparser jp = {.p = text ? text : "", .line = 1, .eb = eb};
    jp.end = jp.p + len;
    jp.line_start = jp.p;
    json_t *v = jp_value(&jp, 0);
    if (v) {
        jp_ws(&jp);
        if (jp.p < jp.end) {
            jp_fail(&jp, "end of input expected");
            json_decref(v);
            v = NULL;
        }
    }
    br_free(jp.heap);
    if (!v)
        return jp.err ? jp.err : BR_EINVAL;
    *out = v;
    return BR_OK;
}

/* ---- JSON -> CBOR ---- */

struct key {
    const char *k;
    size_t len;
    json_t *v;
};

/* Encoded-key order for text keys: the head grows with the length, so shorter first, then
 * bytewise (RFC 8949 §4.2.1). */
static inline int key_order(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return alen < blen ? -1 : 1;
    if (alen > 16)
        return memcmp(a, b, alen);
    for (size_t i = 0; i < alen; i++) /* most keys are short: no call */
        if (a[i] != b[i])
            return (unsigned char)a[i] < (unsigned char)b[i] ? -1 : 1;
    return 0;
}

static int key_cmp(const void *a, const void *b)
{
    const struct key *x = a, *y = b;
    return key_order(x->k, x->len, y->k, y->len);
}

static br_err to_cbor(const json_t *v, unsigned depth_left, bool skip_meta, br_buf *out,
                      struct br_errbuf *eb);

/* An object's pairs in canonical order; with skip_meta, keys starting with '_' are left out
 * (a document body). */
static br_err object_to_cbor(const json_t *obj, unsigned depth_left, bool skip_meta, br_buf *out,
                             struct br_errbuf *eb)
{
    br_err e = BR_OK;
    size_t n = 0, cap = json_object_size(obj);
    struct key small[16]; /* most objects: no allocation */
    struct key *keys = small;
    if (cap > sizeof small / sizeof small[0]) {
        keys = br_calloc(cap, sizeof *keys);
        if (!keys)
            return BR_ENOMEM;
    }
    const char *k;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach((json_t *)obj, k, klen, val)
    {
        if (skip_meta && klen && k[0] == '_')
            continue;
        if (n < cap)
            keys[n++] = (struct key){k, klen, val};
    }
    if (n > 16) {
        qsort(keys, n, sizeof *keys, key_cmp);
    } else {
        for (size_t i = 1; i < n; i++) { /* insertion sort: cheaper than qsort when small */
            struct key cur = keys[i];
            size_t j = i;
            for (; j > 0 && key_cmp(&keys[j - 1], &cur) > 0; j--)
                keys[j] = keys[j - 1];
            keys[j] = cur;
        }
    }
    e = br_cbor_put_map(out, n);
    for (size_t i = 0; i < n && !e; i++) {
        e = br_cbor_put_str(out, keys[i].k, keys[i].len);
        if (e == BR_EINVAL)
            e = br_fail(eb, BR_EINVAL, "object key is not valid UTF-8");
        if (!e)
            e = to_cbor(keys[i].v, depth_left, false, out, eb);
    }
    if (keys != small)
        br_free(keys);
    return e;
}

static br_err to_cbor(const json_t *v, unsigned depth_left, bool skip_meta, br_buf *out,
                      struct br_errbuf *eb)
{
    br_err e = BR_OK;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (depth_left == 0)
            return br_fail(eb, BR_EINVAL, "JSON nested deeper than %d", BR_CBOR_MAX_DEPTH);
        return object_to_cbor(v, depth_left - 1, skip_meta, out, eb);
    case JSON_ARRAY:
        if (depth_left == 0)
            return br_fail(eb, BR_EINVAL, "JSON nested deeper than %d", BR_CBOR_MAX_DEPTH);
        e = br_cbor_put_array(out, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v) && !e; i++)
            e = to_cbor(json_array_get(v, i), depth_left - 1, false, out, eb);
        return e;
    case JSON_STRING:
        e = br_cbor_put_str(out, json_string_value(v), json_string_length(v));
        if (e == BR_EINVAL)
            e = br_fail(eb, BR_EINVAL, "string is not valid UTF-8");
        return e;
    case JSON_INTEGER:
        return br_cbor_put_int(out, (int64_t)json_integer_value(v));
    case JSON_REAL:
        e = br_cbor_put_double(out, json_real_value(v));
        if (e == BR_EINVAL)
            e = br_fail(eb, BR_EINVAL, "number is not finite");
        return e;
    case JSON_TRUE:
        return br_cbor_put_bool(out, true);
    case JSON_FALSE:
        return br_cbor_put_bool(out, false);
    case JSON_NULL:
        return br_cbor_put_null(out);
    }
    return br_fail(eb, BR_EINVAL, "unknown JSON type");
}

/* Append v canonically; on error out is left as it was. */
static br_err to_cbor_top(const json_t *v, bool skip_meta, br_buf *out, struct br_errbuf *eb)
{
    if (!v)
        return br_fail(eb, BR_EINVAL, "no JSON value");
    size_t old_len = out->len;
    br_err e = to_cbor(v, BR_CBOR_MAX_DEPTH, skip_meta, out, eb);
    if (e) {
        out->len = old_len;
        if (out->data)
            out->data[old_len] = 0;
        if (e == BR_ENOMEM)
            br_errbuf_set(eb, "out of memory");
        else if (e == BR_ETOOBIG)
            br_errbuf_set(eb, "encoded value too large");
    }
    return e;
}

br_err br_json_to_cbor(const json_t *v, br_buf *out, struct br_errbuf *eb)
{
    return to_cbor_top(v, false, out, eb);
}

/* ---- CBOR -> JSON ---- */

static br_err from_cbor(struct br_cbor_reader *r, unsigned depth_left, json_t **out,
                        struct br_errbuf *eb);

static br_err map_from_cbor(struct br_cbor_reader *r, size_t n, unsigned depth_left, json_t **out,
                            struct br_errbuf *eb)
{
    br_err e = BR_OK;
    json_t *obj = json_object();
    json_t *val = NULL;
    if (!obj)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *k;
        size_t klen;
        e = br_cbor_read_text(r, &k, &klen);
        if (e) {
            e = br_fail(eb, BR_EPROTO, "map key is not a text string");
            goto done;
        }
        e = from_cbor(r, depth_left, &val, eb);
        if (e)
            goto done;
        if (json_object_getn(obj, k, klen)) {
            e = br_fail(eb, BR_EPROTO, "duplicate map key");
            goto done;
        }
        int rc = json_object_setn_new_nocheck(obj, k, klen, val); /* UTF-8 checked by reader */
        val = NULL;                                               /* taken even on failure */
        if (rc) {
            e = BR_ENOMEM;
            goto done;
        }
    }
    *out = obj;
    obj = NULL;
done:
    json_decref(val);
    json_decref(obj);
    return e;
}

static br_err array_from_cbor(struct br_cbor_reader *r, size_t n, unsigned depth_left, json_t **out,
                              struct br_errbuf *eb)
{
    br_err e = BR_OK;
    json_t *arr = json_array();
    if (!arr)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *val;
        e = from_cbor(r, depth_left, &val, eb);
        if (e)
            goto done;
        if (json_array_append_new(arr, val)) {
            e = BR_ENOMEM;
            goto done;
        }
    }
    *out = arr;
    arr = NULL;
done:
    json_decref(arr);
    return e;
}

/* Unsigned integers above INT64_MAX cannot be a jansson integer (json_int_t is long long), and
 * turning them into reals would silently change the value: they are BR_EPROTO. */
static br_err from_cbor(struct br_cbor_reader *r, unsigned depth_left, json_t **out,
                        struct br_errbuf *eb)
{
    struct br_cbor_item it;
    json_t *v = NULL;
    br_err e = br_cbor_next(r, &it);
    if (e)
        return br_fail(eb, BR_EPROTO, "malformed or truncated CBOR");
    switch (it.type) {
    case BR_CBOR_UINT:
        if (it.u > (uint64_t)INT64_MAX)
            return br_fail(eb, BR_EPROTO, "integer %" PRIu64 " is beyond JSON's int64", it.u);
        v = json_integer((json_int_t)it.u);
        break;
    case BR_CBOR_NEGINT:
        if (it.u > (uint64_t)INT64_MAX)
            return br_fail(eb, BR_EPROTO, "integer below -2^63 is beyond JSON's int64");
        v = json_integer(-(json_int_t)it.u - 1);
        break;
    case BR_CBOR_TEXT:
        v = json_stringn_nocheck((const char *)it.str, it.len); /* checked by the reader */
        break;
    case BR_CBOR_FLOAT:
        if (!isfinite(it.f))
            return br_fail(eb, BR_EPROTO, "NaN or infinity is not JSON");
        v = json_real(it.f);
        break;
    case BR_CBOR_BOOL:
        v = json_boolean(it.b);
        break;
    case BR_CBOR_NULL:
        v = json_null();
        break;
    case BR_CBOR_BYTES:
        return br_fail(eb, BR_EPROTO, "byte string is not JSON");
    case BR_CBOR_ARRAY:
        if (depth_left == 0)
            return br_fail(eb, BR_EPROTO, "CBOR nested deeper than %d", BR_CBOR_MAX_DEPTH);
        return array_from_cbor(r, it.len, depth_left - 1, out, eb);
    case BR_CBOR_MAP:
        if (depth_left == 0)
            return br_fail(eb, BR_EPROTO, "CBOR nested deeper than %d", BR_CBOR_MAX_DEPTH);
        return map_from_cbor(r, it.len, depth_left - 1, out, eb);
    }
    if (!v)
        return BR_ENOMEM;
    *out = v;
    return BR_OK;
}

br_err br_json_from_cbor(const uint8_t *p, size_t n, json_t **out, struct br_errbuf *eb)
{
    if (!p && n)
        return br_fail(eb, BR_EINVAL, "no CBOR");
    struct br_cbor_reader r;
    json_t *v = NULL;
    br_cbor_reader_init(&r, p, n);
    br_err e = from_cbor(&r, BR_CBOR_MAX_DEPTH, &v, eb);
    if (!e && !br_cbor_at_end(&r)) {
        json_decref(v);
        e = br_fail(eb, BR_EPROTO, "trailing bytes after the CBOR value");
    }
    if (e == BR_ENOMEM)
        br_errbuf_set(eb, "out of memory");
    if (!e)
        *out = v;
    return e;
}

/* ---- documents ---- */

/* Free a string we duplicated into a const field of br_att_in. */
static void free_const(const void *p)
{
    br_free((void *)p);
}

void br_json_doc_fini(struct br_json_doc *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_atts; i++) {
        free_const(d->atts[i].name);
        free_const(d->atts[i].content_type);
        free_const(d->atts[i].digest);
        free_const(d->atts[i].data);
    }
    br_free(d->atts);
    br_free(d->history);
    if (d->id != d->id_small)
        br_free(d->id);
    br_buf_fini(&d->body);
    memset(d, 0, sizeof *d);
}

/* A JSON string's bytes, refusing embedded NULs (they would cut C strings short). */
static bool string_of(const json_t *v, const char **s, size_t *n)
{
    if (!json_is_string(v))
        return false;
    *s = json_string_value(v);
    *n = json_string_length(v);
    return memchr(*s, '\0', *n) == NULL;
}

/* "_rev": "N-hex" (or a local document's "0-N"). */
static br_err parse_rev_member(const json_t *v, struct br_rev *rev, struct br_errbuf *eb)
{
    const char *s;
    size_t n;
    if (!string_of(v, &s, &n))
        return br_fail(eb, BR_EBADREV, "Invalid rev format");
    if (br_rev_parse(s, n, rev) == BR_OK || br_rev_parse_local(s, n, rev) == BR_OK)
        return BR_OK;
    return br_fail(eb, BR_EBADREV, "Invalid rev format");
}

/* "_revisions": {"start": N, "ids": [hex, ...]} into a newest-first path in d->history. */
static br_err parse_revisions(const json_t *v, struct br_json_doc *d, struct br_errbuf *eb)
{
    json_t *start = json_object_get(v, "start");
    json_t *ids = json_object_get(v, "ids");
    if (!json_is_object(v) || !json_is_integer(start) || !json_is_array(ids))
        return br_fail(eb, BR_EBADREV, "_revisions must be {\"start\": N, \"ids\": [...]}");
    json_int_t gen = json_integer_value(start);
    size_t n = json_array_size(ids);
    if (gen < 0 || (uint64_t)gen > BR_REV_GEN_MAX || (uint64_t)gen < n)
        return br_fail(eb, BR_EBADREV, "_revisions start %lld does not fit %zu ids", (long long)gen,
                       n);
    if (n == 0)
        return BR_OK;
    d->history = br_calloc(n, sizeof *d->history);
    if (!d->history)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *h;
        size_t hlen;
        char text[BR_REV_TEXT_MAX];
        if (!string_of(json_array_get(ids, i), &h, &hlen) || hlen == 0 || hlen > BR_REV_HASH_MAX)
            return br_fail(eb, BR_EBADREV, "_revisions ids[%zu] is not a revision hash", i);
        int tn = snprintf(text, sizeof text, "%" PRIu64 "-%.*s", (uint64_t)gen - i, (int)hlen, h);
        if (tn < 0 || (size_t)tn >= sizeof text ||
            br_rev_parse(text, (size_t)tn, &d->history[i]) != BR_OK)
            return br_fail(eb, BR_EBADREV, "_revisions ids[%zu] is not a revision hash", i);
    }
    d->n_history = n;
    return BR_OK;
}

/* Optional non-negative integer member; false if present with another type. */
static bool opt_uint(const json_t *obj, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Optional string member duplicated into *out; false if present with another type. */
static bool opt_str(const json_t *obj, const char *key, const char **out, bool *oom)
{
    const char *s;
    size_t n;
    json_t *v = json_object_get(obj, key);
    if (!v)
        return true;
    if (!string_of(v, &s, &n))
        return false;
    *out = br_strndup(s, n);
    *oom = *out == NULL;
    return true;
}

static br_err parse_attachment(const char *name, size_t name_len, const json_t *v,
                               struct br_att_in *a, struct br_errbuf *eb)
{
    bool oom = false;
    if (name_len == 0 || memchr(name, '\0', name_len))
        return br_fail(eb, BR_EINVAL, "bad attachment name");
    if (!json_is_object(v))
        return br_fail(eb, BR_EINVAL, "attachment %.*s must be an object", (int)name_len, name);
    a->name = br_strndup(name, name_len);
    if (!a->name)
        return BR_ENOMEM;
    if (!opt_str(v, "content_type", &a->content_type, &oom))
        return br_fail(eb, BR_EINVAL, "attachment %s: content_type must be a string", a->name);
    if (oom)
        return BR_ENOMEM;
    if (!opt_uint(v, "revpos", &a->revpos))
        return br_fail(eb, BR_EINVAL, "attachment %s: revpos must be an integer", a->name);
    json_t *stub = json_object_get(v, "stub");
    json_t *data = json_object_get(v, "data");
    if (stub && !json_is_boolean(stub))
        return br_fail(eb, BR_EINVAL, "attachment %s: stub must be a boolean", a->name);
    if (json_is_true(stub)) {
        a->stub = true;
        if (!opt_str(v, "digest", &a->digest, &oom))
            return br_fail(eb, BR_EINVAL, "attachment %s: digest must be a string", a->name);
        return oom ? BR_ENOMEM : BR_OK;
    }
    const char *b64;
    size_t b64_len;
    if (!data)
        return br_fail(eb, BR_EINVAL, "attachment %s has neither data nor stub", a->name);
    if (!string_of(data, &b64, &b64_len))
        return br_fail(eb, BR_EINVAL, "attachment %s: data must be a base64 string", a->name);
    size_t max = b64_len / 4 * 3 + 3, bin_len = 0;
    uint8_t *bin = br_malloc(max);
    if (!bin)
        return BR_ENOMEM;
    const char *end = NULL;
    if (sodium_base642bin(bin, max, b64, b64_len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + b64_len) {
        br_free(bin);
        return br_fail(eb, BR_EINVAL, "attachment %s: data is not valid base64", a->name);
    }
    a->data = bin;
    a->len = bin_len;
    return BR_OK;
}

static br_err parse_attachments(const json_t *v, struct br_json_doc *d, struct br_errbuf *eb)
{
    if (!json_is_object(v))
        return br_fail(eb, BR_EINVAL, "_attachments must be an object");
    size_t n = json_object_size(v);
    if (n == 0)
        return BR_OK;
    d->atts = br_calloc(n, sizeof *d->atts);
    if (!d->atts)
        return BR_ENOMEM;
    const char *k;
    size_t klen;
    json_t *a;
    json_object_keylen_foreach((json_t *)v, k, klen, a)
    {
        if (d->n_atts == n)
            break;
        /* counted before parsing so that fini frees what a failed parse left */
        br_err e = parse_attachment(k, klen, a, &d->atts[d->n_atts++], eb);
        if (e)
            return e;
    }
    return BR_OK;
}

static bool key_is(const char *k, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

/* The "_" members of obj (NULL: none) into d; id (may be NULL) is an _id found beforehand, for
 * an obj that holds no "_id" member. */
static br_err parse_members(const json_t *obj, const char *id, size_t id_len,
                            const char *id_from_url, struct br_json_doc *d, struct br_errbuf *eb)
{
    br_err e = BR_OK;
    bool have_rev = false;
    const json_t *revisions = NULL;
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)obj, k, klen, v)
    {
        if (klen == 0 || k[0] != '_')
            continue;
        if (key_is(k, klen, "_id")) {
            if (!string_of(v, &id, &id_len))
                return br_fail(eb, BR_EINVAL, "Document id must be a string");
        } else if (key_is(k, klen, "_rev")) {
            e = parse_rev_member(v, &d->rev, eb);
            if (e)
                return e;
            have_rev = true;
        } else if (key_is(k, klen, "_deleted")) {
            if (!json_is_boolean(v))
                return br_fail(eb, BR_EINVAL, "Bad special document member: _deleted");
            d->put.deleted = json_is_true(v);
        } else if (key_is(k, klen, "_revisions")) {
            revisions = v;
        } else if (key_is(k, klen, "_attachments")) {
            e = parse_attachments(v, d, eb);
            if (e)
                return e;
        } else if (!key_is(k, klen, "_conflicts") && !key_is(k, klen, "_deleted_conflicts") &&
                   !key_is(k, klen, "_local_seq") && !key_is(k, klen, "_revs_info")) {
            return br_fail(eb, BR_EINVAL, "Bad special document member: %.*s",
                           (int)(klen > 64 ? 64 : klen), k);
        }
    }

    if (id_from_url) {
        size_t url_len = strlen(id_from_url);
        if (id && (id_len != url_len || memcmp(id, id_from_url, url_len) != 0))
            return br_fail(eb, BR_EINVAL, "document id does not match url");
        id = id_from_url;
        id_len = url_len;
    }
    if (id) {
        if (id_len < sizeof d->id_small) { /* most ids: no allocation */
            memcpy(d->id_small, id, id_len);
            d->id_small[id_len] = '\0';
            d->id = d->id_small;
        } else {
            d->id = br_strndup(id, id_len);
            if (!d->id)
                return BR_ENOMEM;
        }
        d->put.id = d->id;
        d->put.id_len = id_len;
    }

    if (revisions) {
        e = parse_revisions(revisions, d, eb);
        if (e)
            return e;
    }
    if (d->n_history) {
        if (have_rev && !br_rev_eq(&d->rev, &d->history[0]))
            return br_fail(eb, BR_EBADREV, "_rev does not match _revisions");
        d->rev = d->history[0];
        have_rev = true;
    } else if (have_rev && d->rev.gen > 0) { /* a local document's "0-N" has no history */
        d->history = br_malloc(sizeof *d->history);
        if (!d->history)
            return BR_ENOMEM;
        d->history[0] = d->rev;
        d->n_history = 1;
    }
    d->put.rev = have_rev ? &d->rev : NULL;
    d->put.history = d->history;
    d->put.n_history = d->n_history;
    d->put.atts = d->atts;
    d->put.n_atts = d->n_atts;
    return BR_OK;
}

br_err br_json_doc_parse(const json_t *obj, const char *id_from_url, struct br_json_doc *d,
                         struct br_errbuf *eb)
{
    memset(d, 0, sizeof *d);
    br_buf_init(&d->body, 0);
    if (!json_is_object(obj))
        return br_fail(eb, BR_EINVAL, "Document must be a JSON object");
    br_err e = parse_members(obj, NULL, 0, id_from_url, d, eb);
    if (!e)
        e = to_cbor_top(obj, true, &d->body, eb);
    if (e) {
        if (e == BR_ENOMEM)
            br_errbuf_set(eb, "out of memory");
        br_json_doc_fini(d);
        return e;
    }
    d->put.body = d->body.data;
    d->put.body_len = d->body.len;
    d->put.body_trusted = true; /* made by to_cbor / cv_*: valid and canonical */
    return BR_OK;
}

/* ---- documents straight from JSON text ----
 *
 * br_json_doc_parse_text does in one pass what br_json_parse and br_json_doc_parse do with a
 * jansson tree in between. The text is checked with the parser's own pieces (jp_ws, jp_string,
 * jp_word, jp_number_scan, jp_number_int), and each body value's canonical CBOR is written as
 * soon as it is read: an object's member values go to a scratch buffer in text order while
 * their (key, value span) pairs are pushed on a stack; at the closing brace the pairs are sorted
 * with key_order (equal keys end up side by side, which is how duplicates are found) and the
 * map is written in that order. An array gets a one-byte head, widened at the end if it holds
 * 24 items or more. Reals take Clinger's exact fast path when their digits allow it, strtod
 * otherwise. Top-level "_" members other than a string _id are parsed into jansson values
 * (they are rare and small) and handed to parse_members, like the tree path does.
 *
 * It only ever succeeds with the tree path's result. When anything is off (bad JSON, duplicate
 * keys, a body deeper than BR_CBOR_MAX_DEPTH, bad metadata, not an object, no memory) it gives
 * up and the tree path runs instead, so every error, with its code and message, is the tree
 * path's. tests/fuzz/fuzz_json_fast.c checks that both agree, and that the fast path accepts
 * everything the tree path accepts. */

enum { CV_VALS = 1024, CV_KEYS = 256, CV_MEMBERS = 32 }; /* inline scratch sizes */

/* A growable byte scratch that starts in caller-provided (stack) storage. */
struct scratch {
    uint8_t *p;
    size_t len, cap;
    uint8_t *heap; /* p, once it outgrew the inline storage */
};

static void scratch_init(struct scratch *s, uint8_t *storage, size_t cap)
{
    s->p = storage;
    s->len = 0;
    s->cap = cap;
    s->heap = NULL;
}

static bool scratch_grow(struct scratch *s, size_t extra)
{
    if (extra > SIZE_MAX / 4 - s->len)
        return false;
    size_t cap = s->cap * 2;
    while (cap < s->len + extra)
        cap *= 2;
    uint8_t *p = br_realloc(s->heap, cap);
    if (!p)
        return false;
    if (!s->heap)
        memcpy(p, s->p, s->len);
    s->p = s->heap = p;
    s->cap = cap;
    return true;
}

static inline bool scratch_room(struct scratch *s, size_t extra)
{
    return extra <= s->cap - s->len || scratch_grow(s, extra);
}

static bool scratch_append(struct scratch *s, const void *p, size_t n)
{
    if (!scratch_room(s, n))
        return false;
    if (n)
        memcpy(s->p + s->len, p, n);
    s->len += n;
    return true;
}

/* One object member on the conversion stack. */
struct member {
    const char *k;       /* the key's bytes (for a key in the key scratch: set by cv_sort) */
    size_t key, key_len; /* in_keys: the key's offset in the key scratch, which may move */
    size_t val, val_len; /* the value's CBOR in the value scratch (empty for metadata) */
    bool in_keys;        /* the key had escapes: its unescaped bytes are in the key scratch */
    bool meta;           /* a top-level "_" member: metadata, not body */
};

struct conv {
    struct jparser jp;
    const char *text;
    struct scratch vals; /* encoded values; a finished nested object replaces its members' */
    struct scratch keys; /* unescaped keys (and an _id with escapes), a stack like members */
    struct member *m;    /* the members of every open object, innermost last */
    size_t n, cap;
    json_t *meta; /* top-level "_" members other than _id, in text order */
    bool have_id, id_in_keys;
    size_t id, id_len; /* a string _id: offset in the text, or in the key scratch */
    uint8_t vals_small[CV_VALS];
    uint8_t keys_small[CV_KEYS];
    struct member m_small[CV_MEMBERS];
};

/* The shortest head of major type mt with argument v (RFC 8949 §4.2.1); returns its length. */
static inline size_t cv_head(uint8_t *out, unsigned mt, uint64_t v)
{
    uint8_t ib = (uint8_t)(mt << 5);
    if (v < 24) {
        out[0] = (uint8_t)(ib | v);
        return 1;
    }
    size_t n = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffu ? 4 : 8;
    out[0] = (uint8_t)(ib | (n == 1 ? 24 : n == 2 ? 25 : n == 4 ? 26 : 27));
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return 1 + n;
}

static inline size_t cv_head_len(uint64_t v)
{
    return v < 24 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}

enum { CV_UINT = 0, CV_NEGINT = 1, CV_TEXT = 3, CV_ARRAY = 4, CV_MAP = 5 };

/* Append a head and n payload bytes to the value scratch. */
static inline bool cv_put(struct conv *c, unsigned mt, uint64_t v, const void *payload, size_t n)
{
    if (!scratch_room(&c->vals, BR_CBOR_HEAD_MAX + n))
        return false;
    uint8_t *o = c->vals.p + c->vals.len;
    size_t hn = cv_head(o, mt, v);
    if (n)
        memcpy(o + hn, payload, n);
    c->vals.len += hn + n;
    return true;
}

static inline bool cv_byte(struct conv *c, uint8_t b)
{
    if (!scratch_room(&c->vals, 1))
        return false;
    c->vals.p[c->vals.len++] = b;
    return true;
}

static const char *cv_key(const struct conv *c, const struct member *m)
{
    return m->in_keys ? (const char *)c->keys.p + m->key : m->k;
}

static bool cv_push(struct conv *c, const struct member *m)
{
    if (c->n == c->cap) {
        if (c->cap > SIZE_MAX / 2 / sizeof *c->m)
            return false;
        struct member *heap = c->m == c->m_small ? NULL : c->m;
        struct member *nm = br_realloc(heap, 2 * c->cap * sizeof *nm);
        if (!nm)
            return false;
        if (!heap)
            memcpy(nm, c->m, c->n * sizeof *nm);
        c->m = nm;
        c->cap *= 2;
    }
    c->m[c->n++] = *m;
    return true;
}

/* Powers of ten that a double holds exactly. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Clinger's fast path: a real whose decimal significand w is at most 2^53 and whose exponent
 * is within ±22 is w * 10^e or w / 10^-e, both exact doubles, and one IEEE operation rounds
 * that correctly, to what strtod gives. False when the number does not qualify. */
static bool real_fast(const struct jnum *n, double *out)
{
    if (FLT_EVAL_METHOD != 0) /* extended precision would round twice */
        return false;
    uint64_t w = 0;
    int digits = 0; /* significant digits in w */
    long e10 = 0;
    bool frac = false;
    const char *p = n->start + n->neg;
    for (; p < n->end; p++) {
        char ch = *p;
        if (ch == '.') {
            frac = true;
            continue;
        }
        if (!is_digit(ch))
            break; /* the exponent */
        if (frac)
            e10--;
        if (digits == 0 && ch == '0')
            continue;
        if (++digits > 19)
            return false;
        w = w * 10 + (uint64_t)(ch - '0');
    }
    if (p < n->end) { /* 'e' or 'E', then an optional sign and digits (scanned already) */
        bool eneg = false;
        long x = 0;
        p++;
        if (*p == '+' || *p == '-') {
            eneg = *p == '-';
            p++;
        }
        for (; p < n->end; p++) {
            x = x * 10 + (*p - '0');
            if (x > 100000)
                return false;
        }
        e10 += eneg ? -x : x;
    }
    if (w > (uint64_t)1 << 53 || e10 < -22 || e10 > 22)
        return false;
    double d = (double)w;
    if (e10 < 0)
        d /= POW10[-e10];
    else
        d *= POW10[e10];
    *out = n->neg ? -d : d;
    return true;
}

static bool cv_put_double(struct conv *c, double d)
{
    uint8_t out[BR_CBOR_HEAD_MAX];
    size_t k = br_cbor_double_encode(out, d);
    return k && scratch_append(&c->vals, out, k);
}

/* Any number, through the parser's own checks (jp_number_scan, jp_number_int). */
static bool cv_number_any(struct conv *c)
{
    struct jparser *jp = &c->jp;
    struct jnum n;
    if (!jp_number_scan(jp, &n))
        return false;
    if (!n.real) {
        json_int_t v;
        if (!jp_number_int(jp, &n, &v))
            return false;
        jp->p = n.end;
        if (v >= 0)
            return cv_put(c, CV_UINT, (uint64_t)v, NULL, 0);
        return cv_put(c, CV_NEGINT, (uint64_t)(-(v + 1)), NULL, 0);
    }
    double d;
    if (!real_fast(&n, &d) && !jp_number_strtod(jp, &n, &d))
        return false;
    jp->p = n.end;
    return cv_put_double(c, d);
}

/* The usual numbers in one pass: an integer of 1 to 18 digits, or one with a fraction, at most
 * 19 digits in all, whose value Clinger's fast path gives exactly (see real_fast). Anything
 * else (an exponent, a leading zero, more digits, bad syntax) goes to cv_number_any, so what
 * is accepted and its value are those of the general path. */
static bool cv_number(struct conv *c)
{
    struct jparser *jp = &c->jp;
    const char *end = jp->end;
    bool neg = *jp->p == '-';
    const char *d = jp->p + neg, *q = d;
    uint64_t w = 0;
    while (q < end && is_digit(*q) && q - d < 19)
        w = w * 10 + (uint64_t)(*q++ - '0');
    size_t nint = (size_t)(q - d);
    if (nint == 0 || nint > 18 || (*d == '0' && nint > 1))
        return cv_number_any(c);
    if (q == end || (*q != '.' && *q != 'e' && *q != 'E')) { /* an integer below 10^18 */
        jp->p = q;
        if (!neg || w == 0) /* -0 is the integer 0 */
            return cv_put(c, CV_UINT, w, NULL, 0);
        return cv_put(c, CV_NEGINT, w - 1, NULL, 0);
    }
    if (*q != '.')
        return cv_number_any(c);
    const char *f = ++q;
    while (q < end && is_digit(*q) && (size_t)(q - f) + nint < 19)
        w = w * 10 + (uint64_t)(*q++ - '0');
    size_t nfrac = (size_t)(q - f);
    if (nfrac == 0 || nfrac > 22 || w > (uint64_t)1 << 53 ||
        (q < end && (is_digit(*q) || *q == 'e' || *q == 'E')))
        return cv_number_any(c);
    if (FLT_EVAL_METHOD != 0) /* as in real_fast */
        return cv_number_any(c);
    double v = (double)w / POW10[nfrac];
    jp->p = q;
    return cv_put_double(c, neg ? -v : v);
}

static bool cv_object(struct conv *c, unsigned depth, bool top);
static bool cv_value(struct conv *c, unsigned depth);

/* An array: a one-byte head now, widened when the count is known. */
static bool cv_array(struct conv *c, unsigned depth)
{
    struct jparser *jp = &c->jp;
    size_t start = c->vals.len;
    uint64_t count = 0;
    if (!cv_byte(c, 0x80))
        return false;
    jp->p++; /* '[' */
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == ']') {
        jp->p++;
        return true;
    }
    for (;;) {
        if (!cv_value(c, depth))
            return false;
        count++;
        jp_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            continue;
        }
        if (jp->p < jp->end && *jp->p == ']') {
            jp->p++;
            break;
        }
        return false;
    }
    uint8_t h[BR_CBOR_HEAD_MAX];
    size_t hn = cv_head(h, CV_ARRAY, count);
    if (hn > 1) {
        if (!scratch_room(&c->vals, hn - 1))
            return false;
        memmove(c->vals.p + start + hn, c->vals.p + start + 1, c->vals.len - start - 1);
        c->vals.len += hn - 1;
    }
    memcpy(c->vals.p + start, h, hn);
    return true;
}

/* The string token at jp->p (its opening quote), as jp_string reads it. The usual string, plain
 * ASCII without escapes, is found here eight bytes at a time; any other goes to jp_string. */
static inline bool cv_string(struct conv *c, const char **s, size_t *n)
{
    struct jparser *jp = &c->jp;
    const char *start = jp->p + 1;
    size_t k = plain_run(start, jp->end);
    if (start + k < jp->end && start[k] == '"') {
        *s = start;
        *n = k;
        jp->p = start + k + 1;
        return true;
    }
    return jp_string(jp, s, n);
}

/* One body value at depth (counted as jp_value counts it) into the value scratch. */
static bool cv_value(struct conv *c, unsigned depth)
{
    struct jparser *jp = &c->jp;
    jp_ws(jp);
    if (jp->p >= jp->end)
        return false;
    switch (*jp->p) {
    case '{':
        /* to_cbor refuses a container inside BR_CBOR_MAX_DEPTH others */
        return depth < BR_CBOR_MAX_DEPTH && cv_object(c, depth + 1, false);
    case '[':
        return depth < BR_CBOR_MAX_DEPTH && cv_array(c, depth + 1);
    case '"': {
        const char *s;
        size_t n;
        return cv_string(c, &s, &n) && cv_put(c, CV_TEXT, n, s, n);
    }
    case 't':
        return jp_word(jp, "true", 4) && cv_byte(c, 0xf5);
    case 'f':
        return jp_word(jp, "false", 5) && cv_byte(c, 0xf4);
    case 'n':
        return jp_word(jp, "null", 4) && cv_byte(c, 0xf6);
    default:
        return cv_number(c);
    }
}

/* The value of a top-level "_" member m: a string _id is kept as a span, anything else is
 * parsed into a jansson value for parse_members. */
static bool cv_meta(struct conv *c, const struct member *m, unsigned depth)
{
    struct jparser *jp = &c->jp;
    if (key_is(cv_key(c, m), m->key_len, "_id")) {
        jp_ws(jp);
        if (jp->p >= jp->end || *jp->p != '"')
            return false; /* not a string: the tree path says why */
        const char *s;
        size_t n;
        if (!jp_string(jp, &s, &n))
            return false;
        c->have_id = true;
        c->id_len = n;
        c->id_in_keys = s == jp->small || s == jp->heap;
        if (!c->id_in_keys) {
            c->id = (size_t)(s - c->text);
            return true;
        }
        c->id = c->keys.len;
        return scratch_append(&c->keys, s, n);
    }
    json_t *v = jp_value(jp, depth);
    if (!v)
        return false;
    if (!c->meta) {
        c->meta = json_object();
        if (!c->meta) {
            json_decref(v);
            return false;
        }
    }
    /* takes v, even on failure; a duplicate key replaces, and is refused at the object's end */
    return json_object_setn_new_nocheck(c->meta, cv_key(c, m), m->key_len, v) == 0;
}

static bool cv_member(struct conv *c, unsigned depth, bool top)
{
    struct jparser *jp = &c->jp;
    const char *k;
    size_t klen;
    if (!cv_string(c, &k, &klen))
        return false;
    struct member m = {.k = k, .key_len = klen, .meta = top && klen && k[0] == '_'};
    if (k == jp->small || k == jp->heap) { /* the parser's scratch: the value reuses it */
        m.in_keys = true;
        m.key = c->keys.len;
        if (!scratch_append(&c->keys, k, klen))
            return false;
    }
    jp_ws(jp);
    if (jp->p >= jp->end || *jp->p != ':')
        return false;
    jp->p++;
    m.val = c->vals.len;
    if (!(m.meta ? cv_meta(c, &m, depth) : cv_value(c, depth)))
        return false;
    m.val_len = c->vals.len - m.val;
    return cv_push(c, &m);
}

static inline int member_order(const struct member *x, const struct member *y)
{
    return key_order(x->k, x->key_len, y->k, y->key_len);
}

static int member_cmp(const void *a, const void *b)
{
    return member_order(a, b);
}

/* Sort the members from base up in canonical key order; false on a duplicate key. */
static bool cv_sort(struct conv *c, size_t base)
{
    struct member *m = c->m + base;
    size_t n = c->n - base;
    for (size_t i = 0; i < n; i++)
        if (m[i].in_keys)
            m[i].k = cv_key(c, &m[i]);
    if (n > 16) {
        qsort(m, n, sizeof *m, member_cmp);
        for (size_t i = 1; i < n; i++)
            if (member_order(&m[i - 1], &m[i]) == 0)
                return false;
        return true;
    }
    for (size_t i = 1; i < n; i++) { /* insertion sort: cheaper than qsort when small */
        struct member cur = m[i];
        size_t j = i;
        for (; j > 0; j--) {
            int o = member_order(&m[j - 1], &cur);
            if (o == 0)
                return false; /* an equal key is the first one not above cur */
            if (o < 0)
                break;
            m[j] = m[j - 1];
        }
        m[j] = cur;
    }
    return true;
}

/* Bytes of the map of the (sorted) non-metadata members from base up; *count gets their
 * number. */
static size_t cv_map_len(const struct conv *c, size_t base, size_t *count)
{
    size_t n = 0, len = 0;
    for (size_t i = base; i < c->n; i++) {
        const struct member *m = &c->m[i];
        if (m->meta)
            continue;
        n++;
        len += cv_head_len(m->key_len) + m->key_len + m->val_len;
    }
    *count = n;
    return cv_head_len(n) + len;
}

/* Write that map to out, which has room for it. */
static void cv_map_write(const struct conv *c, size_t base, size_t count, uint8_t *out)
{
    uint8_t *o = out + cv_head(out, CV_MAP, count);
    for (size_t i = base; i < c->n; i++) {
        const struct member *m = &c->m[i];
        if (m->meta)
            continue;
        o += cv_head(o, CV_TEXT, m->key_len);
        memcpy(o, m->k, m->key_len);
        o += m->key_len;
        memcpy(o, c->vals.p + m->val, m->val_len);
        o += m->val_len;
    }
}

/* An object whose members' values are at depth. A nested object replaces its members' values
 * in the value scratch with its canonical map; the top-level object leaves its members on the
 * stack for cv_doc. */
static bool cv_object(struct conv *c, unsigned depth, bool top)
{
    struct jparser *jp = &c->jp;
    size_t base = c->n, keys_base = c->keys.len, vals_base = c->vals.len;
    jp->p++; /* '{' */
    jp_ws(jp);
    if (jp->p >= jp->end || *jp->p != '}') {
        for (;;) {
            if (jp->p >= jp->end || *jp->p != '"' || !cv_member(c, depth, top))
                return false;
            jp_ws(jp);
            if (jp->p < jp->end && *jp->p == ',') {
                jp->p++;
                jp_ws(jp);
                continue;
            }
            if (jp->p < jp->end && *jp->p == '}')
                break;
            return false;
        }
    }
    jp->p++; /* '}' */
    if (top)
        return true;
    if (!cv_sort(c, base))
        return false;
    size_t count, len = cv_map_len(c, base, &count);
    if (!scratch_room(&c->vals, len))
        return false;
    /* written past the values it reads, then moved down over them */
    cv_map_write(c, base, count, c->vals.p + c->vals.len);
    memmove(c->vals.p + vals_base, c->vals.p + c->vals.len, len);
    c->vals.len = vals_base + len;
    c->n = base;
    c->keys.len = keys_base;
    return true;
}

/* The whole document; on success d holds what br_json_doc_parse would have made. */
static bool cv_doc(struct conv *c, const char *id_from_url, struct br_json_doc *d)
{
    struct jparser *jp = &c->jp;
    jp_ws(jp);
    if (jp->p >= jp->end || *jp->p != '{' || !cv_object(c, 1, true))
        return false;
    jp_ws(jp);
    if (jp->p != jp->end || !cv_sort(c, 0))
        return false;
    const char *id = NULL;
    if (c->have_id)
        id = c->id_in_keys ? (const char *)c->keys.p + c->id : c->text + c->id;
    if (parse_members(c->meta, id, c->id_len, id_from_url, d, NULL) != BR_OK)
        return false;
    size_t count, len = cv_map_len(c, 0, &count);
    /* exactly the bytes and the NUL (br_buf_reserve would round up): d->body is final */
    uint8_t *body = br_malloc(len + 1);
    if (!body)
        return false;
    cv_map_write(c, 0, count, body);
    body[len] = 0;
    d->body.data = body;
    d->body.len = len;
    d->body.cap = len + 1;
    d->put.body = d->body.data;
    d->put.body_len = d->body.len;
    d->put.body_trusted = true; /* made by to_cbor / cv_*: valid and canonical */
    return true;
}

br_err store_json_doc_fast(const char *text, size_t len, const char *id_from_url,
                           struct br_json_doc *d)
{
    memset(d, 0, sizeof *d);
    br_buf_init(&d->body, 0);
    if (!text)
        return BR_EINVAL;
    struct conv cs; /* not zeroed as a whole: the inline storage is 3 KiB */
    struct conv *c = &cs;
    c->jp.p = c->jp.line_start = text;
    c->jp.end = text + len;
    c->jp.line = 1;
    c->jp.err = BR_OK;
    c->jp.eb = NULL; /* refusals are worded by the tree path */
    c->jp.heap = NULL;
    c->jp.heap_cap = 0;
    c->text = text;
    scratch_init(&c->vals, c->vals_small, sizeof c->vals_small);
    scratch_init(&c->keys, c->keys_small, sizeof c->keys_small);
    c->m = c->m_small;
    c->n = 0;
    c->cap = CV_MEMBERS;
    c->meta = NULL;
    c->have_id = c->id_in_keys = false;
    c->id = c->id_len = 0;
    bool ok = cv_doc(c, id_from_url, d);
    json_decref(c->meta);
    br_free(c->jp.heap);
    br_free(c->vals.heap);
    br_free(c->keys.heap);
    if (c->m != c->m_small)
        br_free(c->m);
    if (ok)
        return BR_OK;
    br_json_doc_fini(d);
    br_buf_init(&d->body, 0);
    return BR_EINVAL;
}

br_err br_json_doc_parse_text(const char *text, size_t len, size_t max, const char *id_from_url,
                              struct br_json_doc *d, struct br_errbuf *eb)
{
    if ((!max || len <= max) && store_json_doc_fast(text, len, id_from_url, d) == BR_OK)
        return BR_OK;
    /* The tree path decides, and words, every refusal. */
    json_t *j = NULL;
    br_err e = br_json_parse(text, len, max, &j, eb);
    if (e) {
        memset(d, 0, sizeof *d);
        br_buf_init(&d->body, 0);
        return e;
    }
    e = br_json_doc_parse(j, id_from_url, d, eb);
    json_decref(j);
    return e;
}

/* ---- rendering ---- */

/* Set obj[key] = v, taking v (NULL: an allocation failed). */
static br_err set_new(json_t *obj, const char *key, json_t *v)
{
    if (!v)
        return BR_ENOMEM;
    return json_object_set_new_nocheck(obj, key, v) ? BR_ENOMEM : BR_OK;
}

static json_t *rev_string(const struct br_rev *r)
{
    char text[BR_REV_TEXT_MAX];
    size_t n = br_rev_format(r, text);
    return json_stringn(text, n);
}

static br_err rev_array(json_t *obj, const char *key, const struct br_rev *revs, size_t n)
{
    json_t *arr = json_array();
    if (!arr)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *s = rev_string(&revs[i]);
        if (!s || json_array_append_new(arr, s)) {
            json_decref(arr);
            return BR_ENOMEM;
        }
    }
    return set_new(obj, key, arr);
}

static json_t *uint_json(uint64_t v)
{
    return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

static br_err render_attachments(json_t *obj, const struct br_doc *d)
{
    json_t *atts = json_object();
    if (!atts)
        return BR_ENOMEM;
    br_err e = set_new(obj, "_attachments", atts);
    for (size_t i = 0; i < d->n_atts && !e; i++) {
        const struct br_att_stub *s = &d->atts[i];
        json_t *a = json_object();
        e = set_new(atts, s->name ? s->name : "", a);
        if (!e && s->content_type)
            e = set_new(a, "content_type", json_string(s->content_type));
        if (!e)
            e = set_new(a, "revpos", uint_json(s->revpos));
        if (!e)
            e = set_new(a, "digest", json_string(s->digest));
        if (!e)
            e = set_new(a, "length", uint_json(s->length));
        if (!e)
            e = set_new(a, "stub", json_true());
    }
    return e;
}

static br_err render_revisions(json_t *obj, const struct br_doc *d)
{
    json_t *r = NULL;
    json_t *ids = json_array();
    br_err e = ids ? BR_OK : BR_ENOMEM;
    for (size_t i = 0; i < d->n_revisions && !e; i++) {
        json_t *h = json_stringn(d->revisions[i].hash, d->revisions[i].hash_len);
        if (!h || json_array_append_new(ids, h))
            e = BR_ENOMEM;
    }
    if (!e) {
        r = json_object();
        e = r ? set_new(r, "start", uint_json(d->revisions[0].gen)) : BR_ENOMEM;
    }
    if (!e) {
        e = set_new(r, "ids", ids);
        ids = NULL; /* taken by set_new */
    }
    if (!e) {
        e = set_new(obj, "_revisions", r);
        r = NULL;
    }
    json_decref(ids);
    json_decref(r);
    return e;
}

br_err br_json_doc_render(const struct br_doc *d, json_t **out, struct br_errbuf *eb)
{
    br_err e = BR_OK;
    json_t *body = NULL;
    json_t *obj = json_object();
    if (!obj) {
        e = BR_ENOMEM;
        goto done;
    }
    if (d->id) {
        e = set_new(obj, "_id", json_stringn(d->id, d->id_len));
        if (e)
            goto done;
    }
    if (d->rev.gen || d->rev.hash_len) {
        e = set_new(obj, "_rev", rev_string(&d->rev));
        if (e)
            goto done;
    }
    if (d->body && d->body_len) {
        e = br_json_from_cbor(d->body, d->body_len, &body, eb);
        if (e)
            goto done;
        if (!json_is_object(body)) {
            e = br_fail(eb, BR_EPROTO, "document body is not a map");
            goto done;
        }
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(body, k, klen, v)
        {
            if (json_object_setn_nocheck(obj, k, klen, v)) {
                e = BR_ENOMEM;
                goto done;
            }
        }
    }
    if (d->deleted) {
        e = set_new(obj, "_deleted", json_true());
        if (e)
            goto done;
    }
    if (d->n_atts) {
        e = render_attachments(obj, d);
        if (e)
            goto done;
    }
    if (d->n_revisions) {
        e = render_revisions(obj, d);
        if (e)
            goto done;
    }
    if (d->n_conflicts) {
        e = rev_array(obj, "_conflicts", d->conflicts, d->n_conflicts);
        if (e)
            goto done;
    }
    if (d->n_deleted_conflicts) {
        e = rev_array(obj, "_deleted_conflicts", d->deleted_conflicts, d->n_deleted_conflicts);
        if (e)
            goto done;
    }
    *out = obj;
    obj = NULL;
done:
    if (e == BR_ENOMEM)
        br_errbuf_set(eb, "out of memory");
    json_decref(body);
    json_decref(obj);
    return e;
}

/* ---- writing JSON text straight from a read document ----
 *
 * br_json_doc_write produces the bytes json_dumps(JSON_COMPACT) gives for br_json_doc_render's
 * tree, without the tree: the CBOR body is walked once and written as text. jansson's dump is
 * copied exactly: strings escape '"', '\\' and the controls (\b \f \n \r \t, others \u00XX in
 * upper case hex) and nothing else; integers are decimal; reals are %.17g with ".0" added when
 * neither '.' nor 'e' appears, and '+' and leading zeros dropped from the exponent. jansson
 * objects keep insertion order, which for the body is the CBOR map order. Where the tree would
 * differ from a straight walk the tree path is taken instead, so the output is always the same:
 * a top-level body key starting with "_" (the metadata would overwrite it in place), map keys
 * not in strictly increasing canonical order (there may be duplicates, which the tree rejects),
 * a repeated attachment name (the tree keeps one), or a string jansson would refuse. */

#define JW_TREE ((br_err)1000) /* internal: take the tree path (never returned) */

static const char HEXU[] = "0123456789ABCDEF";

static bool jw_utf8_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        i += plain_run(s + i, s + n);
        if (i == n)
            break;
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = utf8_seq((const unsigned char *)s + i, (const unsigned char *)s + n);
        if (!l)
            return false;
        i += l;
    }
    return true;
}

/* Append s, valid UTF-8, as a JSON string. */
static br_err jw_string(br_buf *b, const char *s, size_t n)
{
    br_err e = br_buf_reserve(b, n + 2);
    if (e)
        return e;
    b->data[b->len++] = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && (unsigned char)s[run] >= 0x20 && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i && (e = br_buf_append(b, s + i, run - i)))
            return e;
        if (run == n)
            break;
        unsigned char c = (unsigned char)s[run];
        i = run + 1;
        char esc[6] = {'\\', 'u', '0', '0', HEXU[c >> 4], HEXU[c & 15]};
        size_t el = 2;
        switch (c) {
        case '"':
        case '\\':
            esc[1] = (char)c;
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            el = 6;
        }
        if ((e = br_buf_append(b, esc, el)))
            return e;
    }
    return br_buf_append_byte(b, '"');
}

br_err br_json_write_string(br_buf *out, const char *s, size_t n)
{
    if (!jw_utf8_ok(s, n))
        return BR_EINVAL;
    size_t at = out->len;
    br_err e = jw_string(out, s, n);
    if (e)
        out->len = at;
    return e;
}

static br_err jw_uint(br_buf *b, uint64_t v)
{
    char t[24];
    size_t n = 0;
    do {
        t[sizeof t - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return br_buf_append(b, t + sizeof t - n, n);
}

/* uint_json's clamp, written. */
static br_err jw_uint_clamped(br_buf *b, uint64_t v)
{
    return jw_uint(b, v > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : v);
}

/* jansson's jsonp_dtostr at its default precision (17), in the C locale. */
static br_err jw_real(br_buf *b, double v)
{
    char buf[48];
    int ret = snprintf(buf, sizeof buf, "%.17g", v);
    if (ret < 0 || (size_t)ret + 3 >= sizeof buf)
        return BR_EPROTO;
    size_t len = (size_t)ret;
    if (!strchr(buf, '.') && !strchr(buf, 'e')) {
        memcpy(buf + len, ".0", 3);
        len += 2;
    }
    char *start = strchr(buf, 'e');
    if (start) {
        start++;
        char *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - buf) + 1);
            len -= (size_t)(end - start);
        }
    }
    return br_buf_append(b, buf, len);
}

/* The separator before a member of the document object, then its quoted key and ':'. */
static br_err jw_member(br_buf *b, bool *first, const char *quoted_key_colon)
{
    br_err e = *first ? BR_OK : br_buf_append_byte(b, ',');
    *first = false;
    return e ? e : br_buf_append_str(b, quoted_key_colon);
}

static br_err jw_value(struct br_cbor_reader *r, unsigned depth_left, br_buf *b,
                       struct br_errbuf *eb);

/* A map's members; with top (the document body) without braces, and the document object's
 * separator state in *first. */
static br_err jw_members(struct br_cbor_reader *r, size_t n, unsigned depth_left, br_buf *b,
                         bool top, bool *first, struct br_errbuf *eb)
{
    const char *prev = NULL;
    size_t prev_len = 0;
    br_err e = BR_OK;
    for (size_t i = 0; i < n; i++) {
        const char *k;
        size_t kl;
        if (br_cbor_read_text(r, &k, &kl))
            return br_fail(eb, BR_EPROTO, "map key is not a text string");
        if (prev && (kl < prev_len || (kl == prev_len && memcmp(prev, k, kl) >= 0)))
            return JW_TREE; /* not in canonical order: maybe a duplicate */
        if (top && kl > 0 && k[0] == '_')
            return JW_TREE;
        prev = k;
        prev_len = kl;
        if ((!*first && (e = br_buf_append_byte(b, ','))))
            return e;
        *first = false;
        if ((e = jw_string(b, k, kl)) || (e = br_buf_append_byte(b, ':')) ||
            (e = jw_value(r, depth_left, b, eb)))
            return e;
    }
    return BR_OK;
}

/* One CBOR value as JSON text; errors as br_json_from_cbor's. */
static br_err jw_value(struct br_cbor_reader *r, unsigned depth_left, br_buf *b,
                       struct br_errbuf *eb)
{
    struct br_cbor_item it;
    if (br_cbor_next(r, &it))
        return br_fail(eb, BR_EPROTO, "malformed or truncated CBOR");
    br_err e;
    bool first = true;
    switch (it.type) {
    case BR_CBOR_UINT:
        if (it.u > (uint64_t)INT64_MAX)
            return br_fail(eb, BR_EPROTO, "integer %" PRIu64 " is beyond JSON's int64", it.u);
        return jw_uint(b, it.u);
    case BR_CBOR_NEGINT:
        if (it.u > (uint64_t)INT64_MAX)
            return br_fail(eb, BR_EPROTO, "integer below -2^63 is beyond JSON's int64");
        if ((e = br_buf_append_byte(b, '-')))
            return e;
        return jw_uint(b, it.u + 1);
    case BR_CBOR_TEXT:
        return jw_string(b, (const char *)it.str, it.len);
    case BR_CBOR_FLOAT:
        if (!isfinite(it.f))
            return br_fail(eb, BR_EPROTO, "NaN or infinity is not JSON");
        return jw_real(b, it.f);
    case BR_CBOR_BOOL:
        return br_buf_append_str(b, it.b ? "true" : "false");
    case BR_CBOR_NULL:
        return br_buf_append_str(b, "null");
    case BR_CBOR_BYTES:
        return br_fail(eb, BR_EPROTO, "byte string is not JSON");
    case BR_CBOR_ARRAY:
        if (depth_left == 0)
            return br_fail(eb, BR_EPROTO, "CBOR nested deeper than %d", BR_CBOR_MAX_DEPTH);
        if ((e = br_buf_append_byte(b, '[')))
            return e;
        for (size_t i = 0; i < it.len; i++) {
            if ((i && (e = br_buf_append_byte(b, ','))) || (e = jw_value(r, depth_left - 1, b, eb)))
                return e;
        }
        return br_buf_append_byte(b, ']');
    case BR_CBOR_MAP:
        if (depth_left == 0)
            return br_fail(eb, BR_EPROTO, "CBOR nested deeper than %d", BR_CBOR_MAX_DEPTH);
        if ((e = br_buf_append_byte(b, '{')) ||
            (e = jw_members(r, it.len, depth_left - 1, b, false, &first, eb)))
            return e;
        return br_buf_append_byte(b, '}');
    }
    return br_fail(eb, BR_EPROTO, "malformed or truncated CBOR");
}

/* A revision's text, as the tree's json_stringn would take it (JW_TREE if it would not). */
static br_err jw_rev(br_buf *b, const struct br_rev *r)
{
    char text[BR_REV_TEXT_MAX];
    size_t n = br_rev_format(r, text);
    return jw_utf8_ok(text, n) ? jw_string(b, text, n) : JW_TREE;
}

static br_err jw_rev_array(br_buf *b, bool *first, const char *key, const struct br_rev *revs,
                           size_t n)
{
    br_err e = jw_member(b, first, key);
    if (!e)
        e = br_buf_append_byte(b, '[');
    for (size_t i = 0; !e && i < n; i++) {
        if (i)
            e = br_buf_append_byte(b, ',');
        if (!e)
            e = jw_rev(b, &revs[i]);
    }
    return e ? e : br_buf_append_byte(b, ']');
}

/* A C string the tree takes with json_string (UTF-8 checked), or JW_TREE. */
static br_err jw_cstring(br_buf *b, const char *s)
{
    size_t n = strlen(s);
    return jw_utf8_ok(s, n) ? jw_string(b, s, n) : JW_TREE;
}

static br_err jw_attachments(br_buf *b, bool *first, const struct br_doc *d)
{
    br_err e = jw_member(b, first, "\"_attachments\":{");
    for (size_t i = 0; !e && i < d->n_atts; i++) {
        const struct br_att_stub *s = &d->atts[i];
        const char *name = s->name ? s->name : "";
        for (size_t j = 0; j < i && !e; j++) {
            if (strcmp(name, d->atts[j].name ? d->atts[j].name : "") == 0)
                e = JW_TREE; /* the tree keeps the last under the first's place */
        }
        if (!e && memchr(s->digest, 0, sizeof s->digest) == NULL)
            e = JW_TREE; /* not a C string: left to the tree path */
        if (!e && i)
            e = br_buf_append_byte(b, ',');
        if (!e)
            e = jw_cstring(b, name);
        if (!e)
            e = br_buf_append_str(b, ":{");
        if (!e && s->content_type) {
            e = br_buf_append_str(b, "\"content_type\":");
            if (!e)
                e = jw_cstring(b, s->content_type);
            if (!e)
                e = br_buf_append_byte(b, ',');
        }
        if (!e)
            e = br_buf_append_str(b, "\"revpos\":");
        if (!e)
            e = jw_uint_clamped(b, s->revpos);
        if (!e)
            e = br_buf_append_str(b, ",\"digest\":");
        if (!e)
            e = jw_cstring(b, s->digest);
        if (!e)
            e = br_buf_append_str(b, ",\"length\":");
        if (!e)
            e = jw_uint_clamped(b, s->length);
        if (!e)
            e = br_buf_append_str(b, ",\"stub\":true}");
    }
    return e ? e : br_buf_append_byte(b, '}');
}

static br_err jw_revisions(br_buf *b, bool *first, const struct br_doc *d)
{
    br_err e = jw_member(b, first, "\"_revisions\":{\"start\":");
    if (!e)
        e = jw_uint_clamped(b, d->revisions[0].gen);
    if (!e)
        e = br_buf_append_str(b, ",\"ids\":[");
    for (size_t i = 0; !e && i < d->n_revisions; i++) {
        const struct br_rev *r = &d->revisions[i];
        if (i)
            e = br_buf_append_byte(b, ',');
        if (!e)
            e = jw_utf8_ok(r->hash, r->hash_len) ? jw_string(b, r->hash, r->hash_len) : JW_TREE;
    }
    return e ? e : br_buf_append_str(b, "]}");
}

/* The tree path: render, then dump. */
static br_err jw_tree(const struct br_doc *d, br_buf *out, struct br_errbuf *eb)
{
    json_t *j = NULL;
    br_err e = br_json_doc_render(d, &j, eb);
    if (e)
        return e;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) {
        br_errbuf_set(eb, "out of memory");
        return BR_ENOMEM;
    }
    e = br_buf_append_str(out, s);
    free(s);
    return e;
}

static br_err jw_doc(const struct br_doc *d, br_buf *out, struct br_errbuf *eb)
{
    bool first = true;
    br_err e = br_buf_append_byte(out, '{');
    if (!e && d->id) {
        e = jw_member(out, &first, "\"_id\":");
        if (!e)
            e = jw_utf8_ok(d->id, d->id_len) ? jw_string(out, d->id, d->id_len) : JW_TREE;
    }
    if (!e && (d->rev.gen || d->rev.hash_len)) {
        e = jw_member(out, &first, "\"_rev\":");
        if (!e)
            e = jw_rev(out, &d->rev);
    }
    if (!e && d->body && d->body_len) {
        struct br_cbor_reader r;
        struct br_cbor_item it;
        br_cbor_reader_init(&r, d->body, d->body_len);
        if (br_cbor_next(&r, &it) || it.type != BR_CBOR_MAP)
            e = JW_TREE; /* the tree path names the error */
        else
            e = jw_members(&r, it.len, BR_CBOR_MAX_DEPTH - 1, out, true, &first, eb);
        if (!e && !br_cbor_at_end(&r))
            e = br_fail(eb, BR_EPROTO, "trailing bytes after the CBOR value");
    }
    if (!e && d->deleted)
        e = jw_member(out, &first, "\"_deleted\":true");
    if (!e && d->n_atts)
        e = jw_attachments(out, &first, d);
    if (!e && d->n_revisions)
        e = jw_revisions(out, &first, d);
    if (!e && d->n_conflicts)
        e = jw_rev_array(out, &first, "\"_conflicts\":", d->conflicts, d->n_conflicts);
    if (!e && d->n_deleted_conflicts)
        e = jw_rev_array(out, &first, "\"_deleted_conflicts\":", d->deleted_conflicts,
                         d->n_deleted_conflicts);
    return e ? e : br_buf_append_byte(out, '}');
}

br_err br_json_doc_write(const struct br_doc *d, br_buf *out, struct br_errbuf *eb)
{
    size_t at = out->len;
    br_err e = jw_doc(d, out, eb);
    if (e == JW_TREE) {
        out->len = at;
        e = jw_tree(d, out, eb);
    }
    if (e) {
        out->len = at;
        if (e == BR_ENOMEM)
            br_errbuf_set(eb, "out of memory");
    }
    return e;
}
