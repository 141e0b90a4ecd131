/* store_bench.c — throughput and latency of barrel's document store, measured against raw RocksDB
 * on the same machine in the same run.
 *
 * The workload is N (default 100,000) sensor documents of about 150 bytes of JSON,
 * {"_id":"doc-%08d","type":"sensor","site":"site-%d","value":<float>,"ts":<int>,"tags":[...]},
 * made from a fixed-seed PRNG so runs are comparable. A write takes the path a user's write
 * takes: JSON text -> br_json_doc_parse_text (canonical CBOR body and id) ->
 * br_db_put / br_db_bulk; the same phases are also run with bodies prepared as CBOR beforehand,
 * which is the store's own cost. Phases: bulk insert in batches of 1,000 (sync=none and
 * sync=full); single puts one at a time (sync=none over N docs, sync=full over --fsync-n docs)
 * with p50/p99 latency; 8 concurrent writers doing single sync=full puts (group commit, with the
 * number of WAL fsyncs per write read from the store's private counter); get by id in random
 * order and a changes-feed scan, both after reopening the store so that they read SST files;
 * a bulk rewrite of every document (each names its revision, as a gateway updating its sensors'
 * docs does) on a reopened store, then a changes-feed scan right after it.
 * The raw RocksDB baseline (one column family, WAL on, lz4, the store's table options) writes
 * N plain puts of 16-byte keys and 150-byte values in batches of 1,000, one at a time, and
 * --fsync-n one at a time with sync (single-threaded and from 8 threads). Every phase runs in a
 * fresh data directory under --dir, removed afterwards. The program prints a table, barrel's
 * ratio to each raw rate, a PASS/MISS line per target of the store performance issue, and the
 * peak RSS; --csv FILE writes the same figures as CSV.
 *
 * Run (a RelWithDebInfo build, not a sanitizer build; the machine otherwise idle):
 *   ./barrel-bench-store [--n 100000] [--fsync-n 10000] [--mt-n 40000] [--threads 8]
 *                        [--batch 1000] [--repeat 1] [--dir /tmp] [--seed 1] [--csv FILE]
 *                        [--only PHASE,PHASE...]
 * On a shared machine use --repeat 3 (or more): the sequence runs that many times and each
 * phase reports its best run and the median; the "oth%" column says how much CPU other
 * processes took during the reported run (100 = one core), cpu% and "cpu us" are this
 * process's CPU over wall time and per document.
 * --only takes the phase keys printed in the first column (e.g. --only bulk-json,put-json),
 * which is handy under perf record. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <jansson.h>
#include <rocksdb/c.h>

#include "barrel/alloc.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/store.h"

#include "benchutil.h"
#include "store_int.h" /* st->fsyncs: WAL fsyncs made by group commit */

#define ID_STRIDE 16 /* "doc-%08zu" is 12 bytes; NUL and padding */
#define RAW_KEY 16   /* raw RocksDB key bytes */
#define RAW_VAL 150  /* raw RocksDB value bytes */
#define DB_NAME "bench"

/* ---- small utilities ---- */

/* ---- options ---- */

struct opts {
    size_t n;       /* documents for the N-sized phases */
    size_t fsync_n; /* documents for single-threaded sync=full single puts */
    size_t mt_n;    /* documents for the concurrent sync=full phases (split among writers) */
    size_t batch;
    unsigned threads;
    unsigned repeat; /* run the whole sequence this many times; report the best of each phase */
    uint64_t seed;
    const char *dir;
    const char *csv;
    const char *only;
    const char *index; /* path index policy of the benchmark database: all, none, or P,P,... */
};

static size_t parse_size(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || x == 0 || x > 100000000ull)
        die("%s wants a positive integer, got \"%s\"", flag, v);
    return (size_t)x;
}

static void usage(void)
{
    fputs("usage: barrel-bench-store [--n N] [--fsync-n N] [--mt-n N] [--threads T] [--batch B]\n"
          "                          [--repeat R] [--dir DIR] [--seed S] [--csv FILE]\n"
          "                          [--only KEY,KEY...] [--index all|none|PATTERN,...]\n",
          stderr);
    exit(2);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.n = 100000,
                       .fsync_n = 10000,
                       .mt_n = 40000,
                       .batch = 1000,
                       .threads = 8,
                       .repeat = 1,
                       .seed = 1,
                       .dir = "/tmp",
                       .index = "none"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            usage();
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--n") == 0)
            o->n = parse_size(a, v);
        else if (strcmp(a, "--fsync-n") == 0)
            o->fsync_n = parse_size(a, v);
        else if (strcmp(a, "--mt-n") == 0)
            o->mt_n = parse_size(a, v);
        else if (strcmp(a, "--batch") == 0)
            o->batch = parse_size(a, v);
        else if (strcmp(a, "--threads") == 0)
            o->threads = (unsigned)parse_size(a, v);
        else if (strcmp(a, "--repeat") == 0)
            o->repeat = (unsigned)parse_size(a, v);
        else if (strcmp(a, "--seed") == 0)
            o->seed = parse_size(a, v);
        else if (strcmp(a, "--dir") == 0)
            o->dir = v;
        else if (strcmp(a, "--csv") == 0)
            o->csv = v;
        else if (strcmp(a, "--only") == 0)
            o->only = v;
        else if (strcmp(a, "--index") == 0)
            o->index = v;
        else
            usage();
    }
    if (o->fsync_n > o->n)
        o->fsync_n = o->n;
    if (o->mt_n > o->n)
        o->mt_n = o->n;
    if (o->threads > 256)
        die("--threads at most 256");
    if (o->repeat > 16)
        die("--repeat at most 16");
}

/* ---- the documents ---- */

static const char *const TAGS[] = {"temperature", "humidity", "pressure", "battery-low",
                                   "calibrated",  "rooftop",  "basement", "north-wing",
                                   "south-wing",  "outdoor",  "indoor",   "maintenance"};
#define N_TAGS (sizeof TAGS / sizeof TAGS[0])

