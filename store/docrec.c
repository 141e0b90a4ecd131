/* docrec.c — the stored form of a document: one record holding its changes-feed seq, its
 * revision tree and the data (body and attachment stubs) of every leaf revision. Non-leaf
 * revisions keep their ids in the tree but not their bodies (CouchDB after compaction), so one
 * read serves a get and one write serves a put. Decoding treats the bytes as untrusted. */
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

#include "store_int.h"

br_err br_store_sync(br_store *s)
{
    return store_sync(s, atomic_load(&s->written));
}

void docrec_init(struct docrec *r)
{
    memset(r, 0, sizeof *r);
    br_revtree_init(&r->tree);
}

void att_stubs_free(struct br_att_stub *a, size_t n)
{
    if (!a)
        return;
    for (size_t i = 0; i < n; i++) {
        br_free(a[i].name);
        br_free(a[i].content_type);
    }
    br_free(a);
}

br_err att_stubs_copy(const struct br_att_stub *a, size_t n, struct br_att_stub **out)
{
    *out = NULL;
    if (n == 0)
        return BR_OK;
    struct br_att_stub *c = br_calloc(n, sizeof *c);
    if (!c)
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        c[i] = a[i];
        c[i].name = br_strdup(a[i].name);
        c[i].content_type = br_strdup(a[i].content_type);
        if (!c[i].name || !c[i].content_type) {
            att_stubs_free(c, i + 1);
            return BR_ENOMEM;
        }
    }
    *out = c;
    return BR_OK;
}

void docrec_fini(struct docrec *r)
{
    br_revtree_fini(&r->tree);
    for (size_t i = 0; i < r->n_leaves; i++) {
        att_stubs_free(r->leaves[i].atts, r->leaves[i].n_atts);
        br_free(r->leaves[i].own);
    }
    br_free(r->leaves);
    r->leaves = NULL;
    r->n_leaves = 0;
    br_free(r->gone_own);
    r->gone_own = NULL;
    r->gone = NULL;
    r->gone_len = 0;
}

struct leafdata *docrec_leaf(struct docrec *r, const struct br_rev *rev)
{
    for (size_t i = 0; i < r->n_leaves; i++)
        if (br_rev_eq(&r->leaves[i].rev, rev))
            return &r->leaves[i];
    return NULL;
}

br_err docrec_drop_leaf(struct docrec *r, const struct br_rev *rev, struct att_batch *ab)
{
    for (size_t i = 0; i < r->n_leaves; i++) {
        struct leafdata *l = &r->leaves[i];
        if (!br_rev_eq(&l->rev, rev))
            continue;
        for (size_t j = 0; j < l->n_atts; j++) {
            br_err e = att_ref(ab, l->atts[j].key, -1);
            if (e)
                return e;
        }
        att_stubs_free(l->atts, l->n_atts);
        br_free(l->own);
        r->leaves[i] = r->leaves[--r->n_leaves];
        return BR_OK;
    }
    return BR_OK;
}

static br_err put_bytes(br_buf *b, const void *p, size_t n)
{
    br_err e = store_put_varint(b, n);
    return e ? e : br_buf_append(b, p, n);
}

br_err docrec_encode(const struct docrec *r, br_buf *out)
{
    uint8_t hdr[1 + 2 * BR_HLC_BYTES];
    hdr[0] = r->packed ? DOCREC_VERSION_PACKED : DOCREC_VERSION;
    br_hlc_encode(r->seq, hdr + 1);
    if (r->packed)
        br_hlc_encode(r->pack_key, hdr + 1 + BR_HLC_BYTES);
    br_err e = br_buf_append(out, hdr, r->packed ? sizeof hdr : 1 + BR_HLC_BYTES);
    if (e)
        return e;
    /* The tree is encoded in place, then its length prefix is slid in front of it (no
     * temporary buffer: this runs for every document write). */
    size_t at = out->len;
    e = br_revtree_encode(&r->tree, out);
    if (!e) {
        size_t tl = out->len - at, k = 0;
        uint8_t v[10];
        for (uint64_t x = tl; k == 0 || x; x >>= 7)
            v[k++] = (uint8_t)((x & 0x7f) | (x >> 7 ? 0x80 : 0));
        e = br_buf_reserve(out, k);
        if (e) {
            out->len = at;
            out->data[at] = 0;
        } else {
            memmove(out->data + at + k, out->data + at, tl);
            memcpy(out->data + at, v, k);
            out->len += k;
            out->data[out->len] = 0;
        }
    }
    if (!e)
        e = store_put_varint(out, r->n_leaves);
    for (size_t i = 0; !e && i < r->n_leaves; i++) {
        const struct leafdata *l = &r->leaves[i];
        uint32_t node = br_revtree_find(&r->tree, &l->rev);
        if (node == BR_REVTREE_NONE || !r->tree.nodes[node].leaf)
            return BR_EINVAL; /* programmer error: data for a revision that is not a leaf */
        /* node, body length, body, attachment count: one reservation (this runs for every
         * document written) */
        e = br_buf_reserve(out, 3 * 10 + l->body_len);
        if (e)
            break;
        uint8_t *p = out->data + out->len;
        p += store_varint_at(p, node);
        p += store_varint_at(p, l->body_len);
        if (l->body_len)
            memcpy(p, l->body, l->body_len);
        p += l->body_len;
        p += store_varint_at(p, l->n_atts);
        out->len = (size_t)(p - out->data);
        out->data[out->len] = 0;
        for (size_t j = 0; !e && j < l->n_atts; j++) {
            const struct br_att_stub *a = &l->atts[j];
            e = put_bytes(out, a->name, strlen(a->name));
            if (!e)
                e = put_bytes(out, a->content_type, strlen(a->content_type));
            if (!e)
                e = store_put_varint(out, a->length);
            if (!e)
                e = put_bytes(out, a->digest, strlen(a->digest));
            if (!e)
                e = store_put_varint(out, a->revpos);
            if (!e)
                e = br_buf_append(out, a->key, 32);
        }
    }
    /* Optional trailer: the last live body, while the winner is deleted. */
    if (!e && r->gone) {
        uint32_t win = br_revtree_winner(&r->tree);
        if (win != BR_REVTREE_NONE && r->tree.nodes[win].deleted)
            e = put_bytes(out, r->gone, r->gone_len);
    }
    return e;
}

