/* changes_feed_test.c — the streaming _changes feeds of `barrel serve` (longpoll, continuous,
 * eventsource): shapes, heartbeats, timeouts, filters, bad arguments, and hundreds of idle
 * listeners beside normal requests. Uses the raw client of serve_util.h and a small decoder of
 * chunked responses. */
#include "serve_util.h"

TestSuite(feed, .init = setup, .fini = teardown, .timeout = 120);

/* Lines of the body that are JSON objects. */
static size_t json_lines(const char *body, json_t **out, size_t cap)
{
    size_t n = 0;
    for (const char *l = body; *l && n < cap;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        if (len > 0 && l[0] == '{')
            out[n++] = json_loadb(l, len, 0, NULL);
        l += len + (e ? 1 : 0);
    }
    return n;
}

/* Percent-encode a query argument value. */
static void enc(const char *v, char *out, size_t cap)
{
    size_t o = 0;
    for (; *v && o + 4 < cap; v++) {
        unsigned char c = (unsigned char)*v;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-_.~", c))
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", c);
    }
    out[o] = '\0';
}

static void last_seq_of_db(const char *db, char *out, size_t cap)
{
    struct resp r;
    char path[128];
    snprintf(path, sizeof path, "/%s/_changes", db);
    cr_assert_eq(get(&r, path), 200);
    snprintf(out, cap, "%s", jstr(&r, "last_seq"));
    resp_fini(&r);
}

Test(feed, continuous_streams_backlog_then_live_changes_then_last_seq)
{
    char rev[128], seq[64];
    make_db("c");
    put_doc("/c/a", "{\"v\":1}", rev, sizeof rev);
    struct stream s;
    open_stream(&s, "/c/_changes?feed=continuous&timeout=1500");
    cr_assert_eq(s.status, 200);
    cr_expect_str_eq(stream_header(&s, "transfer-encoding"), "chunked");
    cr_expect_str_eq(stream_header(&s, "content-type"), "application/json");
    cr_assert(wait_for(&s, "\"id\":\"a\"", 3000), "backlog: %s", s.body);
    put_doc("/c/b", "{\"v\":2}", rev, sizeof rev);
    cr_assert(wait_for(&s, "\"id\":\"b\"", 3000), "live change: %s", s.body);
    last_seq_of_db("c", seq, sizeof seq);
    cr_assert(wait_done(&s, 5000), "feed did not end: %s", s.body);
    json_t *l[8];
    size_t n = json_lines(s.body, l, 8);
    cr_assert_eq(n, 3, "%s", s.body);
    cr_expect_str_eq(json_string_value(json_object_get(l[0], "id")), "a");
    cr_expect(json_is_array(json_object_get(l[1], "changes")));
    cr_expect_str_eq(json_string_value(json_object_get(l[2], "last_seq")), seq);
    for (size_t i = 0; i < n; i++)
        json_decref(l[i]);
    close_stream(&s);
    still_serving();
}

Test(feed, continuous_limit_since_now_and_heartbeat)
{
    char rev[128];
    make_db("h");
    put_doc("/h/old", "{}", rev, sizeof rev);
    struct stream s;
    double t0 = now_s();
    open_stream(&s, "/h/_changes?feed=continuous&since=now&heartbeat=100&timeout=700");
    cr_assert(wait_done(&s, 5000));
    double dt = now_s() - t0;
    cr_expect(dt > 0.6 && dt < 2.5, "ended after %.2f s", dt);
    cr_expect(strstr(s.body, "\"old\"") == NULL, "since=now showed old changes: %s", s.body);
    size_t newlines = 0;
    for (const char *p = s.body; *p && *p == '\n'; p++)
        newlines++;
    cr_expect(newlines >= 4, "%zu heartbeats in %s", newlines, s.body);
    close_stream(&s);
    /* limit=2 ends the feed after two rows, with last_seq */
    put_doc("/h/n1", "{}", rev, sizeof rev);
    put_doc("/h/n2", "{}", rev, sizeof rev);
    open_stream(&s, "/h/_changes?feed=continuous&limit=2&timeout=10000");
    cr_assert(wait_done(&s, 3000), "limit did not end the feed: %s", s.body);
    json_t *l[8];
    size_t n = json_lines(s.body, l, 8);
    cr_expect_eq(n, 3, "%s", s.body);
    cr_expect(n == 3 && json_object_get(l[2], "last_seq"));
    for (size_t i = 0; i < n; i++)
        json_decref(l[i]);
    close_stream(&s);
}

