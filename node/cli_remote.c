/* cli_remote.c — `barrel --url URL COMMAND ...`: the data-dir commands over HTTP (see
 * cli_remote.h). Each command becomes one request; the answer is re-printed as compact JSON,
 * and a CouchDB error {"error","reason"} becomes the line `barrel: ERROR: REASON` with exit 1,
 * as cli.c prints for the same failure. */
#include "cli_remote.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "barrel/store.h"

#include "httpc.h"

#define STDIN_MAX ((size_t)BR_DEFAULT_MAX_DOC_BYTES + (1u << 20))
#define TIMEOUT_S 120

struct rc {
    const struct br_cli_remote *r;
    struct br_httpc_url u;
    int argc;
    char **argv;
};

static int usage(struct rc *c, const char *msg)
{
    fprintf(c->r->err, "barrel: usage: %s (see barrel help)\n", msg);
    return 2;
}

static int fail(struct rc *c, const char *error, const char *reason)
{
    fprintf(c->r->err, "barrel: %s: %s\n", error, reason);
    return 1;
}

/* The JSON argument, or standard input for "-" / none, as text in b (initialised here). */
static int read_arg(struct rc *c, const char *arg, br_buf *b)
{
    br_buf_init(b, STDIN_MAX);
    if (arg && strcmp(arg, "-") != 0)
        return br_buf_append_str(b, arg) ? fail(c, "too_large", "argument too large") : 0;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, c->r->in)) > 0) {
        if (br_buf_append(b, chunk, n))
            return fail(c, "too_large", "input too large");
    }
    if (ferror(c->r->in))
        return fail(c, "internal_server_error", "cannot read standard input");
    return 0;
}

typedef void (*shape_fn)(json_t *v);

