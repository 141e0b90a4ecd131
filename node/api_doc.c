/* api_doc.c — document routes: PUT|GET|DELETE /{db}/{docid} (docid may be _design/NAME) with
 * rev, revs, open_revs, conflicts, deleted_conflicts and new_edits; and /{db}/_local/{id}. */
#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/json.h"

#include "api.h"

/* The document id the path names: seg[1], or "_design/" seg[2]. */
static void doc_id(const br_http_ex *x, char *out, size_t cap)
{
    const struct br_http_path *p = &x->req.segs;
    if (p->n == 3)
        snprintf(out, cap, "%s/%s", p->seg[1], p->seg[2]);
    else
        snprintf(out, cap, "%s", p->seg[1]);
}

static void render_doc(br_http_ex *x, br_db *db, const struct br_doc *d, bool inline_atts)
{
    json_t *j = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = br_json_doc_render(d, &j, &eb);
    if (!e && inline_atts && (e = api_att_inline(db, d, j)))
        json_decref(j);
    if (e) {
        api_fail(x, e, eb.msg);
        return;
    }
    api_etag(x, &d->rev);
    api_json(x, 200, j);
}

/* open_revs=all | open_revs=["1-a","2-b"]: [{"ok": doc} | {"missing": rev}, ...], or the same
 * as multipart/mixed when the client asks for it (api_mixed.c; the stream then owns db). */
static void get_open_revs(br_http_ex *x, br_db *db, const char *id, const char *spec,
                          const struct api_open_revs_opts *o)
{
    struct br_rev *revs = NULL;
    size_t n = 0;
    json_t *arr = NULL;
    if (strcmp(spec, "all") != 0) {
        arr = json_loads(spec, 0, NULL);
        if (!json_is_array(arr)) {
            json_decref(arr);
            br_http_resp_error(&x->resp, 400, "bad_request",
                               "open_revs must be \"all\" or a JSON array of revisions");
            return;
        }
        n = json_array_size(arr);
        revs = br_calloc(n ? n : 1, sizeof *revs);
        if (!revs) {
            json_decref(arr);
            api_fail(x, BR_ENOMEM, NULL);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *r = json_array_get(arr, i);
            if (!json_is_string(r) || !api_parse_rev(x, json_string_value(r), &revs[i])) {
                br_http_resp_error(&x->resp, 400, "bad_request", "Invalid rev format");
                json_decref(arr);
                br_free(revs);
                return;
            }
        }
        json_decref(arr);
    }
    json_t *res = NULL;
    bool mixed = api_wants_mixed(x); /* attachments follow as parts, not inline */
    struct api_open_revs_opts oj = *o;
    if (mixed)
        oj.attachments = false;
    br_err e = api_open_revs_json(db, id, n ? revs : NULL, n, &oj, &res);
    br_free(revs);
    if (e) {
        api_fail(x, e, e == BR_ENOTFOUND ? "missing" : NULL);
        return;
    }
    if (mixed)
        api_open_revs_mixed(x, db, id, res, o->attachments);
    else
        api_json(x, 200, res);
}

/* GET /{db}/{docid} on an open db. With cache_only, false (x untouched) when the answer needs
 * the disk, or an open_revs or attachments=true read (those read more than the record). */
