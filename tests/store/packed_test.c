/* packed_test.c — packed change entries (store_int.h): a commit that changes two or more
 * documents writes one changes entry holding all of them. The feed must read exactly as it did
 * with one entry per document: the same changes in the same order with the same last_seq, for
 * every `since` (inside a packed entry too), limits that cut one, descending, doc_ids, path and
 * query filters, style=all_docs and streams; updates and deletions of packed documents move
 * them to the end once (the changes family's merge operator removes the old items, and
 * compactions drop emptied entries); fsck agrees; and all of it survives a reopen and a crash.
 *
 * The reference is a second database given the same edits one document at a time (so one
 * single entry each): revisions are content hashes, so both hold the same revisions in the
 * same HLC order, and positions (ranks in the full feed) stand in for HLCs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/query.h"
#include "barrel/store.h"

#include "store_int.h"
#include "testutil.h"

static char *dir;
static br_store *st;
static br_db *pk, *ref; /* bulk writes; the same edits one by one */

static const struct br_write_opts NOSYNC = {BR_SYNC_NONE, true};

static void open_all(void)
{
    struct br_store_opts o = {.path = dir};
    struct br_errbuf eb = {{0}};
    br_err e = br_store_open(&o, &st, &eb);
    cr_assert_eq(e, BR_OK, "open: %s %s", br_strerror(e), eb.msg);
    cr_assert_eq(br_store_db_open(st, "pk", &pk), BR_OK);
    cr_assert_eq(br_store_db_open(st, "ref", &ref), BR_OK);
}

static void close_all(void)
{
    br_db_close(pk);
    br_db_close(ref);
    br_store_close(st);
    pk = ref = NULL;
    st = NULL;
}

static void setup(void)
{
    br_log_set_level(BR_LOG_ERROR);
    dir = tu_tmpdir("packed");
    struct br_store_opts o = {.path = dir};
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_store_open(&o, &st, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(br_store_db_create(st, "pk", NULL), BR_OK);
    cr_assert_eq(br_store_db_create(st, "ref", NULL), BR_OK);
    br_store_close(st);
    open_all();
}

static void teardown(void)
{
    close_all();
    tu_rmtree(dir);
    free(dir);
}

TestSuite(packed, .init = setup, .fini = teardown);

/* ---- edits ---- */

struct edit {
    char id[16];
    char json[160];
};

/* Current revisions by id (both databases agree). */
static struct {
    char id[16];
    char rev[BR_REV_TEXT_MAX + 1];
} revs[256];
static size_t n_revs;

static char *rev_of(const char *id)
{
    for (size_t i = 0; i < n_revs; i++)
        if (strcmp(revs[i].id, id) == 0)
            return revs[i].rev;
    cr_assert_lt(n_revs, 256);
    snprintf(revs[n_revs].id, sizeof revs[n_revs].id, "%s", id);
    revs[n_revs].rev[0] = 0;
    return revs[n_revs++].rev;
}

/* An edit of id: a new body, or a deletion (body NULL), naming the current revision. */
static void edit(struct edit *e, const char *id, const char *body)
{
    snprintf(e->id, sizeof e->id, "%s", id);
    const char *r = rev_of(id);
    char revpart[64] = "";
    if (r[0])
        snprintf(revpart, sizeof revpart, "\"_rev\":\"%s\",", r);
    if (body)
        snprintf(e->json, sizeof e->json, "{%s%s", revpart, body + 1);
    else
        snprintf(e->json, sizeof e->json, "{%s\"_deleted\":true}", revpart);
}

/* Write the edits as one bulk commit to db, or one put each. */
static void write_edits(br_db *db, const struct edit *ed, size_t n, bool bulk, struct br_rev *out)
{
    struct br_json_doc *d = calloc(n, sizeof *d);
    struct br_put *puts = calloc(n, sizeof *puts);
    struct br_put_result *res = calloc(n, sizeof *res);
    cr_assert(d && puts && res);
    for (size_t i = 0; i < n; i++) {
        struct br_errbuf eb = {{0}};
        cr_assert_eq(
            br_json_doc_parse_text(ed[i].json, strlen(ed[i].json), 0, ed[i].id, &d[i], &eb), BR_OK,
            "%s: %s", ed[i].json, eb.msg);
        puts[i] = d[i].put;
    }
    if (bulk) {
        cr_assert_eq(br_db_bulk(db, puts, n, &NOSYNC, res), BR_OK);
    } else {
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(br_db_put(db, &puts[i], &NOSYNC, &res[i]), BR_OK, "%s", ed[i].id);
    }
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(res[i].err, BR_OK, "%s: %s", ed[i].id, res[i].reason);
        if (out)
            out[i] = res[i].rev;
        br_json_doc_fini(&d[i]);
    }
    free(d);
    free(puts);
    free(res);
}

