/* query.c — barrel's query language and CouchDB Mango selectors (query.h): two front ends that
 * compile JSON into one condition tree, an evaluator that runs the tree against canonical CBOR
 * bodies, the pattern set a query subscription registers (SUB-25), and the JSON rendering used
 * by explain and by the fuzzers' round trip.
 *
 * Compiling. Both front ends validate everything they read and fail with BR_EINVAL and a reason
 * that says where ("where[2].op: unknown operator 'like'", "selector.age: unsupported operator:
 * $size"). The caps of query.h are counted on the tree being built: a node's depth (the
 * conditions of `where`, or the root of a Mango selector, are at depth 0) and the number of
 * nodes (the implicit AND of `where` is not counted). Paths are stored joined with '/', so a
 * key holding '/' cannot be expressed and is rejected, as are empty segments; a path has at most
 * BR_PATH_MAX_DEPTH segments and BR_PATTERN_MAX - 2 bytes, so "path/#" is always a valid pattern.
 * Mango selectors are translated recursively: an object is the AND of its keys; a field key
 * ("a.b", "\." escapes a dot) extends the current path and its value is either a scalar
 * (equality) or an object translated at the longer path; an operator key applies at the current
 * path; $elemMatch translates its argument with an empty path, meaning "the element itself".
 * The JSON form accepts two additions that Mango needs to round-trip through br_query_to_json:
 * op "nin" and {"path": P, "elem_match": COND} (inside which a path may be [] for the element).
 *
 * Evaluating. A leaf condition walks the body once along its path with the bounded pull reader,
 * skipping the values of other keys with br_cbor_skip and stopping as soon as the answer is
 * known. At a map it looks the segment up; since canonical maps are sorted (shorter keys first,
 * then bytewise) and unique, a lookup that does not have to leave the reader positioned (i.e.
 * not inside an array) stops at the key or at the first greater one. At an array every element
 * is visited with the same segment (membership), and a decimal segment also selects that
 * element by position (as MongoDB does). At the end of the path an array is flattened into its
 * scalars, which are tested; maps are only "present". Evaluation allocates nothing, except one
 * PCRE2 match block per br_qnode_match call that meets a regex. The body is first checked to be
 * exactly one well-formed map (one br_cbor_skip pass), because the walks stop early and would
 * not notice a malformed tail; anything malformed makes the match false, never NOT-inverted.
 * Stored bodies (query_match_stored, find's check of each candidate) skip that pass and are
 * read with a shorter path to the same items ("reading bodies" below).
 *
 * Regexes are PCRE2 (UTF mode, \C forbidden), compiled through br_malloc so that torture tests
 * reach them, with a match context that limits backtracking (match, depth and heap limits); a
 * match that hits a limit counts as no match and is counted on the regex. */
#include "barrel/query.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/cbor.h"

#include "store_int.h"

#define RE_MATCH_LIMIT 100000
#define RE_DEPTH_LIMIT 1000
#define RE_HEAP_LIMIT_KIB 4096
#define RE_PARENS_LIMIT 64
#define MAX_LIST 1000 /* order_by / sort / fields entries */
#define PATH_MAX_BYTES (BR_PATTERN_MAX - 2)
#define MANGO_DEFAULT_LIMIT 25

/* A compiled regex: the pattern and the match context carrying its limits. */
struct qre {
    pcre2_code *code;
    pcre2_match_context *mctx;
    atomic_ulong limit_hits;
};

/* ---- compile context: error reasons with a location ---- */

struct cc {
    struct br_errbuf *eb;
    unsigned nconds;
    size_t loc_len;
    char loc[200];
};

static size_t loc_push(struct cc *cx, const char *fmt, ...) BR_PRINTF(2, 3);
static br_err bad(struct cc *cx, const char *fmt, ...) BR_PRINTF(2, 3);

/* Append to the location ("where[2]" + ".op"); returns the mark to restore with loc_pop. */
static size_t loc_push(struct cc *cx, const char *fmt, ...)
{
    size_t mark = cx->loc_len;
    size_t room = sizeof cx->loc - cx->loc_len;
    if (room > 1) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(cx->loc + cx->loc_len, room, fmt, ap);
        va_end(ap);
        if (n > 0)
            cx->loc_len += (size_t)n < room ? (size_t)n : room - 1;
    }
    return mark;
}

static void loc_pop(struct cc *cx, size_t mark)
{
    cx->loc_len = mark;
    cx->loc[mark] = '\0';
}

static br_err bad(struct cc *cx, const char *fmt, ...)
{
    char msg[BR_ERRBUF_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cx->loc_len)
        return br_fail(cx->eb, BR_EINVAL, "%s: %s", cx->loc, msg);
    return br_fail(cx->eb, BR_EINVAL, "%s", msg);
}

/* Account for one node at `depth` against the caps. */
static br_err count_node(struct cc *cx, unsigned depth)
{
    if (depth >= BR_QUERY_MAX_DEPTH)
        return bad(cx, "conditions nested deeper than %d (BR_QUERY_MAX_DEPTH)", BR_QUERY_MAX_DEPTH);
    if (++cx->nconds > BR_QUERY_MAX_CONDS)
        return bad(cx, "more than %d conditions (BR_QUERY_MAX_CONDS)", BR_QUERY_MAX_CONDS);
    return BR_OK;
}

/* ---- freeing ---- */

static void re_release(struct qre *re)
{
    if (!re)
        return;
    pcre2_match_context_free(re->mctx);
    pcre2_code_free(re->code);
    br_free(re);
}

static void node_fini(struct br_qnode *n)
{
    br_free(n->path);
    br_free(n->val.s);
    for (size_t i = 0; i < n->n_vals; i++)
        br_free(n->vals[i].s);
    br_free(n->vals);
    for (size_t i = 0; i < n->n_kids; i++)
        node_fini(&n->kids[i]);
    br_free(n->kids);
    re_release(n->re);
    memset(n, 0, sizeof *n);
}

/* Room for count children (none for 0). */
static br_err kids_alloc(struct br_qnode *n, size_t count)
{
    if (count == 0)
        return BR_OK;
    n->kids = br_calloc(count, sizeof *n->kids);
    return n->kids ? BR_OK : BR_ENOMEM;
}

void br_query_free(br_query *q)
{
    if (!q)
        return;
    node_fini(&q->root);
    for (size_t i = 0; i < q->n_order; i++)
        br_free(q->order[i].path);
    br_free(q->order);
    br_free(q->id_prefix);
    br_free(q->id_start);
    br_free(q->id_end);
    for (size_t i = 0; i < q->n_fields; i++)
        br_free(q->fields[i]);
    br_free(q->fields);
    br_free(q->bookmark);
    br_free(q);
}

/* ---- regex ---- */

static void *re_malloc(PCRE2_SIZE n, void *data)
{
    (void)data;
    return br_malloc(n);
}

static void re_free(void *p, void *data)
{
    (void)data;
    br_free(p);
}

static br_err re_compile(struct cc *cx, const char *src, size_t len, void **out)
{
    if (len > BR_QUERY_REGEX_MAX)
        return bad(cx, "regex longer than %d bytes (BR_QUERY_REGEX_MAX)", BR_QUERY_REGEX_MAX);
    br_err e = BR_ENOMEM;
    pcre2_compile_context *ccx = NULL;
    struct qre *re = NULL;
    pcre2_general_context *g = pcre2_general_context_create(re_malloc, re_free, NULL);
    if (!g)
        goto done;
    ccx = pcre2_compile_context_create(g);
    re = br_calloc(1, sizeof *re);
    if (!ccx || !re)
        goto done;
    pcre2_set_parens_nest_limit(ccx, RE_PARENS_LIMIT);
    int code = 0;
    PCRE2_SIZE off = 0;
    re->code =
        pcre2_compile((PCRE2_SPTR)src, len, PCRE2_UTF | PCRE2_NEVER_BACKSLASH_C, &code, &off, ccx);
    if (!re->code) {
        if (code == PCRE2_ERROR_HEAP_FAILED)
            goto done;
        PCRE2_UCHAR msg[120];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            msg[0] = '\0';
        e = bad(cx, "bad regex at offset %zu: %s", (size_t)off, (const char *)msg);
        goto done;
    }
    re->mctx = pcre2_match_context_create(g);
    if (!re->mctx)
        goto done;
    pcre2_set_match_limit(re->mctx, RE_MATCH_LIMIT);
    pcre2_set_depth_limit(re->mctx, RE_DEPTH_LIMIT);
    pcre2_set_heap_limit(re->mctx, RE_HEAP_LIMIT_KIB);
    atomic_init(&re->limit_hits, 0);
    *out = re;
    re = NULL;
    e = BR_OK;
done:
    re_release(re);
    pcre2_compile_context_free(ccx);
    pcre2_general_context_free(g);
    return e;
}

/* Test hook (declared by tests/store/query_test.c): how many regex matches of q hit a PCRE2
 * limit since compile. */
unsigned long br_query_regex_limit_hits(const br_query *q);

static unsigned long node_limit_hits(const struct br_qnode *n)
{
    unsigned long c = n->re ? atomic_load(&((struct qre *)n->re)->limit_hits) : 0;
    for (size_t i = 0; i < n->n_kids; i++)
        c += node_limit_hits(&n->kids[i]);
    return c;
}

unsigned long br_query_regex_limit_hits(const br_query *q)
{
    return q ? node_limit_hits(&q->root) : 0;
}

/* ---- paths ---- */

