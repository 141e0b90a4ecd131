/* crash_test.c — crash safety under kill -9: a writer process writes continuously through the
 * public API (new documents, updates, deletes, re-creates, bulk batches of 1..50 documents,
 * replicated revisions with histories that make conflicts, conflict resolutions, local
 * checkpoint documents and small inline attachments), reporting every write to this process over
 * a pipe as soon as the store acknowledged it; it is killed with SIGKILL at a random moment, the
 * store is reopened here, and every acknowledged write must be there: each acknowledged revision
 * is in its document's tree (revsdiff), each local document is at least at its acknowledged
 * revision, br_db_check finds no problem, the changes feed lists each document exactly once at
 * its winner, the counts agree with br_db_info, every attachment a leaf names is readable and
 * every blob's reference count equals the leaves that name it. Rounds alternate sync=full and
 * sync=none (the OS page cache survives kill -9, so sync=none must not lose acknowledged writes
 * either) and share one data directory, so state accumulates (revs_limit is lifted so that no
 * acknowledged revision is stemmed away). A second test kills the writer while it streams
 * multi-MiB attachments with br_att_writer (and abandons one finished blob in four): after the
 * reopen no partial blob, pending upload or unreferenced blob remains, and each blob document's
 * attachment reads back byte for byte. Both tests fail if the writer made too little progress
 * (or too few kills landed mid-stream) to mean anything.
 *
 * The writer is a fresh process: the test forks, and the child execs this binary with
 * BARREL_CRASH_WRITER set, which a constructor picks up before Criterion's main runs (RocksDB is
 * not fork-safe once its thread pools exist, and this process opens the store between rounds).
 * The child asks for SIGKILL when its parent dies, and the fixture kills and reaps it on every
 * path. The seed is printed; BARREL_CRASH_SEED=<seed> replays the same choices (the kill moments
 * are timing-dependent), BARREL_CRASH_ROUNDS raises the number of rounds and
 * BARREL_CRASH_VERBOSE=1 prints where each round's time goes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>
#include <poll.h>
#include <rocksdb/c.h>

#include "barrel/alloc.h"
#include "barrel/att.h"
#include "barrel/cbor.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/store.h"

#include "store_int.h"
#include "testutil.h"

extern char **environ;

#define NLOCAL 8    /* local documents: ckpt-0..ckpt-7 */
#define NBLOBDOCS 4 /* documents holding streamed attachments: blob-0..blob-3 */
#define MAX_BULK 50
#define MAX_HIST 8
#define DEFAULT_ROUNDS 50 /* the floor: never fewer SIGKILL rounds of the writing test */
#define MIN_STREAM_ROUNDS 12

/* Under AddressSanitizer everything runs several times slower (RocksDB's recovery at each reopen
 * too: ASan intercepts its memcmp and allocations). There the writer draws from fewer ids (the
 * verification reads every document each round) and is killed sooner (less to recover), and the
 * streaming test writes smaller blobs (still many chunks: 1..3 MiB) and kills within the first
 * two. The number of rounds stays. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifdef UNDER_ASAN
#define NIDS 600      /* document ids the writer draws from: d0000..d0599 */
#define KILL_SPAN 231 /* a normal kill lands 20..250 ms after the writer's READY */
#define BLOB_MIN (1u << 20)
#define BLOB_SPAN (2u << 20)
#define KILL_BLOBS 2
#else
#define NIDS 1200     /* d0000..d1199 */
#define KILL_SPAN 381 /* 20..400 ms */
#define BLOB_MIN (2u << 20)
#define BLOB_SPAN (4u << 20)
#define KILL_BLOBS 3
#endif

/* ---- randomness (splitmix64: a seed replays the same choices) ---- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return mix64(*s);
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
    return rnd(s) % n;
}

/* The bytes of a streamed blob: byte i of the blob with `seed` (the reader regenerates them). */
static void blob_fill(uint64_t seed, uint64_t off, uint8_t *p, size_t n)
{
    uint64_t w = mix64(seed ^ (off >> 3));
    for (size_t i = 0; i < n; i++) {
        uint64_t at = off + i;
        if ((at & 7) == 0)
            w = mix64(seed ^ (at >> 3));
        p[i] = (uint8_t)(w >> (8 * (at & 7)));
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the acknowledgement record (one write() of at most PIPE_BUF bytes: atomic) ---- */

enum ack_kind {
    ACK_READY = 1, /* the writer opened the store */
    ACK_DOC,       /* a document revision was acknowledged */
    ACK_LOCAL,     /* a local document reached revision 0-n */
    ACK_STREAM,    /* n of m bytes of blob #blob were handed to br_att_writer_write */
    ACK_ATT,       /* a streamed blob (seed n, m bytes) was attached as revision rev of id */
    ACK_FAIL,      /* the writer met an unexpected error: id says where, rev says what */
};

struct ack {
    uint8_t kind;
    uint8_t deleted;
    uint16_t pad;
    uint32_t blob;
    uint64_t n;
    uint64_t m;
    char id[40];
    char rev[BR_REV_TEXT_MAX];
};
_Static_assert(sizeof(struct ack) <= PIPE_BUF, "an ack is written atomically");

/* ===================================================================================== */
/* The writer (runs in the exec'd child; never returns)                                   */
/* ===================================================================================== */

struct writer {
    br_store *st;
    br_db *db;
    int fd;
    uint64_t rng;
    uint64_t counter;
    struct br_write_opts wo;  /* interactive */
    struct br_write_opts rwo; /* replicated */
};

static void ack_send(int fd, const struct ack *a)
{
    const char *p = (const char *)a;
    size_t left = sizeof *a;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            _exit(3); /* the parent is gone */
        }
        p += n;
        left -= (size_t)n;
    }
}

static _Noreturn void wfail(struct writer *w, const char *what, br_err e, const char *detail)
{
    struct ack a;
    memset(&a, 0, sizeof a);
    a.kind = ACK_FAIL;
    snprintf(a.id, sizeof a.id, "%s", what);
    snprintf(a.rev, sizeof a.rev, "%s %s", br_strerror(e), detail ? detail : "");
    ack_send(w->fd, &a);
    _exit(2);
}

static void ack_rev(struct writer *w, enum ack_kind kind, const char *id, const struct br_rev *rev,
                    bool deleted, uint64_t n, uint64_t m)
{
    struct ack a;
    memset(&a, 0, sizeof a);
    a.kind = (uint8_t)kind;
    a.deleted = deleted;
    a.n = n;
    a.m = m;
    snprintf(a.id, sizeof a.id, "%s", id);
    if (rev)
        br_rev_format(rev, a.rev);
    ack_send(w->fd, &a);
}

static void rand_rev(struct writer *w, uint64_t gen, struct br_rev *r)
{
    static const char hex[] = "0123456789abcdef";
    memset(r, 0, sizeof *r);
    r->gen = gen;
    r->hash_len = 32;
    for (int i = 0; i < 32; i++)
        r->hash[i] = hex[rnd_below(&w->rng, 16)];
}

