/* handshake.c — the three-message link handshake (crypto/HANDSHAKE.md) as a state machine.
 *
 * SIGMA-style: ephemeral X25519 on both sides; a running BLAKE2b-256 transcript hash over the
 * protocol label, the version and every message byte so far; handshake keys from the DH
 * secret and the transcript, keyed with the mesh key (32 zero bytes when there is none);
 * identities and transcript signatures travel encrypted under those keys; the session keys
 * cover the whole transcript. Every secret lives in the sodium_malloc'd struct and is wiped
 * when the handshake fails, finishes handing its keys over, or is freed. */
#include "barrel/handshake.h"

#include <string.h>

#include <sodium.h>

#include "crypto_int.h"

#define HDR 4
#define KEY 32
#define SIG 64
#define AEAD_TAG crypto_aead_chacha20poly1305_ietf_ABYTES
#define IDBLOB (KEY + SIG)

#define FLAG_MESH 0x01

enum msg_type { MSG_HELLO = 1, MSG_RESPONSE = 2, MSG_FINISH = 3 };

_Static_assert(BR_HS_MSG1_BYTES == HDR + KEY + KEY, "msg1 layout");
_Static_assert(BR_HS_MSG2_BYTES == HDR + KEY + IDBLOB + AEAD_TAG, "msg2 layout");
_Static_assert(BR_HS_MSG3_BYTES == HDR + IDBLOB + AEAD_TAG, "msg3 layout");

static const char proto_label[] = "barrel-link";
static const char hello_label[] = "barrel-link/1 hello";
static const char keys_label[] = "barrel-link/1 handshake keys";
static const char session_label[] = "barrel-link/1 session keys";
static const char sig_r_label[] = "barrel-link/1 responder";
static const char sig_i_label[] = "barrel-link/1 initiator";

enum state { ST_START, ST_WAIT1, ST_WAIT2, ST_WAIT3, ST_DONE, ST_TAKEN, ST_FAILED };

struct br_handshake {
    crypto_generichash_state th; /* transcript so far (first: 64-byte aligned) */
    uint8_t e_pk[KEY], e_sk[KEY];
    uint8_t mk[KEY];
    uint8_t hk[64];      /* handshake keys: [0,32) responder->initiator, [32,64) the other way */
    uint8_t session[64]; /* [0,32) initiator->responder, [32,64) responder->initiator */
    uint8_t peer_pk[KEY];
    struct br_node_id peer_id;
    const br_identity *id;
    const br_trust *trust;
    bool initiator, has_mesh, peer_known;
    enum state st;
    enum br_hs_reason reason;
};

static const char *const reason_names[BR_HS_REASON_COUNT] = {
    [BR_HS_OK] = "ok",
    [BR_HS_BAD_SIZE] = "bad_size",
    [BR_HS_BAD_VERSION] = "bad_version",
    [BR_HS_BAD_HEADER] = "bad_header",
    [BR_HS_OUT_OF_ORDER] = "out_of_order",
    [BR_HS_MESH_FLAG_MISMATCH] = "mesh_flag_mismatch",
    [BR_HS_MESH_MISMATCH] = "mesh_mismatch",
    [BR_HS_REFLECTED_EPHEMERAL] = "reflected_ephemeral",
    [BR_HS_WEAK_KEY] = "weak_key",
    [BR_HS_DECRYPT_FAILED] = "decrypt_failed",
    [BR_HS_SELF_ID] = "self_id",
    [BR_HS_BAD_SIGNATURE] = "bad_signature",
    [BR_HS_PEER_DENIED] = "peer_denied",
    [BR_HS_PEER_UNKNOWN] = "peer_unknown",
    [BR_HS_NO_MEMORY] = "no_memory",
};

const char *br_hs_reason_name(enum br_hs_reason r)
{
    if ((unsigned)r >= BR_HS_REASON_COUNT || !reason_names[r])
        return "unknown";
    return reason_names[r];
}

static void wipe_secrets(br_handshake *h)
{
    sodium_memzero(&h->th, sizeof h->th);
    sodium_memzero(h->e_sk, sizeof h->e_sk);
    sodium_memzero(h->mk, sizeof h->mk);
    sodium_memzero(h->hk, sizeof h->hk);
    sodium_memzero(h->session, sizeof h->session);
}

static br_err fail(br_handshake *h, enum br_hs_reason r)
{
    h->st = ST_FAILED;
    h->reason = r;
    wipe_secrets(h);
    switch (r) {
    case BR_HS_BAD_SIZE:
    case BR_HS_BAD_VERSION:
    case BR_HS_BAD_HEADER:
    case BR_HS_OUT_OF_ORDER:
        return BR_EPROTO;
    case BR_HS_NO_MEMORY:
        return BR_ENOMEM;
    default:
        return BR_ECRYPTO;
    }
}