/* Apply one step to both databases and remember the new revisions. */
static void step(const struct edit *ed, size_t n)
{
    struct br_rev a[64], b[64];
    cr_assert_leq(n, 64);
    write_edits(pk, ed, n, true, a);
    write_edits(ref, ed, n, false, b);
    for (size_t i = 0; i < n; i++) {
        cr_assert(br_rev_eq(&a[i], &b[i]), "%s: same edit, same revision", ed[i].id);
        char t[BR_REV_TEXT_MAX + 1];
        size_t l = br_rev_format(&a[i], t);
        t[l] = 0;
        snprintf(rev_of(ed[i].id), BR_REV_TEXT_MAX + 1, "%s", t);
    }
}

/* How many entries pk's part of the changes family holds, and their value bytes (bytes may be
 * NULL). */
static size_t count_entries(size_t *bytes)
{
    size_t n = 0, b = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->rdb, st->ro, st->cf[CF_CHANGES]);
    for (rocksdb_iter_seek(it, (const char *)pk->dbid, 4); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (memcmp(k, pk->dbid, 4) != 0)
            break;
        (void)rocksdb_iter_value(it, &vl);
        b += vl;
        n++;
    }
    rocksdb_iter_destroy(it);
    if (bytes)
        *bytes = b;
    return n;
}

static const char *TYPES[] = {"a", "b", "c"};

/* Bulk loads, then updates and deletions of packed documents, singly and in bulk, including
 * the last item of a packed entry (whose seq is the entry's key). */
static void scenario(void)
{
    n_revs = 0;
    struct edit ed[64];
    char body[128];
    for (int i = 0; i < 30; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%02d", i);
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"n\":%d}", TYPES[i % 3], i);
        edit(&ed[i], id, body);
    }
    step(ed, 30);
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "e%02d", i);
        snprintf(body, sizeof body, "{\"type\":\"%s\",\"n\":%d}", TYPES[i % 2], 100 + i);
        edit(&ed[i], id, body);
    }
    step(ed, 20);
    edit(&ed[0], "d05", "{\"type\":\"c\",\"n\":5,\"v\":2}");
    step(ed, 1);
    edit(&ed[0], "d29", "{\"type\":\"a\",\"n\":29,\"v\":2}"); /* the first entry's key */
    step(ed, 1);
    edit(&ed[0], "d10", "{\"type\":\"b\",\"n\":10,\"v\":2}");
    edit(&ed[1], "d11", "{\"type\":\"b\",\"n\":11,\"v\":2}");
    edit(&ed[2], "d12", NULL);
    edit(&ed[3], "e19", NULL); /* the second entry's key */
    edit(&ed[4], "f00", "{\"type\":\"a\"}");
    edit(&ed[5], "f01", "{\"type\":\"b\"}");
    edit(&ed[6], "f02", "{\"type\":\"c\"}");
    step(ed, 7);
    edit(&ed[0], "d20", NULL);
    step(ed, 1);
    edit(&ed[0], "g00", "{\"type\":\"a\",\"n\":7}");
    step(ed, 1);
    edit(&ed[0], "e03", "{\"type\":\"c\",\"n\":103,\"v\":2}");
    edit(&ed[1], "e04", "{\"type\":\"c\",\"n\":104,\"v\":2}");
    edit(&ed[2], "d05", "{\"type\":\"a\",\"n\":5,\"v\":3}");
    step(ed, 3);
    edit(&ed[0], "d12", "{\"type\":\"b\",\"n\":12,\"v\":4}"); /* recreated over its tombstone */
    edit(&ed[1], "f00", NULL);
    step(ed, 2);
}

/* ---- reading feeds ---- */

struct row {
    char id[16];
    char rev[BR_REV_TEXT_MAX + 1];
    bool deleted;
    size_t n_leaves;
    struct br_hlc seq;
};

struct feed {
    struct row rows[128];
    size_t n;
};

static int collect(void *arg, const struct br_change *c)
{
    struct feed *f = arg;
    cr_assert_lt(f->n, 128);
    struct row *r = &f->rows[f->n++];
    cr_assert_lt(c->id_len, sizeof r->id);
    memcpy(r->id, c->id, c->id_len);
    r->id[c->id_len] = 0;
    size_t l = br_rev_format(&c->rev, r->rev);
    r->rev[l] = 0;
    r->deleted = c->deleted;
    r->n_leaves = c->n_leaves;
    r->seq = c->seq;
    return 0;
}