/* A document body {"n": counter, "p": padding}: canonical CBOR. */
static void body_make(struct writer *w, br_buf *b)
{
    char pad[320];
    size_t plen = (size_t)rnd_below(&w->rng, 300);
    for (size_t i = 0; i < plen; i++)
        pad[i] = (char)('a' + rnd_below(&w->rng, 26));
    br_buf_init(b, 0);
    br_err e = br_cbor_put_map(b, 2);
    if (!e)
        e = br_cbor_put_cstr(b, "n");
    if (!e)
        e = br_cbor_put_uint(b, ++w->counter);
    if (!e)
        e = br_cbor_put_cstr(b, "p");
    if (!e)
        e = br_cbor_put_str(b, pad, plen);
    if (e)
        wfail(w, "body", e, NULL);
}

/* The winner of id with its history and conflicts, or NULL if there is no such document. */
static struct br_doc *lookup(struct writer *w, const char *id)
{
    struct br_get_opts o = {.revs = true, .conflicts = true, .include_deleted = true};
    struct br_doc *d = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = br_db_get(w->db, id, strlen(id), &o, &d, &eb);
    if (e == BR_ENOTFOUND)
        return NULL;
    if (e)
        wfail(w, "get", e, eb.msg);
    return d;
}

/* A replicated history for id: a new document (1..3 revisions), or a sibling of the winner
 * (sometimes with a child of its own) grafted on the winner's ancestors: a conflict. */
static size_t history_make(struct writer *w, const struct br_doc *d, struct br_rev h[MAX_HIST])
{
    size_t n = 0;
    if (!d) {
        size_t k = 1 + (size_t)rnd_below(&w->rng, 3);
        for (size_t i = 0; i < k; i++)
            rand_rev(w, k - i, &h[n++]);
        return n;
    }
    if (rnd_below(&w->rng, 3) == 0)
        rand_rev(w, d->rev.gen + 1, &h[n++]);
    rand_rev(w, d->rev.gen, &h[n++]);
    for (size_t i = 1; i < d->n_revisions && n < MAX_HIST; i++)
        h[n++] = d->revisions[i];
    return n;
}

/* Inline attachment data (random bytes) named n<k>.bin. */
struct inline_att {
    char name[16];
    uint8_t data[2048];
};

static void att_make(struct writer *w, struct inline_att *ia, struct br_att_in *in)
{
    size_t len = (size_t)rnd_below(&w->rng, sizeof ia->data);
    snprintf(ia->name, sizeof ia->name, "n%u.bin", (unsigned)rnd_below(&w->rng, 3));
    for (size_t i = 0; i < len; i++)
        ia->data[i] = (uint8_t)rnd(&w->rng);
    *in = (struct br_att_in){.name = ia->name, .data = ia->data, .len = len};
}

/* An interactive write: create (parent NULL; over a tombstone too), update or delete. */
static void put_edit(struct writer *w, const char *id, const struct br_doc *parent, bool deleted,
                     bool new_att)
{
    struct br_att_in atts[8];
    struct inline_att ia;
    size_t na = 0;
    ia.name[0] = 0;
    br_buf body;
    br_buf_init(&body, 0);
    if (!deleted) {
        body_make(w, &body);
        if (new_att)
            att_make(w, &ia, &atts[na++]);
        if (parent && !parent->deleted && rnd_below(&w->rng, 2)) {
            for (size_t i = 0; i < parent->n_atts && na < 8; i++) {
                if (new_att && strcmp(parent->atts[i].name, ia.name) == 0)
                    continue;
                atts[na++] = (struct br_att_in){
                    .name = parent->atts[i].name, .stub = true, .digest = parent->atts[i].digest};
            }
        }
    }
    struct br_put p = {.id = id,
                       .id_len = strlen(id),
                       .rev = parent && !parent->deleted ? &parent->rev : NULL,
                       .deleted = deleted,
                       .body = body.data,
                       .body_len = body.len,
                       .atts = na ? atts : NULL,
                       .n_atts = na};
    struct br_put_result res;
    br_err e = br_db_put(w->db, &p, &w->wo, &res);
    br_buf_fini(&body);
    if (e)
        wfail(w, deleted ? "delete" : parent ? "update" : "create", e, res.reason);
    ack_rev(w, ACK_DOC, id, &res.rev, deleted, 0, 0);
}

static void put_replicated(struct writer *w, const char *id, const struct br_doc *d)
{
    struct br_rev h[MAX_HIST];
    size_t nh = history_make(w, d, h);
    bool deleted = rnd_below(&w->rng, 10) == 0;
    struct inline_att ia;
    struct br_att_in att;
    bool with_att = !deleted && rnd_below(&w->rng, 10) == 0;
    if (with_att)
        att_make(w, &ia, &att);
    br_buf body;
    br_buf_init(&body, 0);
    if (!deleted)
        body_make(w, &body);
    struct br_put p = {.id = id,
                       .id_len = strlen(id),
                       .deleted = deleted,
                       .body = body.data,
                       .body_len = body.len,
                       .atts = with_att ? &att : NULL,
                       .n_atts = with_att ? 1 : 0,
                       .history = h,
                       .n_history = nh};
    struct br_put_result res;
    br_err e = br_db_put(w->db, &p, &w->rwo, &res);
    br_buf_fini(&body);
    if (e)
        wfail(w, "replicated", e, res.reason);
    ack_rev(w, ACK_DOC, id, &res.rev, deleted, 0, 0);
}

static void resolve(struct writer *w, const char *id, const struct br_doc *d)
{
    struct br_resolve rs = {.base = &d->rev};
    br_buf mb;
    br_buf_init(&mb, 0);
    uint64_t c = rnd_below(&w->rng, d->n_conflicts + 2);
    if (c == d->n_conflicts + 1) {
        body_make(w, &mb);
        rs.merge_body = mb.data;
        rs.merge_body_len = mb.len;
    } else {
        rs.choose = c < d->n_conflicts ? &d->conflicts[c] : &d->rev;
    }
    struct br_resolve_result out;
    struct br_errbuf eb = {{0}};
    br_err e = br_db_resolve(w->db, id, strlen(id), &rs, &w->wo, &out, &eb);
    br_buf_fini(&mb);
    if (e)
        wfail(w, "resolve", e, eb.msg);
    ack_rev(w, ACK_DOC, id, &out.rev, false, 0, 0);
}

static void op_single(struct writer *w)
{
    char id[16];
    snprintf(id, sizeof id, "d%04u", (unsigned)rnd_below(&w->rng, NIDS));
    struct br_doc *d = lookup(w, id);
    uint64_t r = rnd_below(&w->rng, 100);
    if (!d) {
        if (r < 75)
            put_edit(w, id, NULL, false, r < 20);
        else
            put_replicated(w, id, NULL);
    } else if (d->deleted) {
        if (r < 70)
            put_edit(w, id, NULL, false, r < 15); /* re-create over the tombstone */
        else
            put_replicated(w, id, d);
    } else if (d->n_conflicts && r < 50) {
        resolve(w, id, d);
    } else if (r < 55) {
        put_edit(w, id, d, false, r < 12);
    } else if (r < 72) {
        put_edit(w, id, d, true, false);
    } else {
        put_replicated(w, id, d);
    }
    br_doc_free(d);
}

/* One batch of 1..50 documents: interactive (creates, updates, deletes, some with inline
 * attachments; an id drawn twice conflicts the second time) or replicated histories. */
