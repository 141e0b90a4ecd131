/* att_test.c — attachments (BEHAVIOURS.md ATT-01..ATT-07, Decisions §9): inline and streamed
 * blobs, content addressing and reference counts (one copy per content, gone with the last
 * leaf that names it), stubs, the streaming writer and reader, the sweep at open, and a 200 MiB
 * round trip whose peak memory stays a small fraction of the blob. The private header is used
 * to count what the atts column family holds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <rocksdb/c.h>
#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/att.h"
#include "barrel/log.h"
#include "barrel/store.h"

#include "store_int.h"
#include "testutil.h"

/* Under AddressSanitizer freed memory waits in a quarantine (256 MiB by default) that counts in
 * RSS; a small one keeps the 200 MiB test measuring barrel rather than the sanitizer. Under
 * ThreadSanitizer the shadow memory grows with every byte RocksDB buffers, so that test only
 * reports the figure. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#elif __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif

#ifdef TEST_ASAN
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=8";
}
#endif

static char *dir;
static br_store *st;
static br_db *db;

static void open_store(void)
{
    struct br_store_opts o = {.path = dir};
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_store_open(&o, &st, &eb), BR_OK, "open: %s", eb.msg);
}

static void open_db(void)
{
    cr_assert_eq(br_store_db_open(st, "db", &db), BR_OK);
}

static void setup(void)
{
    struct br_errbuf eb = {{0}};
    dir = tu_tmpdir("att");
    open_store();
    cr_assert_eq(br_store_db_create(st, "db", &eb), BR_OK, "create: %s", eb.msg);
    open_db();
}

static void teardown(void)
{
    br_db_close(db);
    br_store_close(st);
    db = NULL;
    st = NULL;
    tu_rmtree(dir);
    free(dir);
}

static void reopen(void)
{
    br_db_close(db);
    br_store_close(st);
    open_store();
    open_db();
}

/* ---- looking inside the atts column family ---- */

/* Number of keys of db that begin with tag ('b', 'c', 'm', 'p'). */
static size_t count_keys(char tag)
{
    uint8_t start[5], end[5];
    memcpy(start, db->dbid, 4);
    start[4] = (uint8_t)tag;
    memcpy(end, start, 5);
    end[4]++;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)end, sizeof end);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->rdb, ro, st->cf[CF_ATTS]);
    size_t n = 0;
    for (rocksdb_iter_seek(it, (const char *)start, sizeof start); rocksdb_iter_valid(it);
         rocksdb_iter_next(it))
        n++;
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    return n;
}

struct rec {
    bool found;
    uint64_t blobid, length, refs;
    uint32_t chunks;
};

static struct rec blob_rec(const uint8_t key[32])
{
    struct rec r = {0};
    uint8_t k[37];
    memcpy(k, db->dbid, 4);
    k[4] = 'b';
    memcpy(k + 5, key, 32);
    char *v = NULL;
    size_t vl = 0;
    cr_assert_eq(store_get(st, CF_ATTS, k, sizeof k, &v, &vl), BR_OK);
    if (v) {
        cr_assert_eq(vl, 44u, "blob record length %zu", vl);
        const uint8_t *p = (const uint8_t *)v;
        r.found = true;
        r.blobid = store_rd64(p);
        r.length = store_rd64(p + 8);
        r.refs = store_rd64(p + 32);
        r.chunks = store_rd32(p + 40);
    }
    rocksdb_free(v);
    return r;
}

/* Chunk keys present for one blob id. */
static size_t count_chunks(uint64_t blobid)
{
    uint8_t start[13], end[13];
    memcpy(start, db->dbid, 4);
    start[4] = 'c';
    store_be64(start + 5, blobid);
    memcpy(end, start, 13);
    for (int i = 12; i >= 0 && ++end[i] == 0; i--)
        ;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)end, sizeof end);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->rdb, ro, st->cf[CF_ATTS]);
    size_t n = 0;
    for (rocksdb_iter_seek(it, (const char *)start, sizeof start); rocksdb_iter_valid(it);
         rocksdb_iter_next(it))
        n++;
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    return n;
}

/* ---- documents ---- */

static const struct br_write_opts WO = {BR_SYNC_NONE, true};

static struct br_rev put_atts(const char *id, const struct br_rev *rev,
                              const struct br_att_in *atts, size_t n)
{
    struct br_put p = {.id = id, .id_len = strlen(id), .rev = rev, .atts = atts, .n_atts = n};
    struct br_put_result res;
    br_err e = br_db_put(db, &p, &WO, &res);
    cr_assert_eq(e, BR_OK, "put %s: %s (%s)", id, br_strerror(e), res.reason);
    return res.rev;
}

