/* mesh_test.c — the mesh on loopback with real `barrel serve` processes (node/mesh.h):
 * a node that can link to only one member of a five-node mesh learns the others through
 * gossip and converges both ways; a member killed with SIGKILL is suspected, then declared
 * dead within the configured time everywhere, and comes back alive when it restarts; a
 * database created on one member reaches all; two disconnected halves that wrote the same
 * documents converge to the same winners, conflicts and set hashes once linked. mDNS and
 * real network partitions are in tests/netns/ (network namespaces). */
#define MAXN 6
#include "p2p_util.h"

TestSuite(mesh, .init = p2p_setup, .fini = p2p_teardown, .timeout = 300);

/* The state n holds for member m ("alive", "suspect", "dead"), or "" if unknown. */
static void member_state(const struct node *n, const struct node *m, char *out, size_t cap)
{
    struct resp r;
    out[0] = '\0';
    if (nget(n, &r, "/_peers") != 200) {
        resp_fini(&r);
        return;
    }
    json_t *a = json_object_get(r.json, "members");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        if (strcmp(json_string_value(json_object_get(e, "id")), m->id) == 0)
            snprintf(out, cap, "%s", json_string_value(json_object_get(e, "state")));
    }
    resp_fini(&r);
}

static bool wait_state(const struct node *n, const struct node *m, const char *state, int ms)
{
    char s[32];
    for (int t = 0; t <= ms; t += 50) {
        member_state(n, m, s, sizeof s);
        if (strcmp(s, state) == 0)
            return true;
        usleep(50000);
    }
    return false;
}

static size_t members(const struct node *n)
{
    struct resp r;
    cr_assert_eq(nget(n, &r, "/_peers"), 200);
    size_t k = json_array_size(json_object_get(r.json, "members"));
    resp_fini(&r);
    return k;
}

/* "doc_count set-hash" of db on n, from GET /{db}. */
static void digest_of(const struct node *n, const char *db, char *out, size_t cap)
{
    struct resp r;
    char path[128];
    snprintf(path, sizeof path, "/%s", db);
    out[0] = '\0';
    if (nget(n, &r, path) == 200 && json_is_string(json_object_get(r.json, "digest")))
        snprintf(out, cap, "%lld %s",
                 (long long)json_integer_value(json_object_get(r.json, "doc_count")),
                 json_string_value(json_object_get(r.json, "digest")));
    resp_fini(&r);
}

static bool wait_same_digest(const struct node *a, const struct node *b, const char *db, int ms)
{
    char x[256], y[256];
    for (int t = 0; t <= ms; t += 100) {
        digest_of(a, db, x, sizeof x);
        digest_of(b, db, y, sizeof y);
        if (x[0] && strcmp(x, y) == 0)
            return true;
        usleep(100000);
    }
    return false;
}

Test(mesh, a_node_that_reaches_one_member_learns_the_rest_and_converges)
{
    make_mesh_key();
    mesh_start(&N[0], NULL);
    for (int i = 1; i < 4; i++) {
        const char *e[] = {"--peer", url_of(0), NULL};
        mesh_start(&N[i], e);
    }
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < 100 && members(&N[i]) < 3; t++)
            usleep(50000);
    /* E dials one link only (to D), and accepts two: the others may dial it once they learn
     * of it, and some of them are refused */
    const char *e4[] = {"--peer", url_of(3), "--max-links", "1", NULL};
    mesh_start(&N[4], e4);
    for (int t = 0; t < 200 && members(&N[4]) < 4; t++)
        usleep(50000);
    cr_assert_eq(members(&N[4]), 4, "E did not learn every member through D");
    for (int i = 0; i < 4; i++)
        cr_assert(wait_state(&N[4], &N[i], "alive", 5000));
    cr_assert(wait_state(&N[0], &N[4], "alive", 5000), "A did not learn of E");
    /* a database written on A reaches E (through D), and one written on E reaches A */
    ndb(&N[0], "notes");
    char rev[128];
    nput(&N[0], "/notes/from-a", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[4], "/notes/from-a", 200, rev, 15000), "A's write did not reach E");
    nput(&N[4], "/notes/from-e", "{\"v\":2}", rev, sizeof rev);
    for (int i = 0; i < 4; i++)
        cr_assert(wait_doc(&N[i], "/notes/from-e", 200, rev, 15000), "E's write missed node %d", i);
    struct resp r;
    cr_assert_eq(nget(&N[4], &r, "/_node"), 200);
    cr_assert_leq(json_integer_value(json_object_get(r.json, "links")), 2, "E holds %s", r.body);
    resp_fini(&r);
    for (int i = 0; i < 4; i++)
        cr_assert(wait_same_digest(&N[i], &N[4], "notes", 10000));
}

