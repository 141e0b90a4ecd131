/* changes.c — the changes feed: each document once, at its latest change, in HLC order (single
 * entries keyed by the change's HLC, and packed entries of bulk commits: store_int.h), read on
 * one RocksDB snapshot; the changes family's merge operator and compaction filter; waiting for
 * the next change without polling (writers broadcast a condition variable); and watchers called
 * after each commit. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "barrel/alloc.h"
#include "barrel/log.h"
#include "barrel/query.h"

#include "store_int.h"

static br_err decode_change(const char *v, size_t vl, struct br_change *c)
{
    const uint8_t *p = (const uint8_t *)v;
    if (vl < 2 || (size_t)p[1] + 2 > vl || p[0] > 1)
        return BR_ESTORE;
    c->deleted = p[0] == 1;
    if (br_rev_parse((const char *)p + 2, p[1], &c->rev) != BR_OK)
        return BR_ESTORE;
    c->id = (const char *)p + 2 + p[1];
    c->id_len = vl - 2 - p[1];
    if (c->id_len == 0)
        return BR_ESTORE;
    return BR_OK;
}

void change_items_fini(struct change_items *ci)
{
    br_free(ci->c);
    memset(ci, 0, sizeof *ci);
}

static br_err items_room(struct change_items *ci, size_t n)
{
    if (n <= ci->cap)
        return BR_OK;
    struct br_change *c = br_realloc(ci->c, n * sizeof *c);
    if (!c)
        return BR_ENOMEM;
    ci->c = c;
    ci->cap = n;
    return BR_OK;
}

br_err change_items_decode(struct br_hlc key, const char *v, size_t vl, struct change_items *ci)
{
    const uint8_t *p = (const uint8_t *)v, *end = p + vl;
    ci->n = 0;
    ci->packed = vl > 0 && p[0] == CHANGE_PACKED;
    if (!ci->packed) {
        br_err e = items_room(ci, 1);
        if (e)
            return e;
        memset(&ci->c[0], 0, sizeof ci->c[0]);
        ci->c[0].seq = key;
        e = decode_change(v, vl, &ci->c[0]);
        if (!e)
            ci->n = 1;
        return e;
    }
    p++;
    uint64_t k;
    /* an item takes 5 bytes at least: this bounds the array by the value's size (none left:
     * every item was superseded, and the compaction filter has not dropped the entry yet) */
    if (store_get_varint(&p, end, &k) || k > PACK_MAX || k > (uint64_t)(end - p) / 5)
        return BR_ESTORE;
    br_err e = items_room(ci, (size_t)k);
    if (e)
        return e;
    for (size_t i = 0; i < k; i++) {
        uint64_t dw, lg, len;
        if (store_get_varint(&p, end, &dw) || store_get_varint(&p, end, &lg) ||
            store_get_varint(&p, end, &len) || dw > key.wall || lg > UINT32_MAX ||
            len > (uint64_t)(end - p))
            return BR_ESTORE;
        struct br_change *c = &ci->c[i];
        memset(c, 0, sizeof *c);
        c->seq = (struct br_hlc){key.wall - dw, (uint32_t)lg};
        /* strictly ascending, none after the key (at it when written; the last item may have
         * been superseded since) */
        if ((i > 0 && br_hlc_cmp(c->seq, ci->c[i - 1].seq) <= 0) || br_hlc_cmp(c->seq, key) > 0)
            return BR_ESTORE;
        e = decode_change((const char *)p, (size_t)len, c);
        if (e)
            return e;
        p += len;
    }
    if (p != end)
        return BR_ESTORE;
    ci->n = (size_t)k;
    return BR_OK;
}

/* ---- the changes family's merge operator and compaction filter (store_int.h) ----
 *
 * They run on RocksDB's threads, for reads and compactions, on stored bytes: a value that does
 * not decode is kept as it is (the feed and fsck report it), never failed, since a failed merge
 * in a compaction would stop every later write. */

static int drop_cmp(const void *a, const void *b)
{
    return memcmp(a, b, CHANGE_DROP_LEN); /* br_hlc_encode's bytes sort as the HLCs */
}

static char *copy_out(const char *v, size_t n, size_t *out_len)
{
    char *r = malloc(n ? n : 1);
    if (r && n)
        memcpy(r, v, n);
    *out_len = n;
    return r;
}