static struct br_rev delete_doc(const char *id, const struct br_rev *rev)
{
    struct br_put p = {.id = id, .id_len = strlen(id), .rev = rev, .deleted = true};
    struct br_put_result res;
    br_err e = br_db_put(db, &p, &WO, &res);
    cr_assert_eq(e, BR_OK, "delete %s: %s (%s)", id, br_strerror(e), res.reason);
    return res.rev;
}

static struct br_doc *get_doc(const char *id)
{
    struct br_doc *d = NULL;
    br_err e = br_db_get(db, id, strlen(id), NULL, &d, NULL);
    cr_assert_eq(e, BR_OK, "get %s: %s", id, br_strerror(e));
    return d;
}

static struct br_att_in inline_att(const char *name, const void *data, size_t len)
{
    struct br_att_in a = {.name = name, .data = data, .len = len};
    return a;
}

/* Read a whole blob into a new buffer (caller frees); checks the announced length. */
static uint8_t *read_blob(const uint8_t key[32], size_t *len)
{
    br_att_reader *r = NULL;
    uint64_t length = 0;
    cr_assert_eq(br_att_reader_open(db, key, &r, &length), BR_OK);
    uint8_t *out = malloc(length ? length : 1);
    size_t got = 0;
    for (;;) {
        const uint8_t *p;
        size_t n;
        cr_assert_eq(br_att_reader_read(r, &p, &n), BR_OK);
        if (n == 0)
            break;
        cr_assert_leq(n, (size_t)BR_ATT_CHUNK);
        cr_assert_leq(got + n, length);
        memcpy(out + got, p, n);
        got += n;
    }
    br_att_reader_close(r);
    cr_assert_eq(got, length);
    *len = got;
    return out;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static void md5_digest(const void *p, size_t n, char out[48])
{
    uint8_t md[16];
    unsigned int ml = 0;
    cr_assert_eq(EVP_Digest(p, n, md, &ml, EVP_md5(), NULL), 1);
    memcpy(out, "md5-", 4);
    sodium_bin2base64(out + 4, 44, md, 16, sodium_base64_VARIANT_ORIGINAL);
}

static void content_key(const void *p, size_t n, uint8_t key[32])
{
    cr_assert_eq(crypto_generichash(key, 32, p, n, NULL, 0), 0);
}

/* Stream data in `piece`-byte writes; returns the key. */
static void stream_in(const uint8_t *data, size_t len, size_t piece, uint8_t key[32],
                      char digest[48])
{
    br_att_writer *w = NULL;
    uint64_t length = 0;
    cr_assert_eq(br_att_writer_open(db, &w), BR_OK);
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        cr_assert_eq(br_att_writer_write(w, data + off, n), BR_OK);
    }
    cr_assert_eq(br_att_writer_finish(w, key, digest, &length), BR_OK);
    cr_assert_eq(length, len);
}

TestSuite(att, .init = setup, .fini = teardown);

/* ---- ATT-01 ---- */

Test(att, att01_put_get_roundtrip_delete_then_not_found)
{
    static const char hello[] = "hello, attachment";
    struct br_att_in a = inline_att("hello.txt", hello, sizeof hello - 1);
    struct br_rev r1 = put_atts("doc", NULL, &a, 1);

    struct br_doc *d = get_doc("doc");
    cr_assert_eq(d->n_atts, 1u);
    cr_assert_str_eq(d->atts[0].name, "hello.txt");
    cr_assert_eq(d->atts[0].length, sizeof hello - 1);
    cr_assert_eq(d->atts[0].revpos, 1u);
    uint8_t key[32];
    memcpy(key, d->atts[0].key, 32);
    br_doc_free(d);
    size_t n;
    uint8_t *back = read_blob(key, &n);
    cr_assert_eq(n, sizeof hello - 1);
    cr_assert_eq(memcmp(back, hello, n), 0);
    free(back);

    struct br_put_result res;
    cr_assert_eq(br_db_att_delete(db, "doc", 3, &r1, "hello.txt", &WO, &res), BR_OK, "%s",
                 res.reason);
    cr_assert_eq(res.rev.gen, 2u);
    struct br_att_stub info;
    cr_assert_eq(br_db_att_info(db, "doc", 3, NULL, "hello.txt", &info), BR_ENOTFOUND);
    /* The last leaf naming the blob is gone, and so is the blob. */
    br_att_reader *r = NULL;
    cr_assert_eq(br_att_reader_open(db, key, &r, NULL), BR_ENOTFOUND);
    cr_assert_eq(count_keys('b'), 0u);
    cr_assert_eq(count_keys('c'), 0u);
    cr_assert_eq(count_keys('m'), 0u);
    /* Deleting it again: not there. */
    struct br_rev r2 = res.rev;
    cr_assert_eq(br_db_att_delete(db, "doc", 3, &r2, "hello.txt", &WO, &res), BR_ENOTFOUND);
    /* A stale revision: conflict. */
    cr_assert_eq(br_db_att_delete(db, "doc", 3, &r1, "hello.txt", &WO, &res), BR_ECONFLICT);
}

