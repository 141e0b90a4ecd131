/* upload_test.c — streamed attachment uploads against a real `barrel serve` started with
 * --max-body 1 MiB: an attachment far larger than --max-body is stored and read back intact;
 * the node's peak RSS during a 64 MiB upload stays far below the upload's size; a client
 * that leaves mid-upload leaves no revision and no unfinished blob (the store's sweep at the
 * next open finds nothing to remove); a trickling uploader is cut by the request timeout; a
 * declared size beyond --max-attachment is 413. */
#define MAX_BODY (1 << 20)
#include "serve_util.h"

TestSuite(upload, .init = setup, .fini = teardown, .timeout = 120);

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = (unsigned char)s;
    }
}

/* Send the headers of a PUT of `len` bytes; returns the connection. */
static int put_head(const char *path, uint64_t len)
{
    int fd = connect_node();
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-test\r\n"
                     "Content-Length: %llu\r\n\r\n",
                     path, (unsigned long long)len);
    send_all(fd, head, (size_t)n);
    return fd;
}

static int put_bytes(struct resp *r, const char *path, const void *data, size_t len)
{
    int fd = put_head(path, len);
    send_all(fd, data, len);
    bool ok = read_resp(fd, r, 60000);
    close(fd);
    cr_assert(ok, "PUT %s: no response", path);
    return r->status;
}

/* VmHWM (peak resident set) of the node in KiB. */
static long vm_hwm_kib(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f);
    long kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    }
    fclose(f);
    cr_assert(kib > 0);
    return kib;
}

/* GET the (large, chunked) attachment at path and compare it with want. */
static void expect_body(const char *path, const unsigned char *want, size_t n)
{
    int fd = connect_node();
    send_req(fd, "GET", path, NULL, NULL, NULL);
    size_t cap = n + (1 << 20), len = 0;
    char *raw = malloc(cap + 1);
    cr_assert(raw);
    /* read until the last chunk's "0\r\n\r\n" or the connection ends */
    for (;;) {
        if (len == cap)
            break;
        ssize_t k = recv_deadline(fd, raw + len, cap - len, 30000);
        if (k <= 0)
            break;
        len += (size_t)k;
        if (len >= 5 && memcmp(raw + len - 5, "0\r\n\r\n", 5) == 0)
            break;
    }
    close(fd);
    raw[len] = '\0';
    char *p = strstr(raw, "\r\n\r\n");
    cr_assert(p, "no headers");
    cr_assert(strncmp(raw, "HTTP/1.1 200", 12) == 0, "%.40s", raw);
    p += 4;
    char *end = raw + len;
    size_t got = 0;
    bool same = true, last = false;
    while (p < end) {
        char *e;
        size_t k = strtoul(p, &e, 16);
        cr_assert(e + 2 <= end && e[0] == '\r' && e[1] == '\n', "bad chunk at %zu", got);
        p = e + 2;
        if (k == 0) {
            last = true;
            break;
        }
        cr_assert((size_t)(end - p) >= k + 2, "truncated at %zu of %zu", got, n);
        if (got + k > n || memcmp(p, want + got, k) != 0)
            same = false;
        got += k;
        p += k + 2;
    }
    free(raw);
    cr_expect(last, "no last chunk after %zu of %zu bytes", got, n);
    cr_expect_eq(got, n);
    cr_expect(same, "attachment bytes differ");
}

Test(upload, attachment_larger_than_max_body_is_streamed_and_read_back)
{
    make_db("u");
    size_t n = (size_t)32 << 20;
    unsigned char *data = malloc(n);
    cr_assert(data);
    fill(data, n, 1);
    struct resp r;
    cr_assert_eq(put_bytes(&r, "/u/d/big.bin", data, n), 201, "%s", r.body);
    cr_expect(strncmp(jstr(&r, "rev"), "1-", 2) == 0, "%s", r.body);
    resp_fini(&r);
    /* the stub's digest is the one GET serves */
    cr_assert_eq(get(&r, "/u/d"), 200);
    json_t *st = json_object_get(json_object_get(r.json, "_attachments"), "big.bin");
    cr_assert(st, "%s", r.body);
    cr_expect_eq(json_integer_value(json_object_get(st, "length")), (json_int_t)n);
    char digest[80];
    snprintf(digest, sizeof digest, "%s", json_string_value(json_object_get(st, "digest")));
    resp_fini(&r);
    expect_body("/u/d/big.bin", data, n);
    /* the same bytes again, as a second attachment: the same content digest */
    cr_assert_eq(get(&r, "/u/d"), 200);
    char path[256];
    snprintf(path, sizeof path, "/u/d/copy.bin?rev=%s", jstr(&r, "_rev"));
    resp_fini(&r);
    cr_assert_eq(put_bytes(&r, path, data, n), 201, "%s", r.body);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/u/d"), 200);
    st = json_object_get(json_object_get(r.json, "_attachments"), "copy.bin");
    cr_expect_str_eq(json_string_value(json_object_get(st, "digest")), digest);
    resp_fini(&r);
    /* a document body is still bound by --max-body (declared: answered before any body, so
     * the answer cannot be lost to a reset from unread bytes) */
    int fd = connect_node();
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "PUT /u/small HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n",
                      MAX_BODY + 64);
    send_all(fd, head, (size_t)hn);
    cr_assert(read_resp(fd, &r, 10000));
    close(fd);
    expect_error(&r, 413, "too_large");
    resp_fini(&r);
    free(data);
    still_serving();
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1 /* its quarantine keeps freed memory resident: RSS says nothing */
#else
#define UNDER_ASAN 0
#endif