struct corpus {
    size_t n;
    char *json; /* every JSON text back to back */
    size_t *json_off;
    uint8_t *cbor; /* every canonical CBOR body back to back (br_json_doc_parse's output) */
    size_t *cbor_off;
    char *ids;       /* n ids, ID_STRIDE bytes apart, NUL-terminated */
    uint8_t *raw_kv; /* n raw (key, value) pairs, RAW_KEY + RAW_VAL bytes each */
    uint32_t *perm;  /* a random permutation of 0..n-1 (get order) */
};

static const char *doc_id(const struct corpus *c, size_t i)
{
    return c->ids + i * ID_STRIDE;
}

/* Document i as a user's write delivers it: its JSON text converted and split. The caller
 * releases d with br_json_doc_fini. */
static void doc_from_json(const struct corpus *c, size_t i, struct br_json_doc *d)
{
    struct br_errbuf eb = {{0}};
    if (br_json_doc_parse_text(c->json + c->json_off[i], c->json_off[i + 1] - c->json_off[i], 0,
                               NULL, d, &eb))
        die("doc %zu: %s", i, eb.msg);
}

static void corpus_make(struct corpus *c, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t cap = n * 192, len = 0;
    c->n = n;
    c->json = xcalloc(cap, 1);
    c->json_off = xcalloc(n + 1, sizeof *c->json_off);
    c->ids = xcalloc(n, ID_STRIDE);
    c->raw_kv = xcalloc(n, RAW_KEY + RAW_VAL);
    c->perm = xcalloc(n, sizeof *c->perm);
    for (size_t i = 0; i < n; i++) {
        unsigned t[3];
        t[0] = (unsigned)(rnd_next(&s) % N_TAGS);
        do
            t[1] = (unsigned)(rnd_next(&s) % N_TAGS);
        while (t[1] == t[0]);
        do
            t[2] = (unsigned)(rnd_next(&s) % N_TAGS);
        while (t[2] == t[0] || t[2] == t[1]);
        double value = -20.0 + (double)(rnd_next(&s) % 600000) / 10000.0;
        uint64_t ts = 1700000000000000ull + i * 1000u + rnd_next(&s) % 1000u;
        unsigned site = (unsigned)(rnd_next(&s) % 50);
        char tmp[32]; /* n < 10^8 (parse_size), so the id is always 12 bytes */
        snprintf(tmp, sizeof tmp, "doc-%08zu", i);
        memcpy(c->ids + i * ID_STRIDE, tmp, strlen(tmp) + 1);
        int k = snprintf(c->json + len, cap - len,
                         "{\"_id\":\"%s\",\"type\":\"sensor\",\"site\":\"site-%u\",\"value\":%.4f,"
                         "\"ts\":%" PRIu64 ",\"tags\":[\"%s\",\"%s\",\"%s\"]}",
                         doc_id(c, i), site, value, ts, TAGS[t[0]], TAGS[t[1]], TAGS[t[2]]);
        if (k < 0 || (size_t)k >= cap - len)
            die("corpus buffer too small");
        c->json_off[i] = len;
        /* raw pair: a 16-byte key and 150 bytes of the document text (similar compressibility) */
        uint8_t *kv = c->raw_kv + i * (RAW_KEY + RAW_VAL);
        snprintf(tmp, sizeof tmp, "key-%012zu", i);
        memcpy(kv, tmp, RAW_KEY);
        memset(kv + RAW_KEY, ' ', RAW_VAL);
        memcpy(kv + RAW_KEY, c->json + len, (size_t)k < RAW_VAL ? (size_t)k : RAW_VAL);
        len += (size_t)k;
    }
    c->json_off[n] = len;

    /* The CBOR bodies, made once through the jansson tree path (br_json_parse,
     * br_json_doc_parse); the one-pass converter the timed phases use must give the same
     * bytes for every document. */
    br_buf all;
    br_buf_init(&all, 0);
    c->cbor_off = xcalloc(n + 1, sizeof *c->cbor_off);
    for (size_t i = 0; i < n; i++) {
        json_t *j;
        struct br_json_doc d, fast;
        struct br_errbuf eb = {{0}};
        if (br_json_parse(c->json + c->json_off[i], c->json_off[i + 1] - c->json_off[i], 0, &j,
                          &eb) ||
            br_json_doc_parse(j, NULL, &d, &eb))
            die("corpus doc %zu: %s", i, eb.msg);
        json_decref(j);
        doc_from_json(c, i, &fast);
        if (fast.body.len != d.body.len || memcmp(fast.body.data, d.body.data, d.body.len) != 0 ||
            fast.put.id_len != d.put.id_len || memcmp(fast.id, d.id, d.put.id_len) != 0)
            die("corpus doc %zu: the one-pass converter disagrees with the tree path", i);
        br_json_doc_fini(&fast);
        c->cbor_off[i] = all.len;
        if (br_buf_append(&all, d.body.data, d.body.len))
            die("out of memory");
        br_json_doc_fini(&d);
    }
    c->cbor_off[n] = all.len;
    size_t cl;
    c->cbor = br_buf_steal(&all, &cl);

    for (size_t i = 0; i < n; i++)
        c->perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rnd_next(&s) % i);
        uint32_t tmp = c->perm[i - 1];
        c->perm[i - 1] = c->perm[j];
        c->perm[j] = tmp;
    }
}

static void corpus_free(struct corpus *c)
{
    free(c->json);
    free(c->json_off);
    br_free(c->cbor);
    free(c->cbor_off);
    free(c->ids);
    free(c->raw_kv);
    free(c->perm);
}

static size_t corpus_bytes(const struct corpus *c)
{
    return c->json_off[c->n] + c->cbor_off[c->n] + c->n * (ID_STRIDE + RAW_KEY + RAW_VAL + 20);
}

/* Document i with its body prepared as CBOR beforehand. */
static struct br_put doc_from_cbor(const struct corpus *c, size_t i)
{
    return (struct br_put){.id = doc_id(c, i),
                           .id_len = strlen(doc_id(c, i)),
                           .body = c->cbor + c->cbor_off[i],
                           .body_len = c->cbor_off[i + 1] - c->cbor_off[i]};
}

/* ---- results ---- */