static void op_bulk(struct writer *w)
{
    static struct br_rev hist[MAX_BULK][MAX_HIST];
    static struct inline_att ia[MAX_BULK];
    struct br_put puts[MAX_BULK];
    struct br_put_result res[MAX_BULK];
    struct br_att_in atts[MAX_BULK];
    br_buf bodies[MAX_BULK];
    char ids[MAX_BULK][16];
    size_t n = 1 + (size_t)rnd_below(&w->rng, MAX_BULK);
    bool repl = rnd_below(&w->rng, 5) == 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "d%04u", (unsigned)rnd_below(&w->rng, NIDS));
        struct br_doc *d = lookup(w, ids[i]);
        br_buf_init(&bodies[i], 0);
        puts[i] = (struct br_put){.id = ids[i], .id_len = strlen(ids[i])};
        if (repl) {
            puts[i].history = hist[i];
            puts[i].n_history = history_make(w, d, hist[i]);
            body_make(w, &bodies[i]);
        } else if (d && !d->deleted && rnd_below(&w->rng, 10) == 0) {
            puts[i].deleted = true;
        } else {
            body_make(w, &bodies[i]);
            if (rnd_below(&w->rng, 10) == 0) {
                att_make(w, &ia[i], &atts[i]);
                puts[i].atts = &atts[i];
                puts[i].n_atts = 1;
            }
        }
        if (d && !d->deleted && !repl)
            puts[i].rev = &hist[i][0];
        if (d && !repl)
            hist[i][0] = d->rev; /* the parent outlives d */
        puts[i].body = bodies[i].data;
        puts[i].body_len = bodies[i].len;
        br_doc_free(d);
    }
    br_err e = br_db_bulk(w->db, puts, n, repl ? &w->rwo : &w->wo, res);
    for (size_t i = 0; i < n; i++)
        br_buf_fini(&bodies[i]);
    if (e)
        wfail(w, "bulk", e, NULL);
    for (size_t i = 0; i < n; i++) {
        if (res[i].err == BR_OK)
            ack_rev(w, ACK_DOC, ids[i], &res[i].rev, puts[i].deleted, 0, 0);
        else if (res[i].err != BR_ECONFLICT || repl)
            wfail(w, "bulk item", res[i].err, res[i].reason);
    }
}

/* A replication checkpoint: local documents are compare-and-set on "0-N". */
static void op_local(struct writer *w)
{
    char id[16];
    snprintf(id, sizeof id, "ckpt-%u", (unsigned)rnd_below(&w->rng, NLOCAL));
    struct br_doc *cur = NULL;
    br_err e = br_db_local_get(w->db, id, strlen(id), &cur);
    if (e && e != BR_ENOTFOUND)
        wfail(w, "local_get", e, NULL);
    br_buf body;
    body_make(w, &body);
    struct br_rev nr;
    e = br_db_local_put(w->db, id, strlen(id), cur ? &cur->rev : NULL, body.data, body.len, &w->wo,
                        &nr);
    br_buf_fini(&body);
    br_doc_free(cur);
    if (e)
        wfail(w, "local_put", e, NULL);
    ack_rev(w, ACK_LOCAL, id, NULL, false, strtoull(nr.hash, NULL, 10), 0);
}

static _Noreturn void write_docs(struct writer *w)
{
    for (;;) {
        uint64_t r = rnd_below(&w->rng, 100);
        if (r < 8)
            op_bulk(w);
        else if (r < 16)
            op_local(w);
        else
            op_single(w);
    }
}

/* Stream blobs of 2..6 MiB (1..3 under ASan) in pieces of up to 192 KiB, reporting each piece, then
 * attach three finished blobs in four to one of the blob-N documents (body {"len": size, "seed":
 * seed}); the fourth stays unreferenced. */
static _Noreturn void write_stream(struct writer *w)
{
    enum { PIECE = 192 * 1024 };
    uint8_t *buf = malloc(PIECE);
    if (!buf)
        wfail(w, "malloc", BR_ENOMEM, NULL);
    for (uint32_t k = 0;; k++) {
        uint64_t seed = rnd(&w->rng) >> 1; /* a JSON integer */
        uint64_t size = BLOB_MIN + rnd_below(&w->rng, BLOB_SPAN);
        br_att_writer *aw;
        br_err e = br_att_writer_open(w->db, &aw);
        if (e)
            wfail(w, "att_writer_open", e, NULL);
        for (uint64_t off = 0; off < size;) {
            size_t n = 1 + (size_t)rnd_below(&w->rng, PIECE);
            if (n > size - off)
                n = (size_t)(size - off);
            blob_fill(seed, off, buf, n);
            e = br_att_writer_write(aw, buf, n);
            if (e)
                wfail(w, "att_writer_write", e, NULL);
            off += n;
            struct ack a;
            memset(&a, 0, sizeof a);
            a.kind = ACK_STREAM;
            a.blob = k;
            a.n = off;
            a.m = size;
            ack_send(w->fd, &a);
        }
        uint8_t key[32];
        char digest[48];
        uint64_t len = 0;
        e = br_att_writer_finish(aw, key, digest, &len);
        if (e || len != size)
            wfail(w, "att_writer_finish", e, "length");
        if (rnd_below(&w->rng, 4) == 0)
            continue; /* abandoned, as by a client that went away: the sweep at open removes it */
        char id[16];
        snprintf(id, sizeof id, "blob-%u", (unsigned)rnd_below(&w->rng, NBLOBDOCS));
        struct br_doc *d = lookup(w, id);
        br_buf body;
        br_buf_init(&body, 0);
        e = br_cbor_put_map(&body, 2);
        if (!e)
            e = br_cbor_put_cstr(&body, "len");
        if (!e)
            e = br_cbor_put_uint(&body, size);
        if (!e)
            e = br_cbor_put_cstr(&body, "seed");
        if (!e)
            e = br_cbor_put_uint(&body, seed);
        if (e)
            wfail(w, "body", e, NULL);
        struct br_att_in att = {.name = "big.bin", .blob_key = key};
        struct br_put p = {.id = id,
                           .id_len = strlen(id),
                           .rev = d && !d->deleted ? &d->rev : NULL,
                           .body = body.data,
                           .body_len = body.len,
                           .atts = &att,
                           .n_atts = 1};
        struct br_put_result res;
        e = br_db_put(w->db, &p, &w->wo, &res);
        br_buf_fini(&body);
        br_doc_free(d);
        if (e)
            wfail(w, "put blob doc", e, res.reason);
        ack_rev(w, ACK_ATT, id, &res.rev, false, seed, size);
    }
}

/* The child's entry: runs before Criterion's main when BARREL_CRASH_WRITER is set. */
__attribute__((constructor)) static void writer_main(void)
{
    const char *mode = getenv("BARREL_CRASH_WRITER");
    if (!mode)
        return;
    const char *path = getenv("BARREL_CRASH_DIR"), *fd = getenv("BARREL_CRASH_FD");
    const char *seed = getenv("BARREL_CRASH_SEED"), *sync = getenv("BARREL_CRASH_SYNC");
    if (!path || !fd || !seed || !sync)
        _exit(126);
    struct writer w;
    memset(&w, 0, sizeof w);
    w.fd = (int)strtol(fd, NULL, 10);
    w.rng = strtoull(seed, NULL, 10);
    w.wo = (struct br_write_opts){strcmp(sync, "none") == 0 ? BR_SYNC_NONE : BR_SYNC_FULL, true};
    w.rwo = w.wo;
    w.rwo.new_edits = false;
    br_log_set_level(BR_LOG_WARN);
    struct br_store_opts o = {.path = path};
    struct br_errbuf eb = {{0}};
    br_err e = br_store_open(&o, &w.st, &eb);
    if (e)
        wfail(&w, "store_open", e, eb.msg);
    e = br_store_db_open(w.st, "db", &w.db);
    if (e)
        wfail(&w, "db_open", e, NULL);
    ack_rev(&w, ACK_READY, "", NULL, false, 0, 0);
    if (strcmp(mode, "stream") == 0)
        write_stream(&w);
    write_docs(&w);
}

