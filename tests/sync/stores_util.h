/* stores_util.h — what the replication tests share: N_NODES stores (the includer defines
 * N_NODES), each in its own temporary directory with one database "db" open (stores_setup,
 * stores_teardown), and writes and reads on node i's database (put_json, put_json_opts,
 * winner, delete_doc, visible). Static definitions, like tests/node/serve_util.h: each
 * *_test.c is its own binary and includes this once. */
#ifndef BARREL_TESTS_STORES_UTIL_H
#define BARREL_TESTS_STORES_UTIL_H

#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/store.h"

#include "testutil.h"

#pragma GCC diagnostic ignored "-Wunused-function"

static char *dirs[N_NODES];
static br_store *st[N_NODES];
static br_db *db[N_NODES];

static const struct br_write_opts NOSYNC = {BR_SYNC_NONE, true};

static void stores_setup(void)
{
    br_log_set_level(BR_LOG_ERROR);
    for (int i = 0; i < N_NODES; i++) {
        struct br_errbuf eb = {{0}};
        dirs[i] = tu_tmpdir("sync");
        struct br_store_opts o = {.path = dirs[i]};
        cr_assert_eq(br_store_open(&o, &st[i], &eb), BR_OK, "%s", eb.msg);
        cr_assert_eq(br_store_db_create(st[i], "db", NULL), BR_OK);
        cr_assert_eq(br_store_db_open(st[i], "db", &db[i]), BR_OK);
    }
}

static void stores_teardown(void)
{
    for (int i = 0; i < N_NODES; i++) {
        br_db_close(db[i]);
        br_store_close(st[i]);
        tu_rmtree(dirs[i]);
        free(dirs[i]);
    }
}

static struct br_rev put_json_opts(int node, const char *id, const char *json,
                                   const struct br_write_opts *wo)
{
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_json_doc_parse_text(json, strlen(json), 0, id, &d, &eb), BR_OK, "%s", eb.msg);
    struct br_put_result res;
    br_err e = br_db_put(db[node], &d.put, wo, &res);
    br_json_doc_fini(&d);
    cr_assert_eq(e, BR_OK, "put %s on %d: %s %s", id, node, br_strerror(e), res.reason);
    return res.rev;
}

static struct br_rev put_json(int node, const char *id, const char *json)
{
    return put_json_opts(node, id, json, &NOSYNC);
}

/* The winning revision of id on node (a tombstone's too). */
static struct br_rev winner(int node, const char *id)
{
    struct br_doc *d = NULL;
    struct br_get_opts go = {.include_deleted = true};
    cr_assert_eq(br_db_get(db[node], id, strlen(id), &go, &d, NULL), BR_OK, "%s on %d", id, node);
    struct br_rev r = d->rev;
    br_doc_free(d);
    return r;
}

/* A tombstone on the current winner of id on node. */
static struct br_rev delete_doc(int node, const char *id)
{
    struct br_rev cur = winner(node, id);
    struct br_put p = {.id = id, .id_len = strlen(id), .rev = &cur, .deleted = true};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db[node], &p, &NOSYNC, &res), BR_OK, "%s", res.reason);
    return res.rev;
}

/* Is id live (not deleted) on node? */
static bool visible(int node, const char *id)
{
    struct br_doc *d = NULL;
    br_err e = br_db_get(db[node], id, strlen(id), NULL, &d, NULL);
    br_doc_free(d);
    cr_assert(e == BR_OK || e == BR_ENOTFOUND);
    return e == BR_OK;
}

#endif
