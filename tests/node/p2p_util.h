/* p2p_util.h — what the tests of links between real `barrel serve` processes share: up to
 * three nodes (N[0..2]) with data dirs under one temporary root, started with extra flags and
 * logging to files (node_start, node_stop, node_kill), their logs searched (log_has, wait_log),
 * HTTP on a chosen node (nget, nput, ndb, wait_doc, state_of), config files, mesh keys and nodes
 * started on one (make_mesh_key, mesh_start), and a
 * raw WebSocket client for /_p2p (ws_upgrade, ws_raw, closed_within). Static definitions, like
 * serve_util.h: each *_test.c is its own binary and includes this once. */
#ifndef BARREL_TESTS_P2P_UTIL_H
#define BARREL_TESTS_P2P_UTIL_H

#include <fcntl.h>
#include <sys/stat.h>

#include "serve_util.h"

#ifndef MAXN
#define MAXN 3
#endif

struct node {
    char *dir;
    char log[600];
    pid_t pid;
    int port;
    char id[80];
};

static char *root;

static void id_of(const char *ddir, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/barrel --data %s id 2>/dev/null", BARREL_BINARY_DIR, ddir);
    FILE *f = popen(cmd, "r");
    cr_assert(f);
    cr_assert(fgets(out, (int)cap, f));
    out[strcspn(out, "\n")] = '\0';
    pclose(f);
}

static void node_init(struct node *n, const char *name)
{
    memset(n, 0, sizeof *n);
    size_t l = strlen(root) + strlen(name) + 2;
    n->dir = malloc(l);
    snprintf(n->dir, l, "%s/%s", root, name);
    snprintf(n->log, sizeof n->log, "%s/%s.log", root, name);
    id_of(n->dir, n->id, sizeof n->id);
}

/* Start the node with extra arguments (NULL-terminated); port 0 picks one, kept on restart. */
static void node_start(struct node *n, const char *const *extra)
{
    const char *argv[40];
    char portarg[16];
    int k = 0;
    snprintf(portarg, sizeof portarg, "%d", n->port);
    argv[k++] = "barrel";
    argv[k++] = "--log-level";
    argv[k++] = "info";
    argv[k++] = "--data";
    argv[k++] = n->dir;
    argv[k++] = "serve";
    argv[k++] = "--port";
    argv[k++] = portarg;
    for (size_t i = 0; extra && extra[i]; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    struct stat st;
    long from = stat(n->log, &st) == 0 ? (long)st.st_size : 0; /* a restart appends */
    pid_t p = fork();
    cr_assert(p >= 0);
    if (p == 0) {
        /* a node outlives no test: killed with the test's worker process, even when a
         * test is skipped or crashes before its teardown (they used to pile up) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(BARREL_BINARY_DIR "/barrel", (char *const *)argv);
        _exit(127);
    }
    n->pid = p;
    /* the first line names the port */
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(n->log, "r");
        char line[1024];
        int got = 0;
        if (f)
            fseek(f, from, SEEK_SET);
        while (f && fgets(line, sizeof line, f)) {
            const char *q = strstr(line, "listening on http://127.0.0.1:");
            if (q)
                got = atoi(q + strlen("listening on http://127.0.0.1:"));
        }
        if (f)
            fclose(f);
        if (got > 0 && (n->port == 0 || got == n->port)) {
            n->port = got;
            return;
        }
        usleep(20000);
    }
    cr_assert_fail("node %s did not start", n->dir);
}

static void node_stop(struct node *n)
{
    if (n->pid > 0) {
        int st = stop_node(n->pid);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "node %s exit status %d", n->dir, st);
    }
    n->pid = 0;
}

/* kill -9: no shutdown, no flush beyond what the node already made durable. */
static void node_kill(struct node *n)
{
    if (n->pid > 0) {
        kill(n->pid, SIGKILL);
        waitpid(n->pid, NULL, 0);
    }
    n->pid = 0;
}

