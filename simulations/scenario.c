/* scenario.c — the scenario language of SCENARIOS.md: a hand-written line parser, node
 * selector syntax and resolution, and the splitmix64 step both harnesses draw with.
 *
 * The text is cut at '\n' into lines of at most LINE_MAX_BYTES, each line into at most
 * WORDS_MAX whitespace-separated words; a word starting with '#' ends the line (so an MQTT
 * '#' inside `paths=a/#` is not a comment). Every value is checked against its field's size
 * and range before it is stored: nothing is cut silently. Any NUL byte is an error. Events go
 * into a growing array (at most SC_MAX_EVENTS) and are sorted at the end by (time, line),
 * which is file order at equal times. */
#include "scenario.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/alloc.h"
#include "barrel/err.h"

#define LINE_MAX_BYTES 1024
#define WORDS_MAX 32
#define FILE_MAX_BYTES (4u << 20)
#define DUR_MAX_MS (365ull * 24 * 3600 * 1000) /* 365d: sums of durations cannot overflow */
#define DOCS_MAX 1000000u
#define FANOUT_MAX 64u
#define MAX_LINKS_MAX 64u
#define SHOW_MAX 40 /* bytes of a word quoted in a message */

struct word {
    const char *p;
    size_t n;
};

/* A key a line accepts, and the value found for it. */
struct kv {
    const char *key;
    struct word v;
    bool set;
};

enum once {
    ONCE_NAME,
    ONCE_NODES,
    ONCE_TOPOLOGY,
    ONCE_MAX_LINKS,
    ONCE_GOSSIP,
    ONCE_NET,
    ONCE_SETTLE,
    ONCE_COUNT
};

struct pstate {
    struct scenario *s;
    struct br_errbuf *eb;
    unsigned line;
    size_t cap_events;
    unsigned once_line[ONCE_COUNT];       /* where a line that may appear once was seen */
    unsigned filter_line[SC_MAX_FILTERS]; /* for "db undeclared" messages */
};

/* ---- messages ---- */

/* A word quoted for a message: at most SHOW_MAX bytes, anything but printable ASCII as \xNN. */
struct shown {
    char s[4 * SHOW_MAX + 8];
};

static struct shown show(const char *p, size_t n)
{
    struct shown r;
    size_t o = 0;
    for (size_t i = 0; i < n && i < SHOW_MAX; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f) {
            r.s[o++] = (char)c;
        } else {
            snprintf(r.s + o, 5, "\\x%02x", c);
            o += 4;
        }
    }
    if (n > SHOW_MAX) {
        memcpy(r.s + o, "...", 3);
        o += 3;
    }
    r.s[o] = '\0';
    return r;
}

