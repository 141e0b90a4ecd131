/* meshkey.h — the optional mesh key: a 32-byte secret shared by the nodes of one mesh.
 *
 * Only holders of the mesh key can complete a link handshake (it is mixed into the handshake's
 * key derivation). It comes from a file or from a passphrase:
 *
 * - File: 64 hexadecimal digits and an optional trailing newline; mode 0600 like the identity
 *   (a file readable by group or others is refused). br_meshkey_new_file() writes a fresh one
 *   atomically and never replaces an existing file.
 * - Passphrase: Argon2id v1.3 (crypto_pwhash) with opslimit 2, memlimit 64 MiB (67108864),
 *   output 32 bytes, and the 16-byte salt BLAKE2b-128("barrel-mesh-salt-v1"), the same on every
 *   node, so every node derives the same key from the same passphrase. These numbers are part
 *   of the protocol and never change for version 1.
 *
 * The fingerprint, published in mDNS TXT records so strangers are never dialled, is the first
 * 8 bytes of BLAKE2b-256 keyed with the mesh key over "barrel-mesh-fingerprint-v1", written as
 * 16 lowercase hex digits. It reveals nothing usable about the key itself; for a
 * passphrase-derived key it allows offline guessing at Argon2id cost, so passphrases must be
 * strong. */
#ifndef BARREL_MESHKEY_H
#define BARREL_MESHKEY_H

#include <stddef.h>
#include <stdint.h>

#include "barrel/env.h"
#include "barrel/err.h"

#define BR_MESHKEY_BYTES 32
#define BR_MESHKEY_FINGERPRINT_LEN 16 /* hex digits, no NUL counted */

typedef struct br_meshkey br_meshkey;

/* Write a new random mesh key to path (mode 0600, atomically). Randomness from env, or
 * libsodium's CSPRNG when env is NULL. Errors: BR_EEXIST (path exists), BR_EIO. Thread: any. */
BR_NODISCARD br_err br_meshkey_new_file(const char *path, const struct br_env *env,
                                        struct br_errbuf *eb);

/* Load a mesh key file. Errors, with a reason: BR_ENOTFOUND, BR_EINVAL (permissions),
 * BR_EPROTO (not 64 hex digits), BR_EIO, BR_ENOMEM. Thread: any. */
BR_NODISCARD br_err br_meshkey_load(const char *path, br_meshkey **out, struct br_errbuf *eb);

/* Derive the mesh key from a passphrase (len bytes, at least 1). Takes about a tenth of a
 * second and 64 MiB. Errors: BR_EINVAL (empty), BR_ENOMEM. Thread: any. */
BR_NODISCARD br_err br_meshkey_from_passphrase(const char *pass, size_t len, br_meshkey **out,
                                               struct br_errbuf *eb);

/* A mesh key from 32 raw bytes (tests, the simulator). Errors: BR_ENOMEM. Thread: any. */
BR_NODISCARD br_err br_meshkey_from_bytes(const uint8_t key[BR_MESHKEY_BYTES], br_meshkey **out);

void br_meshkey_free(br_meshkey *k); /* NULL is a no-op; wipes the key */

/* The fingerprint (16 hex digits and a NUL). Thread: any. */
void br_meshkey_fingerprint(const br_meshkey *k, char out[BR_MESHKEY_FINGERPRINT_LEN + 1]);

#endif