enum phase {
    P_RAW_BATCH,
    P_RAW_PUT,
    P_RAW_FSYNC,
    P_RAW_MT,
    P_BULK_JSON,
    P_BULK_JSON_FULL,
    P_BULK_CBOR,
    P_BULK_CBOR_FULL,
    P_PUT_JSON,
    P_PUT_CBOR,
    P_PUT_JSON_FULL,
    P_PUT_CBOR_FULL,
    P_MT_JSON_FULL,
    P_MT_CBOR_FULL,
    P_GET,
    P_CHANGES,
    P_BULK_UPDATE,
    P_CHANGES_UPD,
    P_COUNT
};

static const struct {
    const char *key;
    const char *what;
} PHASES[P_COUNT] = {
    [P_RAW_BATCH] = {"raw-batch", "raw RocksDB: batched puts, sync=0"},
    [P_RAW_PUT] = {"raw-put", "raw RocksDB: single puts, sync=0"},
    [P_RAW_FSYNC] = {"raw-put-fsync", "raw RocksDB: single puts, sync=1"},
    [P_RAW_MT] = {"raw-mt-fsync", "raw RocksDB: T threads single puts, sync=1"},
    [P_BULK_JSON] = {"bulk-json", "bulk insert, JSON path, sync=none"},
    [P_BULK_JSON_FULL] = {"bulk-json-full", "bulk insert, JSON path, sync=full"},
    [P_BULK_CBOR] = {"bulk-cbor", "bulk insert, CBOR ready, sync=none"},
    [P_BULK_CBOR_FULL] = {"bulk-cbor-full", "bulk insert, CBOR ready, sync=full"},
    [P_PUT_JSON] = {"put-json", "single put, JSON path, sync=none"},
    [P_PUT_CBOR] = {"put-cbor", "single put, CBOR ready, sync=none"},
    [P_PUT_JSON_FULL] = {"put-json-full", "single put, JSON path, sync=full"},
    [P_PUT_CBOR_FULL] = {"put-cbor-full", "single put, CBOR ready, sync=full"},
    [P_MT_JSON_FULL] = {"mt-json-full", "T writers single put, JSON, sync=full"},
    [P_MT_CBOR_FULL] = {"mt-cbor-full", "T writers single put, CBOR, sync=full"},
    [P_GET] = {"get", "get by id, random order (SST)"},
    [P_CHANGES] = {"changes", "changes feed scan, all docs (SST)"},
    [P_BULK_UPDATE] = {"bulk-update", "bulk rewrite of every doc, sync=none"},
    [P_CHANGES_UPD] = {"changes-upd", "changes feed scan after the rewrite"},
};

struct result {
    bool ran;
    size_t n;
    double secs;
    double rate;
    bool has_lat;
    double p50_us, p99_us;
    double cpu_pct;
    double cpu_us_per_doc;    /* process CPU time (all threads) per document */
    double fsyncs_per_commit; /* < 0: not applicable */
    double others_pct;        /* CPU used by other processes meanwhile, % of one core */
    long rss_kb;              /* peak RSS after the phase */
    unsigned runs;            /* repetitions merged into this result (the best is kept) */
    double rates[16];         /* docs/s of each repetition */
};

static struct result results[P_COUNT]; /* the best repetition of each phase */
static struct result run[P_COUNT];     /* the repetition in progress */

static bool phase_wanted(const struct opts *o, enum phase p)
{
    if (!o->only)
        return true;
    const char *key = PHASES[p].key;
    size_t kl = strlen(key);
    for (const char *s = o->only; *s;) {
        const char *comma = strchr(s, ',');
        size_t l = comma ? (size_t)(comma - s) : strlen(s);
        if (l == kl && memcmp(s, key, kl) == 0)
            return true;
        s += l + (comma ? 1 : 0);
    }
    return false;
}

/* Busy time of all CPUs (every process) from /proc/stat, in ns; 0 if unreadable. */
static uint64_t machine_busy_ns(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f)
        return 0;
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (k != 8)
        return 0;
    /* user nice system [idle iowait] irq softirq steal */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (uint64_t)busy * (1000000000u / (uint64_t)sysconf(_SC_CLK_TCK));
}

/* Wall and CPU clocks of a phase, and the machine's busy time (to tell how busy others were). */
struct span {
    uint64_t wall0, cpu0, busy0;
};

static void span_start(struct span *sp)
{
    /* Start every phase on a quiet disk: the page cache still holds what earlier phases wrote
     * without fsync (and the stores they removed), and its writeback would otherwise land on
     * this phase's fsyncs (put-json-full measured 1,900 docs/s after the 100,000-doc phases,
     * 4,200 docs/s alone). */
    sync();
    sp->busy0 = machine_busy_ns();
    sp->cpu0 = cpu_ns();
    sp->wall0 = now_ns();
}

static void span_stop(const struct span *sp, enum phase p, size_t n, uint64_t *lat)
{
    uint64_t wall = now_ns() - sp->wall0, cpu = cpu_ns() - sp->cpu0;
    uint64_t busy = machine_busy_ns() - sp->busy0;
    struct result *r = &run[p];
    memset(r, 0, sizeof *r);
    r->ran = true;
    r->others_pct = busy > cpu ? 100.0 * (double)(busy - cpu) / (double)wall : 0;
    r->n = n;
    r->secs = (double)wall / 1e9;
    r->rate = (double)n / r->secs;
    r->cpu_pct = 100.0 * (double)cpu / (double)wall;
    r->cpu_us_per_doc = (double)cpu / 1e3 / (double)n;
    r->fsyncs_per_commit = -1;
    if (lat) {
        qsort(lat, n, sizeof *lat, cmp_u64);
        r->has_lat = true;
        r->p50_us = (double)lat[n / 2] / 1e3;
        r->p99_us = (double)lat[(size_t)((double)(n - 1) * 0.99)] / 1e3;
    }
}

