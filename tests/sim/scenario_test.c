/* scenario_test.c — the scenario language of simulations/ (SCENARIOS.md): every line kind with
 * its defaults and explicit values, the errors (line number and reason), selector syntax and
 * resolution, event order, and every file of simulations/scenarios/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <dirent.h>

#include "barrel/alloc.h"

#include "scenario.h"
#include "testutil.h"

#ifndef SC_SCENARIO_DIR
#define SC_SCENARIO_DIR BARREL_SOURCE_DIR "/simulations/scenarios"
#endif

static void parse_ok(const char *text, struct scenario *s)
{
    struct br_errbuf eb = {{0}};
    br_err e = sc_parse(text, strlen(text), "t", s, &eb);
    cr_assert_eq(e, BR_OK, "parse failed: %s\n--- text ---\n%s", eb.msg, text);
}

/* Expect BR_EINVAL with "LINE: ..." containing `why`, and *out untouched. */
static void rejects_n(const char *text, size_t len, unsigned line, const char *why)
{
    struct scenario s;
    struct br_errbuf eb = {{0}};
    memset(&s, 0x5a, sizeof s);
    br_err e = sc_parse(text, len, "t", &s, &eb);
    cr_assert_eq(e, BR_EINVAL, "accepted (e=%d): %.200s", (int)e, text);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%u: ", line);
    cr_assert(strncmp(eb.msg, prefix, strlen(prefix)) == 0, "message '%s' is not on line %u",
              eb.msg, line);
    cr_assert(strstr(eb.msg, why), "message '%s' lacks '%s'", eb.msg, why);
    cr_assert_eq(((unsigned char *)&s)[0], 0x5a, "out written on error");
}

static void rejects(const char *text, unsigned line, const char *why)
{
    rejects_n(text, strlen(text), line, why);
}

/* ---- line kinds ---- */

Test(scenario, minimal_file_gets_every_default)
{
    struct scenario s;
    parse_ok("db items\n", &s);
    cr_assert_str_eq(s.name, "t");
    cr_assert_eq(s.nodes, 5);
    cr_assert_eq(s.topology, SC_TOPO_MESH);
    cr_assert_eq(s.max_links, 8);
    cr_assert_eq(s.interval_ms, 200);
    cr_assert_eq(s.fanout, 3);
    cr_assert_eq(s.probe_ms, 1000);
    cr_assert_eq(s.dead_ms, 3000);
    cr_assert_eq(s.net.latency_ms, 5);
    cr_assert_eq(s.net.jitter_ms, 0);
    cr_assert(s.net.loss == 0 && s.net.dup == 0 && s.net.reorder == 0);
    cr_assert_eq(s.net.bandwidth_bps, 0);
    cr_assert_eq(s.net.timeout_ms, 5000);
    cr_assert_eq(s.n_dbs, 1);
    cr_assert_str_eq(s.dbs[0], "items");
    cr_assert_eq(s.n_filters, 0);
    cr_assert_eq(s.n_skews, 0);
    cr_assert_eq(s.n_events, 0);
    cr_assert_eq(s.settle_ms, 60000);
    sc_free(&s);
}

Test(scenario, default_name_is_scenario_without_one)
{
    struct scenario s;
    struct br_errbuf eb;
    cr_assert_eq(sc_parse("db a", 4, NULL, &s, &eb), BR_OK, "%s", eb.msg);
    cr_assert_str_eq(s.name, "scenario");
    sc_free(&s);
    cr_assert_eq(sc_parse("name x.y-Z_1\ndb a", 17, "ignored", &s, &eb), BR_OK, "%s", eb.msg);
    cr_assert_str_eq(s.name, "x.y-Z_1");
    sc_free(&s);
}

