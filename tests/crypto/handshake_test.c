/* handshake_test.c — the link handshake between two in-process peers: success with and without
 * a mesh key, every failure reason, tampering at every offset of every message, and a second
 * implementation of the responder written from crypto/HANDSHAKE.md that pins the byte layout,
 * labels and key schedule. */
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <sodium.h>

#include "barrel/handshake.h"

struct peer {
    br_identity *id;
    br_meshkey *mesh;
    br_trust *trust;
    br_handshake *hs;
};

static void peer_init(struct peer *p, uint8_t seed_byte, const uint8_t *mesh)
{
    uint8_t seed[32];
    memset(seed, seed_byte, sizeof seed);
    memset(p, 0, sizeof *p);
    cr_assert_eq(br_identity_from_seed(seed, &p->id), BR_OK);
    if (mesh)
        cr_assert_eq(br_meshkey_from_bytes(mesh, &p->mesh), BR_OK);
    cr_assert_eq(br_trust_new(&p->trust), BR_OK);
}

static void peer_start(struct peer *p, bool initiator)
{
    struct br_handshake_opts o = {.identity = p->id, .mesh = p->mesh, .trust = p->trust};
    br_handshake_free(p->hs);
    p->hs = NULL;
    cr_assert_eq(br_handshake_new(&o, initiator, &p->hs), BR_OK);
}

static void peer_fini(struct peer *p)
{
    br_handshake_free(p->hs);
    br_trust_free(p->trust);
    br_meshkey_free(p->mesh);
    br_identity_free(p->id);
}

static void allow(struct peer *p, const struct peer *other)
{
    cr_assert_eq(br_trust_allow(p->trust, br_identity_node_id(other->id)), BR_OK);
}

/* Run the three messages; tamper (if msg_no != 0) flips `mask` at offset `off` of message
 * msg_no before delivery. Returns the first error (BR_OK when both finished). */
static br_err run(struct peer *i, struct peer *r, int msg_no, size_t off, uint8_t mask)
{
    br_buf m1, m2, m3;
    br_buf_init(&m1, 4096);
    br_buf_init(&m2, 4096);
    br_buf_init(&m3, 4096);
    peer_start(i, true);
    peer_start(r, false);
    br_err e = br_handshake_start(i->hs, &m1);
    cr_assert_eq(e, BR_OK);
    cr_assert_eq(m1.len, BR_HS_MSG1_BYTES);
    if (msg_no == 1)
        m1.data[off] ^= mask;
    e = br_handshake_recv(r->hs, m1.data, m1.len, &m2);
    if (!e) {
        cr_assert_eq(m2.len, BR_HS_MSG2_BYTES);
        if (msg_no == 2)
            m2.data[off] ^= mask;
        e = br_handshake_recv(i->hs, m2.data, m2.len, &m3);
    }
    if (!e) {
        cr_assert_eq(m3.len, BR_HS_MSG3_BYTES);
        cr_assert(br_handshake_done(i->hs));
        if (msg_no == 3)
            m3.data[off] ^= mask;
        br_buf scratch;
        br_buf_init(&scratch, 16);
        e = br_handshake_recv(r->hs, m3.data, m3.len, &scratch);
        cr_assert_eq(scratch.len, 0);
        br_buf_fini(&scratch);
    }
    if (!e)
        cr_assert(br_handshake_done(r->hs));
    br_buf_fini(&m1);
    br_buf_fini(&m2);
    br_buf_fini(&m3);
    return e;
}

/* Both links talk in both directions. */
static void check_link(struct peer *i, struct peer *r)
{
    br_frame *fi = NULL, *fr = NULL;
    cr_assert_eq(br_handshake_link(i->hs, NULL, &fi), BR_OK);
    cr_assert_eq(br_handshake_link(r->hs, NULL, &fr), BR_OK);
    cr_assert_eq(br_handshake_link(r->hs, NULL, &fr), BR_EINVAL); /* once */
    br_buf w, p;
    br_buf_init(&w, 0);
    br_buf_init(&p, 0);
    for (int k = 0; k < 3; k++) {
        br_buf_reset(&w);
        br_buf_reset(&p);
        cr_assert_eq(br_frame_seal(fi, (const uint8_t *)"ping", 4, &w), BR_OK);
        cr_assert_eq(br_frame_open(fr, w.data, w.len, &p, NULL), BR_OK);
        cr_assert(p.len == 4 && memcmp(p.data, "ping", 4) == 0);
        br_buf_reset(&w);
        br_buf_reset(&p);
        cr_assert_eq(br_frame_seal(fr, (const uint8_t *)"pong!", 5, &w), BR_OK);
        cr_assert_eq(br_frame_open(fi, w.data, w.len, &p, NULL), BR_OK);
        cr_assert(p.len == 5 && memcmp(p.data, "pong!", 5) == 0);
    }
    br_buf_fini(&w);
    br_buf_fini(&p);
    br_frame_free(fi);
    br_frame_free(fr);
}

