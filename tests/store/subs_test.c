/* subs_test.c — filtered changes (CHG-05..11, CHG-20, CHG-26) and live subscriptions
 * (SUB-09..27): patterns, queries, once-per-change delivery, deletions seen through the
 * revision they deleted, immediate unsubscribe, and overflow reported to a slow subscriber
 * without stalling writers. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/query.h"
#include "barrel/store.h"
#include "barrel/subs.h"

#include "store_int.h" /* db->chg_fast: feeds that used the path index */
#include "testutil.h"

static char *dir;
static br_store *st;
static br_db *db;
static const struct br_write_opts NOSYNC = {BR_SYNC_NONE, true};

static struct br_rev put(const char *id, const char *json, const struct br_rev *parent)
{
    json_t *j = json_loads(json, 0, NULL);
    cr_assert(j, "bad json %s", json);
    struct br_json_doc d;
    struct br_errbuf eb;
    cr_assert_eq(br_json_doc_parse(j, id, &d, &eb), BR_OK, "%s", eb.msg);
    json_decref(j);
    d.put.rev = parent;
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &d.put, &NOSYNC, &res), BR_OK, "put %s", id);
    br_json_doc_fini(&d);
    return res.rev;
}

static struct br_rev del(const char *id, const struct br_rev *rev)
{
    struct br_put p = {.id = id, .id_len = strlen(id), .rev = rev, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &NOSYNC, &res), BR_OK);
    return res.rev;
}

