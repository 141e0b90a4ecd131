/* ep_http.c — the endpoint over a CouchDB-compatible HTTP server (ep_http.h), with libcurl.
 *
 * One easy handle driven through a multi handle: the multi handle keeps the connection alive
 * between calls and lets `interrupt` (any thread) wake a call in flight with curl_multi_wakeup,
 * so a cancelled replication never waits for a longpoll to end. Calls map onto CouchDB's
 * replication API: GET /db, _changes (style=all_docs; include_docs when a filter runs here),
 * _revs_diff, _bulk_get (revs, latest; GET ?open_revs= when the server lacks it), _bulk_docs
 * with new_edits=false, _local/{id}. Attachments travel inline as base64; when the replicator
 * asks for content, attachments it already holds (by digest) are asked with atts_since where the
 * revision's stubs were seen first, and dropped from the answer otherwise. */
#include "barrel/ep_http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/json.h"
#include "barrel/log.h"
#include "barrel/paths.h"
#include "barrel/query.h"

#define TAG "sync"
#define RESP_MAX (512u << 20)
#define DEFAULT_TIMEOUT_MS 120000

struct http {
    CURL *easy;
    CURLM *multi;
    char base[BR_ENDPOINT_NAME_MAX]; /* http://host:port/db, no credentials, no trailing '/' */
    char *userpwd;                   /* "user:pass" or NULL */
    uint64_t timeout_ms;
    atomic_bool interrupted;
    bool no_bulk_get; /* the server answered _bulk_get with an error: use open_revs */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

bool br_endpoint_is_http_url(const char *s)
{
    return s && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0);
}

/* ---- one request ---- */

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    br_buf *b = arg;
    return br_buf_append(b, p, size * n) ? 0 : size * n;
}

/* method path(+query, appended to the base) [JSON body] -> status and body. BR_ECLOSED when
 * interrupted, BR_ETIMEDOUT, BR_EIO for transport failures. */
static br_err request(struct http *h, const char *method, const char *path, const char *body,
                      uint64_t timeout_ms, long *status, br_buf *resp, struct br_errbuf *eb)
{
    if (atomic_load(&h->interrupted))
        return br_fail(eb, BR_ECLOSED, "interrupted");
    br_buf url;
    br_buf_init(&url, 0);
    if (br_buf_printf(&url, "%s%s", h->base, path) || br_buf_append_byte(&url, 0)) {
        br_buf_fini(&url);
        return BR_ENOMEM;
    }
    CURL *c = h->easy;
    curl_easy_reset(c);
    struct curl_slist *hdr = curl_slist_append(NULL, "Accept: application/json");
    if (body)
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, (const char *)url.data);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    if (h->userpwd) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, h->userpwd);
    }
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    br_buf_reset(resp);
    br_err e = BR_OK;
    CURLcode res = CURLE_OK;
    if (curl_multi_add_handle(h->multi, c) != CURLM_OK) {
        e = br_fail(eb, BR_EIO, "curl_multi_add_handle failed");
        goto out;
    }
    int running = 1;
    bool aborted = false;
    while (running) {
        if (curl_multi_perform(h->multi, &running) != CURLM_OK) {
            e = br_fail(eb, BR_EIO, "curl_multi_perform failed");
            break;
        }
        if (!running)
            break;
        if (atomic_load(&h->interrupted)) {
            aborted = true;
            break;
        }
        if (curl_multi_poll(h->multi, NULL, 0, 1000, NULL) != CURLM_OK) {
            e = br_fail(eb, BR_EIO, "curl_multi_poll failed");
            break;
        }
    }
    if (!e && !aborted) {
        int left;
        CURLMsg *m;
        res = CURLE_RECV_ERROR;
        while ((m = curl_multi_info_read(h->multi, &left)))
            if (m->msg == CURLMSG_DONE && m->easy_handle == c)
                res = m->data.result;
    }
    curl_multi_remove_handle(h->multi, c);
    if (e)
        goto out;
    if (aborted) {
        e = br_fail(eb, BR_ECLOSED, "interrupted");
        goto out;
    }
    if (res == CURLE_OPERATION_TIMEDOUT) {
        e = br_fail(eb, BR_ETIMEDOUT, "%s %s: timed out", method, (const char *)url.data);
        goto out;
    }
    if (res != CURLE_OK) {
        e = br_fail(eb, BR_EIO, "%s %s%s: %s", method, h->base, path, curl_easy_strerror(res));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
out:
    curl_slist_free_all(hdr);
    br_buf_fini(&url);
    return e;
}

