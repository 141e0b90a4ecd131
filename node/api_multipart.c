/* api_multipart.c — PUT /{db}/{docid} with Content-Type multipart/related, as CouchDB's
 * replicator pushes a document with attachments: the first part is the JSON document, whose
 * _attachments entries with "follows": true name the parts that follow, one per attachment,
 * in order (or by the part's Content-Disposition filename). It is an upload sink (upload.h):
 * the body is parsed on the workers as it arrives (multipart.h) and each attachment part is
 * streamed into its own blob writer; nothing but the JSON part is held in memory.
 *
 * Nothing is stored unless the whole body is good: the writers stay open until the closing
 * boundary, each part's size is checked against the stub's "length" and the part's
 * Content-Length, a stub's md5 "digest" against the bytes, and every "follows" stub must get
 * exactly one part. Only then are the blobs finished and the revision written (with
 * ?new_edits=false as the replicator asks). A malformed body, or a mismatch, is 400 bad_request
 * and every writer is aborted. An attachment sent with an "encoding" (CouchDB's gzip) is 415:
 * it is not decoded here, and storing the encoded bytes as the content would be wrong.
 * Thread: a worker (the sink functions). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/json.h"

#include "api.h"
#include "multipart.h"
#include "upload.h"

#define MP_ATTS_MAX 128 /* attachment parts per document: each holds a writer's chunk */

struct mp_att {
    const char *name; /* borrowed from the document's JSON */
    bool has_length;
    uint64_t length;
    const char *digest; /* the stub's, may be NULL */
    br_att_writer *w;   /* open from its part's start until the end */
    uint64_t written;
    bool part_has_length;
    uint64_t part_length;
    bool seen; /* its part has begun */
    uint8_t key[32];
};

struct mp_put {
    br_db *db;
    br_http_ex *x;
    char id[BR_DOCID_MAX + 16];
    bool new_edits, has_rev;
    struct br_rev qrev;
    br_mp *mp;
    size_t max_body;
    br_buf doc; /* the JSON part */
    json_t *j;
    struct mp_att *atts;
    size_t n_atts;
    struct mp_att *cur; /* the attachment part being read; NULL: the JSON part */
    int status;         /* the error to answer, with eb */
    const char *error;
    struct br_errbuf eb;
};

/* Record the answer: "attachment NAME MSG", or MSG when name is NULL. */
static br_err bad(struct mp_put *m, struct br_errbuf *eb, int status, const char *error,
                  const char *msg, const char *name)
{
    m->status = status;
    m->error = error;
    if (name)
        br_errbuf_set(eb, "attachment %s %s", name, msg);
    else
        br_errbuf_set(eb, "%s", msg);
    return status == 413 ? BR_ETOOBIG : BR_EPROTO;
}

/* The JSON part is in: parse it and list its "follows" stubs. */
static br_err doc_done(struct mp_put *m, struct br_errbuf *eb)
{
    json_error_t je;
    m->j = json_loadb((const char *)m->doc.data, m->doc.len, JSON_REJECT_DUPLICATES, &je);
    if (!m->j || !json_is_object(m->j))
        return bad(m, eb, 400, "bad_request", "the document part is not a JSON object", NULL);
    json_t *atts = json_object_get(m->j, "_attachments");
    if (atts && !json_is_object(atts))
        return bad(m, eb, 400, "bad_request", "_attachments must be an object", NULL);
    size_t n = 0;
    const char *name;
    json_t *a;
    json_object_foreach(atts, name, a)
    {
        if (json_is_true(json_object_get(a, "follows")))
            n++;
    }
    if (n > MP_ATTS_MAX)
        return bad(m, eb, 400, "bad_request", "too many attachments that follow", NULL);
    m->atts = n ? br_calloc(n, sizeof *m->atts) : NULL;
    if (n && !m->atts)
        return BR_ENOMEM;
    json_object_foreach(atts, name, a)
    {
        if (!json_is_true(json_object_get(a, "follows")))
            continue;
        struct mp_att *t = &m->atts[m->n_atts++];
        t->name = name;
        /* stored bytes are identity: a compressed part would be stored as its compressed
         * bytes, so it is refused rather than kept wrong */
        json_t *enc = json_object_get(a, "encoding");
        if (enc && !(json_is_string(enc) && strcmp(json_string_value(enc), "identity") == 0))
            return bad(m, eb, 415, "bad_content_type",
                       "is sent encoded (\"encoding\"); only identity is accepted", name);
        json_t *len = json_object_get(a, "length");
        if (len && (!json_is_integer(len) || json_integer_value(len) < 0))
            return bad(m, eb, 400, "bad_request", "has a length that is not a non-negative integer",
                       name);
        t->has_length = len != NULL;
        t->length = len ? (uint64_t)json_integer_value(len) : 0;
        json_t *dg = json_object_get(a, "digest");
        t->digest = json_is_string(dg) ? json_string_value(dg) : NULL;
    }
    return BR_OK;
}

