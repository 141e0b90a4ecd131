/* api_db.c — database routes: create, delete, info, POST a new document, _bulk_docs,
 * _revs_diff, _find (Mango) and _all_docs (_changes is in changes.c). */
#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/find.h"
#include "barrel/json.h"
#include "barrel/query.h"

#include "api.h"

static void ok_true(br_http_ex *x, int status)
{
    api_json(x, status, json_pack("{s:b}", "ok", 1));
}

void api_db_create(struct br_api *api, br_http_ex *x)
{
    const char *name = x->req.segs.seg[0];
    if (!br_db_name_valid(name, x->req.segs.len[0], false)) {
        br_db *db = NULL;
        (void)api_open_db(api, x, &db); /* sets the 400 illegal_database_name */
        return;
    }
    struct br_errbuf eb = {{0}};
    br_err e = br_store_db_create(api->store, name, &eb);
    if (e == BR_EEXIST) {
        br_http_resp_error(&x->resp, 412, "file_exists",
                           "The database could not be created, the file already exists.");
        return;
    }
    if (e) {
        api_fail(x, e, eb.msg);
        return;
    }
    char loc[BR_DB_NAME_MAX + 2];
    snprintf(loc, sizeof loc, "/%s", name);
    br_http_resp_header(&x->resp, "location", loc);
    ok_true(x, 201);
}

void api_db_delete(struct br_api *api, br_http_ex *x)
{
    if (br_http_arg(&x->req.args, "rev")) {
        br_http_resp_error(&x->resp, 400, "bad_request",
                           "You tried to DELETE a database with a ?rev= parameter. Did you "
                           "mean to DELETE a document instead?");
        return;
    }
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    br_db_close(db);
    struct br_errbuf eb = {{0}};
    br_err e = br_store_db_delete(api->store, x->req.segs.seg[0], &eb);
    if (e == BR_ENOTFOUND) {
        br_http_resp_error(&x->resp, 404, "not_found", "Database does not exist.");
        return;
    }
    if (e) {
        api_fail(x, e, eb.msg);
        return;
    }
    ok_true(x, 200);
}

void api_db_info(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    struct br_db_info in;
    br_err e = br_db_info(db, &in);
    br_db_close(db);
    if (e) {
        api_fail(x, e, NULL);
        return;
    }
    char digest[2 * sizeof in.digest.set_hash + 1];
    for (size_t i = 0; i < sizeof in.digest.set_hash; i++)
        snprintf(digest + 2 * i, 3, "%02x", in.digest.set_hash[i]);
    api_json(x, 200,
             json_pack("{s:s,s:I,s:I,s:o,s:I,s:i,s:{s:I,s:I,s:I},s:b,s:s,s:i,s:{},s:s}", "db_name",
                       x->req.segs.seg[0], "doc_count", (json_int_t)in.doc_count, "doc_del_count",
                       (json_int_t)in.doc_del_count, "update_seq", api_hlc_json(in.digest.last),
                       "update_count", (json_int_t)in.update_seq, "purge_seq", 0, "sizes", "file",
                       (json_int_t)in.size_file, "active", (json_int_t)in.size_active, "external",
                       (json_int_t)in.size_external, "compact_running", 0, "instance_start_time",
                       "0", "disk_format_version", 8, "props", "digest", digest));
}

void api_write_doc(br_http_ex *x, br_db *db, struct br_json_doc *d, bool new_edits)
{
    struct br_put_result res;
    struct br_write_opts wo = {BR_SYNC_FULL, new_edits};
    br_err e = br_db_put(db, &d->put, &wo, &res);
    if (e) {
        api_fail(x, e, res.reason);
        return;
    }
    x->docs_written++;
    api_etag(x, &res.rev);
    char loc[BR_DB_NAME_MAX + BR_DOCID_MAX + 4];
    snprintf(loc, sizeof loc, "/%s/%s", br_db_name(db), res.id);
    br_http_resp_header(&x->resp, "location", loc);
    api_json(x, 201,
             json_pack("{s:b,s:s,s:o}", "ok", 1, "id", res.id, "rev", api_rev_json(&res.rev)));
}

void api_db_post(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    json_t *j = api_body(x, true);
    if (!j) {
        br_db_close(db);
        return;
    }
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    br_err e = br_json_doc_parse(j, NULL, &d, &eb);
    json_decref(j);
    if (e) {
        api_fail(x, e, eb.msg);
    } else {
        api_write_doc(x, db, &d, true);
        br_json_doc_fini(&d);
    }
    br_db_close(db);
}

/* ---- _bulk_docs ---- */

