/* cbor.c — barrel's CBOR: a canonical writer (shortest heads, shortest exact floats), a bounded
 * pull reader over untrusted bytes (item heads decoded by libcbor's streaming decoder, with
 * every length checked against the bytes that remain), and the validator and canonicaliser of
 * document bodies (maps of JSON types, keys sorted by encoded bytes, RFC 8949 §4.2.1). Nothing
 * here asserts on input: malformed bytes are BR_EPROTO, and no libcbor error travels upward. */
#include "barrel/cbor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <float.h>

#include "barrel/alloc.h"

/* ---- writer ---- */

enum {
    MT_UINT = 0,
    MT_NEGINT = 1,
    MT_BYTES = 2,
    MT_TEXT = 3,
    MT_ARRAY = 4,
    MT_MAP = 5,
};

/* Encode a head of major type mt with argument v in its shortest form; returns its length. */
static size_t head_encode(uint8_t out[9], unsigned mt, uint64_t v)
{
    uint8_t ib = (uint8_t)(mt << 5);
    if (v < 24) {
        out[0] = (uint8_t)(ib | v);
        return 1;
    }
    size_t n;
    if (v <= 0xff) {
        out[0] = ib | 24;
        n = 1;
    } else if (v <= 0xffff) {
        out[0] = ib | 25;
        n = 2;
    } else if (v <= 0xffffffffu) {
        out[0] = ib | 26;
        n = 4;
    } else {
        out[0] = ib | 27;
        n = 8;
    }
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return 1 + n;
}

/* Append a head and then n payload bytes, all or nothing. */
static br_err put_head(br_buf *b, unsigned mt, uint64_t v, const void *payload, size_t n)
{
    uint8_t h[9];
    size_t hn = head_encode(h, mt, v);
    if (n > SIZE_MAX - hn)
        return BR_ETOOBIG;
    br_err e = br_buf_reserve(b, hn + n);
    if (e)
        return e;
    /* Room is reserved (with the NUL byte): write in place rather than append twice. */
    memcpy(b->data + b->len, h, hn);
    if (n)
        memcpy(b->data + b->len + hn, payload, n);
    b->len += hn + n;
    b->data[b->len] = 0;
    return BR_OK;
}

/* RFC 3629 UTF-8: no overlongs, no surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (n - i - 1 < k)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

br_err br_cbor_put_uint(br_buf *b, uint64_t v)
{
    return put_head(b, MT_UINT, v, NULL, 0);
}

br_err br_cbor_put_int(br_buf *b, int64_t v)
{
    if (v >= 0)
        return put_head(b, MT_UINT, (uint64_t)v, NULL, 0);
    /* -1 - v without overflow: -(v + 1) fits in int64 for every negative v */
    return put_head(b, MT_NEGINT, (uint64_t)(-(v + 1)), NULL, 0);
}

/* Text must be valid UTF-8 (BR_EINVAL otherwise): the reader rejects anything else, so the
 * writer never produces bytes barrel itself would refuse. */
br_err br_cbor_put_str(br_buf *b, const char *s, size_t n)
{
    if (n && !s)
        return BR_EINVAL;
    if (!utf8_valid((const uint8_t *)s, n))
        return BR_EINVAL;
    return put_head(b, MT_TEXT, n, s, n);
}

br_err br_cbor_put_cstr(br_buf *b, const char *s)
{
    if (!s)
        return BR_EINVAL;
    return br_cbor_put_str(b, s, strlen(s));
}

br_err br_cbor_put_bytes(br_buf *b, const void *p, size_t n)
{
    if (n && !p)
        return BR_EINVAL;
    return put_head(b, MT_BYTES, n, p, n);
}

br_err br_cbor_put_array(br_buf *b, size_t n)
{
    return put_head(b, MT_ARRAY, n, NULL, 0);
}

br_err br_cbor_put_map(br_buf *b, size_t n)
{
    return put_head(b, MT_MAP, n, NULL, 0);
}

