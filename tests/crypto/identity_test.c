/* identity_test.c — identity.key creation, loading, permissions and corruption; mesh key files,
 * passphrase derivation and fingerprint; the trust policy rule. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <sodium.h>

#include "barrel/identity.h"
#include "barrel/meshkey.h"
#include "barrel/trust.h"

#include "testutil.h"

static char *dir;
static char path[4096];

static void setup(void)
{
    dir = tu_tmpdir("crypto");
    snprintf(path, sizeof path, "%s/%s", dir, BR_IDENTITY_FILE);
}

static void teardown(void)
{
    tu_rmtree(dir);
    free(dir);
}

static size_t read_file(const char *p, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(p, "rb");
    cr_assert(f != NULL);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void write_file(const char *p, const uint8_t *buf, size_t n)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, buf, n), (ssize_t)n);
    close(fd);
    cr_assert_eq(chmod(p, 0600), 0);
}

TestSuite(identity, .init = setup, .fini = teardown);

Test(identity, created_on_first_use_with_mode_0600_then_loaded)
{
    br_identity *a = NULL, *b = NULL;
    int created = -1;
    struct br_errbuf eb;
    cr_assert_eq(br_identity_open(dir, NULL, &a, &created, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(created, 1);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(st.st_size, BR_IDENTITY_FILE_SIZE);
    cr_assert_eq(br_identity_open(dir, NULL, &b, &created, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(created, 0);
    cr_assert(memcmp(br_identity_public_key(a), br_identity_public_key(b), 32) == 0);
    cr_assert(br_nodeid_equal(br_identity_node_id(a), br_identity_node_id(b)));
    /* no temporary file is left behind */
    DIR *d = opendir(dir);
    cr_assert(d != NULL);
    int files = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        cr_assert_str_eq(de->d_name, BR_IDENTITY_FILE);
        files++;
    }
    closedir(d);
    cr_assert_eq(files, 1);
    br_identity_free(a);
    br_identity_free(b);
}

Test(identity, creates_missing_data_dir)
{
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/data", dir);
    br_identity *a = NULL;
    cr_assert_eq(br_identity_open(sub, NULL, &a, NULL, NULL), BR_OK);
    struct stat st;
    cr_assert_eq(stat(sub, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700);
    br_identity_free(a);
}

Test(identity, two_nodes_get_different_ids)
{
    char d2[4200];
    snprintf(d2, sizeof d2, "%s/other", dir);
    br_identity *a = NULL, *b = NULL;
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, NULL), BR_OK);
    cr_assert_eq(br_identity_open(d2, NULL, &b, NULL, NULL), BR_OK);
    cr_assert_not(br_nodeid_equal(br_identity_node_id(a), br_identity_node_id(b)));
    br_identity_free(a);
    br_identity_free(b);
}

Test(identity, refuses_loose_permissions_naming_file_and_mode)
{
    br_identity *a = NULL;
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, NULL), BR_OK);
    br_identity_free(a);
    static const mode_t bad[] = {0644, 0640, 0604, 0660, 0700 | 0070};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(chmod(path, bad[i]), 0);
        struct br_errbuf eb;
        a = NULL;
        cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_EINVAL);
        cr_assert(a == NULL);
        char want[64];
        snprintf(want, sizeof want, "mode %04o", (unsigned)bad[i]);
        cr_assert(strstr(eb.msg, want) != NULL, "%s", eb.msg);
        cr_assert(strstr(eb.msg, path) != NULL, "%s", eb.msg);
    }
    cr_assert_eq(chmod(path, 0400), 0); /* stricter is fine */
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, NULL), BR_OK);
    br_identity_free(a);
}

Test(identity, refuses_corrupt_files)
{
    br_identity *a = NULL;
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, NULL), BR_OK);
    br_identity_free(a);
    uint8_t good[BR_IDENTITY_FILE_SIZE + 8];
    cr_assert_eq(read_file(path, good, sizeof good), BR_IDENTITY_FILE_SIZE);
    struct br_errbuf eb;

    write_file(path, good, BR_IDENTITY_FILE_SIZE - 1); /* truncated */
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_EPROTO);
    cr_assert(strstr(eb.msg, "corrupt") != NULL, "%s", eb.msg);
    write_file(path, good, 0); /* empty */
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_EPROTO);
    uint8_t longer[BR_IDENTITY_FILE_SIZE + 1];
    memcpy(longer, good, BR_IDENTITY_FILE_SIZE);
    longer[BR_IDENTITY_FILE_SIZE] = 0;
    write_file(path, longer, sizeof longer);
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_EPROTO);

    /* every single-byte change is caught (magic, version, seed, key, checksum) */
    for (size_t i = 0; i < BR_IDENTITY_FILE_SIZE; i++) {
        uint8_t f[BR_IDENTITY_FILE_SIZE];
        memcpy(f, good, sizeof f);
        f[i] ^= 0x20;
        write_file(path, f, sizeof f);
        cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_EPROTO, "byte %zu", i);
    }
    uint8_t f[BR_IDENTITY_FILE_SIZE];
    memcpy(f, good, sizeof f);
    memcpy(f, "XXXX", 4);
    write_file(path, f, sizeof f);
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_EPROTO);
    cr_assert(strstr(eb.msg, "magic") != NULL, "%s", eb.msg);

    write_file(path, good, sizeof f); /* restored: loads again */
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_OK, "%s", eb.msg);
    br_identity_free(a);
}

