/* upload_auth_test.c — streamed uploads on a node with admin credentials (a loopback node with
 * an "admin" in its --config): an upload with a wrong password is 401 and stores nothing,
 * whether it is refused at once or after the password is checked on a worker (the upload's
 * first job); with the right one (first verified on a worker, then cached) an attachment and a
 * multipart/related document are stored. */
#include "serve_util.h"

static char cfg_path[1024];

static void auth_setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    dir = tu_tmpdir("upauth");
    char cmd[1024], hash[256];
    snprintf(cmd, sizeof cmd, "echo 's3cret' | %s/barrel passwd", BARREL_BINARY_DIR);
    FILE *p = popen(cmd, "r");
    cr_assert(p && fgets(hash, sizeof hash, p));
    cr_assert_eq(pclose(p), 0);
    hash[strcspn(hash, "\n")] = '\0';
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    FILE *f = fopen(cfg_path, "w");
    cr_assert(f);
    fprintf(f, "{\"admin\":{\"username\":\"admin\",\"password_hash\":\"%s\"}}", hash);
    fclose(f);
    int fds[2];
    cr_assert(pipe(fds) == 0);
    char data[1024];
    snprintf(data, sizeof data, "%s/data", dir);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl(BARREL_BINARY_DIR "/barrel", "barrel", "--data", data, "serve", "--port", "0",
              "--max-body", "65536", "--config", cfg_path, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    node_out = fdopen(fds[0], "r");
    char line[512] = "";
    cr_assert(fgets(line, sizeof line, node_out));
    const char *pp = strstr(line, "http://127.0.0.1:");
    port = pp ? atoi(pp + strlen("http://127.0.0.1:")) : 0;
    cr_assert(port > 0, "%s", line);
}

TestSuite(upauth, .init = auth_setup, .fini = teardown, .timeout = 60);

#define ADMIN "Authorization: Basic YWRtaW46czNjcmV0\r\n" /* admin:s3cret */
#define WRONG "Authorization: Basic YWRtaW46d3Jvbmc=\r\n" /* admin:wrong */
#define BAD "Authorization: Basic !!\r\n"                 /* not base64 */

static int put_big(struct resp *r, const char *path, const char *ctype, const char *auth,
                   const void *body, size_t n)
{
    int fd = connect_node();
    char head[512];
    int k =
        snprintf(head, sizeof head,
                 "PUT %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                 path, auth, ctype, n);
    send_all(fd, head, (size_t)k);
    send_all(fd, body, n);
    bool ok = read_resp(fd, r, 20000);
    close(fd);
    cr_assert(ok, "PUT %s: no response", path);
    return r->status;
}

Test(upauth, uploads_need_the_right_credentials)
{
    struct resp r;
    cr_assert_eq(req(&r, "PUT", "/a", NULL, ADMIN, NULL), 201, "%s", r.body);
    resp_fini(&r);
    size_t n = (size_t)2 << 20;
    char *data = malloc(n);
    memset(data, 'z', n);
    /* refused at once (malformed), and after a check on a worker (wrong password) */
    put_big(&r, "/a/d/x.bin", "application/octet-stream", BAD, data, n);
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
    put_big(&r, "/a/d/x.bin", "application/octet-stream", WRONG, data, n);
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
    put_big(&r, "/a/d/x.bin", "application/octet-stream", "", data, n);
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
    req(&r, "GET", "/a/d", NULL, ADMIN, NULL);
    expect_error(&r, 404, "not_found");
    resp_fini(&r);
    /* the right password: first checked on the upload's worker job */
    cr_assert_eq(put_big(&r, "/a/d/x.bin", "application/octet-stream", ADMIN, data, n), 201, "%s",
                 r.body);
    resp_fini(&r);
    cr_assert_eq(req(&r, "GET", "/a/d", NULL, ADMIN, NULL), 200);
    json_t *a = json_object_get(json_object_get(r.json, "_attachments"), "x.bin");
    cr_expect_eq(json_integer_value(json_object_get(a, "length")), (json_int_t)n, "%s", r.body);
    resp_fini(&r);
    static const char mp[] = "--zz\r\nContent-Type: application/json\r\n\r\n"
                             "{\"_attachments\":{\"t\":{\"follows\":true,\"length\":2}}}\r\n"
                             "--zz\r\n\r\nhi\r\n--zz--";
    cr_assert_eq(put_big(&r, "/a/m", "multipart/related; boundary=zz", ADMIN, mp, strlen(mp)), 201,
                 "%s", r.body);
    resp_fini(&r);
    put_big(&r, "/a/m2", "multipart/related; boundary=zz", WRONG, mp, strlen(mp));
    expect_error(&r, 401, "unauthorized");
    resp_fini(&r);
    free(data);
}
