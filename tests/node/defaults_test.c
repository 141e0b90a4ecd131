/* defaults_test.c — the README's main command: `barrel serve` with no options at all, run from
 * a fresh directory, opens ./barrel-data and serves http://127.0.0.1:7070, and a second node on
 * the same data dir refuses to start. Port 7070 is fixed by the defaults under test: when
 * something else on this machine already listens there, the test skips and says so. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "serve_util.h"
#include "testutil.h"

static bool port_taken(int p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    bool taken = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return taken;
}

/* Start `barrel serve` (nothing else) with cwd = wd; its first output line in line. */
static pid_t start_bare(const char *wd, char *line, size_t cap, FILE **out)
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
        if (chdir(wd) != 0)
            _exit(126);
        execl(BARREL_BINARY_DIR "/barrel", "barrel", "serve", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    cr_assert(f);
    line[0] = '\0';
    if (!fgets(line, (int)cap, f))
        line[0] = '\0';
    *out = f;
    return p;
}

Test(defaults, serve_with_no_options_uses_barrel_data_and_port_7070)
{
    signal(SIGPIPE, SIG_IGN);
    if (port_taken(7070))
        cr_skip_test("127.0.0.1:7070 is already in use on this machine: the default port "
                     "cannot be tested here");
    char *wd = tu_tmpdir("defaults");
    char line[512];
    FILE *out;
    pid = start_bare(wd, line, sizeof line, &out);
    cr_assert(strstr(line, "http://127.0.0.1:7070"), "first line: %s", line);
    cr_assert(strstr(line, "./barrel-data") || strstr(line, "barrel-data"), "first line: %s", line);

    char path[1024];
    snprintf(path, sizeof path, "%s/barrel-data", wd);
    struct stat sb;
    cr_assert(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode), "no %s", path);

    port = 7070;
    struct resp r;
    cr_assert_eq(req(&r, "PUT", "/tour", NULL, NULL, NULL), 201);
    resp_fini(&r);
    cr_assert_eq(put_json(&r, "/tour/hello", "{\"text\":\"hi\"}"), 201);
    resp_fini(&r);
    cr_assert_eq(get(&r, "/tour/hello"), 200);
    cr_assert(strstr(r.body, "\"text\":\"hi\""), "%s", r.body);
    resp_fini(&r);

    /* A second node on the same data dir (another port) refuses, with a message. */
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t p2 = fork();
    cr_assert(p2 >= 0);
    if (p2 == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        if (chdir(wd) != 0)
            _exit(126);
        execl(BARREL_BINARY_DIR "/barrel", "barrel", "serve", "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char msg[1024] = "";
    ssize_t n, got = 0;
    while ((n = read(fds[0], msg + got, sizeof msg - 1 - (size_t)got)) > 0)
        got += n;
    msg[got] = '\0';
    close(fds[0]);
    int st2 = 0;
    cr_assert(waitpid(p2, &st2, 0) == p2);
    cr_assert(WIFEXITED(st2) && WEXITSTATUS(st2) != 0, "second node exit status %d", st2);
    cr_assert(strstr(msg, "barrel-data"), "second node said: %s", msg);

    int st = stop_node(pid);
    fclose(out);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "node exit status %d", st);

    /* The data survived the restart-less stop: open it again and read the doc. */
    pid = start_bare(wd, line, sizeof line, &out);
    cr_assert(strstr(line, "http://127.0.0.1:7070"), "restart, first line: %s", line);
    cr_assert_eq(get(&r, "/tour/hello"), 200);
    resp_fini(&r);
    st = stop_node(pid);
    fclose(out);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "node exit status %d", st);
    tu_rmtree(wd);
    free(wd);
}
