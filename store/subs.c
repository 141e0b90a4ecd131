/* subs.c — live subscriptions (subs.h).
 *
 * Per database: a registry holding every subscription, one pattern trie whose values are
 * subscriptions, a bounded FIFO of committed changes, and a delivery thread started with the
 * first subscription. Writers call subs_publish under db->wmu right after a commit: for each
 * changed document they copy its id, revision, seq and topics (gathered by the index's walk, or
 * walked here) into one block, plus the body when query subscriptions exist, and append it to
 * the FIFO under sb->mu, waking the delivery thread only if it sleeps. The delivery thread pops
 * changes in order and matches them (match_pending): it sorts the topics, walks the trie per
 * topic under sb->trie_mu, marks each subscription hit (a per-change stamp dedupes), checks
 * query subscriptions against the body, and then takes sb->mu once per batch to append the
 * block, now the shared event, to each hit subscription's bounded ring (bench/query_bench.c
 * part 2: matching on the writer was a fifth of a write). Matching is serialised by trie_mu and
 * takes changes from the FIFO in order, so events reach every ring in commit order. When the
 * FIFO is full (the delivery thread is held up by a slow callback) the writer matches a batch
 * of the oldest changes itself, by the same path, before appending: it never waits for
 * subscribers and nothing is lost or reordered. Each change carries a ticket (its rank in the
 * FIFO) and each subscription the last ticket given when it registered: a change committed
 * before a subscription, still in the FIFO when it registers, is not delivered to it.
 * Both locks are taken by spinning briefly first (lock_briefly). Lock order: db->wmu,
 * sb->trie_mu, sb->mu. The delivery thread pops events and calls callbacks without holding
 * either; `busy` marks the subscription whose callback runs, and br_sub_close waits on it
 * (unless called from that callback, where the thread frees the subscription after). */
#include "barrel/subs.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

#include "store_int.h"

/* One change, copied once by the writer into the FIFO, then matched and shared (refcounted) as
 * the event of every subscription it hit: this head, then the id (NUL-terminated), the topic
 * pointers, the topic text and, for query subscriptions, the body, in one allocation
 * (ev_make). A subscription's ring holds only the pointer, so a change hitting nine
 * subscriptions is one block and nine words (bench/query_bench.c part 2). */
struct ev_head {
    atomic_int refs;
    bool deleted;
    size_t id_len, n_paths, body_len;
    struct br_rev rev;
    struct br_hlc seq;
    const char **paths;   /* sorted by the matcher */
    const uint8_t *body;  /* NULL: none, or no query subscription when it was queued */
    uint64_t ticket;      /* rank in the FIFO (sb->ticket when appended) */
    struct ev_head *next; /* in the FIFO */
};

struct sub_ev {
    struct ev_head *h;
};

struct br_sub {
    struct br_db *db;
    br_sub_fn fn;
    void *arg;
    char **patterns; /* as registered in the trie */
    size_t n_patterns;
    const br_query *query;
    struct sub_ev *ring; /* grows on demand up to max (one pointer per queued event) */
    size_t cap, max, head, len;
    bool overflowing;
    uint64_t dropped_now; /* dropped since overflow began */
    uint64_t delivered, dropped_total;
    uint64_t stamp; /* last change that hit it */
    uint64_t since; /* sb->ticket when it registered: changes up to it are not its own */
    bool closed, busy, ready;
    bool self_closed;    /* closed from its own callback: the delivery thread frees it */
    atomic_bool closing; /* set by br_sub_close: the delivery thread stops mid-batch */
    struct br_sub *next_ready;
};

struct subs {
    pthread_mutex_t mu;      /* rings, ready list, `all`, and the thread's state */
    pthread_mutex_t trie_mu; /* the trie: a writer matching, or (un)subscribing */
    pthread_cond_t cv;       /* work for the thread, or a callback finished */
    br_pattern_trie *trie;
    br_sub **all;
    size_t n, cap;
    struct br_sub *ready_head, *ready_tail;
    pthread_t thread;
    bool running, stop;
    bool waiting; /* the delivery thread sleeps on cv: a writer must signal */
    /* the change FIFO (under mu) */
    struct ev_head *fifo_head, *fifo_tail;
    size_t fifo_len, fifo_max;
    uint64_t ticket;         /* the last ticket given */
    uint64_t writer_matched; /* changes a writer matched because the FIFO was full */
    atomic_size_t n_query;   /* query subscriptions: changes carry their body */
    /* publish scratch, reused by writers (under db->wmu) */
    br_buf tbuf;
    size_t *toff;
    char **tv;
    size_t tcap;
    /* match scratch (under trie_mu) */
    br_sub **hits;
    size_t hits_cap;
    uint64_t stamp;
};

