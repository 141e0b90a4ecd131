/* rev.c — revision ids "N-hex" (and local "0-N"), their order, the revision hash and generated
 * document ids. The hash of an edit (BEHAVIOURS.md Decisions §2) is BLAKE2b-128 over the
 * deterministic CBOR of the 4-element array [parent rev text or "", deleted, body, digests]: the
 * body is already a canonical CBOR map and is appended as is; the attachment digests are text
 * strings sorted by their encoded bytes (for CBOR text that is: shorter first, then bytewise).
 * Equal edits on two nodes therefore give equal revisions, so identical concurrent edits
 * collapse instead of conflicting. Parsing is strict: everything we accept formats back to the
 * same text. */
#include "barrel/rev.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/cbor.h"
#include "barrel/env.h"

#define HASH_BYTES 16 /* BLAKE2b-128 */

/* 1 for the lowercase hex digits, by byte value (rev_valid runs on every revision added). */
static const uint8_t LOWER_HEX[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
};

static bool is_lower_hex(char c)
{
    return LOWER_HEX[(unsigned char)c] != 0;
}

/* Lowercase hex of n bytes into out (2n characters and a NUL). A revision hash is public, so
 * this need not be constant-time like sodium_bin2hex, which cost more than the hash. */
static void to_hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Decimal 1..BR_REV_GEN_MAX, no sign, no leading zero. */
static br_err parse_gen(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 16 || s[0] == '0')
        return BR_EBADREV;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return BR_EBADREV;
        v = v * 10 + (uint64_t)(s[i] - '0'); /* 16 digits cannot overflow u64 */
    }
    if (v > BR_REV_GEN_MAX)
        return BR_EBADREV;
    *out = v;
    return BR_OK;
}

static const char *find_dash(const char *s, size_t len)
{
    return len ? memchr(s, '-', len) : NULL;
}

br_err br_rev_parse(const char *s, size_t len, struct br_rev *out)
{
    uint64_t gen;
    if (!s)
        return BR_EBADREV;
    const char *dash = find_dash(s, len);
    if (!dash)
        return BR_EBADREV;
    size_t glen = (size_t)(dash - s), hlen = len - glen - 1;
    if (parse_gen(s, glen, &gen) != BR_OK)
        return BR_EBADREV;
    if (hlen == 0 || hlen > BR_REV_HASH_MAX)
        return BR_EBADREV;
    for (size_t i = 0; i < hlen; i++)
        if (!is_lower_hex(dash[1 + i]))
            return BR_EBADREV;
    out->gen = gen;
    out->hash_len = (uint8_t)hlen;
    memcpy(out->hash, dash + 1, hlen);
    out->hash[hlen] = '\0';
    return BR_OK;
}

br_err br_rev_parse_local(const char *s, size_t len, struct br_rev *out)
{
    uint64_t n;
    if (!s || len < 3 || s[0] != '0' || s[1] != '-')
        return BR_EBADREV;
    if (parse_gen(s + 2, len - 2, &n) != BR_OK)
        return BR_EBADREV;
    out->gen = 0;
    out->hash_len = (uint8_t)(len - 2);
    memcpy(out->hash, s + 2, len - 2);
    out->hash[len - 2] = '\0';
    return BR_OK;
}

size_t br_rev_format(const struct br_rev *r, char out[BR_REV_TEXT_MAX])
{
    if (r->gen == 0 && r->hash_len == 0) { /* "no revision" (REV-01: "" <-> (0, "")) */
        out[0] = '\0';
        return 0;
    }
    /* By hand rather than snprintf: this runs several times per document write. 20 digits,
     * '-', at most 64 hash characters and the NUL fit BR_REV_TEXT_MAX. */
    char digits[20];
    size_t nd = 0, n = 0;
    uint64_t g = r->gen;
    do {
        digits[nd++] = (char)('0' + g % 10);
        g /= 10;
    } while (g);
    while (nd)
        out[n++] = digits[--nd];
    out[n++] = '-';
    size_t hl = strnlen(r->hash, r->hash_len < BR_REV_HASH_MAX ? r->hash_len : BR_REV_HASH_MAX);
    memcpy(out + n, r->hash, hl);
    n += hl;
    out[n] = '\0';
    return n;
}

int br_rev_cmp(const struct br_rev *a, const struct br_rev *b)
{
    if (a->gen != b->gen)
        return a->gen < b->gen ? -1 : 1;
    size_t m = a->hash_len < b->hash_len ? a->hash_len : b->hash_len;
    int c = memcmp(a->hash, b->hash, m);
    if (c != 0)
        return c < 0 ? -1 : 1;
    if (a->hash_len != b->hash_len)
        return a->hash_len < b->hash_len ? -1 : 1;
    return 0;
}

bool br_rev_eq(const struct br_rev *a, const struct br_rev *b)
{
    return a->gen == b->gen && a->hash_len == b->hash_len &&
           memcmp(a->hash, b->hash, a->hash_len) == 0;
}

/* Are the 8 bytes of w all lowercase hex digits? Each byte with its top bit set is at least
 * 0x80, so subtracting a constant below 0x80 from it never borrows from the next byte, and the
 * top bit of the difference says whether the byte was at least that constant. */
static bool lower_hex8(uint64_t w)
{
    const uint64_t hi = 0x8080808080808080ull, one = 0x0101010101010101ull;
    if (w & hi)
        return false;
    uint64_t x = w | hi;
    uint64_t digit = (x - 0x30 * one) & ~(x - 0x3a * one);
    uint64_t af = (x - 0x61 * one) & ~(x - 0x67 * one);
    return ((digit | af) & hi) == hi;
}