br_err br_handshake_new(const struct br_handshake_opts *o, bool initiator, br_handshake **out)
{
    if (!o || !o->identity)
        return BR_EINVAL;
    brc_init();
    br_handshake *h = sodium_malloc(sizeof *h);
    if (!h)
        return BR_ENOMEM;
    memset(h, 0, sizeof *h);
    h->id = o->identity;
    h->trust = o->trust;
    h->initiator = initiator;
    h->has_mesh = o->mesh != NULL;
    if (o->mesh)
        memcpy(h->mk, brc_meshkey_bytes(o->mesh), KEY);
    brc_random(o->env, h->e_sk, KEY);
    crypto_scalarmult_base(h->e_pk, h->e_sk);
    crypto_generichash_init(&h->th, NULL, 0, 32);
    crypto_generichash_update(&h->th, (const uint8_t *)proto_label, sizeof proto_label - 1);
    const uint8_t version = BR_HS_VERSION;
    crypto_generichash_update(&h->th, &version, 1);
    h->st = initiator ? ST_START : ST_WAIT1;
    *out = h;
    return BR_OK;
}

void br_handshake_free(br_handshake *h)
{
    if (h)
        sodium_free(h); /* wipes the whole struct */
}

bool br_handshake_done(const br_handshake *h)
{
    return h->st == ST_DONE || h->st == ST_TAKEN;
}

enum br_hs_reason br_handshake_reason(const br_handshake *h)
{
    return h->reason;
}

const struct br_node_id *br_handshake_peer_id(const br_handshake *h)
{
    return h->peer_known ? &h->peer_id : NULL;
}

const uint8_t *br_handshake_peer_public_key(const br_handshake *h)
{
    return h->peer_known ? h->peer_pk : NULL;
}

static void header(const br_handshake *h, uint8_t *p, enum msg_type t)
{
    p[0] = BR_HS_VERSION;
    p[1] = (uint8_t)t;
    p[2] = h->has_mesh ? FLAG_MESH : 0;
    p[3] = 0;
}

/* Transcript hash as it stands, with `extra` appended (not kept in the running state). */
static void snapshot(const br_handshake *h, const uint8_t *extra, size_t n, uint8_t out[32])
{
    crypto_generichash_state st = h->th;
    if (n)
        crypto_generichash_update(&st, extra, n);
    crypto_generichash_final(&st, out, 32);
    sodium_memzero(&st, sizeof st);
}

static void hello_tag(const br_handshake *h, const uint8_t *msg, uint8_t out[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, h->mk, KEY, 32);
    crypto_generichash_update(&st, (const uint8_t *)hello_label, sizeof hello_label - 1);
    crypto_generichash_update(&st, msg, HDR + KEY);
    crypto_generichash_final(&st, out, 32);
}

/* hk = BLAKE2b-512(key = mesh key, label || ss || TH1), TH1 = transcript through e_R. */
static void handshake_keys(br_handshake *h, const uint8_t ss[KEY])
{
    uint8_t th1[32];
    snapshot(h, NULL, 0, th1);
    crypto_generichash_state st;
    crypto_generichash_init(&st, h->mk, KEY, sizeof h->hk);
    crypto_generichash_update(&st, (const uint8_t *)keys_label, sizeof keys_label - 1);
    crypto_generichash_update(&st, ss, KEY);
    crypto_generichash_update(&st, th1, sizeof th1);
    crypto_generichash_final(&st, h->hk, sizeof h->hk);
    sodium_memzero(&st, sizeof st);
}

/* session = BLAKE2b-512(key = hk, label || TH4), TH4 = transcript of all three messages. */
static void session_keys(br_handshake *h)
{
    uint8_t th4[32];
    snapshot(h, NULL, 0, th4);
    crypto_generichash_state st;
    crypto_generichash_init(&st, h->hk, sizeof h->hk, sizeof h->session);
    crypto_generichash_update(&st, (const uint8_t *)session_label, sizeof session_label - 1);
    crypto_generichash_update(&st, th4, sizeof th4);
    crypto_generichash_final(&st, h->session, sizeof h->session);
    sodium_memzero(&st, sizeof st);
    sodium_memzero(&h->th, sizeof h->th);
    sodium_memzero(h->hk, sizeof h->hk);
    sodium_memzero(h->e_sk, sizeof h->e_sk);
    sodium_memzero(h->mk, sizeof h->mk);
}

