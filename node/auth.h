/* auth.h — admin credentials for the HTTP API: HTTP Basic against one configured user whose
 * password is stored as a libsodium crypto_pwhash string (Argon2id), never in clear.
 *
 * Verifying a password is deliberately slow (tens of milliseconds), so it runs on a worker;
 * a successful credential is remembered as a keyed BLAKE2b digest (sodium_malloc memory), and
 * later requests carrying it are accepted on the loop with one constant-time comparison.
 * Every comparison of secret material uses sodium_memcmp; decoded passwords are wiped.
 * Thread: any (the cache has a lock). */
#ifndef BARREL_NODE_AUTH_H
#define BARREL_NODE_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "barrel/err.h"

#define BR_AUTH_HASH_MAX 128 /* crypto_pwhash_STRBYTES */

typedef struct br_auth br_auth;

enum br_auth_result {
    BR_AUTH_OK,      /* a credential verified before */
    BR_AUTH_MISSING, /* no Authorization header, or not Basic */
    BR_AUTH_BAD,     /* malformed, or a user name that is not the admin */
    BR_AUTH_VERIFY,  /* well formed and unknown: call br_auth_verify (slow) */
};

/* user and hash (a crypto_pwhash_str string) are copied. BR_EINVAL if hash is not one. */
BR_NODISCARD br_err br_auth_new(const char *user, const char *hash, br_auth **out,
                                struct br_errbuf *eb);
void br_auth_free(br_auth *a); /* NULL is a no-op */

/* Classify an Authorization header value (NULL: missing) without slow work. */
enum br_auth_result br_auth_check(br_auth *a, const char *authorization);
/* Verify the password (slow); on success remember the credential. */
bool br_auth_verify(br_auth *a, const char *authorization);

/* Hash a password for the config file (crypto_pwhash_str, interactive limits) into out. */
BR_NODISCARD br_err br_auth_hash_password(const char *pw, size_t len, char out[BR_AUTH_HASH_MAX]);

#endif