/* A status that is not 2xx as an error, with the server's reason. */
static br_err status_err(struct http *h, const char *what, long st, const br_buf *resp,
                         struct br_errbuf *eb)
{
    br_err e = st == 404   ? BR_ENOTFOUND
               : st == 409 ? BR_ECONFLICT
               : st == 413 ? BR_ETOOBIG
               : st >= 500 ? BR_EIO
                           : BR_EINVAL;
    const char *kind = st == 401 || st == 403 ? "unauthorized" : "error";
    return br_fail(eb, e, "%s %s: %s (HTTP %ld): %.*s", what, h->base, kind, st,
                   (int)(resp->len > 160 ? 160 : resp->len), resp->data ? (char *)resp->data : "");
}

/* Request and parse a JSON answer; statuses other than 2xx are errors. */
static br_err request_json(struct http *h, const char *method, const char *path, const char *body,
                           uint64_t timeout_ms, json_t **out, struct br_errbuf *eb)
{
    br_buf resp;
    long st = 0;
    br_buf_init(&resp, RESP_MAX);
    br_err e = request(h, method, path, body, timeout_ms, &st, &resp, eb);
    if (!e && (st < 200 || st > 299))
        e = status_err(h, method, st, &resp, eb);
    if (!e) {
        json_error_t je;
        *out = json_loadb((const char *)resp.data, resp.len, JSON_DECODE_ANY, &je);
        if (!*out)
            e = br_fail(eb, BR_EPROTO, "%s %s%s: bad JSON: %s", method, h->base, path, je.text);
    }
    br_buf_fini(&resp);
    return e;
}

static char *escape(struct http *h, const char *s, size_t n)
{
    return curl_easy_escape(h->easy, s, (int)n);
}

/* ---- conversions ---- */

static const uint8_t EMPTY_MAP[1] = {0xa0};

