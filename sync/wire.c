/* wire.c — encoder and strict decoder of the sync protocol's CBOR messages (wire.h).
 *
 * Decoding reads with cbor.h's bounded pull reader in two passes over the top-level map: the
 * first finds "type" and "rid" (so the type's key table is known whatever the key order), the
 * second reads every field with that table, rejecting unknown and duplicate keys. Every nested
 * object is read the same way: a table of key names, a bit mask of keys seen and of keys
 * required. Everything decoded is copied into the message's arena.
 *
 * A z envelope is opened before that: its zstd frame is checked with the stable API (declared
 * content size, one frame, no dictionary), decompressed in one shot into a buffer of exactly
 * the declared size, and the inner bytes decoded as above (a z inside is refused). Encoding
 * compresses the plain encoding when it is large enough. The zstd contexts are cached per
 * thread (a pthread key whose destructor frees them). */
#include "barrel/wire.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <zstd.h>

#include "barrel/alloc.h"
#include "barrel/cbor.h"

/* ---- arena ---- */

struct br_wire_block {
    struct br_wire_block *next;
    size_t used, cap;
    _Alignas(16) uint8_t data[];
};

#define ARENA_BLOCK 4096u

void *br_wire_alloc(br_wire_arena *a, size_t n)
{
    size_t need = (n + 15u) & ~(size_t)15u;
    if (need < n)
        return NULL;
    struct br_wire_block *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;
        if (cap > SIZE_MAX - sizeof *b)
            return NULL;
        b = br_malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        if (a->head && need > ARENA_BLOCK) {
            /* a large block goes behind the current one, which keeps its free space */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += need;
    memset(p, 0, n ? n : 1);
    return p;
}

void *br_wire_memdup(br_wire_arena *a, const void *p, size_t n)
{
    void *q = br_wire_alloc(a, n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

char *br_wire_strndup(br_wire_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *q = br_wire_alloc(a, n + 1);
    if (q && n)
        memcpy(q, s, n);
    return q;
}

void br_wire_arena_move(br_wire_arena *dst, br_wire_arena *src)
{
    struct br_wire_block *b = src->head;
    if (!b)
        return;
    while (b->next)
        b = b->next;
    b->next = dst->head;
    dst->head = src->head;
    src->head = NULL;
}

void br_wire_arena_fini(br_wire_arena *a)
{
    struct br_wire_block *b = a->head;
    while (b) {
        struct br_wire_block *next = b->next;
        br_free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- names ---- */

static const char *const TYPE_NAMES[] = {
    NULL,
    "hello",
    "digest",
    "changes",
    "changes_reply",
    "revsdiff",
    "revsdiff_reply",
    "get_revs",
    "get_revs_reply",
    "peers",
    "ping",
    "pong",
    "error",
    "put_revs",
    "put_revs_reply",
    "local_get",
    "local_get_reply",
    "local_put",
    "local_put_reply",
    "probe",
    "probe_reply",
    "z",
};
#define N_TYPES (sizeof TYPE_NAMES / sizeof TYPE_NAMES[0])

const char *br_wire_type_name(enum br_wire_type t)
{
    if ((size_t)t == 0 || (size_t)t >= N_TYPES)
        return NULL;
    return TYPE_NAMES[t];
}

/* ---- decoding ---- */

#define FRAME_DEPTH 8 /* the message frame's own nesting, on top of bodies */

struct dec {
    struct br_cbor_reader r;
    br_wire_arena *a;
    struct br_errbuf *eb;
    const char *where; /* the object being read, for reasons */
};

static br_err bad(struct dec *d, const char *fmt, ...) BR_PRINTF(2, 3);
static br_err bad(struct dec *d, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return br_fail(d->eb, BR_EPROTO, "%s: %s", d->where, msg);
}

static br_err nomem(struct dec *d)
{
    return br_fail(d->eb, BR_ENOMEM, "out of memory decoding %s", d->where);
}

static br_err next(struct dec *d, struct br_cbor_item *it)
{
    if (br_cbor_next(&d->r, it) != BR_OK)
        return bad(d, "malformed or truncated CBOR");
    return BR_OK;
}

static br_err rd_uint(struct dec *d, const char *key, uint64_t *v)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_UINT)
        return bad(d, "%s must be an unsigned integer", key);
    *v = it.u;
    return BR_OK;
}

static br_err rd_bool(struct dec *d, const char *key, bool *v)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_BOOL)
        return bad(d, "%s must be a boolean", key);
    *v = it.b;
    return BR_OK;
}

/* Text of 1..max bytes (min_len 0 allows empty), copied with a NUL; no NUL inside. */
static br_err rd_text(struct dec *d, const char *key, size_t min_len, size_t max, const char **out,
                      size_t *len)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_TEXT)
        return bad(d, "%s must be a text string", key);
    if (it.len < min_len || it.len > max)
        return bad(d, "%s must be %zu..%zu bytes (got %zu)", key, min_len, max, it.len);
    if (memchr(it.str, 0, it.len))
        return bad(d, "%s contains a NUL byte", key);
    char *s = br_wire_strndup(d->a, (const char *)it.str, it.len);
    if (!s)
        return nomem(d);
    *out = s;
    if (len)
        *len = it.len;
    return BR_OK;
}

static br_err rd_bytes(struct dec *d, const char *key, size_t exact, size_t max,
                       const uint8_t **out, size_t *len)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_BYTES)
        return bad(d, "%s must be a byte string", key);
    if (exact && it.len != exact)
        return bad(d, "%s must be %zu bytes (got %zu)", key, exact, it.len);
    if (it.len > max)
        return bad(d, "%s is longer than %zu bytes", key, max);
    uint8_t *p = br_wire_memdup(d->a, it.str, it.len);
    if (!p)
        return nomem(d);
    *out = p;
    *len = it.len;
    return BR_OK;
}

static br_err rd_hlc(struct dec *d, const char *key, struct br_hlc *h)
{
    const uint8_t *p;
    size_t n;
    br_err e = rd_bytes(d, key, BR_HLC_BYTES, BR_HLC_BYTES, &p, &n);
    if (e)
        return e;
    *h = br_hlc_decode(p);
    if (h->logical > BR_HLC_LOGICAL_MAX)
        return bad(d, "%s has a logical counter past %u", key, BR_HLC_LOGICAL_MAX);
    return BR_OK;
}

static br_err rd_rev(struct dec *d, const char *key, struct br_rev *rev)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_TEXT)
        return bad(d, "%s must be a revision text", key);
    if (br_rev_parse((const char *)it.str, it.len, rev) != BR_OK)
        return bad(d, "%s is not a revision id N-hex", key);
    return BR_OK;
}

/* A local document's revision "0-N" (N decimal, no leading zero): local docs have no tree. */
static bool local_rev_ok(const char *s, size_t n)
{
    if (n < 3 || n > 22 || s[0] != '0' || s[1] != '-' || s[2] == '0')
        return false;
    for (size_t i = 2; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static br_err rd_local_rev(struct dec *d, const char *key, struct br_rev *rev)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_TEXT || !local_rev_ok((const char *)it.str, it.len))
        return bad(d, "%s is not a local revision 0-N", key);
    memset(rev, 0, sizeof *rev);
    rev->hash_len = (uint8_t)(it.len - 2);
    memcpy(rev->hash, it.str + 2, it.len - 2);
    return BR_OK;
}

/* An array head of at most BR_WIRE_MAX_ITEMS elements. */
static br_err rd_array(struct dec *d, const char *key, size_t *n)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_ARRAY)
        return bad(d, "%s must be an array", key);
    if (it.len > BR_WIRE_MAX_ITEMS)
        return bad(d, "%s has %zu items, more than %u", key, it.len, BR_WIRE_MAX_ITEMS);
    *n = it.len;
    return BR_OK;
}

/* Allocate n elements of size sz (n <= BR_WIRE_MAX_ITEMS, so no overflow). */
static void *alloc_n(struct dec *d, size_t n, size_t sz)
{
    return br_wire_alloc(d->a, n ? n * sz : 1);
}

static br_err rd_revs(struct dec *d, const char *key, struct br_rev **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, key, &n);
    if (e)
        return e;
    struct br_rev *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        e = rd_rev(d, key, &v[i]);
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static br_err rd_texts(struct dec *d, const char *key, size_t max, const char *const **out,
                       size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, key, &n);
    if (e)
        return e;
    const char **v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        e = rd_text(d, key, 1, max, &v[i], NULL);
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