static void setup(void)
{
    br_log_set_level(BR_LOG_ERROR);
    dir = tu_tmpdir("subs");
    struct br_store_opts o = {.path = dir};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_create(st, "db", NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
}

static void teardown(void)
{
    br_db_close(db);
    br_store_close(st);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(filters, .init = setup, .fini = teardown);
TestSuite(subs, .init = setup, .fini = teardown);

/* ---- filtered changes ---- */

struct feed {
    char ids[32][32];
    bool deleted[32];
    size_t n;
};

static int feed_cb(void *arg, const struct br_change *c)
{
    struct feed *f = arg;
    cr_assert_lt(f->n, 32);
    memcpy(f->ids[f->n], c->id, c->id_len);
    f->ids[f->n][c->id_len] = 0;
    f->deleted[f->n] = c->deleted;
    f->n++;
    return 0;
}

static br_query *compile(const char *spec)
{
    json_t *j = json_loads(spec, 0, NULL);
    br_query *q;
    struct br_errbuf eb;
    cr_assert_eq(br_query_compile(j, &q, &eb), BR_OK, "%s", eb.msg);
    json_decref(j);
    return q;
}

/* The ids of the filtered feed, joined by ','. */
static char *feed(const char *const *paths, size_t np, const char *query, const char *const *ids,
                  size_t nids)
{
    static char out[1024];
    struct br_changes_opts o = {.paths = paths, .n_paths = np, .doc_ids = ids, .n_doc_ids = nids};
    br_query *q = query ? compile(query) : NULL;
    o.query = q;
    struct feed f = {0};
    cr_assert_eq(br_db_changes(db, &o, feed_cb, &f, NULL), BR_OK);
    out[0] = 0;
    for (size_t i = 0; i < f.n; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, f.ids[i]);
        if (f.deleted[i])
            strcat(out, "(deleted)");
    }
    br_query_free(q);
    return out;
}

static void corpus(void)
{
    put("u1", "{\"type\":\"user\",\"users\":{\"123\":{\"name\":\"a\"}}}", NULL);
    put("u2", "{\"type\":\"user\",\"users\":{\"456\":\"b\"}}", NULL);
    put("o1", "{\"type\":\"order\",\"total\":50}", NULL);
    put("o2", "{\"type\":\"order\",\"total\":150}", NULL);
    put("x", "{\"other\":true}", NULL);
}

Test(filters, chg05_doc_ids_in_feed_order)
{
    corpus();
    const char *ids[] = {"o2", "u1"};
    cr_expect_str_eq(feed(NULL, 0, NULL, ids, 2), "u1,o2");
}

Test(filters, chg06_07_08_path_patterns)
{
    corpus();
    const char *t[] = {"type/#"};
    cr_expect_str_eq(feed(t, 1, NULL, NULL, 0), "u1,u2,o1,o2");
    const char *u[] = {"users/#"};
    cr_expect_str_eq(feed(u, 1, NULL, NULL, 0), "u1,u2");
    const char *u0[] = {"users"};
    (void)u0; /* "users" alone is not a topic of these docs (every topic ends in a value) */
    const char *u123[] = {"users/123/#"};
    cr_expect_str_eq(feed(u123, 1, NULL, NULL, 0), "u1");
    const char *none[] = {"nothing/#"};
    cr_expect_str_eq(feed(none, 1, NULL, NULL, 0), "");
    const char *u456[] = {"users/456/b"};
    cr_expect_str_eq(feed(u456, 1, NULL, NULL, 0), "u2");
    const char *plus[] = {"users/+/name/#"};
    cr_expect_str_eq(feed(plus, 1, NULL, NULL, 0), "u1");
}

Test(filters, chg09_10_11_combined)
{
    corpus();
    const char *t[] = {"type/#"};
    const char *ids[] = {"o1", "x"};
    cr_expect_str_eq(feed(t, 1, NULL, ids, 2), "o1");
    cr_expect_str_eq(feed(NULL, 0,
                          "{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":"
                          "\"order\"}]}",
                          NULL, 0),
                     "o1,o2");
    cr_expect_str_eq(
        feed(NULL, 0, "{\"where\":[{\"path\":\"total\",\"op\":\">\",\"value\":100}]}", NULL, 0),
        "o2");
    const char *ty[] = {"type/order"};
    cr_expect_str_eq(
        feed(ty, 1, "{\"where\":[{\"path\":\"total\",\"op\":\"<\",\"value\":100}]}", NULL, 0),
        "o1");
}

Test(filters, chg26_deletion_matches_what_it_deleted)
{
    struct br_rev r = put("s1", "{\"type\":\"sensor\",\"site\":\"site-7\"}", NULL);
    put("s2", "{\"type\":\"sensor\",\"site\":\"site-8\"}", NULL);
    del("s1", &r);
    const char *p[] = {"site/site-7"};
    cr_expect_str_eq(feed(p, 1, NULL, NULL, 0), "s1(deleted)");
    cr_expect_str_eq(feed(NULL, 0,
                          "{\"where\":[{\"path\":\"site\",\"op\":\"==\",\"value\":"
                          "\"site-7\"}]}",
                          NULL, 0),
                     "s1(deleted)");
    /* re-created with other content: the live body decides again */
    put("s1", "{\"type\":\"sensor\",\"site\":\"site-9\"}", NULL);
    cr_expect_str_eq(feed(p, 1, NULL, NULL, 0), "");
    /* and the last live body survives a reopen */
    struct br_doc *d;
    struct br_get_opts go = {0};
    cr_assert_eq(br_db_get(db, "s1", 2, &go, &d, NULL), BR_OK);
    struct br_rev r2 = d->rev;
    br_doc_free(d);
    del("s1", &r2);
    br_db_close(db);
    br_store_close(st);
    struct br_store_opts o = {.path = dir};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    const char *p9[] = {"site/site-9"};
    cr_expect_str_eq(feed(p9, 1, NULL, NULL, 0), "s1(deleted)");
    struct br_db_check ck;
    cr_assert_eq(br_db_check(db, &ck), BR_OK);
    cr_assert_eq(ck.problems, 0, "%s", ck.first);
}

/* ---- path filters answered from the path index, against the document walk ---- */

struct bigfeed {
    br_buf text; /* "id,id(deleted),..." */
    size_t n;
};

static int bigfeed_cb(void *arg, const struct br_change *c)
{
    struct bigfeed *f = arg;
    char seq[64];
    snprintf(seq, sizeof seq, "@%llu.%u%s,", (unsigned long long)c->seq.wall,
             (unsigned)c->seq.logical, c->deleted ? "(deleted)" : "");
    cr_assert_eq(br_buf_append(&f->text, c->id, c->id_len), BR_OK);
    cr_assert_eq(br_buf_append(&f->text, seq, strlen(seq)), BR_OK);
    cr_assert_eq(br_buf_append(&f->text, "[", 1), BR_OK);
    for (size_t i = 0; i < c->n_leaves; i++) {
        char t[BR_REV_TEXT_MAX];
        br_rev_format(&c->leaves[i], t);
        cr_assert_eq(br_buf_append(&f->text, t, strlen(t)), BR_OK);
    }
    cr_assert_eq(br_buf_append(&f->text, "]", 1), BR_OK);
    f->n++;
    return 0;
}

/* The feed for these options as text; *n gets the entry count. Caller br_free's it. */
static char *bigfeed(const struct br_changes_opts *o, size_t *n)
{
    struct bigfeed f = {.n = 0};
    br_buf_init(&f.text, 0);
    cr_assert_eq(br_db_changes(db, o, bigfeed_cb, &f, NULL), BR_OK);
    *n = f.n;
    char *t = f.text.len ? (char *)br_buf_steal(&f.text, NULL) : br_strdup("");
    br_buf_fini(&f.text);
    cr_assert(t);
    return t;
}

/* 400 documents whose topics reach the ambiguous cases of a literal pattern: string values
 * holding '/', keys holding '/', ints and floats that share a double but not a topic text, long
 * strings cut at 100 bytes, booleans and null, strings that read as numbers or booleans;
 * then updates that move documents in and out of the patterns, and deletions (which the index
 * no longer holds: they are judged by the body they deleted, CHG-26). */
static void fast_corpus(void)
{
    char longs[160];
    memset(longs, 'L', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    static struct br_rev revs[400];
    for (int i = 0; i < 400; i++) {
        char id[16], body[512];
        snprintf(id, sizeof id, "d%03d", i);
        const char *v;
        switch (i % 10) {
        case 0:
            v = "\"s1\"";
            break;
        case 1:
            v = "1";
            break;
        case 2:
            v = "1.0";
            break;
        case 3:
            v = "\"1\"";
            break;
        case 4:
            v = "true";
            break;
        case 5:
            v = "\"true\"";
            break;
        case 6:
            v = "null";
            break;
        case 7:
            v = "\"b/c\"";
            break;
        case 8:
            v = "[\"s1\", 2.5, {\"k\": \"s1\"}]";
            break;
        default:
            v = "9007199254740993";
            break;
        }
        snprintf(body, sizeof body,
                 "{\"site\":%s,\"a/b\":\"%s\",\"a\":{\"b\":\"c\",\"n\":%d},\"long\":\"%s%d\"}", v,
                 i % 3 ? "c" : "x", i % 4, longs, i % 2);
        revs[i] = put(id, body, NULL);
    }
    for (int i = 0; i < 400; i += 7) { /* updates: every seventh now holds "s1" or loses it */
        char id[16];
        snprintf(id, sizeof id, "d%03d", i);
        revs[i] = put(id, i % 2 ? "{\"site\":\"s1\"}" : "{\"site\":\"s2\",\"a\":{\"b\":\"c\"}}",
                      &revs[i]);
    }
    for (int i = 3; i < 400; i += 11) { /* deletions */
        char id[16];
        snprintf(id, sizeof id, "d%03d", i);
        del(id, &revs[i]);
    }
}

static void set_index(bool all)
{
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_db_set_index(db, all, NULL, 0, &eb), BR_OK, "%s", eb.msg);
}

/* Every option set, fed once with the index (all paths) and once without it: the same entries
 * in the same order, and the index was used where it covers the patterns. */
Test(filters, path_filter_from_index_equals_document_walk)
{
    fast_corpus();
    static const char *const pats[][3] = {
        {"site/s1"},
        {"site/1"},    /* the int 1 and the string "1", not the float 1.0 */
        {"site/1.0"},  /* the float only */
        {"site/true"}, /* the boolean and the string */
        {"site/null"},
        {"site/b/c"},       /* the string "b/c" */
        {"a/b/c"},          /* {"a":{"b":"c"}} and {"a/b":"c"} alike */
        {"a/b/x", "a/n/2"}, /* two patterns */
        {"site/k/s1"},      /* an object inside an array */
        {"site/2.5"},
        {"site/9007199254740993"},
        {"site/9007199254740992"}, /* shares the double, not the text */
        {"long/LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
         "LLLLLLLLLLLLLLLLLL"}, /* the 100-byte cut of both long strings */
        {"_hidden/s1"},         /* never a topic ("_" keys) */
        {"nosuch/s1"},
        {"site/+"}, /* a wildcard: not from the index */
        {"a/#"},
    };
    const size_t n_pats = sizeof pats / sizeof pats[0];
    br_query *q = compile("{\"where\":[{\"path\":\"a/n\",\"op\":\"<\",\"value\":2}]}");
    for (size_t variant = 0; variant < 4; variant++) {
        for (size_t i = 0; i < n_pats; i++) {
            size_t np = pats[i][1] ? 2 : 1;
            struct br_changes_opts o = {.paths = pats[i], .n_paths = np};
            if (variant == 1)
                o.all_docs = true;
            if (variant == 2) {
                o.query = q;
                o.descending = true;
            }
            if (variant == 3)
                o.limit = 9;
            set_index(true);
            uint64_t before = atomic_load(&db->chg_fast);
            size_t n_fast, n_slow;
            char *fast = bigfeed(&o, &n_fast);
            bool used = atomic_load(&db->chg_fast) != before;
            set_index(false);
            before = atomic_load(&db->chg_fast);
            char *slow = bigfeed(&o, &n_slow);
            cr_assert_eq(atomic_load(&db->chg_fast), before, "no index, yet the index was used");
            cr_assert_str_eq(fast, slow, "pattern %s (variant %zu)", pats[i][0], variant);
            bool literal = !strchr(pats[i][0], '+') && !strchr(pats[i][0], '#');
            if (variant == 0) {
                cr_assert_eq(used, literal, "pattern %s: index used %d", pats[i][0], used);
                if (i == 0)
                    cr_assert_gt(n_slow, 20, "the corpus reaches the first pattern");
            }
            br_free(fast);
            br_free(slow);
        }
    }
    br_query_free(q);
}

Test(filters, chg20_local_docs_never_in_feed)
{
    struct br_rev lr;
    json_t *j = json_loads("{\"type\":\"x\"}", 0, NULL);
    uint8_t body[] = {0xa1, 0x64, 't', 'y', 'p', 'e', 0x61, 'x'};
    json_decref(j);
    cr_assert_eq(br_db_local_put(db, "ck", 2, NULL, body, sizeof body, &NOSYNC, &lr), BR_OK);
    const char *t[] = {"type/#"};
    cr_expect_str_eq(feed(t, 1, NULL, NULL, 0), "");
    cr_expect_str_eq(feed(NULL, 0, NULL, NULL, 0), "");
}

/* ---- subscriptions ---- */

struct got {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char ids[256][32];
    char revs[256][BR_REV_TEXT_MAX];
    bool deleted[256];
    size_t n_paths[256];
    char first_path[256][64];
    size_t n;
    uint64_t overflows, dropped;
    int sleep_ms;
    br_sub *close_self;
};

static void got_init(struct got *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void on_event(void *arg, const struct br_sub_event *ev)
{
    struct got *g = arg;
    if (g->sleep_ms)
        usleep((useconds_t)g->sleep_ms * 1000);
    pthread_mutex_lock(&g->mu);
    if (ev->kind == BR_SUB_OVERFLOW) {
        g->overflows++;
        g->dropped += ev->dropped;
    } else if (g->n < 256) {
        memcpy(g->ids[g->n], ev->id, ev->id_len);
        g->ids[g->n][ev->id_len] = 0;
        br_rev_format(&ev->rev, g->revs[g->n]);
        g->deleted[g->n] = ev->deleted;
        g->n_paths[g->n] = ev->n_paths;
        if (ev->n_paths)
            snprintf(g->first_path[g->n], 64, "%s", ev->paths[0]);
        g->n++;
    }
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->close_self) {
        br_sub *s = g->close_self;
        g->close_self = NULL;
        br_sub_close(s);
    }
}

/* Wait until g holds n events (or 5 s pass). */
static size_t wait_n(struct got *g, size_t n)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&g->mu);
    while (g->n < n && pthread_cond_timedwait(&g->cv, &g->mu, &dl) == 0)
        ;
    size_t got = g->n;
    pthread_mutex_unlock(&g->mu);
    return got;
}

