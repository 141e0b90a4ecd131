/* httpc_test.c — the CLI's HTTP client (node/httpc.c): URL parsing, the response parser on
 * good and malformed bytes (bad status line, truncated body, huge headers, chunked), requests
 * to a one-shot socket server that answers canned bytes, and basic credentials end to end
 * through `barrel --url` against a real node that requires them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>

#include "barrel/cli.h"

#include "httpc.h"
#include "testutil.h"

#define MAXB (1u << 20)

static br_err parse(const char *raw, size_t len, struct br_httpc_resp *r, struct br_errbuf *eb)
{
    memset(eb, 0, sizeof *eb);
    return br_httpc_parse(raw, len, MAXB, r, eb);
}
#define P(s, r, eb) parse((s), sizeof(s) - 1, (r), (eb))

Test(httpc, parses_content_length_chunked_and_until_close)
{
    struct br_httpc_resp r;
    struct br_errbuf eb;
    cr_assert_eq(
        P("HTTP/1.1 201 Created\r\nETag: \"1-ab\"\r\ncontent-length: 5\r\n\r\nhello", &r, &eb),
        BR_OK, "%s", eb.msg);
    cr_expect_eq(r.status, 201);
    cr_expect_str_eq(r.etag, "\"1-ab\"");
    cr_expect_eq(r.body.len, 5);
    cr_expect_str_eq((char *)r.body.data, "hello");
    br_httpc_resp_fini(&r);
    cr_assert_eq(P("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                   "A;ext=1\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n",
                   &r, &eb),
                 BR_OK, "%s", eb.msg);
    cr_expect_str_eq((char *)r.body.data, "abc0123456789");
    br_httpc_resp_fini(&r);
    cr_assert_eq(P("HTTP/1.0 404 Not Found\r\n\r\n{\"error\":1}", &r, &eb), BR_OK);
    cr_expect_eq(r.status, 404);
    cr_expect_str_eq((char *)r.body.data, "{\"error\":1}");
    br_httpc_resp_fini(&r);
    cr_assert_eq(P("HTTP/1.1 201 \r\nContent-Length: 0\r\n\r\n", &r, &eb), BR_OK); /* lws */
    cr_expect_eq(r.body.len, 0);
    br_httpc_resp_fini(&r);
}