/* Print the repetition just run and keep it if it is the best so far. */
static void phase_done(enum phase p)
{
    struct result *r = &run[p], *best = &results[p];
    r->rss_kb = peak_rss_kb();
    printf("  %-15s %8zu docs %8.3f s %10.0f docs/s", PHASES[p].key, r->n, r->secs, r->rate);
    if (r->has_lat)
        printf("  p50 %7.1f us  p99 %7.1f us", r->p50_us, r->p99_us);
    if (r->fsyncs_per_commit >= 0)
        printf("  %.3f fsyncs/commit", r->fsyncs_per_commit);
    printf("  (others %.0f%% cpu)\n", r->others_pct);
    fflush(stdout);
    unsigned runs = best->runs;
    double rates[16];
    memcpy(rates, best->rates, sizeof rates);
    if (!best->ran || r->rate > best->rate)
        *best = *r;
    memcpy(best->rates, rates, sizeof rates);
    if (runs < 16)
        best->rates[runs] = r->rate;
    best->runs = runs + 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_rate(const struct result *r)
{
    double v[16];
    unsigned n = r->runs < 16 ? r->runs : 16;
    memcpy(v, r->rates, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- barrel store helpers ---- */

struct bstore {
    char dir[PATH_MAX];
    br_store *s;
    br_db *db;
};

static void bstore_open_dir(struct bstore *b)
{
    struct br_store_opts so = {.path = b->dir};
    struct br_errbuf eb = {{0}};
    if (br_store_open(&so, &b->s, &eb))
        die("open store %s: %s", b->dir, eb.msg);
    if (br_store_db_open(b->s, DB_NAME, &b->db))
        die("open database");
}

/* Apply --index to a fresh database: "none" (the store's default), "all", or patterns. */
static void set_index(const struct opts *o, br_db *db)
{
    struct br_errbuf eb = {{0}};
    if (strcmp(o->index, "none") == 0)
        return;
    if (strcmp(o->index, "all") == 0) {
        if (br_db_set_index(db, true, NULL, 0, &eb))
            die("--index all: %s", eb.msg);
        return;
    }
    char buf[1024];
    const char *pats[64];
    size_t n = 0;
    snprintf(buf, sizeof buf, "%s", o->index);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < 64;
         t = strtok_r(NULL, ",", &save))
        pats[n++] = t;
    if (br_db_set_index(db, false, pats, n, &eb))
        die("--index %s: %s", o->index, eb.msg);
}

static void bstore_open(const struct opts *o, struct bstore *b)
{
    int k = snprintf(b->dir, sizeof b->dir, "%s/barrel-bench-XXXXXX", o->dir);
    if (k < 0 || (size_t)k >= sizeof b->dir || !mkdtemp(b->dir))
        die("cannot make a temporary directory under %s: %s", o->dir, strerror(errno));
    struct br_store_opts so = {.path = b->dir};
    struct br_errbuf eb = {{0}};
    if (br_store_open(&so, &b->s, &eb))
        die("open store %s: %s", b->dir, eb.msg);
    if (br_store_db_create(b->s, DB_NAME, &eb))
        die("create database: %s", eb.msg);
    if (br_store_db_open(b->s, DB_NAME, &b->db))
        die("open database");
    set_index(o, b->db);
}

static void bstore_close(struct bstore *b)
{
    br_db_close(b->db);
    br_store_close(b->s);
    b->db = NULL;
    b->s = NULL;
}

static void bstore_finish(struct bstore *b)
{
    bstore_close(b);
    rm_rf(b->dir);
}

static uint64_t bstore_fsyncs(const struct bstore *b)
{
    return (uint64_t)atomic_load(&b->s->fsyncs);
}

/* Check that the database holds `want` live documents (every write landed). */
static void bstore_expect(struct bstore *b, size_t want)
{
    struct br_db_info info;
    if (br_db_info(b->db, &info))
        die("db info");
    if (info.doc_count != want)
        die("expected %zu documents, the database has %" PRIu64, want, info.doc_count);
}

static void check_put(br_err e, const struct br_put_result *res, size_t i)
{
    if (e || res->err)
        die("write of doc %zu failed: %s (%s)", i, br_strerror(e ? e : res->err), res->reason);
}

/* ---- barrel phases ---- */

static void phase_bulk(const struct opts *o, const struct corpus *c, enum phase p, bool json,
                       enum br_sync sync)
{
    struct bstore b;
    bstore_open(o, &b);
    size_t n = c->n;
    struct br_put *puts = xcalloc(o->batch, sizeof *puts);
    struct br_put_result *res = xcalloc(o->batch, sizeof *res);
    struct br_json_doc *jd = xcalloc(o->batch, sizeof *jd);
    struct br_write_opts wo = {sync, true};
    uint64_t f0 = bstore_fsyncs(&b), commits = 0;
    struct span sp;
    span_start(&sp);
    for (size_t i = 0; i < n; i += o->batch) {
        size_t k = n - i < o->batch ? n - i : o->batch;
        for (size_t j = 0; j < k; j++) {
            if (json) {
                doc_from_json(c, i + j, &jd[j]);
                puts[j] = jd[j].put;
            } else {
                puts[j] = doc_from_cbor(c, i + j);
            }
        }
        br_err e = br_db_bulk(b.db, puts, k, &wo, res);
        for (size_t j = 0; j < k; j++)
            check_put(e, &res[j], i + j);
        if (json)
            for (size_t j = 0; j < k; j++)
                br_json_doc_fini(&jd[j]);
        commits++;
    }
    span_stop(&sp, p, n, NULL);
    run[p].fsyncs_per_commit = (double)(bstore_fsyncs(&b) - f0) / (double)commits;
    bstore_expect(&b, n);
    bstore_finish(&b);
    free(puts);
    free(res);
    free(jd);
    phase_done(p);
}

static void phase_single(const struct opts *o, const struct corpus *c, enum phase p, bool json,
                         enum br_sync sync, size_t n)
{
    struct bstore b;
    bstore_open(o, &b);
    uint64_t *lat = xcalloc(n, sizeof *lat);
    struct br_put_result *res = xcalloc(1, sizeof *res);
    struct br_write_opts wo = {sync, true};
    uint64_t f0 = bstore_fsyncs(&b);
    struct span sp;
    span_start(&sp);
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        br_err e;
        if (json) {
            struct br_json_doc d;
            doc_from_json(c, i, &d);
            e = br_db_put(b.db, &d.put, &wo, res);
            br_json_doc_fini(&d);
        } else {
            struct br_put put = doc_from_cbor(c, i);
            e = br_db_put(b.db, &put, &wo, res);
        }
        lat[i] = now_ns() - t0;
        check_put(e, res, i);
    }
    span_stop(&sp, p, n, lat);
    run[p].fsyncs_per_commit = (double)(bstore_fsyncs(&b) - f0) / (double)n;
    bstore_expect(&b, n);
    bstore_finish(&b);
    free(lat);
    free(res);
    phase_done(p);
}

struct mt_arg {
    const struct corpus *c;
    br_db *db;      /* barrel writers */
    rocksdb_t *rdb; /* raw writers */
    rocksdb_writeoptions_t *rwo;
    bool json;
    size_t from, to;
    uint64_t *lat; /* shared; this writer fills [from, to) */
    pthread_barrier_t *go;
};

static void *mt_writer(void *p)
{
    struct mt_arg *a = p;
    struct br_put_result *res = a->db ? xcalloc(1, sizeof *res) : NULL;
    struct br_write_opts wo = {BR_SYNC_FULL, true};
    pthread_barrier_wait(a->go);
    for (size_t i = a->from; i < a->to; i++) {
        uint64_t t0 = now_ns();
        if (a->rdb) {
            const uint8_t *kv = a->c->raw_kv + i * (RAW_KEY + RAW_VAL);
            char *err = NULL;
            rocksdb_put(a->rdb, a->rwo, (const char *)kv, RAW_KEY, (const char *)kv + RAW_KEY,
                        RAW_VAL, &err);
            if (err)
                die("raw put: %s", err);
        } else if (a->json) {
            struct br_json_doc d;
            doc_from_json(a->c, i, &d);
            br_err e = br_db_put(a->db, &d.put, &wo, res);
            br_json_doc_fini(&d);
            check_put(e, res, i);
        } else {
            struct br_put put = doc_from_cbor(a->c, i);
            check_put(br_db_put(a->db, &put, &wo, res), res, i);
        }
        a->lat[i] = now_ns() - t0;
    }
    free(res);
    return NULL;
}

/* Run o->threads writers over docs [0, n) with single synced writes, barrel or raw. */
static void run_writers(const struct opts *o, const struct corpus *c, enum phase p, br_db *db,
                        rocksdb_t *rdb, rocksdb_writeoptions_t *rwo, bool json, size_t n)
{
    unsigned t = o->threads;
    pthread_t *th = xcalloc(t, sizeof *th);
    struct mt_arg *args = xcalloc(t, sizeof *args);
    uint64_t *lat = xcalloc(n, sizeof *lat);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, t + 1);
    for (unsigned i = 0; i < t; i++) {
        args[i] = (struct mt_arg){.c = c,
                                  .db = db,
                                  .rdb = rdb,
                                  .rwo = rwo,
                                  .json = json,
                                  .from = n * i / t,
                                  .to = n * (i + 1) / t,
                                  .lat = lat,
                                  .go = &go};
        if (pthread_create(&th[i], NULL, mt_writer, &args[i]) != 0)
            die("pthread_create");
    }
    struct span sp;
    pthread_barrier_wait(&go);
    span_start(&sp);
    for (unsigned i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    span_stop(&sp, p, n, lat);
    pthread_barrier_destroy(&go);
    free(lat);
    free(args);
    free(th);
}

static void phase_mt(const struct opts *o, const struct corpus *c, enum phase p, bool json)
{
    struct bstore b;
    bstore_open(o, &b);
    uint64_t f0 = bstore_fsyncs(&b);
    run_writers(o, c, p, b.db, NULL, NULL, json, o->mt_n);
    run[p].fsyncs_per_commit = (double)(bstore_fsyncs(&b) - f0) / (double)o->mt_n;
    bstore_expect(&b, o->mt_n);
    bstore_finish(&b);
    phase_done(p);
}

static int count_change(void *arg, const struct br_change *ch)
{
    (void)ch;
    (*(size_t *)arg)++;
    return 0;
}

/* Load every doc in bulk (untimed; their revisions into revs unless NULL), then reopen: the
 * recovery flushes the memtables to L0 files, so what follows reads SST files. */
static void bstore_load(const struct opts *o, const struct corpus *c, struct bstore *b,
                        struct br_rev *revs)
{
    bstore_open(o, b);
    struct br_put *puts = xcalloc(o->batch, sizeof *puts);
    struct br_put_result *res = xcalloc(o->batch, sizeof *res);
    struct br_write_opts wo = {BR_SYNC_NONE, true};
    for (size_t i = 0; i < c->n; i += o->batch) {
        size_t k = c->n - i < o->batch ? c->n - i : o->batch;
        for (size_t j = 0; j < k; j++)
            puts[j] = doc_from_cbor(c, i + j);
        br_err e = br_db_bulk(b->db, puts, k, &wo, res);
        for (size_t j = 0; j < k; j++) {
            check_put(e, &res[j], i + j);
            if (revs)
                revs[i + j] = res[j].rev;
        }
    }
    free(puts);
    free(res);
    bstore_close(b);
    bstore_open_dir(b);
    bstore_expect(b, c->n);
}

/* Load N docs (untimed), reopen so that reads come from SST files, then time the reads. */
static void phase_reads(const struct opts *o, const struct corpus *c)
{
    struct bstore b;
    bstore_load(o, c, &b, NULL);

    if (phase_wanted(o, P_GET)) {
        uint64_t *lat = xcalloc(c->n, sizeof *lat);
        struct span sp;
        span_start(&sp);
        for (size_t i = 0; i < c->n; i++) {
            const char *id = doc_id(c, c->perm[i]);
            struct br_doc *d;
            struct br_errbuf eb = {{0}};
            uint64_t t0 = now_ns();
            if (br_db_get(b.db, id, strlen(id), NULL, &d, &eb))
                die("get %s: %s", id, eb.msg);
            br_doc_free(d);
            lat[i] = now_ns() - t0;
        }
        span_stop(&sp, P_GET, c->n, lat);
        free(lat);
        phase_done(P_GET);
    }
    if (phase_wanted(o, P_CHANGES)) {
        size_t seen = 0;
        struct br_changes_opts co = {.since = BR_HLC_MIN};
        struct span sp;
        span_start(&sp);
        if (br_db_changes(b.db, &co, count_change, &seen, NULL))
            die("changes");
        span_stop(&sp, P_CHANGES, seen, NULL);
        if (seen != c->n)
            die("changes feed gave %zu entries, expected %zu", seen, c->n);
        phase_done(P_CHANGES);
    }
    bstore_finish(&b);
}

/* Load N docs (untimed) and reopen, then time a bulk rewrite of every one (same bodies with a
 * field changed: new revisions) and a changes scan right after it, before any compaction. */
static void phase_updates(const struct opts *o, const struct corpus *c)
{
    struct bstore b;
    struct br_rev *revs = xcalloc(c->n, sizeof *revs);
    bstore_load(o, c, &b, revs);
    struct br_put *puts = xcalloc(o->batch, sizeof *puts);
    struct br_put_result *res = xcalloc(o->batch, sizeof *res);
    struct br_write_opts wo = {BR_SYNC_NONE, true};
    /* the new bodies, made untimed: a low mantissa bit of "value" (the last member of the
     * canonical map, a float64) flipped, so each is still canonical and gets a new revision */
    br_buf nb;
    br_buf_init(&nb, 0);
    size_t *off = xcalloc(c->n + 1, sizeof *off);
    for (size_t i = 0; i < c->n; i++) {
        struct br_put p = doc_from_cbor(c, i);
        off[i] = nb.len;
        if (br_buf_append(&nb, p.body, p.body_len))
            die("out of memory");
        nb.data[nb.len - 2] ^= 1;
    }
    off[c->n] = nb.len;
    struct span sp;
    span_start(&sp);
    for (size_t i = 0; i < c->n; i += o->batch) {
        size_t k = c->n - i < o->batch ? c->n - i : o->batch;
        for (size_t j = 0; j < k; j++) {
            puts[j] = doc_from_cbor(c, i + j);
            puts[j].body = nb.data + off[i + j];
            puts[j].rev = &revs[i + j];
        }
        br_err e = br_db_bulk(b.db, puts, k, &wo, res);
        for (size_t j = 0; j < k; j++)
            check_put(e, &res[j], i + j);
    }
    span_stop(&sp, P_BULK_UPDATE, c->n, NULL);
    phase_done(P_BULK_UPDATE);
    bstore_expect(&b, c->n);
    size_t seen = 0;
    struct br_changes_opts co = {.since = BR_HLC_MIN};
    span_start(&sp);
    if (br_db_changes(b.db, &co, count_change, &seen, NULL))
        die("changes");
    span_stop(&sp, P_CHANGES_UPD, seen, NULL);
    if (seen != c->n)
        die("changes feed gave %zu entries after the rewrite, expected %zu", seen, c->n);
    phase_done(P_CHANGES_UPD);
    bstore_finish(&b);
    br_buf_fini(&nb);
    free(off);
    free(revs);
    free(puts);
    free(res);
}

/* ---- raw RocksDB ---- */

struct rawdb {
    char dir[PATH_MAX];
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wo, *wo_sync;
};

/* The store's options where they apply (store.c br_store_open / cf_options): one default
 * column family, WAL on, lz4, 64 MiB write buffer, 32 MiB LRU block cache, bloom filters. */
static void raw_open(const struct opts *o, struct rawdb *r)
{
    int k = snprintf(r->dir, sizeof r->dir, "%s/barrel-bench-raw-XXXXXX", o->dir);
    if (k < 0 || (size_t)k >= sizeof r->dir || !mkdtemp(r->dir))
        die("cannot make a temporary directory under %s: %s", o->dir, strerror(errno));
    r->cache = rocksdb_cache_create_lru(32u << 20);
    r->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(r->table, r->cache);
    rocksdb_block_based_options_set_filter_policy(r->table, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(r->table, 1);
    r->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(r->opts, 1);
    rocksdb_options_increase_parallelism(r->opts, 2);
    rocksdb_options_set_max_background_jobs(r->opts, 2);
    rocksdb_options_set_keep_log_file_num(r->opts, 3);
    rocksdb_options_set_max_total_wal_size(r->opts, 256u << 20);
    rocksdb_options_set_compression(r->opts, rocksdb_lz4_compression);
    rocksdb_options_set_block_based_table_factory(r->opts, r->table);
    rocksdb_options_set_write_buffer_size(r->opts, 64u << 20);
    char *err = NULL;
    r->db = rocksdb_open(r->opts, r->dir, &err);
    if (err)
        die("raw open %s: %s", r->dir, err);
    r->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo, 0);
    r->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo_sync, 1);
}

