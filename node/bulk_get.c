/* bulk_get.c — reading given revisions of documents, as replicators do: the open_revs
 * answer shared by GET /{db}/{docid}?open_revs=... and POST /{db}/_bulk_get, with CouchDB's
 * `latest` (a requested revision that is no longer a leaf answers with the leaves that
 * descend from it) and `attachments` (inline base64 instead of stubs).
 *
 * _bulk_get body: {"docs":[{"id":..., "rev":...?}, ...]}; answer
 * {"results":[{"id":..., "docs":[{"ok":doc} | {"error":{"id","rev","error","reason"}}]}]},
 * one result per requested item, in request order. The open_revs walk (open_revs_each) hands
 * each answer item to an emitter: GET builds a jansson array from them, _bulk_get writes its
 * answer text straight into the response (br_json_doc_write: no tree per document), with the
 * same bytes json_dumps would give for the tree. */
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/json.h"

#include "api.h"

/* Where open_revs_each sends the items of one answer: a revision read ({"ok": doc}; d is
 * borrowed and already trimmed of revisions unless `revs`), or one it could not find
 * ({"missing": rev}). */
struct emitter {
    br_err (*ok)(void *arg, br_db *db, const struct br_doc *d, bool atts);
    br_err (*missing)(void *arg, const struct br_rev *rev);
    void *arg;
};

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

static br_err emit_ok(br_db *db, const struct br_doc *d, const struct api_open_revs_opts *o,
                      const struct emitter *em)
{
    struct br_doc view = *d;
    if (!o->revs) {
        view.revisions = NULL;
        view.n_revisions = 0;
    }
    return em->ok(em->arg, db, &view, o->attachments);
}

/* latest: the leaves of id whose history holds rev, emitted as ok items. Emits nothing when
 * none does. */
static br_err emit_latest(br_db *db, const char *id, const struct br_rev *rev,
                          const struct api_open_revs_opts *o, const struct emitter *em,
                          size_t *added)
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
        e = emit_ok(db, d, o, em);
        if (!e)
            (*added)++;
    }
    br_open_revs_free(leaves, n);
    return e;
}

/* The open_revs answer for id: revs (NULL/0: every leaf), each an ok or a missing item, or
 * with `latest` the leaves descending from a revision that is no longer a leaf. */
static br_err open_revs_each(br_db *db, const char *id, const struct br_rev *revs, size_t n,
                             const struct api_open_revs_opts *o, const struct emitter *em)
{
    struct br_open_rev *got = NULL;
    size_t n_got = 0;
    br_err e = br_db_get_open_revs(db, id, strlen(id), revs, n, o->revs || o->latest, &got, &n_got);
    for (size_t i = 0; !e && i < n_got; i++) {
        if (!got[i].missing && got[i].doc) {
            e = emit_ok(db, got[i].doc, o, em);
            continue;
        }
        if (o->latest && revs) {
            size_t added = 0;
            e = emit_latest(db, id, &got[i].rev, o, em, &added);
            if (e || added)
                continue;
        }
        e = em->missing(em->arg, &got[i].rev);
    }
    br_open_revs_free(got, n_got);
    return e;
}

/* ---- the jansson answer (GET ?open_revs=) ---- */

static br_err tree_ok(void *arg, br_db *db, const struct br_doc *d, bool atts)
{
    br_err e;
    json_t *dj = render(db, d, atts, &e);
    if (!dj)
        return e;
    return json_array_append_new(arg, json_pack("{s:o}", "ok", dj)) ? BR_ENOMEM : BR_OK;
}

static br_err tree_missing(void *arg, const struct br_rev *rev)
{
    return json_array_append_new(arg, json_pack("{s:o}", "missing", api_rev_json(rev))) ? BR_ENOMEM
                                                                                        : BR_OK;
}

br_err api_open_revs_json(br_db *db, const char *id, const struct br_rev *revs, size_t n,
                          const struct api_open_revs_opts *o, json_t **out)
{
    json_t *arr = json_array();
    if (!arr)
        return BR_ENOMEM;
    struct emitter em = {tree_ok, tree_missing, arr};
    br_err e = open_revs_each(db, id, revs, n, o, &em);
    if (e) {
        json_decref(arr);
        return e;
    }
    *out = arr;
    return BR_OK;
}

/* ---- _bulk_get, written as text ---- */

struct text_item {
    br_buf *out;
    size_t count;      /* items written to this "docs" array */
    const char *id;    /* the requested id and rev text, for an error item */
    const char *rtext; /* NULL: none given */
};

static br_err put_str(br_buf *b, const char *s)
{
    return br_json_write_string(b, s, strlen(s));
}

static br_err text_sep(struct text_item *t)
{
    return t->count++ ? br_buf_append_byte(t->out, ',') : BR_OK;
}

