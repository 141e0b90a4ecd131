/* changes.c — GET|POST /{db}/_changes: request parsing, reading and rendering (see changes.h),
 * and the handler, which answers the normal feed itself and hands streaming feeds to feed.c. */
#include "changes.h"

#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/json.h"
#include "barrel/paths.h"

#include "api.h"

void chg_req_fini(struct chg_req *r)
{
    for (size_t i = 0; i < r->n_doc_ids; i++)
        br_free(r->doc_ids[i]);
    br_free(r->doc_ids);
    br_free(r->doc_id_lens);
    for (size_t i = 0; i < r->n_paths; i++)
        br_free(r->paths[i]);
    br_free(r->paths);
    br_query_free(r->query);
    memset(r, 0, sizeof *r);
}

static bool bad(br_http_ex *x, const char *reason)
{
    br_http_resp_error(&x->resp, 400, "bad_request", reason);
    return false;
}

static bool set_doc_ids(br_http_ex *x, struct chg_req *r, const json_t *a)
{
    if (!json_is_array(a))
        return bad(x, "`doc_ids` must be a JSON array of document ids");
    size_t n = json_array_size(a);
    if (n > CHG_DOC_IDS_MAX)
        return bad(x, "too many `doc_ids`");
    if (r->doc_ids)
        return bad(x, "`doc_ids` given twice");
    r->doc_ids = br_calloc(n ? n : 1, sizeof *r->doc_ids);
    r->doc_id_lens = br_calloc(n ? n : 1, sizeof *r->doc_id_lens);
    if (!r->doc_ids || !r->doc_id_lens) {
        api_fail(x, BR_ENOMEM, NULL);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_array_get(a, i);
        if (!json_is_string(s))
            return bad(x, "`doc_ids` must be a JSON array of document ids");
        r->doc_id_lens[i] = json_string_length(s);
        r->doc_ids[i] = br_strndup(json_string_value(s), r->doc_id_lens[i]);
        if (!r->doc_ids[i]) {
            api_fail(x, BR_ENOMEM, NULL);
            return false;
        }
        r->n_doc_ids++;
    }
    return true;
}

static bool add_path(br_http_ex *x, struct chg_req *r, const char *p, size_t len)
{
    struct br_errbuf eb = {{0}};
    if (br_pattern_check(p, len, &eb) != BR_OK) {
        char msg[BR_ERRBUF_SIZE + 32];
        snprintf(msg, sizeof msg, "bad `paths` pattern: %s", eb.msg);
        return bad(x, msg);
    }
    if (r->n_paths == CHG_PATHS_MAX)
        return bad(x, "too many `paths` patterns");
    if (!r->paths && !(r->paths = br_calloc(CHG_PATHS_MAX, sizeof *r->paths))) {
        api_fail(x, BR_ENOMEM, NULL);
        return false;
    }
    if (!(r->paths[r->n_paths] = br_strndup(p, len))) {
        api_fail(x, BR_ENOMEM, NULL);
        return false;
    }
    r->n_paths++;
    return true;
}

/* paths=a/#,b/+ (repeatable): MQTT patterns separated by commas. */
static bool parse_paths_arg(br_http_ex *x, struct chg_req *r, const char *v)
{
    for (;;) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        if (!add_path(x, r, v, len))
            return false;
        if (!comma)
            return true;
        v = comma + 1;
    }
}

static bool set_query(br_http_ex *x, struct chg_req *r, const json_t *spec, bool mango)
{
    if (r->query)
        return bad(x, "give one of `query` and `selector`");
    struct br_errbuf eb = {{0}};
    br_err e;
    if (mango) {
        json_t *f = json_pack("{s:O}", "selector", spec);
        e = f ? br_query_from_mango(f, &r->query, &eb) : BR_ENOMEM;
        json_decref(f);
    } else {
        e = br_query_compile(spec, &r->query, &eb);
    }
    if (e == BR_ENOMEM) {
        api_fail(x, e, NULL);
        return false;
    }
    if (e) {
        char msg[BR_ERRBUF_SIZE + 32];
        snprintf(msg, sizeof msg, "bad %s: %s", mango ? "`selector`" : "`query`", eb.msg);
        return bad(x, msg);
    }
    return true;
}

