/* p2p_test.c — links between real `barrel serve` processes on loopback: documents move both
 * ways over --peer; a wrong mesh key or an unknown id is refused with the handshake reason in
 * the log and nothing moves; a malformed frame closes the link with a logged reason; a stopped
 * peer is detected by the heartbeat timeout and, once it is back, the link is redialled and
 * the nodes converge; a chain A -> B -> C converges to the same winner and leaves. */
#include "p2p_util.h"

TestSuite(p2p, .init = p2p_setup, .fini = p2p_teardown, .timeout = 120);

Test(p2p, documents_move_both_ways_with_allow_lists)
{
    const char *eb[] = {"--allow", N[0].id, NULL};
    node_start(&N[1], eb);
    ndb(&N[1], "d");
    char rev[128];
    nput(&N[1], "/d/from-b", "{\"v\":1}", rev, sizeof rev);
    const char *ea[] = {"--allow", N[1].id, "--peer", url_of(1), "--peer-db", "d", NULL};
    node_start(&N[0], ea);
    /* B's doc arrives on A (pull), A's on B (push) */
    cr_assert(wait_doc(&N[0], "/d/from-b", 200, "\"v\":1", 10000), "pull did not arrive");
    nput(&N[0], "/d/from-a", "{\"w\":2}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/d/from-a", 200, rev, 10000), "push did not arrive");
    /* continuous: a later write on B comes to A without a restart */
    nput(&N[1], "/d/later", "{\"x\":3}", rev, sizeof rev);
    cr_assert(wait_doc(&N[0], "/d/later", 200, rev, 10000), "continuous pull did not wake");
    /* GET /_node shows the identity and the link */
    struct resp r;
    cr_assert_eq(nget(&N[0], &r, "/_node"), 200);
    cr_assert_str_eq(jstr(&r, "node_id"), N[0].id);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "links")), 1);
    resp_fini(&r);
    cr_assert(log_has(&N[0], "event=link_up") && log_has(&N[1], "event=link_up"));
}

Test(p2p, wrong_mesh_key_is_refused_and_nothing_moves)
{
    char k1[600], k2[600];
    snprintf(k1, sizeof k1, "%s/k1", root);
    snprintf(k2, sizeof k2, "%s/k2", root);
    mesh_key(k1);
    mesh_key(k2);
    const char *eb[] = {"--mesh-key", k2, NULL};
    node_start(&N[1], eb);
    ndb(&N[1], "d");
    const char *ea[] = {"--mesh-key", k1, "--peer", url_of(1), "--peer-db", "d", NULL};
    node_start(&N[0], ea);
    char rev[128];
    nput(&N[0], "/d/secret", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_log(&N[1], "reason=mesh_mismatch", 10000), "no mesh_mismatch in B's log");
    cr_assert(log_has(&N[1], "initiator=0 reason=mesh_mismatch"));
    usleep(1500000);
    struct resp r;
    cr_assert_eq(nget(&N[1], &r, "/d/secret"), 404, "the doc moved: %s", r.body);
    resp_fini(&r);
    cr_assert_not(log_has(&N[0], "event=link_up"));
}

Test(p2p, unknown_id_is_refused_without_mesh_key)
{
    node_start(&N[1], NULL); /* allows nobody */
    ndb(&N[1], "d");
    const char *ea[] = {"--allow", N[1].id, "--peer", url_of(1), "--peer-db", "d", NULL};
    node_start(&N[0], ea);
    char rev[128];
    nput(&N[0], "/d/x", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_log(&N[1], "reason=peer_unknown", 10000), "no peer_unknown in B's log");
    usleep(1000000);
    struct resp r;
    cr_assert_eq(nget(&N[1], &r, "/d/x"), 404);
    resp_fini(&r);
}

