/* links_test.c — replication over /_p2p links between real `barrel serve` processes on
 * loopback, the cases issue 5 requires beyond p2p_test.c: concurrent edits on disconnected
 * nodes end with the same winner and `_conflicts` on both, and resolving on one side clears
 * both (REP-18, REP-19); a seeded random workload of writes, deletes, one-shot syncs and
 * restarts on three nodes converges to equal digests and winners (REP-20); path and query
 * filters over a link move only matching docs, deletions included; kill -9 of the target or
 * the source in the middle of a pull resumes from the checkpoint and ends complete; and the
 * link refuses a denied id, a replayed handshake, a tampered, truncated or oversized frame and
 * a truncated HELLO, each with a logged reason, while the node keeps serving HTTP and its
 * other links. The attacking client is written here with barrel's own handshake and framing
 * over a raw socket with minimal WebSocket framing. */
#include "barrel/frame.h"
#include "barrel/gossip.h"
#include "barrel/handshake.h"
#include "barrel/identity.h"
#include "barrel/nodeid.h"
#include "barrel/replicator.h"
#include "barrel/trust.h"
#include "barrel/wire.h"

#include "p2p_util.h"

TestSuite(links, .init = p2p_setup, .fini = p2p_teardown, .timeout = 400);

static char mesh[600];

/* Start every given node with the same mesh key (and extra flags for one of them). These tests
 * drive replications explicitly, so the mesh's own pulls (mesh_test.c) are off. */
static void start_meshed(struct node *n, const char *const *extra)
{
    const char *argv[20];
    int k = 0;
    argv[k++] = "--mesh-key";
    argv[k++] = mesh;
    argv[k++] = "--no-mesh";
    for (size_t i = 0; extra && extra[i]; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    node_start(n, argv);
}

static void make_mesh(void)
{
    snprintf(mesh, sizeof mesh, "%s/mesh", root);
    mesh_key(mesh);
}

/* One-shot pull on `to` from ws://from/src into tgt (filter: a JSON object or NULL). */
static int pull(const struct node *to, const struct node *from, const char *src, const char *tgt,
                const char *filter, struct resp *r)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"source\":\"ws://127.0.0.1:%d/%s\",\"target\":\"%s\"%s%s}",
             from->port, src, tgt, filter ? ",\"filter\":" : "", filter ? filter : "");
    at(to);
    return post_json(r, "/_replicate", body);
}

static void pull_ok(const struct node *to, const struct node *from, const char *db)
{
    struct resp r;
    cr_assert_eq(pull(to, from, db, db, NULL, &r), 200, "%s", r.body);
    resp_fini(&r);
}

static json_int_t history_int(const struct resp *r, const char *key)
{
    json_t *h = json_array_get(json_object_get(r->json, "history"), 0);
    return json_integer_value(json_object_get(h, key));
}

static json_int_t docs_read_of(const struct resp *r)
{
    return history_int(r, "docs_read");
}

/* GET /db on n: doc_count, doc_del_count and the digest (set hash over every leaf). */
struct dbinfo {
    json_int_t docs, dels;
    char digest[64];
};

static struct dbinfo info_of(const struct node *n, const char *db)
{
    struct resp r;
    char p[128];
    snprintf(p, sizeof p, "/%s", db);
    cr_assert_eq(nget(n, &r, p), 200, "%s", r.body);
    struct dbinfo d = {json_integer_value(json_object_get(r.json, "doc_count")),
                       json_integer_value(json_object_get(r.json, "doc_del_count")), ""};
    cr_assert(jstr(&r, "digest"), "no digest in %s", r.body);
    snprintf(d.digest, sizeof d.digest, "%s", jstr(&r, "digest"));
    resp_fini(&r);
    return d;
}

/* The winner as GET ?conflicts=true answers it (status and body). */
static char *winner_of(const struct node *n, const char *db, const char *id, int *status)
{
    struct resp r;
    char p[256];
    snprintf(p, sizeof p, "/%s/%s?conflicts=true", db, id);
    *status = nget(n, &r, p);
    char *s = strdup(r.body ? r.body : "");
    resp_fini(&r);
    return s;
}

static int del_rev(const struct node *n, const char *db, const char *id, const char *rev)
{
    struct resp r;
    char p[256];
    snprintf(p, sizeof p, "/%s/%s?rev=%s", db, id, rev);
    at(n);
    int s = req(&r, "DELETE", p, NULL, NULL, NULL);
    resp_fini(&r);
    return s;
}

#define NCONF 6