Test(att, att01_delete_all_attachments_of_a_doc)
{
    uint8_t x[100], y[70000], z[10];
    fill(x, sizeof x, 1);
    fill(y, sizeof y, 2);
    fill(z, sizeof z, 3);
    struct br_att_in a[3] = {inline_att("x.bin", x, sizeof x), inline_att("y.bin", y, sizeof y),
                             inline_att("z.bin", z, sizeof z)};
    struct br_rev r1 = put_atts("doc", NULL, a, 3);
    cr_assert_eq(count_keys('b'), 3u);
    cr_assert_eq(count_keys('c'), 1u + 2u + 1u);

    /* A new revision with no attachments drops them all. */
    struct br_rev r2 = put_atts("doc", &r1, NULL, 0);
    struct br_doc *d = get_doc("doc");
    cr_assert_eq(d->n_atts, 0u);
    cr_assert(br_rev_eq(&d->rev, &r2));
    br_doc_free(d);
    cr_assert_eq(count_keys('b'), 0u);
    cr_assert_eq(count_keys('c'), 0u);
    cr_assert_eq(count_keys('m'), 0u);
}

/* ---- ATT-02 ---- */

Test(att, att02_list_names_and_exists)
{
    struct br_att_in a[3] = {inline_att("c", "3", 1), inline_att("a.txt", "1", 1),
                             inline_att("b.png", "2", 1)};
    put_atts("doc", NULL, a, 3);
    struct br_doc *d = get_doc("doc");
    cr_assert_eq(d->n_atts, 3u);
    cr_assert_str_eq(d->atts[0].name, "a.txt");
    cr_assert_str_eq(d->atts[1].name, "b.png");
    cr_assert_str_eq(d->atts[2].name, "c");
    br_doc_free(d);

    struct br_att_stub info;
    cr_assert_eq(br_db_att_info(db, "doc", 3, NULL, "b.png", &info), BR_OK);
    cr_assert_str_eq(info.name, "b.png");
    br_att_stub_fini(&info);
    cr_assert_eq(br_db_att_info(db, "doc", 3, NULL, "nope", &info), BR_ENOTFOUND);
    cr_assert_eq(br_db_att_info(db, "nodoc", 5, NULL, "a.txt", &info), BR_ENOTFOUND);

    /* Duplicate names in one write are refused. */
    struct br_att_in dup[2] = {inline_att("same", "1", 1), inline_att("same", "2", 1)};
    struct br_put p = {.id = "dup", .id_len = 3, .atts = dup, .n_atts = 2};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &WO, &res), BR_EINVAL);
}

/* ---- ATT-03 ---- */

Test(att, att03_invalid_names_rejected)
{
    cr_assert(br_att_name_valid("ok.txt", 6));
    cr_assert(br_att_name_valid("caf\xc3\xa9 menu.pdf", strlen("caf\xc3\xa9 menu.pdf")));
    cr_assert_not(br_att_name_valid("", 0));
    cr_assert_not(br_att_name_valid(NULL, 0));
    cr_assert_not(br_att_name_valid("a/b", 3));
    cr_assert_not(br_att_name_valid("a\\b", 3));
    cr_assert_not(br_att_name_valid("a\0b", 3));
    cr_assert_not(br_att_name_valid("_reserved", 9));
    cr_assert_not(br_att_name_valid("bad\xff", 4));
    cr_assert_not(br_att_name_valid("\xc0\xaf", 2)); /* overlong '/' */
    char big[BR_ATT_NAME_MAX + 1];
    memset(big, 'n', sizeof big);
    cr_assert(br_att_name_valid(big, BR_ATT_NAME_MAX));
    cr_assert_not(br_att_name_valid(big, BR_ATT_NAME_MAX + 1));

    const char *bad[] = {"", "a/b", "a\\b", "_x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct br_att_in a = inline_att(bad[i], "x", 1);
        struct br_put p = {.id = "doc", .id_len = 3, .atts = &a, .n_atts = 1};
        struct br_put_result res;
        cr_assert_eq(br_db_put(db, &p, &WO, &res), BR_EBADNAME, "name \"%s\"", bad[i]);
    }
    uint8_t key[32];
    char digest[48];
    stream_in((const uint8_t *)"x", 1, 1, key, digest);
    struct br_put_result res;
    cr_assert_eq(br_db_att_put(db, "doc", 3, NULL, "a/b", NULL, key, &WO, &res), BR_EBADNAME);
    cr_assert_eq(count_keys('c'), 1u); /* the streamed blob, unreferenced until the sweep */
}

