/* router.c — the route table (see router.h). */
#include "router.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

struct entry {
    enum br_http_method m;
    br_api_fn fn;
    bool worker;
};

#define END                                                                                        \
    {                                                                                              \
        BR_HTTP_OTHER, NULL, false                                                                 \
    }

static const struct entry R_ROOT[] = {
    {BR_HTTP_GET, api_welcome, false}, {BR_HTTP_HEAD, api_welcome, false}, END};
static const struct entry R_ALL_DBS[] = {{BR_HTTP_GET, api_all_dbs, true}, END};
static const struct entry R_NODE[] = {{BR_HTTP_GET, api_node, false}, END};
static const struct entry R_REPLICATE[] = {{BR_HTTP_POST, api_replicate, true}, END};
static const struct entry R_TASKS[] = {{BR_HTTP_GET, api_active_tasks, true}, END};
static const struct entry R_METRICS[] = {{BR_HTTP_GET, api_metrics, false}, END};
static const struct entry R_PEERS[] = {{BR_HTTP_GET, api_peers, false}, END};
static const struct entry R_PEER[] = {
    {BR_HTTP_DELETE, api_peer_delete, false}, {BR_HTTP_PUT, api_peer_put, false}, END};
static const struct entry R_DB[] = {
    {BR_HTTP_GET, api_db_info, true},   {BR_HTTP_HEAD, api_db_info, true},
    {BR_HTTP_PUT, api_db_create, true}, {BR_HTTP_DELETE, api_db_delete, true},
    {BR_HTTP_POST, api_db_post, true},  END};
static const struct entry R_BULK[] = {{BR_HTTP_POST, api_bulk_docs, true}, END};
static const struct entry R_BULK_GET[] = {{BR_HTTP_POST, api_bulk_get, true}, END};
static const struct entry R_REVSDIFF[] = {{BR_HTTP_POST, api_revs_diff, true}, END};
static const struct entry R_CHANGES[] = {
    {BR_HTTP_GET, api_changes, true}, {BR_HTTP_POST, api_changes, true}, END};
static const struct entry R_FIND[] = {{BR_HTTP_POST, api_find, true}, END};
static const struct entry R_ALL_DOCS[] = {{BR_HTTP_GET, api_all_docs, true}, END};
static const struct entry R_LOCAL[] = {{BR_HTTP_GET, api_local_get, true},
                                       {BR_HTTP_PUT, api_local_put, true},
                                       {BR_HTTP_DELETE, api_local_delete, true},
                                       END};
static const struct entry R_DOC[] = {{BR_HTTP_GET, api_doc_get, true},
                                     {BR_HTTP_HEAD, api_doc_get, true},
                                     {BR_HTTP_PUT, api_doc_put, true},
                                     {BR_HTTP_DELETE, api_doc_delete, true},
                                     END};

static const struct entry R_ATT[] = {{BR_HTTP_GET, api_att_get, true},
                                     {BR_HTTP_PUT, api_att_put, true},
                                     {BR_HTTP_DELETE, api_att_delete, true},
                                     END};

static bool is(const br_http_ex *x, size_t i, const char *s)
{
    return strcmp(x->req.segs.seg[i], s) == 0;
}

static const struct entry *table_for(const br_http_ex *x)
{
    const struct br_http_path *p = &x->req.segs;
    switch (p->n) {
    case 0:
        return R_ROOT;
    case 1:
        if (is(x, 0, "_all_dbs"))
            return R_ALL_DBS;
        if (is(x, 0, "_node"))
            return R_NODE;
        if (is(x, 0, "_metrics"))
            return R_METRICS;
        if (is(x, 0, "_replicate"))
            return R_REPLICATE;
        if (is(x, 0, "_active_tasks"))
            return R_TASKS;
        if (is(x, 0, "_peers"))
            return R_PEERS;
        return p->seg[0][0] == '_' ? NULL : R_DB;
    case 2:
        if (is(x, 0, "_peers"))
            return R_PEER;
        if (p->seg[0][0] == '_')
            return NULL;
        if (p->seg[1][0] != '_')
            return R_DOC;
        if (is(x, 1, "_bulk_docs"))
            return R_BULK;
        if (is(x, 1, "_bulk_get"))
            return R_BULK_GET;
        if (is(x, 1, "_revs_diff"))
            return R_REVSDIFF;
        if (is(x, 1, "_changes"))
            return R_CHANGES;
        if (is(x, 1, "_find"))
            return R_FIND;
        if (is(x, 1, "_all_docs"))
            return R_ALL_DOCS;
        return NULL;
    case 3:
        if (p->seg[0][0] == '_')
            return NULL;
        if (is(x, 1, "_local"))
            return R_LOCAL;
        if (is(x, 1, "_design"))
            return R_DOC;
        if (p->seg[1][0] != '_')
            return R_ATT;
        return NULL;
    default:
        return NULL;
    }
}

static const struct {
    const struct entry *t;
    const char *name;
} NAMES[] = {
    {R_ROOT, "root"},
    {R_ALL_DBS, "all_dbs"},
    {R_NODE, "node"},
    {R_METRICS, "metrics"},
    {R_DB, "db"},
    {R_BULK, "bulk_docs"},
    {R_REVSDIFF, "revs_diff"},
    {R_CHANGES, "changes"},
    {R_FIND, "find"},
    {R_ALL_DOCS, "all_docs"},
    {R_LOCAL, "local"},
    {R_DOC, "doc"},
    {R_ATT, "attachment"},
    {R_BULK_GET, "bulk_get"},
    {R_REPLICATE, "replicate"},
    {R_TASKS, "active_tasks"},
};

static const char *name_of(const struct entry *t)
{
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
        if (NAMES[i].t == t)
            return NAMES[i].name;
    }
    return t ? "other" : "unmatched";
}

bool br_router_match(br_http_ex *x, struct br_route *r)
{
    const struct entry *t = table_for(x);
    r->name = name_of(t);
    if (!t) {
        br_http_resp_error(&x->resp, 404, "not_found", "missing");
        return false;
    }
    char allow[64] = "";
    size_t off = 0;
    for (const struct entry *e = t; e->fn; e++) {
        if (e->m == x->req.method) {
            r->fn = e->fn;
            r->worker = e->worker;
            return true;
        }
        int n = snprintf(allow + off, sizeof allow - off, "%s%s", off ? "," : "",
                         br_http_method_name(e->m));
        if (n > 0 && (size_t)n < sizeof allow - off)
            off += (size_t)n;
    }
    char reason[96];
    snprintf(reason, sizeof reason, "Only %s allowed", allow);
    br_http_resp_error(&x->resp, 405, "method_not_allowed", reason);
    br_http_resp_header(&x->resp, "allow", allow);
    return false;
}

bool br_router_streams_body(const br_http_ex *x)
{
    if (x->req.method != BR_HTTP_PUT)
        return false;
    const struct entry *t = table_for(x);
    if (t == R_ATT)
        return true;
    const char *ct = x->req.content_type;
    return t == R_DOC && ct && strncasecmp(ct, "multipart/related", 17) == 0;
}
