/* cli_id_test.c — `barrel id` and `barrel mesh-key new`: the node id printed and stable across
 * runs, identity file permissions enforced, mesh key file created once with its fingerprint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <criterion/criterion.h>

#include "barrel/cli.h"
#include "barrel/log.h"
#include "barrel/nodeid.h"

#include "testutil.h"

static char *dir;
static char out[4096], err[4096];

static void setup(void)
{
    dir = tu_tmpdir("cli-id");
}

static void teardown(void)
{
    tu_rmtree(dir);
    free(dir);
}

TestSuite(cli_id, .init = setup, .fini = teardown);

static int run(const char *data, const char *const *args)
{
    char *argv[16];
    int argc = 0;
    argv[argc++] = "barrel";
    argv[argc++] = "--data";
    argv[argc++] = (char *)data;
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    FILE *o = fmemopen(out, sizeof out, "w");
    FILE *e = fmemopen(err, sizeof err, "w");
    cr_assert(o && e);
    memset(out, 0, sizeof out);
    memset(err, 0, sizeof err);
    int rc = br_cli_run(argc, argv, stdin, o, e);
    fclose(o);
    fclose(e);
    br_log_set_level(BR_LOG_WARN);
    return rc;
}

#define RUN(data, ...) run(data, (const char *const[]){__VA_ARGS__, NULL})

Test(cli_id, id_creates_identity_then_prints_the_same_id)
{
    char data[4200];
    snprintf(data, sizeof data, "%s/node", dir);
    cr_assert_eq(RUN(data, "id"), 0, "%s", err);
    cr_assert(strstr(err, "created a new identity") != NULL, "%s", err);
    cr_assert_eq(strlen(out), BR_NODE_ID_TEXT_LEN + 1, "%s", out);
    cr_assert(br_nodeid_valid(out, BR_NODE_ID_TEXT_LEN), "%s", out);
    char first[128];
    memcpy(first, out, BR_NODE_ID_TEXT_LEN + 2); /* the id, its newline and the NUL */
    cr_assert_eq(RUN(data, "id"), 0, "%s", err);
    cr_assert_str_eq(out, first);
    cr_assert_str_eq(err, "");
    cr_assert_eq(RUN(data, "id", "extra"), 2);
}

Test(cli_id, id_refuses_identity_readable_by_others)
{
    cr_assert_eq(RUN(dir, "id"), 0, "%s", err);
    char path[4200];
    snprintf(path, sizeof path, "%s/identity.key", dir);
    cr_assert_eq(chmod(path, 0644), 0);
    cr_assert_eq(RUN(dir, "id"), 1);
    cr_assert(strstr(err, "mode 0644") != NULL, "%s", err);
    cr_assert_str_eq(out, "");
}

Test(cli_id, mesh_key_new_writes_once_and_prints_fingerprint)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/mesh.key", dir);
    cr_assert_eq(RUN(dir, "mesh-key", "new", path), 0, "%s", err);
    cr_assert_eq(strlen(out), 17, "%s", out);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(RUN(dir, "mesh-key", "new", path), 1);
    cr_assert(strstr(err, "already exists") != NULL, "%s", err);
    cr_assert_eq(RUN(dir, "mesh-key", "new"), 2);
    cr_assert_eq(RUN(dir, "mesh-key", "old", path), 2);
}