static bool parse_body(br_http_ex *x, struct chg_req *r)
{
    if (x->req.method != BR_HTTP_POST || x->req.body.len == 0)
        return true;
    json_t *j = api_body(x, true);
    if (!j)
        return false;
    bool ok = true;
    const json_t *v;
    if (!json_is_object(j))
        ok = bad(x, "Request body must be a JSON object");
    if (ok && (v = json_object_get(j, "doc_ids")))
        ok = set_doc_ids(x, r, v);
    if (ok && (v = json_object_get(j, "selector")))
        ok = json_is_object(v) ? set_query(x, r, v, true) : bad(x, "`selector` must be an object");
    if (ok && (v = json_object_get(j, "query")))
        ok = set_query(x, r, v, false);
    if (ok && (v = json_object_get(j, "paths"))) {
        size_t i;
        const json_t *p;
        if (!json_is_array(v))
            ok = bad(x, "`paths` must be an array of patterns");
        json_array_foreach(v, i, p)
        {
            if (!ok)
                break;
            ok = json_is_string(p) ? add_path(x, r, json_string_value(p), json_string_length(p))
                                   : bad(x, "`paths` must be an array of patterns");
        }
    }
    json_decref(j);
    return ok;
}

static bool parse_feed(br_http_ex *x, struct chg_req *r)
{
    const char *feed = br_http_arg(&x->req.args, "feed");
    if (!feed || strcmp(feed, "normal") == 0)
        r->feed = CHG_NORMAL;
    else if (strcmp(feed, "longpoll") == 0)
        r->feed = CHG_LONGPOLL;
    else if (strcmp(feed, "continuous") == 0 || strcmp(feed, "live") == 0)
        r->feed = CHG_CONTINUOUS;
    else if (strcmp(feed, "eventsource") == 0)
        r->feed = CHG_EVENTSOURCE;
    else
        return bad(x, "Supported `feed` types: normal, continuous, live, longpoll, eventsource");
    struct br_errbuf eb = {{0}};
    const char *hb = br_http_arg(&x->req.args, "heartbeat");
    if (hb && strcmp(hb, "true") == 0) {
        r->heartbeat_ms = CHG_TIMEOUT_DEFAULT_MS;
    } else if (hb && strcmp(hb, "false") != 0) {
        if (br_http_arg_u64(&x->req.args, "heartbeat", 0, &r->heartbeat_ms, &eb) ||
            r->heartbeat_ms == 0)
            return bad(x, "Invalid heartbeat value: a positive number of milliseconds or true");
    }
    bool has_timeout = br_http_arg(&x->req.args, "timeout") != NULL;
    if (br_http_arg_u64(&x->req.args, "timeout", CHG_TIMEOUT_DEFAULT_MS, &r->timeout_ms, &eb))
        return bad(x, eb.msg);
    if (r->heartbeat_ms && !has_timeout)
        r->timeout_ms = CHG_NO_TIMEOUT; /* CouchDB: a heartbeat keeps the feed open */
    return true;
}

static bool parse_since(br_http_ex *x, br_db *db, struct chg_req *r)
{
    const char *since = br_http_arg(&x->req.args, "since");
    r->o.since = BR_HLC_MIN;
    if (!since || strcmp(since, "0") == 0 || strcmp(since, "") == 0)
        return true;
    if (strcmp(since, "now") == 0) {
        struct br_db_digest dg;
        br_err e = br_db_digest(db, &dg);
        if (e) {
            api_fail(x, e, NULL);
            return false;
        }
        r->o.since = dg.last;
        return true;
    }
    size_t n = strlen(since);
    if (n >= 2 && since[0] == '"' && since[n - 1] == '"') { /* a JSON string, as PouchDB may send */
        since++;
        n -= 2;
    }
    if (br_hlc_parse(since, n, &r->o.since) != BR_OK)
        return bad(x, "Malformed `since`: expected 0, now or a seq from this node");
    return true;
}

