/* bulk_get.c — reading given revisions of documents, as replicators do: the open_revs
 * answer shared by GET /{db}/{docid}?open_revs=... and POST /{db}/_bulk_get, with CouchDB's
 * `latest` (a requested revision that is no longer a leaf answers with the leaves that
 * descend from it) and `attachments` (inline base64 instead of stubs).
 *
 * _bulk_get body: {"docs":[{"id":..., "rev":...?}, ...]}; answer
 * {"results":[{"id":..., "docs":[{"ok":doc} | {"error":{"id","rev","error","reason"}}]}]},
 * one result per requested item, in request order. */
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/json.h"

#include "api.h"

/* Render one read revision, its attachments inline when atts. NULL on failure. */
static json_t *render(br_db *db, const struct br_doc *d, bool atts, br_err *err)
{
    json_t *j = NULL;
    br_err e = br_json_doc_render(d, &j, NULL);
    if (!e && atts && (e = api_att_inline(db, d, j))) {
        json_decref(j);
        j = NULL;
    }
    *err = e;
    return e ? NULL : j;
}

/* Whether `rev` is in the history of leaf document d (read with revs). */
static bool descends(const struct br_doc *d, const struct br_rev *rev)
{
    for (size_t i = 0; i < d->n_revisions; i++) {
        if (br_rev_eq(&d->revisions[i], rev))
            return true;
    }
    return false;
}

/* latest: the leaves of id whose history holds rev, appended to arr as {"ok":doc}. Appends
 * nothing when none does. */
static br_err append_latest(br_db *db, const char *id, const struct br_rev *rev,
                            const struct api_open_revs_opts *o, json_t *arr, size_t *added)
{
    struct br_open_rev *leaves = NULL;
    size_t n = 0;
    *added = 0;
    br_err e = br_db_get_open_revs(db, id, strlen(id), NULL, 0, true, &leaves, &n);
    if (e)
        return e == BR_ENOTFOUND ? BR_OK : e;
    for (size_t i = 0; !e && i < n; i++) {
        const struct br_doc *d = leaves[i].doc;
        if (leaves[i].missing || !d || !descends(d, rev))
            continue;
        struct br_doc view = *d;
        if (!o->revs) {
            view.revisions = NULL;
            view.n_revisions = 0;
        }
        json_t *dj = render(db, &view, o->attachments, &e);
        if (dj && json_array_append_new(arr, json_pack("{s:o}", "ok", dj)))
            e = BR_ENOMEM;
        if (!e)
            (*added)++;
    }
    br_open_revs_free(leaves, n);
    return e;
}

br_err api_open_revs_json(br_db *db, const char *id, const struct br_rev *revs, size_t n,
                          const struct api_open_revs_opts *o, json_t **out)
{
    struct br_open_rev *got = NULL;
    size_t n_got = 0;
    json_t *arr = json_array();
    if (!arr)
        return BR_ENOMEM;
    br_err e = br_db_get_open_revs(db, id, strlen(id), revs, n, o->revs || o->latest, &got, &n_got);
    for (size_t i = 0; !e && i < n_got; i++) {
        json_t *item = NULL;
        if (!got[i].missing && got[i].doc) {
            struct br_doc view = *got[i].doc;
            if (!o->revs) {
                view.revisions = NULL;
                view.n_revisions = 0;
            }
            json_t *dj = render(db, &view, o->attachments, &e);
            item = dj ? json_pack("{s:o}", "ok", dj) : NULL;
        } else if (o->latest && revs) {
            size_t added = 0;
            e = append_latest(db, id, &got[i].rev, o, arr, &added);
            if (e || added)
                continue;
        }
        if (!e && !item)
            item = json_pack("{s:o}", "missing", api_rev_json(&got[i].rev));
        if (!e && json_array_append_new(arr, item))
            e = BR_ENOMEM;
    }
    br_open_revs_free(got, n_got);
    if (e) {
        json_decref(arr);
        return e;
    }
    *out = arr;
    return BR_OK;
}