/* One segment of a path: non-empty, no '/', no NUL. */
static br_err seg_check(struct cc *cx, const char *s, size_t n)
{
    if (n == 0)
        return bad(cx, "empty path segment");
    if (memchr(s, '/', n))
        return bad(cx, "path segment '%.*s' contains '/', which paths cannot express",
                   (int)(n > 40 ? 40 : n), s);
    if (memchr(s, '\0', n))
        return bad(cx, "path segment contains NUL");
    return BR_OK;
}

/* Append one checked segment to a path being built; *nseg counts segments. */
static br_err path_add(struct cc *cx, br_buf *b, const char *s, size_t n, unsigned *nseg)
{
    br_err e = seg_check(cx, s, n);
    if (e)
        return e;
    if (++*nseg > BR_PATH_MAX_DEPTH)
        return bad(cx, "path deeper than %d segments (BR_PATH_MAX_DEPTH)", BR_PATH_MAX_DEPTH);
    if (b->len + (b->len ? 1 : 0) + n > PATH_MAX_BYTES)
        return bad(cx, "path longer than %d bytes", PATH_MAX_BYTES);
    if (b->len && br_buf_append_byte(b, '/'))
        return BR_ENOMEM;
    if (br_buf_append(b, s, n))
        return BR_ENOMEM;
    return BR_OK;
}

/* Hand the built path over (an empty path becomes ""). */
static br_err path_take(br_buf *b, char **path, size_t *len)
{
    if (b->len == 0) {
        *path = br_strndup("", 0);
        if (!*path)
            return BR_ENOMEM;
        *len = 0;
        return BR_OK;
    }
    *path = (char *)br_buf_steal(b, len);
    return BR_OK;
}

/* Segments of a joined path already checked ("a/b"): count them. */
static unsigned path_segs(const char *p, size_t n)
{
    unsigned c = n ? 1 : 0;
    for (size_t i = 0; i < n; i++)
        c += p[i] == '/';
    return c;
}

/* Barrel path: "org/id" or ["org", "id", 0]. rel: an empty path (the element) is allowed. */
static br_err parse_path(struct cc *cx, const json_t *v, bool rel, char **path, size_t *len)
{
    br_buf b;
    br_buf_init(&b, 0);
    unsigned nseg = 0;
    br_err e = BR_OK;
    size_t mark = loc_push(cx, ".path");
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        size_t i = 0;
        while (n && !e) {
            const char *sl = memchr(s + i, '/', n - i);
            size_t end = sl ? (size_t)(sl - s) : n;
            e = path_add(cx, &b, s + i, end - i, &nseg);
            if (!sl)
                break;
            i = end + 1;
            if (i == n)
                e = bad(cx, "empty path segment");
        }
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *s;
        json_array_foreach(v, i, s)
        {
            if (json_is_string(s)) {
                e = path_add(cx, &b, json_string_value(s), json_string_length(s), &nseg);
            } else if (json_is_integer(s) && json_integer_value(s) >= 0) {
                char num[24];
                int k = snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(s));
                e = path_add(cx, &b, num, (size_t)k, &nseg);
            } else {
                size_t m = loc_push(cx, "[%zu]", i);
                e = bad(cx, "expects a string or a non-negative integer");
                loc_pop(cx, m);
            }
            if (e)
                break;
        }
    } else {
        e = bad(cx, "expects a string (\"a/b\") or an array of keys");
    }
    if (!e && b.len == 0 && !rel)
        e = bad(cx, "path is empty");
    if (!e)
        e = path_take(&b, path, len);
    br_buf_fini(&b);
    loc_pop(cx, mark);
    return e;
}

/* Mango field name "a.b" ("\." is a literal dot) appended to prefix. */
static br_err mango_path(struct cc *cx, const char *prefix, size_t plen, const char *f, size_t flen,
                         char **path, size_t *len)
{
    br_buf b, seg;
    br_buf_init(&b, 0);
    br_buf_init(&seg, 0);
    unsigned nseg = path_segs(prefix, plen);
    br_err e = BR_OK;
    if (plen && br_buf_append(&b, prefix, plen))
        e = BR_ENOMEM;
    for (size_t i = 0; !e && i <= flen; i++) {
        if (i == flen || f[i] == '.') {
            e = path_add(cx, &b, (const char *)seg.data, seg.len, &nseg);
            br_buf_reset(&seg);
        } else if (f[i] == '\\' && i + 1 < flen && f[i + 1] == '.') {
            e = br_buf_append_byte(&seg, '.') ? BR_ENOMEM : BR_OK;
            i++;
        } else if (br_buf_append_byte(&seg, (uint8_t)f[i])) {
            e = BR_ENOMEM;
        }
    }
    if (!e)
        e = path_take(&b, path, len);
    br_buf_fini(&seg);
    br_buf_fini(&b);
    return e;
}

/* ---- operands ---- */

static br_err parse_scalar(struct cc *cx, const json_t *v, struct br_qval *out)
{
    memset(out, 0, sizeof *out);
    switch (json_typeof(v)) {
    case JSON_NULL:
        out->type = BR_PV_NULL;
        return BR_OK;
    case JSON_TRUE:
        out->type = BR_PV_TRUE;
        return BR_OK;
    case JSON_FALSE:
        out->type = BR_PV_FALSE;
        return BR_OK;
    case JSON_INTEGER:
        out->type = BR_PV_INT;
        out->i = (int64_t)json_integer_value(v);
        return BR_OK;
    case JSON_REAL:
        out->type = BR_PV_FLOAT;
        out->f = json_real_value(v);
        return BR_OK;
    case JSON_STRING:
        out->type = BR_PV_STRING;
        out->s_len = json_string_length(v);
        out->s = br_memdup(json_string_value(v), out->s_len + 1);
        return out->s ? BR_OK : BR_ENOMEM;
    default:
        return bad(cx, "expects a scalar (arrays and objects are not supported as operands)");
    }
}

static br_err parse_string(struct cc *cx, const json_t *v, const char *what, struct br_qval *out)
{
    if (!json_is_string(v))
        return bad(cx, "%s expects a string", what);
    return parse_scalar(cx, v, out);
}

/* A list of scalars (in, nin): at most BR_QUERY_MAX_IN. */
static br_err parse_list(struct cc *cx, const json_t *v, const char *what, struct br_qnode *n)
{
    if (!json_is_array(v))
        return bad(cx, "%s expects an array", what);
    size_t count = json_array_size(v);
    if (count > BR_QUERY_MAX_IN)
        return bad(cx, "%s list has more than %d values (BR_QUERY_MAX_IN)", what, BR_QUERY_MAX_IN);
    if (count == 0)
        return BR_OK;
    n->vals = br_calloc(count, sizeof *n->vals);
    if (!n->vals)
        return BR_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        size_t m = loc_push(cx, "[%zu]", i);
        br_err e = parse_scalar(cx, json_array_get(v, i), &n->vals[i]);
        loc_pop(cx, m);
        if (e)
            return e;
        n->n_vals++;
    }
    return BR_OK;
}

/* The operand of a leaf op (the node's op and path are set). */
static br_err parse_operand(struct cc *cx, const json_t *v, const char *what, struct br_qnode *n)
{
    switch (n->op) {
    case BR_Q_IN:
    case BR_Q_NIN:
        return parse_list(cx, v, what, n);
    case BR_Q_PREFIX:
        return parse_string(cx, v, what, &n->val);
    case BR_Q_REGEX: {
        br_err e = parse_string(cx, v, what, &n->val);
        if (!e)
            e = re_compile(cx, n->val.s, n->val.s_len, &n->re);
        return e;
    }
    default:
        return parse_scalar(cx, v, &n->val);
    }
}

/* ---- barrel's JSON form ---- */

struct opname {
    const char *name;
    enum br_qop op;
};

/* Accepted spellings; the first of each op is the one br_query_to_json writes. */
static const struct opname OPS[] = {
    {"==", BR_Q_EQ},
    {"eq", BR_Q_EQ},
    {"!=", BR_Q_NE},
    {"ne", BR_Q_NE},
    {"=/=", BR_Q_NE},
    {"<", BR_Q_LT},
    {"lt", BR_Q_LT},
    {"<=", BR_Q_LE},
    {"lte", BR_Q_LE},
    {"=<", BR_Q_LE},
    {">", BR_Q_GT},
    {"gt", BR_Q_GT},
    {">=", BR_Q_GE},
    {"gte", BR_Q_GE},
    {"in", BR_Q_IN},
    {"nin", BR_Q_NIN},
    {"contains", BR_Q_CONTAINS},
    {"prefix", BR_Q_PREFIX},
    {"regex", BR_Q_REGEX},
    {"exists", BR_Q_EXISTS},
    {"missing", BR_Q_MISSING},
};

static bool op_lookup(const char *s, size_t n, enum br_qop *op)
{
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) {
        if (strlen(OPS[i].name) == n && memcmp(OPS[i].name, s, n) == 0) {
            *op = OPS[i].op;
            return true;
        }
    }
    return false;
}

static const char *op_name(enum br_qop op)
{
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (OPS[i].op == op)
            return OPS[i].name;
    return "?";
}

static br_err parse_cond(struct cc *cx, const json_t *v, unsigned depth, bool rel,
                         struct br_qnode *out);