char *changes_drop_items(struct br_hlc key, const char *v, size_t vl, const uint8_t *drops,
                         size_t n_drops, size_t *out_len)
{
    const uint8_t *p = (const uint8_t *)v, *end = p + vl;
    uint64_t k;
    if (vl < 2 || p[0] != CHANGE_PACKED)
        return NULL;
    p++;
    if (store_get_varint(&p, end, &k) || k > PACK_MAX)
        return NULL;
    /* the kept items, then the head written in front of them (the count is a shorter or equal
     * varint: at most 2 bytes for PACK_MAX) */
    uint8_t *r = malloc(vl + 3);
    if (!r)
        return NULL;
    size_t at = 3, kept = 0;
    for (uint64_t i = 0; i < k; i++) {
        const uint8_t *item = p;
        uint64_t dw, lg, len;
        if (store_get_varint(&p, end, &dw) || store_get_varint(&p, end, &lg) ||
            store_get_varint(&p, end, &len) || dw > key.wall || lg > UINT32_MAX ||
            len > (uint64_t)(end - p)) {
            free(r);
            return NULL;
        }
        p += len;
        uint8_t hb[BR_HLC_BYTES];
        br_hlc_encode((struct br_hlc){key.wall - dw, (uint32_t)lg}, hb);
        if (n_drops && bsearch(hb, drops, n_drops, CHANGE_DROP_LEN, drop_cmp))
            continue;
        memcpy(r + at, item, (size_t)(p - item));
        at += (size_t)(p - item);
        kept++;
    }
    if (p != end) {
        free(r);
        return NULL;
    }
    uint8_t head[1 + 10] = {CHANGE_PACKED};
    size_t hn = 1 + store_varint_at(head + 1, kept);
    memcpy(r + 3 - hn, head, hn);
    memmove(r, r + 3 - hn, at - (3 - hn));
    *out_len = at - (3 - hn);
    return (char *)r;
}

static char *changes_full_merge(void *state, const char *key, size_t key_len, const char *v,
                                size_t vl, const char *const *ops, const size_t *op_lens, int n_ops,
                                unsigned char *success, size_t *out_len)
{
    (void)state;
    *success = 1;
    if (!v) /* operands without their entry: an empty packed entry (the filter drops it) */
        return copy_out((const char[]){(char)CHANGE_PACKED, 0}, 2, out_len);
    size_t n = 0;
    for (int i = 0; i < n_ops; i++)
        n += op_lens[i] / CHANGE_DROP_LEN;
    uint8_t *drops = malloc(n ? n * CHANGE_DROP_LEN : 1);
    char *r = NULL;
    if (drops && key_len == 4 + BR_HLC_BYTES) {
        size_t at = 0;
        for (int i = 0; i < n_ops; i++) {
            size_t whole = op_lens[i] / CHANGE_DROP_LEN * CHANGE_DROP_LEN;
            memcpy(drops + at, ops[i], whole);
            at += whole;
        }
        qsort(drops, n, CHANGE_DROP_LEN, drop_cmp);
        r = changes_drop_items(br_hlc_decode((const uint8_t *)key + 4), v, vl, drops, n, out_len);
    }
    free(drops);
    if (!r) /* not a packed entry, or no memory: unchanged */
        r = copy_out(v, vl, out_len);
    if (!r)
        *success = 0;
    return r;
}

/* Operands on one entry combine into one: their whole HLCs, concatenated (a ragged tail, which
 * barrel never writes, would shift every HLC after it). */
static char *changes_partial_merge(void *state, const char *key, size_t key_len,
                                   const char *const *ops, const size_t *op_lens, int n_ops,
                                   unsigned char *success, size_t *out_len)
{
    (void)state;
    (void)key;
    (void)key_len;
    size_t n = 0;
    for (int i = 0; i < n_ops; i++)
        n += op_lens[i] / CHANGE_DROP_LEN * CHANGE_DROP_LEN;
    char *r = malloc(n ? n : 1);
    *success = r != NULL;
    for (size_t i = 0, at = 0; r && i < (size_t)n_ops; i++) {
        size_t whole = op_lens[i] / CHANGE_DROP_LEN * CHANGE_DROP_LEN;
        memcpy(r + at, ops[i], whole);
        at += whole;
    }
    *out_len = n;
    return r;
}

static void changes_delete_value(void *state, const char *v, size_t vl)
{
    (void)state;
    (void)vl;
    free((void *)v);
}

/* RocksDB's C wrappers call their destructor unconditionally: a no-op, there is no state. */
static void no_state(void *state)
{
    (void)state;
}

static const char *changes_merge_name(void *state)
{
    (void)state;
    return "barrel.changes.drop";
}

rocksdb_mergeoperator_t *changes_merge_operator(void)
{
    return rocksdb_mergeoperator_create(NULL, no_state, changes_full_merge, changes_partial_merge,
                                        changes_delete_value, changes_merge_name);
}