/* Changes the FIFO holds before a writer matches the oldest itself: a few milliseconds of
 * writes, enough to ride out a callback of that length. */
#define FIFO_MAX 4096
/* Changes matched per trie_mu hold (the delivery thread, or a writer finding the FIFO full). */
#define MATCH_BATCH 64

/* sb->mu and sb->trie_mu are held for short spells by threads on other cores (one writer, the
 * delivery thread, rarely a subscriber): try a few times before sleeping in the kernel, so that
 * meeting the other side in its spell costs neither a futex sleep nor a wake-up. */
#define LOCK_SPINS 64

static void lock_briefly(pthread_mutex_t *mu)
{
    for (int i = 0; i < LOCK_SPINS; i++)
        if (pthread_mutex_trylock(mu) == 0)
            return;
    pthread_mutex_lock(mu);
}

static void ev_free(struct sub_ev *e)
{
    if (e->h && atomic_fetch_sub(&e->h->refs, 1) == 1)
        br_free(e->h);
    e->h = NULL;
}

static void make_ready(struct subs *sb, br_sub *s)
{
    if (s->ready || s->busy)
        return;
    s->ready = true;
    s->next_ready = NULL;
    if (sb->ready_tail)
        sb->ready_tail->next_ready = s;
    else
        sb->ready_head = s;
    sb->ready_tail = s;
}

static void unready(struct subs *sb, br_sub *s)
{
    if (!s->ready)
        return;
    br_sub **pp = &sb->ready_head, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->next_ready) {
        if (*pp == s) {
            *pp = s->next_ready;
            if (sb->ready_tail == s)
                sb->ready_tail = prev;
            break;
        }
    }
    s->ready = false;
}

static void sub_free(br_sub *s)
{
    while (s->len && s->ring) {
        ev_free(&s->ring[s->head]);
        s->head = (s->head + 1) % s->cap;
        s->len--;
    }
    br_free(s->ring);
    for (size_t i = 0; i < s->n_patterns; i++)
        br_free(s->patterns[i]);
    br_free(s->patterns);
    br_free(s);
}

#define DELIVER_BATCH 256
#define NAP_NS 200000 /* after draining, look again once before sleeping (see below) */

static void ev_view(const struct sub_ev *e, struct br_sub_event *ev)
{
    const struct ev_head *h = e->h;
    memset(ev, 0, sizeof *ev);
    ev->kind = BR_SUB_CHANGE;
    ev->id = (const char *)(h + 1);
    ev->id_len = h->id_len;
    ev->rev = h->rev;
    ev->deleted = h->deleted;
    ev->seq = h->seq;
    ev->paths = h->paths;
    ev->n_paths = h->n_paths;
}

/* The delivery thread. Under the mutex it takes the queued events of every ready
 * subscription, up to DELIVER_BATCH in all (one lock round trip per batch, not per
 * subscription or event: writers publish under the same mutex, and with 10,000 subscriptions
 * and several hits per write a round trip per subscription made writers queue on the lock,
 * bench/query_bench.c part 2). It marks those subscriptions busy, calls the callbacks outside
 * the lock, and stops a subscription's events when it is closed. When nothing is ready it naps
 * NAP_NS once without asking to be woken, so a steady stream of writes is picked up in batches
 * without a wake-up (a futex call) per write; only then does it sleep until a writer signals. */
struct taken {
    br_sub *s;
    size_t from, to; /* its events in held[from, to) */
    bool overflow;
    uint64_t dropped;
};

static size_t match_pending(struct subs *sb);