static br_err get_span(const uint8_t **p, const uint8_t *end, const uint8_t **s, size_t *n)
{
    uint64_t len;
    if (store_get_varint(p, end, &len) || len > (uint64_t)(end - *p))
        return BR_ESTORE;
    *s = *p;
    *n = (size_t)len;
    *p += len;
    return BR_OK;
}

static br_err get_str(const uint8_t **p, const uint8_t *end, size_t max, char **out)
{
    const uint8_t *s;
    size_t n;
    if (get_span(p, end, &s, &n) || n > max || memchr(s, 0, n))
        return BR_ESTORE;
    *out = br_strndup((const char *)s, n);
    return *out ? BR_OK : BR_ENOMEM;
}

static br_err decode_atts(const uint8_t **p, const uint8_t *end, struct leafdata *l)
{
    uint64_t n;
    if (store_get_varint(p, end, &n) || n > (uint64_t)(end - *p))
        return BR_ESTORE;
    if (n == 0)
        return BR_OK;
    l->atts = br_calloc((size_t)n, sizeof *l->atts);
    if (!l->atts)
        return BR_ENOMEM;
    for (size_t j = 0; j < n; j++) {
        struct br_att_stub *a = &l->atts[j];
        l->n_atts = j + 1;
        br_err e = get_str(p, end, 4096, &a->name);
        if (!e)
            e = get_str(p, end, 1024, &a->content_type);
        if (!e && store_get_varint(p, end, &a->length))
            e = BR_ESTORE;
        const uint8_t *d;
        size_t dl;
        if (!e && (get_span(p, end, &d, &dl) || dl >= sizeof a->digest))
            e = BR_ESTORE;
        if (!e) {
            memcpy(a->digest, d, dl);
            a->digest[dl] = 0;
        }
        if (!e && store_get_varint(p, end, &a->revpos))
            e = BR_ESTORE;
        if (!e && end - *p < 32)
            e = BR_ESTORE;
        if (e)
            return e;
        memcpy(a->key, *p, 32);
        *p += 32;
    }
    return BR_OK;
}

br_err docrec_decode(const uint8_t *p, size_t n, struct docrec *r)
{
    const uint8_t *end = p + n;
    if (n < 1 + BR_HLC_BYTES || (p[0] != DOCREC_VERSION && p[0] != DOCREC_VERSION_PACKED))
        return BR_ESTORE;
    r->packed = p[0] == DOCREC_VERSION_PACKED;
    r->seq = br_hlc_decode(p + 1);
    p += 1 + BR_HLC_BYTES;
    if (r->packed) {
        /* the entry holding the item is keyed by its greatest item: never before this one */
        if (n < 1 + 2 * BR_HLC_BYTES)
            return BR_ESTORE;
        r->pack_key = br_hlc_decode(p);
        if (br_hlc_cmp(r->pack_key, r->seq) < 0)
            return BR_ESTORE;
        p += BR_HLC_BYTES;
    }
    const uint8_t *t;
    size_t tl;
    br_err e = get_span(&p, end, &t, &tl);
    if (e)
        return e;
    e = br_revtree_decode(t, tl, &r->tree);
    if (e)
        return e == BR_ENOMEM ? e : BR_ESTORE;
    uint64_t nl;
    if (store_get_varint(&p, end, &nl) || nl > r->tree.n)
        return BR_ESTORE;
    if (nl) {
        r->leaves = br_calloc((size_t)nl, sizeof *r->leaves);
        if (!r->leaves)
            return BR_ENOMEM;
    }
    for (size_t i = 0; i < nl; i++) {
        struct leafdata *l = &r->leaves[i];
        r->n_leaves = i + 1;
        uint64_t node;
        if (store_get_varint(&p, end, &node) || node >= r->tree.n || !r->tree.nodes[node].leaf)
            return BR_ESTORE;
        for (size_t j = 0; j < i; j++) /* each leaf has its data exactly once */
            if (r->leaves[j].node == node)
                return BR_ESTORE;
        l->node = (uint32_t)node;
        l->rev = r->tree.nodes[node].rev;
        e = get_span(&p, end, &l->body, &l->body_len);
        if (!e)
            e = decode_atts(&p, end, l);
        if (e)
            return e;
    }
    if (p != end) {
        uint32_t win = br_revtree_winner(&r->tree);
        if (win == BR_REVTREE_NONE || !r->tree.nodes[win].deleted)
            return BR_ESTORE; /* a last live body belongs to deleted documents only */
        e = get_span(&p, end, &r->gone, &r->gone_len);
        if (e || p != end)
            return BR_ESTORE;
    }
    /* Every leaf must have its data: the write path keeps that invariant. */
    uint32_t leaves = 0;
    for (uint32_t i = 0; i < r->tree.n; i++)
        leaves += r->tree.nodes[i].leaf;
    if (leaves != r->n_leaves)
        return BR_ESTORE;
    return BR_OK;
}
