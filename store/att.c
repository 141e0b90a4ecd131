/* att.c — attachments: content-addressed blobs in the atts column family, streamed in and out
 * 64 KiB at a time, reference-counted by the leaf revisions that name them.
 *
 * Layout (store_int.h): dbid 'b' key32 -> blob record (blob id, length, md5, refcount, chunk
 * count; fixed REC_LEN bytes, big-endian); dbid 'c' blobid idx -> chunk idx of blob blobid;
 * dbid 'm' md5 -> key32 (the first blob stored with that md5, to resolve CouchDB stubs); dbid
 * 'p' blobid -> an upload in progress. A blob's key is BLAKE2b-256 of its bytes; blob ids are
 * random, so chunks of different blobs never share a key range and a blob's chunks go with one
 * range delete.
 *
 * Three ways in: the write path (docs.c, under db->wmu) hands inline data to att_prepare, which
 * only hashes it and stages it in the att_batch; att_batch_flush writes what the batch still
 * references (chunks, record, md5 entry) and applies the reference deltas, all in the
 * document batch. Staged inline data is borrowed from the caller's br_att_in until the flush.
 * The streaming writer puts chunks as they fill (unsynced, outside any lock), then publishes
 * the record with refcount 0 under db->wmu; a document write that names its key takes the
 * first reference. Uploads never finished, and blobs left at refcount 0, go at the next open
 * (att_sweep). MD5 comes from OpenSSL's libcrypto (libsodium has none). */
#include "barrel/att.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <rocksdb/c.h>
#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

#include "store_int.h"

#define TAG "att"

#define KEY_B_LEN (4 + 1 + 32)    /* dbid 'b' key32 */
#define KEY_C_LEN (4 + 1 + 8 + 4) /* dbid 'c' blobid idx */
#define KEY_CP_LEN (4 + 1 + 8)    /* dbid 'c' blobid: a blob's chunk prefix */
#define KEY_M_LEN (4 + 1 + 16)    /* dbid 'm' md5 */
#define KEY_P_LEN (4 + 1 + 8)     /* dbid 'p' blobid */
#define REC_LEN (8 + 8 + 16 + 8 + 4)
#define CONTENT_TYPE_MAX 255
#define SWEEP_BATCH 1024 /* operations per sweep batch */

_Static_assert(ATT_CHUNK == BR_ATT_CHUNK, "one chunk size");

struct blobrec {
    uint64_t blobid;
    uint64_t length;
    uint8_t md5[16];
    uint64_t refs; /* leaf revisions referencing the blob */
    uint32_t chunks;
};

/* ---- keys ---- */

static void key_b(uint8_t out[KEY_B_LEN], const uint8_t dbid[4], const uint8_t key[32])
{
    memcpy(out, dbid, 4);
    out[4] = 'b';
    memcpy(out + 5, key, 32);
}

static void key_c(uint8_t out[KEY_C_LEN], const uint8_t dbid[4], uint64_t blobid, uint32_t idx)
{
    memcpy(out, dbid, 4);
    out[4] = 'c';
    store_be64(out + 5, blobid);
    store_be32(out + 13, idx);
}

static void key_m(uint8_t out[KEY_M_LEN], const uint8_t dbid[4], const uint8_t md5[16])
{
    memcpy(out, dbid, 4);
    out[4] = 'm';
    memcpy(out + 5, md5, 16);
}

static void key_p(uint8_t out[KEY_P_LEN], const uint8_t dbid[4], uint64_t blobid)
{
    memcpy(out, dbid, 4);
    out[4] = 'p';
    store_be64(out + 5, blobid);
}

/* [start, end) covering every chunk of blobid: end is the chunk prefix plus one. */
static void chunk_range(const uint8_t dbid[4], uint64_t blobid, uint8_t start[KEY_C_LEN],
                        uint8_t end[KEY_CP_LEN])
{
    key_c(start, dbid, blobid, 0);
    memcpy(end, start, KEY_CP_LEN);
    for (size_t i = KEY_CP_LEN; i > 0; i--) {
        if (++end[i - 1] != 0)
            break;
    }
}

/* Number of chunks of a blob of `length` bytes; false if it does not fit a u32. */
static bool chunk_count(uint64_t length, uint32_t *out)
{
    uint64_t n = length / ATT_CHUNK + (length % ATT_CHUNK != 0);
    if (n > UINT32_MAX)
        return false;
    *out = (uint32_t)n;
    return true;
}

/* Short hex of a key for logs. */
static void key_hex(const uint8_t key[32], char out[17])
{
    sodium_bin2hex(out, 17, key, 8);
}

/* ---- blob records ---- */

static void rec_encode(const struct blobrec *r, uint8_t out[REC_LEN])
{
    store_be64(out, r->blobid);
    store_be64(out + 8, r->length);
    memcpy(out + 16, r->md5, 16);
    store_be64(out + 32, r->refs);
    store_be32(out + 40, r->chunks);
}

/* Decode a stored record (untrusted bytes): BR_ESTORE on a wrong length or a chunk count that
 * does not match the length. */
static br_err rec_decode(const uint8_t *p, size_t n, struct blobrec *r)
{
    uint32_t want;
    if (n != REC_LEN)
        return BR_ESTORE;
    r->blobid = store_rd64(p);
    r->length = store_rd64(p + 8);
    memcpy(r->md5, p + 16, 16);
    r->refs = store_rd64(p + 32);
    r->chunks = store_rd32(p + 40);
    if (!chunk_count(r->length, &want) || want != r->chunks)
        return BR_ESTORE;
    return BR_OK;
}

/* Read blob `key` of dbid with read options ro (NULL: the store's). *found false if absent. */
static br_err rec_get(br_store *s, const rocksdb_readoptions_t *ro, const uint8_t dbid[4],
                      const uint8_t key[32], struct blobrec *r, bool *found)
{
    uint8_t k[KEY_B_LEN];
    char *err = NULL;
    size_t vl = 0;
    key_b(k, dbid, key);
    char *v = rocksdb_get_cf(s->rdb, ro ? ro : s->ro, s->cf[CF_ATTS], (const char *)k, sizeof k,
                             &vl, &err);
    if (err)
        return store_rdb_err(err, "att_get_record");
    *found = v != NULL;
    br_err e = BR_OK;
    if (v) {
        e = rec_decode((const uint8_t *)v, vl, r);
        if (e) {
            char hex[17];
            key_hex(key, hex);
            br_log(BR_LOG_ERROR, TAG, "corrupt blob record key=%s len=%zu", hex, vl);
        }
    }
    rocksdb_free(v);
    return e;
}