/* The rank of seq in the full ascending feed of db (1-based), 0 for MIN, -1 if absent. */
static long rank(const struct feed *all, struct br_hlc seq)
{
    if (br_hlc_cmp(seq, BR_HLC_MIN) == 0)
        return 0;
    for (size_t i = 0; i < all->n; i++)
        if (br_hlc_cmp(all->rows[i].seq, seq) == 0)
            return (long)i + 1;
    return -1;
}

static struct br_hlc at_rank(const struct feed *all, size_t r)
{
    return r == 0 ? BR_HLC_MIN : all->rows[r - 1].seq;
}

static void read_feed(br_db *db, const struct br_changes_opts *o, struct feed *f,
                      struct br_hlc *last)
{
    memset(f, 0, sizeof *f);
    cr_assert_eq(br_db_changes(db, o, collect, f, last), BR_OK);
}

/* Read db's and ref's feeds with the same options, since translated by rank; compare. */
static void same_feed(const struct br_changes_opts *o_in, size_t since_rank, const char *what)
{
    static struct feed all_a, all_b, fa, fb;
    struct br_changes_opts all = {0};
    read_feed(pk, &all, &all_a, NULL);
    read_feed(ref, &all, &all_b, NULL);
    struct br_changes_opts oa = *o_in, ob = *o_in;
    oa.since = at_rank(&all_a, since_rank);
    ob.since = at_rank(&all_b, since_rank);
    struct br_hlc la, lb;
    read_feed(pk, &oa, &fa, &la);
    read_feed(ref, &ob, &fb, &lb);
    cr_assert_eq(fa.n, fb.n, "%s since #%zu: %zu changes, reference %zu", what, since_rank, fa.n,
                 fb.n);
    for (size_t i = 0; i < fa.n; i++) {
        cr_assert_str_eq(fa.rows[i].id, fb.rows[i].id, "%s since #%zu, change %zu", what,
                         since_rank, i);
        cr_assert_str_eq(fa.rows[i].rev, fb.rows[i].rev, "%s: %s", what, fa.rows[i].id);
        cr_assert_eq(fa.rows[i].deleted, fb.rows[i].deleted, "%s: %s", what, fa.rows[i].id);
        cr_assert_eq(fa.rows[i].n_leaves, fb.rows[i].n_leaves, "%s: %s", what, fa.rows[i].id);
        cr_assert_eq(rank(&all_a, fa.rows[i].seq), rank(&all_b, fb.rows[i].seq));
    }
    long ra = rank(&all_a, la), rb = rank(&all_b, lb);
    cr_assert_neq(ra, -1, "%s since #%zu: last_seq names no change", what, since_rank);
    cr_assert_eq(ra, rb, "%s since #%zu: last_seq at #%ld, reference #%ld", what, since_rank, ra,
                 rb);
}

static void every_since(const struct br_changes_opts *o, const char *what)
{
    struct feed all;
    struct br_changes_opts a = {0};
    read_feed(ref, &a, &all, NULL);
    for (size_t r = 0; r <= all.n; r++)
        same_feed(o, r, what);
}

static br_query *compile(const char *spec)
{
    json_t *j = json_loads(spec, 0, NULL);
    cr_assert(j);
    br_query *q;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_query_compile(j, &q, &eb), BR_OK, "%s", eb.msg);
    json_decref(j);
    return q;
}

static void check_db(br_db *db)
{
    struct br_db_check chk;
    cr_assert_eq(br_db_check(db, &chk), BR_OK);
    cr_expect_eq(chk.problems, 0, "%s: %s", br_db_name(db), chk.first);
    cr_expect_eq(chk.changes, chk.docs);
}

static void same_feeds_everywhere(void)
{
    static const size_t limits[] = {0, 1, 2, 3, 7, 29, 31};
    for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
        struct br_changes_opts o = {.limit = limits[l]};
        every_since(&o, "ascending");
        o.descending = true;
        every_since(&o, "descending");
    }
    struct br_changes_opts o = {.all_docs = true};
    every_since(&o, "all_docs");
    const char *ids[] = {"d05", "d12", "e03", "d29", "e19", "f00", "nope"};
    o = (struct br_changes_opts){.doc_ids = ids, .n_doc_ids = 7};
    every_since(&o, "doc_ids");
    o.descending = true;
    every_since(&o, "doc_ids descending");
    o.limit = 2;
    every_since(&o, "doc_ids descending limit 2");
    const char *paths[] = {"type/b"};
    o = (struct br_changes_opts){.paths = paths, .n_paths = 1};
    every_since(&o, "paths");
    o.limit = 3;
    every_since(&o, "paths limit 3");
    o.descending = true;
    every_since(&o, "paths descending limit 3");
    br_query *q = compile("{\"where\":[{\"path\":\"type\",\"op\":\"==\",\"value\":\"c\"}]}");
    o = (struct br_changes_opts){.query = q};
    every_since(&o, "query");
    o.descending = true;
    every_since(&o, "query descending");
    br_query_free(q);
}

