/* docs.c — document writes and reads: the write path (interactive and replicated revisions,
 * bulk batches, conflict resolution), get / open_revs, revsdiff and all_docs.
 *
 * A write batch runs under the database's writer mutex: it loads each touched document's record
 * (once, even if the batch touches it several times), applies the edits to the in-memory tree,
 * then stamps every changed document with a fresh HLC and commits one RocksDB WriteBatch holding
 * the records, the change entries (old ones removed), blob references and the digest. Because the
 * HLC is taken and the batch committed under the same mutex, the changes feed of a database is
 * always committed in HLC order, so a follower reading `since` never skips a change. The fsync
 * (sync=full) happens after the mutex is released and is shared by concurrent writers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "barrel/alloc.h"
#include "barrel/att.h"
#include "barrel/cbor.h"
#include "barrel/log.h"

#include "store_int.h"

static const uint8_t EMPTY_MAP[1] = {0xa0};

bool store_docid_valid(const char *id, size_t len)
{
    if (len == 0 || len > BR_DOCID_MAX || memchr(id, 0, len))
        return false;
    if (id[0] == '_') {
        if (len > 8 && memcmp(id, "_design/", 8) == 0)
            goto utf8;
        return false;
    }
utf8:;
    /* Well-formed UTF-8 (no overlongs, no surrogates). */
    const uint8_t *p = (const uint8_t *)id, *end = p + len;
    while (p < end) {
        uint8_t c = *p;
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= n)
            return false;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* XXH3-128 of (docid, 0, rev text), XORed into acc: the set hash of Decisions (DESIGN). */
