/* discovery_test.c — discovery against real Avahi daemons, and without any.
 *
 * The daemon-less tests run in this process. The others set up hosts in network namespaces
 * with tests/netns/netns.sh (`hold`: each host has its own dbus-daemon and avahi-daemon, on a
 * private bridge; torn down when our end of its stdin closes, even if this process dies) and
 * run tests/discovery/disc_probe.c in them, reading the lines it prints. They are skipped, with
 * the reason, only when this machine cannot create network namespaces. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "barrel/discovery.h"
#include "barrel/log.h"

#include "testutil.h"

#define MESH1 "0123456789abcdef"
#define MESH2 "fedcba9876543210"
#define RETRY_MS "300"

/* A node id of the right shape whose first group is seven times c (short form "cccccccH"). */
static void make_id(char c, char out[BR_DISCOVERY_ID_LEN + 1])
{
    snprintf(out, BR_DISCOVERY_ID_LEN + 1,
             "%c%c%c%c%c%c%c-HIJKLMN-OPQRSTU-VWXYZ23-4567ABC-DEFGHIJ-"
             "KLMNOPQ-RSTUVWX",
             c, c, c, c, c, c, c);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- Log capture for the in-process tests --------------------------------------------------- */

static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static char cap[1 << 16];
static size_t cap_len;

static void cap_sink(void *arg, enum br_log_level level, const char *tag, const char *line)
{
    (void)arg;
    pthread_mutex_lock(&cap_mu);
    int n = snprintf(cap + cap_len, sizeof cap - cap_len, "%s %s %s\n", br_log_level_name(level),
                     tag, line);
    if (n > 0 && cap_len + (size_t)n < sizeof cap)
        cap_len += (size_t)n;
    pthread_mutex_unlock(&cap_mu);
}

static int count_in(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static int cap_count(const char *needle)
{
    pthread_mutex_lock(&cap_mu);
    int n = count_in(cap, needle);
    pthread_mutex_unlock(&cap_mu);
    return n;
}

static atomic_int found_calls, lost_calls;

static void count_found(void *arg, const struct br_discovery_peer *p)
{
    (void)arg;
    (void)p;
    atomic_fetch_add(&found_calls, 1);
}

static void count_lost(void *arg, const char *id)
{
    (void)arg;
    (void)id;
    atomic_fetch_add(&lost_calls, 1);
}

/* ---- Without any daemon -----------------------------------------------------------------------
 */

Test(discovery, start_without_bus_succeeds_off_warns_once_and_keeps_retrying)
{
    char id[BR_DISCOVERY_ID_LEN + 1], bus[600];
    char *dir = tu_tmpdir("disc");
    make_id('A', id);
    snprintf(bus, sizeof bus, "unix:path=%s/no_bus_here", dir);
    setenv("DBUS_SYSTEM_BUS_ADDRESS", bus, 1);
    br_log_set_level(BR_LOG_TRACE);
    br_log_set_sink(cap_sink, NULL);

    struct br_discovery_opts o = {.id = id,
                                  .mesh = MESH1,
                                  .version = 1,
                                  .port = 7070,
                                  .retry_ms = 20,
                                  .found = count_found,
                                  .lost = count_lost};
    br_discovery *d = NULL;
    struct br_errbuf eb;
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_OK, "%s", eb.msg);
    cr_assert_eq(br_discovery_state(d), BR_DISCOVERY_OFF, "state %s",
                 br_discovery_state_name(br_discovery_state(d)));
    sleep_ms(400);
    cr_assert_eq(br_discovery_state(d), BR_DISCOVERY_OFF);
    cr_assert_geq(cap_count("event=mdns_reconnect"), 5, "no retries:\n%s", cap);
    cr_assert_eq(cap_count("warn "), 1, "not exactly one warning:\n%s", cap);
    cr_assert_eq(cap_count("warn discovery mDNS discovery off: no Avahi daemon reachable "
                           "(Daemon not running); static and gossip-learned peers still work\n"),
                 1, "%s", cap);
    br_discovery_stop(d);
    cr_assert_eq(br_discovery_state(d), BR_DISCOVERY_STOPPED);
    br_discovery_stop(d); /* idempotent */
    br_discovery_free(d);
    br_discovery_free(NULL);
    cr_assert_eq(atomic_load(&found_calls), 0);
    cr_assert_eq(atomic_load(&lost_calls), 0);
    br_log_set_sink(NULL, NULL);
    tu_rmtree(dir);
    free(dir);
}

Test(discovery, free_without_stop_on_an_off_handle)
{
    char id[BR_DISCOVERY_ID_LEN + 1];
    make_id('B', id);
    setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/barrel-test-bus", 1);
    br_log_set_sink(cap_sink, NULL);
    struct br_discovery_opts o = {.id = id, .version = 1, .port = 1, .ipv4_only = true};
    br_discovery *d = NULL;
    cr_assert_eq(br_discovery_start(&o, &d, NULL), BR_OK);
    br_discovery_free(d);
    br_log_set_sink(NULL, NULL);
}

Test(discovery, start_refuses_bad_options_and_leaves_out_alone)
{
    char id[BR_DISCOVERY_ID_LEN + 1];
    make_id('C', id);
    br_discovery *const sentinel = (br_discovery *)&found_calls, *d = sentinel;
    struct br_errbuf eb;
    struct br_discovery_opts ok = {.id = id, .mesh = MESH1, .version = 1, .port = 7070};
    struct br_discovery_opts o;

    o = ok;
    o.id = NULL;
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    o.id = "ABCDEFG";
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    o = ok;
    o.id = "cccccccc-HIJKLMN-OPQRSTU-VWXYZ23-4567ABC-DEFGHIJ-KLMNOPQ-RSTUVWX";
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    o = ok;
    o.mesh = "0123456789ABCDEF";
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    cr_assert(strstr(eb.msg, "mesh"), "%s", eb.msg);
    o.mesh = "0123456789abcdef0";
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    o = ok;
    o.port = 0;
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    cr_assert(strstr(eb.msg, "port"), "%s", eb.msg);
    o = ok;
    o.version = 0;
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    o.version = BR_DISCOVERY_VERSION_MAX + 1;
    cr_assert_eq(br_discovery_start(&o, &d, &eb), BR_EINVAL);
    cr_assert_eq(d, sentinel);
}

/* ---- Hosts in network namespaces ------------------------------------------------------------- */

#define MAX_PROBES 8

struct probe {
    pid_t pid; /* 0 once reaped */
    char id[BR_DISCOVERY_ID_LEN + 1];
    char log[600];
};

static struct world {
    char *dir;
    pid_t holder;
    int holder_in; /* our end of the holder's stdin; closing it tears the hosts down */
    char holder_log[600];
    char prefix[128];
    struct probe probes[MAX_PROBES];
    int n_probes;
} W = {.holder_in = -1};

/* The last part of a file, for failure messages (a static buffer: nothing to free). */
static const char *show(const char *path)
{
    static char buf[12000];
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f)
        return "(no file)";
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Whole file as a string in buf (cut to fit). */
static const char *slurp(const char *path, char *buf, size_t cap_)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f)
        return buf;
    size_t n = fread(buf, 1, cap_ - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Lines of the file at path that contain every one of the needles (NULL-terminated list); a
 * needle "^text" must start the line. */
static int lines_with(const char *path, const char *const *needles)
{
    static char buf[1 << 18];
    int n = 0;
    slurp(path, buf, sizeof buf);
    for (char *line = buf; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        bool all = true;
        for (const char *const *k = needles; *k && all; k++)
            all = (*k)[0] == '^' ? strncmp(line, *k + 1, strlen(*k + 1)) == 0
                                 : strstr(line, *k) != NULL;
        n += all;
        if (!nl)
            break;
        line = nl + 1;
    }
    return n;
}

#define LINES(path, ...) lines_with(path, (const char *const[]){__VA_ARGS__, NULL})

/* Wait up to ms for a line of path holding all needles; true if it came. */
#define WAIT_LINE(ms, path, ...) wait_line(ms, path, (const char *const[]){__VA_ARGS__, NULL})

static bool wait_line(long ms, const char *path, const char *const *needles)
{
    long long end = now_ms() + ms;
    do {
        if (lines_with(path, needles) > 0)
            return true;
        sleep_ms(50);
    } while (now_ms() < end);
    return false;
}

static void close_fds_from(int lowest)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = lowest; fd < max; fd++)
        close(fd);
}