static br_err perr(struct pstate *ps, const char *fmt, ...) BR_PRINTF(2, 3);
static br_err perr(struct pstate *ps, const char *fmt, ...)
{
    char msg[BR_ERRBUF_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return br_fail(ps->eb, BR_EINVAL, "%u: %s", ps->line, msg);
}

/* ---- words and numbers ---- */

static bool word_is(struct word w, const char *s)
{
    size_t n = strlen(s);
    return w.n == n && memcmp(w.p, s, n) == 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Decimal digits only (no sign, no spaces), at most max. */
static bool parse_u64(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return false;
        unsigned d = (unsigned)(p[i] - '0');
        if (d > max || v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* An integer with an optional unit ms, s, m, h or d (bare: ms), in milliseconds, <= max. */
static bool parse_dur(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    size_t d = 0;
    while (d < n && is_digit(p[d]))
        d++;
    struct word unit = {p + d, n - d};
    uint64_t mult;
    if (unit.n == 0 || word_is(unit, "ms"))
        mult = 1;
    else if (word_is(unit, "s"))
        mult = 1000;
    else if (word_is(unit, "m"))
        mult = 60ull * 1000;
    else if (word_is(unit, "h"))
        mult = 3600ull * 1000;
    else if (word_is(unit, "d"))
        mult = 24ull * 3600 * 1000;
    else
        return false;
    uint64_t v;
    if (!parse_u64(p, d, max / mult, &v))
        return false;
    *out = v * mult;
    return true;
}

/* A percentage 0..100 with at most 6 decimals and an optional '%', as a probability. */
static bool parse_percent(const char *p, size_t n, double *out)
{
    if (n > 0 && p[n - 1] == '%')
        n--;
    size_t i = 0;
    while (i < n && is_digit(p[i]))
        i++;
    uint64_t whole;
    if (!parse_u64(p, i, 100, &whole))
        return false;
    uint64_t frac = 0; /* millionths of a percent */
    if (i < n) {
        if (p[i] != '.')
            return false;
        size_t f = ++i;
        if (f == n || n - f > 6)
            return false;
        for (; i < n; i++) {
            if (!is_digit(p[i]))
                return false;
            frac = frac * 10 + (uint64_t)(p[i] - '0');
        }
        for (size_t k = n - f; k < 6; k++)
            frac *= 10;
    }
    uint64_t micro = whole * 1000000 + frac;
    if (micro > 100000000)
        return false;
    *out = (double)micro / 1e8;
    return true;
}

/* Bytes per second: a bare number, or a number with kbit, mbit or gbit. */
static bool parse_bandwidth(const char *p, size_t n, uint64_t *out)
{
    size_t d = 0;
    while (d < n && is_digit(p[d]))
        d++;
    struct word unit = {p + d, n - d};
    uint64_t bits;
    if (unit.n == 0)
        bits = 0;
    else if (word_is(unit, "kbit"))
        bits = 1000;
    else if (word_is(unit, "mbit"))
        bits = 1000ull * 1000;
    else if (word_is(unit, "gbit"))
        bits = 1000ull * 1000 * 1000;
    else
        return false;
    uint64_t v;
    if (!parse_u64(p, d, bits ? UINT64_MAX / bits : UINT64_MAX, &v))
        return false;
    *out = bits ? v * bits / 8 : v;
    return true;
}

/* ---- names ---- */

/* CouchDB's rule (as br_db_name_valid without system names): ^[a-z][a-z0-9_$()+/-]*$. */
static bool db_name_valid(const char *p, size_t n)
{
    if (n == 0 || n >= SC_DB_MAX || p[0] < 'a' || p[0] > 'z')
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = p[i];
        if ((c >= 'a' && c <= 'z') || is_digit(c) || (c != '\0' && strchr("_$()+/-", c)))
            continue;
        return false;
    }
    return true;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' ||
           c == '-' || c == '.';
}

/* '|'-separated MQTT patterns: printable ASCII, no empty pattern or segment rule broken:
 * '+' only as a whole segment, '#' only as the whole last segment. */
static bool paths_valid(const char *p, size_t n)
{
    if (n == 0 || n >= SC_PATHS_MAX)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '|') {
            if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
                return false;
            continue;
        }
        if (i == start)
            return false; /* empty pattern */
        size_t seg = start;
        for (size_t j = start; j <= i; j++) {
            if (j < i && p[j] != '/')
                continue;
            size_t len = j - seg;
            for (size_t k = seg; k < j; k++) {
                if ((p[k] == '+' || p[k] == '#') && len != 1)
                    return false;
            }
            if (len == 1 && p[seg] == '#' && j != i)
                return false;
            seg = j + 1;
        }
        start = i + 1;
    }
    return true;
}

/* ---- selectors ---- */

enum item_kind { IT_ALL, IT_REST, IT_HALF, IT_OTHER_HALF, IT_RANGE, IT_RANDOM, IT_PERCENT };

struct item {
    enum item_kind kind;
    unsigned lo, hi; /* IT_RANGE; UINT32_MAX: `$` */
    unsigned k;      /* IT_RANDOM: nodes; IT_PERCENT: percent */
};

#define LAST UINT32_MAX

static bool parse_index(const char *p, size_t n, bool dollar_ok, unsigned *out)
{
    if (dollar_ok && n == 1 && p[0] == '$') {
        *out = LAST;
        return true;
    }
    uint64_t v;
    if (n > 4 || !parse_u64(p, n, SC_MAX_NODES - 1, &v))
        return false;
    *out = (unsigned)v;
    return true;
}

static bool parse_item(const char *p, size_t n, struct item *it)
{
    struct word w = {p, n};
    memset(it, 0, sizeof *it);
    if (word_is(w, "all")) {
        it->kind = IT_ALL;
        return true;
    }
    if (word_is(w, "rest")) {
        it->kind = IT_REST;
        return true;
    }
    if (word_is(w, "half")) {
        it->kind = IT_HALF;
        return true;
    }
    if (word_is(w, "other-half")) {
        it->kind = IT_OTHER_HALF;
        return true;
    }
    uint64_t v;
    if (n > 7 && memcmp(p, "random:", 7) == 0) {
        if (n - 7 > 4 || !parse_u64(p + 7, n - 7, SC_MAX_NODES, &v) || v == 0)
            return false;
        it->kind = IT_RANDOM;
        it->k = (unsigned)v;
        return true;
    }
    if (n > 1 && p[n - 1] == '%') {
        if (n - 1 > 3 || !parse_u64(p, n - 1, 100, &v) || v == 0)
            return false;
        it->kind = IT_PERCENT;
        it->k = (unsigned)v;
        return true;
    }
    it->kind = IT_RANGE;
    const char *dash = memchr(p, '-', n);
    if (!dash) {
        if (!parse_index(p, n, true, &it->lo))
            return false;
        it->hi = it->lo;
        return true;
    }
    size_t a = (size_t)(dash - p);
    if (!parse_index(p, a, false, &it->lo) || !parse_index(dash + 1, n - a - 1, true, &it->hi))
        return false;
    return it->hi == LAST || it->lo <= it->hi;
}

/* Calls each item of sel in turn; false on the first malformed one (or an empty selector). */
static bool sel_items(const char *sel, struct item *items, size_t *n_items)
{
    if (!sel)
        return false;
    size_t len = strnlen(sel, SC_SEL_MAX);
    if (len == 0 || len >= SC_SEL_MAX)
        return false;
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && sel[i] != ',')
            continue;
        if (i == start || !parse_item(sel + start, i - start, &items[k]))
            return false;
        k++;
        start = i + 1;
    }
    *n_items = k;
    return true;
}

bool sc_sel_valid(const char *sel)
{
    struct item items[SC_SEL_MAX / 2 + 1];
    size_t n;
    return sel_items(sel, items, &n);
}

uint64_t sc_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* k distinct nodes of n: a partial Fisher-Yates over 0..n-1 (j = i + rand % (n - i)). */
static void draw(unsigned n, unsigned k, uint64_t *rng, bool *sel)
{
    unsigned idx[SC_MAX_NODES];
    for (unsigned i = 0; i < n; i++)
        idx[i] = i;
    for (unsigned i = 0; i < k; i++) {
        unsigned j = i + (unsigned)(sc_rand(rng) % (n - i));
        unsigned t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        sel[idx[i]] = true;
    }
}