Test(scenario, header_lines_take_explicit_values)
{
    struct scenario s;
    parse_ok("# star.scn: a comment line\n"
             "name star-filtered\n"
             "nodes 12                       # default; --nodes N overrides\n"
             "topology star\n"
             "max_links 4\n"
             "gossip interval=250ms fanout=5 probe=2s dead=1m\n"
             "net latency=10ms jitter=5ms loss=1% dup=0.5% reorder=100% bandwidth=10mbit "
             "timeout=5s\n"
             "db readings\n"
             "db other_db$(x)+/-1\n"
             "filter db=readings nodes=1,3-4 paths=site/site-1|a/+/b|c/#\n"
             "skew nodes=3 ms=-4000\n"
             "skew nodes=all ms=250\n"
             "settle 2h\n",
             &s);
    cr_assert_str_eq(s.name, "star-filtered");
    cr_assert_eq(s.nodes, 12);
    cr_assert_eq(s.topology, SC_TOPO_STAR);
    cr_assert_eq(s.max_links, 4);
    cr_assert_eq(s.interval_ms, 250);
    cr_assert_eq(s.fanout, 5);
    cr_assert_eq(s.probe_ms, 2000);
    cr_assert_eq(s.dead_ms, 60000);
    cr_assert_eq(s.net.latency_ms, 10);
    cr_assert_eq(s.net.jitter_ms, 5);
    cr_assert_float_eq(s.net.loss, 0.01, 1e-12);
    cr_assert_float_eq(s.net.dup, 0.005, 1e-12);
    cr_assert_float_eq(s.net.reorder, 1.0, 1e-12);
    cr_assert_eq(s.net.bandwidth_bps, 1250000);
    cr_assert_eq(s.net.timeout_ms, 5000);
    cr_assert_eq(s.n_dbs, 2);
    cr_assert_str_eq(s.dbs[1], "other_db$(x)+/-1");
    cr_assert_eq(s.n_filters, 1);
    cr_assert_str_eq(s.filters[0].db, "readings");
    cr_assert_str_eq(s.filters[0].nodes, "1,3-4");
    cr_assert_str_eq(s.filters[0].paths, "site/site-1|a/+/b|c/#"); /* '#' in a word: no comment */
    cr_assert_eq(s.n_skews, 2);
    cr_assert_str_eq(s.skews[0].nodes, "3");
    cr_assert_eq(s.skews[0].ms, -4000);
    cr_assert_eq(s.skews[1].ms, 250);
    cr_assert_eq(s.settle_ms, 2 * 3600 * 1000);
    sc_free(&s);
}

Test(scenario, gossip_and_net_lines_without_keys_keep_defaults)
{
    struct scenario s;
    parse_ok("gossip\nnet loss=2\ndb a\n", &s);
    cr_assert_eq(s.interval_ms, 200);
    cr_assert_eq(s.fanout, 3);
    cr_assert_float_eq(s.net.loss, 0.02, 1e-12); /* the '%' is optional */
    cr_assert_eq(s.net.latency_ms, 5);
    sc_free(&s);
}

Test(scenario, every_topology_parses)
{
    const char *names[] = {"mesh", "chain", "full", "star"};
    for (int t = 0; t < 4; t++) {
        char text[64];
        snprintf(text, sizeof text, "topology %s\ndb a\n", names[t]);
        struct scenario s;
        parse_ok(text, &s);
        cr_assert_eq(s.topology, (enum sc_topology)t);
        cr_assert_str_eq(sc_topology_name(s.topology), names[t]);
        sc_free(&s);
    }
}

Test(scenario, durations_take_every_unit)
{
    const struct {
        const char *d;
        uint64_t ms;
    } v[] = {{"0", 0},       {"250", 250},     {"200ms", 200},       {"5s", 5000},
             {"2m", 120000}, {"3h", 10800000}, {"7d", 604800000ull}, {"365d", 31536000000ull}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "db a\nsettle %s\n", v[i].d);
        struct scenario s;
        parse_ok(text, &s);
        cr_assert_eq(s.settle_ms, v[i].ms, "%s", v[i].d);
        sc_free(&s);
    }
}

Test(scenario, bandwidth_takes_bits_units_or_bytes)
{
    const struct {
        const char *b;
        uint64_t bps;
    } v[] = {{"0", 0}, {"1000", 1000}, {"8kbit", 1000}, {"10mbit", 1250000}, {"1gbit", 125000000}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "db a\nnet bandwidth=%s\n", v[i].b);
        struct scenario s;
        parse_ok(text, &s);
        cr_assert_eq(s.net.bandwidth_bps, v[i].bps, "%s", v[i].b);
        sc_free(&s);
    }
}

