/* simcheck.c — what the simulator checks and measures: the acknowledged writes, their arrival
 * at every node (propagation latency), convergence, and the four invariants of SCENARIOS.md. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "barrel/alloc.h"

#include "sim_int.h"

/* ---- the writes ---- */

static uint64_t wkey(unsigned dbi, const char *id, size_t id_len, const struct br_rev *rev)
{
    char b[sizeof(uint64_t) + BR_REV_HASH_MAX + 64];
    size_t n = id_len < 64 ? id_len : 64;
    memcpy(b, id, n);
    memcpy(b + n, &rev->gen, sizeof rev->gen);
    memcpy(b + n + sizeof rev->gen, rev->hash, rev->hash_len);
    uint64_t h = XXH64(b, n + sizeof rev->gen + rev->hash_len, dbi);
    return h ? h : 1;
}

static struct swrite *wfind(struct sim *s, unsigned dbi, const char *id, size_t id_len,
                            const struct br_rev *rev)
{
    if (!s->wmap_cap)
        return NULL;
    uint64_t h = wkey(dbi, id, id_len, rev);
    for (size_t i = h & (s->wmap_cap - 1);; i = (i + 1) & (s->wmap_cap - 1)) {
        uint64_t v = s->wmap[i];
        if (!v)
            return NULL;
        struct swrite *w = &s->w[v - 1];
        if (w->dbi == dbi && strlen(w->id) == id_len && memcmp(w->id, id, id_len) == 0 &&
            w->rev.gen == rev->gen && w->rev.hash_len == rev->hash_len &&
            memcmp(w->rev.hash, rev->hash, rev->hash_len) == 0)
            return w;
    }
}

static void wmap_put(struct sim *s, size_t idx)
{
    struct swrite *w = &s->w[idx];
    uint64_t h = wkey(w->dbi, w->id, strlen(w->id), &w->rev);
    for (size_t i = h & (s->wmap_cap - 1);; i = (i + 1) & (s->wmap_cap - 1))
        if (!s->wmap[i]) {
            s->wmap[i] = idx + 1;
            return;
        }
}

void sim_record_write(struct sim *s, unsigned node, unsigned dbi, const char *id,
                      const struct br_rev *rev, bool deleted)
{
    if (s->n_w == s->cap_w) {
        size_t cap = s->cap_w ? s->cap_w * 2 : 256;
        struct swrite *v = br_realloc(s->w, cap * sizeof *v);
        if (!v)
            abort();
        s->w = v;
        s->cap_w = cap;
    }
    if ((s->n_w + 1) * 2 > s->wmap_cap) {
        size_t cap = s->wmap_cap ? s->wmap_cap * 2 : 1024;
        br_free(s->wmap);
        s->wmap = br_calloc(cap, sizeof *s->wmap);
        if (!s->wmap)
            abort();
        s->wmap_cap = cap;
        for (size_t i = 0; i < s->n_w; i++)
            wmap_put(s, i);
    }
    struct swrite *w = &s->w[s->n_w];
    memset(w, 0, sizeof *w);
    w->node = node;
    w->dbi = dbi;
    snprintf(w->id, sizeof w->id, "%s", id);
    w->rev = *rev;
    w->deleted = deleted;
    w->at_us = s->now_us;
    w->seen = br_calloc(s->n, 1);
    if (!w->seen)
        abort();
    w->seen[node] = 1;
    w->reached = 1;
    wmap_put(s, s->n_w);
    s->n_w++;
}

void sim_note_arrival(struct sim *s, unsigned node, unsigned dbi, const char *id, size_t id_len,
                      const struct br_rev *rev)
{
    struct swrite *w = wfind(s, dbi, id, id_len, rev);
    if (!w || w->seen[node])
        return;
    w->seen[node] = 1;
    w->reached++;
    if (s->n_lat == s->cap_lat) {
        size_t cap = s->cap_lat ? s->cap_lat * 2 : 1024;
        uint64_t *v = br_realloc(s->lat_us, cap * sizeof *v);
        if (!v)
            abort();
        s->lat_us = v;
        s->cap_lat = cap;
    }
    s->lat_us[s->n_lat++] = s->now_us - w->at_us;
}

