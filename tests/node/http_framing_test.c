/* http_framing_test.c — where one request ends and the next begins on a kept connection
 * (RFC 9112 §6.3): a request with neither Content-Length nor Transfer-Encoding has an empty
 * body and the connection stays usable; what libwebsockets 4.1 cannot frame (Transfer-Encoding,
 * a body pipelined behind another request, bytes pipelined behind a body-less PUT) gets an
 * answer or a closed connection, never a hang, a spinning node or a half-read body. Every read
 * has a deadline: the original failure was a hang. */
#include <dirent.h>

#include "serve_util.h"

TestSuite(framing, .init = setup, .fini = teardown, .timeout = 60);

#define WAIT_MS 3000

/* A connection whose responses are read one at a time, keeping the bytes of the next. */
struct link {
    int fd;
    char buf[1 << 16];
    size_t len;
};

static void link_open(struct link *l)
{
    l->fd = connect_node();
    l->len = 0;
}

static void link_send(struct link *l, const char *raw)
{
    send_all(l->fd, raw, strlen(raw));
}

/* The next Content-Length framed response; false on timeout or EOF before a whole one. */
static bool link_read(struct link *l, struct resp *r)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        l->buf[l->len] = '\0';
        char *eoh = strstr(l->buf, "\r\n\r\n");
        if (eoh) {
            size_t hlen = (size_t)(eoh - l->buf) + 4;
            snprintf(r->headers, sizeof r->headers, "%.*s", (int)hlen, l->buf);
            const char *cl = header(r, "content-length");
            cr_assert(cl, "no content-length in %s", r->headers);
            size_t want = (size_t)strtoull(cl, NULL, 10);
            if (l->len - hlen >= want) {
                int minor = 0;
                cr_assert(sscanf(l->buf, "HTTP/1.%d %d", &minor, &r->status) == 2,
                          "status line: %.40s", l->buf);
                r->body = malloc(want + 1);
                cr_assert(r->body);
                memcpy(r->body, l->buf + hlen, want);
                r->body[want] = '\0';
                r->body_len = want;
                r->json = json_loadb(r->body, want, JSON_DECODE_ANY, NULL);
                const char *conn = header(r, "connection");
                r->closed = conn && strcasecmp(conn, "close") == 0;
                memmove(l->buf, l->buf + hlen + want, l->len - hlen - want);
                l->len -= hlen + want;
                return true;
            }
        }
        cr_assert(l->len + 1 < sizeof l->buf, "response too large for the test");
        ssize_t k = recv_deadline(l->fd, l->buf + l->len, sizeof l->buf - l->len - 1, WAIT_MS);
        if (k <= 0)
            return false;
        l->len += (size_t)k;
    }
}

/* The server hangs up (EOF) within the deadline, with nothing more to say. */
static bool link_closed(struct link *l)
{
    char c;
    return l->len == 0 && recv_deadline(l->fd, &c, 1, WAIT_MS) == 0;
}

/* The next response must have this status; its body is checked by the caller when needed. */
static void expect_next(struct link *l, int status, const char *what)
{
    struct resp r;
    cr_assert(link_read(l, &r), "%s: no response (hang or close)", what);
    cr_expect_eq(r.status, status, "%s: status %d, wanted %d: %s", what, r.status, status, r.body);
    resp_fini(&r);
}

#define H "Host: 127.0.0.1\r\n"

/* Descriptors the node holds open (its sockets included). */
static int node_fds(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    int n = 0;
    DIR *d = opendir(path);
    cr_assert(d, "cannot list %s", path);
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The teammate's report: a PUT with no Content-Length got its 201, then the next request on
 * the connection hung (read as the first one's body). */
Test(framing, put_without_length_keeps_the_connection_usable)
{
    struct link l;
    struct resp r;
    link_open(&l);
    link_send(&l, "PUT /nolen HTTP/1.1\r\n" H "\r\n");
    cr_assert(link_read(&l, &r), "PUT /nolen: no response");
    cr_expect_eq(r.status, 201, "%s", r.body);
    cr_expect(!r.closed, "the connection should stay open: %s", r.headers);
    resp_fini(&r);
    link_send(&l, "PUT /nolen/doc HTTP/1.1\r\n" H "\r\n");
    cr_assert(link_read(&l, &r), "PUT /nolen/doc with no body: no response");
    expect_error(&r, 400, "bad_request");
    cr_expect(!r.closed, "the connection should stay open: %s", r.headers);
    resp_fini(&r);
    link_send(&l, "GET /nolen/doc HTTP/1.1\r\n" H "\r\n");
    cr_assert(link_read(&l, &r), "GET after the body-less PUT: no response");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    close(l.fd);
    cr_expect_eq(doc_count("nolen"), 0);
}

/* Body-less POST and PUT one after another, then framed requests, all on one connection;
 * each hand-over of the connection leaves no descriptor behind. */
Test(framing, requests_without_length_one_after_another_on_one_connection)
{
    make_db("seq");
    int before = node_fds();
    struct link l;
    struct resp r;
    link_open(&l);
    for (int i = 0; i < 20; i++) {
        link_send(&l, "POST /seq HTTP/1.1\r\n" H "Content-Type: application/json\r\n\r\n");
        cr_assert(link_read(&l, &r), "POST %d with no body: no response", i);
        expect_error(&r, 400, "bad_request");
        resp_fini(&r);
        link_send(&l, "PUT /seq/d HTTP/1.1\r\n" H "Content-Type: application/json\r\n\r\n");
        expect_next(&l, 400, "PUT of a doc with no body");
    }
    link_send(&l, "PUT /seq/d HTTP/1.1\r\n" H "Content-Type: application/json\r\n"
                  "Content-Length: 7\r\n\r\n{\"a\":1}"
                  "GET /seq/d HTTP/1.1\r\n" H "\r\n");
    expect_next(&l, 201, "framed PUT after the body-less ones");
    cr_assert(link_read(&l, &r), "pipelined GET after the framed PUT");
    cr_expect_eq(r.status, 200);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "a")), 1, "%s", r.body);
    resp_fini(&r);
    close(l.fd);
    cr_expect_eq(doc_count("seq"), 1);
    int after = node_fds();
    for (int i = 0; i < 50 && after > before; i++) {
        usleep(20 * 1000); /* the node notices the close on its next turn */
        after = node_fds();
    }
    /* 40 hand-overs: a leaked descriptor each would show */
    cr_expect(after <= before, "descriptors before %d, after %d", before, after);
}