/* fork + exec argv with stdin from in_fd (or /dev/null) and stdout/stderr to log. */
static pid_t spawn(char *const argv[], int in_fd, const char *log, const char *prefix)
{
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid > 0)
        return pid;
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
    if (out < 0 || in < 0)
        _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    close_fds_from(3);
    if (prefix)
        setenv("NETNS_PREFIX", prefix, 1);
    execv(argv[0], argv);
    _exit(127);
}

/* Wait up to ms for pid to exit; its wait status, or -1 if it did not. */
static int reap(pid_t pid, long ms)
{
    long long end = now_ms() + ms;
    int status;
    do {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        sleep_ms(20);
    } while (now_ms() < end);
    return -1;
}

/* Set up n hosts; skips the test when namespaces cannot be made here. */
static void world_up(int n, bool ipv6)
{
    int p[2];
    char nstr[16];
    W.dir = tu_tmpdir("netns");
    snprintf(W.holder_log, sizeof W.holder_log, "%s/netns.log", W.dir);
    snprintf(nstr, sizeof nstr, "%d", n);
    cr_assert(pipe(p) == 0);
    fcntl(p[0], F_SETFD, FD_CLOEXEC);
    fcntl(p[1], F_SETFD, FD_CLOEXEC); /* probes must not hold the holder's stdin open */
    if (ipv6)
        setenv("NETNS_IPV6", "1", 1);
    else
        unsetenv("NETNS_IPV6");
    char *argv[] = {"/bin/bash", NETNS_SH, "hold", nstr, NULL};
    W.holder = spawn(argv, p[0], W.holder_log, NULL);
    close(p[0]);
    W.holder_in = p[1];
    long long end = now_ms() + 60000;
    char buf[4096];
    for (;;) {
        slurp(W.holder_log, buf, sizeof buf);
        const char *ready = strstr(buf, "netns: ready prefix=");
        if (ready) {
            sscanf(ready, "netns: ready prefix=%127s", W.prefix);
            return;
        }
        int status;
        if (waitpid(W.holder, &status, WNOHANG) == W.holder) {
            W.holder = 0;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
                cr_skip_test("this machine cannot create network namespaces: %s",
                             show(W.holder_log));
            cr_assert_fail("netns.sh hold failed (status %d):\n%s", status, show(W.holder_log));
            return;
        }
        cr_assert(now_ms() < end, "netns.sh hold not ready after 60 s:\n%s", show(W.holder_log));
        sleep_ms(50);
    }
}

