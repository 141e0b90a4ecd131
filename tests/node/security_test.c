/* security_test.c — admin credentials and CORS on a real node: a node bound to a non-loopback
 * address refuses to start without credentials; with them, every request needs HTTP Basic
 * (401 CouchDB-shaped with WWW-Authenticate otherwise, and nothing is written); CORS is off by
 * default and, when configured, answers preflights and marks allowed origins only. */
#include <sys/stat.h>

#include "serve_util.h"

static char cfg_path[1024];
static char hash[256];

/* `echo PW | barrel passwd` into hash. */
static void make_hash(const char *pw)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "echo '%s' | %s/barrel passwd", pw, BARREL_BINARY_DIR);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    cr_assert(fgets(hash, sizeof hash, p));
    cr_assert_eq(pclose(p), 0);
    hash[strcspn(hash, "\n")] = '\0';
    cr_assert(strncmp(hash, "$argon2id$", 10) == 0, "%s", hash);
}

static void write_config(const char *json)
{
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    FILE *f = fopen(cfg_path, "w");
    cr_assert(f);
    fputs(json, f);
    fclose(f);
}

/* Start `barrel --data DIR/data serve --port 0 [--bind B] [--config cfg]`; the first line of
 * its output is returned in line. pid is 0 if it exited (status in *st). */
static void start(const char *bind, bool with_config, char *line, size_t cap, int *st)
{
    int fds[2];
    cr_assert(pipe(fds) == 0);
    char data[1024];
    snprintf(data, sizeof data, "%s/data", dir);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        const char *argv[16] = {
            "barrel", "--data", data, "serve", "--port", "0", "--request-timeout", "2"};
        int n = 8;
        if (bind) {
            argv[n++] = "--bind";
            argv[n++] = bind;
        }
        if (with_config) {
            argv[n++] = "--config";
            argv[n++] = cfg_path;
        }
        argv[n] = NULL;
        execv(BARREL_BINARY_DIR "/barrel", (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    node_out = fdopen(fds[0], "r");
    line[0] = '\0';
    if (!fgets(line, (int)cap, node_out))
        line[0] = '\0';
    const char *p = strstr(line, "listening on http://");
    port = p ? atoi(strrchr(line, ':') + 1) : 0;
    if (!p) {
        cr_assert(waitpid(pid, st, 0) == pid);
        pid = 0;
    }
}

static void sec_setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    dir = tu_tmpdir("security");
    pid = 0;
    node_out = NULL;
}

static void sec_teardown(void)
{
    int st = 0;
    if (pid)
        st = stop_node(pid);
    if (node_out)
        fclose(node_out);
    tu_rmtree(dir);
    free(dir);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "node exit status %d", st);
}

TestSuite(security, .init = sec_setup, .fini = sec_teardown, .timeout = 60);

Test(security, non_loopback_bind_without_credentials_refuses_to_start)
{
    char line[512];
    int st = 0;
    start("0.0.0.0", false, line, sizeof line, &st);
    cr_assert_eq(pid, 0, "node started: %s", line);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d", st);
    cr_expect(strstr(line, "without admin credentials"), "%s", line);
    /* a config without an admin does not help */
    write_config("{\"cors\":{\"origins\":[\"*\"]}}");
    start("0.0.0.0", true, line, sizeof line, &st);
    cr_assert_eq(pid, 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1);
}

Test(security, bad_config_is_a_clear_startup_error)
{
    static const char *const bad[] = {
        "{\"admin\":{\"username\":\"a\",\"password\":\"plain\"}}", /* no clear passwords */
        "{\"admn\":{}}",                                           /* typo */
        "{\"admin\":{\"username\":\"a\",\"password_hash\":\"nothash\"}}",
        "{\"cors\":{\"origins\":\"http://x\"}}",
        "{\"port\":\"7070\"}",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[512];
        int st = 0;
        write_config(bad[i]);
        start(NULL, true, line, sizeof line, &st);
        cr_assert_eq(pid, 0, "started with %s", bad[i]);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        cr_expect(strstr(line, "config"), "%s -> %s", bad[i], line);
        fclose(node_out);
        node_out = NULL;
    }
}

static int req_auth(struct resp *r, const char *method, const char *path, const char *userpw,
                    const char *body)
{
    char extra[512] = "";
    if (userpw) {
        char b64[256];
        /* base64 by hand: tests do not link libsodium */
        static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t n = strlen(userpw), o = 0;
        const unsigned char *s = (const unsigned char *)userpw;
        for (size_t i = 0; i < n; i += 3) {
            unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                         (i + 2 < n ? s[i + 2] : 0);
            b64[o++] = T[v >> 18 & 63];
            b64[o++] = T[v >> 12 & 63];
            b64[o++] = i + 1 < n ? T[v >> 6 & 63] : '=';
            b64[o++] = i + 2 < n ? T[v & 63] : '=';
        }
        b64[o] = '\0';
        snprintf(extra, sizeof extra, "Authorization: Basic %s\r\n", b64);
    }
    return req(r, method, path, body ? "application/json" : NULL, extra, body);
}

