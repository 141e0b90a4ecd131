/* gossip_test.c — the member table's state machine: learning members, SWIM suspicion and death
 * with indirect probes, refutation by a newer incarnation, precedence of entries, dissemination
 * counts, the membership hash, dial backoff, and refusal of hostile entries. */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/gossip.h"
#include "barrel/nodeid.h"

static char ids[8][BR_NODE_ID_TEXT_LEN + 1];

static void make_ids(void)
{
    for (int i = 0; i < 8; i++) {
        uint8_t pk[32];
        memset(pk, i + 1, sizeof pk);
        struct br_node_id id;
        br_nodeid_from_public_key(pk, &id);
        br_nodeid_format(&id, ids[i]);
    }
}

static br_gossip *mk(int self, uint64_t inc_wall)
{
    struct br_gossip_opts o = {.self = ids[self], .self_inc = {inc_wall, 0}};
    br_gossip *g = NULL;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_gossip_new(&o, &g, &eb), BR_OK, "%s", eb.msg);
    return g;
}

static struct br_wire_peer entry(int who, uint64_t inc, unsigned state, const char **addrs,
                                 size_t n_addrs)
{
    struct br_wire_peer p = {
        .node = ids[who], .addrs = addrs, .n_addrs = n_addrs, .hlc = {inc, 0}, .state = state};
    return p;
}

#define NOW_WALL 1800000000000ull

TestSuite(gossip, .init = make_ids);

Test(gossip, note_link_and_merge_learn_members_with_addresses)
{
    br_gossip *g = mk(0, 1000);
    cr_assert_eq(br_gossip_note(g, ids[1], "10.0.0.1:7070", 0), BR_OK);
    cr_assert_eq(br_gossip_note(g, ids[0], "10.0.0.9:7070", 0), BR_OK, "self is ignored");
    cr_assert_eq(br_gossip_count(g), 1);
    const char *a2[] = {"10.0.0.2:7070"};
    struct br_wire_peer e[] = {entry(2, 500, 0, a2, 1)};
    struct br_gossip_merge_result r;
    cr_assert_eq(br_gossip_merge(g, ids[1], e, 1, 10, NOW_WALL, (struct br_hlc){2000, 0}, &r),
                 BR_OK);
    cr_assert_eq(r.learned, 1);
    const struct br_gossip_member *m = br_gossip_find(g, ids[2]);
    cr_assert_not_null(m);
    cr_assert_str_eq(m->addrs[0], "10.0.0.2:7070");
    cr_assert_eq(m->state, BR_MEMBER_ALIVE);
    br_gossip_free(g);
}

Test(gossip, lost_link_probes_then_suspects_then_declares_dead)
{
    br_gossip *g = mk(0, 1000);
    br_gossip_link_up(g, ids[1], 0);
    cr_assert(br_gossip_link_down(g, ids[1], 100), "the last link going starts a probe");
    cr_assert_eq(br_gossip_tick(g, 1000), 0, "still probing");
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_ALIVE);
    cr_assert_eq(br_gossip_tick(g, 1100), 1);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_SUSPECT);
    cr_assert_eq(br_gossip_tick(g, 4000), 0, "dead_ms not over yet");
    cr_assert_eq(br_gossip_tick(g, 4100), 1);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_DEAD);
    size_t a, s, d;
    br_gossip_counts(g, &a, &s, &d);
    cr_assert(a == 0 && s == 0 && d == 1);
    br_gossip_free(g);
}

Test(gossip, a_yes_from_an_indirect_probe_cancels_the_suspicion)
{
    br_gossip *g = mk(0, 1000);
    br_gossip_link_up(g, ids[1], 0);
    cr_assert(br_gossip_link_down(g, ids[1], 0));
    br_gossip_probe_answer(g, ids[1], false, 10);
    br_gossip_probe_answer(g, ids[1], true, 20);
    br_gossip_tick(g, 5000);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_ALIVE);
    br_gossip_free(g);
}

Test(gossip, a_second_link_keeps_the_member_alive_when_one_goes)
{
    br_gossip *g = mk(0, 1000);
    br_gossip_link_up(g, ids[1], 0);
    br_gossip_link_up(g, ids[1], 0);
    cr_assert_not(br_gossip_link_down(g, ids[1], 0));
    br_gossip_tick(g, 10000);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_ALIVE);
    br_gossip_free(g);
}