static const uint8_t MESH_A[32] = {0xa1, 0xa2, 0xa3};
static const uint8_t MESH_B[32] = {0xb1, 0xb2, 0xb3};

Test(handshake, completes_without_mesh_when_allow_listed)
{
    struct peer i, r;
    peer_init(&i, 1, NULL);
    peer_init(&r, 2, NULL);
    allow(&i, &r);
    allow(&r, &i);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_OK);
    cr_assert(br_nodeid_equal(br_handshake_peer_id(i.hs), br_identity_node_id(r.id)));
    cr_assert(br_nodeid_equal(br_handshake_peer_id(r.hs), br_identity_node_id(i.id)));
    cr_assert(memcmp(br_handshake_peer_public_key(i.hs), br_identity_public_key(r.id), 32) == 0);
    cr_assert_eq(br_handshake_reason(i.hs), BR_HS_OK);
    check_link(&i, &r);
    peer_fini(&i);
    peer_fini(&r);
}

Test(handshake, completes_with_mesh_key_and_empty_policy)
{
    struct peer i, r;
    peer_init(&i, 1, MESH_A);
    peer_init(&r, 2, MESH_A);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_OK);
    check_link(&i, &r);
    peer_fini(&i);
    peer_fini(&r);
}

Test(handshake, mismatched_mesh_key_fails_at_hello)
{
    struct peer i, r;
    peer_init(&i, 1, MESH_A);
    peer_init(&r, 2, MESH_B);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_MESH_MISMATCH);
    cr_assert_null(br_handshake_peer_id(r.hs));
    cr_assert_str_eq(br_hs_reason_name(br_handshake_reason(r.hs)), "mesh_mismatch");
    peer_fini(&i);
    peer_fini(&r);
}

Test(handshake, mesh_key_on_one_side_only_fails)
{
    struct peer i, r;
    peer_init(&i, 1, MESH_A);
    peer_init(&r, 2, NULL);
    allow(&r, &i);
    allow(&i, &r);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_MESH_FLAG_MISMATCH);
    peer_fini(&i);
    peer_fini(&r);
    peer_init(&i, 1, NULL);
    peer_init(&r, 2, MESH_A);
    allow(&r, &i);
    allow(&i, &r);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_MESH_FLAG_MISMATCH);
    peer_fini(&i);
    peer_fini(&r);
}

Test(handshake, denied_id_fails_on_either_side_even_in_mesh)
{
    struct peer i, r;
    peer_init(&i, 1, MESH_A);
    peer_init(&r, 2, MESH_A);
    cr_assert_eq(br_trust_deny(r.trust, br_identity_node_id(i.id)), BR_OK);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_PEER_DENIED);
    cr_assert(br_handshake_done(i.hs)); /* the initiator only learns when the link closes */
    peer_fini(&i);
    peer_fini(&r);

    peer_init(&i, 1, MESH_A);
    peer_init(&r, 2, MESH_A);
    allow(&i, &r);
    cr_assert_eq(br_trust_deny(i.trust, br_identity_node_id(r.id)), BR_OK); /* deny wins */
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(i.hs), BR_HS_PEER_DENIED);
    cr_assert_null(br_handshake_peer_id(i.hs));
    peer_fini(&i);
    peer_fini(&r);
}