static br_err text_ok(void *arg, br_db *db, const struct br_doc *d, bool atts)
{
    struct text_item *t = arg;
    br_err e = text_sep(t);
    if (!e)
        e = br_buf_append_str(t->out, "{\"ok\":");
    if (!e && !atts) {
        e = br_json_doc_write(d, t->out, NULL);
    } else if (!e) { /* inline attachments: through the tree */
        json_t *dj = render(db, d, atts, &e);
        char *s = dj ? json_dumps(dj, JSON_COMPACT) : NULL;
        json_decref(dj);
        if (!e && !s)
            e = BR_ENOMEM;
        if (!e)
            e = br_buf_append_str(t->out, s);
        free(s);
    }
    return e ? e : br_buf_append_byte(t->out, '}');
}

/* {"error":{"id":id,"rev":rev,"error":error,"reason":reason}} */
static br_err text_error(struct text_item *t, const char *error, const char *reason)
{
    br_buf *b = t->out;
    br_err e = text_sep(t);
    if (!e)
        e = br_buf_append_str(b, "{\"error\":{\"id\":");
    if (!e)
        e = put_str(b, t->id);
    if (!e)
        e = br_buf_append_str(b, ",\"rev\":");
    if (!e)
        e = put_str(b, t->rtext ? t->rtext : "undefined");
    if (!e)
        e = br_buf_append_str(b, ",\"error\":");
    if (!e)
        e = put_str(b, error);
    if (!e)
        e = br_buf_append_str(b, ",\"reason\":");
    if (!e)
        e = put_str(b, reason);
    return e ? e : br_buf_append_str(b, "}}");
}

/* A rev the document does not hold is an error item, as CouchDB answers. (With one revision
 * asked for, a missing item can only come first.) */
static br_err text_missing(void *arg, const struct br_rev *rev)
{
    struct text_item *t = arg;
    if (t->count == 0)
        return text_error(t, "not_found", "missing");
    char r[BR_REV_TEXT_MAX];
    br_rev_format(rev, r);
    br_err e = text_sep(t);
    if (!e)
        e = br_buf_append_str(t->out, "{\"missing\":");
    if (!e)
        e = put_str(t->out, r);
    return e ? e : br_buf_append_byte(t->out, '}');
}

/* One requested item: {"id":..., "docs":[...]} appended to out. */
static br_err bulk_get_one(br_db *db, json_t *req, const struct api_open_revs_opts *o, br_buf *out)
{
    json_t *idj = json_is_object(req) ? json_object_get(req, "id") : NULL;
    json_t *revj = json_is_object(req) ? json_object_get(req, "rev") : NULL;
    const char *id = json_is_string(idj) ? json_string_value(idj) : NULL;
    const char *rtext = json_is_string(revj) ? json_string_value(revj) : NULL;
    struct text_item t = {out, 0, id ? id : "", rtext};
    br_err e = br_buf_append_str(out, "{\"id\":");
    if (!e)
        e = put_str(out, t.id);
    if (!e)
        e = br_buf_append_str(out, ",\"docs\":[");
    if (e)
        return e;
    size_t docs_at = out->len;
    struct br_rev rev;
    if (!id || !*id || (revj && !rtext)) {
        e = text_error(&t, "bad_request", "each item needs a string id (and a string rev)");
    } else if (rtext && br_rev_parse(rtext, strlen(rtext), &rev) != BR_OK) {
        e = text_error(&t, "bad_request", "Invalid rev format");
    } else if (rtext) {
        struct emitter em = {text_ok, text_missing, &t};
        e = open_revs_each(db, id, &rev, 1, o, &em);
        if (e == BR_ENOTFOUND) {
            out->len = docs_at;
            t.count = 0;
            e = text_error(&t, "not_found", "missing");
        }
    } else {
        struct br_get_opts go = {.revs = o->revs};
        struct br_doc *d = NULL;
        struct br_errbuf eb = {{0}};
        e = br_db_get(db, id, strlen(id), &go, &d, &eb);
        if (e == BR_ENOTFOUND) {
            t.rtext = NULL;
            e = text_error(&t, "not_found", eb.msg[0] ? eb.msg : "missing");
        } else if (!e) {
            e = text_ok(&t, db, d, o->attachments);
        }
        br_doc_free(d);
    }
    return e ? e : br_buf_append_str(out, "]}");
}

void api_bulk_get(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    struct api_open_revs_opts o = {0};
    struct br_errbuf eb = {{0}};
    json_t *j = NULL;
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
    br_buf *out = &x->resp.body;
    br_buf_reset(out);
    size_t n = json_array_size(arr);
    br_err e = br_buf_reserve(out, 64 + (n < 1000 ? n : 1000) * 512);
    if (!e)
        e = br_buf_append_str(out, "{\"results\":[");
    size_t i;
    json_t *req;
    json_array_foreach(arr, i, req)
    {
        if (!e && i)
            e = br_buf_append_byte(out, ',');
        if (!e)
            e = bulk_get_one(db, req, &o, out);
        if (e)
            break;
    }
    if (!e)
        e = br_buf_append_str(out, "]}\n");
    if (e) {
        br_buf_reset(out);
        api_fail(x, e, NULL);
        goto done;
    }
    x->resp.status = 200;
    x->resp.content_type = NULL;
done:
    json_decref(j);
    br_db_close(db);
}