/* Bytes sent right behind a body-less PUT, in the same write: lws has read them as that PUT's
 * body and cannot give them back, so the answer says Connection: close and the connection
 * closes. The pipelined requests are not run (a client retries them), and nothing hangs. */
Test(framing, requests_pipelined_behind_put_without_length_get_a_close)
{
    struct link l;
    struct resp r;
    link_open(&l);
    link_send(&l, "PUT /pipe HTTP/1.1\r\n" H "\r\n"
                  "PUT /pipe/doc HTTP/1.1\r\n" H "Content-Type: application/json\r\n"
                  "Content-Length: 7\r\n\r\n{\"a\":1}"
                  "GET /pipe/doc HTTP/1.1\r\n" H "\r\n");
    cr_assert(link_read(&l, &r), "PUT /pipe: no response");
    cr_expect_eq(r.status, 201, "%s", r.body);
    cr_expect(r.closed, "the answer should say Connection: close: %s", r.headers);
    resp_fini(&r);
    cr_expect(link_closed(&l), "the connection should close");
    close(l.fd);
    cr_expect_eq(doc_count("pipe"), 0);
    still_serving();
}

/* Pipelining that lws frames itself: body-less requests, and the bytes after a body that is
 * exactly Content-Length long. */
Test(framing, pipelined_requests_are_answered_in_order)
{
    make_db("pl");
    struct link l;
    struct resp r;
    link_open(&l);
    link_send(&l, "PUT /pl/a HTTP/1.1\r\n" H "Content-Type: application/json\r\n"
                  "Content-Length: 7\r\n\r\n{\"a\":1}"
                  "GET /pl/a HTTP/1.1\r\n" H "\r\n"
                  "GET /pl/missing HTTP/1.1\r\n" H "\r\n"
                  "HEAD /pl HTTP/1.1\r\n" H "\r\n"
                  "GET / HTTP/1.1\r\n" H "\r\n");
    expect_next(&l, 201, "PUT /pl/a");
    cr_assert(link_read(&l, &r), "GET /pl/a after the body");
    cr_expect_eq(r.status, 200);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "a")), 1, "%s", r.body);
    resp_fini(&r);
    expect_next(&l, 404, "GET /pl/missing");
    /* HEAD: a Content-Length but no body */
    char *eoh = NULL;
    for (int i = 0; i < 100 && !eoh; i++) {
        l.buf[l.len] = '\0';
        eoh = strstr(l.buf, "\r\n\r\n");
        ssize_t k = eoh ? 0 : recv_deadline(l.fd, l.buf + l.len, sizeof l.buf - l.len - 1, WAIT_MS);
        cr_assert(eoh || k > 0, "HEAD: no response");
        if (k > 0)
            l.len += (size_t)k;
    }
    cr_expect(strncmp(l.buf, "HTTP/1.1 200", 12) == 0, "HEAD: %.40s", l.buf);
    size_t hl = (size_t)(eoh - l.buf) + 4;
    memmove(l.buf, l.buf + hl, l.len - hl);
    l.len -= hl;
    expect_next(&l, 200, "GET / at the end");
    close(l.fd);
}

/* Only a body that starts with the request line of its own request is taken for one lws
 * re-read (refused): text that merely starts with a method name is a body like any other. */
Test(framing, a_body_that_starts_with_a_method_name_is_a_body)
{
    make_db("word");
    struct link l;
    struct resp r;
    link_open(&l);
    link_send(&l, "PUT /word/a/note.txt HTTP/1.1\r\n" H "Content-Type: text/plain\r\n"
                  "Content-Length: 17\r\n\r\nPUT the kettle on");
    expect_next(&l, 201, "attachment starting with PUT");
    link_send(&l, "GET /word/a/note.txt HTTP/1.1\r\n" H "\r\n");
    cr_assert(link_read(&l, &r), "GET of the attachment");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "PUT the kettle on");
    resp_fini(&r);
    close(l.fd);
}

