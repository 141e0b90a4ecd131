/* trust.c — allow and deny lists of node ids, and the acceptance rule of barrel/trust.h.
 *
 * Lists are small (a handful of ids per node), so they are plain arrays searched linearly. */
#include "barrel/trust.h"

#include "barrel/alloc.h"

struct idlist {
    struct br_node_id *v;
    size_t n, cap;
};

struct br_trust {
    struct idlist allow, deny;
};

br_err br_trust_new(br_trust **out)
{
    br_trust *t = br_calloc(1, sizeof *t);
    if (!t)
        return BR_ENOMEM;
    *out = t;
    return BR_OK;
}

void br_trust_free(br_trust *t)
{
    if (!t)
        return;
    br_free(t->allow.v);
    br_free(t->deny.v);
    br_free(t);
}

static bool has(const struct idlist *l, const struct br_node_id *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (br_nodeid_equal(&l->v[i], id))
            return true;
    return false;
}

static br_err add(struct idlist *l, const struct br_node_id *id)
{
    if (has(l, id))
        return BR_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct br_node_id *v = br_realloc(l->v, cap * sizeof *v);
        if (!v)
            return BR_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *id;
    return BR_OK;
}

br_err br_trust_allow(br_trust *t, const struct br_node_id *id)
{
    return add(&t->allow, id);
}

br_err br_trust_deny(br_trust *t, const struct br_node_id *id)
{
    return add(&t->deny, id);
}

enum br_trust_verdict br_trust_check(const br_trust *t, const struct br_node_id *id, bool has_mesh)
{
    if (t && has(&t->deny, id))
        return BR_TRUST_DENIED;
    if (t && has(&t->allow, id))
        return BR_TRUST_ACCEPT;
    if (has_mesh && (!t || t->allow.n == 0))
        return BR_TRUST_ACCEPT;
    return BR_TRUST_UNKNOWN;
}