Test(feed, longpoll_answers_at_once_waits_or_times_out)
{
    char rev[128], seq[64];
    make_db("lp");
    put_doc("/lp/a", "{}", rev, sizeof rev);
    struct stream s;
    /* changes already there: answered at once */
    open_stream(&s, "/lp/_changes?feed=longpoll");
    cr_assert(wait_done(&s, 3000));
    json_t *j = json_loads(s.body, 0, NULL);
    cr_assert(j, "not JSON: %s", s.body);
    cr_expect_eq(json_array_size(json_object_get(j, "results")), 1);
    cr_expect(json_object_get(j, "last_seq") && json_object_get(j, "pending"));
    json_decref(j);
    close_stream(&s);
    /* nothing new: waits for the next change */
    last_seq_of_db("lp", seq, sizeof seq);
    char path[256];
    snprintf(path, sizeof path, "/lp/_changes?feed=longpoll&since=%s&heartbeat=50", seq);
    open_stream(&s, path);
    cr_expect(!wait_done(&s, 300), "longpoll answered without a change: %s", s.body);
    put_doc("/lp/b", "{}", rev, sizeof rev);
    cr_assert(wait_done(&s, 3000));
    j = json_loads(s.body, 0, NULL); /* heartbeat newlines first are JSON whitespace */
    cr_assert(j, "not JSON: %s", s.body);
    json_t *res = json_object_get(j, "results");
    cr_assert_eq(json_array_size(res), 1, "%s", s.body);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(res, 0), "id")), "b");
    json_decref(j);
    close_stream(&s);
    /* timeout: empty results, last_seq = since */
    last_seq_of_db("lp", seq, sizeof seq);
    double t0 = now_s();
    open_stream(&s, "/lp/_changes?feed=longpoll&since=now&timeout=300");
    cr_assert(wait_done(&s, 3000));
    cr_expect(now_s() - t0 < 2.0);
    j = json_loads(s.body, 0, NULL);
    cr_assert(j, "not JSON: %s", s.body);
    cr_expect_eq(json_array_size(json_object_get(j, "results")), 0);
    cr_expect_str_eq(json_string_value(json_object_get(j, "last_seq")), seq);
    json_decref(j);
    close_stream(&s);
}

Test(feed, eventsource_sends_data_and_id_lines)
{
    char rev[128];
    make_db("es");
    put_doc("/es/a", "{}", rev, sizeof rev);
    struct stream s;
    open_stream(&s, "/es/_changes?feed=eventsource&heartbeat=100&timeout=600");
    cr_expect_str_eq(stream_header(&s, "content-type"), "text/event-stream");
    cr_assert(wait_for(&s, "\n\n", 3000));
    cr_expect(strncmp(s.body, "data: {\"seq\":", 13) == 0, "%s", s.body);
    cr_expect(strstr(s.body, "\nid: "), "%s", s.body);
    cr_assert(wait_done(&s, 3000));
    cr_expect(strstr(s.body, "event: heartbeat\n"), "%s", s.body);
    close_stream(&s);
}

/* The ids a feed shows, in order, as "a,b,". */
static void feed_ids(const char *method, const char *path, const char *body, char *out, size_t cap)
{
    struct stream s;
    open_stream_req(&s, method, path, body);
    cr_assert_eq(s.status, 200, "%s %s: %d", method, path, s.status);
    cr_assert(wait_done(&s, 5000), "%s: %s", path, s.body);
    json_t *l[64];
    size_t n = json_lines(s.body, l, 64);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_object_get(l[i], "id"));
        if (id) {
            strncat(out, id, cap - strlen(out) - 2);
            strcat(out, ",");
        }
        json_decref(l[i]);
    }
    close_stream(&s);
}

