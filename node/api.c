/* api.c — helpers shared by the API handlers, and the server-level routes (/, /_all_dbs,
 * /_node, /_metrics). */
#include "api.h"

#include <stdio.h>
#include <string.h>

#include "barrel/couch.h"
#include "barrel/json.h"

#include "replications.h"

void api_json(br_http_ex *x, int status, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    br_buf_reset(&x->resp.body);
    if (!s || br_buf_append_str(&x->resp.body, s) || br_buf_append_byte(&x->resp.body, '\n')) {
        free(s);
        br_http_resp_error(&x->resp, 500, "internal_server_error", "out of memory");
        return;
    }
    free(s);
    x->resp.status = status;
    x->resp.content_type = NULL;
}

void api_fail(br_http_ex *x, br_err e, const char *reason)
{
    struct br_couch_error ce = br_couch_error(e);
    if (e == BR_ECONFLICT)
        reason = "Document update conflict.";
    br_http_resp_error(&x->resp, ce.status, ce.error, reason && *reason ? reason : br_strerror(e));
}

static const char DBNAME_REASON[] =
    "Name: '%s'. Only lowercase characters (a-z), digits (0-9), and any of the characters _, "
    "$, (, ), +, -, and / are allowed. Must begin with a letter.";

bool api_open_db(struct br_api *api, br_http_ex *x, br_db **db)
{
    const char *name = x->req.segs.seg[0];
    size_t len = x->req.segs.len[0];
    if (!br_db_name_valid(name, len, false)) {
        char msg[BR_ERRBUF_SIZE];
        snprintf(msg, sizeof msg, DBNAME_REASON, name);
        br_http_resp_error(&x->resp, 400, "illegal_database_name", msg);
        return false;
    }
    br_err e = br_store_db_open(api->store, name, db);
    if (e == BR_ENOTFOUND) {
        br_http_resp_error(&x->resp, 404, "not_found", "Database does not exist.");
        return false;
    }
    if (e) {
        api_fail(x, e, NULL);
        return false;
    }
    return true;
}

json_t *api_body(br_http_ex *x, bool require_json)
{
    if (require_json && !br_http_media_is(x->req.content_type, "application/json")) {
        br_http_resp_error(&x->resp, 415, "bad_content_type",
                           "Content-Type must be application/json");
        return NULL;
    }
    if (x->req.body.len == 0) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Request body is empty");
        return NULL;
    }
    json_t *v = NULL;
    struct br_errbuf eb = {{0}};
    br_err e = br_json_parse((const char *)x->req.body.data, x->req.body.len, 0, &v, &eb);
    if (e == BR_ENOMEM) {
        api_fail(x, e, NULL);
        return NULL;
    }
    if (e) {
        char msg[BR_ERRBUF_SIZE + 32];
        snprintf(msg, sizeof msg, "invalid UTF-8 JSON: %s", eb.msg);
        br_http_resp_error(&x->resp, 400, "bad_request", msg);
        return NULL;
    }
    return v;
}

bool api_parse_rev(br_http_ex *x, const char *text, struct br_rev *out)
{
    if (br_rev_parse(text, strlen(text), out) != BR_OK) {
        br_http_resp_error(&x->resp, 400, "bad_request", "Invalid rev format");
        return false;
    }
    return true;
}

bool api_req_rev(br_http_ex *x, struct br_rev *out, bool *has)
{
    const char *q = br_http_arg(&x->req.args, "rev");
    char tag[BR_REV_TEXT_MAX];
    const char *h = NULL;
    if (x->req.if_match) {
        if (br_http_etag_value(x->req.if_match, strlen(x->req.if_match), tag, sizeof tag)) {
            br_http_resp_error(&x->resp, 400, "bad_request", "Invalid rev format");
            return false;
        }
        h = tag;
    }
    if (q && h && strcmp(q, h) != 0) {
        br_http_resp_error(&x->resp, 400, "bad_request",
                           "Document rev and etag have different values");
        return false;
    }
    *has = q || h;
    if (!*has)
        return true;
    return api_parse_rev(x, q ? q : h, out);
}

json_t *api_rev_json(const struct br_rev *r)
{
    char t[BR_REV_TEXT_MAX];
    br_rev_format(r, t);
    return json_string(t);
}

json_t *api_hlc_json(struct br_hlc h)
{
    char t[BR_HLC_TEXT_MAX];
    br_hlc_format(h, t);
    return json_string(t);
}