static void start_with_admin(const char *cors)
{
    make_hash("s3cret pass");
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "{\"admin\":{\"username\":\"admin\",\"password_hash\":\"%s\"}%s%s}",
             hash, cors ? ",\"cors\":" : "", cors ? cors : "");
    write_config(cfg);
    char line[512];
    int st = 0;
    start("0.0.0.0", true, line, sizeof line, &st);
    cr_assert(pid && port > 0, "did not start: %s", line);
}

Test(security, non_loopback_node_requires_basic_credentials)
{
    start_with_admin(NULL);
    struct resp r;
    static const char *const wrong[] = {NULL, "admin:wrong", "root:s3cret pass", "admin",
                                        "admin:s3cret pass "};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        req_auth(&r, "PUT", "/sec", wrong[i], NULL);
        expect_error(&r, 401, "unauthorized");
        cr_expect(header(&r, "www-authenticate") &&
                      strncmp(header(&r, "www-authenticate"), "Basic", 5) == 0,
                  "no WWW-Authenticate");
        resp_fini(&r);
    }
    req(&r, "GET", "/_all_dbs", NULL, "Authorization: Basic !!notbase64\r\n", NULL);
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
    req(&r, "GET", "/_all_dbs", NULL, "Authorization: Bearer abc\r\n", NULL);
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
    /* nothing was created by the refused requests */
    cr_assert_eq(req_auth(&r, "GET", "/_all_dbs", "admin:s3cret pass", NULL), 200);
    cr_expect_eq(json_array_size(r.json), 0, "%s", r.body);
    resp_fini(&r);
    /* right credentials, first verified on a worker, then from the cache */
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(req_auth(&r, "GET", "/_node", "admin:s3cret pass", NULL), 200);
        resp_fini(&r);
    }
    cr_expect_eq(req_auth(&r, "PUT", "/sec", "admin:s3cret pass", NULL), 201);
    resp_fini(&r);
    cr_expect_eq(req_auth(&r, "PUT", "/sec/d", "admin:s3cret pass", "{\"a\":1}"), 201);
    resp_fini(&r);
    req_auth(&r, "DELETE", "/sec", "admin:wrong", NULL);
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
    cr_expect_eq(req_auth(&r, "GET", "/sec/d", "admin:s3cret pass", NULL), 200);
    resp_fini(&r);
    /* the metrics endpoint is an admin route too */
    req_auth(&r, "GET", "/_metrics", NULL, NULL);
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
}

Test(security, cors_is_off_by_default)
{
    start_with_admin(NULL);
    struct resp r;
    req(&r, "OPTIONS", "/", NULL,
        "Origin: http://app.test\r\nAccess-Control-Request-Method: GET\r\n", NULL);
    cr_expect_neq(r.status, 204);
    cr_expect_null(header(&r, "access-control-allow-origin"));
    resp_fini(&r);
}

Test(security, cors_preflight_and_allowed_origins)
{
    start_with_admin("{\"origins\":[\"http://app.test\"],\"credentials\":true}");
    struct resp r;
    /* preflight needs no credentials (browsers send none) */
    cr_assert_eq(req(&r, "OPTIONS", "/db/doc", NULL,
                     "Origin: http://app.test\r\nAccess-Control-Request-Method: PUT\r\n"
                     "Access-Control-Request-Headers: content-type\r\n",
                     NULL),
                 204, "%s", r.body);
    cr_expect_str_eq(header(&r, "access-control-allow-origin"), "http://app.test");
    cr_expect_str_eq(header(&r, "access-control-allow-credentials"), "true");
    cr_expect(strstr(header(&r, "access-control-allow-methods"), "PUT"));
    cr_expect(strstr(header(&r, "access-control-allow-headers"), "content-type"));
    cr_expect(header(&r, "access-control-max-age"));
    resp_fini(&r);
    /* an actual request from the origin */
    req(&r, "GET", "/_all_dbs", NULL,
        "Origin: http://app.test\r\nAuthorization: Basic YWRtaW46czNjcmV0IHBhc3M=\r\n", NULL);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(header(&r, "access-control-allow-origin"), "http://app.test");
    cr_expect(strstr(header(&r, "access-control-expose-headers"), "etag"));
    resp_fini(&r);
    /* a 401 still carries CORS headers, so the browser app can read it */
    req(&r, "GET", "/_all_dbs", NULL, "Origin: http://app.test\r\n", NULL);
    expect_error(&r, 401, "unauthorized");
    cr_expect_str_eq(header(&r, "access-control-allow-origin"), "http://app.test");
    resp_fini(&r);
    /* another origin gets nothing */
    req(&r, "OPTIONS", "/db/doc", NULL,
        "Origin: http://evil.test\r\nAccess-Control-Request-Method: PUT\r\n", NULL);
    cr_expect_null(header(&r, "access-control-allow-origin"));
    cr_expect_neq(r.status, 204);
    resp_fini(&r);
}