br_err sc_sel_resolve(const char *sel, unsigned n, uint64_t *rng, bool *out, struct br_errbuf *eb)
{
    struct item items[SC_SEL_MAX / 2 + 1];
    size_t n_items;
    if (!out)
        return br_fail(eb, BR_EINVAL, "no output array");
    if (!sel_items(sel, items, &n_items))
        return br_fail(eb, BR_EINVAL, "bad selector '%s'",
                       sel ? show(sel, strnlen(sel, SC_SEL_MAX)).s : "(null)");
    if (n == 0 || n > SC_MAX_NODES)
        return br_fail(eb, BR_EINVAL, "selector '%s': %u nodes (expected 1..%u)", sel, n,
                       SC_MAX_NODES);
    bool res[SC_MAX_NODES] = {false};
    uint64_t r = rng ? *rng : 0;
    for (size_t i = 0; i < n_items; i++) {
        const struct item *it = &items[i];
        unsigned lo = 0, hi = 0, k = 0; /* nodes lo..hi, or k drawn */
        switch (it->kind) {
        case IT_ALL:
            hi = n;
            break;
        case IT_REST:
            lo = 1;
            hi = n;
            break;
        case IT_HALF:
            hi = n / 2;
            break;
        case IT_OTHER_HALF:
            lo = n / 2;
            hi = n;
            break;
        case IT_RANGE:
            lo = it->lo == LAST ? n - 1 : it->lo;
            hi = it->hi == LAST ? n - 1 : it->hi;
            if (lo >= n || hi >= n)
                return br_fail(eb, BR_EINVAL, "selector '%s': node %u out of range (%u nodes)", sel,
                               lo >= n ? lo : hi, n);
            hi++;
            break;
        case IT_RANDOM:
            if (it->k > n)
                return br_fail(eb, BR_EINVAL, "selector '%s': random:%u of only %u nodes", sel,
                               it->k, n);
            k = it->k;
            break;
        case IT_PERCENT:
            k = (unsigned)((uint64_t)n * it->k / 100);
            if (k == 0)
                k = 1;
            break;
        }
        if (it->kind == IT_RANDOM || it->kind == IT_PERCENT) {
            if (!rng)
                return br_fail(eb, BR_EINVAL, "selector '%s' draws nodes: no random state", sel);
            draw(n, k, &r, res);
        } else {
            for (unsigned j = lo; j < hi; j++)
                res[j] = true;
        }
    }
    memcpy(out, res, n * sizeof *out);
    if (rng)
        *rng = r;
    return BR_OK;
}

/* ---- names of enums ---- */

const char *sc_kind_name(enum sc_kind k)
{
    static const char *const names[] = {
        [SC_WRITE] = "write",         [SC_UPDATE] = "update",   [SC_DELETE] = "delete",
        [SC_PARTITION] = "partition", [SC_HEAL] = "heal",       [SC_CUT] = "cut",
        [SC_CRASH] = "crash",         [SC_RESTART] = "restart", [SC_LEAVE] = "leave",
        [SC_JOIN] = "join",           [SC_CHURN] = "churn",
    };
    if ((unsigned)k >= sizeof names / sizeof names[0])
        return "?";
    return names[k];
}

const char *sc_topology_name(enum sc_topology t)
{
    static const char *const names[] = {
        [SC_TOPO_MESH] = "mesh",
        [SC_TOPO_CHAIN] = "chain",
        [SC_TOPO_FULL] = "full",
        [SC_TOPO_STAR] = "star",
    };
    if ((unsigned)t >= sizeof names / sizeof names[0])
        return "?";
    return names[t];
}

/* ---- line helpers ---- */

/* Fill kv from words w[0..nw): key=value words whose key is in kv; `shared` (a bare word)
 * only when *shared is given. `what` names the line for messages. */
static br_err take_kvs(struct pstate *ps, const struct word *w, size_t nw, struct kv *kv,
                       size_t nkv, const char *what, bool *shared)
{
    for (size_t i = 0; i < nw; i++) {
        const char *eq = memchr(w[i].p, '=', w[i].n);
        if (!eq) {
            if (shared && word_is(w[i], "shared")) {
                if (*shared)
                    return perr(ps, "'shared' given twice in %s", what);
                *shared = true;
                continue;
            }
            return perr(ps, "expected key=value in %s, got '%s'", what, show(w[i].p, w[i].n).s);
        }
        struct word key = {w[i].p, (size_t)(eq - w[i].p)};
        struct word val = {eq + 1, w[i].n - key.n - 1};
        size_t k = 0;
        while (k < nkv && !word_is(key, kv[k].key))
            k++;
        if (k == nkv) {
            char expected[128] = "";
            size_t o = 0;
            for (size_t j = 0; j < nkv && o < sizeof expected; j++)
                o += (size_t)snprintf(expected + o, sizeof expected - o, "%s%s=", j ? ", " : "",
                                      kv[j].key);
            if (shared && o < sizeof expected)
                snprintf(expected + o, sizeof expected - o, ", shared");
            return perr(ps, "unknown key '%s' in %s (expected %s)", show(key.p, key.n).s, what,
                        nkv ? expected : "none");
        }
        if (kv[k].set)
            return perr(ps, "%s= given twice in %s", kv[k].key, what);
        if (val.n == 0)
            return perr(ps, "empty value for %s= in %s", kv[k].key, what);
        kv[k].v = val;
        kv[k].set = true;
    }
    return BR_OK;
}