Test(links, concurrent_edits_converge_and_resolution_replicates)
{
    make_mesh();
    start_meshed(&N[0], NULL);
    start_meshed(&N[1], NULL);
    ndb(&N[0], "d");
    ndb(&N[1], "d");
    char rev[NCONF][128], ra[NCONF][128], rb[NCONF][128], body[256], id[16];
    for (int i = 0; i < NCONF; i++) {
        snprintf(id, sizeof id, "/d/c%d", i);
        nput(&N[0], id, "{\"v\":0}", rev[i], sizeof rev[i]);
    }
    pull_ok(&N[1], &N[0], "d");
    /* disconnected: no link between them until the next one-shot; each edits every doc */
    for (int i = 0; i < NCONF; i++) {
        snprintf(id, sizeof id, "/d/c%d", i);
        snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"v\":\"a%d\"}", rev[i], i);
        nput(&N[0], id, body, ra[i], sizeof ra[i]);
        snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"v\":\"b%d\"}", rev[i], i);
        nput(&N[1], id, body, rb[i], sizeof rb[i]);
        if (i % 2) { /* B goes one generation further on odd docs: it must win those */
            snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"v\":\"bb%d\"}", rb[i], i);
            nput(&N[1], id, body, rb[i], sizeof rb[i]);
        }
    }
    pull_ok(&N[1], &N[0], "d");
    pull_ok(&N[0], &N[1], "d");
    char did[16];
    for (int i = 0; i < NCONF; i++) {
        snprintf(did, sizeof did, "c%d", i);
        int sa, sb;
        char *wa = winner_of(&N[0], "d", did, &sa), *wb = winner_of(&N[1], "d", did, &sb);
        cr_assert_eq(sa, 200);
        cr_assert_eq(sb, 200);
        cr_assert_str_eq(wa, wb, "winners differ for %s", did);
        cr_assert(strstr(wa, "_conflicts") && strstr(wa, ra[i]) && strstr(wa, rb[i]),
                  "%s: both edits not on record: %s", did, wa);
        if (i % 2)
            cr_assert(strstr(wa, "\"bb"), "%s: the longer branch lost: %s", did, wa);
        free(wa);
        free(wb);
    }
    struct dbinfo ia = info_of(&N[0], "d"), ib = info_of(&N[1], "d");
    cr_assert_str_eq(ia.digest, ib.digest);
    /* resolve on A: delete each losing leaf; B learns it and is conflict-free too */
    for (int i = 0; i < NCONF; i++) {
        snprintf(did, sizeof did, "c%d", i);
        struct resp r;
        char p[64];
        snprintf(p, sizeof p, "/d/%s?conflicts=true", did);
        cr_assert_eq(nget(&N[0], &r, p), 200);
        json_t *c = json_object_get(r.json, "_conflicts");
        cr_assert_eq(json_array_size(c), 1, "%s", r.body);
        cr_assert_eq(del_rev(&N[0], "d", did, json_string_value(json_array_get(c, 0))), 200);
        resp_fini(&r);
    }
    pull_ok(&N[1], &N[0], "d");
    pull_ok(&N[0], &N[1], "d");
    for (int i = 0; i < NCONF; i++) {
        snprintf(did, sizeof did, "c%d", i);
        int sa, sb;
        char *wa = winner_of(&N[0], "d", did, &sa), *wb = winner_of(&N[1], "d", did, &sb);
        cr_assert_eq(sa, 200);
        cr_assert_eq(sb, 200);
        cr_assert_str_eq(wa, wb);
        cr_assert_null(strstr(wa, "_conflicts"), "%s still in conflict: %s", did, wa);
        free(wa);
        free(wb);
    }
    ia = info_of(&N[0], "d");
    ib = info_of(&N[1], "d");
    cr_assert_str_eq(ia.digest, ib.digest);
    cr_assert_eq(ia.docs, NCONF);
    cr_assert_eq(ib.docs, NCONF);
    /* the link traffic is counted on both sides */
    for (int i = 0; i < 2; i++) {
        struct resp r;
        cr_assert_eq(nget(&N[i], &r, "/_metrics"), 200);
        const char *q = strstr(r.body, "\nbarrel_p2p_bytes_sent_total ");
        const char *w = strstr(r.body, "\nbarrel_p2p_bytes_received_total ");
        cr_assert(q && w, "no link byte counters");
        cr_assert_gt(strtoull(q + 29, NULL, 10), 1000);
        cr_assert_gt(strtoull(w + 33, NULL, 10), 1000);
        resp_fini(&r);
    }
}

/* xorshift64*: the workload is the same on every run of a seed. */
static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 33) % n;
}

#define RW_DOCS 20
#define RW_OPS 200