/* The key the md5 index gives for md5, if any. */
static br_err md5_get(br_store *s, const uint8_t dbid[4], const uint8_t md5[16], uint8_t key[32],
                      bool *found)
{
    uint8_t k[KEY_M_LEN];
    char *v = NULL;
    size_t vl = 0;
    key_m(k, dbid, md5);
    br_err e = store_get(s, CF_ATTS, k, sizeof k, &v, &vl);
    if (e)
        return e;
    *found = v != NULL;
    if (v && vl != 32) {
        br_log(BR_LOG_ERROR, TAG, "corrupt md5 index entry len=%zu", vl);
        e = BR_ESTORE;
    } else if (v) {
        memcpy(key, v, 32);
    }
    rocksdb_free(v);
    return e;
}

/* Delete blob `key` (record, md5 entry if it names this blob, chunks) in wb. */
static br_err blob_delete(br_store *s, const uint8_t dbid[4], rocksdb_writebatch_t *wb,
                          const uint8_t key[32], const struct blobrec *r)
{
    uint8_t kb[KEY_B_LEN], km[KEY_M_LEN], start[KEY_C_LEN], end[KEY_CP_LEN], other[32];
    bool found = false;
    br_err e = md5_get(s, dbid, r->md5, other, &found);
    if (e)
        return e;
    if (found && memcmp(other, key, 32) == 0) {
        key_m(km, dbid, r->md5);
        rocksdb_writebatch_delete_cf(wb, s->cf[CF_ATTS], (const char *)km, sizeof km);
    }
    key_b(kb, dbid, key);
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_ATTS], (const char *)kb, sizeof kb);
    chunk_range(dbid, r->blobid, start, end);
    rocksdb_writebatch_delete_range_cf(wb, s->cf[CF_ATTS], (const char *)start, sizeof start,
                                       (const char *)end, sizeof end);
    return BR_OK;
}

/* Is some blob or upload already using blobid? (Ids are 64 random bits; this is a guard
 * against a repeating random source, not an expected case.) */
static br_err blobid_taken(br_store *s, const uint8_t dbid[4], uint64_t blobid, bool *taken)
{
    uint8_t kp[KEY_P_LEN], start[KEY_C_LEN], end[KEY_CP_LEN];
    char *v = NULL;
    size_t vl = 0;
    key_p(kp, dbid, blobid);
    br_err e = store_get(s, CF_ATTS, kp, sizeof kp, &v, &vl);
    if (e)
        return e;
    *taken = v != NULL;
    rocksdb_free(v);
    if (*taken)
        return BR_OK;
    chunk_range(dbid, blobid, start, end);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)end, sizeof end);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_ATTS]);
    rocksdb_iter_seek(it, (const char *)start, sizeof start);
    *taken = rocksdb_iter_valid(it);
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (err)
        return store_rdb_err(err, "att_blobid_check");
    return BR_OK;
}

/* ---- digests ---- */

static void digest_format(const uint8_t md5[16], char out[48])
{
    memcpy(out, "md5-", 4);
    sodium_bin2base64(out + 4, 48 - 4, md5, 16, sodium_base64_VARIANT_ORIGINAL);
}

/* "md5-<base64 of 16 bytes>" -> md5; false for anything else. */
static bool digest_parse(const char *d, uint8_t md5[16])
{
    size_t bin_len = 0;
    const char *end = NULL;
    if (!d || strncmp(d, "md5-", 4) != 0)
        return false;
    size_t n = strlen(d + 4);
    if (sodium_base642bin(md5, 16, d + 4, n, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return false;
    return bin_len == 16 && end == d + 4 + n;
}

/* BLAKE2b-256 key and MD5 of one buffer. */
static br_err hash_content(const uint8_t *p, size_t n, uint8_t key[32], uint8_t md5[16])
{
    static const uint8_t empty[1] = {0};
    unsigned int md_len = 0;
    if (!p)
        p = empty;
    if (crypto_generichash(key, 32, p, n, NULL, 0) != 0)
        return BR_ECRYPTO;
    if (EVP_Digest(p, n, md5, &md_len, EVP_md5(), NULL) != 1 || md_len != 16)
        return BR_ECRYPTO;
    return BR_OK;
}

/* ---- names and content types ---- */

/* RFC 3629 UTF-8: no overlongs, no surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        }
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
        if (n - i <= k)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++) {
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return false;
        }
        i += k + 1;
    }
    return true;
}

bool br_att_name_valid(const char *name, size_t len)
{
    if (!name || len == 0 || len > BR_ATT_NAME_MAX || name[0] == '_')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '\0' || name[i] == '/' || name[i] == '\\')
            return false;
    }
    return utf8_valid((const uint8_t *)name, len);
}

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {"7z", "application/x-7z-compressed"},
    {"avif", "image/avif"},
    {"bin", "application/octet-stream"},
    {"bmp", "image/bmp"},
    {"bz2", "application/x-bzip2"},
    {"css", "text/css"},
    {"csv", "text/csv"},
    {"doc", "application/msword"},
    {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
    {"epub", "application/epub+zip"},
    {"flac", "audio/flac"},
    {"gif", "image/gif"},
    {"gz", "application/gzip"},
    {"htm", "text/html"},
    {"html", "text/html"},
    {"ico", "image/vnd.microsoft.icon"},
    {"ics", "text/calendar"},
    {"jpeg", "image/jpeg"},
    {"jpg", "image/jpeg"},
    {"js", "text/javascript"},
    {"json", "application/json"},
    {"m4a", "audio/mp4"},
    {"md", "text/markdown"},
    {"mjs", "text/javascript"},
    {"mkv", "video/x-matroska"},
    {"mov", "video/quicktime"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"mpeg", "video/mpeg"},
    {"odp", "application/vnd.oasis.opendocument.presentation"},
    {"ods", "application/vnd.oasis.opendocument.spreadsheet"},
    {"odt", "application/vnd.oasis.opendocument.text"},
    {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},
    {"ogv", "video/ogg"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"png", "image/png"},
    {"ppt", "application/vnd.ms-powerpoint"},
    {"pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
    {"rtf", "application/rtf"},
    {"svg", "image/svg+xml"},
    {"tar", "application/x-tar"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain"},
    {"wasm", "application/wasm"},
    {"wav", "audio/wav"},
    {"weba", "audio/webm"},
    {"webm", "video/webm"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"xls", "application/vnd.ms-excel"},
    {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
    {"xml", "application/xml"},
    {"xz", "application/x-xz"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"zip", "application/zip"},
};

const char *br_att_content_type(const char *name)
{
    const char *dot = name ? strrchr(name, '.') : NULL;
    if (!dot || !dot[1])
        return "application/octet-stream";
    for (size_t i = 0; i < sizeof content_types / sizeof content_types[0]; i++) {
        if (strcasecmp(dot + 1, content_types[i].ext) == 0)
            return content_types[i].type;
    }
    return "application/octet-stream";
}

/* A content type we store and send back in a header: 1..255 printable ASCII bytes. */
static bool content_type_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > CONTENT_TYPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < 0x20 || t[i] > 0x7e)
            return false;
    }
    return true;
}