/* Send a command to the holder and wait for its answer. */
static void world_cmd(const char *cmd)
{
    char line[200], ok[220];
    int n = snprintf(line, sizeof line, "%s\n", cmd);
    snprintf(ok, sizeof ok, "netns: ok %s", cmd);
    cr_assert(write(W.holder_in, line, (size_t)n) == n);
    cr_assert(WAIT_LINE(20000, W.holder_log, ok), "no answer to '%s':\n%s", cmd,
              show(W.holder_log));
}

/* Start disc_probe on host h with node id `id` (tag names its log); returns its index. */
static int probe_start_id(const char *h, const char *id, const char *tag, const char *mesh,
                          const char *port)
{
    cr_assert(W.n_probes < MAX_PROBES);
    int i = W.n_probes++;
    struct probe *p = &W.probes[i];
    snprintf(p->id, sizeof p->id, "%s", id);
    snprintf(p->log, sizeof p->log, "%s/probe-%s-%s.log", W.dir, tag, h);
    char *argv[] = {"/bin/bash",  NETNS_SH,     "run",    (char *)h,    DISC_PROBE,
                    "--id",       p->id,        "--mesh", (char *)mesh, "--port",
                    (char *)port, "--retry-ms", RETRY_MS, NULL};
    p->pid = spawn(argv, -1, p->log, W.prefix);
    return i;
}