static bool log_has(const struct node *n, const char *needle)
{
    FILE *f = fopen(n->log, "r");
    char line[2048];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

static bool wait_log(const struct node *n, const char *needle, int ms)
{
    for (int t = 0; t < ms; t += 50) {
        if (log_has(n, needle))
            return true;
        usleep(50000);
    }
    return log_has(n, needle);
}

static void at(const struct node *n)
{
    port = n->port;
}

/* GET path on n: status, body in r (caller frees). */
static int nget(const struct node *n, struct resp *r, const char *path)
{
    at(n);
    return get(r, path);
}

/* Wait until GET path on n has status `status` and (if needle) a body containing it. */
static bool wait_doc(const struct node *n, const char *path, int status, const char *needle, int ms)
{
    for (int t = 0; t <= ms; t += 50) {
        struct resp r;
        int s = nget(n, &r, path);
        bool ok = s == status && (!needle || (r.body && strstr(r.body, needle)));
        resp_fini(&r);
        if (ok)
            return true;
        usleep(50000);
    }
    return false;
}

static void nput(const struct node *n, const char *path, const char *body, char *rev, size_t cap)
{
    at(n);
    put_doc(path, body, rev, cap);
}

static void ndb(const struct node *n, const char *db)
{
    at(n);
    make_db(db);
}

static struct node N[MAXN];

static void p2p_setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    root = tu_tmpdir("p2p");
    static const char *const names[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    for (int i = 0; i < MAXN; i++)
        node_init(&N[i], names[i]);
}

static void p2p_teardown(void)
{
    for (int i = MAXN - 1; i >= 0; i--) {
        if (N[i].pid > 0)
            node_stop(&N[i]);
        free(N[i].dir);
    }
    if (!getenv("P2P_KEEP"))
        tu_rmtree(root);
    free(root);
}

static char peer_url[MAXN][64];

static const char *url_of(int i)
{
    snprintf(peer_url[i], sizeof peer_url[i], "ws://127.0.0.1:%d", N[i].port);
    return peer_url[i];
}

static void mesh_key(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/barrel mesh-key new %s >/dev/null 2>&1", BARREL_BINARY_DIR, path);
    cr_assert_eq(system(cmd), 0);
}

/* The mesh key of a test's nodes (make_mesh_key writes a new one under root), and a node
 * started on it: no mDNS, gossip every 200 ms, then the extra flags (NULL-terminated). */
static char mesh_key_path[600];

static void make_mesh_key(void)
{
    snprintf(mesh_key_path, sizeof mesh_key_path, "%s/mesh.key", root);
    mesh_key(mesh_key_path);
}

static void mesh_start(struct node *n, const char *const *extra)
{
    const char *argv[24];
    int k = 0;
    argv[k++] = "--mesh-key";
    argv[k++] = mesh_key_path;
    argv[k++] = "--no-mdns";
    argv[k++] = "--gossip-interval";
    argv[k++] = "200";
    for (size_t i = 0; extra && extra[i]; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    node_start(n, argv);
}

/* A raw WebSocket client: upgrade to /_p2p, send one frame of the given opcode. */
static int ws_raw(int p, int opcode, const uint8_t *payload, size_t n)
{
    port = p;
    int fd = connect_node();
    const char *up = "GET /_p2p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n";
    send_all(fd, up, strlen(up));
    char buf[1024];
    ssize_t k = recv_deadline(fd, buf, sizeof buf - 1, 5000);
    cr_assert(k > 0);
    buf[k] = '\0';
    cr_assert(strstr(buf, " 101 "), "no upgrade: %s", buf);
    uint8_t fr[200];
    size_t h = 0;
    cr_assert(n < 126);
    fr[h++] = (uint8_t)(0x80 | opcode);
    fr[h++] = (uint8_t)(0x80 | n);
    uint8_t mask[4] = {1, 2, 3, 4};
    memcpy(fr + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        fr[h + i] = payload[i] ^ mask[i % 4];
    send_all(fd, fr, h + n);
    return fd;
}

/* True if the server closes the connection within ms. */
static bool closed_within(int fd, int ms)
{
    char buf[512];
    for (int t = 0; t < ms; t += 100) {
        ssize_t k = recv_deadline(fd, buf, sizeof buf, 100);
        if (k == 0)
            return true;
    }
    return false;
}

static void write_config(const char *path, const char *json)
{
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(json, f);
    fclose(f);
}

/* The document as every node sees it: winner, deleted flag and all leaves. */
static char *state_of(const struct node *n, const char *path)
{
    struct resp r;
    char p[256];
    snprintf(p, sizeof p, "%s?open_revs=all", path);
    at(n);
    req(&r, "GET", p, NULL, "Accept: application/json\r\n", NULL);
    char *s = r.body ? strdup(r.body) : strdup("");
    resp_fini(&r);
    return s;
}

#endif
