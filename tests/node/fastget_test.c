/* fastget_test.c — GET /{db}/{id} answered on the loop from memory (node/fastget.c) and on a
 * worker (serve --no-fast-get) give byte-identical answers: status, body, ETag, type, length,
 * for found, missing, deleted, conflicted, design and malformed requests. The same data dir is
 * served once each way. */
#include "serve_util.h"

static pid_t start_with(const char *data, const char *extra, int *port_out)
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
        execl(BARREL_BINARY_DIR "/barrel", "barrel", "--data", data, "serve", "--port", "0", extra,
              (char *)NULL); /* extra NULL ends the list there */
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    cr_assert(f);
    char line[512] = "";
    if (!fgets(line, (int)sizeof line, f))
        line[0] = '\0';
    const char *p2 = strstr(line, "http://127.0.0.1:");
    *port_out = p2 ? atoi(p2 + strlen("http://127.0.0.1:")) : 0;
    cr_assert(*port_out > 0, "node did not start: %s", line);
    node_out = f;
    return p;
}

static void restart(const char *extra)
{
    int st = stop_node(pid);
    fclose(node_out);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pid = start_with(dir, extra, &port);
}

TestSuite(fastget, .init = setup, .fini = teardown);

#define N_PATHS 13
struct answer {
    int status;
    char etag[128], ctype[64], clen[32];
    char *body;
};

static void collect(const char *const *paths, struct answer *out)
{
    struct resp r;
    get(&r, "/db/a"); /* the first GET of a database goes to a worker, which opens it */
    resp_fini(&r);
    for (int i = 0; i < N_PATHS; i++) {
        const char *m = strncmp(paths[i], "HEAD ", 5) == 0 ? "HEAD" : "GET";
        const char *path = paths[i] + (m[0] == 'H' ? 5 : 0);
        int fd = connect_node();
        send_req(fd, m, path, NULL, NULL, NULL);
        if (m[0] == 'H') { /* no body: read the head only */
            char buf[4096];
            ssize_t k = recv_deadline(fd, buf, sizeof buf - 1, 5000);
            cr_assert(k > 0);
            buf[k] = '\0';
            cr_assert(sscanf(buf, "HTTP/1.1 %d", &r.status) == 1);
            snprintf(r.headers, sizeof r.headers, "%s", buf);
            r.body = strdup("");
            r.json = NULL;
        } else {
            cr_assert(read_resp(fd, &r, 5000), "%s", path);
        }
        close(fd);
        const char *h;
        out[i].status = r.status;
        snprintf(out[i].etag, sizeof out[i].etag, "%s", (h = header(&r, "etag")) ? h : "");
        snprintf(out[i].ctype, sizeof out[i].ctype, "%s",
                 (h = header(&r, "content-type")) ? h : "");
        snprintf(out[i].clen, sizeof out[i].clen, "%s",
                 (h = header(&r, "content-length")) ? h : "");
        out[i].body = strdup(r.body);
        resp_fini(&r);
    }
}

Test(fastget, loop_and_worker_answers_are_identical)
{
    char rev_a[64], rev_d[64], p[256];
    make_db("db");
    put_doc("/db/a", "{\"x\":1,\"nested\":{\"k\":[1,2,\"three\"]}}", rev_a, sizeof rev_a);
    put_doc("/db/_design/v", "{\"views\":{}}", p, sizeof p);
    put_doc("/db/d", "{\"gone\":true}", rev_d, sizeof rev_d);
    struct resp r;
    snprintf(p, sizeof p, "/db/d?rev=%s", rev_d);
    cr_assert_eq(req(&r, "DELETE", p, NULL, NULL, NULL), 200);
    resp_fini(&r);
    cr_assert_eq(
        post_json(&r, "/db/_bulk_docs",
                  "{\"new_edits\":false,\"docs\":[{\"_id\":\"c\",\"_rev\":\"1-aa\",\"v\":1},"
                  "{\"_id\":\"c\",\"_rev\":\"1-bb\",\"v\":2}]}"),
        201);
    resp_fini(&r);
    char rev_path[128];
    snprintf(rev_path, sizeof rev_path, "/db/a?rev=%s", rev_a);
    const char *paths[N_PATHS] = {
        "/db/a",
        "/db/a?revs=true",
        "/db/c?conflicts=true",
        rev_path,
        "/db/a?rev=1-zz",
        "/db/a?rev=oops",
        "/db/nope",
        "/db/d",
        "/db/_design/v",
        "/db/a?revs=perhaps",
        "/db/c?open_revs=all",
        "HEAD /db/a",
        "/db/c?deleted_conflicts=true&revs=true",
    };
    struct answer fast[N_PATHS], slow[N_PATHS];
    collect(paths, fast);
    restart("--no-fast-get");
    collect(paths, slow);
    for (int i = 0; i < N_PATHS; i++) {
        cr_expect_eq(fast[i].status, slow[i].status, "%s: %d vs %d", paths[i], fast[i].status,
                     slow[i].status);
        cr_expect_str_eq(fast[i].body, slow[i].body, "%s", paths[i]);
        cr_expect_str_eq(fast[i].etag, slow[i].etag, "%s", paths[i]);
        cr_expect_str_eq(fast[i].ctype, slow[i].ctype, "%s", paths[i]);
        cr_expect_str_eq(fast[i].clen, slow[i].clen, "%s", paths[i]);
        free(fast[i].body);
        free(slow[i].body);
    }
    /* sanity: the comparisons are about real answers */
    cr_expect_eq(fast[0].status, 200);
    cr_expect_eq(fast[6].status, 404);
    cr_expect_eq(fast[9].status, 400);
    restart(NULL); /* teardown stops a node */
}
