/* json.c — JSON at the edges: strict parsing with jansson (duplicate keys, NUL and trailing
 * garbage rejected, errors with line and column), conversion from any JSON value to barrel's
 * canonical CBOR (object keys sorted by encoded bytes, integers as CBOR integers, reals as the
 * shortest exact float) and back through the bounded CBOR reader, and the CouchDB split of a
 * JSON document into its metadata (_id, _rev, _deleted, _revisions, _attachments) and its body.
 * jansson errors are translated here (BR_EINVAL for bad JSON, BR_ENOMEM for failed
 * allocations) and never travel upward. */
#include "barrel/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <locale.h>
#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"

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

static void jp_ws(struct jparser *jp)
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

/* A number: an integer (json_int_t) unless it has a fraction or an exponent. */
static json_t *jp_number(struct jparser *jp)
{
    const char *start = jp->p, *p = jp->p, *end = jp->end;
    bool neg = false, real = false;
    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= end || !is_digit(*p)) {
        jp_fail(jp, "invalid number");
        return NULL;
    }
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            jp_fail(jp, "invalid number (leading zero)");
            return NULL;
        }
    } else {
        while (p < end && is_digit(*p))
            p++;
    }
    const char *int_end = p;
    if (p < end && *p == '.') {
        real = true;
        p++;
        if (p >= end || !is_digit(*p)) {
            jp->p = p;
            jp_fail(jp, "invalid number (digit expected after '.')");
            return NULL;
        }
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p)) {
            jp->p = p;
            jp_fail(jp, "invalid number (digit expected in exponent)");
            return NULL;
        }
        while (p < end && is_digit(*p))
            p++;
    }
    json_t *v;
    if (!real) {
        uint64_t u = 0;
        for (const char *d = start + neg; d < int_end; d++) {
            unsigned dig = (unsigned)(*d - '0');
            if (u > (UINT64_MAX - dig) / 10) {
                jp_fail(jp, "too big integer");
                return NULL;
            }
            u = u * 10 + dig;
        }
        if (u > (uint64_t)INT64_MAX + (neg ? 1u : 0u)) {
            jp_fail(jp, neg ? "too big negative integer" : "too big integer");
            return NULL;
        }
        json_int_t iv =
            neg ? (u == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(json_int_t)u) : (json_int_t)u;
        v = json_integer(iv);
    } else {
        /* strtod wants a NUL-terminated copy, with the locale's decimal point. */
        size_t len = (size_t)(p - start);
        char *buf = jp->small;
        if (len + 1 > JP_SCRATCH) {
            buf = jp_room(jp, len + 1);
            if (!buf)
                return NULL;
        }
        memcpy(buf, start, len);
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
            return NULL;
        }
        v = json_real(d);
    }
    if (!v) {
        jp_oom(jp);
        return NULL;
    }
    jp->p = p;
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
static int key_cmp(const void *a, const void *b)
{
    const struct key *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->k, y->k, x->len);
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

static br_err parse_members(const json_t *obj, const char *id_from_url, struct br_json_doc *d,
                            struct br_errbuf *eb)
{
    br_err e = BR_OK;
    bool have_rev = false;
    const json_t *revisions = NULL;
    const char *id = NULL;
    size_t id_len = 0;
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
        d->id = br_strndup(id, id_len);
        if (!d->id)
            return BR_ENOMEM;
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
    br_err e = parse_members(obj, id_from_url, d, eb);
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
    return BR_OK;
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