/* The same with the id make_id(idc). */
static int probe_start(const char *h, char idc, const char *mesh, const char *port)
{
    char id[BR_DISCOVERY_ID_LEN + 1], tag[2] = {idc, '\0'};
    make_id(idc, id);
    return probe_start_id(h, id, tag, mesh, port);
}

/* SIGTERM a probe; it must print "stopped" and exit 0 (under ASan: without leaks). */
static void probe_stop(int i)
{
    struct probe *p = &W.probes[i];
    cr_assert(p->pid > 0);
    kill(p->pid, SIGTERM);
    int status = reap(p->pid, 15000);
    p->pid = 0;
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "probe %s did not stop cleanly (status %d):\n%s", p->id, status, show(p->log));
    cr_assert(LINES(p->log, "^stopped") == 1, "%s", show(p->log));
}

static void probe_kill9(int i)
{
    struct probe *p = &W.probes[i];
    kill(p->pid, SIGKILL);
    reap(p->pid, 5000);
    p->pid = 0;
}

static void world_fini(void)
{
    for (int i = 0; i < W.n_probes; i++) {
        if (W.probes[i].pid > 0) {
            kill(W.probes[i].pid, SIGKILL);
            reap(W.probes[i].pid, 5000);
        }
    }
    if (W.holder_in >= 0)
        close(W.holder_in); /* EOF: the holder tears everything down */
    if (W.holder > 0 && reap(W.holder, 30000) == -1) {
        kill(W.holder, SIGKILL);
        reap(W.holder, 5000);
    }
    if (W.dir) {
        tu_rmtree(W.dir);
        free(W.dir);
    }
    memset(&W, 0, sizeof W);
    W.holder_in = -1;
}

/* "found id=ID ... addr=A family=F port=P" in the log of probe `who` about probe `whom`. */
static bool saw(int who, int whom, const char *addr, const char *family, const char *port, long ms)
{
    char id[80], a[80], fp[80];
    snprintf(id, sizeof id, "^found id=%s ", W.probes[whom].id);
    snprintf(a, sizeof a, " addr=%s", addr ? addr : "");
    snprintf(fp, sizeof fp, " family=%s port=%s ", family, port);
    return WAIT_LINE(ms, W.probes[who].log, id, a, fp);
}

static int found_lines(int who, int whom)
{
    char id[80];
    snprintf(id, sizeof id, "^found id=%s ", W.probes[whom].id);
    return LINES(W.probes[who].log, id);
}

static void short_of(int i, char out[9])
{
    memcpy(out, W.probes[i].id, 7);
    out[7] = W.probes[i].id[8];
    out[8] = '\0';
}