Test(identity, key_matching_seed_is_checked_even_with_valid_checksum)
{
    /* A file whose checksum is right but whose public key is not the seed's. */
    br_identity *a = NULL, *b = NULL;
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, NULL), BR_OK);
    br_identity_free(a);
    uint8_t f[BR_IDENTITY_FILE_SIZE];
    cr_assert_eq(read_file(path, f, sizeof f), sizeof f);
    uint8_t seed[32] = {1};
    cr_assert_eq(br_identity_from_seed(seed, &b), BR_OK);
    memcpy(f + 40, br_identity_public_key(b), 32);
    br_identity_free(b);
    crypto_generichash(f + 72, 16, f, 72, NULL, 0);
    write_file(path, f, sizeof f);
    struct br_errbuf eb;
    cr_assert_eq(br_identity_open(dir, NULL, &a, NULL, &eb), BR_EPROTO);
    cr_assert(strstr(eb.msg, "does not match") != NULL, "%s", eb.msg);
}

Test(identity, seed_gives_a_fixed_identity)
{
    uint8_t seed[32] = {7, 7, 7};
    br_identity *a = NULL, *b = NULL;
    cr_assert_eq(br_identity_from_seed(seed, &a), BR_OK);
    cr_assert_eq(br_identity_from_seed(seed, &b), BR_OK);
    cr_assert(br_nodeid_equal(br_identity_node_id(a), br_identity_node_id(b)));
    br_identity_free(a);
    br_identity_free(b);
}

/* ---- mesh key ---- */

TestSuite(meshkey, .init = setup, .fini = teardown);

Test(meshkey, new_file_is_0600_and_loads_and_is_never_replaced)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/mesh.key", dir);
    struct br_errbuf eb;
    cr_assert_eq(br_meshkey_new_file(p, NULL, &eb), BR_OK, "%s", eb.msg);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(st.st_size, 65);
    uint8_t before[65];
    read_file(p, before, sizeof before);
    cr_assert_eq(br_meshkey_new_file(p, NULL, &eb), BR_EEXIST);
    uint8_t after[65];
    read_file(p, after, sizeof after);
    cr_assert(memcmp(before, after, 65) == 0);

    br_meshkey *k1 = NULL, *k2 = NULL;
    cr_assert_eq(br_meshkey_load(p, &k1, &eb), BR_OK, "%s", eb.msg);
    uint8_t raw[32];
    cr_assert_eq(sodium_hex2bin(raw, 32, (const char *)before, 64, NULL, NULL, NULL), 0);
    cr_assert_eq(br_meshkey_from_bytes(raw, &k2), BR_OK);
    char f1[17], f2[17];
    br_meshkey_fingerprint(k1, f1);
    br_meshkey_fingerprint(k2, f2);
    cr_assert_str_eq(f1, f2);
    br_meshkey_free(k1);
    br_meshkey_free(k2);
}

Test(meshkey, load_refuses_loose_mode_and_bad_contents)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/mesh.key", dir);
    struct br_errbuf eb;
    br_meshkey *k = NULL;
    cr_assert_eq(br_meshkey_load(p, &k, &eb), BR_ENOTFOUND);
    cr_assert_eq(br_meshkey_new_file(p, NULL, &eb), BR_OK);
    cr_assert_eq(chmod(p, 0644), 0);
    cr_assert_eq(br_meshkey_load(p, &k, &eb), BR_EINVAL);
    cr_assert(strstr(eb.msg, "mode 0644") != NULL, "%s", eb.msg);
    const char *bad[] = {"", "abcd\n", "zz" /* not hex */,
                         "0000000000000000000000000000000000000000000000000000000000000000\n\n",
                         "000000000000000000000000000000000000000000000000000000000000000g"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(p, (const uint8_t *)bad[i], strlen(bad[i]));
        cr_assert_eq(br_meshkey_load(p, &k, &eb), BR_EPROTO, "case %zu", i);
    }
    const char *ok = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    write_file(p, (const uint8_t *)ok, 64); /* no newline, mixed case: fine */
    cr_assert_eq(br_meshkey_load(p, &k, &eb), BR_OK, "%s", eb.msg);
    br_meshkey_free(k);
}