/* A member at its bound of links still hands a newcomer its member table before it closes the
 * link, so a newcomer that knows only that member gets in through the others (found by the
 * simulator: without it, newcomers that knew only a full seed never joined). */
Test(mesh, a_full_seed_refuses_a_newcomer_but_hands_it_the_members)
{
    make_mesh_key();
    const char *seed[] = {"--max-links", "1", NULL};
    mesh_start(&N[0], seed); /* accepts two links */
    for (int i = 1; i < 3; i++) {
        const char *e[] = {"--peer", url_of(0), NULL};
        mesh_start(&N[i], e);
    }
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < 100 && members(&N[i]) < 2; t++)
            usleep(50000);
    cr_assert_eq(members(&N[0]), 2);
    const char *e3[] = {"--peer", url_of(0), NULL};
    mesh_start(&N[3], e3);
    for (int t = 0; t < 200 && members(&N[3]) < 3; t++)
        usleep(50000);
    cr_assert_eq(members(&N[3]), 3, "the newcomer did not learn the members from the full seed");
    cr_assert(log_has(&N[0], "reason=link_limit"), "the seed did not refuse the newcomer");
    ndb(&N[1], "notes");
    char rev[128];
    nput(&N[1], "/notes/from-b", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[3], "/notes/from-b", 200, rev, 15000), "B's write did not reach D");
}

Test(mesh, a_killed_member_is_suspected_then_dead_then_alive_again)
{
    make_mesh_key();
    const char *timing[] = {"--probe-ms", "500", "--dead-ms", "1500", NULL};
    mesh_start(&N[0], timing);
    for (int i = 1; i < 3; i++) {
        const char *e[] = {"--peer", url_of(0), "--probe-ms", "500", "--dead-ms", "1500", NULL};
        mesh_start(&N[i], e);
    }
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < 100 && members(&N[i]) < 2; t++)
            usleep(50000);
    cr_assert(wait_state(&N[0], &N[2], "alive", 5000));
    cr_assert(wait_state(&N[1], &N[2], "alive", 5000));
    node_kill(&N[2]);
    double t0 = now_s();
    cr_assert(wait_state(&N[0], &N[2], "suspect", 3000), "A never suspected C");
    cr_assert(wait_state(&N[0], &N[2], "dead", 4000), "A never declared C dead");
    cr_assert(wait_state(&N[1], &N[2], "dead", 4000), "B never declared C dead");
    double took = now_s() - t0;
    cr_assert_lt(took, 5.0, "dead after %.1f s (probe 0.5 s + suspicion 1.5 s)", took);
    cr_assert(log_has(&N[0], "state=suspect"));
    cr_assert(log_has(&N[0], "state=dead"));
    /* restarted: alive again everywhere (a newer incarnation) */
    const char *back[] = {"--peer", url_of(0), "--probe-ms", "500", "--dead-ms", "1500", NULL};
    mesh_start(&N[2], back);
    cr_assert(wait_state(&N[0], &N[2], "alive", 10000), "A did not see C back");
    cr_assert(wait_state(&N[1], &N[2], "alive", 10000), "B did not see C back");
}