static void *deliver_loop(void *arg)
{
    struct br_db *db = arg;
    struct subs *sb = db->subs;
    struct sub_ev held[DELIVER_BATCH];
    struct taken took[DELIVER_BATCH];
    bool napped = false;
    pthread_mutex_lock(&sb->mu);
    while (!sb->stop) {
        if (sb->fifo_head) { /* match a batch of changes first (lock order: trie_mu, mu) */
            napped = false;
            pthread_mutex_unlock(&sb->mu);
            lock_briefly(&sb->trie_mu);
            match_pending(sb);
            pthread_mutex_unlock(&sb->trie_mu);
            lock_briefly(&sb->mu);
            continue;
        }
        if (!sb->ready_head) {
            if (!napped) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += NAP_NS;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                napped = true;
                pthread_cond_timedwait(&sb->cv, &sb->mu, &ts);
                continue;
            }
            sb->waiting = true;
            pthread_cond_wait(&sb->cv, &sb->mu);
            sb->waiting = false;
            continue;
        }
        napped = false;
        size_t n = 0, nt = 0;
        while (sb->ready_head && n < DELIVER_BATCH) {
            br_sub *s = sb->ready_head;
            sb->ready_head = s->next_ready;
            if (!sb->ready_head)
                sb->ready_tail = NULL;
            s->ready = false;
            struct taken *t = &took[nt];
            *t = (struct taken){.s = s, .from = n};
            while (s->len && n < DELIVER_BATCH) {
                held[n++] = s->ring[s->head];
                memset(&s->ring[s->head], 0, sizeof s->ring[s->head]);
                s->head = (s->head + 1) % s->cap;
                s->len--;
            }
            t->to = n;
            if (!s->len && s->overflowing) {
                t->overflow = true;
                t->dropped = s->dropped_now;
                s->overflowing = false; /* caught up: changes are queued again */
                s->dropped_now = 0;
            }
            if (t->to == t->from && !t->overflow)
                continue;
            s->busy = true;
            nt++;
        }
        if (!nt)
            continue;
        pthread_mutex_unlock(&sb->mu);
        for (size_t k = 0; k < nt; k++) {
            struct taken *t = &took[k];
            br_sub *s = t->s;
            size_t i = t->from;
            for (; i < t->to && !atomic_load(&s->closing); i++) {
                struct br_sub_event ev;
                ev_view(&held[i], &ev);
                s->fn(s->arg, &ev);
            }
            if (t->overflow && !atomic_load(&s->closing)) {
                struct br_sub_event over;
                memset(&over, 0, sizeof over);
                over.kind = BR_SUB_OVERFLOW;
                over.dropped = t->dropped;
                s->fn(s->arg, &over);
            }
            t->to = i; /* what was delivered: the rest was skipped by a close */
        }
        for (size_t i = 0; i < n; i++)
            ev_free(&held[i]);
        lock_briefly(&sb->mu);
        for (size_t k = 0; k < nt; k++) {
            br_sub *s = took[k].s;
            s->busy = false;
            s->delivered += took[k].to - took[k].from;
            if (s->closed) { /* unregistered already by br_sub_close; never ready again */
                if (s->self_closed)
                    sub_free(s); /* else the closer, waiting for busy, frees it */
            } else if (s->len || s->overflowing) {
                make_ready(sb, s);
            }
        }
        pthread_cond_broadcast(&sb->cv);
    }
    pthread_mutex_unlock(&sb->mu);
    return NULL;
}

static br_err subs_get(struct br_db *db, struct subs **out)
{
    pthread_mutex_lock(&db->cur_mu); /* guards db->subs creation */
    br_err e = BR_OK;
    if (!db->subs) {
        struct subs *sb = br_calloc(1, sizeof *sb);
        if (!sb) {
            e = BR_ENOMEM;
            goto out;
        }
        e = br_pattern_trie_new(&sb->trie);
        if (e) {
            br_free(sb);
            goto out;
        }
        br_buf_init(&sb->tbuf, 0);
        sb->fifo_max = FIFO_MAX;
        atomic_init(&sb->n_query, 0);
        pthread_mutex_init(&sb->mu, NULL);
        pthread_mutex_init(&sb->trie_mu, NULL);
        pthread_cond_init(&sb->cv, NULL);
        db->subs = sb;
    }
    *out = db->subs;
out:
    pthread_mutex_unlock(&db->cur_mu);
    return e;
}