static void raw_finish(struct rawdb *r)
{
    rocksdb_close(r->db);
    rocksdb_writeoptions_destroy(r->wo);
    rocksdb_writeoptions_destroy(r->wo_sync);
    rocksdb_options_destroy(r->opts);
    rocksdb_block_based_options_destroy(r->table);
    rocksdb_cache_destroy(r->cache);
    rm_rf(r->dir);
}

static void raw_put(struct rawdb *r, rocksdb_writeoptions_t *wo, const struct corpus *c, size_t i)
{
    const uint8_t *kv = c->raw_kv + i * (RAW_KEY + RAW_VAL);
    char *err = NULL;
    rocksdb_put(r->db, wo, (const char *)kv, RAW_KEY, (const char *)kv + RAW_KEY, RAW_VAL, &err);
    if (err)
        die("raw put: %s", err);
}

static void phase_raw_batch(const struct opts *o, const struct corpus *c)
{
    struct rawdb r;
    raw_open(o, &r);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    struct span sp;
    span_start(&sp);
    for (size_t i = 0; i < c->n; i += o->batch) {
        size_t k = c->n - i < o->batch ? c->n - i : o->batch;
        rocksdb_writebatch_clear(wb);
        for (size_t j = 0; j < k; j++) {
            const uint8_t *kv = c->raw_kv + (i + j) * (RAW_KEY + RAW_VAL);
            rocksdb_writebatch_put(wb, (const char *)kv, RAW_KEY, (const char *)kv + RAW_KEY,
                                   RAW_VAL);
        }
        char *err = NULL;
        rocksdb_write(r.db, r.wo, wb, &err);
        if (err)
            die("raw write: %s", err);
    }
    span_stop(&sp, P_RAW_BATCH, c->n, NULL);
    rocksdb_writebatch_destroy(wb);
    raw_finish(&r);
    phase_done(P_RAW_BATCH);
}

