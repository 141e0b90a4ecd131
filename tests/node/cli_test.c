/* cli_test.c — the barrel command line as a user runs it: JSON on stdout, one error line on
 * stderr and a non-zero exit (1 for a failed operation, 2 for usage). Most tests call
 * br_cli_run in-process with memory streams; a few run the built binary to check real exit
 * codes and standard input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/cli.h"
#include "barrel/log.h"
#include "testutil.h"

static char *dir;
static char out[1 << 16], err[4096];

static void setup(void)
{
    dir = tu_tmpdir("cli");
}

static void teardown(void)
{
    tu_rmtree(dir);
    free(dir);
}

TestSuite(cli, .init = setup, .fini = teardown);

/* Run `barrel --data DIR args...` with stdin_text; capture stdout and stderr. */
static int run(const char *stdin_text, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "barrel";
    argv[argc++] = "--data";
    argv[argc++] = dir;
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    FILE *in = tmpfile();
    cr_assert(in);
    if (stdin_text)
        fputs(stdin_text, in);
    rewind(in);
    FILE *o = fmemopen(out, sizeof out, "w");
    FILE *e = fmemopen(err, sizeof err, "w");
    cr_assert(in && o && e);
    memset(out, 0, sizeof out);
    memset(err, 0, sizeof err);
    int rc = br_cli_run(argc, argv, in, o, e);
    fclose(in);
    fclose(o);
    fclose(e);
    br_log_set_level(BR_LOG_WARN);
    return rc;
}

#define RUN(stdin_text, ...) run(stdin_text, (const char *const[]){__VA_ARGS__, NULL})

static json_t *out_json(void)
{
    json_error_t je;
    json_t *j = json_loads(out, JSON_DECODE_ANY, &je);
    cr_assert(j, "stdout is not JSON: %s (%s)", out, je.text);
    return j;
}

Test(cli, db_create_list_info_delete)
{
    cr_assert_eq(RUN(NULL, "db", "create", "alpha"), 0, "%s", err);
    cr_expect_str_eq(out, "{\"ok\":true}\n");
    cr_assert_eq(RUN(NULL, "db", "create", "beta"), 0);
    cr_assert_eq(RUN(NULL, "db", "list"), 0);
    cr_expect_str_eq(out, "[\"alpha\",\"beta\"]\n");
    cr_assert_eq(RUN(NULL, "db", "info", "alpha"), 0);
    json_t *j = out_json();
    cr_expect_str_eq(json_string_value(json_object_get(j, "db_name")), "alpha");
    cr_expect_eq(json_integer_value(json_object_get(j, "doc_count")), 0);
    json_decref(j);
    cr_assert_eq(RUN(NULL, "db", "delete", "alpha"), 0);
    cr_assert_eq(RUN(NULL, "db", "list"), 0);
    cr_expect_str_eq(out, "[\"beta\"]\n");
}

Test(cli, db_errors_are_one_line_and_exit_1)
{
    cr_expect_eq(RUN(NULL, "db", "create", "Bad"), 1);
    cr_expect(strncmp(err, "barrel: illegal_database_name:", 30) == 0, "%s", err);
    cr_expect_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line");
    cr_assert_eq(RUN(NULL, "db", "create", "a"), 0);
    cr_expect_eq(RUN(NULL, "db", "create", "a"), 1);
    cr_expect(strstr(err, "file_exists"), "%s", err);
    cr_expect_eq(RUN(NULL, "db", "delete", "zz"), 1);
    cr_expect(strstr(err, "not_found"), "%s", err);
    cr_expect_eq(RUN(NULL, "put", "zz", "x", "{}"), 1);
    cr_expect(strstr(err, "not_found"), "%s", err);
}

Test(cli, usage_errors_exit_2)
{
    cr_expect_eq(RUN(NULL, "frobnicate"), 2);
    cr_expect(strstr(err, "unknown command"));
    cr_expect_eq(RUN(NULL, "get", "db"), 2);
    cr_expect_eq(RUN(NULL, "changes", "db", "--limit", "-3"), 2);
    cr_expect_eq(RUN(NULL, "delete", "db", "x"), 2);
    cr_expect_eq(RUN(NULL, "db"), 2);
}