/* Let the delivery thread run out of work: a sentinel write everyone sees. */
static void settle(struct got *g, size_t expect)
{
    cr_assert_eq(wait_n(g, expect), expect);
    usleep(20000);
    pthread_mutex_lock(&g->mu);
    size_t n = g->n;
    pthread_mutex_unlock(&g->mu);
    cr_assert_eq(n, expect, "more events than expected: %zu", n);
}

static br_sub *sub(const char *const *pats, size_t n, const br_query *q, struct got *g)
{
    struct br_sub_opts o = {.patterns = pats, .n_patterns = n, .query = q};
    br_sub *s;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_db_subscribe(db, &o, on_event, g, &s, &eb), BR_OK, "%s", eb.msg);
    return s;
}

Test(subs, sub09_10_11_subscribe_validate_list)
{
    struct got g;
    got_init(&g);
    const char *p1[] = {"users/123/profile"}, *p2[] = {"users/+/profile"}, *p3[] = {"orders/#"};
    br_sub *a = sub(p1, 1, NULL, &g), *b = sub(p2, 1, NULL, &g), *c = sub(p3, 1, NULL, &g);
    cr_expect_eq(br_db_sub_count(db), 3);
    const char *bad[] = {"users/#/profile"};
    struct br_sub_opts o = {.patterns = bad, .n_patterns = 1};
    br_sub *x;
    struct br_errbuf eb = {{0}};
    cr_expect_eq(br_db_subscribe(db, &o, on_event, &g, &x, &eb), BR_EINVAL);
    cr_expect(strstr(eb.msg, "#") != NULL, "reason: %s", eb.msg);
    struct br_sub_opts empty = {0};
    cr_expect_eq(br_db_subscribe(db, &empty, on_event, &g, &x, &eb), BR_EINVAL);
    br_sub_close(a);
    br_sub_close(b);
    br_sub_close(c);
    cr_expect_eq(br_db_sub_count(db), 0);
}