/* ---- the per-batch state ---- */

struct ab_ent {
    uint8_t key[32];
    int64_t delta;
    bool staged;         /* not in the database when prepared: the flush writes it */
    bool dies;           /* the flush deletes it (its count reaches zero) */
    struct blobrec rec;  /* staged: the record to write (refs unused) */
    const uint8_t *data; /* staged: the inline bytes, borrowed until the flush */
};

struct att_batch {
    struct ab_ent *ents;
    size_t n, cap;
    uint32_t *slots; /* open addressing over ents: index + 1, 0 = empty */
    size_t n_slots;  /* a power of two, at least twice n */
};

br_err att_batch_new(struct att_batch **out)
{
    struct att_batch *ab = br_calloc(1, sizeof *ab);
    if (!ab)
        return BR_ENOMEM;
    *out = ab;
    return BR_OK;
}

void att_batch_free(struct att_batch *ab)
{
    if (!ab)
        return;
    br_free(ab->slots);
    br_free(ab->ents);
    br_free(ab);
}

static size_t slot_of(const uint8_t key[32], size_t n_slots)
{
    /* Keys are BLAKE2b output: any 8 bytes of them are a good hash. */
    return (size_t)store_rd64(key) & (n_slots - 1);
}

static struct ab_ent *ab_find(struct att_batch *ab, const uint8_t key[32])
{
    if (!ab->n_slots)
        return NULL;
    for (size_t i = slot_of(key, ab->n_slots);; i = (i + 1) & (ab->n_slots - 1)) {
        uint32_t v = ab->slots[i];
        if (v == 0)
            return NULL;
        if (memcmp(ab->ents[v - 1].key, key, 32) == 0)
            return &ab->ents[v - 1];
    }
}

static br_err ab_rehash(struct att_batch *ab, size_t n_slots)
{
    uint32_t *slots = br_calloc(n_slots, sizeof *slots);
    if (!slots)
        return BR_ENOMEM;
    for (size_t j = 0; j < ab->n; j++) {
        size_t i = slot_of(ab->ents[j].key, n_slots);
        while (slots[i])
            i = (i + 1) & (n_slots - 1);
        slots[i] = (uint32_t)(j + 1);
    }
    br_free(ab->slots);
    ab->slots = slots;
    ab->n_slots = n_slots;
    return BR_OK;
}

/* The entry of key, created (delta 0, not staged) if the batch has none. */
static br_err ab_get(struct att_batch *ab, const uint8_t key[32], struct ab_ent **out)
{
    struct ab_ent *ent = ab_find(ab, key);
    br_err e = BR_OK;
    if (ent) {
        *out = ent;
        return BR_OK;
    }
    if (ab->n >= UINT32_MAX - 1)
        return BR_ETOOBIG;
    if (ab->n == ab->cap) {
        size_t cap = ab->cap ? ab->cap * 2 : 16;
        struct ab_ent *ents = br_realloc(ab->ents, cap * sizeof *ents);
        if (!ents)
            return BR_ENOMEM;
        ab->ents = ents;
        ab->cap = cap;
    }
    if ((ab->n + 1) * 2 > ab->n_slots) {
        e = ab_rehash(ab, ab->n_slots ? ab->n_slots * 2 : 32);
        if (e)
            return e;
    }
    ent = &ab->ents[ab->n];
    memset(ent, 0, sizeof *ent);
    memcpy(ent->key, key, 32);
    size_t i = slot_of(key, ab->n_slots);
    while (ab->slots[i])
        i = (i + 1) & (ab->n_slots - 1);
    ab->slots[i] = (uint32_t)(ab->n + 1);
    ab->n++;
    *out = ent;
    return BR_OK;
}

br_err att_ref(struct att_batch *ab, const uint8_t key[32], int delta)
{
    struct ab_ent *ent = NULL;
    br_err e = ab_get(ab, key, &ent);
    if (e)
        return e;
    ent->delta += delta;
    return BR_OK;
}

/* A fresh blob id, used by nothing in the database nor staged in ab (may be NULL). */
static br_err blobid_new(struct br_db *db, struct att_batch *ab, uint64_t *out)
{
    for (int tries = 0; tries < 8; tries++) {
        uint8_t b[8];
        bool taken = false;
        br_env_random(db->s->env, b, sizeof b);
        uint64_t id = store_rd64(b);
        for (size_t i = 0; ab && i < ab->n && !taken; i++)
            taken = ab->ents[i].staged && ab->ents[i].rec.blobid == id;
        if (taken)
            continue;
        br_err e = blobid_taken(db->s, db->dbid, id, &taken);
        if (e)
            return e;
        if (!taken) {
            *out = id;
            return BR_OK;
        }
    }
    br_log(BR_LOG_ERROR, TAG, "random source keeps repeating blob ids db=%s", db->name);
    return BR_ESTORE;
}

/* ---- att_prepare ---- */

static int stub_cmp(const void *a, const void *b)
{
    return strcmp(((const struct br_att_stub *)a)->name, ((const struct br_att_stub *)b)->name);
}

static const struct br_att_stub *parent_stub(const struct leafdata *parent, const char *name)
{
    for (size_t i = 0; parent && i < parent->n_atts; i++) {
        if (strcmp(parent->atts[i].name, name) == 0)
            return &parent->atts[i];
    }
    return NULL;
}