static void phase_raw_single(const struct opts *o, const struct corpus *c, enum phase p, bool sync,
                             size_t n)
{
    struct rawdb r;
    raw_open(o, &r);
    uint64_t *lat = xcalloc(n, sizeof *lat);
    struct span sp;
    span_start(&sp);
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        raw_put(&r, sync ? r.wo_sync : r.wo, c, i);
        lat[i] = now_ns() - t0;
    }
    span_stop(&sp, p, n, lat);
    free(lat);
    raw_finish(&r);
    phase_done(p);
}

static void phase_raw_mt(const struct opts *o, const struct corpus *c)
{
    struct rawdb r;
    raw_open(o, &r);
    run_writers(o, c, P_RAW_MT, NULL, r.db, r.wo_sync, false, o->mt_n);
    raw_finish(&r);
    phase_done(P_RAW_MT);
}

/* ---- report ---- */

static FILE *csv;

static void print_table(const struct opts *o)
{
    printf("\nbest of %u run%s per phase (docs/s of the best run, then the median of all runs):\n",
           o->repeat, o->repeat > 1 ? "s" : "");
    printf("%-15s %-42s %7s %7s %9s %9s %8s %8s %5s %6s %7s %5s %7s\n", "key", "phase", "docs",
           "secs", "docs/s", "median", "p50 us", "p99 us", "cpu%", "cpu us", "fsync/c", "oth%",
           "rss MiB");
    for (int p = 0; p < P_COUNT; p++) {
        const struct result *r = &results[p];
        if (!r->ran)
            continue;
        char what[64];
        snprintf(what, sizeof what, "%s", PHASES[p].what);
        char *t = strstr(what, "T ");
        if (t && (p == P_RAW_MT || p == P_MT_JSON_FULL || p == P_MT_CBOR_FULL)) {
            char rest[64];
            snprintf(rest, sizeof rest, "%s", t + 1);
            snprintf(t, sizeof what - (size_t)(t - what), "%u%s", o->threads, rest);
        }
        char p50[16] = "-", p99[16] = "-", fs[16] = "-";
        if (r->has_lat) {
            snprintf(p50, sizeof p50, "%.1f", r->p50_us);
            snprintf(p99, sizeof p99, "%.1f", r->p99_us);
        }
        if (r->fsyncs_per_commit >= 0)
            snprintf(fs, sizeof fs, "%.3f", r->fsyncs_per_commit);
        double med = median_rate(r);
        printf("%-15s %-42s %7zu %7.3f %9.0f %9.0f %8s %8s %5.0f %6.2f %7s %5.0f %7.1f\n",
               PHASES[p].key, what, r->n, r->secs, r->rate, med, p50, p99, r->cpu_pct,
               r->cpu_us_per_doc, fs, r->others_pct, (double)r->rss_kb / 1024.0);
        if (csv)
            fprintf(csv, "phase,%s,\"%s\",%zu,%.6f,%.1f,%.1f,%s,%s,%.1f,%.3f,%s,%.1f,%ld,,,\n",
                    PHASES[p].key, what, r->n, r->secs, r->rate, med, r->has_lat ? p50 : "",
                    r->has_lat ? p99 : "", r->cpu_pct, r->cpu_us_per_doc,
                    r->fsyncs_per_commit >= 0 ? fs : "", r->others_pct, r->rss_kb);
    }
}