Test(discovery, nodes_on_three_hosts_find_each_other_ignore_other_meshes_and_lose_killed_ones,
     .fini = world_fini, .timeout = 120)
{
    long long t0 = now_ms();
    world_up(3, true);
    long long t_up = now_ms();
    int a = probe_start("h1", 'P', MESH1, "7001");
    int b = probe_start("h2", 'Q', MESH1, "7002");
    int c = probe_start("h3", 'R', MESH1, "7003");
    int x = probe_start("h3", 'X', MESH2, "7004"); /* another mesh, on C's host */
    int y = probe_start("h2", 'Y', "", "7005");    /* no mesh key, on B's host */
    /* Z's id differs from A's only at the end: same instance name "barrel-PPPPPPPH", so the
     * daemons of h1 and h3 find a name collision and one of the two is renamed. */
    char z_id[BR_DISCOVERY_ID_LEN + 1];
    make_id('P', z_id);
    z_id[BR_DISCOVERY_ID_LEN - 1] = 'Z';
    int z = probe_start_id("h3", z_id, "Z", MESH1, "7006");
    const char *addr[] = {"10.99.0.1", "10.99.0.2", "10.99.0.3"};
    const char *port[] = {"7001", "7002", "7003"};
    int mesh1[] = {a, b, c};

    /* Each of A, B, C finds the two others, with their IPv4 address and port, and over IPv6. */
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            if (i == j)
                continue;
            cr_assert(saw(mesh1[i], mesh1[j], addr[j], "4", port[j], 20000),
                      "%s did not find %s over IPv4:\n%s", W.probes[mesh1[i]].id,
                      W.probes[mesh1[j]].id, show(W.probes[mesh1[i]].log));
            cr_assert(saw(mesh1[i], mesh1[j], NULL, "6", port[j], 20000),
                      "%s did not find %s over IPv6:\n%s", W.probes[mesh1[i]].id,
                      W.probes[mesh1[j]].id, show(W.probes[mesh1[i]].log));
        }
    }
    cr_assert(saw(b, z, "10.99.0.3", "4", "7006", 20000), "%s", show(W.probes[b].log));
    cr_assert(saw(b, a, "10.99.0.1", "4", "7001", 20000), "%s", show(W.probes[b].log));
    cr_assert_eq(LINES(W.probes[a].log, "event=mdns_renamed name=\"barrel-PPPPPPPH #2\"") +
                     LINES(W.probes[z].log, "event=mdns_renamed name=\"barrel-PPPPPPPH #2\""),
                 1, "no rename:\n%s", show(W.probes[z].log));
    long long t_found = now_ms();

    /* X and Y are logged once each as another mesh and never reported, and never report. */
    char sx[9], sy[9], ignored_x[80], ignored_y[80];
    short_of(x, sx);
    short_of(y, sy);
    snprintf(ignored_x, sizeof ignored_x, "event=mdns_ignored id=%s reason=mesh_mismatch", sx);
    snprintf(ignored_y, sizeof ignored_y, "event=mdns_ignored id=%s reason=mesh_mismatch", sy);
    for (int i = 0; i < 3; i++) {
        const char *log = W.probes[mesh1[i]].log;
        cr_assert(WAIT_LINE(10000, log, "log info discovery", ignored_x), "%s", show(log));
        cr_assert(WAIT_LINE(10000, log, "log info discovery", ignored_y), "%s", show(log));
    }
    sleep_ms(1000); /* let every interface and protocol of X and Y be resolved */
    for (int i = 0; i < 3; i++) {
        const char *log = W.probes[mesh1[i]].log;
        cr_assert_eq(LINES(log, ignored_x), 1, "X not logged exactly once:\n%s", show(log));
        cr_assert_eq(LINES(log, ignored_y), 1, "Y not logged exactly once:\n%s", show(log));
        cr_assert_eq(found_lines(mesh1[i], x) + found_lines(mesh1[i], y), 0, "%s", show(log));
        cr_assert_eq(found_lines(mesh1[i], mesh1[i]), 0, "found itself:\n%s", show(log));
    }
    cr_assert_eq(LINES(W.probes[x].log, "^found "), 0, "%s", show(W.probes[x].log));
    cr_assert_eq(LINES(W.probes[y].log, "^found "), 0, "%s", show(W.probes[y].log));
    cr_assert(WAIT_LINE(5000, W.probes[x].log, "id=PPPPPPPH reason=mesh_mismatch"), "%s",
              show(W.probes[x].log));

    /* Kill -9 B: A and C report it lost within a few seconds (Avahi withdraws its service when
     * the client's bus connection drops; the browsers see the goodbye). */
    long long t_kill = now_ms();
    probe_kill9(b);
    char lost_b[80];
    snprintf(lost_b, sizeof lost_b, "^lost id=%s", W.probes[b].id);
    cr_assert(WAIT_LINE(5000, W.probes[a].log, lost_b), "%s", show(W.probes[a].log));
    cr_assert(WAIT_LINE(5000, W.probes[c].log, lost_b), "%s", show(W.probes[c].log));
    long long t_lost = now_ms();
    cr_assert_eq(LINES(W.probes[a].log, "^lost id="), 1, "%s", show(W.probes[a].log));

    for (int i = 0; i < W.n_probes; i++)
        if (W.probes[i].pid > 0)
            probe_stop(i);
    cr_log_info("hosts up in %lld ms, all found %lld ms after start, lost %lld ms after kill -9, "
                "total %lld ms",
                t_up - t0, t_found - t_up, t_lost - t_kill, now_ms() - t0);
}