Test(links, random_workload_on_three_nodes_converges)
{
    rng_state = 0x5eed0005u;
    make_mesh();
    for (int i = 0; i < 3; i++) {
        start_meshed(&N[i], NULL);
        ndb(&N[i], "d");
    }
    int puts = 0, dels = 0, syncs = 0, restarts = 0;
    for (int op = 0; op < RW_OPS; op++) {
        struct node *n = &N[rnd(3)];
        uint32_t k = rnd(100);
        if (k < 15) { /* a link comes up for one pull, then is gone again */
            struct node *m = &N[rnd(3)];
            if (m != n) {
                pull_ok(n, m, "d");
                syncs++;
            }
            continue;
        }
        if (k < 18) { /* a node goes down and comes back */
            node_stop(n);
            start_meshed(n, NULL);
            restarts++;
            continue;
        }
        char path[32], body[128], rev[128];
        snprintf(path, sizeof path, "/d/r%02u", rnd(RW_DOCS));
        struct resp r;
        int s = nget(n, &r, path);
        const char *cur = s == 200 ? jstr(&r, "_rev") : NULL;
        if (cur && k < 40) {
            cr_assert_eq(del_rev(n, "d", path + 3, cur), 200);
            dels++;
        } else {
            if (cur)
                snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"op\":%d}", cur, op);
            else
                snprintf(body, sizeof body, "{\"op\":%d}", op);
            nput(n, path, body, rev, sizeof rev);
            puts++;
        }
        resp_fini(&r);
    }
    cr_log_info("workload: %d puts, %d deletes, %d syncs, %d restarts", puts, dels, syncs,
                restarts);
    cr_assert(puts > 50 && dels > 10 && syncs > 10 && restarts > 0);
    /* every link up once, in every direction */
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            if (a != b)
                pull_ok(&N[a], &N[b], "d");
    struct dbinfo in[3];
    for (int i = 0; i < 3; i++)
        in[i] = info_of(&N[i], "d");
    for (int i = 1; i < 3; i++) {
        cr_assert_str_eq(in[i].digest, in[0].digest, "node %d digest differs", i);
        cr_assert_eq(in[i].docs, in[0].docs);
        cr_assert_eq(in[i].dels, in[0].dels);
    }
    cr_assert(strcmp(in[0].digest, "00000000000000000000000000000000") != 0);
    int conflicted = 0;
    for (int d = 0; d < RW_DOCS; d++) {
        char id[8];
        snprintf(id, sizeof id, "r%02d", d);
        int s0, s;
        char *w0 = winner_of(&N[0], "d", id, &s0);
        conflicted += strstr(w0, "_conflicts") != NULL;
        for (int i = 1; i < 3; i++) {
            char *w = winner_of(&N[i], "d", id, &s);
            cr_assert_eq(s, s0, "%s: status %d on node %d, %d on node 0", id, s, i, s0);
            cr_assert_str_eq(w, w0, "%s: winners differ on node %d", id, i);
            char path[16];
            snprintf(path, sizeof path, "/d/%s", id);
            char *a = state_of(&N[0], path), *b = state_of(&N[i], path);
            cr_assert_str_eq(a, b);
            free(a);
            free(b);
            free(w);
        }
        free(w0);
    }
    cr_log_info("workload: %d docs in conflict, converged", conflicted);
}

/* Sensor docs on A: i % 10 is the site, every third is an alarm. */
static void load_sensors(const struct node *n, const char *db, int from, int count)
{
    size_t cap = (size_t)count * 160 + 64, len = 0;
    char *b = malloc(cap);
    cr_assert(b);
    len += (size_t)snprintf(b, cap, "{\"docs\":[");
    for (int i = from; i < from + count; i++)
        len += (size_t)snprintf(b + len, cap - len,
                                "%s{\"_id\":\"s%06d\",\"site\":\"site-%d\",\"sensor\":\"t-%d\","
                                "\"type\":\"%s\",\"ts\":%d,\"value\":%d.5}",
                                i > from ? "," : "", i, i % 10, i % 37, i % 3 ? "reading" : "alarm",
                                1700000000 + i, i % 40);
    snprintf(b + len, cap - len, "]}");
    struct resp r;
    char p[128];
    snprintf(p, sizeof p, "/%s/_bulk_docs", db);
    at(n);
    cr_assert_eq(post_json(&r, p, b), 201, "%.300s", r.body);
    resp_fini(&r);
    free(b);
}

static void load_many(const struct node *n, const char *db, int count)
{
    for (int i = 0; i < count; i += 2000)
        load_sensors(n, db, i, count - i < 2000 ? count - i : 2000);
}