/* An entry with no items left goes. */
static unsigned char changes_filter(void *state, int level, const char *key, size_t key_len,
                                    const char *v, size_t vl, char **new_v, size_t *new_vl,
                                    unsigned char *changed)
{
    (void)state;
    (void)level;
    (void)key;
    (void)key_len;
    (void)new_v;
    (void)new_vl;
    *changed = 0;
    return vl == 2 && (uint8_t)v[0] == CHANGE_PACKED && v[1] == 0;
}

static const char *changes_filter_name(void *state)
{
    (void)state;
    return "barrel.changes.empty";
}

rocksdb_compactionfilter_t *changes_compaction_filter(void)
{
    return rocksdb_compactionfilter_create(NULL, no_state, changes_filter, changes_filter_name);
}

static bool id_wanted(const struct br_changes_opts *o, const struct br_change *c)
{
    if (!o->doc_ids)
        return true;
    for (size_t i = 0; i < o->n_doc_ids; i++) {
        size_t l = o->doc_id_lens ? o->doc_id_lens[i] : strlen(o->doc_ids[i]);
        if (l == c->id_len && memcmp(o->doc_ids[i], c->id, l) == 0)
            return true;
    }
    return false;
}

/* The stored record of the document a change names (on the feed's snapshot), pinned in the
 * block cache (no copy): release *raw with rocksdb_pinnableslice_destroy. */
static br_err pin_rec(br_db *db, const rocksdb_readoptions_t *ro, const struct br_change *c,
                      rocksdb_pinnableslice_t **raw)
{
    char kb[4 + BR_DOCID_MAX];
    if (c->id_len > BR_DOCID_MAX)
        return BR_ESTORE; /* ids are at most BR_DOCID_MAX bytes: a corrupt change entry */
    memcpy(kb, db->dbid, 4);
    memcpy(kb + 4, c->id, c->id_len);
    char *err = NULL;
    rocksdb_pinnableslice_t *v =
        rocksdb_get_pinned_cf(db->s->rdb, ro, db->s->cf[CF_DOCS], kb, 4 + c->id_len, &err);
    if (err)
        return store_rdb_err(err, "changes_doc");
    size_t vl = 0;
    if (!v || !rocksdb_pinnableslice_value(v, &vl)) {
        rocksdb_pinnableslice_destroy(v);
        return BR_ESTORE; /* a change entry without its document */
    }
    *raw = v;
    return BR_OK;
}

/* Decode a pinned record into r, which borrows from it. */
static br_err decode_pinned(const rocksdb_pinnableslice_t *raw, struct docrec *r)
{
    size_t vl = 0;
    const char *p = rocksdb_pinnableslice_value(raw, &vl);
    br_err e = docrec_decode((const uint8_t *)p, vl, r);
    return e == BR_ENOMEM || !e ? e : BR_ESTORE;
}

/* style=all_docs: every leaf of the document, winner first. */
static br_err leaves_of(const struct docrec *r, struct br_rev **out, size_t *n)
{
    uint32_t *idx = NULL, cnt = 0;
    br_err e = br_revtree_leaves(&r->tree, &idx, &cnt);
    struct br_rev *revs = NULL;
    if (!e && cnt) {
        revs = br_calloc(cnt, sizeof *revs);
        if (!revs)
            e = BR_ENOMEM;
        for (uint32_t i = 0; !e && i < cnt; i++)
            revs[i] = r->tree.nodes[idx[i]].rev;
    }
    br_free(idx);
    if (e)
        return e == BR_ENOMEM ? e : BR_ESTORE;
    *out = revs;
    *n = cnt;
    return BR_OK;
}

/* Path and query filters, compiled once per feed read. */
struct cfilter {
    br_pattern_trie *trie;
    const br_query *query;
    br_buf topic;
    bool hit;
    br_err err;
};

static void trie_hit(void *arg, void *value)
{
    (void)value;
    ((struct cfilter *)arg)->hit = true;
}

static int topic_cb(void *arg, const struct br_path_value *pv)
{
    struct cfilter *cf = arg;
    br_buf_reset(&cf->topic);
    cf->err = br_path_topic(pv, &cf->topic);
    if (cf->err)
        return 1;
    br_pattern_trie_match(cf->trie, (const char *)cf->topic.data, cf->topic.len, trie_hit, cf);
    return cf->hit;
}

static br_err cfilter_init(struct cfilter *cf, const struct br_changes_opts *o)
{
    memset(cf, 0, sizeof *cf);
    br_buf_init(&cf->topic, 0);
    cf->query = o->query;
    if (!o->n_paths)
        return BR_OK;
    br_err e = br_pattern_trie_new(&cf->trie);
    for (size_t i = 0; !e && i < o->n_paths; i++)
        e = br_pattern_trie_add(cf->trie, o->paths[i], strlen(o->paths[i]), cf);
    return e;
}

