/* serve_util.h — what the `barrel serve` tests share: start the built binary on a fresh data
 * directory and a free port, stop it with SIGTERM, and a tiny raw-socket HTTP/1.1 client.
 * Function definitions live here (static) because each *_test.c is its own binary; a test
 * file includes this once and defines its TestSuite(serve...) with setup/teardown below.
 * The teardown requires a clean exit (status 0): under the sanitizer build that is also
 * LeakSanitizer's verdict on the whole node. */
#ifndef BARREL_TESTS_SERVE_UTIL_H
#define BARREL_TESTS_SERVE_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <poll.h>

#include "testutil.h"

#pragma GCC diagnostic ignored "-Wunused-function"

#ifndef MAX_BODY
#define MAX_BODY 65536
#endif
#define TIMEOUT_S 2

static char *dir;
static pid_t pid;
static int port;

/* Start `barrel --data DIR serve --port 0 ...`; read the port from its first line. */
static FILE *node_out; /* the node's stdout and stderr, kept open while it runs */

static pid_t start_node(const char *data, int *port_out, char *line, size_t cap, FILE **out)
{
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t p = fork();
    cr_assert(p >= 0);
    if (p == 0) {
        /* a node outlives no test: killed with the test's worker process, even when a
         * test is skipped or crashes before its teardown (they used to pile up) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        char maxb[32], tmo[32];
        snprintf(maxb, sizeof maxb, "%d", MAX_BODY);
        snprintf(tmo, sizeof tmo, "%d", TIMEOUT_S);
        execl(BARREL_BINARY_DIR "/barrel", "barrel", "--data", data, "serve", "--port", "0",
              "--max-body", maxb, "--request-timeout", tmo, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    cr_assert(f);
    line[0] = '\0';
    if (!fgets(line, (int)cap, f))
        line[0] = '\0';
    *out = f;
    const char *p2 = strstr(line, "http://127.0.0.1:");
    *port_out = p2 ? atoi(p2 + strlen("http://127.0.0.1:")) : 0;
    return p;
}

static int stop_node(pid_t p)
{
    int st = 0;
    kill(p, SIGTERM);
    cr_assert(waitpid(p, &st, 0) == p);
    return st;
}

static void setup(void)
{
    char line[512];
    signal(SIGPIPE, SIG_IGN);
    dir = tu_tmpdir("serve");
    pid = start_node(dir, &port, line, sizeof line, &node_out);
    cr_assert(port > 0, "node did not start: %s", line);
}

static void teardown(void)
{
    int st = stop_node(pid);
    fclose(node_out);
    tu_rmtree(dir);
    free(dir);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "node exit status %d", st);
}

/* ---- a tiny HTTP/1.1 client ---- */

struct resp {
    int status;
    char headers[4096];
    char *body;
    size_t body_len;
    json_t *json;
    bool closed; /* the server closed the connection after the response */
};

static void resp_fini(struct resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

static int connect_node(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0)
            return; /* the server may close early (413); the test checks the answer */
        c += k;
        n -= (size_t)k;
    }
}

/* Read with a deadline; returns bytes read, 0 on EOF, -1 on timeout. */
static ssize_t recv_deadline(int fd, char *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    if (n <= 0)
        return -1;
    ssize_t k = recv(fd, buf, cap, 0);
    return k < 0 ? 0 : k;
}

static const char *header(const struct resp *r, const char *name)
{
    static char val[1024];
    size_t n = strlen(name);
    for (const char *l = r->headers; l && *l;
         l = strstr(l, "\r\n") ? strstr(l, "\r\n") + 2 : NULL) {
        if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
            const char *v = l + n + 1;
            while (*v == ' ')
                v++;
            size_t k = strcspn(v, "\r\n");
            snprintf(val, sizeof val, "%.*s", (int)k, v);
            return val;
        }
    }
    return NULL;
}

/* Read one response from fd (Content-Length framed). False if the connection closed or timed
 * out before a full response. */
