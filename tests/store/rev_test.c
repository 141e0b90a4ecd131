/* rev_test.c — revision ids: parse, format, order, the revision hash, _revisions paths and
 * generated document ids (BEHAVIOURS.md REV-01..REV-12 where they concern revisions; REV-10 is
 * document meta stripping and is tested with the document code). */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/alloc.h"
#include "barrel/env.h"
#include "barrel/rev.h"

static struct br_rev rev_of(const char *s)
{
    struct br_rev r;
    cr_assert_eq(br_rev_parse(s, strlen(s), &r), BR_OK, "parse '%s'", s);
    return r;
}

static const uint8_t empty_map[] = {0xa0};
static const uint8_t body_a1[] = {0xa1, 0x61, 0x61, 0x01}; /* {"a": 1} */
static const uint8_t body_a2[] = {0xa1, 0x61, 0x61, 0x02}; /* {"a": 2} */

static struct br_rev make(const struct br_rev *parent, bool deleted, const uint8_t *body,
                          size_t len)
{
    struct br_rev r;
    cr_assert_eq(br_rev_make(parent, deleted, body, len, NULL, 0, &r), BR_OK);
    return r;
}

static bool all_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* REV-01 */
Test(rev, rev01_parse_gen_and_hash)
{
    struct br_rev r = rev_of("10-abc123");
    cr_assert_eq(r.gen, 10);
    cr_assert_eq(r.hash_len, 6);
    cr_assert_str_eq(r.hash, "abc123");
    r = rev_of("9007199254740991-0");
    cr_assert_eq(r.gen, BR_REV_GEN_MAX);
    char h64[80];
    memset(h64, 'f', sizeof h64);
    memcpy(h64, "1-", 2);
    cr_assert_eq(br_rev_parse(h64, 2 + 64, &r), BR_OK);
    cr_assert_eq(r.hash_len, 64);
    cr_assert_eq(br_rev_parse(h64, 2 + 65, &r), BR_EBADREV);
}

/* REV-01: the empty string is "no revision". br_rev_parse refuses it (rev.h: no dash), and the
 * zero value (gen 0, empty hash) is the (0, "") of upstream: it formats as "". */
Test(rev, rev01_empty_is_no_revision)
{
    struct br_rev r = rev_of("1-a"), zero;
    char buf[BR_REV_TEXT_MAX];
    cr_assert_eq(br_rev_parse("", 0, &r), BR_EBADREV);
    cr_assert_eq(r.gen, 1); /* untouched on error */
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(br_rev_format(&zero, buf), 0);
    cr_assert_str_eq(buf, "");
}

/* REV-01: anything that is not exactly "N-hex" is a bad revision. */
Test(rev, rev01_parse_rejects_malformed)
{
    static const char *const bad[] = {"abc",
                                      "-abc",
                                      "0-abc",
                                      "01-abc",
                                      "1-",
                                      "1-ABC",
                                      "1-abcG",
                                      "1-xyz",
                                      "1-a-b",
                                      " 1-a",
                                      "1-a ",
                                      "+1-a",
                                      "1 -a",
                                      "-1-a",
                                      "9007199254740992-a",
                                      "99999999999999999999-a",
                                      "1.0-a",
                                      "0x1-a",
                                      "1--a"};
    struct br_rev r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(br_rev_parse(bad[i], strlen(bad[i]), &r), BR_EBADREV, "'%s'", bad[i]);
    cr_assert_eq(br_rev_parse("1-a\0b", 5, &r), BR_EBADREV);
    cr_assert_eq(br_rev_parse(NULL, 0, &r), BR_EBADREV);
    cr_assert_eq(br_rev_parse("2-abcd", 4, &r), BR_OK); /* the length ends the text */
    cr_assert_str_eq(r.hash, "ab");
}