Test(handshake, without_mesh_only_allow_listed_ids_are_accepted)
{
    struct peer i, r, x;
    peer_init(&i, 1, NULL);
    peer_init(&r, 2, NULL);
    peer_init(&x, 3, NULL);
    allow(&r, &x); /* r knows only x */
    allow(&i, &r);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_PEER_UNKNOWN);
    allow(&x, &r);
    cr_assert_eq(run(&x, &r, 0, 0, 0), BR_OK);
    /* the initiator applies the policy too */
    struct peer j;
    peer_init(&j, 4, NULL);
    allow(&r, &j); /* r accepts j, j knows nobody */
    cr_assert_eq(run(&j, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(j.hs), BR_HS_PEER_UNKNOWN);
    /* with a mesh and a non-empty allow list, other members are refused */
    peer_fini(&i);
    peer_fini(&r);
    peer_init(&i, 1, MESH_A);
    peer_init(&r, 2, MESH_A);
    allow(&r, &x);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_PEER_UNKNOWN);
    peer_fini(&i);
    peer_fini(&r);
    peer_fini(&x);
    peer_fini(&j);
}

Test(handshake, connecting_to_ourselves_is_refused)
{
    struct peer i, r;
    peer_init(&i, 5, MESH_A);
    peer_init(&r, 5, MESH_A); /* same identity */
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(i.hs), BR_HS_SELF_ID);
    peer_fini(&i);
    peer_fini(&r);
}

static void tamper_all(const uint8_t *mesh)
{
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    static const size_t sizes[] = {BR_HS_MSG1_BYTES, BR_HS_MSG2_BYTES, BR_HS_MSG3_BYTES};
    struct peer i, r;
    peer_init(&i, 1, mesh);
    peer_init(&r, 2, mesh);
    allow(&i, &r);
    allow(&r, &i);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_OK);
    for (int m = 1; m <= 3; m++) {
        for (size_t off = 0; off < sizes[m - 1]; off++) {
            for (size_t k = 0; k < sizeof masks; k++) {
                br_err e = run(&i, &r, m, off, masks[k]);
                cr_assert_neq(e, BR_OK, "message %d offset %zu mask %02x accepted", m, off,
                              masks[k]);
                br_handshake *failed = m == 2 ? i.hs : r.hs;
                cr_assert_neq(br_handshake_reason(failed), BR_HS_OK);
                cr_assert_null(br_handshake_peer_id(failed));
                cr_assert_not(br_handshake_done(failed));
            }
        }
    }
    peer_fini(&i);
    peer_fini(&r);
}

Test(handshake, tampering_any_byte_of_any_message_fails_without_mesh)
{
    tamper_all(NULL);
}

Test(handshake, tampering_any_byte_of_any_message_fails_with_mesh)
{
    tamper_all(MESH_A);
}