Test(scenario, every_action_parses)
{
    struct scenario s;
    parse_ok("db readings\n"
             "at 0s   write nodes=rest db=readings docs=20\n"
             "at 1s   write nodes=all db=readings docs=3 shared\n"
             "at 2s   update nodes=random:2 db=readings docs=5\n"
             "at 3s   delete nodes=50% db=readings docs=1\n"
             "at 4s   partition half | other-half\n"
             "at 5s   heal\n"
             "at 6s   cut a=0 b=$\n"
             "at 7s   crash nodes=2\n"
             "at 8s   restart nodes=2\n"
             "at 9s   leave nodes=$\n"
             "at 10s  join nodes=1-2,4\n"
             "at 11s  churn nodes=rest every=3s down=1s until=1m\n",
             &s);
    cr_assert_eq(s.n_events, 12);
    const struct sc_event *e = s.events;
    for (size_t i = 0; i < s.n_events; i++) {
        cr_assert_eq(e[i].at_ms, i * 1000);
        cr_assert_eq(e[i].line, i + 2);
    }
    cr_assert_eq(e[0].kind, SC_WRITE);
    cr_assert_str_eq(e[0].nodes, "rest");
    cr_assert_str_eq(e[0].db, "readings");
    cr_assert_eq(e[0].docs, 20);
    cr_assert_not(e[0].shared);
    cr_assert(e[1].shared);
    cr_assert_eq(e[2].kind, SC_UPDATE);
    cr_assert_str_eq(e[2].nodes, "random:2");
    cr_assert_eq(e[3].kind, SC_DELETE);
    cr_assert_eq(e[3].docs, 1);
    cr_assert_eq(e[4].kind, SC_PARTITION);
    cr_assert_str_eq(e[4].nodes, "half");
    cr_assert_str_eq(e[4].nodes2, "other-half");
    cr_assert_eq(e[5].kind, SC_HEAL);
    cr_assert_eq(e[6].kind, SC_CUT);
    cr_assert_eq(e[6].a, 0);
    cr_assert_eq(e[6].b, UINT32_MAX);
    cr_assert_eq(e[7].kind, SC_CRASH);
    cr_assert_str_eq(e[7].nodes, "2");
    cr_assert_eq(e[8].kind, SC_RESTART);
    cr_assert_eq(e[9].kind, SC_LEAVE);
    cr_assert_str_eq(e[9].nodes, "$");
    cr_assert_eq(e[10].kind, SC_JOIN);
    cr_assert_str_eq(e[10].nodes, "1-2,4");
    cr_assert_eq(e[11].kind, SC_CHURN);
    cr_assert_eq(e[11].every_ms, 3000);
    cr_assert_eq(e[11].down_ms, 1000);
    cr_assert_eq(e[11].until_ms, 60000);
    const char *names[] = {"write", "write", "update",  "delete", "partition", "heal",
                           "cut",   "crash", "restart", "leave",  "join",      "churn"};
    for (size_t i = 0; i < s.n_events; i++)
        cr_assert_str_eq(sc_kind_name(e[i].kind), names[i]);
    sc_free(&s);
}

Test(scenario, partition_accepts_the_bar_with_or_without_spaces)
{
    const char *forms[] = {"0,1 | 2-$", "0,1|2-$", "0,1 |2-$", "0,1| 2-$"};
    for (size_t i = 0; i < 4; i++) {
        char text[128];
        snprintf(text, sizeof text, "db a\nat 1s partition %s\n", forms[i]);
        struct scenario s;
        parse_ok(text, &s);
        cr_assert_str_eq(s.events[0].nodes, "0,1");
        cr_assert_str_eq(s.events[0].nodes2, "2-$");
        sc_free(&s);
    }
}

Test(scenario, crlf_tabs_comments_and_no_final_newline)
{
    struct scenario s;
    parse_ok("# only a comment\r\n\r\n\tnodes\t7  # seven\r\n   \r\ndb a\r\n#\r\nsettle 1s", &s);
    cr_assert_eq(s.nodes, 7);
    cr_assert_eq(s.settle_ms, 1000);
    sc_free(&s);
}

Test(scenario, db_may_be_declared_after_its_use)
{
    struct scenario s;
    parse_ok("filter db=b nodes=1 paths=x\nat 0s write nodes=0 db=b docs=1\ndb b\n", &s);
    cr_assert_eq(s.n_events, 1);
    sc_free(&s);
}

Test(scenario, events_are_sorted_by_time_stably)
{
    struct scenario s;
    parse_ok("db a\n"
             "at 5s crash nodes=1\n"      /* 2 */
             "at 1s crash nodes=2\n"      /* 3 */
             "at 5s restart nodes=1\n"    /* 4 */
             "at 1000 crash nodes=3\n"    /* 5: the same time as line 3 */
             "at 0s heal\n"               /* 6 */
             "at 5000ms crash nodes=4\n", /* 7 */
             &s);
    unsigned want[] = {6, 3, 5, 2, 4, 7};
    cr_assert_eq(s.n_events, 6);
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(s.events[i].line, want[i], "event %zu is line %u", i, s.events[i].line);
    for (size_t i = 1; i < 6; i++)
        cr_assert_leq(s.events[i - 1].at_ms, s.events[i].at_ms);
    sc_free(&s);
}

Test(scenario, many_equal_times_keep_file_order)
{
    enum { N = 500 };
    size_t cap = N * 40 + 16;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    size_t o = (size_t)snprintf(text, cap, "db a\n");
    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(text + o, cap - o, "at %ds crash nodes=%d\n", i % 3, i % 10);
    struct scenario s;
    parse_ok(text, &s);
    cr_assert_eq(s.n_events, N);
    for (size_t i = 1; i < N; i++) {
        const struct sc_event *a = &s.events[i - 1], *b = &s.events[i];
        cr_assert(a->at_ms < b->at_ms || (a->at_ms == b->at_ms && a->line < b->line));
    }
    sc_free(&s);
    free(text);
}