/* Sign label || TH(transcript || own public key) into sig. */
static void sign_transcript(const br_handshake *h, const char *label, size_t label_len,
                            uint8_t sig[SIG])
{
    uint8_t m[64];
    memcpy(m, label, label_len);
    snapshot(h, br_identity_public_key(h->id), KEY, m + label_len);
    brc_identity_sign(h->id, sig, m, label_len + 32);
}

static bool verify_transcript(const br_handshake *h, const char *label, size_t label_len,
                              const uint8_t pk[KEY], const uint8_t sig[SIG])
{
    uint8_t m[64];
    memcpy(m, label, label_len);
    snapshot(h, pk, KEY, m + label_len);
    return crypto_sign_verify_detached(sig, m, label_len + 32, pk) == 0;
}

/* Seal pk || sig with key under AD ad into out (IDBLOB + tag bytes). */
static void seal_identity(const br_handshake *h, const uint8_t key[KEY], const uint8_t *ad,
                          size_t ad_len, const char *label, size_t label_len, uint8_t *out)
{
    uint8_t pt[IDBLOB];
    static const uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES]; /* key used once */
    memcpy(pt, br_identity_public_key(h->id), KEY);
    sign_transcript(h, label, label_len, pt + KEY);
    crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, pt, sizeof pt, ad, ad_len, NULL, nonce,
                                              key);
}

/* Open and check the peer's identity blob; on success peer_pk/peer_id are set. */
static br_err open_identity(br_handshake *h, const uint8_t key[KEY], const uint8_t *ct,
                            const uint8_t *ad, size_t ad_len, const char *label, size_t label_len)
{
    uint8_t pt[IDBLOB];
    static const uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    if (crypto_aead_chacha20poly1305_ietf_decrypt(pt, NULL, NULL, ct, IDBLOB + AEAD_TAG, ad, ad_len,
                                                  nonce, key) != 0)
        return fail(h, BR_HS_DECRYPT_FAILED);
    struct br_node_id pid;
    br_nodeid_from_public_key(pt, &pid);
    if (br_nodeid_equal(&pid, br_identity_node_id(h->id)))
        return fail(h, BR_HS_SELF_ID);
    if (!verify_transcript(h, label, label_len, pt, pt + KEY))
        return fail(h, BR_HS_BAD_SIGNATURE);
    switch (br_trust_check(h->trust, &pid, h->has_mesh)) {
    case BR_TRUST_ACCEPT:
        break;
    case BR_TRUST_DENIED:
        return fail(h, BR_HS_PEER_DENIED);
    case BR_TRUST_UNKNOWN:
        return fail(h, BR_HS_PEER_UNKNOWN);
    }
    memcpy(h->peer_pk, pt, KEY);
    h->peer_id = pid;
    h->peer_known = true;
    return BR_OK;
}

static br_err emit(br_handshake *h, br_buf *out, const uint8_t *msg, size_t n)
{
    br_err e = br_buf_append(out, msg, n);
    if (e) {
        fail(h, BR_HS_NO_MEMORY);
        return e;
    }
    return BR_OK;
}

br_err br_handshake_start(br_handshake *h, br_buf *out)
{
    if (!h->initiator || h->st != ST_START)
        return BR_EINVAL;
    uint8_t m[BR_HS_MSG1_BYTES];
    header(h, m, MSG_HELLO);
    memcpy(m + HDR, h->e_pk, KEY);
    hello_tag(h, m, m + HDR + KEY);
    crypto_generichash_update(&h->th, m, sizeof m);
    h->st = ST_WAIT2;
    return emit(h, out, m, sizeof m);
}

/* Checks shared by every message: header, type, order, size, mesh flag. */
static br_err check_header(br_handshake *h, const uint8_t *m, size_t n, enum msg_type want,
                           size_t size)
{
    if (n < HDR)
        return fail(h, BR_HS_BAD_SIZE);
    if (m[0] != BR_HS_VERSION)
        return fail(h, BR_HS_BAD_VERSION);
    if (m[1] < MSG_HELLO || m[1] > MSG_FINISH || (m[2] & ~FLAG_MESH) != 0 || m[3] != 0)
        return fail(h, BR_HS_BAD_HEADER);
    if (m[1] != want)
        return fail(h, BR_HS_OUT_OF_ORDER);
    if (n != size)
        return fail(h, BR_HS_BAD_SIZE);
    if (((m[2] & FLAG_MESH) != 0) != h->has_mesh)
        return fail(h, BR_HS_MESH_FLAG_MISMATCH);
    return BR_OK;
}

/* DH with the peer's ephemeral key, refusing our own key and low-order points. */
static br_err dh(br_handshake *h, const uint8_t peer_e[KEY], uint8_t ss[KEY])
{
    if (sodium_memcmp(peer_e, h->e_pk, KEY) == 0)
        return fail(h, BR_HS_REFLECTED_EPHEMERAL);
    if (crypto_scalarmult(ss, h->e_sk, peer_e) != 0)
        return fail(h, BR_HS_WEAK_KEY);
    return BR_OK;
}