Test(gossip, newer_incarnation_wins_and_equal_incarnation_takes_the_worse_state)
{
    br_gossip *g = mk(0, 1000);
    struct br_gossip_merge_result r;
    struct br_hlc now = {NOW_WALL, 0};
    struct br_wire_peer e1[] = {entry(2, 500, 0, NULL, 0)};
    cr_assert_eq(br_gossip_merge(g, ids[1], e1, 1, 0, NOW_WALL, now, &r), BR_OK);
    struct br_wire_peer e2[] = {entry(2, 500, BR_MEMBER_SUSPECT, NULL, 0)};
    cr_assert_eq(br_gossip_merge(g, ids[1], e2, 1, 0, NOW_WALL, now, &r), BR_OK);
    cr_assert_eq(br_gossip_find(g, ids[2])->state, BR_MEMBER_SUSPECT);
    struct br_wire_peer e3[] = {entry(2, 500, 0, NULL, 0)}; /* same incarnation, alive: stale */
    cr_assert_eq(br_gossip_merge(g, ids[1], e3, 1, 0, NOW_WALL, now, &r), BR_OK);
    cr_assert_eq(r.changed, 0);
    cr_assert_eq(br_gossip_find(g, ids[2])->state, BR_MEMBER_SUSPECT);
    struct br_wire_peer e4[] = {entry(2, 600, 0, NULL, 0)}; /* the member refuted */
    cr_assert_eq(br_gossip_merge(g, ids[2], e4, 1, 0, NOW_WALL, now, &r), BR_OK);
    cr_assert_eq(br_gossip_find(g, ids[2])->state, BR_MEMBER_ALIVE);
    struct br_wire_peer e5[] = {entry(2, 400, BR_MEMBER_DEAD, NULL, 0)}; /* older: ignored */
    cr_assert_eq(br_gossip_merge(g, ids[1], e5, 1, 0, NOW_WALL, now, &r), BR_OK);
    cr_assert_eq(br_gossip_find(g, ids[2])->state, BR_MEMBER_ALIVE);
    br_gossip_free(g);
}

Test(gossip, a_suspected_node_refutes_with_a_newer_incarnation)
{
    br_gossip *g = mk(0, 1000);
    struct br_gossip_merge_result r;
    struct br_wire_peer e[] = {entry(0, 1000, BR_MEMBER_SUSPECT, NULL, 0)};
    cr_assert_eq(br_gossip_merge(g, ids[1], e, 1, 0, NOW_WALL, (struct br_hlc){1500, 0}, &r),
                 BR_OK);
    cr_assert_eq(br_gossip_self(g)->inc.wall, 1500);
    struct br_wire_peer out[8];
    size_t n = br_gossip_entries(g, out, 8, 0, 0);
    cr_assert_geq(n, 1, "the refutation is piggybacked");
    cr_assert_str_eq(out[0].node, ids[0]);
    cr_assert_eq(out[0].state, BR_MEMBER_ALIVE);
    cr_assert_eq(out[0].hlc.wall, 1500);
    /* an old suspicion (before our incarnation) needs no refutation */
    struct br_wire_peer old[] = {entry(0, 900, BR_MEMBER_DEAD, NULL, 0)};
    cr_assert_eq(br_gossip_merge(g, ids[1], old, 1, 0, NOW_WALL, (struct br_hlc){1600, 0}, &r),
                 BR_OK);
    cr_assert_eq(br_gossip_self(g)->inc.wall, 1500);
    br_gossip_free(g);
}

Test(gossip, a_restarted_member_comes_back_alive)
{
    br_gossip *g = mk(0, 1000);
    struct br_gossip_merge_result r;
    struct br_hlc now = {NOW_WALL, 0};
    br_gossip_link_up(g, ids[1], 0);
    br_gossip_link_down(g, ids[1], 0);
    br_gossip_tick(g, 1000);
    br_gossip_tick(g, 5000);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_DEAD);
    struct br_wire_peer e[] = {entry(1, 2000, 0, NULL, 0)};
    cr_assert_eq(br_gossip_merge(g, ids[1], e, 1, 6000, NOW_WALL, now, &r), BR_OK);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_ALIVE);
    br_gossip_free(g);
}