Test(scenario, exactly_max_events_is_fine)
{
    size_t cap = (size_t)SC_MAX_EVENTS * 16 + 16;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    size_t o = (size_t)snprintf(text, cap, "db a\n");
    for (int i = 0; i < SC_MAX_EVENTS; i++)
        o += (size_t)snprintf(text + o, cap - o, "at %d heal\n", i);
    struct scenario s;
    parse_ok(text, &s);
    cr_assert_eq(s.n_events, SC_MAX_EVENTS);
    sc_free(&s);
    free(text);
}

/* ---- errors ---- */

Test(scenario, rejects_unknown_keyword)
{
    rejects("db a\n\nbogus 1\n", 3, "unknown keyword 'bogus'");
}

Test(scenario, rejects_bad_durations)
{
    rejects("db a\nsettle 5x\n", 2, "bad duration '5x'");
    rejects("db a\nsettle s\n", 2, "bad duration 's'");
    rejects("db a\nsettle -1s\n", 2, "bad duration");
    rejects("db a\nsettle 1.5s\n", 2, "bad duration");
    rejects("db a\nsettle 366d\n", 2, "out of range");
    rejects("db a\nsettle 99999999999999999999999d\n", 2, "bad duration");
    rejects("db a\nsettle 18446744073709551615\n", 2, "out of range");
    rejects("db a\ngossip interval=0s\n", 2, "gossip interval '0s' out of range");
    rejects("db a\ngossip interval=50d\n", 2, "out of range"); /* past UINT_MAX ms */
    rejects("db a\nat soon heal\n", 2, "bad duration 'soon'");
}

Test(scenario, rejects_percentages_out_of_0_to_100)
{
    rejects("db a\nnet loss=101%\n", 2, "bad percentage '101%' for net loss");
    rejects("db a\nnet dup=100.5%\n", 2, "bad percentage");
    rejects("db a\nnet reorder=-1%\n", 2, "bad percentage");
    rejects("db a\nnet loss=1.%\n", 2, "bad percentage");
    rejects("db a\nnet loss=0.0000001%\n", 2, "bad percentage"); /* 7 decimals */
    rejects("db a\nnet loss=%\n", 2, "bad percentage");
}

Test(scenario, rejects_node_counts_out_of_range)
{
    rejects("nodes 0\ndb a\n", 1, "nodes 0 out of range (1..1000)");
    rejects("nodes 1001\ndb a\n", 1, "out of range");
    rejects("nodes 99999999999999999999999\ndb a\n", 1, "bad number");
    rejects("nodes five\n", 1, "bad number 'five'");
    rejects("nodes\n", 1, "'nodes' needs a value");
    rejects("nodes 3 4\n", 1, "unexpected '4'");
    rejects("db a\nmax_links 65\n", 2, "max_links 65 out of range");
    rejects("db a\ngossip fanout=0\n", 2, "fanout 0 out of range");
}

Test(scenario, rejects_undeclared_db)
{
    rejects("db a\nat 1s write nodes=all db=b docs=1\n", 2, "db 'b' is not declared");
    rejects("db a\nfilter db=zz nodes=1 paths=x\n", 2, "db 'zz' is not declared");
    /* the first offender in file order is named */
    rejects("db a\nat 1s write nodes=all db=c docs=1\nfilter db=d nodes=1 paths=x\n", 2, "'c'");
    rejects("db a\nat 1s write nodes=all db=c docs=1\n\nat 0s delete nodes=all db=e docs=1\n", 2,
            "'c'");
}

Test(scenario, rejects_missing_db_line)
{
    rejects("nodes 3\n# nothing else\n", 2, "no 'db' line");
    rejects("", 1, "no 'db' line");
}

Test(scenario, rejects_bad_database_names)
{
    rejects("db Items\n", 1, "bad database name 'Items'");
    rejects("db _users\n", 1, "bad database name");
    rejects("db 1abc\n", 1, "bad database name");
    rejects("db a\ndb a\n", 2, "declared twice");
    rejects("db a\ndb b\ndb c\ndb d\ndb e\ndb f\ndb g\ndb h\ndb i\n", 9, "too many db lines");
}

Test(scenario, rejects_selector_garbage)
{
    const char *bad[] = {
        "foo",  "1-", "-1", "3-1", "1000", "$-3",      "random:0", "random:",    "random:x",   "0%",
        "101%", "%",  ",1", "1,",  "1,,2", "all rest", "1.5",      "half-other", "random:1001"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "db a\nat 1s crash nodes=%s\n", bad[i]);
        if (strchr(bad[i], ' ')) /* two words: the second is not key=value */
            rejects(text, 2, "expected key=value");
        else
            rejects(text, 2, "bad selector");
        cr_assert_not(sc_sel_valid(bad[i]), "'%s' valid", bad[i]);
    }
    rejects("db a\nskew nodes=x ms=1\n", 2, "bad selector 'x' for skew nodes");
    rejects("db a\nfilter db=a nodes=?! paths=x\n", 2, "bad selector '?!' for filter nodes");
}

