/* paths.c — a document's paths and topics, and MQTT-style patterns over them (paths.h).
 *
 * br_paths_foreach walks a CBOR body once with br_cbor_next and an explicit frame stack (no
 * recursion), building the joined keys of the current position in one reused key buffer:
 * entering a map value appends "/key", an array adds nothing (membership, Decisions §5), so
 * nested arrays flatten and objects inside arrays continue the key path. Every scalar leaf is a
 * path; identical (keys, value) pairs are reported once, found with a small open-addressing hash
 * set. The key buffer, the set and the set's key arena start in stack memory and move to the
 * heap only for large documents, so a typical write allocates nothing here. The set hashes with
 * XXH3 seeded by the XXH3 of the whole body: a peer cannot craft a body whose paths cluster in
 * the table (changing any byte changes every slot), which keeps dedup linear on hostile input.
 *
 * Topics: the keys, '/', then the value: integers in decimal; floats in the shortest of
 * %.15g/%.16g/%.17g that reads back to the same double, with ".0" added when that text looks
 * like an integer, so a float topic never equals an int topic (3.0 gives "x/3.0", 3 gives
 * "x/3"); strings as they are (already cut); true, false, null. A string value "3.0" and the
 * float 3.0 do share a topic, as do "1" and 1: topics carry no types (as upstream).
 *
 * Patterns: br_pattern_match walks pattern and topic segments side by side. The trie keys
 * nodes by segment: exact children in a sorted array (binary search), plus one '+' and one '#'
 * slot per node; each node counts the pairs below it, so removal knows which nodes became
 * empty and frees them. Matching is a depth-first walk that backtracks through parent
 * pointers (recomputing the topic offset of the parent segment), so it needs no stack at all
 * however deep the patterns (up to 2,049 segments), visits only the nodes the topic can reach,
 * and allocates nothing. A pair added twice is held twice (a multiset): it is reported twice
 * and needs two removals, which is what reference-counted subscriptions want. */
#include "barrel/paths.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"

/* ---- a growable byte buffer that starts in caller (stack) memory ---- */

struct sbuf {
    char *p;
    size_t len, cap;
    bool heap;
};

static void sbuf_init(struct sbuf *b, char *inl, size_t cap)
{
    b->p = inl;
    b->len = 0;
    b->cap = cap;
    b->heap = false;
}

static void sbuf_fini(struct sbuf *b)
{
    if (b->heap)
        br_free(b->p);
}

static br_err sbuf_reserve(struct sbuf *b, size_t extra)
{
    if (extra > SIZE_MAX / 4 - b->len)
        return BR_ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return BR_OK;
    size_t ncap = b->cap * 2;
    while (ncap < need)
        ncap *= 2;
    char *np;
    if (b->heap) {
        np = br_realloc(b->p, ncap);
    } else {
        np = br_malloc(ncap);
        if (np && b->len)
            memcpy(np, b->p, b->len);
    }
    if (!np)
        return BR_ENOMEM;
    b->p = np;
    b->cap = ncap;
    b->heap = true;
    return BR_OK;
}

static br_err sbuf_append(struct sbuf *b, const void *s, size_t n)
{
    br_err e = sbuf_reserve(b, n);
    if (e)
        return e;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    return BR_OK;
}

/* ---- the per-call set of (keys, value) pairs already reported ---- */

/* A set of pairs: entries appended in order, and an index of 8-byte slots (0: empty; else the
 * entry's number + 1 in the low half and the top half of its hash as a tag), so a probe touches
 * one small slot and reads an entry only when the tag agrees. */
struct seen_ent {
    uint64_t h;
    size_t koff, klen; /* keys, in the arena */
    const char *s;     /* string value, borrowed from the body */
    size_t slen;
    uint64_t v; /* int value or float bits */
    enum br_pv_type type;
};

#define SEEN_INLINE 64  /* index slots on the stack: up to 32 distinct paths allocate nothing */
#define KEYS_INLINE 256 /* key buffer on the stack */
#define ARENA_INLINE 512