Test(p2p, malformed_frames_close_the_link_with_a_reason)
{
    node_start(&N[1], NULL);
    uint8_t junk[10] = {0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    int fd = ws_raw(N[1].port, 2, junk, sizeof junk);
    cr_assert(closed_within(fd, 5000), "the link stayed open after a malformed frame");
    close(fd);
    /* the first byte is the handshake version: the frame fails there, reason logged */
    cr_assert(wait_log(&N[1], "initiator=0 reason=bad_version", 3000), "no reason logged");
    fd = ws_raw(N[1].port, 1, (const uint8_t *)"hello", 5);
    cr_assert(closed_within(fd, 5000), "the link stayed open after a text frame");
    close(fd);
    cr_assert(wait_log(&N[1], "reason=text_frame", 3000));
    /* a third failure from the same address: the next upgrade is refused for a while */
    fd = ws_raw(N[1].port, 2, junk, sizeof junk);
    cr_assert(closed_within(fd, 5000));
    close(fd);
    port = N[1].port;
    fd = connect_node();
    const char *up = "GET /_p2p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n";
    send_all(fd, up, strlen(up));
    char buf[512] = "";
    ssize_t k = recv_deadline(fd, buf, sizeof buf - 1, 3000);
    buf[k > 0 ? k : 0] = '\0';
    cr_assert_null(strstr(buf, " 101 "), "upgrade accepted during backoff");
    close(fd);
    cr_assert(wait_log(&N[1], "event=link_refused addr=", 3000));
    cr_assert(log_has(&N[1], "reason=backoff"));
    still_serving();
}

Test(p2p, dead_peer_is_detected_by_heartbeat_and_redialled)
{
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/a.json", root);
    write_config(cfg, "{\"p2p\": {\"heartbeat_ms\": 200, \"timeout_ms\": 1200}}");
    const char *eb[] = {"--allow", N[0].id, NULL};
    node_start(&N[1], eb);
    ndb(&N[1], "d");
    const char *ea[] = {"--config", cfg,         "--allow", N[1].id, "--peer",
                        url_of(1),  "--peer-db", "d",       NULL};
    node_start(&N[0], ea);
    char rev[128];
    nput(&N[0], "/d/one", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_doc(&N[1], "/d/one", 200, NULL, 10000));
    /* B hangs: the connection stays open but nothing comes back */
    kill(N[1].pid, SIGSTOP);
    cr_assert(wait_log(&N[0], "reason=heartbeat_timeout", 8000), "heartbeat timeout not seen");
    kill(N[1].pid, SIGKILL);
    waitpid(N[1].pid, NULL, 0);
    N[1].pid = 0;
    nput(&N[0], "/d/two", "{\"v\":2}", rev, sizeof rev);
    cr_assert(wait_log(&N[0], "event=redial", 3000));
    usleep(1500000);       /* a few failed dials: the backoff grows */
    node_start(&N[1], eb); /* same data dir and port */
    cr_assert(wait_doc(&N[1], "/d/two", 200, rev, 15000), "no convergence after redial");
    nput(&N[1], "/d/three", "{\"v\":3}", rev, sizeof rev);
    cr_assert(wait_doc(&N[0], "/d/three", 200, rev, 10000));
}

Test(p2p, chain_a_b_c_converges_to_one_winner_and_the_same_leaves)
{
    char key[600];
    snprintf(key, sizeof key, "%s/mesh", root);
    mesh_key(key);
    const char *ec[] = {"--mesh-key", key, NULL};
    node_start(&N[2], ec);
    ndb(&N[2], "d");
    const char *eb[] = {"--mesh-key", key, "--peer", url_of(2), "--peer-db", "d", NULL};
    node_start(&N[1], eb);
    const char *ea[] = {"--mesh-key", key, "--peer", url_of(1), "--peer-db", "d", NULL};
    node_start(&N[0], ea);
    char r1[128], r2[128], body[256];
    /* written on A */
    nput(&N[0], "/d/doc", "{\"v\":\"a\"}", r1, sizeof r1);
    cr_assert(wait_doc(&N[2], "/d/doc", 200, r1, 15000), "A's write did not reach C");
    /* updated on C */
    snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"v\":\"c\"}", r1);
    nput(&N[2], "/d/doc", body, r2, sizeof r2);
    cr_assert(wait_doc(&N[0], "/d/doc", 200, r2, 15000), "C's update did not reach A");
    cr_assert(wait_doc(&N[1], "/d/doc", 200, r2, 15000));
    /* deleted on B */
    struct resp r;
    char path[256];
    snprintf(path, sizeof path, "/d/doc?rev=%s", r2);
    at(&N[1]);
    cr_assert_eq(req(&r, "DELETE", path, NULL, NULL, NULL), 200, "%s", r.body);
    char r3[128];
    snprintf(r3, sizeof r3, "%s", jstr(&r, "rev"));
    resp_fini(&r);
    for (int i = 0; i < 3; i++)
        cr_assert(wait_doc(&N[i], "/d/doc", 404, NULL, 15000), "not deleted on node %d", i);
    /* a concurrent edit on A and C: a conflict that must end the same everywhere */
    nput(&N[0], "/d/k", "{\"v\":0}", r1, sizeof r1);
    cr_assert(wait_doc(&N[2], "/d/k", 200, r1, 15000));
    kill(N[1].pid, SIGSTOP); /* B in the middle pauses: A and C edit apart */
    snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"v\":\"from-a\"}", r1);
    nput(&N[0], "/d/k", body, r2, sizeof r2);
    snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"v\":\"from-c\"}", r1);
    char r4[128];
    nput(&N[2], "/d/k", body, r4, sizeof r4);
    kill(N[1].pid, SIGCONT);
    bool same = false;
    char *s[3] = {0};
    for (int t = 0; t < 200 && !same; t++) {
        for (int i = 0; i < 3; i++) {
            free(s[i]);
            s[i] = state_of(&N[i], "/d/k");
        }
        same = strstr(s[0], r2) && strstr(s[0], r4) && strcmp(s[0], s[1]) == 0 &&
               strcmp(s[1], s[2]) == 0;
        if (!same)
            usleep(100000);
    }
    cr_assert(same, "leaves differ:\nA %s\nB %s\nC %s", s[0], s[1], s[2]);
    /* the same winner, with the other edit as its conflict, on every node */
    char *w[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(nget(&N[i], &r, "/d/k?conflicts=true"), 200);
        w[i] = strdup(r.body);
        resp_fini(&r);
    }
    cr_assert_str_eq(w[0], w[1]);
    cr_assert_str_eq(w[1], w[2]);
    cr_assert(strstr(w[0], "_conflicts"), "no conflict recorded: %s", w[0]);
    for (int i = 0; i < 3; i++) {
        free(s[i]);
        free(w[i]);
    }
    /* the deleted doc's tombstone is the same leaf everywhere */
    for (int i = 0; i < 3; i++) {
        char *d = state_of(&N[i], "/d/doc");
        cr_assert(strstr(d, r3), "node %d lacks the tombstone %s: %s", i, r3, d);
        free(d);
    }
}