/* ---- tests ---- */

Test(packed, bulk_commit_writes_one_entry_and_the_feed_reads_as_single_entries)
{
    scenario();
    /* far fewer entries than documents: the bulk commits are packed */
    struct br_db_check a, b;
    cr_assert_eq(br_db_check(pk, &a), BR_OK);
    cr_assert_eq(br_db_check(ref, &b), BR_OK);
    cr_expect_eq(a.problems, 0, "%s", a.first);
    cr_expect_eq(b.problems, 0, "%s", b.first);
    cr_expect_eq(a.docs, b.docs);
    cr_expect_eq(a.changes, a.docs, "each document's latest change counted once");
    size_t entries = count_entries(NULL);
    /* packed: 30, 20, 7, 3, 2 docs; singles: d29, d20, g00 (d05's went with its update) */
    cr_expect_eq(entries, 5 + 3, "got %zu", entries);
    same_feeds_everywhere();
}

Test(packed, updates_and_deletions_move_packed_documents_to_the_end_once)
{
    scenario();
    struct feed f;
    struct br_changes_opts o = {0};
    struct br_hlc last;
    read_feed(pk, &o, &f, &last);
    cr_assert_eq(f.n, 30 + 20 + 3 + 1);
    for (size_t i = 0; i < f.n; i++)
        for (size_t j = i + 1; j < f.n; j++)
            cr_assert_str_neq(f.rows[i].id, f.rows[j].id, "each document once");
    const char *tail[] = {"e03", "e04", "d05", "d12", "f00"};
    for (size_t i = 0; i < 5; i++)
        cr_expect_str_eq(f.rows[f.n - 5 + i].id, tail[i]);
    cr_expect(f.rows[f.n - 1].deleted);
    cr_expect(!f.rows[f.n - 2].deleted, "d12 recreated");
    cr_expect_eq(br_hlc_cmp(last, f.rows[f.n - 1].seq), 0);
    struct br_db_info info;
    cr_assert_eq(br_db_info(pk, &info), BR_OK);
    struct br_db_info rinfo;
    cr_assert_eq(br_db_info(ref, &rinfo), BR_OK);
    cr_expect_eq(info.doc_count, rinfo.doc_count);
    cr_expect_eq(info.doc_del_count, rinfo.doc_del_count);
    cr_expect_eq(info.update_seq, rinfo.update_seq);
    struct br_db_digest dg;
    cr_assert_eq(br_db_digest(pk, &dg), BR_OK);
    cr_expect_eq(br_hlc_cmp(dg.last, last), 0, "update_seq is the newest change");
}

Test(packed, a_stream_delivers_the_feed_in_small_batches)
{
    scenario();
    struct feed all, got;
    struct br_changes_opts o = {0};
    read_feed(pk, &o, &all, NULL);
    memset(&got, 0, sizeof got);
    br_changes_stream *cs;
    cr_assert_eq(br_changes_stream_open(pk, &o, &cs), BR_OK);
    for (;;) {
        struct br_hlc bl;
        br_err e = br_changes_stream_next(cs, 7, 0, collect, &got, &bl);
        if (e == BR_ETIMEDOUT)
            break;
        cr_assert_eq(e, BR_OK);
        br_changes_stream_ack(cs, bl);
    }
    br_changes_stream_close(cs);
    cr_assert_eq(got.n, all.n);
    for (size_t i = 0; i < all.n; i++)
        cr_expect_str_eq(got.rows[i].id, all.rows[i].id);
}

Test(packed, the_feed_and_fsck_survive_a_reopen)
{
    scenario();
    close_all();
    open_all();
    check_db(pk);
    same_feeds_everywhere();
    /* and writes after the reopen still supersede packed items */
    struct edit ed[2];
    edit(&ed[0], "d00", "{\"type\":\"z\"}");
    edit(&ed[1], "e00", "{\"type\":\"z\"}");
    step(ed, 2);
    check_db(pk);
    struct br_changes_opts o = {.limit = 0};
    every_since(&o, "after reopen");
}

