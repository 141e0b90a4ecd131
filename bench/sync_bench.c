/* sync_bench.c — what replication through the local endpoint costs, on the store benchmark's
 * sensor documents.
 *
 * The source holds N (default 100,000) documents
 * {"_id":"doc-%08d","type":"sensor","site":"site-<i mod 50>","value":0.dddd,"ts":<int>,
 *  "tags":[3 distinct of 12]} from a fixed-seed PRNG, bulk-loaded (batches of 1,000, sync=none)
 * before any clock starts. Then, each replication a one-shot br_rep_run into a second store:
 * 1. full: into a fresh database: docs/s; the target's set hash must equal the source's.
 * 2. nothing new: the same replication again (time to find nothing to do); it must read no
 *    change and write nothing.
 * 3. filtered: paths = {"site/site-7"} into another fresh database: N/50 documents expected.
 * Target writes use --sync (default full: one fsync per batch, the replicator's default).
 *
 * Run (a RelWithDebInfo build): ./barrel-bench-sync [--n 100000] [--batch 500]
 *                               [--sync full|none] [--dir /tmp] [--seed 1]
 * Exit status 0 when every check passed, 1 when one failed, 2 for bad options. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "barrel/endpoint.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/replicator.h"
#include "barrel/store.h"

static const char *const TAGS[] = {"temperature", "humidity", "pressure", "battery-low",
                                   "indoor",      "outdoor",  "roof",     "basement",
                                   "calibrated",  "north",    "south",    "spare"};
#define N_TAGS 12u

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int die(const char *what, br_err e, const char *msg)
{
    fprintf(stderr, "sync_bench: %s: %s %s\n", what, br_strerror(e), msg ? msg : "");
    return 1;
}

static int load(br_db *db, size_t n, uint64_t seed)
{
    enum { BATCH = 1000 };
    struct br_json_doc *docs = calloc(BATCH, sizeof *docs);
    struct br_put *puts = calloc(BATCH, sizeof *puts);
    struct br_put_result *res = calloc(BATCH, sizeof *res);
    uint64_t s = seed * 2654435761u + 1;
    struct br_write_opts wo = {BR_SYNC_NONE, true};
    if (!docs || !puts || !res)
        return die("load", BR_ENOMEM, NULL);
    for (size_t i = 0; i < n; i += BATCH) {
        size_t m = n - i < BATCH ? n - i : BATCH;
        for (size_t j = 0; j < m; j++) {
            size_t k = i + j;
            unsigned t0 = (unsigned)(rnd(&s) % N_TAGS), t1, t2;
            do
                t1 = (unsigned)(rnd(&s) % N_TAGS);
            while (t1 == t0);
            do
                t2 = (unsigned)(rnd(&s) % N_TAGS);
            while (t2 == t0 || t2 == t1);
            char js[320];
            int len = snprintf(js, sizeof js,
                               "{\"_id\":\"doc-%08zu\",\"type\":\"sensor\",\"site\":\"site-%zu\","
                               "\"value\":%.4f,\"ts\":%zu,\"tags\":[\"%s\",\"%s\",\"%s\"]}",
                               k, k % 50, (double)(rnd(&s) % 10000) / 10000.0,
                               (size_t)1700000000 + k, TAGS[t0], TAGS[t1], TAGS[t2]);
            struct br_errbuf eb;
            br_err e = br_json_doc_parse_text(js, (size_t)len, 0, NULL, &docs[j], &eb);
            if (e)
                return die("parse", e, eb.msg);
            puts[j] = docs[j].put;
        }
        br_err e = br_db_bulk(db, puts, m, &wo, res);
        for (size_t j = 0; j < m; j++) {
            if (!e && res[j].err)
                e = res[j].err;
            br_json_doc_fini(&docs[j]);
        }
        if (e)
            return die("bulk", e, NULL);
    }
    free(docs);
    free(puts);
    free(res);
    return 0;
}

struct result {
    double secs;
    struct br_rep_stats st;
};

static int replicate(br_store *a, br_store *b, const char *tdb, size_t batch, enum br_sync sync,
                     const char *path, struct result *out)
{
    struct br_endpoint *src = NULL, *tgt = NULL;
    struct br_endpoint_local_opts oa = {"nodeA", BR_SYNC_NONE}, ob = {"nodeB", sync};
    struct br_errbuf eb = {{0}};
    br_err e = br_endpoint_local_new(a, "src", &oa, &src, &eb);
    if (!e)
        e = br_endpoint_local_new(b, tdb, &ob, &tgt, &eb);
    if (e)
        return die("endpoint", e, eb.msg);
    const char *paths[1] = {path};
    struct br_rep_opts o = {.batch_size = batch};
    if (path)
        o.filter = (struct br_wire_filter){.paths = paths, .n_paths = 1};
    br_rep *r = NULL;
    e = br_rep_new(src, tgt, &o, &r, &eb);
    if (e)
        return die("rep_new", e, eb.msg);
    double t0 = now_s();
    e = br_rep_run(r, &eb);
    out->secs = now_s() - t0;
    br_rep_get_stats(r, &out->st);
    br_rep_free(r);
    br_endpoint_free(src);
    br_endpoint_free(tgt);
    return e ? die("run", e, eb.msg) : 0;
}

int main(int argc, char **argv)
{
    size_t n = 100000, batch = 500;
    uint64_t seed = 1;
    enum br_sync sync = BR_SYNC_FULL;
    const char *dir = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--n") == 0)
            n = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "--batch") == 0)
            batch = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0)
            seed = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "--dir") == 0)
            dir = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--sync") == 0) {
            const char *v = argv[++i];
            sync = strcmp(v, "none") == 0 ? BR_SYNC_NONE : BR_SYNC_FULL;
        } else {
            fprintf(stderr, "usage: %s [--n N] [--batch B] [--sync full|none] [--dir D]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n == 0 || n % 50 || batch == 0 || batch > BR_REP_MAX_BATCH) {
        fprintf(stderr, "sync_bench: --n must be a positive multiple of 50, --batch 1..%d\n",
                BR_REP_MAX_BATCH);
        return 2;
    }
    br_log_set_level(BR_LOG_WARN);
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/sync-bench-a-XXXXXX", dir);
    snprintf(pb, sizeof pb, "%s/sync-bench-b-XXXXXX", dir);
    if (!mkdtemp(pa) || !mkdtemp(pb))
        return die("mkdtemp", BR_EIO, dir);
    br_store *a = NULL, *b = NULL;
    br_db *src = NULL, *full = NULL, *filt = NULL;
    struct br_errbuf eb = {{0}};
    struct br_store_opts oa = {.path = pa}, ob = {.path = pb};
    br_err e = br_store_open(&oa, &a, &eb);
    if (!e)
        e = br_store_open(&ob, &b, &eb);
    if (!e)
        e = br_store_db_create(a, "src", &eb);
    if (!e)
        e = br_store_db_create(b, "full", &eb);
    if (!e)
        e = br_store_db_create(b, "filtered", &eb);
    if (!e)
        e = br_store_db_open(a, "src", &src);
    if (e)
        return die("open", e, eb.msg);
    int rc = 0;
    printf("sync_bench: n=%zu batch=%zu target sync=%s\n", n, batch,
           sync == BR_SYNC_FULL ? "full" : "none");
    double t0 = now_s();
    if (load(src, n, seed))
        return 1;
    printf("load source: %.2f s\n", now_s() - t0);

    struct result r1, r2, r3;
    if (replicate(a, b, "full", batch, sync, NULL, &r1) ||
        replicate(a, b, "full", batch, sync, NULL, &r2) ||
        replicate(a, b, "filtered", batch, sync, "site/site-7", &r3))
        return 1;
    printf("1. full:        %7.3f s  %9.0f docs/s  read=%" PRIu64 " written=%" PRIu64
           " batches=%" PRIu64 " bytes=%" PRIu64 "\n",
           r1.secs, (double)r1.st.docs_written / r1.secs, r1.st.docs_read, r1.st.docs_written,
           r1.st.batches, r1.st.bytes);
    printf("2. nothing new: %7.3f ms changes_read=%" PRIu64 " written=%" PRIu64 "\n", r2.secs * 1e3,
           r2.st.changes_read, r2.st.docs_written);
    printf("3. site/site-7: %7.3f s  written=%" PRIu64 " (%.0f docs/s; %zu source changes "
           "scanned)\n",
           r3.secs, r3.st.docs_written, (double)r3.st.docs_written / r3.secs, n);

    struct br_db_digest ds, dt;
    e = br_store_db_open(b, "full", &full);
    if (!e)
        e = br_store_db_open(b, "filtered", &filt);
    if (!e)
        e = br_db_digest(src, &ds);
    if (!e)
        e = br_db_digest(full, &dt);
    if (e)
        return die("digest", e, NULL);
    if (r1.st.docs_written != n || memcmp(ds.set_hash, dt.set_hash, 16) != 0 || dt.doc_count != n) {
        fprintf(stderr, "CHECK FAILED: full replication differs from the source\n");
        rc = 1;
    }
    if (r2.st.changes_read != 0 || r2.st.docs_written != 0) {
        fprintf(stderr, "CHECK FAILED: the second run found work\n");
        rc = 1;
    }
    if (br_db_digest(filt, &dt) != BR_OK || dt.doc_count != n / 50 ||
        r3.st.docs_written != n / 50) {
        fprintf(stderr, "CHECK FAILED: filtered run wrote %" PRIu64 ", want %zu\n",
                r3.st.docs_written, n / 50);
        rc = 1;
    }
    br_db_close(filt);
    br_db_close(full);
    br_db_close(src);
    br_store_close(a);
    br_store_close(b);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", pa, pb);
    if (system(cmd) != 0)
        fprintf(stderr, "sync_bench: could not remove %s %s\n", pa, pb);
    return rc;
}
