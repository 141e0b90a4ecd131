/* meshkey.c — the mesh key: key files, passphrase derivation, fingerprint.
 *
 * Formats and parameters are fixed in barrel/meshkey.h; changing any of them splits meshes. */
#include "barrel/meshkey.h"

#include <string.h>

#include <sodium.h>

#include "crypto_int.h"

#define FILE_HEX (2 * BR_MESHKEY_BYTES)
#define PW_OPSLIMIT 2ULL
#define PW_MEMLIMIT 67108864ULL /* 64 MiB */

static const char salt_label[] = "barrel-mesh-salt-v1";
static const char fp_label[] = "barrel-mesh-fingerprint-v1";

struct br_meshkey {
    uint8_t key[BR_MESHKEY_BYTES];
};

br_err br_meshkey_from_bytes(const uint8_t key[BR_MESHKEY_BYTES], br_meshkey **out)
{
    brc_init();
    br_meshkey *k = sodium_malloc(sizeof *k);
    if (!k)
        return BR_ENOMEM;
    memcpy(k->key, key, BR_MESHKEY_BYTES);
    *out = k;
    return BR_OK;
}

void br_meshkey_free(br_meshkey *k)
{
    if (k)
        sodium_free(k);
}

const uint8_t *brc_meshkey_bytes(const br_meshkey *k)
{
    return k->key;
}

br_err br_meshkey_new_file(const char *path, const struct br_env *env, struct br_errbuf *eb)
{
    brc_init();
    uint8_t *buf = sodium_malloc(BR_MESHKEY_BYTES + FILE_HEX + 2);
    if (!buf)
        return BR_ENOMEM;
    uint8_t *key = buf;
    char *hex = (char *)(buf + BR_MESHKEY_BYTES);
    brc_random(env, key, BR_MESHKEY_BYTES);
    sodium_bin2hex(hex, FILE_HEX + 1, key, BR_MESHKEY_BYTES);
    hex[FILE_HEX] = '\n';
    br_err e = brc_secfile_write(path, (const uint8_t *)hex, FILE_HEX + 1, eb);
    sodium_free(buf);
    return e;
}

br_err br_meshkey_load(const char *path, br_meshkey **out, struct br_errbuf *eb)
{
    brc_init();
    uint8_t *buf = sodium_malloc(FILE_HEX + 3);
    if (!buf)
        return BR_ENOMEM;
    size_t n = 0;
    br_err e = brc_secfile_read(path, "mesh key file", buf, FILE_HEX + 2, &n, eb);
    if (!e && n == FILE_HEX + 1 && buf[FILE_HEX] == '\n')
        n--;
    uint8_t key[BR_MESHKEY_BYTES];
    size_t klen = 0;
    const char *end = NULL;
    if (!e && (n != FILE_HEX ||
               sodium_hex2bin(key, sizeof key, (const char *)buf, n, NULL, &klen, &end) != 0 ||
               klen != BR_MESHKEY_BYTES || end != (const char *)buf + n))
        e = br_fail(eb, BR_EPROTO, "mesh key file %s is corrupt: expected %d hex digits", path,
                    FILE_HEX);
    if (!e)
        e = br_meshkey_from_bytes(key, out);
    sodium_memzero(key, sizeof key);
    sodium_free(buf);
    return e;
}

br_err br_meshkey_from_passphrase(const char *pass, size_t len, br_meshkey **out,
                                  struct br_errbuf *eb)
{
    brc_init();
    if (!pass || len == 0)
        return br_fail(eb, BR_EINVAL, "mesh passphrase is empty");
    uint8_t salt[crypto_pwhash_SALTBYTES];
    crypto_generichash(salt, sizeof salt, (const uint8_t *)salt_label, sizeof salt_label - 1, NULL,
                       0);
    br_meshkey *k = sodium_malloc(sizeof *k);
    if (!k)
        return BR_ENOMEM;
    if (crypto_pwhash(k->key, BR_MESHKEY_BYTES, pass, len, salt, PW_OPSLIMIT, (size_t)PW_MEMLIMIT,
                      crypto_pwhash_ALG_ARGON2ID13) != 0) {
        sodium_free(k);
        return br_fail(eb, BR_ENOMEM, "mesh passphrase: Argon2id needs 64 MiB of memory");
    }
    *out = k;
    return BR_OK;
}

void br_meshkey_fingerprint(const br_meshkey *k, char out[BR_MESHKEY_FINGERPRINT_LEN + 1])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, (const uint8_t *)fp_label, sizeof fp_label - 1, k->key,
                       BR_MESHKEY_BYTES);
    sodium_bin2hex(out, BR_MESHKEY_FINGERPRINT_LEN + 1, h, BR_MESHKEY_FINGERPRINT_LEN / 2);
}