static bool doc_get(br_http_ex *x, br_db *db, bool cache_only, bool *gone)
{
    char id[BR_DOCID_MAX + 16];
    doc_id(x, id, sizeof id);
    struct br_errbuf eb = {{0}};
    struct br_get_opts go = {.cache_only = cache_only};
    struct br_rev rev;
    const struct br_http_args *a = &x->req.args;
    bool inline_atts, enc_info, latest;
    if (br_http_arg_bool(a, "attachments", false, &inline_atts, &eb) ||
        br_http_arg_bool(a, "latest", false, &latest, &eb) ||
        br_http_arg_bool(a, "att_encoding_info", false, &enc_info, &eb) ||
        br_http_arg_bool(a, "revs", false, &go.revs, &eb) ||
        br_http_arg_bool(a, "conflicts", false, &go.conflicts, &eb) ||
        br_http_arg_bool(a, "deleted_conflicts", false, &go.deleted_conflicts, &eb)) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        return true;
    }
    const char *open_revs = br_http_arg(a, "open_revs");
    if (cache_only && (open_revs || inline_atts))
        return false;
    if (open_revs) {
        struct api_open_revs_opts oo = {go.revs, latest, inline_atts};
        get_open_revs(x, db, id, open_revs, &oo);
        return true;
    }
    const char *r = br_http_arg(a, "rev");
    if (r) {
        if (!api_parse_rev(x, r, &rev))
            return true;
        go.rev = &rev;
    }
    struct br_doc *d = NULL;
    br_err e = br_db_get(db, id, strlen(id), &go, &d, &eb);
    if (cache_only && (e == BR_EWOULDBLOCK || e == BR_ECLOSED)) {
        *gone = e == BR_ECLOSED;
        return false;
    }
    if (e) {
        api_fail(x, e, e == BR_ENOTFOUND && !eb.msg[0] ? "missing" : eb.msg);
        return true;
    }
    render_doc(x, db, d, inline_atts); /* att_encoding_info: nothing is stored encoded */
    x->docs_read++;
    br_doc_free(d);
    return true;
}

void api_doc_get(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    bool gone;
    (void)doc_get(x, db, false, &gone);
    if (api_cont_of(x) != API_CONT_ATT) /* a multipart/mixed stream keeps db */
        br_db_close(db);
}

bool api_doc_get_cached(br_db *db, br_http_ex *x, bool *gone)
{
    *gone = false;
    return doc_get(x, db, true, gone);
}

void api_doc_put(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    char id[BR_DOCID_MAX + 16];
    doc_id(x, id, sizeof id);
    struct br_errbuf eb = {{0}};
    bool new_edits, has_rev;
    struct br_rev qrev;
    json_t *j = NULL;
    if (br_http_arg_bool(&x->req.args, "new_edits", true, &new_edits, &eb)) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        goto done;
    }
    if (!api_req_rev(x, &qrev, &has_rev))
        goto done;
    if (!(j = api_body(x, false)))
        goto done;
    struct br_json_doc d;
    br_err e = br_json_doc_parse(j, id, &d, &eb);
    if (e) {
        api_fail(x, e, eb.msg);
        goto done;
    }
    if (has_rev) {
        if (d.put.rev && !br_rev_eq(d.put.rev, &qrev)) {
            br_http_resp_error(&x->resp, 400, "bad_request",
                               "Document rev from request body and query string have "
                               "different values");
            br_json_doc_fini(&d);
            goto done;
        }
        if (!d.put.rev) {
            d.rev = qrev;
            d.put.rev = &d.rev;
        }
    }
    api_write_doc(x, db, &d, new_edits);
    br_json_doc_fini(&d);
done:
    json_decref(j);
    br_db_close(db);
}

void api_doc_delete(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    char id[BR_DOCID_MAX + 16];
    doc_id(x, id, sizeof id);
    struct br_rev rev;
    bool has;
    if (!api_req_rev(x, &rev, &has))
        goto done;
    if (!has) {
        api_fail(x, BR_ECONFLICT, NULL);
        goto done;
    }
    struct br_put p = {.id = id, .id_len = strlen(id), .rev = &rev, .deleted = true};
    struct br_put_result res;
    br_err e = br_db_put(db, &p, &BR_WRITE_DEFAULT, &res);
    if (e) {
        api_fail(x, e, res.reason);
        goto done;
    }
    api_etag(x, &res.rev);
    api_json(x, 200,
             json_pack("{s:b,s:s,s:o}", "ok", 1, "id", res.id, "rev", api_rev_json(&res.rev)));
done:
    br_db_close(db);
}