/* ---- ATT-04 ---- */

Test(att, att04_content_type_from_name)
{
    cr_assert_str_eq(br_att_content_type("a.png"), "image/png");
    cr_assert_str_eq(br_att_content_type("PHOTO.JPG"), "image/jpeg");
    cr_assert_str_eq(br_att_content_type("notes.txt"), "text/plain");
    cr_assert_str_eq(br_att_content_type("data.json"), "application/json");
    cr_assert_str_eq(br_att_content_type("archive.tar.gz"), "application/gzip");
    cr_assert_str_eq(br_att_content_type("README"), "application/octet-stream");
    cr_assert_str_eq(br_att_content_type("x.unknownext"), "application/octet-stream");
    cr_assert_str_eq(br_att_content_type("trailing."), "application/octet-stream");

    struct br_att_in a[2] = {inline_att("pic.png", "png", 3), inline_att("raw.png", "raw", 3)};
    a[1].content_type = "application/x-custom";
    put_atts("doc", NULL, a, 2);
    struct br_doc *d = get_doc("doc");
    cr_assert_str_eq(d->atts[0].name, "pic.png");
    cr_assert_str_eq(d->atts[0].content_type, "image/png");
    cr_assert_str_eq(d->atts[1].content_type, "application/x-custom");
    br_doc_free(d);

    /* A content type that cannot go back in a header is refused. */
    struct br_att_in b = inline_att("x", "x", 1);
    b.content_type = "text/plain\r\nX-Evil: 1";
    struct br_put p = {.id = "doc2", .id_len = 4, .atts = &b, .n_atts = 1};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &WO, &res), BR_EINVAL);
}

/* ---- ATT-05 ---- */

Test(att, att05_small_is_one_chunk_large_is_ceil_len_over_64k)
{
    const size_t sizes[] = {0,
                            1,
                            4095,
                            4096,
                            BR_ATT_CHUNK - 1,
                            BR_ATT_CHUNK,
                            BR_ATT_CHUNK + 1,
                            3 * BR_ATT_CHUNK,
                            (1u << 20) + 5};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t len = sizes[i];
        uint8_t *data = malloc(len ? len : 1);
        fill(data, len, (uint32_t)(100 + i));
        char id[16], name[16];
        snprintf(id, sizeof id, "doc%zu", i);
        snprintf(name, sizeof name, "blob%zu", i);
        struct br_att_in a = inline_att(name, data, len);
        put_atts(id, NULL, &a, 1);
        struct br_doc *d = get_doc(id);
        cr_assert_eq(d->atts[0].length, len);
        uint8_t key[32];
        memcpy(key, d->atts[0].key, 32);
        br_doc_free(d);

        struct rec r = blob_rec(key);
        uint32_t want = (uint32_t)((len + BR_ATT_CHUNK - 1) / BR_ATT_CHUNK);
        cr_assert(r.found);
        cr_assert_eq(r.length, len);
        cr_assert_eq(r.chunks, want, "len %zu: %u chunks, want %u", len, r.chunks, want);
        cr_assert_eq(count_chunks(r.blobid), want);
        cr_assert_eq(r.refs, 1u);
        size_t n;
        uint8_t *back = read_blob(key, &n);
        cr_assert_eq(n, len);
        cr_assert_eq(memcmp(back, data, len), 0, "len %zu differs", len);
        free(back);
        free(data);
    }
}

/* ---- ATT-06 ---- */