Test(handshake, malformed_and_out_of_order_messages_have_distinct_reasons)
{
    struct peer i, r;
    peer_init(&i, 1, MESH_A);
    peer_init(&r, 2, MESH_A);
    br_buf m1, out;
    br_buf_init(&m1, 4096);
    br_buf_init(&out, 4096);
    peer_start(&i, true);
    cr_assert_eq(br_handshake_start(i.hs, &m1), BR_OK);
    cr_assert_eq(br_handshake_start(i.hs, &m1), BR_EINVAL); /* twice */

    struct {
        size_t len;
        uint8_t b0, b1, b2, b3;
        enum br_hs_reason want;
    } cases[] = {
        {BR_HS_MSG1_BYTES - 1, 1, 1, 1, 0, BR_HS_BAD_SIZE},
        {BR_HS_MSG1_BYTES, 2, 1, 1, 0, BR_HS_BAD_VERSION},
        {BR_HS_MSG1_BYTES, 1, 9, 1, 0, BR_HS_BAD_HEADER},
        {BR_HS_MSG1_BYTES, 1, 1, 3, 0, BR_HS_BAD_HEADER},
        {BR_HS_MSG1_BYTES, 1, 1, 1, 1, BR_HS_BAD_HEADER},
        {BR_HS_MSG3_BYTES, 1, 3, 1, 0, BR_HS_OUT_OF_ORDER},
        {BR_HS_MSG2_BYTES, 1, 2, 1, 0, BR_HS_OUT_OF_ORDER},
        {BR_HS_MSG1_BYTES, 1, 1, 0, 0, BR_HS_MESH_FLAG_MISMATCH},
        {3, 1, 1, 1, 0, BR_HS_BAD_SIZE},
        {0, 0, 0, 0, 0, BR_HS_BAD_SIZE},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t msg[BR_HS_MAX_BYTES + 1];
        memcpy(msg, m1.data, BR_HS_MSG1_BYTES);
        memset(msg + BR_HS_MSG1_BYTES, 0, sizeof msg - BR_HS_MSG1_BYTES);
        msg[0] = cases[c].b0;
        msg[1] = cases[c].b1;
        msg[2] = cases[c].b2;
        msg[3] = cases[c].b3;
        peer_start(&r, false);
        br_err e = br_handshake_recv(r.hs, msg, cases[c].len, &out);
        cr_assert_eq(br_handshake_reason(r.hs), cases[c].want, "case %zu: %s", c,
                     br_hs_reason_name(br_handshake_reason(r.hs)));
        cr_assert_eq(e, cases[c].want == BR_HS_MESH_FLAG_MISMATCH ? BR_ECRYPTO : BR_EPROTO);
        cr_assert_eq(out.len, 0);
        /* sticky: the good message is refused now, and the reason stays */
        cr_assert_eq(br_handshake_recv(r.hs, m1.data, m1.len, &out), BR_ECLOSED);
        cr_assert_eq(br_handshake_reason(r.hs), cases[c].want);
    }

    /* a HELLO sent to an initiator, a duplicate HELLO to a responder, and anything after done */
    cr_assert_eq(br_handshake_recv(i.hs, m1.data, m1.len, &out), BR_EPROTO);
    cr_assert_eq(br_handshake_reason(i.hs), BR_HS_OUT_OF_ORDER);
    peer_start(&r, false);
    cr_assert_eq(br_handshake_recv(r.hs, m1.data, m1.len, &out), BR_OK);
    cr_assert_eq(br_handshake_recv(r.hs, m1.data, m1.len, &out), BR_EPROTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_OUT_OF_ORDER);
    peer_start(&i, true); /* a responder's message before the initiator said hello */
    cr_assert_eq(br_handshake_recv(i.hs, out.data, BR_HS_MSG2_BYTES, &out), BR_EPROTO);
    cr_assert_eq(br_handshake_reason(i.hs), BR_HS_OUT_OF_ORDER);
    cr_assert_eq(run(&i, &r, 0, 0, 0), BR_OK);
    cr_assert_eq(br_handshake_recv(r.hs, m1.data, m1.len, &out), BR_ECLOSED);
    br_frame *f = NULL;
    peer_start(&i, true);
    cr_assert_eq(br_handshake_link(i.hs, NULL, &f), BR_EINVAL); /* not done */
    br_buf_fini(&m1);
    br_buf_fini(&out);
    peer_fini(&i);
    peer_fini(&r);
}

Test(handshake, reason_names_are_distinct)
{
    for (int a = 0; a < BR_HS_REASON_COUNT; a++) {
        cr_assert_str_neq(br_hs_reason_name((enum br_hs_reason)a), "unknown");
        for (int b = a + 1; b < BR_HS_REASON_COUNT; b++)
            cr_assert_str_neq(br_hs_reason_name((enum br_hs_reason)a),
                              br_hs_reason_name((enum br_hs_reason)b));
    }
    cr_assert_str_eq(br_hs_reason_name(BR_HS_REASON_COUNT), "unknown");
}

/* A deterministic environment: the simulator's kind. */
static void counter_random(void *ctx, void *buf, size_t n)
{
    uint8_t *c = ctx;
    memset(buf, *c, n);
    (*c)++;
}