/* ===================================================================================== */
/* The parent: spawn, kill, reopen, verify                                               */
/* ===================================================================================== */

/* What was acknowledged, per document id (an open-addressing table that only grows). */
struct acked_doc {
    bool used;
    char id[40];
    struct br_rev *revs;
    uint8_t *deleted;
    uint32_t *round;
    size_t n, cap;
    uint32_t seen; /* changes-feed pass marker */
};

struct ledger {
    struct acked_doc *docs;
    size_t n, cap;
    uint64_t local_max[NLOCAL];
    uint64_t acks;
    uint64_t by_kind[ACK_FAIL + 1];
};

static char *dir;
static br_store *st;
static br_db *db;
static pid_t child;
static int ack_fd = -1;
static struct ledger led;

static void close_store(void)
{
    br_db_close(db);
    db = NULL;
    br_store_close(st);
    st = NULL;
}

static void open_store(uint32_t round)
{
    struct br_store_opts o = {.path = dir};
    struct br_errbuf eb = {{0}};
    br_err e = br_store_open(&o, &st, &eb);
    cr_assert_eq(e, BR_OK, "round %u: the store at %s does not open after kill -9: %s %s", round,
                 dir, br_strerror(e), eb.msg);
    e = br_store_db_open(st, "db", &db);
    if (e == BR_ENOTFOUND) {
        /* br_store_open creates what is missing, so a wrong directory opens "fine" and holds no
         * database at all: tell that apart from a lost catalog entry. */
        char **names = NULL;
        size_t n = 0;
        cr_assert_eq(br_store_db_list(st, &names, &n), BR_OK);
        br_store_names_free(names, n);
        cr_assert_fail("round %u: database \"db\" is not in the store at %s (%zu other "
                       "database(s)%s)",
                       round, dir, n, n ? "" : ": a fresh store, is it the right directory?");
    }
    cr_assert_eq(e, BR_OK, "round %u: database \"db\" of the store at %s does not open: %s", round,
                 dir, br_strerror(e));
}

static void setup(void)
{
    br_log_set_level(BR_LOG_ERROR);
    dir = tu_tmpdir("crash");
    struct br_store_opts o = {.path = dir};
    cr_assert_eq(br_store_open(&o, &st, NULL), BR_OK);
    cr_assert_eq(br_store_db_create(st, "db", NULL), BR_OK);
    /* Every acknowledged revision must stay in its tree (verify_acked asks revsdiff): no stemming,
     * however many rounds BARREL_CRASH_ROUNDS asks for. */
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
    cr_assert_eq(br_db_set_revs_limit(db, UINT32_MAX), BR_OK);
    close_store();
}

static void reap_child(void)
{
    if (child > 0) {
        kill(child, SIGKILL);
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
        child = 0;
    }
    if (ack_fd >= 0) {
        close(ack_fd);
        ack_fd = -1;
    }
}

static void teardown(void)
{
    reap_child();
    close_store();
    for (size_t i = 0; i < led.cap; i++) {
        free(led.docs[i].revs);
        free(led.docs[i].deleted);
        free(led.docs[i].round);
    }
    free(led.docs);
    memset(&led, 0, sizeof led);
    tu_rmtree(dir);
    free(dir);
}

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static struct acked_doc *slot_for(struct acked_doc *t, size_t cap, const char *id, size_t n)
{
    size_t i = fnv(id, n) & (cap - 1);
    while (t[i].used && !(strlen(t[i].id) == n && memcmp(t[i].id, id, n) == 0))
        i = (i + 1) & (cap - 1);
    return &t[i];
}

static struct acked_doc *ledger_doc(const char *id, size_t n)
{
    cr_assert(n > 0 && n < sizeof led.docs[0].id, "odd document id length %zu", n);
    if ((led.n + 1) * 2 > led.cap) {
        size_t cap = led.cap ? led.cap * 2 : 1024;
        struct acked_doc *t = calloc(cap, sizeof *t);
        cr_assert(t);
        for (size_t i = 0; i < led.cap; i++)
            if (led.docs[i].used)
                *slot_for(t, cap, led.docs[i].id, strlen(led.docs[i].id)) = led.docs[i];
        free(led.docs);
        led.docs = t;
        led.cap = cap;
    }
    struct acked_doc *d = slot_for(led.docs, led.cap, id, n);
    if (!d->used) {
        d->used = true;
        memcpy(d->id, id, n);
        d->id[n] = 0;
        led.n++;
    }
    return d;
}

static void ledger_add(const char *id, const struct br_rev *rev, bool deleted, uint32_t round)
{
    struct acked_doc *d = ledger_doc(id, strlen(id));
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 4;
        d->revs = realloc(d->revs, d->cap * sizeof *d->revs);
        d->deleted = realloc(d->deleted, d->cap);
        d->round = realloc(d->round, d->cap * sizeof *d->round);
        cr_assert(d->revs && d->deleted && d->round);
    }
    d->revs[d->n] = *rev;
    d->deleted[d->n] = deleted;
    d->round[d->n] = round;
    d->n++;
}

/* One round's view of the writer. */
struct round {
    uint32_t no;
    enum br_sync sync;
    bool stream; /* the streaming writer: check the blob documents' contents too */
    bool ready, failed, eof;
    char fail[200];
    uint64_t ready_ms; /* spawn to READY (0 for an early kill) */
    uint64_t acks;
    /* stream test */
    struct ack last;      /* the last record received */
    uint32_t kill_blob;   /* kill once this blob ... */
    uint64_t kill_permil; /* ... has this share (per mille) written */
    bool kill_now;
    uint32_t atts_done;
};

static void on_ack(struct round *r, const struct ack *a)
{
    struct br_rev rev;
    r->last = *a;
    if (a->kind <= ACK_FAIL)
        led.by_kind[a->kind]++;
    switch (a->kind) {
    case ACK_READY:
        r->ready = true;
        break;
    case ACK_DOC:
    case ACK_ATT:
        cr_assert_eq(br_rev_parse(a->rev, strlen(a->rev), &rev), BR_OK, "bad acked rev %s", a->rev);
        ledger_add(a->id, &rev, a->deleted, r->no);
        r->acks++;
        if (a->kind == ACK_ATT)
            r->atts_done++;
        break;
    case ACK_LOCAL: {
        unsigned k = 0;
        cr_assert_eq(sscanf(a->id, "ckpt-%u", &k), 1);
        cr_assert(k < NLOCAL);
        if (a->n > led.local_max[k])
            led.local_max[k] = a->n;
        r->acks++;
        break;
    }
    case ACK_STREAM:
        if (a->blob == r->kill_blob && a->n * 1000 >= a->m * r->kill_permil)
            r->kill_now = true;
        break;
    case ACK_FAIL:
        r->failed = true;
        snprintf(r->fail, sizeof r->fail, "%s: %s", a->id, a->rev);
        break;
    default:
        cr_assert_fail("round %u: unknown ack kind %u", r->no, a->kind);
    }
}