Test(scenario, rejects_partition_without_two_groups)
{
    rejects("db a\nat 1s partition half other-half\n", 2, "partition needs two groups");
    rejects("db a\nat 1s partition\n", 2, "partition needs two groups");
    rejects("db a\nat 1s partition | 1\n", 2, "group left of '|' is empty");
    rejects("db a\nat 1s partition 1 |\n", 2, "group right of '|' is empty");
    rejects("db a\nat 1s partition 1 | 2 | 3\n", 2, "more than one '|'");
    rejects("db a\nat 1s partition 1 2 | 3\n", 2, "one selector per side");
    rejects("db a\nat 1s partition 1 | nope\n", 2, "bad selector 'nope'");
}

Test(scenario, rejects_churn_without_its_keys)
{
    rejects("db a\nat 1s churn nodes=rest every=1s down=1s\n", 2, "missing until= in churn");
    rejects("db a\nat 1s churn nodes=rest down=1s until=9s\n", 2, "missing every= in churn");
    rejects("db a\nat 1s churn every=1s down=1s until=9s\n", 2, "missing nodes= in churn");
    rejects("db a\nat 10s churn nodes=rest every=1s down=1s until=10s\n", 2,
            "must be after the event's time");
    rejects("db a\nat 1s churn nodes=rest every=0 down=1s until=10s\n", 2,
            "churn every '0' out of range");
}

Test(scenario, rejects_too_many_events)
{
    size_t cap = (size_t)(SC_MAX_EVENTS + 1) * 16 + 16;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    size_t o = (size_t)snprintf(text, cap, "db a\n");
    for (int i = 0; i <= SC_MAX_EVENTS; i++)
        o += (size_t)snprintf(text + o, cap - o, "at %d heal\n", i);
    rejects(text, SC_MAX_EVENTS + 2, "too many events (max 4096)");
    free(text);
}

Test(scenario, rejects_overlong_words_and_lines)
{
    char text[4096];
    char word[200];
    memset(word, 'a', sizeof word - 1);
    word[sizeof word - 1] = '\0';
    snprintf(text, sizeof text, "db %s\n", word);
    rejects(text, 1, "database name too long (199 bytes, max 63)");
    snprintf(text, sizeof text, "db a\nname %s\n", word);
    rejects(text, 2, "name too long");
    snprintf(text, sizeof text, "db a\nat 1s crash nodes=%.70s\n", word);
    rejects(text, 2, "selector for crash too long (70 bytes, max 63)");
    snprintf(text, sizeof text, "db a\nfilter db=a nodes=1 paths=%s%s\n", word, word);
    rejects(text, 2, "paths too long");
    snprintf(text, sizeof text, "db a\n%s\n", word);
    rejects(text, 2, "unknown keyword 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'");
    memset(text, ' ', 1100);
    memcpy(text, "db a\n", 5);
    text[1100] = '\0';
    rejects(text, 2, "line too long (1095 bytes, max 1024)");
    char many[256] = "db a\nnet";
    for (size_t i = 0, o = strlen(many); i < 40; i++, o += 2)
        memcpy(many + o, " x", 3);
    rejects(many, 2, "too many words (max 32)");
}

Test(scenario, rejects_nul_bytes_anywhere)
{
    static const char t1[] = "db a\nnodes 5\0\n";
    rejects_n(t1, sizeof t1 - 1, 2, "NUL byte at column 8");
    static const char t2[] = "db a\n# comment \0 too\n";
    rejects_n(t2, sizeof t2 - 1, 2, "NUL byte");
    static const char t3[] = "\0";
    rejects_n(t3, 1, 1, "NUL byte at column 1");
}

Test(scenario, rejects_unknown_missing_and_repeated_keys)
{
    rejects("db a\nat 1s crash nodes=1 foo=2\n", 2, "unknown key 'foo' in crash (expected nodes=)");
    rejects("db a\nnet speed=1\n", 2, "unknown key 'speed' in net");
    rejects("db a\nat 1s write nodes=all docs=3\n", 2, "missing db= in write");
    rejects("db a\nat 1s write nodes=all db=a db=a docs=3\n", 2, "db= given twice in write");
    rejects("db a\nat 1s write nodes=all db=a docs=3 shared shared\n", 2, "'shared' given twice");
    rejects("db a\nat 1s update nodes=all db=a docs=3 shared\n", 2,
            "expected key=value in update, got 'shared'");
    rejects("db a\nat 1s write nodes= db=a docs=3\n", 2, "empty value for nodes=");
    rejects("db a\nat 1s write nodes=all db=a docs=0\n", 2, "docs 0 out of range");
    rejects("db a\nskew nodes=1\n", 2, "missing ms= in skew");
    rejects("db a\nfilter db=a nodes=1\n", 2, "missing paths= in filter");
}

