/* subscribe_test.c — WS /{db}/_subscribe against a real node: a libwebsockets client receives
 * matching changes live (paths, query, include_docs, deletions), bad subscriptions are
 * refused, and a client that stops reading is told it overflowed and is disconnected with a
 * reason instead of being buffered without bound. */
#define MAX_BODY (8 << 20)
#include <pthread.h>

#include <libwebsockets.h>

#include "serve_util.h"

TestSuite(subscribe, .init = setup, .fini = teardown, .timeout = 120);

/* ---- a libwebsockets client on its own thread ---- */

struct client {
    pthread_mutex_t mu;
    char msgs[64][2048];
    int n;
    char partial[65536];
    size_t plen;
    bool established, failed, closed, stop;
    struct lws_context *ctx;
    pthread_t th;
};

static int client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    (void)user;
    struct client *c = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        pthread_mutex_lock(&c->mu);
        c->established = true;
        pthread_mutex_unlock(&c->mu);
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        pthread_mutex_lock(&c->mu);
        c->failed = true;
        pthread_mutex_unlock(&c->mu);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        pthread_mutex_lock(&c->mu);
        if (c->plen + len < sizeof c->partial) {
            memcpy(c->partial + c->plen, in, len);
            c->plen += len;
        }
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            if (c->n < 64)
                snprintf(c->msgs[c->n++], sizeof c->msgs[0], "%.*s", (int)c->plen, c->partial);
            c->plen = 0;
        }
        pthread_mutex_unlock(&c->mu);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        pthread_mutex_lock(&c->mu);
        c->closed = true;
        pthread_mutex_unlock(&c->mu);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols client_protocols[] = {
    {"sub-client", client_cb, 0, 65536, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

static void *client_main(void *arg)
{
    struct client *c = arg;
    while (!c->stop)
        lws_service(c->ctx, 50);
    return NULL;
}

/* Connect to path; wait until established or refused. */
static struct client *client_open(const char *path, const char *extra_auth)
{
    (void)extra_auth;
    struct client *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = client_protocols;
    info.user = c;
    c->ctx = lws_create_context(&info);
    cr_assert(c->ctx);
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = c->ctx;
    ci.address = "127.0.0.1";
    ci.port = port;
    ci.path = path;
    ci.host = "127.0.0.1";
    ci.origin = "127.0.0.1";
    ci.protocol = NULL; /* the node's default protocol */
    cr_assert(lws_client_connect_via_info(&ci));
    pthread_create(&c->th, NULL, client_main, c);
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&c->mu);
        bool done = c->established || c->failed || c->closed;
        pthread_mutex_unlock(&c->mu);
        if (done)
            break;
        usleep(20 * 1000);
    }
    return c;
}

