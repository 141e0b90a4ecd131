/* crypto_int.h — what the crypto/ modules share privately: libsodium start-up, secret files,
 * and raw access to the secret halves of identities and mesh keys (never public). */
#ifndef BARREL_CRYPTO_INT_H
#define BARREL_CRYPTO_INT_H

#include <stddef.h>
#include <stdint.h>

#include "barrel/env.h"
#include "barrel/err.h"
#include "barrel/identity.h"
#include "barrel/meshkey.h"

/* sodium_init() once; aborts if libsodium cannot start (no safe way on). Thread: any. */
void brc_init(void);

/* n random bytes from env, or libsodium's CSPRNG when env is NULL. Thread: any. */
void brc_random(const struct br_env *env, void *buf, size_t n);

/* Create path with exactly data[0..len), mode 0600: temporary file in the same directory,
 * fsync, link(2) to path (never replacing an existing file), unlink the temporary, fsync the
 * directory. Errors: BR_EEXIST (path exists), BR_EIO, BR_ENOMEM. */
br_err brc_secfile_write(const char *path, const uint8_t *data, size_t len, struct br_errbuf *eb);

/* Read path, which must be a regular file without group/other permission bits and at most cap
 * bytes, into buf; its size into *len. `what` names the file in reasons ("identity file").
 * Errors: BR_ENOTFOUND, BR_EINVAL (type or permissions), BR_EPROTO (larger than cap),
 * BR_EIO. */
br_err brc_secfile_read(const char *path, const char *what, uint8_t *buf, size_t cap, size_t *len,
                        struct br_errbuf *eb);

/* Ed25519 detached signature (64 bytes) of m with the identity's secret key. */
void brc_identity_sign(const br_identity *id, uint8_t sig[64], const uint8_t *m, size_t mlen);

/* The 32 raw key bytes of a mesh key (borrowed). */
const uint8_t *brc_meshkey_bytes(const br_meshkey *k);

#endif
