/* auth.c — HTTP Basic admin credentials (see auth.h). */
#include "auth.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "barrel/alloc.h"

#define CACHE_N 8
#define DIGEST crypto_generichash_BYTES

struct br_auth {
    char hash[crypto_pwhash_STRBYTES];
    unsigned char *key;         /* sodium_malloc: generichash key for the digests below */
    unsigned char user[DIGEST]; /* digest of the admin user name */
    pthread_mutex_t mu;
    unsigned char (*cache)[DIGEST]; /* sodium_malloc: digests of verified "user:password" */
    size_t n_cache, next;
};

static void digest(const br_auth *a, const void *p, size_t n, unsigned char out[DIGEST])
{
    crypto_generichash(out, DIGEST, p, n, a->key, crypto_generichash_KEYBYTES);
}

br_err br_auth_new(const char *user, const char *hash, br_auth **out, struct br_errbuf *eb)
{
    if (sodium_init() < 0)
        return br_fail(eb, BR_ECRYPTO, "libsodium cannot start");
    size_t hl = strlen(hash);
    if (!user[0] || hl >= crypto_pwhash_STRBYTES ||
        strncmp(hash, crypto_pwhash_STRPREFIX, strlen(crypto_pwhash_STRPREFIX)) != 0)
        return br_fail(eb, BR_EINVAL,
                       "admin password_hash must be a crypto_pwhash string ($argon2id$...; make "
                       "one with `barrel passwd`)");
    br_auth *a = br_calloc(1, sizeof *a);
    if (!a)
        return BR_ENOMEM;
    a->key = sodium_malloc(crypto_generichash_KEYBYTES);
    a->cache = sodium_malloc(CACHE_N * DIGEST);
    if (!a->key || !a->cache) {
        sodium_free(a->key);
        sodium_free(a->cache);
        br_free(a);
        return BR_ENOMEM;
    }
    crypto_generichash_keygen(a->key);
    memcpy(a->hash, hash, hl + 1);
    digest(a, user, strlen(user), a->user);
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return BR_OK;
}

void br_auth_free(br_auth *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->mu);
    sodium_free(a->key);
    sodium_free(a->cache);
    sodium_memzero(a, sizeof *a);
    br_free(a);
}

/* Decode "Basic <base64>" into a sodium_malloc'd "user:password" (caller sodium_free's). */
static unsigned char *decode(const char *h, size_t *len)
{
    if (!h || strncasecmp(h, "Basic ", 6) != 0)
        return NULL;
    const char *b = h + 6;
    while (*b == ' ')
        b++;
    size_t bl = strlen(b), cap = bl / 4 * 3 + 3;
    unsigned char *out = sodium_malloc(cap + 1);
    if (!out)
        return NULL;
    if (sodium_base642bin(out, cap, b, bl, NULL, len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0) {
        sodium_free(out);
        return NULL;
    }
    out[*len] = '\0';
    return out;
}

enum br_auth_result br_auth_check(br_auth *a, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Basic ", 6) != 0)
        return BR_AUTH_MISSING;
    size_t n = 0;
    unsigned char *cred = decode(authorization, &n);
    if (!cred)
        return BR_AUTH_BAD;
    const unsigned char *colon = memchr(cred, ':', n);
    enum br_auth_result r = BR_AUTH_BAD;
    if (colon) {
        unsigned char u[DIGEST], d[DIGEST];
        digest(a, cred, (size_t)(colon - cred), u);
        if (sodium_memcmp(u, a->user, DIGEST) == 0) {
            r = BR_AUTH_VERIFY;
            digest(a, cred, n, d);
            pthread_mutex_lock(&a->mu);
            for (size_t i = 0; i < a->n_cache; i++) {
                if (sodium_memcmp(a->cache[i], d, DIGEST) == 0)
                    r = BR_AUTH_OK;
            }
            pthread_mutex_unlock(&a->mu);
            sodium_memzero(d, sizeof d);
        }
    }
    sodium_memzero(cred, n);
    sodium_free(cred);
    return r;
}

bool br_auth_verify(br_auth *a, const char *authorization)
{
    if (br_auth_check(a, authorization) == BR_AUTH_OK)
        return true;
    size_t n = 0;
    unsigned char *cred = decode(authorization, &n);
    if (!cred)
        return false;
    const unsigned char *colon = memchr(cred, ':', n);
    bool ok = false;
    if (colon) {
        unsigned char u[DIGEST];
        digest(a, cred, (size_t)(colon - cred), u);
        const char *pw = (const char *)colon + 1;
        size_t pl = n - (size_t)(colon - cred) - 1;
        /* verify even for a wrong user name, so timing does not tell names apart */
        bool pw_ok = crypto_pwhash_str_verify(a->hash, pw, pl) == 0;
        ok = pw_ok && sodium_memcmp(u, a->user, DIGEST) == 0;
    }
    if (ok) {
        unsigned char d[DIGEST];
        digest(a, cred, n, d);
        pthread_mutex_lock(&a->mu);
        memcpy(a->cache[a->next], d, DIGEST);
        a->next = (a->next + 1) % CACHE_N;
        if (a->n_cache < CACHE_N)
            a->n_cache++;
        pthread_mutex_unlock(&a->mu);
        sodium_memzero(d, sizeof d);
    }
    sodium_memzero(cred, n);
    sodium_free(cred);
    return ok;
}

br_err br_auth_hash_password(const char *pw, size_t len, char out[BR_AUTH_HASH_MAX])
{
    if (sodium_init() < 0)
        return BR_ECRYPTO;
    if (crypto_pwhash_str(out, pw, len, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return BR_ENOMEM;
    return BR_OK;
}