Test(handshake, ephemeral_key_comes_from_env_random)
{
    struct peer i;
    peer_init(&i, 1, NULL);
    uint8_t ctr1 = 9, ctr2 = 9;
    struct br_env e1 = {.ctx = &ctr1, .random = counter_random};
    struct br_env e2 = {.ctx = &ctr2, .random = counter_random};
    br_handshake *a = NULL, *b = NULL;
    struct br_handshake_opts o1 = {.identity = i.id, .env = &e1};
    struct br_handshake_opts o2 = {.identity = i.id, .env = &e2};
    cr_assert_eq(br_handshake_new(&o1, true, &a), BR_OK);
    cr_assert_eq(br_handshake_new(&o2, true, &b), BR_OK);
    br_buf ma, mb;
    br_buf_init(&ma, 0);
    br_buf_init(&mb, 0);
    cr_assert_eq(br_handshake_start(a, &ma), BR_OK);
    cr_assert_eq(br_handshake_start(b, &mb), BR_OK);
    cr_assert(ma.len == mb.len && memcmp(ma.data, mb.data, ma.len) == 0);
    uint8_t sk[32], pk[32];
    memset(sk, 9, 32);
    crypto_scalarmult_base(pk, sk);
    cr_assert(memcmp(ma.data + 4, pk, 32) == 0);
    br_buf_fini(&ma);
    br_buf_fini(&mb);
    br_handshake_free(a);
    br_handshake_free(b);
    struct br_handshake_opts none = {0};
    cr_assert_eq(br_handshake_new(&none, true, &a), BR_EINVAL);
    peer_fini(&i);
}

/* ---- A second responder, written from HANDSHAKE.md with libsodium only. ---- */

struct spec_responder {
    uint8_t seed[32], pk[32], sk[64];
    uint8_t mk[32];
    uint8_t e_pk[32], e_sk[32];
    uint8_t hk[64];
    crypto_generichash_state th;
    uint8_t msg2[BR_HS_MSG2_BYTES];
};

enum spec_fault { SPEC_OK, SPEC_BAD_SIG, SPEC_WRONG_LABEL, SPEC_REFLECT, SPEC_OWN_ID };

static void th_snapshot(const crypto_generichash_state *t, const uint8_t *x, size_t n,
                        uint8_t out[32])
{
    crypto_generichash_state s = *t;
    crypto_generichash_update(&s, x, n);
    crypto_generichash_final(&s, out, 32);
}

/* Answer msg1 as HANDSHAKE.md says (optionally breaking one rule). */
static void spec_respond(struct spec_responder *s, const uint8_t *m1, enum spec_fault fault,
                         const uint8_t *flags)
{
    cr_assert_eq(m1[0], 1);
    cr_assert_eq(m1[1], 1);
    uint8_t tag[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, s->mk, 32, 32);
    crypto_generichash_update(&st, (const uint8_t *)"barrel-link/1 hello", 19);
    crypto_generichash_update(&st, m1, 36);
    crypto_generichash_final(&st, tag, 32);
    cr_assert(memcmp(tag, m1 + 36, 32) == 0, "HELLO tag layout");

    randombytes_buf(s->e_sk, 32);
    crypto_scalarmult_base(s->e_pk, s->e_sk);
    if (fault == SPEC_REFLECT)
        memcpy(s->e_pk, m1 + 4, 32);
    uint8_t ss[32];
    cr_assert_eq(crypto_scalarmult(ss, s->e_sk, m1 + 4), 0);

    crypto_generichash_init(&s->th, NULL, 0, 32);
    crypto_generichash_update(&s->th, (const uint8_t *)"barrel-link\x01", 12);
    crypto_generichash_update(&s->th, m1, BR_HS_MSG1_BYTES);
    uint8_t *r = s->msg2;
    r[0] = 1;
    r[1] = 2;
    r[2] = *flags;
    r[3] = 0;
    memcpy(r + 4, s->e_pk, 32);
    crypto_generichash_update(&s->th, r, 36);
    uint8_t th1[32];
    th_snapshot(&s->th, NULL, 0, th1);
    crypto_generichash_init(&st, s->mk, 32, 64);
    crypto_generichash_update(&st, (const uint8_t *)"barrel-link/1 handshake keys", 28);
    crypto_generichash_update(&st, ss, 32);
    crypto_generichash_update(&st, th1, 32);
    crypto_generichash_final(&st, s->hk, 64);

    uint8_t pt[96], sm[23 + 32], th2[32];
    const uint8_t *claimed = s->pk;
    memcpy(pt, claimed, 32);
    th_snapshot(&s->th, claimed, 32, th2);
    memcpy(sm, fault == SPEC_WRONG_LABEL ? "barrel-link/1 initiator" : "barrel-link/1 responder",
           23);
    memcpy(sm + 23, th2, 32);
    crypto_sign_detached(pt + 32, NULL, sm, sizeof sm, s->sk);
    if (fault == SPEC_BAD_SIG)
        pt[40] ^= 1;
    static const uint8_t nonce[12];
    crypto_aead_chacha20poly1305_ietf_encrypt(r + 36, NULL, pt, 96, r, 36, NULL, nonce, s->hk);
    crypto_generichash_update(&s->th, r + 36, 112);
}