Test(packed, fsck_reports_a_lost_packed_entry)
{
    scenario();
    /* drop the first packed entry (d00..d29 less the moved ones) */
    struct feed f;
    struct br_changes_opts o = {0};
    read_feed(pk, &o, &f, NULL);
    uint8_t key[4 + BR_HLC_BYTES];
    memcpy(key, pk->dbid, 4);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->rdb, st->ro, st->cf[CF_CHANGES]);
    rocksdb_iter_seek(it, (const char *)pk->dbid, 4);
    cr_assert(rocksdb_iter_valid(it));
    size_t kl;
    const char *k = rocksdb_iter_key(it, &kl);
    cr_assert_eq(kl, sizeof key);
    memcpy(key, k, kl);
    rocksdb_iter_destroy(it);
    char *err = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_delete_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)key, sizeof key, &err);
    rocksdb_writeoptions_destroy(wo);
    cr_assert_null(err);
    struct br_db_check chk;
    cr_assert_eq(br_db_check(pk, &chk), BR_OK);
    cr_expect_gt(chk.problems, 0, "documents without their change");
}

/* A child bulk-loads and updates, then dies without closing anything; the parent reopens. */
Test(packed, a_crash_keeps_packed_entries_consistent)
{
    close_all();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        open_all();
        for (int round = 0; round < 5; round++) {
            struct edit ed[40];
            char body[64];
            for (int i = 0; i < 40; i++) {
                char id[16];
                snprintf(id, sizeof id, "c%02d", (i * 7 + round * 3) % 50);
                snprintf(body, sizeof body, "{\"type\":\"%s\",\"r\":%d}", TYPES[i % 3], round);
                edit(&ed[i], id, body);
            }
            write_edits(pk, ed, 40, true, NULL);
            /* revisions: reread (the edits used the rev cache; refresh it from the results) */
            n_revs = 0;
            struct feed f;
            struct br_changes_opts o = {0};
            read_feed(pk, &o, &f, NULL);
            for (size_t i = 0; i < f.n; i++)
                snprintf(rev_of(f.rows[i].id), BR_REV_TEXT_MAX + 1, "%s", f.rows[i].rev);
        }
        _exit(0); /* no close: the WAL is all there is */
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
    open_all();
    check_db(pk);
    struct feed f;
    struct br_changes_opts o = {0};
    read_feed(pk, &o, &f, NULL);
    bool seen[50] = {false};
    size_t distinct = 0;
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < 40; i++) {
            int k = (i * 7 + round * 3) % 50;
            distinct += !seen[k];
            seen[k] = true;
        }
    cr_expect_eq(f.n, distinct);
    for (size_t i = 1; i < f.n; i++)
        cr_assert_gt(br_hlc_cmp(f.rows[i].seq, f.rows[i - 1].seq), 0);
}

struct seqs {
    struct br_hlc *s;
    size_t n;
};

static int collect_seq(void *arg, const struct br_change *c)
{
    struct seqs *q = arg;
    q->s[q->n++] = c->seq;
    return 0;
}

/* A batch bigger than an entry's item limit becomes several entries, each keyed by its last
 * item: since at and around their borders still reads the rest exactly. */
Test(packed, a_huge_batch_is_cut_into_several_packed_entries)
{
    enum { N = 2100 };
    struct edit *ed = calloc(N, sizeof *ed);
    cr_assert(ed);
    n_revs = 0;
    for (int i = 0; i < N; i++) {
        snprintf(ed[i].id, sizeof ed[i].id, "h%05d", i);
        snprintf(ed[i].json, sizeof ed[i].json, "{\"n\":%d}", i);
    }
    write_edits(pk, ed, N, true, NULL);
    free(ed);
    check_db(pk);
    struct seqs all = {calloc(N + 1, sizeof(struct br_hlc)), 0};
    struct seqs got = {calloc(N + 1, sizeof(struct br_hlc)), 0};
    cr_assert(all.s && got.s);
    struct br_changes_opts o = {0};
    cr_assert_eq(br_db_changes(pk, &o, collect_seq, &all, NULL), BR_OK);
    cr_assert_eq(all.n, N);
    static const size_t at[] = {0, 1, 1023, 1024, 1025, 2047, 2048, 2049, N - 1, N};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        got.n = 0;
        o.since = at[k] ? all.s[at[k] - 1] : BR_HLC_MIN;
        struct br_hlc last;
        cr_assert_eq(br_db_changes(pk, &o, collect_seq, &got, &last), BR_OK);
        cr_assert_eq(got.n, N - at[k], "since #%zu", at[k]);
        for (size_t i = 0; i < got.n; i++)
            cr_assert_eq(br_hlc_cmp(got.s[i], all.s[at[k] + i]), 0);
        cr_assert_eq(br_hlc_cmp(last, all.s[N - 1]), 0, "last_seq: the newest (or since)");
    }
    /* descending, across entries */
    got.n = 0;
    struct br_changes_opts d = {.descending = true, .since = all.s[99]};
    cr_assert_eq(br_db_changes(pk, &d, collect_seq, &got, NULL), BR_OK);
    cr_assert_eq(got.n, N - 100);
    for (size_t i = 0; i < got.n; i++)
        cr_assert_eq(br_hlc_cmp(got.s[i], all.s[N - 1 - i]), 0);
    cr_expect_eq(count_entries(NULL), 3, "2100 items: 1024 + 1024 + 52");
    free(all.s);
    free(got.s);
}

