/* metrics_test.c — GET /_metrics on a real node: the text parses as Prometheus exposition
 * format (0.0.4), and requests, documents and connections move the series they should. */
#include <regex.h>

#include "serve_util.h"

TestSuite(metrics, .init = setup, .fini = teardown, .timeout = 60);

/* Parse the exposition text: every line is "# HELP name text", "# TYPE name kind", or a sample
 * "name{label="value",...} number". Returns the number of samples; fails the test on a bad
 * line or a sample whose family has no TYPE line before it. */
static int check_exposition(const char *text)
{
    regex_t sample, help, type;
    cr_assert(
        regcomp(&sample,
                "^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
                "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*)?\\})? "
                "(-?[0-9.eE+-]+|\\+Inf|-Inf|NaN)$",
                REG_EXTENDED) == 0);
    cr_assert(regcomp(&help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$", REG_EXTENDED) == 0);
    cr_assert(
        regcomp(&type,
                "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$",
                REG_EXTENDED) == 0);
    char typed[64][96];
    int ntyped = 0, samples = 0;
    char *copy = strdup(text), *save = NULL;
    cr_assert(strlen(text) > 0 && text[strlen(text) - 1] == '\n', "must end with a newline");
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        regmatch_t m[3];
        if (l[0] == '#') {
            if (regexec(&type, l, 2, m, 0) == 0) {
                cr_assert(ntyped < 64);
                snprintf(typed[ntyped++], sizeof typed[0], "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
                         l + m[1].rm_so);
            } else {
                cr_assert(regexec(&help, l, 0, NULL, 0) == 0, "bad comment line: %s", l);
            }
            continue;
        }
        cr_assert(regexec(&sample, l, 2, m, 0) == 0, "bad sample line: %s", l);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), l + m[1].rm_so);
        bool found = false;
        for (int i = 0; i < ntyped && !found; i++) {
            size_t tl = strlen(typed[i]);
            found = strcmp(name, typed[i]) == 0 ||
                    (strncmp(name, typed[i], tl) == 0 &&
                     (strcmp(name + tl, "_bucket") == 0 || strcmp(name + tl, "_sum") == 0 ||
                      strcmp(name + tl, "_count") == 0));
        }
        cr_assert(found, "sample before its TYPE line: %s", l);
        samples++;
    }
    free(copy);
    regfree(&sample);
    regfree(&help);
    regfree(&type);
    return samples;
}