Test(cli, put_get_update_delete_round_trip)
{
    cr_assert_eq(RUN(NULL, "db", "create", "d"), 0);
    cr_assert_eq(RUN(NULL, "put", "d", "doc1", "{\"a\":1,\"b\":[true,null,2.5,\"x\"]}"), 0, "%s",
                 err);
    json_t *j = out_json();
    char rev1[128];
    snprintf(rev1, sizeof rev1, "%s", json_string_value(json_object_get(j, "rev")));
    cr_expect(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    cr_assert_eq(RUN(NULL, "get", "d", "doc1"), 0);
    j = out_json();
    cr_expect_str_eq(json_string_value(json_object_get(j, "_rev")), rev1);
    cr_expect_eq(json_integer_value(json_object_get(j, "a")), 1);
    cr_expect_eq(json_real_value(json_array_get(json_object_get(j, "b"), 2)), 2.5);
    json_decref(j);
    /* update without _rev: conflict */
    cr_expect_eq(RUN(NULL, "put", "d", "doc1", "{\"a\":2}"), 1);
    cr_expect(strstr(err, "barrel: conflict:"), "%s", err);
    /* update with _rev from stdin */
    char body[256];
    snprintf(body, sizeof body, "{\"_rev\":\"%s\",\"a\":2}", rev1);
    cr_assert_eq(RUN(body, "put", "d", "doc1", "-"), 0, "%s", err);
    j = out_json();
    char rev2[128];
    snprintf(rev2, sizeof rev2, "%s", json_string_value(json_object_get(j, "rev")));
    json_decref(j);
    cr_expect_eq(rev2[0], '2');
    cr_assert_eq(RUN(NULL, "get", "d", "doc1", "--rev", rev2, "--revs"), 0);
    j = out_json();
    json_t *revs = json_object_get(j, "_revisions");
    cr_expect_eq(json_integer_value(json_object_get(revs, "start")), 2);
    cr_expect_eq(json_array_size(json_object_get(revs, "ids")), 2);
    json_decref(j);
    cr_expect_eq(RUN(NULL, "delete", "d", "doc1", "--rev", rev1), 1, "stale rev");
    cr_assert_eq(RUN(NULL, "delete", "d", "doc1", "--rev", rev2), 0, "%s", err);
    cr_expect_eq(RUN(NULL, "get", "d", "doc1"), 1);
    cr_expect_str_eq(err, "barrel: not_found: deleted\n");
}

Test(cli, bad_input_gets_a_clear_error)
{
    cr_assert_eq(RUN(NULL, "db", "create", "d"), 0);
    cr_expect_eq(RUN(NULL, "put", "d", "x", "{\"a\":"), 1);
    cr_expect(strstr(err, "bad_request"), "%s", err);
    cr_expect_eq(RUN(NULL, "put", "d", "x", "[1,2]"), 1);
    cr_expect_eq(RUN(NULL, "put", "d", "x", "{\"a\":1,\"a\":2}"), 1, "duplicate keys");
    cr_expect_eq(RUN(NULL, "put", "d", "x", "{\"_rev\":\"banana\"}"), 1);
    cr_expect_eq(RUN(NULL, "put", "d", "x", "{\"_foo\":1}"), 1);
    cr_expect(strstr(err, "_foo"), "%s", err);
    cr_expect_eq(RUN(NULL, "get", "d", "x", "--rev", "nope"), 1);
    cr_expect_eq(RUN(NULL, "revsdiff", "d", "{\"x\":[\"not-a-rev\"]}"), 1);
    cr_expect_eq(RUN(NULL, "revsdiff", "d", "[]"), 1);
    cr_expect_eq(RUN(NULL, "changes", "d", "--since", "yesterday"), 1);
    /* nothing was written by any of that */
    cr_assert_eq(RUN(NULL, "changes", "d"), 0);
    json_t *j = out_json();
    cr_expect_eq(json_array_size(json_object_get(j, "results")), 0);
    json_decref(j);
}

Test(cli, changes_since_limit_and_revsdiff)
{
    cr_assert_eq(RUN(NULL, "db", "create", "d"), 0);
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "d%d", i);
        cr_assert_eq(RUN(NULL, "put", "d", id, "{}"), 0);
    }
    cr_assert_eq(RUN(NULL, "changes", "d", "--limit", "2"), 0);
    json_t *j = out_json();
    json_t *res = json_object_get(j, "results");
    cr_assert_eq(json_array_size(res), 2);
    char last[64];
    snprintf(last, sizeof last, "%s", json_string_value(json_object_get(j, "last_seq")));
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(res, 1), "seq")), last);
    json_decref(j);
    cr_assert_eq(RUN(NULL, "changes", "d", "--since", last), 0);
    j = out_json();
    res = json_object_get(j, "results");
    cr_assert_eq(json_array_size(res), 3);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(res, 0), "id")), "d2");
    json_decref(j);
    cr_assert_eq(RUN(NULL, "changes", "d", "--since", "now"), 0);
    j = out_json();
    cr_expect_eq(json_array_size(json_object_get(j, "results")), 0);
    json_decref(j);
    cr_assert_eq(RUN("{\"d0\":[\"1-abc\"],\"zz\":[\"1-def\",\"2-aaa\"]}", "revsdiff", "d"), 0,
                 "%s", err);
    j = out_json();
    json_t *zz = json_object_get(j, "zz");
    cr_expect_eq(json_array_size(json_object_get(zz, "missing")), 2);
    cr_expect(json_object_get(j, "d0"), "1-abc is not d0's revision");
    json_decref(j);
}