struct seen {
    uint64_t *slots;
    size_t cap; /* a power of two, at least twice n */
    struct seen_ent *ents;
    size_t n, ents_cap;
    bool slots_heap, ents_heap;
    uint64_t seed;
    struct sbuf arena;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebu;
    x ^= x >> 31;
    return x;
}

static uint64_t pv_bits(const struct br_path_value *pv)
{
    uint64_t v = 0;
    if (pv->type == BR_PV_INT)
        v = (uint64_t)pv->i;
    else if (pv->type == BR_PV_FLOAT)
        memcpy(&v, &pv->f, sizeof v);
    return v;
}

static uint64_t pv_hash(const struct br_path_value *pv, uint64_t seed)
{
    uint64_t h = XXH3_64bits_withSeed(pv->keys, pv->keys_len, seed);
    h ^= (uint64_t)pv->type << 56;
    if (pv->type == BR_PV_STRING)
        return XXH3_64bits_withSeed(pv->s, pv->s_len, h);
    return mix64(h ^ mix64(pv_bits(pv)));
}

static bool ent_is(const struct seen *st, const struct seen_ent *en, const struct br_path_value *pv,
                   uint64_t h)
{
    if (en->h != h || en->type != pv->type || en->klen != pv->keys_len)
        return false;
    if (pv->keys_len && memcmp(st->arena.p + en->koff, pv->keys, pv->keys_len) != 0)
        return false;
    if (pv->type == BR_PV_STRING)
        return en->slen == pv->s_len && (!pv->s_len || memcmp(en->s, pv->s, pv->s_len) == 0);
    return en->v == pv_bits(pv);
}

static uint64_t slot_of(uint64_t h, size_t idx)
{
    return (h & 0xffffffff00000000u) | (uint64_t)(idx + 1);
}

static void seen_fini(struct seen *st)
{
    sbuf_fini(&st->arena);
    if (st->ents_heap)
        br_free(st->ents);
    if (st->slots_heap)
        br_free(st->slots);
}

static br_err seen_grow_index(struct seen *st)
{
    size_t ncap = st->cap * 2;
    uint64_t *ns = br_calloc(ncap, sizeof *ns);
    if (!ns)
        return BR_ENOMEM;
    for (size_t k = 0; k < st->n; k++) {
        size_t j = (size_t)st->ents[k].h & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = slot_of(st->ents[k].h, k);
    }
    if (st->slots_heap)
        br_free(st->slots);
    st->slots = ns;
    st->cap = ncap;
    st->slots_heap = true;
    return BR_OK;
}

static br_err seen_grow_ents(struct seen *st)
{
    size_t ncap = st->ents_cap * 2;
    struct seen_ent *ne;
    if (st->ents_heap) {
        ne = br_realloc(st->ents, ncap * sizeof *ne);
    } else {
        ne = br_malloc(ncap * sizeof *ne);
        if (ne)
            memcpy(ne, st->ents, st->n * sizeof *ne);
    }
    if (!ne)
        return BR_ENOMEM;
    st->ents = ne;
    st->ents_cap = ncap;
    st->ents_heap = true;
    return BR_OK;
}

/* Record pv; *fresh tells whether it was new. On error the set still holds what it held. */
static br_err seen_add(struct seen *st, const struct br_path_value *pv, bool *fresh)
{
    br_err e = BR_OK;
    if (st->n >= UINT32_MAX - 1 || st->n > SIZE_MAX / 4 / sizeof *st->ents)
        return BR_ENOMEM;
    if ((st->n + 1) * 2 > st->cap)
        e = seen_grow_index(st);
    if (!e && st->n == st->ents_cap)
        e = seen_grow_ents(st);
    if (e)
        return e;
    uint64_t h = pv_hash(pv, st->seed);
    size_t mask = st->cap - 1;
    size_t i = (size_t)h & mask;
    while (st->slots[i]) {
        uint64_t sl = st->slots[i];
        if ((sl ^ h) >> 32 == 0 && ent_is(st, &st->ents[(uint32_t)sl - 1], pv, h)) {
            *fresh = false;
            return BR_OK;
        }
        i = (i + 1) & mask;
    }
    /* members of one array share their keys: store them once */
    const struct seen_ent *last = st->n ? &st->ents[st->n - 1] : NULL;
    size_t koff = st->arena.len;
    if (last && last->klen == pv->keys_len &&
        (!pv->keys_len || memcmp(st->arena.p + last->koff, pv->keys, pv->keys_len) == 0))
        koff = last->koff;
    else
        e = sbuf_append(&st->arena, pv->keys, pv->keys_len);
    if (e)
        return e;
    st->ents[st->n] = (struct seen_ent){
        .h = h,
        .koff = koff,
        .klen = pv->keys_len,
        .s = pv->s,
        .slen = pv->s_len,
        .v = pv_bits(pv),
        .type = pv->type,
    };
    st->slots[i] = slot_of(h, st->n);
    st->n++;
    *fresh = true;
    return BR_OK;
}