/* A body longer than its Content-Length: the rest is the next request; garbage there is
 * refused and the connection closed, without touching the request before it. */
Test(framing, bytes_past_content_length_are_the_next_request)
{
    make_db("past");
    struct link l;
    struct resp r;
    link_open(&l);
    link_send(&l, "PUT /past/b HTTP/1.1\r\n" H "Content-Type: application/json\r\n"
                  "Content-Length: 7\r\n\r\n{\"b\":1}"
                  "XXXX /past/c HTTP/1.1\r\n" H "\r\n");
    expect_next(&l, 201, "PUT /past/b");
    if (link_read(&l, &r)) { /* lws answers garbage itself (403, text/html) */
        cr_expect(r.status >= 400 && r.status < 500, "garbage answered %d", r.status);
        resp_fini(&r);
    }
    cr_expect(link_closed(&l), "the connection should close after garbage");
    close(l.fd);
    cr_expect_eq(doc_count("past"), 1);
    still_serving();
}

/* A request with a body pipelined behind another: lws 4.1 would hand it its own header bytes
 * as body and then loop forever (the whole node stopped answering). It is refused by closing
 * the connection; nothing is written and the node keeps serving. */
Test(framing, body_pipelined_behind_another_request_is_refused_not_looped_on)
{
    make_db("loop");
    struct link l;
    link_open(&l);
    link_send(&l, "GET / HTTP/1.1\r\n" H "\r\n"
                  "PUT /loop/a HTTP/1.1\r\n" H "Content-Type: application/json\r\n"
                  "Content-Length: 7\r\n\r\n{\"a\":1}"
                  "GET /loop/a HTTP/1.1\r\n" H "\r\n");
    expect_next(&l, 200, "GET / before the pipelined PUT");
    cr_expect(link_closed(&l), "the connection should close");
    close(l.fd);

    /* a large body, and an attachment (streamed), the same way */
    static char big[48 * 1024];
    int n = snprintf(big, sizeof big,
                     "GET / HTTP/1.1\r\n" H "\r\n"
                     "PUT /loop/b HTTP/1.1\r\n" H "Content-Type: application/json\r\n"
                     "Content-Length: 20000\r\n\r\n{\"b\":\"");
    memset(big + n, 'x', 20000 - 8);
    memcpy(big + n + 20000 - 8, "\"}", 2);
    big[n + 20000 - 6] = '\0';
    link_open(&l);
    send_all(l.fd, big, strlen(big));
    expect_next(&l, 200, "GET / before the large pipelined PUT");
    cr_expect(link_closed(&l), "the connection should close");
    close(l.fd);
    link_open(&l);
    link_send(&l, "GET / HTTP/1.1\r\n" H "\r\n"
                  "PUT /loop/c/file.txt HTTP/1.1\r\n" H "Content-Type: text/plain\r\n"
                  "Content-Length: 5\r\n\r\nhello");
    expect_next(&l, 200, "GET / before the pipelined attachment");
    cr_expect(link_closed(&l), "the connection should close");
    close(l.fd);
    cr_expect_eq(doc_count("loop"), 0);
    still_serving();
}

/* Transfer-Encoding request bodies are not decoded: refused with a CouchDB-shaped 411 and the
 * connection closed (where the body ends is unknown), never a half-read body. An attachment
 * sent chunked used to be stored empty with a 201. */
Test(framing, chunked_request_is_refused_and_closed)
{
    make_db("chunk");
    struct link l;
    struct resp r;
    link_open(&l);
    link_send(&l, "PUT /chunk/doc HTTP/1.1\r\n" H "Content-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n"
                  "GET /chunk/doc HTTP/1.1\r\n" H "\r\n");
    cr_assert(link_read(&l, &r), "chunked PUT: no response");
    expect_error(&r, 411, "length_required");
    cr_expect(r.closed, "a refused chunked request closes the connection: %s", r.headers);
    resp_fini(&r);
    cr_expect(link_closed(&l), "the connection should close after the 411");
    close(l.fd);

    link_open(&l);
    link_send(&l, "PUT /chunk/att/file.txt HTTP/1.1\r\n" H "Content-Type: text/plain\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    cr_assert(link_read(&l, &r), "chunked attachment PUT: no response");
    expect_error(&r, 411, "length_required");
    resp_fini(&r);
    close(l.fd);
    cr_expect_eq(doc_count("chunk"), 0);
    still_serving();
}

/* HTTP/1.0 has no keep-alive by default: a body-less PUT is answered and the connection
 * closed, as for any 1.0 request. */
Test(framing, http10_put_without_length_is_answered_then_closed)
{
    struct link l;
    link_open(&l);
    link_send(&l, "PUT /old HTTP/1.0\r\n" H "\r\n");
    expect_next(&l, 201, "HTTP/1.0 PUT /old");
    cr_expect(link_closed(&l), "an HTTP/1.0 connection should close");
    close(l.fd);
    still_serving();
}