/* REV-02 */
Test(rev, rev02_format)
{
    struct br_rev r = {.gen = 3, .hash_len = 6, .hash = "abc123"};
    char buf[BR_REV_TEXT_MAX];
    cr_assert_eq(br_rev_format(&r, buf), 8);
    cr_assert_str_eq(buf, "3-abc123");
    struct br_rev m =
        rev_of("9007199254740991-ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    size_t n = br_rev_format(&m, buf);
    cr_assert_eq(n, 16 + 1 + 64);
    struct br_rev back;
    cr_assert_eq(br_rev_parse(buf, n, &back), BR_OK);
    cr_assert(br_rev_eq(&m, &back));
}

/* Local documents: "0-N". */
Test(rev, local_revision_parse_and_format)
{
    struct br_rev r;
    char buf[BR_REV_TEXT_MAX];
    cr_assert_eq(br_rev_parse_local("0-1", 3, &r), BR_OK);
    cr_assert_eq(r.gen, 0);
    cr_assert_str_eq(r.hash, "1");
    cr_assert_eq(br_rev_parse_local("0-9007199254740991", 18, &r), BR_OK);
    cr_assert_eq(br_rev_format(&r, buf), 18);
    cr_assert_str_eq(buf, "0-9007199254740991");
    static const char *const bad[] = {
        "0-0",  "0-01", "1-1", "0-", "0-a", "0-1a", "0-9007199254740992",
        "00-1", "0--1", "",    "0",  "0-+1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(br_rev_parse_local(bad[i], strlen(bad[i]), &r), BR_EBADREV, "'%s'", bad[i]);
    cr_assert_eq(br_rev_parse("0-1", 3, &r), BR_EBADREV); /* not a document revision */
}

/* REV-03 */
Test(rev, rev03_hash_deterministic)
{
    struct br_rev p = rev_of("1-abc"), a = make(&p, false, body_a1, sizeof body_a1),
                  b = make(&p, false, body_a1, sizeof body_a1);
    cr_assert(br_rev_eq(&a, &b));
    cr_assert_eq(a.gen, 2);
    struct br_rev c = make(NULL, false, body_a1, sizeof body_a1),
                  d = make(NULL, false, body_a1, sizeof body_a1);
    cr_assert(br_rev_eq(&c, &d));
    cr_assert_eq(c.gen, 1);
}

/* REV-03: known answers, computed independently (Python hashlib.blake2b, digest_size=16, over
 * the hand-written CBOR). They pin the exact hash input: array(4), parent text, deleted, the
 * body bytes as given, and digests sorted by encoded form ("zz" before "aaa": shorter first). */
Test(rev, rev03_hash_known_answers)
{
    struct br_rev r;
    /* 84 60 f4 a0 80 */
    cr_assert_eq(br_rev_make(NULL, false, empty_map, 1, NULL, 0, &r), BR_OK);
    cr_assert_str_eq(r.hash, "11f78dac88da54bb9213198b94568e25");
    cr_assert_eq(r.gen, 1);
    /* 84 65 "1-abc" f5 a1 61 61 01 82 62 "zz" 63 "aaa" */
    struct br_rev p = rev_of("1-abc");
    const char *const d1[] = {"aaa", "zz"}, *const d2[] = {"zz", "aaa"};
    cr_assert_eq(br_rev_make(&p, true, body_a1, sizeof body_a1, d1, 2, &r), BR_OK);
    cr_assert_str_eq(r.hash, "a6d5b6a8313439729eb16dbd96aea87d");
    cr_assert_eq(r.gen, 2);
    cr_assert_eq(br_rev_make(&p, true, body_a1, sizeof body_a1, d2, 2, &r), BR_OK);
    cr_assert_str_eq(r.hash, "a6d5b6a8313439729eb16dbd96aea87d");
}

/* REV-04 */
Test(rev, rev04_different_bodies_different_hashes)
{
    struct br_rev a = make(NULL, false, body_a1, sizeof body_a1),
                  b = make(NULL, false, body_a2, sizeof body_a2),
                  c = make(NULL, false, empty_map, sizeof empty_map);
    cr_assert_not(br_rev_eq(&a, &b));
    cr_assert_not(br_rev_eq(&a, &c));
    cr_assert_not(br_rev_eq(&b, &c));
}

/* REV-05 */
Test(rev, rev05_deleted_flag_changes_hash)
{
    struct br_rev p = rev_of("4-beef"), a = make(&p, false, empty_map, 1),
                  b = make(&p, true, empty_map, 1);
    cr_assert_not(br_rev_eq(&a, &b));
    cr_assert_eq(a.gen, 5);
    cr_assert_eq(b.gen, 5);
}

/* REV-03/04: the parent and the attachments are part of the hash too. */
Test(rev, rev04_parent_and_attachments_change_hash)
{
    struct br_rev p1 = rev_of("1-aa"), p2 = rev_of("1-ab"), a, b, c, d;
    const char *const one[] = {"md5-AAAA"}, *const two[] = {"md5-AAAA", "md5-BBBB"};
    cr_assert_eq(br_rev_make(&p1, false, body_a1, 4, NULL, 0, &a), BR_OK);
    cr_assert_eq(br_rev_make(&p2, false, body_a1, 4, NULL, 0, &b), BR_OK);
    cr_assert_eq(br_rev_make(&p1, false, body_a1, 4, one, 1, &c), BR_OK);
    cr_assert_eq(br_rev_make(&p1, false, body_a1, 4, two, 2, &d), BR_OK);
    cr_assert_not(br_rev_eq(&a, &b));
    cr_assert_not(br_rev_eq(&a, &c));
    cr_assert_not(br_rev_eq(&c, &d));
}

/* REV-06 */
Test(rev, rev06_hash_is_32_lowercase_hex)
{
    const uint8_t *bodies[] = {empty_map, body_a1, body_a2};
    const size_t lens[] = {1, 4, 4};
    for (int i = 0; i < 3; i++) {
        for (int del = 0; del < 2; del++) {
            struct br_rev r = make(NULL, del, bodies[i], lens[i]);
            cr_assert_eq(r.hash_len, 32);
            cr_assert_eq(strlen(r.hash), 32);
            cr_assert(all_lower_hex(r.hash, 32), "%s", r.hash);
            char buf[BR_REV_TEXT_MAX];
            size_t n = br_rev_format(&r, buf);
            struct br_rev back;
            cr_assert_eq(br_rev_parse(buf, n, &back), BR_OK);
            cr_assert(br_rev_eq(&r, &back));
        }
    }
}

Test(rev, make_rejects_bad_input)
{
    struct br_rev r = rev_of("1-a"), local, top = rev_of("9007199254740991-a");
    const uint8_t arr[] = {0x80};
    const char *const nul[] = {NULL};
    cr_assert_eq(br_rev_make(NULL, false, NULL, 0, NULL, 0, &r), BR_EINVAL);
    cr_assert_eq(br_rev_make(NULL, false, arr, 1, NULL, 0, &r), BR_EINVAL); /* not a map */
    cr_assert_eq(br_rev_make(NULL, false, empty_map, 1, NULL, 1, &r), BR_EINVAL);
    cr_assert_eq(br_rev_make(NULL, false, empty_map, 1, nul, 1, &r), BR_EINVAL);
    cr_assert_eq(br_rev_parse_local("0-5", 3, &local), BR_OK);
    cr_assert_eq(br_rev_make(&local, false, empty_map, 1, NULL, 0, &r), BR_EBADREV);
    cr_assert_eq(br_rev_make(&top, false, empty_map, 1, NULL, 0, &r), BR_EBADREV);
    cr_assert_eq(r.gen, 1); /* untouched */
    cr_assert_str_eq(r.hash, "a");
}

/* Allocation torture: every failure is BR_ENOMEM, and the result is the same once it works. */
Test(rev, make_allocation_torture)
{
    struct br_rev p = rev_of("7-0123456789abcdef"), want, got;
    const char *const atts[] = {"md5-x", "md5-yy", "md5-z"};
    cr_assert_eq(br_rev_make(&p, false, body_a1, 4, atts, 3, &want), BR_OK);
    for (long n = 0;; n++) {
        memset(&got, 0, sizeof got);
        br_alloc_fail_after(n);
        br_err e = br_rev_make(&p, false, body_a1, 4, atts, 3, &got);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert(br_rev_eq(&got, &want));
            break;
        }
        cr_assert_eq(e, BR_ENOMEM, "n=%ld", n);
        cr_assert_eq(got.gen, 0, "output written on failure");
        cr_assert_lt(n, 100);
    }
}

/* REV-07 */
Test(rev, rev07_compare)
{
    struct br_rev g2z = rev_of("2-fff"), g3a = rev_of("3-aaa"), x = rev_of("2-abc"),
                  y = rev_of("2-abd"), s = rev_of("2-ab"), x2 = rev_of("2-abc");
    cr_assert_eq(br_rev_cmp(&g3a, &g2z), 1); /* higher gen greater */
    cr_assert_eq(br_rev_cmp(&g2z, &g3a), -1);
    cr_assert_eq(br_rev_cmp(&y, &x), 1); /* same gen: greater hash string */
    cr_assert_eq(br_rev_cmp(&x, &y), -1);
    cr_assert_eq(br_rev_cmp(&x, &x2), 0); /* identical */
    cr_assert(br_rev_eq(&x, &x2));
    cr_assert_not(br_rev_eq(&x, &y));
    cr_assert_eq(br_rev_cmp(&s, &x), -1); /* prefix is smaller */
    cr_assert_eq(br_rev_cmp(&x, &s), 1);
    cr_assert_not(br_rev_eq(&s, &x));
    struct br_rev g10 = rev_of("10-a"), g9 = rev_of("9-f");
    cr_assert_eq(br_rev_cmp(&g10, &g9), 1); /* numeric, not textual, generation order */
}

/* _revisions {start, ids} <-> newest-first path (CouchDB), as the HTTP layer does it. */
static uint64_t revisions_encode(const struct br_rev *path, size_t n, const char **ids)
{
    for (size_t i = 0; i < n; i++)
        ids[i] = path[i].hash;
    return n ? path[0].gen : 0;
}

static br_err revisions_decode(uint64_t start, const char *const *ids, size_t n, struct br_rev *out)
{
    if (n > start)
        return BR_EBADREV;
    for (size_t i = 0; i < n; i++) {
        char text[BR_REV_TEXT_MAX];
        int k = snprintf(text, sizeof text, "%llu-%s", (unsigned long long)(start - i), ids[i]);
        if (k < 0 || (size_t)k >= sizeof text)
            return BR_EBADREV;
        br_err e = br_rev_parse(text, (size_t)k, &out[i]);
        if (e)
            return e;
    }
    return br_rev_path_check(out, n);
}

/* REV-08 */
Test(rev, rev08_revisions_encode)
{
    struct br_rev path[3] = {rev_of("3-ccc"), rev_of("2-bbb"), rev_of("1-aaa")};
    const char *ids[3];
    cr_assert_eq(br_rev_path_check(path, 3), BR_OK);
    cr_assert_eq(revisions_encode(path, 3, ids), 3);
    cr_assert_str_eq(ids[0], "ccc");
    cr_assert_str_eq(ids[1], "bbb");
    cr_assert_str_eq(ids[2], "aaa");
    cr_assert_eq(revisions_encode(NULL, 0, ids), 0); /* empty: {start: 0, ids: []} */
    cr_assert_eq(br_rev_path_check(NULL, 0), BR_OK);
}

/* REV-09 */
Test(rev, rev09_revisions_decode)
{
    const char *const ids[] = {"ccc", "bbb", "aaa"};
    struct br_rev out[3];
    cr_assert_eq(revisions_decode(3, ids, 3, out), BR_OK);
    struct br_rev want[3] = {rev_of("3-ccc"), rev_of("2-bbb"), rev_of("1-aaa")};
    for (int i = 0; i < 3; i++)
        cr_assert(br_rev_eq(&out[i], &want[i]));
    /* only _rev: a one-element path */
    struct br_rev one = rev_of("5-abc");
    cr_assert_eq(br_rev_path_check(&one, 1), BR_OK);
    /* nothing: an empty path */
    cr_assert_eq(revisions_decode(0, NULL, 0, out), BR_OK);
    /* start smaller than the number of ids, bad ids */
    cr_assert_eq(revisions_decode(2, ids, 3, out), BR_EBADREV);
    const char *const bad[] = {"ccc", "BBB"};
    cr_assert_eq(revisions_decode(3, bad, 2, out), BR_EBADREV);
}

/* REV-08/09: br_rev_path_check rejects inconsistent histories. */
Test(rev, rev09_path_check_rejects_inconsistent)
{
    struct br_rev gap[2] = {rev_of("3-c"), rev_of("1-a")};
    struct br_rev up[2] = {rev_of("1-a"), rev_of("2-b")};
    struct br_rev same[2] = {rev_of("2-a"), rev_of("2-b")};
    struct br_rev ok[2] = {rev_of("9-c"), rev_of("8-a")};
    cr_assert_eq(br_rev_path_check(gap, 2), BR_EBADREV);
    cr_assert_eq(br_rev_path_check(up, 2), BR_EBADREV);
    cr_assert_eq(br_rev_path_check(same, 2), BR_EBADREV);
    cr_assert_eq(br_rev_path_check(ok, 2), BR_OK); /* a pruned history need not reach 1 */
    struct br_rev local[1];
    cr_assert_eq(br_rev_parse_local("0-3", 3, &local[0]), BR_OK);
    cr_assert_eq(br_rev_path_check(local, 1), BR_EBADREV);
    struct br_rev junk = {.gen = 2, .hash_len = 3, .hash = "A_c"};
    cr_assert_eq(br_rev_path_check(&junk, 1), BR_EBADREV);
}

/* The digits of a revision are checked 8 at a time (rev.c rev_valid): every byte value at every
 * position of hashes of every length is judged as one digit at a time would judge it. */
Test(rev, path_check_judges_every_digit_of_every_length)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t len = 1; len <= BR_REV_HASH_MAX; len++) {
        struct br_rev r = {.gen = 1, .hash_len = (uint8_t)len};
        for (size_t i = 0; i < len; i++)
            r.hash[i] = digits[(i * 7) % 16];
        r.hash[len] = '\0';
        cr_assert_eq(br_rev_path_check(&r, 1), BR_OK, "len %zu", len);
        for (size_t pos = 0; pos < len; pos++) {
            char keep = r.hash[pos];
            for (int v = 0; v < 256; v++) {
                r.hash[pos] = (char)v;
                bool hex = all_lower_hex(r.hash + pos, 1);
                cr_assert_eq(br_rev_path_check(&r, 1), hex ? BR_OK : BR_EBADREV,
                             "len %zu pos %zu byte 0x%02x", len, pos, v);
            }
            r.hash[pos] = keep;
        }
    }
}

