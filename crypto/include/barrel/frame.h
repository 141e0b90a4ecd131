/* frame.h — encrypted framing of a link: one message per frame, one secretstream per direction.
 *
 * After the handshake each side holds a br_frame with two keys: tx (what it sends) and rx
 * (what it receives); the initiator's tx is the responder's rx. Each direction is a libsodium
 * crypto_secretstream_xchacha20poly1305 stream. Wire form of a frame (one transport message):
 *
 *     first frame of a direction:  header (24 bytes) || ciphertext (len + 17)
 *     every later frame:           ciphertext (len + 17)
 *
 * The header is the secretstream header made by init_push (random), so it needs no round
 * trip. A frame's plaintext is at most max_plain bytes (default 1 MiB, hard ceiling 16 MiB),
 * so a frame on the wire is at most 24 + max_plain + 17 bytes; larger messages are the caller's
 * to cut. Tags: MESSAGE for ordinary frames; REKEY on every rekey_every-th frame (default
 * 65536) and on the frame after br_frame_rekey(), which makes both ends rekey after it;
 * FINAL for the clean end. A PUSH tag from the peer is a protocol error.
 *
 * Any failure in br_frame_open (tampered, replayed, reordered, truncated or oversized frame,
 * a frame after FINAL) is sticky: the receive direction is dead and every later call returns
 * BR_ECLOSED; the link must be closed. A handle is used by one thread at a time. */
#ifndef BARREL_FRAME_H
#define BARREL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/err.h"

#define BR_FRAME_KEY_BYTES 32
#define BR_FRAME_HEADER_BYTES 24 /* crypto_secretstream_xchacha20poly1305_HEADERBYTES */
#define BR_FRAME_ABYTES 17       /* crypto_secretstream_xchacha20poly1305_ABYTES */
#define BR_FRAME_DEFAULT_MAX ((size_t)1 << 20)
#define BR_FRAME_HARD_MAX ((size_t)16 << 20)
#define BR_FRAME_REKEY_DEFAULT 65536u
/* Largest frame on the wire for a given plaintext maximum. */
#define BR_FRAME_WIRE_MAX(max_plain) ((max_plain) + BR_FRAME_HEADER_BYTES + BR_FRAME_ABYTES)

struct br_frame_opts {
    size_t max_plain;     /* 0: BR_FRAME_DEFAULT_MAX; above BR_FRAME_HARD_MAX is an error */
    uint64_t rekey_every; /* frames between automatic TAG_REKEY; 0: BR_FRAME_REKEY_DEFAULT */
};

typedef struct br_frame br_frame;

/* A framing state from the two 32-byte direction keys (normally made by br_handshake_link;
 * the keys are copied). o may be NULL for defaults. Errors: BR_EINVAL (max_plain too large),
 * BR_ENOMEM. Thread: any. */
BR_NODISCARD br_err br_frame_new(const uint8_t tx_key[BR_FRAME_KEY_BYTES],
                                 const uint8_t rx_key[BR_FRAME_KEY_BYTES],
                                 const struct br_frame_opts *o, br_frame **out);
void br_frame_free(br_frame *f); /* NULL is a no-op; wipes the stream states */

/* Encrypt msg[0..len) as one frame and append its wire bytes to out. Errors: BR_ETOOBIG (len
 * above max_plain, or out's own maximum: nothing appended, the stream unchanged), BR_ECLOSED
 * (after br_frame_seal_final), BR_ENOMEM. */
BR_NODISCARD br_err br_frame_seal(br_frame *f, const uint8_t *msg, size_t len, br_buf *out);

/* The same with TAG_FINAL: the last frame of this direction (msg may be empty). */
BR_NODISCARD br_err br_frame_seal_final(br_frame *f, const uint8_t *msg, size_t len, br_buf *out);

/* Mark the next sealed frame with TAG_REKEY (forward secrecy within a long link). */
void br_frame_rekey(br_frame *f);

/* Decrypt one received frame and append its plaintext to out; *final (may be NULL) says it was
 * the peer's last frame. Errors (all sticky, see above): BR_EPROTO (size or tag out of rule),
 * BR_ECRYPTO (authentication failed: tampered, replayed, reordered or truncated),
 * BR_ECLOSED (the direction is dead or finished), BR_ENOMEM / BR_ETOOBIG (out cannot hold the
 * plaintext; also sticky, since the stream has advanced). */
BR_NODISCARD br_err br_frame_open(br_frame *f, const uint8_t *wire, size_t len, br_buf *out,
                                  bool *final);

/* True once the peer's FINAL frame was opened: a link that closes without it was cut. */
bool br_frame_peer_finished(const br_frame *f);

/* Frames sealed and opened so far (for tests and metrics). */
uint64_t br_frame_sealed(const br_frame *f);
uint64_t br_frame_opened(const br_frame *f);

#endif