/* Read what the writer sent within timeout_ms and handle every whole record; r->eof once the
 * writer's end of the pipe is closed. */
static void pump(struct round *r, int timeout_ms)
{
    static uint8_t buf[64 * sizeof(struct ack)];
    static size_t len;
    struct pollfd pfd = {.fd = ack_fd, .events = POLLIN};
    int pr = poll(&pfd, 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (pr < 0 && errno == EINTR)
        return;
    cr_assert(pr >= 0, "poll: %s", strerror(errno));
    if (pr == 0)
        return;
    ssize_t n = read(ack_fd, buf + len, sizeof buf - len);
    if (n < 0 && errno == EINTR)
        return;
    cr_assert(n >= 0, "read: %s", strerror(errno));
    if (n == 0) {
        cr_assert_eq(len, 0, "a partial ack record: acks must be written atomically");
        r->eof = true;
        return;
    }
    len += (size_t)n;
    size_t off = 0;
    for (; len - off >= sizeof(struct ack); off += sizeof(struct ack)) {
        struct ack a;
        memcpy(&a, buf + off, sizeof a);
        on_ack(r, &a);
    }
    memmove(buf, buf + off, len - off);
    len -= off;
}

/* Fork and exec this binary as a writer; ack_fd reads its reports. */
static void spawn_writer(const char *mode, enum br_sync sync, uint64_t seed)
{
    static char exe[4096];
    static char e_mode[64], e_dir[4200], e_fd[64], e_seed[64], e_sync[64];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    cr_assert(el > 0, "readlink /proc/self/exe: %s", strerror(errno));
    exe[el] = 0;
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    snprintf(e_mode, sizeof e_mode, "BARREL_CRASH_WRITER=%s", mode);
    snprintf(e_dir, sizeof e_dir, "BARREL_CRASH_DIR=%s", dir);
    snprintf(e_fd, sizeof e_fd, "BARREL_CRASH_FD=%d", p[1]);
    snprintf(e_seed, sizeof e_seed, "BARREL_CRASH_SEED=%" PRIu64, seed);
    snprintf(e_sync, sizeof e_sync, "BARREL_CRASH_SYNC=%s", sync == BR_SYNC_NONE ? "none" : "full");
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **envp = calloc(ne + 6, sizeof *envp);
    cr_assert(envp);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) /* not Criterion's sandbox map, not a stale writer's vars */
        if (strncmp(environ[i], "BXFI_", 5) != 0 && strncmp(environ[i], "BARREL_CRASH_", 13) != 0)
            envp[k++] = environ[i];
    envp[k++] = e_mode;
    envp[k++] = e_dir;
    envp[k++] = e_fd;
    envp[k++] = e_seed;
    envp[k++] = e_sync;
    envp[k] = NULL;
    char *argv[] = {exe, NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* The child runs no Criterion code: exec or _exit. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        if (fcntl(p[1], F_SETFD, 0) != 0)
            _exit(127);
        execve(exe, argv, envp);
        _exit(127);
    }
    int fork_errno = errno;
    free(envp);
    close(p[1]);
    if (pid < 0)
        close(p[0]);
    cr_assert(pid > 0, "fork: %s", strerror(fork_errno));
    child = pid;
    ack_fd = p[0];
}

/* Run one writer until the kill; returns with the child reaped and every ack handled. kill_ms
 * counts from the writer's READY, or from the spawn when early (a kill during open/recovery). */
static void run_round(struct round *r, const char *mode, uint64_t seed, bool early,
                      uint64_t kill_ms)
{
    spawn_writer(mode, r->sync, seed);
    uint64_t t0 = now_ms(), tspawn = t0;
    if (!early) {
        while (!r->ready && !r->eof && !r->failed) {
            cr_assert(now_ms() - t0 < 60000, "round %u: the writer did not open the store in 60 s",
                      r->no);
            pump(r, 100);
        }
        t0 = now_ms();
    }
    r->ready_ms = t0 - tspawn;
    for (;;) {
        uint64_t elapsed = now_ms() - t0;
        if (r->eof || r->kill_now || elapsed >= kill_ms)
            break;
        pump(r, (int)(kill_ms - elapsed));
    }
    cr_assert_eq(kill(child, SIGKILL), 0, "kill: %s", strerror(errno));
    int status = 0;
    pid_t w;
    do
        w = waitpid(child, &status, 0);
    while (w < 0 && errno == EINTR);
    cr_assert_eq(w, child, "waitpid: %s", strerror(errno));
    child = 0;
    while (!r->eof) /* acks written before the kill are valid */
        pump(r, 5000);
    close(ack_fd);
    ack_fd = -1;
    cr_assert(!r->failed, "round %u: the writer failed: %s", r->no, r->fail);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "round %u: the writer ended by itself (status 0x%x) before the kill", r->no, status);
}

/* ---- verification ---- */

static const char *rtxt(const struct br_rev *r)
{
    static char buf[4][BR_REV_TEXT_MAX];
    static int i;
    char *b = buf[i++ % 4];
    br_rev_format(r, b);
    return b;
}

/* Every acknowledged revision is in its document's tree; those acknowledged this round that are
 * still leaves carry the acknowledged deleted flag. */
static void verify_acked(const struct round *r)
{
    enum { BATCH = 128 };
    struct br_revsdiff_in in[BATCH];
    struct br_revsdiff_out out[BATCH];
    struct acked_doc *docs[BATCH];
    size_t n = 0;
    for (size_t i = 0; i <= led.cap; i++) {
        if (i < led.cap && led.docs[i].used && led.docs[i].n) {
            struct acked_doc *d = &led.docs[i];
            docs[n] = d;
            in[n++] = (struct br_revsdiff_in){d->id, strlen(d->id), d->revs, d->n};
        }
        if (n == BATCH || (i == led.cap && n)) {
            br_err e = br_db_revsdiff(db, in, n, out);
            cr_assert_eq(e, BR_OK, "round %u: revsdiff: %s", r->no, br_strerror(e));
            for (size_t j = 0; j < n; j++) {
                if (out[j].n_missing == 0)
                    continue;
                struct acked_doc *d = docs[j];
                size_t k = 0;
                while (k < d->n && !br_rev_eq(&d->revs[k], &out[j].missing[0]))
                    k++;
                cr_assert_fail("round %u: %zu acknowledged revision(s) of %s lost after kill -9; "
                               "first %s (deleted=%d, acknowledged in round %u, sync=%s)",
                               r->no, out[j].n_missing, d->id, rtxt(&out[j].missing[0]),
                               k < d->n ? d->deleted[k] : -1, k < d->n ? d->round[k] : 0,
                               k < d->n && d->round[k] % 2 ? "none" : "full");
            }
            br_revsdiff_out_fini(out, n);
            n = 0;
        }
    }
    for (size_t i = 0; i < led.cap; i++) {
        struct acked_doc *d = &led.docs[i];
        for (size_t k = 0; d->used && k < d->n; k++) {
            if (d->round[k] != r->no)
                continue;
            struct br_get_opts o = {.rev = &d->revs[k], .include_deleted = true};
            struct br_doc *doc = NULL;
            br_err e = br_db_get(db, d->id, strlen(d->id), &o, &doc, NULL);
            if (e == BR_ENOTFOUND)
                continue; /* no longer a leaf: its body is gone, the tree keeps the id */
            cr_assert_eq(e, BR_OK, "round %u: get %s rev %s: %s", r->no, d->id, rtxt(&d->revs[k]),
                         br_strerror(e));
            cr_assert_eq(doc->deleted, (bool)d->deleted[k],
                         "round %u: %s rev %s was acknowledged with deleted=%d, reads %d", r->no,
                         d->id, rtxt(&d->revs[k]), d->deleted[k], doc->deleted);
            br_doc_free(doc);
        }
    }
}

