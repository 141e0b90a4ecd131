/* replicate_test.c — POST /_replicate and GET /_active_tasks against a real `barrel serve`:
 * one-shot local->local (CouchDB's answer shape), continuous (listed as a task, carries later
 * writes, cancelled and gone), a continuous replication that keeps running after SIGTERM and a
 * restart, and the errors (400 without source/target, 404 unknown local db unless
 * create_target, peer schemes refused with a reason when the peer cannot be reached). */
#include "serve_util.h"

TestSuite(rep, .init = setup, .fini = teardown, .timeout = 90);

static json_t *tasks(void)
{
    struct resp r;
    cr_assert_eq(get(&r, "/_active_tasks"), 200, "%s", r.body);
    json_t *j = json_incref(r.json);
    resp_fini(&r);
    return j;
}

static bool wait_count(const char *db, json_int_t n)
{
    for (int i = 0; i < 100; i++) {
        if (doc_count(db) == n)
            return true;
        usleep(50000);
    }
    return false;
}

Test(rep, errors)
{
    struct resp r;
    make_db("a");
    cr_assert_eq(post_json(&r, "/_replicate", "{\"source\":\"a\"}"), 400, "%s", r.body);
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/_replicate", "{\"source\":\"nope\",\"target\":\"a\"}"), 404);
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/_replicate", "{\"source\":\"a\",\"target\":\"nope\"}"), 404);
    resp_fini(&r);
    /* a malformed node id is a 400; a peer URL with nothing listening a 502 with a reason */
    cr_assert_eq(post_json(&r, "/_replicate", "{\"source\":\"a\",\"target\":\"barrel://NODE/db\"}"),
                 400, "%s", r.body);
    expect_error(&r, 400, "replication_failed");
    resp_fini(&r);
    cr_assert_eq(
        post_json(&r, "/_replicate", "{\"source\":\"ws://127.0.0.1:1/db\",\"target\":\"a\"}"), 502);
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/_replicate", "{\"source\":\"ws://127.0.0.1:1\",\"target\":\"a\"}"),
                 400, "%s", r.body); /* no database in the URL */
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/_replicate", "{\"source\":\"a\",\"target\":\"b\",\"filter\":7}"),
                 400);
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/_replicate", "{\"cancel\":true,\"replication_id\":\"x\"}"), 404);
    resp_fini(&r);
}

Test(rep, one_shot_with_create_target_and_filter)
{
    struct resp r;
    make_db("a");
    char rev[64];
    put_doc("/a/u1", "{\"type\":\"user\"}", rev, sizeof rev);
    put_doc("/a/s1", "{\"type\":\"sensor\"}", rev, sizeof rev);
    cr_assert_eq(
        post_json(&r, "/_replicate", "{\"source\":\"a\",\"target\":\"b\",\"create_target\":true}"),
        200, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "ok")));
    json_t *h = json_array_get(json_object_get(r.json, "history"), 0);
    cr_assert_eq(json_integer_value(json_object_get(h, "docs_written")), 2, "%s", r.body);
    cr_assert(json_object_get(r.json, "session_id") && json_object_get(r.json, "source_last_seq"));
    resp_fini(&r);
    cr_assert_eq(doc_count("b"), 2);
    cr_assert_eq(post_json(&r, "/_replicate",
                           "{\"source\":\"a\",\"target\":\"c\",\"create_target\":true,"
                           "\"filter\":{\"paths\":[\"type/user\"]}}"),
                 200, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(doc_count("c"), 1);
    cr_assert_eq(post_json(&r, "/_replicate",
                           "{\"source\":\"a\",\"target\":\"d\",\"create_target\":true,"
                           "\"selector\":{\"type\":\"sensor\"}}"),
                 200, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(doc_count("d"), 1);
}

Test(rep, continuous_listed_cancelled_and_survives_restart)
{
    struct resp r;
    char rev[64];
    make_db("a");
    make_db("b");
    cr_assert_eq(
        post_json(&r, "/_replicate", "{\"source\":\"a\",\"target\":\"b\",\"continuous\":true}"),
        202, "%s", r.body);
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(&r, "_local_id"));
    resp_fini(&r);
    put_doc("/a/x1", "{\"v\":1}", rev, sizeof rev);
    cr_assert(wait_count("b", 1), "continuous replication carried the write");
    json_t *t = tasks();
    cr_assert_eq(json_array_size(t), 1);
    json_t *t0 = json_array_get(t, 0);
    cr_assert_str_eq(json_string_value(json_object_get(t0, "type")), "replication");
    cr_assert(json_is_true(json_object_get(t0, "continuous")));
    cr_assert_str_eq(json_string_value(json_object_get(t0, "source")), "a");
    cr_assert(json_object_get(t0, "docs_written") && json_object_get(t0, "started_on") &&
              json_object_get(t0, "checkpointed_source_seq"));
    json_decref(t);

    /* SIGTERM and restart on the same data dir: it runs again */
    int st = stop_node(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(node_out);
    char line[512];
    pid = start_node(dir, &port, line, sizeof line, &node_out);
    cr_assert(port > 0, "%s", line);
    put_doc("/a/x2", "{\"v\":2}", rev, sizeof rev);
    cr_assert(wait_count("b", 2), "the restored replication carried the write");
    t = tasks();
    cr_assert_eq(json_array_size(t), 1);
    json_decref(t);

    /* cancel with the same body: stopped and gone, later writes stay behind */
    cr_assert_eq(
        post_json(&r, "/_replicate",
                  "{\"source\":\"a\",\"target\":\"b\",\"continuous\":true,\"cancel\":true}"),
        200, "%s", r.body);
    cr_assert_str_eq(jstr(&r, "_local_id"), id);
    resp_fini(&r);
    t = tasks();
    cr_assert_eq(json_array_size(t), 0);
    json_decref(t);
    put_doc("/a/x3", "{\"v\":3}", rev, sizeof rev);
    usleep(300000);
    cr_assert_eq(doc_count("b"), 2);
}