/* The blob with this md5: one staged in ab, else the database's md5 index. */
static br_err resolve_md5(struct br_db *db, struct att_batch *ab, const uint8_t md5[16],
                          uint8_t key[32], struct blobrec *r, bool *found)
{
    *found = false;
    for (size_t i = 0; i < ab->n; i++) {
        if (ab->ents[i].staged && memcmp(ab->ents[i].rec.md5, md5, 16) == 0) {
            memcpy(key, ab->ents[i].key, 32);
            *r = ab->ents[i].rec;
            *found = true;
            return BR_OK;
        }
    }
    br_err e = md5_get(db->s, db->dbid, md5, key, found);
    if (e || !*found)
        return e;
    return rec_get(db->s, NULL, db->dbid, key, r, found);
}

/* The record of blob key: staged in ab, or stored. */
static br_err resolve_key(struct br_db *db, struct att_batch *ab, const uint8_t key[32],
                          struct blobrec *r, bool *found)
{
    struct ab_ent *ent = ab_find(ab, key);
    if (ent && ent->staged) {
        *r = ent->rec;
        *found = true;
        return BR_OK;
    }
    return rec_get(db->s, NULL, db->dbid, key, r, found);
}

/* Fill one stub (its strings are owned by out) from in. */
static br_err prepare_one(struct br_db *db, struct att_batch *ab, const struct br_att_in *in,
                          const struct leafdata *parent, uint64_t revpos, struct br_att_stub *out,
                          struct br_errbuf *eb)
{
    struct blobrec r;
    uint8_t key[32], md5[16];
    bool found = false;
    br_err e = BR_OK;
    if (!in->name || !br_att_name_valid(in->name, strlen(in->name)))
        return br_fail(eb, BR_EBADNAME, "invalid attachment name");
    if (in->content_type && !content_type_valid(in->content_type))
        return br_fail(eb, BR_EINVAL, "invalid content type for attachment %s", in->name);

    if (in->stub) {
        const struct br_att_stub *ps = parent_stub(parent, in->name);
        if (ps && (!in->digest || strcmp(in->digest, ps->digest) == 0)) {
            *out = *ps;
            out->name = br_strdup(ps->name);
            out->content_type = br_strdup(ps->content_type);
            return out->name && out->content_type ? BR_OK : BR_ENOMEM;
        }
        if (!in->digest)
            return br_fail(eb, BR_ENOTFOUND, "attachment stub %s has no attachment to keep",
                           in->name);
        if (!digest_parse(in->digest, md5))
            return br_fail(eb, BR_EINVAL, "attachment %s: digest is not md5-<base64>", in->name);
        e = resolve_md5(db, ab, md5, key, &r, &found);
        if (e)
            return e;
        if (!found)
            return br_fail(eb, BR_ENOTFOUND, "attachment stub %s: no attachment with digest %s",
                           in->name, in->digest);
    } else if (in->blob_key) {
        memcpy(key, in->blob_key, 32);
        e = resolve_key(db, ab, key, &r, &found);
        if (e)
            return e;
        if (!found)
            return br_fail(eb, BR_ENOTFOUND, "attachment %s: no such blob", in->name);
    } else {
        if (!in->data && in->len)
            return br_fail(eb, BR_EINVAL, "attachment %s has no data", in->name);
        e = hash_content(in->data, in->len, key, md5);
        if (e)
            return e;
        e = resolve_key(db, ab, key, &r, &found);
        if (e)
            return e;
        if (!found) {
            /* New content: stage it; the flush writes it if the batch still references it. */
            struct ab_ent *ent = NULL;
            memset(&r, 0, sizeof r);
            r.length = in->len;
            memcpy(r.md5, md5, 16);
            if (!chunk_count(r.length, &r.chunks))
                return br_fail(eb, BR_ETOOBIG, "attachment %s is too large", in->name);
            e = blobid_new(db, ab, &r.blobid);
            if (e)
                return e;
            e = ab_get(ab, key, &ent);
            if (e)
                return e;
            ent->staged = true;
            ent->rec = r;
            ent->data = in->data;
        }
    }

    memset(out, 0, sizeof *out);
    out->length = r.length;
    digest_format(r.md5, out->digest);
    out->revpos = in->revpos ? in->revpos : revpos;
    memcpy(out->key, key, 32);
    out->name = br_strdup(in->name);
    out->content_type =
        br_strdup(in->content_type ? in->content_type : br_att_content_type(in->name));
    return out->name && out->content_type ? BR_OK : BR_ENOMEM;
}

br_err att_prepare(struct br_db *db, rocksdb_writebatch_t *wb, struct att_batch *ab,
                   const struct br_att_in *in, size_t n, const struct leafdata *parent,
                   uint64_t revpos, struct br_att_stub **out, size_t *n_out, struct br_errbuf *eb)
{
    (void)wb; /* new content is written by att_batch_flush, once its references are known */
    struct br_att_stub *stubs = NULL;
    size_t done = 0;
    br_err e = BR_OK;
    if (n == 0) {
        *out = NULL;
        *n_out = 0;
        return BR_OK;
    }
    stubs = br_calloc(n, sizeof *stubs);
    if (!stubs)
        return BR_ENOMEM;
    for (; done < n; done++) {
        e = prepare_one(db, ab, &in[done], parent, revpos, &stubs[done], eb);
        if (e) {
            done++; /* free the strings of a half-filled stub too */
            goto fail;
        }
    }
    qsort(stubs, n, sizeof *stubs, stub_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(stubs[i - 1].name, stubs[i].name) == 0) {
            e = br_fail(eb, BR_EINVAL, "duplicate attachment name %s", stubs[i].name);
            goto fail;
        }
    }
    *out = stubs;
    *n_out = n;
    return BR_OK;
fail:
    att_stubs_free(stubs, done);
    return e;
}

/* ---- att_batch_flush ---- */

