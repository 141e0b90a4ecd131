/* disc_probe.c — a tiny program around barrel/discovery.h for tests on real Avahi daemons.
 *
 *   disc_probe --id ID [--mesh HEX] [--port N] [--version N] [--ipv4-only] [--retry-ms N]
 *
 * Starts discovery (publish and browse) and prints one line per event on stdout:
 *
 *   started state=STATE
 *   state STATE                                  (on every change, polled every 50 ms)
 *   found id=ID v=N mesh=HEX|- addr=A family=4|6 port=P if=I
 *   lost id=ID
 *   log LEVEL TAG LINE                           (every barrel log line, level trace and up)
 *   stopped                                      (after SIGTERM or SIGINT; then exits 0)
 *
 * Exit status 2 for bad arguments or when br_discovery_start() fails. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "barrel/discovery.h"
#include "barrel/log.h"

static void sink(void *arg, enum br_log_level level, const char *tag, const char *line)
{
    (void)arg;
    printf("log %s %s %s\n", br_log_level_name(level), tag, line);
}

static void on_found(void *arg, const struct br_discovery_peer *p)
{
    (void)arg;
    printf("found id=%s v=%u mesh=%s addr=%s family=%d port=%u if=%d\n", p->id,
           (unsigned)p->version, p->mesh[0] ? p->mesh : "-", p->addr, p->family == AF_INET6 ? 6 : 4,
           (unsigned)p->port, p->ifindex);
}

static void on_lost(void *arg, const char *id)
{
    (void)arg;
    printf("lost id=%s\n", id);
}

static int number(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: disc_probe --id ID [--mesh HEX] [--port N] [--version N] "
                    "[--ipv4-only] [--retry-ms N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct br_discovery_opts o = {.version = 1, .port = 7070};
    unsigned long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--ipv4-only") == 0) {
            o.ipv4_only = true;
            continue;
        }
        if (!val)
            return usage();
        i++;
        if (strcmp(a, "--id") == 0)
            o.id = val;
        else if (strcmp(a, "--mesh") == 0)
            o.mesh = val;
        else if (strcmp(a, "--port") == 0 && number(val, 65535, &v) == 0)
            o.port = (uint16_t)v;
        else if (strcmp(a, "--version") == 0 && number(val, 0xffffffffUL, &v) == 0)
            o.version = (uint32_t)v;
        else if (strcmp(a, "--retry-ms") == 0 && number(val, 3600000, &v) == 0)
            o.retry_ms = (unsigned)v;
        else
            return usage();
    }
    if (!o.id)
        return usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    br_log_set_level(BR_LOG_TRACE);
    br_log_set_sink(sink, NULL);
    o.found = on_found;
    o.lost = on_lost;

    /* Signals are taken synchronously by this thread; the Avahi thread blocks them all. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);

    br_discovery *d = NULL;
    struct br_errbuf eb;
    if (br_discovery_start(&o, &d, &eb) != BR_OK) {
        printf("start failed: %s\n", eb.msg);
        return 2;
    }
    enum br_discovery_state last = br_discovery_state(d);
    printf("started state=%s\n", br_discovery_state_name(last));
    for (;;) {
        struct timespec tick = {0, 50 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        enum br_discovery_state now = br_discovery_state(d);
        if (now != last)
            printf("state %s\n", br_discovery_state_name(now));
        last = now;
    }
    br_discovery_free(d);
    printf("stopped\n");
    br_log_set_sink(NULL, NULL);
    return 0;
}