Test(subs, sub19_21_20_put_update_delete_notify)
{
    struct got g;
    got_init(&g);
    const char *p[] = {"type/user"};
    br_sub *s = sub(p, 1, NULL, &g);
    struct br_rev r1 = put("u1", "{\"type\":\"user\",\"name\":\"a\"}", NULL);
    put("o1", "{\"type\":\"order\"}", NULL); /* not matched */
    struct br_rev r2 = put("u1", "{\"type\":\"user\",\"name\":\"b\"}", &r1);
    struct br_rev r3 = del("u1", &r2);
    settle(&g, 3);
    char t[BR_REV_TEXT_MAX];
    br_rev_format(&r1, t);
    cr_expect_str_eq(g.ids[0], "u1");
    cr_expect_str_eq(g.revs[0], t);
    cr_expect(!g.deleted[0]);
    cr_expect_eq(g.n_paths[0], 2); /* name/a, type/user */
    cr_expect_str_eq(g.first_path[0], "name/a");
    br_rev_format(&r2, t);
    cr_expect_str_eq(g.revs[1], t);
    br_rev_format(&r3, t);
    cr_expect_str_eq(g.revs[2], t);
    cr_expect(g.deleted[2]);
    cr_expect_eq(g.n_paths[2], 2, "a deletion carries the paths of what it deleted");
    br_sub_close(s);
}

