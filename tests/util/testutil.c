/* testutil.c — temporary directories and log capture for tests. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "barrel/log.h"
#include "testutil.h"

char *tu_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/barrel-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    char *p = mkdtemp(tmpl);
    cr_assert(p != NULL, "mkdtemp failed");
    return strdup(p);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char captured[1 << 16];
static size_t captured_len;

static void capture_sink(void *arg, enum br_log_level level, const char *tag, const char *line)
{
    (void)arg;
    int n = snprintf(captured + captured_len, sizeof captured - captured_len, "%s %s %s\n",
                     br_log_level_name(level), tag, line);
    if (n > 0 && captured_len + (size_t)n < sizeof captured)
        captured_len += (size_t)n;
}

void tu_log_capture(void)
{
    captured_len = 0;
    captured[0] = 0;
    br_log_set_sink(capture_sink, NULL);
}

int tu_log_contains(const char *needle)
{
    return strstr(captured, needle) != NULL;
}
