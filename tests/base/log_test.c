/* log_test.c — level filtering (arguments unevaluated), sinks, the default line, parse_level. */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/redirect.h>

#include "barrel/log.h"

#include "testutil.h"

static int evaluated;

static int count_eval(void)
{
    return ++evaluated;
}

Test(log, default_level_is_info)
{
    cr_assert(eq(int, br_log_get_level(), BR_LOG_INFO));
    cr_assert(br_log_enabled(BR_LOG_ERROR));
    cr_assert(br_log_enabled(BR_LOG_INFO));
    cr_assert(br_log_enabled(BR_LOG_DEBUG) == 0);
}

Test(log, filtered_levels_do_not_evaluate_arguments)
{
    tu_log_capture();
    br_log_set_level(BR_LOG_WARN);
    br_log(BR_LOG_INFO, "t", "n=%d", count_eval());
    br_log(BR_LOG_DEBUG, "t", "n=%d", count_eval());
    br_log(BR_LOG_TRACE, "t", "n=%d", count_eval());
    cr_assert(eq(int, evaluated, 0), "arguments of a filtered line were evaluated");
    cr_assert(tu_log_contains("n=") == 0);

    br_log(BR_LOG_WARN, "t", "n=%d", count_eval());
    br_log(BR_LOG_ERROR, "t", "n=%d", count_eval());
    cr_assert(eq(int, evaluated, 2));
    cr_assert(tu_log_contains("warn t n=1"));
    cr_assert(tu_log_contains("error t n=2"));
    br_log_set_sink(NULL, NULL);
}

Test(log, every_level_filters_the_ones_above_it)
{
    for (int set = BR_LOG_ERROR; set <= BR_LOG_TRACE; set++) {
        br_log_set_level((enum br_log_level)set);
        cr_assert(eq(int, br_log_get_level(), set));
        for (int l = BR_LOG_ERROR; l <= BR_LOG_TRACE; l++)
            cr_assert(eq(int, br_log_enabled((enum br_log_level)l), l <= set), "set=%d l=%d", set,
                      l);
    }
}

Test(log, capture_sees_level_tag_and_message)
{
    tu_log_capture();
    br_log(BR_LOG_INFO, "store", "opened path=%s docs=%d", "/tmp/x", 3);
    cr_assert(tu_log_contains("info store opened path=/tmp/x docs=3"));
    cr_assert(tu_log_contains("debug") == 0);
    br_log_set_sink(NULL, NULL);
}

struct seen {
    int calls;
    enum br_log_level level;
    char tag[32];
    char line[2048];
};

static void remember(void *arg, enum br_log_level level, const char *tag, const char *line)
{
    struct seen *s = arg;
    s->calls++;
    s->level = level;
    snprintf(s->tag, sizeof s->tag, "%s", tag);
    snprintf(s->line, sizeof s->line, "%s", line);
}

Test(log, custom_sink_gets_one_call_per_line_with_its_arg)
{
    struct seen s = {0};
    br_log_set_sink(remember, &s);
    br_log(BR_LOG_ERROR, "sync", "peer=%.8s lost", "0123456789abcdef");
    cr_assert(eq(int, s.calls, 1));
    cr_assert(eq(int, s.level, BR_LOG_ERROR));
    cr_assert(eq(str, s.tag, "sync"));
    cr_assert(eq(str, s.line, "peer=01234567 lost"), "no newline, no prefix");
    br_log(BR_LOG_DEBUG, "sync", "filtered");
    cr_assert(eq(int, s.calls, 1));
    br_log_set_sink(NULL, NULL);
}

Test(log, newlines_in_a_message_stay_on_one_line)
{
    struct seen s = {0};
    br_log_set_sink(remember, &s);
    br_log(BR_LOG_WARN, "http", "reason=%s", "a\nb\r\nc");
    cr_assert(eq(str, s.line, "reason=a b  c"));
    br_log_set_sink(NULL, NULL);
}

Test(log, long_messages_are_cut_not_overflowed)
{
    static char big[5000];
    memset(big, 'L', sizeof big - 1);
    struct seen s = {0};
    br_log_set_sink(remember, &s);
    br_log(BR_LOG_INFO, "t", "%s", big);
    cr_assert(eq(int, s.calls, 1));
    size_t n = strlen(s.line);
    cr_assert(n > 0 && n < sizeof big - 1, "length %zu", n);
    br_log_set_sink(NULL, NULL);
}

Test(log, replacing_the_sink_twice_uses_the_last)
{
    struct seen a = {0}, b = {0};
    br_log_set_sink(remember, &a);
    br_log_set_sink(remember, &b);
    br_log(BR_LOG_INFO, "t", "x");
    cr_assert(eq(int, a.calls, 0));
    cr_assert(eq(int, b.calls, 1));
    br_log_set_sink(NULL, NULL);
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

Test(log, default_sink_writes_a_timestamped_line_to_stderr, .init = cr_redirect_stderr)
{
    br_log_set_sink(NULL, NULL);
    br_log(BR_LOG_WARN, "disc", "avahi=down");
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char line[256] = {0};
    cr_assert(fgets(line, sizeof line, f) != NULL, "nothing on stderr");
    /* 2026-11-23T12:00:00.123Z warn  disc avahi=down */
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd')
            cr_assert(is_digit(line[i]), "not a digit at %zu in: %s", i, line);
        else
            cr_assert(eq(chr, line[i], shape[i]), "at %zu in: %s", i, line);
    }
    cr_assert(eq(str, line + strlen(shape), "warn  disc avahi=down\n"));
}

Test(log, parse_level_accepts_every_name)
{
    for (int l = BR_LOG_ERROR; l <= BR_LOG_TRACE; l++) {
        enum br_log_level out = BR_LOG_ERROR;
        const char *name = br_log_level_name((enum br_log_level)l);
        cr_assert(eq(int, br_log_parse_level(name, &out), BR_OK), "%s", name);
        cr_assert(eq(int, out, l));
    }
    enum br_log_level out = BR_LOG_INFO;
    cr_assert(eq(int, br_log_parse_level("trace", &out), BR_OK));
    cr_assert(eq(int, out, BR_LOG_TRACE));
}

Test(log, parse_level_rejects_anything_else)
{
    const char *bad[] = {"", "verbose", "inf", "info ", " info", "errors", "5", "warning"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum br_log_level out = BR_LOG_DEBUG;
        cr_assert(eq(int, br_log_parse_level(bad[i], &out), BR_EINVAL), "'%s'", bad[i]);
        cr_assert(eq(int, out, BR_LOG_DEBUG), "out written on error for '%s'", bad[i]);
    }
}

Test(log, level_names)
{
    cr_assert(eq(str, (char *)br_log_level_name(BR_LOG_ERROR), "error"));
    cr_assert(eq(str, (char *)br_log_level_name(BR_LOG_WARN), "warn"));
    cr_assert(eq(str, (char *)br_log_level_name(BR_LOG_INFO), "info"));
    cr_assert(eq(str, (char *)br_log_level_name(BR_LOG_DEBUG), "debug"));
    cr_assert(eq(str, (char *)br_log_level_name(BR_LOG_TRACE), "trace"));
    cr_assert(eq(str, (char *)br_log_level_name((enum br_log_level)99), "?"));
    cr_assert(eq(str, (char *)br_log_level_name((enum br_log_level)(-1)), "?"));
}