static void cfilter_fini(struct cfilter *cf)
{
    br_pattern_trie_free(cf->trie);
    br_buf_fini(&cf->topic);
}

/* ---- path filters answered from the path index ----
 *
 * A path filter otherwise reads and walks the document of every change. When the database's
 * index policy covers every pattern, the feed instead collects, from the postings on its own
 * snapshot, the ids of the documents whose live winner has a matching topic, and looks each
 * change's id up in that set. A topic is keys/value, and a literal pattern (no wildcard) is
 * keys/value for each '/' in it that could separate the joined keys from the value's text
 * (keys and strings may hold '/'): for each such split the postings of keys with a string
 * value equal to the text (texts of at most BR_PATH_STRING_CUT bytes: longer strings were cut
 * to that before they became topics and postings alike), true, false or null for those texts,
 * and, if the text reads as a number, the number postings of that double. String, boolean and
 * null postings say exactly that the topic is there; number postings only that it may be (an
 * int and a float, or two large ints, share a double, but not a topic text), so their
 * documents are still checked. Deletions have no postings and are always checked against the
 * body they deleted (CHG-26), as are the first FAST_AFTER changes (a short feed, e.g. a live
 * stream's next few changes, is cheaper checked than a set built). */
#define FAST_AFTER 64
#define FAST_MAX_IDS (1u << 20) /* more candidates than this: check each change instead */

struct fastset {
    br_buf arena;    /* the ids, back to back */
    size_t *off;     /* entry i: arena[off[i], off[i + 1]) */
    uint64_t *hash;  /* XXH3 of each id */
    uint32_t *slots; /* open addressing: entry + 1, 0 empty */
    size_t n, cap, mask;
    bool on;    /* built: the index covers every pattern */
    bool check; /* some candidates came from number postings: check candidates' documents */
};

static void fastset_fini(struct fastset *fs)
{
    br_buf_fini(&fs->arena);
    br_free(fs->off);
    br_free(fs->hash);
    br_free(fs->slots);
    memset(fs, 0, sizeof *fs);
}

static bool fastset_has(const struct fastset *fs, const char *id, size_t len, uint64_t h)
{
    if (!fs->n)
        return false;
    for (size_t i = (size_t)h & fs->mask;; i = (i + 1) & fs->mask) {
        uint32_t sl = fs->slots[i];
        if (!sl)
            return false;
        size_t k = sl - 1;
        if (fs->hash[k] == h && fs->off[k + 1] - fs->off[k] == len &&
            memcmp(fs->arena.data + fs->off[k], id, len) == 0)
            return true;
    }
}

static br_err fastset_add(struct fastset *fs, const char *id, size_t len)
{
    uint64_t h = XXH3_64bits(id, len);
    if (fastset_has(fs, id, len, h))
        return BR_OK;
    if (fs->n >= FAST_MAX_IDS)
        return BR_ETOOBIG;
    if ((fs->n + 1) * 2 > fs->mask + 1 || !fs->slots) { /* grow the index */
        size_t ncap = fs->slots ? (fs->mask + 1) * 2 : 1024;
        uint32_t *ns = br_calloc(ncap, sizeof *ns);
        if (!ns)
            return BR_ENOMEM;
        for (size_t k = 0; k < fs->n; k++) {
            size_t j = (size_t)fs->hash[k] & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = (uint32_t)k + 1;
        }
        br_free(fs->slots);
        fs->slots = ns;
        fs->mask = ncap - 1;
    }
    if (fs->n + 1 >= fs->cap) {
        size_t nc = fs->cap ? fs->cap * 2 : 1024;
        size_t *no = br_realloc(fs->off, (nc + 1) * sizeof *no);
        if (!no)
            return BR_ENOMEM;
        fs->off = no;
        uint64_t *nh = br_realloc(fs->hash, nc * sizeof *nh);
        if (!nh)
            return BR_ENOMEM;
        fs->hash = nh;
        fs->cap = nc;
    }
    if (fs->n == 0)
        fs->off[0] = fs->arena.len;
    br_err e = br_buf_append(&fs->arena, id, len);
    if (e)
        return e;
    fs->hash[fs->n] = h;
    fs->off[fs->n + 1] = fs->arena.len;
    size_t j = (size_t)h & fs->mask;
    while (fs->slots[j])
        j = (j + 1) & fs->mask;
    fs->slots[j] = (uint32_t)fs->n + 1;
    fs->n++;
    return BR_OK;
}

/* Add the document id of every posting that starts with lo (a path prefix of plen bytes, then
 * a value). */
