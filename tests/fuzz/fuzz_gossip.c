/* fuzz_gossip.c — libFuzzer harness for gossip input: decode the bytes as a wire message; if it
 * is a `peers` message, merge its entries into a member table twice (from a member and from a
 * stranger), tick the timers, and check that the table's invariants hold (bounded size, every
 * member a valid node id with valid states) and that what it gossips back encodes and decodes.
 * Any violation aborts. Built with -fsanitize=fuzzer,address,undefined, or linked with
 * replay_main.c to replay the corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/gossip.h"
#include "barrel/nodeid.h"
#include "barrel/wire.h"

static void require(bool ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct br_wire_msg *m = NULL;
    struct br_errbuf eb;
    if (br_wire_decode(data, size, &m, NULL, &eb) != BR_OK)
        return 0;
    if (m->type != BR_WIRE_PEERS) {
        br_wire_msg_free(m);
        return 0;
    }
    uint8_t pk[32];
    memset(pk, 7, sizeof pk);
    struct br_node_id id;
    char self[BR_NODE_ID_TEXT_LEN + 1], from[BR_NODE_ID_TEXT_LEN + 1];
    br_nodeid_from_public_key(pk, &id);
    br_nodeid_format(&id, self);
    memset(pk, 8, sizeof pk);
    br_nodeid_from_public_key(pk, &id);
    br_nodeid_format(&id, from);
    struct br_gossip_opts o = {.self = self, .self_inc = {1000, 0}, .max_members = 64};
    br_gossip *g = NULL;
    require(br_gossip_new(&o, &g, NULL) == BR_OK);
    struct br_gossip_merge_result r;
    uint64_t wall = 1800000000000ull;
    br_err e1 = br_gossip_merge(g, from, m->u.peers.peers, m->u.peers.n, 10, wall,
                                (struct br_hlc){wall, 0}, &r);
    br_err e2 = br_gossip_merge(g, "stranger", m->u.peers.peers, m->u.peers.n, 20, wall,
                                (struct br_hlc){wall, 1}, &r);
    require((e1 == BR_OK || e1 == BR_EPROTO) && (e2 == BR_OK || e2 == BR_EPROTO));
    br_gossip_tick(g, 100000);
    require(br_gossip_count(g) <= 64);
    for (size_t i = 0; i < br_gossip_count(g); i++) {
        const struct br_gossip_member *mm = br_gossip_at(g, i);
        require(br_nodeid_valid(mm->id, strlen(mm->id)));
        require(mm->state <= BR_MEMBER_DEAD && mm->n_addrs <= BR_GOSSIP_MAX_ADDRS);
    }
    static struct br_wire_peer out[BR_GOSSIP_MAX_ENTRIES];
    struct br_wire_msg back = {.type = BR_WIRE_PEERS};
    back.u.peers.peers = out;
    back.u.peers.n = br_gossip_all(g, out, BR_GOSSIP_MAX_ENTRIES);
    back.u.peers.mhash = br_gossip_mhash(g);
    br_buf b;
    br_buf_init(&b, 0);
    require(br_wire_encode(&back, &b, &eb) == BR_OK);
    struct br_wire_msg *m2 = NULL;
    require(br_wire_decode(b.data, b.len, &m2, NULL, &eb) == BR_OK);
    require(m2->u.peers.n == back.u.peers.n);
    br_wire_msg_free(m2);
    br_buf_fini(&b);
    br_gossip_free(g);
    br_wire_msg_free(m);
    return 0;
}