void api_etag(br_http_ex *x, const struct br_rev *r)
{
    char t[BR_REV_TEXT_MAX], q[BR_REV_TEXT_MAX + 2];
    br_rev_format(r, t);
    snprintf(q, sizeof q, "\"%s\"", t);
    br_http_resp_header(&x->resp, "etag", q);
}

/* ---- server routes ---- */

void api_welcome(struct br_api *api, br_http_ex *x)
{
    (void)api;
    api_json(x, 200,
             json_pack("{s:s,s:s,s:{s:s,s:s},s:[s]}", "couchdb", "Welcome", "version",
                       BARREL_VERSION, "vendor", "name", "barrel", "version", BARREL_VERSION,
                       "features", "barrel"));
}

void api_all_dbs(struct br_api *api, br_http_ex *x)
{
    char **names;
    size_t n;
    br_err e = br_store_db_list(api->store, &names, &n);
    if (e) {
        api_fail(x, e, NULL);
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(names[i]));
    br_store_names_free(names, n);
    api_json(x, 200, a);
}

void api_node(struct br_api *api, br_http_ex *x)
{
    uint64_t now = br_env_mono_ns(br_store_env(api->store));
    struct br_hlc h = br_hlc_peek(br_store_clock(api->store));
    api_json(x, 200,
             json_pack("{s:s,s:s,s:s,s:o,s:I,s:I}", "name", "barrel", "node_id",
                       api->node_id ? api->node_id : "unassigned", "version", BARREL_VERSION, "hlc",
                       api_hlc_json(h), "uptime",
                       (json_int_t)((now - api->start_mono_ns) / 1000000000u), "links",
                       (json_int_t)(api->links ? api->links(api->gauges_arg) : 0)));
}

void api_metrics(struct br_api *api, br_http_ex *x)
{
    struct br_metrics_gauges g = {0};
    if (api->gauges)
        api->gauges(api->gauges_arg, &g);
    g.uptime_s = (br_env_mono_ns(br_store_env(api->store)) - api->start_mono_ns) / 1000000000u;
    br_buf_reset(&x->resp.body);
    br_err e = br_metrics_render(api->metrics, &g, api->store, &x->resp.body);
    if (e) {
        api_fail(x, e, NULL);
        return;
    }
    x->resp.status = 200;
    x->resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
}

void api_replicate(struct br_api *api, br_http_ex *x)
{
    json_t *body = api_body(x, false);
    if (!body)
        return;
    json_t *out = NULL;
    int st = br_repmgr_replicate(api->reps, body, &out);
    json_decref(body);
    api_json(x, st, out);
}

void api_active_tasks(struct br_api *api, br_http_ex *x)
{
    api_json(x, 200, br_repmgr_tasks(api->reps));
}

void api_peers(struct br_api *api, br_http_ex *x)
{
    json_t *o = api->peers ? api->peers(api->gauges_arg) : NULL;
    if (!o)
        o = json_pack("{s:n,s:[],s:b}", "self", "members", "mesh_sync", 0);
    api_json(x, 200, o);
}

/* DELETE /_peers/{id}[?block=true]: close the links to a member (and refuse it until PUT). */
void api_peer_delete(struct br_api *api, br_http_ex *x)
{
    const char *id = x->req.segs.seg[1];
    bool block = false;
    struct br_errbuf eb = {{0}};
    if (br_http_arg_bool(&x->req.args, "block", false, &block, &eb)) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        return;
    }
    if (!api->peer_drop) {
        br_http_resp_error(&x->resp, 404, "not_found", "this node is not in a mesh");
        return;
    }
    size_t closed = 0;
    br_err e = api->peer_drop(api->gauges_arg, id, block, &closed);
    if (e == BR_ENOTFOUND) {
        br_http_resp_error(&x->resp, 404, "not_found", "no such member");
        return;
    }
    if (e) {
        api_fail(x, e, NULL);
        return;
    }
    api_json(x, 200,
             json_pack("{s:b,s:I,s:b}", "ok", 1, "closed", (json_int_t)closed, "blocked", block));
}

/* PUT /_peers/{id}: lift a block. */
void api_peer_put(struct br_api *api, br_http_ex *x)
{
    br_err e =
        api->peer_unblock ? api->peer_unblock(api->gauges_arg, x->req.segs.seg[1]) : BR_ENOTFOUND;
    if (e == BR_ENOTFOUND) {
        br_http_resp_error(&x->resp, 404, "not_found", "no such blocked member");
        return;
    }
    if (e) {
        api_fail(x, e, NULL);
        return;
    }
    api_json(x, 200, json_pack("{s:b}", "ok", 1));
}