Test(mesh, halves_that_wrote_the_same_docs_converge_to_the_same_winners)
{
    make_mesh_key();
    /* two halves, each a small mesh: {A, B, C} and {D, E, F}, writing the same ids */
    mesh_start(&N[0], NULL);
    mesh_start(&N[3], NULL);
    for (int i = 1; i < 3; i++) {
        const char *e[] = {"--peer", url_of(0), NULL};
        mesh_start(&N[i], e);
        const char *f[] = {"--peer", url_of(3), NULL};
        mesh_start(&N[i + 3], f);
    }
    ndb(&N[0], "d");
    ndb(&N[3], "d");
    for (int i = 0; i < 6; i++)
        cr_assert(wait_doc(&N[i], "/d", 200, NULL, 10000), "node %d has no database d", i);
    char rev[128];
    for (int k = 0; k < 20; k++) {
        char path[64], body[64];
        snprintf(path, sizeof path, "/d/doc-%02d", k);
        snprintf(body, sizeof body, "{\"side\":\"left\",\"k\":%d}", k);
        nput(&N[k % 3], path, body, rev, sizeof rev);
        snprintf(body, sizeof body, "{\"side\":\"right\",\"k\":%d}", k);
        nput(&N[3 + k % 3], path, body, rev, sizeof rev);
    }
    cr_assert(wait_same_digest(&N[0], &N[2], "d", 10000));
    cr_assert(wait_same_digest(&N[3], &N[5], "d", 10000));
    char l[256], r[256];
    digest_of(&N[0], "d", l, sizeof l);
    digest_of(&N[3], "d", r, sizeof r);
    cr_assert_str_neq(l, r, "the halves were already equal");
    /* heal: one member of the left learns one member of the right */
    node_stop(&N[2]);
    const char *heal[] = {"--peer", url_of(0), "--peer", url_of(3), NULL};
    mesh_start(&N[2], heal);
    for (int i = 1; i < 6; i++)
        cr_assert(wait_same_digest(&N[0], &N[i], "d", 30000), "node %d did not converge", i);
    /* the same winner and the same conflicts everywhere */
    struct resp a;
    cr_assert_eq(nget(&N[0], &a, "/d/doc-07?conflicts=true"), 200);
    cr_assert(json_object_get(a.json, "_conflicts"), "no conflict: %s", a.body);
    for (int i = 1; i < 6; i++) {
        struct resp b;
        cr_assert_eq(nget(&N[i], &b, "/d/doc-07?conflicts=true"), 200);
        cr_assert_str_eq(b.body, a.body, "node %d differs", i);
        resp_fini(&b);
    }
    resp_fini(&a);
}