void subs_release(struct br_db *db)
{
    struct subs *sb = db->subs;
    if (!sb)
        return;
    pthread_mutex_lock(&sb->mu);
    sb->stop = true;
    pthread_cond_broadcast(&sb->cv);
    pthread_mutex_unlock(&sb->mu);
    if (sb->running)
        pthread_join(sb->thread, NULL);
    for (size_t i = 0; i < sb->n; i++) /* subscriptions hold db references: none remain */
        sub_free(sb->all[i]);
    while (sb->fifo_head) { /* changes no subscription was left to see */
        struct ev_head *h = sb->fifo_head;
        sb->fifo_head = h->next;
        br_free(h);
    }
    br_free(sb->all);
    br_buf_fini(&sb->tbuf);
    br_free(sb->toff);
    br_free(sb->tv);
    br_free(sb->hits);
    br_pattern_trie_free(sb->trie);
    pthread_mutex_destroy(&sb->mu);
    pthread_mutex_destroy(&sb->trie_mu);
    pthread_cond_destroy(&sb->cv);
    br_free(sb);
    db->subs = NULL;
}

static void trie_drop(struct subs *sb, br_sub *s, size_t i)
{
    /* Cannot fail for a pair that was added: a failure is a bug worth a log line. */
    if (br_pattern_trie_remove(sb->trie, s->patterns[i], strlen(s->patterns[i]), s) != BR_OK)
        br_log(BR_LOG_ERROR, "store", "op=unsubscribe msg=\"pattern not in the trie\"");
}

/* Take s out of the registry (under sb->mu; its patterns are already out of the trie). */
static void unregister(struct subs *sb, br_sub *s)
{
    for (size_t i = 0; i < sb->n; i++) {
        if (sb->all[i] == s) {
            sb->all[i] = sb->all[--sb->n];
            break;
        }
    }
    atomic_fetch_sub(&s->db->n_subs, 1);
}

br_err br_db_subscribe(br_db *db, const struct br_sub_opts *o, br_sub_fn fn, void *arg,
                       br_sub **out, struct br_errbuf *eb)
{
    *out = NULL;
    if (!o || !fn || (!o->n_patterns && !o->query))
        return br_fail(eb, BR_EINVAL, "a subscription needs path patterns or a query");
    if (o->n_patterns > BR_SUB_PATTERNS_MAX)
        return br_fail(eb, BR_EINVAL, "at most %d patterns per subscription", BR_SUB_PATTERNS_MAX);
    for (size_t i = 0; i < o->n_patterns; i++) {
        br_err e = br_pattern_check(o->patterns[i], strlen(o->patterns[i]), eb);
        if (e)
            return e;
    }
    br_sub *s = br_calloc(1, sizeof *s);
    if (!s)
        return BR_ENOMEM;
    s->db = db;
    s->fn = fn;
    s->arg = arg;
    s->query = o->query;
    s->max = o->queue_max ? o->queue_max : BR_SUB_QUEUE_DEFAULT;
    br_err e = BR_OK;
    /* The trie holds the patterns; a query subscription without patterns registers the
     * patterns its query touches (SUB-25), and checks the query on each hit. */
    char **qp = NULL;
    size_t nqp = 0;
    if (!e && !o->n_patterns)
        e = br_query_patterns(o->query, &qp, &nqp);
    size_t np = o->n_patterns ? o->n_patterns : nqp;
    if (!e && np) {
        s->patterns = br_calloc(np, sizeof *s->patterns);
        if (!s->patterns)
            e = BR_ENOMEM;
    }
    for (size_t i = 0; !e && i < np; i++) {
        s->patterns[i] = br_strdup(o->n_patterns ? o->patterns[i] : qp[i]);
        if (!s->patterns[i])
            e = BR_ENOMEM;
        else
            s->n_patterns = i + 1;
    }
    br_free(qp);
    struct subs *sb = NULL;
    if (!e)
        e = subs_get(db, &sb);
    if (e) {
        sub_free(s);
        return e;
    }
    lock_briefly(&sb->trie_mu);
    lock_briefly(&sb->mu);
    if (sb->n == sb->cap) {
        size_t nc = sb->cap ? sb->cap * 2 : 8;
        br_sub **na = br_realloc(sb->all, nc * sizeof *na);
        if (!na)
            e = BR_ENOMEM;
        else {
            sb->all = na;
            sb->cap = nc;
        }
    }
    size_t added = 0;
    for (size_t i = 0; !e && i < s->n_patterns; i++) {
        e = br_pattern_trie_add(sb->trie, s->patterns[i], strlen(s->patterns[i]), s);
        added += !e;
    }
    if (!e && !sb->running) {
        if (pthread_create(&sb->thread, NULL, deliver_loop, db) != 0)
            e = BR_ENOMEM;
        else
            sb->running = true;
    }
    if (e) {
        for (size_t i = 0; i < added; i++)
            trie_drop(sb, s, i);
        pthread_mutex_unlock(&sb->mu);
        pthread_mutex_unlock(&sb->trie_mu);
        sub_free(s);
        return e;
    }
    s->since = sb->ticket; /* changes already queued are not its own */
    if (s->query)
        atomic_fetch_add(&sb->n_query, 1);
    sb->all[sb->n++] = s;
    atomic_fetch_add(&db->n_subs, 1);
    pthread_mutex_unlock(&sb->mu);
    pthread_mutex_unlock(&sb->trie_mu);
    /* The subscription keeps the database open. */
    pthread_mutex_lock(&db->s->cat_mu);
    db->refs++;
    pthread_mutex_unlock(&db->s->cat_mu);
    *out = s;
    return BR_OK;
}