br_err br_cbor_put_bool(br_buf *b, bool v)
{
    return br_buf_append_byte(b, v ? 0xf5 : 0xf4);
}

br_err br_cbor_put_null(br_buf *b)
{
    return br_buf_append_byte(b, 0xf6);
}

/* If v (finite) is exactly a binary16 value, store its bits in *h. */
static bool half_exact(double v, uint16_t *h)
{
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double a = fabs(v);
    if (a == 0) {
        *h = sign;
        return true;
    }
    if (a > 65504.0)
        return false;
    int e;
    double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    if (e - 1 >= -14) {
        /* normal: 1.f * 2^(e-1) with 10 fraction bits */
        double sig = ldexp(m, 11); /* in [1024, 2048): the cast is safe */
        if (sig != (double)(uint32_t)sig)
            return false;
        *h = (uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)((uint32_t)sig - 1024));
        return true;
    }
    /* subnormal: k * 2^-24 with k < 1024 */
    double k = ldexp(a, 24); /* below 1024 since a < 2^-14 */
    if (k != (double)(uint32_t)k)
        return false;
    *h = (uint16_t)(sign | (uint16_t)k);
    return true;
}

br_err br_cbor_put_double(br_buf *b, double v)
{
    uint8_t out[BR_CBOR_HEAD_MAX];
    size_t n = br_cbor_double_encode(out, v);
    if (!n)
        return BR_EINVAL;
    return br_buf_append(b, out, n);
}

size_t br_cbor_double_encode(uint8_t out[BR_CBOR_HEAD_MAX], double v)
{
    if (!isfinite(v))
        return 0;
    size_t n;
    uint16_t h;
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    /* A double using any of the low 29 of its 52 fraction bits has more significant bits than
     * a float (24) or a half (11) holds, normal or not; most measured values are like that. */
    bool wide = (bits & 0x1fffffffu) != 0;
    if (!wide && half_exact(v, &h)) {
        out[0] = 0xf9;
        out[1] = (uint8_t)(h >> 8);
        out[2] = (uint8_t)h;
        n = 3;
    } else if (!wide && fabs(v) <= FLT_MAX && (double)(float)v == v) {
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        out[0] = 0xfa;
        for (int i = 0; i < 4; i++)
            out[1 + i] = (uint8_t)(u >> (8 * (3 - i)));
        n = 5;
    } else {
        uint64_t u;
        memcpy(&u, &v, sizeof u);
        out[0] = 0xfb;
        for (int i = 0; i < 8; i++)
            out[1 + i] = (uint8_t)(u >> (8 * (7 - i)));
        n = 9;
    }
    return n;
}

/* ---- reader ---- */

/* What the streaming decoder's callbacks saw for one item head. */
struct head {
    struct br_cbor_item *it;
    bool bad; /* a tag, an indefinite length, a break or undefined */
};

static void on_uint8(void *c, uint8_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_UINT;
    h->it->u = v;
}

static void on_uint16(void *c, uint16_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_UINT;
    h->it->u = v;
}

static void on_uint32(void *c, uint32_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_UINT;
    h->it->u = v;
}

static void on_uint64(void *c, uint64_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_UINT;
    h->it->u = v;
}

static void on_negint8(void *c, uint8_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_NEGINT;
    h->it->u = v;
}

static void on_negint16(void *c, uint16_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_NEGINT;
    h->it->u = v;
}

static void on_negint32(void *c, uint32_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_NEGINT;
    h->it->u = v;
}

static void on_negint64(void *c, uint64_t v)
{
    struct head *h = c;
    h->it->type = BR_CBOR_NEGINT;
    h->it->u = v;
}

static void on_bytes(void *c, cbor_data p, size_t n)
{
    struct head *h = c;
    h->it->type = BR_CBOR_BYTES;
    h->it->str = p;
    h->it->len = n;
}