/* One whole CBOR map of JSON types (a body or a query), copied. */
static br_err rd_map_value(struct dec *d, const char *key, const uint8_t **out, size_t *len)
{
    const uint8_t *start = d->r.p;
    if (d->r.p >= d->r.end)
        return bad(d, "%s is missing its value", key);
    if ((*start >> 5) != 5)
        return bad(d, "%s must be a map", key);
    if (br_cbor_skip(&d->r, BR_CBOR_MAX_DEPTH) != BR_OK)
        return bad(d, "%s is malformed CBOR or too deeply nested (past %d levels)", key,
                   BR_CBOR_MAX_DEPTH);
    size_t n = (size_t)(d->r.p - start);
    struct br_errbuf eb2;
    if (br_cbor_doc_validate(start, n, BR_CBOR_MAX_DEPTH, &eb2) != BR_OK)
        return bad(d, "%s: %s", key, eb2.msg);
    uint8_t *p = br_wire_memdup(d->a, start, n);
    if (!p)
        return nomem(d);
    *out = p;
    *len = n;
    return BR_OK;
}

/* A key table: names[i] is bit i. */
struct keys {
    const char *const *names;
    unsigned n;
    uint32_t required;
};

/* Read the map head of an object named `what`. */
static br_err rd_object(struct dec *d, const char *what, size_t *n)
{
    struct br_cbor_item it;
    d->where = what;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_MAP)
        return bad(d, "must be a map");
    if (it.len > 32)
        return bad(d, "has %zu keys", it.len);
    *n = it.len;
    return BR_OK;
}

/* Read the next key of an object: its index in k; unknown and duplicate keys are errors. */
static br_err rd_key(struct dec *d, const struct keys *k, uint32_t *seen, unsigned *idx)
{
    struct br_cbor_item it;
    br_err e = next(d, &it);
    if (e)
        return e;
    if (it.type != BR_CBOR_TEXT)
        return bad(d, "keys must be text strings");
    for (unsigned i = 0; i < k->n; i++) {
        if (strlen(k->names[i]) == it.len && memcmp(k->names[i], it.str, it.len) == 0) {
            if (*seen & (1u << i))
                return bad(d, "duplicate key %s", k->names[i]);
            *seen |= 1u << i;
            *idx = i;
            return BR_OK;
        }
    }
    int shown = it.len > 40 ? 40 : (int)it.len;
    return bad(d, "unknown key \"%.*s\"", shown, (const char *)it.str);
}

static br_err check_required(struct dec *d, const struct keys *k, uint32_t seen)
{
    uint32_t lack = k->required & ~seen;
    for (unsigned i = 0; i < k->n; i++)
        if (lack & (1u << i))
            return bad(d, "missing key %s", k->names[i]);
    return BR_OK;
}

/* ---- nested objects ---- */

static const char *const DBD_K[] = {"name", "last", "count", "hash"};
static const struct keys DBD_KEYS = {DBD_K, 4, 0xf};

static br_err rd_dbdigests(struct dec *d, struct br_wire_dbdigest **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "dbs", &n);
    if (e)
        return e;
    struct br_wire_dbdigest *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        size_t nk;
        uint32_t seen = 0;
        e = rd_object(d, "db digest", &nk);
        for (size_t j = 0; !e && j < nk; j++) {
            unsigned k;
            const uint8_t *h;
            size_t hl;
            e = rd_key(d, &DBD_KEYS, &seen, &k);
            if (e)
                break;
            switch (k) {
            case 0:
                e = rd_text(d, "name", 1, BR_DB_NAME_MAX, &v[i].name, NULL);
                break;
            case 1:
                e = rd_hlc(d, "last", &v[i].digest.last);
                break;
            case 2:
                e = rd_uint(d, "count", &v[i].digest.doc_count);
                break;
            default:
                e = rd_bytes(d, "hash", 16, 16, &h, &hl);
                if (!e)
                    memcpy(v[i].digest.set_hash, h, 16);
                break;
            }
        }
        if (!e)
            e = check_required(d, &DBD_KEYS, seen);
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static const char *const FILT_K[] = {"paths", "query"};
static const struct keys FILT_KEYS = {FILT_K, 2, 0};

static br_err rd_filter(struct dec *d, struct br_wire_filter *f)
{
    size_t nk;
    uint32_t seen = 0;
    br_err e = rd_object(d, "filter", &nk);
    for (size_t j = 0; !e && j < nk; j++) {
        unsigned k;
        e = rd_key(d, &FILT_KEYS, &seen, &k);
        if (e)
            break;
        if (k == 0)
            e = rd_texts(d, "paths", BR_WIRE_MAX_TEXT, &f->paths, &f->n_paths);
        else
            e = rd_map_value(d, "query", &f->query, &f->query_len);
    }
    return e;
}

static const char *const CHG_K[] = {"id", "revs", "deleted", "hlc"};
static const struct keys CHG_KEYS = {CHG_K, 4, 0xf};

static br_err rd_changes(struct dec *d, struct br_wire_change **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "changes", &n);
    if (e)
        return e;
    struct br_wire_change *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        size_t nk;
        uint32_t seen = 0;
        e = rd_object(d, "change", &nk);
        for (size_t j = 0; !e && j < nk; j++) {
            unsigned k;
            e = rd_key(d, &CHG_KEYS, &seen, &k);
            if (e)
                break;
            if (k == 0)
                e = rd_text(d, "id", 1, BR_DOCID_MAX, &v[i].id, &v[i].id_len);
            else if (k == 1)
                e = rd_revs(d, "revs", &v[i].revs, &v[i].n_revs);
            else if (k == 2)
                e = rd_bool(d, "deleted", &v[i].deleted);
            else
                e = rd_hlc(d, "hlc", &v[i].seq);
        }
        if (!e)
            e = check_required(d, &CHG_KEYS, seen);
        if (!e && v[i].n_revs == 0)
            e = bad(d, "a change needs at least one revision");
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static const char *const DR_K[] = {"id", "revs"};
static const struct keys DR_KEYS = {DR_K, 2, 0x3};

static br_err rd_docrevs(struct dec *d, struct br_wire_docrevs **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "docs", &n);
    if (e)
        return e;
    struct br_wire_docrevs *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        size_t nk;
        uint32_t seen = 0;
        e = rd_object(d, "doc", &nk);
        for (size_t j = 0; !e && j < nk; j++) {
            unsigned k;
            e = rd_key(d, &DR_KEYS, &seen, &k);
            if (e)
                break;
            if (k == 0) {
                e = rd_text(d, "id", 1, BR_DOCID_MAX, &v[i].id, &v[i].id_len);
            } else {
                struct br_rev *revs = NULL;
                e = rd_revs(d, "revs", &revs, &v[i].n_revs);
                v[i].revs = revs;
            }
        }
        if (!e)
            e = check_required(d, &DR_KEYS, seen);
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static const char *const DIFF_K[] = {"id", "missing", "ancestors"};
static const struct keys DIFF_KEYS = {DIFF_K, 3, 0x7};

static br_err rd_diffs(struct dec *d, struct br_wire_diff **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "docs", &n);
    if (e)
        return e;
    struct br_wire_diff *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        size_t nk;
        uint32_t seen = 0;
        e = rd_object(d, "diff", &nk);
        for (size_t j = 0; !e && j < nk; j++) {
            unsigned k;
            e = rd_key(d, &DIFF_KEYS, &seen, &k);
            if (e)
                break;
            if (k == 0)
                e = rd_text(d, "id", 1, BR_DOCID_MAX, &v[i].id, &v[i].id_len);
            else if (k == 1)
                e = rd_revs(d, "missing", &v[i].missing, &v[i].n_missing);
            else
                e = rd_revs(d, "ancestors", &v[i].ancestors, &v[i].n_ancestors);
        }
        if (!e)
            e = check_required(d, &DIFF_KEYS, seen);
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static const char *const ATT_K[] = {"name", "type", "digest", "length", "revpos", "key", "data"};
static const struct keys ATT_KEYS = {ATT_K, 7, 0x1f};