/* ---- the walk ---- */

struct frame {
    uint64_t left; /* map pairs or array elements still to read */
    size_t base;   /* key-buffer length at this container */
    bool is_map;
    bool quiet; /* inside a top-level "_" value: checked like the rest, never reported */
};

/* Turn a scalar item into a path value (keys filled by the caller). BR_EPROTO for what a
 * document body cannot hold: byte strings, non-finite floats, integers below INT64_MIN. */
static br_err scalar_value(const struct br_cbor_item *it, struct br_path_value *pv)
{
    switch (it->type) {
    case BR_CBOR_UINT:
        if (it->u > (uint64_t)INT64_MAX) {
            pv->type = BR_PV_FLOAT;
            pv->f = (double)it->u;
        } else {
            pv->type = BR_PV_INT;
            pv->i = (int64_t)it->u;
        }
        return BR_OK;
    case BR_CBOR_NEGINT:
        if (it->u > (uint64_t)INT64_MAX)
            return BR_EPROTO;
        pv->type = BR_PV_INT;
        pv->i = -1 - (int64_t)it->u;
        return BR_OK;
    case BR_CBOR_FLOAT:
        if (!isfinite(it->f))
            return BR_EPROTO;
        pv->type = BR_PV_FLOAT;
        pv->f = it->f;
        return BR_OK;
    case BR_CBOR_BOOL:
        pv->type = it->b ? BR_PV_TRUE : BR_PV_FALSE;
        return BR_OK;
    case BR_CBOR_NULL:
        pv->type = BR_PV_NULL;
        return BR_OK;
    case BR_CBOR_TEXT: {
        /* the reader checked the UTF-8; cut back to the last whole character within the cut */
        size_t n = it->len;
        if (n > BR_PATH_STRING_CUT) {
            n = BR_PATH_STRING_CUT;
            while (n > 0 && (it->str[n] & 0xc0) == 0x80)
                n--;
        }
        pv->type = BR_PV_STRING;
        pv->s = (const char *)it->str;
        pv->s_len = n;
        return BR_OK;
    }
    default:
        return BR_EPROTO;
    }
}

