/* fuzz_changes.c — libFuzzer harness for stored change entries: change_items_decode (the feed
 * and fsck read every entry through it) and the merge operator's item removal
 * (changes_drop_items), which RocksDB runs on stored bytes in reads and compactions. The first
 * 12 bytes are the entry's key HLC, the rest its value. Any input must decode or fail cleanly;
 * a packed entry that decodes, with every other item dropped, must decode again to exactly the
 * items kept. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

static bool same_change(const struct br_change *a, const struct br_change *b)
{
    return br_hlc_cmp(a->seq, b->seq) == 0 && a->deleted == b->deleted &&
           br_rev_eq(&a->rev, &b->rev) && a->id_len == b->id_len &&
           memcmp(a->id, b->id, a->id_len) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < BR_HLC_BYTES)
        return 0;
    struct br_hlc key = br_hlc_decode(data);
    const char *v = (const char *)data + BR_HLC_BYTES;
    size_t vl = size - BR_HLC_BYTES;
    struct change_items a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    uint8_t *drops = NULL;
    char *kept = NULL;
    if (change_items_decode(key, v, vl, &a) != BR_OK || !a.packed)
        goto out;
    drops = malloc(a.n * CHANGE_DROP_LEN + 1);
    if (!drops)
        goto out;
    size_t nd = 0;
    for (size_t i = 0; i < a.n; i += 2) /* ascending items: the drops come out sorted */
        br_hlc_encode(a.c[i].seq, drops + CHANGE_DROP_LEN * nd++);
    size_t kl = 0;
    kept = changes_drop_items(key, v, vl, drops, nd, &kl);
    if (!kept) /* a packed entry that decodes is well formed */
        abort();
    if (change_items_decode(key, kept, kl, &b) != BR_OK || !b.packed || b.n != a.n - nd)
        abort();
    for (size_t i = 0; i < b.n; i++)
        if (!same_change(&b.c[i], &a.c[2 * i + 1]))
            abort();
out:
    free(kept);
    free(drops);
    change_items_fini(&a);
    change_items_fini(&b);
    return 0;
}