static json_t *result_json(const char *id, const struct br_put_result *r)
{
    if (r->err == BR_OK)
        return json_pack("{s:b,s:s,s:o}", "ok", 1, "id", r->id, "rev", api_rev_json(&r->rev));
    json_t *o = json_pack("{s:s}", "id", id ? id : r->id);
    if (!o)
        return NULL;
    const char *err = r->err == BR_ECONFLICT   ? "conflict"
                      : r->err == BR_EBADNAME  ? "illegal_docid"
                      : r->err == BR_ETOOBIG   ? "too_large"
                      : r->err == BR_ENOTFOUND ? "not_found"
                                               : "bad_request";
    json_object_set_new(o, "error", json_string(err));
    json_object_set_new(
        o, "reason", json_string(r->err == BR_ECONFLICT ? "Document update conflict." : r->reason));
    return o;
}

void api_bulk_docs(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    json_t *j = api_body(x, true);
    struct br_json_doc *docs = NULL;
    struct br_put *puts = NULL;
    struct br_put_result *res = NULL;
    size_t *slot = NULL, n = 0, nput = 0;
    json_t *out = NULL;
    if (!j)
        goto done;
    json_t *arr = json_object_get(j, "docs");
    json_t *ne = json_object_get(j, "new_edits");
    if (!json_is_object(j) || !json_is_array(arr) || (ne && !json_is_boolean(ne))) {
        br_http_resp_error(&x->resp, 400, "bad_request", "POST body must include `docs` array");
        goto done;
    }
    bool new_edits = !ne || json_is_true(ne);
    n = json_array_size(arr);
    docs = br_calloc(n ? n : 1, sizeof *docs);
    puts = br_calloc(n ? n : 1, sizeof *puts);
    res = br_calloc(n ? n : 1, sizeof *res);
    slot = br_calloc(n ? n : 1, sizeof *slot);
    out = json_array();
    if (!docs || !puts || !res || !slot || !out) {
        api_fail(x, BR_ENOMEM, NULL);
        goto done;
    }
    /* Parse every document; one that does not parse gets its error in place. */
    struct br_errbuf eb;
    for (size_t i = 0; i < n; i++) {
        json_t *dj = json_array_get(arr, i);
        memset(&eb, 0, sizeof eb);
        br_err e = br_json_doc_parse(dj, NULL, &docs[i], &eb);
        if (e) {
            slot[i] = SIZE_MAX;
            res[i].err = e;
            eb.msg[sizeof res[i].reason - 1] = '\0'; /* cut to fit */
            memcpy(res[i].reason, eb.msg, sizeof res[i].reason);
            json_t *idj = json_is_object(dj) ? json_object_get(dj, "_id") : NULL;
            snprintf(res[i].id, sizeof res[i].id, "%s",
                     json_is_string(idj) ? json_string_value(idj) : "");
            continue;
        }
        if (!new_edits && !docs[i].put.id) {
            br_json_doc_fini(&docs[i]);
            slot[i] = SIZE_MAX;
            res[i].err = BR_EINVAL;
            snprintf(res[i].reason, sizeof res[i].reason, "new_edits=false needs _id and _rev");
            continue;
        }
        slot[i] = nput;
        puts[nput++] = docs[i].put;
    }
    struct br_put_result *pres = br_calloc(nput ? nput : 1, sizeof *pres);
    if (!pres) {
        api_fail(x, BR_ENOMEM, NULL);
        goto done_docs;
    }
    struct br_write_opts wo = {BR_SYNC_FULL, new_edits};
    br_err e = nput ? br_db_bulk(db, puts, nput, &wo, pres) : BR_OK;
    if (e) {
        br_free(pres);
        api_fail(x, e, NULL);
        goto done_docs;
    }
    for (size_t i = 0; i < n; i++) {
        const struct br_put_result *r = slot[i] == SIZE_MAX ? &res[i] : &pres[slot[i]];
        x->docs_written += r->err == BR_OK;
        if (!new_edits && r->err == BR_OK)
            continue; /* CouchDB lists only failures for replicated writes */
        json_array_append_new(out, result_json(slot[i] == SIZE_MAX ? res[i].id : NULL, r));
    }
    br_free(pres);
    api_json(x, 201, out);
    out = NULL;
done_docs:
    for (size_t i = 0; i < n; i++) {
        if (slot[i] != SIZE_MAX)
            br_json_doc_fini(&docs[i]);
    }
done:
    json_decref(out);
    br_free(slot);
    br_free(res);
    br_free(puts);
    br_free(docs);
    json_decref(j);
    br_db_close(db);
}

/* ---- _revs_diff ---- */