/* POST /_replicate with peers: push to ws://host:port/db (the link is dialled on demand), then
 * pull back from barrel://NODEID/db over the same link, one-shot; a peer that is not there
 * is a 502 with a reason, and nothing is written. */
Test(p2p, post_replicate_pushes_and_pulls_with_peers)
{
    const char *eb[] = {"--allow", N[0].id, NULL};
    node_start(&N[1], eb);
    const char *ea[] = {"--allow", N[1].id, NULL};
    node_start(&N[0], ea);
    ndb(&N[0], "src");
    ndb(&N[1], "dst");
    char rev[128], body[512], path[64];
    for (int i = 0; i < 25; i++) {
        snprintf(path, sizeof path, "/src/d%02d", i);
        nput(&N[0], path, "{\"n\":1}", rev, sizeof rev);
    }
    struct resp r;
    at(&N[0]);
    snprintf(body, sizeof body, "{\"source\":\"src\",\"target\":\"ws://127.0.0.1:%d/dst\"}",
             N[1].port);
    cr_assert_eq(post_json(&r, "/_replicate", body), 200, "%s", r.body);
    json_t *h = json_array_get(json_object_get(r.json, "history"), 0);
    cr_assert_eq(json_integer_value(json_object_get(h, "docs_written")), 25, "%s", r.body);
    resp_fini(&r);
    cr_assert(wait_doc(&N[1], "/dst/d24", 200, "\"n\":1", 5000), "push did not arrive");

    /* a write on B comes back to A through barrel://B/dst */
    nput(&N[1], "/dst/from-b", "{\"b\":2}", rev, sizeof rev);
    at(&N[0]);
    snprintf(body, sizeof body, "{\"source\":\"barrel://%s/dst\",\"target\":\"src\"}", N[1].id);
    cr_assert_eq(post_json(&r, "/_replicate", body), 200, "%s", r.body);
    resp_fini(&r);
    cr_assert(wait_doc(&N[0], "/src/from-b", 200, rev, 5000), "pull did not arrive");

    /* nobody listens on port 1: refused with a reason, nothing written */
    cr_assert_eq(
        post_json(&r, "/_replicate", "{\"source\":\"ws://127.0.0.1:1/x\",\"target\":\"src\"}"), 502,
        "%s", r.body);
    cr_assert(jstr(&r, "reason"));
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/_replicate", "{\"source\":\"src\",\"target\":\"ws://nohost\"}"),
                 400, "%s", r.body);
    resp_fini(&r);
}