static br_err json_body_cbor(json_t *obj, br_wire_arena *a, const uint8_t **p, size_t *n,
                             struct br_errbuf *eb)
{
    br_buf b;
    br_buf_init(&b, 0);
    br_err e = br_json_to_cbor(obj, &b, eb);
    if (!e) {
        *p = b.len ? br_wire_memdup(a, b.data, b.len) : EMPTY_MAP;
        *n = b.len ? b.len : 1;
        if (!*p)
            e = BR_ENOMEM;
    }
    br_buf_fini(&b);
    return e;
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* One attachment of a CouchDB document: a stub, or inline base64 data. */
static br_err parse_att(const char *name, json_t *v, br_wire_arena *a, struct br_wire_att *out,
                        struct br_errbuf *eb)
{
    memset(out, 0, sizeof *out);
    const char *ct = jstr(v, "content_type"), *dg = jstr(v, "digest");
    const char *data = jstr(v, "data");
    out->name = br_wire_strndup(a, name, strlen(name));
    out->content_type = br_wire_strndup(a, ct ? ct : "application/octet-stream",
                                        strlen(ct ? ct : "application/octet-stream"));
    out->digest = dg ? br_wire_strndup(a, dg, strlen(dg)) : NULL;
    json_int_t rp = json_integer_value(json_object_get(v, "revpos"));
    json_int_t len = json_integer_value(json_object_get(v, "length"));
    out->revpos = rp > 0 ? (uint64_t)rp : 0;
    out->length = len > 0 ? (uint64_t)len : 0;
    if (!out->name || !out->content_type || (dg && !out->digest))
        return BR_ENOMEM;
    if (!dg)
        return br_fail(eb, BR_EPROTO, "attachment %s without a digest", name);
    if (data) {
        size_t dl = strlen(data), bin_len = 0;
        uint8_t *bin = br_wire_alloc(a, dl / 4 * 3 + 3);
        if (!bin)
            return BR_ENOMEM;
        if (sodium_base642bin(bin, dl / 4 * 3 + 3, data, dl, " \r\n", &bin_len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0)
            return br_fail(eb, BR_EPROTO, "attachment %s: bad base64", name);
        out->has_data = true;
        out->data = bin;
        out->data_len = bin_len;
        out->length = bin_len;
    }
    return BR_OK;
}

static bool in_list(const char *s, const char *const *v, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(s, v[i]) == 0)
            return true;
    return false;
}

/* A CouchDB document (with _revisions, perhaps _attachments) as a revision with its history.
 * Attachments whose digest is in `have` lose their data (the asker holds them). */
static br_err doc_to_revdoc(json_t *doc, const char *const *have, size_t n_have, br_wire_arena *a,
                            struct br_wire_revdoc *out, struct br_errbuf *eb)
{
    json_t *atts = json_incref(json_object_get(doc, "_attachments"));
    json_object_del(doc, "_attachments");
    struct br_json_doc d;
    br_err e = br_json_doc_parse(doc, NULL, &d, eb);
    if (e) {
        json_decref(atts);
        return e;
    }
    memset(out, 0, sizeof *out);
    out->id = br_wire_strndup(a, d.put.id, d.put.id_len);
    out->id_len = d.put.id_len;
    out->rev = d.rev;
    out->deleted = d.put.deleted;
    out->body = d.body.len ? br_wire_memdup(a, d.body.data, d.body.len) : EMPTY_MAP;
    out->body_len = d.body.len ? d.body.len : 1;
    out->history = br_wire_memdup(a, d.history, d.n_history * sizeof *d.history);
    out->n_history = d.n_history;
    br_json_doc_fini(&d);
    if (!out->id || !out->body || !out->history) {
        json_decref(atts);
        return BR_ENOMEM;
    }
    if (json_is_object(atts) && json_object_size(atts)) {
        out->atts = br_wire_alloc(a, json_object_size(atts) * sizeof *out->atts);
        if (!out->atts)
            e = BR_ENOMEM;
        const char *k;
        json_t *v;
        json_object_foreach(atts, k, v)
        {
            if (e)
                break;
            struct br_wire_att *t = &out->atts[out->n_atts];
            e = parse_att(k, v, a, t, eb);
            if (!e && t->has_data && in_list(t->digest, have, n_have)) {
                t->has_data = false;
                t->data = NULL;
                t->data_len = 0;
            }
            out->n_atts++;
        }
    }
    json_decref(atts);
    return e;
}

static json_t *rev_json(const struct br_rev *r)
{
    char t[BR_REV_TEXT_MAX];
    br_rev_format(r, t);
    return json_string(t);
}

/* A revision as the CouchDB document _bulk_docs?new_edits=false takes. */
static br_err revdoc_to_json(const struct br_wire_revdoc *d, json_t **out, struct br_errbuf *eb)
{
    json_t *o = NULL;
    br_err e = br_json_from_cbor(d->body, d->body_len, &o, eb);
    if (e)
        return e;
    if (!json_is_object(o)) {
        json_decref(o);
        return br_fail(eb, BR_EPROTO, "a body that is not an object");
    }
    json_object_set_new(o, "_id", json_stringn(d->id, d->id_len));
    json_object_set_new(o, "_rev", rev_json(&d->rev));
    if (d->deleted)
        json_object_set_new(o, "_deleted", json_true());
    json_t *ids = json_array();
    for (size_t i = 0; i < d->n_history; i++)
        json_array_append_new(ids, json_string(d->history[i].hash));
    json_t *revs = json_object();
    json_object_set_new(revs, "start", json_integer((json_int_t)d->rev.gen));
    json_object_set_new(revs, "ids", ids);
    json_object_set_new(o, "_revisions", revs);
    if (d->n_atts) {
        json_t *atts = json_object();
        for (size_t i = 0; i < d->n_atts; i++) {
            const struct br_wire_att *t = &d->atts[i];
            json_t *a = json_object();
            json_object_set_new(a, "content_type", json_string(t->content_type));
            json_object_set_new(a, "revpos", json_integer((json_int_t)t->revpos));
            json_object_set_new(a, "digest", json_string(t->digest));
            json_object_set_new(a, "length", json_integer((json_int_t)t->length));
            if (t->has_data) {
                size_t bl = sodium_base64_encoded_len(t->data_len, sodium_base64_VARIANT_ORIGINAL);
                char *b64 = br_malloc(bl);
                if (!b64) {
                    json_decref(a);
                    json_decref(atts);
                    json_decref(o);
                    return BR_ENOMEM;
                }
                sodium_bin2base64(b64, bl, t->data, t->data_len, sodium_base64_VARIANT_ORIGINAL);
                json_object_set_new(a, "data", json_string(b64));
                br_free(b64);
            } else {
                json_object_set_new(a, "stub", json_true());
            }
            json_object_set_new(atts, t->name, a);
        }
        json_object_set_new(o, "_attachments", atts);
    }
    *out = o;
    return BR_OK;
}

/* ---- the operations ---- */

static br_err h_digest(void *ctx, struct br_db_digest *out, struct br_errbuf *eb)
{
    struct http *h = ctx;
    json_t *j = NULL;
    br_err e = request_json(h, "GET", "", NULL, h->timeout_ms, &j, eb);
    if (e)
        return e;
    memset(out, 0, sizeof *out);
    out->last = BR_HLC_MIN;
    json_int_t n = json_integer_value(json_object_get(j, "doc_count"));
    out->doc_count = n > 0 ? (uint64_t)n : 0;
    json_decref(j);
    return BR_OK;
}

static br_err h_changes_hlc(void *ctx, struct br_hlc since, size_t limit,
                            const struct br_wire_filter *f, br_endpoint_change_cb cb, void *arg,
                            struct br_hlc *last, bool *more, struct br_errbuf *eb)
{
    (void)ctx, (void)since, (void)limit, (void)f, (void)cb, (void)arg, (void)last, (void)more;
    return br_fail(eb, BR_EINVAL, "a CouchDB source has opaque seqs (changes_opaque)");
}

static br_err h_wait_hlc(void *ctx, struct br_hlc since, uint64_t timeout_ms)
{
    (void)ctx, (void)since, (void)timeout_ms;
    return BR_EINVAL;
}

/* The `since` query value for a seq's JSON text: a string seq unquoted, a number as is. */
static char *since_param(struct http *h, const char *since)
{
    if (!since || !*since)
        return escape(h, "0", 1);
    json_t *j = json_loads(since, JSON_DECODE_ANY, NULL);
    char *r = NULL;
    if (json_is_string(j))
        r = escape(h, json_string_value(j), json_string_length(j));
    else
        r = escape(h, since, strlen(since));
    json_decref(j);
    return r;
}

struct filt {
    const struct br_wire_filter *f;
    br_query *q;
};

/* Whether a document (JSON from include_docs) passes the filter: any path pattern matches one
 * of its topics (when patterns are given) and the query matches (when given). */
static br_err filter_doc(const struct filt *fl, json_t *doc, bool *pass, struct br_errbuf *eb)
{
    *pass = false;
    if (!json_is_object(doc))
        return BR_OK;
    json_t *copy = json_deep_copy(doc);
    json_object_del(copy, "_attachments");
    struct br_json_doc d;
    br_err e = br_json_doc_parse(copy, NULL, &d, eb);
    json_decref(copy);
    if (e)
        return e;
    bool ok = true;
    if (fl->f->n_paths) {
        char **topics = NULL;
        size_t nt = 0;
        e = br_paths_topics(d.body.len ? d.body.data : EMPTY_MAP, d.body.len ? d.body.len : 1,
                            &topics, &nt);
        ok = false;
        for (size_t i = 0; !e && !ok && i < nt; i++)
            for (size_t k = 0; !ok && k < fl->f->n_paths; k++)
                ok = br_pattern_match(fl->f->paths[k], strlen(fl->f->paths[k]), topics[i],
                                      strlen(topics[i]));
        br_free(topics); /* one block */
    }
    if (!e && ok && fl->q)
        ok = br_query_match(fl->q, d.body.len ? d.body.data : EMPTY_MAP,
                            d.body.len ? d.body.len : 1);
    br_json_doc_fini(&d);
    *pass = ok;
    return e;
}

static br_err h_changes(void *ctx, const char *since, size_t limit, const struct br_wire_filter *f,
                        br_endpoint_change_cb cb, void *arg, br_wire_arena *a, const char **last,
                        bool *more, struct br_errbuf *eb)
{
    struct http *h = ctx;
    struct filt fl = {f && (f->n_paths || f->query) ? f : NULL, NULL};
    br_err e = BR_OK;
    if (fl.f && f->query) {
        json_t *qj = NULL;
        e = br_json_from_cbor(f->query, f->query_len, &qj, eb);
        if (!e)
            e = br_query_compile(qj, &fl.q, eb);
        json_decref(qj);
        if (e)
            return e;
    }
    char *sp = since_param(h, since);
    char path[256];
    snprintf(path, sizeof path, "/_changes?style=all_docs&since=%s&limit=%zu%s", sp ? sp : "0",
             limit, fl.f ? "&include_docs=true" : "");
    curl_free(sp);
    json_t *j = NULL;
    e = request_json(h, "GET", path, NULL, h->timeout_ms, &j, eb);
    if (e) {
        br_query_free(fl.q);
        return e;
    }
    json_t *results = json_object_get(j, "results"), *ls = json_object_get(j, "last_seq");
    if (!json_is_array(results) || !ls) {
        e = br_fail(eb, BR_EPROTO, "_changes of %s: no results or last_seq", h->base);
        goto done;
    }
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r)
    {
        const char *id = jstr(r, "id");
        json_t *chs = json_object_get(r, "changes");
        if (!id || !json_is_array(chs) || !json_array_size(chs)) {
            e = br_fail(eb, BR_EPROTO, "_changes of %s: a malformed row", h->base);
            goto done;
        }
        if (fl.f) {
            bool pass = false;
            e = filter_doc(&fl, json_object_get(r, "doc"), &pass, eb);
            if (e)
                goto done;
            if (!pass)
                continue;
        }
        struct br_wire_change c = {.id = id, .id_len = strlen(id), .seq = BR_HLC_MIN};
        c.revs = br_wire_alloc(a, json_array_size(chs) * sizeof *c.revs);
        if (!c.revs) {
            e = BR_ENOMEM;
            goto done;
        }
        size_t k;
        json_t *ch;
        json_array_foreach(chs, k, ch)
        {
            const char *rv = jstr(ch, "rev");
            if (!rv || br_rev_parse(rv, strlen(rv), &c.revs[c.n_revs])) {
                e = br_fail(eb, BR_EPROTO, "_changes of %s: a malformed rev", h->base);
                goto done;
            }
            c.n_revs++;
        }
        c.deleted = json_is_true(json_object_get(r, "deleted"));
        if (cb(arg, &c))
            break;
    }
    char *lt = json_dumps(ls, JSON_ENCODE_ANY | JSON_COMPACT);
    *last = lt ? br_wire_strndup(a, lt, strlen(lt)) : NULL;
    free(lt);
    if (!*last) {
        e = BR_ENOMEM;
        goto done;
    }
    json_t *pending = json_object_get(j, "pending");
    *more = json_is_integer(pending) ? json_integer_value(pending) > 0
                                     : json_array_size(results) >= limit;
done:
    json_decref(j);
    br_query_free(fl.q);
    return e;
}