static void print_ratio(enum phase a, enum phase b)
{
    if (!results[a].ran || !results[b].ran)
        return;
    double q = results[a].rate / results[b].rate;
    printf("  %-15s / %-15s %7.3f  (%.0f / %.0f docs/s)\n", PHASES[a].key, PHASES[b].key, q,
           results[a].rate, results[b].rate);
    if (csv)
        fprintf(csv, "ratio,%s/%s,,,,,,,,,,,,,%.4f,,\n", PHASES[a].key, PHASES[b].key, q);
}

static int misses;
static double load_start;

/* One target: value >= threshold. */
static void target(const char *what, bool have, double value, double threshold, const char *unit)
{
    if (!have) {
        printf("  SKIP  %s (phase not run)\n", what);
        return;
    }
    bool pass = value >= threshold;
    misses += !pass;
    printf("  %-4s  %-62s %10.3f %s (target >= %.3f)\n", pass ? "PASS" : "MISS", what, value, unit,
           threshold);
    if (csv)
        fprintf(csv, "target,\"%s\",,,,,,,,,,,,,%.4f,%.4f,%s\n", what, value, threshold,
                pass ? "PASS" : "MISS");
}

static void report(const struct opts *o, const struct corpus *c)
{
    print_table(o);

    printf("\nratios, barrel / raw RocksDB:\n");
    print_ratio(P_BULK_JSON, P_RAW_BATCH);
    print_ratio(P_BULK_CBOR, P_RAW_BATCH);
    print_ratio(P_BULK_JSON_FULL, P_RAW_BATCH);
    print_ratio(P_BULK_CBOR_FULL, P_RAW_BATCH);
    print_ratio(P_PUT_JSON, P_RAW_PUT);
    print_ratio(P_PUT_CBOR, P_RAW_PUT);
    print_ratio(P_PUT_JSON_FULL, P_RAW_FSYNC);
    print_ratio(P_PUT_CBOR_FULL, P_RAW_FSYNC);
    print_ratio(P_MT_JSON_FULL, P_RAW_FSYNC);
    print_ratio(P_MT_CBOR_FULL, P_RAW_FSYNC);
    print_ratio(P_MT_JSON_FULL, P_RAW_MT);
    print_ratio(P_MT_CBOR_FULL, P_RAW_MT);
    printf("ratios, CBOR prepared / JSON path (what JSON costs):\n");
    print_ratio(P_BULK_CBOR, P_BULK_JSON);
    print_ratio(P_PUT_CBOR, P_PUT_JSON);

    const struct result *r = results;
    printf("\ntargets:\n");
    target("bulk insert, JSON path, sync=none: docs/s", r[P_BULK_JSON].ran, r[P_BULK_JSON].rate,
           150000, "docs/s");
    target("bulk insert, JSON path, sync=none / raw batched puts",
           r[P_BULK_JSON].ran && r[P_RAW_BATCH].ran, r[P_BULK_JSON].rate / r[P_RAW_BATCH].rate,
           0.25, "x");
    target("single put, JSON path, sync=none: docs/s (> 50,000)", r[P_PUT_JSON].ran,
           r[P_PUT_JSON].rate, 50000, "docs/s");
    target("single put, JSON path, sync=full / raw fsync'd puts",
           r[P_PUT_JSON_FULL].ran && r[P_RAW_FSYNC].ran,
           r[P_PUT_JSON_FULL].rate / r[P_RAW_FSYNC].rate, 0.80, "x");
    char what[96];
    snprintf(what, sizeof what, "%u writers, JSON path, sync=full / raw fsync'd (well above)",
             o->threads);
    target(what, r[P_MT_JSON_FULL].ran && r[P_RAW_FSYNC].ran,
           r[P_MT_JSON_FULL].rate / r[P_RAW_FSYNC].rate, 2.0, "x");

    double load_end = loadavg1();
    printf("\nload average: %.2f at start, %.2f at end%s\n", load_start, load_end,
           load_start > 0.5 || load_end > 1.5 ? " -- the machine was busy; rates are understated"
                                              : "");
    printf(
        "cpu%% is process CPU (all threads, RocksDB's too) over wall time; cpu us is process CPU "
        "per doc\n");
    long hwm = vm_hwm_kb();
    printf("\npeak RSS: %.1f MiB (ru_maxrss), VmHWM %.1f MiB; of which the prepared corpus held "
           "in memory is about %.1f MiB\n",
           (double)peak_rss_kb() / 1024.0, (double)hwm / 1024.0,
           (double)corpus_bytes(c) / 1048576.0);
    if (csv)
        fprintf(csv, "rss,peak_rss_kb,,,,,,,,,,,,%ld,,,\n", peak_rss_kb());
    printf("%s\n", misses ? "RESULT: some targets MISSED" : "RESULT: all targets met");
}