/* {"and": [..]} / {"or": [..]} children. */
static br_err parse_kids(struct cc *cx, const json_t *arr, const char *what, unsigned depth,
                         bool rel, struct br_qnode *n)
{
    size_t mark = loc_push(cx, ".%s", what);
    br_err e = BR_OK;
    size_t count = json_array_size(arr);
    if (!json_is_array(arr))
        e = bad(cx, "expects an array of conditions");
    else if (count > BR_QUERY_MAX_CONDS)
        e = bad(cx, "more than %d conditions (BR_QUERY_MAX_CONDS)", BR_QUERY_MAX_CONDS);
    else
        e = kids_alloc(n, count);
    for (size_t i = 0; !e && i < count; i++) {
        size_t m = loc_push(cx, "[%zu]", i);
        e = parse_cond(cx, json_array_get(arr, i), depth + 1, rel, &n->kids[i]);
        loc_pop(cx, m);
        if (!e)
            n->n_kids++;
    }
    loc_pop(cx, mark);
    return e;
}

static br_err parse_one_kid(struct cc *cx, const json_t *v, const char *what, unsigned depth,
                            bool rel, struct br_qnode *n)
{
    size_t mark = loc_push(cx, ".%s", what);
    br_err e = BR_OK;
    e = kids_alloc(n, 1);
    if (!e)
        e = parse_cond(cx, v, depth + 1, rel, &n->kids[0]);
    if (!e)
        n->n_kids = 1;
    loc_pop(cx, mark);
    return e;
}

static br_err parse_leaf(struct cc *cx, const json_t *v, bool rel, struct br_qnode *n)
{
    const json_t *jop = json_object_get(v, "op");
    const json_t *jval = json_object_get(v, "value");
    br_err e = parse_path(cx, json_object_get(v, "path"), rel, &n->path, &n->path_len);
    if (e)
        return e;
    size_t mark = loc_push(cx, ".op");
    if (!jop) {
        n->op = BR_Q_EQ;
    } else if (!json_is_string(jop)) {
        e = bad(cx, "expects a string");
    } else if (!op_lookup(json_string_value(jop), json_string_length(jop), &n->op)) {
        size_t len = json_string_length(jop);
        e = bad(cx, "unknown operator '%.*s'", (int)(len > 40 ? 40 : len), json_string_value(jop));
    }
    loc_pop(cx, mark);
    if (e)
        return e;
    mark = loc_push(cx, ".value");
    if (n->op == BR_Q_EXISTS || n->op == BR_Q_MISSING) {
        if (jval)
            e = bad(cx, "%s takes no value", op_name(n->op));
    } else if (!jval) {
        loc_pop(cx, mark);
        return bad(cx, "missing 'value'");
    } else {
        e = parse_operand(cx, jval, op_name(n->op), n);
    }
    loc_pop(cx, mark);
    return e;
}

/* The keys a condition object may hold, given which one makes it what it is. */
static const char *const *cond_keys(const json_t *v)
{
    static const char *const k_and[] = {"and", NULL}, *const k_or[] = {"or", NULL},
                             *const k_not[] = {"not", NULL},
                             *const k_elem[] = {"path", "elem_match", NULL},
                             *const k_leaf[] = {"path", "op", "value", NULL};
    if (json_object_get(v, "and"))
        return k_and;
    if (json_object_get(v, "or"))
        return k_or;
    if (json_object_get(v, "not"))
        return k_not;
    if (json_object_get(v, "elem_match"))
        return k_elem;
    return k_leaf;
}

static bool key_in(const char *key, size_t klen, const char *const *set)
{
    for (; *set; set++)
        if (strlen(*set) == klen && memcmp(*set, key, klen) == 0)
            return true;
    return false;
}

/* Every key of object v is in set. */
static br_err keys_check(struct cc *cx, const json_t *v, const char *const *set)
{
    const char *key;
    size_t klen;
    json_t *x;
    json_object_keylen_foreach((json_t *)v, key, klen, x)
    {
        if (!key_in(key, klen, set))
            return bad(cx, "unknown key '%.*s'", (int)(klen > 40 ? 40 : klen), key);
    }
    return BR_OK;
}

/* One condition object into *out (zeroed first; cleaned on failure). */
static br_err parse_cond(struct cc *cx, const json_t *v, unsigned depth, bool rel,
                         struct br_qnode *out)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(v))
        return bad(cx, "expects a condition object");
    br_err e = count_node(cx, depth);
    const char *const *keys = cond_keys(v);
    if (!e)
        e = keys_check(cx, v, keys);
    if (e)
        return e;
    const json_t *a = json_object_get(v, keys[0]);
    if (!strcmp(keys[0], "and") || !strcmp(keys[0], "or")) {
        out->op = keys[0][0] == 'a' ? BR_Q_AND : BR_Q_OR;
        e = parse_kids(cx, a, keys[0], depth, rel, out);
    } else if (!strcmp(keys[0], "not")) {
        out->op = BR_Q_NOT;
        e = parse_one_kid(cx, a, "not", depth, rel, out);
    } else if (keys[1] && !strcmp(keys[1], "elem_match")) {
        out->op = BR_Q_ELEM_MATCH;
        if (!a)
            e = bad(cx, "missing 'path'");
        else
            e = parse_path(cx, a, rel, &out->path, &out->path_len);
        if (!e)
            e = parse_one_kid(cx, json_object_get(v, "elem_match"), "elem_match", depth, true, out);
    } else if (!a) {
        e = bad(cx, "missing 'path' (or 'and', 'or', 'not', 'elem_match')");
    } else {
        e = parse_leaf(cx, v, rel, out);
    }
    if (e)
        node_fini(out);
    return e;
}

static br_err get_count(struct cc *cx, const json_t *v, const char *what, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return bad(cx, "%s expects a non-negative integer", what);
    *out = (uint64_t)json_integer_value(v);
    return BR_OK;
}

static br_err dup_string(struct cc *cx, const json_t *v, const char *what, char **out)
{
    if (!json_is_string(v))
        return bad(cx, "%s expects a string", what);
    size_t n = json_string_length(v);
    if (memchr(json_string_value(v), '\0', n))
        return bad(cx, "%s contains NUL", what);
    *out = br_strndup(json_string_value(v), n);
    return *out ? BR_OK : BR_ENOMEM;
}

/* "fields": an array of non-empty strings, kept as given. */
static br_err parse_fields(struct cc *cx, const json_t *v, br_query *q)
{
    if (!json_is_array(v))
        return bad(cx, "fields expects an array of strings");
    size_t count = json_array_size(v);
    if (count > MAX_LIST)
        return bad(cx, "fields has more than %d entries", MAX_LIST);
    if (count == 0)
        return BR_OK; /* CouchDB: [] is every field */
    q->fields = br_calloc(count, sizeof *q->fields);
    if (!q->fields)
        return BR_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        const json_t *f = json_array_get(v, i);
        size_t m = loc_push(cx, "fields[%zu]", i);
        br_err e = json_string_length(f) == 0 && json_is_string(f)
                       ? bad(cx, "empty field name")
                       : dup_string(cx, f, "a field", &q->fields[i]);
        loc_pop(cx, m);
        if (e)
            return e;
        q->n_fields++;
    }
    return BR_OK;
}

static br_err order_alloc(struct cc *cx, const json_t *v, const char *what, br_query *q)
{
    if (!json_is_array(v))
        return bad(cx, "%s expects an array", what);
    size_t count = json_array_size(v);
    if (count > MAX_LIST)
        return bad(cx, "%s has more than %d entries", what, MAX_LIST);
    if (count == 0)
        return BR_OK;
    q->order = br_calloc(count, sizeof *q->order);
    return q->order ? BR_OK : BR_ENOMEM;
}

static br_err parse_order(struct cc *cx, const json_t *v, br_query *q)
{
    static const char *const keys[] = {"path", "dir", NULL};
    br_err e = order_alloc(cx, v, "order_by", q);
    for (size_t i = 0; !e && i < json_array_size(v); i++) {
        const json_t *o = json_array_get(v, i);
        const json_t *dir = json_object_get(o, "dir");
        struct br_qorder *ord = &q->order[i];
        size_t m = loc_push(cx, "order_by[%zu]", i);
        if (!json_is_object(o))
            e = bad(cx, "expects {\"path\": P, \"dir\": \"asc\"|\"desc\"}");
        else
            e = keys_check(cx, o, keys);
        if (!e && dir &&
            !(json_is_string(dir) &&
              (!strcmp(json_string_value(dir), "asc") || !strcmp(json_string_value(dir), "desc"))))
            e = bad(cx, "dir expects \"asc\" or \"desc\"");
        if (!e)
            e = parse_path(cx, json_object_get(o, "path"), false, &ord->path, &ord->path_len);
        if (!e) {
            ord->desc = dir && !strcmp(json_string_value(dir), "desc");
            q->n_order++;
        }
        loc_pop(cx, m);
    }
    return e;
}

static br_err parse_id_range(struct cc *cx, const json_t *v, br_query *q)
{
    if (!json_is_array(v) || json_array_size(v) != 2)
        return bad(cx, "id_range expects [start|null, end|null]");
    const json_t *s = json_array_get(v, 0), *t = json_array_get(v, 1);
    if ((!json_is_null(s) && !json_is_string(s)) || (!json_is_null(t) && !json_is_string(t)))
        return bad(cx, "id_range expects [start|null, end|null]");
    br_err e = BR_OK;
    if (json_is_null(s) && json_is_null(t)) { /* every id: the same as an empty prefix */
        q->id_prefix = br_strndup("", 0);
        return q->id_prefix ? BR_OK : BR_ENOMEM;
    }
    if (json_is_string(s))
        e = dup_string(cx, s, "id_range start", &q->id_start);
    if (!e && json_is_string(t))
        e = dup_string(cx, t, "id_range end", &q->id_end);
    return e;
}