static br_err h_wait(void *ctx, const char *since, uint64_t timeout_ms)
{
    struct http *h = ctx;
    struct br_errbuf eb = {0};
    char *sp = since_param(h, since);
    char path[256];
    snprintf(path, sizeof path, "/_changes?feed=longpoll&since=%s&limit=1&timeout=%llu",
             sp ? sp : "0", (unsigned long long)timeout_ms);
    curl_free(sp);
    json_t *j = NULL;
    br_err e = request_json(h, "GET", path, NULL, timeout_ms + 30000, &j, &eb);
    if (e) {
        if (e != BR_ECLOSED)
            br_log(BR_LOG_WARN, TAG, "event=http_wait_failed url=%s reason=\"%s\"", h->base,
                   eb.msg);
        return e;
    }
    bool any = json_array_size(json_object_get(j, "results")) > 0;
    json_decref(j);
    return any ? BR_OK : BR_ETIMEDOUT;
}

static br_err h_revsdiff(void *ctx, const struct br_wire_docrevs *in, size_t n, br_wire_arena *a,
                         struct br_wire_diff **out, size_t *n_out, struct br_errbuf *eb)
{
    struct http *h = ctx;
    json_t *req = json_object();
    for (size_t i = 0; i < n; i++) {
        char id[BR_DOCID_MAX + 1];
        snprintf(id, sizeof id, "%.*s", (int)in[i].id_len, in[i].id);
        json_t *l = json_object_get(req, id);
        if (!l) {
            l = json_array();
            json_object_set_new(req, id, l);
        }
        for (size_t k = 0; k < in[i].n_revs; k++)
            json_array_append_new(l, rev_json(&in[i].revs[k]));
    }
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!body)
        return BR_ENOMEM;
    json_t *j = NULL;
    br_err e = request_json(h, "POST", "/_revs_diff", body, h->timeout_ms, &j, eb);
    free(body);
    if (e)
        return e;
    struct br_wire_diff *v = br_wire_alloc(a, (n ? n : 1) * sizeof *v);
    size_t m = 0;
    if (!v) {
        e = BR_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char id[BR_DOCID_MAX + 1];
        snprintf(id, sizeof id, "%.*s", (int)in[i].id_len, in[i].id);
        json_t *r = json_object_get(j, id);
        if (!r)
            continue; /* nothing missing, or the same id twice in a batch: answered once */
        json_incref(r);
        json_object_del(j, id);
        br_err e2 = BR_OK;
        json_t *miss = json_object_get(r, "missing"),
               *anc = json_object_get(r, "possible_ancestors");
        if (!json_array_size(miss)) {
            json_decref(r);
            continue;
        }
        struct br_wire_diff *d = &v[m];
        d->id = in[i].id;
        d->id_len = in[i].id_len;
        d->missing = br_wire_alloc(a, json_array_size(miss) * sizeof *d->missing);
        d->ancestors = br_wire_alloc(a, (json_array_size(anc) + 1) * sizeof *d->ancestors);
        size_t k;
        json_t *x;
        if (!d->missing || !d->ancestors)
            e2 = BR_ENOMEM;
        json_array_foreach(miss, k, x)
        {
            const char *s = json_string_value(x);
            if (e2)
                break;
            if (!s || br_rev_parse(s, strlen(s), &d->missing[d->n_missing]))
                e2 = br_fail(eb, BR_EPROTO, "_revs_diff of %s: a malformed rev", h->base);
            else
                d->n_missing++;
        }
        json_array_foreach(anc, k, x)
        {
            const char *s = json_string_value(x);
            if (!e2 && s && !br_rev_parse(s, strlen(s), &d->ancestors[d->n_ancestors]))
                d->n_ancestors++;
        }
        json_decref(r);
        if (e2) {
            e = e2;
            goto done;
        }
        m++;
    }
    *out = v;
    *n_out = m;