Test(subs, sub13_14_15_16_17_matching)
{
    struct got one, two, multi;
    got_init(&one);
    got_init(&two);
    got_init(&multi);
    const char *p1[] = {"users/+/profile/#"};
    br_sub *a = sub(p1, 1, NULL, &one), *b = sub(p1, 1, NULL, &two);
    const char *pm[] = {"tags/#", "tags/a", "+/a", "#"};
    br_sub *m = sub(pm, 4, NULL, &multi);
    put("d1", "{\"users\":{\"123\":{\"profile\":{\"x\":1}}}}", NULL);
    put("d2", "{\"users\":{\"123\":{\"settings\":1}}}", NULL);
    put("d3", "{\"tags\":[\"a\",\"b\",\"c\"]}", NULL);
    settle(&one, 1);
    settle(&two, 1);
    cr_expect_str_eq(one.ids[0], "d1");
    cr_expect_str_eq(two.ids[0], "d1");
    settle(&multi, 3); /* one event per change, however many patterns and topics match */
    cr_expect_str_eq(multi.ids[2], "d3");
    br_sub_close(a);
    br_sub_close(b);
    br_sub_close(m);
}

Test(subs, sub18_22_unsubscribe_is_immediate)
{
    struct got g;
    got_init(&g);
    const char *p[] = {"k/#"};
    br_sub *s = sub(p, 1, NULL, &g);
    put("a", "{\"k\":1}", NULL);
    settle(&g, 1);
    br_sub_close(s);
    put("b", "{\"k\":1}", NULL);
    usleep(20000);
    cr_expect_eq(g.n, 1);
    /* closing from inside the callback */
    struct got h;
    got_init(&h);
    br_sub *t = sub(p, 1, NULL, &h);
    h.close_self = t;
    put("c", "{\"k\":1}", NULL);
    settle(&h, 1);
    put("d", "{\"k\":1}", NULL);
    usleep(20000);
    cr_expect_eq(h.n, 1);
    cr_expect_eq(br_db_sub_count(db), 0);
}

Test(subs, sub24_26_27_query_subscriptions)
{
    struct got g1, g2;
    got_init(&g1);
    got_init(&g2);
    br_query *q1 = compile("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"order\"},"
                           "{\"path\":\"total\",\"op\":\">\",\"value\":100}]}");
    br_query *q2 = compile("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"user\"}]}");
    br_sub *a = sub(NULL, 0, q1, &g1), *b = sub(NULL, 0, q2, &g2);
    struct br_rev r = put("o1", "{\"type\":\"order\",\"total\":50}", NULL); /* no match */
    put("u1", "{\"type\":\"user\"}", NULL);
    put("o1", "{\"type\":\"order\",\"total\":500}", &r); /* now matches (SUB-27) */
    settle(&g1, 1);
    settle(&g2, 1);
    cr_expect_str_eq(g1.ids[0], "o1");
    cr_expect_str_eq(g2.ids[0], "u1");
    br_sub_close(a);
    br_sub_close(b);
    br_query_free(q1);
    br_query_free(q2);
}