/* ---- the changes family's merge operator and compaction filter ---- */

static rocksdb_writeoptions_t *raw_wo(void)
{
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    cr_assert(wo);
    return wo;
}

/* The changes key of pk at HLC h. */
static void changes_key(uint8_t key[4 + BR_HLC_BYTES], struct br_hlc h)
{
    memcpy(key, pk->dbid, 4);
    br_hlc_encode(h, key + 4);
}

/* The stored value at a changes key of pk (NULL: none); free with rocksdb_free. */
static char *changes_get(const uint8_t key[4 + BR_HLC_BYTES], size_t *vl)
{
    char *err = NULL;
    char *v = rocksdb_get_cf(st->rdb, st->ro, st->cf[CF_CHANGES], (const char *)key,
                             4 + BR_HLC_BYTES, vl, &err);
    cr_assert_null(err, "%s", err);
    return v;
}

/* pk's record of id, decoded into r (which owns a copy of the bytes in *raw). */
static void record_of(const char *id, struct docrec *r, char **raw)
{
    uint8_t key[4 + 16];
    size_t il = strlen(id);
    memcpy(key, pk->dbid, 4);
    memcpy(key + 4, id, il);
    char *err = NULL;
    size_t vl = 0;
    *raw = rocksdb_get_cf(st->rdb, st->ro, st->cf[CF_DOCS], (const char *)key, 4 + il, &vl, &err);
    cr_assert_null(err);
    cr_assert_not_null(*raw, "%s has a record", id);
    docrec_init(r);
    cr_assert_eq(docrec_decode((const uint8_t *)*raw, vl, r), BR_OK);
}

static void compact_changes(void)
{
    rocksdb_compact_range_cf(st->rdb, st->cf[CF_CHANGES], NULL, 0, NULL, 0);
}

/* The compaction that merges an entry's last item away writes the empty entry; the filter sees
 * it in a later one (RocksDB does not filter a merge's result). How many of those one
 * CompactRange runs depends on where the files lie, so two. */
static void drop_emptied(void)
{
    compact_changes();
    compact_changes();
}