static void verify_locals(const struct round *r)
{
    for (unsigned k = 0; k < NLOCAL; k++) {
        if (!led.local_max[k])
            continue;
        char id[16];
        snprintf(id, sizeof id, "ckpt-%u", k);
        struct br_doc *d = NULL;
        br_err e = br_db_local_get(db, id, strlen(id), &d);
        cr_assert_eq(e, BR_OK, "round %u: local %s (acknowledged at 0-%" PRIu64 ") lost: %s", r->no,
                     id, led.local_max[k], br_strerror(e));
        uint64_t have = strtoull(d->rev.hash, NULL, 10);
        cr_assert(d->rev.gen == 0 && have >= led.local_max[k],
                  "round %u: local %s is at 0-%" PRIu64 ", acknowledged 0-%" PRIu64, r->no, id,
                  have, led.local_max[k]);
        br_doc_free(d);
    }
}

struct feedck {
    uint32_t mark;
    uint64_t n, live, dead, atts;
    bool any;
    struct br_hlc prev;
    char err[400];
};

/* Read a whole attachment; BR_OK when it has exactly `length` bytes. */
static br_err att_read_all(const uint8_t key[32], uint64_t length, uint64_t seed, bool check_seed)
{
    br_att_reader *rd;
    uint64_t len = 0, got = 0;
    br_err e = br_att_reader_open(db, key, &rd, &len);
    if (e)
        return e;
    uint8_t want[BR_ATT_CHUNK];
    for (;;) {
        const uint8_t *p;
        size_t n;
        e = br_att_reader_read(rd, &p, &n);
        if (e || n == 0)
            break;
        if (check_seed) {
            blob_fill(seed, got, want, n);
            if (memcmp(p, want, n) != 0) {
                e = BR_EPROTO;
                break;
            }
        }
        got += n;
    }
    br_att_reader_close(rd);
    if (!e && (got != length || len != length))
        e = BR_ESTORE;
    return e;
}

static int feed_cb(void *arg, const struct br_change *c)
{
    struct feedck *f = arg;
    char id[64];
    if (c->id_len == 0 || c->id_len >= sizeof id) {
        snprintf(f->err, sizeof f->err, "odd id length %zu in the feed", c->id_len);
        return 1;
    }
    memcpy(id, c->id, c->id_len);
    id[c->id_len] = 0;
    if (f->any && br_hlc_cmp(c->seq, f->prev) <= 0) {
        snprintf(f->err, sizeof f->err, "feed not in seq order at %s", id);
        return 1;
    }
    f->any = true;
    f->prev = c->seq;
    struct acked_doc *d = ledger_doc(c->id, c->id_len);
    if (d->seen == f->mark) {
        snprintf(f->err, sizeof f->err, "%s is listed twice in the changes feed", id);
        return 1;
    }
    d->seen = f->mark;
    f->n++;
    if (c->deleted)
        f->dead++;
    else
        f->live++;
    struct br_get_opts o = {.include_deleted = true};
    struct br_doc *doc = NULL;
    br_err e = br_db_get(db, c->id, c->id_len, &o, &doc, NULL);
    if (e) {
        snprintf(f->err, sizeof f->err, "feed lists %s but get says %s", id, br_strerror(e));
        return 1;
    }
    bool ok = br_rev_eq(&doc->rev, &c->rev) && doc->deleted == c->deleted &&
              br_hlc_cmp(doc->seq, c->seq) == 0;
    if (!ok)
        snprintf(f->err, sizeof f->err, "feed says %s is at %s (deleted=%d), get says %s (%d)", id,
                 rtxt(&c->rev), c->deleted, rtxt(&doc->rev), doc->deleted);
    for (size_t i = 0; ok && i < doc->n_atts; i++) {
        e = att_read_all(doc->atts[i].key, doc->atts[i].length, 0, false);
        if (e) {
            snprintf(f->err, sizeof f->err, "attachment %s of %s does not read whole: %s",
                     doc->atts[i].name, id, br_strerror(e));
            ok = false;
        }
        f->atts++;
    }
    br_doc_free(doc);
    return ok ? 0 : 1;
}

/* The feed lists each document once, in seq order, at the winner get reads; the counts match
 * br_db_info and the check; every acknowledged document is in it. */
static void verify_feed(const struct round *r, const struct br_db_check *ck)
{
    struct feedck f;
    memset(&f, 0, sizeof f);
    f.mark = r->no + 1;
    br_err e = br_db_changes(db, NULL, feed_cb, &f, NULL);
    cr_assert_eq(e, BR_OK, "round %u: changes: %s", r->no, br_strerror(e));
    cr_assert(!f.err[0], "round %u: %s", r->no, f.err);
    struct br_db_info info;
    cr_assert_eq(br_db_info(db, &info), BR_OK);
    cr_assert_eq(f.n, ck->docs, "round %u: %" PRIu64 " feed entries, %" PRIu64 " documents", r->no,
                 f.n, ck->docs);
    cr_assert(f.live == info.doc_count && f.dead == info.doc_del_count,
              "round %u: feed has %" PRIu64 " live / %" PRIu64 " deleted, info %" PRIu64
              " / %" PRIu64,
              r->no, f.live, f.dead, info.doc_count, info.doc_del_count);
    for (size_t i = 0; i < led.cap; i++)
        cr_assert(!led.docs[i].used || !led.docs[i].n || led.docs[i].seen == f.mark,
                  "round %u: acknowledged document %s is not in the changes feed", r->no,
                  led.docs[i].id);
}

/* ---- the attachments column family, read directly (layout in store_int.h) ---- */

struct blobinfo {
    uint8_t key[32];
    uint64_t blobid, length, refs, counted, bytes;
    uint8_t md5[16];
    uint32_t chunks, seen_chunks;
    bool md5_entry;
};

struct blobs {
    struct blobinfo *v;
    size_t n, cap;
    size_t *by_id; /* indices sorted by blobid */
    uint64_t problems;
    char first[300];
};

static void blob_problem(struct blobs *b, const char *fmt, ...) BR_PRINTF(2, 3);
static void blob_problem(struct blobs *b, const char *fmt, ...)
{
    if (b->problems++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->first, sizeof b->first, fmt, ap);
        va_end(ap);
    }
}