Test(att, att06_info_without_reading_data)
{
    static const char text[] = "hello world";
    uint8_t key[32];
    char digest[48];
    stream_in((const uint8_t *)text, 11, 4, key, digest);
    cr_assert_str_eq(digest, "md5-XrY7u+Ae7tCTyyK7j1rNww==");
    struct br_put_result res;
    cr_assert_eq(br_db_att_put(db, "doc", 3, NULL, "greeting.txt", NULL, key, &WO, &res), BR_OK,
                 "%s", res.reason);

    /* Take the data away: info still answers from the stub alone; reading fails cleanly. */
    struct rec r = blob_rec(key);
    uint8_t start[17], end[17];
    memcpy(start, db->dbid, 4);
    start[4] = 'c';
    store_be64(start + 5, r.blobid);
    store_be32(start + 13, 0);
    memcpy(end, start, 17);
    store_be32(end + 13, UINT32_MAX);
    char *err = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_delete_range_cf(st->rdb, wo, st->cf[CF_ATTS], (const char *)start, sizeof start,
                            (const char *)end, sizeof end, &err);
    rocksdb_writeoptions_destroy(wo);
    cr_assert_null(err);

    struct br_att_stub info;
    cr_assert_eq(br_db_att_info(db, "doc", 3, &res.rev, "greeting.txt", &info), BR_OK);
    cr_assert_eq(info.length, 11u);
    cr_assert_str_eq(info.digest, "md5-XrY7u+Ae7tCTyyK7j1rNww==");
    cr_assert_str_eq(info.content_type, "text/plain");
    cr_assert_eq(info.revpos, 1u);
    cr_assert_eq(memcmp(info.key, key, 32), 0);
    br_att_stub_fini(&info);

    br_att_reader *rd = NULL;
    uint64_t length = 0;
    cr_assert_eq(br_att_reader_open(db, key, &rd, &length), BR_OK);
    cr_assert_eq(length, 11u);
    const uint8_t *p;
    size_t n;
    cr_assert_eq(br_att_reader_read(rd, &p, &n), BR_ESTORE);
    br_att_reader_close(rd);
}

/* ---- ATT-07 ---- */

Test(att, att07_streaming_write_and_read_roundtrip)
{
    size_t len = 5 * BR_ATT_CHUNK + 12345;
    uint8_t *data = malloc(len);
    fill(data, len, 7);
    uint8_t key[32], want[32];
    char digest[48], want_digest[48];
    stream_in(data, len, 1000, key, digest); /* pieces that straddle chunk borders */
    content_key(data, len, want);
    md5_digest(data, len, want_digest);
    cr_assert_eq(memcmp(key, want, 32), 0);
    cr_assert_str_eq(digest, want_digest);
    cr_assert_eq(count_keys('p'), 0u);

    struct br_put_result res;
    cr_assert_eq(br_db_att_put(db, "doc", 3, NULL, "big.bin", "application/x-big", key, &WO, &res),
                 BR_OK, "%s", res.reason);
    struct br_rev r1 = res.rev;
    size_t n;
    uint8_t *back = read_blob(key, &n);
    cr_assert_eq(n, len);
    cr_assert_eq(memcmp(back, data, len), 0);
    free(back);

    /* A second attachment on the next revision keeps the first as a stub with its revpos. */
    uint8_t key2[32];
    stream_in((const uint8_t *)"tiny", 4, 4096, key2, digest);
    cr_assert_eq(br_db_att_put(db, "doc", 3, &r1, "tiny.txt", NULL, key2, &WO, &res), BR_OK, "%s",
                 res.reason);
    struct br_doc *d = get_doc("doc");
    cr_assert_eq(d->n_atts, 2u);
    cr_assert_str_eq(d->atts[0].name, "big.bin");
    cr_assert_str_eq(d->atts[0].content_type, "application/x-big");
    cr_assert_eq(d->atts[0].revpos, 1u);
    cr_assert_str_eq(d->atts[1].name, "tiny.txt");
    cr_assert_eq(d->atts[1].revpos, 2u);
    br_doc_free(d);
    cr_assert_eq(blob_rec(key).refs, 1u);
    /* A stale parent: conflict, nothing written. */
    cr_assert_eq(br_db_att_put(db, "doc", 3, &r1, "tiny.txt", NULL, key2, &WO, &res), BR_ECONFLICT);
    free(data);
}

Test(att, att07_streaming_abort_leaves_nothing)
{
    size_t len = 3 * BR_ATT_CHUNK + 77;
    uint8_t *data = malloc(len);
    fill(data, len, 8);
    br_att_writer *w = NULL;
    cr_assert_eq(br_att_writer_open(db, &w), BR_OK);
    cr_assert_eq(count_keys('p'), 1u);
    cr_assert_eq(br_att_writer_write(w, data, len), BR_OK);
    cr_assert_eq(count_keys('c'), 3u); /* full chunks are written as they fill */
    br_att_writer_abort(w);
    cr_assert_eq(count_keys('c'), 0u);
    cr_assert_eq(count_keys('p'), 0u);
    cr_assert_eq(count_keys('b'), 0u);
    cr_assert_eq(count_keys('m'), 0u);
    br_att_writer_abort(NULL);
    free(data);
}