done:
    json_decref(j);
    return e;
}

/* One (id, rev) by GET ?open_revs (servers without _bulk_get). */
static br_err get_one(struct http *h, const struct br_wire_docrevs *d, const struct br_rev *rev,
                      bool data, const char *const *have, size_t n_have, br_wire_arena *a,
                      struct br_wire_revdoc *out, struct br_errbuf *eb)
{
    char *id = escape(h, d->id, d->id_len);
    char rv[BR_REV_TEXT_MAX], revs_q[BR_REV_TEXT_MAX + 8];
    br_rev_format(rev, rv);
    snprintf(revs_q, sizeof revs_q, "[\"%s\"]", rv);
    char *ors = escape(h, revs_q, strlen(revs_q));
    br_buf path;
    br_buf_init(&path, 0);
    br_err e = (!id || !ors) ? BR_ENOMEM
                             : br_buf_printf(&path, "/%s?revs=true&latest=true&open_revs=%s%s", id,
                                             ors, data ? "&attachments=true" : "");
    curl_free(id);
    curl_free(ors);
    if (!e)
        e = br_buf_append_byte(&path, 0);
    json_t *j = NULL;
    if (!e)
        e = request_json(h, "GET", (const char *)path.data, NULL, h->timeout_ms, &j, eb);
    br_buf_fini(&path);
    if (e == BR_ENOTFOUND)
        e = BR_OK; /* the whole document is gone: the revision is missing */
    if (e)
        return e;
    json_t *ok = json_object_get(json_array_get(j, 0), "ok");
    if (json_is_object(ok)) {
        e = doc_to_revdoc(ok, have, n_have, a, out, eb);
    } else {
        memset(out, 0, sizeof *out);
        out->id = d->id;
        out->id_len = d->id_len;
        out->rev = *rev;
        out->missing = true;
    }
    json_decref(j);
    return e;
}