int main(int argc, char **argv)
{
    bench_prog = "store_bench";
    struct opts o;
    parse_opts(argc, argv, &o);
    br_log_set_level(BR_LOG_WARN);
    if (o.csv) {
        csv = fopen(o.csv, "w");
        if (!csv)
            die("cannot write %s: %s", o.csv, strerror(errno));
        fprintf(csv, "kind,key,phase,docs,seconds,docs_per_s,median_docs_per_s,p50_us,p99_us,"
                     "cpu_pct,cpu_us_per_doc,fsyncs_per_commit,others_cpu_pct,peak_rss_kb,value,"
                     "threshold,verdict\n");
    }

    struct corpus c;
    uint64_t t0 = now_ns();
    corpus_make(&c, o.n, o.seed);
    printf("barrel store benchmark: %zu docs (JSON avg %.1f B, CBOR body avg %.1f B), batches "
           "of %zu, sync=full single puts over %zu docs, %u writers over %zu docs, seed %" PRIu64
           ", data under %s (corpus built in %.2f s)\n",
           c.n, (double)c.json_off[c.n] / (double)c.n, (double)c.cbor_off[c.n] / (double)c.n,
           o.batch, o.fsync_n, o.threads, o.mt_n, o.seed, o.dir, (double)(now_ns() - t0) / 1e9);
    printf("raw RocksDB: %d-byte keys, %d-byte values; same counts; barrel path index: %s\n",
           RAW_KEY, RAW_VAL, o.index);
    load_start = loadavg1();
    printf("load average at start: %.2f on %ld CPUs%s\n", load_start, sysconf(_SC_NPROCESSORS_ONLN),
           load_start > 0.5 ? " (NOT idle: figures will be low and noisy)" : "");
    fflush(stdout);

    for (unsigned rep = 0; rep < o.repeat; rep++) {
        if (o.repeat > 1)
            printf("run %u of %u\n", rep + 1, o.repeat);
        if (phase_wanted(&o, P_RAW_BATCH))
            phase_raw_batch(&o, &c);
        if (phase_wanted(&o, P_RAW_PUT))
            phase_raw_single(&o, &c, P_RAW_PUT, false, c.n);
        if (phase_wanted(&o, P_RAW_FSYNC))
            phase_raw_single(&o, &c, P_RAW_FSYNC, true, o.fsync_n);
        if (phase_wanted(&o, P_RAW_MT))
            phase_raw_mt(&o, &c);
        if (phase_wanted(&o, P_BULK_JSON))
            phase_bulk(&o, &c, P_BULK_JSON, true, BR_SYNC_NONE);
        if (phase_wanted(&o, P_BULK_JSON_FULL))
            phase_bulk(&o, &c, P_BULK_JSON_FULL, true, BR_SYNC_FULL);
        if (phase_wanted(&o, P_BULK_CBOR))
            phase_bulk(&o, &c, P_BULK_CBOR, false, BR_SYNC_NONE);
        if (phase_wanted(&o, P_BULK_CBOR_FULL))
            phase_bulk(&o, &c, P_BULK_CBOR_FULL, false, BR_SYNC_FULL);
        if (phase_wanted(&o, P_PUT_JSON))
            phase_single(&o, &c, P_PUT_JSON, true, BR_SYNC_NONE, c.n);
        if (phase_wanted(&o, P_PUT_CBOR))
            phase_single(&o, &c, P_PUT_CBOR, false, BR_SYNC_NONE, c.n);
        if (phase_wanted(&o, P_PUT_JSON_FULL))
            phase_single(&o, &c, P_PUT_JSON_FULL, true, BR_SYNC_FULL, o.fsync_n);
        if (phase_wanted(&o, P_PUT_CBOR_FULL))
            phase_single(&o, &c, P_PUT_CBOR_FULL, false, BR_SYNC_FULL, o.fsync_n);
        if (phase_wanted(&o, P_MT_JSON_FULL))
            phase_mt(&o, &c, P_MT_JSON_FULL, true);
        if (phase_wanted(&o, P_MT_CBOR_FULL))
            phase_mt(&o, &c, P_MT_CBOR_FULL, false);
        if (phase_wanted(&o, P_GET) || phase_wanted(&o, P_CHANGES))
            phase_reads(&o, &c);
        if (phase_wanted(&o, P_BULK_UPDATE) || phase_wanted(&o, P_CHANGES_UPD))
            phase_updates(&o, &c);
    }

    report(&o, &c);
    corpus_free(&c);
    if (csv && fclose(csv) != 0)
        die("cannot write %s", o.csv);
    return 0;
}