void br_sub_close(br_sub *s)
{
    if (!s)
        return;
    struct br_db *db = s->db;
    struct subs *sb = db->subs;
    /* Out of the trie first: the matcher that hit s queues its event before releasing
     * trie_mu, and none can match it after this. Waiting for a running callback below releases
     * sb->mu while it sleeps, so writers are not held up by it. */
    lock_briefly(&sb->trie_mu);
    for (size_t i = 0; i < s->n_patterns; i++)
        trie_drop(sb, s, i);
    pthread_mutex_unlock(&sb->trie_mu);
    lock_briefly(&sb->mu);
    if (s->query)
        atomic_fetch_sub(&sb->n_query, 1);
    unregister(sb, s);
    unready(sb, s);
    bool own_cb = s->busy && pthread_equal(pthread_self(), sb->thread);
    s->closed = true;
    s->self_closed = own_cb;
    atomic_store(&s->closing, true);
    if (!own_cb) {
        while (s->busy)
            pthread_cond_wait(&sb->cv, &sb->mu);
    }
    pthread_mutex_unlock(&sb->mu);
    if (!own_cb)
        sub_free(s); /* else the delivery thread frees it when the callback returns */
    /* Dropping the last reference joins the delivery thread: never from that thread. */
    if (own_cb) {
        pthread_mutex_lock(&db->s->cat_mu);
        if (db->refs > 1) {
            db->refs--;
            pthread_mutex_unlock(&db->s->cat_mu);
            return;
        }
        pthread_mutex_unlock(&db->s->cat_mu);
        br_log(BR_LOG_WARN, "store",
               "op=sub_close db=%s msg=\"last handle closed from a callback: kept open\"",
               db->name);
        return;
    }
    br_db_close(db);
}

size_t br_db_sub_count(br_db *db)
{
    return (size_t)atomic_load(&db->n_subs);
}

void br_sub_stats(br_sub *s, uint64_t *queued, uint64_t *delivered, uint64_t *dropped)
{
    struct subs *sb = s->db->subs;
    pthread_mutex_lock(&sb->mu);
    *queued = s->len;
    *delivered = s->delivered;
    *dropped = s->dropped_total;
    pthread_mutex_unlock(&sb->mu);
}

/* ---- publishing (writer side) ---- */

/* Make room for one more event (under sb->mu); false when the queue is at its maximum or the
 * memory is not there. */
static bool ring_room(br_sub *s)
{
    if (s->len < s->cap)
        return true;
    if (s->cap >= s->max)
        return false;
    size_t nc = s->cap ? s->cap * 2 : 16;
    if (nc > s->max)
        nc = s->max;
    struct sub_ev *nr = br_calloc(nc, sizeof *nr);
    if (!nr)
        return false;
    for (size_t i = 0; i < s->len; i++) /* unwrap into the new ring */
        nr[i] = s->ring[(s->head + i) % s->cap];
    br_free(s->ring);
    s->ring = nr;
    s->cap = nc;
    s->head = 0;
    return true;
}

/* A change's topics, NUL-separated in one buffer; the buffer and arrays belong to the registry
 * and are reused by every publish (writers are serialised by db->wmu), so steady-state
 * publishing allocates only the shared event block. */
struct topics {
    br_buf *t;
    size_t *off;
    char **v;
    size_t n, *cap;
    br_err err;
};