Test(discovery, daemon_that_starts_late_or_comes_back_is_used, .fini = world_fini, .timeout = 120)
{
    long long t0 = now_ms();
    world_up(2, false);
    const char *off_start = "log warn discovery mDNS discovery off: no Avahi daemon reachable "
                            "(Daemon not running); static and gossip-learned peers still work";
    const char *off_lost = "log warn discovery mDNS discovery off: lost the Avahi daemon";

    /* h2 has a system bus but no avahi-daemon: start succeeds, off, one warning. */
    world_cmd("avahi-stop h2");
    int b = probe_start("h2", 'Q', MESH1, "7002");
    cr_assert(WAIT_LINE(10000, W.probes[b].log, "started state=off"), "%s", show(W.probes[b].log));
    int a = probe_start("h1", 'P', MESH1, "7001");
    sleep_ms(1500);
    cr_assert_eq(LINES(W.probes[b].log, off_start), 1, "%s", show(W.probes[b].log));
    cr_assert_eq(LINES(W.probes[b].log, "log warn"), 1, "%s", show(W.probes[b].log));
    cr_assert_eq(found_lines(a, b), 0);

    /* The daemon appears: B turns on by itself, and A and B find each other. */
    world_cmd("avahi-start h2");
    cr_assert(WAIT_LINE(10000, W.probes[b].log, "^state on"), "%s", show(W.probes[b].log));
    cr_assert(saw(b, a, "10.99.0.1", "4", "7001", 15000), "%s", show(W.probes[b].log));
    cr_assert(saw(a, b, "10.99.0.2", "4", "7002", 15000), "%s", show(W.probes[a].log));

    /* A's daemon dies: A says so once, reports B lost, and B loses A. */
    world_cmd("avahi-stop h1");
    char lost_a[80], lost_b[80];
    snprintf(lost_a, sizeof lost_a, "^lost id=%s", W.probes[a].id);
    snprintf(lost_b, sizeof lost_b, "^lost id=%s", W.probes[b].id);
    cr_assert(WAIT_LINE(5000, W.probes[a].log, off_lost), "%s", show(W.probes[a].log));
    cr_assert(WAIT_LINE(5000, W.probes[a].log, lost_b), "%s", show(W.probes[a].log));
    cr_assert(WAIT_LINE(5000, W.probes[b].log, lost_a), "%s", show(W.probes[b].log));
    sleep_ms(1000); /* several retries while the daemon is away */
    cr_assert_eq(LINES(W.probes[a].log, "log warn"), 1, "%s", show(W.probes[a].log));

    /* It comes back: A reconnects on its own and both find each other again. */
    world_cmd("avahi-start h1");
    cr_assert(WAIT_LINE(15000, W.probes[a].log, "mDNS discovery on"), "%s", show(W.probes[a].log));
    long long end = now_ms() + 15000;
    while ((found_lines(a, b) < 2 || found_lines(b, a) < 2) && now_ms() < end)
        sleep_ms(50);
    cr_assert_geq(found_lines(a, b), 2, "%s", show(W.probes[a].log));
    cr_assert_geq(found_lines(b, a), 2, "%s", show(W.probes[b].log));
    cr_assert_eq(LINES(W.probes[a].log, "log warn"), 1, "%s", show(W.probes[a].log));

    probe_stop(a);
    probe_stop(b);
    cr_log_info("daemon restart test took %lld ms", now_ms() - t0);
}