static br_err on_hello(br_handshake *h, const uint8_t *m, size_t n, br_buf *out)
{
    br_err e = check_header(h, m, n, MSG_HELLO, BR_HS_MSG1_BYTES);
    if (e)
        return e;
    uint8_t tag[32], ss[KEY];
    hello_tag(h, m, tag);
    if (sodium_memcmp(m + HDR, h->e_pk, KEY) == 0)
        return fail(h, BR_HS_REFLECTED_EPHEMERAL);
    if (crypto_verify_32(tag, m + HDR + KEY) != 0)
        return fail(h, BR_HS_MESH_MISMATCH);
    e = dh(h, m + HDR, ss);
    if (e)
        return e;
    crypto_generichash_update(&h->th, m, n);
    uint8_t r[BR_HS_MSG2_BYTES];
    header(h, r, MSG_RESPONSE);
    memcpy(r + HDR, h->e_pk, KEY);
    crypto_generichash_update(&h->th, r, HDR + KEY);
    handshake_keys(h, ss);
    sodium_memzero(ss, sizeof ss);
    seal_identity(h, h->hk, r, HDR + KEY, sig_r_label, sizeof sig_r_label - 1, r + HDR + KEY);
    crypto_generichash_update(&h->th, r + HDR + KEY, IDBLOB + AEAD_TAG);
    h->st = ST_WAIT3;
    return emit(h, out, r, sizeof r);
}

static br_err on_response(br_handshake *h, const uint8_t *m, size_t n, br_buf *out)
{
    br_err e = check_header(h, m, n, MSG_RESPONSE, BR_HS_MSG2_BYTES);
    if (e)
        return e;
    uint8_t ss[KEY];
    e = dh(h, m + HDR, ss);
    if (e)
        return e;
    crypto_generichash_update(&h->th, m, HDR + KEY);
    handshake_keys(h, ss);
    sodium_memzero(ss, sizeof ss);
    e = open_identity(h, h->hk, m + HDR + KEY, m, HDR + KEY, sig_r_label, sizeof sig_r_label - 1);
    if (e)
        return e;
    crypto_generichash_update(&h->th, m + HDR + KEY, IDBLOB + AEAD_TAG);
    uint8_t f[BR_HS_MSG3_BYTES];
    header(h, f, MSG_FINISH);
    crypto_generichash_update(&h->th, f, HDR);
    seal_identity(h, h->hk + KEY, f, HDR, sig_i_label, sizeof sig_i_label - 1, f + HDR);
    crypto_generichash_update(&h->th, f + HDR, IDBLOB + AEAD_TAG);
    session_keys(h);
    h->st = ST_DONE;
    return emit(h, out, f, sizeof f);
}

static br_err on_finish(br_handshake *h, const uint8_t *m, size_t n)
{
    br_err e = check_header(h, m, n, MSG_FINISH, BR_HS_MSG3_BYTES);
    if (e)
        return e;
    crypto_generichash_update(&h->th, m, HDR);
    e = open_identity(h, h->hk + KEY, m + HDR, m, HDR, sig_i_label, sizeof sig_i_label - 1);
    if (e)
        return e;
    crypto_generichash_update(&h->th, m + HDR, IDBLOB + AEAD_TAG);
    session_keys(h);
    h->st = ST_DONE;
    return BR_OK;
}

br_err br_handshake_recv(br_handshake *h, const uint8_t *msg, size_t len, br_buf *out)
{
    switch (h->st) {
    case ST_WAIT1:
        return on_hello(h, msg, len, out);
    case ST_WAIT2:
        return on_response(h, msg, len, out);
    case ST_WAIT3:
        return on_finish(h, msg, len);
    case ST_START: /* an initiator that has not said hello expects nothing */
        return fail(h, BR_HS_OUT_OF_ORDER);
    case ST_DONE:
    case ST_TAKEN:
    case ST_FAILED:
        break;
    }
    return BR_ECLOSED;
}

br_err br_handshake_link(br_handshake *h, const struct br_frame_opts *fo, br_frame **out)
{
    if (h->st != ST_DONE)
        return BR_EINVAL;
    const uint8_t *i2r = h->session, *r2i = h->session + KEY;
    br_err e = h->initiator ? br_frame_new(i2r, r2i, fo, out) : br_frame_new(r2i, i2r, fo, out);
    if (e)
        return e;
    sodium_memzero(h->session, sizeof h->session);
    h->st = ST_TAKEN;
    return BR_OK;
}