static br_err compile_body(struct cc *cx, const json_t *spec, br_query *q)
{
    static const char *const keys[] = {"where",        "order_by",  "limit",    "offset",
                                       "include_docs", "id_prefix", "id_range", "fields",
                                       "bookmark",     NULL};
    const json_t *v;
    br_err e = keys_check(cx, spec, keys);
    if (e)
        return e;
    const json_t *where = json_object_get(spec, "where");
    const json_t *idp = json_object_get(spec, "id_prefix");
    const json_t *idr = json_object_get(spec, "id_range");
    if (idp && idr)
        return bad(cx, "id_prefix and id_range are exclusive");
    if ((idp || idr) && where)
        return bad(cx, "where cannot be combined with id_prefix or id_range (id_scan_with_where)");
    if (!idp && !idr && !where)
        return bad(cx, "missing clause 'where' (missing_clause)");
    if (idp)
        e = dup_string(cx, idp, "id_prefix", &q->id_prefix);
    if (!e && idr)
        e = parse_id_range(cx, idr, q);
    if (!e && where) {
        size_t mark = loc_push(cx, "where");
        size_t count = json_array_size(where);
        if (!json_is_array(where))
            e = bad(cx, "expects an array of conditions");
        else if (count > BR_QUERY_MAX_CONDS)
            e = bad(cx, "more than %d conditions (BR_QUERY_MAX_CONDS)", BR_QUERY_MAX_CONDS);
        else
            e = kids_alloc(&q->root, count);
        q->root.op = count ? BR_Q_AND : BR_Q_TRUE;
        for (size_t i = 0; !e && i < count; i++) {
            size_t m = loc_push(cx, "[%zu]", i);
            e = parse_cond(cx, json_array_get(where, i), 0, false, &q->root.kids[i]);
            loc_pop(cx, m);
            if (!e)
                q->root.n_kids++;
        }
        loc_pop(cx, mark);
    }
    v = json_object_get(spec, "order_by");
    if (!e && v)
        e = parse_order(cx, v, q);
    v = json_object_get(spec, "limit");
    if (!e && v)
        e = get_count(cx, v, "limit", &q->limit);
    v = json_object_get(spec, "offset");
    if (!e && v)
        e = get_count(cx, v, "offset", &q->offset);
    v = json_object_get(spec, "include_docs");
    if (!e && v && !json_is_boolean(v))
        e = bad(cx, "include_docs expects true or false");
    if (!e && v)
        q->include_docs = json_is_true(v);
    v = json_object_get(spec, "fields");
    if (!e && v)
        e = parse_fields(cx, v, q);
    v = json_object_get(spec, "bookmark");
    if (!e && v)
        e = dup_string(cx, v, "bookmark", &q->bookmark);
    return e;
}

br_err br_query_compile(const json_t *spec, br_query **out, struct br_errbuf *eb)
{
    struct cc cx = {.eb = eb};
    if (!json_is_object(spec))
        return br_fail(eb, BR_EINVAL, "query spec must be a JSON object (invalid_spec)");
    br_query *q = br_calloc(1, sizeof *q);
    if (!q)
        return BR_ENOMEM;
    q->include_docs = true;
    br_err e = compile_body(&cx, spec, q);
    if (e) {
        br_query_free(q);
        return e;
    }
    *out = q;
    return BR_OK;
}

/* ---- Mango ---- */

static br_err m_object(struct cc *cx, const json_t *obj, const char *prefix, size_t plen, bool elem,
                       unsigned depth, struct br_qnode *out);

static br_err m_new_leaf(struct cc *cx, enum br_qop op, const char *prefix, size_t plen,
                         unsigned depth, struct br_qnode *out)
{
    br_err e = count_node(cx, depth);
    if (e)
        return e;
    out->op = op;
    out->path = br_strndup(prefix, plen);
    out->path_len = plen;
    return out->path ? BR_OK : BR_ENOMEM;
}

/* $and / $or (and the OR of $nor): an array of selector objects at prefix. */
static br_err m_list(struct cc *cx, const json_t *arr, enum br_qop op, const char *prefix,
                     size_t plen, bool elem, unsigned depth, struct br_qnode *out)
{
    br_err e = count_node(cx, depth);
    if (e)
        return e;
    out->op = op;
    size_t count = json_array_size(arr);
    if (!json_is_array(arr))
        return bad(cx, "expects an array of selectors");
    if (count > BR_QUERY_MAX_CONDS)
        return bad(cx, "more than %d conditions (BR_QUERY_MAX_CONDS)", BR_QUERY_MAX_CONDS);
    e = kids_alloc(out, count);
    for (size_t i = 0; !e && i < count; i++) {
        const json_t *s = json_array_get(arr, i);
        size_t m = loc_push(cx, "[%zu]", i);
        if (!json_is_object(s))
            e = bad(cx, "expects a selector object");
        else
            e = m_object(cx, s, prefix, plen, elem, depth + 1, &out->kids[i]);
        loc_pop(cx, m);
        if (!e)
            out->n_kids++;
    }
    return e;
}

/* A node with one child (NOT, ELEM_MATCH), the child made by m_object. */
static br_err m_wrap(struct cc *cx, enum br_qop op, const json_t *arg, const char *prefix,
                     size_t plen, bool elem, unsigned depth, struct br_qnode *out)
{
    br_err e = count_node(cx, depth);
    if (e)
        return e;
    out->op = op;
    if (!json_is_object(arg))
        return bad(cx, "expects a selector object");
    if (op == BR_Q_ELEM_MATCH) {
        /* the child's paths start at the element */
        out->path = br_strndup(prefix, plen);
        if (!out->path)
            return BR_ENOMEM;
        out->path_len = plen;
        prefix = "";
        plen = 0;
        elem = true;
    }
    e = kids_alloc(out, 1);
    if (e)
        return e;
    e = m_object(cx, arg, prefix, plen, elem, depth + 1, &out->kids[0]);
    if (!e)
        out->n_kids = 1;
    return e;
}

enum mkind { M_CMP, M_LIST, M_EXISTS, M_STRING, M_AND, M_OR, M_NOR, M_NOT, M_ELEM, M_ALL };

struct mop {
    const char *name;
    enum mkind kind;
    enum br_qop op;
};

static const struct mop MOPS[] = {
    {"$eq", M_CMP, BR_Q_EQ},
    {"$ne", M_CMP, BR_Q_NE},
    {"$gt", M_CMP, BR_Q_GT},
    {"$gte", M_CMP, BR_Q_GE},
    {"$lt", M_CMP, BR_Q_LT},
    {"$lte", M_CMP, BR_Q_LE},
    {"$in", M_LIST, BR_Q_IN},
    {"$nin", M_LIST, BR_Q_NIN},
    {"$exists", M_EXISTS, BR_Q_EXISTS},
    {"$regex", M_STRING, BR_Q_REGEX},
    {"$beginsWith", M_STRING, BR_Q_PREFIX},
    {"$and", M_AND, BR_Q_AND},
    {"$or", M_OR, BR_Q_OR},
    {"$nor", M_NOR, BR_Q_NOT},
    {"$not", M_NOT, BR_Q_NOT},
    {"$elemMatch", M_ELEM, BR_Q_ELEM_MATCH},
    {"$all", M_ALL, BR_Q_AND},
};

/* $all: the AND of "contains" for each value ([] matches nothing, as CouchDB). */
static br_err m_all(struct cc *cx, const json_t *arr, const char *prefix, size_t plen,
                    unsigned depth, struct br_qnode *out)
{
    if (!json_is_array(arr))
        return bad(cx, "$all expects an array");
    size_t count = json_array_size(arr);
    if (count > BR_QUERY_MAX_IN)
        return bad(cx, "$all list has more than %d values (BR_QUERY_MAX_IN)", BR_QUERY_MAX_IN);
    br_err e = count_node(cx, depth);
    if (e)
        return e;
    out->op = count ? BR_Q_AND : BR_Q_OR;
    e = kids_alloc(out, count);
    for (size_t i = 0; !e && i < count; i++) {
        size_t m = loc_push(cx, "[%zu]", i);
        struct br_qnode *k = &out->kids[i];
        e = m_new_leaf(cx, BR_Q_CONTAINS, prefix, plen, depth + 1, k);
        if (!e)
            e = parse_scalar(cx, json_array_get(arr, i), &k->val);
        loc_pop(cx, m);
        out->n_kids++; /* a partly built kid is freed with the rest */
    }
    return e;
}