/* One request; print the answer (reshaped by shape) or the error line. */
static int call(struct rc *c, const char *method, const br_buf *target, const br_buf *body,
                shape_fn shape)
{
    struct br_httpc_resp resp;
    struct br_errbuf eb = {{0}};
    br_err e =
        br_httpc_request(&c->u, method, (const char *)target->data, "application/json",
                         body ? body->data : NULL, body ? body->len : 0, TIMEOUT_S, &resp, &eb);
    if (e) {
        fprintf(c->r->err, "barrel: node_unreachable: %s\n", eb.msg[0] ? eb.msg : br_strerror(e));
        return 1;
    }
    json_t *v = json_loadb((const char *)resp.body.data, resp.body.len, JSON_DECODE_ANY, NULL);
    int rc = 0;
    if (resp.status >= 300) {
        const char *er = json_string_value(json_object_get(v, "error"));
        const char *re = json_string_value(json_object_get(v, "reason"));
        char st[32];
        snprintf(st, sizeof st, "HTTP status %d", resp.status);
        rc = fail(c, er ? er : "http_error", re && *re ? re : st);
    } else if (!v) {
        rc = fail(c, "bad_response", "the node's answer is not JSON");
    } else {
        if (shape)
            shape(v);
        if (json_dumpf(v, c->r->out, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
            rc = fail(c, "internal_server_error", "cannot write output");
        fputc('\n', c->r->out);
    }
    json_decref(v);
    br_httpc_resp_fini(&resp);
    return rc;
}

/* target = "/" seg0 ["/" seg1] */
static br_err target2(br_buf *t, const char *a, const char *b)
{
    br_buf_init(t, 0);
    br_err e = br_buf_append_str(t, "/");
    if (!e)
        e = br_httpc_escape(t, a, strlen(a));
    if (!e && b) {
        /* a design document's id keeps its slash: /db/_design/name */
        bool design = strncmp(b, "_design/", 8) == 0;
        e = br_buf_append_str(t, design ? "/_design/" : "/");
        if (!e)
            e = br_httpc_escape(t, b + (design ? 8 : 0), strlen(b) - (design ? 8 : 0));
    }
    return e; /* a br_buf keeps a NUL after its bytes */
}

/* Append "?name=value" or "&name=value" (value escaped). */
static br_err arg(br_buf *t, const char *name, const char *value)
{
    br_err e = br_buf_append_str(t, memchr(t->data, '?', t->len) ? "&" : "?");
    if (!e)
        e = br_buf_append_str(t, name);
    if (!e)
        e = br_buf_append_str(t, "=");
    if (!e)
        e = br_httpc_escape(t, value, strlen(value));
    return e; /* a br_buf keeps a NUL after its bytes */
}

static int simple(struct rc *c, const char *method, const char *a, const char *b,
                  const br_buf *body, shape_fn shape)
{
    br_buf t;
    int rc = target2(&t, a, b) ? fail(c, "internal_server_error", "out of memory")
                               : call(c, method, &t, body, shape);
    br_buf_fini(&t);
    return rc;
}

static int cmd_db(struct rc *c)
{
    if (c->argc < 2)
        return usage(c, "barrel db create|delete|list|info [NAME]");
    const char *verb = c->argv[1];
    if (strcmp(verb, "list") == 0) {
        if (c->argc != 2)
            return usage(c, "barrel db list");
        br_buf t;
        br_buf_init(&t, 0);
        int rc = br_buf_append_str(&t, "/_all_dbs") ? 1 : call(c, "GET", &t, NULL, NULL);
        br_buf_fini(&t);
        return rc;
    }
    if (strcmp(verb, "index") == 0)
        return fail(c, "not_supported", "db index works on a data directory only (--data)");
    if (c->argc != 3)
        return usage(c, "barrel db create|delete|info NAME");
    const char *name = c->argv[2];
    if (strcmp(verb, "create") == 0) {
        if (!br_db_name_valid(name, strlen(name), false))
            return fail(c, "illegal_database_name",
                        "Name: Only lowercase characters (a-z), digits (0-9), and any of the "
                        "characters _, $, (, ), +, -, and / are allowed. Must begin with a "
                        "letter.");
        return simple(c, "PUT", name, NULL, NULL, NULL);
    }
    if (strcmp(verb, "delete") == 0)
        return simple(c, "DELETE", name, NULL, NULL, NULL);
    if (strcmp(verb, "info") == 0)
        return simple(c, "GET", name, NULL, NULL, NULL); /* the node's /{db} document */
    return usage(c, "barrel db create|delete|list|info [NAME]");
}

static int cmd_put(struct rc *c)
{
    if (c->argc < 3 || c->argc > 4)
        return usage(c, "barrel put DB ID [JSON|-]");
    br_buf body;
    int rc = read_arg(c, c->argc == 4 ? c->argv[3] : NULL, &body);
    if (!rc)
        rc = simple(c, "PUT", c->argv[1], c->argv[2], &body, NULL);
    br_buf_fini(&body);
    return rc;
}

static int cmd_get(struct rc *c)
{
    static const char u[] = "barrel get DB ID [--rev R] [--revs] [--conflicts]";
    if (c->argc < 3)
        return usage(c, u);
    br_buf t;
    br_err e = target2(&t, c->argv[1], c->argv[2]);
    int rc = 0;
    for (int i = 3; !e && !rc && i < c->argc; i++) {
        const char *a = c->argv[i];
        if (strcmp(a, "--rev") == 0 && i + 1 < c->argc)
            e = arg(&t, "rev", c->argv[++i]);
        else if (strcmp(a, "--rev") == 0)
            rc = usage(c, "--rev needs a revision");
        else if (strcmp(a, "--revs") == 0)
            e = arg(&t, "revs", "true");
        else if (strcmp(a, "--conflicts") == 0)
            e = arg(&t, "conflicts", "true");
        else if (strcmp(a, "--deleted-conflicts") == 0)
            e = arg(&t, "deleted_conflicts", "true");
        else
            rc = usage(c, u);
    }
    if (!rc)
        rc = e ? fail(c, "internal_server_error", "out of memory") : call(c, "GET", &t, NULL, NULL);
    br_buf_fini(&t);
    return rc;
}

static int cmd_delete(struct rc *c)
{
    if (c->argc != 5 || strcmp(c->argv[3], "--rev") != 0)
        return usage(c, "barrel delete DB ID --rev R");
    br_buf t;
    br_err e = target2(&t, c->argv[1], c->argv[2]);
    if (!e)
        e = arg(&t, "rev", c->argv[4]);
    int rc =
        e ? fail(c, "internal_server_error", "out of memory") : call(c, "DELETE", &t, NULL, NULL);
    br_buf_fini(&t);
    return rc;
}

static void drop_pending(json_t *v)
{
    json_object_del(v, "pending"); /* CouchDB's; the data-dir output has none */
}

#define CHANGES_USAGE                                                                              \
    "barrel changes DB [--since S] [--limit N] [--all-docs] [--descending] [--path P]... "         \
    "[--query JSON]"

static int cmd_changes(struct rc *c)
{
    if (c->argc < 2)
        return usage(c, CHANGES_USAGE);
    br_buf t;
    br_err e = target2(&t, c->argv[1], "_changes");
    int rc = 0;
    bool since = false;
    for (int i = 2; !e && !rc && i < c->argc; i++) {
        const char *a = c->argv[i];
        const char *v = i + 1 < c->argc ? c->argv[i + 1] : NULL;
        if (strcmp(a, "--all-docs") == 0) {
            e = arg(&t, "style", "all_docs");
        } else if (strcmp(a, "--descending") == 0) {
            e = arg(&t, "descending", "true");
        } else if (!v) {
            rc = usage(c, CHANGES_USAGE);
        } else if (strcmp(a, "--since") == 0) {
            e = arg(&t, "since", v);
            since = true;
            i++;
        } else if (strcmp(a, "--limit") == 0) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (*v == '-' || *end || errno || n == 0)
                rc = usage(c, "--limit needs a positive number");
            e = arg(&t, "limit", v);
            i++;
        } else if (strcmp(a, "--path") == 0) {
            e = arg(&t, "paths", v);
            i++;
        } else if (strcmp(a, "--query") == 0) {
            e = arg(&t, "query", v);
            i++;
        } else {
            rc = usage(c, CHANGES_USAGE);
        }
    }
    if (!e && !since)
        e = arg(&t, "since", "0");
    if (!rc)
        rc = e ? fail(c, "internal_server_error", "out of memory")
               : call(c, "GET", &t, NULL, drop_pending);
    br_buf_fini(&t);
    return rc;
}

/* POST DB/ROUTE with a JSON argument or standard input. */
static int post_json(struct rc *c, const char *route, const char *u, shape_fn shape)
{
    if (c->argc < 2 || c->argc > 3)
        return usage(c, u);
    br_buf body;
    int rc = read_arg(c, c->argc == 3 ? c->argv[2] : NULL, &body);
    if (!rc)
        rc = simple(c, "POST", c->argv[1], route, &body, shape);
    br_buf_fini(&body);
    return rc;
}

static int cmd_revsdiff(struct rc *c)
{
    return post_json(c, "_revs_diff", "barrel revsdiff DB [JSON|-]", NULL);
}

static int cmd_bulk(struct rc *c)
{
    return post_json(c, "_bulk_docs", "barrel bulk DB [JSON|-]", NULL);
}

static int cmd_find(struct rc *c)
{
    static const char u[] = "barrel find DB [JSON|-] --mango";
    const char *a = NULL;
    bool mango = false;
    if (c->argc < 2)
        return usage(c, u);
    for (int i = 2; i < c->argc; i++) {
        if (strcmp(c->argv[i], "--mango") == 0)
            mango = true;
        else if (strcmp(c->argv[i], "--explain") == 0)
            return fail(c, "not_supported", "find --explain works on a data directory only");
        else if (!a)
            a = c->argv[i];
        else
            return usage(c, u);
    }
    if (!mango)
        return fail(c, "not_supported",
                    "over --url, find takes a Mango body (--mango): the node serves _find");
    br_buf body;
    int rc = read_arg(c, a, &body);
    if (!rc)
        rc = simple(c, "POST", c->argv[1], "_find", &body, NULL);
    br_buf_fini(&body);
    return rc;
}

static int cmd_peers(struct rc *c)
{
    if (c->argc != 1)
        return usage(c, "barrel [--url URL] peers");
    return simple(c, "GET", "_peers", NULL, NULL, NULL);
}

static int cmd_all_docs(struct rc *c)
{
    static const char u[] = "barrel all-docs DB [--startkey K] [--endkey K] [--limit N] "
                            "[--descending] [--include-docs]";
    if (c->argc < 2)
        return usage(c, u);
    br_buf t;
    br_err e = target2(&t, c->argv[1], "_all_docs");
    int rc = 0;
    for (int i = 2; !e && !rc && i < c->argc; i++) {
        const char *a = c->argv[i];
        const char *v = i + 1 < c->argc ? c->argv[i + 1] : NULL;
        if (strcmp(a, "--descending") == 0) {
            e = arg(&t, "descending", "true");
        } else if (strcmp(a, "--include-docs") == 0) {
            e = arg(&t, "include_docs", "true");
        } else if (v && (strcmp(a, "--startkey") == 0 || strcmp(a, "--endkey") == 0)) {
            json_t *s = json_string(v);
            char *k = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
            e = k ? arg(&t, a[2] == 's' ? "startkey" : "endkey", k) : BR_ENOMEM;
            free(k);
            json_decref(s);
            i++;
        } else if (v && strcmp(a, "--limit") == 0) {
            char *end;
            strtoull(v, &end, 10);
            if (*end || *v == '-' || !*v)
                rc = usage(c, "--limit needs a number");
            e = arg(&t, "limit", v);
            i++;
        } else {
            rc = usage(c, u);
        }
    }
    if (!rc)
        rc = e ? fail(c, "internal_server_error", "out of memory") : call(c, "GET", &t, NULL, NULL);
    br_buf_fini(&t);
    return rc;
}

int br_cli_remote_run(const struct br_cli_remote *r, int argc, char **argv)
{
    struct rc c = {.r = r, .argc = argc, .argv = argv};
    struct br_errbuf eb = {{0}};
    if (br_httpc_url_parse(r->url, &c.u, &eb) != BR_OK) {
        fprintf(r->err, "barrel: usage: --url %s: %s\n", r->url, eb.msg);
        return 2;
    }
    if (r->user) {
        if (snprintf(c.u.user, sizeof c.u.user, "%s", r->user) >= (int)sizeof c.u.user ||
            snprintf(c.u.password, sizeof c.u.password, "%s", r->password ? r->password : "") >=
                (int)sizeof c.u.password) {
            fprintf(r->err, "barrel: usage: --user or BARREL_PASSWORD too long\n");
            return 2;
        }
        c.u.has_user = true;
    }
    static const struct {
        const char *name;
        int (*fn)(struct rc *);
    } cmds[] = {
        {"db", cmd_db},         {"put", cmd_put},           {"get", cmd_get},
        {"delete", cmd_delete}, {"changes", cmd_changes},   {"revsdiff", cmd_revsdiff},
        {"bulk", cmd_bulk},     {"all-docs", cmd_all_docs}, {"find", cmd_find},
        {"peers", cmd_peers},
    };
    int rc = -1;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[0], cmds[i].name) == 0) {
            rc = cmds[i].fn(&c);
            break;
        }
    }
    if (rc < 0) {
        bool local = strcmp(argv[0], "check") == 0 || strcmp(argv[0], "serve") == 0 ||
                     strcmp(argv[0], "passwd") == 0;
        fprintf(r->err,
                local ? "barrel: '%s' works on a data directory only (--data), not with --url\n"
                      : "barrel: unknown command '%s' (see barrel help)\n",
                argv[0]);
        rc = 2;
    }
    sodium_memzero(c.u.password, sizeof c.u.password);
    return rc;
}