/* ---- convergence ---- */

bool sim_is_full(const struct sim *s, unsigned node, unsigned dbi)
{
    return s->nodes[node].n_paths[dbi] == 0;
}

/* The first live full replica of dbi, or -1. */
static int reference(struct sim *s, unsigned dbi)
{
    for (unsigned i = 0; i < s->n; i++)
        if (s->nodes[i].up && sim_is_full(s, i, dbi))
            return (int)i;
    return -1;
}

struct docent {
    char *id;
    struct br_rev rev;
    bool deleted;
};

struct doclist {
    struct docent *v;
    size_t n, cap;
};

static int collect(void *arg, const struct br_change *c)
{
    struct doclist *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct docent *v = br_realloc(l->v, cap * sizeof *v);
        if (!v)
            return 1;
        l->v = v;
        l->cap = cap;
    }
    struct docent *d = &l->v[l->n];
    d->id = br_malloc(c->id_len + 1);
    if (!d->id)
        return 1;
    memcpy(d->id, c->id, c->id_len);
    d->id[c->id_len] = '\0';
    d->rev = c->rev;
    d->deleted = c->deleted;
    l->n++;
    return 0;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct docent *)a)->id, ((const struct docent *)b)->id);
}

static void doclist_free(struct doclist *l)
{
    for (size_t i = 0; i < l->n; i++)
        br_free(l->v[i].id);
    br_free(l->v);
    memset(l, 0, sizeof *l);
}

/* Every document of node's dbi (filtered by `paths` when given), sorted by id. */
static br_err docs_of(struct sim *s, unsigned node, unsigned dbi, const char *const *paths,
                      size_t n_paths, struct doclist *out)
{
    memset(out, 0, sizeof *out);
    struct br_changes_opts o = {.paths = paths, .n_paths = n_paths};
    br_err e = br_db_changes(s->nodes[node].dbs[dbi], &o, collect, out, NULL);
    if (e)
        return e;
    qsort(out->v, out->n, sizeof *out->v, by_id);
    return BR_OK;
}

static bool rev_eq(const struct br_rev *a, const struct br_rev *b)
{
    return a->gen == b->gen && a->hash_len == b->hash_len &&
           memcmp(a->hash, b->hash, a->hash_len) == 0;
}

static bool written_by(struct sim *s, unsigned node, unsigned dbi, const char *id)
{
    for (size_t i = 0; i < s->n_w; i++)
        if (s->w[i].node == node && s->w[i].dbi == dbi && strcmp(s->w[i].id, id) == 0)
            return true;
    return false;
}

/* Does filtered replica f hold exactly what its patterns select from the reference r? On a
 * difference, msg says which document. */
static bool filter_ok(struct sim *s, unsigned f, unsigned r, unsigned dbi, char *msg, size_t cap)
{
    struct snode *nf = &s->nodes[f];
    struct doclist want, have;
    if (docs_of(s, r, dbi, nf->paths[dbi], nf->n_paths[dbi], &want))
        return false;
    if (docs_of(s, f, dbi, NULL, 0, &have)) {
        doclist_free(&want);
        return false;
    }
    bool ok = true;
    size_t i = 0, j = 0;
    while (ok && (i < want.n || j < have.n)) {
        int c = i == want.n ? 1 : j == have.n ? -1 : strcmp(want.v[i].id, have.v[j].id);
        if (c < 0) {
            ok = false;
            if (msg)
                snprintf(msg, cap, "n%u (filter %s) lacks %s/%s that n%u holds", f, nf->filter[dbi],
                         s->sc->dbs[dbi], want.v[i].id, r);
        } else if (c > 0) {
            if (!written_by(s, f, dbi, have.v[j].id)) {
                ok = false;
                if (msg)
                    snprintf(msg, cap,
                             "n%u (filter %s) holds %s/%s that its filter does not select", f,
                             nf->filter[dbi], s->sc->dbs[dbi], have.v[j].id);
            }
            j++;
        } else {
            if (!rev_eq(&want.v[i].rev, &have.v[j].rev) || want.v[i].deleted != have.v[j].deleted) {
                ok = false;
                if (msg)
                    snprintf(msg, cap, "n%u (filter %s) has another winner for %s/%s than n%u", f,
                             nf->filter[dbi], s->sc->dbs[dbi], have.v[j].id, r);
            }
            i++;
            j++;
        }
    }
    doclist_free(&want);
    doclist_free(&have);
    return ok;
}