Test(cli, bulk_with_new_edits_false_makes_a_conflict_visible)
{
    cr_assert_eq(RUN(NULL, "db", "create", "d"), 0);
    cr_assert_eq(RUN("{\"new_edits\":false,\"docs\":["
                     "{\"_id\":\"c\",\"_rev\":\"2-aaaa\",\"_revisions\":{\"start\":2,\"ids\":[\"aaaa\",\"0000\"]},\"v\":\"a\"},"
                     "{\"_id\":\"c\",\"_rev\":\"2-bbbb\",\"_revisions\":{\"start\":2,\"ids\":[\"bbbb\",\"0000\"]},\"v\":\"b\"}]}",
                     "bulk", "d"),
                 0, "%s", err);
    cr_assert_eq(RUN(NULL, "get", "d", "c", "--conflicts"), 0);
    json_t *j = out_json();
    cr_expect_str_eq(json_string_value(json_object_get(j, "_rev")), "2-bbbb");
    cr_expect_str_eq(json_string_value(json_array_get(json_object_get(j, "_conflicts"), 0)),
                     "2-aaaa");
    json_decref(j);
    cr_assert_eq(RUN(NULL, "check", "d"), 0, "%s", err);
}

/* The real binary: exit statuses as a shell sees them. */
static int sh(const char *cmd)
{
    int st = system(cmd);
    cr_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

Test(cli, binary_reads_stdin_and_exits_non_zero_on_error)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s/barrel --data %s db create b >/dev/null", BARREL_BINARY_DIR,
             dir);
    cr_assert_eq(sh(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "echo '{\"k\":\"v\"}' | %s/barrel --data %s put b one > %s/out.json",
             BARREL_BINARY_DIR, dir, dir);
    cr_assert_eq(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/barrel --data %s get b missing 2>/dev/null",
             BARREL_BINARY_DIR, dir);
    cr_expect_eq(sh(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s/barrel --data %s nonsense 2>/dev/null", BARREL_BINARY_DIR,
             dir);
    cr_expect_eq(sh(cmd), 2);
}

Test(cli, find_explain_and_filtered_changes)
{
    const char *mk[] = {"db", "create", "s", NULL};
    cr_assert_eq(run(NULL, mk), 0);
    for (int i = 0; i < 6; i++) {
        char id[8], doc[96];
        snprintf(id, sizeof id, "d%d", i);
        snprintf(doc, sizeof doc, "{\"type\":\"sensor\",\"site\":\"site-%d\",\"value\":%d}", i % 2,
                 i);
        const char *put[] = {"put", "s", id, doc, NULL};
        cr_assert_eq(run(NULL, put), 0, "%s", err);
    }
    const char *idx_all[] = {"db", "index", "s", "--all", NULL};
    cr_assert_eq(run(NULL, idx_all), 0, "%s", err);
    const char *find[] = {"find", "s",
                          "{\"where\":[{\"path\":\"site\",\"op\":\"==\",\"value\":\"site-1\"},"
                          "{\"path\":\"value\",\"op\":\">\",\"value\":1}]}",
                          NULL};
    cr_assert_eq(run(NULL, find), 0, "%s", err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "%s", out);
    cr_expect_str_eq(json_string_value(json_object_get(j, "plan")), "index_seek");
    json_t *docs = json_object_get(j, "docs");
    cr_assert_eq(json_array_size(docs), 2, "%s", out); /* d3, d5 */
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(docs, 0), "_id")), "d3");
    json_decref(j);

    const char *mango[] = {"find", "s", "--mango", "{\"selector\":{\"value\":{\"$lt\":2}}}", NULL};
    cr_assert_eq(run(NULL, mango), 0, "%s", err);
    cr_expect(strstr(out, "\"d0\"") && strstr(out, "\"d1\"") && !strstr(out, "\"d2\""), "%s",
              out);

    const char *explain[] = {"find", "s", "--explain", "{\"where\":[{\"path\":\"value\",\"op\":"
                                                       "\">=\",\"value\":4}]}",
                             NULL};
    cr_assert_eq(run(NULL, explain), 0, "%s", err);
    cr_expect(strstr(out, "\"index_scan\""), "%s", out);

    const char *bad[] = {"find", "s", "{\"where\":[{\"path\":\"x\",\"op\":\"~~\",\"value\":1}]}",
                         NULL};
    cr_expect_eq(run(NULL, bad), 1);
    cr_expect(strstr(err, "unknown operator"), "%s", err);
    const char *badm[] = {"find", "s", "--mango", "{\"selector\":{\"x\":{\"$mod\":[2,0]}}}",
                          NULL};
    cr_expect_eq(run(NULL, badm), 1);
    cr_expect(strstr(err, "$mod"), "%s", err);

    const char *ch[] = {"changes", "s", "--path", "site/site-0", NULL};
    cr_assert_eq(run(NULL, ch), 0, "%s", err);
    j = json_loads(out, 0, NULL);
    cr_assert_eq(json_array_size(json_object_get(j, "results")), 3, "%s", out);
    json_decref(j);
    const char *chq[] = {"changes", "s", "--query",
                         "{\"where\":[{\"path\":\"value\",\"op\":\"==\",\"value\":5}]}", NULL};
    cr_assert_eq(run(NULL, chq), 0, "%s", err);
    cr_expect(strstr(out, "\"d5\"") && !strstr(out, "\"d4\""), "%s", out);
    const char *chbad[] = {"changes", "s", "--path", "a/#/b", NULL};
    cr_expect_eq(run(NULL, chbad), 1);
    cr_expect(strstr(err, "invalid pattern"), "%s", err);
}