/* Check msg3 as HANDSHAKE.md says and derive the session keys. */
static void spec_finish(struct spec_responder *s, const uint8_t *m3, const uint8_t ipk[32],
                        uint8_t i2r[32], uint8_t r2i[32])
{
    cr_assert_eq(m3[0], 1);
    cr_assert_eq(m3[1], 3);
    cr_assert_eq(m3[3], 0);
    crypto_generichash_update(&s->th, m3, 4);
    uint8_t pt[96];
    static const uint8_t nonce[12];
    cr_assert_eq(crypto_aead_chacha20poly1305_ietf_decrypt(pt, NULL, NULL, m3 + 4, 112, m3, 4,
                                                           nonce, s->hk + 32),
                 0, "msg3 under hk[32..64)");
    cr_assert(memcmp(pt, ipk, 32) == 0);
    uint8_t sm[23 + 32];
    memcpy(sm, "barrel-link/1 initiator", 23);
    th_snapshot(&s->th, pt, 32, sm + 23);
    cr_assert_eq(crypto_sign_verify_detached(pt + 32, sm, sizeof sm, ipk), 0);
    crypto_generichash_update(&s->th, m3 + 4, 112);
    uint8_t th4[32], sess[64];
    crypto_generichash_final(&s->th, th4, 32);
    crypto_generichash_state st;
    crypto_generichash_init(&st, s->hk, 64, 64);
    crypto_generichash_update(&st, (const uint8_t *)"barrel-link/1 session keys", 26);
    crypto_generichash_update(&st, th4, 32);
    crypto_generichash_final(&st, sess, 64);
    memcpy(i2r, sess, 32);
    memcpy(r2i, sess + 32, 32);
}

static void spec_init(struct spec_responder *s, uint8_t seed_byte, const uint8_t *mesh)
{
    memset(s, 0, sizeof *s);
    memset(s->seed, seed_byte, 32);
    crypto_sign_seed_keypair(s->pk, s->sk, s->seed);
    if (mesh)
        memcpy(s->mk, mesh, 32);
}