static void on_text(void *c, cbor_data p, size_t n)
{
    struct head *h = c;
    h->it->type = BR_CBOR_TEXT;
    h->it->str = p;
    h->it->len = n;
}

static void on_array(void *c, size_t n)
{
    struct head *h = c;
    h->it->type = BR_CBOR_ARRAY;
    h->it->len = n;
}

static void on_map(void *c, size_t n)
{
    struct head *h = c;
    h->it->type = BR_CBOR_MAP;
    h->it->len = n;
}

static void on_float(void *c, float f)
{
    struct head *h = c;
    h->it->type = BR_CBOR_FLOAT;
    h->it->f = f;
}

static void on_double(void *c, double f)
{
    struct head *h = c;
    h->it->type = BR_CBOR_FLOAT;
    h->it->f = f;
}

static void on_bool(void *c, bool b)
{
    struct head *h = c;
    h->it->type = BR_CBOR_BOOL;
    h->it->b = b;
}

static void on_null(void *c)
{
    struct head *h = c;
    h->it->type = BR_CBOR_NULL;
}

static void on_bad(void *c)
{
    struct head *h = c;
    h->bad = true;
}

static void on_tag(void *c, uint64_t tag)
{
    (void)tag;
    on_bad(c);
}

/* Every field is set: libcbor calls them without checking for NULL. */
static const struct cbor_callbacks head_callbacks = {
    .uint8 = on_uint8,
    .uint16 = on_uint16,
    .uint32 = on_uint32,
    .uint64 = on_uint64,
    .negint64 = on_negint64,
    .negint32 = on_negint32,
    .negint16 = on_negint16,
    .negint8 = on_negint8,
    .byte_string_start = on_bad,
    .byte_string = on_bytes,
    .string = on_text,
    .string_start = on_bad,
    .indef_array_start = on_bad,
    .array_start = on_array,
    .indef_map_start = on_bad,
    .map_start = on_map,
    .tag = on_tag,
    .float2 = on_float,
    .float4 = on_float,
    .float8 = on_double,
    .undefined = on_bad,
    .null = on_null,
    .boolean = on_bool,
    .indef_break = on_bad,
};

br_err br_cbor_next(struct br_cbor_reader *r, struct br_cbor_item *it)
{
    if (r->p >= r->end)
        return BR_EPROTO;
    struct br_cbor_item tmp = {.start = r->p};
    struct head h = {.it = &tmp};
    size_t avail = (size_t)(r->end - r->p);
    struct cbor_decoder_result res = cbor_stream_decode(r->p, avail, &head_callbacks, &h);
    if (res.status != CBOR_DECODER_FINISHED || h.bad || res.read == 0 || res.read > avail)
        return BR_EPROTO;
    size_t left = avail - res.read;
    switch (tmp.type) {
    case BR_CBOR_TEXT:
        if (!utf8_valid(tmp.str, tmp.len))
            return BR_EPROTO;
        break;
    case BR_CBOR_ARRAY: /* every element needs at least one byte */
        if (tmp.len > left)
            return BR_EPROTO;
        break;
    case BR_CBOR_MAP: /* every pair needs at least two */
        if (tmp.len > left / 2)
            return BR_EPROTO;
        break;
    default:
        break;
    }
    r->p += res.read;
    *it = tmp;
    return BR_OK;
}

/* The value of an IEEE 754 binary16, widened as libcbor widens it (to float). */
static float half_value(uint16_t half)
{
    int exp = (half >> 10) & 0x1f, mant = half & 0x3ff;
    double val;
    if (exp == 0)
        val = ldexp(mant, -24);
    else if (exp != 31)
        val = ldexp(mant + 1024, exp - 25);
    else
        val = mant == 0 ? INFINITY : NAN;
    return (float)(half & 0x8000 ? -val : val);
}