static int key_cmp(const void *k, const void *e)
{
    return memcmp(k, ((const struct blobinfo *)e)->key, 32);
}

static struct blobinfo *blob_by_key(struct blobs *b, const uint8_t key[32])
{
    return bsearch(key, b->v, b->n, sizeof *b->v, key_cmp);
}

static struct blobs *sort_ctx;
static int id_cmp(const void *a, const void *b)
{
    uint64_t x = sort_ctx->v[*(const size_t *)a].blobid, y = sort_ctx->v[*(const size_t *)b].blobid;
    return x < y ? -1 : x > y;
}

static struct blobinfo *blob_by_id(struct blobs *b, uint64_t id)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t m = b->v[b->by_id[mid]].blobid;
        if (m == id)
            return &b->v[b->by_id[mid]];
        if (m < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Iterate one column family over this database's keys: fn(key, klen, val, vlen). */
static void scan_cf(enum cf_id cf,
                    void (*fn)(void *, const uint8_t *, size_t, const uint8_t *, size_t), void *arg)
{
    uint8_t lo[4], hi[4];
    memcpy(lo, db->dbid, 4);
    store_be32(hi, store_rd32(db->dbid) + 1);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(ro, (const char *)lo, 4);
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, 4);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->rdb, ro, st->cf[cf]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        fn(arg, (const uint8_t *)k, kl, (const uint8_t *)v, vl);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    cr_assert(!err, "iterator: %s", err);
}

static void scan_records(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct blobs *b = arg;
    if (kl < 5 || k[4] != 'b')
        return;
    if (kl != 4 + 1 + 32 || vl != 8 + 8 + 16 + 8 + 4) {
        blob_problem(b, "malformed blob record (key %zu, value %zu bytes)", kl, vl);
        return;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->v = realloc(b->v, b->cap * sizeof *b->v);
        cr_assert(b->v);
    }
    struct blobinfo *x = &b->v[b->n++];
    memset(x, 0, sizeof *x);
    memcpy(x->key, k + 5, 32);
    x->blobid = store_rd64(v);
    x->length = store_rd64(v + 8);
    memcpy(x->md5, v + 16, 16);
    x->refs = store_rd64(v + 32);
    x->chunks = store_rd32(v + 40);
}

static void scan_rest(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct blobs *b = arg;
    if (kl < 5) {
        blob_problem(b, "short key in the atts family");
        return;
    }
    switch (k[4]) {
    case 'b':
        return;
    case 'c': {
        if (kl != 4 + 1 + 8 + 4) {
            blob_problem(b, "malformed chunk key");
            return;
        }
        uint64_t id = store_rd64(k + 5);
        uint32_t idx = store_rd32(k + 13);
        struct blobinfo *x = blob_by_id(b, id);
        if (!x) {
            blob_problem(b,
                         "chunk %u of blob id %016" PRIx64 " that has no record: a "
                         "partial blob survived",
                         idx, id);
            return;
        }
        if (idx != x->seen_chunks) {
            blob_problem(b, "blob id %016" PRIx64 ": chunk %u where %u was due", id, idx,
                         x->seen_chunks);
            return;
        }
        uint64_t want = x->length - (uint64_t)idx * ATT_CHUNK;
        if (want > ATT_CHUNK)
            want = ATT_CHUNK;
        if (vl != want) {
            blob_problem(b, "blob id %016" PRIx64 ": chunk %u has %zu bytes, %" PRIu64 " due", id,
                         idx, vl, want);
            return;
        }
        x->seen_chunks++;
        x->bytes += vl;
        return;
    }
    case 'm': {
        if (kl != 4 + 1 + 16 || vl != 32) {
            blob_problem(b, "malformed md5 index entry");
            return;
        }
        struct blobinfo *x = blob_by_key(b, v);
        if (!x) {
            blob_problem(b, "md5 index entry names a blob that does not exist");
            return;
        }
        if (memcmp(x->md5, k + 5, 16) != 0) {
            blob_problem(b, "md5 index entry names a blob with another md5");
            return;
        }
        x->md5_entry = true;
        return;
    }
    case 'p': {
        blob_problem(b, "an upload in progress survived the reopen (sweep missed it)");
        return;
    }
    default: {
        blob_problem(b, "unknown key kind '%c' in the atts family", k[4]);
        return;
    }
    }
}

static void count_refs(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct blobs *b = arg;
    struct docrec r;
    docrec_init(&r);
    br_err e = docrec_decode(v, vl, &r);
    if (e) {
        blob_problem(b, "record of %.*s does not decode", (int)(kl - 4), (const char *)k + 4);
        docrec_fini(&r);
        return;
    }
    for (size_t i = 0; i < r.n_leaves; i++) {
        for (size_t j = 0; j < r.leaves[i].n_atts; j++) {
            const struct br_att_stub *a = &r.leaves[i].atts[j];
            struct blobinfo *x = blob_by_key(b, a->key);
            if (!x)
                blob_problem(b, "leaf %s of %.*s names attachment %s whose blob is gone",
                             rtxt(&r.leaves[i].rev), (int)(kl - 4), (const char *)k + 4, a->name);
            else if (x->length != a->length)
                blob_problem(b, "attachment %s of %.*s: stub length %" PRIu64 ", blob %" PRIu64,
                             a->name, (int)(kl - 4), (const char *)k + 4, a->length, x->length);
            else
                x->counted++;
        }
    }
    docrec_fini(&r);
}

/* Every blob is whole (all chunks, right sizes), indexed by md5, referenced exactly by the
 * leaves that name it (so none is unreferenced after the sweep at open); no chunk belongs to a
 * blob without a record and no upload is pending. */
static void verify_blobs(const struct round *r)
{
    struct blobs b;
    memset(&b, 0, sizeof b);
    scan_cf(CF_ATTS, scan_records, &b);
    b.by_id = calloc(b.n ? b.n : 1, sizeof *b.by_id);
    cr_assert(b.by_id);
    for (size_t i = 0; i < b.n; i++)
        b.by_id[i] = i;
    sort_ctx = &b;
    qsort(b.by_id, b.n, sizeof *b.by_id, id_cmp);
    scan_cf(CF_ATTS, scan_rest, &b);
    scan_cf(CF_DOCS, count_refs, &b);
    for (size_t i = 0; i < b.n; i++) {
        struct blobinfo *x = &b.v[i];
        if (x->seen_chunks != x->chunks || x->bytes != x->length)
            blob_problem(
                &b, "blob id %016" PRIx64 " has %u of %u chunks, %" PRIu64 " of %" PRIu64 " bytes",
                x->blobid, x->seen_chunks, x->chunks, x->bytes, x->length);
        if (x->refs != x->counted)
            blob_problem(&b,
                         "blob id %016" PRIx64 " has refcount %" PRIu64 ", %" PRIu64
                         " leaf attachments name it",
                         x->blobid, x->refs, x->counted);
        if (!x->md5_entry)
            blob_problem(&b, "blob id %016" PRIx64 " has no md5 index entry", x->blobid);
        if (x->refs == 0)
            blob_problem(&b,
                         "blob id %016" PRIx64 " is referenced by no leaf: the sweep at open "
                         "missed it",
                         x->blobid);
    }
    free(b.v);
    free(b.by_id);
    cr_assert_eq(b.problems, 0, "round %u: %" PRIu64 " attachment problem(s); first: %s", r->no,
                 b.problems, b.first);
}