Test(scenario, rejects_repeated_single_lines)
{
    rejects("nodes 3\ndb a\nnodes 4\n", 3, "'nodes' given twice (first on line 1)");
    rejects("db a\nname x\nname y\n", 3, "'name' given twice (first on line 2)");
    rejects("db a\nsettle 1s\nsettle 2s\n", 3, "'settle' given twice");
    rejects("db a\nnet\nnet\n", 3, "'net' given twice");
}

Test(scenario, rejects_bad_actions_and_values)
{
    rejects("db a\nat 1s explode nodes=1\n", 2, "unknown action 'explode'");
    rejects("db a\nat 1s\n", 2, "'at' needs a time and an action");
    rejects("db a\nat 1s heal now\n", 2, "unexpected 'now' after heal");
    rejects("db a\nat 1s cut a=2 b=2\n", 2, "same node");
    rejects("db a\nat 1s cut a=$ b=$\n", 2, "same node");
    rejects("db a\nat 1s cut a=1\n", 2, "missing b= in cut");
    rejects("db a\nat 1s cut a=x b=1\n", 2, "bad node 'x' for cut a=");
    rejects("db a\nat 1s cut a=1 b=1000\n", 2, "bad node '1000' for cut b=");
    rejects("topology ring\ndb a\n", 1, "unknown topology 'ring'");
    rejects("db a\nnet bandwidth=10mbps\n", 2, "bad bandwidth '10mbps'");
    rejects("db a\nnet bandwidth=99999999999999999999gbit\n", 2, "bad bandwidth");
    rejects("db a\nfilter db=a nodes=1 paths=a/#/b\n", 2, "bad paths 'a/#/b'");
    rejects("db a\nfilter db=a nodes=1 paths=a|\n", 2, "bad paths");
    rejects("db a\nfilter db=a nodes=1 paths=a+/b\n", 2, "bad paths");
    rejects("db a\nskew nodes=1 ms=abc\n", 2, "bad skew ms= 'abc'");
    rejects("db a\nskew nodes=1 ms=-\n", 2, "bad skew");
    rejects("db a\nskew nodes=1 ms=99999999999999\n", 2, "out of range");
    rejects("name a/b\ndb a\n", 1, "bad name 'a/b'");
}

Test(scenario, messages_escape_unprintable_bytes)
{
    rejects("db a\nbo\x01gus\n", 2, "unknown keyword 'bo\\x01gus'");
    rejects("db a\n\xff\xfe\n", 2, "'\\xff\\xfe'");
}

Test(scenario, errors_leave_nothing_allocated_under_alloc_failures)
{
    const char *text = "db a\nat 0s heal\nat 1s crash nodes=1\nat 2s heal\n";
    for (long n = 0;; n++) {
        struct scenario s;
        struct br_errbuf eb;
        br_alloc_fail_after(n);
        br_err e = sc_parse(text, strlen(text), "t", &s, &eb);
        br_alloc_fail_after(-1);
        if (e == BR_OK) {
            cr_assert_eq(s.n_events, 3);
            sc_free(&s);
            cr_assert_geq(n, 1);
            break;
        }
        cr_assert_eq(e, BR_ENOMEM, "n=%ld: %s", n, eb.msg);
        cr_assert(strstr(eb.msg, "out of memory"));
        cr_assert_lt(n, 100);
    }
}

/* ---- selectors ---- */

static void resolve_eq(const char *sel, unsigned n, const char *want)
{
    bool out[SC_MAX_NODES];
    struct br_errbuf eb = {{0}};
    uint64_t rng = 1;
    cr_assert_eq(sc_sel_resolve(sel, n, &rng, out, &eb), BR_OK, "%s: %s", sel, eb.msg);
    char got[SC_MAX_NODES + 1];
    for (unsigned i = 0; i < n; i++)
        got[i] = out[i] ? 'x' : '.';
    got[n] = '\0';
    cr_assert_str_eq(got, want, "selector '%s' for %u nodes", sel, n);
}

static void resolve_fails(const char *sel, unsigned n, const char *why)
{
    bool out[8];
    memset(out, 0x5a, sizeof out);
    struct br_errbuf eb = {{0}};
    uint64_t rng = 7;
    cr_assert_eq(sc_sel_resolve(sel, n, &rng, out, &eb), BR_EINVAL, "%s accepted", sel);
    cr_assert(strstr(eb.msg, why), "message '%s' lacks '%s'", eb.msg, why);
    cr_assert_eq(rng, 7, "rng advanced on error");
    cr_assert_eq(((unsigned char *)out)[0], 0x5a, "out written on error");
}