/* The value of the sample line that starts with `series ` (exact, labels included), or -1. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, series, n) == 0 && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    }
    return -1;
}

static char *scrape(void)
{
    struct resp r;
    cr_assert_eq(get(&r, "/_metrics"), 200);
    cr_expect(strncmp(header(&r, "content-type"), "text/plain; version=0.0.4", 25) == 0, "%s",
              header(&r, "content-type"));
    char *t = strdup(r.body);
    resp_fini(&r);
    check_exposition(t);
    return t;
}

Test(metrics, output_parses_as_prometheus_text)
{
    make_db("m");
    put_doc("/m/a", "{\"v\":1}", (char[128]){0}, 128);
    char *t = scrape();
    cr_expect(check_exposition(t) > 10);
    cr_expect(strstr(t, "# TYPE barrel_http_request_duration_seconds histogram"));
    cr_expect(value_of(t, "barrel_db_docs{db=\"m\"}") == 1, "%s", t);
    cr_expect(value_of(t, "barrel_db_size_bytes{db=\"m\",kind=\"external\"}") > 0);
    cr_expect(value_of(t, "barrel_uptime_seconds") >= 0);
    free(t);
}

Test(metrics, requests_move_their_route_and_status_series)
{
    make_db("m");
    char rev[128];
    put_doc("/m/a", "{\"v\":1}", rev, sizeof rev);
    char *t0 = scrape();
    double get200 = value_of(t0, "barrel_http_requests_total{route=\"doc\",status=\"200\"}");
    double get404 = value_of(t0, "barrel_http_requests_total{route=\"doc\",status=\"404\"}");
    double put201 = value_of(t0, "barrel_http_requests_total{route=\"doc\",status=\"201\"}");
    double count = value_of(t0, "barrel_http_request_duration_seconds_count{route=\"doc\"}");
    double rd = value_of(t0, "barrel_docs_read_total");
    double wr = value_of(t0, "barrel_docs_written_total");
    cr_assert_eq(put201, 1);
    cr_assert_eq(get200, -1, "no series before the first GET");
    struct resp r;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(get(&r, "/m/a"), 200);
        resp_fini(&r);
    }
    get(&r, "/m/nope");
    resp_fini(&r);
    get(&r, "/_nothing");
    resp_fini(&r);
    cr_assert_eq(post_json(&r, "/m/_bulk_docs", "{\"docs\":[{\"_id\":\"b\"},{\"_id\":\"c\"}]}"),
                 201);
    resp_fini(&r);
    char *t1 = scrape();
    cr_expect_eq(value_of(t1, "barrel_http_requests_total{route=\"doc\",status=\"200\"}"), 3);
    cr_expect_eq(value_of(t1, "barrel_http_requests_total{route=\"doc\",status=\"404\"}"),
                 get404 < 0 ? 1 : get404 + 1);
    cr_expect_eq(value_of(t1, "barrel_http_requests_total{route=\"doc\",status=\"201\"}"), 1);
    cr_expect_eq(value_of(t1, "barrel_http_requests_total{route=\"unmatched\",status=\"404\"}"), 1);
    cr_expect_eq(value_of(t1, "barrel_http_requests_total{route=\"bulk_docs\",status=\"201\"}"), 1);
    cr_expect_eq(value_of(t1, "barrel_http_request_duration_seconds_count{route=\"doc\"}"),
                 count + 4);
    cr_expect_eq(value_of(t1, "barrel_http_request_duration_seconds_bucket{route=\"doc\","
                              "le=\"+Inf\"}"),
                 count + 4);
    cr_expect_eq(value_of(t1, "barrel_docs_read_total"), rd + 3);
    cr_expect_eq(value_of(t1, "barrel_docs_written_total"), wr + 2);
    cr_expect_eq(value_of(t1, "barrel_http_requests_total{route=\"metrics\",status=\"200\"}"), 1);
    free(t0);
    free(t1);
}

Test(metrics, connections_and_feed_listeners_are_gauges)
{
    make_db("m");
    char *t0 = scrape();
    double c0 = value_of(t0, "barrel_http_connections");
    cr_expect_eq(value_of(t0, "barrel_changes_listeners"), 0);
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = connect_node();
        send_all(fds[i], "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
        struct resp r;
        cr_assert(read_resp(fds[i], &r, 5000)); /* kept alive */
        resp_fini(&r);
    }
    struct stream s;
    open_stream(&s, "/m/_changes?feed=continuous&timeout=10000");
    char *t1 = scrape();
    cr_expect_eq(value_of(t1, "barrel_http_connections"), c0 + 4, "%s", t1);
    cr_expect_eq(value_of(t1, "barrel_changes_listeners"), 1);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    close_stream(&s);
    char *t2 = NULL;
    for (int i = 0; i < 100; i++) { /* the node notices the closes within a poll round */
        free(t2);
        usleep(50 * 1000);
        t2 = scrape();
        if (value_of(t2, "barrel_http_connections") == c0 &&
            value_of(t2, "barrel_changes_listeners") == 0)
            break;
    }
    cr_expect_eq(value_of(t2, "barrel_http_connections"), c0, "%f",
                 value_of(t2, "barrel_http_connections"));
    cr_expect_eq(value_of(t2, "barrel_changes_listeners"), 0);
    free(t0);
    free(t1);
    free(t2);
}