/* Each blob doc's winner carries the blob its body describes, byte for byte. */
static void verify_blob_docs(const struct round *r)
{
    for (unsigned k = 0; k < NBLOBDOCS; k++) {
        char id[16];
        snprintf(id, sizeof id, "blob-%u", k);
        struct br_doc *d = NULL;
        br_err e = br_db_get(db, id, strlen(id), NULL, &d, NULL);
        if (e == BR_ENOTFOUND)
            continue;
        cr_assert_eq(e, BR_OK, "round %u: get %s: %s", r->no, id, br_strerror(e));
        json_t *body = NULL;
        cr_assert_eq(br_json_from_cbor(d->body, d->body_len, &body, NULL), BR_OK);
        json_int_t len = json_integer_value(json_object_get(body, "len"));
        uint64_t seed = (uint64_t)json_integer_value(json_object_get(body, "seed"));
        json_decref(body);
        cr_assert_eq(d->n_atts, 1, "round %u: %s has %zu attachments", r->no, id, d->n_atts);
        cr_assert_eq(d->atts[0].length, (uint64_t)len);
        e = att_read_all(d->atts[0].key, d->atts[0].length, seed, true);
        cr_assert_eq(e, BR_OK, "round %u: the blob of %s (%s) does not read back: %s", r->no, id,
                     rtxt(&d->rev), br_strerror(e));
        br_doc_free(d);
    }
}

/* Reopen after the kill and check everything; returns with the store closed. */
static void verify_round(const struct round *r)
{
    uint64_t t0 = now_ms();
    open_store(r->no);
    uint64_t t1 = now_ms();
    struct br_db_check ck;
    br_err e = br_db_check(db, &ck);
    cr_assert_eq(e, BR_OK, "round %u: check: %s", r->no, br_strerror(e));
    cr_assert_eq(ck.problems, 0, "round %u: br_db_check found %" PRIu64 " problem(s); first: %s",
                 r->no, ck.problems, ck.first);
    verify_acked(r);
    verify_locals(r);
    verify_feed(r, &ck);
    verify_blobs(r);
    if (r->stream)
        verify_blob_docs(r);
    close_store();
    if (getenv("BARREL_CRASH_VERBOSE")) /* where a round's time goes */
        fprintf(stderr,
                "round %u sync=%s: writer ready %" PRIu64 " ms, %" PRIu64 " acks; reopen %" PRIu64
                " ms, verify %" PRIu64 " ms\n",
                r->no, r->sync == BR_SYNC_NONE ? "none" : "full", r->ready_ms, r->acks, t1 - t0,
                now_ms() - t1);
}

static uint64_t test_seed(void)
{
    const char *s = getenv("BARREL_CRASH_SEED");
    if (s && *s)
        return strtoull(s, NULL, 10);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return mix64((uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 20 ^ (uint64_t)getpid() << 40);
}

static uint32_t test_rounds(uint32_t dflt)
{
    const char *s = getenv("BARREL_CRASH_ROUNDS");
    unsigned long n = s && *s ? strtoul(s, NULL, 10) : 0;
    return n > dflt ? (uint32_t)n : dflt;
}

TestSuite(crash, .init = setup, .fini = teardown);

Test(crash, kill9_while_writing_loses_no_acknowledged_write)
{
    uint64_t seed = test_seed();
    uint32_t rounds = test_rounds(DEFAULT_ROUNDS);
    fprintf(stderr,
            "crash.kill9_while_writing: seed=%" PRIu64 " rounds=%u "
            "(replay: BARREL_CRASH_SEED=%" PRIu64 ")\n",
            seed, rounds, seed);
    uint64_t t0 = now_ms(), early_kills = 0, mins = UINT64_MAX, maxs = 0;
    for (uint32_t i = 0; i < rounds; i++) {
        uint64_t rs = mix64(seed + i);
        struct round r;
        memset(&r, 0, sizeof r);
        r.no = i;
        r.sync = i % 2 ? BR_SYNC_NONE : BR_SYNC_FULL;
        r.kill_blob = UINT32_MAX;
        bool early = rs % 10 == 0; /* sometimes kill during exec, open or recovery */
        uint64_t kill_ms = early ? (rs >> 8) % 300 : 20 + (rs >> 8) % KILL_SPAN;
        early_kills += early;
        run_round(&r, "docs", mix64(rs), early, kill_ms);
        verify_round(&r);
        mins = r.acks < mins ? r.acks : mins;
        maxs = r.acks > maxs ? r.acks : maxs;
    }
    fprintf(stderr,
            "crash.kill9_while_writing: %u rounds (%" PRIu64 " killed before READY), %" PRIu64
            " acks (doc %" PRIu64 ", local %" PRIu64 "; per round %" PRIu64 "..%" PRIu64
            "), %zu documents, %.1f s\n",
            rounds, early_kills, led.by_kind[ACK_DOC] + led.by_kind[ACK_LOCAL],
            led.by_kind[ACK_DOC], led.by_kind[ACK_LOCAL], mins, maxs, led.n,
            (double)(now_ms() - t0) / 1000.0);
    cr_assert_gt(led.by_kind[ACK_DOC] + led.by_kind[ACK_LOCAL], 1000,
                 "the writer made too little progress to mean anything");
}

Test(crash, kill9_while_streaming_an_attachment_leaves_no_partial_blob)
{
    uint64_t base = test_seed(), seed = mix64(base ^ 0x5354524541d0ull);
    uint32_t rounds = test_rounds(DEFAULT_ROUNDS) / 4;
    if (rounds < MIN_STREAM_ROUNDS)
        rounds = MIN_STREAM_ROUNDS;
    fprintf(stderr,
            "crash.kill9_while_streaming: seed=%" PRIu64 " rounds=%u "
            "(replay: BARREL_CRASH_SEED=%" PRIu64 ")\n",
            base, rounds, base);
    uint64_t t0 = now_ms(), mid = 0, atts = 0;
    for (uint32_t i = 0; i < rounds; i++) {
        uint64_t rs = mix64(seed + i);
        struct round r;
        memset(&r, 0, sizeof r);
        r.no = i;
        r.sync = i % 2 ? BR_SYNC_NONE : BR_SYNC_FULL;
        bool by_time = rs % 4 == 0; /* else: at a chosen point of a chosen blob */
        r.kill_blob = by_time ? UINT32_MAX : (uint32_t)((rs >> 8) % KILL_BLOBS);
        r.kill_permil = 50 + (rs >> 16) % 900;
        r.stream = true;
        run_round(&r, "stream", mix64(rs), false, by_time ? 20 + (rs >> 24) % 1500 : 30000);
        if (r.last.kind == ACK_STREAM && r.last.n < r.last.m)
            mid++;
        atts += r.atts_done;
        verify_round(&r);
    }
    fprintf(stderr,
            "crash.kill9_while_streaming: %u rounds, %" PRIu64 " killed mid-stream, %" PRIu64
            " blobs attached, %.1f s\n",
            rounds, mid, atts, (double)(now_ms() - t0) / 1000.0);
    cr_assert_geq(mid, rounds / 2, "too few kills landed mid-stream (%" PRIu64 " of %u)", mid,
                  rounds);
}