/* One operator key at prefix. */
static br_err m_operator(struct cc *cx, const char *name, const json_t *arg, const char *prefix,
                         size_t plen, bool elem, unsigned depth, struct br_qnode *out)
{
    const struct mop *mo = NULL;
    for (size_t i = 0; i < sizeof MOPS / sizeof MOPS[0]; i++)
        if (!strcmp(MOPS[i].name, name))
            mo = &MOPS[i];
    if (!mo)
        return bad(cx, "unsupported operator: %.40s", name);
    bool combination =
        mo->kind == M_AND || mo->kind == M_OR || mo->kind == M_NOR || mo->kind == M_NOT;
    if (!combination && plen == 0 && !elem)
        return bad(cx, "operator %s needs a field", name);
    size_t mark = loc_push(cx, ".%s", name);
    br_err e = BR_OK;
    switch (mo->kind) {
    case M_CMP:
    case M_LIST:
    case M_STRING:
        e = m_new_leaf(cx, mo->op, prefix, plen, depth, out);
        if (!e)
            e = parse_operand(cx, arg, name, out);
        break;
    case M_EXISTS:
        if (!json_is_boolean(arg))
            e = bad(cx, "expects true or false");
        else
            e = m_new_leaf(cx, json_is_true(arg) ? BR_Q_EXISTS : BR_Q_MISSING, prefix, plen, depth,
                           out);
        break;
    case M_AND:
    case M_OR:
        e = m_list(cx, arg, mo->op, prefix, plen, elem, depth, out);
        break;
    case M_NOR:
        e = count_node(cx, depth);
        out->op = BR_Q_NOT;
        if (!e)
            e = kids_alloc(out, 1);
        if (!e) {
            out->n_kids = 1;
            e = m_list(cx, arg, BR_Q_OR, prefix, plen, elem, depth + 1, &out->kids[0]);
        }
        break;
    case M_NOT:
    case M_ELEM:
        e = m_wrap(cx, mo->op, arg, prefix, plen, elem, depth, out);
        break;
    case M_ALL:
        e = m_all(cx, arg, prefix, plen, depth, out);
        break;
    }
    loc_pop(cx, mark);
    return e;
}

/* One key of a selector object: an operator, or a field whose value is a scalar (equality) or
 * a selector object at the longer path. */
static br_err m_key(struct cc *cx, const char *key, size_t klen, const json_t *v,
                    const char *prefix, size_t plen, bool elem, unsigned depth,
                    struct br_qnode *out)
{
    if (klen && key[0] == '$')
        return m_operator(cx, key, v, prefix, plen, elem, depth, out);
    size_t mark = loc_push(cx, ".%.*s", (int)(klen > 60 ? 60 : klen), key);
    char *path = NULL;
    size_t len = 0;
    br_err e = BR_OK;
    if (plen == 0 && !elem && klen && key[0] == '_')
        e = bad(cx, "fields starting with '_' are not queryable (QRY-35)");
    else if (memchr(key, '\0', klen))
        e = bad(cx, "field name contains NUL");
    else
        e = mango_path(cx, prefix, plen, key, klen, &path, &len);
    if (!e) {
        if (json_is_object(v)) {
            if (json_object_size(v) == 0)
                e = bad(cx, "{} (equality with an object) is not supported");
            else
                e = m_object(cx, v, path, len, elem, depth, out);
        } else if (json_is_array(v)) {
            e = bad(cx, "equality with an array is not supported");
        } else {
            e = m_new_leaf(cx, BR_Q_EQ, path, len, depth, out);
            if (!e)
                e = parse_scalar(cx, v, &out->val);
        }
    }
    br_free(path);
    loc_pop(cx, mark);
    return e;
}

/* A selector object at prefix: its one key, or the AND of its keys ({} is an empty AND). */
static br_err m_object(struct cc *cx, const json_t *obj, const char *prefix, size_t plen, bool elem,
                       unsigned depth, struct br_qnode *out)
{
    memset(out, 0, sizeof *out);
    size_t count = json_object_size(obj);
    const char *key;
    size_t klen;
    json_t *v;
    br_err e = BR_OK;
    if (count == 1) {
        json_object_keylen_foreach((json_t *)obj, key, klen, v)
        {
            e = m_key(cx, key, klen, v, prefix, plen, elem, depth, out);
        }
    } else {
        e = count_node(cx, depth);
        out->op = BR_Q_AND;
        if (!e && count > BR_QUERY_MAX_CONDS)
            e = bad(cx, "more than %d conditions (BR_QUERY_MAX_CONDS)", BR_QUERY_MAX_CONDS);
        if (!e)
            e = kids_alloc(out, count);
        if (!e) {
            json_object_keylen_foreach((json_t *)obj, key, klen, v)
            {
                e = m_key(cx, key, klen, v, prefix, plen, elem, depth + 1, &out->kids[out->n_kids]);
                out->n_kids++; /* freed with the rest, even if partly built */
                if (e)
                    break;
            }
        }
    }
    if (e)
        node_fini(out);
    return e;
}

/* sort: ["a", {"b": "desc"}] */
static br_err m_sort(struct cc *cx, const json_t *v, br_query *q)
{
    br_err e = order_alloc(cx, v, "sort", q);
    for (size_t i = 0; !e && i < json_array_size(v); i++) {
        const json_t *s = json_array_get(v, i);
        struct br_qorder *ord = &q->order[i];
        const char *field = NULL;
        size_t flen = 0;
        size_t m = loc_push(cx, "sort[%zu]", i);
        if (json_is_string(s)) {
            field = json_string_value(s);
            flen = json_string_length(s);
        } else if (json_is_object(s) && json_object_size(s) == 1) {
            const char *key;
            size_t klen;
            json_t *dir;
            json_object_keylen_foreach((json_t *)s, key, klen, dir)
            {
                field = key;
                flen = klen;
                if (!json_is_string(dir) || (strcmp(json_string_value(dir), "asc") &&
                                             strcmp(json_string_value(dir), "desc")))
                    e = bad(cx, "direction expects \"asc\" or \"desc\"");
                else
                    ord->desc = !strcmp(json_string_value(dir), "desc");
            }
        } else {
            e = bad(cx, "expects a field name or {\"field\": \"asc\"|\"desc\"}");
        }
        if (!e && memchr(field, '\0', flen))
            e = bad(cx, "field name contains NUL");
        if (!e)
            e = mango_path(cx, "", 0, field, flen, &ord->path, &ord->path_len);
        if (!e)
            q->n_order++;
        loc_pop(cx, m);
    }
    return e;
}

static br_err mango_body(struct cc *cx, const json_t *find, br_query *q)
{
    /* CouchDB's _find keys; the ones after "bookmark" are accepted and ignored here (index
     * choice, quorum and statistics belong to the planner and the HTTP layer). */
    static const char *const keys[] = {
        "selector", "fields",    "sort",   "limit",  "skip",  "bookmark",        "use_index",
        "r",        "conflicts", "update", "stable", "stale", "execution_stats", "allow_fallback",
        NULL};
    br_err e = keys_check(cx, find, keys);
    if (e)
        return e;
    const json_t *sel = json_object_get(find, "selector"), *v;
    if (!sel)
        return bad(cx, "missing required key 'selector'");
    size_t mark = loc_push(cx, "selector");
    if (!json_is_object(sel))
        e = bad(cx, "expects an object");
    else if (json_object_size(sel) == 0)
        q->root.op = BR_Q_TRUE;
    else
        e = m_object(cx, sel, "", 0, false, 0, &q->root);
    loc_pop(cx, mark);
    q->limit = MANGO_DEFAULT_LIMIT;
    v = json_object_get(find, "limit");
    if (!e && v)
        e = get_count(cx, v, "limit", &q->limit);
    v = json_object_get(find, "skip");
    if (!e && v)
        e = get_count(cx, v, "skip", &q->offset);
    v = json_object_get(find, "sort");
    if (!e && v)
        e = m_sort(cx, v, q);
    v = json_object_get(find, "fields");
    if (!e && v)
        e = parse_fields(cx, v, q);
    v = json_object_get(find, "bookmark");
    if (!e && v)
        e = dup_string(cx, v, "bookmark", &q->bookmark);
    return e;
}

br_err br_query_from_mango(const json_t *find, br_query **out, struct br_errbuf *eb)
{
    struct cc cx = {.eb = eb};
    if (!json_is_object(find))
        return br_fail(eb, BR_EINVAL, "_find body must be a JSON object");
    br_query *q = br_calloc(1, sizeof *q);
    if (!q)
        return BR_ENOMEM;
    q->include_docs = true;
    br_err e = mango_body(&cx, find, q);
    if (e) {
        br_query_free(q);
        return e;
    }
    *out = q;
    return BR_OK;
}

/* ---- evaluation ---- */

enum { W_GO, W_STOP, W_BAD }; /* keep walking, answer known, malformed body */

struct ectx {
    pcre2_match_data *md; /* created on the first regex test of a br_qnode_match call */
    bool stored;          /* a stored record's body (query_match_stored): read with rd_next */
};

/* The state of one leaf condition's walk. */
struct leaf {
    const struct br_qnode *n;
    struct ectx *cx;
    bool found; /* the path reached some value */
    bool hit;   /* some value satisfied the test (for != and nin: equalled) */
};

static int eval(const struct br_qnode *n, const uint8_t *p, size_t len, bool root, unsigned depth,
                struct ectx *cx);

/* A document number: an int64, a uint64 above INT64_MAX, or a double. */
struct num {
    enum { N_INT, N_BIG, N_FLOAT } kind;
    int64_t i;
    uint64_t u;
    double f;
};

static bool item_num(const struct br_cbor_item *it, struct num *n)
{
    switch (it->type) {
    case BR_CBOR_UINT:
        if (it->u <= INT64_MAX) {
            n->kind = N_INT;
            n->i = (int64_t)it->u;
        } else {
            n->kind = N_BIG;
            n->u = it->u;
        }
        return true;
    case BR_CBOR_NEGINT:
        if (it->u <= INT64_MAX) {
            n->kind = N_INT;
            n->i = -1 - (int64_t)it->u;
        } else { /* below INT64_MIN: not a document value, compare approximately */
            n->kind = N_FLOAT;
            n->f = -1.0 - (double)it->u;
        }
        return true;
    case BR_CBOR_FLOAT:
        n->kind = N_FLOAT;
        n->f = it->f;
        return true;
    default:
        return false;
    }
}

#define CMP_NONE 2 /* not comparable */

static int sign(int c)
{
    return c == CMP_NONE ? c : -c;
}

