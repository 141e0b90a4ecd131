/* cli.c — the `barrel` subcommands that open a data directory: databases, documents, changes,
 * revsdiff and bulk writes. JSON in and out at this edge; the store speaks CBOR. */
#include "barrel/cli.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/couch.h"
#include "barrel/find.h"
#include "barrel/identity.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/meshkey.h"
#include "barrel/query.h"
#include "barrel/serve.h"
#include "barrel/store.h"

#include "auth.h"
#include "cli_remote.h"

#define DEFAULT_DATA "./barrel-data"
#define STDIN_MAX ((size_t)BR_DEFAULT_MAX_DOC_BYTES + (1u << 20))

struct cli {
    FILE *in, *out, *err;
    const char *data;
    br_store *store;
    int argc; /* remaining arguments after the subcommand */
    char **argv;
};

static int fail_usage(struct cli *c, const char *msg)
{
    fprintf(c->err, "barrel: usage: %s (see barrel help)\n", msg);
    return 2;
}

static int fail_err(struct cli *c, br_err e, const char *reason)
{
    struct br_couch_error ce = br_couch_error(e);
    fprintf(c->err, "barrel: %s: %s\n", ce.error, reason && *reason ? reason : br_strerror(e));
    return 1;
}

static int fail_dbname(struct cli *c)
{
    fprintf(c->err, "barrel: illegal_database_name: Name: Only lowercase characters (a-z), "
                    "digits (0-9), and any of the characters _, $, (, ), +, -, and / are "
                    "allowed. Must begin with a letter.\n");
    return 1;
}