/* A revision as br_rev_parse would produce it: gen 1..max, 1..64 lowercase hex digits. Runs
 * for every revision a write adds and encodes, so the digits are checked 8 at a time. */
static bool rev_valid(const struct br_rev *r)
{
    if (r->gen == 0 || r->gen > BR_REV_GEN_MAX)
        return false;
    if (r->hash_len == 0 || r->hash_len > BR_REV_HASH_MAX)
        return false;
    size_t i = 0;
    for (; i + 8 <= r->hash_len; i += 8) {
        uint64_t w;
        memcpy(&w, r->hash + i, 8);
        if (!lower_hex8(w))
            return false;
    }
    for (; i < r->hash_len; i++)
        if (!is_lower_hex(r->hash[i]))
            return false;
    return true;
}

/* sodium_init once per process: every call of it takes and releases libsodium's global lock,
 * and br_rev_make runs once per document written. */
static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_ok;

static void sodium_start(void)
{
    sodium_ok = sodium_init() >= 0;
}

/* Order of CBOR text strings by their encoded bytes: the head grows with the length, so this
 * is shorter first, then bytewise. */
static int digest_cmp(const void *pa, const void *pb)
{
    const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return la < lb ? -1 : 1;
    return memcmp(a, b, la);
}

br_err br_rev_make(const struct br_rev *parent, bool deleted, const uint8_t *body, size_t body_len,
                   const char *const *att_digests, size_t n_atts, struct br_rev *out)
{
    br_err e = BR_OK;
    br_buf b;
    const char **sorted = NULL;
    char ptext[BR_REV_TEXT_MAX] = "";
    size_t plen = 0;
    uint8_t digest[HASH_BYTES];
    char hex[2 * HASH_BYTES + 1];

    br_buf_init(&b, 0);
    if (!body || body_len == 0 || (body[0] >> 5) != 5 || (n_atts && !att_digests))
        return BR_EINVAL; /* body must be a CBOR map */
    if (parent) {
        if (!rev_valid(parent) || parent->gen >= BR_REV_GEN_MAX)
            return BR_EBADREV;
        plen = br_rev_format(parent, ptext);
    }
    pthread_once(&sodium_once, sodium_start);
    if (!sodium_ok)
        return BR_ECRYPTO;
    if (n_atts) {
        sorted = br_calloc(n_atts, sizeof *sorted);
        if (!sorted) {
            e = BR_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n_atts; i++) {
            if (!att_digests[i]) {
                e = BR_EINVAL;
                goto out;
            }
            sorted[i] = att_digests[i];
        }
        qsort(sorted, n_atts, sizeof *sorted, digest_cmp);
    }
    /* Hashed in three parts, so the body is not copied: the head [4 items, parent text,
     * deleted] built on the stack (plen < BR_REV_TEXT_MAX < 256: a one- or two-byte text
     * head), the body, and the digest array. */
    uint8_t head[3 + BR_REV_TEXT_MAX + 1];
    size_t hn = 0;
    head[hn++] = 0x84; /* array(4) */
    if (plen < 24) {
        head[hn++] = (uint8_t)(0x60 | plen);
    } else {
        head[hn++] = 0x78;
        head[hn++] = (uint8_t)plen;
    }
    memcpy(head + hn, ptext, plen);
    hn += plen;
    head[hn++] = deleted ? 0xf5 : 0xf4;
    static const uint8_t no_atts[1] = {0x80}; /* array(0): no allocation for the usual case */
    const uint8_t *tail = no_atts;
    size_t tn = sizeof no_atts;
    if (n_atts) {
        e = br_cbor_put_array(&b, n_atts);
        for (size_t i = 0; !e && i < n_atts; i++)
            e = br_cbor_put_cstr(&b, sorted[i]);
        if (e)
            goto out;
        tail = b.data;
        tn = b.len;
    }
    crypto_generichash_state st;
    if (crypto_generichash_init(&st, NULL, 0, sizeof digest) != 0 ||
        crypto_generichash_update(&st, head, hn) != 0 ||
        crypto_generichash_update(&st, body, body_len) != 0 ||
        crypto_generichash_update(&st, tail, tn) != 0 ||
        crypto_generichash_final(&st, digest, sizeof digest) != 0) {
        e = BR_ECRYPTO;
        goto out;
    }
    to_hex(hex, digest, sizeof digest);
    out->gen = parent ? parent->gen + 1 : 1;
    out->hash_len = 2 * HASH_BYTES;
    memcpy(out->hash, hex, sizeof hex);
out:
    br_free(sorted);
    br_buf_fini(&b);
    return e;
}

br_err br_rev_path_check(const struct br_rev *revs, size_t n)
{
    if (n == 0)
        return BR_OK;
    if (!revs || revs[0].gen < n)
        return BR_EBADREV;
    for (size_t i = 0; i < n; i++) {
        if (!rev_valid(&revs[i]) || revs[i].gen != revs[0].gen - i)
            return BR_EBADREV;
    }
    return BR_OK;
}

void br_rev_gen_docid(const struct br_env *env, char out[33])
{
    uint8_t raw[16];
    br_env_random(env, raw, sizeof raw);
    sodium_bin2hex(out, 33, raw, sizeof raw);
}