br_err br_paths_foreach(const uint8_t *body, size_t len, br_paths_cb cb, void *arg)
{
    char key_inl[KEYS_INLINE];
    char arena_inl[ARENA_INLINE];
    uint64_t slots_inl[SEEN_INLINE];
    struct seen_ent ents_inl[SEEN_INLINE / 2];
    struct frame fr[BR_PATH_MAX_DEPTH];
    struct sbuf kb;
    struct seen st = {
        .slots = slots_inl, .cap = SEEN_INLINE, .ents = ents_inl, .ents_cap = SEEN_INLINE / 2};
    struct br_cbor_reader r;
    struct br_cbor_item it;
    unsigned depth = 0;
    bool quiet = false;
    br_err e = BR_EPROTO;

    memset(slots_inl, 0, sizeof slots_inl);
    sbuf_init(&kb, key_inl, sizeof key_inl);
    sbuf_init(&st.arena, arena_inl, sizeof arena_inl);
    if (!body)
        goto done;
    br_cbor_reader_init(&r, body, len);
    e = br_cbor_next(&r, &it);
    if (e)
        goto done;
    if (it.type != BR_CBOR_MAP) {
        e = BR_EPROTO;
        goto done;
    }
    st.seed = XXH3_64bits(body, len);
    fr[depth++] = (struct frame){.left = it.len, .base = 0, .is_map = true};
    while (depth) {
        struct frame *f = &fr[depth - 1];
        if (f->left == 0) {
            depth--;
            continue;
        }
        f->left--;
        kb.len = f->base;
        quiet = f->quiet;
        if (f->is_map) {
            e = br_cbor_next(&r, &it);
            if (!e && it.type != BR_CBOR_TEXT)
                e = BR_EPROTO;
            if (e)
                goto done;
            quiet = f->quiet || (depth == 1 && it.len > 0 && it.str[0] == '_');
            if (!quiet && depth > 1)
                e = sbuf_append(&kb, "/", 1);
            if (!quiet && !e)
                e = sbuf_append(&kb, it.str, it.len);
            if (e)
                goto done;
        }
        e = br_cbor_next(&r, &it);
        if (e)
            goto done;
        if (it.type == BR_CBOR_ARRAY || it.type == BR_CBOR_MAP) {
            if (depth >= BR_PATH_MAX_DEPTH) {
                e = BR_EPROTO;
                goto done;
            }
            if (it.len)
                fr[depth++] = (struct frame){.left = it.len,
                                             .base = kb.len,
                                             .is_map = it.type == BR_CBOR_MAP,
                                             .quiet = quiet};
            continue;
        }
        struct br_path_value pv = {.keys = kb.p, .keys_len = kb.len};
        e = scalar_value(&it, &pv);
        if (e)
            goto done;
        if (quiet)
            continue;
        bool fresh;
        e = seen_add(&st, &pv, &fresh);
        if (e)
            goto done;
        if (fresh && cb(arg, &pv) != 0)
            goto done; /* stopped by the caller: e is BR_OK */
    }
    e = br_cbor_at_end(&r) ? BR_OK : BR_EPROTO;
done:
    seen_fini(&st);
    sbuf_fini(&kb);
    return e;
}

/* ---- topics ---- */

static bool reads_back(const char *s, double f)
{
    return strtod(s, NULL) == f;
}

/* Decimal text of v into out (at least 21 bytes); returns its length. */
static size_t format_int(int64_t v, char *out)
{
    char tmp[24];
    size_t k = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t n = 0;
    if (v < 0)
        out[n++] = '-';
    while (k)
        out[n++] = tmp[--k];
    out[n] = '\0';
    return n;
}

static const double POW10[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};

/* What format_float's "%.15g" branch prints, without printf and strtod, for the floats most
 * documents hold: 1e-4 <= |f| < 1e15 (or 0) with at most 15 significant digits, the range in
 * which %g prints fixed-point. If m / 10^k, with m an integer below 10^15, rounds to f, then
 * that decimal is what %.15g prints (any decimal of at most DBL_DIG = 15 significant digits
 * comes back from the nearest double unchanged) and it reads back as f, so format_float would
 * keep it. Returns 0 when f is not of that kind (the caller then takes the printf path). */
static size_t format_float_fast(double f, char *out)
{
    double a = fabs(f);
    if (!(a == 0 || (a >= 1e-4 && a < 1e15)))
        return 0;
    for (unsigned k = 0; k < sizeof POW10 / sizeof POW10[0]; k++) {
        double m = nearbyint(a * POW10[k]);
        if (m >= 1e15)
            return 0; /* more than 15 significant digits */
        if (m / POW10[k] != a)
            continue;
        uint64_t um = (uint64_t)m, ip = um, fp = 0;
        for (unsigned j = 0; j < k; j++)
            ip /= 10;
        fp = um - ip * (uint64_t)POW10[k];
        size_t n = 0;
        if (signbit(f))
            out[n++] = '-';
        n += format_int((int64_t)ip, out + n);
        if (k && fp) {
            char d[16];
            for (unsigned j = k; j-- > 0; fp /= 10)
                d[j] = (char)('0' + fp % 10);
            unsigned last = k;
            while (last > 0 && d[last - 1] == '0')
                last--;
            out[n++] = '.';
            memcpy(out + n, d, last);
            n += last;
        } else {
            out[n++] = '.'; /* an integral float: ".0", as format_float adds */
            out[n++] = '0';
        }
        out[n] = '\0';
        return n;
    }
    return 0;
}