/* Apply the delta of a blob the database already held when prepared. */
static br_err flush_stored(struct br_db *db, rocksdb_writebatch_t *wb, struct ab_ent *ent)
{
    br_store *s = db->s;
    struct blobrec r;
    bool found = false;
    char hex[17];
    br_err e = rec_get(s, NULL, db->dbid, ent->key, &r, &found);
    if (e)
        return e;
    key_hex(ent->key, hex);
    if (!found) {
        br_log(BR_LOG_ERROR, TAG, "reference change on a missing blob db=%s key=%s delta=%lld",
               db->name, hex, (long long)ent->delta);
        return BR_ESTORE;
    }
    uint64_t mag = ent->delta < 0 ? 0 - (uint64_t)ent->delta : (uint64_t)ent->delta;
    if ((ent->delta < 0 && mag > r.refs) || (ent->delta > 0 && mag > UINT64_MAX - r.refs)) {
        br_log(BR_LOG_ERROR, TAG, "blob refcount out of range db=%s key=%s refs=%llu delta=%lld",
               db->name, hex, (unsigned long long)r.refs, (long long)ent->delta);
        return BR_ESTORE;
    }
    r.refs = ent->delta < 0 ? r.refs - mag : r.refs + mag;
    if (r.refs == 0) {
        ent->dies = true;
        return blob_delete(s, db->dbid, wb, ent->key, &r);
    }
    uint8_t kb[KEY_B_LEN], v[REC_LEN];
    key_b(kb, db->dbid, ent->key);
    rec_encode(&r, v);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_ATTS], (const char *)kb, sizeof kb, (const char *)v,
                              sizeof v);
    return BR_OK;
}

/* Write a blob staged in this batch that ends up referenced: chunks, record, md5 entry. */
static br_err flush_staged(struct br_db *db, struct att_batch *ab, rocksdb_writebatch_t *wb,
                           struct ab_ent *ent)
{
    br_store *s = db->s;
    struct blobrec r = ent->rec;
    uint8_t kb[KEY_B_LEN], kc[KEY_C_LEN], km[KEY_M_LEN], v[REC_LEN], other[32];
    bool found = false;
    if (ent->delta < 0) {
        char hex[17];
        key_hex(ent->key, hex);
        br_log(BR_LOG_ERROR, TAG, "new blob dereferenced db=%s key=%s delta=%lld", db->name, hex,
               (long long)ent->delta);
        return BR_ESTORE;
    }
    if (ent->delta == 0)
        return BR_OK; /* nothing kept it: never written */
    for (uint32_t i = 0; i < r.chunks; i++) {
        uint64_t off = (uint64_t)i * ATT_CHUNK;
        uint64_t n = r.length - off < ATT_CHUNK ? r.length - off : ATT_CHUNK;
        key_c(kc, db->dbid, r.blobid, i);
        rocksdb_writebatch_put_cf(wb, s->cf[CF_ATTS], (const char *)kc, sizeof kc,
                                  (const char *)ent->data + off, (size_t)n);
    }
    r.refs = (uint64_t)ent->delta;
    key_b(kb, db->dbid, ent->key);
    rec_encode(&r, v);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_ATTS], (const char *)kb, sizeof kb, (const char *)v,
                              sizeof v);
    /* The md5 entry: keep one naming another live blob (an md5 collision). */
    br_err e = md5_get(s, db->dbid, r.md5, other, &found);
    if (e)
        return e;
    if (found) {
        struct ab_ent *o = ab_find(ab, other);
        found = !(o && o->dies);
    }
    if (!found) {
        key_m(km, db->dbid, r.md5);
        rocksdb_writebatch_put_cf(wb, s->cf[CF_ATTS], (const char *)km, sizeof km,
                                  (const char *)ent->key, 32);
    }
    return BR_OK;
}

br_err att_batch_flush(struct br_db *db, rocksdb_writebatch_t *wb, struct att_batch *ab)
{
    br_err e = BR_OK;
    /* Deletions first, so a new blob may take over the md5 entry of one that goes. */
    for (size_t i = 0; i < ab->n && !e; i++) {
        if (!ab->ents[i].staged && ab->ents[i].delta != 0)
            e = flush_stored(db, wb, &ab->ents[i]);
    }
    for (size_t i = 0; i < ab->n && !e; i++) {
        if (ab->ents[i].staged)
            e = flush_staged(db, ab, wb, &ab->ents[i]);
    }
    return e;
}

/* ---- att_sweep ---- */

/* Commit wb if it holds at least `min` operations, then clear it. */
static br_err sweep_commit(br_store *s, rocksdb_writebatch_t *wb, int min)
{
    char *err = NULL;
    if (rocksdb_writebatch_count(wb) < min || rocksdb_writebatch_count(wb) == 0)
        return BR_OK;
    rocksdb_write(s->rdb, s->wo, wb, &err);
    rocksdb_writebatch_clear(wb);
    if (err)
        return store_rdb_err(err, "att_sweep");
    return BR_OK;
}

/* Visit every key of dbid+tag: fn(key, value) may add deletions to wb. */
static br_err sweep_scan(br_store *s, const uint8_t dbid[4], char tag, rocksdb_writebatch_t *wb,
                         br_err (*fn)(br_store *, const uint8_t *, rocksdb_writebatch_t *,
                                      const uint8_t *, size_t, const uint8_t *, size_t, uint64_t *),
                         uint64_t *count)
{
    uint8_t start[5], end[5]; /* end outlives the iterator that reads its bound */
    char *err = NULL;
    br_err e = BR_OK;
    memcpy(start, dbid, 4);
    start[4] = (uint8_t)tag;
    memcpy(end, start, 5);
    end[4]++;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)end, sizeof end);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_ATTS]);
    for (rocksdb_iter_seek(it, (const char *)start, sizeof start); rocksdb_iter_valid(it) && !e;
         rocksdb_iter_next(it)) {
        size_t kl = 0, vl = 0;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        e = fn(s, dbid, wb, (const uint8_t *)k, kl, (const uint8_t *)v, vl, count);
        if (!e)
            e = sweep_commit(s, wb, SWEEP_BATCH);
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (err && !e)
        return store_rdb_err(err, "att_sweep_scan");
    rocksdb_free(err);
    return e;
}

static br_err sweep_pending(br_store *s, const uint8_t dbid[4], rocksdb_writebatch_t *wb,
                            const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                            uint64_t *count)
{
    uint8_t start[KEY_C_LEN], end[KEY_CP_LEN];
    (void)v;
    (void)vl;
    if (kl == KEY_P_LEN) {
        chunk_range(dbid, store_rd64(k + 5), start, end);
        rocksdb_writebatch_delete_range_cf(wb, s->cf[CF_ATTS], (const char *)start, sizeof start,
                                           (const char *)end, sizeof end);
    }
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_ATTS], (const char *)k, kl);
    (*count)++;
    return BR_OK;
}