/* ---- content addressing and reference counts ---- */

Test(att, same_content_on_two_documents_stored_once)
{
    size_t len = 2 * BR_ATT_CHUNK + 3;
    uint8_t *data = malloc(len);
    fill(data, len, 9);
    struct br_att_in a = inline_att("one.bin", data, len);
    put_atts("a", NULL, &a, 1);
    a.name = "other-name.bin";
    put_atts("b", NULL, &a, 1);
    uint8_t key[32];
    content_key(data, len, key);
    cr_assert_eq(count_keys('b'), 1u);
    cr_assert_eq(count_keys('c'), 3u);
    cr_assert_eq(count_keys('m'), 1u);
    cr_assert_eq(blob_rec(key).refs, 2u);

    /* Two more in one batch, plus a streamed copy of the same bytes: still one copy. */
    struct br_put docs[2] = {{.id = "c", .id_len = 1, .atts = &a, .n_atts = 1},
                             {.id = "d", .id_len = 1, .atts = &a, .n_atts = 1}};
    struct br_put_result res[2];
    cr_assert_eq(br_db_bulk(db, docs, 2, &WO, res), BR_OK);
    cr_assert_eq(res[0].err, BR_OK);
    cr_assert_eq(res[1].err, BR_OK);
    uint8_t skey[32];
    char digest[48];
    stream_in(data, len, 65536, skey, digest);
    cr_assert_eq(memcmp(skey, key, 32), 0);
    cr_assert_eq(count_keys('b'), 1u);
    cr_assert_eq(count_keys('c'), 3u);
    cr_assert_eq(count_keys('p'), 0u);
    cr_assert_eq(blob_rec(key).refs, 4u);

    /* New content twice in one batch: staged once. */
    uint8_t fresh[300];
    fill(fresh, sizeof fresh, 10);
    struct br_att_in f = inline_att("f", fresh, sizeof fresh);
    struct br_put docs2[2] = {{.id = "e", .id_len = 1, .atts = &f, .n_atts = 1},
                              {.id = "f", .id_len = 1, .atts = &f, .n_atts = 1}};
    cr_assert_eq(br_db_bulk(db, docs2, 2, &WO, res), BR_OK);
    cr_assert_eq(res[0].err, BR_OK);
    cr_assert_eq(res[1].err, BR_OK);
    uint8_t fkey[32];
    content_key(fresh, sizeof fresh, fkey);
    cr_assert_eq(blob_rec(fkey).refs, 2u);
    cr_assert_eq(count_keys('b'), 2u);
    cr_assert_eq(count_keys('c'), 4u);
    free(data);
}

Test(att, refcount_drops_and_blob_goes_with_last_leaf)
{
    uint8_t data[5000];
    fill(data, sizeof data, 11);
    uint8_t key[32];
    content_key(data, sizeof data, key);
    struct br_att_in a = inline_att("d.bin", data, sizeof data);
    struct br_rev ra = put_atts("a", NULL, &a, 1);
    struct br_rev rb = put_atts("b", NULL, &a, 1);
    cr_assert_eq(blob_rec(key).refs, 2u);

    /* An edit that keeps the attachment as a stub: the new leaf replaces the old, count kept. */
    struct br_att_in keep = {.name = "d.bin", .stub = true};
    ra = put_atts("a", &ra, &keep, 1);
    cr_assert_eq(blob_rec(key).refs, 2u);
    struct br_doc *d = get_doc("a");
    cr_assert_eq(d->atts[0].revpos, 1u);
    cr_assert_eq(d->atts[0].length, sizeof data);
    br_doc_free(d);

    /* A stub naming nothing: not found. */
    struct br_att_in ghost = {.name = "ghost", .stub = true};
    struct br_put p = {.id = "a", .id_len = 1, .rev = &ra, .atts = &ghost, .n_atts = 1};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &WO, &res), BR_ENOTFOUND);

    delete_doc("a", &ra);
    cr_assert_eq(blob_rec(key).refs, 1u);
    delete_doc("b", &rb);
    cr_assert_not(blob_rec(key).found);
    cr_assert_eq(count_keys('c'), 0u);
    cr_assert_eq(count_keys('m'), 0u);
}