/* Exact comparisons across integer and float (no rounding through double). */
static int cmp_i_f(int64_t a, double b)
{
    if (isnan(b))
        return CMP_NONE;
    if (b >= 9223372036854775808.0)
        return -1;
    if (b < -9223372036854775808.0)
        return 1;
    int64_t bi = (int64_t)b; /* truncates toward zero; in range */
    if (a != bi)
        return a < bi ? -1 : 1;
    double frac = b - (double)bi;
    return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

static int cmp_u_f(uint64_t a, double b)
{
    if (isnan(b))
        return CMP_NONE;
    if (b >= 18446744073709551616.0)
        return -1;
    if (b < 9223372036854775808.0)
        return 1;
    uint64_t bu = (uint64_t)b;
    if (a != bu)
        return a < bu ? -1 : 1;
    return b > (double)bu ? -1 : 0;
}

static int cmp_f_f(double a, double b)
{
    if (a < b)
        return -1;
    if (a > b)
        return 1;
    return a == b ? 0 : CMP_NONE;
}

static int cmp_num(const struct num *d, const struct br_qval *q)
{
    if (q->type == BR_PV_INT) {
        switch (d->kind) {
        case N_INT:
            return d->i < q->i ? -1 : d->i > q->i;
        case N_BIG:
            return 1;
        case N_FLOAT:
            return sign(cmp_i_f(q->i, d->f));
        }
    }
    switch (d->kind) {
    case N_INT:
        return cmp_i_f(d->i, q->f);
    case N_BIG:
        return cmp_u_f(d->u, q->f);
    case N_FLOAT:
        return cmp_f_f(d->f, q->f);
    }
    return CMP_NONE;
}

/* Compare a document scalar with an operand: -1, 0, 1, or CMP_NONE across types. Booleans and
 * null give 0 when equal, CMP_NONE otherwise. */
static int value_cmp(const struct br_cbor_item *it, const struct br_qval *q)
{
    struct num d;
    switch (q->type) {
    case BR_PV_INT:
    case BR_PV_FLOAT:
        return item_num(it, &d) ? cmp_num(&d, q) : CMP_NONE;
    case BR_PV_STRING: {
        if (it->type != BR_CBOR_TEXT)
            return CMP_NONE;
        size_t n = it->len < q->s_len ? it->len : q->s_len;
        int c = n ? memcmp(it->str, q->s, n) : 0;
        if (c)
            return c < 0 ? -1 : 1;
        return it->len < q->s_len ? -1 : it->len > q->s_len;
    }
    case BR_PV_NULL:
        return it->type == BR_CBOR_NULL ? 0 : CMP_NONE;
    case BR_PV_TRUE:
        return it->type == BR_CBOR_BOOL && it->b ? 0 : CMP_NONE;
    case BR_PV_FALSE:
        return it->type == BR_CBOR_BOOL && !it->b ? 0 : CMP_NONE;
    }
    return CMP_NONE;
}

static bool ordered(const struct br_qval *q)
{
    return q->type == BR_PV_INT || q->type == BR_PV_FLOAT || q->type == BR_PV_STRING;
}

static int re_test(struct ectx *cx, struct qre *re, const uint8_t *s, size_t n)
{
    if (!re)
        return 0;
    if (!cx->md)
        cx->md = pcre2_match_data_create(1, NULL);
    if (!cx->md)
        return -1;
    int rc = pcre2_match(re->code, s, n, 0, PCRE2_NO_UTF_CHECK, cx->md, re->mctx);
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
        atomic_fetch_add(&re->limit_hits, 1);
    return rc == PCRE2_ERROR_NOMEMORY ? -1 : 0;
}

/* Test one scalar reached at the path (elem: it is an element of an array there). */
static int test(struct leaf *lf, const struct br_cbor_item *it, bool elem)
{
    const struct br_qnode *n = lf->n;
    int c;
    switch (n->op) {
    case BR_Q_EQ:
    case BR_Q_NE:
        return value_cmp(it, &n->val) == 0;
    case BR_Q_CONTAINS:
        return elem && value_cmp(it, &n->val) == 0;
    case BR_Q_LT:
        return ordered(&n->val) && value_cmp(it, &n->val) == -1;
    case BR_Q_LE:
        c = value_cmp(it, &n->val);
        return ordered(&n->val) && (c == -1 || c == 0);
    case BR_Q_GT:
        return ordered(&n->val) && value_cmp(it, &n->val) == 1;
    case BR_Q_GE:
        c = value_cmp(it, &n->val);
        return ordered(&n->val) && (c == 1 || c == 0);
    case BR_Q_IN:
    case BR_Q_NIN:
        for (size_t i = 0; i < n->n_vals; i++)
            if (value_cmp(it, &n->vals[i]) == 0)
                return 1;
        return 0;
    case BR_Q_PREFIX:
        return n->val.type == BR_PV_STRING && it->type == BR_CBOR_TEXT && it->len >= n->val.s_len &&
               (n->val.s_len == 0 || memcmp(it->str, n->val.s, n->val.s_len) == 0);
    case BR_Q_REGEX:
        return it->type == BR_CBOR_TEXT ? re_test(lf->cx, n->re, it->str, it->len) : 0;
    default:
        return 0;
    }
}

/* ---- reading bodies ----
 *
 * Bodies from clients and peers (br_query_match, br_qnode_match) are read with br_cbor_next,
 * the one decoder every outside byte goes through. The bodies of stored records, validated when
 * they were written, are the per-candidate work of find (query_match_stored), and are read with
 * rd_next: the plain items documents are made of (integers, single and double floats, false,
 * true, null, ASCII text, byte strings, definite containers) are decoded here, anything else
 * (non-ASCII text, half floats, tags, indefinite lengths, malformed or truncated heads) goes to
 * br_cbor_next, which decodes or rejects it. So the items and errors are br_cbor_next's, without
 * its libcbor callbacks and UTF-8 pass, which were half the instructions of checking a
 * candidate's body (bench/query_bench.c part 1 under callgrind). */

/* Are the n bytes at s all below 0x80? Eight at a time (the last eight overlapping), two
 * overlapping fours, or one by one. */
static bool ascii(const uint8_t *s, size_t n)
{
    uint64_t any = 0, w;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&w, s + i, 8);
            any |= w;
        }
        memcpy(&w, s + n - 8, 8);
        any |= w;
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        any = a | b;
    } else {
        for (size_t i = 0; i < n; i++)
            any |= s[i];
    }
    return (any & 0x8080808080808080ull) == 0;
}

static br_err rd_next(struct br_cbor_reader *r, struct br_cbor_item *it)
{
    const uint8_t *p = r->p;
    if (p >= r->end)
        return BR_EPROTO;
    size_t avail = (size_t)(r->end - p), hl = 1;
    unsigned mt = p[0] >> 5, ai = p[0] & 0x1f;
    uint64_t v = ai;
    if (ai >= 24) { /* the argument follows in 1, 2, 4 or 8 bytes */
        size_t k = ai <= 27 ? (size_t)1 << (ai - 24) : 0;
        if (!k || avail <= k)
            return br_cbor_next(r, it);
        v = 0;
        for (size_t i = 1; i <= k; i++)
            v = v << 8 | p[i];
        hl = 1 + k;
    }
    switch (mt) {
    case 0:
    case 1:
        it->type = mt ? BR_CBOR_NEGINT : BR_CBOR_UINT;
        it->u = v;
        break;
    case 2:
    case 3:
        if (v > avail - hl || (mt == 3 && !ascii(p + hl, (size_t)v)))
            return br_cbor_next(r, it);
        it->type = mt == 3 ? BR_CBOR_TEXT : BR_CBOR_BYTES;
        it->str = p + hl;
        it->len = (size_t)v;
        hl += (size_t)v;
        break;
    case 4: /* every element needs at least one byte, every pair two */
    case 5:
        if (v > (avail - hl) / (mt == 5 ? 2 : 1))
            return br_cbor_next(r, it);
        it->type = mt == 5 ? BR_CBOR_MAP : BR_CBOR_ARRAY;
        it->len = (size_t)v;
        break;
    case 7:
        if (ai == 20 || ai == 21) {
            it->type = BR_CBOR_BOOL;
            it->b = ai == 21;
        } else if (ai == 22) {
            it->type = BR_CBOR_NULL;
        } else if (ai == 26) {
            uint32_t u = (uint32_t)v;
            float f;
            memcpy(&f, &u, sizeof f);
            it->type = BR_CBOR_FLOAT;
            it->f = f;
        } else if (ai == 27) {
            it->type = BR_CBOR_FLOAT;
            memcpy(&it->f, &v, sizeof it->f);
        } else {
            return br_cbor_next(r, it);
        }
        break;
    default:
        return br_cbor_next(r, it);
    }
    it->start = p;
    r->p = p + hl;
    return BR_OK;
}

/* br_cbor_skip(r, BR_CBOR_MAX_DEPTH) with rd_next (on an error the reader is left anywhere). */
static br_err rd_skip(struct br_cbor_reader *r)
{
    struct br_cbor_item it;
    if (rd_next(r, &it))
        return BR_EPROTO;
    uint64_t left[BR_CBOR_MAX_DEPTH]; /* items still to read in each open container */
    unsigned depth = 0;
    for (;;) {
        if (it.type == BR_CBOR_ARRAY || it.type == BR_CBOR_MAP) {
            if (depth >= BR_CBOR_MAX_DEPTH)
                return BR_EPROTO;
            /* len <= bytes left (rd_next checked), so 2 len cannot overflow */
            left[depth++] = it.type == BR_CBOR_MAP ? 2 * (uint64_t)it.len : it.len;
        }
        while (depth && left[depth - 1] == 0)
            depth--;
        if (!depth)
            return BR_OK;
        if (rd_next(r, &it))
            return BR_EPROTO;
        left[depth - 1]--;
    }
}