Test(feed, doc_ids_paths_and_query_filters)
{
    char rev[128], ids[256], path[1024], e[512];
    make_db("f");
    put_doc("/f/u1", "{\"type\":\"user\",\"age\":30}", rev, sizeof rev);
    put_doc("/f/u2", "{\"type\":\"user\",\"age\":12}", rev, sizeof rev);
    put_doc("/f/o1", "{\"type\":\"order\",\"total\":5}", rev, sizeof rev);
    put_doc("/f/x", "{\"misc\":true}", rev, sizeof rev);
    const char *tail = "feed=continuous&timeout=300";
    enc("[\"u2\",\"x\"]", e, sizeof e);
    snprintf(path, sizeof path, "/f/_changes?%s&filter=_doc_ids&doc_ids=%s", tail, e);
    feed_ids("GET", path, NULL, ids, sizeof ids);
    cr_expect_str_eq(ids, "u2,x,");
    snprintf(path, sizeof path, "/f/_changes?%s&filter=_doc_ids", tail);
    feed_ids("POST", path, "{\"doc_ids\":[\"o1\"]}", ids, sizeof ids);
    cr_expect_str_eq(ids, "o1,");
    /* paths: comma-separated and repeated */
    snprintf(path, sizeof path, "/f/_changes?%s&paths=type/order,misc/%%23", tail);
    feed_ids("GET", path, NULL, ids, sizeof ids);
    cr_expect_str_eq(ids, "o1,x,");
    snprintf(path, sizeof path, "/f/_changes?%s&paths=type/order&paths=%%2B/user", tail);
    feed_ids("GET", path, NULL, ids, sizeof ids);
    cr_expect_str_eq(ids, "u1,u2,o1,");
    /* a query (barrel's form) in the URL, a Mango selector in a POST body */
    enc("{\"where\":[{\"path\":\"age\",\"op\":\">\",\"value\":18}]}", e, sizeof e);
    snprintf(path, sizeof path, "/f/_changes?%s&query=%s", tail, e);
    feed_ids("GET", path, NULL, ids, sizeof ids);
    cr_expect_str_eq(ids, "u1,");
    snprintf(path, sizeof path, "/f/_changes?%s&filter=_selector", tail);
    feed_ids("POST", path, "{\"selector\":{\"type\":\"user\",\"age\":{\"$lt\":20}}}", ids,
             sizeof ids);
    cr_expect_str_eq(ids, "u2,");
    /* the normal feed takes the same filters */
    struct resp r;
    cr_assert_eq(post_json(&r, "/f/_changes?filter=_doc_ids", "{\"doc_ids\":[\"x\",\"u1\"]}"), 200,
                 "%s", r.body);
    cr_expect_eq(json_array_size(json_object_get(r.json, "results")), 2, "%s", r.body);
    resp_fini(&r);
    /* a filtered live feed sees only matching new changes */
    struct stream s;
    open_stream(&s, "/f/_changes?feed=continuous&since=now&paths=type/order&timeout=3000");
    put_doc("/f/u3", "{\"type\":\"user\"}", rev, sizeof rev);
    put_doc("/f/o2", "{\"type\":\"order\"}", rev, sizeof rev);
    cr_assert(wait_for(&s, "\"o2\"", 3000), "%s", s.body);
    cr_expect(strstr(s.body, "\"u3\"") == NULL, "%s", s.body);
    close_stream(&s);
}

Test(feed, bad_arguments_are_400_and_the_node_keeps_serving)
{
    make_db("b");
    static const char *bad[] = {
        "/b/_changes?feed=sideways",
        "/b/_changes?feed=continuous&since=garbage",
        "/b/_changes?feed=longpoll&heartbeat=abc",
        "/b/_changes?feed=longpoll&heartbeat=0",
        "/b/_changes?feed=continuous&timeout=-5",
        "/b/_changes?feed=continuous&paths=a/%23/b",
        "/b/_changes?feed=continuous&paths=a%2Bb/c",
        "/b/_changes?paths=",
        "/b/_changes?feed=continuous&query=notjson",
        "/b/_changes?query=%7B%22where%22%3A%5B%7B%22op%22%3A%22%3D%3D%22%7D%5D%7D",
        "/b/_changes?feed=continuous&doc_ids=%7B%7D",
        "/b/_changes?filter=_view",
        "/b/_changes?filter=_doc_ids",
        "/b/_changes?style=weird",
        "/b/_changes?feed=continuous&limit=x",
    };
    struct resp r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        get(&r, bad[i]);
        cr_expect_eq(r.status, 400, "%s: %d %s", bad[i], r.status, r.body);
        expect_error(&r, 400, "bad_request");
        resp_fini(&r);
    }
    post_json(&r, "/b/_changes?feed=longpoll", "{\"doc_ids\":\"a\"}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    post_json(&r, "/b/_changes", "{\"selector\":{\"a\":{\"$nope\":1}}}");
    expect_error(&r, 400, "bad_request");
    resp_fini(&r);
    req(&r, "POST", "/b/_changes", "text/plain", NULL, "{}");
    cr_expect_eq(r.status, 415);
    resp_fini(&r);
    get(&r, "/nodb/_changes?feed=continuous");
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    still_serving();
}