/* The shortest round-trip text of f into out (cap >= 32); returns its length. */
static size_t format_float(double f, char *out, size_t cap)
{
    size_t fast = format_float_fast(f, out);
    if (fast)
        return fast;
    int n = snprintf(out, cap, "%.15g", f);
    if (!reads_back(out, f)) {
        n = snprintf(out, cap, "%.16g", f);
        if (!reads_back(out, f))
            n = snprintf(out, cap, "%.17g", f);
    }
    if (n < 0 || (size_t)n >= cap - 2)
        return 0; /* cannot happen for a double with cap >= 32 */
    size_t len = (size_t)n;
    if (strspn(out, "-0123456789") == len) {
        out[len++] = '.';
        out[len++] = '0';
        out[len] = '\0';
    }
    return len;
}

br_err br_path_topic(const struct br_path_value *pv, br_buf *out)
{
    char num[48];
    const char *v = num;
    size_t vlen = 0;
    switch (pv->type) {
    case BR_PV_NULL:
        v = "null";
        vlen = 4;
        break;
    case BR_PV_FALSE:
        v = "false";
        vlen = 5;
        break;
    case BR_PV_TRUE:
        v = "true";
        vlen = 4;
        break;
    case BR_PV_INT:
        vlen = format_int(pv->i, num);
        break;
    case BR_PV_FLOAT:
        vlen = format_float(pv->f, num, sizeof num);
        break;
    case BR_PV_STRING:
        v = pv->s;
        vlen = pv->s_len;
        break;
    default:
        return BR_EINVAL;
    }
    if (pv->keys_len > SIZE_MAX / 2 || vlen > SIZE_MAX / 2)
        return BR_ETOOBIG;
    /* reserve first so that out is unchanged on failure */
    br_err e = br_buf_reserve(out, pv->keys_len + 1 + vlen);
    if (!e)
        e = br_buf_append(out, pv->keys, pv->keys_len);
    if (!e)
        e = br_buf_append_byte(out, '/');
    if (!e)
        e = br_buf_append(out, v, vlen);
    return e;
}

struct topics_ctx {
    br_buf buf; /* topics, each followed by a NUL */
    size_t n;
    br_err err;
};