void api_revs_diff(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    json_t *j = api_body(x, true);
    struct br_revsdiff_in *in = NULL;
    struct br_revsdiff_out *out = NULL;
    struct br_rev *revs = NULL;
    size_t n = 0, total = 0, k = 0;
    bool have_out = false;
    if (!j)
        goto done;
    if (!json_is_object(j)) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Request body must be a JSON object");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val)
    {
        if (!json_is_array(val)) {
            br_http_resp_error(&x->resp, 400, "bad_request",
                               "Values of _revs_diff must be arrays of revisions");
            goto done;
        }
        total += json_array_size(val);
        n++;
    }
    in = br_calloc(n ? n : 1, sizeof *in);
    out = br_calloc(n ? n : 1, sizeof *out);
    revs = br_calloc(total ? total : 1, sizeof *revs);
    if (!in || !out || !revs) {
        api_fail(x, BR_ENOMEM, NULL);
        goto done;
    }
    size_t i = 0;
    json_object_foreach(j, key, val)
    {
        in[i].id = key;
        in[i].id_len = strlen(key);
        in[i].revs = revs + k;
        size_t idx;
        json_t *rv;
        json_array_foreach(val, idx, rv)
        {
            if (!json_is_string(rv) || !api_parse_rev(x, json_string_value(rv), &revs[k])) {
                br_http_resp_error(&x->resp, 400, "bad_request", "Invalid rev format");
                goto done;
            }
            k++;
            in[i].n++;
        }
        i++;
    }
    br_err e = br_db_revsdiff(db, in, n, out);
    if (e) {
        api_fail(x, e, NULL);
        goto done;
    }
    have_out = true;
    /* written straight into the answer: the bytes json_dumps gives for the same object */
    br_buf *b = &x->resp.body;
    br_buf_reset(b);
    char rt[BR_REV_TEXT_MAX];
    bool first = true;
    e = br_buf_append_byte(b, '{');
    for (i = 0; !e && i < n; i++) {
        if (out[i].n_missing == 0)
            continue;
        if (!first)
            e = br_buf_append_byte(b, ',');
        first = false;
        if (!e)
            e = br_json_write_string(b, in[i].id, in[i].id_len);
        if (!e)
            e = br_buf_append_str(b, ":{\"missing\":[");
        for (size_t r = 0; !e && r < out[i].n_missing; r++) {
            size_t rl = br_rev_format(&out[i].missing[r], rt);
            e = r ? br_buf_append_byte(b, ',') : BR_OK;
            if (!e)
                e = br_json_write_string(b, rt, rl);
        }
        if (!e)
            e = br_buf_append_byte(b, ']');
        if (!e && out[i].n_possible_ancestors)
            e = br_buf_append_str(b, ",\"possible_ancestors\":[");
        for (size_t r = 0; !e && r < out[i].n_possible_ancestors; r++) {
            size_t rl = br_rev_format(&out[i].possible_ancestors[r], rt);
            e = r ? br_buf_append_byte(b, ',') : BR_OK;
            if (!e)
                e = br_json_write_string(b, rt, rl);
        }
        if (!e && out[i].n_possible_ancestors)
            e = br_buf_append_byte(b, ']');
        if (!e)
            e = br_buf_append_byte(b, '}');
    }
    if (!e)
        e = br_buf_append_str(b, "}\n");
    if (e) {
        br_buf_reset(b);
        api_fail(x, e, NULL);
        goto done;
    }
    x->resp.status = 200;
    x->resp.content_type = NULL;
done:
    if (have_out)
        br_revsdiff_out_fini(out, n);
    br_free(out);
    br_free(in);
    br_free(revs);
    json_decref(j);
    br_db_close(db);
}

/* ---- _find ---- */

struct find_ctx {
    json_t *docs;
    const br_query *q;
    br_err err;
};

/* Mango's `fields`: keep the named (possibly dotted) fields, and _id/_rev. */
static json_t *project(json_t *doc, const br_query *q)
{
    if (!q->fields)
        return json_incref(doc);
    json_t *out = json_object();
    for (size_t i = 0; out && i < q->n_fields; i++) {
        const char *f = q->fields[i];
        json_t *src = doc, *dst = out;
        const char *p = f;
        for (;;) {
            const char *dot = strchr(p, '.');
            size_t len = dot ? (size_t)(dot - p) : strlen(p);
            json_t *v = json_is_object(src) ? json_object_getn(src, p, len) : NULL;
            if (!v)
                break;
            if (!dot) {
                json_object_setn(dst, p, len, v);
                break;
            }
            json_t *next = json_object_getn(dst, p, len);
            if (!json_is_object(next)) {
                next = json_object();
                json_object_setn_new(dst, p, len, next);
            }
            src = v;
            dst = next;
            p = dot + 1;
        }
    }
    return out;
}

static int on_find_row(void *arg, const struct br_find_row *r)
{
    struct find_ctx *c = arg;
    json_t *doc = NULL;
    if (br_json_from_cbor(r->body, r->body_len, &doc, NULL) != BR_OK) {
        c->err = BR_ESTORE;
        return 1;
    }
    json_object_set_new(doc, "_id", json_stringn(r->id, r->id_len));
    json_object_set_new(doc, "_rev", api_rev_json(&r->rev));
    json_t *p = project(doc, c->q);
    json_decref(doc);
    if (!p || json_array_append_new(c->docs, p)) {
        c->err = BR_ENOMEM;
        return 1;
    }
    return 0;
}