bool sim_converged(struct sim *s)
{
    for (unsigned d = 0; d < s->sc->n_dbs; d++) {
        int r = reference(s, d);
        if (r < 0)
            continue;
        struct br_db_digest ref;
        if (br_db_digest(s->nodes[r].dbs[d], &ref))
            return false;
        for (unsigned i = 0; i < s->n; i++) {
            if (!s->nodes[i].up || !sim_is_full(s, i, d) || (int)i == r)
                continue;
            struct br_db_digest dg;
            if (br_db_digest(s->nodes[i].dbs[d], &dg) || memcmp(dg.set_hash, ref.set_hash, 16))
                return false;
        }
    }
    for (unsigned d = 0; d < s->sc->n_dbs; d++) {
        int r = reference(s, d);
        for (unsigned i = 0; r >= 0 && i < s->n; i++)
            if (s->nodes[i].up && !sim_is_full(s, i, d) &&
                !filter_ok(s, i, (unsigned)r, d, NULL, 0))
                return false;
    }
    return true;
}

/* ---- the invariants ---- */

static bool same_doc(struct sim *s, unsigned a, unsigned b, unsigned dbi, const char *id, char *msg,
                     size_t cap)
{
    struct br_get_opts o = {.conflicts = true, .include_deleted = true};
    struct br_doc *da = NULL, *db = NULL;
    br_err ea = br_db_get(s->nodes[a].dbs[dbi], id, strlen(id), &o, &da, NULL);
    br_err eb = br_db_get(s->nodes[b].dbs[dbi], id, strlen(id), &o, &db, NULL);
    bool ok = ea == eb;
    if (ok && !ea) {
        ok = rev_eq(&da->rev, &db->rev) && da->deleted == db->deleted &&
             da->n_conflicts == db->n_conflicts;
        for (size_t i = 0; ok && i < da->n_conflicts; i++)
            ok = rev_eq(&da->conflicts[i], &db->conflicts[i]);
    }
    if (!ok)
        snprintf(msg, cap, "n%u and n%u disagree on %s/%s (winner or conflicts)", a, b,
                 s->sc->dbs[dbi], id);
    br_doc_free(da);
    br_doc_free(db);
    return ok;
}

/* Every revision in every tree of node's dbi was written by a client. */
static bool nothing_invented(struct sim *s, unsigned node, unsigned dbi, const struct doclist *l,
                             char *msg, size_t cap)
{
    for (size_t i = 0; i < l->n; i++) {
        struct br_open_rev *o = NULL;
        size_t n = 0;
        const char *id = l->v[i].id;
        if (br_db_get_open_revs(s->nodes[node].dbs[dbi], id, strlen(id), NULL, 0, true, &o, &n))
            continue;
        bool ok = true;
        for (size_t k = 0; ok && k < n; k++) {
            const struct br_doc *d = o[k].doc;
            if (!d)
                continue;
            for (size_t h = 0; ok && h < d->n_revisions; h++)
                if (!wfind(s, dbi, id, strlen(id), &d->revisions[h])) {
                    char t[BR_REV_TEXT_MAX];
                    br_rev_format(&d->revisions[h], t);
                    snprintf(msg, cap, "n%u holds %s/%s rev %s that no client wrote", node,
                             s->sc->dbs[dbi], id, t);
                    ok = false;
                }
        }
        br_open_revs_free(o, n);
        if (!ok)
            return false;
    }
    return true;
}