/* REV-11: a new document gets one gen-1 rev; an update of 1-abc gives the path [2-..., 1-abc]. */
Test(rev, rev11_new_doc_and_update_generations)
{
    struct br_rev first = make(NULL, false, body_a1, 4);
    cr_assert_eq(first.gen, 1);
    struct br_rev parent = rev_of("1-abc");
    struct br_rev path[2] = {make(&parent, false, body_a1, 4), parent};
    cr_assert_eq(path[0].gen, 2);
    cr_assert_eq(br_rev_path_check(path, 2), BR_OK);
}

struct xorshift {
    uint64_t s;
};

static void xs_random(void *ctx, void *buf, size_t n)
{
    struct xorshift *x = ctx;
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) {
        x->s ^= x->s << 13;
        x->s ^= x->s >> 7;
        x->s ^= x->s << 17;
        p[i] = (uint8_t)(x->s >> 24);
    }
}

/* REV-12 */
Test(rev, rev12_generated_docids_unique_32_hex)
{
    enum { N = 2000 };
    static char ids[N][33];
    const struct br_env *env = br_env_default();
    for (int i = 0; i < N; i++) {
        br_rev_gen_docid(env, ids[i]);
        cr_assert_eq(strlen(ids[i]), 32);
        cr_assert(all_lower_hex(ids[i], 32));
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(ids[i], ids[j]);
    }
}

/* REV-12: ids come from the environment's randomness (the simulator's seeded PRNG). */
Test(rev, rev12_docid_uses_env_random)
{
    struct xorshift x1 = {88172645463325252ull}, x2 = {88172645463325252ull};
    struct br_env e1 = {.ctx = &x1, .random = xs_random}, e2 = {.ctx = &x2, .random = xs_random};
    char a[33], b[33], c[33];
    br_rev_gen_docid(&e1, a);
    br_rev_gen_docid(&e2, b);
    br_rev_gen_docid(&e1, c);
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c);
}
