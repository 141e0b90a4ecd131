/* api_att.c — standalone attachments: PUT|GET|DELETE /{db}/{docid}/{name} (CouchDB shapes:
 * 201 {"ok","id","rev"} with ETag and Location; GET with the stored Content-Type, an ETag and
 * Content-MD5 from the digest). A large attachment is sent in pieces (attstream.h); an upload
 * is streamed into the blob store in BR_ATT_CHUNK pieces as it arrives (upload.h drives the
 * api_att_put_* stages from the workers while the body is read). */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "barrel/alloc.h"
#include "barrel/att.h"

#include "api.h"
#include "attstream.h"

static bool att_target(br_http_ex *x, const char **id, const char **name)
{
    *id = x->req.segs.seg[1];
    *name = x->req.segs.seg[2];
    if (!br_att_name_valid(*name, strlen(*name))) {
        br_http_resp_error(&x->resp, 400, "bad_request",
                           "Attachment name must be 1..1024 bytes of UTF-8 without '/', '\\' "
                           "or a leading '_'");
        return false;
    }
    return true;
}

static void digest_headers(br_http_ex *x, const char *digest)
{
    char q[64];
    snprintf(q, sizeof q, "\"%s\"", digest);
    br_http_resp_header(&x->resp, "etag", q);
    if (strncmp(digest, "md5-", 4) == 0)
        br_http_resp_header(&x->resp, "content-md5", digest + 4);
}

void api_att_get(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    const char *id, *name;
    if (!att_target(x, &id, &name) || !api_open_db(api, x, &db))
        return;
    struct br_rev rev;
    const char *r = br_http_arg(&x->req.args, "rev");
    if (r && !api_parse_rev(x, r, &rev)) {
        br_db_close(db);
        return;
    }
    struct br_att_stub st;
    memset(&st, 0, sizeof st);
    br_err e = br_db_att_info(db, id, strlen(id), r ? &rev : NULL, name, &st);
    br_att_reader *rd = NULL;
    if (!e)
        e = br_att_reader_open(db, st.key, &rd, NULL);
    if (e) {
        api_fail(x, e, e == BR_ENOTFOUND ? "Document is missing attachment" : NULL);
        goto fail;
    }
    br_http_resp_header(&x->resp, "content-type",
                        st.content_type ? st.content_type : "application/octet-stream");
    digest_headers(x, st.digest);
    if (st.length > ATT_INLINE_MAX) {
        struct att_stream *a = br_calloc(1, sizeof *a);
        if (!a) {
            api_fail(x, BR_ENOMEM, NULL);
            goto fail;
        }
        a->kind = API_CONT_ATT;
        a->db = db;
        a->rd = rd;
        x->user = a; /* status 0: the node streams it on the loop */
        br_att_stub_fini(&st);
        return;
    }
    br_buf_reset(&x->resp.body);
    for (;;) {
        const uint8_t *p;
        size_t n;
        if ((e = br_att_reader_read(rd, &p, &n)) || n == 0)
            break;
        if ((e = br_buf_append(&x->resp.body, p, n)))
            break;
    }
    if (e)
        api_fail(x, e, NULL);
    else
        x->resp.status = 200;
fail:
    br_att_reader_close(rd);
    br_att_stub_fini(&st);
    br_db_close(db);
}

bool api_att_put_open(struct br_api *api, br_http_ex *x, struct api_att_put *p)
{
    memset(p, 0, sizeof *p);
    const char *id, *name;
    if (!att_target(x, &id, &name) || !api_open_db(api, x, &p->db))
        return false;
    br_err e = BR_OK;
    if (!api_req_rev(x, &p->rev, &p->has_rev) || (e = br_att_writer_open(p->db, &p->w))) {
        if (e)
            api_fail(x, e, NULL);
        br_db_close(p->db);
        p->db = NULL;
        return false;
    }
    return true;
}

bool api_att_put_write(br_http_ex *x, struct api_att_put *p, const void *data, size_t n)
{
    const uint8_t *b = data;
    br_err e = BR_OK;
    for (size_t off = 0; !e && off < n; off += BR_ATT_CHUNK) {
        size_t k = n - off;
        e = br_att_writer_write(p->w, b + off, k < BR_ATT_CHUNK ? k : BR_ATT_CHUNK);
    }
    if (e)
        api_fail(x, e, NULL);
    return !e;
}