bool sim_check_invariants(struct sim *s, char *msg, size_t cap)
{
    for (unsigned d = 0; d < s->sc->n_dbs; d++) {
        int r = reference(s, d);
        if (r < 0)
            continue;
        /* 1. convergence: set hashes, winners, conflicts */
        struct br_db_digest ref;
        if (br_db_digest(s->nodes[r].dbs[d], &ref)) {
            snprintf(msg, cap, "convergence: cannot read n%d's digest", r);
            return false;
        }
        struct doclist l;
        if (docs_of(s, (unsigned)r, d, NULL, 0, &l)) {
            snprintf(msg, cap, "convergence: cannot read n%d's changes", r);
            return false;
        }
        bool ok = true;
        for (unsigned i = 0; ok && i < s->n; i++) {
            if (!s->nodes[i].up || !sim_is_full(s, i, d) || (int)i == r)
                continue;
            struct br_db_digest dg;
            if (br_db_digest(s->nodes[i].dbs[d], &dg) || memcmp(dg.set_hash, ref.set_hash, 16)) {
                snprintf(msg, cap, "convergence: n%u's set hash of %s differs from n%d's", i,
                         s->sc->dbs[d], r);
                ok = false;
                break;
            }
            for (size_t k = 0; ok && k < l.n; k++)
                ok = same_doc(s, (unsigned)r, i, d, l.v[k].id, msg, cap);
            if (!ok) {
                size_t m = strlen(msg);
                snprintf(msg + m, cap - m, " [convergence]");
            }
        }
        /* 3. nothing invented, on every live node */
        for (unsigned i = 0; ok && i < s->n; i++) {
            if (!s->nodes[i].up)
                continue;
            struct doclist li;
            if (docs_of(s, i, d, NULL, 0, &li))
                continue;
            ok = nothing_invented(s, i, d, &li, msg, cap);
            doclist_free(&li);
            if (!ok) {
                size_t m = strlen(msg);
                snprintf(msg + m, cap - m, " [no invented revision]");
            }
        }
        doclist_free(&l);
        if (!ok)
            return false;
        /* 2. no acknowledged write lost, at any live full replica */
        for (unsigned i = 0; i < s->n; i++) {
            if (!s->nodes[i].up || !sim_is_full(s, i, d))
                continue;
            for (size_t k = 0; k < s->n_w; k++) {
                const struct swrite *w = &s->w[k];
                /* a write whose node left before anyone pulled it is still in that node's
                 * store, and nowhere else yet: not lost, not checkable here */
                if (w->dbi != d || (!s->nodes[w->node].up && w->reached <= 1))
                    continue;
                struct br_revsdiff_in in = {w->id, strlen(w->id), &w->rev, 1};
                struct br_revsdiff_out out;
                if (br_db_revsdiff(s->nodes[i].dbs[d], &in, 1, &out))
                    continue;
                bool missing = out.n_missing > 0;
                br_revsdiff_out_fini(&out, 1);
                if (missing) {
                    char t[BR_REV_TEXT_MAX];
                    br_rev_format(&w->rev, t);
                    snprintf(msg, cap,
                             "n%u lacks %s/%s rev %s, acknowledged to a client of n%u "
                             "[no acknowledged write lost]",
                             i, s->sc->dbs[d], w->id, t, w->node);
                    return false;
                }
            }
        }
        /* 4. filters */
        for (unsigned i = 0; i < s->n; i++)
            if (s->nodes[i].up && !sim_is_full(s, i, d) &&
                !filter_ok(s, i, (unsigned)r, d, msg, cap)) {
                size_t m = strlen(msg);
                snprintf(msg + m, cap - m, " [filters]");
                return false;
            }
    }
    return true;
}

void sim_checks_fini(struct sim *s)
{
    for (size_t i = 0; i < s->n_w; i++)
        br_free(s->w[i].seen);
    br_free(s->w);
    br_free(s->wmap);
    br_free(s->lat_us);
    s->w = NULL;
    s->wmap = NULL;
    s->lat_us = NULL;
}