/* ---- _local ---- */

static void local_id(const br_http_ex *x, char *out, size_t cap)
{
    snprintf(out, cap, "_local/%s", x->req.segs.seg[2]);
}

static bool parse_local_rev(br_http_ex *x, const char *text, struct br_rev *out)
{
    if (br_rev_parse_local(text, strlen(text), out) != BR_OK) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Invalid rev format");
        return false;
    }
    return true;
}

void api_local_get(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    const char *id = x->req.segs.seg[2];
    struct br_doc *d = NULL;
    json_t *j = NULL;
    br_err e = br_db_local_get(db, id, strlen(id), &d);
    if (!e)
        e = br_json_from_cbor(d->body, d->body_len, &j, NULL);
    if (e) {
        api_fail(x, e, e == BR_ENOTFOUND ? "missing" : NULL);
    } else {
        char full[BR_DOCID_MAX + 16];
        local_id(x, full, sizeof full);
        json_object_set_new(j, "_id", json_string(full));
        json_object_set_new(j, "_rev", api_rev_json(&d->rev));
        api_etag(x, &d->rev);
        api_json(x, 200, j);
    }
    br_doc_free(d);
    br_db_close(db);
}

void api_local_put(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    const char *id = x->req.segs.seg[2];
    json_t *j = api_body(x, false);
    br_buf body;
    br_buf_init(&body, 0);
    struct br_rev rev;
    bool has_rev = false;
    if (!j)
        goto done;
    if (!json_is_object(j)) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Document must be a JSON object");
        goto done;
    }
    json_t *r = json_object_get(j, "_rev");
    const char *qr = br_http_arg(&x->req.args, "rev");
    if (r && !json_is_string(r)) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Invalid rev format");
        goto done;
    }
    if (r || qr) {
        if (!parse_local_rev(x, r ? json_string_value(r) : qr, &rev))
            goto done;
        has_rev = true;
    }
    json_object_del(j, "_rev");
    json_object_del(j, "_id");
    struct br_errbuf eb = {{0}};
    br_err e = br_json_to_cbor(j, &body, &eb);
    struct br_rev nr;
    if (!e)
        /* _local docs are replication checkpoints: written to the WAL but not fsync'd. A power
         * cut can only take the last one back, and the replicator then re-sends one batch that
         * revsdiff filters out; an fsync per batch cost PouchDB's push about a tenth of its
         * rate (bench/pouch_bench.sh). A process crash loses nothing (the WAL is written). */
        e = br_db_local_put(db, id, strlen(id), has_rev ? &rev : NULL, body.data, body.len,
                            &(struct br_write_opts){BR_SYNC_NONE, true}, &nr);
    if (e) {
        api_fail(x, e, eb.msg);
        goto done;
    }
    char full[BR_DOCID_MAX + 16];
    local_id(x, full, sizeof full);
    api_etag(x, &nr);
    api_json(x, 201, json_pack("{s:b,s:s,s:o}", "ok", 1, "id", full, "rev", api_rev_json(&nr)));
done:
    br_buf_fini(&body);
    json_decref(j);
    br_db_close(db);
}

void api_local_delete(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    const char *id = x->req.segs.seg[2];
    const char *qr = br_http_arg(&x->req.args, "rev");
    struct br_rev rev;
    if (qr && !parse_local_rev(x, qr, &rev))
        goto done;
    br_err e = br_db_local_delete(db, id, strlen(id), qr ? &rev : NULL, &BR_WRITE_DEFAULT);
    if (e) {
        api_fail(x, e, e == BR_ENOTFOUND ? "missing" : NULL);
        goto done;
    }
    char full[BR_DOCID_MAX + 16];
    local_id(x, full, sizeof full);
    api_json(x, 200, json_pack("{s:b,s:s,s:s}", "ok", 1, "id", full, "rev", "0-0"));
done:
    br_db_close(db);
}