static br_err item_next(const struct ectx *cx, struct br_cbor_reader *r, struct br_cbor_item *it)
{
    return cx->stored ? rd_next(r, it) : br_cbor_next(r, it);
}

static br_err item_skip(const struct ectx *cx, struct br_cbor_reader *r)
{
    return cx->stored ? rd_skip(r) : br_cbor_skip(r, BR_CBOR_MAX_DEPTH);
}

/* Skip the rest of a container whose head `it` was just read. */
static int skip_rest(const struct leaf *lf, struct br_cbor_reader *r, const struct br_cbor_item *it)
{
    r->p = it->start;
    return item_skip(lf->cx, r) ? W_BAD : W_GO;
}

/* A value at the end of the path: scalars are tested, arrays flattened, maps skipped. */
static int reach_value(struct leaf *lf, struct br_cbor_reader *r, const struct br_cbor_item *it,
                       unsigned depth, bool elem)
{
    if (it->type == BR_CBOR_MAP)
        return skip_rest(lf, r, it);
    if (it->type != BR_CBOR_ARRAY) {
        int t = test(lf, it, elem);
        if (t < 0)
            return W_BAD;
        if (t)
            lf->hit = true;
        return t ? W_STOP : W_GO;
    }
    if (depth >= BR_CBOR_MAX_DEPTH)
        return W_BAD;
    for (uint64_t i = 0; i < it->len; i++) {
        struct br_cbor_item e;
        if (item_next(lf->cx, r, &e))
            return W_BAD;
        int rc = reach_value(lf, r, &e, depth + 1, true);
        if (rc != W_GO)
            return rc;
    }
    return W_GO;
}

/* $elemMatch: the child evaluated against each element of the array at the path. */
static int reach_elems(struct leaf *lf, struct br_cbor_reader *r, const struct br_cbor_item *it,
                       unsigned depth)
{
    if (it->type == BR_CBOR_MAP)
        return skip_rest(lf, r, it);
    if (it->type != BR_CBOR_ARRAY)
        return W_GO;
    for (uint64_t i = 0; i < it->len; i++) {
        const uint8_t *s = r->p;
        if (item_skip(lf->cx, r))
            return W_BAD;
        int m = lf->n->n_kids
                    ? eval(&lf->n->kids[0], s, (size_t)(r->p - s), false, depth + 1, lf->cx)
                    : 1;
        if (m < 0)
            return W_BAD;
        if (m) {
            lf->hit = true;
            return W_STOP;
        }
    }
    return W_GO;
}

static int reach(struct leaf *lf, struct br_cbor_reader *r, const struct br_cbor_item *it,
                 unsigned depth)
{
    lf->found = true;
    switch (lf->n->op) {
    case BR_Q_EXISTS:
    case BR_Q_MISSING:
        return W_STOP;
    case BR_Q_ELEM_MATCH:
        return reach_elems(lf, r, it, depth);
    default:
        return reach_value(lf, r, it, depth, false);
    }
}

/* A canonical decimal array index ("0", "17"), or -1. */
static long seg_index(const char *s, size_t n)
{
    if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Is key k after segment s in canonical key order (shorter first, then bytewise)? */
static bool key_after(const struct br_cbor_item *k, const char *s, size_t n)
{
    if (k->len != n)
        return k->len > n;
    return n && memcmp(k->str, s, n) > 0;
}

/* Follow the segments [seg, end) from the item at r, at nesting `depth`. pos: the reader must
 * end after the item (inside arrays); otherwise a map lookup may stop early. root: the
 * document's top level, whose "_" keys are unreachable (QRY-35). */
static int walk(struct leaf *lf, struct br_cbor_reader *r, const char *seg, const char *end,
                unsigned depth, bool pos, bool root)
{
    struct br_cbor_item it;
    if (depth > BR_CBOR_MAX_DEPTH || item_next(lf->cx, r, &it))
        return W_BAD;
    if (seg == end)
        return reach(lf, r, &it, depth);
    const char *sl = memchr(seg, '/', (size_t)(end - seg));
    size_t slen = (size_t)((sl ? sl : end) - seg);
    const char *next = sl ? sl + 1 : end;
    if (it.type == BR_CBOR_MAP) {
        bool hidden = root && slen && seg[0] == '_';
        for (uint64_t i = 0; i < it.len; i++) {
            struct br_cbor_item k;
            if (item_next(lf->cx, r, &k) || k.type != BR_CBOR_TEXT)
                return W_BAD;
            if (!hidden && k.len == slen && (slen == 0 || memcmp(k.str, seg, slen) == 0)) {
                int rc = walk(lf, r, next, end, depth + 1, pos, false);
                if (rc != W_GO || !pos)
                    return rc;
                continue;
            }
            if (!pos && key_after(&k, seg, slen))
                return W_GO;
            if (item_skip(lf->cx, r))
                return W_BAD;
        }
        return W_GO;
    }
    if (it.type == BR_CBOR_ARRAY) {
        long idx = seg_index(seg, slen);
        for (uint64_t i = 0; i < it.len; i++) {
            if (idx >= 0 && (uint64_t)idx == i) { /* by position... */
                struct br_cbor_reader save = *r;
                int rc = walk(lf, r, next, end, depth + 1, true, false);
                if (rc != W_GO)
                    return rc;
                *r = save;
            }
            /* ...and by membership: the same segment applies to the element */
            int rc = walk(lf, r, seg, end, depth + 1, true, false);
            if (rc != W_GO)
                return rc;
        }
        return W_GO;
    }
    return W_GO; /* a scalar (already read) has no keys */
}

/* -1: malformed body; 0: no match; 1: match. p holds one value (the body, or an element). */
static int eval(const struct br_qnode *n, const uint8_t *p, size_t len, bool root, unsigned depth,
                struct ectx *cx)
{
    int r;
    switch (n->op) {
    case BR_Q_TRUE:
        return 1;
    case BR_Q_AND:
    case BR_Q_OR: /* AND stops at the first 0, OR at the first 1; both at -1 */
        for (size_t i = 0; i < n->n_kids; i++) {
            r = eval(&n->kids[i], p, len, root, depth, cx);
            if (r < 0 || r == (n->op == BR_Q_OR))
                return r;
        }
        return n->op == BR_Q_AND;
    case BR_Q_NOT:
        if (n->n_kids == 0)
            return 0;
        r = eval(&n->kids[0], p, len, root, depth, cx);
        return r < 0 ? r : !r;
    default:
        break;
    }
    struct leaf lf = {.n = n, .cx = cx};
    struct br_cbor_reader rd;
    br_cbor_reader_init(&rd, p, len);
    const char *path = n->path ? n->path : "";
    if (walk(&lf, &rd, path, path + (n->path ? n->path_len : 0), depth, false, root) == W_BAD)
        return -1;
    switch (n->op) {
    case BR_Q_EXISTS:
        return lf.found;
    case BR_Q_MISSING:
        return !lf.found;
    case BR_Q_NE:
    case BR_Q_NIN:
        return lf.found && !lf.hit;
    default:
        return lf.hit;
    }
}

bool br_qnode_match(const struct br_qnode *n, const uint8_t *body, size_t len)
{
    struct br_cbor_reader r;
    struct br_cbor_item it;
    if (!n || !body)
        return false;
    br_cbor_reader_init(&r, body, len);
    if (br_cbor_next(&r, &it) || it.type != BR_CBOR_MAP)
        return false;
    /* one well-formed item and nothing after it (the walks below stop early, so they would not
     * notice a malformed tail) */
    br_cbor_reader_init(&r, body, len);
    if (br_cbor_skip(&r, BR_CBOR_MAX_DEPTH) || !br_cbor_at_end(&r))
        return false;
    struct ectx cx = {.md = NULL};
    int m = eval(n, body, len, true, 0, &cx);
    pcre2_match_data_free(cx.md);
    return m == 1;
}

bool br_query_match(const br_query *q, const uint8_t *body, size_t len)
{
    return q && br_qnode_match(&q->root, body, len);
}

static bool is_proven(const struct br_qnode *n, const struct br_qnode *const *proven, size_t k)
{
    for (size_t i = 0; i < k; i++)
        if (proven[i] == n)
            return true;
    return false;
}

bool query_match_stored(const br_query *q, const struct br_qnode *const *proven, size_t n_proven,
                        const uint8_t *body, size_t len)
{
    const struct br_qnode *root = &q->root;
    if (is_proven(root, proven, n_proven))
        return true;
    if (!body)
        return false;
    struct ectx cx = {.md = NULL, .stored = true};
    int m = 1;
    if (root->op == BR_Q_AND) {
        for (size_t i = 0; i < root->n_kids && m == 1; i++)
            if (!is_proven(&root->kids[i], proven, n_proven))
                m = eval(&root->kids[i], body, len, true, 0, &cx);
    } else {
        m = eval(root, body, len, true, 0, &cx);
    }
    pcre2_match_data_free(cx.md);
    return m == 1;
}

/* ---- patterns (SUB-25) ---- */

struct pset {
    const char **p; /* borrowed from the nodes */
    size_t *len;
    size_t n, cap;
};

enum { P_SOME, P_ALL, P_NOMEM };

/* The part of a path that topics certainly carry: up to (not including) the first segment that
 * may be an array position (a decimal segment after the first) or that holds a wildcard
 * character. 0 when nothing is left. */
static size_t pattern_prefix(const char *p, size_t n)
{
    size_t i = 0, keep = 0;
    bool first = true;
    while (i < n) {
        const char *sl = memchr(p + i, '/', n - i);
        size_t e = sl ? (size_t)(sl - p) : n;
        if ((!first && seg_index(p + i, e - i) >= 0) || memchr(p + i, '+', e - i) ||
            memchr(p + i, '#', e - i))
            break;
        keep = e;
        first = false;
        i = e + 1;
    }
    return keep;
}

static int pset_add(struct pset *s, const char *p, size_t n)
{
    size_t keep = pattern_prefix(p, n);
    if (keep == 0)
        return P_ALL;
    if (!s)
        return P_SOME;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        const char **np = br_realloc(s->p, cap * sizeof *np);
        if (!np)
            return P_NOMEM;
        s->p = np;
        size_t *nl = br_realloc(s->len, cap * sizeof *nl);
        if (!nl)
            return P_NOMEM;
        s->len = nl;
        s->cap = cap;
    }
    s->p[s->n] = p;
    s->len[s->n++] = keep;
    return P_SOME;
}