Test(gossip, changes_are_piggybacked_a_bounded_number_of_times)
{
    br_gossip *g = mk(0, 1000);
    br_gossip_link_up(g, ids[1], 0);
    br_gossip_link_down(g, ids[1], 0);
    br_gossip_tick(g, 1000); /* suspect: a change to spread */
    struct br_wire_peer out[8];
    size_t times = 0;
    for (int round = 0; round < 100; round++) {
        size_t n = br_gossip_entries(g, out, 8, 0, 0);
        for (size_t i = 0; i < n; i++)
            times += strcmp(out[i].node, ids[1]) == 0;
    }
    cr_assert_gt(times, 2);
    cr_assert_lt(times, 30);
    cr_assert_eq(br_gossip_entries(g, out, 8, 0, 0), 0, "an idle table sends nothing");
    br_gossip_free(g);
}

Test(gossip, samples_spread_membership_and_hashes_agree_after_a_full_exchange)
{
    br_gossip *a = mk(0, 1000), *b = mk(1, 1000);
    const char *ad[] = {"10.0.0.9:1"};
    for (int i = 2; i < 6; i++)
        cr_assert_eq(br_gossip_note(a, ids[i], ad[0], 0), BR_OK);
    cr_assert_eq(br_gossip_note(a, ids[1], ad[0], 0), BR_OK);
    cr_assert_eq(br_gossip_note(b, ids[0], ad[0], 0), BR_OK);
    cr_assert_neq(br_gossip_mhash(a), br_gossip_mhash(b));
    struct br_wire_peer out[BR_GOSSIP_MAX_ENTRIES];
    struct br_gossip_merge_result r;
    struct br_hlc now = {NOW_WALL, 0};
    size_t n = br_gossip_all(a, out, BR_GOSSIP_MAX_ENTRIES);
    cr_assert_eq(br_gossip_merge(b, ids[0], out, n, 0, NOW_WALL, now, &r), BR_OK);
    n = br_gossip_all(b, out, BR_GOSSIP_MAX_ENTRIES);
    cr_assert_eq(br_gossip_merge(a, ids[1], out, n, 0, NOW_WALL, now, &r), BR_OK);
    cr_assert_eq(br_gossip_count(b), 5, "b learned every member a knew");
    cr_assert_eq(br_gossip_mhash(a), br_gossip_mhash(b));
    br_gossip_free(a);
    br_gossip_free(b);
}

Test(gossip, hostile_entries_are_refused_with_a_reason)
{
    br_gossip *g = mk(0, 1000);
    struct br_gossip_merge_result r;
    struct br_hlc now = {NOW_WALL, 0};
    const char *bad_addr[] = {"no-port"};
    const char *ok_addr[] = {"[fe80::1]:7070"};
    struct br_wire_peer e[] = {
        {.node = "not-a-node-id", .hlc = {1, 0}},
        entry(2, NOW_WALL + 3600 * 1000, 0, NULL, 0), /* an impossible incarnation */
        entry(3, 5, 0, bad_addr, 1),
        entry(4, 5, 0, ok_addr, 1),
    };
    cr_assert_eq(br_gossip_merge(g, ids[1], e, 4, 0, NOW_WALL, now, &r), BR_OK);
    cr_assert_eq(r.refused, 3);
    cr_assert_eq(r.accepted, 1);
    cr_assert(strstr(r.reason, "not a node id"), "%s", r.reason);
    cr_assert_null(br_gossip_find(g, ids[2]));
    cr_assert_null(br_gossip_find(g, ids[3]));
    cr_assert_not_null(br_gossip_find(g, ids[4]));
    /* a huge member list is refused whole */
    static struct br_wire_peer many[BR_GOSSIP_MAX_ENTRIES + 1];
    for (size_t i = 0; i < BR_GOSSIP_MAX_ENTRIES + 1; i++)
        many[i] = entry(5, 5, 0, NULL, 0);
    cr_assert_eq(br_gossip_merge(g, ids[1], many, BR_GOSSIP_MAX_ENTRIES + 1, 0, NOW_WALL, now, &r),
                 BR_EPROTO);
    cr_assert(strstr(r.reason, "entries"), "%s", r.reason);
    /* a death of this node claimed ahead of what we can refute with */
    struct br_wire_peer me[] = {entry(0, NOW_WALL, BR_MEMBER_DEAD, NULL, 0)};
    cr_assert_eq(br_gossip_merge(g, ids[1], me, 1, 0, NOW_WALL, (struct br_hlc){2000, 0}, &r),
                 BR_OK);
    cr_assert_eq(r.refused, 1);
    br_gossip_free(g);
}

