/* fastget.c — single-document GETs on the event loop from memory (see fastget.h). */
#include "fastget.h"

#include <string.h>

#include "barrel/alloc.h"

#include "api.h"

struct br_fastget {
    br_store *s;
    bool enabled;
    size_t n;
    br_db *dbs[BR_FASTGET_DBS];
};

br_err br_fastget_new(br_store *s, bool enabled, br_fastget **out)
{
    br_fastget *f = br_calloc(1, sizeof *f);
    if (!f)
        return BR_ENOMEM;
    f->s = s;
    f->enabled = enabled;
    *out = f;
    return BR_OK;
}

void br_fastget_free(br_fastget *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        br_db_close(f->dbs[i]);
    br_free(f);
}

static size_t find(const br_fastget *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(br_db_name(f->dbs[i]), name) == 0)
            return i;
    }
    return f->n;
}

static void drop(br_fastget *f, size_t i)
{
    br_db_close(f->dbs[i]);
    f->dbs[i] = f->dbs[--f->n];
}

bool br_fastget_try(br_fastget *f, br_http_ex *x, bool *want_db)
{
    *want_db = false;
    if (!f->enabled || x->req.segs.n < 1)
        return false;
    size_t i = find(f, x->req.segs.seg[0]);
    if (i == f->n) {
        *want_db = f->n < BR_FASTGET_DBS;
        return false;
    }
    bool gone;
    if (api_doc_get_cached(f->dbs[i], x, &gone))
        return true;
    /* a disk read, or the database was deleted: a deleted one's handle is dropped (a new
     * database of that name gets a new handle through the worker) */
    if (gone) {
        drop(f, i);
        *want_db = true;
    }
    return false;
}

br_db *br_fastget_open_for(br_store *s, const br_http_ex *x)
{
    br_db *db = NULL;
    if (x->req.segs.n < 1 || br_store_db_open(s, x->req.segs.seg[0], &db) != BR_OK)
        return NULL;
    return db;
}

void br_fastget_adopt(br_fastget *f, br_db *db)
{
    if (!db)
        return;
    if (f->n == BR_FASTGET_DBS || find(f, br_db_name(db)) < f->n) {
        br_db_close(db);
        return;
    }
    f->dbs[f->n++] = db;
}
