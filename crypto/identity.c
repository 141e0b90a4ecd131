/* identity.c — the node's Ed25519 key pair: creation, the identity.key file, loading.
 *
 * The file layout and checks are in barrel/identity.h. The whole struct (secret key included)
 * lives in sodium_malloc memory and is wiped by sodium_free. */
#include "barrel/identity.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "barrel/alloc.h"

#include "crypto_int.h"

#define MAGIC "BRID"
#define VERSION 1
#define OFF_SEED 8
#define OFF_PK 40
#define OFF_SUM 72
#define SUM_BYTES 16

struct br_identity {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    struct br_node_id nid;
};

br_err br_identity_from_seed(const uint8_t seed[BR_IDENTITY_SEED_BYTES], br_identity **out)
{
    brc_init();
    br_identity *id = sodium_malloc(sizeof *id);
    if (!id)
        return BR_ENOMEM;
    crypto_sign_seed_keypair(id->pk, id->sk, seed);
    br_nodeid_from_public_key(id->pk, &id->nid);
    *out = id;
    return BR_OK;
}

void br_identity_free(br_identity *id)
{
    if (id)
        sodium_free(id); /* wipes the memory */
}

const uint8_t *br_identity_public_key(const br_identity *id)
{
    return id->pk;
}

const struct br_node_id *br_identity_node_id(const br_identity *id)
{
    return &id->nid;
}

void brc_identity_sign(const br_identity *id, uint8_t sig[64], const uint8_t *m, size_t mlen)
{
    crypto_sign_detached(sig, NULL, m, mlen, id->sk);
}

static void checksum(const uint8_t *file, uint8_t out[SUM_BYTES])
{
    crypto_generichash(out, SUM_BYTES, file, OFF_SUM, NULL, 0);
}

/* Parse a file image; on success *out owns the identity. */
static br_err parse(const char *path, const uint8_t *f, size_t n, br_identity **out,
                    struct br_errbuf *eb)
{
    uint8_t sum[SUM_BYTES];
    if (n != BR_IDENTITY_FILE_SIZE)
        return br_fail(eb, BR_EPROTO, "identity file %s is corrupt: %zu bytes, expected %d", path,
                       n, BR_IDENTITY_FILE_SIZE);
    if (memcmp(f, MAGIC, 4) != 0)
        return br_fail(eb, BR_EPROTO, "identity file %s is corrupt: bad magic", path);
    if (f[4] != VERSION || f[5] || f[6] || f[7])
        return br_fail(eb, BR_EPROTO, "identity file %s: unknown format version %u", path, f[4]);
    checksum(f, sum);
    if (memcmp(sum, f + OFF_SUM, SUM_BYTES) != 0)
        return br_fail(eb, BR_EPROTO, "identity file %s is corrupt: checksum mismatch", path);
    br_identity *id;
    if (br_identity_from_seed(f + OFF_SEED, &id) != BR_OK)
        return BR_ENOMEM;
    if (memcmp(id->pk, f + OFF_PK, crypto_sign_PUBLICKEYBYTES) != 0) {
        br_identity_free(id);
        return br_fail(eb, BR_EPROTO,
                       "identity file %s is corrupt: public key does not match the secret", path);
    }
    *out = id;
    return BR_OK;
}

static br_err create(const char *path, const struct br_env *env, struct br_errbuf *eb)
{
    uint8_t *f = sodium_malloc(BR_IDENTITY_FILE_SIZE);
    if (!f)
        return BR_ENOMEM;
    memset(f, 0, BR_IDENTITY_FILE_SIZE);
    memcpy(f, MAGIC, 4);
    f[4] = VERSION;
    brc_random(env, f + OFF_SEED, BR_IDENTITY_SEED_BYTES);
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_seed_keypair(f + OFF_PK, sk, f + OFF_SEED);
    sodium_memzero(sk, sizeof sk);
    checksum(f, f + OFF_SUM);
    br_err e = brc_secfile_write(path, f, BR_IDENTITY_FILE_SIZE, eb);
    sodium_free(f);
    return e;
}

br_err br_identity_open(const char *dir, const struct br_env *env, br_identity **out, int *created,
                        struct br_errbuf *eb)
{
    brc_init();
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return br_fail(eb, BR_EIO, "cannot create data directory %s: %s", dir, strerror(errno));
    size_t dlen = strlen(dir);
    char *path = br_malloc(dlen + sizeof "/" BR_IDENTITY_FILE);
    if (!path)
        return BR_ENOMEM;
    memcpy(path, dir, dlen);
    memcpy(path + dlen, "/" BR_IDENTITY_FILE, sizeof "/" BR_IDENTITY_FILE);

    uint8_t *f = sodium_malloc(BR_IDENTITY_FILE_SIZE + 1);
    br_err e = f ? BR_OK : BR_ENOMEM;
    int made = 0;
    size_t n = 0;
    if (!e) {
        e = brc_secfile_read(path, "identity file", f, BR_IDENTITY_FILE_SIZE + 1, &n, eb);
        if (e == BR_ENOTFOUND) {
            e = create(path, env, eb);
            made = e == BR_OK;
            if (e == BR_EEXIST) /* another process created it first: use theirs */
                e = BR_OK;
            if (!e)
                e = brc_secfile_read(path, "identity file", f, BR_IDENTITY_FILE_SIZE + 1, &n, eb);
        }
    }
    br_identity *id = NULL;
    if (!e)
        e = parse(path, f, n, &id, eb);
    if (!e) {
        *out = id;
        if (created)
            *created = made;
    }
    if (f)
        sodium_free(f);
    br_free(path);
    return e;
}