static br_err fast_scan(br_db *db, const rocksdb_snapshot_t *snap, const br_buf *lo, size_t plen,
                        struct fastset *fs)
{
    br_buf hi;
    br_buf_init(&hi, 0);
    br_err e = store_prefix_end(lo->data, lo->len, &hi);
    if (e)
        return e;
    br_store *s = db->s;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, snap);
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi.data, hi.len);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_INDEX]);
    for (rocksdb_iter_seek(it, (const char *)lo->data, lo->len); !e && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *id;
        size_t idl;
        if (!index_posting_docid(k, kl, plen, &id, &idl))
            e = BR_ESTORE;
        else
            e = fastset_add(fs, id, idl);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    br_buf_fini(&hi);
    if (err && !e)
        e = store_rdb_err(err, "changes_postings");
    else
        rocksdb_free(err);
    return e;
}

/* The candidates of one split of a literal pattern: keys, and the text of the value. */
static br_err fast_split(br_db *db, const rocksdb_snapshot_t *snap, const char *keys, size_t klen,
                         const char *val, size_t vlen, struct fastset *fs)
{
    br_buf k;
    br_buf_init(&k, 0);
    br_err e = index_path_prefix(&k, db->dbid, keys, klen);
    size_t plen = k.len;
    if (!e && vlen <= BR_PATH_STRING_CUT) {
        uint8_t tag = IDX_STR;
        e = br_buf_append(&k, &tag, 1);
        if (!e)
            e = index_put_string(&k, val, vlen, true);
        if (!e)
            e = fast_scan(db, snap, &k, plen, fs);
    }
    static const struct {
        const char *text;
        enum br_pv_type t;
    } words[] = {{"null", BR_PV_NULL}, {"false", BR_PV_FALSE}, {"true", BR_PV_TRUE}};
    for (size_t w = 0; !e && w < sizeof words / sizeof words[0]; w++) {
        if (vlen != strlen(words[w].text) || memcmp(val, words[w].text, vlen) != 0)
            continue;
        k.len = plen;
        e = index_put_value(&k, words[w].t, 0, 0, NULL, 0);
        if (!e)
            e = fast_scan(db, snap, &k, plen, fs);
    }
    /* A number's topic text reads back as its double (paths.h), so every number with this text
     * has a posting for strtod(text); not every such posting has this text. */
    char num[64];
    if (!e && vlen > 0 && vlen < sizeof num && strchr("-0123456789", val[0])) {
        memcpy(num, val, vlen);
        num[vlen] = 0;
        char *end;
        double d = strtod(num, &end);
        if (end == num + vlen && isfinite(d)) {
            k.len = plen;
            e = index_put_number(&k, d);
            if (!e)
                e = fast_scan(db, snap, &k, plen, fs);
            fs->check = true;
        }
    }
    br_buf_fini(&k);
    return e;
}

/* Build the candidate set of o->paths on snap (fs->on), unless a pattern has a wildcard or a
 * split whose keys the index policy leaves out, or the candidates are too many: then fs->on
 * stays false and the caller checks every change. The policy is read under ipol_rw and must
 * still be the one snap was taken with (gen). */
static br_err fast_build(br_db *db, const rocksdb_snapshot_t *snap, uint64_t gen,
                         const struct br_changes_opts *o, struct fastset *fs)
{
    memset(fs, 0, sizeof *fs);
    br_buf_init(&fs->arena, 0);
    br_err e = BR_OK;
    bool usable = true;
    pthread_rwlock_rdlock(&db->ipol_rw);
    if (db->ipol_gen != gen)
        usable = false;
    for (size_t i = 0; usable && i < o->n_paths; i++) {
        const char *p = o->paths[i];
        size_t n = strlen(p);
        for (size_t j = 0; usable && j < n; j++) {
            bool wild = (p[j] == '+' || p[j] == '#') && (j == 0 || p[j - 1] == '/') &&
                        (j + 1 == n || p[j + 1] == '/');
            if (wild || (p[j] == '/' && !index_wants(db, p, j)))
                usable = false;
        }
    }
    for (size_t i = 0; usable && !e && i < o->n_paths; i++) {
        const char *p = o->paths[i];
        size_t n = strlen(p);
        for (size_t j = 0; !e && j < n; j++)
            if (p[j] == '/')
                e = fast_split(db, snap, p, j, p + j + 1, n - j - 1, fs);
    }
    pthread_rwlock_unlock(&db->ipol_rw);
    if (e == BR_ETOOBIG) { /* too many candidates */
        usable = false;
        e = BR_OK;
    }
    if (e || !usable) {
        fastset_fini(fs);
        return e;
    }
    fs->on = true;
    atomic_fetch_add(&db->chg_fast, 1);
    return BR_OK;
}