static int emit(struct cli *c, json_t *v)
{
    if (!v)
        return fail_err(c, BR_ENOMEM, NULL);
    int rc = json_dumpf(v, c->out, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    fputc('\n', c->out);
    return rc == 0 ? 0 : fail_err(c, BR_EIO, "cannot write output");
}

static br_err open_store(struct cli *c, struct br_errbuf *eb)
{
    struct br_store_opts o = {.path = c->data};
    return br_store_open(&o, &c->store, eb);
}

/* Standard input, whole, into b (initialised here; the caller finis it). */
static br_err read_stdin(struct cli *c, br_buf *b, struct br_errbuf *eb)
{
    br_buf_init(b, STDIN_MAX);
    char chunk[65536];
    size_t n;
    br_err e = BR_OK;
    while (!e && (n = fread(chunk, 1, sizeof chunk, c->in)) > 0)
        e = br_buf_append(b, chunk, n);
    if (!e && ferror(c->in))
        e = br_fail(eb, BR_EIO, "cannot read standard input");
    if (e == BR_ETOOBIG)
        br_errbuf_set(eb, "input larger than %zu bytes", STDIN_MAX);
    return e;
}

/* Read a JSON argument: the text itself, or "-" / nothing for standard input. */
static br_err read_json(struct cli *c, const char *arg, json_t **out, struct br_errbuf *eb)
{
    if (arg && strcmp(arg, "-") != 0)
        return br_json_parse(arg, strlen(arg), STDIN_MAX, out, eb);
    br_buf b;
    br_err e = read_stdin(c, &b, eb);
    if (!e)
        e = br_json_parse((const char *)b.data, b.len, STDIN_MAX, out, eb);
    br_buf_fini(&b);
    return e;
}

/* Read a JSON document argument (as read_json does) straight into *d, with id_from_url. */
static br_err read_doc(struct cli *c, const char *arg, const char *id_from_url,
                       struct br_json_doc *d, struct br_errbuf *eb)
{
    if (arg && strcmp(arg, "-") != 0)
        return br_json_doc_parse_text(arg, strlen(arg), STDIN_MAX, id_from_url, d, eb);
    br_buf b;
    br_err e = read_stdin(c, &b, eb);
    if (!e)
        e = br_json_doc_parse_text((const char *)b.data, b.len, STDIN_MAX, id_from_url, d, eb);
    br_buf_fini(&b);
    return e;
}

static json_t *rev_json(const struct br_rev *r)
{
    char t[BR_REV_TEXT_MAX];
    br_rev_format(r, t);
    return json_string(t);
}

static json_t *hlc_json(struct br_hlc h)
{
    char t[BR_HLC_TEXT_MAX];
    br_hlc_format(h, t);
    return json_string(t);
}

/* Parse an option value, or NULL if the option has none. */
static const char *opt_value(struct cli *c, int *i)
{
    if (*i + 1 >= c->argc)
        return NULL;
    return c->argv[++*i];
}

static br_err open_db(struct cli *c, const char *name, br_db **db, struct br_errbuf *eb)
{
    br_err e = open_store(c, eb);
    if (e)
        return e;
    e = br_store_db_open(c->store, name, db);
    if (e == BR_ENOTFOUND || e == BR_EBADNAME)
        br_errbuf_set(eb, "Database does not exist.");
    return e == BR_EBADNAME ? BR_ENOTFOUND : e;
}

/* ---- db ---- */

/* The index policy as JSON: "all", or the list of patterns. */
static br_err policy_json(br_db *db, json_t **out)
{
    bool all;
    char **p;
    size_t n;
    br_err e = br_db_index_policy(db, &all, &p, &n);
    if (e)
        return e;
    json_t *v = all ? json_string("all") : json_array();
    for (size_t i = 0; i < n; i++) {
        if (v)
            json_array_append_new(v, json_string(p[i]));
        br_free(p[i]);
    }
    br_free(p);
    *out = v;
    return v ? BR_OK : BR_ENOMEM;
}

/* barrel db index NAME [--all | --none | PATTERN...]: show or set the index policy. */
static int cmd_db_index(struct cli *c)
{
    static const char usage[] = "barrel db index NAME [--all | --none | PATTERN...]";
    if (c->argc < 2)
        return fail_usage(c, usage);
    struct br_errbuf eb = {{0}};
    br_db *db = NULL;
    br_err e = open_db(c, c->argv[1], &db, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    int rc = 0;
    if (c->argc > 2) {
        bool all = c->argc == 3 && strcmp(c->argv[2], "--all") == 0;
        bool none = c->argc == 3 && strcmp(c->argv[2], "--none") == 0;
        size_t n = all || none ? 0 : (size_t)(c->argc - 2);
        for (size_t i = 0; i < n; i++) {
            if (c->argv[2 + i][0] == '-') {
                br_db_close(db);
                return fail_usage(c, usage);
            }
        }
        e = br_db_set_index(db, all, (const char *const *)(c->argv + 2), n, &eb);
        if (e)
            rc = fail_err(c, e, eb.msg);
    }
    json_t *v = NULL;
    if (!rc && (e = policy_json(db, &v)))
        rc = fail_err(c, e, NULL);
    if (!rc)
        rc = emit(c, json_pack("{s:o}", "index", v));
    br_db_close(db);
    return rc;
}

static int cmd_db(struct cli *c)
{
    if (c->argc < 1)
        return fail_usage(c, "barrel db create|delete|list|info [NAME]");
    const char *verb = c->argv[0];
    struct br_errbuf eb = {{0}};
    br_err e;
    if (strcmp(verb, "list") == 0) {
        if (c->argc != 1)
            return fail_usage(c, "barrel db list");
        if ((e = open_store(c, &eb)))
            return fail_err(c, e, eb.msg);
        char **names;
        size_t n;
        if ((e = br_store_db_list(c->store, &names, &n)))
            return fail_err(c, e, NULL);
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++)
            json_array_append_new(a, json_string(names[i]));
        br_store_names_free(names, n);
        return emit(c, a);
    }
    if (strcmp(verb, "index") == 0)
        return cmd_db_index(c);
    if (c->argc != 2)
        return fail_usage(c, "barrel db create|delete|info NAME");
    const char *name = c->argv[1];
    if ((e = open_store(c, &eb)))
        return fail_err(c, e, eb.msg);
    if (strcmp(verb, "create") == 0) {
        if (!br_db_name_valid(name, strlen(name), false))
            return fail_dbname(c);
        if ((e = br_store_db_create(c->store, name, &eb)))
            return fail_err(c, e, eb.msg);
        return emit(c, json_pack("{s:b}", "ok", 1));
    }
    if (strcmp(verb, "delete") == 0) {
        if ((e = br_store_db_delete(c->store, name, &eb)))
            return fail_err(c, e, eb.msg);
        return emit(c, json_pack("{s:b}", "ok", 1));
    }
    if (strcmp(verb, "info") == 0) {
        br_db *db;
        if ((e = br_store_db_open(c->store, name, &db)))
            return fail_err(c, e == BR_EBADNAME ? BR_ENOTFOUND : e, "Database does not exist.");
        struct br_db_info in;
        e = br_db_info(db, &in);
        json_t *index = NULL;
        if (!e)
            e = policy_json(db, &index);
        br_db_close(db);
        if (e)
            return fail_err(c, e, NULL);
        char hash[33];
        for (int i = 0; i < 16; i++)
            snprintf(hash + 2 * i, 3, "%02x", in.digest.set_hash[i]);
        return emit(c,
                    json_pack("{s:s,s:I,s:I,s:o,s:I,s:I,s:{s:I,s:I,s:I},s:{s:o,s:I,s:s},s:o}",
                              "db_name", name, "doc_count", (json_int_t)in.doc_count,
                              "doc_del_count", (json_int_t)in.doc_del_count, "update_seq",
                              hlc_json(in.digest.last), "update_count", (json_int_t)in.update_seq,
                              "revs_limit", (json_int_t)in.revs_limit, "sizes", "file",
                              (json_int_t)in.size_file, "active", (json_int_t)in.size_active,
                              "external", (json_int_t)in.size_external, "digest", "last",
                              hlc_json(in.digest.last), "doc_count",
                              (json_int_t)in.digest.doc_count, "set_hash", hash, "index", index));
    }
    return fail_usage(c, "barrel db create|delete|list|info [NAME]");
}

/* ---- documents ---- */

static int cmd_put(struct cli *c)
{
    if (c->argc < 2 || c->argc > 3)
        return fail_usage(c, "barrel put DB ID [JSON|-]");
    struct br_errbuf eb = {{0}};
    struct br_json_doc d;
    br_err e = read_doc(c, c->argc == 3 ? c->argv[2] : NULL, c->argv[1], &d, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    br_db *db = NULL;
    int rc;
    if ((e = open_db(c, c->argv[0], &db, &eb))) {
        rc = fail_err(c, e, eb.msg);
        goto out;
    }
    struct br_put_result res;
    e = br_db_put(db, &d.put, &(struct br_write_opts){BR_SYNC_FULL, true}, &res);
    if (e) {
        rc = fail_err(c, e, res.reason);
        goto out;
    }
    rc = emit(c, json_pack("{s:b,s:s,s:o}", "ok", 1, "id", res.id, "rev", rev_json(&res.rev)));
out:
    br_db_close(db);
    br_json_doc_fini(&d);
    return rc;
}

static int cmd_get(struct cli *c)
{
    if (c->argc < 2)
        return fail_usage(c, "barrel get DB ID [--rev R] [--revs] [--conflicts]");
    struct br_get_opts go = {0};
    struct br_rev rev;
    for (int i = 2; i < c->argc; i++) {
        const char *a = c->argv[i];
        if (strcmp(a, "--rev") == 0) {
            const char *v = opt_value(c, &i);
            if (!v)
                return fail_usage(c, "--rev needs a revision");
            if (br_rev_parse(v, strlen(v), &rev) != BR_OK)
                return fail_err(c, BR_EBADREV, "Invalid rev format");
            go.rev = &rev;
        } else if (strcmp(a, "--revs") == 0) {
            go.revs = true;
        } else if (strcmp(a, "--conflicts") == 0) {
            go.conflicts = true;
        } else if (strcmp(a, "--deleted-conflicts") == 0) {
            go.deleted_conflicts = true;
        } else {
            return fail_usage(c, "barrel get DB ID [--rev R] [--revs] [--conflicts]");
        }
    }
    struct br_errbuf eb = {{0}};
    br_db *db = NULL;
    br_err e = open_db(c, c->argv[0], &db, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    struct br_doc *d = NULL;
    const char *id = c->argv[1];
    e = br_db_get(db, id, strlen(id), &go, &d, &eb);
    br_db_close(db);
    if (e)
        return fail_err(c, e, eb.msg);
    json_t *j = NULL;
    e = br_json_doc_render(d, &j, &eb);
    br_doc_free(d);
    if (e)
        return fail_err(c, e, eb.msg);
    return emit(c, j);
}

static int cmd_delete(struct cli *c)
{
    if (c->argc != 4 || strcmp(c->argv[2], "--rev") != 0)
        return fail_usage(c, "barrel delete DB ID --rev R");
    struct br_rev rev;
    if (br_rev_parse(c->argv[3], strlen(c->argv[3]), &rev) != BR_OK)
        return fail_err(c, BR_EBADREV, "Invalid rev format");
    struct br_errbuf eb = {{0}};
    br_db *db = NULL;
    br_err e = open_db(c, c->argv[0], &db, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    const char *id = c->argv[1];
    struct br_put p = {.id = id, .id_len = strlen(id), .rev = &rev, .deleted = true};
    struct br_put_result res;
    e = br_db_put(db, &p, &(struct br_write_opts){BR_SYNC_FULL, true}, &res);
    br_db_close(db);
    if (e)
        return fail_err(c, e, res.reason);
    return emit(c, json_pack("{s:b,s:s,s:o}", "ok", 1, "id", res.id, "rev", rev_json(&res.rev)));
}

/* ---- changes ---- */

struct changes_out {
    json_t *results;
};

static int on_change(void *arg, const struct br_change *ch)
{
    struct changes_out *o = arg;
    json_t *revs = json_array();
    for (size_t i = 0; i < ch->n_leaves; i++)
        json_array_append_new(revs, json_pack("{s:o}", "rev", rev_json(&ch->leaves[i])));
    json_t *r = json_pack("{s:o,s:s%,s:o}", "seq", hlc_json(ch->seq), "id", ch->id, ch->id_len,
                          "changes", revs);
    if (r && ch->deleted)
        json_object_set_new(r, "deleted", json_true());
    json_array_append_new(o->results, r);
    return 0;
}

static br_err parse_since(br_db *db, const char *v, struct br_hlc *out)
{
    if (strcmp(v, "0") == 0) {
        *out = BR_HLC_MIN;
        return BR_OK;
    }
    if (strcmp(v, "now") == 0) {
        struct br_db_digest dg;
        br_err e = br_db_digest(db, &dg);
        if (!e)
            *out = dg.last;
        return e;
    }
    return br_hlc_parse(v, strlen(v), out);
}

#define CHANGES_USAGE                                                                              \
    "barrel changes DB [--since S] [--limit N] [--all-docs] [--descending] [--path P]... "         \
    "[--query JSON]"

static int cmd_changes(struct cli *c)
{
    if (c->argc < 1)
        return fail_usage(c, CHANGES_USAGE);
    struct br_changes_opts o = {0};
    const char *since = "0";
    const char **paths = calloc((size_t)c->argc, sizeof *paths);
    br_query *q = NULL;
    int rc = 0;
    if (!paths)
        return fail_err(c, BR_ENOMEM, NULL);
    o.paths = paths;
    for (int i = 1; i < c->argc; i++) {
        const char *a = c->argv[i];
        if (strcmp(a, "--path") == 0) {
            const char *v = opt_value(c, &i);
            struct br_errbuf peb = {{0}};
            if (!v) {
                rc = fail_usage(c, "--path needs a pattern such as type/# or site/+");
                goto done;
            }
            if (br_pattern_check(v, strlen(v), &peb) != BR_OK) {
                rc = fail_err(c, BR_EINVAL, peb.msg);
                goto done;
            }
            paths[o.n_paths++] = v;
        } else if (strcmp(a, "--query") == 0) {
            const char *v = opt_value(c, &i);
            struct br_errbuf qeb = {{0}};
            json_t *qj = NULL;
            br_err qe = v ? br_json_parse(v, strlen(v), 0, &qj, &qeb) : BR_EINVAL;
            if (!qe)
                qe = br_query_compile(qj, &q, &qeb);
            json_decref(qj);
            if (qe) {
                rc = v ? fail_err(c, qe, qeb.msg) : fail_usage(c, "--query needs a JSON query");
                goto done;
            }
            o.query = q;
        } else if (strcmp(a, "--since") == 0) {
            if (!(since = opt_value(c, &i))) {
                rc = fail_usage(c, "--since needs a sequence (wall:logical, 0 or now)");
                goto done;
            }
        } else if (strcmp(a, "--limit") == 0) {
            const char *v = opt_value(c, &i);
            char *end;
            errno = 0;
            unsigned long long n = v ? strtoull(v, &end, 10) : 0;
            if (!v || *v == '-' || *end || errno || n == 0) {
                rc = fail_usage(c, "--limit needs a positive number");
                goto done;
            }
            o.limit = (size_t)n;
        } else if (strcmp(a, "--all-docs") == 0) {
            o.all_docs = true;
        } else if (strcmp(a, "--descending") == 0) {
            o.descending = true;
        } else {
            rc = fail_usage(c, CHANGES_USAGE);
            goto done;
        }
    }
    struct br_errbuf eb = {{0}};
    br_db *db = NULL;
    br_err e = open_db(c, c->argv[0], &db, &eb);
    if (e) {
        rc = fail_err(c, e, eb.msg);
        goto done;
    }
    if ((e = parse_since(db, since, &o.since))) {
        br_db_close(db);
        rc = fail_err(c, BR_EINVAL, "since must be 0, now, or a sequence wall:logical");
        goto done;
    }
    struct changes_out co = {json_array()};
    struct br_hlc last;
    e = br_db_changes(db, &o, on_change, &co, &last);
    br_db_close(db);
    if (e) {
        json_decref(co.results);
        rc = fail_err(c, e, NULL);
        goto done;
    }
    rc = emit(c, json_pack("{s:o,s:o}", "results", co.results, "last_seq", hlc_json(last)));
done:
    br_query_free(q);
    free(paths);
    return rc;
}

/* ---- find: barrel's query JSON, or a Mango _find body with --mango ---- */

struct find_out {
    json_t *docs;
    bool include_docs;
    br_err err;
};

static int on_find_row(void *arg, const struct br_find_row *r)
{
    struct find_out *fo = arg;
    json_t *row = NULL;
    if (fo->include_docs) {
        if (br_json_from_cbor(r->body, r->body_len, &row, NULL) != BR_OK) {
            fo->err = BR_ESTORE;
            return 1;
        }
        json_object_set_new(row, "_id", json_stringn(r->id, r->id_len));
        json_object_set_new(row, "_rev", rev_json(&r->rev));
    } else {
        row = json_pack("{s:s%,s:o}", "_id", r->id, r->id_len, "_rev", rev_json(&r->rev));
    }
    if (!row || json_array_append_new(fo->docs, row)) {
        fo->err = BR_ENOMEM;
        return 1;
    }
    return 0;
}

static int cmd_find(struct cli *c)
{
    static const char usage[] = "barrel find DB [JSON|-] [--mango] [--explain]";
    bool mango = false, explain = false;
    const char *arg = NULL;
    if (c->argc < 1)
        return fail_usage(c, usage);
    for (int i = 1; i < c->argc; i++) {
        if (strcmp(c->argv[i], "--mango") == 0)
            mango = true;
        else if (strcmp(c->argv[i], "--explain") == 0)
            explain = true;
        else if (!arg)
            arg = c->argv[i];
        else
            return fail_usage(c, usage);
    }
    struct br_errbuf eb = {{0}};
    json_t *j = NULL;
    br_err e = read_json(c, arg, &j, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    br_query *q = NULL;
    e = mango ? br_query_from_mango(j, &q, &eb) : br_query_compile(j, &q, &eb);
    json_decref(j);
    if (e)
        return fail_err(c, e, eb.msg);
    br_db *db = NULL;
    int rc;
    if ((e = open_db(c, c->argv[0], &db, &eb))) {
        rc = fail_err(c, e, eb.msg);
    } else if (explain) {
        json_t *x = NULL;
        e = br_db_explain(db, q, &x);
        rc = e ? fail_err(c, e, NULL) : emit(c, x);
    } else {
        struct find_out fo = {json_array(), mango || q->include_docs, BR_OK};
        struct br_find_result res;
        e = br_db_find(db, q, on_find_row, &fo, &res);
        if (!e)
            e = fo.err;
        if (e) {
            json_decref(fo.docs);
            rc = fail_err(c, e, e == BR_EINVAL ? "bookmark expired or not of this query" : NULL);
        } else {
            json_t *o = json_pack("{s:o,s:s}", "docs", fo.docs, "plan", res.plan);
            if (o && res.has_more)
                json_object_set_new(o, "bookmark", json_string(res.token));
            rc = emit(c, o);
        }
    }
    br_db_close(db);
    br_query_free(q);
    return rc;
}

/* ---- revsdiff ---- */

static int cmd_revsdiff(struct cli *c)
{
    if (c->argc < 1 || c->argc > 2)
        return fail_usage(c, "barrel revsdiff DB [JSON|-]");
    struct br_errbuf eb = {{0}};
    json_t *j = NULL;
    br_err e = read_json(c, c->argc == 2 ? c->argv[1] : NULL, &j, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    int rc = 0;
    br_db *db = NULL;
    size_t n = json_is_object(j) ? json_object_size(j) : 0;
    struct br_revsdiff_in *in = br_calloc(n ? n : 1, sizeof *in);
    struct br_revsdiff_out *out = br_calloc(n ? n : 1, sizeof *out);
    struct br_rev *revs = NULL;
    size_t total = 0, k = 0;
    if (!json_is_object(j)) {
        rc = fail_err(c, BR_EINVAL, "revsdiff takes an object {\"docid\": [\"rev\", ...]}");
        goto out;
    }
    if (!in || !out) {
        rc = fail_err(c, BR_ENOMEM, NULL);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val)
    {
        if (!json_is_array(val)) {
            rc = fail_err(c, BR_EINVAL, "revsdiff values must be arrays of revisions");
            goto out;
        }
        total += json_array_size(val);
    }
    revs = br_calloc(total ? total : 1, sizeof *revs);
    if (!revs) {
        rc = fail_err(c, BR_ENOMEM, NULL);
        goto out;
    }
    size_t r = 0;
    json_object_foreach(j, key, val)
    {
        in[k].id = key;
        in[k].id_len = strlen(key);
        in[k].revs = &revs[r];
        size_t i;
        json_t *rv;
        json_array_foreach(val, i, rv)
        {
            const char *s = json_string_value(rv);
            if (!s || br_rev_parse(s, strlen(s), &revs[r]) != BR_OK) {
                rc = fail_err(c, BR_EBADREV, "Invalid rev format");
                goto out;
            }
            r++;
            in[k].n++;
        }
        k++;
    }
    if ((e = open_db(c, c->argv[0], &db, &eb))) {
        rc = fail_err(c, e, eb.msg);
        goto out;
    }
    if ((e = br_db_revsdiff(db, in, n, out))) {
        rc = fail_err(c, e, NULL);
        goto out;
    }
    json_t *res = json_object();
    for (size_t i = 0; res && i < n; i++) {
        if (out[i].n_missing == 0)
            continue;
        json_t *m = json_array(), *pa = json_array();
        for (size_t x = 0; x < out[i].n_missing; x++)
            json_array_append_new(m, rev_json(&out[i].missing[x]));
        for (size_t x = 0; x < out[i].n_possible_ancestors; x++)
            json_array_append_new(pa, rev_json(&out[i].possible_ancestors[x]));
        json_t *entry = json_pack("{s:o}", "missing", m);
        if (entry && json_array_size(pa))
            json_object_set_new(entry, "possible_ancestors", pa);
        else
            json_decref(pa);
        json_object_setn_new(res, in[i].id, in[i].id_len, entry);
    }
    br_revsdiff_out_fini(out, n);
    rc = emit(c, res);
out:
    br_db_close(db);
    br_free(revs);
    br_free(in);
    br_free(out);
    json_decref(j);
    return rc;
}

/* ---- bulk: {"docs": [...], "new_edits": bool} like _bulk_docs ---- */

static int cmd_bulk(struct cli *c)
{
    if (c->argc < 1 || c->argc > 2)
        return fail_usage(c, "barrel bulk DB [JSON|-]");
    struct br_errbuf eb = {{0}};
    json_t *j = NULL;
    br_err e = read_json(c, c->argc == 2 ? c->argv[1] : NULL, &j, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    json_t *docs = json_object_get(j, "docs");
    json_t *ne = json_object_get(j, "new_edits");
    if (!json_is_array(docs) || (ne && !json_is_boolean(ne))) {
        json_decref(j);
        return fail_err(c, BR_EINVAL, "bulk takes {\"docs\": [...], \"new_edits\": bool}");
    }
    struct br_write_opts wo = {BR_SYNC_FULL, ne ? json_is_true(ne) : true};
    size_t n = json_array_size(docs);
    struct br_json_doc *jd = br_calloc(n ? n : 1, sizeof *jd);
    struct br_put *puts = br_calloc(n ? n : 1, sizeof *puts);
    struct br_put_result *res = br_calloc(n ? n : 1, sizeof *res);
    br_err *perr = br_calloc(n ? n : 1, sizeof *perr);
    char(*preason)[BR_ERRBUF_SIZE] = br_calloc(n ? n : 1, BR_ERRBUF_SIZE);
    br_db *db = NULL;
    int rc = 0;
    size_t parsed = 0;
    if (!jd || !puts || !res || !perr || !preason) {
        rc = fail_err(c, BR_ENOMEM, NULL);
        goto out;
    }
    for (size_t i = 0; i < n; i++, parsed++) {
        json_t *dj = json_array_get(docs, i);
        struct br_errbuf deb = {{0}};
        perr[i] = json_is_object(dj) ? br_json_doc_parse(dj, NULL, &jd[i], &deb) : BR_EINVAL;
        if (perr[i]) {
            snprintf(preason[i], BR_ERRBUF_SIZE, "%s",
                     json_is_object(dj) ? deb.msg : "Document must be a JSON object");
            memset(&jd[i], 0, sizeof jd[i]);
        } else {
            puts[i] = jd[i].put;
        }
    }
    if ((e = open_db(c, c->argv[0], &db, &eb))) {
        rc = fail_err(c, e, eb.msg);
        goto out;
    }
    /* Documents that did not parse are answered without reaching the store. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!perr[i])
            puts[m++] = jd[i].put;
    struct br_put_result *mres = br_calloc(m ? m : 1, sizeof *mres);
    if (!mres || (e = br_db_bulk(db, puts, m, &wo, mres))) {
        br_free(mres);
        rc = fail_err(c, mres ? e : BR_ENOMEM, NULL);
        goto out;
    }
    json_t *a = json_array();
    for (size_t i = 0, k = 0; a && i < n; i++) {
        json_t *dj = json_array_get(docs, i);
        const char *id = json_string_value(json_object_get(dj, "_id"));
        if (perr[i]) {
            json_array_append_new(a,
                                  json_pack("{s:s?,s:s,s:s}", "id", id, "error",
                                            br_couch_error(perr[i]).error, "reason", preason[i]));
            continue;
        }
        struct br_put_result *r = &mres[k++];
        if (r->err)
            json_array_append_new(a, json_pack("{s:s,s:s,s:s}", "id", r->id, "error",
                                               br_couch_error(r->err).error, "reason", r->reason));
        else
            json_array_append_new(
                a, json_pack("{s:b,s:s,s:o}", "ok", 1, "id", r->id, "rev", rev_json(&r->rev)));
    }
    br_free(mres);
    rc = emit(c, a);
out:
    br_db_close(db);
    for (size_t i = 0; jd && i < parsed; i++)
        if (!perr[i])
            br_json_doc_fini(&jd[i]);
    br_free(jd);
    br_free(puts);
    br_free(res);
    br_free(perr);
    br_free(preason);
    json_decref(j);
    return rc;
}

/* ---- all-docs ---- */

struct alldocs_out {
    json_t *rows;
};

static int on_row(void *arg, const char *id, size_t id_len, const struct br_rev *rev,
                  const struct br_doc *doc)
{
    struct alldocs_out *o = arg;
    json_t *row = json_pack("{s:s%,s:s%,s:{s:o}}", "id", id, id_len, "key", id, id_len, "value",
                            "rev", rev_json(rev));
    if (row && doc) {
        json_t *dj = NULL;
        if (br_json_doc_render(doc, &dj, NULL) == BR_OK)
            json_object_set_new(row, "doc", dj);
    }
    json_array_append_new(o->rows, row);
    return 0;
}

static int cmd_all_docs(struct cli *c)
{
    if (c->argc < 1)
        return fail_usage(c, "barrel all-docs DB [--startkey K] [--endkey K] [--limit N] "
                             "[--descending] [--include-docs]");
    struct br_alldocs_opts o = {.inclusive_end = true};
    for (int i = 1; i < c->argc; i++) {
        const char *a = c->argv[i], *v = NULL;
        if (strcmp(a, "--startkey") == 0 && (v = opt_value(c, &i))) {
            o.startkey = v;
            o.startkey_len = strlen(v);
        } else if (strcmp(a, "--endkey") == 0 && (v = opt_value(c, &i))) {
            o.endkey = v;
            o.endkey_len = strlen(v);
        } else if (strcmp(a, "--limit") == 0 && (v = opt_value(c, &i))) {
            char *end;
            unsigned long long n = strtoull(v, &end, 10);
            if (*end || *v == '-')
                return fail_usage(c, "--limit needs a number");
            o.limit = (size_t)n;
        } else if (strcmp(a, "--descending") == 0) {
            o.descending = true;
        } else if (strcmp(a, "--include-docs") == 0) {
            o.include_docs = true;
        } else {
            return fail_usage(c, "barrel all-docs DB [--startkey K] [--endkey K] [--limit N] "
                                 "[--descending] [--include-docs]");
        }
    }
    struct br_errbuf eb = {{0}};
    br_db *db = NULL;
    br_err e = open_db(c, c->argv[0], &db, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    struct alldocs_out ao = {json_array()};
    uint64_t total = 0;
    e = br_db_all_docs(db, &o, on_row, &ao, &total);
    br_db_close(db);
    if (e) {
        json_decref(ao.rows);
        return fail_err(c, e, NULL);
    }
    return emit(c, json_pack("{s:I,s:I,s:o}", "total_rows", (json_int_t)total, "offset",
                             (json_int_t)0, "rows", ao.rows));
}

static int cmd_check(struct cli *c)
{
    if (c->argc != 1)
        return fail_usage(c, "barrel check DB");
    struct br_errbuf eb = {{0}};
    br_db *db = NULL;
    br_err e = open_db(c, c->argv[0], &db, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    struct br_db_check chk;
    e = br_db_check(db, &chk);
    br_db_close(db);
    if (e)
        return fail_err(c, e, NULL);
    int rc = emit(c, json_pack("{s:b,s:I,s:I,s:I}", "ok", chk.problems == 0, "docs",
                               (json_int_t)chk.docs, "changes", (json_int_t)chk.changes, "problems",
                               (json_int_t)chk.problems));
    if (chk.problems) {
        fprintf(c->err, "barrel: inconsistent: %s\n", chk.first);
        return 1;
    }
    return rc;
}

/* barrel serve [--config FILE] [--port N] [--bind ADDR] [--max-body BYTES]
 * [--max-attachment BYTES]
 * [--request-timeout S] [--peer ws://HOST:PORT]... [--peer-db DB]... [--mesh-key FILE]
 * [--allow NODE_ID]... */
static int cmd_serve(struct cli *c)
{
    static const char usage[] =
        "barrel serve [--config FILE] [--port N] [--bind ADDR] "
        "[--max-body BYTES] [--max-attachment BYTES] [--request-timeout S] [--idle-flush S] "
        "[--cache-mb N] "
        "[--peer ws://HOST:PORT]... [--peer-db DB]... [--mesh-key FILE] [--allow NODE_ID]...";
    struct br_serve_opts o = {.data = c->data, .port = -1, .idle_flush_s = -1};
    size_t cap = (size_t)c->argc + 1;
    const char **peers = br_calloc(cap, sizeof *peers), **dbs = br_calloc(cap, sizeof *dbs),
               **allow = br_calloc(cap, sizeof *allow), **mdbs = br_calloc(cap, sizeof *mdbs);
    int rc = 1;
    if (!peers || !dbs || !allow || !mdbs) {
        rc = fail_err(c, BR_ENOMEM, "out of memory");
        goto done;
    }
    o.peers = peers;
    o.peer_dbs = dbs;
    o.allow = allow;
    o.mesh_dbs = mdbs;
    for (int i = 0; i < c->argc; i++) {
        const char *a = c->argv[i];
        if (strcmp(a, "--no-fast-get") == 0) { /* every document GET on a worker (tests) */
            o.no_fast_get = true;
            continue;
        }
        if (strcmp(a, "--mesh") == 0) {
            o.mesh = true;
            continue;
        }
        if (strcmp(a, "--no-mesh") == 0) {
            o.no_mesh = true;
            continue;
        }
        if (strcmp(a, "--no-mdns") == 0) {
            o.no_mdns = true;
            continue;
        }
        if (strcmp(a, "--no-dial") == 0) {
            o.no_dial = true;
            continue;
        }
        const char *v = opt_value(c, &i);
        char *end = NULL;
        unsigned long long n = 0;
        if (!v) {
            rc = fail_usage(c, usage);
            goto done;
        }
        if (strcmp(a, "--bind") == 0) {
            o.bind = v;
            continue;
        }
        if (strcmp(a, "--peer") == 0) {
            peers[o.n_peers++] = v;
            continue;
        }
        if (strcmp(a, "--peer-db") == 0) {
            dbs[o.n_peer_dbs++] = v;
            continue;
        }
        if (strcmp(a, "--allow") == 0) {
            allow[o.n_allow++] = v;
            continue;
        }
        if (strcmp(a, "--mesh-key") == 0) {
            o.mesh_key = v;
            continue;
        }
        if (strcmp(a, "--mesh-db") == 0) {
            mdbs[o.n_mesh_dbs++] = v;
            continue;
        }
        if (strcmp(a, "--config") == 0) {
            o.config = v;
            continue;
        }
        errno = 0;
        n = strtoull(v, &end, 10);
        if (*v == '-' || !*v || *end || errno) {
            rc = fail_usage(c, usage);
            goto done;
        }
        if (strcmp(a, "--port") == 0 && n <= 65535) {
            o.port = (int)n;
        } else if (strcmp(a, "--max-body") == 0 && n > 0) {
            o.max_body = (size_t)n;
        } else if (strcmp(a, "--max-attachment") == 0 && n > 0) {
            o.max_attachment = (uint64_t)n;
        } else if (strcmp(a, "--request-timeout") == 0 && n > 0 && n <= 3600) {
            o.request_timeout_s = (unsigned)n;
        } else if (strcmp(a, "--idle-flush") == 0 && n <= 86400) {
            o.idle_flush_s = (int)n;
        } else if (strcmp(a, "--cache-mb") == 0 && n > 0 && n <= 65536) {
            o.cache_bytes = (size_t)n << 20;
        } else if (strcmp(a, "--gossip-interval") == 0 && n >= 10 && n <= 600000) {
            o.gossip_interval_ms = (unsigned)n;
        } else if (strcmp(a, "--fanout") == 0 && n > 0 && n <= 64) {
            o.gossip_fanout = (unsigned)n;
        } else if (strcmp(a, "--max-links") == 0 && n > 0 && n <= 256) {
            o.max_links = (unsigned)n;
        } else if (strcmp(a, "--probe-ms") == 0 && n >= 10 && n <= 600000) {
            o.probe_ms = (unsigned)n;
        } else if (strcmp(a, "--dead-ms") == 0 && n >= 10 && n <= 3600000) {
            o.dead_ms = (unsigned)n;
        } else {
            rc = fail_usage(c, usage);
            goto done;
        }
    }
    rc = br_serve_run(&o, c->out, c->err);
done:
    br_free(peers);
    br_free(dbs);
    br_free(allow);
    br_free(mdbs);
    return rc;
}

/* barrel passwd: read a password (first line of stdin) and print its hash for the config. */
static int cmd_passwd(struct cli *c)
{
    if (c->argc != 0)
        return fail_usage(c, "barrel passwd < password");
    char pw[1024];
    if (!fgets(pw, sizeof pw, c->in))
        return fail_err(c, BR_EINVAL, "no password on standard input");
    size_t n = strcspn(pw, "\r\n");
    if (n == 0)
        return fail_err(c, BR_EINVAL, "the password is empty");
    char h[BR_AUTH_HASH_MAX];
    br_err e = br_auth_hash_password(pw, n, h);
    memset(pw, 0, sizeof pw);
    if (e)
        return fail_err(c, e, "cannot hash the password");
    fprintf(c->out, "%s\n", h);
    return 0;
}

/* barrel id: the node id of the data dir's identity, created on first use. Plain text. */
static int cmd_id(struct cli *c)
{
    if (c->argc != 0)
        return fail_usage(c, "barrel [--data DIR] id");
    br_identity *id = NULL;
    int created = 0;
    struct br_errbuf eb = {{0}};
    br_err e = br_identity_open(c->data, NULL, &id, &created, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    char text[BR_NODE_ID_TEXT_LEN + 1];
    br_nodeid_format(br_identity_node_id(id), text);
    br_identity_free(id);
    if (created)
        fprintf(c->err, "barrel: created a new identity in %s/%s\n", c->data, BR_IDENTITY_FILE);
    fprintf(c->out, "%s\n", text);
    return 0;
}

/* barrel mesh-key new FILE: a fresh mesh key file (0600); prints its fingerprint. */
static int cmd_mesh_key(struct cli *c)
{
    if (c->argc != 2 || strcmp(c->argv[0], "new") != 0)
        return fail_usage(c, "barrel mesh-key new FILE");
    struct br_errbuf eb = {{0}};
    br_meshkey *k = NULL;
    br_err e = br_meshkey_new_file(c->argv[1], NULL, &eb);
    if (!e)
        e = br_meshkey_load(c->argv[1], &k, &eb);
    if (e)
        return fail_err(c, e, eb.msg);
    char fp[BR_MESHKEY_FINGERPRINT_LEN + 1];
    br_meshkey_fingerprint(k, fp);
    br_meshkey_free(k);
    fprintf(c->out, "%s\n", fp);
    return 0;
}

static int cmd_help(struct cli *c)
{
    fprintf(c->out,
            "barrel — a peer-to-peer document database node\n"
            "\n"
            "usage: barrel [--data DIR | --url URL [--user NAME]] [--log-level LEVEL] COMMAND ...\n"
            "\n"
            "  serve [--config FILE] [--port N] [--bind ADDR] [--max-body BYTES]\n"
            "        [--request-timeout S]   run a node: the HTTP API on 127.0.0.1:7070\n"
            "        [--peer ws://HOST:PORT]... [--peer-db DB]... [--mesh-key FILE]\n"
            "        [--allow NODE_ID]...    links (WS /_p2p): keep DBs in sync with peers\n"
            "        [--mesh] [--no-mesh]    the mesh (on with a mesh key): gossip, mDNS, and\n"
            "        [--no-mdns]             every database (or --mesh-db NAME[=PAT|PAT]...)\n"
            "        [--mesh-db ...]         pulled from every linked member\n"
            "        [--gossip-interval MS] [--fanout N] [--max-links N] [--probe-ms MS]\n"
            "        [--dead-ms MS]          gossip timing (1000, 3, 8, 1000, 3000)\n"
            "        [--no-dial]             dial no member (links only from --peer and others)\n"
            "        [--idle-flush S]        flush memtables after S s without writes (5; 0 off)\n"
            "        [--cache-mb N]          RocksDB block cache (32)\n"
            "        [--max-attachment BYTES] attachment uploads, streamed (4 GiB)\n"
            "  passwd < PASSWORD             print a password hash for the config's admin\n"
            "  db create NAME | db delete NAME | db list | db info NAME\n"
            "  db index NAME [--all|--none|PATTERN...]  which paths find can look up\n"
            "  put DB ID [JSON|-]            write a document (JSON argument or stdin)\n"
            "  get DB ID [--rev R] [--revs] [--conflicts] [--deleted-conflicts]\n"
            "  delete DB ID --rev R          write a tombstone\n"
            "  changes DB [--since S] [--limit N] [--all-docs] [--descending] [--path P]...\n"
            "            [--query JSON]      only documents matching patterns / a query\n"
            "  find DB [JSON|-] [--mango] [--explain]\n"
            "                                {\"where\": [...]} or a Mango _find body\n"
            "  revsdiff DB [JSON|-]          {\"docid\": [\"rev\", ...]} -> what is missing\n"
            "  bulk DB [JSON|-]              {\"docs\": [...], \"new_edits\": bool}\n"
            "  all-docs DB [--startkey K] [--endkey K] [--limit N] [--descending] "
            "[--include-docs]\n"
            "  check DB                      verify records, changes feed and digest agree\n"
            "  id                            print this node's id (creates the identity)\n"
            "  peers                         a running node's mesh members (GET /_peers)\n"
            "  mesh-key new FILE             write a new mesh key (mode 0600), print its "
            "fingerprint\n"
            "\n"
            "With neither --data nor --url the data directory is %s. With --url\n"
            "http://[USER:PASS@]HOST:PORT the commands above (but serve, passwd, check, db index\n"
            "and find --explain) talk to a running node instead; --user NAME takes the password\n"
            "from the environment variable BARREL_PASSWORD. Over --url, db info prints the node's\n"
            "GET /{db} answer and find needs --mango. Output is JSON; errors go to stderr as\n"
            "`barrel: ERROR: REASON` with a non-zero exit status (1: the operation failed or the\n"
            "node could not be reached, 2: usage).\n",
            DEFAULT_DATA);
    return 0;
}

int br_cli_run(int argc, char **argv, FILE *in, FILE *out, FILE *err)
{
    struct cli c = {.in = in, .out = out, .err = err, .data = DEFAULT_DATA};
    const char *url = NULL, *user = NULL;
    bool data_given = false;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) {
        fprintf(err, "barrel: out of memory\n");
        return 1;
    }
    int nrest = 0;
    br_log_set_level(BR_LOG_WARN);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 || strcmp(argv[i], "-d") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return fail_usage(&c, "--data needs a directory");
            }
            c.data = argv[++i];
            data_given = true;
        } else if (strcmp(argv[i], "--url") == 0 || strcmp(argv[i], "--user") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return fail_usage(&c, argv[i][3] == 'r'
                                          ? "--url http://HOST:PORT"
                                          : "--user NAME (password in BARREL_PASSWORD)");
            }
            *(argv[i][3] == 'r' ? &url : &user) = argv[i + 1];
            i++;
        } else if (strcmp(argv[i], "--log-level") == 0) {
            enum br_log_level l;
            if (i + 1 >= argc || br_log_parse_level(argv[++i], &l) != BR_OK) {
                free(rest);
                return fail_usage(&c, "--log-level error|warn|info|debug|trace");
            }
            br_log_set_level(l);
        } else {
            rest[nrest++] = argv[i];
        }
    }
    int rc;
    if (nrest == 0 || strcmp(rest[0], "help") == 0 || strcmp(rest[0], "--help") == 0 ||
        strcmp(rest[0], "-h") == 0) {
        rc = cmd_help(&c);
        if (nrest == 0)
            rc = 2;
        free(rest);
        return rc;
    }
    if (url && data_given) {
        free(rest);
        return fail_usage(&c, "--url and --data exclude each other");
    }
    if (user && !url) {
        free(rest);
        return fail_usage(&c, "--user goes with --url");
    }
    if (!url && strcmp(rest[0], "peers") == 0) {
        if (data_given) {
            free(rest);
            return fail_usage(&c, "peers asks a running node: --url http://HOST:PORT");
        }
        url = "http://127.0.0.1:7070";
    }
    if (url) {
        struct br_cli_remote r = {.url = url,
                                  .user = user,
                                  .password = user ? getenv("BARREL_PASSWORD") : NULL,
                                  .in = in,
                                  .out = out,
                                  .err = err};
        rc = br_cli_remote_run(&r, nrest, rest);
        free(rest);
        return rc;
    }
    static const struct {
        const char *name;
        int (*fn)(struct cli *);
    } cmds[] = {
        {"db", cmd_db},         {"put", cmd_put},           {"get", cmd_get},
        {"delete", cmd_delete}, {"changes", cmd_changes},   {"revsdiff", cmd_revsdiff},
        {"bulk", cmd_bulk},     {"all-docs", cmd_all_docs}, {"check", cmd_check},
        {"find", cmd_find},     {"serve", cmd_serve},       {"passwd", cmd_passwd},
        {"id", cmd_id},         {"mesh-key", cmd_mesh_key},
    };
    c.argc = nrest - 1;
    c.argv = rest + 1;
    rc = -1;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(rest[0], cmds[i].name) == 0) {
            rc = cmds[i].fn(&c);
            break;
        }
    }
    if (rc < 0) {
        fprintf(err, "barrel: unknown command '%s' (see barrel help)\n", rest[0]);
        rc = 2;
    }
    br_store_close(c.store);
    free(rest);
    return rc;
}