Test(meshkey, passphrase_is_deterministic_and_fingerprint_hides_key)
{
    br_meshkey *a = NULL, *b = NULL, *c = NULL;
    cr_assert_eq(br_meshkey_from_passphrase("correct horse", 13, &a, NULL), BR_OK);
    cr_assert_eq(br_meshkey_from_passphrase("correct horse", 13, &b, NULL), BR_OK);
    cr_assert_eq(br_meshkey_from_passphrase("correct horsf", 13, &c, NULL), BR_OK);
    char fa[17], fb[17], fc[17];
    br_meshkey_fingerprint(a, fa);
    br_meshkey_fingerprint(b, fb);
    br_meshkey_fingerprint(c, fc);
    cr_assert_eq(strlen(fa), 16);
    cr_assert_str_eq(fa, fb);
    cr_assert_str_neq(fa, fc);
    /* pinned: Argon2id(ops 2, mem 64 MiB, salt BLAKE2b-128("barrel-mesh-salt-v1")) of
     * "correct horse", then the keyed fingerprint. Changing either splits meshes. */
    uint8_t salt[16], key[32], h[32];
    crypto_generichash(salt, 16, (const uint8_t *)"barrel-mesh-salt-v1", 19, NULL, 0);
    cr_assert_eq(crypto_pwhash(key, 32, "correct horse", 13, salt, 2, 67108864,
                               crypto_pwhash_ALG_ARGON2ID13),
                 0);
    crypto_generichash(h, 32, (const uint8_t *)"barrel-mesh-fingerprint-v1", 26, key, 32);
    char want[17];
    sodium_bin2hex(want, sizeof want, h, 8);
    cr_assert_str_eq(fa, want);
    /* the fingerprint is not a prefix of the key's hex */
    char keyhex[65];
    sodium_bin2hex(keyhex, sizeof keyhex, key, 32);
    cr_assert(strncmp(keyhex, fa, 16) != 0);
    cr_assert_eq(br_meshkey_from_passphrase("", 0, &a, NULL), BR_EINVAL);
    br_meshkey_free(a);
    br_meshkey_free(b);
    br_meshkey_free(c);
}

/* ---- trust ---- */

static struct br_node_id nid(uint8_t v)
{
    struct br_node_id id;
    memset(id.b, v, sizeof id.b);
    return id;
}

Test(trust, rule_deny_wins_allow_list_required_without_mesh)
{
    br_trust *t = NULL;
    cr_assert_eq(br_trust_new(&t), BR_OK);
    struct br_node_id a = nid(1), b = nid(2), c = nid(3);
    /* empty policy: mesh members accepted, nobody without a mesh */
    cr_assert_eq(br_trust_check(t, &a, true), BR_TRUST_ACCEPT);
    cr_assert_eq(br_trust_check(t, &a, false), BR_TRUST_UNKNOWN);
    cr_assert_eq(br_trust_check(NULL, &a, true), BR_TRUST_ACCEPT);
    cr_assert_eq(br_trust_check(NULL, &a, false), BR_TRUST_UNKNOWN);
    cr_assert_eq(br_trust_allow(t, &a), BR_OK);
    cr_assert_eq(br_trust_allow(t, &a), BR_OK); /* duplicate ignored */
    cr_assert_eq(br_trust_check(t, &a, false), BR_TRUST_ACCEPT);
    cr_assert_eq(br_trust_check(t, &b, false), BR_TRUST_UNKNOWN);
    /* with a mesh key, a non-empty allow list restricts the members */
    cr_assert_eq(br_trust_check(t, &b, true), BR_TRUST_UNKNOWN);
    cr_assert_eq(br_trust_check(t, &a, true), BR_TRUST_ACCEPT);
    /* deny wins over allow and over the mesh */
    cr_assert_eq(br_trust_deny(t, &a), BR_OK);
    cr_assert_eq(br_trust_check(t, &a, false), BR_TRUST_DENIED);
    cr_assert_eq(br_trust_check(t, &a, true), BR_TRUST_DENIED);
    br_trust *t2 = NULL;
    cr_assert_eq(br_trust_new(&t2), BR_OK);
    cr_assert_eq(br_trust_deny(t2, &c), BR_OK);
    cr_assert_eq(br_trust_check(t2, &c, true), BR_TRUST_DENIED);
    cr_assert_eq(br_trust_check(t2, &b, true), BR_TRUST_ACCEPT);
    for (uint8_t i = 10; i < 40; i++) { /* lists grow */
        struct br_node_id x = nid(i);
        cr_assert_eq(br_trust_allow(t2, &x), BR_OK);
    }
    struct br_node_id x = nid(39);
    cr_assert_eq(br_trust_check(t2, &x, false), BR_TRUST_ACCEPT);
    br_trust_free(t);
    br_trust_free(t2);
}
