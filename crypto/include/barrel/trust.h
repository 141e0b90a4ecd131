/* trust.h — which peers a node accepts on a link, by node id.
 *
 * A policy holds an allow list and a deny list of node ids. The rule, applied to a peer whose
 * identity the handshake has just proved:
 *   1. a denied id is refused, always ("peer_denied");
 *   2. without a mesh key, only allow-listed ids are accepted ("peer_unknown" otherwise);
 *   3. with a mesh key, any member is accepted when the allow list is empty; when it is not
 *      empty, only allow-listed ids are ("peer_unknown" otherwise).
 * A NULL policy behaves as an empty one. Not thread-safe: build it, then share it read-only. */
#ifndef BARREL_TRUST_H
#define BARREL_TRUST_H

#include <stdbool.h>
#include <stddef.h>

#include "barrel/err.h"
#include "barrel/nodeid.h"

typedef struct br_trust br_trust;

enum br_trust_verdict {
    BR_TRUST_ACCEPT = 0,
    BR_TRUST_DENIED = 1,  /* on the deny list */
    BR_TRUST_UNKNOWN = 2, /* not on the allow list where one is required */
};

BR_NODISCARD br_err br_trust_new(br_trust **out);
void br_trust_free(br_trust *t); /* NULL is a no-op */

/* Add an id to the allow or deny list (duplicates are ignored). Errors: BR_ENOMEM.
 * Thread: the owner, before sharing. */
BR_NODISCARD br_err br_trust_allow(br_trust *t, const struct br_node_id *id);
BR_NODISCARD br_err br_trust_deny(br_trust *t, const struct br_node_id *id);

/* Apply the rule above; has_mesh says whether a mesh key is in use. Thread: any. */
enum br_trust_verdict br_trust_check(const br_trust *t, const struct br_node_id *id, bool has_mesh);

#endif