bool chg_req_parse(br_http_ex *x, br_db *db, struct chg_req *r)
{
    memset(r, 0, sizeof *r);
    struct br_errbuf eb = {{0}};
    const struct br_http_args *a = &x->req.args;
    uint64_t limit;
    if (br_http_arg_u64(a, "limit", 0, &limit, &eb) ||
        br_http_arg_bool(a, "descending", false, &r->o.descending, &eb) ||
        br_http_arg_bool(a, "include_docs", false, &r->include_docs, &eb))
        return bad(x, eb.msg);
    r->o.limit = (size_t)limit;
    const char *style = br_http_arg(a, "style");
    if (style && strcmp(style, "all_docs") != 0 && strcmp(style, "main_only") != 0)
        return bad(x, "Supported `style` values: main_only, all_docs");
    r->o.all_docs = style && strcmp(style, "all_docs") == 0;
    const char *filter = br_http_arg(a, "filter");
    if (filter && strcmp(filter, "_doc_ids") != 0 && strcmp(filter, "_selector") != 0)
        return bad(x, "Supported `filter` values: _doc_ids, _selector (and barrel's `paths` and "
                      "`query` arguments)");
    if (!parse_feed(x, r) || !parse_since(x, db, r))
        return false;
    const char *ids = br_http_arg(a, "doc_ids");
    if (ids) {
        json_t *j = json_loads(ids, 0, NULL);
        bool ok = set_doc_ids(x, r, j);
        json_decref(j);
        if (!ok)
            return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->name[i], "paths") == 0 && !parse_paths_arg(x, r, a->value[i]))
            return false;
    }
    const char *q = br_http_arg(a, "query");
    if (q) {
        json_t *j = json_loads(q, 0, NULL);
        bool ok = j ? set_query(x, r, j, false) : bad(x, "`query` is not valid JSON");
        json_decref(j);
        if (!ok)
            return false;
    }
    if (!parse_body(x, r))
        return false;
    if (filter && strcmp(filter, "_doc_ids") == 0 && !r->doc_ids)
        return bad(x, "filter=_doc_ids needs `doc_ids`");
    if (filter && strcmp(filter, "_selector") == 0 && !r->query)
        return bad(x, "filter=_selector needs a `selector` in the body");
    r->o.doc_ids = (const char *const *)r->doc_ids;
    r->o.doc_id_lens = r->doc_id_lens;
    r->o.n_doc_ids = r->n_doc_ids;
    r->o.paths = (const char *const *)r->paths;
    r->o.n_paths = r->n_paths;
    r->o.query = r->query;
    if (r->feed != CHG_NORMAL)
        r->o.descending = false; /* a live feed only moves forward */
    return true;
}

/* ---- reading ---- */

struct read_ctx {
    br_db *db;
    const struct chg_req *r;
    br_buf *out;
    size_t count;
    br_err err;
};

/* One row, {"seq":SEQ,"id":ID,"changes":[{"rev":REV},...],"deleted":true,"doc":DOC}, written
 * straight into out with the bytes json_dumps(JSON_COMPACT) gives for the same tree. */
static br_err write_row(struct read_ctx *c, const struct br_change *ch, const char *seq,
                        br_buf *out)
{
    char rev[BR_REV_TEXT_MAX];
    br_err e = br_buf_append_str(out, "{\"seq\":");
    if (!e)
        e = br_json_write_string(out, seq, strlen(seq));
    if (!e)
        e = br_buf_append_str(out, ",\"id\":");
    if (!e)
        e = br_json_write_string(out, ch->id, ch->id_len);
    if (!e)
        e = br_buf_append_str(out, ",\"changes\":[");
    for (size_t i = 0; !e && i < ch->n_leaves; i++) {
        size_t n = br_rev_format(&ch->leaves[i], rev);
        e = br_buf_append_str(out, i ? ",{\"rev\":" : "{\"rev\":");
        if (!e)
            e = br_json_write_string(out, rev, n);
        if (!e)
            e = br_buf_append_byte(out, '}');
    }
    if (!e)
        e = br_buf_append_byte(out, ']');
    if (!e && ch->deleted)
        e = br_buf_append_str(out, ",\"deleted\":true");
    if (!e && c->r->include_docs) {
        struct br_get_opts go = {.rev = &ch->rev, .include_deleted = true};
        struct br_doc *d = NULL;
        e = br_db_get(c->db, ch->id, ch->id_len, &go, &d, NULL);
        if (!e) {
            e = br_buf_append_str(out, ",\"doc\":");
            if (!e)
                e = br_json_doc_write(d, out, NULL);
        } else if (e == BR_ENOTFOUND) {
            e = br_buf_append_str(out, ",\"doc\":null");
        }
        br_doc_free(d);
    }
    return e ? e : br_buf_append_byte(out, '}');
}

