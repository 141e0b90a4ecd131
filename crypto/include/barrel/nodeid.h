/* nodeid.h — node ids: the name of a node, derived from its Ed25519 public key.
 *
 * Binary form: 32 bytes, BLAKE2b-256 over the ASCII label "barrel-node-id-v1" followed by the
 * 32-byte Ed25519 public key. Text form (Syncthing-style): the 32 bytes in RFC 4648 base32
 * (alphabet A-Z 2-7, no padding) are 52 characters; they are cut into 4 chunks of 13, each
 * followed by one Luhn mod 32 check character computed over that chunk (56 characters), and
 * written in 8 groups of 7 joined by dashes (63 characters), e.g.
 *
 *     MFRGGZD-FMZTWQ2-LK5EGYB-... (8 groups)
 *
 * Parsing is case-insensitive and ignores dashes wherever they are; it rejects any other
 * character, a wrong length, a wrong check character and a non-canonical last base32 digit
 * (its 4 padding bits must be zero), so one id has exactly one text form. The short form for
 * logs is the first 8 characters of the text without dashes. */
#ifndef BARREL_NODEID_H
#define BARREL_NODEID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

#define BR_NODE_ID_BYTES 32
#define BR_NODE_ID_TEXT_LEN 63 /* 8 groups of 7, 7 dashes; no NUL counted */
#define BR_NODE_ID_SHORT_LEN 8

struct br_node_id {
    uint8_t b[BR_NODE_ID_BYTES];
};

/* The node id of an Ed25519 public key (32 bytes). Thread: any. */
void br_nodeid_from_public_key(const uint8_t pk[32], struct br_node_id *out);

/* Write the text form into out (BR_NODE_ID_TEXT_LEN characters and a NUL). Thread: any. */
void br_nodeid_format(const struct br_node_id *id, char out[BR_NODE_ID_TEXT_LEN + 1]);

/* Write the short form for logs (8 characters and a NUL). Thread: any. */
void br_nodeid_short(const struct br_node_id *id, char out[BR_NODE_ID_SHORT_LEN + 1]);

/* Parse s[0..len) as a node id (see above). On success writes *out. Errors: BR_EINVAL with a
 * reason in eb (NULL allowed) saying what is wrong. Thread: any. */
BR_NODISCARD br_err br_nodeid_parse(const char *s, size_t len, struct br_node_id *out,
                                    struct br_errbuf *eb);

/* True if s[0..len) parses as a node id. Thread: any. */
bool br_nodeid_valid(const char *s, size_t len);

/* Equality of two ids (ids are public: a plain comparison). Thread: any. */
bool br_nodeid_equal(const struct br_node_id *a, const struct br_node_id *b);

#endif