static br_err h_get_revs(void *ctx, const struct br_wire_docrevs *in, size_t n,
                         const char *const *have, size_t n_have, bool data, br_wire_arena *a,
                         struct br_wire_revdoc **out, size_t *n_out, struct br_errbuf *eb)
{
    struct http *h = ctx;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += in[i].n_revs;
    struct br_wire_revdoc *v = br_wire_alloc(a, (total ? total : 1) * sizeof *v);
    if (!v)
        return BR_ENOMEM;
    br_err e = BR_OK;
    if (!h->no_bulk_get) {
        json_t *docs = json_array();
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < in[i].n_revs; k++) {
                json_t *d = json_object();
                json_object_set_new(d, "id", json_stringn(in[i].id, in[i].id_len));
                json_object_set_new(d, "rev", rev_json(&in[i].revs[k]));
                json_array_append_new(docs, d);
            }
        json_t *req = json_object();
        json_object_set_new(req, "docs", docs);
        char *body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        if (!body)
            return BR_ENOMEM;
        json_t *j = NULL;
        e = request_json(h, "POST",
                         data ? "/_bulk_get?revs=true&latest=true&attachments=true"
                              : "/_bulk_get?revs=true&latest=true",
                         body, h->timeout_ms, &j, eb);
        free(body);
        json_t *results = json_object_get(j, "results");
        if (!e && json_array_size(results) == total) {
            size_t m = 0;
            for (size_t i = 0; !e && i < n; i++)
                for (size_t k = 0; !e && k < in[i].n_revs; k++, m++) {
                    json_t *r = json_array_get(results, m);
                    json_t *ok =
                        json_object_get(json_array_get(json_object_get(r, "docs"), 0), "ok");
                    if (json_is_object(ok)) {
                        e = doc_to_revdoc(ok, have, n_have, a, &v[m], eb);
                    } else {
                        v[m].id = in[i].id;
                        v[m].id_len = in[i].id_len;
                        v[m].rev = in[i].revs[k];
                        v[m].missing = true;
                    }
                }
            json_decref(j);
            if (!e) {
                *out = v;
                *n_out = total;
            }
            return e;
        }
        json_decref(j);
        if (e == BR_ECLOSED || e == BR_ETIMEDOUT || e == BR_ENOMEM)
            return e;
        br_log(BR_LOG_INFO, TAG, "event=no_bulk_get url=%s reason=\"%s\"", h->base,
               e ? eb->msg : "unexpected answer");
        h->no_bulk_get = true;
        e = BR_OK;
    }
    size_t m = 0;
    for (size_t i = 0; !e && i < n; i++)
        for (size_t k = 0; !e && k < in[i].n_revs; k++)
            e = get_one(h, &in[i], &in[i].revs[k], data, have, n_have, a, &v[m++], eb);
    if (e)
        return e;
    *out = v;
    *n_out = total;
    return BR_OK;
}