Test(subs, slow_subscriber_overflows_without_stalling_writers)
{
    struct got slow, fast;
    got_init(&slow);
    got_init(&fast);
    slow.sleep_ms = 20;
    const char *p[] = {"k/#"};
    struct br_sub_opts o = {.patterns = p, .n_patterns = 1, .queue_max = 4};
    br_sub *s, *f;
    cr_assert_eq(br_db_subscribe(db, &o, on_event, &slow, &s, NULL), BR_OK);
    struct br_sub_opts of = {.patterns = p, .n_patterns = 1, .queue_max = 1000};
    cr_assert_eq(br_db_subscribe(db, &of, on_event, &fast, &f, NULL), BR_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%03d", i);
        put(id, "{\"k\":1}", NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* 100 deliveries at 20 ms would take 2 s: the writer did not wait for them */
    cr_expect_lt(secs, 1.0, "writers stalled: %.2f s", secs);
    cr_assert_eq(wait_n(&fast, 100), 100);
    /* The slow one gets what fit its queue, and for what did not, overflow events counting
     * it: every change is either delivered or counted, none silently lost. */
    uint64_t queued, delivered, dropped;
    for (int i = 0; i < 500; i++) {
        /* the stats count a batch once its callbacks returned: wait for both to settle */
        br_sub_stats(s, &queued, &delivered, &dropped);
        pthread_mutex_lock(&slow.mu);
        bool done = slow.n + slow.dropped == 100 && delivered == slow.n;
        pthread_mutex_unlock(&slow.mu);
        if (done)
            break;
        usleep(20000);
    }
    br_sub_stats(s, &queued, &delivered, &dropped);
    cr_expect_geq(slow.overflows, 1);
    cr_expect_eq(slow.n + slow.dropped, 100, "%zu delivered + %llu dropped", slow.n,
                 (unsigned long long)slow.dropped);
    cr_expect_eq(dropped, slow.dropped);
    cr_expect_eq(delivered, slow.n);
    cr_expect_gt(slow.dropped, 0);
    cr_expect_eq(queued, 0);
    /* after catching up it receives changes again */
    size_t before = slow.n;
    slow.sleep_ms = 0;
    put("late", "{\"k\":2}", NULL);
    cr_expect_eq(wait_n(&slow, before + 1), before + 1);
    br_sub_close(s);
    br_sub_close(f);
}

Test(subs, bulk_batch_notifies_each_change_in_commit_order)
{
    struct got g;
    got_init(&g);
    const char *p[] = {"n/#"};
    br_sub *s = sub(p, 1, NULL, &g);
    struct br_put puts[10];
    struct br_json_doc jd[10];
    struct br_put_result res[10];
    for (int i = 0; i < 10; i++) {
        char id[8], body[32];
        snprintf(id, sizeof id, "b%d", i);
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        json_t *j = json_loads(body, 0, NULL);
        cr_assert_eq(br_json_doc_parse(j, id, &jd[i], NULL), BR_OK);
        json_decref(j);
        puts[i] = jd[i].put;
    }
    cr_assert_eq(br_db_bulk(db, puts, 10, &NOSYNC, res), BR_OK);
    for (int i = 0; i < 10; i++)
        br_json_doc_fini(&jd[i]);
    settle(&g, 10);
    for (int i = 0; i < 10; i++) {
        char id[8];
        snprintf(id, sizeof id, "b%d", i);
        cr_expect_str_eq(g.ids[i], id);
    }
    br_sub_close(s);
}

/* Unsubscribing from another thread while the delivery thread is in the middle of a batch
 * with more queued: no callback after close returns, nothing freed twice (ASan). */
Test(subs, close_during_a_batch_is_safe_and_final)
{
    const char *p[] = {"k/#"};
    for (int round = 0; round < 20; round++) {
        struct got g;
        got_init(&g);
        g.sleep_ms = 1;
        br_sub *s = sub(p, 1, NULL, &g);
        for (int i = 0; i < 30; i++) {
            char id[16];
            snprintf(id, sizeof id, "r%d-%d", round, i);
            put(id, "{\"k\":1}", NULL);
        }
        usleep((useconds_t)(round % 5) * 1000);
        br_sub_close(s);
        pthread_mutex_lock(&g.mu);
        size_t n = g.n;
        pthread_mutex_unlock(&g.mu);
        usleep(5000);
        cr_assert_eq(g.n, n, "a callback ran after br_sub_close returned");
    }
    cr_expect_eq(br_db_sub_count(db), 0);
}

/* ---- topics gathered by the index's walk (docs.c commit) ---- */

struct joined {
    pthread_mutex_t mu;
    char text[32][256]; /* per event: id, deleted flag, then every path, ';'-separated */
    size_t n;
};

static void on_joined(void *arg, const struct br_sub_event *ev)
{
    struct joined *j = arg;
    pthread_mutex_lock(&j->mu);
    if (ev->kind == BR_SUB_CHANGE && j->n < 32) {
        char *t = j->text[j->n++];
        int k = snprintf(t, 256, "%.*s:%d", (int)ev->id_len, ev->id, ev->deleted);
        for (size_t i = 0; i < ev->n_paths && k > 0 && k < 256; i++)
            k += snprintf(t + k, 256 - (size_t)k, ";%s", ev->paths[i]);
    }
    pthread_mutex_unlock(&j->mu);
}

static size_t joined_n(struct joined *j)
{
    pthread_mutex_lock(&j->mu);
    size_t n = j->n;
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* Creates, an update to the same body (no index walk), updates, a deletion (paths of what it
 * deleted) and a bulk batch with bad documents in the middle, in database `name` with the
 * index policy given; returns the events one "#" subscription received. */
static void run_topic_sequence(const char *name, int policy, struct joined *j)
{
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_store_db_create(st, name, &eb), BR_OK, "%s", eb.msg);
    br_db *saved = db;
    cr_assert_eq(br_store_db_open(st, name, &db), BR_OK);
    static const char *const some[] = {"type", "tags"};
    if (policy == 1)
        cr_assert_eq(br_db_set_index(db, true, NULL, 0, &eb), BR_OK, "%s", eb.msg);
    else if (policy == 2)
        cr_assert_eq(br_db_set_index(db, false, some, 2, &eb), BR_OK, "%s", eb.msg);
    memset(j, 0, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    const char *all[] = {"#"};
    struct br_sub_opts o = {.patterns = all, .n_patterns = 1};
    br_sub *s;
    cr_assert_eq(br_db_subscribe(db, &o, on_joined, j, &s, &eb), BR_OK, "%s", eb.msg);
    struct br_rev a1 = put("a", "{\"type\":\"t\",\"tags\":[\"x\",\"y\",\"x\"],\"n\":1.5}", NULL);
    struct br_rev a2 = put("a", "{\"type\":\"t\",\"tags\":[\"x\",\"y\",\"x\"],\"n\":1.5}", &a1);
    struct br_rev a3 = put("a", "{\"type\":\"u\",\"deep\":{\"k\":[null,true]}}", &a2);
    put("b", "{\"v\":\"w\",\"z\":null}", NULL);
    del("a", &a3);
    struct br_put bp[4] = {
        {.id = "c", .id_len = 1, .body = (const uint8_t *)"\xa1\x61k\x01", .body_len = 4},
        {.id = "_bad", .id_len = 4, .body = (const uint8_t *)"\xa0", .body_len = 1},
        {.id = "b", .id_len = 1, .body = (const uint8_t *)"\xa0", .body_len = 1}, /* conflict */
        {.id = "d", .id_len = 1, .body = (const uint8_t *)"\xa1\x61k\x02", .body_len = 4},
    };
    struct br_put_result res[4];
    cr_assert_eq(br_db_bulk(db, bp, 4, &NOSYNC, res), BR_OK);
    cr_assert_eq(res[1].err, BR_EBADNAME);
    cr_assert_eq(res[2].err, BR_ECONFLICT);
    for (int i = 0; i < 500 && joined_n(j) < 7; i++)
        usleep(10000);
    usleep(20000);
    cr_assert_eq(joined_n(j), 7, "%s: %zu events", name, joined_n(j));
    br_sub_close(s);
    br_db_close(db);
    db = saved;
}

Test(subs, topics_from_the_index_walk_equal_a_walk_of_their_own)
{
    static struct joined none, all, some;
    run_topic_sequence("none", 0, &none);
    run_topic_sequence("all", 1, &all);
    run_topic_sequence("some", 2, &some);
    cr_expect_str_eq(none.text[0], "a:0;n/1.5;tags/x;tags/y;type/t");
    cr_expect_str_eq(none.text[4], "a:1;deep/k/null;deep/k/true;type/u");
    for (size_t i = 0; i < 7; i++) {
        cr_expect_str_eq(all.text[i], none.text[i], "event %zu", i);
        cr_expect_str_eq(some.text[i], none.text[i], "event %zu", i);
    }
}

/* ---- the change FIFO between writers and the delivery thread ---- */

/* A subscriber whose first callback blocks until released: the delivery thread is held there
 * and changes pile up in the FIFO behind it. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open;
    char ids[256][32];
    size_t n;
    uint64_t dropped;
};

static void gate_init(struct gate *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void on_gate(void *arg, const struct br_sub_event *ev)
{
    struct gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    if (ev->kind == BR_SUB_OVERFLOW)
        g->dropped += ev->dropped;
    else if (g->n < 256) {
        memcpy(g->ids[g->n], ev->id, ev->id_len);
        g->ids[g->n][ev->id_len] = 0;
        g->n++;
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_wait_entered(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < 500 && !g->entered; i++) {
        pthread_mutex_unlock(&g->mu);
        usleep(10000);
        pthread_mutex_lock(&g->mu);
    }
    cr_assert(g->entered, "the delivery thread never called the gate");
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* With the FIFO full the writer matches the oldest changes itself: every change still reaches
 * every subscriber once, in commit order, with the delivery thread stuck the whole time. */
Test(subs, full_fifo_writer_matches_in_commit_order)
{
    struct gate gt;
    gate_init(&gt);
    struct got g;
    got_init(&g);
    const char *p[] = {"k/#"};
    struct br_sub_opts o = {.patterns = p, .n_patterns = 1, .queue_max = 1000};
    br_sub *a, *b;
    cr_assert_eq(br_db_subscribe(db, &o, on_gate, &gt, &a, NULL), BR_OK);
    subs_test_fifo_max(db, 4);
    put("w0", "{\"k\":0}", NULL);
    gate_wait_entered(&gt); /* the delivery thread is now held in a callback */
    cr_assert_eq(br_db_subscribe(db, &o, on_event, &g, &b, NULL), BR_OK);
    for (int i = 0; i < 150; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%03d", i);
        put(id, i % 3 ? "{\"k\":1}" : "{\"other\":1}", NULL); /* every third matches nothing */
    }
    cr_expect_geq(subs_test_writer_matched(db), 100, "the writer matched %llu",
                  (unsigned long long)subs_test_writer_matched(db));
    gate_open(&gt);
    settle(&g, 100);
    for (int tries = 0; tries < 500; tries++) {
        pthread_mutex_lock(&gt.mu);
        size_t n = gt.n;
        pthread_mutex_unlock(&gt.mu);
        if (n == 101)
            break;
        usleep(10000);
    }
    cr_assert_eq(gt.n, 101);
    cr_expect_eq(gt.dropped, 0);
    cr_expect_eq(g.overflows, 0);
    cr_expect_str_eq(gt.ids[0], "w0");
    for (int i = 0, k = 0; i < 150; i++) {
        if (!(i % 3))
            continue;
        char id[16];
        snprintf(id, sizeof id, "d%03d", i);
        cr_expect_str_eq(g.ids[k], id, "event %d", k);
        cr_expect_str_eq(gt.ids[k + 1], id, "gate event %d", k + 1);
        k++;
    }
    br_sub_close(a);
    br_sub_close(b);
}

/* A change committed before a subscription but still in the FIFO (not matched yet) when it
 * registers is not delivered to it; the next change is. The query subscription also needs the
 * body of the next change, which was committed while a query subscription existed. */
Test(subs, subscribe_after_commit_skips_changes_still_queued)
{
    struct gate gt;
    gate_init(&gt);
    struct got g, gq;
    got_init(&g);
    got_init(&gq);
    const char *p[] = {"k/#"};
    struct br_sub_opts o = {.patterns = p, .n_patterns = 1};
    br_sub *a;
    cr_assert_eq(br_db_subscribe(db, &o, on_gate, &gt, &a, NULL), BR_OK);
    put("w0", "{\"k\":0}", NULL);
    gate_wait_entered(&gt);
    put("early", "{\"k\":1}", NULL); /* queued, not matched: the delivery thread is held */
    br_sub *s = sub(p, 1, NULL, &g);
    br_query *q = compile("{\"where\":[{\"path\":\"k\",\"op\":\">=\",\"value\":1}]}");
    br_sub *sq = sub(NULL, 0, q, &gq);
    put("late", "{\"k\":2}", NULL);
    gate_open(&gt);
    settle(&g, 1);
    settle(&gq, 1);
    cr_expect_str_eq(g.ids[0], "late");
    cr_expect_str_eq(gq.ids[0], "late");
    size_t n = 0;
    for (int tries = 0; tries < 500 && n < 3; tries++) {
        usleep(10000);
        pthread_mutex_lock(&gt.mu);
        n = gt.n;
        pthread_mutex_unlock(&gt.mu);
    }
    cr_expect_eq(n, 3);
    cr_expect_str_eq(gt.ids[1], "early");
    br_sub_close(a);
    br_sub_close(s);
    br_sub_close(sq);
    br_query_free(q);
}
