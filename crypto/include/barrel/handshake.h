/* handshake.h — the link handshake: a transport-independent state machine.
 *
 * Three messages (the full specification, byte layouts and key schedule are in
 * crypto/HANDSHAKE.md): the initiator sends HELLO (its ephemeral X25519 key and a tag keyed
 * with the mesh key), the responder answers with its ephemeral key and, encrypted, its
 * Ed25519 identity and signature over the transcript hash; the initiator finishes with its own
 * identity and signature. Both sides prove their identity, keys are forward secret, and only
 * holders of the same mesh key (or two nodes with none) can complete. The peer's node id is
 * then checked against the trust policy. The transport carries each message as one binary
 * frame and owns timeouts.
 *
 * Use: br_handshake_new(); the initiator calls br_handshake_start() and sends what it appends;
 * each side passes every received message to br_handshake_recv() and sends what it appends (if
 * anything). When br_handshake_done() is true, br_handshake_link() gives the framing state.
 * Any failure is final: the reason stays, later calls return BR_ECLOSED, the link must close.
 * A handle is used by one thread at a time. */
#ifndef BARREL_HANDSHAKE_H
#define BARREL_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/env.h"
#include "barrel/err.h"
#include "barrel/frame.h"
#include "barrel/identity.h"
#include "barrel/meshkey.h"
#include "barrel/nodeid.h"
#include "barrel/trust.h"

#define BR_HS_VERSION 1
#define BR_HS_MSG1_BYTES 68
#define BR_HS_MSG2_BYTES 148
#define BR_HS_MSG3_BYTES 116
#define BR_HS_MAX_BYTES BR_HS_MSG2_BYTES /* the largest handshake message */

/* Why a handshake failed. Values are never renumbered; names are stable for logs. */
enum br_hs_reason {
    BR_HS_OK = 0,
    BR_HS_BAD_SIZE = 1,            /* a message of the wrong length */
    BR_HS_BAD_VERSION = 2,         /* a protocol version we do not speak */
    BR_HS_BAD_HEADER = 3,          /* reserved bits or byte not zero, or unknown type */
    BR_HS_OUT_OF_ORDER = 4,        /* a message of a known type at the wrong time */
    BR_HS_MESH_FLAG_MISMATCH = 5,  /* one side has a mesh key, the other has none */
    BR_HS_MESH_MISMATCH = 6,       /* HELLO's mesh tag is wrong: another mesh key */
    BR_HS_REFLECTED_EPHEMERAL = 7, /* the peer sent our own ephemeral key back */
    BR_HS_WEAK_KEY = 8,            /* the peer's ephemeral key is of low order */
    BR_HS_DECRYPT_FAILED = 9,      /* an encrypted part did not authenticate */
    BR_HS_SELF_ID = 10,            /* the peer claims our own node id */
    BR_HS_BAD_SIGNATURE = 11,      /* the transcript signature does not verify */
    BR_HS_PEER_DENIED = 12,        /* the peer's id is on the deny list */
    BR_HS_PEER_UNKNOWN = 13,       /* the peer's id is not allowed by the trust policy */
    BR_HS_NO_MEMORY = 14,          /* an allocation failed */
    BR_HS_REASON_COUNT
};

/* Stable lowercase name of a reason ("bad_signature"). Never NULL. Thread: any. */
const char *br_hs_reason_name(enum br_hs_reason r);

struct br_handshake_opts {
    const br_identity *identity; /* required; borrowed, must outlive the handshake */
    const br_meshkey *mesh;      /* NULL: no mesh key; borrowed likewise */
    const br_trust *trust;       /* NULL: an empty policy; borrowed likewise */
    const struct br_env *env;    /* random bytes for the ephemeral key; NULL: libsodium */
};

typedef struct br_handshake br_handshake;

/* A new handshake in the initiator or responder role; its ephemeral key is made now.
 * Errors: BR_EINVAL (no identity), BR_ENOMEM. Thread: any. */
BR_NODISCARD br_err br_handshake_new(const struct br_handshake_opts *o, bool initiator,
                                     br_handshake **out);
void br_handshake_free(br_handshake *h); /* NULL is a no-op; wipes every secret */

/* Initiator: append HELLO to out. Errors: BR_EINVAL (responder, or called twice),
 * BR_ENOMEM / BR_ETOOBIG (out cannot grow; the handshake is failed). */
BR_NODISCARD br_err br_handshake_start(br_handshake *h, br_buf *out);

/* Process one received message; append the reply, if any, to out. Errors: BR_EPROTO
 * (size, version, header, order), BR_ECRYPTO (mesh, keys, decryption, identity, signature,
 * trust), BR_ENOMEM, BR_ECLOSED (already failed, or done); br_handshake_reason() says which
 * and is set by every failure. */
BR_NODISCARD br_err br_handshake_recv(br_handshake *h, const uint8_t *msg, size_t len, br_buf *out);

bool br_handshake_done(const br_handshake *h);
enum br_hs_reason br_handshake_reason(const br_handshake *h);

/* The peer's node id and Ed25519 public key once it proved them (NULL before); borrowed,
 * valid while h lives. */
const struct br_node_id *br_handshake_peer_id(const br_handshake *h);
const uint8_t *br_handshake_peer_public_key(const br_handshake *h);

/* After done: a framing state keyed for this side's directions (caller frees with
 * br_frame_free). May be called once; the session keys are wiped from h. Errors: BR_EINVAL
 * (not done or already taken), BR_ENOMEM, and br_frame_new's. */
BR_NODISCARD br_err br_handshake_link(br_handshake *h, const struct br_frame_opts *fo,
                                      br_frame **out);

#endif