static br_err rd_atts(struct dec *d, struct br_wire_att **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "atts", &n);
    if (e)
        return e;
    struct br_wire_att *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        size_t nk;
        uint32_t seen = 0;
        e = rd_object(d, "attachment", &nk);
        for (size_t j = 0; !e && j < nk; j++) {
            unsigned k;
            const uint8_t *p;
            size_t pl;
            e = rd_key(d, &ATT_KEYS, &seen, &k);
            if (e)
                break;
            switch (k) {
            case 0:
                e = rd_text(d, "name", 1, BR_WIRE_MAX_TEXT, &v[i].name, NULL);
                break;
            case 1:
                e = rd_text(d, "type", 1, BR_WIRE_MAX_TYPE_TEXT, &v[i].content_type, NULL);
                break;
            case 2:
                e = rd_text(d, "digest", 1, 47, &v[i].digest, NULL);
                break;
            case 3:
                e = rd_uint(d, "length", &v[i].length);
                break;
            case 4:
                e = rd_uint(d, "revpos", &v[i].revpos);
                break;
            case 5:
                e = rd_bytes(d, "key", 32, 32, &p, &pl);
                if (!e) {
                    memcpy(v[i].key, p, 32);
                    v[i].has_key = true;
                }
                break;
            default:
                e = rd_bytes(d, "data", 0, BR_WIRE_MAX_MSG, &v[i].data, &v[i].data_len);
                v[i].has_data = !e;
                break;
            }
        }
        if (!e)
            e = check_required(d, &ATT_KEYS, seen);
        if (!e && v[i].has_data && v[i].data_len != v[i].length)
            e = bad(d, "data is %zu bytes but length says %llu", v[i].data_len,
                    (unsigned long long)v[i].length);
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static bool hash_ok(const uint8_t *s, size_t n)
{
    if (n < 1 || n > BR_REV_HASH_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* ids [hash...] with start: the history newest first. `known`: the ids are the ancestors only
 * (the revision itself, of generation start, was named by the asker), and may be empty. */
static br_err rd_history(struct dec *d, uint64_t start, bool known, struct br_rev **out,
                         size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "ids", &n);
    if (e)
        return e;
    if (n == 0 && !known)
        return bad(d, "ids must not be empty");
    uint64_t top = known ? start - 1 : start;
    if (start < 1 || top < n || start > BR_REV_GEN_MAX)
        return bad(d, "start %llu does not fit %zu ids", (unsigned long long)start, n);
    struct br_rev *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        struct br_cbor_item it;
        e = next(d, &it);
        if (e)
            return e;
        if (it.type != BR_CBOR_TEXT || !hash_ok(it.str, it.len))
            return bad(d, "ids must be lowercase hex revision hashes");
        v[i].gen = top - i;
        v[i].hash_len = (uint8_t)it.len;
        memcpy(v[i].hash, it.str, it.len);
        v[i].hash[it.len] = 0;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static const char *const RD_K[] = {"id",    "rev", "missing", "deleted", "body",
                                   "start", "ids", "atts",    "known"};
static const struct keys RD_KEYS = {RD_K, 9, 0x1};
#define RD_FULL 0xf8u /* deleted, body, start, ids, atts: required unless missing */
#define RD_REV 0x2u
#define RD_KNOWN 0x100u

/* `reply`: a get_revs_reply, whose revisions may be `known` (put_revs' may not). */
static br_err rd_revdocs(struct dec *d, bool reply, struct br_wire_revdoc **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "docs", &n);
    if (e)
        return e;
    struct br_wire_revdoc *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        size_t nk;
        uint32_t seen = 0;
        uint64_t start = 0;
        e = rd_object(d, "revision", &nk);
        for (size_t j = 0; !e && j < nk; j++) {
            unsigned k;
            e = rd_key(d, &RD_KEYS, &seen, &k);
            if (e)
                break;
            switch (k) {
            case 0:
                e = rd_text(d, "id", 1, BR_DOCID_MAX, &v[i].id, &v[i].id_len);
                break;
            case 1:
                e = rd_rev(d, "rev", &v[i].rev);
                break;
            case 2:
                e = rd_bool(d, "missing", &v[i].missing);
                if (!e && !v[i].missing)
                    e = bad(d, "missing, when present, must be true");
                break;
            case 3:
                e = rd_bool(d, "deleted", &v[i].deleted);
                break;
            case 4:
                e = rd_map_value(d, "body", &v[i].body, &v[i].body_len);
                break;
            case 5:
                e = rd_uint(d, "start", &start);
                if (!e && (seen & (1u << 6)))
                    e = bad(d, "start must come before ids");
                break;
            case 6:
                if (!(seen & (1u << 5)))
                    e = bad(d, "start must come before ids");
                else if ((seen & RD_KNOWN) == 0 && (seen & RD_REV) == 0)
                    e = bad(d, "rev or known must come before ids");
                else
                    e = rd_history(d, start, (seen & RD_KNOWN) != 0, &v[i].history,
                                   &v[i].n_history);
                break;
            case 7:
                e = rd_atts(d, &v[i].atts, &v[i].n_atts);
                break;
            default:
                e = rd_bool(d, "known", &v[i].rev_known);
                if (!e && !v[i].rev_known)
                    e = bad(d, "known, when present, must be true");
                if (!e && !reply)
                    e = bad(d, "known is only for get_revs_reply");
                if (!e && (seen & (1u << 6)))
                    e = bad(d, "known must come before ids");
                break;
            }
            d->where = "revision";
        }
        if (!e)
            e = check_required(d, &RD_KEYS, seen);
        if (!e && (seen & RD_REV) != 0 && (seen & RD_KNOWN) != 0)
            e = bad(d, "rev and known exclude each other");
        if (!e && (seen & (RD_REV | RD_KNOWN)) == 0)
            e = bad(d, "missing key rev");
        if (!e && v[i].missing && (seen & (RD_FULL | RD_KNOWN)))
            e = bad(d, "a missing revision carries only id and rev");
        if (!e && !v[i].missing && (seen & RD_FULL) != RD_FULL)
            e = bad(d, "a revision needs deleted, body, start, ids and atts");
        if (!e && v[i].rev_known)
            v[i].rev.gen = start; /* the hash is the asker's (wire.h) */
        if (!e && !v[i].missing && !v[i].rev_known && !br_rev_eq(&v[i].history[0], &v[i].rev))
            e = bad(d, "history does not begin with rev");
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

static const char *const PEER_K[] = {"node", "addrs", "hlc", "state"};
static const struct keys PEER_KEYS = {PEER_K, 4, 0x7};

static br_err rd_peers(struct dec *d, struct br_wire_peer **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "peers", &n);
    if (e)
        return e;
    struct br_wire_peer *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        size_t nk;
        uint32_t seen = 0;
        e = rd_object(d, "peer", &nk);
        for (size_t j = 0; !e && j < nk; j++) {
            unsigned k;
            e = rd_key(d, &PEER_KEYS, &seen, &k);
            if (e)
                break;
            if (k == 0)
                e = rd_text(d, "node", 1, BR_WIRE_MAX_NODE, &v[i].node, NULL);
            else if (k == 1)
                e = rd_texts(d, "addrs", BR_WIRE_MAX_TEXT, &v[i].addrs, &v[i].n_addrs);
            else if (k == 2)
                e = rd_hlc(d, "hlc", &v[i].hlc);
            else if (!(e = rd_uint(d, "state", &v[i].state)) && v[i].state > 2)
                e = bad(d, "member state %llu is not 0, 1 or 2", (unsigned long long)v[i].state);
        }
        if (!e)
            e = check_required(d, &PEER_KEYS, seen);
        if (e)
            return e;
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

/* ---- top level ---- */

/* put_revs_reply's results: br_err values, each below BR_ERR_COUNT's 32-bit range. */
static br_err rd_results(struct dec *d, uint64_t **out, size_t *n_out)
{
    size_t n;
    br_err e = rd_array(d, "results", &n);
    if (e)
        return e;
    uint64_t *v = alloc_n(d, n, sizeof *v);
    if (!v)
        return nomem(d);
    for (size_t i = 0; i < n; i++) {
        e = rd_uint(d, "results", &v[i]);
        if (e)
            return e;
        if (v[i] > UINT32_MAX)
            return bad(d, "result code out of range");
    }
    *out = v;
    *n_out = n;
    return BR_OK;
}

/* Keys of each type after "type" and "rid" (bits 0 and 1); required mask includes those. */
static const char *const HELLO_K[] = {"type", "rid", "version", "node", "hlc", "dbs"};
static const char *const DIGEST_K[] = {"type", "rid", "dbs"};
static const char *const CHANGES_K[] = {"type", "rid", "db", "since", "limit", "filter"};
static const char *const CREPLY_K[] = {"type", "rid", "changes", "last", "pending"};
static const char *const RDIFF_K[] = {"type", "rid", "db", "docs"};
static const char *const RDREPLY_K[] = {"type", "rid", "docs"};
static const char *const GETREVS_K[] = {"type", "rid", "db", "docs", "have", "data"};
static const char *const PEERS_K[] = {"type", "rid", "peers", "mhash"};
static const char *const PING_K[] = {"type", "rid", "hlc"};
static const char *const ERROR_K[] = {"type", "rid", "code", "reason"};
static const char *const PUTREVS_K[] = {"type", "rid", "db", "docs"};
static const char *const PRREPLY_K[] = {"type", "rid", "results"};
static const char *const LGET_K[] = {"type", "rid", "db", "id"};
static const char *const LGREPLY_K[] = {"type", "rid", "rev", "body"};
static const char *const LPUT_K[] = {"type", "rid", "db", "id", "body", "rev"};
static const char *const LPREPLY_K[] = {"type", "rid", "rev"};
static const char *const PROBE_K[] = {"type", "rid", "node"};
static const char *const PRBREPLY_K[] = {"type", "rid", "alive"};
static const char *const Z_K[] = {"type", "rid", "z"};

static const struct keys TYPE_KEYS[N_TYPES] = {
    [BR_WIRE_HELLO] = {HELLO_K, 6, 0x3f},
    [BR_WIRE_DIGEST] = {DIGEST_K, 3, 0x7},
    [BR_WIRE_CHANGES] = {CHANGES_K, 6, 0x1f},
    [BR_WIRE_CHANGES_REPLY] = {CREPLY_K, 5, 0x1f},
    [BR_WIRE_REVSDIFF] = {RDIFF_K, 4, 0xf},
    [BR_WIRE_REVSDIFF_REPLY] = {RDREPLY_K, 3, 0x7},
    [BR_WIRE_GET_REVS] = {GETREVS_K, 6, 0x3f},
    [BR_WIRE_GET_REVS_REPLY] = {RDREPLY_K, 3, 0x7},
    [BR_WIRE_PEERS] = {PEERS_K, 4, 0x7},
    [BR_WIRE_PING] = {PING_K, 3, 0x7},
    [BR_WIRE_PONG] = {PING_K, 3, 0x7},
    [BR_WIRE_ERROR] = {ERROR_K, 4, 0xf},
    [BR_WIRE_PUT_REVS] = {PUTREVS_K, 4, 0xf},
    [BR_WIRE_PUT_REVS_REPLY] = {PRREPLY_K, 3, 0x7},
    [BR_WIRE_LOCAL_GET] = {LGET_K, 4, 0xf},
    [BR_WIRE_LOCAL_GET_REPLY] = {LGREPLY_K, 4, 0xf},
    [BR_WIRE_LOCAL_PUT] = {LPUT_K, 6, 0x1f},
    [BR_WIRE_LOCAL_PUT_REPLY] = {LPREPLY_K, 3, 0x7},
    [BR_WIRE_PROBE] = {PROBE_K, 3, 0x7},
    [BR_WIRE_PROBE_REPLY] = {PRBREPLY_K, 3, 0x7},
    [BR_WIRE_Z] = {Z_K, 3, 0x7},
};

/* First pass: the type and the request id, whatever the key order. */
static br_err scan_header(struct dec *d, enum br_wire_type *type, uint64_t *rid, bool *has_rid)
{
    size_t nk;
    bool has_type = false;
    br_err e = rd_object(d, "message", &nk);
    if (e)
        return e;
    for (size_t j = 0; j < nk; j++) {
        struct br_cbor_item it;
        e = next(d, &it);
        if (e)
            return e;
        if (it.type != BR_CBOR_TEXT)
            return bad(d, "keys must be text strings");
        if (it.len == 4 && memcmp(it.str, "type", 4) == 0) {
            struct br_cbor_item v;
            if (has_type)
                return bad(d, "duplicate key type");
            has_type = true;
            e = next(d, &v);
            if (e)
                return e;
            if (v.type != BR_CBOR_TEXT)
                return bad(d, "type must be a text string");
            *type = 0;
            for (size_t t = 1; t < N_TYPES; t++)
                if (strlen(TYPE_NAMES[t]) == v.len && memcmp(TYPE_NAMES[t], v.str, v.len) == 0)
                    *type = (enum br_wire_type)t;
            if (*type == 0) {
                int shown = v.len > 40 ? 40 : (int)v.len;
                return bad(d, "unknown message type \"%.*s\"", shown, (const char *)v.str);
            }
        } else if (it.len == 3 && memcmp(it.str, "rid", 3) == 0) {
            if (*has_rid)
                return bad(d, "duplicate key rid");
            e = rd_uint(d, "rid", rid);
            if (e)
                return e;
            *has_rid = true;
        } else if (br_cbor_skip(&d->r, BR_CBOR_MAX_DEPTH + FRAME_DEPTH) != BR_OK) {
            return bad(d, "malformed, truncated or too deeply nested CBOR");
        }
    }
    if (!br_cbor_at_end(&d->r))
        return bad(d, "trailing bytes after the message");
    if (!has_type)
        return bad(d, "missing key type");
    if (!*has_rid)
        return bad(d, "missing key rid");
    return BR_OK;
}

/* The header when the map's first two keys are "type" (a known type) and "rid", as this encoder
 * writes them: read in O(1), so the body is walked once (by decode_body, which also refuses
 * duplicate keys and, with decode_plain, trailing bytes). false: leave it to scan_header, which
 * reports what is wrong. */
static bool quick_header(const uint8_t *p, size_t n, enum br_wire_type *type, uint64_t *rid)
{
    struct br_cbor_reader r;
    struct br_cbor_item it, k, v;
    br_cbor_reader_init(&r, p, n);
    if (br_cbor_next(&r, &it) || it.type != BR_CBOR_MAP || it.len < 2 || it.len > 32 ||
        br_cbor_next(&r, &k) || br_cbor_next(&r, &v) || k.type != BR_CBOR_TEXT || k.len != 4 ||
        memcmp(k.str, "type", 4) != 0 || v.type != BR_CBOR_TEXT)
        return false;
    enum br_wire_type t = 0;
    for (size_t i = 1; i < N_TYPES && !t; i++)
        if (strlen(TYPE_NAMES[i]) == v.len && memcmp(TYPE_NAMES[i], v.str, v.len) == 0)
            t = (enum br_wire_type)i;
    if (!t || br_cbor_next(&r, &k) || br_cbor_next(&r, &v) || k.type != BR_CBOR_TEXT ||
        k.len != 3 || memcmp(k.str, "rid", 3) != 0 || v.type != BR_CBOR_UINT)
        return false;
    *type = t;
    *rid = v.u;
    return true;
}

static br_err decode_body(struct dec *d, struct br_wire_msg *m)
{
    const struct keys *k = &TYPE_KEYS[m->type];
    uint32_t seen = 0;
    size_t nk;
    br_err e = rd_object(d, TYPE_NAMES[m->type], &nk);
    for (size_t j = 0; !e && j < nk; j++) {
        unsigned i;
        d->where = TYPE_NAMES[m->type];
        e = rd_key(d, k, &seen, &i);
        if (e)
            break;
        if (i <= 1) { /* type and rid, read by the first pass */
            if (br_cbor_skip(&d->r, 1) != BR_OK)
                e = bad(d, "malformed CBOR");
            continue;
        }
        const char *key = k->names[i];
        switch (m->type) {
        case BR_WIRE_HELLO:
            if (i == 2)
                e = rd_uint(d, key, &m->u.hello.version);
            else if (i == 3)
                e = rd_text(d, key, 1, BR_WIRE_MAX_NODE, &m->u.hello.node, NULL);
            else if (i == 4)
                e = rd_hlc(d, key, &m->u.hello.hlc);
            else
                e = rd_dbdigests(d, &m->u.hello.dbs, &m->u.hello.n_dbs);
            if (!e && i == 2 && m->u.hello.version != BR_WIRE_VERSION)
                e = bad(d, "protocol version %llu is not supported (this node speaks %d)",
                        (unsigned long long)m->u.hello.version, BR_WIRE_VERSION);
            break;
        case BR_WIRE_DIGEST:
            e = rd_dbdigests(d, &m->u.digest.dbs, &m->u.digest.n_dbs);
            break;
        case BR_WIRE_CHANGES:
            if (i == 2)
                e = rd_text(d, key, 1, BR_DB_NAME_MAX, &m->u.changes.db, NULL);
            else if (i == 3)
                e = rd_hlc(d, key, &m->u.changes.since);
            else if (i == 4)
                e = rd_uint(d, key, &m->u.changes.limit);
            else {
                e = rd_filter(d, &m->u.changes.filter);
                m->u.changes.has_filter = true;
            }
            if (!e && i == 4 && m->u.changes.limit > BR_WIRE_MAX_ITEMS)
                e = bad(d, "limit past %u", BR_WIRE_MAX_ITEMS);
            break;
        case BR_WIRE_CHANGES_REPLY:
            if (i == 2)
                e = rd_changes(d, &m->u.changes_reply.changes, &m->u.changes_reply.n);
            else if (i == 3)
                e = rd_hlc(d, key, &m->u.changes_reply.last);
            else
                e = rd_uint(d, key, &m->u.changes_reply.pending);
            break;
        case BR_WIRE_REVSDIFF:
            if (i == 2)
                e = rd_text(d, key, 1, BR_DB_NAME_MAX, &m->u.revsdiff.db, NULL);
            else
                e = rd_docrevs(d, &m->u.revsdiff.docs, &m->u.revsdiff.n);
            break;
        case BR_WIRE_REVSDIFF_REPLY:
            e = rd_diffs(d, &m->u.revsdiff_reply.docs, &m->u.revsdiff_reply.n);
            break;
        case BR_WIRE_GET_REVS:
            if (i == 2)
                e = rd_text(d, key, 1, BR_DB_NAME_MAX, &m->u.get_revs.db, NULL);
            else if (i == 3)
                e = rd_docrevs(d, &m->u.get_revs.docs, &m->u.get_revs.n);
            else if (i == 4)
                e = rd_texts(d, key, 47, &m->u.get_revs.have, &m->u.get_revs.n_have);
            else
                e = rd_bool(d, key, &m->u.get_revs.data);
            break;
        case BR_WIRE_GET_REVS_REPLY:
            e = rd_revdocs(d, true, &m->u.get_revs_reply.docs, &m->u.get_revs_reply.n);
            break;
        case BR_WIRE_PEERS:
            if (i == 2)
                e = rd_peers(d, &m->u.peers.peers, &m->u.peers.n);
            else
                e = rd_uint(d, key, &m->u.peers.mhash);
            break;
        case BR_WIRE_PROBE:
            e = rd_text(d, key, 1, BR_WIRE_MAX_NODE, &m->u.probe.node, NULL);
            break;
        case BR_WIRE_PROBE_REPLY:
            e = rd_bool(d, key, &m->u.probe_reply.alive);
            break;
        case BR_WIRE_PING:
        case BR_WIRE_PONG:
            e = rd_hlc(d, key, &m->u.ping.hlc);
            break;
        case BR_WIRE_ERROR:
            if (i == 2)
                e = rd_uint(d, key, &m->u.error.code);
            else
                e = rd_text(d, key, 0, BR_WIRE_MAX_TEXT, &m->u.error.reason, NULL);
            if (!e && i == 2 && m->u.error.code > UINT32_MAX)
                e = bad(d, "code out of range");
            break;
        case BR_WIRE_PUT_REVS:
            if (i == 2)
                e = rd_text(d, key, 1, BR_DB_NAME_MAX, &m->u.put_revs.db, NULL);
            else
                e = rd_revdocs(d, false, &m->u.put_revs.docs, &m->u.put_revs.n);
            for (size_t q = 0; !e && i == 3 && q < m->u.put_revs.n; q++)
                if (m->u.put_revs.docs[q].missing)
                    e = bad(d, "a missing revision cannot be written");
            break;
        case BR_WIRE_PUT_REVS_REPLY:
            e = rd_results(d, &m->u.put_revs_reply.results, &m->u.put_revs_reply.n);
            break;
        case BR_WIRE_LOCAL_GET:
        case BR_WIRE_LOCAL_PUT:
            if (i == 2)
                e = rd_text(d, key, 1, BR_DB_NAME_MAX, &m->u.local.db, NULL);
            else if (i == 3)
                e = rd_text(d, key, 1, BR_WIRE_MAX_TEXT, &m->u.local.id, NULL);
            else if (i == 4)
                e = rd_map_value(d, key, &m->u.local.body, &m->u.local.body_len);
            else {
                e = rd_local_rev(d, key, &m->u.local.rev);
                m->u.local.has_rev = true;
            }
            break;
        case BR_WIRE_LOCAL_GET_REPLY:
        case BR_WIRE_LOCAL_PUT_REPLY:
            if (i == 2)
                e = rd_local_rev(d, key, &m->u.local_reply.rev);
            else
                e = rd_map_value(d, key, &m->u.local_reply.body, &m->u.local_reply.body_len);
            break;
        case BR_WIRE_Z: /* opened by br_wire_decode before the body is read */
            e = bad(d, "a z envelope inside a z envelope");
            break;
        }
    }
    d->where = TYPE_NAMES[m->type];
    if (!e)
        e = check_required(d, k, seen);
    return e;
}

/* ---- zstd contexts, one pair per thread ---- */

struct zctx {
    ZSTD_CCtx *c;
    ZSTD_DCtx *d;
};

static pthread_key_t zkey;
static pthread_once_t zonce = PTHREAD_ONCE_INIT;
static bool zkey_ok;

static void zctx_free(void *p)
{
    struct zctx *z = p;
    if (!z)
        return;
    ZSTD_freeCCtx(z->c);
    ZSTD_freeDCtx(z->d);
    br_free(z);
}

static void zkey_make(void)
{
    zkey_ok = pthread_key_create(&zkey, zctx_free) == 0;
}

static struct zctx *zctx_get(void)
{
    pthread_once(&zonce, zkey_make);
    if (!zkey_ok)
        return NULL;
    struct zctx *z = pthread_getspecific(zkey);
    if (z)
        return z;
    z = br_calloc(1, sizeof *z);
    if (!z)
        return NULL;
    if (pthread_setspecific(zkey, z) != 0) {
        br_free(z);
        return NULL;
    }
    return z;
}

static ZSTD_CCtx *cctx_get(void)
{
    struct zctx *z = zctx_get();
    if (z && !z->c)
        z->c = ZSTD_createCCtx();
    return z ? z->c : NULL;
}

static ZSTD_DCtx *dctx_get(void)
{
    struct zctx *z = zctx_get();
    if (z && !z->d)
        z->d = ZSTD_createDCtx();
    return z ? z->d : NULL;
}

/* ---- envelopes ---- */

/* Read the envelope's map (after scan_header): *zp and *zn point into the input. */
static br_err rd_envelope(struct dec *d, const uint8_t **zp, size_t *zn)
{
    const struct keys *k = &TYPE_KEYS[BR_WIRE_Z];
    uint32_t seen = 0;
    size_t nk;
    br_err e = rd_object(d, "z", &nk);
    for (size_t j = 0; !e && j < nk; j++) {
        unsigned i;
        struct br_cbor_item it;
        e = rd_key(d, k, &seen, &i);
        if (e)
            break;
        e = next(d, &it);
        if (e || i <= 1) /* type and rid: read by the first pass */
            continue;
        if (it.type != BR_CBOR_BYTES)
            e = bad(d, "z must be a byte string");
        *zp = it.str;
        *zn = it.len;
    }
    if (!e)
        e = check_required(d, k, seen);
    return e;
}

/* Decompress an envelope's frame into a new buffer (caller frees) of exactly the size the frame
 * declares; refuse, before allocating, a size that is unknown, zero or past BR_WIRE_MAX_MSG. */
static br_err z_open(struct dec *d, const uint8_t *zp, size_t zn, uint8_t **out, size_t *out_len)
{
    unsigned long long size = ZSTD_getFrameContentSize(zp, zn);
    if (size == ZSTD_CONTENTSIZE_ERROR)
        return bad(d, "not a zstd frame, or a truncated one");
    if (size == ZSTD_CONTENTSIZE_UNKNOWN)
        return bad(d, "the zstd frame does not declare its content size");
    if (size == 0)
        return bad(d, "the zstd frame is empty or skippable");
    if (size > BR_WIRE_MAX_MSG)
        return bad(d, "the zstd frame declares %llu bytes, past the %u byte limit", size,
                   BR_WIRE_MAX_MSG);
    if (ZSTD_getDictID_fromFrame(zp, zn) != 0)
        return bad(d, "the zstd frame needs a dictionary");
    size_t fsz = ZSTD_findFrameCompressedSize(zp, zn);
    if (ZSTD_isError(fsz))
        return bad(d, "truncated or corrupt zstd frame");
    if (fsz != zn)
        return bad(d, "%zu bytes after the zstd frame", zn - fsz);
    ZSTD_DCtx *dc = dctx_get();
    uint8_t *buf = dc ? br_malloc((size_t)size) : NULL;
    if (!buf)
        return nomem(d);
    size_t got = ZSTD_decompressDCtx(dc, buf, (size_t)size, zp, zn);
    if (ZSTD_isError(got) || got != size) {
        br_free(buf);
        if (ZSTD_isError(got))
            return bad(d, "corrupt zstd frame (%s)", ZSTD_getErrorName(got));
        return bad(d, "the zstd frame gave %zu bytes, not the %llu it declares", got, size);
    }
    *out = buf;
    *out_len = (size_t)size;
    return BR_OK;
}

/* Decode a plain message whose header scan_header read. */
static br_err decode_plain(const uint8_t *p, size_t n, enum br_wire_type type, uint64_t rid,
                           struct br_wire_msg **out, struct br_errbuf *eb)
{
    struct br_wire_msg *m = br_calloc(1, sizeof *m);
    if (!m)
        return br_fail(eb, BR_ENOMEM, "out of memory");
    m->type = type;
    m->rid = rid;
    struct dec d = {.eb = eb, .where = "message", .a = &m->arena};
    br_cbor_reader_init(&d.r, p, n);
    br_err e = decode_body(&d, m);
    if (!e && !br_cbor_at_end(&d.r))
        e = bad(&d, "trailing bytes after the message");
    if (e) {
        br_wire_msg_free(m);
        return e;
    }
    *out = m;
    return BR_OK;
}

br_err br_wire_decode(const uint8_t *p, size_t n, struct br_wire_msg **out, uint64_t *rid_out,
                      struct br_errbuf *eb)
{
    uint64_t rid = 0;
    bool has_rid = false;
    enum br_wire_type type = 0;
    if (rid_out)
        *rid_out = 0;
    if (n > BR_WIRE_MAX_MSG)
        return br_fail(eb, BR_ETOOBIG, "message of %zu bytes is past the %u byte limit", n,
                       BR_WIRE_MAX_MSG);
    if (!p || n == 0)
        return br_fail(eb, BR_EPROTO, "message: empty");
    struct dec d = {.eb = eb, .where = "message"};
    br_err e = BR_OK;
    has_rid = quick_header(p, n, &type, &rid);
    if (!has_rid) {
        br_cbor_reader_init(&d.r, p, n);
        e = scan_header(&d, &type, &rid, &has_rid);
    }
    if (has_rid && rid_out)
        *rid_out = rid;
    if (e)
        return e;
    if (type != BR_WIRE_Z)
        return decode_plain(p, n, type, rid, out, eb);

    const uint8_t *zp = NULL;
    size_t zn = 0;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    br_cbor_reader_init(&d.r, p, n);
    e = rd_envelope(&d, &zp, &zn);
    if (!e && !br_cbor_at_end(&d.r))
        e = bad(&d, "trailing bytes after the message");
    if (!e)
        e = z_open(&d, zp, zn, &plain, &plain_len);
    if (e)
        return e;
    enum br_wire_type itype = 0;
    uint64_t irid = 0;
    bool has_irid = false;
    d.where = "z content";
    has_irid = quick_header(plain, plain_len, &itype, &irid);
    if (!has_irid) {
        br_cbor_reader_init(&d.r, plain, plain_len);
        e = scan_header(&d, &itype, &irid, &has_irid);
    }
    if (!e && itype == BR_WIRE_Z)
        e = bad(&d, "a z envelope inside a z envelope");
    if (!e && irid != rid)
        e = bad(&d, "rid %llu differs from the envelope's %llu", (unsigned long long)irid,
                (unsigned long long)rid);
    if (!e)
        e = decode_plain(plain, plain_len, itype, irid, out, eb);
    br_free(plain);
    return e;
}

void br_wire_msg_free(struct br_wire_msg *m)
{
    if (!m)
        return;
    br_wire_arena_fini(&m->arena);
    br_free(m);
}

/* ---- encoding ---- */

struct enc {
    br_buf *b;
    struct br_errbuf *eb;
    br_err e; /* first error; later puts are skipped */
};

static void ck(struct enc *x, br_err e)
{
    if (!x->e && e)
        x->e = e;
}

static void invalid(struct enc *x, const char *what)
{
    if (!x->e)
        x->e = br_fail(x->eb, BR_EINVAL, "cannot encode: %s", what);
}

static void put_key(struct enc *x, const char *k)
{
    if (!x->e)
        ck(x, br_cbor_put_cstr(x->b, k));
}

static void put_text(struct enc *x, const char *k, const char *s, size_t n, size_t min, size_t max)
{
    if (!s || n < min || n > max || memchr(s, 0, n)) {
        invalid(x, k);
        return;
    }
    put_key(x, k);
    if (!x->e)
        ck(x, br_cbor_put_str(x->b, s, n));
}

static void put_ctext(struct enc *x, const char *k, const char *s, size_t min, size_t max)
{
    put_text(x, k, s, s ? strlen(s) : 0, min, max);
}

static void put_uint(struct enc *x, const char *k, uint64_t v)
{
    put_key(x, k);
    if (!x->e)
        ck(x, br_cbor_put_uint(x->b, v));
}

static void put_bool(struct enc *x, const char *k, bool v)
{
    put_key(x, k);
    if (!x->e)
        ck(x, br_cbor_put_bool(x->b, v));
}

static void put_hlc(struct enc *x, const char *k, struct br_hlc h)
{
    uint8_t raw[BR_HLC_BYTES];
    if (h.logical > BR_HLC_LOGICAL_MAX) {
        invalid(x, k);
        return;
    }
    br_hlc_encode(h, raw);
    put_key(x, k);
    if (!x->e)
        ck(x, br_cbor_put_bytes(x->b, raw, sizeof raw));
}

static void put_array(struct enc *x, const char *k, size_t n)
{
    if (n > BR_WIRE_MAX_ITEMS) {
        invalid(x, k);
        return;
    }
    if (k)
        put_key(x, k);
    if (!x->e)
        ck(x, br_cbor_put_array(x->b, n));
}

static void put_map(struct enc *x, size_t n)
{
    if (!x->e)
        ck(x, br_cbor_put_map(x->b, n));
}

static void put_rev_item(struct enc *x, const struct br_rev *r)
{
    char t[BR_REV_TEXT_MAX];
    struct br_rev chk;
    size_t n = br_rev_format(r, t);
    if (br_rev_parse(t, n, &chk) != BR_OK) {
        invalid(x, "revision");
        return;
    }
    if (!x->e)
        ck(x, br_cbor_put_str(x->b, t, n));
}

static void put_local_rev(struct enc *x, const char *k, const struct br_rev *r)
{
    char t[BR_REV_TEXT_MAX];
    size_t n = br_rev_format(r, t);
    if (r->gen != 0 || !local_rev_ok(t, n)) {
        invalid(x, k);
        return;
    }
    put_key(x, k);
    if (!x->e)
        ck(x, br_cbor_put_str(x->b, t, n));
}

static void put_revs(struct enc *x, const char *k, const struct br_rev *v, size_t n)
{
    put_array(x, k, n);
    for (size_t i = 0; i < n && !x->e; i++)
        put_rev_item(x, &v[i]);
}

static void put_texts(struct enc *x, const char *k, const char *const *v, size_t n, size_t max)
{
    put_array(x, k, n);
    for (size_t i = 0; i < n && !x->e; i++) {
        size_t l = v[i] ? strlen(v[i]) : 0;
        if (!v[i] || l < 1 || l > max) {
            invalid(x, k);
            return;
        }
        ck(x, br_cbor_put_str(x->b, v[i], l));
    }
}

static void put_map_value(struct enc *x, const char *k, const uint8_t *p, size_t n)
{
    if (!p || n == 0 || (p[0] >> 5) != 5 ||
        br_cbor_doc_validate(p, n, BR_CBOR_MAX_DEPTH, NULL) != BR_OK) {
        invalid(x, k);
        return;
    }
    put_key(x, k);
    if (!x->e)
        ck(x, br_buf_append(x->b, p, n));
}

static void put_dbdigests(struct enc *x, const struct br_wire_dbdigest *v, size_t n)
{
    put_array(x, "dbs", n);
    for (size_t i = 0; i < n && !x->e; i++) {
        put_map(x, 4);
        put_ctext(x, "name", v[i].name, 1, BR_DB_NAME_MAX);
        put_hlc(x, "last", v[i].digest.last);
        put_uint(x, "count", v[i].digest.doc_count);
        put_key(x, "hash");
        if (!x->e)
            ck(x, br_cbor_put_bytes(x->b, v[i].digest.set_hash, 16));
    }
}

static void put_docrevs(struct enc *x, const struct br_wire_docrevs *v, size_t n)
{
    put_array(x, "docs", n);
    for (size_t i = 0; i < n && !x->e; i++) {
        put_map(x, 2);
        put_text(x, "id", v[i].id, v[i].id_len, 1, BR_DOCID_MAX);
        put_revs(x, "revs", v[i].revs, v[i].n_revs);
    }
}

static void put_atts(struct enc *x, const struct br_wire_att *v, size_t n)
{
    put_array(x, "atts", n);
    for (size_t i = 0; i < n && !x->e; i++) {
        const struct br_wire_att *a = &v[i];
        if (a->has_data && (a->data_len != a->length || (!a->data && a->data_len))) {
            invalid(x, "attachment data");
            return;
        }
        put_map(x, 5u + (a->has_key ? 1u : 0u) + (a->has_data ? 1u : 0u));
        put_ctext(x, "name", a->name, 1, BR_WIRE_MAX_TEXT);
        put_ctext(x, "type", a->content_type, 1, BR_WIRE_MAX_TYPE_TEXT);
        put_ctext(x, "digest", a->digest, 1, 47);
        put_uint(x, "length", a->length);
        put_uint(x, "revpos", a->revpos);
        if (a->has_key) {
            put_key(x, "key");
            if (!x->e)
                ck(x, br_cbor_put_bytes(x->b, a->key, 32));
        }
        if (a->has_data) {
            put_key(x, "data");
            if (!x->e)
                ck(x, br_cbor_put_bytes(x->b, a->data, a->data_len));
        }
    }
}

static void put_ids(struct enc *x, const struct br_rev *v, size_t n)
{
    put_array(x, "ids", n);
    for (size_t j = 0; j < n && !x->e; j++)
        ck(x, br_cbor_put_str(x->b, v[j].hash, v[j].hash_len));
}

/* A known revision (get_revs_reply): id, known, deleted, body, start, ids (the ancestors).
 * Given either whole (rev and history[0] == rev) or as decoded (rev.hash empty, history the
 * ancestors). */
static void put_known(struct enc *x, const struct br_wire_revdoc *r)
{
    const struct br_rev *anc = r->history;
    size_t n_anc = r->n_history;
    if (r->rev.hash_len) {
        if (r->n_history == 0 || !br_rev_eq(&r->history[0], &r->rev)) {
            invalid(x, "revision history");
            return;
        }
        anc++;
        n_anc--;
    }
    if (r->rev.gen < 1 || r->rev.gen > BR_REV_GEN_MAX || n_anc >= r->rev.gen ||
        n_anc > BR_WIRE_MAX_ITEMS || (n_anc && anc[0].gen != r->rev.gen - 1) ||
        (n_anc && br_rev_path_check(anc, n_anc) != BR_OK)) {
        invalid(x, "revision history");
        return;
    }
    for (size_t j = 0; j < n_anc; j++)
        if (!hash_ok((const uint8_t *)anc[j].hash, anc[j].hash_len)) {
            invalid(x, "revision history");
            return;
        }
    put_map(x, 7);
    put_text(x, "id", r->id, r->id_len, 1, BR_DOCID_MAX);
    put_bool(x, "known", true);
    put_bool(x, "deleted", r->deleted);
    put_map_value(x, "body", r->body, r->body_len);
    put_uint(x, "start", r->rev.gen);
    put_ids(x, anc, n_anc);
    put_atts(x, r->atts, r->n_atts);
}

/* `reply`: a get_revs_reply, which sends known revisions without their hash. */
static void put_revdocs(struct enc *x, const struct br_wire_revdoc *v, size_t n, bool reply)
{
    put_array(x, "docs", n);
    for (size_t i = 0; i < n && !x->e; i++) {
        const struct br_wire_revdoc *r = &v[i];
        if (r->missing) {
            put_map(x, 3);
            put_text(x, "id", r->id, r->id_len, 1, BR_DOCID_MAX);
            put_key(x, "rev");
            put_rev_item(x, &r->rev);
            put_bool(x, "missing", true);
            continue;
        }
        if (reply && r->rev_known) {
            put_known(x, r);
            continue;
        }
        if (r->n_history == 0 || r->n_history > BR_WIRE_MAX_ITEMS ||
            !br_rev_eq(&r->history[0], &r->rev) ||
            br_rev_path_check(r->history, r->n_history) != BR_OK) {
            invalid(x, "revision history");
            return;
        }
        put_map(x, 7);
        put_text(x, "id", r->id, r->id_len, 1, BR_DOCID_MAX);
        put_key(x, "rev");
        put_rev_item(x, &r->rev);
        put_bool(x, "deleted", r->deleted);
        put_map_value(x, "body", r->body, r->body_len);
        put_uint(x, "start", r->history[0].gen);
        put_ids(x, r->history, r->n_history);
        put_atts(x, r->atts, r->n_atts);
    }
}

static void encode_msg(struct enc *x, const struct br_wire_msg *m)
{
    const struct keys *k = &TYPE_KEYS[m->type];
    size_t n = k->n;
    if (m->type == BR_WIRE_CHANGES && !m->u.changes.has_filter)
        n--;
    if (m->type == BR_WIRE_LOCAL_PUT && !m->u.local.has_rev)
        n--;
    if (m->type == BR_WIRE_PEERS && !m->u.peers.mhash)
        n--;

    put_map(x, n);
    put_ctext(x, "type", TYPE_NAMES[m->type], 1, 64);
    put_uint(x, "rid", m->rid);
    switch (m->type) {
    case BR_WIRE_HELLO:
        put_uint(x, "version", m->u.hello.version);
        put_ctext(x, "node", m->u.hello.node, 1, BR_WIRE_MAX_NODE);
        put_hlc(x, "hlc", m->u.hello.hlc);
        put_dbdigests(x, m->u.hello.dbs, m->u.hello.n_dbs);
        break;
    case BR_WIRE_DIGEST:
        put_dbdigests(x, m->u.digest.dbs, m->u.digest.n_dbs);
        break;
    case BR_WIRE_CHANGES:
        put_ctext(x, "db", m->u.changes.db, 1, BR_DB_NAME_MAX);
        put_hlc(x, "since", m->u.changes.since);
        if (m->u.changes.limit > BR_WIRE_MAX_ITEMS)
            invalid(x, "limit");
        put_uint(x, "limit", m->u.changes.limit);
        if (m->u.changes.has_filter) {
            const struct br_wire_filter *f = &m->u.changes.filter;
            put_key(x, "filter");
            put_map(x, (f->n_paths || f->paths ? 1u : 0u) + (f->query ? 1u : 0u));
            if (f->n_paths || f->paths)
                put_texts(x, "paths", f->paths, f->n_paths, BR_WIRE_MAX_TEXT);
            if (f->query)
                put_map_value(x, "query", f->query, f->query_len);
        }
        break;
    case BR_WIRE_CHANGES_REPLY:
        put_array(x, "changes", m->u.changes_reply.n);
        for (size_t i = 0; i < m->u.changes_reply.n && !x->e; i++) {
            const struct br_wire_change *c = &m->u.changes_reply.changes[i];
            if (c->n_revs == 0)
                invalid(x, "a change without revisions");
            put_map(x, 4);
            put_text(x, "id", c->id, c->id_len, 1, BR_DOCID_MAX);
            put_revs(x, "revs", c->revs, c->n_revs);
            put_bool(x, "deleted", c->deleted);
            put_hlc(x, "hlc", c->seq);
        }
        put_hlc(x, "last", m->u.changes_reply.last);
        put_uint(x, "pending", m->u.changes_reply.pending);
        break;
    case BR_WIRE_REVSDIFF:
        put_ctext(x, "db", m->u.revsdiff.db, 1, BR_DB_NAME_MAX);
        put_docrevs(x, m->u.revsdiff.docs, m->u.revsdiff.n);
        break;
    case BR_WIRE_REVSDIFF_REPLY:
        put_array(x, "docs", m->u.revsdiff_reply.n);
        for (size_t i = 0; i < m->u.revsdiff_reply.n && !x->e; i++) {
            const struct br_wire_diff *df = &m->u.revsdiff_reply.docs[i];
            put_map(x, 3);
            put_text(x, "id", df->id, df->id_len, 1, BR_DOCID_MAX);
            put_revs(x, "missing", df->missing, df->n_missing);
            put_revs(x, "ancestors", df->ancestors, df->n_ancestors);
        }
        break;
    case BR_WIRE_GET_REVS:
        put_ctext(x, "db", m->u.get_revs.db, 1, BR_DB_NAME_MAX);
        put_docrevs(x, m->u.get_revs.docs, m->u.get_revs.n);
        put_texts(x, "have", m->u.get_revs.have, m->u.get_revs.n_have, 47);
        put_bool(x, "data", m->u.get_revs.data);
        break;
    case BR_WIRE_GET_REVS_REPLY:
        put_revdocs(x, m->u.get_revs_reply.docs, m->u.get_revs_reply.n, true);
        break;
    case BR_WIRE_PEERS:
        put_array(x, "peers", m->u.peers.n);
        for (size_t i = 0; i < m->u.peers.n && !x->e; i++) {
            const struct br_wire_peer *p = &m->u.peers.peers[i];
            if (p->state > 2)
                invalid(x, "member state");
            put_map(x, p->state ? 4 : 3);
            put_ctext(x, "node", p->node, 1, BR_WIRE_MAX_NODE);
            put_texts(x, "addrs", p->addrs, p->n_addrs, BR_WIRE_MAX_TEXT);
            put_hlc(x, "hlc", p->hlc);
            if (p->state)
                put_uint(x, "state", p->state);
        }
        if (m->u.peers.mhash)
            put_uint(x, "mhash", m->u.peers.mhash);
        break;
    case BR_WIRE_PROBE:
        put_ctext(x, "node", m->u.probe.node, 1, BR_WIRE_MAX_NODE);
        break;
    case BR_WIRE_PROBE_REPLY:
        put_bool(x, "alive", m->u.probe_reply.alive);
        break;
    case BR_WIRE_PING:
    case BR_WIRE_PONG:
        put_hlc(x, "hlc", m->u.ping.hlc);
        break;
    case BR_WIRE_ERROR:
        if (m->u.error.code > UINT32_MAX)
            invalid(x, "error code");
        put_uint(x, "code", m->u.error.code);
        put_ctext(x, "reason", m->u.error.reason ? m->u.error.reason : "", 0, BR_WIRE_MAX_TEXT);
        break;
    case BR_WIRE_PUT_REVS:
        put_ctext(x, "db", m->u.put_revs.db, 1, BR_DB_NAME_MAX);
        for (size_t i = 0; i < m->u.put_revs.n; i++)
            if (m->u.put_revs.docs[i].missing)
                invalid(x, "a missing revision in put_revs");
        put_revdocs(x, m->u.put_revs.docs, m->u.put_revs.n, false);
        break;
    case BR_WIRE_PUT_REVS_REPLY:
        put_array(x, "results", m->u.put_revs_reply.n);
        for (size_t i = 0; i < m->u.put_revs_reply.n && !x->e; i++) {
            if (m->u.put_revs_reply.results[i] > UINT32_MAX)
                invalid(x, "result code");
            else
                ck(x, br_cbor_put_uint(x->b, m->u.put_revs_reply.results[i]));
        }
        break;
    case BR_WIRE_LOCAL_GET:
    case BR_WIRE_LOCAL_PUT:
        put_ctext(x, "db", m->u.local.db, 1, BR_DB_NAME_MAX);
        put_ctext(x, "id", m->u.local.id, 1, BR_WIRE_MAX_TEXT);
        if (m->type == BR_WIRE_LOCAL_PUT) {
            put_map_value(x, "body", m->u.local.body, m->u.local.body_len);
            if (m->u.local.has_rev)
                put_local_rev(x, "rev", &m->u.local.rev);
        }
        break;
    case BR_WIRE_LOCAL_GET_REPLY:
    case BR_WIRE_LOCAL_PUT_REPLY:
        put_local_rev(x, "rev", &m->u.local_reply.rev);
        if (m->type == BR_WIRE_LOCAL_GET_REPLY)
            put_map_value(x, "body", m->u.local_reply.body, m->u.local_reply.body_len);
        break;
    case BR_WIRE_Z:
        invalid(x, "a z envelope is made by the encoder, not given to it");
        break;
    }
}

/* The plain encoding of m in a new buffer bounded by out's max and BR_WIRE_MAX_MSG. */
static br_err encode_plain(const struct br_wire_msg *m, const br_buf *out, br_buf *tmp,
                           struct br_errbuf *eb)
{
    if (!m || !br_wire_type_name(m->type))
        return br_fail(eb, BR_EINVAL, "cannot encode: unknown message type");
    size_t max = out->max && out->max < BR_WIRE_MAX_MSG ? out->max : BR_WIRE_MAX_MSG;
    br_buf_init(tmp, max);
    struct enc x = {.b = tmp, .eb = eb};
    encode_msg(&x, m);
    if (x.e == BR_ETOOBIG)
        br_errbuf_set(eb, "message past %zu bytes", max);
    if (x.e)
        br_buf_fini(tmp);
    return x.e;
}

br_err br_wire_encode_plain(const struct br_wire_msg *m, br_buf *out, struct br_errbuf *eb)
{
    br_buf tmp;
    br_err e = encode_plain(m, out, &tmp, eb);
    if (e)
        return e;
    e = br_buf_append(out, tmp.data, tmp.len);
    br_buf_fini(&tmp);
    return e;
}

/* Append the z envelope of plain[0..n) to out if it is smaller than n; *done says it was. */
static br_err put_envelope(uint64_t rid, const uint8_t *plain, size_t n, br_buf *out, bool *done)
{
    *done = false;
    ZSTD_CCtx *cc = cctx_get();
    size_t cap = ZSTD_compressBound(n);
    uint8_t *z = cc ? br_malloc(cap) : NULL;
    if (!z)
        return BR_OK; /* no memory for compressing: send it plain */
    size_t zn = ZSTD_compressCCtx(cc, z, cap, plain, n, BR_WIRE_Z_LEVEL);
    br_err e = BR_OK;
    if (!ZSTD_isError(zn) && zn + 24 < n) {
        br_buf env;
        br_buf_init(&env, 0);
        e = br_cbor_put_map(&env, 3);
        if (!e)
            e = br_cbor_put_cstr(&env, "type");
        if (!e)
            e = br_cbor_put_cstr(&env, "z");
        if (!e)
            e = br_cbor_put_cstr(&env, "rid");
        if (!e)
            e = br_cbor_put_uint(&env, rid);
        if (!e)
            e = br_cbor_put_cstr(&env, "z");
        if (!e)
            e = br_cbor_put_bytes(&env, z, zn);
        if (!e)
            e = br_buf_append(out, env.data, env.len);
        *done = !e;
        br_buf_fini(&env);
    }
    br_free(z);
    return e;
}

br_err br_wire_encode(const struct br_wire_msg *m, br_buf *out, struct br_errbuf *eb)
{
    br_buf tmp;
    br_err e = encode_plain(m, out, &tmp, eb);
    if (e)
        return e;
    bool done = false;
    if (tmp.len >= BR_WIRE_Z_MIN)
        e = put_envelope(m->rid, tmp.data, tmp.len, out, &done);
    if (!e && !done)
        e = br_buf_append(out, tmp.data, tmp.len);
    br_buf_fini(&tmp);
    return e;
}
