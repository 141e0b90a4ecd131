/* log.c — leveled logging with a replaceable sink. */
#include "barrel/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum br_log_level br_log_level_current = BR_LOG_INFO;

static br_log_sink sink_fn;
static void *sink_arg;
static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const names[] = {"error", "warn", "info", "debug", "trace"};

const char *br_log_level_name(enum br_log_level level)
{
    if ((unsigned)level > BR_LOG_TRACE)
        return "?";
    return names[level];
}

void br_log_set_level(enum br_log_level level)
{
    br_log_level_current = level;
}

enum br_log_level br_log_get_level(void)
{
    return br_log_level_current;
}

br_err br_log_parse_level(const char *s, enum br_log_level *out)
{
    for (unsigned i = 0; i <= BR_LOG_TRACE; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum br_log_level)i;
            return BR_OK;
        }
    }
    return BR_EINVAL;
}

void br_log_set_sink(br_log_sink sink, void *arg)
{
    pthread_mutex_lock(&sink_mu);
    sink_fn = sink;
    sink_arg = arg;
    pthread_mutex_unlock(&sink_mu);
}

static void default_sink(enum br_log_level level, const char *tag, const char *line)
{
    struct timespec ts;
    struct tm tm;
    char when[32];
    /* Logging is an edge: the wall clock here is for people, never for the data. */
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-5s %s %s\n", when, ts.tv_nsec / 1000000L, br_log_level_name(level),
            tag, line);
}

void br_log_write(enum br_log_level level, const char *tag, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++) /* one line per event, whatever the message held */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    pthread_mutex_lock(&sink_mu);
    if (sink_fn)
        sink_fn(sink_arg, level, tag, line);
    else
        default_sink(level, tag, line);
    pthread_mutex_unlock(&sink_mu);
}
