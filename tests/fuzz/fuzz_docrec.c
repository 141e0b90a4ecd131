/* fuzz_docrec.c — libFuzzer harness for the stored document record decoder (docrec_decode):
 * bytes read from disk are untrusted, so any input must decode or fail with an error, never
 * crash. A record that decodes is encoded again, decoded again, and must give the same tree
 * (node count, winner, leaves) and the same leaf data. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/buf.h"

#include "store_int.h"

/* att_ref is reached only through docrec_drop_leaf, which this harness does not call. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct docrec a, b;
    docrec_init(&a);
    docrec_init(&b);
    br_buf enc;
    br_buf_init(&enc, 0);
    if (docrec_decode(data, size, &a) != BR_OK)
        goto out;
    if (docrec_encode(&a, &enc) != BR_OK)
        goto out;
    if (docrec_decode(enc.data, enc.len, &b) != BR_OK)
        abort();
    if (a.tree.n != b.tree.n || a.n_leaves != b.n_leaves || br_hlc_cmp(a.seq, b.seq) != 0 ||
        a.packed != b.packed || (a.packed && br_hlc_cmp(a.pack_key, b.pack_key) != 0))
        abort();
    uint32_t wa = br_revtree_winner(&a.tree), wb = br_revtree_winner(&b.tree);
    if ((wa == BR_REVTREE_NONE) != (wb == BR_REVTREE_NONE))
        abort();
    if (wa != BR_REVTREE_NONE && !br_rev_eq(&a.tree.nodes[wa].rev, &b.tree.nodes[wb].rev))
        abort();
    for (size_t i = 0; i < a.n_leaves; i++) {
        struct leafdata *lb = docrec_leaf(&b, &a.leaves[i].rev);
        if (!lb || lb->body_len != a.leaves[i].body_len ||
            memcmp(lb->body, a.leaves[i].body, lb->body_len) != 0 ||
            lb->n_atts != a.leaves[i].n_atts)
            abort();
    }
out:
    docrec_fini(&a);
    docrec_fini(&b);
    br_buf_fini(&enc);
    return 0;
}