static br_err sweep_unreferenced(br_store *s, const uint8_t dbid[4], rocksdb_writebatch_t *wb,
                                 const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                                 uint64_t *count)
{
    struct blobrec r;
    if (kl != KEY_B_LEN || rec_decode(v, vl, &r) != BR_OK) {
        br_log(BR_LOG_WARN, TAG, "sweep skips a corrupt blob record klen=%zu vlen=%zu", kl, vl);
        return BR_OK;
    }
    if (r.refs != 0)
        return BR_OK;
    (*count)++;
    return blob_delete(s, dbid, wb, k + 5, &r);
}

br_err att_sweep(br_store *s, const uint8_t dbid[4])
{
    uint64_t pending = 0, unreferenced = 0;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    br_err e = sweep_scan(s, dbid, 'p', wb, sweep_pending, &pending);
    if (!e)
        e = sweep_scan(s, dbid, 'b', wb, sweep_unreferenced, &unreferenced);
    if (!e)
        e = sweep_commit(s, wb, 0);
    rocksdb_writebatch_destroy(wb);
    if (!e && (pending || unreferenced))
        br_log(BR_LOG_INFO, TAG, "swept dbid=%02x%02x%02x%02x uploads=%llu blobs=%llu", dbid[0],
               dbid[1], dbid[2], dbid[3], (unsigned long long)pending,
               (unsigned long long)unreferenced);
    return e;
}

/* ---- streaming write ---- */

struct br_att_writer {
    struct br_db *db;
    uint64_t blobid;
    uint64_t length;
    uint32_t chunks; /* chunks written */
    br_err err;      /* sticky: the first failure */
    uint8_t *buf;    /* one chunk */
    size_t fill;
    void *hmem; /* holds the 64-byte aligned BLAKE2b state */
    crypto_generichash_state *h;
    EVP_MD_CTX *md5;
    rocksdb_writeoptions_t *wo;
};

static void writer_free(br_att_writer *w)
{
    if (!w)
        return;
    rocksdb_writeoptions_destroy(w->wo);
    EVP_MD_CTX_free(w->md5);
    br_free(w->hmem);
    br_free(w->buf);
    br_free(w);
}

/* Remove what the writer put: its chunks and its pending marker (one batch). */
static br_err writer_discard(br_att_writer *w)
{
    br_store *s = w->db->s;
    uint8_t start[KEY_C_LEN], end[KEY_CP_LEN], kp[KEY_P_LEN];
    char *err = NULL;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    chunk_range(w->db->dbid, w->blobid, start, end);
    key_p(kp, w->db->dbid, w->blobid);
    rocksdb_writebatch_delete_range_cf(wb, s->cf[CF_ATTS], (const char *)start, sizeof start,
                                       (const char *)end, sizeof end);
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_ATTS], (const char *)kp, sizeof kp);
    rocksdb_write(s->rdb, w->wo, wb, &err);
    rocksdb_writebatch_destroy(wb);
    if (err)
        return store_rdb_err(err, "att_discard");
    return BR_OK;
}

br_err br_att_writer_open(br_db *db, br_att_writer **out)
{
    br_store *s = db->s;
    uint8_t kp[KEY_P_LEN];
    char *err = NULL;
    br_err e = BR_OK;
    br_att_writer *w = br_calloc(1, sizeof *w);
    if (!w)
        return BR_ENOMEM;
    w->db = db;
    w->buf = br_malloc(ATT_CHUNK);
    w->hmem = br_malloc(sizeof *w->h + 63);
    if (!w->buf || !w->hmem) {
        e = BR_ENOMEM;
        goto fail;
    }
    w->h = (crypto_generichash_state *)(((uintptr_t)w->hmem + 63) & ~(uintptr_t)63);
    w->md5 = EVP_MD_CTX_new();
    if (!w->md5) {
        e = BR_ENOMEM;
        goto fail;
    }
    if (EVP_DigestInit_ex(w->md5, EVP_md5(), NULL) != 1 ||
        crypto_generichash_init(w->h, NULL, 0, 32) != 0) {
        e = BR_ECRYPTO;
        goto fail;
    }
    w->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(w->wo, 0);
    e = blobid_new(db, NULL, &w->blobid);
    if (e)
        goto fail;
    key_p(kp, db->dbid, w->blobid);
    rocksdb_put_cf(s->rdb, w->wo, s->cf[CF_ATTS], (const char *)kp, sizeof kp, "", 0, &err);
    if (err) {
        e = store_rdb_err(err, "att_writer_open");
        goto fail;
    }
    *out = w;
    return BR_OK;
fail:
    writer_free(w);
    return e;
}

/* Put one chunk (n bytes at p) as the writer's next. */
static br_err writer_put_chunk(br_att_writer *w, const uint8_t *p, size_t n)
{
    br_store *s = w->db->s;
    uint8_t kc[KEY_C_LEN];
    char *err = NULL;
    if (w->chunks == UINT32_MAX)
        return BR_ETOOBIG;
    key_c(kc, w->db->dbid, w->blobid, w->chunks);
    rocksdb_put_cf(s->rdb, w->wo, s->cf[CF_ATTS], (const char *)kc, sizeof kc, (const char *)p, n,
                   &err);
    if (err)
        return store_rdb_err(err, "att_write_chunk");
    w->chunks++;
    return BR_OK;
}

br_err br_att_writer_write(br_att_writer *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (w->err)
        return w->err;
    if (n == 0)
        return BR_OK;
    if (!p)
        return BR_EINVAL;
    if (n > UINT64_MAX - w->length) {
        w->err = BR_ETOOBIG;
        return w->err;
    }
    if (crypto_generichash_update(w->h, b, n) != 0 || EVP_DigestUpdate(w->md5, b, n) != 1) {
        w->err = BR_ECRYPTO;
        return w->err;
    }
    w->length += n;
    while (n > 0) {
        br_err e = BR_OK;
        if (w->fill == 0 && n >= ATT_CHUNK) {
            e = writer_put_chunk(w, b, ATT_CHUNK); /* a whole chunk: no copy */
            b += ATT_CHUNK;
            n -= ATT_CHUNK;
        } else {
            size_t take = ATT_CHUNK - w->fill < n ? ATT_CHUNK - w->fill : n;
            memcpy(w->buf + w->fill, b, take);
            w->fill += take;
            b += take;
            n -= take;
            if (w->fill == ATT_CHUNK) {
                e = writer_put_chunk(w, w->buf, ATT_CHUNK);
                w->fill = 0;
            }
        }
        if (e) {
            w->err = e;
            return e;
        }
    }
    return BR_OK;
}