static bool read_resp(int fd, struct resp *r, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    cr_assert(buf);
    char *eoh = NULL;
    while (!eoh) {
        if (len + 1 >= cap)
            cr_assert((buf = realloc(buf, cap *= 2)));
        ssize_t k = recv_deadline(fd, buf + len, cap - len - 1, timeout_ms);
        if (k <= 0) {
            free(buf);
            return false;
        }
        len += (size_t)k;
        buf[len] = '\0';
        eoh = strstr(buf, "\r\n\r\n");
    }
    size_t hlen = (size_t)(eoh - buf) + 4;
    cr_assert(sscanf(buf, "HTTP/1.1 %d", &r->status) == 1, "bad status line: %.40s", buf);
    snprintf(r->headers, sizeof r->headers, "%.*s", (int)hlen, buf);
    const char *cl = header(r, "content-length");
    cr_assert(cl, "no content-length");
    size_t want = (size_t)strtoull(cl, NULL, 10);
    while (len - hlen < want) {
        if (len + 1 >= cap)
            cr_assert((buf = realloc(buf, cap *= 2)));
        ssize_t k = recv_deadline(fd, buf + len, cap - len - 1, timeout_ms);
        if (k <= 0) {
            free(buf);
            return false;
        }
        len += (size_t)k;
    }
    r->body = malloc(want + 1);
    memcpy(r->body, buf + hlen, want);
    r->body[want] = '\0';
    r->body_len = want;
    r->json = json_loadb(r->body, want, JSON_DECODE_ANY, NULL);
    const char *conn = header(r, "connection");
    r->closed = conn && strcasecmp(conn, "close") == 0;
    free(buf);
    return true;
}

static void send_req(int fd, const char *method, const char *path, const char *ctype,
                     const char *extra, const char *body)
{
    char head[8192];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s%s", method,
                     path, ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "",
                     extra ? extra : "");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", blen);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    send_all(fd, head, (size_t)n);
    if (body)
        send_all(fd, body, blen);
}

/* One request on a fresh connection; returns the status. */
static int req(struct resp *r, const char *method, const char *path, const char *ctype,
               const char *extra, const char *body)
{
    int fd = connect_node();
    send_req(fd, method, path, ctype, extra, body);
    bool ok = read_resp(fd, r, 10000);
    close(fd);
    cr_assert(ok, "%s %s: no complete response", method, path);
    return r->status;
}

static int get(struct resp *r, const char *path)
{
    return req(r, "GET", path, NULL, NULL, NULL);
}

static int put_json(struct resp *r, const char *path, const char *body)
{
    return req(r, "PUT", path, "application/json", NULL, body);
}

static int post_json(struct resp *r, const char *path, const char *body)
{
    return req(r, "POST", path, "application/json", NULL, body);
}

static const char *jstr(const struct resp *r, const char *key)
{
    return json_string_value(json_object_get(r->json, key));
}

static void expect_error(const struct resp *r, int status, const char *error)
{
    cr_expect_eq(r->status, status, "status %d, wanted %d: %s", r->status, status, r->body);
    cr_expect(jstr(r, "error") && strcmp(jstr(r, "error"), error) == 0, "error %s, wanted %s (%s)",
              jstr(r, "error"), error, r->body);
    cr_expect(jstr(r, "reason") != NULL, "no reason in %s", r->body);
}

static void make_db(const char *name)
{
    struct resp r;
    char path[256];
    snprintf(path, sizeof path, "/%s", name);
    cr_assert_eq(req(&r, "PUT", path, NULL, NULL, NULL), 201, "%s", r.body);
    resp_fini(&r);
}

/* PUT a document; returns its rev in out. */
static void put_doc(const char *path, const char *body, char *rev, size_t cap)
{
    struct resp r;
    cr_assert_eq(put_json(&r, path, body), 201, "PUT %s: %s", path, r.body);
    snprintf(rev, cap, "%s", jstr(&r, "rev"));
    resp_fini(&r);
}

static json_int_t doc_count(const char *db)
{
    struct resp r;
    char path[256];
    snprintf(path, sizeof path, "/%s", db);
    cr_assert_eq(get(&r, path), 200);
    json_int_t n = json_integer_value(json_object_get(r.json, "doc_count"));
    resp_fini(&r);
    return n;
}