static int collect_topic(void *arg, const struct br_path_value *pv)
{
    struct topics_ctx *c = arg;
    br_err e = br_path_topic(pv, &c->buf);
    if (!e)
        e = br_buf_append_byte(&c->buf, 0);
    if (e) {
        c->err = e;
        return 1;
    }
    c->n++;
    return 0;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A topic holding a NUL byte (a key or string with U+0000) is seen by C-string users up to the
 * NUL, so the sort and the dedup compare C strings too. */
br_err br_paths_topics(const uint8_t *body, size_t len, char ***out, size_t *n)
{
    struct topics_ctx c = {.n = 0, .err = BR_OK};
    char **block = NULL;
    br_buf_init(&c.buf, 0);
    br_err e = br_paths_foreach(body, len, collect_topic, &c);
    if (!e)
        e = c.err;
    if (e)
        goto done;
    if (c.n == 0) {
        *out = NULL;
        *n = 0;
        goto done;
    }
    if (c.n > (SIZE_MAX - c.buf.len) / sizeof(char *)) {
        e = BR_ENOMEM;
        goto done;
    }
    size_t ptrs = c.n * sizeof(char *);
    block = br_malloc(ptrs + c.buf.len);
    if (!block) {
        e = BR_ENOMEM;
        goto done;
    }
    char *text = (char *)block + ptrs;
    memcpy(text, c.buf.data, c.buf.len);
    for (size_t i = 0, off = 0; i < c.n; i++) {
        block[i] = text + off;
        off += strlen(text + off) + 1;
    }
    qsort(block, c.n, sizeof *block, cmp_cstr);
    size_t u = 1;
    for (size_t i = 1; i < c.n; i++)
        if (strcmp(block[i], block[u - 1]) != 0)
            block[u++] = block[i];
    *out = block;
    *n = u;
    block = NULL;
done:
    br_free(block);
    br_buf_fini(&c.buf);
    return e;
}

/* ---- patterns ---- */

br_err br_pattern_check(const char *p, size_t len, struct br_errbuf *eb)
{
    if (!p || len == 0)
        return br_fail(eb, BR_EINVAL, "invalid pattern: empty");
    if (len > BR_PATTERN_MAX)
        return br_fail(eb, BR_EINVAL, "invalid pattern: longer than %d bytes", BR_PATTERN_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\0')
            return br_fail(eb, BR_EINVAL, "invalid pattern: NUL byte at %zu", i);
        if (c != '+' && c != '#')
            continue;
        bool whole = (i == 0 || p[i - 1] == '/') && (i + 1 == len || p[i + 1] == '/');
        if (!whole)
            return br_fail(eb, BR_EINVAL, "invalid pattern: '%c' at %zu must be a whole segment", c,
                           i);
        if (c == '#' && i + 1 != len)
            return br_fail(eb, BR_EINVAL, "invalid pattern: '#' must be the last segment");
    }
    return BR_OK;
}

static size_t seg_end(const char *s, size_t pos, size_t len)
{
    const char *q = pos < len ? memchr(s + pos, '/', len - pos) : NULL;
    return q ? (size_t)(q - s) : len;
}

static bool is_wild(const char *p, size_t s, size_t e, char w)
{
    return e - s == 1 && p[s] == w;
}

bool br_pattern_match(const char *p, size_t plen, const char *topic, size_t tlen)
{
    if (!p || plen == 0 || (!topic && tlen))
        return false;
    if (!topic)
        topic = ""; /* (NULL, 0) is the empty topic */
    bool dollar = tlen > 0 && topic[0] == '$';
    size_t pi = 0, ti = 0; /* starts of the next segments; ti > tlen: topic used up */
    for (;;) {
        size_t pe = seg_end(p, pi, plen);
        if (is_wild(p, pi, pe, '#'))
            return !(pi == 0 && dollar);
        if (ti > tlen)
            return false;
        size_t te = seg_end(topic, ti, tlen);
        if (is_wild(p, pi, pe, '+')) {
            if (pi == 0 && dollar)
                return false;
        } else if (pe - pi != te - ti || (te > ti && memcmp(p + pi, topic + ti, te - ti) != 0)) {
            return false;
        }
        if (pe == plen)
            return te == tlen;
        pi = pe + 1;
        ti = te + 1;
    }
}

/* ---- the trie ---- */

/* An exact child with its segment's length and first bytes beside the pointer, so a binary
 * search over a node's children reads one contiguous array and follows a pointer only for the
 * child it settles on or a segment longer than the cached bytes (with thousands of patterns
 * under one segment, chasing a node per probe was a fifth of publishing a change,
 * bench/query_bench.c part 2). */
struct kid {
    size_t len;
    uint64_t head; /* the first (up to) 8 bytes, big-endian, zero-padded: orders like memcmp */
    struct node *n;
};

struct node {
    struct node *parent;
    struct kid *kids; /* exact children, sorted by (segment length, bytes) */
    size_t n_kids, cap_kids;
    struct node *plus, *hash;
    void **vals; /* values of the pattern ending here, in insertion order */
    size_t n_vals, cap_vals;
    size_t count; /* pairs held by this node and its descendants */
    size_t seg_len;
    char seg[]; /* this node's segment as an exact child */
};

struct br_pattern_trie {
    struct node *root;
};

static struct node *node_new(struct node *parent, const char *seg, size_t seg_len)
{
    struct node *n = br_malloc(sizeof *n + seg_len);
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->parent = parent;
    n->seg_len = seg_len;
    if (seg_len)
        memcpy(n->seg, seg, seg_len);
    return n;
}

static void node_free(struct node *n)
{
    br_free(n->kids);
    br_free(n->vals);
    br_free(n);
}

static uint64_t seg_head(const char *s, size_t len)
{
    uint64_t h = 0;
    for (size_t i = 0; i < 8; i++)
        h = h << 8 | (i < len ? (uint8_t)s[i] : 0);
    return h;
}

/* The order of kid k against segment (s, len) whose seg_head is head. */
static int kid_cmp(const struct kid *k, const char *s, size_t len, uint64_t head)
{
    if (k->len != len)
        return k->len < len ? -1 : 1;
    if (k->head != head)
        return k->head < head ? -1 : 1;
    return len > 8 ? memcmp(k->n->seg + 8, s + 8, len - 8) : 0;
}

/* Index of the exact child for s, or where it would go; *found tells which. */
static size_t kid_find(const struct node *n, const char *s, size_t len, bool *found)
{
    size_t lo = 0, hi = n->n_kids;
    uint64_t head = seg_head(s, len);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = kid_cmp(&n->kids[mid], s, len, head);
        if (c < 0) {
            lo = mid + 1;
        } else if (c > 0) {
            hi = mid;
        } else {
            *found = true;
            return mid;
        }
    }
    *found = false;
    return lo;
}