/* {"error":{"id":id,"rev":rev,"error":error,"reason":reason}} */
static json_t *item_error(const char *id, const char *rev, const char *error, const char *reason)
{
    return json_pack("{s:{s:s,s:s,s:s,s:s}}", "error", "id", id, "rev", rev ? rev : "undefined",
                     "error", error, "reason", reason);
}

/* One requested item: its "docs" array. */
static br_err bulk_get_one(br_db *db, json_t *req, const struct api_open_revs_opts *o,
                           json_t **docs_out, const char **id_out)
{
    json_t *idj = json_is_object(req) ? json_object_get(req, "id") : NULL;
    json_t *revj = json_is_object(req) ? json_object_get(req, "rev") : NULL;
    const char *id = json_is_string(idj) ? json_string_value(idj) : NULL;
    const char *rtext = json_is_string(revj) ? json_string_value(revj) : NULL;
    *id_out = id ? id : "";
    json_t *docs = NULL;
    br_err e = BR_OK;
    struct br_rev rev;
    if (!id || !*id || (revj && !rtext)) {
        docs = json_pack("[o]", item_error(*id_out, rtext, "bad_request",
                                           "each item needs a string id (and a string rev)"));
    } else if (rtext && br_rev_parse(rtext, strlen(rtext), &rev) != BR_OK) {
        docs = json_pack("[o]", item_error(id, rtext, "bad_request", "Invalid rev format"));
    } else if (rtext) {
        e = api_open_revs_json(db, id, &rev, 1, o, &docs);
        if (e == BR_ENOTFOUND) {
            e = BR_OK;
            docs = json_pack("[o]", item_error(id, rtext, "not_found", "missing"));
        }
        /* a rev the document does not hold is an error item, as CouchDB answers */
        json_t *first = json_array_get(docs, 0);
        if (!e && json_object_get(first, "missing"))
            json_array_set_new(docs, 0, item_error(id, rtext, "not_found", "missing"));
    } else {
        struct br_get_opts go = {.revs = o->revs};
        struct br_doc *d = NULL;
        struct br_errbuf eb = {{0}};
        e = br_db_get(db, id, strlen(id), &go, &d, &eb);
        if (e == BR_ENOTFOUND) {
            e = BR_OK;
            docs =
                json_pack("[o]", item_error(id, NULL, "not_found", eb.msg[0] ? eb.msg : "missing"));
        } else if (!e) {
            json_t *dj = render(db, d, o->attachments, &e);
            docs = dj ? json_pack("[{s:o}]", "ok", dj) : NULL;
        }
        br_doc_free(d);
    }
    if (!e && !docs)
        e = BR_ENOMEM;
    if (e) {
        json_decref(docs);
        return e;
    }
    *docs_out = docs;
    return BR_OK;
}

void api_bulk_get(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    struct api_open_revs_opts o = {0};
    struct br_errbuf eb = {{0}};
    json_t *j = NULL, *results = NULL;
    const struct br_http_args *a = &x->req.args;
    if (br_http_arg_bool(a, "revs", false, &o.revs, &eb) ||
        br_http_arg_bool(a, "latest", false, &o.latest, &eb) ||
        br_http_arg_bool(a, "attachments", false, &o.attachments, &eb)) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        goto done;
    }
    if (!(j = api_body(x, true)))
        goto done;
    json_t *arr = json_is_object(j) ? json_object_get(j, "docs") : NULL;
    if (!json_is_array(arr)) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Missing JSON list of 'docs'.");
        goto done;
    }
    results = json_array();
    if (!results) {
        api_fail(x, BR_ENOMEM, NULL);
        goto done;
    }
    size_t i;
    json_t *req;
    json_array_foreach(arr, i, req)
    {
        json_t *docs = NULL;
        const char *id = NULL;
        br_err e = bulk_get_one(db, req, &o, &docs, &id);
        if (!e && json_array_append_new(results, json_pack("{s:s,s:o}", "id", id, "docs", docs)))
            e = BR_ENOMEM;
        if (e) {
            api_fail(x, e, NULL);
            goto done;
        }
    }
    api_json(x, 200, json_pack("{s:o}", "results", results));
    results = NULL;
done:
    json_decref(results);
    json_decref(j);
    br_db_close(db);
}