/* Does the document pass the path and query filters? */
static br_err cfilter_match(struct cfilter *cf, const struct docrec *r, bool paths_known, bool *ok)
{
    size_t bl;
    bool deleted;
    const uint8_t *body = docrec_filter_body(r, &bl, &deleted);
    *ok = false;
    if (!body)
        return BR_OK;
    if (cf->trie && !paths_known) {
        cf->hit = false;
        cf->err = BR_OK;
        br_err e = br_paths_foreach(body, bl, topic_cb, cf);
        if (cf->err)
            return cf->err;
        if (e == BR_ENOMEM)
            return e;
        if (!cf->hit)
            return BR_OK;
    }
    if (cf->query && !br_query_match(cf->query, body, bl))
        return BR_OK;
    *ok = true;
    return BR_OK;
}

br_err br_db_changes(br_db *db, const struct br_changes_opts *o, br_changes_cb cb, void *arg,
                     struct br_hlc *last_seq)
{
    struct br_changes_opts dflt;
    memset(&dflt, 0, sizeof dflt);
    if (!o)
        o = &dflt;
    br_store *s = db->s;
    if (db->deleted)
        return BR_ENOTFOUND;
    uint8_t lo[4 + BR_HLC_BYTES], hi[4];
    memcpy(lo, db->dbid, 4);
    br_hlc_encode(o->since, lo + 4);
    memcpy(hi, db->dbid, 4);
    store_be32(hi, store_rd32(db->dbid) + 1);
    uint8_t lower[4];
    memcpy(lower, db->dbid, 4);

    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    /* The snapshot and the index policy its postings follow (fast_build checks it). */
    pthread_rwlock_rdlock(&db->ipol_rw);
    const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(s->rdb);
    uint64_t ipol_gen = db->ipol_gen;
    pthread_rwlock_unlock(&db->ipol_rw);
    rocksdb_readoptions_set_snapshot(ro, snap);
    rocksdb_readoptions_set_iterate_lower_bound(ro, (const char *)lower, 4);
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, 4);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->rdb, ro, s->cf[CF_CHANGES]);
    bool from_start = br_hlc_cmp(o->since, BR_HLC_MIN) == 0;
    struct cfilter cf;
    br_err e = cfilter_init(&cf, o);
    bool filtering = o->n_paths || o->query;
    struct fastset fs;
    memset(&fs, 0, sizeof fs);
    br_buf_init(&fs.arena, 0);
    size_t path_checks = 0; /* changes whose paths were checked on their document */
    bool fast_tried = false;
    if (o->descending) {
        rocksdb_iter_seek_to_last(it);
    } else {
        rocksdb_iter_seek(it, (const char *)lo, sizeof lo);
        /* `since` is exclusive (CHG-02); from the start, MIN itself is a valid key. */
        if (!from_start && rocksdb_iter_valid(it)) {
            size_t kl;
            const char *k = rocksdb_iter_key(it, &kl);
            if (kl == sizeof lo && memcmp(k, lo, sizeof lo) == 0)
                rocksdb_iter_next(it);
        }
    }
    struct br_hlc last = o->since;
    size_t sent = 0;
    struct change_items ci;
    memset(&ci, 0, sizeof ci);
    bool done = false;
    for (; !e && !done && rocksdb_iter_valid(it);
         o->descending ? rocksdb_iter_prev(it) : rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl != 4 + BR_HLC_BYTES) {
            e = BR_ESTORE;
            break;
        }
        e = change_items_decode(br_hlc_decode((const uint8_t *)k + 4), v, vl, &ci);
        if (e) {
            if (e != BR_ENOMEM)
                br_log(BR_LOG_ERROR, "store", "op=changes db=%s msg=\"corrupt change entry\"",
                       db->name);
            break;
        }
        for (size_t j = 0; !e && !done && j < ci.n; j++) {
            size_t at = o->descending ? ci.n - 1 - j : j;
            struct br_change c = ci.c[at];
            if (!from_start && br_hlc_cmp(c.seq, o->since) <= 0) {
                done = o->descending; /* descending: everything further is older */
                continue;             /* ascending: an item of a packed entry before since */
            }
            /* every item is its document's latest change: superseded ones are merged away */
            rocksdb_pinnableslice_t *raw = NULL;
            if (!o->descending || br_hlc_cmp(c.seq, last) > 0 || sent == 0)
                last = c.seq;
            bool skip = !id_wanted(o, &c);
            if (!skip && o->n_paths && !fast_tried && path_checks >= FAST_AFTER) {
                fast_tried = true;
                e = fast_build(db, snap, ipol_gen, o, &fs);
            }
            bool paths_known = false; /* the index says the path filter passes */
            if (!e && !skip && fs.on && !c.deleted) {
                if (!fastset_has(&fs, c.id, c.id_len, XXH3_64bits(c.id, c.id_len)))
                    skip = true; /* no topic of the live winner matches */
                paths_known = !fs.check;
            }
            struct br_rev *leaves = NULL;
            size_t nl = 0;
            c.leaves = &c.rev;
            c.n_leaves = 1;
            struct docrec r;
            docrec_init(&r);
            if (!e && !skip && (o->all_docs || o->query || (o->n_paths && !paths_known))) {
                bool ok = true;
                if (!raw)
                    e = pin_rec(db, ro, &c, &raw);
                if (!e)
                    e = decode_pinned(raw, &r);
                if (!e && filtering)
                    e = cfilter_match(&cf, &r, paths_known, &ok);
                path_checks += o->n_paths && !paths_known;
                if (!e && ok && o->all_docs) {
                    e = leaves_of(&r, &leaves, &nl);
                    c.leaves = leaves;
                    c.n_leaves = nl;
                }
                skip = !ok;
            }
            docrec_fini(&r);
            rocksdb_pinnableslice_destroy(raw);
            if (e || skip) {
                br_free(leaves);
                continue;
            }
            int stop = cb(arg, &c);
            br_free(leaves);
            sent++;
            if (stop || (o->limit && sent >= o->limit))
                done = true;
        }
    }
    change_items_fini(&ci);
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err && !e)
        e = store_rdb_err(err, "changes");
    else
        rocksdb_free(err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_release_snapshot(s->rdb, snap);
    cfilter_fini(&cf);
    fastset_fini(&fs);
    if (!e && last_seq)
        *last_seq = last;
    return e;
}

