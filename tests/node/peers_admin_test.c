/* peers_admin_test.c — the admin calls on mesh members (node/mesh.h br_mesh_drop): DELETE
 * /_peers/{id} closes this node's links to a member (it may link again); with ?block=true the
 * member is refused until PUT /_peers/{id} lifts the block, so nothing moves between the two
 * meanwhile; unknown ids answer 404 CouchDB-style. And `serve --no-dial`: a node that learns
 * members through gossip links to none of them itself. Real `barrel serve` processes on
 * loopback (the real-process harness, simulations/real.c, cuts links and partitions this way). */
#define MAXN 3
#include "p2p_util.h"

TestSuite(peers_admin, .init = p2p_setup, .fini = p2p_teardown, .timeout = 120);

/* The link state n shows for member m ("up", "opening", "none"; "" if m is not a member). */
static void link_of(const struct node *n, const struct node *m, char *out, size_t cap)
{
    struct resp r;
    out[0] = '\0';
    cr_assert_eq(nget(n, &r, "/_peers"), 200);
    json_t *a = json_object_get(r.json, "members");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        if (strcmp(json_string_value(json_object_get(e, "id")), m->id) == 0)
            snprintf(out, cap, "%s", json_string_value(json_object_get(e, "link")));
    }
    resp_fini(&r);
}

static bool wait_link(const struct node *n, const struct node *m, const char *state, int ms)
{
    char s[32];
    for (int t = 0; t <= ms; t += 50) {
        link_of(n, m, s, sizeof s);
        if (strcmp(s, state) == 0)
            return true;
        usleep(50000);
    }
    return false;
}

static int call(const struct node *n, struct resp *r, const char *method, const char *path)
{
    at(n);
    return req(r, method, path, NULL, NULL, NULL);
}

static void two_linked(void)
{
    make_mesh_key();
    mesh_start(&N[0], NULL);
    const char *e[] = {"--peer", url_of(0), NULL};
    mesh_start(&N[1], e);
    cr_assert(wait_link(&N[0], &N[1], "up", 10000), "A and B never linked");
}

Test(peers_admin, delete_closes_the_links_to_a_member_which_may_link_again)
{
    two_linked();
    char path[160];
    snprintf(path, sizeof path, "/_peers/%s", N[1].id);
    struct resp r;
    cr_assert_eq(call(&N[0], &r, "DELETE", path), 200, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "ok")), "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "closed")), 1, "%s", r.body);
    resp_fini(&r);
    cr_assert(wait_log(&N[0], "reason=dropped", 5000), "no link closed on A");
    /* B's --peer dials A again: the link comes back */
    cr_assert(wait_log(&N[1], "event=redial", 5000));
    cr_assert(wait_link(&N[0], &N[1], "up", 10000), "the link did not come back");
}

Test(peers_admin, a_blocked_member_stays_apart_until_put_lifts_the_block)
{
    two_linked();
    ndb(&N[0], "d");
    char rev[128];
    nput(&N[0], "/d/before", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/d/before", 200, rev, 10000));
    char path[160];
    snprintf(path, sizeof path, "/_peers/%s?block=true", N[1].id);
    struct resp r;
    cr_assert_eq(call(&N[0], &r, "DELETE", path), 200, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "blocked")), "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(nget(&N[0], &r, "/_peers"), 200);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(r.json, "blocked"), 0)),
                     N[1].id, "%s", r.body);
    resp_fini(&r);
    /* B redials (its --peer) and is refused each time; a write on A stays on A */
    cr_assert(wait_log(&N[0], "reason=blocked", 5000));
    nput(&N[0], "/d/during", "{\"v\":2}", rev, sizeof rev);
    usleep(1500000);
    cr_assert_eq(nget(&N[1], &r, "/d/during"), 404, "a write crossed the block: %s", r.body);
    resp_fini(&r);
    char s[32];
    link_of(&N[0], &N[1], s, sizeof s);
    cr_assert_str_neq(s, "up");
    /* lifted: B's next dial links, and the write arrives */
    snprintf(path, sizeof path, "/_peers/%s", N[1].id);
    cr_assert_eq(call(&N[0], &r, "PUT", path), 200, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "ok")), "%s", r.body);
    resp_fini(&r);
    cr_assert(wait_doc(&N[1], "/d/during", 200, rev, 15000), "no sync after the block was lifted");
    /* lifting it again: not blocked any more */
    cr_assert_eq(call(&N[0], &r, "PUT", path), 404, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "error"), "not_found");
    resp_fini(&r);
}

Test(peers_admin, unknown_members_and_bad_arguments_are_refused)
{
    two_linked();
    struct resp r;
    cr_assert_eq(call(&N[0], &r, "DELETE", "/_peers/NOSUCHNODE"), 404, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "error"), "not_found");
    cr_assert_str_eq(jstr(&r, "reason"), "no such member");
    resp_fini(&r);
    cr_assert_eq(call(&N[0], &r, "PUT", "/_peers/NOSUCHNODE"), 404, "%s", r.body);
    resp_fini(&r);
    char path[160];
    snprintf(path, sizeof path, "/_peers/%s?block=maybe", N[1].id);
    cr_assert_eq(call(&N[0], &r, "DELETE", path), 400, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "error"), "bad_request");
    resp_fini(&r);
    cr_assert_eq(call(&N[0], &r, "GET", path), 405, "%s", r.body);
    resp_fini(&r);
    /* a node out of the mesh has no members to drop */
    const char *plain[] = {"--no-mesh", NULL};
    node_stop(&N[1]);
    node_start(&N[1], plain);
    snprintf(path, sizeof path, "/_peers/%s", N[0].id);
    cr_assert_eq(call(&N[1], &r, "DELETE", path), 404, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "reason"), "this node is not in a mesh");
    resp_fini(&r);
}

Test(peers_admin, a_node_serving_with_no_dial_links_to_no_member_it_learns)
{
    /* a chain A <- B <- C (each dials the previous with --peer): C learns A through B's
     * gossip but does not dial it, so A and C stay unlinked, and a write still goes A->C */
    make_mesh_key();
    const char *nd[] = {"--no-dial", NULL};
    mesh_start(&N[0], nd);
    const char *b[] = {"--no-dial", "--peer", url_of(0), NULL};
    mesh_start(&N[1], b);
    const char *c[] = {"--no-dial", "--peer", url_of(1), NULL};
    mesh_start(&N[2], c);
    cr_assert(wait_link(&N[2], &N[0], "none", 10000), "C never learned of A");
    ndb(&N[0], "d");
    char rev[128];
    nput(&N[0], "/d/x", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[2], "/d/x", 200, rev, 15000), "the write did not go down the chain");
    char s[32];
    link_of(&N[2], &N[0], s, sizeof s);
    cr_assert_str_eq(s, "none", "C linked to A");
    link_of(&N[0], &N[2], s, sizeof s);
    cr_assert(strcmp(s, "none") == 0 || s[0] == '\0', "A linked to C: %s", s);
    cr_assert(!log_has(&N[2], "event=dial "), "C dialled a member");
}