static uint64_t be_uint(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* br_cbor_next without libcbor's callback machinery, for the document validator, which runs on
 * every document write (bench/store_bench.c: about 3,000 instructions of a 25,000-instruction
 * write went to br_cbor_next through libcbor). It accepts and returns exactly what
 * br_cbor_next does: definite lengths only; no tags, undefined, breaks, reserved additional
 * information or simple values other than false, true and null; lengths within the input; valid
 * UTF-8 text; container counts the remaining bytes can hold. */
static br_err next_fast(struct br_cbor_reader *r, struct br_cbor_item *it)
{
    const uint8_t *p = r->p;
    if (p >= r->end)
        return BR_EPROTO;
    size_t avail = (size_t)(r->end - p);
    struct br_cbor_item tmp = {.start = p};
    unsigned mt = p[0] >> 5, ai = p[0] & 0x1f;
    size_t hl = 1; /* head length */
    uint64_t v = ai;
    if (ai >= 24) {
        if (ai > 27)
            return BR_EPROTO; /* reserved, or indefinite / break */
        size_t k = (size_t)1 << (ai - 24);
        if (avail < 1 + k)
            return BR_EPROTO;
        v = be_uint(p + 1, k);
        hl = 1 + k;
    }
    switch (mt) {
    case MT_UINT:
        tmp.type = BR_CBOR_UINT;
        tmp.u = v;
        break;
    case MT_NEGINT:
        tmp.type = BR_CBOR_NEGINT;
        tmp.u = v;
        break;
    case MT_BYTES:
    case MT_TEXT:
        if (v > avail - hl)
            return BR_EPROTO;
        tmp.type = mt == MT_TEXT ? BR_CBOR_TEXT : BR_CBOR_BYTES;
        tmp.str = p + hl;
        tmp.len = (size_t)v;
        hl += (size_t)v;
        if (mt == MT_TEXT && !utf8_valid(tmp.str, tmp.len))
            return BR_EPROTO;
        break;
    case MT_ARRAY: /* every element needs at least one byte */
        if (v > avail - hl)
            return BR_EPROTO;
        tmp.type = BR_CBOR_ARRAY;
        tmp.len = (size_t)v;
        break;
    case MT_MAP: /* every pair needs at least two */
        if (v > (avail - hl) / 2)
            return BR_EPROTO;
        tmp.type = BR_CBOR_MAP;
        tmp.len = (size_t)v;
        break;
    case 6:
        return BR_EPROTO; /* tags */
    default:              /* 7: simple values and floats */
        switch (ai) {
        case 20:
        case 21:
            tmp.type = BR_CBOR_BOOL;
            tmp.b = ai == 21;
            break;
        case 22:
            tmp.type = BR_CBOR_NULL;
            break;
        case 25:
            tmp.type = BR_CBOR_FLOAT;
            tmp.f = half_value((uint16_t)v);
            break;
        case 26: {
            uint32_t u = (uint32_t)v;
            float f;
            memcpy(&f, &u, sizeof f);
            tmp.type = BR_CBOR_FLOAT;
            tmp.f = f;
            break;
        }
        case 27:
            tmp.type = BR_CBOR_FLOAT;
            memcpy(&tmp.f, &v, sizeof tmp.f);
            break;
        default:
            return BR_EPROTO; /* undefined, unassigned simple values */
        }
        break;
    }
    r->p += hl;
    *it = tmp;
    return BR_OK;
}

/* Pending item counts of the open containers, innermost last. */
struct nest {
    uint64_t left[BR_CBOR_MAX_DEPTH];
    unsigned depth;
};

/* Account for one item just read at the current level; open a level if it is a non-empty
 * container. BR_EPROTO past max_depth. */
static br_err nest_push(struct nest *ns, const struct br_cbor_item *it, unsigned max_depth)
{
    if (ns->depth)
        ns->left[ns->depth - 1]--;
    if (it->type == BR_CBOR_ARRAY || it->type == BR_CBOR_MAP) {
        if (ns->depth >= max_depth)
            return BR_EPROTO;
        /* n <= bytes left (checked by br_cbor_next), so 2n cannot overflow */
        uint64_t n = it->type == BR_CBOR_MAP ? 2 * (uint64_t)it->len : it->len;
        ns->left[ns->depth++] = n;
    }
    while (ns->depth && ns->left[ns->depth - 1] == 0)
        ns->depth--;
    return BR_OK;
}

static unsigned clamp_depth(unsigned max_depth)
{
    return max_depth > BR_CBOR_MAX_DEPTH ? BR_CBOR_MAX_DEPTH : max_depth;
}

/* max_depth counts nested containers (a scalar needs 0, [[1]] needs 2); values above
 * BR_CBOR_MAX_DEPTH are treated as BR_CBOR_MAX_DEPTH. */
br_err br_cbor_skip(struct br_cbor_reader *r, unsigned max_depth)
{
    struct nest ns = {.depth = 0};
    unsigned md = clamp_depth(max_depth);
    struct br_cbor_reader save = *r;
    do {
        struct br_cbor_item it;
        br_err e = br_cbor_next(r, &it);
        if (!e)
            e = nest_push(&ns, &it, md);
        if (e) {
            *r = save;
            return e;
        }
    } while (ns.depth);
    return BR_OK;
}

/* Read the next item and require its type; the reader does not move on a mismatch. */
static br_err next_of(struct br_cbor_reader *r, enum br_cbor_type t, struct br_cbor_item *it)
{
    struct br_cbor_reader save = *r;
    br_err e = br_cbor_next(r, it);
    if (e)
        return e;
    if (it->type != t) {
        *r = save;
        return BR_EPROTO;
    }
    return BR_OK;
}

br_err br_cbor_read_uint(struct br_cbor_reader *r, uint64_t *v)
{
    struct br_cbor_item it;
    br_err e = next_of(r, BR_CBOR_UINT, &it);
    if (!e)
        *v = it.u;
    return e;
}

br_err br_cbor_read_text(struct br_cbor_reader *r, const char **s, size_t *n)
{
    struct br_cbor_item it;
    br_err e = next_of(r, BR_CBOR_TEXT, &it);
    if (!e) {
        *s = (const char *)it.str;
        *n = it.len;
    }
    return e;
}

br_err br_cbor_read_bytes(struct br_cbor_reader *r, const uint8_t **p, size_t *n)
{
    struct br_cbor_item it;
    br_err e = next_of(r, BR_CBOR_BYTES, &it);
    if (!e) {
        *p = it.str;
        *n = it.len;
    }
    return e;
}

br_err br_cbor_read_array(struct br_cbor_reader *r, size_t *n)
{
    struct br_cbor_item it;
    br_err e = next_of(r, BR_CBOR_ARRAY, &it);
    if (!e)
        *n = it.len;
    return e;
}

br_err br_cbor_read_map(struct br_cbor_reader *r, size_t *n)
{
    struct br_cbor_item it;
    br_err e = next_of(r, BR_CBOR_MAP, &it);
    if (!e)
        *n = it.len;
    return e;
}

br_err br_cbor_read_bool(struct br_cbor_reader *r, bool *v)
{
    struct br_cbor_item it;
    br_err e = next_of(r, BR_CBOR_BOOL, &it);
    if (!e)
        *v = it.b;
    return e;
}

/* ---- documents ---- */

#define INT64_MAX_U ((uint64_t)INT64_MAX)

static unsigned doc_depth(unsigned max_depth)
{
    return max_depth ? clamp_depth(max_depth) : BR_CBOR_MAX_DEPTH;
}

/* Check one item against the JSON types; is_key: it sits in a map's key position. */
static br_err check_json(const struct br_cbor_item *it, bool is_key, const uint8_t *base,
                         struct br_errbuf *eb)
{
    size_t off = (size_t)(it->start - base);
    if (is_key && it->type != BR_CBOR_TEXT)
        return br_fail(eb, BR_EPROTO, "map key is not a text string at offset %zu", off);
    switch (it->type) {
    case BR_CBOR_BYTES:
        return br_fail(eb, BR_EPROTO, "byte string at offset %zu is not a JSON type", off);
    case BR_CBOR_NEGINT:
        if (it->u > INT64_MAX_U)
            return br_fail(eb, BR_EPROTO, "integer below -2^63 at offset %zu", off);
        break;
    case BR_CBOR_FLOAT:
        if (!isfinite(it->f))
            return br_fail(eb, BR_EPROTO, "NaN or infinity at offset %zu", off);
        break;
    default:
        break;
    }
    return BR_OK;
}

static br_err next_doc(struct br_cbor_reader *r, const uint8_t *base, struct br_cbor_item *it,
                       struct br_errbuf *eb)
{
    br_err e = next_fast(r, it);
    if (e)
        return br_fail(eb, e, "malformed or truncated CBOR at offset %zu", (size_t)(r->p - base));
    return BR_OK;
}

/* The first item must be a map (looked at without consuming it). */
static br_err check_top_map(const uint8_t *p, size_t n, struct br_errbuf *eb)
{
    struct br_cbor_reader r;
    struct br_cbor_item it;
    br_cbor_reader_init(&r, p, n);
    br_err e = next_doc(&r, p, &it, eb);
    if (e)
        return e;
    if (it.type != BR_CBOR_MAP)
        return br_fail(eb, BR_EPROTO, "document body is not a map");
    return BR_OK;
}

br_err br_cbor_doc_validate(const uint8_t *p, size_t n, unsigned max_depth, struct br_errbuf *eb)
{
    if (!p && n)
        return br_fail(eb, BR_EINVAL, "no document");
    br_err e = check_top_map(p, n, eb);
    if (e)
        return e;
    unsigned md = doc_depth(max_depth);
    struct br_cbor_reader r;
    br_cbor_reader_init(&r, p, n);
    struct nest ns = {.depth = 0};
    bool is_map[BR_CBOR_MAX_DEPTH];
    do {
        struct br_cbor_item it;
        e = next_doc(&r, p, &it, eb);
        if (e)
            return e;
        unsigned d = ns.depth;
        bool is_key = d && is_map[d - 1] && ns.left[d - 1] % 2 == 0;
        e = check_json(&it, is_key, p, eb);
        if (e)
            return e;
        if (nest_push(&ns, &it, md))
            return br_fail(eb, BR_EPROTO, "nesting deeper than %u", md);
        if (ns.depth > d) /* opened a level */
            is_map[ns.depth - 1] = it.type == BR_CBOR_MAP;
    } while (ns.depth);
    if (!br_cbor_at_end(&r))
        return br_fail(eb, BR_EPROTO, "trailing bytes after the document at offset %zu",
                       (size_t)(r.p - p));
    return BR_OK;
}

/* One map pair re-encoded in a scratch buffer: key bytes at p, then the value. */
struct pair {
    const uint8_t *p;
    size_t off;
    size_t klen; /* encoded key */
    size_t len;  /* encoded key and value */
};

/* RFC 8949 §4.2.1: shorter encoded key first, then bytewise. */
static int pair_cmp(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return memcmp(x->p, y->p, x->klen);
}

static br_err canon_item(struct br_cbor_reader *r, const uint8_t *base, unsigned depth_left,
                         br_buf *out, struct br_errbuf *eb);

static br_err canon_map(struct br_cbor_reader *r, const uint8_t *base, size_t n,
                        unsigned depth_left, br_buf *out, struct br_errbuf *eb)
{
    br_err e = BR_OK;
    struct pair *pairs = NULL;
    br_buf tmp;
    br_buf_init(&tmp, 0);
    if (n == 0)
        return br_cbor_put_map(out, 0);
    pairs = br_calloc(n, sizeof *pairs);
    if (!pairs) {
        e = BR_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        struct br_cbor_item key;
        e = next_doc(r, base, &key, eb);
        if (e)
            goto done;
        e = check_json(&key, true, base, eb);
        if (e)
            goto done;
        pairs[i].off = tmp.len;
        e = put_head(&tmp, MT_TEXT, key.len, key.str, key.len);
        if (e)
            goto done;
        pairs[i].klen = tmp.len - pairs[i].off;
        e = canon_item(r, base, depth_left, &tmp, eb);
        if (e)
            goto done;
        pairs[i].len = tmp.len - pairs[i].off;
    }
    for (size_t i = 0; i < n; i++)
        pairs[i].p = tmp.data + pairs[i].off;
    qsort(pairs, n, sizeof *pairs, pair_cmp);
    for (size_t i = 1; i < n; i++) {
        if (pair_cmp(&pairs[i - 1], &pairs[i]) == 0) {
            e = br_fail(eb, BR_EPROTO, "duplicate map key");
            goto done;
        }
    }
    e = br_cbor_put_map(out, n);
    if (!e)
        e = br_buf_reserve(out, tmp.len);
    for (size_t i = 0; i < n && !e; i++)
        e = br_buf_append(out, pairs[i].p, pairs[i].len);
done:
    br_buf_fini(&tmp);
    br_free(pairs);
    return e;
}

/* Re-encode the next item canonically; depth_left containers may still be opened. */
static br_err canon_item(struct br_cbor_reader *r, const uint8_t *base, unsigned depth_left,
                         br_buf *out, struct br_errbuf *eb)
{
    struct br_cbor_item it;
    br_err e = next_doc(r, base, &it, eb);
    if (e)
        return e;
    e = check_json(&it, false, base, eb);
    if (e)
        return e;
    switch (it.type) {
    case BR_CBOR_UINT:
        return put_head(out, MT_UINT, it.u, NULL, 0);
    case BR_CBOR_NEGINT:
        return put_head(out, MT_NEGINT, it.u, NULL, 0);
    case BR_CBOR_TEXT:
        return put_head(out, MT_TEXT, it.len, it.str, it.len);
    case BR_CBOR_FLOAT:
        return br_cbor_put_double(out, it.f);
    case BR_CBOR_BOOL:
        return br_cbor_put_bool(out, it.b);
    case BR_CBOR_NULL:
        return br_cbor_put_null(out);
    case BR_CBOR_ARRAY:
        if (depth_left == 0)
            return br_fail(eb, BR_EPROTO, "nesting too deep");
        e = br_cbor_put_array(out, it.len);
        for (size_t i = 0; i < it.len && !e; i++)
            e = canon_item(r, base, depth_left - 1, out, eb);
        return e;
    case BR_CBOR_MAP:
        if (depth_left == 0)
            return br_fail(eb, BR_EPROTO, "nesting too deep");
        return canon_map(r, base, it.len, depth_left - 1, out, eb);
    case BR_CBOR_BYTES: /* rejected by check_json */
        break;
    }
    return BR_EPROTO;
}

br_err br_cbor_doc_canonical(const uint8_t *p, size_t n, unsigned max_depth, br_buf *out,
                             struct br_errbuf *eb)
{
    if (!p && n)
        return br_fail(eb, BR_EINVAL, "no document");
    br_err e = check_top_map(p, n, eb);
    if (e)
        return e;
    size_t old_len = out->len;
    struct br_cbor_reader r;
    br_cbor_reader_init(&r, p, n);
    e = canon_item(&r, p, doc_depth(max_depth), out, eb);
    if (!e && !br_cbor_at_end(&r))
        e = br_fail(eb, BR_EPROTO, "trailing bytes after the document at offset %zu",
                    (size_t)(r.p - p));
    if (e) {
        out->len = old_len;
        if (out->data)
            out->data[old_len] = 0;
        if (e == BR_ENOMEM)
            br_errbuf_set(eb, "out of memory");
    }
    return e;
}