br_err br_db_changes_wait(br_db *db, struct br_hlc since, uint64_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000);
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    br_err e = BR_OK;
    pthread_mutex_lock(&db->wmu);
    while (!db->deleted && br_hlc_cmp(db->st.digest.last, since) <= 0) {
        int rc = pthread_cond_timedwait(&db->chg_cv, &db->wmu, &dl);
        if (rc == ETIMEDOUT) {
            e = BR_ETIMEDOUT;
            break;
        }
    }
    if (db->deleted)
        e = BR_ENOTFOUND;
    pthread_mutex_unlock(&db->wmu);
    return e;
}

br_err br_db_watch(br_db *db, br_db_watch_fn fn, void *arg, uint64_t *id)
{
    pthread_rwlock_wrlock(&db->watch_rw);
    struct watcher *w = br_realloc(db->watchers, (db->n_watchers + 1) * sizeof *w);
    if (!w) {
        pthread_rwlock_unlock(&db->watch_rw);
        return BR_ENOMEM;
    }
    db->watchers = w;
    w[db->n_watchers] = (struct watcher){db->next_watch_id++, fn, arg};
    *id = w[db->n_watchers].id;
    db->n_watchers++;
    pthread_rwlock_unlock(&db->watch_rw);
    return BR_OK;
}

void br_db_unwatch(br_db *db, uint64_t id)
{
    /* Taking the write lock waits for callbacks in flight: none runs after this returns. */
    pthread_rwlock_wrlock(&db->watch_rw);
    for (size_t i = 0; i < db->n_watchers; i++) {
        if (db->watchers[i].id == id) {
            db->watchers[i] = db->watchers[--db->n_watchers];
            break;
        }
    }
    pthread_rwlock_unlock(&db->watch_rw);
}

/* ---- streams ---- */

struct br_changes_stream {
    br_db *db;
    struct br_changes_opts o;
    struct br_hlc pos;
};

br_err br_changes_stream_open(br_db *db, const struct br_changes_opts *o, br_changes_stream **out)
{
    br_changes_stream *cs = br_calloc(1, sizeof *cs);
    if (!cs)
        return BR_ENOMEM;
    cs->db = db;
    if (o)
        cs->o = *o;
    cs->o.descending = false;
    cs->pos = cs->o.since;
    *out = cs;
    return BR_OK;
}

struct counted {
    br_changes_cb cb;
    void *arg;
    size_t n;
};

static int counted_cb(void *arg, const struct br_change *c)
{
    struct counted *k = arg;
    k->n++;
    return k->cb(k->arg, c);
}

br_err br_changes_stream_next(br_changes_stream *cs, size_t max, uint64_t timeout_ms,
                              br_changes_cb cb, void *arg, struct br_hlc *batch_last)
{
    struct br_changes_opts o = cs->o;
    o.limit = max ? max : (cs->o.limit ? cs->o.limit : 100);
    uint64_t t0 = br_env_mono_ns(cs->db->s->env);
    for (;;) {
        struct counted k = {cb, arg, 0};
        struct br_hlc last = cs->pos;
        o.since = cs->pos;
        br_err e = br_db_changes(cs->db, &o, counted_cb, &k, &last);
        if (e)
            return e;
        if (k.n > 0) {
            *batch_last = last;
            return BR_OK;
        }
        /* Entries a filter dropped need no acknowledgement: move past them. */
        if (br_hlc_cmp(last, cs->pos) > 0)
            cs->pos = last;
        uint64_t waited = (br_env_mono_ns(cs->db->s->env) - t0) / 1000000u;
        if (waited >= timeout_ms)
            return BR_ETIMEDOUT;
        e = br_db_changes_wait(cs->db, cs->pos, timeout_ms - waited);
        if (e && e != BR_ETIMEDOUT)
            return e;
    }
}