static void client_close(struct client *c)
{
    c->stop = true;
    lws_cancel_service(c->ctx);
    pthread_join(c->th, NULL);
    lws_context_destroy(c->ctx);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Wait until the client holds n messages; returns how many it has. */
static int wait_msgs(struct client *c, int n, int timeout_ms)
{
    int have = 0;
    for (int t = 0; t < timeout_ms; t += 20) {
        pthread_mutex_lock(&c->mu);
        have = c->n;
        pthread_mutex_unlock(&c->mu);
        if (have >= n)
            break;
        usleep(20 * 1000);
    }
    return have;
}

static json_t *msg_json(struct client *c, int i)
{
    json_t *j = json_loads(c->msgs[i], 0, NULL);
    cr_assert(j, "not JSON: %s", c->msgs[i]);
    return j;
}

Test(subscribe, paths_push_matching_changes_live)
{
    make_db("s");
    char rev[128];
    put_doc("/s/old", "{\"type\":\"sensor\"}", rev, sizeof rev); /* before: not pushed */
    struct client *c =
        client_open("/s/_subscribe?paths=type/sensor&paths=site/%2B/alarm/%23", NULL);
    cr_assert(c->established, "not established");
    put_doc("/s/a", "{\"type\":\"sensor\",\"v\":1}", rev, sizeof rev);
    put_doc("/s/b", "{\"type\":\"other\"}", (char[128]){0}, 128);
    put_doc("/s/c", "{\"site\":{\"s1\":{\"alarm\":true}}}", (char[128]){0}, 128);
    struct resp r;
    char path[256];
    snprintf(path, sizeof path, "/s/a?rev=%s", rev);
    cr_assert_eq(req(&r, "DELETE", path, NULL, NULL, NULL), 200, "%s", r.body);
    char delrev[128];
    snprintf(delrev, sizeof delrev, "%s", jstr(&r, "rev"));
    resp_fini(&r);
    cr_assert_eq(wait_msgs(c, 3, 5000), 3, "got %d closed=%d failed=%d", c->n, c->closed,
                 c->failed);
    usleep(200 * 1000);
    cr_expect_eq(c->n, 3, "extra messages: %s", c->msgs[3]);
    json_t *m0 = msg_json(c, 0), *m1 = msg_json(c, 1), *m2 = msg_json(c, 2);
    cr_expect_str_eq(json_string_value(json_object_get(m0, "id")), "a");
    cr_expect_str_eq(json_string_value(json_object_get(m0, "rev")), rev);
    cr_expect(json_is_false(json_object_get(m0, "deleted")));
    cr_expect(json_is_string(json_object_get(m0, "seq")));
    cr_expect_null(json_object_get(m0, "doc"));
    cr_expect_str_eq(json_string_value(json_object_get(m1, "id")), "c");
    cr_expect_str_eq(json_string_value(json_object_get(m2, "id")), "a");
    cr_expect(json_is_true(json_object_get(m2, "deleted")));
    cr_expect_str_eq(json_string_value(json_object_get(m2, "rev")), delrev);
    /* seqs increase and match the changes feed's */
    cr_expect(strcmp(json_string_value(json_object_get(m0, "seq")),
                     json_string_value(json_object_get(m1, "seq"))) < 0);
    json_decref(m0);
    json_decref(m1);
    json_decref(m2);
    /* the gauge sees the subscription */
    cr_assert_eq(get(&r, "/_metrics"), 200);
    cr_expect(strstr(r.body, "\nbarrel_subscriptions 1\n"));
    resp_fini(&r);
    client_close(c);
}

Test(subscribe, query_with_include_docs)
{
    make_db("q");
    struct client *c =
        client_open("/q/"
                    "_subscribe?include_docs=true&query=%7B%22where%22%3A%5B%7B%22path%22%3A%22v%"
                    "22%2C%22op%22%3A%22%3E%22%2C%22value%22%3A10%7D%5D%7D",
                    NULL);
    cr_assert(c->established);
    put_doc("/q/lo", "{\"v\":5}", (char[128]){0}, 128);
    put_doc("/q/hi", "{\"v\":50,\"name\":\"x\"}", (char[128]){0}, 128);
    cr_assert_eq(wait_msgs(c, 1, 5000), 1);
    usleep(200 * 1000);
    cr_expect_eq(c->n, 1);
    json_t *m = msg_json(c, 0);
    cr_expect_str_eq(json_string_value(json_object_get(m, "id")), "hi");
    json_t *doc = json_object_get(m, "doc");
    cr_expect_eq(json_integer_value(json_object_get(doc, "v")), 50);
    cr_expect_str_eq(json_string_value(json_object_get(doc, "name")), "x");
    json_decref(m);
    client_close(c);
}

Test(subscribe, bad_subscriptions_are_refused)
{
    make_db("b");
    static const char *const bad[] = {"/nodb/_subscribe?paths=a",    "/b/_subscribe",
                                      "/b/_subscribe?paths=a/%23/b", "/b/_subscribe?query=%7B",
                                      "/b/_other?paths=a",           "/B/_subscribe?paths=a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct client *c = client_open(bad[i], NULL);
        cr_expect(!c->established, "%s accepted", bad[i]);
        client_close(c);
    }
    still_serving();
}

/* ---- a client that stops reading ---- */

/* Read one server frame from buf (unmasked); returns its total length or 0 if incomplete. */
static size_t frame(const unsigned char *b, size_t n, int *op, const unsigned char **pl,
                    size_t *plen)
{
    if (n < 2)
        return 0;
    size_t len = b[1] & 0x7f, h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (size_t)b[2] << 8 | b[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | b[2 + i];
        h = 10;
    }
    if (n < h + len)
        return 0;
    *op = b[0] & 0x0f;
    *pl = b + h;
    *plen = len;
    return h + len;
}

Test(subscribe, slow_consumer_gets_overflow_and_a_close_reason)
{
    make_db("slow");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    const char *hs =
        "GET /slow/_subscribe?paths=type/%2B&include_docs=true HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    send_all(fd, hs, strlen(hs));
    char head[1024];
    ssize_t k = recv_deadline(fd, head, sizeof head - 1, 5000);
    cr_assert(k > 0);
    head[k] = '\0';
    cr_assert(strstr(head, " 101 "), "%s", head);
    /* write far more than the queue and the socket buffers hold, without reading */
    size_t per = 8192, ndocs = 200;
    char *pad = malloc(per);
    memset(pad, 'x', per - 1);
    pad[per - 1] = '\0';
    size_t cap = ndocs * (per + 64) + 64;
    char *body = malloc(cap);
    for (int round = 0; round < 10; round++) {
        size_t o = (size_t)snprintf(body, cap, "{\"docs\":[");
        for (size_t i = 0; i < ndocs; i++)
            o += (size_t)snprintf(body + o, cap - o,
                                  "%s{\"_id\":\"d%d-%zu\",\"type\":\"t\",\"p\":\"%s\"}",
                                  i ? "," : "", round, i, pad);
        snprintf(body + o, cap - o, "]}");
        struct resp r;
        cr_assert_eq(post_json(&r, "/slow/_bulk_docs", body), 201);
        resp_fini(&r);
    }
    free(body);
    free(pad);
    /* now read everything: changes, then the overflow report, then a close frame */
    size_t bcap = 64 << 20, blen = 0;
    unsigned char *buf = malloc(bcap);
    bool closed = false;
    int changes = 0, close_code = 0;
    char overflow[512] = "", close_reason[128] = "";
    while (!closed) {
        k = recv_deadline(fd, (char *)buf + blen, bcap - blen, 10000);
        if (k <= 0)
            break;
        blen += (size_t)k;
        size_t off = 0, fl;
        int op;
        const unsigned char *pl;
        size_t plen;
        while ((fl = frame(buf + off, blen - off, &op, &pl, &plen)) > 0) {
            if (op == 1 && plen > 9 && memcmp(pl, "{\"error\":", 9) == 0)
                snprintf(overflow, sizeof overflow, "%.*s", (int)plen, pl);
            else if (op == 1)
                changes++;
            else if (op == 8) {
                closed = true;
                close_code = plen >= 2 ? pl[0] << 8 | pl[1] : 0;
                snprintf(close_reason, sizeof close_reason, "%.*s", (int)(plen - 2), pl + 2);
            }
            off += fl;
        }
        memmove(buf, buf + off, blen - off);
        blen -= off;
    }
    free(buf);
    close(fd);
    cr_expect(closed, "no close frame");
    cr_expect_eq(close_code, 1013);
    cr_expect(strstr(close_reason, "slow consumer"), "%s", close_reason);
    json_t *o = json_loads(overflow, 0, NULL);
    cr_assert(o, "no overflow message (changes=%d)", changes);
    cr_expect_str_eq(json_string_value(json_object_get(o, "error")), "overflow");
    json_int_t dropped = json_integer_value(json_object_get(o, "dropped"));
    cr_expect(dropped > 0);
    cr_expect(changes > 0 && changes + dropped <= 2000, "changes %d dropped %lld", changes,
              (long long)dropped);
    json_decref(o);
    cr_expect_eq(doc_count("slow"), 2000); /* no write was slowed down or lost */
    struct resp r;
    cr_assert_eq(get(&r, "/_metrics"), 200);
    cr_expect(strstr(r.body, "\nbarrel_subscription_overflows_total 1\n"));
    cr_expect(strstr(r.body, "\nbarrel_subscriptions 0\n"), "%s", r.body);
    resp_fini(&r);
}