Test(scenario, selectors_resolve_fixed_sets)
{
    resolve_eq("all", 5, "xxxxx");
    resolve_eq("rest", 5, ".xxxx");
    resolve_eq("rest", 1, ".");
    resolve_eq("$", 5, "....x");
    resolve_eq("0", 5, "x....");
    resolve_eq("$", 1, "x");
    resolve_eq("1-3", 5, ".xxx.");
    resolve_eq("2-$", 5, "..xxx");
    resolve_eq("4-$", 5, "....x");
    resolve_eq("2-2", 5, "..x..");
    resolve_eq("0,2,4", 5, "x.x.x");
    resolve_eq("0,0,1-2,2", 5, "xxx..");
    resolve_eq("half", 5, "xx...");
    resolve_eq("other-half", 5, "..xxx");
    resolve_eq("half", 6, "xxx...");
    resolve_eq("other-half", 6, "...xxx");
    resolve_eq("half", 1, ".");
    resolve_eq("other-half", 1, "x");
    resolve_eq("half,other-half", 7, "xxxxxxx");
    resolve_eq("100%", 4, "xxxx");
}

Test(scenario, selectors_reject_indexes_past_the_run)
{
    resolve_fails("5", 5, "node 5 out of range (5 nodes)");
    resolve_fails("3-7", 5, "node 7 out of range");
    resolve_fails("6-$", 5, "node 6 out of range");
    resolve_fails("random:6", 5, "random:6 of only 5 nodes");
    resolve_fails("bogus", 5, "bad selector 'bogus'");
    resolve_fails("all", 0, "0 nodes");
    resolve_fails("all", SC_MAX_NODES + 1, "nodes (expected 1..1000)");
}

static unsigned count(const bool *b, unsigned n)
{
    unsigned c = 0;
    for (unsigned i = 0; i < n; i++)
        c += b[i];
    return c;
}