br_err br_att_writer_finish(br_att_writer *w, uint8_t key[32], char digest[48], uint64_t *length)
{
    struct br_db *db = w->db;
    br_store *s = db->s;
    struct blobrec r, old;
    uint8_t k[32], kb[KEY_B_LEN], km[KEY_M_LEN], kp[KEY_P_LEN], v[REC_LEN], other[32];
    uint8_t start[KEY_C_LEN], end[KEY_CP_LEN];
    unsigned int md_len = 0;
    bool found = false, locked = false;
    rocksdb_writebatch_t *wb = NULL;
    br_err e = w->err;
    if (e)
        goto fail;
    if (w->fill > 0) {
        e = writer_put_chunk(w, w->buf, w->fill);
        if (e)
            goto fail;
    }
    memset(&r, 0, sizeof r);
    if (crypto_generichash_final(w->h, k, 32) != 0 ||
        EVP_DigestFinal_ex(w->md5, r.md5, &md_len) != 1 || md_len != 16) {
        e = BR_ECRYPTO;
        goto fail;
    }
    r.blobid = w->blobid;
    r.length = w->length;
    r.chunks = w->chunks;

    pthread_mutex_lock(&db->wmu);
    locked = true;
    if (db->deleted) {
        e = BR_ENOTFOUND;
        goto fail;
    }
    e = rec_get(s, NULL, db->dbid, k, &old, &found);
    if (e)
        goto fail;
    wb = rocksdb_writebatch_create();
    key_p(kp, db->dbid, w->blobid);
    rocksdb_writebatch_delete_cf(wb, s->cf[CF_ATTS], (const char *)kp, sizeof kp);
    if (found) {
        /* Same content already stored: drop our copy, keep the old one. */
        chunk_range(db->dbid, w->blobid, start, end);
        rocksdb_writebatch_delete_range_cf(wb, s->cf[CF_ATTS], (const char *)start, sizeof start,
                                           (const char *)end, sizeof end);
    } else {
        key_b(kb, db->dbid, k);
        rec_encode(&r, v);
        rocksdb_writebatch_put_cf(wb, s->cf[CF_ATTS], (const char *)kb, sizeof kb, (const char *)v,
                                  sizeof v);
        e = md5_get(s, db->dbid, r.md5, other, &found);
        if (e)
            goto fail;
        if (found) {
            e = rec_get(s, NULL, db->dbid, other, &old, &found);
            if (e)
                goto fail;
        }
        if (!found) {
            key_m(km, db->dbid, r.md5);
            rocksdb_writebatch_put_cf(wb, s->cf[CF_ATTS], (const char *)km, sizeof km,
                                      (const char *)k, 32);
        }
    }
    e = store_write(s, wb, NULL);
    if (e)
        goto fail;
    pthread_mutex_unlock(&db->wmu);
    rocksdb_writebatch_destroy(wb);
    memcpy(key, k, 32);
    digest_format(r.md5, digest);
    if (length)
        *length = w->length;
    writer_free(w);
    return BR_OK;
fail:
    if (locked)
        pthread_mutex_unlock(&db->wmu);
    rocksdb_writebatch_destroy(wb);
    if (writer_discard(w) != BR_OK)
        br_log(BR_LOG_WARN, TAG, "failed upload left for the next sweep db=%s", db->name);
    writer_free(w);
    return e;
}

void br_att_writer_abort(br_att_writer *w)
{
    if (!w)
        return;
    if (writer_discard(w) != BR_OK)
        br_log(BR_LOG_WARN, TAG, "aborted upload left for the next sweep db=%s", w->db->name);
    writer_free(w);
}

/* ---- streaming read ---- */

struct br_att_reader {
    br_store *s;
    uint8_t dbid[4];
    struct blobrec rec;
    uint32_t next; /* index of the next chunk */
    const rocksdb_snapshot_t *snap;
    rocksdb_readoptions_t *ro;
    char *val; /* the chunk last returned (rocksdb_free) */
};

void br_att_reader_close(br_att_reader *r)
{
    if (!r)
        return;
    rocksdb_free(r->val);
    rocksdb_readoptions_destroy(r->ro);
    if (r->snap)
        rocksdb_release_snapshot(r->s->rdb, r->snap);
    br_free(r);
}

br_err br_att_reader_open(br_db *db, const uint8_t key[32], br_att_reader **out, uint64_t *length)
{
    bool found = false;
    br_err e = BR_OK;
    br_att_reader *r = br_calloc(1, sizeof *r);
    if (!r)
        return BR_ENOMEM;
    r->s = db->s;
    memcpy(r->dbid, db->dbid, 4);
    /* One snapshot: a blob dereferenced meanwhile still reads whole. */
    r->snap = rocksdb_create_snapshot(r->s->rdb);
    r->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(r->ro, r->snap);
    e = rec_get(r->s, r->ro, r->dbid, key, &r->rec, &found);
    if (!e && !found)
        e = BR_ENOTFOUND;
    if (e)
        goto fail;
    if (length)
        *length = r->rec.length;
    *out = r;
    return BR_OK;
fail:
    br_att_reader_close(r);
    return e;
}

br_err br_att_reader_read(br_att_reader *r, const uint8_t **p, size_t *n)
{
    uint8_t kc[KEY_C_LEN];
    char *err = NULL;
    size_t vl = 0;
    rocksdb_free(r->val);
    r->val = NULL;
    if (r->next >= r->rec.chunks) {
        *p = NULL;
        *n = 0;
        return BR_OK;
    }
    uint64_t off = (uint64_t)r->next * ATT_CHUNK;
    uint64_t want = r->rec.length - off < ATT_CHUNK ? r->rec.length - off : ATT_CHUNK;
    key_c(kc, r->dbid, r->rec.blobid, r->next);
    r->val =
        rocksdb_get_cf(r->s->rdb, r->ro, r->s->cf[CF_ATTS], (const char *)kc, sizeof kc, &vl, &err);
    if (err)
        return store_rdb_err(err, "att_read_chunk");
    if (!r->val || vl != want) {
        br_log(BR_LOG_ERROR, TAG, "blob chunk %s blobid=%016llx idx=%u len=%zu want=%llu",
               r->val ? "truncated" : "missing", (unsigned long long)r->rec.blobid, r->next, vl,
               (unsigned long long)want);
        return BR_ESTORE;
    }
    r->next++;
    *p = (const uint8_t *)r->val;
    *n = vl;
    return BR_OK;
}