Test(packed, superseded_items_are_merged_away_and_compactions_drop_emptied_entries)
{
    n_revs = 0;
    struct edit ed[10];
    for (int i = 0; i < 10; i++) {
        char id[16], body[32];
        snprintf(id, sizeof id, "m%02d", i);
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        edit(&ed[i], id, body);
    }
    step(ed, 10);
    /* every record names the one entry, keyed by the last item's HLC */
    struct docrec r0, r9;
    char *raw0, *raw9;
    record_of("m00", &r0, &raw0);
    record_of("m09", &r9, &raw9);
    cr_assert(r0.packed && r9.packed);
    cr_assert_eq(br_hlc_cmp(r0.pack_key, r9.seq), 0);
    cr_assert_eq(br_hlc_cmp(r9.pack_key, r9.seq), 0);
    uint8_t key[4 + BR_HLC_BYTES];
    changes_key(key, r0.pack_key);
    docrec_fini(&r0);
    docrec_fini(&r9);
    rocksdb_free(raw0);
    rocksdb_free(raw9);
    cr_assert_eq(count_entries(NULL), 1);

    /* three updates in bulk (the last item among them), one deletion on its own: the entry
     * keeps the other six, read through the merge operands */
    edit(&ed[0], "m00", "{\"n\":100}");
    edit(&ed[1], "m04", "{\"n\":104}");
    edit(&ed[2], "m09", "{\"n\":109}");
    step(ed, 3);
    edit(&ed[0], "m05", NULL);
    step(ed, 1);
    struct change_items ci;
    memset(&ci, 0, sizeof ci);
    size_t vl;
    char *v = changes_get(key, &vl);
    cr_assert_not_null(v);
    cr_assert_eq(change_items_decode(br_hlc_decode(key + 4), v, vl, &ci), BR_OK);
    cr_assert(ci.packed);
    cr_assert_eq(ci.n, 6);
    static const char *left[] = {"m01", "m02", "m03", "m06", "m07", "m08"};
    for (size_t i = 0; i < 6; i++)
        cr_expect(ci.c[i].id_len == 3 && memcmp(ci.c[i].id, left[i], 3) == 0, "item %zu", i);
    rocksdb_free(v);
    check_db(pk);
    same_feeds_everywhere();

    /* compacted, the entry holds just those six: the same bytes a fresh write of them has */
    compact_changes();
    v = changes_get(key, &vl);
    cr_assert_not_null(v);
    cr_assert_eq(change_items_decode(br_hlc_decode(key + 4), v, vl, &ci), BR_OK);
    cr_assert_eq(ci.n, 6);
    rocksdb_free(v);

    /* the other six go: the entry is left with no items, and a compaction drops it */
    static const char *rest[] = {"m01", "m02", "m03", "m06", "m07", "m08"};
    for (size_t i = 0; i < 6; i++)
        edit(&ed[i], rest[i], "{\"n\":-1}");
    step(ed, 6);
    v = changes_get(key, &vl);
    cr_assert_not_null(v, "emptied, not yet compacted");
    cr_assert_eq(change_items_decode(br_hlc_decode(key + 4), v, vl, &ci), BR_OK);
    cr_assert_eq(ci.n, 0);
    rocksdb_free(v);
    check_db(pk);
    same_feeds_everywhere();
    size_t before = count_entries(NULL);
    drop_emptied();
    cr_assert_null(changes_get(key, &vl), "the emptied entry is gone");
    cr_assert_eq(count_entries(NULL), before - 1);
    check_db(pk);
    same_feeds_everywhere();
    change_items_fini(&ci);
}

/* Bulk rewrites of the same documents, over and over (a gateway updating its sensors' docs):
 * the changes family holds what the feed shows, no more, once compacted. */
Test(packed, repeated_bulk_rewrites_leave_no_superseded_items_behind)
{
    n_revs = 0;
    struct edit ed[40];
    for (int round = 0; round < 25; round++) {
        for (int i = 0; i < 40; i++) {
            char id[16], body[48];
            snprintf(id, sizeof id, "s%02d", i);
            snprintf(body, sizeof body, "{\"round\":%d,\"v\":%d}", round, i * round);
            edit(&ed[i], id, body);
        }
        step(ed, 40);
    }
    drop_emptied();
    size_t bytes;
    cr_expect_eq(count_entries(&bytes), 1, "only the last round's entry holds items");
    cr_expect_lt(bytes, 40 * 64, "40 items of at most 64 bytes: %zu bytes", bytes);
    check_db(pk);
    same_feeds_everywhere();
}