static int collect_topic(void *arg, const struct br_path_value *pv)
{
    struct topics *tp = arg;
    size_t at = tp->t->len;
    br_err e = br_path_topic(pv, tp->t);
    if (!e)
        e = br_buf_append(tp->t, "", 1);
    if (!e && tp->n == *tp->cap) {
        size_t nc = *tp->cap ? *tp->cap * 2 : 32;
        size_t *no = br_realloc(tp->off, nc * sizeof *no);
        if (no)
            tp->off = no;
        char **nv = no ? br_realloc(tp->v, nc * sizeof *nv) : NULL;
        if (nv)
            tp->v = nv;
        if (!no || !nv)
            e = BR_ENOMEM;
        else
            *tp->cap = nc;
    }
    if (!e)
        tp->off[tp->n++] = at;
    tp->err = e;
    return e != BR_OK;
}

void subs_topics_init(struct subs_topics *t)
{
    memset(t, 0, sizeof *t);
    br_buf_init(&t->text, 0);
}

void subs_topics_fini(struct subs_topics *t)
{
    br_buf_fini(&t->text);
    br_free(t->off);
    memset(t, 0, sizeof *t);
}

int subs_topics_tap(void *arg, const struct br_path_value *pv)
{
    struct subs_topics *t = arg;
    if (t->err)
        return 0;
    size_t at = t->text.len;
    br_err e = br_path_topic(pv, &t->text);
    if (!e)
        e = br_buf_append(&t->text, "", 1);
    if (!e && t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        size_t *no = br_realloc(t->off, nc * sizeof *no);
        if (!no) {
            e = BR_ENOMEM;
        } else {
            t->off = no;
            t->cap = nc;
        }
    }
    if (e) {
        t->err = e;
        t->text.len = at;
        return 0;
    }
    t->off[t->n++] = at;
    return 0;
}

/* Room for n topic pointers in the registry's scratch (under db->wmu). */
static bool topics_room(struct subs *sb, size_t n)
{
    if (n <= sb->tcap)
        return true;
    size_t nc = sb->tcap ? sb->tcap : 32;
    while (nc < n)
        nc *= 2;
    size_t *no = br_realloc(sb->toff, nc * sizeof *no);
    if (!no)
        return false;
    sb->toff = no;
    char **nv = br_realloc(sb->tv, nc * sizeof *nv);
    if (!nv)
        return false;
    sb->tv = nv;
    sb->tcap = nc;
    return true;
}

static int cstr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sort a change's topics: insertion sort for the handful a document usually has (qsort's
 * merge sort and its indirect calls cost more than the comparisons there). */
