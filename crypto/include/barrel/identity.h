/* identity.h — a node's long-term Ed25519 identity, kept in a file in the data dir.
 *
 * br_identity_open() loads DIR/identity.key, or creates it on first use. The file is 88 bytes:
 *
 *     0   4  magic "BRID"
 *     4   1  format version (1)
 *     5   3  zero
 *     8  32  Ed25519 seed (the secret)
 *    40  32  Ed25519 public key
 *    72  16  BLAKE2b-128 of bytes 0..72 (a checksum against damage, not a MAC)
 *
 * It is written atomically (temporary file in the same directory, fsync, link(2) to the final
 * name so a concurrent creator is never overwritten, fsync of the directory) with mode 0600.
 * On load the file must be a regular file with no group or other permission bits; otherwise
 * it is refused and the error names the file and its mode. A file of the wrong size, magic,
 * version or checksum, or whose public key does not match its seed, is reported as corrupt.
 * The secret key lives in sodium_malloc memory and is wiped on free. */
#ifndef BARREL_IDENTITY_H
#define BARREL_IDENTITY_H

#include <stdint.h>

#include "barrel/env.h"
#include "barrel/err.h"
#include "barrel/nodeid.h"

#define BR_IDENTITY_FILE "identity.key"
#define BR_IDENTITY_FILE_SIZE 88
#define BR_IDENTITY_PUBLIC_KEY_BYTES 32
#define BR_IDENTITY_SEED_BYTES 32

typedef struct br_identity br_identity;

/* Load DIR/identity.key, creating DIR (mode 0700, one level) and the key if missing. A new key
 * is made from env's random bytes (cryptographic in production), or libsodium's CSPRNG when env
 * is NULL. On success *out owns a new identity (free with br_identity_free); *created (may be
 * NULL) says whether it was made now. Errors, with a reason in eb: BR_EINVAL (permissions
 * looser than 0600, or not a regular file), BR_EPROTO (corrupt file), BR_EIO (file system),
 * BR_ENOMEM. Thread: any. */
BR_NODISCARD br_err br_identity_open(const char *dir, const struct br_env *env, br_identity **out,
                                     int *created, struct br_errbuf *eb);

/* An identity from a 32-byte seed, not stored anywhere (tests, the simulator). Errors:
 * BR_ENOMEM. Thread: any. */
BR_NODISCARD br_err br_identity_from_seed(const uint8_t seed[BR_IDENTITY_SEED_BYTES],
                                          br_identity **out);

void br_identity_free(br_identity *id); /* NULL is a no-op; wipes the secret */

/* The 32-byte Ed25519 public key; borrowed, valid while id lives. Thread: any. */
const uint8_t *br_identity_public_key(const br_identity *id);

/* The node id of this identity; borrowed, valid while id lives. Thread: any. */
const struct br_node_id *br_identity_node_id(const br_identity *id);

#endif