void api_find(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    json_t *j = api_body(x, true);
    br_query *q = NULL;
    struct br_errbuf eb = {{0}};
    if (!j)
        goto done;
    if (!json_is_object(j) || !json_is_object(json_object_get(j, "selector"))) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Missing required key: selector");
        goto done;
    }
    br_err e = br_query_from_mango(j, &q, &eb);
    if (e) {
        api_fail(x, e, eb.msg);
        goto done;
    }
    struct find_ctx c = {json_array(), q, BR_OK};
    struct br_find_result *res = br_calloc(1, sizeof *res);
    if (!c.docs || !res) {
        json_decref(c.docs);
        br_free(res);
        api_fail(x, BR_ENOMEM, NULL);
        goto done;
    }
    e = br_db_find(db, q, on_find_row, &c, res);
    if (!e)
        e = c.err;
    if (e) {
        json_decref(c.docs);
        api_fail(x, e, e == BR_EINVAL ? "bookmark expired or not of this query" : NULL);
    } else {
        json_t *o = json_pack("{s:o}", "docs", c.docs);
        if (o)
            json_object_set_new(o, "bookmark", json_string(res->has_more ? res->token : "nil"));
        api_json(x, 200, o);
    }
    br_free(res);
done:
    br_query_free(q);
    json_decref(j);
    br_db_close(db);
}

/* ---- _all_docs ---- */

struct alldocs_ctx {
    json_t *rows;
};

static int on_alldocs(void *arg, const char *id, size_t id_len, const struct br_rev *rev,
                      const struct br_doc *doc)
{
    struct alldocs_ctx *c = arg;
    json_t *row = json_pack("{s:s%,s:s%,s:{s:o}}", "id", id, id_len, "key", id, id_len, "value",
                            "rev", api_rev_json(rev));
    if (row && doc) {
        json_t *dj = NULL;
        if (br_json_doc_render(doc, &dj, NULL) == BR_OK)
            json_object_set_new(row, "doc", dj);
    }
    if (!row || json_array_append_new(c->rows, row))
        return 1;
    return 0;
}

/* A startkey/endkey argument is JSON ("\"id\""); a bare string is accepted too. */
static char *key_arg(br_http_ex *x, const char *name, size_t *len, bool *bad)
{
    const char *v = br_http_arg(&x->req.args, name);
    *bad = false;
    if (!v)
        return NULL;
    json_t *j = json_loads(v, JSON_DECODE_ANY, NULL);
    char *s = NULL;
    if (json_is_string(j)) {
        *len = json_string_length(j);
        s = br_strndup(json_string_value(j), *len);
    } else if (!j) {
        *len = strlen(v);
        s = br_strndup(v, *len);
    } else {
        *bad = true;
    }
    json_decref(j);
    return s;
}

void api_all_docs(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    struct br_errbuf eb = {{0}};
    struct br_alldocs_opts o = {.inclusive_end = true};
    uint64_t limit, skip;
    bool bad1, bad2;
    char *sk = key_arg(x, "startkey", &o.startkey_len, &bad1);
    char *ek = key_arg(x, "endkey", &o.endkey_len, &bad2);
    o.startkey = sk;
    o.endkey = ek;
    if (bad1 || bad2) {
        br_http_resp_error(&x->resp, 400, "bad_request", "startkey and endkey must be strings");
        goto done;
    }
    if (br_http_arg_u64(&x->req.args, "limit", 0, &limit, &eb) ||
        br_http_arg_u64(&x->req.args, "skip", 0, &skip, &eb) ||
        br_http_arg_bool(&x->req.args, "descending", false, &o.descending, &eb) ||
        br_http_arg_bool(&x->req.args, "include_docs", false, &o.include_docs, &eb) ||
        br_http_arg_bool(&x->req.args, "inclusive_end", true, &o.inclusive_end, &eb)) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        goto done;
    }
    o.limit = (size_t)limit;
    o.skip = (size_t)skip;
    struct alldocs_ctx c = {json_array()};
    uint64_t total = 0;
    br_err e = c.rows ? br_db_all_docs(db, &o, on_alldocs, &c, &total) : BR_ENOMEM;
    if (e) {
        json_decref(c.rows);
        api_fail(x, e, NULL);
        goto done;
    }
    api_json(x, 200,
             json_pack("{s:I,s:I,s:o}", "total_rows", (json_int_t)total, "offset", (json_int_t)skip,
                       "rows", c.rows));
done:
    br_free(sk);
    br_free(ek);
    br_db_close(db);
}