static void still_serving(void)
{
    struct resp r;
    cr_assert_eq(get(&r, "/"), 200);
    cr_assert_str_eq(jstr(&r, "couchdb"), "Welcome");
    resp_fini(&r);
}

/* ---- streamed (chunked) responses ---- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* An open streamed response: headers, then the body decoded from its chunks as it arrives. */
struct stream {
    int fd;
    int status;
    char headers[4096];
    char raw[1 << 16]; /* undecoded bytes */
    size_t raw_len;
    char *body; /* decoded so far, NUL-terminated */
    size_t body_len;
    bool done; /* the last chunk arrived */
};

/* Decode whole chunks from raw into body. */
static void dechunk(struct stream *s)
{
    for (;;) {
        s->raw[s->raw_len] = '\0';
        char *eol = strstr(s->raw, "\r\n");
        if (!eol)
            return;
        size_t n = strtoul(s->raw, NULL, 16);
        size_t hl = (size_t)(eol - s->raw) + 2;
        if (s->raw_len < hl + n + 2)
            return;
        s->body = realloc(s->body, s->body_len + n + 1);
        memcpy(s->body + s->body_len, s->raw + hl, n);
        s->body_len += n;
        s->body[s->body_len] = '\0';
        memmove(s->raw, s->raw + hl + n + 2, s->raw_len - hl - n - 2);
        s->raw_len -= hl + n + 2;
        if (n == 0) {
            s->done = true;
            return;
        }
    }
}

/* Read more within timeout_ms; false on timeout or EOF. */
static bool pump(struct stream *s, int timeout_ms)
{
    cr_assert(s->raw_len + 1 < sizeof s->raw);
    ssize_t k =
        recv_deadline(s->fd, s->raw + s->raw_len, sizeof s->raw - s->raw_len - 1, timeout_ms);
    if (k <= 0)
        return false;
    s->raw_len += (size_t)k;
    dechunk(s);
    return true;
}

static void open_stream_req(struct stream *s, const char *method, const char *path,
                            const char *body)
{
    memset(s, 0, sizeof *s);
    s->fd = connect_node();
    send_req(s->fd, method, path, body ? "application/json" : NULL, NULL, body);
    char *eoh = NULL;
    while (!eoh) {
        ssize_t k = recv_deadline(s->fd, s->raw + s->raw_len, sizeof s->raw - s->raw_len - 1, 5000);
        cr_assert(k > 0, "%s: no headers", path);
        s->raw_len += (size_t)k;
        s->raw[s->raw_len] = '\0';
        eoh = strstr(s->raw, "\r\n\r\n");
    }
    size_t hl = (size_t)(eoh - s->raw) + 4;
    cr_assert(sscanf(s->raw, "HTTP/1.1 %d", &s->status) == 1);
    snprintf(s->headers, sizeof s->headers, "%.*s", (int)hl, s->raw);
    memmove(s->raw, s->raw + hl, s->raw_len - hl);
    s->raw_len -= hl;
    s->body = calloc(1, 1);
    dechunk(s);
}

static void open_stream(struct stream *s, const char *path)
{
    open_stream_req(s, "GET", path, NULL);
}

static const char *stream_header(const struct stream *s, const char *name)
{
    struct resp r;
    memset(&r, 0, sizeof r);
    snprintf(r.headers, sizeof r.headers, "%s", s->headers);
    return header(&r, name);
}

/* Pump until the body contains needle (true) or timeout_ms passes. */
static bool wait_for(struct stream *s, const char *needle, int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (!strstr(s->body, needle)) {
        int left = (int)((end - now_s()) * 1000);
        if (left <= 0 || s->done || !pump(s, left))
            return strstr(s->body, needle) != NULL;
    }
    return true;
}

static bool wait_done(struct stream *s, int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (!s->done) {
        int left = (int)((end - now_s()) * 1000);
        if (left <= 0 || !pump(s, left))
            return s->done;
    }
    return true;
}

static void close_stream(struct stream *s)
{
    close(s->fd);
    free(s->body);
    s->body = NULL;
}

#endif