Test(upload, peak_rss_stays_far_below_a_64_mib_upload)
{
    if (UNDER_ASAN)
        cr_skip_test("RSS is not meaningful under AddressSanitizer");
    make_db("m");
    size_t small = (size_t)1 << 20;
    unsigned char *data = malloc((size_t)64 << 20);
    cr_assert(data);
    fill(data, (size_t)64 << 20, 2);
    struct resp r;
    /* warm up: the store's column family, the worker threads, the writer */
    cr_assert_eq(put_bytes(&r, "/m/warm/a.bin", data, small), 201, "%s", r.body);
    resp_fini(&r);
    long base = vm_hwm_kib();
    cr_assert_eq(put_bytes(&r, "/m/d/big.bin", data, (size_t)64 << 20), 201, "%s", r.body);
    resp_fini(&r);
    long peak = vm_hwm_kib();
    long grew_mib = (peak - base) / 1024;
    cr_log_info("VmHWM baseline %ld KiB, after a 64 MiB upload %ld KiB (+%ld MiB)", base, peak,
                grew_mib);
    fprintf(stderr, "upload_rss: baseline_kib=%ld peak_kib=%ld grew_mib=%ld\n", base, peak,
            grew_mib);
    /* RocksDB's memtables (16 MiB for all column families) and the 1 MiB queue may grow;
     * a body collected whole would add 64 MiB on top */
    cr_expect_lt(grew_mib, 40, "peak RSS grew by %ld MiB during a 64 MiB upload", grew_mib);
    expect_body("/m/d/big.bin", data, (size_t)64 << 20);
    free(data);
}

/* Run `barrel --data DIR --log-level info check DB` (the node stopped): its store open sweeps
 * unfinished uploads and unreferenced blobs and logs "swept" when it finds any. */
static bool check_sweeps_nothing(const char *db, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/barrel --data %s --log-level info check %s 2>&1",
             BARREL_BINARY_DIR, dir, db);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t len = fread(out, 1, cap - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "check failed: %s", out);
    return strstr(out, "swept") == NULL;
}

Test(upload, client_leaving_mid_upload_stores_nothing)
{
    make_db("g");
    size_t n = (size_t)8 << 20;
    unsigned char *data = malloc(n);
    cr_assert(data);
    fill(data, n, 3);
    /* declare 32 MiB, send 8, leave */
    int fd = put_head("/g/d/big.bin", (uint64_t)32 << 20);
    send_all(fd, data, n);
    usleep(300 * 1000);
    close(fd);
    /* and one that leaves right after the headers */
    fd = put_head("/g/e/x.bin", 1000);
    close(fd);
    usleep(500 * 1000);
    struct resp r;
    get(&r, "/g/d");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    get(&r, "/g/d/big.bin");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    get(&r, "/g/e");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    cr_assert_eq(doc_count("g"), 0);
    /* a complete upload afterwards works */
    cr_assert_eq(put_bytes(&r, "/g/f/ok.bin", data, 100000), 201, "%s", r.body);
    resp_fini(&r);
    free(data);
    /* stop the node: the next open of the store finds no unfinished upload to sweep */
    int st = stop_node(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char out[4096];
    cr_expect(check_sweeps_nothing("g", out, sizeof out), "left behind: %s", out);
    /* restart for the teardown */
    char line[512];
    fclose(node_out);
    pid = start_node(dir, &port, line, sizeof line, &node_out);
    cr_assert(port > 0, "node did not restart: %s", line);
}

Test(upload, trickling_uploader_is_cut_by_the_request_timeout)
{
    make_db("t");
    int fd = put_head("/t/d/slow.bin", 1000);
    double t0 = now_s();
    bool closed = false;
    for (int i = 0; i < 100 && !closed; i++) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        char c;
        ssize_t k = recv_deadline(fd, &c, 1, 200);
        if (k == 0 || k == 1) /* EOF (or an answer): the node gave up */
            closed = true;
    }
    double took = now_s() - t0;
    close(fd);
    cr_assert(closed, "a trickle of 5 bytes/s was not cut in %.1f s", took);
    cr_expect_lt(took, TIMEOUT_S + 3.0, "cut after %.1f s", took);
    struct resp r;
    get(&r, "/t/d");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    still_serving();
}

Test(upload, declared_size_beyond_max_attachment_is_413)
{
    make_db("x");
    int fd = put_head("/x/d/huge.bin", (uint64_t)5 << 30); /* default limit: 4 GiB */
    struct resp r;
    cr_assert(read_resp(fd, &r, 5000));
    close(fd);
    expect_error(&r, 413, "too_large");
    resp_fini(&r);
    /* an error found before the body is in (no such database) is answered at once */
    fd = put_head("/nodb/d/a.bin", (uint64_t)64 << 20);
    cr_assert(read_resp(fd, &r, 5000));
    close(fd);
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    still_serving();
}