static void spec_interop(const uint8_t *mesh)
{
    struct peer i;
    peer_init(&i, 1, mesh);
    struct spec_responder s;
    spec_init(&s, 2, mesh);
    struct br_node_id rid;
    br_nodeid_from_public_key(s.pk, &rid);
    cr_assert_eq(br_trust_allow(i.trust, &rid), BR_OK);
    peer_start(&i, true);
    br_buf m1, m3;
    br_buf_init(&m1, 0);
    br_buf_init(&m3, 0);
    cr_assert_eq(br_handshake_start(i.hs, &m1), BR_OK);
    uint8_t flags = mesh ? 1 : 0;
    cr_assert_eq(m1.data[2], flags);
    cr_assert_eq(m1.data[3], 0);
    spec_respond(&s, m1.data, SPEC_OK, &flags);
    cr_assert_eq(br_handshake_recv(i.hs, s.msg2, sizeof s.msg2, &m3), BR_OK);
    cr_assert_eq(m3.len, BR_HS_MSG3_BYTES);
    uint8_t i2r[32], r2i[32];
    spec_finish(&s, m3.data, br_identity_public_key(i.id), i2r, r2i);

    /* frames: the first carries the 24-byte secretstream header, then ciphertext + 17 */
    br_frame *fi = NULL;
    cr_assert_eq(br_handshake_link(i.hs, NULL, &fi), BR_OK);
    br_buf w;
    br_buf_init(&w, 0);
    cr_assert_eq(br_frame_seal(fi, (const uint8_t *)"hello", 5, &w), BR_OK);
    cr_assert_eq(w.len, 24 + 5 + 17);
    crypto_secretstream_xchacha20poly1305_state st;
    cr_assert_eq(crypto_secretstream_xchacha20poly1305_init_pull(&st, w.data, i2r), 0);
    uint8_t out[5], tag;
    cr_assert_eq(
        crypto_secretstream_xchacha20poly1305_pull(&st, out, NULL, &tag, w.data + 24, 22, NULL, 0),
        0);
    cr_assert(memcmp(out, "hello", 5) == 0);
    cr_assert_eq(tag, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    /* and the other direction with r2i */
    uint8_t hdr[24], ct[3 + 17];
    crypto_secretstream_xchacha20poly1305_init_push(&st, hdr, r2i);
    crypto_secretstream_xchacha20poly1305_push(&st, ct, NULL, (const uint8_t *)"abc", 3, NULL, 0,
                                               0);
    uint8_t first[24 + 20];
    memcpy(first, hdr, 24);
    memcpy(first + 24, ct, 20);
    br_buf p;
    br_buf_init(&p, 0);
    cr_assert_eq(br_frame_open(fi, first, sizeof first, &p, NULL), BR_OK);
    cr_assert(p.len == 3 && memcmp(p.data, "abc", 3) == 0);
    br_buf_fini(&p);
    br_buf_fini(&w);
    br_frame_free(fi);
    br_buf_fini(&m1);
    br_buf_fini(&m3);
    peer_fini(&i);
}

Test(handshake_spec, layout_labels_and_key_schedule_match_the_document)
{
    cr_assert_eq(BR_HS_MSG1_BYTES, 68);
    cr_assert_eq(BR_HS_MSG2_BYTES, 148);
    cr_assert_eq(BR_HS_MSG3_BYTES, 116);
    spec_interop(NULL);
    spec_interop(MESH_A);
}

static enum br_hs_reason spec_fault_reason(enum spec_fault fault)
{
    struct peer i;
    peer_init(&i, 1, MESH_A);
    struct spec_responder s;
    spec_init(&s, fault == SPEC_OWN_ID ? 1 : 2, MESH_A);
    peer_start(&i, true);
    br_buf m1, m3;
    br_buf_init(&m1, 0);
    br_buf_init(&m3, 0);
    cr_assert_eq(br_handshake_start(i.hs, &m1), BR_OK);
    uint8_t flags = 1;
    spec_respond(&s, m1.data, fault, &flags);
    cr_assert_neq(br_handshake_recv(i.hs, s.msg2, sizeof s.msg2, &m3), BR_OK);
    cr_assert_eq(m3.len, 0);
    enum br_hs_reason r = br_handshake_reason(i.hs);
    br_buf_fini(&m1);
    br_buf_fini(&m3);
    peer_fini(&i);
    return r;
}

Test(handshake_spec, bad_signature_wrong_role_label_reflection_and_own_id_are_refused)
{
    cr_assert_eq(spec_fault_reason(SPEC_BAD_SIG), BR_HS_BAD_SIGNATURE);
    cr_assert_eq(spec_fault_reason(SPEC_WRONG_LABEL), BR_HS_BAD_SIGNATURE);
    cr_assert_eq(spec_fault_reason(SPEC_REFLECT), BR_HS_REFLECTED_EPHEMERAL);
    cr_assert_eq(spec_fault_reason(SPEC_OWN_ID), BR_HS_SELF_ID);
}

Test(handshake_spec, low_order_ephemeral_key_is_refused)
{
    /* A HELLO with a correct tag whose ephemeral key is the identity point (0): X25519 gives
     * all zeros, which libsodium refuses. */
    struct peer r;
    peer_init(&r, 2, MESH_A);
    peer_start(&r, false);
    uint8_t m1[BR_HS_MSG1_BYTES] = {1, 1, 1, 0};
    crypto_generichash_state st;
    crypto_generichash_init(&st, MESH_A, 32, 32);
    crypto_generichash_update(&st, (const uint8_t *)"barrel-link/1 hello", 19);
    crypto_generichash_update(&st, m1, 36);
    crypto_generichash_final(&st, m1 + 36, 32);
    br_buf out;
    br_buf_init(&out, 0);
    cr_assert_eq(br_handshake_recv(r.hs, m1, sizeof m1, &out), BR_ECRYPTO);
    cr_assert_eq(br_handshake_reason(r.hs), BR_HS_WEAK_KEY);
    br_buf_fini(&out);
    peer_fini(&r);
}