Test(att, replicated_stub_resolves_by_digest)
{
    uint8_t data[3000];
    fill(data, sizeof data, 12);
    struct br_att_in a = inline_att("orig.bin", data, sizeof data);
    put_atts("a", NULL, &a, 1);
    char digest[48];
    md5_digest(data, sizeof data, digest);

    /* A replicated revision whose attachment this database holds under another doc. */
    struct br_rev h;
    cr_assert_eq(br_rev_parse("1-0123456789abcdef0123456789abcdef", 34, &h), BR_OK);
    struct br_att_in stub = {.name = "copy.bin", .stub = true, .digest = digest, .revpos = 1};
    struct br_put p = {
        .id = "r", .id_len = 1, .atts = &stub, .n_atts = 1, .history = &h, .n_history = 1};
    struct br_write_opts rwo = {BR_SYNC_NONE, false};
    struct br_put_result res;
    cr_assert_eq(br_db_put(db, &p, &rwo, &res), BR_OK, "%s", res.reason);
    struct br_doc *d = get_doc("r");
    cr_assert_eq(d->n_atts, 1u);
    cr_assert_str_eq(d->atts[0].digest, digest);
    cr_assert_eq(d->atts[0].length, sizeof data);
    br_doc_free(d);
    uint8_t key[32];
    content_key(data, sizeof data, key);
    cr_assert_eq(blob_rec(key).refs, 2u);

    /* A digest nobody holds: not found. */
    struct br_rev h2;
    cr_assert_eq(br_rev_parse("1-ffff456789abcdef0123456789abcdef", 34, &h2), BR_OK);
    struct br_att_in missing = {
        .name = "m", .stub = true, .digest = "md5-AAAAAAAAAAAAAAAAAAAAAA=="};
    struct br_put p2 = {
        .id = "r2", .id_len = 2, .atts = &missing, .n_atts = 1, .history = &h2, .n_history = 1};
    cr_assert_eq(br_db_put(db, &p2, &rwo, &res), BR_ENOTFOUND);
}

/* ---- allocation torture ---- */

Test(att, torture_every_allocation_failure_is_clean)
{
    size_t len = BR_ATT_CHUNK + 100;
    uint8_t *data = malloc(len);
    fill(data, len, 14);
    struct br_att_in a[2] = {inline_att("one", data, len), inline_att("two", "2", 1)};
    struct br_put p = {.id = "t", .id_len = 1, .atts = a, .n_atts = 2};
    struct br_put_result res;
    br_err e = BR_ENOMEM;
    for (long n = 0; e != BR_OK; n++) {
        cr_assert_lt(n, 10000);
        br_alloc_fail_after(n);
        e = br_db_put(db, &p, &WO, &res);
        br_alloc_fail_after(-1);
        cr_assert(e == BR_OK || e == BR_ENOMEM, "fail after %ld: %s", n, br_strerror(e));
    }
    uint8_t key[32];
    content_key(data, len, key);
    cr_assert_eq(blob_rec(key).refs, 1u);
    cr_assert_eq(count_keys('b'), 2u);
    cr_assert_eq(count_keys('c'), 3u);

    br_att_writer *w = NULL;
    e = BR_ENOMEM;
    for (long n = 0; e != BR_OK; n++) {
        cr_assert_lt(n, 10000);
        br_alloc_fail_after(n);
        e = br_att_writer_open(db, &w);
        br_alloc_fail_after(-1);
        cr_assert(e == BR_OK || e == BR_ENOMEM, "fail after %ld: %s", n, br_strerror(e));
    }
    br_att_writer_abort(w);
    cr_assert_eq(count_keys('p'), 0u);
    free(data);
}

/* ---- the sweep at open ---- */

Test(att, sweep_removes_unattached_blob_and_keeps_referenced)
{
    uint8_t k1[32], k2[32];
    char digest[48];
    stream_in((const uint8_t *)"kept bytes", 10, 3, k1, digest);
    stream_in((const uint8_t *)"lost bytes", 10, 3, k2, digest);
    struct br_put_result res;
    cr_assert_eq(br_db_att_put(db, "doc", 3, NULL, "k", NULL, k1, &WO, &res), BR_OK);
    cr_assert_eq(blob_rec(k2).refs, 0u);
    reopen();
    cr_assert_eq(blob_rec(k1).refs, 1u);
    cr_assert_not(blob_rec(k2).found);
    cr_assert_eq(count_keys('b'), 1u);
    cr_assert_eq(count_keys('c'), 1u);
    cr_assert_eq(count_keys('m'), 1u);
    size_t n;
    uint8_t *back = read_blob(k1, &n);
    cr_assert_eq(n, 10u);
    cr_assert_eq(memcmp(back, "kept bytes", 10), 0);
    free(back);
}