Test(feed, five_hundred_idle_listeners_do_not_block_requests, .timeout = 120)
{
    enum { N = 520 }; /* issue 4: at least 500 open connections, most of them idle feeds */
    char rev[128], seq[64];
    make_db("many");
    put_doc("/many/seed", "{}", rev, sizeof rev);
    last_seq_of_db("many", seq, sizeof seq);
    static struct stream s[N];
    char path[256];
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "/many/_changes?feed=%s&since=now&timeout=60000",
                 i % 2 ? "continuous" : "longpoll");
        open_stream(&s[i], path);
        cr_assert_eq(s[i].status, 200);
    }
    double t0 = now_s();
    struct resp r;
    for (int i = 0; i < 20; i++) {
        still_serving();
        snprintf(path, sizeof path, "/many/d%d", i);
        put_doc(path, "{}", rev, sizeof rev);
        cr_assert_eq(get(&r, path), 200);
        resp_fini(&r);
    }
    double dt = now_s() - t0;
    cr_expect(dt < 5.0, "60 requests took %.2f s beside %d listeners", dt, N);
    /* every listener saw the writes: longpolls answered, continuous feeds got rows (generous
     * deadlines: 520 feeds under ASan on a busy 2-core machine take seconds to serve) */
    for (int i = 0; i < N; i++) {
        if (i % 2 == 0)
            cr_expect(wait_done(&s[i], 30000), "longpoll %d did not answer", i);
        else
            cr_expect(wait_for(&s[i], "\"d19\"", 30000),
                      "continuous %d: %s after %zu bytes; the last ones: %s", i,
                      s[i].done ? "the feed ended" : "no more bytes (timeout or EOF)",
                      s[i].body_len,
                      s[i].body_len > 300 ? s[i].body + s[i].body_len - 300 : s[i].body);
    }
    /* half of the continuous listeners leave abruptly; the node keeps serving */
    for (int i = 0; i < N; i++) {
        if (i % 4 == 1)
            close_stream(&s[i]);
    }
    still_serving();
    for (int i = 0; i < N; i++) {
        if (i % 4 != 1)
            close_stream(&s[i]);
    }
    still_serving();
}

Test(feed, stopping_the_node_ends_open_feeds)
{
    make_db("st");
    struct stream s;
    open_stream(&s, "/st/_changes?feed=continuous&heartbeat=1000");
    cr_assert_eq(s.status, 200);
    kill(pid, SIGTERM);
    cr_expect(wait_done(&s, 5000), "feed not ended at shutdown: %s", s.body);
    cr_expect(strstr(s.body, "last_seq"), "%s", s.body);
    close_stream(&s);
    /* teardown's SIGTERM and waitpid check the clean exit */
}

Test(feed, deleting_the_database_ends_its_feeds)
{
    char rev[128];
    make_db("del");
    struct stream s;
    open_stream(&s, "/del/_changes?feed=continuous&since=now&timeout=20000");
    struct resp r;
    cr_assert_eq(req(&r, "DELETE", "/del", NULL, NULL, NULL), 200);
    resp_fini(&r);
    make_db("del"); /* a new database of the same name */
    put_doc("/del/x", "{}", rev, sizeof rev);
    /* the old feed either ended or shows nothing of the new database */
    wait_done(&s, 1500);
    close_stream(&s);
    still_serving();
}