static br_err need(struct pstate *ps, const struct kv *kv, size_t nkv, const char *what)
{
    for (size_t k = 0; k < nkv; k++)
        if (!kv[k].set)
            return perr(ps, "missing %s= in %s", kv[k].key, what);
    return BR_OK;
}

static br_err get_dur(struct pstate *ps, struct word w, const char *what, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    uint64_t v;
    if (!parse_dur(w.p, w.n, UINT64_MAX, &v))
        return perr(ps, "bad duration '%s' for %s (expected an integer with ms, s, m, h or d)",
                    show(w.p, w.n).s, what);
    if (v < min || v > max)
        return perr(ps, "%s '%s' out of range (%llu..%llu ms)", what, show(w.p, w.n).s,
                    (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return BR_OK;
}

static br_err get_dur_u(struct pstate *ps, struct word w, const char *what, unsigned min,
                        unsigned *out)
{
    uint64_t v;
    br_err e = get_dur(ps, w, what, min, UINT_MAX, &v);
    if (e == BR_OK)
        *out = (unsigned)v;
    return e;
}

static br_err get_uint(struct pstate *ps, struct word w, const char *what, unsigned min,
                       unsigned max, unsigned *out)
{
    uint64_t v;
    if (!parse_u64(w.p, w.n, UINT64_MAX, &v))
        return perr(ps, "bad number '%s' for %s", show(w.p, w.n).s, what);
    if (v < min || v > max)
        return perr(ps, "%s %llu out of range (%u..%u)", what, (unsigned long long)v, min, max);
    *out = (unsigned)v;
    return BR_OK;
}

static br_err get_percent(struct pstate *ps, struct word w, const char *what, double *out)
{
    if (!parse_percent(w.p, w.n, out))
        return perr(ps, "bad percentage '%s' for %s (expected 0..100, e.g. 1%% or 0.5%%)",
                    show(w.p, w.n).s, what);
    return BR_OK;
}

static br_err get_sel(struct pstate *ps, struct word w, const char *what, char *out)
{
    if (w.n >= SC_SEL_MAX)
        return perr(ps, "selector for %s too long (%zu bytes, max %d)", what, w.n, SC_SEL_MAX - 1);
    char tmp[SC_SEL_MAX];
    memcpy(tmp, w.p, w.n);
    tmp[w.n] = '\0';
    if (!sc_sel_valid(tmp))
        return perr(ps,
                    "bad selector '%s' for %s (expected comma-separated all, rest, half, "
                    "other-half, I, I-J, $, random:K or P%%; indexes < %u)",
                    show(w.p, w.n).s, what, SC_MAX_NODES);
    memcpy(out, tmp, w.n + 1);
    return BR_OK;
}

static br_err get_db(struct pstate *ps, struct word w, char *out)
{
    if (w.n >= SC_DB_MAX)
        return perr(ps, "database name too long (%zu bytes, max %d)", w.n, SC_DB_MAX - 1);
    if (!db_name_valid(w.p, w.n))
        return perr(ps, "bad database name '%s' (expected [a-z][a-z0-9_$()+/-]*)",
                    show(w.p, w.n).s);
    memcpy(out, w.p, w.n);
    out[w.n] = '\0';
    return BR_OK;
}

/* A line that may appear once: the second is an error naming the first. */
static br_err once_only(struct pstate *ps, enum once which, const char *what)
{
    if (ps->once_line[which])
        return perr(ps, "'%s' given twice (first on line %u)", what, ps->once_line[which]);
    ps->once_line[which] = ps->line;
    return BR_OK;
}

/* Exactly one positional word after the keyword. */
static br_err one_arg(struct pstate *ps, const struct word *w, size_t nw, const char *what)
{
    if (nw < 2)
        return perr(ps, "'%s' needs a value", what);
    if (nw > 2)
        return perr(ps, "unexpected '%s' after %s", show(w[2].p, w[2].n).s, what);
    return BR_OK;
}

/* ---- line kinds ---- */

static br_err line_name(struct pstate *ps, const struct word *w, size_t nw)
{
    br_err e = once_only(ps, ONCE_NAME, "name");
    if (e == BR_OK)
        e = one_arg(ps, w, nw, "name");
    if (e != BR_OK)
        return e;
    if (w[1].n >= SC_NAME_MAX)
        return perr(ps, "name too long (%zu bytes, max %d)", w[1].n, SC_NAME_MAX - 1);
    for (size_t i = 0; i < w[1].n; i++)
        if (!name_char(w[1].p[i]))
            return perr(ps, "bad name '%s' (expected letters, digits, '_', '-', '.')",
                        show(w[1].p, w[1].n).s);
    memcpy(ps->s->name, w[1].p, w[1].n);
    ps->s->name[w[1].n] = '\0';
    return BR_OK;
}

static br_err line_topology(struct pstate *ps, const struct word *w, size_t nw)
{
    br_err e = once_only(ps, ONCE_TOPOLOGY, "topology");
    if (e == BR_OK)
        e = one_arg(ps, w, nw, "topology");
    if (e != BR_OK)
        return e;
    for (int t = SC_TOPO_MESH; t <= SC_TOPO_STAR; t++) {
        if (word_is(w[1], sc_topology_name((enum sc_topology)t))) {
            ps->s->topology = (enum sc_topology)t;
            return BR_OK;
        }
    }
    return perr(ps, "unknown topology '%s' (expected mesh, chain, full or star)",
                show(w[1].p, w[1].n).s);
}

static br_err line_gossip(struct pstate *ps, const struct word *w, size_t nw)
{
    struct kv kv[] = {{.key = "interval"}, {.key = "fanout"}, {.key = "probe"}, {.key = "dead"}};
    struct scenario *s = ps->s;
    br_err e = once_only(ps, ONCE_GOSSIP, "gossip");
    if (e == BR_OK)
        e = take_kvs(ps, w + 1, nw - 1, kv, 4, "gossip", NULL);
    if (e == BR_OK && kv[0].set)
        e = get_dur_u(ps, kv[0].v, "gossip interval", 1, &s->interval_ms);
    if (e == BR_OK && kv[1].set)
        e = get_uint(ps, kv[1].v, "gossip fanout", 1, FANOUT_MAX, &s->fanout);
    if (e == BR_OK && kv[2].set)
        e = get_dur_u(ps, kv[2].v, "gossip probe", 1, &s->probe_ms);
    if (e == BR_OK && kv[3].set)
        e = get_dur_u(ps, kv[3].v, "gossip dead", 1, &s->dead_ms);
    return e;
}

static br_err line_net(struct pstate *ps, const struct word *w, size_t nw)
{
    struct kv kv[] = {{.key = "latency"}, {.key = "jitter"},    {.key = "loss"},   {.key = "dup"},
                      {.key = "reorder"}, {.key = "bandwidth"}, {.key = "timeout"}};
    struct sc_net *n = &ps->s->net;
    br_err e = once_only(ps, ONCE_NET, "net");
    if (e == BR_OK)
        e = take_kvs(ps, w + 1, nw - 1, kv, 7, "net", NULL);
    if (e == BR_OK && kv[0].set)
        e = get_dur(ps, kv[0].v, "net latency", 0, DUR_MAX_MS, &n->latency_ms);
    if (e == BR_OK && kv[1].set)
        e = get_dur(ps, kv[1].v, "net jitter", 0, DUR_MAX_MS, &n->jitter_ms);
    if (e == BR_OK && kv[2].set)
        e = get_percent(ps, kv[2].v, "net loss", &n->loss);
    if (e == BR_OK && kv[3].set)
        e = get_percent(ps, kv[3].v, "net dup", &n->dup);
    if (e == BR_OK && kv[4].set)
        e = get_percent(ps, kv[4].v, "net reorder", &n->reorder);
    if (e == BR_OK && kv[5].set && !parse_bandwidth(kv[5].v.p, kv[5].v.n, &n->bandwidth_bps))
        e = perr(ps, "bad bandwidth '%s' (expected bytes/s, or a number with kbit, mbit, gbit)",
                 show(kv[5].v.p, kv[5].v.n).s);
    if (e == BR_OK && kv[6].set)
        e = get_dur(ps, kv[6].v, "net timeout", 1, DUR_MAX_MS, &n->timeout_ms);
    return e;
}

static br_err line_db(struct pstate *ps, const struct word *w, size_t nw)
{
    struct scenario *s = ps->s;
    char name[SC_DB_MAX];
    br_err e = one_arg(ps, w, nw, "db");
    if (e == BR_OK)
        e = get_db(ps, w[1], name);
    if (e != BR_OK)
        return e;
    for (size_t i = 0; i < s->n_dbs; i++)
        if (strcmp(s->dbs[i], name) == 0)
            return perr(ps, "db '%s' declared twice", name);
    if (s->n_dbs == SC_MAX_DBS)
        return perr(ps, "too many db lines (max %d)", SC_MAX_DBS);
    memcpy(s->dbs[s->n_dbs++], name, sizeof name);
    return BR_OK;
}

static br_err line_filter(struct pstate *ps, const struct word *w, size_t nw)
{
    struct kv kv[] = {{.key = "db"}, {.key = "nodes"}, {.key = "paths"}};
    struct scenario *s = ps->s;
    struct sc_filter f;
    memset(&f, 0, sizeof f);
    if (s->n_filters == SC_MAX_FILTERS)
        return perr(ps, "too many filter lines (max %d)", SC_MAX_FILTERS);
    br_err e = take_kvs(ps, w + 1, nw - 1, kv, 3, "filter", NULL);
    if (e == BR_OK)
        e = need(ps, kv, 3, "filter");
    if (e == BR_OK)
        e = get_db(ps, kv[0].v, f.db);
    if (e == BR_OK)
        e = get_sel(ps, kv[1].v, "filter nodes", f.nodes);
    if (e != BR_OK)
        return e;
    if (kv[2].v.n >= SC_PATHS_MAX)
        return perr(ps, "paths too long (%zu bytes, max %d)", kv[2].v.n, SC_PATHS_MAX - 1);
    if (!paths_valid(kv[2].v.p, kv[2].v.n))
        return perr(ps,
                    "bad paths '%s' (expected '|'-separated MQTT patterns: '+' and '#' only as "
                    "whole segments, '#' last)",
                    show(kv[2].v.p, kv[2].v.n).s);
    memcpy(f.paths, kv[2].v.p, kv[2].v.n);
    ps->filter_line[s->n_filters] = ps->line;
    s->filters[s->n_filters++] = f;
    return BR_OK;
}

static br_err line_skew(struct pstate *ps, const struct word *w, size_t nw)
{
    struct kv kv[] = {{.key = "nodes"}, {.key = "ms"}};
    struct scenario *s = ps->s;
    struct sc_skew k;
    memset(&k, 0, sizeof k);
    if (s->n_skews == SC_MAX_SKEWS)
        return perr(ps, "too many skew lines (max %d)", SC_MAX_SKEWS);
    br_err e = take_kvs(ps, w + 1, nw - 1, kv, 2, "skew", NULL);
    if (e == BR_OK)
        e = need(ps, kv, 2, "skew");
    if (e == BR_OK)
        e = get_sel(ps, kv[0].v, "skew nodes", k.nodes);
    if (e != BR_OK)
        return e;
    struct word v = kv[1].v;
    bool neg = v.p[0] == '-';
    uint64_t ms;
    if (!parse_u64(v.p + neg, v.n - neg, UINT64_MAX, &ms))
        return perr(ps, "bad skew ms= '%s' (expected an integer, may be negative)",
                    show(v.p, v.n).s);
    if (ms > DUR_MAX_MS)
        return perr(ps, "skew ms= '%s' out of range (at most %llu either way)", show(v.p, v.n).s,
                    (unsigned long long)DUR_MAX_MS);
    k.ms = neg ? -(int64_t)ms : (int64_t)ms;
    s->skews[s->n_skews++] = k;
    return BR_OK;
}

/* `partition SEL | SEL`: the words after the action joined with spaces must hold exactly one
 * '|', with one selector word on each side (so `a|b`, `a |b` and `a | b` all do). */
static br_err ev_partition(struct pstate *ps, const struct word *w, size_t nw, struct sc_event *ev)
{
    char buf[2 * SC_SEL_MAX + 8];
    size_t o = 0;
    for (size_t i = 0; i < nw; i++) {
        if (o + w[i].n + 1 >= sizeof buf)
            return perr(ps, "partition: selectors too long (max %d bytes each)", SC_SEL_MAX - 1);
        if (i)
            buf[o++] = ' ';
        memcpy(buf + o, w[i].p, w[i].n);
        o += w[i].n;
    }
    const char *bar = memchr(buf, '|', o);
    if (!bar)
        return perr(ps, "partition needs two groups: 'partition SEL | SEL'");
    if (memchr(bar + 1, '|', o - (size_t)(bar - buf) - 1))
        return perr(ps, "partition: more than one '|'");
    struct word side[2] = {{buf, (size_t)(bar - buf)}, {bar + 1, o - (size_t)(bar - buf) - 1}};
    char *dst[2] = {ev->nodes, ev->nodes2};
    for (int k = 0; k < 2; k++) {
        while (side[k].n && side[k].p[0] == ' ') {
            side[k].p++;
            side[k].n--;
        }
        while (side[k].n && side[k].p[side[k].n - 1] == ' ')
            side[k].n--;
        if (side[k].n == 0)
            return perr(ps, "partition: group %s of '|' is empty", k ? "right" : "left");
        if (memchr(side[k].p, ' ', side[k].n))
            return perr(ps, "partition: one selector per side, got '%s'",
                        show(side[k].p, side[k].n).s);
        br_err e = get_sel(ps, side[k], "partition", dst[k]);
        if (e != BR_OK)
            return e;
    }
    return BR_OK;
}

static br_err ev_cut_node(struct pstate *ps, struct word v, const char *key, unsigned *out)
{
    if (!parse_index(v.p, v.n, true, out))
        return perr(ps, "bad node '%s' for cut %s= (expected 0..%u or $)", show(v.p, v.n).s, key,
                    SC_MAX_NODES - 1);
    return BR_OK;
}

/* `at TIME ACTION ...` */
static br_err line_at(struct pstate *ps, const struct word *w, size_t nw)
{
    struct scenario *s = ps->s;
    struct sc_event ev;
    memset(&ev, 0, sizeof ev);
    ev.line = ps->line;
    if (nw < 3)
        return perr(ps, "'at' needs a time and an action: 'at TIME ACTION ...'");
    br_err e = get_dur(ps, w[1], "at time", 0, DUR_MAX_MS, &ev.at_ms);
    if (e != BR_OK)
        return e;
    int kind = -1;
    for (int k = SC_WRITE; k <= SC_CHURN; k++)
        if (word_is(w[2], sc_kind_name((enum sc_kind)k)))
            kind = k;
    if (kind < 0)
        return perr(ps,
                    "unknown action '%s' (expected write, update, delete, partition, heal, cut, "
                    "crash, restart, leave, join or churn)",
                    show(w[2].p, w[2].n).s);
    ev.kind = (enum sc_kind)kind;
    const char *what = sc_kind_name(ev.kind);
    const struct word *args = w + 3;
    size_t na = nw - 3;
    switch (ev.kind) {
    case SC_WRITE:
    case SC_UPDATE:
    case SC_DELETE: {
        struct kv kv[] = {{.key = "nodes"}, {.key = "db"}, {.key = "docs"}};
        e = take_kvs(ps, args, na, kv, 3, what, ev.kind == SC_WRITE ? &ev.shared : NULL);
        if (e == BR_OK)
            e = need(ps, kv, 3, what);
        if (e == BR_OK)
            e = get_sel(ps, kv[0].v, what, ev.nodes);
        if (e == BR_OK)
            e = get_db(ps, kv[1].v, ev.db);
        if (e == BR_OK)
            e = get_uint(ps, kv[2].v, "docs", 1, DOCS_MAX, &ev.docs);
        break;
    }
    case SC_PARTITION:
        e = ev_partition(ps, args, na, &ev);
        break;
    case SC_HEAL:
        if (na)
            e = perr(ps, "unexpected '%s' after heal", show(args[0].p, args[0].n).s);
        break;
    case SC_CUT: {
        struct kv kv[] = {{.key = "a"}, {.key = "b"}};
        e = take_kvs(ps, args, na, kv, 2, what, NULL);
        if (e == BR_OK)
            e = need(ps, kv, 2, what);
        if (e == BR_OK)
            e = ev_cut_node(ps, kv[0].v, "a", &ev.a);
        if (e == BR_OK)
            e = ev_cut_node(ps, kv[1].v, "b", &ev.b);
        if (e == BR_OK && ev.a == ev.b)
            e = perr(ps, "cut: a= and b= are the same node");
        break;
    }
    case SC_CRASH:
    case SC_RESTART:
    case SC_LEAVE:
    case SC_JOIN: {
        struct kv kv[] = {{.key = "nodes"}};
        e = take_kvs(ps, args, na, kv, 1, what, NULL);
        if (e == BR_OK)
            e = need(ps, kv, 1, what);
        if (e == BR_OK)
            e = get_sel(ps, kv[0].v, what, ev.nodes);
        break;
    }
    case SC_CHURN: {
        struct kv kv[] = {{.key = "nodes"}, {.key = "every"}, {.key = "down"}, {.key = "until"}};
        e = take_kvs(ps, args, na, kv, 4, what, NULL);
        if (e == BR_OK)
            e = need(ps, kv, 4, what);
        if (e == BR_OK)
            e = get_sel(ps, kv[0].v, what, ev.nodes);
        if (e == BR_OK)
            e = get_dur(ps, kv[1].v, "churn every", 1, DUR_MAX_MS, &ev.every_ms);
        if (e == BR_OK)
            e = get_dur(ps, kv[2].v, "churn down", 1, DUR_MAX_MS, &ev.down_ms);
        if (e == BR_OK)
            e = get_dur(ps, kv[3].v, "churn until", 0, DUR_MAX_MS, &ev.until_ms);
        if (e == BR_OK && ev.until_ms <= ev.at_ms)
            e = perr(ps, "churn until= (%llu ms) must be after the event's time (%llu ms)",
                     (unsigned long long)ev.until_ms, (unsigned long long)ev.at_ms);
        break;
    }
    }
    if (e != BR_OK)
        return e;
    if (s->n_events == SC_MAX_EVENTS)
        return perr(ps, "too many events (max %d)", SC_MAX_EVENTS);
    if (s->n_events == ps->cap_events) {
        size_t cap = ps->cap_events ? ps->cap_events * 2 : 16;
        if (cap > SC_MAX_EVENTS)
            cap = SC_MAX_EVENTS;
        struct sc_event *p = br_realloc(s->events, cap * sizeof *p);
        if (!p)
            return br_fail(ps->eb, BR_ENOMEM, "%u: out of memory", ps->line);
        s->events = p;
        ps->cap_events = cap;
    }
    s->events[s->n_events++] = ev;
    return BR_OK;
}

/* ---- lines and the file ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static br_err parse_line(struct pstate *ps, const char *p, size_t n)
{
    struct word w[WORDS_MAX];
    size_t nw = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && is_space(p[i]))
            i++;
        if (i == n || p[i] == '#')
            break;
        size_t start = i;
        while (i < n && !is_space(p[i]))
            i++;
        if (nw == WORDS_MAX)
            return perr(ps, "too many words (max %d)", WORDS_MAX);
        w[nw].p = p + start;
        w[nw].n = i - start;
        nw++;
    }
    if (nw == 0)
        return BR_OK;
    struct scenario *s = ps->s;
    br_err e;
    if (word_is(w[0], "at"))
        return line_at(ps, w, nw);
    if (word_is(w[0], "name"))
        return line_name(ps, w, nw);
    if (word_is(w[0], "nodes")) {
        e = once_only(ps, ONCE_NODES, "nodes");
        if (e == BR_OK)
            e = one_arg(ps, w, nw, "nodes");
        return e != BR_OK ? e : get_uint(ps, w[1], "nodes", 1, SC_MAX_NODES, &s->nodes);
    }
    if (word_is(w[0], "topology"))
        return line_topology(ps, w, nw);
    if (word_is(w[0], "max_links")) {
        e = once_only(ps, ONCE_MAX_LINKS, "max_links");
        if (e == BR_OK)
            e = one_arg(ps, w, nw, "max_links");
        return e != BR_OK ? e : get_uint(ps, w[1], "max_links", 1, MAX_LINKS_MAX, &s->max_links);
    }
    if (word_is(w[0], "gossip"))
        return line_gossip(ps, w, nw);
    if (word_is(w[0], "net"))
        return line_net(ps, w, nw);
    if (word_is(w[0], "db"))
        return line_db(ps, w, nw);
    if (word_is(w[0], "filter"))
        return line_filter(ps, w, nw);
    if (word_is(w[0], "skew"))
        return line_skew(ps, w, nw);
    if (word_is(w[0], "settle")) {
        e = once_only(ps, ONCE_SETTLE, "settle");
        if (e == BR_OK)
            e = one_arg(ps, w, nw, "settle");
        return e != BR_OK ? e : get_dur(ps, w[1], "settle", 0, DUR_MAX_MS, &s->settle_ms);
    }
    return perr(ps,
                "unknown keyword '%s' (expected name, nodes, topology, max_links, gossip, net, "
                "db, filter, skew, at or settle)",
                show(w[0].p, w[0].n).s);
}

static bool db_declared(const struct scenario *s, const char *db)
{
    for (size_t i = 0; i < s->n_dbs; i++)
        if (strcmp(s->dbs[i], db) == 0)
            return true;
    return false;
}

/* After the last line: at least one db, and every db= names a declared one (the first
 * offender in file order is reported). */
static br_err check_dbs(struct pstate *ps)
{
    const struct scenario *s = ps->s;
    if (s->n_dbs == 0)
        return perr(ps, "no 'db' line (at least one is required)");
    unsigned bad_line = 0;
    const char *bad = NULL;
    for (size_t i = 0; i < s->n_filters && !bad; i++) {
        if (!db_declared(s, s->filters[i].db)) {
            bad = s->filters[i].db;
            bad_line = ps->filter_line[i];
        }
    }
    for (size_t i = 0; i < s->n_events; i++) {
        const struct sc_event *ev = &s->events[i];
        if (ev->db[0] && !db_declared(s, ev->db) && (!bad || ev->line < bad_line)) {
            bad = ev->db;
            bad_line = ev->line;
            break;
        }
    }
    if (!bad)
        return BR_OK;
    ps->line = bad_line;
    return perr(ps, "db '%s' is not declared (add a 'db %s' line)", bad, bad);
}

static int event_cmp(const void *a, const void *b)
{
    const struct sc_event *x = a, *y = b;
    if (x->at_ms != y->at_ms)
        return x->at_ms < y->at_ms ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line); /* one event per line: file order */
}

br_err sc_parse(const char *text, size_t len, const char *default_name, struct scenario *out,
                struct br_errbuf *eb)
{
    if (!out || (!text && len))
        return br_fail(eb, BR_EINVAL, "0: no scenario text or output");
    struct scenario *s = br_calloc(1, sizeof *s);
    if (!s)
        return br_fail(eb, BR_ENOMEM, "0: out of memory");
    const char *dn = default_name ? default_name : "scenario";
    size_t dn_len = strnlen(dn, SC_NAME_MAX - 1); /* the caller's name, cut to fit */
    memcpy(s->name, dn, dn_len);
    s->nodes = 5;
    s->topology = SC_TOPO_MESH;
    s->max_links = 8;
    s->interval_ms = 200;
    s->fanout = 3;
    s->probe_ms = 1000;
    s->dead_ms = 3000;
    s->net.latency_ms = 5;
    s->net.timeout_ms = 5000;
    s->settle_ms = 60000;

    struct pstate ps = {.s = s, .eb = eb};
    br_err e = BR_OK;
    size_t pos = 0;
    while (pos < len) {
        if (ps.line == UINT_MAX) {
            e = perr(&ps, "too many lines");
            goto fail;
        }
        ps.line++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        const char *p = text + pos;
        pos += n + (nl != NULL);
        if (n > LINE_MAX_BYTES) {
            e = perr(&ps, "line too long (%zu bytes, max %d)", n, LINE_MAX_BYTES);
            goto fail;
        }
        const char *nul = memchr(p, '\0', n);
        if (nul) {
            e = perr(&ps, "NUL byte at column %zu", (size_t)(nul - p) + 1);
            goto fail;
        }
        e = parse_line(&ps, p, n);
        if (e != BR_OK)
            goto fail;
    }
    if (ps.line == 0)
        ps.line = 1;
    e = check_dbs(&ps);
    if (e != BR_OK)
        goto fail;
    if (s->n_events > 1)
        qsort(s->events, s->n_events, sizeof *s->events, event_cmp);
    *out = *s;
    br_free(s);
    return BR_OK;
fail:
    br_free(s->events);
    br_free(s);
    return e;
}

void sc_free(struct scenario *s)
{
    if (!s)
        return;
    br_free(s->events);
    s->events = NULL;
    s->n_events = 0;
}

br_err sc_load(const char *path, struct scenario *out, struct br_errbuf *eb)
{
    if (!path)
        return br_fail(eb, BR_EINVAL, "no path");
    FILE *f = fopen(path, "rb");
    if (!f)
        return br_fail(eb, BR_EIO, "%s: cannot open", path);
    char *buf = br_malloc(FILE_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return br_fail(eb, BR_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, FILE_MAX_BYTES + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    br_err e;
    if (bad) {
        e = br_fail(eb, BR_EIO, "%s: read error", path);
        goto done;
    }
    if (n > FILE_MAX_BYTES) {
        e = br_fail(eb, BR_EINVAL, "%s: larger than %u bytes", path, FILE_MAX_BYTES);
        goto done;
    }
    /* default name: the file name without its directory and ".scn" */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    if (bl > 4 && strcmp(base + bl - 4, ".scn") == 0)
        bl -= 4;
    char name[SC_NAME_MAX];
    if (bl >= SC_NAME_MAX)
        bl = SC_NAME_MAX - 1;
    memcpy(name, base, bl);
    name[bl] = '\0';
    struct br_errbuf inner = {{0}};
    e = sc_parse(buf, n, name, out, &inner);
    if (e != BR_OK)
        br_fail(eb, e, "%s:%s", path, inner.msg);
done:
    br_free(buf);
    return e;
}