/* P_SOME: every document that n matches has a topic under one of the paths added to s (s may
 * be NULL: only classify); P_ALL: a matching document may have no such topic (a missing path,
 * an empty array or object, a negation). */
static int patterns_of(const struct br_qnode *n, struct pset *s)
{
    int r;
    bool some = false, all = false;
    switch (n->op) {
    case BR_Q_EQ:
    case BR_Q_LT:
    case BR_Q_LE:
    case BR_Q_GT:
    case BR_Q_GE:
    case BR_Q_CONTAINS:
    case BR_Q_PREFIX:
    case BR_Q_REGEX: /* a scalar at the path: its topic is path/value */
        return pset_add(s, n->path, n->path_len);
    case BR_Q_IN: /* in [] matches nothing: no pattern needed */
        return n->n_vals ? pset_add(s, n->path, n->path_len) : P_SOME;
    case BR_Q_ELEM_MATCH: /* an element matching the child; its topics are under the path */
        r = n->n_kids ? patterns_of(&n->kids[0], NULL) : P_ALL;
        return r == P_SOME ? pset_add(s, n->path, n->path_len) : r;
    case BR_Q_AND: /* any one child's set will do; the union of them too */
        for (size_t i = 0; i < n->n_kids; i++) {
            r = patterns_of(&n->kids[i], s);
            if (r == P_NOMEM)
                return r;
            some |= r == P_SOME;
        }
        return some ? P_SOME : P_ALL;
    case BR_Q_OR: /* every branch must be covered */
        for (size_t i = 0; i < n->n_kids; i++) {
            r = patterns_of(&n->kids[i], s);
            if (r == P_NOMEM)
                return r;
            all |= r == P_ALL;
        }
        return all ? P_ALL : P_SOME;
    default: /* TRUE, NOT, EXISTS, MISSING, NE, NIN */
        return P_ALL;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

br_err br_query_patterns(const br_query *q, char ***out, size_t *n)
{
    struct pset s = {.p = NULL};
    br_err e = BR_ENOMEM;
    int r = patterns_of(&q->root, &s);
    if (r == P_NOMEM)
        goto done;
    if (r == P_ALL)
        s.n = 0;
    size_t count = r == P_ALL ? 1 : s.n, bytes = 0;
    for (size_t i = 0; i < s.n; i++)
        bytes += s.len[i] + 3; /* "/#" and NUL */
    char **block = br_malloc(count * sizeof(char *) + (r == P_ALL ? 2 : bytes) + 1);
    if (!block)
        goto done;
    char *w = (char *)(block + count);
    if (r == P_ALL) {
        block[0] = w;
        memcpy(w, "#", 2);
    }
    for (size_t i = 0; i < s.n; i++) {
        block[i] = w;
        memcpy(w, s.p[i], s.len[i]);
        memcpy(w + s.len[i], "/#", 3);
        w += s.len[i] + 3;
    }
    qsort(block, count, sizeof *block, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < count; i++)
        if (u == 0 || strcmp(block[u - 1], block[i]) != 0)
            block[u++] = block[i];
    *out = block;
    *n = u;
    e = BR_OK;
done:
    br_free(s.p);
    br_free(s.len);
    return e;
}

/* ---- rendering ---- */

static json_t *val_json(const struct br_qval *v)
{
    switch (v->type) {
    case BR_PV_NULL:
        return json_null();
    case BR_PV_TRUE:
        return json_true();
    case BR_PV_FALSE:
        return json_false();
    case BR_PV_INT:
        return json_integer((json_int_t)v->i);
    case BR_PV_FLOAT:
        return json_real(v->f);
    case BR_PV_STRING:
        return json_stringn(v->s ? v->s : "", v->s ? v->s_len : 0);
    }
    return NULL;
}

static json_t *node_json(const struct br_qnode *n);

static json_t *kids_json(const struct br_qnode *n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n->n_kids; i++) {
        if (json_array_append_new(a, node_json(&n->kids[i]))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* A path: "a/b", or [] for the element itself inside elem_match. */
static json_t *path_json(const struct br_qnode *n)
{
    if (!n->path || n->path_len == 0)
        return json_array();
    return json_stringn(n->path, n->path_len);
}

/* NULL on allocation failure. */
static json_t *node_json(const struct br_qnode *n)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad_set = 0;
    switch (n->op) {
    case BR_Q_TRUE:
        bad_set = json_object_set_new(o, "and", json_array());
        break;
    case BR_Q_AND:
    case BR_Q_OR:
        bad_set = json_object_set_new(o, n->op == BR_Q_AND ? "and" : "or", kids_json(n));
        break;
    case BR_Q_NOT:
        bad_set = n->n_kids ? json_object_set_new(o, "not", node_json(&n->kids[0]))
                            : json_object_set_new(o, "not", json_pack("{s:[]}", "and"));
        break;
    case BR_Q_ELEM_MATCH:
        bad_set =
            json_object_set_new(o, "path", path_json(n)) ||
            json_object_set_new(o, "elem_match",
                                n->n_kids ? node_json(&n->kids[0]) : json_pack("{s:[]}", "and"));
        break;
    default:
        bad_set = json_object_set_new(o, "path", path_json(n)) ||
                  json_object_set_new(o, "op", json_string(op_name(n->op)));
        if (bad_set || n->op == BR_Q_EXISTS || n->op == BR_Q_MISSING)
            break;
        if (n->op == BR_Q_IN || n->op == BR_Q_NIN) {
            json_t *a = json_array();
            for (size_t i = 0; a && i < n->n_vals; i++) {
                if (json_array_append_new(a, val_json(&n->vals[i]))) {
                    json_decref(a);
                    a = NULL;
                }
            }
            bad_set = json_object_set_new(o, "value", a);
        } else {
            bad_set = json_object_set_new(o, "value", val_json(&n->val));
        }
        break;
    }
    if (bad_set) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *where_json(const struct br_qnode *root)
{
    if (root->op == BR_Q_TRUE)
        return json_array();
    if (root->op == BR_Q_AND)
        return kids_json(root);
    json_t *a = json_array();
    if (a && json_array_append_new(a, node_json(root))) {
        json_decref(a);
        return NULL;
    }
    return a;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static int render(const br_query *q, json_t *o)
{
    if (!q->id_prefix && !q->id_start && !q->id_end &&
        json_object_set_new(o, "where", where_json(&q->root)))
        return -1;
    if (q->n_order) {
        json_t *a = json_array();
        if (json_object_set_new(o, "order_by", a))
            return -1;
        for (size_t i = 0; i < q->n_order; i++) {
            json_t *e = json_object();
            if (json_array_append_new(a, e) ||
                json_object_set_new(e, "path",
                                    json_stringn(q->order[i].path, q->order[i].path_len)) ||
                json_object_set_new(e, "dir", json_string(q->order[i].desc ? "desc" : "asc")))
                return -1;
        }
    }
    if (q->limit && json_object_set_new(o, "limit", json_integer((json_int_t)q->limit)))
        return -1;
    if (q->offset && json_object_set_new(o, "offset", json_integer((json_int_t)q->offset)))
        return -1;
    if (json_object_set_new(o, "include_docs", json_boolean(q->include_docs)))
        return -1;
    if (q->id_prefix && json_object_set_new(o, "id_prefix", json_string(q->id_prefix)))
        return -1;
    if (!q->id_prefix && (q->id_start || q->id_end)) {
        json_t *a = json_array();
        if (json_object_set_new(o, "id_range", a) ||
            json_array_append_new(a, str_or_null(q->id_start)) ||
            json_array_append_new(a, str_or_null(q->id_end)))
            return -1;
    }
    if (q->n_fields) {
        json_t *a = json_array();
        if (json_object_set_new(o, "fields", a))
            return -1;
        for (size_t i = 0; i < q->n_fields; i++)
            if (json_array_append_new(a, json_string(q->fields[i])))
                return -1;
    }
    if (q->bookmark && json_object_set_new(o, "bookmark", json_string(q->bookmark)))
        return -1;
    return 0;
}

br_err br_query_to_json(const br_query *q, json_t **out)
{
    json_t *o = json_object();
    if (!o || render(q, o)) {
        json_decref(o);
        return BR_ENOMEM;
    }
    *out = o;
    return BR_OK;
}