static br_err h_atts_missing(void *ctx, const struct br_wire_att *atts, size_t n, bool *missing,
                             struct br_errbuf *eb)
{
    (void)ctx, (void)atts, (void)eb;
    for (size_t i = 0; i < n; i++)
        missing[i] = true; /* no cheap way to ask a CouchDB server by digest: send them */
    return BR_OK;
}

static br_err h_put_revs(void *ctx, const struct br_wire_revdoc *docs, size_t n, br_err *results,
                         struct br_errbuf *eb)
{
    struct http *h = ctx;
    json_t *arr = json_array();
    br_err e = BR_OK;
    for (size_t i = 0; !e && i < n; i++) {
        json_t *d = NULL;
        results[i] = BR_OK;
        e = revdoc_to_json(&docs[i], &d, eb);
        if (!e)
            json_array_append_new(arr, d);
    }
    json_t *req = json_object();
    json_object_set_new(req, "new_edits", json_false());
    json_object_set_new(req, "docs", arr);
    char *body = e ? NULL : json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (e)
        return e;
    if (!body)
        return BR_ENOMEM;
    json_t *j = NULL;
    e = request_json(h, "POST", "/_bulk_docs", body, h->timeout_ms, &j, eb);
    free(body);
    if (e)
        return e;
    size_t k;
    json_t *r;
    json_array_foreach(j, k, r)
    {
        const char *err = jstr(r, "error"), *id = jstr(r, "id"), *rv = jstr(r, "rev");
        if (!err || !id)
            continue;
        for (size_t i = 0; i < n; i++) {
            char t[BR_REV_TEXT_MAX];
            br_rev_format(&docs[i].rev, t);
            if (docs[i].id_len == strlen(id) && memcmp(docs[i].id, id, docs[i].id_len) == 0 &&
                (!rv || strcmp(rv, t) == 0)) {
                results[i] = strcmp(err, "conflict") == 0 ? BR_ECONFLICT : BR_EINVAL;
                br_log(BR_LOG_WARN, TAG,
                       "event=put_rev_failed url=%s id=%.64s err=%s reason=\"%.100s\"", h->base, id,
                       err, jstr(r, "reason") ? jstr(r, "reason") : "");
            }
        }
    }
    json_decref(j);
    return BR_OK;
}

static br_err local_path(struct http *h, const char *id, char **out)
{
    char *eid = escape(h, id, strlen(id));
    if (!eid)
        return BR_ENOMEM;
    size_t n = strlen(eid) + 16;
    *out = br_malloc(n);
    if (*out)
        snprintf(*out, n, "/_local/%s", eid);
    curl_free(eid);
    return *out ? BR_OK : BR_ENOMEM;
}

static br_err h_local_get(void *ctx, const char *id, br_wire_arena *a, const uint8_t **body,
                          size_t *len, struct br_rev *rev, struct br_errbuf *eb)
{
    struct http *h = ctx;
    char *path = NULL;
    br_err e = local_path(h, id, &path);
    if (e)
        return e;
    json_t *j = NULL;
    e = request_json(h, "GET", path, NULL, h->timeout_ms, &j, eb);
    br_free(path);
    if (e)
        return e;
    const char *rv = jstr(j, "_rev");
    if (!json_is_object(j) || !rv || br_rev_parse_local(rv, strlen(rv), rev)) {
        json_decref(j);
        return br_fail(eb, BR_EPROTO, "local doc %s on %s: no valid _rev", id, h->base);
    }
    json_object_del(j, "_id");
    json_object_del(j, "_rev");
    e = json_body_cbor(j, a, body, len, eb);
    json_decref(j);
    return e;
}

static br_err h_local_put(void *ctx, const char *id, const struct br_rev *rev, const uint8_t *body,
                          size_t len, struct br_rev *new_rev, struct br_errbuf *eb)
{
    struct http *h = ctx;
    json_t *o = NULL;
    br_err e = br_json_from_cbor(body, len, &o, eb);
    if (e)
        return e;
    if (!json_is_object(o)) {
        json_decref(o);
        return br_fail(eb, BR_EINVAL, "a local doc body must be a map");
    }
    if (rev)
        json_object_set_new(o, "_rev", rev_json(rev));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char *path = NULL;
    e = text ? local_path(h, id, &path) : BR_ENOMEM;
    json_t *j = NULL;
    if (!e)
        e = request_json(h, "PUT", path, text, h->timeout_ms, &j, eb);
    free(text);
    br_free(path);
    if (e)
        return e;
    const char *rv = jstr(j, "rev");
    if (!rv || br_rev_parse_local(rv, strlen(rv), new_rev))
        e = br_fail(eb, BR_EPROTO, "local doc %s on %s: no valid rev in the answer", id, h->base);
    json_decref(j);
    return e;
}

static br_err h_hlc_merge(void *ctx, struct br_hlc remote)
{
    (void)ctx, (void)remote;
    return BR_OK; /* a CouchDB server has no HLC */
}