Test(links, filters_move_only_matching_docs_and_their_deletions)
{
    make_mesh();
    start_meshed(&N[0], NULL);
    start_meshed(&N[1], NULL);
    ndb(&N[0], "src");
    load_sensors(&N[0], "src", 0, 300);
    struct resp r;
    /* by path */
    const char *fp = "{\"paths\":[\"site/site-7\"]}";
    ndb(&N[1], "s7");
    cr_assert_eq(pull(&N[1], &N[0], "src", "s7", fp, &r), 200, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(info_of(&N[1], "s7").docs, 30);
    cr_assert(wait_doc(&N[1], "/s7/s000007", 200, "site-7", 0));
    cr_assert(wait_doc(&N[1], "/s7/s000008", 404, NULL, 0));
    /* by query: the alarms */
    const char *fq = "{\"query\":{\"where\":[{\"path\":[\"type\"],\"value\":\"alarm\"}]}}";
    ndb(&N[1], "al");
    cr_assert_eq(pull(&N[1], &N[0], "src", "al", fq, &r), 200, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(info_of(&N[1], "al").docs, 100);
    cr_assert(wait_doc(&N[1], "/al/s000003", 200, "alarm", 0));
    cr_assert(wait_doc(&N[1], "/al/s000004", 404, NULL, 0));
    /* deleting a matching doc on A moves the deletion; a non-matching new doc does not move */
    char rev[128];
    cr_assert_eq(nget(&N[0], &r, "/src/s000007"), 200);
    snprintf(rev, sizeof rev, "%s", jstr(&r, "_rev"));
    resp_fini(&r);
    cr_assert_eq(del_rev(&N[0], "src", "s000007", rev), 200);
    cr_assert_eq(nget(&N[0], &r, "/src/s000003"), 200);
    snprintf(rev, sizeof rev, "%s", jstr(&r, "_rev"));
    resp_fini(&r);
    cr_assert_eq(del_rev(&N[0], "src", "s000003", rev), 200);
    nput(&N[0], "/src/extra", "{\"site\":\"site-1\",\"type\":\"reading\"}", rev, sizeof rev);
    cr_assert_eq(pull(&N[1], &N[0], "src", "s7", fp, &r), 200, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(pull(&N[1], &N[0], "src", "al", fq, &r), 200, "%s", r.body);
    resp_fini(&r);
    cr_assert(wait_doc(&N[1], "/s7/s000007", 404, NULL, 0), "the deletion did not move (path)");
    cr_assert(wait_doc(&N[1], "/al/s000003", 404, NULL, 0), "the deletion did not move (query)");
    struct dbinfo s7 = info_of(&N[1], "s7"), al = info_of(&N[1], "al");
    cr_assert_eq(s7.docs, 29);
    cr_assert_eq(s7.dels, 1);
    cr_assert_eq(al.docs, 99);
    cr_assert_eq(al.dels, 1);
    cr_assert(wait_doc(&N[1], "/s7/extra", 404, NULL, 0));
    cr_assert(wait_doc(&N[1], "/al/extra", 404, NULL, 0));
}

/* Kill-resume size: 100,000 docs, or 20,000 under the sanitizers (100,000 twice would take
 * minutes of the suite's 15 on 2 cores). */
#ifndef KILL_DOCS
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KILL_DOCS 20000
#else
#define KILL_DOCS 100000
#endif
#endif

/* Send POST /_replicate (pull from->src into to's dst) and return the open socket. */
static int pull_async(const struct node *to, const struct node *from)
{
    char body[256];
    snprintf(body, sizeof body, "{\"source\":\"ws://127.0.0.1:%d/src\",\"target\":\"dst\"}",
             from->port);
    at(to);
    int fd = connect_node();
    send_req(fd, "POST", "/_replicate", "application/json", NULL, body);
    return fd;
}

/* Wait until dst on n holds at least `want` docs; false on timeout. */
static bool wait_count(const struct node *n, json_int_t want, int ms)
{
    for (int t = 0; t < ms; t += 2) {
        if (info_of(n, "dst").docs >= want)
            return true;
        usleep(2000);
    }
    return false;
}

static void resume_and_check(struct node *tgt, struct node *src, json_int_t had)
{
    struct resp r;
    cr_assert_eq(pull(tgt, src, "src", "dst", NULL, &r), 200, "%s", r.body);
    json_int_t read = docs_read_of(&r), checked = history_int(&r, "missing_checked");
    cr_log_info("resumed with %lld of %d docs on the target: changes read=%lld docs_read=%lld",
                (long long)had, KILL_DOCS, (long long)checked, (long long)read);
    /* resumed from the checkpoint: the changes feed was read from there, not from the start */
    json_t *h = json_array_get(json_object_get(r.json, "history"), 0);
    const char *start = json_string_value(json_object_get(h, "start_last_seq"));
    cr_assert(start && strcmp(start, "0:0") != 0, "the run started from scratch: %s", r.body);
    cr_assert(checked <= KILL_DOCS - had + 4 * BR_REP_DEFAULT_BATCH,
              "%lld changes read: the run did not resume from the checkpoint (had %lld)",
              (long long)checked, (long long)had);
    /* the remainder (plus at most the batches in flight at the kill), not everything */
    cr_assert(read >= KILL_DOCS - had, "docs_read %lld < remainder", (long long)read);
    cr_assert(read <= KILL_DOCS - had + 4 * BR_REP_DEFAULT_BATCH,
              "docs_read %lld: the run did not resume from the checkpoint (had %lld)",
              (long long)read, (long long)had);
    resp_fini(&r);
    struct dbinfo a = info_of(src, "src"), b = info_of(tgt, "dst");
    cr_assert_eq(b.docs, KILL_DOCS);
    cr_assert_eq(b.dels, 0);
    cr_assert_str_eq(a.digest, b.digest, "digests differ after the resumed run");
    /* one more run finds nothing to do */
    cr_assert_eq(pull(tgt, src, "src", "dst", NULL, &r), 200, "%s", r.body);
    cr_assert_eq(docs_read_of(&r), 0, "%s", r.body);
    resp_fini(&r);
}

Test(links, kill_9_of_the_target_mid_pull_resumes_from_the_checkpoint)
{
    make_mesh();
    start_meshed(&N[0], NULL);
    start_meshed(&N[1], NULL);
    ndb(&N[0], "src");
    ndb(&N[1], "dst");
    load_many(&N[0], "src", KILL_DOCS);
    int fd = pull_async(&N[1], &N[0]);
    cr_assert(wait_count(&N[1], KILL_DOCS / 5, 60000), "the pull did not start");
    node_kill(&N[1]);
    close(fd);
    start_meshed(&N[1], NULL);
    json_int_t had = info_of(&N[1], "dst").docs;
    cr_assert(had > 0 && had < KILL_DOCS, "not killed mid-run: %lld docs", (long long)had);
    resume_and_check(&N[1], &N[0], had);
}

Test(links, kill_9_of_the_source_mid_pull_resumes_from_the_checkpoint)
{
    make_mesh();
    start_meshed(&N[0], NULL);
    start_meshed(&N[1], NULL);
    ndb(&N[0], "src");
    ndb(&N[1], "dst");
    load_many(&N[0], "src", KILL_DOCS);
    int fd = pull_async(&N[1], &N[0]);
    cr_assert(wait_count(&N[1], KILL_DOCS / 5, 60000), "the pull did not start");
    node_kill(&N[0]);
    struct resp r;
    cr_assert(read_resp(fd, &r, 30000), "no answer from the target after the source died");
    close(fd);
    cr_assert_neq(r.status, 200, "the run claims success: %s", r.body);
    resp_fini(&r);
    json_int_t had = info_of(&N[1], "dst").docs;
    cr_assert(had > 0 && had < KILL_DOCS, "not killed mid-run: %lld docs", (long long)had);
    start_meshed(&N[0], NULL);
    resume_and_check(&N[1], &N[0], had);
    still_serving();
}

/* ---- a hostile peer: barrel's handshake and framing over a raw WebSocket ---- */

static int ws_upgrade(int p)
{
    port = p;
    int fd = connect_node();
    const char *up = "GET /_p2p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n";
    send_all(fd, up, strlen(up));
    char buf[1024];
    size_t n = 0;
    while (n < sizeof buf - 1) { /* byte by byte: nothing past the headers is consumed */
        ssize_t k = recv_deadline(fd, buf + n, 1, 5000);
        cr_assert(k > 0, "no upgrade answer");
        n++;
        buf[n] = '\0';
        if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    cr_assert(strstr(buf, " 101 "), "no upgrade: %s", buf);
    return fd;
}

/* One masked binary frame (any length). */
static void ws_send(int fd, const uint8_t *payload, size_t n)
{
    uint8_t h[14];
    size_t k = 0;
    h[k++] = 0x82;
    if (n < 126) {
        h[k++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[k++] = 0x80 | 126;
        h[k++] = (uint8_t)(n >> 8);
        h[k++] = (uint8_t)n;
    } else {
        h[k++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[k++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    static const uint8_t mask[4] = {9, 8, 7, 6};
    memcpy(h + k, mask, 4);
    k += 4;
    uint8_t *m = malloc(n + k);
    cr_assert(m);
    memcpy(m, h, k);
    for (size_t i = 0; i < n; i++)
        m[k + i] = payload[i] ^ mask[i % 4];
    send_all(fd, m, n + k);
    free(m);
}

static bool recv_exact(int fd, uint8_t *p, size_t n, int ms)
{
    while (n) {
        ssize_t k = recv_deadline(fd, (char *)p, n, ms);
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* One binary frame from the server (unmasked); returns its length, -1 on close or timeout. */
static ssize_t ws_recv(int fd, uint8_t *out, size_t cap)
{
    for (;;) {
        uint8_t h[2];
        if (!recv_exact(fd, h, 2, 5000))
            return -1;
        uint64_t n = h[1] & 0x7f;
        uint8_t x[8];
        if (n == 126) {
            if (!recv_exact(fd, x, 2, 5000))
                return -1;
            n = (uint64_t)x[0] << 8 | x[1];
        } else if (n == 127) {
            if (!recv_exact(fd, x, 8, 5000))
                return -1;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | x[i];
        }
        cr_assert(n <= cap, "frame of %llu bytes", (unsigned long long)n);
        if (!recv_exact(fd, out, (size_t)n, 5000))
            return -1;
        if ((h[0] & 0x0f) == 0x8)
            return -1; /* close */
        if ((h[0] & 0x0f) == 0x2)
            return (ssize_t)n;
    }
}

static char hostile[40]; /* "peer=<client short id> ": the hostile client's lines in B's log */

struct client {
    br_identity *id;
    br_trust *trust; /* allows B */
    char id_text[BR_NODE_ID_TEXT_LEN + 1];
    char short_id[BR_NODE_ID_SHORT_LEN + 1];
    uint8_t hello[BR_HS_MAX_BYTES], finish[BR_HS_MAX_BYTES];
    size_t hello_len, finish_len;
};

static void client_init(struct client *c)
{
    uint8_t seed[BR_IDENTITY_SEED_BYTES];
    memset(seed, 0x42, sizeof seed);
    cr_assert_eq(br_identity_from_seed(seed, &c->id), BR_OK);
    br_nodeid_format(br_identity_node_id(c->id), c->id_text);
    br_nodeid_short(br_identity_node_id(c->id), c->short_id);
    snprintf(hostile, sizeof hostile, "peer=%s ", c->short_id);
    struct br_node_id b;
    cr_assert_eq(br_nodeid_parse(N[1].id, strlen(N[1].id), &b, NULL), BR_OK);
    cr_assert_eq(br_trust_new(&c->trust), BR_OK);
    cr_assert_eq(br_trust_allow(c->trust, &b), BR_OK);
}

static void client_fini(struct client *c)
{
    br_trust_free(c->trust);
    br_identity_free(c->id);
}

/* Run a whole handshake as the initiator on fd (no mesh key); record HELLO and FINISH. On
 * success *fr owns the framing state. */
static void client_handshake(struct client *c, int fd, br_frame **fr)
{
    br_handshake *h = NULL;
    struct br_handshake_opts o = {.identity = c->id, .trust = c->trust};
    cr_assert_eq(br_handshake_new(&o, true, &h), BR_OK);
    br_buf out;
    br_buf_init(&out, BR_HS_MAX_BYTES);
    cr_assert_eq(br_handshake_start(h, &out), BR_OK);
    memcpy(c->hello, out.data, out.len);
    c->hello_len = out.len;
    ws_send(fd, out.data, out.len);
    uint8_t in[1024];
    ssize_t k = ws_recv(fd, in, sizeof in);
    cr_assert(k > 0, "no RESPONSE");
    br_buf_reset(&out);
    cr_assert_eq(br_handshake_recv(h, in, (size_t)k, &out), BR_OK, "reason %s",
                 br_hs_reason_name(br_handshake_reason(h)));
    cr_assert(br_handshake_done(h));
    memcpy(c->finish, out.data, out.len);
    c->finish_len = out.len;
    ws_send(fd, out.data, out.len);
    br_buf_fini(&out);
    struct br_frame_opts fo = {.max_plain = BR_WIRE_MAX_MSG};
    cr_assert_eq(br_handshake_link(h, &fo, fr), BR_OK);
    br_handshake_free(h);
}

/* A sealed frame carrying arbitrary bytes (the content never gets to the wire decoder). */
static size_t sealed(br_frame *fr, uint8_t *out, size_t cap)
{
    br_buf b;
    br_buf_init(&b, cap);
    const char *msg = "a perfectly ordinary message";
    cr_assert_eq(br_frame_seal(fr, (const uint8_t *)msg, strlen(msg), &b), BR_OK);
    size_t n = b.len;
    memcpy(out, b.data, n);
    br_buf_fini(&b);
    return n;
}

/* Lines of n's log holding needle and (if not NULL) also2. */
static int count_lines(const struct node *n, const char *needle, const char *also2)
{
    FILE *f = fopen(n->log, "r");
    char line[2048];
    int c = 0;
    while (f && fgets(line, sizeof line, f))
        c += strstr(line, needle) != NULL && (!also2 || strstr(line, also2) != NULL);
    if (f)
        fclose(f);
    return c;
}

static int count_in_log(const struct node *n, const char *needle)
{
    return count_lines(n, needle, NULL);
}

/* link_up lines of the hostile client on B */
static int hostile_ups(void)
{
    return count_lines(&N[1], "event=link_up", hostile);
}

/* B serves; A keeps a link to B through every attack and still syncs at the end. */
static void attack_setup(struct client *c)
{
    client_init(c);
    const char *eb[] = {"--allow", N[0].id, "--allow", c->id_text, NULL};
    node_start(&N[1], eb);
    ndb(&N[1], "d");
    const char *ea[] = {"--allow", N[1].id, "--peer", url_of(1), "--peer-db", "d", NULL};
    node_start(&N[0], ea);
    char rev[128];
    nput(&N[0], "/d/before", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/d/before", 200, NULL, 10000));
}

static void attack_check(int links_up_before)
{
    char rev[128];
    nput(&N[0], "/d/after", "{\"v\":2}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/d/after", 200, rev, 10000), "the other link stopped working");
    cr_assert_eq(hostile_ups(), links_up_before, "a link came up that should not have");
    struct resp r;
    cr_assert_eq(nget(&N[1], &r, "/_all_dbs"), 200);
    cr_assert(json_array_size(r.json) == 1 &&
                  strcmp(json_string_value(json_array_get(r.json, 0)), "d") == 0,
              "something was stored: %s", r.body);
    resp_fini(&r);
    at(&N[1]);
    still_serving();
}

Test(links, tampered_truncated_and_oversized_frames_close_the_link)
{
    struct client c;
    attack_setup(&c);
    uint8_t f[512];
    const char *expect[3] = {"reason=bad_frame", "reason=bad_frame", "reason=frame_too_big"};
    for (int kind = 0; kind < 3; kind++) {
        int before = count_in_log(&N[1], expect[kind]);
        int ups = hostile_ups();
        int fd = ws_upgrade(N[1].port);
        br_frame *fr = NULL;
        client_handshake(&c, fd, &fr);
        size_t n = sealed(fr, f, sizeof f);
        if (kind == 0) {
            f[n - 3] ^= 0x20; /* one bit in the MAC */
            ws_send(fd, f, n);
        } else if (kind == 1) {
            ws_send(fd, f, n / 2);
        } else {
            size_t big = BR_FRAME_WIRE_MAX(BR_WIRE_MAX_MSG) + 1;
            uint8_t *b = calloc(1, big);
            cr_assert(b);
            memcpy(b, f, n);
            ws_send(fd, b, big);
            free(b);
        }
        cr_assert(closed_within(fd, 10000), "attack %d: the link stayed open", kind);
        close(fd);
        for (int t = 0; t < 40 && hostile_ups() == ups; t++)
            usleep(50000);
        cr_assert_eq(hostile_ups(), ups + 1, "attack %d: the handshake did not complete", kind);
        for (int t = 0; t < 100 && count_in_log(&N[1], expect[kind]) == before; t++)
            usleep(50000);
        cr_assert_gt(count_in_log(&N[1], expect[kind]), before, "attack %d: no %s logged", kind,
                     expect[kind]);
        br_frame_free(fr);
    }
    /* the three hostile links, each once */
    attack_check(3);
    client_fini(&c);
}

Test(links, replayed_handshake_and_truncated_hello_do_not_complete)
{
    struct client c;
    attack_setup(&c);
    /* a real session, recorded */
    int fd = ws_upgrade(N[1].port);
    br_frame *fr = NULL;
    client_handshake(&c, fd, &fr);
    br_frame_free(fr);
    close(fd);
    for (int t = 0; t < 40 && hostile_ups() == 0; t++)
        usleep(50000);
    int ups = hostile_ups();
    cr_assert_eq(ups, 1, "the recorded session did not come up");
    /* replay: the recorded HELLO gets a fresh RESPONSE; the recorded FINISH cannot match it */
    fd = ws_upgrade(N[1].port);
    ws_send(fd, c.hello, c.hello_len);
    uint8_t in[1024];
    cr_assert(ws_recv(fd, in, sizeof in) > 0, "no RESPONSE to the replayed HELLO");
    ws_send(fd, c.finish, c.finish_len);
    cr_assert(closed_within(fd, 5000), "the replayed handshake was not refused");
    close(fd);
    cr_assert(wait_log(&N[1], "initiator=0 reason=decrypt_failed", 3000), "no reason logged");
    /* a truncated HELLO */
    fd = ws_upgrade(N[1].port);
    ws_send(fd, c.hello, c.hello_len - 10);
    cr_assert(closed_within(fd, 5000), "a truncated HELLO kept the link open");
    close(fd);
    cr_assert(wait_log(&N[1], "initiator=0 reason=bad_size", 3000), "no reason logged");
    attack_check(ups);
    client_fini(&c);
}

Test(links, denied_id_is_refused_while_other_links_work)
{
    make_mesh();
    char cfg[600], json[400];
    snprintf(cfg, sizeof cfg, "%s/b.json", root);
    snprintf(json, sizeof json, "{\"p2p\": {\"deny\": [\"%s\"]}}", N[0].id);
    write_config(cfg, json);
    const char *eb[] = {"--config", cfg, NULL};
    start_meshed(&N[1], eb);
    ndb(&N[1], "d");
    const char *ep[] = {"--peer", url_of(1), "--peer-db", "d", NULL};
    start_meshed(&N[2], ep); /* C: a member B allows */
    start_meshed(&N[0], ep); /* A: a member B denies */
    char rev[128];
    nput(&N[0], "/d/from-a", "{\"v\":1}", rev, sizeof rev);
    nput(&N[2], "/d/from-c", "{\"v\":2}", rev, sizeof rev);
    cr_assert(wait_log(&N[1], "reason=peer_denied", 10000), "no peer_denied in B's log");
    cr_assert(wait_doc(&N[1], "/d/from-c", 200, rev, 10000), "C's link did not work");
    usleep(1000000);
    struct resp r;
    cr_assert_eq(nget(&N[1], &r, "/d/from-a"), 404, "the denied node's doc moved: %s", r.body);
    resp_fini(&r);
    cr_assert_eq(nget(&N[0], &r, "/d/from-c"), 404, "B's docs reached the denied node");
    resp_fini(&r);
    cr_assert_eq(info_of(&N[1], "d").docs, 1);
    at(&N[1]);
    still_serving();
}

/* ---- hostile gossip (node/mesh.c, gossip.h) ---- */

static void send_wire(int fd, br_frame *fr, const struct br_wire_msg *m)
{
    br_buf plain, sealed_b;
    br_buf_init(&plain, BR_WIRE_MAX_MSG);
    br_buf_init(&sealed_b, BR_FRAME_WIRE_MAX(BR_WIRE_MAX_MSG));
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_wire_encode(m, &plain, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(br_frame_seal(fr, plain.data, plain.len, &sealed_b), BR_OK);
    ws_send(fd, sealed_b.data, sealed_b.len);
    br_buf_fini(&plain);
    br_buf_fini(&sealed_b);
}

static void send_hello(int fd, br_frame *fr, const char *node)
{
    struct br_wire_msg m = {.type = BR_WIRE_HELLO, .rid = 0};
    m.u.hello.version = BR_WIRE_VERSION;
    m.u.hello.node = node;
    m.u.hello.hlc = (struct br_hlc){(uint64_t)time(NULL) * 1000, 0};
    send_wire(fd, fr, &m);
}

static void fake_id(int i, char out[BR_NODE_ID_TEXT_LEN + 1])
{
    uint8_t pk[32];
    memset(pk, 0x70 + i, sizeof pk);
    struct br_node_id id;
    br_nodeid_from_public_key(pk, &id);
    br_nodeid_format(&id, out);
}

/* B (in a mesh by --mesh, allow lists) faces a client that completed a real handshake: every
 * hostile gossip entry is refused with a logged reason and never reaches B's member table; a
 * hello naming another node and a probe without a request id close the link; B keeps serving
 * and its other link keeps working. */
Test(links, hostile_gossip_is_refused_with_a_reason)
{
    struct client c;
    client_init(&c);
    const char *eb[] = {"--mesh", "--no-mdns", "--allow", N[0].id, "--allow", c.id_text, NULL};
    node_start(&N[1], eb);
    ndb(&N[1], "d");
    const char *ea[] = {"--allow", N[1].id, "--peer", url_of(1), "--peer-db", "d", NULL};
    node_start(&N[0], ea);
    char rev[128];
    nput(&N[0], "/d/before", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/d/before", 200, NULL, 10000));

    int fd = ws_upgrade(N[1].port);
    br_frame *fr = NULL;
    client_handshake(&c, fd, &fr);
    send_hello(fd, fr, c.id_text);
    char good[BR_NODE_ID_TEXT_LEN + 1], ahead[BR_NODE_ID_TEXT_LEN + 1],
        badaddr[BR_NODE_ID_TEXT_LEN + 1];
    fake_id(1, good);
    fake_id(2, ahead);
    fake_id(3, badaddr);
    const char *ok_addrs[] = {"127.0.0.1:1"};
    const char *bad_addrs[] = {"127.0.0.1"};
    uint64_t now = (uint64_t)time(NULL) * 1000;
    struct br_wire_peer e[] = {
        {.node = "NOT-A-NODE-ID", .hlc = {now, 0}},
        {.node = ahead, .addrs = ok_addrs, .n_addrs = 1, .hlc = {now + 86400000ull, 0}},
        {.node = badaddr, .addrs = bad_addrs, .n_addrs = 1, .hlc = {now, 0}},
        {.node = good, .addrs = ok_addrs, .n_addrs = 1, .hlc = {now, 0}},
        {.node = N[1].id, .hlc = {now + 86400000ull, 0}, .state = 2}, /* "B is dead" */
    };
    struct br_wire_msg m = {.type = BR_WIRE_PEERS, .rid = 0};
    m.u.peers.peers = e;
    m.u.peers.n = 5;
    send_wire(fd, fr, &m);
    cr_assert(wait_log(&N[1], "event=gossip_refused", 5000), "nothing refused");
    cr_assert(log_has(&N[1], "refused=4 reason=\"entry 0: not a node id\""),
              "the refusal and its reason are not in the log");
    /* a huge member list is refused whole */
    static struct br_wire_peer many[BR_GOSSIP_MAX_ENTRIES + 44];
    for (size_t i = 0; i < BR_GOSSIP_MAX_ENTRIES + 44; i++)
        many[i] = e[3];
    m.u.peers.peers = many;
    m.u.peers.n = BR_GOSSIP_MAX_ENTRIES + 44;
    send_wire(fd, fr, &m);
    cr_assert(wait_log(&N[1], "entries, past the 256", 5000), "a huge list was not refused");
    /* only the good entry got in; B is not dead in its own eyes */
    struct resp r;
    cr_assert_eq(nget(&N[1], &r, "/_peers"), 200);
    cr_assert(strstr(r.body, good), "%s", r.body);
    cr_assert_null(strstr(r.body, ahead), "%s", r.body);
    cr_assert_null(strstr(r.body, badaddr), "%s", r.body);
    cr_assert_null(strstr(r.body, "NOT-A-NODE-ID"), "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "self"), "state")),
                     "self");
    resp_fini(&r);
    /* a probe without a request id closes the link */
    struct br_wire_msg p = {.type = BR_WIRE_PROBE, .rid = 0};
    p.u.probe.node = good;
    send_wire(fd, fr, &p);
    cr_assert(closed_within(fd, 5000), "a probe without rid kept the link open");
    cr_assert(wait_log(&N[1], "reason=probe_without_rid", 3000));
    close(fd);
    br_frame_free(fr);
    /* a hello that names another node (A) */
    fd = ws_upgrade(N[1].port);
    client_handshake(&c, fd, &fr);
    send_hello(fd, fr, N[0].id);
    cr_assert(closed_within(fd, 5000), "a hello naming another node kept the link open");
    cr_assert(wait_log(&N[1], "reason=hello_node_mismatch", 3000));
    close(fd);
    br_frame_free(fr);
    /* the other link still works, B still serves */
    nput(&N[0], "/d/after", "{\"v\":2}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/d/after", 200, rev, 10000), "the other link stopped working");
    at(&N[1]);
    still_serving();
    client_fini(&c);
}