Test(gossip, the_table_is_bounded)
{
    struct br_gossip_opts o = {.self = ids[0], .self_inc = {1, 0}, .max_members = 2};
    br_gossip *g = NULL;
    cr_assert_eq(br_gossip_new(&o, &g, NULL), BR_OK);
    cr_assert_eq(br_gossip_note(g, ids[1], NULL, 0), BR_OK);
    cr_assert_eq(br_gossip_note(g, ids[2], NULL, 0), BR_OK);
    cr_assert_eq(br_gossip_note(g, ids[3], NULL, 0), BR_ETOOBIG);
    struct br_gossip_merge_result r;
    struct br_wire_peer e[] = {entry(4, 1, 0, NULL, 0)};
    cr_assert_eq(br_gossip_merge(g, ids[1], e, 1, 0, NOW_WALL, (struct br_hlc){2, 0}, &r), BR_OK);
    cr_assert_eq(r.refused, 1);
    cr_assert(strstr(r.reason, "full"), "%s", r.reason);
    br_gossip_free(g);
}

Test(gossip, dial_candidates_skip_linked_dead_and_backed_off_members)
{
    br_gossip *g = mk(0, 1000);
    cr_assert_eq(br_gossip_note(g, ids[1], "h:1", 0), BR_OK);
    cr_assert_eq(br_gossip_note(g, ids[2], "h:2", 0), BR_OK);
    cr_assert_eq(br_gossip_note(g, ids[3], NULL, 0), BR_OK); /* no address */
    br_gossip_link_up(g, ids[1], 0);
    const struct br_gossip_member *c[8];
    size_t n = br_gossip_dial_candidates(g, 0, c, 8);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(c[0]->id, ids[2]);
    br_gossip_dial_failed(g, ids[2], 0);
    cr_assert_eq(br_gossip_dial_candidates(g, 100, c, 8), 0, "backing off");
    cr_assert_eq(br_gossip_dial_candidates(g, 600, c, 8), 1);
    br_gossip_dial_failed(g, ids[2], 600);
    cr_assert_eq(br_gossip_dial_candidates(g, 1500, c, 8), 0, "the delay doubled");
    cr_assert_eq(br_gossip_dial_candidates(g, 1700, c, 8), 1);
    /* a dead member is retried, but only every reconnect_ms */
    br_gossip_link_up(g, ids[2], 2000);
    br_gossip_link_down(g, ids[2], 2000);
    br_gossip_tick(g, 3000);
    br_gossip_tick(g, 6000);
    cr_assert_eq(br_gossip_find(g, ids[2])->state, BR_MEMBER_DEAD);
    cr_assert_eq(br_gossip_dial_candidates(g, 6100, c, 8), 0, "just died");
    cr_assert_eq(br_gossip_dial_candidates(g, 16000, c, 8), 1, "a partition may have healed");
    br_gossip_dial_failed(g, ids[2], 16000);
    cr_assert_eq(br_gossip_dial_candidates(g, 20000, c, 8), 0);
    cr_assert_eq(br_gossip_dial_candidates(g, 26000, c, 8), 1);
    br_gossip_free(g);
}

Test(gossip, a_member_no_dial_reaches_is_probed_and_a_wrong_address_is_dropped)
{
    br_gossip *g = mk(0, 1000);
    cr_assert_eq(br_gossip_note(g, ids[1], "10.0.0.1:1", 0), BR_OK);
    cr_assert_eq(br_gossip_note(g, ids[1], "10.0.0.2:1", 0), BR_OK);
    br_gossip_drop_addr(g, ids[1], "10.0.0.2:1");
    cr_assert_eq(br_gossip_find(g, ids[1])->n_addrs, 1);
    cr_assert_str_eq(br_gossip_find(g, ids[1])->addrs[0], "10.0.0.1:1");
    cr_assert_not(br_gossip_unreachable(g, ids[1], 0), "one failure is not enough");
    for (int i = 0; i < 3; i++)
        br_gossip_dial_failed(g, ids[1], 0);
    cr_assert(br_gossip_unreachable(g, ids[1], 100));
    cr_assert_not(br_gossip_unreachable(g, ids[1], 100), "already probing");
    br_gossip_tick(g, 1200);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_SUSPECT);
    br_gossip_tick(g, 4300);
    cr_assert_eq(br_gossip_find(g, ids[1])->state, BR_MEMBER_DEAD);
    br_gossip_free(g);
}