static br_err on_begin(void *arg, const struct br_mp_part *p, struct br_errbuf *eb)
{
    struct mp_put *m = arg;
    if (p->index == 0) {
        if (p->content_type && strncasecmp(p->content_type, "application/json", 16) != 0)
            return bad(m, eb, 400, "bad_request", "the first part must be the JSON document", NULL);
        m->cur = NULL;
        return BR_OK;
    }
    struct mp_att *t = NULL;
    for (size_t i = 0; i < m->n_atts && !t; i++) {
        if (p->filename ? strcmp(m->atts[i].name, p->filename) == 0 : !m->atts[i].seen)
            t = &m->atts[i];
    }
    if (!t && p->filename)
        return bad(m, eb, 400, "bad_request", "has a part but no \"follows\" stub", p->filename);
    if (!t || t->seen)
        return bad(m, eb, 400, "bad_request", "more attachment parts than \"follows\" stubs", NULL);
    t->seen = true;
    t->part_has_length = p->has_length;
    t->part_length = p->length;
    br_err e = br_att_writer_open(m->db, &t->w);
    if (e)
        return e;
    m->cur = t;
    return BR_OK;
}

static br_err on_data(void *arg, const void *p, size_t n, struct br_errbuf *eb)
{
    struct mp_put *m = arg;
    struct mp_att *t = m->cur;
    if (!t) {
        if (br_buf_append(&m->doc, p, n) != BR_OK) {
            char msg[80];
            snprintf(msg, sizeof msg, "document part larger than %zu bytes", m->max_body);
            return bad(m, eb, 413, "too_large", msg, NULL);
        }
        return BR_OK;
    }
    t->written += n;
    if ((t->has_length && t->written > t->length) ||
        (t->part_has_length && t->written > t->part_length))
        return bad(m, eb, 400, "bad_request", "is longer than its length", t->name);
    const uint8_t *b = p;
    for (size_t off = 0; off < n; off += BR_ATT_CHUNK) {
        size_t k = n - off < BR_ATT_CHUNK ? n - off : BR_ATT_CHUNK;
        br_err e = br_att_writer_write(t->w, b + off, k);
        if (e)
            return e;
    }
    return BR_OK;
}

static br_err on_end(void *arg, struct br_errbuf *eb)
{
    struct mp_put *m = arg;
    struct mp_att *t = m->cur;
    if (!t)
        return doc_done(m, eb);
    if ((t->has_length && t->written != t->length) ||
        (t->part_has_length && t->written != t->part_length))
        return bad(m, eb, 400, "bad_request", "is shorter than its length", t->name);
    m->cur = NULL;
    return BR_OK;
}

static void mp_release(struct mp_put *m)
{
    for (size_t i = 0; i < m->n_atts; i++)
        br_att_writer_abort(m->atts[i].w);
    br_free(m->atts);
    m->atts = NULL;
    m->n_atts = 0;
    json_decref(m->j);
    m->j = NULL;
    br_mp_free(m->mp);
    m->mp = NULL;
    br_buf_fini(&m->doc);
    br_db_close(m->db);
    m->db = NULL;
}

/* Answer x with the parse error e (a callback's status, or 400 for a malformed body). */
static void answer_error(struct mp_put *m, br_err e)
{
    if (m->status)
        br_http_resp_error(&m->x->resp, m->status, m->error, m->eb.msg);
    else if (e == BR_EPROTO)
        br_http_resp_error(&m->x->resp, 400, "bad_request", m->eb.msg);
    else
        api_fail(m->x, e, m->eb.msg);
}