/* The operator works on stored bytes: whatever they hold, reads and compactions go on. */
Test(packed, the_merge_operator_keeps_malformed_values_and_never_fails)
{
    rocksdb_writeoptions_t *wo = raw_wo();
    char *err = NULL;
    uint8_t bad[4 + BR_HLC_BYTES], lone[4 + BR_HLC_BYTES], single[4 + BR_HLC_BYTES];
    changes_key(bad, (struct br_hlc){1000, 0});
    changes_key(lone, (struct br_hlc){2000, 0});
    changes_key(single, (struct br_hlc){3000, 0});
    uint8_t drop[CHANGE_DROP_LEN];
    br_hlc_encode((struct br_hlc){1000, 0}, drop);
    /* a packed entry whose items are cut short, with a whole operand and a ragged one */
    static const char trunc[] = "\x80\x05\x00\x00\x30zz";
    rocksdb_put_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)bad, sizeof bad, trunc,
                   sizeof trunc - 1, &err);
    cr_assert_null(err);
    rocksdb_merge_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)bad, sizeof bad,
                     (const char *)drop, sizeof drop, &err);
    cr_assert_null(err);
    rocksdb_merge_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)bad, sizeof bad, "abcde", 5,
                     &err);
    cr_assert_null(err);
    /* an operand with no entry under it */
    rocksdb_merge_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)lone, sizeof lone,
                     (const char *)drop, sizeof drop, &err);
    cr_assert_null(err);
    /* a single entry is not the operator's to change */
    static const char one[] = "\x00\x04"
                              "1-ab"
                              "x";
    rocksdb_put_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)single, sizeof single, one,
                   sizeof one - 1, &err);
    cr_assert_null(err);
    rocksdb_merge_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)single, sizeof single,
                     (const char *)drop, sizeof drop, &err);
    cr_assert_null(err);

    for (int pass = 0; pass < 2; pass++) { /* read through the operands, then compacted */
        size_t vl;
        char *v = changes_get(bad, &vl);
        cr_assert_not_null(v, "pass %d", pass);
        cr_expect(vl == sizeof trunc - 1 && memcmp(v, trunc, vl) == 0, "kept as it was");
        rocksdb_free(v);
        v = changes_get(single, &vl);
        cr_assert_not_null(v);
        cr_expect(vl == sizeof one - 1 && memcmp(v, one, vl) == 0);
        rocksdb_free(v);
        v = changes_get(lone, &vl);
        cr_assert(v || pass == 1, "read through its operand: an empty entry");
        if (v)
            cr_expect(vl == 2 && (uint8_t)v[0] == CHANGE_PACKED && v[1] == 0, "an empty entry");
        rocksdb_free(v);
        /* The compaction that merges writes the empty entry; the filter sees it in the next
         * one (RocksDB's periodic compactions reach every file within 30 days). */
        compact_changes();
    }
    drop_emptied();
    size_t vl;
    cr_expect_null(changes_get(lone, &vl), "the empty entry was dropped");
    /* the feed reports the corrupt entry; the database still takes writes */
    struct feed f;
    memset(&f, 0, sizeof f);
    struct br_changes_opts o = {0};
    cr_expect_eq(br_db_changes(pk, &o, collect, &f, NULL), BR_ESTORE);
    rocksdb_delete_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)bad, sizeof bad, &err);
    cr_assert_null(err);
    rocksdb_delete_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)single, sizeof single, &err);
    cr_assert_null(err);
    rocksdb_writeoptions_destroy(wo);
    n_revs = 0;
    struct edit ed[2];
    edit(&ed[0], "w0", "{}");
    edit(&ed[1], "w1", "{}");
    step(ed, 2);
    check_db(pk);
    same_feeds_everywhere();
}

/* A ragged operand (never written by barrel) stacked with a real one: combining them must not
 * shift the real HLC, or the superseded item would stay in the feed. */
Test(packed, a_ragged_operand_does_not_hide_a_real_one)
{
    n_revs = 0;
    struct edit ed[3];
    edit(&ed[0], "r0", "{}");
    edit(&ed[1], "r1", "{}");
    edit(&ed[2], "r2", "{}");
    step(ed, 3);
    compact_changes(); /* the entry in a file: the operands below meet it in a compaction */
    struct docrec r;
    char *raw;
    record_of("r1", &r, &raw);
    uint8_t key[4 + BR_HLC_BYTES];
    changes_key(key, r.pack_key);
    docrec_fini(&r);
    rocksdb_free(raw);
    rocksdb_writeoptions_t *wo = raw_wo();
    char *err = NULL;
    rocksdb_merge_cf(st->rdb, wo, st->cf[CF_CHANGES], (const char *)key, sizeof key, "abcde", 5,
                     &err);
    cr_assert_null(err);
    rocksdb_writeoptions_destroy(wo);
    edit(&ed[0], "r1", "{\"v\":2}");
    step(ed, 1);
    compact_changes(); /* the flush combines the two operands, the compaction applies them */
    size_t vl;
    char *v = changes_get(key, &vl);
    cr_assert_not_null(v);
    struct change_items ci;
    memset(&ci, 0, sizeof ci);
    cr_assert_eq(change_items_decode(br_hlc_decode(key + 4), v, vl, &ci), BR_OK);
    cr_expect_eq(ci.n, 2, "r1's old item went: %zu items", ci.n);
    rocksdb_free(v);
    change_items_fini(&ci);
    check_db(pk);
    same_feeds_everywhere();
}

Test(packed, a_packed_record_header_is_checked)
{
    /* version 2: seq, then the entry's key, never before the seq */
    uint8_t rec[1 + 2 * BR_HLC_BYTES];
    rec[0] = DOCREC_VERSION_PACKED;
    br_hlc_encode((struct br_hlc){500, 3}, rec + 1);
    br_hlc_encode((struct br_hlc){500, 2}, rec + 1 + BR_HLC_BYTES);
    struct docrec r;
    docrec_init(&r);
    cr_expect_eq(docrec_decode(rec, sizeof rec, &r), BR_ESTORE, "key before the seq");
    docrec_fini(&r);
    docrec_init(&r);
    cr_expect_eq(docrec_decode(rec, 1 + BR_HLC_BYTES + 5, &r), BR_ESTORE, "cut short");
    docrec_fini(&r);
}