void br_changes_stream_ack(br_changes_stream *cs, struct br_hlc upto)
{
    if (br_hlc_cmp(upto, cs->pos) > 0)
        cs->pos = upto;
}

struct br_hlc br_changes_stream_position(const br_changes_stream *cs)
{
    return cs->pos;
}

void br_changes_stream_close(br_changes_stream *cs)
{
    br_free(cs);
}

/* ---- revisions of many documents (replication's get_revs) ---- */

br_err br_db_read_revs(br_db *db, const struct br_revs_want *docs, size_t n, br_rev_read_cb cb,
                       void *arg)
{
    if (n == 0)
        return BR_OK;
    br_buf keys;
    br_buf_init(&keys, 0);
    const char **kp = br_calloc(n, sizeof *kp);
    size_t *klen = br_calloc(n, sizeof *klen);
    rocksdb_pinnableslice_t **vals = br_calloc(n, sizeof *vals);
    char **errs = br_calloc(n, sizeof *errs);
    br_err e = kp && klen && vals && errs ? BR_OK : BR_ENOMEM;
    /* an id out of rule names no document: an empty key finds nothing */
    for (size_t i = 0; !e && i < n; i++) {
        size_t at = keys.len;
        if (store_docid_valid(docs[i].id, docs[i].id_len)) {
            e = br_buf_append(&keys, db->dbid, 4);
            if (!e)
                e = br_buf_append(&keys, docs[i].id, docs[i].id_len);
        }
        klen[i] = keys.len - at;
    }
    if (e)
        goto out;
    for (size_t i = 0, at = 0; i < n; at += klen[i++])
        kp[i] = (const char *)keys.data + at;
    rocksdb_batched_multi_get_cf(db->s->rdb, db->s->ro, db->s->cf[CF_DOCS], n, kp, klen, vals, errs,
                                 false);
    for (size_t i = 0; i < n; i++) {
        br_err x = errs[i] ? store_rdb_err(errs[i], "read_revs") : BR_OK; /* frees errs[i] */
        if (!e)
            e = x;
    }
    int stop = 0;
    for (size_t i = 0; i < n && !e && !stop; i++) {
        struct docrec r;
        size_t vl = 0;
        const char *p = klen[i] && vals[i] ? rocksdb_pinnableslice_value(vals[i], &vl) : NULL;
        docrec_init(&r);
        if (p) {
            e = docrec_decode((const uint8_t *)p, vl, &r);
            if (e && e != BR_ENOMEM) {
                br_log(BR_LOG_ERROR, "store", "op=read_revs db=%s doc=%.*s msg=\"corrupt record\"",
                       db->name, (int)(docs[i].id_len > 64 ? 64 : docs[i].id_len), docs[i].id);
                e = BR_ESTORE;
            }
        }
        for (size_t j = 0; !e && !stop && j < docs[i].n; j++) {
            struct br_rev_read rr = {.doc = i, .rev = docs[i].revs[j], .missing = true};
            struct br_rev *hist = NULL;
            uint32_t nh = 0;
            uint32_t node = p ? br_revtree_find(&r.tree, &rr.rev) : BR_REVTREE_NONE;
            struct leafdata *l = node != BR_REVTREE_NONE ? docrec_leaf(&r, &rr.rev) : NULL;
            if (l) { /* a non-leaf has no body any more: missing, as for br_db_get_open_revs */
                e = br_revtree_history(&r.tree, &rr.rev, db->revs_limit, &hist, &nh);
                rr.missing = false;
                rr.deleted = r.tree.nodes[node].deleted;
                rr.body = l->body;
                rr.body_len = l->body_len;
                rr.history = hist;
                rr.n_history = nh;
                rr.atts = l->atts;
                rr.n_atts = l->n_atts;
            }
            if (!e)
                stop = cb(arg, &rr);
            br_free(hist);
        }
        docrec_fini(&r);
    }
out:
    for (size_t i = 0; vals && i < n; i++)
        rocksdb_pinnableslice_destroy(vals[i]);
    br_buf_fini(&keys);
    br_free(errs);
    br_free(vals);
    br_free(klen);
    br_free(kp);
    return e;
}
