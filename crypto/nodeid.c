/* nodeid.c — node id hashing, base32 text form with Luhn mod 32 check characters, parsing.
 *
 * The layout is described in barrel/nodeid.h. Base32 here is RFC 4648's alphabet without
 * padding; 32 bytes give 52 digits whose last one carries 1 bit and 4 zero bits. */
#include "barrel/nodeid.h"

#include <string.h>

#include <sodium.h>

#include "crypto_int.h"

#define B32_LEN 52  /* base32 digits of 32 bytes */
#define CHUNK 13    /* digits per check character */
#define FULL_LEN 56 /* digits plus 4 check characters */
#define GROUP 7

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
static const char label[] = "barrel-node-id-v1";

/* Value of a base32 digit (either case), or -1. */
static int b32_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}

/* Luhn mod N (N = 32) over n digit values: the check digit that makes the sum divisible. */
static int luhn32(const int *v, size_t n)
{
    int factor = 2, sum = 0;
    for (size_t i = n; i-- > 0;) {
        int addend = factor * v[i];
        factor = factor == 2 ? 1 : 2;
        sum += addend / 32 + addend % 32;
    }
    return (32 - sum % 32) % 32;
}

void br_nodeid_from_public_key(const uint8_t pk[32], struct br_node_id *out)
{
    crypto_generichash_state st;
    brc_init();
    crypto_generichash_init(&st, NULL, 0, BR_NODE_ID_BYTES);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof label - 1);
    crypto_generichash_update(&st, pk, 32);
    crypto_generichash_final(&st, out->b, BR_NODE_ID_BYTES);
}

/* The 56 digit values (data and check digits interleaved per chunk). */
static void digits(const struct br_node_id *id, int out[FULL_LEN])
{
    int v[B32_LEN];
    unsigned acc = 0, bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < BR_NODE_ID_BYTES; i++) {
        acc = (acc << 8) | id->b[i];
        bits += 8;
        while (bits >= 5) {
            v[n++] = (int)((acc >> (bits - 5)) & 31u);
            bits -= 5;
        }
    }
    v[n++] = (int)((acc << (5 - bits)) & 31u); /* 1 bit left, padded with 4 zero bits */
    size_t k = 0;
    for (size_t c = 0; c < B32_LEN / CHUNK; c++) {
        for (size_t j = 0; j < CHUNK; j++)
            out[k++] = v[c * CHUNK + j];
        out[k++] = luhn32(v + c * CHUNK, CHUNK);
    }
}

void br_nodeid_format(const struct br_node_id *id, char out[BR_NODE_ID_TEXT_LEN + 1])
{
    int d[FULL_LEN];
    digits(id, d);
    size_t k = 0;
    for (size_t i = 0; i < FULL_LEN; i++) {
        if (i > 0 && i % GROUP == 0)
            out[k++] = '-';
        out[k++] = alphabet[d[i]];
    }
    out[k] = '\0';
}

void br_nodeid_short(const struct br_node_id *id, char out[BR_NODE_ID_SHORT_LEN + 1])
{
    int d[FULL_LEN];
    digits(id, d);
    for (size_t i = 0; i < BR_NODE_ID_SHORT_LEN; i++)
        out[i] = alphabet[d[i]];
    out[BR_NODE_ID_SHORT_LEN] = '\0';
}

br_err br_nodeid_parse(const char *s, size_t len, struct br_node_id *out, struct br_errbuf *eb)
{
    int d[FULL_LEN];
    size_t n = 0;
    if (!s)
        return br_fail(eb, BR_EINVAL, "node id: missing");
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-')
            continue;
        int v = b32_value(s[i]);
        if (v < 0)
            return br_fail(eb, BR_EINVAL, "node id: bad character at offset %zu", i);
        if (n == FULL_LEN)
            return br_fail(eb, BR_EINVAL, "node id: too long (expected %d characters)", FULL_LEN);
        d[n++] = v;
    }
    if (n != FULL_LEN)
        return br_fail(eb, BR_EINVAL, "node id: %zu characters, expected %d", n, FULL_LEN);
    int v[B32_LEN];
    for (size_t c = 0; c < B32_LEN / CHUNK; c++) {
        const int *chunk = d + c * (CHUNK + 1);
        if (luhn32(chunk, CHUNK) != chunk[CHUNK])
            return br_fail(eb, BR_EINVAL, "node id: check character %zu is wrong (typo?)", c + 1);
        memcpy(v + c * CHUNK, chunk, CHUNK * sizeof *v);
    }
    if ((v[B32_LEN - 1] & 15) != 0)
        return br_fail(eb, BR_EINVAL, "node id: not canonical (last digit)");
    struct br_node_id id;
    unsigned acc = 0, bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < B32_LEN; i++) {
        acc = (acc << 5) | (unsigned)v[i];
        bits += 5;
        if (bits >= 8) {
            id.b[k++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    *out = id;
    return BR_OK;
}

bool br_nodeid_valid(const char *s, size_t len)
{
    struct br_node_id id;
    return br_nodeid_parse(s, len, &id, NULL) == BR_OK;
}

bool br_nodeid_equal(const struct br_node_id *a, const struct br_node_id *b)
{
    return memcmp(a->b, b->b, BR_NODE_ID_BYTES) == 0;
}