Test(mesh, peers_and_metrics_show_the_mesh)
{
    make_mesh_key();
    mesh_start(&N[0], NULL);
    const char *e[] = {"--peer", url_of(0), NULL};
    mesh_start(&N[1], e);
    cr_assert(wait_state(&N[0], &N[1], "alive", 5000));
    struct resp r;
    cr_assert_eq(nget(&N[0], &r, "/_peers"), 200);
    json_t *m = json_array_get(json_object_get(r.json, "members"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(m, "link")), "up", "%s", r.body);
    cr_assert(json_is_integer(json_object_get(m, "clock_skew_ms")) ||
                  json_is_null(json_object_get(m, "clock_skew_ms")),
              "%s", r.body);
    cr_assert(json_array_size(json_object_get(m, "addresses")) >= 1, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "self"), "id")),
                     N[0].id);
    resp_fini(&r);
    cr_assert_eq(nget(&N[0], &r, "/_metrics"), 200);
    cr_assert(strstr(r.body, "barrel_mesh_members{state=\"alive\"} 1"), "%s", r.body);
    cr_assert(strstr(r.body, "barrel_gossip_messages_total{dir=\"received\"}"));
    resp_fini(&r);
    /* a write on B arrives on A: the arrival lag histogram counts it */
    ndb(&N[1], "lag");
    char rev[128];
    nput(&N[1], "/lag/x", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[0], "/lag/x", 200, rev, 10000));
    for (int t = 0; t < 50; t++) {
        cr_assert_eq(nget(&N[0], &r, "/_metrics"), 200);
        bool counted = !strstr(r.body, "barrel_mesh_arrival_lag_seconds_count 0\n") &&
                       strstr(r.body, "barrel_mesh_arrival_lag_seconds_count ");
        resp_fini(&r);
        if (counted)
            break;
        cr_assert_lt(t, 49, "no arrival counted");
        usleep(50000);
    }
    /* barrel peers asks the node */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/barrel --url http://127.0.0.1:%d peers", BARREL_BINARY_DIR,
             N[0].port);
    FILE *f = popen(cmd, "r");
    char out[8192] = {0};
    size_t n = fread(out, 1, sizeof out - 1, f);
    cr_assert_eq(pclose(f), 0);
    cr_assert(n > 0 && strstr(out, N[1].id), "%s", out);
    /* a node out of the mesh answers with no members */
    const char *plain[] = {"--no-mesh", NULL};
    node_stop(&N[1]);
    node_start(&N[1], plain);
    cr_assert_eq(nget(&N[1], &r, "/_peers"), 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "members")), 0);
    resp_fini(&r);
}

Test(mesh, a_filtered_mesh_database_pulls_only_matching_docs)
{
    make_mesh_key();
    mesh_start(&N[0], NULL);
    /* B takes only "sensors", and of it only site-7's documents; "other" stays away */
    const char *e[] = {"--peer", url_of(0), "--mesh-db", "sensors=site/site-7", NULL};
    mesh_start(&N[1], e);
    ndb(&N[0], "sensors");
    ndb(&N[0], "other");
    char rev[128];
    nput(&N[0], "/sensors/s7", "{\"site\":\"site-7\",\"v\":1}", rev, sizeof rev);
    nput(&N[0], "/sensors/s8", "{\"site\":\"site-8\",\"v\":2}", rev, sizeof rev);
    nput(&N[0], "/other/x", "{\"site\":\"site-7\"}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/sensors/s7", 200, NULL, 10000), "the matching doc did not move");
    char r7[128];
    nput(&N[0], "/sensors/s7b", "{\"site\":\"site-7\",\"v\":3}", r7, sizeof r7);
    cr_assert(wait_doc(&N[1], "/sensors/s7b", 200, r7, 10000));
    struct resp r;
    cr_assert_eq(nget(&N[1], &r, "/sensors/s8"), 404, "a doc outside the filter moved");
    resp_fini(&r);
    cr_assert_eq(nget(&N[1], &r, "/other"), 404, "a database outside the mesh list was made");
    resp_fini(&r);
    /* the deletion of a matching doc moves too */
    char path[160];
    snprintf(path, sizeof path, "/sensors/s7b?rev=%s", r7);
    at(&N[0]);
    cr_assert_eq(req(&r, "DELETE", path, NULL, NULL, 0), 200, "%s", r.body);
    resp_fini(&r);
    cr_assert(wait_doc(&N[1], "/sensors/s7b", 404, NULL, 10000), "the deletion did not move");
    /* A takes "sensors" whole from B, has read all B announced, yet B's set hash differs
     * (B filters): A says so, once, and /_peers shows it */
    cr_assert(wait_log(&N[0], "event=digest_mismatch db=sensors", 10000), "no mismatch logged");
    cr_assert_eq(nget(&N[0], &r, "/_peers"), 200);
    cr_assert(strstr(r.body, "\"diverged\":true"), "%s", r.body);
    resp_fini(&r);
    cr_assert(!log_has(&N[0], "event=digest_mismatch db=other"), "other is equal on both");
}