static void topics_sort(const char **v, size_t n)
{
    if (n > 16) {
        qsort(v, n, sizeof *v, cstr_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        const char *x = v[i];
        size_t j = i;
        for (; j > 0 && strcmp(v[j - 1], x) > 0; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

struct hits {
    struct subs *sb;
    br_sub **v;
    size_t n, cap;
    bool oom;
};

static void on_hit(void *arg, void *value)
{
    struct hits *h = arg;
    br_sub *s = value;
    if (s->stamp == h->sb->stamp)
        return; /* already hit by another topic of this change (SUB-16) */
    s->stamp = h->sb->stamp;
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 16;
        br_sub **nv = br_realloc(h->v, nc * sizeof *nv);
        if (!nv) {
            h->oom = true;
            return;
        }
        h->v = nv;
        h->cap = nc;
    }
    h->v[h->n++] = s;
}

/* Append to h the subscriptions a change hits (under trie_mu): its topics reach one of their
 * patterns, they registered before the change was queued (ticket), and a query, if any, holds
 * for body. */
static void match_one(struct subs *sb, struct hits *h, const char *const *paths, size_t n_paths,
                      uint64_t ticket, const uint8_t *body, size_t body_len)
{
    sb->stamp++;
    size_t from = h->n;
    for (size_t t = 0; t < n_paths; t++)
        br_pattern_trie_match(sb->trie, paths[t], strlen(paths[t]), on_hit, h);
    size_t nh = from;
    for (size_t k = from; k < h->n; k++) {
        br_sub *s = h->v[k];
        if (s->since < ticket && (!s->query || (body && br_query_match(s->query, body, body_len))))
            h->v[nh++] = s;
    }
    h->n = nh;
}

/* Match up to MATCH_BATCH changes from the head of the FIFO and queue their events (under
 * trie_mu, which serialises matching: events reach the rings in FIFO order). Returns how many
 * changes it took. */
static size_t match_pending(struct subs *sb)
{
    struct ev_head *batch[MATCH_BATCH];
    size_t ends[MATCH_BATCH];
    size_t nb = 0;
    lock_briefly(&sb->mu);
    while (sb->fifo_head && nb < MATCH_BATCH) {
        struct ev_head *b = sb->fifo_head;
        sb->fifo_head = b->next;
        if (!sb->fifo_head)
            sb->fifo_tail = NULL;
        sb->fifo_len--;
        batch[nb++] = b;
    }
    pthread_mutex_unlock(&sb->mu);
    if (!nb)
        return 0;
    struct hits h = {.sb = sb, .v = sb->hits, .cap = sb->hits_cap};
    for (size_t i = 0; i < nb; i++) {
        struct ev_head *b = batch[i];
        topics_sort(b->paths, b->n_paths);
        match_one(sb, &h, b->paths, b->n_paths, b->ticket, b->body, b->body_len);
        ends[i] = h.n;
    }
    sb->hits = h.v;
    sb->hits_cap = h.cap;
    if (h.oom)
        br_log(BR_LOG_ERROR, "store", "op=publish msg=\"out of memory: changes not matched\"");
    bool woke = false;
    lock_briefly(&sb->mu);
    for (size_t i = 0, k = 0; i < nb; i++) {
        struct ev_head *b = batch[i];
        int joined = 0;
        for (; k < ends[i]; k++) {
            br_sub *s = h.v[k];
            if (s->overflowing || !ring_room(s)) {
                /* full, or out of memory: reported as a drop, never silent */
                s->overflowing = true;
                s->dropped_now++;
                s->dropped_total++;
            } else {
                s->ring[(s->head + s->len) % s->cap].h = b;
                s->len++;
                joined++;
            }
            make_ready(sb, s);
            woke = true;
        }
        /* No reader sees the rings before sb->mu is released: the count can be set at once. */
        if (joined)
            atomic_store(&b->refs, joined);
        else
            br_free(b); /* hit nothing, or every hit subscription dropped it */
    }
    if (woke && sb->waiting)
        pthread_cond_broadcast(&sb->cv);
    pthread_mutex_unlock(&sb->mu);
    return nb;
}

/* The block of change c with topics tp, and its body when with_body, or NULL. */
static struct ev_head *ev_make(const struct subs_change *c, const struct topics *tp, bool with_body)
{
    size_t off = (c->id_len + 1 + sizeof(char *) - 1) / sizeof(char *) * sizeof(char *);
    size_t need = sizeof(struct ev_head) + off + tp->n * sizeof(char *);
    for (size_t i = 0; i < tp->n; i++)
        need += strlen(tp->v[i]) + 1;
    size_t body_len = with_body ? c->body_len : 0;
    need += body_len;
    struct ev_head *h = br_malloc(need);
    if (!h)
        return NULL;
    atomic_init(&h->refs, 0);
    h->deleted = c->deleted;
    h->id_len = c->id_len;
    h->n_paths = tp->n;
    h->rev = c->rev;
    h->seq = c->seq;
    h->next = NULL;
    h->ticket = 0;
    char *b = (char *)(h + 1);
    memcpy(b, c->id, c->id_len);
    b[c->id_len] = 0;
    const char **ptrs = (const char **)(void *)(b + off);
    char *text = b + off + tp->n * sizeof(char *);
    for (size_t i = 0; i < tp->n; i++) {
        size_t l = strlen(tp->v[i]) + 1;
        memcpy(text, tp->v[i], l);
        ptrs[i] = text;
        text += l;
    }
    h->paths = tp->n ? ptrs : NULL;
    h->body = NULL;
    h->body_len = body_len;
    if (with_body) {
        memcpy(text, c->body, body_len);
        h->body = (const uint8_t *)text;
    }
    return h;
}

/* No memory for change c's block: match everything queued before it, then c itself on this
 * thread, and count it as dropped by every subscription it hits (reported by an overflow
 * event, never silent). */
static void publish_oom(struct br_db *db, struct subs *sb, const struct subs_change *c,
                        const struct topics *tp)
{
    br_log(BR_LOG_ERROR, "store", "op=publish db=%s msg=\"out of memory\"", db->name);
    lock_briefly(&sb->trie_mu);
    while (match_pending(sb))
        ;
    struct hits h = {.sb = sb, .v = sb->hits, .cap = sb->hits_cap};
    match_one(sb, &h, (const char *const *)tp->v, tp->n, UINT64_MAX, c->body, c->body_len);
    sb->hits = h.v;
    sb->hits_cap = h.cap;
    lock_briefly(&sb->mu);
    for (size_t k = 0; k < h.n; k++) {
        br_sub *s = h.v[k];
        s->overflowing = true;
        s->dropped_now++;
        s->dropped_total++;
        make_ready(sb, s);
    }
    if (h.n && sb->waiting)
        pthread_cond_broadcast(&sb->cv);
    pthread_mutex_unlock(&sb->mu);
    pthread_mutex_unlock(&sb->trie_mu);
}

void subs_publish(struct br_db *db, const struct subs_change *chg, size_t n)
{
    struct subs *sb = db->subs;
    if (!sb || atomic_load(&db->n_subs) == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        const struct subs_change *c = &chg[i];
        struct topics tp = {.t = &sb->tbuf, .off = sb->toff, .v = sb->tv, .cap = &sb->tcap};
        if (c->topics) {
            /* gathered by the index's walk of the same body (docs.c commit) */
            const struct subs_topics *g = c->topics;
            tp.n = c->t_to - c->t_from;
            if (!topics_room(sb, tp.n)) {
                br_log(BR_LOG_ERROR, "store", "op=publish db=%s msg=\"out of memory\"", db->name);
                continue;
            }
            tp.v = sb->tv;
            for (size_t t = 0; t < tp.n; t++)
                tp.v[t] = (char *)g->text.data + g->off[c->t_from + t];
        } else {
            br_buf_reset(&sb->tbuf);
            if (c->body) {
                br_err e = br_paths_foreach(c->body, c->body_len, collect_topic, &tp);
                if (!tp.err && e == BR_ENOMEM)
                    tp.err = e;
            }
            sb->toff = tp.off;
            sb->tv = tp.v;
            if (tp.err) {
                br_log(BR_LOG_ERROR, "store", "op=publish db=%s msg=\"out of memory\"", db->name);
                continue;
            }
            for (size_t t = 0; t < tp.n; t++) /* the buffer no longer moves */
                tp.v[t] = (char *)sb->tbuf.data + tp.off[t];
        }
        /* The body rides along only for query subscriptions (checked again under sb->mu: one
         * registering meanwhile gets a ticket below this change's and must see it). */
        bool with_body = c->body && atomic_load(&sb->n_query) > 0;
        struct ev_head *block = ev_make(c, &tp, with_body);
        if (!block) {
            publish_oom(db, sb, c, &tp);
            continue;
        }
        for (;;) {
            lock_briefly(&sb->mu);
            if (!with_body && c->body && atomic_load(&sb->n_query) > 0) {
                pthread_mutex_unlock(&sb->mu);
                br_free(block);
                with_body = true;
                block = ev_make(c, &tp, true);
                if (!block)
                    break;
                continue;
            }
            if (sb->fifo_len >= sb->fifo_max) {
                /* The delivery thread is behind: match the oldest changes here, by the same
                 * path, so that this one can queue behind them (only writers append, one at a
                 * time under db->wmu, so there is room after). Never waits for subscribers. */
                pthread_mutex_unlock(&sb->mu);
                lock_briefly(&sb->trie_mu);
                size_t m = match_pending(sb);
                pthread_mutex_unlock(&sb->trie_mu);
                lock_briefly(&sb->mu);
                sb->writer_matched += m;
                pthread_mutex_unlock(&sb->mu);
                continue;
            }
            block->ticket = ++sb->ticket;
            if (sb->fifo_tail)
                sb->fifo_tail->next = block;
            else
                sb->fifo_head = block;
            sb->fifo_tail = block;
            sb->fifo_len++;
            if (sb->waiting)
                pthread_cond_broadcast(&sb->cv);
            pthread_mutex_unlock(&sb->mu);
            break;
        }
        if (!block)
            publish_oom(db, sb, c, &tp);
    }
}

void subs_test_fifo_max(struct br_db *db, size_t max)
{
    struct subs *sb = db->subs;
    lock_briefly(&sb->mu);
    sb->fifo_max = max ? max : FIFO_MAX;
    pthread_mutex_unlock(&sb->mu);
}

uint64_t subs_test_writer_matched(struct br_db *db)
{
    struct subs *sb = db->subs;
    lock_briefly(&sb->mu);
    uint64_t m = sb->writer_matched;
    pthread_mutex_unlock(&sb->mu);
    return m;
}