static void h_interrupt(void *ctx)
{
    struct http *h = ctx;
    atomic_store(&h->interrupted, true);
    curl_multi_wakeup(h->multi);
}

static void h_free(void *ctx)
{
    struct http *h = ctx;
    if (!h)
        return;
    if (h->easy)
        curl_easy_cleanup(h->easy);
    if (h->multi)
        curl_multi_cleanup(h->multi);
    if (h->userpwd) {
        sodium_memzero(h->userpwd, strlen(h->userpwd));
        br_free(h->userpwd);
    }
    br_free(h);
}

static const struct br_endpoint_ops HTTP_OPS = {
    .digest = h_digest,
    .changes = h_changes_hlc,
    .revsdiff = h_revsdiff,
    .get_revs = h_get_revs,
    .atts_missing = h_atts_missing,
    .put_revs = h_put_revs,
    .local_get = h_local_get,
    .local_put = h_local_put,
    .hlc_merge = h_hlc_merge,
    .wait = h_wait_hlc,
    .interrupt = h_interrupt,
    .free = h_free,
    .changes_opaque = h_changes,
    .wait_opaque = h_wait,
};

/* Split the URL into the base (no credentials, no trailing '/') and "user:pass". */
static br_err parse_url(struct http *h, const char *url, struct br_errbuf *eb)
{
    if (!br_endpoint_is_http_url(url))
        return br_fail(eb, BR_EINVAL, "not an http(s) URL: %.100s", url);
    CURLU *u = curl_url();
    if (!u)
        return BR_ENOMEM;
    br_err e = BR_OK;
    char *user = NULL, *pass = NULL, *path = NULL, *clean = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        e = br_fail(eb, BR_EINVAL, "malformed URL: %.100s", url);
        goto out;
    }
    curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE);
    curl_url_get(u, CURLUPART_PASSWORD, &pass, CURLU_URLDECODE);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    if (!path || strlen(path) < 2) {
        e = br_fail(eb, BR_EINVAL, "the URL names no database: %.100s", url);
        goto out;
    }
    curl_url_set(u, CURLUPART_USER, NULL, 0);
    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
    curl_url_set(u, CURLUPART_QUERY, NULL, 0);
    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
    if (curl_url_get(u, CURLUPART_URL, &clean, 0) != CURLUE_OK || strlen(clean) >= sizeof h->base) {
        e = br_fail(eb, BR_EINVAL, "malformed URL: %.100s", url);
        goto out;
    }
    size_t n = strlen(clean);
    while (n && clean[n - 1] == '/')
        n--;
    memcpy(h->base, clean, n);
    h->base[n] = 0;
    if (user) {
        size_t l = strlen(user) + (pass ? strlen(pass) : 0) + 2;
        h->userpwd = br_malloc(l);
        if (!h->userpwd) {
            e = BR_ENOMEM;
            goto out;
        }
        snprintf(h->userpwd, l, "%s:%s", user, pass ? pass : "");
    }
out:
    if (pass)
        sodium_memzero(pass, strlen(pass));
    curl_free(user);
    curl_free(pass);
    curl_free(path);
    curl_free(clean);
    curl_url_cleanup(u);
    return e;
}

br_err br_endpoint_http_open(const char *url, const struct br_endpoint_http_opts *o,
                             struct br_endpoint **out, struct br_errbuf *eb)
{
    pthread_once(&curl_once, curl_init_once);
    struct http *h = br_calloc(1, sizeof *h);
    struct br_endpoint *ep = br_calloc(1, sizeof *ep);
    br_err e = BR_ENOMEM;
    if (!h || !ep)
        goto fail;
    atomic_init(&h->interrupted, false);
    h->timeout_ms = o && o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    e = parse_url(h, url, eb);
    if (e)
        goto fail;
    h->easy = curl_easy_init();
    h->multi = curl_multi_init();
    if (!h->easy || !h->multi) {
        e = BR_ENOMEM;
        goto fail;
    }
    br_buf resp;
    long st = 0;
    br_buf_init(&resp, 1u << 20);
    e = request(h, "GET", "", NULL, h->timeout_ms, &st, &resp, eb);
    if (!e && st == 404 && o && o->create) {
        e = request(h, "PUT", "", NULL, h->timeout_ms, &st, &resp, eb);
        if (!e && st == 412)
            st = 200; /* created meanwhile */
    }
    if (!e && (st < 200 || st > 299))
        e = status_err(h, "opening", st, &resp, eb);
    br_buf_fini(&resp);
    if (e)
        goto fail;
    ep->ops = &HTTP_OPS;
    ep->ctx = h;
    snprintf(ep->name, sizeof ep->name, "%s", h->base);
    *out = ep;
    return BR_OK;
fail:
    h_free(h);
    br_free(ep);
    return e;
}
