/* idle_test.c — a node that has been written to and then left alone flushes its memtables once
 * (node/idle.c, serve --idle-flush S), keeps serving what it holds, and does it again only
 * after new writes; --idle-flush 0 never does. Seen through the node's info log line. */
#include <fcntl.h>

#include "serve_util.h"

static pid_t start_idle(const char *data, const char *idle, int *port_out)
{
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t p = fork();
    cr_assert(p >= 0);
    if (p == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl(BARREL_BINARY_DIR "/barrel", "barrel", "--log-level", "info", "--data", data, "serve",
              "--port", "0", "--idle-flush", idle, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    cr_assert(f);
    char line[512] = "";
    while (fgets(line, sizeof line, f) && !strstr(line, "listening on"))
        ;
    const char *p2 = strstr(line, "http://127.0.0.1:");
    *port_out = p2 ? atoi(p2 + strlen("http://127.0.0.1:")) : 0;
    cr_assert(*port_out > 0, "node did not start: %s", line);
    fcntl(fileno(f), F_SETFL, O_NONBLOCK);
    node_out = f;
    return p;
}

/* Count "event=idle_flush ok=1" lines the node logs within wait_ms. */
static int flushes_within(int wait_ms)
{
    static char acc[1 << 16];
    static size_t len;
    double end = now_s() + wait_ms / 1000.0;
    while (now_s() < end) {
        ssize_t k = read(fileno(node_out), acc + len, sizeof acc - 1 - len);
        if (k > 0) {
            len += (size_t)k;
            acc[len] = '\0';
        }
        usleep(50000);
    }
    int n = 0;
    for (const char *p = acc; (p = strstr(p, "event=idle_flush ok=1")); p++)
        n++;
    return n;
}

static void restart_idle(const char *idle)
{
    if (pid > 0) {
        stop_node(pid);
        fclose(node_out);
    }
    pid = start_idle(dir, idle, &port);
}

TestSuite(idle, .init = setup, .fini = teardown);

Test(idle, flushes_once_after_writes_stop_and_keeps_serving)
{
    restart_idle("1");
    cr_expect_eq(flushes_within(2500), 0, "nothing written yet: nothing to flush");
    char rev[64];
    make_db("db");
    put_doc("/db/a", "{\"x\":1}", rev, sizeof rev);
    cr_expect_eq(flushes_within(3000), 1, "one flush about a second after the writes");
    cr_expect_eq(flushes_within(2000), 1, "and no more while idle");
    struct resp r;
    cr_expect_eq(get(&r, "/db/a"), 200);
    resp_fini(&r);
    put_doc("/db/b", "{\"x\":2}", rev, sizeof rev);
    cr_expect_eq(flushes_within(3000), 2, "new writes, new flush");
}

Test(idle, zero_turns_it_off)
{
    restart_idle("0");
    char rev[64];
    make_db("db");
    put_doc("/db/a", "{\"x\":1}", rev, sizeof rev);
    cr_expect_eq(flushes_within(3000), 0);
}
