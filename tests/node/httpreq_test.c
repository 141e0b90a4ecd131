/* httpreq_test.c — request path splitting, query arguments and header values. */
#include <string.h>

#include <criterion/criterion.h>

#include "httpreq.h"

static br_err split(const char *p, struct br_http_path *out)
{
    struct br_errbuf eb = {{0}};
    return br_http_path_split(p, strlen(p), out, &eb);
}

Test(httpreq, path_splits_into_segments_dropping_empty_ones)
{
    struct br_http_path p;
    cr_assert_eq(split("/db//doc/", &p), BR_OK);
    cr_assert_eq(p.n, 2);
    cr_expect_str_eq(p.seg[0], "db");
    cr_expect_str_eq(p.seg[1], "doc");
    br_http_path_fini(&p);
    cr_assert_eq(split("/", &p), BR_OK);
    cr_expect_eq(p.n, 0);
    br_http_path_fini(&p);
    cr_assert_eq(split("/a/.hidden/..x", &p), BR_OK);
    cr_expect_eq(p.n, 3);
    br_http_path_fini(&p);
}

Test(httpreq, path_rejects_dot_segments_controls_and_excess)
{
    struct br_http_path p;
    cr_expect_eq(split("/db/../etc", &p), BR_EINVAL);
    cr_expect_eq(split("/db/./x", &p), BR_EINVAL);
    cr_expect_eq(split("/..", &p), BR_EINVAL);
    cr_expect_eq(split("db", &p), BR_EINVAL);
    cr_expect_eq(split("", &p), BR_EINVAL);
    cr_expect_eq(split("/a\nb", &p), BR_EINVAL);
    cr_expect_eq(split("/a\x7f", &p), BR_EINVAL);
    cr_expect_eq(split("/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17", &p), BR_EINVAL);
    cr_expect_eq(br_http_path_split("/a\0b", 4, &p, NULL), BR_EINVAL);
    cr_expect_eq(split("/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", &p), BR_OK);
    br_http_path_fini(&p);
}

Test(httpreq, raw_query_is_decoded_and_last_value_wins)
{
    struct br_http_args a = {0};
    struct br_errbuf eb = {{0}};
    const char *qs = "rev=1-a&open_revs=%5B%221-a%22%5D&x=a+b&flag&rev=2-b&&";
    cr_assert_eq(br_http_args_parse(&a, qs, strlen(qs), &eb), BR_OK, "%s", eb.msg);
    cr_expect_eq(a.n, 5);
    cr_expect_str_eq(br_http_arg(&a, "rev"), "2-b");
    cr_expect_str_eq(br_http_arg(&a, "open_revs"), "[\"1-a\"]");
    cr_expect_str_eq(br_http_arg(&a, "x"), "a b");
    cr_expect_str_eq(br_http_arg(&a, "flag"), "");
    cr_expect_null(br_http_arg(&a, "nope"));
    br_http_args_fini(&a);
    static const char *const bad[] = {"a=%zz", "a=%2", "a=%", "a=%00", "=v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(br_http_args_parse(&a, bad[i], strlen(bad[i]), &eb), BR_EINVAL, "%s", bad[i]);
        br_http_args_fini(&a);
    }
}

Test(httpreq, argument_count_is_capped)
{
    struct br_http_args a = {0};
    for (int i = 0; i < BR_HTTP_ARGS_MAX; i++)
        cr_assert_eq(br_http_args_add(&a, "k=v", 3, NULL), BR_OK);
    cr_expect_eq(br_http_args_add(&a, "k=v", 3, NULL), BR_EINVAL);
    br_http_args_fini(&a);
}

Test(httpreq, typed_arguments)
{
    struct br_http_args a = {0};
    const char *qs = "t=true&f=false&n=42&bad=yes&neg=-1&huge=99999999999999999999";
    cr_assert_eq(br_http_args_parse(&a, qs, strlen(qs), NULL), BR_OK);
    bool b;
    uint64_t n;
    cr_expect(br_http_arg_bool(&a, "t", false, &b, NULL) == BR_OK && b);
    cr_expect(br_http_arg_bool(&a, "f", true, &b, NULL) == BR_OK && !b);
    cr_expect(br_http_arg_bool(&a, "absent", true, &b, NULL) == BR_OK && b);
    cr_expect_eq(br_http_arg_bool(&a, "bad", false, &b, NULL), BR_EINVAL);
    cr_expect(br_http_arg_u64(&a, "n", 0, &n, NULL) == BR_OK && n == 42);
    cr_expect(br_http_arg_u64(&a, "absent", 7, &n, NULL) == BR_OK && n == 7);
    cr_expect_eq(br_http_arg_u64(&a, "neg", 0, &n, NULL), BR_EINVAL);
    cr_expect_eq(br_http_arg_u64(&a, "huge", 0, &n, NULL), BR_EINVAL);
    br_http_args_fini(&a);
}

Test(httpreq, media_types_ignore_case_and_parameters)
{
    cr_expect(br_http_media_is("application/json", "application/json"));
    cr_expect(br_http_media_is("Application/JSON; charset=utf-8", "application/json"));
    cr_expect(br_http_media_is(" application/json;", "application/json"));
    cr_expect(!br_http_media_is("application/jsonx", "application/json"));
    cr_expect(!br_http_media_is("text/plain", "application/json"));
    cr_expect(!br_http_media_is(NULL, "application/json"));
}

Test(httpreq, etags_are_unquoted)
{
    char out[32];
    cr_expect(br_http_etag_value("\"1-abc\"", 7, out, sizeof out) == BR_OK &&
              strcmp(out, "1-abc") == 0);
    cr_expect(br_http_etag_value(" W/\"1-abc\" ", 11, out, sizeof out) == BR_OK &&
              strcmp(out, "1-abc") == 0);
    cr_expect(br_http_etag_value("1-abc", 5, out, sizeof out) == BR_OK &&
              strcmp(out, "1-abc") == 0);
    cr_expect_eq(br_http_etag_value("\"1-abc", 6, out, sizeof out), BR_EINVAL);
    cr_expect_eq(br_http_etag_value("\"\"", 2, out, sizeof out), BR_EINVAL);
    cr_expect_eq(br_http_etag_value("\"", 1, out, sizeof out), BR_EINVAL);
    cr_expect_eq(br_http_etag_value("", 0, out, sizeof out), BR_EINVAL);
    cr_expect_eq(br_http_etag_value("\"a\"b\"", 5, out, sizeof out), BR_EINVAL);
    cr_expect_eq(br_http_etag_value("0123456789012345678901234567890123", 34, out, sizeof out),
                 BR_EINVAL);
}