Test(att, sweep_after_crash_removes_unfinished_upload)
{
    /* The writer's process dies mid-upload (no finish, no close): the next open sweeps it. */
    br_db_close(db);
    br_store_close(st);
    db = NULL;
    st = NULL;
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        struct br_store_opts o = {.path = dir};
        br_store *cs = NULL;
        br_db *cdb = NULL;
        br_att_writer *w = NULL;
        static uint8_t buf[5 * BR_ATT_CHUNK + 10];
        fill(buf, sizeof buf, 13);
        if (br_store_open(&o, &cs, NULL) || br_store_db_open(cs, "db", &cdb) ||
            br_att_writer_open(cdb, &w) || br_att_writer_write(w, buf, sizeof buf))
            _exit(2);
        st = cs;
        db = cdb;
        if (count_keys('p') != 1 || count_keys('c') != 5)
            _exit(3);
        _exit(0); /* a crash: nothing is closed or finished; the writes are in the WAL */
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);

    /* The upload survived the crash in the WAL; the open sweeps it (and says so). */
    tu_log_capture();
    br_log_set_level(BR_LOG_INFO);
    open_store();
    cr_assert(tu_log_contains("uploads=1"), "the sweep did not report the upload");
    open_db();
    cr_assert_eq(count_keys('p'), 0u);
    cr_assert_eq(count_keys('c'), 0u);
    cr_assert_eq(count_keys('b'), 0u);
}

/* ---- memory: 200 MiB through a writer and a reader ---- */

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    cr_assert_not_null(f);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Deterministic bytes at any offset: word i is splitmix64(i). */
static uint64_t splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void pattern(uint8_t *p, uint64_t off, size_t n)
{
    /* off and n are multiples of 8 here */
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = splitmix((off + i) / 8);
        memcpy(p + i, &w, 8);
    }
}

Test(att, stream_200mib_roundtrip_peak_rss_stays_small)
{
    const uint64_t total = 200ull << 20;
    const size_t piece = 96 * 1024; /* not a multiple of the chunk */
    uint8_t *buf = malloc(piece);
    uint8_t *want = malloc(BR_ATT_CHUNK);
    uint8_t key[32], hkey[32];
    char digest[48];
    uint64_t length = 0;
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);

    FILE *cr = fopen("/proc/self/clear_refs", "w"); /* "5" resets the peak RSS */
    if (cr) {
        fputs("5", cr);
        fclose(cr);
    }
    long rss0 = status_kb("VmRSS");
    br_att_writer *w = NULL;
    cr_assert_eq(br_att_writer_open(db, &w), BR_OK);
    for (uint64_t off = 0; off < total; off += piece) {
        size_t n = total - off < piece ? (size_t)(total - off) : piece;
        pattern(buf, off, n);
        crypto_generichash_update(&h, buf, n);
        cr_assert_eq(br_att_writer_write(w, buf, n), BR_OK);
    }
    cr_assert_eq(br_att_writer_finish(w, key, digest, &length), BR_OK);
    crypto_generichash_final(&h, hkey, 32);
    cr_assert_eq(length, total);
    cr_assert_eq(memcmp(key, hkey, 32), 0);
    struct br_put_result res;
    cr_assert_eq(br_db_att_put(db, "big", 3, NULL, "big.bin", NULL, key, &WO, &res), BR_OK);
    long hwm_write = status_kb("VmHWM");

    br_att_reader *r = NULL;
    cr_assert_eq(br_att_reader_open(db, key, &r, &length), BR_OK);
    cr_assert_eq(length, total);
    uint64_t got = 0;
    for (;;) {
        const uint8_t *p;
        size_t n;
        cr_assert_eq(br_att_reader_read(r, &p, &n), BR_OK);
        if (n == 0)
            break;
        pattern(want, got, n);
        cr_assert_eq(memcmp(p, want, n), 0, "differs in the chunk at %llu",
                     (unsigned long long)got);
        got += n;
    }
    br_att_reader_close(r);
    cr_assert_eq(got, total);
    long hwm = status_kb("VmHWM");
    long growth_mib = (hwm - rss0) / 1024;
    cr_log_info("200 MiB round trip: RSS before %ld KiB, peak after write %ld KiB, peak after "
                "read %ld KiB, growth %ld MiB",
                rss0, hwm_write, hwm, growth_mib);
    fprintf(stderr, "att: 200 MiB round trip peak RSS growth %ld MiB (write peak +%ld MiB)\n",
            growth_mib, (hwm_write - rss0) / 1024);
    free(buf);
    free(want);
#ifndef TEST_TSAN
    /* RocksDB's memtables (2 x 16 MiB for atts) are most of it; the blob itself never is. */
    cr_assert_lt(growth_mib, 64, "peak RSS grew by %ld MiB for a 200 MiB blob", growth_mib);
#endif
}