static int on_change(void *arg, const struct br_change *ch)
{
    struct read_ctx *c = arg;
    br_buf *o = c->out;
    size_t at = o->len;
    br_err e = BR_OK;
    char seq[BR_HLC_TEXT_MAX];
    br_hlc_format(ch->seq, seq);
    switch (c->r->feed) {
    case CHG_NORMAL:
    case CHG_LONGPOLL:
        if (c->count)
            e = br_buf_append_str(o, ",\n");
        if (!e)
            e = write_row(c, ch, seq, o);
        break;
    case CHG_CONTINUOUS:
        e = write_row(c, ch, seq, o);
        if (!e)
            e = br_buf_append_byte(o, '\n');
        break;
    case CHG_EVENTSOURCE:
        e = br_buf_append_str(o, "data: ");
        if (!e)
            e = write_row(c, ch, seq, o);
        if (!e)
            e = br_buf_append_str(o, "\nid: ");
        if (!e)
            e = br_buf_append_str(o, seq);
        if (!e)
            e = br_buf_append_str(o, "\n\n");
        break;
    }
    if (e) {
        o->len = at;
        c->err = e;
        return 1;
    }
    c->count++;
    return 0;
}

br_err chg_read(br_db *db, const struct chg_req *r, struct br_hlc since, size_t limit, br_buf *out,
                struct br_hlc *last, size_t *count)
{
    struct read_ctx c = {db, r, out, 0, BR_OK};
    struct br_changes_opts o = r->o;
    o.since = since;
    o.limit = limit;
    struct br_hlc l;
    br_err e = br_db_changes(db, &o, on_change, &c, &l);
    if (!e)
        e = c.err;
    if (e)
        return e;
    *last = l;
    *count = c.count;
    return BR_OK;
}

br_err chg_results_tail(br_buf *out, bool any_rows, struct br_hlc last)
{
    char seq[BR_HLC_TEXT_MAX], tail[BR_HLC_TEXT_MAX + 64];
    br_hlc_format(last, seq);
    snprintf(tail, sizeof tail, "%s],\n\"last_seq\":\"%s\",\"pending\":0}\n", any_rows ? "\n" : "",
             seq);
    return br_buf_append_str(out, tail);
}

br_err chg_wrap_results(br_buf *out, const br_buf *rows, struct br_hlc last)
{
    br_err e = br_buf_append_str(out, CHG_RESULTS_HEAD);
    if (!e && rows->len)
        e = br_buf_append(out, rows->data, rows->len);
    if (!e)
        e = chg_results_tail(out, rows->len > 0, last);
    return e;
}

/* ---- the handler ---- */

void api_changes(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    if (!api_open_db(api, x, &db))
        return;
    struct chg_req r;
    if (!chg_req_parse(x, db, &r)) {
        chg_req_fini(&r);
        br_db_close(db);
        return;
    }
    if (r.feed != CHG_NORMAL) {
        struct chg_stream *cs = br_malloc(sizeof *cs);
        if (!cs) {
            api_fail(x, BR_ENOMEM, NULL);
            chg_req_fini(&r);
            br_db_close(db);
            return;
        }
        cs->kind = API_CONT_FEED;
        cs->req = r;
        cs->db = db;
        x->user = cs; /* status 0: the node starts the feed on the loop (feed.h) */
        return;
    }
    /* the rows are written straight into the answer, between its head and its tail */
    br_buf *out = &x->resp.body;
    br_buf_reset(out);
    struct br_hlc last;
    size_t count;
    br_err e = br_buf_append_str(out, CHG_RESULTS_HEAD);
    size_t rows_at = out->len;
    if (!e)
        e = chg_read(db, &r, r.o.since, r.o.limit, out, &last, &count);
    if (!e)
        e = chg_results_tail(out, out->len > rows_at, last);
    if (e) {
        br_buf_reset(out);
        api_fail(x, e, NULL);
    } else {
        x->resp.status = 200;
        x->resp.content_type = NULL;
    }
    chg_req_fini(&r);
    br_db_close(db);
}