static const struct node *kid_get(const struct node *n, const char *s, size_t len)
{
    bool found;
    size_t i = kid_find(n, s, len, &found);
    return found ? n->kids[i].n : NULL;
}

/* The child of n for segment [s, s+len), created if absent. NULL on ENOMEM. */
static struct node *child_make(struct node *n, const char *s, size_t len)
{
    if (len == 1 && (s[0] == '+' || s[0] == '#')) {
        struct node **slot = s[0] == '+' ? &n->plus : &n->hash;
        if (!*slot)
            *slot = node_new(n, NULL, 0);
        return *slot;
    }
    bool found;
    size_t i = kid_find(n, s, len, &found);
    if (found)
        return n->kids[i].n;
    if (n->n_kids == n->cap_kids) {
        size_t ncap = n->cap_kids ? n->cap_kids * 2 : 4;
        struct kid *nk = br_realloc(n->kids, ncap * sizeof *nk);
        if (!nk)
            return NULL;
        n->kids = nk;
        n->cap_kids = ncap;
    }
    struct node *c = node_new(n, s, len);
    if (!c)
        return NULL;
    memmove(&n->kids[i + 1], &n->kids[i], (n->n_kids - i) * sizeof *n->kids);
    n->kids[i] = (struct kid){.len = len, .head = seg_head(s, len), .n = c};
    n->n_kids++;
    return c;
}

/* The node of an existing pattern, or NULL. */
static struct node *pattern_node(struct node *n, const char *p, size_t len)
{
    size_t s = 0;
    for (;;) {
        size_t e = seg_end(p, s, len);
        if (is_wild(p, s, e, '+'))
            n = n->plus;
        else if (is_wild(p, s, e, '#'))
            n = n->hash;
        else
            n = (struct node *)kid_get(n, p + s, e - s);
        if (!n || e == len)
            return n;
        s = e + 1;
    }
}

/* Free n and its ancestors while they hold no pairs (never the root). */
static void prune(struct br_pattern_trie *t, struct node *n)
{
    while (n != t->root && n->count == 0) {
        struct node *p = n->parent;
        if (p->plus == n) {
            p->plus = NULL;
        } else if (p->hash == n) {
            p->hash = NULL;
        } else {
            bool found;
            size_t i = kid_find(p, n->seg, n->seg_len, &found);
            if (found) {
                memmove(&p->kids[i], &p->kids[i + 1], (p->n_kids - i - 1) * sizeof *p->kids);
                p->n_kids--;
            }
        }
        node_free(n);
        n = p;
    }
}

br_err br_pattern_trie_new(br_pattern_trie **out)
{
    br_pattern_trie *t = br_malloc(sizeof *t);
    if (!t)
        return BR_ENOMEM;
    t->root = node_new(NULL, NULL, 0);
    if (!t->root) {
        br_free(t);
        return BR_ENOMEM;
    }
    *out = t;
    return BR_OK;
}

void br_pattern_trie_free(br_pattern_trie *t)
{
    if (!t)
        return;
    /* post-order through parent pointers: no recursion, no stack */
    struct node *n = t->root;
    while (n) {
        struct node *c = NULL;
        if (n->n_kids) {
            c = n->kids[--n->n_kids].n;
        } else if (n->plus) {
            c = n->plus;
            n->plus = NULL;
        } else if (n->hash) {
            c = n->hash;
            n->hash = NULL;
        }
        if (c) {
            n = c;
            continue;
        }
        struct node *p = n->parent;
        node_free(n);
        n = p;
    }
    br_free(t);
}

