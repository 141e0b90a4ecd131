/* fuzz_handshake.c — libFuzzer harness for the link handshake's message decoder.
 *
 * Input: byte 0 picks the slot (bits 0-1: 0 = HELLO to a responder, 1 = RESPONSE to an
 * initiator that said hello, 2 = FINISH to a responder that answered a genuine HELLO) and the
 * mesh (bit 2: both sides hold a fixed mesh key); the rest is the message. Identities and the
 * ephemeral randomness are fixed, so the genuine messages are the same on every run and the
 * seed corpus holds them. Properties: a rejected message leaves a reason, no reply and a dead
 * handshake (BR_ECLOSED afterwards); an accepted RESPONSE or FINISH is byte for byte the
 * genuine one (nothing else can pass); an accepted HELLO gets a reply of the RESPONSE size.
 * Any broken property aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/handshake.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static void fixed_random(void *ctx, void *buf, size_t n)
{
    uint8_t *c = ctx;
    memset(buf, *c, n);
    (*c)++;
}

struct side {
    br_identity *id;
    br_meshkey *mesh;
    br_trust *trust;
    uint8_t ctr;
    struct br_env env;
    br_handshake *hs;
};

static void side_init(struct side *s, uint8_t seed_byte, int mesh, const struct br_node_id *peer)
{
    uint8_t seed[32], mk[32];
    memset(seed, seed_byte, sizeof seed);
    memset(mk, 0x5a, sizeof mk);
    memset(s, 0, sizeof *s);
    check(br_identity_from_seed(seed, &s->id) == BR_OK);
    if (mesh)
        check(br_meshkey_from_bytes(mk, &s->mesh) == BR_OK);
    check(br_trust_new(&s->trust) == BR_OK);
    if (peer)
        check(br_trust_allow(s->trust, peer) == BR_OK);
    s->ctr = seed_byte;
    s->env = (struct br_env){.ctx = &s->ctr, .random = fixed_random};
}

static void side_start(struct side *s, bool initiator)
{
    struct br_handshake_opts o = {
        .identity = s->id, .mesh = s->mesh, .trust = s->trust, .env = &s->env};
    check(br_handshake_new(&o, initiator, &s->hs) == BR_OK);
}

static void side_fini(struct side *s)
{
    br_handshake_free(s->hs);
    br_trust_free(s->trust);
    br_meshkey_free(s->mesh);
    br_identity_free(s->id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int slot = data[0] & 3, mesh = (data[0] >> 2) & 1;
    if (slot == 3)
        return 0;
    const uint8_t *msg = data + 1;
    size_t len = size - 1;

    uint8_t s1[32], s2[32];
    memset(s1, 1, sizeof s1);
    memset(s2, 2, sizeof s2);
    br_identity *tmp1, *tmp2;
    check(br_identity_from_seed(s1, &tmp1) == BR_OK);
    check(br_identity_from_seed(s2, &tmp2) == BR_OK);
    struct side i, r;
    side_init(&i, 1, mesh, br_identity_node_id(tmp2));
    side_init(&r, 2, mesh, br_identity_node_id(tmp1));
    br_identity_free(tmp1);
    br_identity_free(tmp2);

    /* the genuine exchange */
    br_buf m1, m2, m3, out;
    br_buf_init(&m1, 1024);
    br_buf_init(&m2, 1024);
    br_buf_init(&m3, 1024);
    br_buf_init(&out, 1024);
    side_start(&i, true);
    side_start(&r, false);
    check(br_handshake_start(i.hs, &m1) == BR_OK);
    check(br_handshake_recv(r.hs, m1.data, m1.len, &m2) == BR_OK);
    check(br_handshake_recv(i.hs, m2.data, m2.len, &m3) == BR_OK);
    br_handshake_free(i.hs);
    br_handshake_free(r.hs);
    i.ctr = 1;
    r.ctr = 2;

    /* the same again, with the fuzz input in the chosen slot */
    br_handshake *target;
    const br_buf *genuine;
    side_start(&i, true);
    side_start(&r, false);
    if (slot == 0) {
        target = r.hs;
        genuine = &m1;
    } else if (slot == 1) {
        check(br_handshake_start(i.hs, &out) == BR_OK);
        br_buf_reset(&out);
        target = i.hs;
        genuine = &m2;
    } else {
        check(br_handshake_recv(r.hs, m1.data, m1.len, &out) == BR_OK);
        br_buf_reset(&out);
        target = r.hs;
        genuine = &m3;
    }
    br_err e = br_handshake_recv(target, msg, len, &out);
    if (e == BR_OK) {
        check(br_handshake_reason(target) == BR_HS_OK);
        if (slot == 0) {
            check(out.len == BR_HS_MSG2_BYTES);
        } else {
            check(len == genuine->len && memcmp(msg, genuine->data, len) == 0);
            check(br_handshake_done(target));
            check(br_handshake_peer_id(target) != NULL);
            br_frame *f = NULL;
            check(br_handshake_link(target, NULL, &f) == BR_OK);
            br_frame_free(f);
        }
    } else {
        check(e == BR_EPROTO || e == BR_ECRYPTO);
        check(br_handshake_reason(target) != BR_HS_OK);
        check(out.len == 0);
        check(br_handshake_peer_id(target) == NULL);
        check(br_handshake_recv(target, genuine->data, genuine->len, &out) == BR_ECLOSED);
    }
    br_buf_fini(&m1);
    br_buf_fini(&m2);
    br_buf_fini(&m3);
    br_buf_fini(&out);
    side_fini(&i);
    side_fini(&r);
    return 0;
}