void api_att_put_finish(br_http_ex *x, struct api_att_put *p)
{
    const char *id = x->req.segs.seg[1], *name = x->req.segs.seg[2];
    uint8_t key[32];
    char digest[48];
    uint64_t len;
    br_err e = br_att_writer_finish(p->w, key, digest, &len);
    p->w = NULL;
    if (e) {
        api_fail(x, e, NULL);
        goto done;
    }
    const char *ct = x->req.content_type ? x->req.content_type : "application/octet-stream";
    struct br_put_result res;
    e = br_db_att_put(p->db, id, strlen(id), p->has_rev ? &p->rev : NULL, name, ct, key,
                      &BR_WRITE_DEFAULT, &res);
    if (e) {
        api_fail(x, e, res.reason);
        goto done;
    }
    api_etag(x, &res.rev);
    char loc[BR_DB_NAME_MAX + BR_DOCID_MAX + BR_ATT_NAME_MAX + 8];
    snprintf(loc, sizeof loc, "/%s/%s/%s", br_db_name(p->db), id, name);
    br_http_resp_header(&x->resp, "location", loc);
    api_json(x, 201, json_pack("{s:b,s:s,s:o}", "ok", 1, "id", id, "rev", api_rev_json(&res.rev)));
done:
    api_att_put_abort(p);
}

void api_att_put_abort(struct api_att_put *p)
{
    br_att_writer_abort(p->w);
    p->w = NULL;
    br_db_close(p->db);
    p->db = NULL;
}

void api_att_put(struct br_api *api, br_http_ex *x)
{
    struct api_att_put p;
    if (!api_att_put_open(api, x, &p))
        return;
    if (!api_att_put_write(x, &p, x->req.body.data, x->req.body.len)) {
        api_att_put_abort(&p);
        return;
    }
    api_att_put_finish(x, &p);
}

void api_att_delete(struct br_api *api, br_http_ex *x)
{
    br_db *db = NULL;
    const char *id, *name;
    if (!att_target(x, &id, &name) || !api_open_db(api, x, &db))
        return;
    struct br_rev rev;
    bool has;
    if (!api_req_rev(x, &rev, &has))
        goto done;
    if (!has) {
        api_fail(x, BR_ECONFLICT, NULL);
        goto done;
    }
    struct br_put_result res;
    br_err e = br_db_att_delete(db, id, strlen(id), &rev, name, &BR_WRITE_DEFAULT, &res);
    if (e) {
        api_fail(x, e, e == BR_ENOTFOUND ? "Document is missing attachment" : res.reason);
        goto done;
    }
    api_etag(x, &res.rev);
    api_json(x, 200, json_pack("{s:b,s:s,s:o}", "ok", 1, "id", id, "rev", api_rev_json(&res.rev)));
done:
    br_db_close(db);
}

br_err api_att_inline(br_db *db, const struct br_doc *d, json_t *doc)
{
    json_t *atts = json_object_get(doc, "_attachments");
    for (size_t i = 0; atts && i < d->n_atts; i++) {
        const struct br_att_stub *s = &d->atts[i];
        json_t *a = json_object_get(atts, s->name);
        if (!a)
            continue;
        br_att_reader *rd = NULL;
        br_buf data;
        br_buf_init(&data, 0);
        br_err e = br_att_reader_open(db, s->key, &rd, NULL);
        while (!e) {
            const uint8_t *p;
            size_t n;
            if ((e = br_att_reader_read(rd, &p, &n)) || n == 0)
                break;
            e = br_buf_append(&data, p, n);
        }
        br_att_reader_close(rd);
        size_t cap = sodium_base64_ENCODED_LEN(data.len, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = e ? NULL : br_malloc(cap);
        if (!e && !b64)
            e = BR_ENOMEM;
        if (!e) {
            sodium_bin2base64(b64, cap, data.data, data.len, sodium_base64_VARIANT_ORIGINAL);
            json_object_del(a, "stub");
            if (json_object_set_new(a, "data", json_string(b64)))
                e = BR_ENOMEM;
        }
        br_free(b64);
        br_buf_fini(&data);
        if (e)
            return e;
    }
    return BR_OK;
}