/* ---- document level ---- */

void br_att_stub_fini(struct br_att_stub *s)
{
    if (!s)
        return;
    br_free(s->name);
    br_free(s->content_type);
    s->name = NULL;
    s->content_type = NULL;
}

static const struct br_att_stub *doc_stub(const struct br_doc *d, const char *name)
{
    for (size_t i = 0; i < d->n_atts; i++) {
        if (strcmp(d->atts[i].name, name) == 0)
            return &d->atts[i];
    }
    return NULL;
}

br_err br_db_att_info(br_db *db, const char *id, size_t id_len, const struct br_rev *rev,
                      const char *name, struct br_att_stub *out)
{
    struct br_get_opts o = {.rev = rev};
    struct br_doc *d = NULL;
    struct br_att_stub st;
    if (!name)
        return BR_EINVAL;
    br_err e = br_db_get(db, id, id_len, &o, &d, NULL);
    if (e)
        goto done;
    const struct br_att_stub *a = doc_stub(d, name);
    if (!a) {
        e = BR_ENOTFOUND;
        goto done;
    }
    st = *a;
    st.name = br_strdup(a->name);
    st.content_type = br_strdup(a->content_type);
    if (!st.name || !st.content_type) {
        br_att_stub_fini(&st);
        e = BR_ENOMEM;
        goto done;
    }
    *out = st;
done:
    br_doc_free(d);
    return e;
}

/* Fill res for an error found before br_db_put was reached. */
static br_err put_fail(struct br_put_result *res, const char *id, size_t id_len, br_err e,
                       const char *reason)
{
    memset(res, 0, sizeof *res);
    res->err = e;
    if (id && id_len <= BR_DOCID_MAX)
        memcpy(res->id, id, id_len);
    snprintf(res->reason, sizeof res->reason, "%s", reason);
    return e;
}

/* Write a child of the winner `rev` of document id that keeps every attachment of the winner
 * but `name`, plus `add` when it is not NULL. */
static br_err att_rewrite(br_db *db, const char *id, size_t id_len, const struct br_rev *rev,
                          const char *name, const struct br_att_in *add, bool must_have,
                          const struct br_write_opts *wo, struct br_put_result *res)
{
    struct br_write_opts w = wo ? *wo : BR_WRITE_DEFAULT;
    struct br_get_opts o = {.include_deleted = add != NULL};
    struct br_errbuf eb = {{0}};
    struct br_doc *d = NULL;
    struct br_att_in *atts = NULL;
    size_t n = 0;
    bool had = false;
    br_err e = BR_OK;
    w.new_edits = true;
    if (!rev) {
        /* Create: a document whose only content is the attachment. */
        struct br_put p = {.id = id, .id_len = id_len, .atts = add, .n_atts = add ? 1 : 0};
        if (!add)
            return put_fail(res, id, id_len, BR_ECONFLICT, "document update conflict");
        return br_db_put(db, &p, &w, res);
    }
    if (!id)
        return put_fail(res, id, id_len, BR_EINVAL, "missing document id");
    e = br_db_get(db, id, id_len, &o, &d, &eb);
    if (e == BR_ENOTFOUND && add) {
        e = put_fail(res, id, id_len, BR_ECONFLICT, "document update conflict");
        goto done;
    }
    if (e) {
        e = put_fail(res, id, id_len, e, eb.msg[0] ? eb.msg : "missing");
        goto done;
    }
    if (!br_rev_eq(&d->rev, rev)) {
        e = put_fail(res, id, id_len, BR_ECONFLICT, "document update conflict");
        goto done;
    }
    atts = br_calloc(d->n_atts + 1, sizeof *atts);
    if (!atts) {
        e = put_fail(res, id, id_len, BR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < d->n_atts; i++) {
        if (strcmp(d->atts[i].name, name) == 0) {
            had = true;
            continue;
        }
        atts[n].name = d->atts[i].name;
        atts[n].stub = true;
        atts[n].digest = d->atts[i].digest;
        n++;
    }
    if (must_have && !had) {
        e = put_fail(res, id, id_len, BR_ENOTFOUND, "attachment not found");
        goto done;
    }
    if (add)
        atts[n++] = *add;
    struct br_put p = {.id = id,
                       .id_len = id_len,
                       .rev = rev,
                       .body = d->body,
                       .body_len = d->body_len,
                       .atts = atts,
                       .n_atts = n};
    e = br_db_put(db, &p, &w, res);
done:
    br_free(atts);
    br_doc_free(d);
    return e;
}

br_err br_db_att_put(br_db *db, const char *id, size_t id_len, const struct br_rev *rev,
                     const char *name, const char *content_type, const uint8_t key[32],
                     const struct br_write_opts *wo, struct br_put_result *res)
{
    struct br_att_in add = {.name = name, .content_type = content_type, .blob_key = key};
    struct br_put_result tmp;
    if (!res)
        res = &tmp;
    if (!name || !br_att_name_valid(name, strlen(name)))
        return put_fail(res, id, id_len, BR_EBADNAME, "invalid attachment name");
    if (!key)
        return put_fail(res, id, id_len, BR_EINVAL, "no blob key");
    return att_rewrite(db, id, id_len, rev, name, &add, false, wo, res);
}

br_err br_db_att_delete(br_db *db, const char *id, size_t id_len, const struct br_rev *rev,
                        const char *name, const struct br_write_opts *wo, struct br_put_result *res)
{
    struct br_put_result tmp;
    if (!res)
        res = &tmp;
    if (!name)
        return put_fail(res, id, id_len, BR_EINVAL, "missing attachment name");
    return att_rewrite(db, id, id_len, rev, name, NULL, true, wo, res);
}