Test(scenario, random_k_is_a_pure_function_of_the_rng_state)
{
    bool a[20], b[20];
    struct br_errbuf eb;
    for (uint64_t seed = 0; seed < 200; seed++) {
        uint64_t r1 = seed, r2 = seed;
        cr_assert_eq(sc_sel_resolve("random:7", 20, &r1, a, &eb), BR_OK, "%s", eb.msg);
        cr_assert_eq(sc_sel_resolve("random:7", 20, &r2, b, &eb), BR_OK, "%s", eb.msg);
        cr_assert_eq(memcmp(a, b, sizeof a), 0);
        cr_assert_eq(r1, r2);
        cr_assert_neq(r1, seed, "the state advances");
        cr_assert_eq(count(a, 20), 7);
    }
    /* the draw is a partial Fisher-Yates: j = i + sc_rand % (n - i) */
    uint64_t r = 42, ref = 42;
    unsigned idx[10];
    bool want[10] = {false};
    for (unsigned i = 0; i < 10; i++)
        idx[i] = i;
    for (unsigned i = 0; i < 3; i++) {
        unsigned j = i + (unsigned)(sc_rand(&ref) % (10 - i));
        unsigned t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        want[idx[i]] = true;
    }
    cr_assert_eq(sc_sel_resolve("random:3", 10, &r, a, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(memcmp(a, want, sizeof want), 0);
    cr_assert_eq(r, ref);
    /* different seeds give different sets at least sometimes */
    unsigned differ = 0;
    for (uint64_t seed = 0; seed < 20; seed++) {
        uint64_t r1 = seed, r2 = seed + 1000;
        cr_assert_eq(sc_sel_resolve("random:3", 20, &r1, a, &eb), BR_OK);
        cr_assert_eq(sc_sel_resolve("random:3", 20, &r2, b, &eb), BR_OK);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    cr_assert_gt(differ, 10);
    /* K = n takes every node */
    uint64_t r3 = 9;
    cr_assert_eq(sc_sel_resolve("random:20", 20, &r3, a, &eb), BR_OK);
    cr_assert_eq(count(a, 20), 20);
}

Test(scenario, percent_selects_that_share_and_at_least_one)
{
    bool a[SC_MAX_NODES];
    struct br_errbuf eb;
    const struct {
        const char *sel;
        unsigned n, want;
    } v[] = {{"10%", 5, 1},  {"1%", 1, 1},   {"50%", 10, 5},   {"50%", 7, 3},
             {"30%", 10, 3}, {"100%", 9, 9}, {"1%", 1000, 10}, {"99%", 3, 2}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint64_t r = i;
        cr_assert_eq(sc_sel_resolve(v[i].sel, v[i].n, &r, a, &eb), BR_OK, "%s", eb.msg);
        cr_assert_eq(count(a, v[i].n), v[i].want, "%s of %u", v[i].sel, v[i].n);
    }
}

Test(scenario, drawing_needs_a_random_state)
{
    bool a[4];
    struct br_errbuf eb;
    cr_assert_eq(sc_sel_resolve("random:1", 4, NULL, a, &eb), BR_EINVAL);
    cr_assert(strstr(eb.msg, "no random state"));
    cr_assert_eq(sc_sel_resolve("1-2", 4, NULL, a, &eb), BR_OK); /* fixed sets need none */
}

Test(scenario, selector_syntax)
{
    const char *good[] = {"all",  "rest",  "half",   "other-half", "$",           "0",
                          "999",  "0-$",   "3-9",    "random:1",   "random:1000", "1%",
                          "100%", "0,1,$", "half,$", "007"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(sc_sel_valid(good[i]), "'%s' invalid", good[i]);
    char longsel[SC_SEL_MAX + 1];
    memset(longsel, '1', SC_SEL_MAX);
    longsel[SC_SEL_MAX] = '\0';
    cr_assert_not(sc_sel_valid(longsel));
    cr_assert_not(sc_sel_valid(""));
    cr_assert_not(sc_sel_valid(NULL));
}

Test(scenario, splitmix64_reference_values)
{
    uint64_t s = 0;
    cr_assert_eq(sc_rand(&s), 0xe220a8397b1dcdafull);
    cr_assert_eq(sc_rand(&s), 0x6e789e6aa1b965f4ull);
    cr_assert_eq(sc_rand(&s), 0x06c45d188009454full);
}

Test(scenario, enum_names)
{
    cr_assert_str_eq(sc_kind_name(SC_CHURN), "churn");
    cr_assert_str_eq(sc_kind_name((enum sc_kind)99), "?");
    cr_assert_str_eq(sc_topology_name(SC_TOPO_CHAIN), "chain");
    cr_assert_str_eq(sc_topology_name((enum sc_topology)99), "?");
}

/* ---- files ---- */

Test(scenario, load_names_the_file_and_defaults_the_name)
{
    char *dir = tu_tmpdir("scenario");
    char path[1024];
    snprintf(path, sizeof path, "%s/my-run.scn", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("db a\nat 1s crash nodes=1\n", f);
    fclose(f);
    struct scenario s;
    struct br_errbuf eb;
    cr_assert_eq(sc_load(path, &s, &eb), BR_OK, "%s", eb.msg);
    cr_assert_str_eq(s.name, "my-run");
    cr_assert_eq(s.n_events, 1);
    sc_free(&s);
    sc_free(&s); /* twice is harmless */
    sc_free(NULL);

    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("db a\n\nnodes 0\n", f);
    fclose(f);
    cr_assert_eq(sc_load(path, &s, &eb), BR_EINVAL);
    char want[1100];
    snprintf(want, sizeof want, "%s:3: nodes 0 out of range", path);
    cr_assert(strncmp(eb.msg, want, strlen(want)) == 0, "'%s'", eb.msg);

    snprintf(path, sizeof path, "%s/missing.scn", dir);
    cr_assert_eq(sc_load(path, &s, &eb), BR_EIO);
    cr_assert(strstr(eb.msg, "missing.scn"));
    tu_rmtree(dir);
    free(dir);
}

Test(scenario, every_shipped_scenario_parses_and_resolves)
{
    DIR *d = opendir(SC_SCENARIO_DIR);
    cr_assert_not_null(d, "cannot open %s", SC_SCENARIO_DIR);
    const char *expected[] = {"chain",         "full-mesh",      "mesh",
                              "star-filtered", "partition-heal", "churn",
                              "crash-storm",   "laptop-week",    "skew"};
    bool seen[sizeof expected / sizeof expected[0]] = {false};
    unsigned files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".scn") != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", SC_SCENARIO_DIR, e->d_name);
        struct scenario s;
        struct br_errbuf eb;
        cr_assert_eq(sc_load(path, &s, &eb), BR_OK, "%s", eb.msg);
        cr_assert_eq(strncmp(s.name, e->d_name, len - 4), 0, "%s is named '%s'", e->d_name, s.name);
        cr_assert_gt(s.n_events, 0, "%s has no events", e->d_name);
        /* every selector resolves at the file's own node count */
        bool out[SC_MAX_NODES];
        uint64_t rng = 1;
        for (size_t i = 0; i < s.n_events; i++) {
            const struct sc_event *ev = &s.events[i];
            if (ev->nodes[0])
                cr_assert_eq(sc_sel_resolve(ev->nodes, s.nodes, &rng, out, &eb), BR_OK, "%s:%u: %s",
                             path, ev->line, eb.msg);
            if (ev->nodes2[0])
                cr_assert_eq(sc_sel_resolve(ev->nodes2, s.nodes, &rng, out, &eb), BR_OK,
                             "%s:%u: %s", path, ev->line, eb.msg);
        }
        for (size_t i = 0; i < s.n_filters; i++)
            cr_assert_eq(sc_sel_resolve(s.filters[i].nodes, s.nodes, &rng, out, &eb), BR_OK);
        for (size_t i = 0; i < s.n_skews; i++)
            cr_assert_eq(sc_sel_resolve(s.skews[i].nodes, s.nodes, &rng, out, &eb), BR_OK);
        for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
            if (strcmp(s.name, expected[i]) == 0)
                seen[i] = true;
        sc_free(&s);
        files++;
    }
    closedir(d);
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        cr_assert(seen[i], "no %s.scn", expected[i]);
    cr_assert_geq(files, 9);
}