static bool mp_open(struct br_api *api, br_http_ex *x, void *state)
{
    struct mp_put *m = state;
    m->x = x;
    char boundary[BR_MP_BOUNDARY_MAX + 1];
    struct br_errbuf eb = {{0}};
    if (br_mp_boundary(x->req.content_type, "multipart/related", boundary, &eb)) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        return false;
    }
    if (br_http_arg_bool(&x->req.args, "new_edits", true, &m->new_edits, &eb)) {
        br_http_resp_error(&x->resp, 400, "bad_request", eb.msg);
        return false;
    }
    if (!api_req_rev(x, &m->qrev, &m->has_rev) || !api_open_db(api, x, &m->db))
        return false;
    const struct br_http_path *p = &x->req.segs;
    if (p->n == 3)
        snprintf(m->id, sizeof m->id, "%s/%s", p->seg[1], p->seg[2]);
    else
        snprintf(m->id, sizeof m->id, "%s", p->seg[1]);
    m->max_body = api->max_body;
    br_buf_init(&m->doc, api->max_body);
    struct br_mp_cb cb = {on_begin, on_data, on_end, m};
    br_err e = br_mp_new(boundary, 1 + MP_ATTS_MAX, &cb, &m->mp);
    if (e) {
        api_fail(x, e, NULL);
        mp_release(m);
        return false;
    }
    return true;
}

static bool mp_write(br_http_ex *x, void *state, const void *p, size_t n)
{
    struct mp_put *m = state;
    (void)x;
    br_err e = br_mp_feed(m->mp, p, n, &m->eb);
    if (e)
        answer_error(m, e);
    return !e;
}

static void mp_abort(void *state)
{
    mp_release(state);
}

/* Every part is in and checked: finish the blobs and write the revision. */
static void mp_finish(br_http_ex *x, void *state)
{
    struct mp_put *m = state;
    br_err e = br_mp_finish(m->mp, &m->eb);
    if (!e && !m->j) /* unreachable: the parser requires one part, the JSON one */
        e = br_fail(&m->eb, BR_EPROTO, "no document part");
    for (size_t i = 0; !e && i < m->n_atts; i++) {
        if (!m->atts[i].seen)
            e = bad(m, &m->eb, 400, "bad_request", "has no part", m->atts[i].name);
    }
    if (e) {
        answer_error(m, e);
        goto done;
    }
    for (size_t i = 0; i < m->n_atts; i++) {
        struct mp_att *t = &m->atts[i];
        char digest[48];
        uint64_t len;
        e = br_att_writer_finish(t->w, t->key, digest, &len);
        t->w = NULL;
        if (e) {
            api_fail(x, e, NULL);
            goto done;
        }
        if (t->digest && strncmp(t->digest, "md5-", 4) == 0 && strcmp(t->digest, digest) != 0) {
            /* the blob stays unreferenced: the store sweeps it at its next open */
            bad(m, &m->eb, 400, "bad_request", "does not match its digest", t->name);
            answer_error(m, BR_EPROTO);
            goto done;
        }
    }
    /* each "follows" stub becomes an (empty) inline attachment for the parser, then takes
     * its blob */
    json_t *atts = json_object_get(m->j, "_attachments");
    for (size_t i = 0; i < m->n_atts; i++) {
        json_t *a = json_object_get(atts, m->atts[i].name);
        json_object_del(a, "follows");
        json_object_del(a, "digest");
        json_object_del(a, "length");
        json_object_del(a, "encoding");
        json_object_del(a, "encoded_length");
        if (json_object_set_new(a, "data", json_string(""))) {
            api_fail(x, BR_ENOMEM, NULL);
            goto done;
        }
    }
    struct br_json_doc d;
    struct br_errbuf eb = {{0}};
    e = br_json_doc_parse(m->j, m->id, &d, &eb);
    if (e) {
        api_fail(x, e, eb.msg);
        goto done;
    }
    for (size_t i = 0; i < d.n_atts; i++) {
        for (size_t k = 0; k < m->n_atts; k++) {
            if (strcmp(d.atts[i].name, m->atts[k].name) == 0)
                d.atts[i].blob_key = m->atts[k].key;
        }
    }
    if (m->has_rev && d.put.rev && !br_rev_eq(d.put.rev, &m->qrev)) {
        br_http_resp_error(&x->resp, 400, "bad_request",
                           "Document rev from request body and query string have different "
                           "values");
    } else {
        if (m->has_rev && !d.put.rev) {
            d.rev = m->qrev;
            d.put.rev = &d.rev;
        }
        api_write_doc(x, m->db, &d, m->new_edits);
    }
    br_json_doc_fini(&d);
done:
    mp_release(m);
}

const struct upload_sink upload_mp_doc_sink = {
    .state_size = sizeof(struct mp_put),
    .open = mp_open,
    .write = mp_write,
    .finish = mp_finish,
    .abort = mp_abort,
};