Test(httpc, rejects_malformed_responses_with_a_reason)
{
    static const struct {
        const char *raw;
        br_err e;
        const char *reason;
    } bad[] = {
        {"HTTP/1.1 2x0 OK\r\n\r\n", BR_EPROTO, "bad status line"},
        {"HTTP/2 200 OK\r\n\r\n", BR_EPROTO, "bad status line"},
        {"ICY 200 OK\r\n\r\n", BR_EPROTO, "bad status line"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", BR_EPROTO,
         "truncated response body"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx", BR_EPROTO, "bad content-length"},
        {"HTTP/1.1 200 OK\r\nContent-Le", BR_EPROTO, "truncated response headers"},
        {"", BR_EPROTO, "truncated response headers"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BR_EPROTO,
         "bad chunk size"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", BR_EPROTO,
         "truncated chunk"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", BR_EPROTO,
         "chunk not followed by CRLF"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", BR_EPROTO,
         "truncated chunk size line"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", BR_EPROTO, "unsupported"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", BR_ETOOBIG, "too large"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct br_httpc_resp r;
        struct br_errbuf eb;
        cr_expect_eq(parse(bad[i].raw, strlen(bad[i].raw), &r, &eb), bad[i].e, "case %zu", i);
        cr_expect(strstr(eb.msg, bad[i].reason), "case %zu: %s", i, eb.msg);
    }
    /* headers beyond BR_HTTPC_MAX_HEADERS without an end are refused, not searched forever */
    size_t n = BR_HTTPC_MAX_HEADERS * 2;
    char *huge = malloc(n);
    memcpy(huge, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(huge + 20, 'a', n - 20);
    struct br_httpc_resp r;
    struct br_errbuf eb;
    cr_expect_eq(parse(huge, n, &r, &eb), BR_EPROTO);
    cr_expect(strstr(eb.msg, "headers too large"), "%s", eb.msg);
    free(huge);
}

Test(httpc, parses_urls)
{
    struct br_httpc_url u;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(br_httpc_url_parse("http://127.0.0.1:7070", &u, &eb), BR_OK);
    cr_expect_str_eq(u.host, "127.0.0.1");
    cr_expect_str_eq(u.port, "7070");
    cr_expect(!u.has_user);
    cr_assert_eq(br_httpc_url_parse("http://ad:p%40ss:x@node.local/", &u, &eb), BR_OK);
    cr_expect_str_eq(u.user, "ad");
    cr_expect_str_eq(u.password, "p@ss:x"); /* userinfo is percent-decoded */
    cr_expect_str_eq(u.port, "80");
    cr_assert_eq(br_httpc_url_parse("http://[::1]:5984", &u, &eb), BR_OK);
    cr_expect_str_eq(u.host, "::1");
    const char *bad[] = {"https://x",      "http://",        "http://h:0",
                         "http://h:99999", "http://h/db",    "ftp://h",
                         "http://[::1",    "http://a:b%4@h", "http://a:%00@h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(br_httpc_url_parse(bad[i], &u, &eb), BR_EINVAL, "%s", bad[i]);
}

/* A server that accepts one connection, reads the request and answers canned bytes. */
struct canned {
    int lfd, port;
    const char *answer;
    char request[4096];
};

static void *serve_once(void *arg)
{
    struct canned *c = arg;
    int fd = accept(c->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t n = 0;
    while (n < sizeof c->request - 1 && !strstr(c->request, "\r\n\r\n")) {
        ssize_t k = recv(fd, c->request + n, sizeof c->request - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        c->request[n] = '\0';
    }
    send(fd, c->answer, strlen(c->answer), MSG_NOSIGNAL);
    close(fd);
    return NULL;
}

static br_err canned_request(const char *answer, struct canned *c, struct br_httpc_resp *r,
                             struct br_errbuf *eb)
{
    memset(c, 0, sizeof *c);
    c->answer = answer;
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert(bind(c->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t al = sizeof a;
    getsockname(c->lfd, (struct sockaddr *)&a, &al);
    cr_assert(listen(c->lfd, 1) == 0);
    pthread_t t;
    pthread_create(&t, NULL, serve_once, c);
    char url[64];
    snprintf(url, sizeof url, "http://u:pw@127.0.0.1:%d", ntohs(a.sin_port));
    struct br_httpc_url u;
    cr_assert_eq(br_httpc_url_parse(url, &u, eb), BR_OK);
    br_err e = br_httpc_request(&u, "PUT", "/db/a%2Fb?x=1", "application/json", "{}", 2, 5, r, eb);
    pthread_join(t, NULL);
    close(c->lfd);
    return e;
}

Test(httpc, request_sends_credentials_and_reads_to_the_end)
{
    struct canned c;
    struct br_httpc_resp r;
    struct br_errbuf eb = {{0}};
    cr_assert_eq(canned_request("HTTP/1.1 201 \r\nContent-Length: 2\r\n\r\n{}", &c, &r, &eb), BR_OK,
                 "%s", eb.msg);
    cr_expect_eq(r.status, 201);
    br_httpc_resp_fini(&r);
    cr_expect(strncmp(c.request, "PUT /db/a%2Fb?x=1 HTTP/1.1\r\n", 28) == 0, "%s", c.request);
    cr_expect(strstr(c.request, "Authorization: Basic dTpwdw==\r\n"), "%s", c.request); /* u:pw */
    cr_expect(strstr(c.request, "Content-Length: 2\r\n"), "%s", c.request);
    cr_expect_eq(canned_request("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", &c, &r, &eb),
                 BR_EPROTO);
    cr_expect(strstr(eb.msg, "truncated"), "%s", eb.msg);
    cr_expect_eq(canned_request("", &c, &r, &eb), BR_EIO);
    cr_expect(strstr(eb.msg, "closed the connection without answering"), "%s", eb.msg);
}

Test(httpc, escape_keeps_unreserved_only)
{
    br_buf b;
    br_buf_init(&b, 0);
    cr_assert_eq(br_httpc_escape(&b, "a-Z_0.~/ ?&=%\xc3\xa9", 15), BR_OK);
    cr_expect_str_eq((char *)b.data, "a-Z_0.~%2F%20%3F%26%3D%25%C3%A9");
    br_buf_fini(&b);
}

/* ---- basic credentials against a real node ---- */

static int run_cli(const char *const *args, char *out, size_t cap, char *err, size_t ecap)
{
    char *argv[16];
    int argc = 0;
    argv[argc++] = "barrel";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    FILE *fo = fmemopen(out, cap, "w"), *fe = fmemopen(err, ecap, "w");
    memset(out, 0, cap);
    memset(err, 0, ecap);
    int rc = br_cli_run(argc, argv, stdin, fo, fe);
    fclose(fo);
    fclose(fe);
    return rc;
}

Test(httpc, cli_basic_credentials_from_url_or_user_and_env)
{
    char *dir = tu_tmpdir("httpc");
    char cmd[1024], hash[256], cfg[1200], path[512];
    snprintf(cmd, sizeof cmd, "echo 's3cret' | %s/barrel passwd", BARREL_BINARY_DIR);
    FILE *p = popen(cmd, "r");
    cr_assert(p && fgets(hash, sizeof hash, p));
    pclose(p);
    hash[strcspn(hash, "\n")] = '\0';
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    snprintf(cfg, sizeof cfg, "{\"admin\":{\"username\":\"admin\",\"password_hash\":\"%s\"}}",
             hash);
    fputs(cfg, f);
    fclose(f);
    char data[512];
    snprintf(data, sizeof data, "%s/data", dir);
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        execl(BARREL_BINARY_DIR "/barrel", "barrel", "--data", data, "serve", "--port", "0",
              "--config", path, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *nf = fdopen(fds[0], "r");
    char line[512] = "";
    cr_assert(fgets(line, sizeof line, nf));
    const char *pp = strstr(line, "http://127.0.0.1:");
    cr_assert(pp, "%s", line);
    int port = atoi(pp + strlen("http://127.0.0.1:"));
    char url[128], url_auth[128], out[4096], err[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    snprintf(url_auth, sizeof url_auth, "http://admin:s3cret@127.0.0.1:%d", port);

    cr_expect_eq(run_cli((const char *[]){"--url", url, "db", "list", NULL}, out, sizeof out, err,
                         sizeof err),
                 1);
    cr_expect_str_eq(err, "barrel: unauthorized: Authentication required.\n");
    cr_expect_eq(run_cli((const char *[]){"--url", url_auth, "db", "create", "x", NULL}, out,
                         sizeof out, err, sizeof err),
                 0, "%s", err);
    cr_expect_str_eq(out, "{\"ok\":true}\n");
    setenv("BARREL_PASSWORD", "s3cret", 1);
    cr_expect_eq(run_cli((const char *[]){"--url", url, "--user", "admin", "db", "list", NULL}, out,
                         sizeof out, err, sizeof err),
                 0, "%s", err);
    cr_expect_str_eq(out, "[\"x\"]\n");
    setenv("BARREL_PASSWORD", "wrong", 1);
    cr_expect_eq(run_cli((const char *[]){"--url", url, "--user", "admin", "db", "list", NULL}, out,
                         sizeof out, err, sizeof err),
                 1);
    cr_expect_str_eq(err, "barrel: unauthorized: Name or password is incorrect.\n");
    unsetenv("BARREL_PASSWORD");

    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    fclose(nf);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    tu_rmtree(dir);
    free(dir);
}