static void set_hash_xor(uint8_t acc[16], const char *id, size_t id_len, const struct br_rev *r)
{
    char rev[BR_REV_TEXT_MAX];
    size_t rl = br_rev_format(r, rev);
    XXH128_hash_t h;
    char one[256 + BR_REV_TEXT_MAX];
    if (id_len + 1 + rl <= sizeof one) { /* one-shot: the same hash, without a 576-byte state */
        memcpy(one, id, id_len);
        one[id_len] = '\0';
        memcpy(one + id_len + 1, rev, rl);
        h = XXH3_128bits(one, id_len + 1 + rl);
    } else {
        XXH3_state_t st;
        XXH3_128bits_reset(&st);
        XXH3_128bits_update(&st, id, id_len);
        XXH3_128bits_update(&st, "", 1);
        XXH3_128bits_update(&st, rev, rl);
        h = XXH3_128bits_digest(&st);
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    for (int i = 0; i < 16; i++)
        acc[i] ^= c.digest[i];
}

static void tree_set_hash(uint8_t acc[16], const char *id, size_t id_len, const br_revtree *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (t->nodes[i].leaf)
            set_hash_xor(acc, id, id_len, &t->nodes[i].rev);
}

/* ---- the write context ---- */

struct wdoc {
    const char *id; /* borrowed from the batch's results (res[i].id), which outlive the wctx */
    size_t id_len;
    uint64_t hash;
    struct docrec rec;
    /* the stored record bytes rec borrows bodies from: raw (a Get's, rocksdb_free) or pin
     * (wctx_prefetch's, rocksdb_pinnableslice_destroy) */
    uint8_t *raw;
    rocksdb_pinnableslice_t *pin;
    bool existed;
    bool old_packed; /* the stored change at old_seq is an item of a packed entry */
    struct br_hlc old_seq, old_pack_key; /* old_pack_key: that entry's key */
    bool dirty;
};

#define WB_SPARE_MAX (4u << 20) /* bytes of a batch kept for reuse */

struct wctx {
    struct br_db *db;
    rocksdb_writebatch_t *wb;
    struct att_batch *ab;
    struct wdoc *docs;
    size_t n, cap;
    uint32_t *slots; /* open addressing: index+1 into docs, 0 = empty */
    size_t nslots;
    br_buf key;
    /* wctx_prefetch: stored record of the batch's i-th write (NULL: none, or taken) */
    rocksdb_pinnableslice_t **pf_pin;
    size_t pf_n;
};

static void wctx_fini(struct wctx *w)
{
    for (size_t i = 0; i < w->n; i++) {
        docrec_fini(&w->docs[i].rec);
        rocksdb_free(w->docs[i].raw);
        if (w->docs[i].pin)
            rocksdb_pinnableslice_destroy(w->docs[i].pin);
    }
    br_free(w->docs);
    br_free(w->slots);
    for (size_t i = 0; i < w->pf_n; i++)
        if (w->pf_pin[i])
            rocksdb_pinnableslice_destroy(w->pf_pin[i]);
    br_free(w->pf_pin);
    br_buf_fini(&w->key);
    att_batch_free(w->ab);
    if (w->wb) {
        /* Keep it for the next write unless it grew past what is worth holding on to. */
        size_t size = 0;
        rocksdb_writebatch_data(w->wb, &size);
        rocksdb_writebatch_t *none = NULL;
        if (size <= WB_SPARE_MAX) {
            rocksdb_writebatch_clear(w->wb);
            if (atomic_compare_exchange_strong(&w->db->wb_spare, &none, w->wb))
                w->wb = NULL;
        }
        if (w->wb)
            rocksdb_writebatch_destroy(w->wb);
    }
}

static br_err wctx_init(struct wctx *w, struct br_db *db, size_t expect)
{
    memset(w, 0, sizeof *w);
    w->db = db;
    br_buf_init(&w->key, 0);
    w->nslots = 16;
    while (w->nslots < expect * 2)
        w->nslots *= 2;
    w->slots = br_calloc(w->nslots, sizeof *w->slots);
    if (!w->slots)
        return BR_ENOMEM;
    /* Room for every document of the batch at once: growing by doubling copied a bulk batch's
     * states seven times (bench/store_bench.c bulk phases). Not zeroed: wctx_doc clears each
     * state it takes, and only those (w->n) are read (zeroing cost more than the states' use). */
    if (expect > 1) {
        if (expect > SIZE_MAX / sizeof *w->docs)
            return BR_ENOMEM;
        w->docs = br_malloc(expect * sizeof *w->docs);
        if (!w->docs)
            return BR_ENOMEM;
        w->cap = expect;
    }
    br_err e = att_batch_new(&w->ab);
    if (e)
        return e;
    w->wb = atomic_exchange(&db->wb_spare, NULL);
    if (!w->wb)
        w->wb = rocksdb_writebatch_create();
    return BR_OK;
}

static br_err grow_slots(struct wctx *w)
{
    size_t ns = w->nslots * 2;
    uint32_t *s = br_calloc(ns, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    for (size_t i = 0; i < w->n; i++) {
        size_t j = w->docs[i].hash & (ns - 1);
        while (s[j])
            j = (j + 1) & (ns - 1);
        s[j] = (uint32_t)(i + 1);
    }
    br_free(w->slots);
    w->slots = s;
    w->nslots = ns;
    return BR_OK;
}

/* A key of wctx_prefetch: bytes p[0..len), for the batch's write i. */
struct pf_key {
    const char *p;
    size_t len;
    size_t i;
};

/* RocksDB's bytewise order (the docs family's comparator). */
static int pf_key_cmp(const void *pa, const void *pb)
{
    const struct pf_key *a = pa, *b = pb;
    int c = memcmp(a->p, b->p, a->len < b->len ? a->len : b->len);
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

/* Read the stored records of a batch's documents (res[i].id, for every i without an error) with
 * RocksDB's batched MultiGet, which looks sorted keys up together, file by file, rather than
 * one Get after another as the vector MultiGet does: a seventh fewer instructions per document
 * while the memtable holds everything, a third fewer once flushes have left L0 files
 * (bench/store_bench.c bulk phases). The keys are sorted here (bulk batches usually come
 * sorted: one pass checks): RocksDB's own sort, through its comparator, cost more than the
 * lookups, and its debug check (enabled in Debian's build) aborts on unsorted input declared
 * sorted. The values stay pinned (block cache) or held by the slices until wctx_fini. wctx_doc
 * takes record i from here. Called under the write lock, like the Gets it replaces; a single
 * write keeps its Get. */
static br_err wctx_prefetch(struct wctx *w, const struct br_put_result *res, size_t n)
{
    if (n < 2)
        return BR_OK;
    if (n > SIZE_MAX / sizeof(struct pf_key)) /* the largest of the arrays below */
        return BR_ENOMEM;
    br_err e = BR_OK;
    br_buf keys;
    br_buf_init(&keys, 0);
    size_t m = 0;
    struct pf_key *pk = br_malloc(n * sizeof *pk);
    size_t *klen = br_malloc(n * sizeof *klen);
    const char **kp = br_malloc(n * sizeof *kp);
    rocksdb_pinnableslice_t **vals = br_malloc(n * sizeof *vals);
    char **errs = br_malloc(n * sizeof *errs);
    w->pf_pin = br_calloc(n, sizeof *w->pf_pin);
    if (!pk || !klen || !kp || !vals || !errs || !w->pf_pin) {
        e = BR_ENOMEM;
        goto out;
    }
    w->pf_n = n;
    for (size_t i = 0; i < n && !e; i++) {
        if (res[i].err)
            continue;
        size_t at = keys.len;
        e = br_buf_append(&keys, w->db->dbid, 4);
        if (!e)
            e = br_buf_append(&keys, res[i].id, strlen(res[i].id));
        pk[m++] = (struct pf_key){.p = NULL, .len = keys.len - at, .i = i};
    }
    if (e || m == 0)
        goto out;
    bool sorted = true;
    for (size_t k = 0, at = 0; k < m; at += pk[k++].len) {
        pk[k].p = (const char *)keys.data + at;
        if (sorted && k > 0 && pf_key_cmp(&pk[k - 1], &pk[k]) > 0)
            sorted = false;
    }
    if (!sorted)
        qsort(pk, m, sizeof *pk, pf_key_cmp);
    for (size_t k = 0; k < m; k++) {
        kp[k] = pk[k].p;
        klen[k] = pk[k].len;
    }
    rocksdb_batched_multi_get_cf(w->db->s->rdb, w->db->s->ro, w->db->s->cf[CF_DOCS], m, kp, klen,
                                 vals, errs, true);
    for (size_t k = 0; k < m; k++) {
        if (errs[k] && !e)
            e = store_rdb_err(errs[k], "multiget");
        else if (errs[k])
            rocksdb_free(errs[k]);
        w->pf_pin[pk[k].i] = vals[k];
    }
out:
    br_buf_fini(&keys);
    br_free(pk);
    br_free(klen);
    br_free(kp);
    br_free(vals);
    br_free(errs);
    return e;
}

/* The batch's state of document id (the batch's i-th write), loading it on first touch. The
 * state borrows id, which must outlive w. */
static br_err wctx_doc(struct wctx *w, const char *id, size_t id_len, size_t i, struct wdoc **out)
{
    uint64_t h = XXH3_64bits(id, id_len);
    size_t j = h & (w->nslots - 1);
    while (w->slots[j]) {
        struct wdoc *d = &w->docs[w->slots[j] - 1];
        if (d->hash == h && d->id_len == id_len && memcmp(d->id, id, id_len) == 0) {
            *out = d;
            return BR_OK;
        }
        j = (j + 1) & (w->nslots - 1);
    }
    if ((w->n + 1) * 2 > w->nslots) {
        br_err e = grow_slots(w);
        if (e)
            return e;
        return wctx_doc(w, id, id_len, i, out);
    }
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 8;
        struct wdoc *nd = br_realloc(w->docs, nc * sizeof *nd);
        if (!nd)
            return BR_ENOMEM;
        w->docs = nd;
        w->cap = nc;
    }
    struct wdoc *d = &w->docs[w->n];
    memset(d, 0, sizeof *d);
    docrec_init(&d->rec);
    d->id = id;
    d->id_len = id_len;
    d->hash = h;
    br_err e = BR_OK;
    char *v = NULL;
    size_t vl = 0;
    rocksdb_pinnableslice_t *pin = NULL;
    if (i < w->pf_n) { /* prefetched */
        pin = w->pf_pin[i];
        w->pf_pin[i] = NULL;
        if (pin)
            v = (char *)rocksdb_pinnableslice_value(pin, &vl);
    } else {
        e = store_key(&w->key, w->db->dbid, id, id_len);
        if (!e)
            e = store_get(w->db->s, CF_DOCS, w->key.data, w->key.len, &v, &vl);
    }
    if (e)
        return e;
    w->n++; /* from here on wctx_fini owns d */
    w->slots[j] = (uint32_t)w->n;
    d->pin = pin;
    if (v || pin) {
        if (!pin)
            d->raw = (uint8_t *)v;
        d->existed = true;
        e = docrec_decode((const uint8_t *)v, vl, &d->rec);
        if (e == BR_ENOMEM)
            return e;
        if (e) {
            br_log(BR_LOG_ERROR, "store", "op=load db=%s doc=%.*s msg=\"corrupt record\"",
                   w->db->name, (int)(id_len > 64 ? 64 : id_len), id);
            return BR_ESTORE;
        }
        d->old_seq = d->rec.seq;
        d->old_packed = d->rec.packed;
        d->old_pack_key = d->rec.pack_key;
    }
    *out = d;
    return BR_OK;
}

/* Add leaf rev with body to d's record. The leaf borrows body, which must outlive w: it is a
 * put's body (or EMPTY_MAP), which the caller of br_db_bulk holds until the batch returns, and
 * docrec_encode copies it into the record (a copy per leaf cost a malloc, a memcpy and a free
 * per document, bench/store_bench.c). */
static br_err leaf_add(struct wctx *w, struct wdoc *d, const struct br_rev *rev,
                       const uint8_t *body, size_t body_len, struct br_att_stub *atts,
                       size_t n_atts)
{
    struct docrec *r = &d->rec;
    /* Takes `atts` on success and on failure alike. */
    struct leafdata *nl = br_realloc(r->leaves, (r->n_leaves + 1) * sizeof *nl);
    if (!nl) {
        att_stubs_free(atts, n_atts);
        return BR_ENOMEM;
    }
    r->leaves = nl;
    struct leafdata *l = &nl[r->n_leaves];
    memset(l, 0, sizeof *l);
    l->rev = *rev;
    l->body = body;
    l->body_len = body_len;
    l->atts = atts;
    l->n_atts = n_atts;
    r->n_leaves++;
    for (size_t j = 0; j < n_atts; j++) {
        br_err e = att_ref(w->ab, atts[j].key, +1);
        if (e)
            return e;
    }
    return BR_OK;
}

/* Drop the data of nodes that stopped being leaves, and prune to revs_limit. */
static br_err settle(struct wctx *w, struct wdoc *d)
{
    struct docrec *r = &d->rec;
    uint32_t removed;
    br_err e = br_revtree_prune(&r->tree, w->db->revs_limit, &removed);
    if (e)
        return e;
    for (size_t i = 0; i < r->n_leaves;) {
        uint32_t node = br_revtree_find(&r->tree, &r->leaves[i].rev);
        if (node != BR_REVTREE_NONE && r->tree.nodes[node].leaf) {
            r->leaves[i].node = node;
            i++;
            continue;
        }
        struct br_rev gone = r->leaves[i].rev;
        e = docrec_drop_leaf(r, &gone, w->ab);
        if (e)
            return e;
    }
    d->dirty = true;
    return BR_OK;
}

static void result_set(struct br_put_result *res, br_err e, const char *fmt, ...) BR_PRINTF(3, 4);
static void result_set(struct br_put_result *res, br_err e, const char *fmt, ...)
{
    res->err = e;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
}

static br_err check_body(struct br_db *db, const struct br_put *p, struct br_put_result *res)
{
    if (p->body_len > db->s->max_doc_bytes) {
        result_set(res, BR_ETOOBIG, "Document exceeds the maximum size of %zu bytes",
                   db->s->max_doc_bytes);
        return BR_ETOOBIG;
    }
    if (p->body && !p->body_trusted) {
        struct br_errbuf eb;
        if (br_cbor_doc_validate(p->body, p->body_len, 0, &eb) != BR_OK) {
            result_set(res, BR_EINVAL, "Document body is not valid: %s", eb.msg);
            return BR_EINVAL;
        }
    }
    return BR_OK;
}

static br_err collect_digests(const struct br_att_stub *a, size_t n, const char ***out)
{
    *out = NULL;
    if (!n)
        return BR_OK;
    const char **d = br_calloc(n, sizeof *d);
    if (!d)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++)
        d[i] = a[i].digest;
    *out = d;
    return BR_OK;
}

/* An interactive write (new_edits=true). Input errors go to res and leave d unchanged; any other
 * error fails the batch. */
static br_err apply_edit(struct wctx *w, struct wdoc *d, const struct br_put *p,
                         struct br_put_result *res)
{
    struct docrec *r = &d->rec;
    const uint8_t *body = p->body ? p->body : EMPTY_MAP;
    size_t body_len = p->body ? p->body_len : sizeof EMPTY_MAP;
    uint32_t parent = BR_REVTREE_NONE;
    if (p->rev) {
        parent = br_revtree_find(&r->tree, p->rev);
        if (parent == BR_REVTREE_NONE || !r->tree.nodes[parent].leaf) {
            result_set(res, BR_ECONFLICT, "Document update conflict.");
            return BR_OK;
        }
    } else {
        uint32_t win = br_revtree_winner(&r->tree);
        if (win != BR_REVTREE_NONE) {
            if (!r->tree.nodes[win].deleted) {
                result_set(res, BR_ECONFLICT, "Document update conflict.");
                return BR_OK;
            }
            parent = win; /* DOC-02: re-creating extends the tombstone branch */
        } else if (p->deleted) {
            result_set(res, BR_ENOTFOUND, "missing");
            return BR_OK;
        }
    }
    const struct br_rev *prev = parent == BR_REVTREE_NONE ? NULL : &r->tree.nodes[parent].rev;
    struct leafdata *pdata = prev ? docrec_leaf(r, prev) : NULL;
    uint64_t gen = prev ? prev->gen + 1 : 1;
    if (gen > BR_REV_GEN_MAX) {
        result_set(res, BR_EBADREV, "revision generation overflow");
        return BR_OK;
    }
    struct br_att_stub *atts = NULL;
    size_t n_atts = 0;
    struct br_errbuf eb = {{0}};
    br_err e =
        att_prepare(w->db, w->wb, w->ab, p->atts, p->n_atts, pdata, gen, &atts, &n_atts, &eb);
    if (e == BR_EBADNAME || e == BR_ENOTFOUND || e == BR_EINVAL) {
        result_set(res, e, "%s", eb.msg[0] ? eb.msg : br_strerror(e));
        return BR_OK;
    }
    if (e)
        return e;
    const char **digests;
    e = collect_digests(atts, n_atts, &digests);
    struct br_rev nrev;
    if (!e)
        e = br_rev_make(prev, p->deleted, body, body_len, digests, n_atts, &nrev);
    br_free(digests);
    if (!e)
        e = br_revtree_add(&r->tree, &nrev, prev, p->deleted);
    if (e == BR_EEXIST) {
        /* The same edit of the same parent again: the parent is no longer a leaf then, so this
         * only happens for a parent that is a leaf and a child that exists: impossible. */
        e = BR_ESTORE;
    }
    if (!e)
        e = leaf_add(w, d, &nrev, body, body_len, atts, n_atts);
    else
        att_stubs_free(atts, n_atts);
    if (!e)
        e = settle(w, d);
    if (e)
        return e;
    res->err = BR_OK;
    res->rev = nrev;
    return BR_OK;
}

/* A replicated write (new_edits=false): merge the revision with its history. */
static br_err apply_replicated(struct wctx *w, struct wdoc *d, const struct br_put *p,
                               struct br_put_result *res)
{
    struct docrec *r = &d->rec;
    if (!p->history || p->n_history == 0) {
        result_set(res, BR_EBADREV, "replicated write needs a revision (_rev or _revisions)");
        return BR_OK;
    }
    if (br_rev_path_check(p->history, p->n_history) != BR_OK) {
        result_set(res, BR_EBADREV, "inconsistent revision history");
        return BR_OK;
    }
    const struct br_rev *nrev = &p->history[0];
    res->rev = *nrev;
    if (br_revtree_contains(&r->tree, nrev)) {
        res->err = BR_OK; /* RDF-09: already here */
        return BR_OK;
    }
    /* Find the parent this path grafts under (if any), for attachment stubs. */
    const struct leafdata *pdata = NULL;
    for (size_t i = 1; i < p->n_history; i++) {
        if (br_revtree_contains(&r->tree, &p->history[i])) {
            pdata = docrec_leaf(r, &p->history[i]);
            break;
        }
    }
    const uint8_t *body = p->body ? p->body : EMPTY_MAP;
    size_t body_len = p->body ? p->body_len : sizeof EMPTY_MAP;
    struct br_att_stub *atts = NULL;
    size_t n_atts = 0;
    struct br_errbuf eb = {{0}};
    br_err e =
        att_prepare(w->db, w->wb, w->ab, p->atts, p->n_atts, pdata, nrev->gen, &atts, &n_atts, &eb);
    if (e == BR_EBADNAME || e == BR_ENOTFOUND || e == BR_EINVAL) {
        result_set(res, e, "%s", eb.msg[0] ? eb.msg : br_strerror(e));
        return BR_OK;
    }
    if (e)
        return e;
    uint32_t added;
    e = br_revtree_merge(&r->tree, p->history, p->n_history, p->deleted, &added);
    if (e == BR_EBADREV) {
        att_stubs_free(atts, n_atts);
        result_set(res, BR_EBADREV, "inconsistent revision history");
        return BR_OK;
    }
    if (!e)
        e = leaf_add(w, d, nrev, body, body_len, atts, n_atts);
    else
        att_stubs_free(atts, n_atts);
    if (!e)
        e = settle(w, d);
    if (e)
        return e;
    res->err = BR_OK;
    return BR_OK;
}

/* Bytes of a change entry's value at most: flags, rev length, rev text, document id. */
#define CHANGE_VALUE_MAX (2 + BR_REV_TEXT_MAX + BR_DOCID_MAX)

/* The change entry of d's winner (node win) into out; returns its length. */
static size_t change_value(uint8_t out[CHANGE_VALUE_MAX], const struct wdoc *d, uint32_t win)
{
    const struct br_revtree_node *n = &d->rec.tree.nodes[win];
    size_t rl = br_rev_format(&n->rev, (char *)out + 2);
    out[0] = (uint8_t)(n->deleted ? 1 : 0);
    out[1] = (uint8_t)rl;
    memcpy(out + 2 + rl, d->id, d->id_len);
    return 2 + rl + d->id_len;
}

/* The packed change entries of the batch's changed documents (store_int.h); val is scratch. */
static br_err put_packed(struct wctx *w, br_buf *val)
{
    struct br_db *db = w->db;
    uint8_t ck[4 + BR_HLC_BYTES];
    br_err e = BR_OK;
    for (size_t from = 0; from < w->n && !e;) {
        /* the next entry: the changed documents from `from` on that commit() gave its key */
        while (from < w->n && !w->docs[from].dirty)
            from++;
        if (from == w->n)
            break;
        struct br_hlc key = w->docs[from].rec.pack_key;
        size_t to = from, n = 0;
        for (; to < w->n; to++) {
            if (!w->docs[to].dirty)
                continue;
            if (br_hlc_cmp(w->docs[to].rec.pack_key, key) != 0)
                break;
            n++;
        }
        br_buf_reset(val);
        uint8_t mark = CHANGE_PACKED;
        e = br_buf_append(val, &mark, 1);
        if (!e)
            e = store_put_varint(val, n);
        for (size_t i = from; i < to && !e; i++) {
            const struct wdoc *d = &w->docs[i];
            if (!d->dirty)
                continue;
            /* the item: 3 varints of at most 10 bytes, then the single entry's value */
            e = br_buf_reserve(val, 30 + CHANGE_VALUE_MAX);
            if (e)
                break;
            uint8_t *p = val->data + val->len;
            uint8_t *cv = p + 30; /* staged after the varints' room, slid into place */
            size_t cl = change_value(cv, d, br_revtree_winner(&d->rec.tree));
            uint8_t hv[30];
            size_t hl = store_varint_at(hv, key.wall - d->rec.seq.wall);
            hl += store_varint_at(hv + hl, d->rec.seq.logical);
            hl += store_varint_at(hv + hl, cl);
            memmove(p + hl, cv, cl);
            memcpy(p, hv, hl);
            val->len += hl + cl;
            val->data[val->len] = 0;
        }
        if (e)
            break;
        memcpy(ck, db->dbid, 4);
        br_hlc_encode(key, ck + 4);
        rocksdb_writebatch_put_cf(w->wb, db->s->cf[CF_CHANGES], (const char *)ck, sizeof ck,
                                  (const char *)val->data, val->len);
        from = to;
    }
    br_buf_reset(val);
    return e;
}

struct wsummary {
    bool present, live;
    uint8_t hash[16];
    uint64_t bytes;      /* user data held by the leaves: bodies and attachments */
    const uint8_t *body; /* the live winner's body (what the index holds), or NULL */
    size_t body_len;
};

static void summarize(const struct wdoc *d, struct wsummary *s)
{
    memset(s, 0, sizeof *s);
    uint32_t win = br_revtree_winner(&d->rec.tree);
    s->present = win != BR_REVTREE_NONE;
    s->live = s->present && !d->rec.tree.nodes[win].deleted;
    bool deleted;
    const uint8_t *b = docrec_filter_body(&d->rec, &s->body_len, &deleted);
    s->body = deleted ? NULL : b;
    if (!s->body)
        s->body_len = 0;
    tree_set_hash(s->hash, d->id, d->id_len, &d->rec.tree);
    for (size_t i = 0; i < d->rec.n_leaves; i++) {
        s->bytes += d->rec.leaves[i].body_len;
        for (size_t j = 0; j < d->rec.leaves[i].n_atts; j++)
            s->bytes += d->rec.leaves[i].atts[j].length;
    }
}

/* Stamp every changed document, build the batch, commit, update the in-memory digest. */
static br_err commit(struct wctx *w, const struct wsummary *before, uint64_t *ticket,
                     struct br_hlc *last)
{
    struct br_db *db = w->db;
    br_store *s = db->s;
    br_buf val;
    br_buf_init(&val, 0);
    uint8_t rk[4 + BR_DOCID_MAX], ck[4 + BR_HLC_BYTES], cv[CHANGE_VALUE_MAX];
    struct br_db_digest dg = db->st.digest;
    struct subs_change *pub = NULL;
    size_t n_pub = 0;
    struct index_batch ib;
    index_batch_init(&ib);
    /* With subscriptions, the index's walk of a body also gathers its topics for subs_publish:
     * one walk per body, not one for each (bench/query_bench.c part 2). */
    struct subs_topics topics;
    subs_topics_init(&topics);
    if (atomic_load(&db->n_subs)) {
        pub = br_calloc(w->n ? w->n : 1, sizeof *pub);
        if (!pub)
            return BR_ENOMEM;
    }
    int64_t del_delta = 0, doc_delta = 0;
    int64_t ext_delta = 0;
    size_t changed = 0;
    /* Two or more changes share packed change entries (store_int.h): one memtable entry per
     * document written, not two (bench/store_bench.c bulk phases). Their HLCs are taken first:
     * each record names the key of the entry holding its change, its chunk's last HLC. */
    size_t n_dirty = 0;
    for (size_t i = 0; i < w->n; i++)
        n_dirty += w->docs[i].dirty;
    bool pack = n_dirty >= 2;
    br_err e = BR_OK;
    for (size_t i = 0, seen = 0, first = 0; i < w->n && !e; i++) {
        struct wdoc *d = &w->docs[i];
        if (!d->dirty)
            continue;
        e = br_hlc_now(s->clock, &d->rec.seq);
        d->rec.packed = pack;
        if (!pack)
            continue;
        if (seen++ % PACK_MAX == 0)
            first = i; /* a chunk, one packed entry: PACK_MAX changed documents at most */
        if (seen % PACK_MAX == 0 || seen == n_dirty)
            for (size_t j = first; j <= i; j++)
                w->docs[j].rec.pack_key = d->rec.seq;
    }
    for (size_t i = 0; i < w->n && !e; i++) {
        struct wdoc *d = &w->docs[i];
        if (!d->dirty)
            continue;
        struct wsummary after;
        summarize(d, &after);
        doc_delta += (int64_t)after.live - (int64_t)before[i].live;
        del_delta += (int64_t)(after.present && !after.live) -
                     (int64_t)(before[i].present && !before[i].live);
        for (int k = 0; k < 16; k++)
            dg.set_hash[k] ^= before[i].hash[k] ^ after.hash[k];
        ext_delta += (int64_t)after.bytes - (int64_t)before[i].bytes;
        /* The path index follows the live winner; a deleted winner remembers the last live
         * body for filters (CHG-26). Bodies borrowed here live in d->raw, d->pin or d->rec until
         * the batch is committed. */
        /* what subscriptions see: the live body, or for a deletion the last live one (below) */
        const uint8_t *pub_body = after.live ? after.body : before[i].live ? before[i].body : NULL;
        size_t t_from = topics.n, t_len = topics.text.len;
        bool tapped = false;
        e = index_update(db, &ib, d->id, d->id_len, before[i].body, before[i].body_len, after.body,
                         after.body_len, pub_body, pub ? subs_topics_tap : NULL, &topics, &tapped);
        if (e)
            break;
        if (topics.err) { /* out of memory for a topic: subs_publish walks this body itself */
            topics.err = BR_OK;
            topics.n = t_from;
            topics.text.len = t_len;
            tapped = false;
        }
        if (after.live) {
            br_free(d->rec.gone_own);
            d->rec.gone_own = NULL;
            d->rec.gone = NULL;
            d->rec.gone_len = 0;
        } else if (before[i].live) {
            d->rec.gone = before[i].body;
            d->rec.gone_len = before[i].body_len;
        }
        if (pub) {
            uint32_t win = br_revtree_winner(&d->rec.tree);
            pub[n_pub++] = (struct subs_change){d->id,
                                                d->id_len,
                                                d->rec.tree.nodes[win].rev,
                                                !after.live,
                                                d->rec.seq,
                                                after.live ? after.body : d->rec.gone,
                                                after.live ? after.body_len : d->rec.gone_len,
                                                tapped ? &topics : NULL,
                                                t_from,
                                                topics.n};
        }
        dg.last = d->rec.seq;
        changed++;
        /* the record; keys and the change entry are built on the stack (ids are at most
         * BR_DOCID_MAX bytes, store_docid_valid) */
        e = docrec_encode(&d->rec, &val);
        if (e)
            break;
        memcpy(rk, db->dbid, 4);
        memcpy(rk + 4, d->id, d->id_len);
        rocksdb_writebatch_put_cf(w->wb, s->cf[CF_DOCS], (const char *)rk, 4 + d->id_len,
                                  (const char *)val.data, val.len);
        br_buf_reset(&val);
        /* the change entry: remove the old one (a single entry, or an item of a packed one
         * by a merge operand: store_int.h), add the new one */
        memcpy(ck, db->dbid, 4);
        if (d->existed && d->old_packed) {
            uint8_t drop[CHANGE_DROP_LEN];
            br_hlc_encode(d->old_pack_key, ck + 4);
            br_hlc_encode(d->old_seq, drop);
            rocksdb_writebatch_merge_cf(w->wb, s->cf[CF_CHANGES], (const char *)ck, sizeof ck,
                                        (const char *)drop, sizeof drop);
        } else if (d->existed) {
            br_hlc_encode(d->old_seq, ck + 4);
            rocksdb_writebatch_delete_cf(w->wb, s->cf[CF_CHANGES], (const char *)ck, sizeof ck);
        }
        if (pack)
            continue; /* the packed entry is built below, once every seq is known */
        br_hlc_encode(d->rec.seq, ck + 4);
        size_t cl = change_value(cv, d, br_revtree_winner(&d->rec.tree));
        rocksdb_writebatch_put_cf(w->wb, s->cf[CF_CHANGES], (const char *)ck, sizeof ck,
                                  (const char *)cv, cl);
    }
    if (!e && pack && changed)
        e = put_packed(w, &val);
    if (!e && changed)
        e = att_batch_flush(db, w->wb, w->ab);
    if (!e && changed)
        index_batch_flush(db, w->wb, &ib);
    index_batch_fini(&ib);
    if (!e && changed) {
        struct db_state next = db->st;
        next.digest = dg;
        next.digest.doc_count = (uint64_t)((int64_t)db->st.digest.doc_count + doc_delta);
        next.del_count = (uint64_t)((int64_t)db->st.del_count + del_delta);
        next.update_seq = db->st.update_seq + changed;
        next.external_size = (uint64_t)((int64_t)db->st.external_size + ext_delta);
        uint8_t rec[DIGEST_LEN], dk[5];
        store_digest_encode(&next, rec);
        memcpy(dk, db->dbid, 4);
        dk[4] = 'd';
        rocksdb_writebatch_put_cf(w->wb, s->cf[CF_META], (const char *)dk, 5, (const char *)rec,
                                  DIGEST_LEN);
        e = store_write(s, w->wb, ticket);
        if (!e) {
            db->st = next;
            *last = dg.last;
            if (pub)
                subs_publish(db, pub, n_pub);
        }
    }
    br_free(pub);
    subs_topics_fini(&topics);
    br_buf_fini(&val);
    return e;
}

static void call_watchers(struct br_db *db, struct br_hlc seq)
{
    pthread_rwlock_rdlock(&db->watch_rw);
    for (size_t i = 0; i < db->n_watchers; i++)
        db->watchers[i].fn(db->watchers[i].arg, db, seq);
    pthread_rwlock_unlock(&db->watch_rw);
}

static br_err run_batch(struct br_db *db, const struct br_put *docs, size_t n,
                        const struct br_write_opts *wo, struct br_put_result *res)
{
    const struct br_write_opts dflt = BR_WRITE_DEFAULT;
    if (!wo)
        wo = &dflt;
    struct wctx w;
    struct wsummary *before = NULL;
    br_err e = wctx_init(&w, db, n);
    if (e) {
        wctx_fini(&w);
        return e;
    }
    /* Ids for new documents are generated outside the lock. */
    for (size_t i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        const struct br_put *p = &docs[i];
        if (!p->id) {
            if (!wo->new_edits) {
                result_set(&res[i], BR_EBADNAME, "replicated documents need an _id");
                continue;
            }
            br_rev_gen_docid(db->s->env, res[i].id);
        } else if (!store_docid_valid(p->id, p->id_len)) {
            result_set(&res[i], BR_EBADNAME, "Invalid document id");
            size_t cl = p->id_len < BR_DOCID_MAX ? p->id_len : BR_DOCID_MAX;
            memcpy(res[i].id, p->id, cl);
            res[i].id[cl] = 0;
            continue;
        } else {
            memcpy(res[i].id, p->id, p->id_len);
            res[i].id[p->id_len] = 0;
        }
        (void)check_body(db, p, &res[i]);
    }
    struct br_hlc last = BR_HLC_MIN;
    uint64_t ticket = 0;
    bool wrote = false;
    pthread_mutex_lock(&db->wmu);
    if (db->deleted) {
        e = BR_ENOTFOUND;
        goto unlock;
    }
    size_t bcap = 0;
    e = wctx_prefetch(&w, res, n);
    if (e)
        goto unlock;
    if (n > 1) { /* one summary per document at most: no growth copies (as w.docs) */
        /* not zeroed either: summarize fills the entry of each state wctx_doc adds */
        before = n > SIZE_MAX / sizeof *before ? NULL : br_malloc(n * sizeof *before);
        if (!before) {
            e = BR_ENOMEM;
            goto unlock;
        }
        bcap = n;
    }
    for (size_t i = 0; i < n; i++) {
        if (res[i].err)
            continue;
        struct wdoc *d;
        size_t before_n = w.n;
        e = wctx_doc(&w, res[i].id, strlen(res[i].id), i, &d);
        if (e)
            goto unlock;
        if (w.n > before_n) {
            if (w.n > bcap) {
                size_t nc = bcap ? bcap * 2 : 16;
                while (nc < w.n)
                    nc *= 2;
                struct wsummary *nb = br_realloc(before, nc * sizeof *nb);
                if (!nb) {
                    e = BR_ENOMEM;
                    goto unlock;
                }
                before = nb;
                bcap = nc;
            }
            summarize(d, &before[w.n - 1]);
        }
        e = wo->new_edits ? apply_edit(&w, d, &docs[i], &res[i])
                          : apply_replicated(&w, d, &docs[i], &res[i]);
        if (e)
            goto unlock;
    }
    e = commit(&w, before, &ticket, &last);
    wrote = !e && ticket != 0;
    if (wrote)
        store_notify(db, last);
unlock:
    pthread_mutex_unlock(&db->wmu);
    br_free(before);
    wctx_fini(&w);
    if (e)
        return e;
    if (wrote && wo->sync == BR_SYNC_FULL)
        e = store_sync(db->s, ticket);
    if (wrote && !e)
        call_watchers(db, last);
    return e;
}

br_err br_db_bulk(br_db *db, const struct br_put *docs, size_t n, const struct br_write_opts *wo,
                  struct br_put_result *res)
{
    if (n == 0)
        return BR_OK;
    return run_batch(db, docs, n, wo, res);
}

br_err br_db_put(br_db *db, const struct br_put *p, const struct br_write_opts *wo,
                 struct br_put_result *res)
{
    br_err e = run_batch(db, p, 1, wo, res);
    return e ? e : res->err;
}

/* ---- reads ---- */

void br_doc_free(struct br_doc *d)
{
    if (!d)
        return;
    br_free(d->id);
    br_free(d->body);
    att_stubs_free(d->atts, d->n_atts);
    br_free(d->revisions);
    br_free(d->conflicts);
    br_free(d->deleted_conflicts);
    br_free(d);
}

/* Load a document's record; BR_ENOTFOUND if absent. On success r borrows from *raw. */
static br_err load(struct br_db *db, const char *id, size_t id_len, bool cached, struct docrec *r,
                   char **raw)
{
    if (!store_docid_valid(id, id_len))
        return BR_ENOTFOUND;
    br_buf k;
    br_buf_init(&k, 0);
    br_err e = store_key(&k, db->dbid, id, id_len);
    size_t vl = 0;
    *raw = NULL;
    if (!e)
        e = cached ? store_get_cached(db->s, CF_DOCS, k.data, k.len, raw, &vl)
                   : store_get(db->s, CF_DOCS, k.data, k.len, raw, &vl);
    br_buf_fini(&k);
    if (e)
        return e;
    if (!*raw)
        return BR_ENOTFOUND;
    e = docrec_decode((const uint8_t *)*raw, vl, r);
    if (e == BR_ENOMEM)
        return e;
    if (e) {
        br_log(BR_LOG_ERROR, "store", "op=get db=%s doc=%.*s msg=\"corrupt record\"", db->name,
               (int)(id_len > 64 ? 64 : id_len), id);
        return BR_ESTORE;
    }
    return BR_OK;
}

static br_err leaf_list(const br_revtree *t, bool deleted, struct br_rev **out, size_t *n)
{
    uint32_t *idx, cnt;
    br_err e = br_revtree_leaves(t, &idx, &cnt);
    if (e)
        return e;
    *out = NULL;
    *n = 0;
    struct br_rev *v = cnt > 1 ? br_calloc(cnt - 1, sizeof *v) : NULL;
    if (cnt > 1 && !v) {
        br_free(idx);
        return BR_ENOMEM;
    }
    size_t k = 0;
    for (uint32_t i = 1; i < cnt; i++) /* idx[0] is the winner */
        if (t->nodes[idx[i]].deleted == deleted)
            v[k++] = t->nodes[idx[i]].rev;
    br_free(idx);
    if (k == 0) {
        br_free(v);
        v = NULL;
    }
    *out = v;
    *n = k;
    return BR_OK;
}

/* Build a br_doc for node `node` of r. */
static br_err make_doc(struct br_db *db, const char *id, size_t id_len, struct docrec *r,
                       uint32_t node, const struct br_get_opts *o, struct br_doc **out)
{
    const struct br_revtree_node *n = &r->tree.nodes[node];
    struct leafdata *l = docrec_leaf(r, &n->rev);
    if (!l)
        return BR_ENOTFOUND; /* a non-leaf: its body is gone */
    struct br_doc *d = br_calloc(1, sizeof *d);
    if (!d)
        return BR_ENOMEM;
    br_err e = BR_ENOMEM;
    d->id = br_strndup(id, id_len);
    d->id_len = id_len;
    d->rev = n->rev;
    d->deleted = n->deleted;
    d->seq = r->seq;
    d->body = br_memdup(l->body, l->body_len);
    d->body_len = l->body_len;
    if (!d->id || !d->body)
        goto fail;
    e = att_stubs_copy(l->atts, l->n_atts, &d->atts);
    if (e)
        goto fail;
    d->n_atts = l->n_atts;
    if (o && o->revs) {
        uint32_t cnt;
        e = br_revtree_history(&r->tree, &n->rev, db->revs_limit, &d->revisions, &cnt);
        if (e)
            goto fail;
        d->n_revisions = cnt;
    }
    if (o && o->conflicts) {
        e = leaf_list(&r->tree, false, &d->conflicts, &d->n_conflicts);
        if (e)
            goto fail;
    }
    if (o && o->deleted_conflicts) {
        e = leaf_list(&r->tree, true, &d->deleted_conflicts, &d->n_deleted_conflicts);
        if (e)
            goto fail;
    }
    *out = d;
    return BR_OK;
fail:
    br_doc_free(d);
    return e;
}

br_err br_db_get(br_db *db, const char *id, size_t id_len, const struct br_get_opts *o,
                 struct br_doc **out, struct br_errbuf *eb)
{
    struct docrec r;
    docrec_init(&r);
    char *raw = NULL;
    bool cached = o && o->cache_only;
    if (cached && atomic_load(&db->deleted)) {
        docrec_fini(&r);
        return BR_ECLOSED;
    }
    br_err e = load(db, id, id_len, cached, &r, &raw);
    if (e) {
        if (e == BR_ENOTFOUND)
            br_errbuf_set(eb, "missing");
        goto out;
    }
    uint32_t node;
    if (o && o->rev) {
        node = br_revtree_find(&r.tree, o->rev);
        if (node == BR_REVTREE_NONE) {
            e = br_fail(eb, BR_ENOTFOUND, "missing");
            goto out;
        }
    } else {
        node = br_revtree_winner(&r.tree);
        if (node == BR_REVTREE_NONE) {
            e = br_fail(eb, BR_ESTORE, "empty revision tree");
            goto out;
        }
        if (r.tree.nodes[node].deleted && !(o && o->include_deleted)) {
            e = br_fail(eb, BR_ENOTFOUND, "deleted");
            goto out;
        }
    }
    e = make_doc(db, id, id_len, &r, node, o, out);
    if (e == BR_ENOTFOUND)
        br_errbuf_set(eb, "missing");
out:
    docrec_fini(&r);
    rocksdb_free(raw);
    return e;
}

void br_open_revs_free(struct br_open_rev *r, size_t n)
{
    if (!r)
        return;
    for (size_t i = 0; i < n; i++)
        br_doc_free(r[i].doc);
    br_free(r);
}

br_err br_db_get_open_revs(br_db *db, const char *id, size_t id_len, const struct br_rev *revs,
                           size_t n, bool with_revs, struct br_open_rev **out, size_t *n_out)
{
    struct docrec r;
    docrec_init(&r);
    char *raw = NULL;
    uint32_t *leaves = NULL, nleaves = 0;
    struct br_open_rev *v = NULL;
    size_t cnt = 0;
    br_err e = load(db, id, id_len, false, &r, &raw);
    if (e)
        goto out;
    if (!revs || n == 0) {
        e = br_revtree_leaves(&r.tree, &leaves, &nleaves);
        if (e)
            goto out;
        cnt = nleaves;
    } else {
        cnt = n;
    }
    v = br_calloc(cnt ? cnt : 1, sizeof *v);
    if (!v) {
        e = BR_ENOMEM;
        goto out;
    }
    struct br_get_opts go = {.revs = with_revs};
    for (size_t i = 0; i < cnt; i++) {
        uint32_t node = leaves ? leaves[i] : br_revtree_find(&r.tree, &revs[i]);
        v[i].rev = leaves ? r.tree.nodes[node].rev : revs[i];
        if (node == BR_REVTREE_NONE) {
            v[i].missing = true;
            continue;
        }
        e = make_doc(db, id, id_len, &r, node, &go, &v[i].doc);
        if (e == BR_ENOTFOUND) {
            v[i].missing = true;
            e = BR_OK;
        }
        if (e)
            goto out;
    }
    *out = v;
    *n_out = cnt;
    v = NULL;
out:
    br_open_revs_free(v, cnt);
    br_free(leaves);
    docrec_fini(&r);
    rocksdb_free(raw);
    return e;
}

/* ---- revsdiff ---- */

static int rev_qcmp(const void *a, const void *b)
{
    return br_rev_cmp(a, b);
}

void br_revsdiff_out_fini(struct br_revsdiff_out *out, size_t n)
{
    if (!out)
        return;
    for (size_t i = 0; i < n; i++) {
        br_free(out[i].missing);
        br_free(out[i].possible_ancestors);
        memset(&out[i], 0, sizeof out[i]);
    }
}

static br_err revsdiff_one(struct br_db *db, const struct br_revsdiff_in *in,
                           struct br_revsdiff_out *o)
{
    memset(o, 0, sizeof *o);
    if (in->n == 0)
        return BR_OK;
    struct docrec r;
    docrec_init(&r);
    char *raw = NULL;
    br_err e = load(db, in->id, in->id_len, false, &r, &raw);
    bool known = e == BR_OK;
    if (e == BR_ENOTFOUND)
        e = BR_OK;
    if (e)
        goto out;
    o->missing = br_calloc(in->n, sizeof *o->missing);
    if (!o->missing) {
        e = BR_ENOMEM;
        goto out;
    }
    uint64_t maxgen = 0;
    for (size_t i = 0; i < in->n; i++) {
        if (known && br_revtree_contains(&r.tree, &in->revs[i]))
            continue;
        bool dup = false;
        for (size_t j = 0; j < o->n_missing; j++)
            dup = dup || br_rev_eq(&o->missing[j], &in->revs[i]);
        if (dup)
            continue;
        o->missing[o->n_missing++] = in->revs[i];
        if (in->revs[i].gen > maxgen)
            maxgen = in->revs[i].gen;
    }
    if (!known || o->n_missing == 0)
        goto out;
    /* CouchDB: the leaves with a lower generation than a missing revision. */
    uint32_t *leaves, nl;
    e = br_revtree_leaves(&r.tree, &leaves, &nl);
    if (e)
        goto out;
    o->possible_ancestors = br_calloc(nl ? nl : 1, sizeof *o->possible_ancestors);
    if (!o->possible_ancestors) {
        br_free(leaves);
        e = BR_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < nl; i++) {
        const struct br_rev *lr = &r.tree.nodes[leaves[i]].rev;
        bool ok = false;
        for (size_t j = 0; j < o->n_missing && !ok; j++)
            ok = lr->gen < o->missing[j].gen;
        if (ok)
            o->possible_ancestors[o->n_possible_ancestors++] = *lr;
    }
    br_free(leaves);
    if (o->n_possible_ancestors)
        qsort(o->possible_ancestors, o->n_possible_ancestors, sizeof(struct br_rev), rev_qcmp);
out:
    docrec_fini(&r);
    rocksdb_free(raw);
    if (e) {
        br_free(o->missing);
        br_free(o->possible_ancestors);
        memset(o, 0, sizeof *o);
    }
    return e;
}

br_err br_db_revsdiff(br_db *db, const struct br_revsdiff_in *in, size_t n,
                      struct br_revsdiff_out *out)
{
    for (size_t i = 0; i < n; i++) {
        br_err e = revsdiff_one(db, &in[i], &out[i]);
        if (e) {
            br_revsdiff_out_fini(out, i);
            return e;
        }
    }
    return BR_OK;
}

/* ---- conflict resolution (Decisions §8) ---- */

br_err br_db_resolve(br_db *db, const char *id, size_t id_len, const struct br_resolve *rs,
                     const struct br_write_opts *wo, struct br_resolve_result *out,
                     struct br_errbuf *eb)
{
    struct docrec r;
    docrec_init(&r);
    char *raw = NULL;
    uint32_t *leaves = NULL, nl = 0;
    struct br_put *puts = NULL;
    struct br_put_result *res = NULL;
    size_t np = 0;
    br_err e = load(db, id, id_len, false, &r, &raw);
    if (e) {
        if (e == BR_ENOTFOUND)
            br_errbuf_set(eb, "missing");
        goto out;
    }
    uint32_t win = br_revtree_winner(&r.tree);
    if (br_revtree_conflict_count(&r.tree) == 0) {
        e = br_fail(eb, BR_ENOCONFLICT, "no_conflicts");
        goto out;
    }
    if (!rs->base || !br_rev_eq(rs->base, &r.tree.nodes[win].rev)) {
        e = br_fail(eb, BR_ECONFLICT, "base revision is not the current winner");
        goto out;
    }
    const struct br_rev *keep = &r.tree.nodes[win].rev;
    if (!rs->merge_body) {
        uint32_t c = rs->choose ? br_revtree_find(&r.tree, rs->choose) : BR_REVTREE_NONE;
        if (c == BR_REVTREE_NONE || !r.tree.nodes[c].leaf || r.tree.nodes[c].deleted) {
            e = br_fail(eb, BR_EBADREV, "invalid_rev: the chosen revision is not a live leaf");
            goto out;
        }
        keep = &r.tree.nodes[c].rev;
    }
    e = br_revtree_leaves(&r.tree, &leaves, &nl);
    if (e)
        goto out;
    puts = br_calloc(nl + 1, sizeof *puts);
    res = br_calloc(nl + 1, sizeof *res);
    if (!puts || !res) {
        e = BR_ENOMEM;
        goto out;
    }
    uint32_t resolved = 0;
    for (uint32_t i = 0; i < nl; i++) {
        const struct br_revtree_node *n = &r.tree.nodes[leaves[i]];
        if (n->deleted || br_rev_eq(&n->rev, keep))
            continue;
        puts[np++] = (struct br_put){.id = id, .id_len = id_len, .rev = &n->rev, .deleted = true};
        resolved++;
    }
    struct br_att_in *keep_atts = NULL;
    if (rs->merge_body || !br_rev_eq(keep, &r.tree.nodes[win].rev)) {
        /* A child of the kept revision, so it wins by generation on every node. */
        struct leafdata *ld = docrec_leaf(&r, keep);
        if (!ld) {
            e = BR_ESTORE;
            goto out;
        }
        if (ld->n_atts) {
            keep_atts = br_calloc(ld->n_atts, sizeof *keep_atts);
            if (!keep_atts) {
                e = BR_ENOMEM;
                goto out;
            }
            for (size_t j = 0; j < ld->n_atts; j++)
                keep_atts[j] = (struct br_att_in){.name = ld->atts[j].name,
                                                  .content_type = ld->atts[j].content_type,
                                                  .stub = true,
                                                  .digest = ld->atts[j].digest};
        }
        puts[np++] = (struct br_put){.id = id,
                                     .id_len = id_len,
                                     .rev = keep,
                                     .body = rs->merge_body ? rs->merge_body : ld->body,
                                     .body_len = rs->merge_body ? rs->merge_body_len : ld->body_len,
                                     .atts = keep_atts,
                                     .n_atts = ld->n_atts};
    }
    struct br_write_opts w = wo ? *wo : BR_WRITE_DEFAULT;
    w.new_edits = true;
    e = br_db_bulk(db, puts, np, &w, res);
    br_free(keep_atts);
    for (size_t i = 0; !e && i < np; i++) {
        if (res[i].err) {
            e = br_fail(eb, res[i].err, "%s", res[i].reason);
            break;
        }
    }
    if (e)
        goto out;
    out->conflicts_resolved = resolved;
    out->rev = (np && !puts[np - 1].deleted) ? res[np - 1].rev : *keep;
out:
    br_free(puts);
    br_free(res);
    br_free(leaves);
    docrec_fini(&r);
    rocksdb_free(raw);
    return e;
}

/* ---- all_docs ---- */

br_err br_db_all_docs(br_db *db, const struct br_alldocs_opts *o, br_alldocs_cb cb, void *arg,
                      uint64_t *total_rows)
{
    struct br_alldocs_opts dflt = {.inclusive_end = true};
    if (!o)
        o = &dflt;
    br_store *s = db->s;
    br_buf lo, hi, k;
    br_buf_init(&lo, 0);
    br_buf_init(&hi, 0);
    br_buf_init(&k, 0);
    br_err e = store_key(&lo, db->dbid, NULL, 0);
    if (!e)
        e = store_prefix_end(db->dbid, 4, &hi);
    if (e)
        goto out;
    if (total_rows) {
        struct br_db_digest dg;
        e = br_db_digest(db, &dg);
        if (e)
            goto out;
        *total_rows = dg.doc_count;
    }
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(s->rdb);
    rocksdb_readoptions_set_snapshot(ro, snap);
    rocksdb_readoptions_set_iterate_lower_bound(ro, (const char *)lo.data, lo.len);
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi.data, hi.len);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_DOCS]);
    if (o->startkey) {
        e = store_key(&k, db->dbid, o->startkey, o->startkey_len);
        if (!e) {
            if (o->descending)
                rocksdb_iter_seek_for_prev(it, (const char *)k.data, k.len);
            else
                rocksdb_iter_seek(it, (const char *)k.data, k.len);
        }
    } else if (o->descending) {
        rocksdb_iter_seek_to_last(it);
    } else {
        rocksdb_iter_seek_to_first(it);
    }
    size_t skipped = 0, sent = 0;
    struct br_get_opts go = {.conflicts = o->conflicts};
    for (; !e && rocksdb_iter_valid(it);
         o->descending ? rocksdb_iter_prev(it) : rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *key = rocksdb_iter_key(it, &kl);
        const char *val = rocksdb_iter_value(it, &vl);
        const char *id = key + 4;
        size_t id_len = kl - 4;
        if (o->endkey) {
            size_t m = id_len < o->endkey_len ? id_len : o->endkey_len;
            int c = memcmp(id, o->endkey, m);
            if (c == 0)
                c = id_len < o->endkey_len ? -1 : id_len > o->endkey_len;
            if (o->descending ? (c < 0 || (c == 0 && !o->inclusive_end))
                              : (c > 0 || (c == 0 && !o->inclusive_end)))
                break;
        }
        struct docrec r;
        docrec_init(&r);
        e = docrec_decode((const uint8_t *)val, vl, &r);
        if (e) {
            if (e != BR_ENOMEM)
                br_log(BR_LOG_ERROR, "store", "op=all_docs db=%s msg=\"corrupt record\"", db->name);
            e = e == BR_ENOMEM ? e : BR_ESTORE;
            docrec_fini(&r);
            break;
        }
        uint32_t win = br_revtree_winner(&r.tree);
        if (win == BR_REVTREE_NONE || r.tree.nodes[win].deleted) {
            docrec_fini(&r);
            continue;
        }
        if (skipped < o->skip) {
            skipped++;
            docrec_fini(&r);
            continue;
        }
        struct br_doc *doc = NULL;
        if (o->include_docs)
            e = make_doc(db, id, id_len, &r, win, &go, &doc);
        int stop = 0;
        if (!e)
            stop = cb(arg, id, id_len, &r.tree.nodes[win].rev, doc);
        br_doc_free(doc);
        docrec_fini(&r);
        sent++;
        if (stop || (o->limit && sent >= o->limit))
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err && !e)
        e = store_rdb_err(err, "all_docs");
    else
        rocksdb_free(err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_release_snapshot(s->rdb, snap);
out:
    br_buf_fini(&lo);
    br_buf_fini(&hi);
    br_buf_fini(&k);
    return e;
}
