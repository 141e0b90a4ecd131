/* api_mixed.c — the open_revs answer as multipart/mixed, as CouchDB's replicator asks for it
 * (GET /{db}/{docid}?open_revs=[...]&revs=true&latest=true&attachments=true with
 * Accept: multipart/mixed): one part per item; a found revision is application/json, or, when
 * attachments are asked for and it has any, a nested multipart/related whose first part is
 * the document with "follows": true stubs and then one part per attachment (Content-
 * Disposition filename, Content-Type, Content-Length), in the stubs' order; a missing
 * revision is application/json; error="true" {"missing": rev}.
 *
 * The documents are rendered here, on a worker; the attachments are not read: the answer is
 * a list of segments (attstream.h) streamed on the loop, each blob read piece by piece. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "barrel/alloc.h"
#include "barrel/env.h"

#include "api.h"
#include "attstream.h"

bool api_wants_mixed(const br_http_ex *x)
{
    const char *a = x->req.accept;
    if (!a)
        return false;
    for (const char *p = a; *p; p++) {
        if (strncasecmp(p, "multipart/mixed", 15) == 0)
            return true;
    }
    return false;
}

struct segs {
    struct att_seg *v;
    size_t n, cap;
};

static br_err seg_new(struct segs *s, struct att_seg **out)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct att_seg *v = br_realloc(s->v, cap * sizeof *v);
        if (!v)
            return BR_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    struct att_seg *g = &s->v[s->n++];
    memset(g, 0, sizeof *g);
    br_buf_init(&g->text, 0);
    *out = g;
    return BR_OK;
}

/* The text segment at the end (a new one after a blob). */
static br_err text(struct segs *s, br_buf **out)
{
    struct att_seg *g;
    if (s->n && !s->v[s->n - 1].blob) {
        *out = &s->v[s->n - 1].text;
        return BR_OK;
    }
    br_err e = seg_new(s, &g);
    if (!e)
        *out = &g->text;
    return e;
}

static br_err puts_(struct segs *s, const char *str)
{
    br_buf *b;
    br_err e = text(s, &b);
    return e ? e : br_buf_append_str(b, str);
}

static br_err put_json(struct segs *s, const json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT);
    if (!t)
        return BR_ENOMEM;
    br_err e = puts_(s, t);
    free(t);
    return e;
}

static void new_boundary(char out[33])
{
    uint8_t r[16];
    br_env_random(br_env_default(), r, sizeof r);
    for (size_t i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* A quoted-string's content for a file name: '"' and '\' escaped. */
static br_err put_quoted(struct segs *s, const char *v)
{
    br_buf *b;
    br_err e = text(s, &b);
    for (const char *p = v; !e && *p; p++) {
        if (*p == '"' || *p == '\\')
            e = br_buf_append_byte(b, '\\');
        if (!e)
            e = br_buf_append_byte(b, (uint8_t)*p);
    }
    return e;
}

/* One found revision with its attachments following, as a multipart/related part body. */
static br_err doc_related(struct segs *s, br_db *db, const char *id, json_t *doc)
{
    json_t *atts = json_object_get(doc, "_attachments");
    const char *rtext = json_string_value(json_object_get(doc, "_rev"));
    struct br_rev rev;
    if (!rtext || br_rev_parse(rtext, strlen(rtext), &rev) != BR_OK)
        return BR_ESTORE;
    char inner[33];
    new_boundary(inner);
    const char *name;
    json_t *a;
    json_object_foreach(atts, name, a)
    {
        json_object_del(a, "stub");
        if (json_object_set_new(a, "follows", json_true()))
            return BR_ENOMEM;
    }
    char h[128];
    snprintf(h, sizeof h, "Content-Type: multipart/related; boundary=\"%s\"\r\n\r\n--%s\r\n", inner,
             inner);
    br_err e = puts_(s, h);
    if (!e)
        e = puts_(s, "Content-Type: application/json\r\n\r\n");
    if (!e)
        e = put_json(s, doc);
    json_object_foreach(atts, name, a)
    {
        if (e)
            break;
        struct br_att_stub st;
        memset(&st, 0, sizeof st);
        if ((e = br_db_att_info(db, id, strlen(id), &rev, name, &st)))
            break;
        char hb[160];
        snprintf(hb, sizeof hb, "\r\n--%s\r\nContent-Disposition: attachment; filename=\"", inner);
        e = puts_(s, hb);
        if (!e)
            e = put_quoted(s, name);
        if (!e) {
            char hc[96];
            snprintf(hc, sizeof hc,
                     "\"\r\nContent-Length: %llu\r\nContent-Type: ", (unsigned long long)st.length);
            e = puts_(s, hc);
        }
        if (!e)
            e = puts_(s, st.content_type ? st.content_type : "application/octet-stream");
        if (!e)
            e = puts_(s, "\r\n\r\n");
        struct att_seg *g;
        if (!e && !(e = seg_new(s, &g))) {
            g->blob = true;
            memcpy(g->key, st.key, 32);
        }
        br_att_stub_fini(&st);
    }
    if (!e) {
        snprintf(h, sizeof h, "\r\n--%s--", inner);
        e = puts_(s, h);
    }
    return e;
}

void api_open_revs_mixed(br_http_ex *x, br_db *db, const char *id, json_t *res, bool attachments)
{
    struct segs s = {0};
    char outer[33];
    new_boundary(outer);
    br_err e = BR_OK;
    size_t i;
    json_t *item;
    json_array_foreach(res, i, item)
    {
        char h[64];
        snprintf(h, sizeof h, "%s--%s\r\n", i ? "\r\n" : "", outer);
        if ((e = puts_(&s, h)))
            break;
        json_t *doc = json_object_get(item, "ok");
        json_t *atts = doc ? json_object_get(doc, "_attachments") : NULL;
        if (!doc) {
            e = puts_(&s, "Content-Type: application/json; error=\"true\"\r\n\r\n");
            if (!e)
                e = put_json(&s, item);
        } else if (attachments && json_object_size(atts) > 0) {
            e = doc_related(&s, db, id, doc);
        } else {
            e = puts_(&s, "Content-Type: application/json\r\n\r\n");
            if (!e)
                e = put_json(&s, doc);
        }
        if (e)
            break;
        x->docs_read += doc != NULL;
    }
    if (!e) {
        char h[64];
        snprintf(h, sizeof h, "%s--%s--", json_array_size(res) ? "\r\n" : "", outer);
        e = puts_(&s, h);
    }
    json_decref(res);
    struct att_stream *a = e ? NULL : br_calloc(1, sizeof *a);
    if (!e && !a)
        e = BR_ENOMEM;
    if (e) {
        for (size_t k = 0; k < s.n; k++)
            br_buf_fini(&s.v[k].text);
        br_free(s.v);
        api_fail(x, e, NULL);
        return;
    }
    char ct[80];
    snprintf(ct, sizeof ct, "multipart/mixed; boundary=\"%s\"", outer);
    br_http_resp_header(&x->resp, "content-type", ct);
    a->kind = API_CONT_ATT;
    a->db = db; /* the stream's now: api_doc_get does not close it */
    a->segs = s.v;
    a->n_segs = s.n;
    x->user = a; /* status 0: the node streams it on the loop */
}