br_err br_pattern_trie_add(br_pattern_trie *t, const char *p, size_t len, void *value)
{
    br_err e = br_pattern_check(p, len, NULL);
    if (e)
        return e;
    struct node *n = t->root;
    size_t s = 0;
    for (;;) {
        size_t end = seg_end(p, s, len);
        struct node *c = child_make(n, p + s, end - s);
        if (!c) {
            e = BR_ENOMEM;
            goto fail;
        }
        n = c;
        if (end == len)
            break;
        s = end + 1;
    }
    if (n->n_vals == n->cap_vals) {
        size_t ncap = n->cap_vals ? n->cap_vals * 2 : 2;
        void **nv = br_realloc(n->vals, ncap * sizeof *nv);
        if (!nv) {
            e = BR_ENOMEM;
            goto fail;
        }
        n->vals = nv;
        n->cap_vals = ncap;
    }
    n->vals[n->n_vals++] = value;
    for (struct node *a = n; a; a = a->parent)
        a->count++;
    return BR_OK;
fail:
    prune(t, n); /* nodes made by this call still count 0 */
    return e;
}

br_err br_pattern_trie_remove(br_pattern_trie *t, const char *p, size_t len, void *value)
{
    br_err e = br_pattern_check(p, len, NULL);
    if (e)
        return e;
    struct node *n = pattern_node(t->root, p, len);
    if (!n)
        return BR_ENOTFOUND;
    size_t i = 0;
    while (i < n->n_vals && n->vals[i] != value)
        i++;
    if (i == n->n_vals)
        return BR_ENOTFOUND;
    memmove(&n->vals[i], &n->vals[i + 1], (n->n_vals - i - 1) * sizeof *n->vals);
    n->n_vals--;
    for (struct node *a = n; a; a = a->parent)
        a->count--;
    prune(t, n);
    return BR_OK;
}

size_t br_pattern_trie_size(const br_pattern_trie *t)
{
    return t ? t->root->count : 0;
}

static void report(const struct node *n, br_trie_cb cb, void *arg)
{
    for (size_t i = 0; i < n->n_vals; i++)
        cb(arg, n->vals[i]);
}

/* Start of the topic segment that ends just before pos (pos >= 1: one past its '/' or end). */
static size_t seg_start_before(const char *topic, size_t pos)
{
    size_t i = pos - 1; /* the segment's end */
    while (i > 0 && topic[i - 1] != '/')
        i--;
    return i;
}

void br_pattern_trie_match(const br_pattern_trie *t, const char *topic, size_t len, br_trie_cb cb,
                           void *arg)
{
    if (!t || (!topic && len))
        return;
    if (!topic)
        topic = ""; /* (NULL, 0) is the empty topic */
    const struct node *root = t->root;
    bool dollar = len > 0 && topic[0] == '$';
    const struct node *n = root;
    size_t pos = 0; /* start of the next topic segment; > len once the topic is used up */
    bool down = true;
    /* Depth-first: descend into the exact child first, then (when backtracking) into '+'.
     * A '#' child is reported on arrival at its parent, never entered. */
    while (n) {
        bool wild_ok = !(n == root && dollar);
        if (down) {
            if (n->count == 0)
                down = false; /* an empty trie: nothing below */
            else if (n->hash && wild_ok)
                report(n->hash, cb, arg);
            if (down && pos > len) {
                report(n, cb, arg);
                down = false;
            }
            if (!down)
                continue;
            size_t e = seg_end(topic, pos, len);
            const struct node *next = kid_get(n, topic + pos, e - pos);
            if (!next && wild_ok)
                next = n->plus;
            if (next) {
                n = next;
                pos = e + 1;
            } else {
                down = false;
            }
            continue;
        }
        if (n == root)
            break;
        const struct node *p = n->parent;
        if (n != p->plus && p->plus && !(p == root && dollar)) {
            n = p->plus; /* same segment, so pos stays */
            down = true;
            continue;
        }
        pos = seg_start_before(topic, pos);
        n = p;
    }
}
