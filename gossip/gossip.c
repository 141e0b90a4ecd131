/* gossip.c — the member table and its SWIM-style state machine (see gossip.h). Members live in
 * one array (the table is small: a mesh of a LAN); lookups are linear. */
#include "barrel/gossip.h"

#include <stdio.h>
#include <string.h>

#include <xxhash.h>

#include "barrel/alloc.h"
#include "barrel/nodeid.h"

struct br_gossip {
    struct br_gossip_opts o;
    struct br_gossip_member self;
    struct br_gossip_member *m;
    size_t n, cap;
    /* wire entries borrow their address arrays from here (valid until the next call) */
    const char *ring[BR_GOSSIP_MAX_ENTRIES][BR_GOSSIP_MAX_ADDRS];
};

const char *br_member_state_name(enum br_member_state s)
{
    switch (s) {
    case BR_MEMBER_ALIVE:
        return "alive";
    case BR_MEMBER_SUSPECT:
        return "suspect";
    case BR_MEMBER_DEAD:
        return "dead";
    }
    return "?";
}

static void touched(br_gossip *g, struct br_gossip_member *m);

static unsigned dflt(unsigned v, unsigned d)
{
    return v ? v : d;
}

br_err br_gossip_new(const struct br_gossip_opts *o, br_gossip **out, struct br_errbuf *eb)
{
    if (!o || !o->self || !br_nodeid_valid(o->self, strlen(o->self)) ||
        strlen(o->self) >= BR_GOSSIP_ID_MAX)
        return br_fail(eb, BR_EINVAL, "gossip: this node's id is not a node id");
    br_gossip *g = br_calloc(1, sizeof *g);
    if (!g)
        return br_fail(eb, BR_ENOMEM, "out of memory");
    g->o = *o;
    g->o.probe_ms = dflt(o->probe_ms, 1000);
    g->o.dead_ms = dflt(o->dead_ms, 3000);
    g->o.forget_ms = dflt(o->forget_ms, 24u * 3600u * 1000u);
    g->o.max_members = dflt(o->max_members, 1024);
    g->o.retransmit_mult = dflt(o->retransmit_mult, 3);
    g->o.max_skew_ms = o->max_skew_ms ? o->max_skew_ms : 300000;
    g->o.dial_base_ms = dflt(o->dial_base_ms, 500);
    g->o.dial_max_ms = dflt(o->dial_max_ms, 8000);
    g->o.reconnect_ms = dflt(o->reconnect_ms, 10000);
    g->o.self = NULL;
    snprintf(g->self.id, sizeof g->self.id, "%s", o->self);
    g->self.inc = o->self_inc;
    touched(g, &g->self); /* announce our incarnation */
    *out = g;
    return BR_OK;
}

void br_gossip_free(br_gossip *g)
{
    if (!g)
        return;
    br_free(g->m);
    br_free(g);
}

const struct br_gossip_member *br_gossip_self(const br_gossip *g)
{
    return &g->self;
}

/* "host:port" or "[v6]:port", printable, port 1..65535. */
static bool addr_ok(const char *a, size_t len)
{
    if (len < 3 || len >= BR_GOSSIP_ADDR_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (a[i] <= ' ' || a[i] > '~' || a[i] == '/' || a[i] == '@')
            return false;
    const char *c = NULL;
    for (size_t i = len; i-- > 0;)
        if (a[i] == ':') {
            c = a + i;
            break;
        }
    if (!c || c == a || (size_t)(c - a) + 1 >= len)
        return false;
    unsigned long port = 0;
    for (const char *q = c + 1; q < a + len; q++) {
        if (*q < '0' || *q > '9')
            return false;
        port = port * 10 + (unsigned long)(*q - '0');
        if (port > 65535)
            return false;
    }
    return port > 0;
}

br_err br_gossip_set_self_addrs(br_gossip *g, const char *const *addrs, size_t n)
{
    if (n > BR_GOSSIP_MAX_ADDRS)
        n = BR_GOSSIP_MAX_ADDRS;
    for (size_t i = 0; i < n; i++)
        if (!addr_ok(addrs[i], strlen(addrs[i])))
            return BR_EINVAL;
    for (size_t i = 0; i < n; i++)
        snprintf(g->self.addrs[i], BR_GOSSIP_ADDR_MAX, "%s", addrs[i]);
    g->self.n_addrs = n;
    return BR_OK;
}

static struct br_gossip_member *find(const br_gossip *g, const char *id)
{
    for (size_t i = 0; i < g->n; i++)
        if (strcmp(g->m[i].id, id) == 0)
            return &g->m[i];
    return NULL;
}

const struct br_gossip_member *br_gossip_find(const br_gossip *g, const char *id)
{
    return find(g, id);
}

static unsigned log2_ceil(size_t n)
{
    unsigned k = 0;
    while (((size_t)1 << k) < n)
        k++;
    return k;
}

/* A change to disseminate: sent retransmit_mult * ceil(log2(n + 2)) times. */
static void touched(br_gossip *g, struct br_gossip_member *m)
{
    m->sends_left = g->o.retransmit_mult * (log2_ceil(g->n + 2) + 1);
}

static void set_state(br_gossip *g, struct br_gossip_member *m, enum br_member_state s,
                      uint64_t now_ms)
{
    if (m->state != s)
        m->state_since_ms = now_ms;
    m->state = s;
    touched(g, m);
}

static struct br_gossip_member *add(br_gossip *g, const char *id, uint64_t now_ms)
{
    if (g->n >= g->o.max_members)
        return NULL;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        struct br_gossip_member *v = br_realloc(g->m, cap * sizeof *v);
        if (!v)
            return NULL;
        g->m = v;
        g->cap = cap;
    }
    struct br_gossip_member *m = &g->m[g->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->id, sizeof m->id, "%s", id);
    m->state = BR_MEMBER_ALIVE;
    m->state_since_ms = now_ms;
    m->heard_ms = now_ms;
    return m;
}

static void add_addr(struct br_gossip_member *m, const char *addr, size_t len)
{
    for (size_t i = 0; i < m->n_addrs; i++)
        if (strlen(m->addrs[i]) == len && memcmp(m->addrs[i], addr, len) == 0) {
            if (i > 0) { /* move to the front: the newest first */
                char t[BR_GOSSIP_ADDR_MAX];
                memcpy(t, m->addrs[i], sizeof t);
                memmove(m->addrs[1], m->addrs[0], i * sizeof m->addrs[0]);
                memcpy(m->addrs[0], t, sizeof t);
            }
            return;
        }
    size_t keep = m->n_addrs < BR_GOSSIP_MAX_ADDRS ? m->n_addrs : BR_GOSSIP_MAX_ADDRS - 1;
    memmove(m->addrs[1], m->addrs[0], keep * sizeof m->addrs[0]);
    memcpy(m->addrs[0], addr, len);
    m->addrs[0][len] = '\0';
    m->n_addrs = keep + 1;
}

br_err br_gossip_note(br_gossip *g, const char *id, const char *addr, uint64_t now_ms)
{
    if (!id || !br_nodeid_valid(id, strlen(id)) || strlen(id) >= BR_GOSSIP_ID_MAX)
        return BR_EINVAL;
    if (strcmp(id, g->self.id) == 0)
        return BR_OK;
    if (addr && !addr_ok(addr, strlen(addr)))
        return BR_EINVAL;
    struct br_gossip_member *m = find(g, id);
    if (!m) {
        m = add(g, id, now_ms);
        if (!m)
            return BR_ETOOBIG;
        touched(g, m);
    }
    if (addr)
        add_addr(m, addr, strlen(addr));
    return BR_OK;
}

void br_gossip_link_up(br_gossip *g, const char *id, uint64_t now_ms)
{
    struct br_gossip_member *m = find(g, id);
    if (!m) {
        m = add(g, id, now_ms);
        if (!m)
            return;
        touched(g, m);
    }
    m->links++;
    m->probing = false;
    m->dial_fails = 0;
    m->next_dial_ms = 0;
    m->heard_ms = now_ms;
    if (m->state != BR_MEMBER_ALIVE) {
        /* We see it: alive here. Others learn it when the member refutes with a newer
         * incarnation, which it does once it hears of the suspicion. */
        m->state = BR_MEMBER_ALIVE;
        m->state_since_ms = now_ms;
    }
}

bool br_gossip_link_down(br_gossip *g, const char *id, uint64_t now_ms)
{
    struct br_gossip_member *m = find(g, id);
    if (!m || m->links == 0)
        return false;
    if (--m->links > 0 || m->state != BR_MEMBER_ALIVE)
        return false;
    m->probing = true;
    m->probe_sent = false;
    m->probe_deadline_ms = now_ms + g->o.probe_ms;
    return true;
}

void br_gossip_heard(br_gossip *g, const char *id, struct br_hlc hlc, int64_t skew_ms,
                     uint64_t now_ms)
{
    struct br_gossip_member *m = find(g, id);
    if (!m)
        return;
    m->heard_ms = now_ms;
    if (br_hlc_cmp(hlc, m->last_hlc) > 0)
        m->last_hlc = hlc;
    m->skew_ms = skew_ms;
    m->has_skew = true;
}

void br_gossip_probe_sent(br_gossip *g, const char *id)
{
    struct br_gossip_member *m = find(g, id);
    if (m)
        m->probe_sent = true;
}

void br_gossip_probe_answer(br_gossip *g, const char *id, bool alive, uint64_t now_ms)
{
    struct br_gossip_member *m = find(g, id);
    if (!m || !alive)
        return;
    m->heard_ms = now_ms;
    m->probing = false;
}

void br_gossip_dial_failed(br_gossip *g, const char *id, uint64_t now_ms)
{
    struct br_gossip_member *m = find(g, id);
    if (!m)
        return;
    unsigned shift = m->dial_fails < 5 ? m->dial_fails : 5;
    uint64_t d = (uint64_t)g->o.dial_base_ms << shift;
    if (d > g->o.dial_max_ms)
        d = g->o.dial_max_ms;
    if (m->state == BR_MEMBER_DEAD && d < g->o.reconnect_ms)
        d = g->o.reconnect_ms; /* the dead are tried again, slowly: a partition heals */
    m->dial_fails++;
    m->next_dial_ms = now_ms + d;
}

bool br_gossip_unreachable(br_gossip *g, const char *id, uint64_t now_ms)
{
    struct br_gossip_member *m = find(g, id);
    if (!m || m->links || m->probing || m->state != BR_MEMBER_ALIVE || m->dial_fails < 3)
        return false;
    m->probing = true;
    m->probe_sent = false;
    m->probe_deadline_ms = now_ms + g->o.probe_ms;
    return true;
}

void br_gossip_drop_addr(br_gossip *g, const char *id, const char *addr)
{
    struct br_gossip_member *m = find(g, id);
    for (size_t i = 0; m && i < m->n_addrs; i++)
        if (strcmp(m->addrs[i], addr) == 0) {
            memmove(m->addrs[i], m->addrs[i + 1], (m->n_addrs - i - 1) * sizeof m->addrs[0]);
            m->n_addrs--;
            return;
        }
}

/* Does entry (inc, s) override what m holds? */
static bool overrides(const struct br_gossip_member *m, struct br_hlc inc, enum br_member_state s)
{
    int c = br_hlc_cmp(inc, m->inc);
    return c > 0 || (c == 0 && s > m->state);
}

br_err br_gossip_merge(br_gossip *g, const char *from, const struct br_wire_peer *entries, size_t n,
                       uint64_t now_ms, uint64_t now_wall_ms, struct br_hlc refute_inc,
                       struct br_gossip_merge_result *r)
{
    memset(r, 0, sizeof *r);
    if (n > BR_GOSSIP_MAX_ENTRIES) {
        snprintf(r->reason, sizeof r->reason, "%zu entries, past the %d an exchange may carry", n,
                 BR_GOSSIP_MAX_ENTRIES);
        r->refused = n;
        return BR_EPROTO;
    }
#define REFUSE(...)                                                                                \
    do {                                                                                           \
        if (!r->refused++)                                                                         \
            snprintf(r->reason, sizeof r->reason, __VA_ARGS__);                                    \
        goto next;                                                                                 \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        const struct br_wire_peer *e = &entries[i];
        size_t idlen = e->node ? strlen(e->node) : 0;
        if (idlen >= BR_GOSSIP_ID_MAX || !br_nodeid_valid(e->node, idlen))
            REFUSE("entry %zu: not a node id", i);
        if (e->state > BR_MEMBER_DEAD)
            REFUSE("entry %zu: state %llu", i, (unsigned long long)e->state);
        if (e->hlc.wall > now_wall_ms + g->o.max_skew_ms)
            REFUSE("entry %zu: incarnation %llu ms ahead of our clock", i,
                   (unsigned long long)(e->hlc.wall - now_wall_ms));
        for (size_t k = 0; k < e->n_addrs; k++)
            if (!addr_ok(e->addrs[k], strlen(e->addrs[k])))
                REFUSE("entry %zu: address %zu is not host:port", i, k);
        enum br_member_state s = (enum br_member_state)e->state;
        if (strcmp(e->node, g->self.id) == 0) {
            /* about us: refute a suspicion or a death at our incarnation or newer */
            if (s != BR_MEMBER_ALIVE && br_hlc_cmp(e->hlc, g->self.inc) >= 0) {
                if (br_hlc_cmp(refute_inc, e->hlc) <= 0)
                    REFUSE("entry %zu: declares this node %s at an incarnation ahead of our "
                           "clock",
                           i, br_member_state_name(s));
                g->self.inc = refute_inc;
                touched(g, &g->self);
                r->changed++;
            }
            r->accepted++;
            goto next;
        }
        struct br_gossip_member *m = find(g, e->node);
        if (!m) {
            if (s == BR_MEMBER_DEAD) { /* nothing to learn from the death of a stranger */
                r->accepted++;
                goto next;
            }
            m = add(g, e->node, now_ms);
            if (!m)
                REFUSE("entry %zu: the member table is full (%u)", i, g->o.max_members);
            m->inc = e->hlc;
            m->state = s;
            touched(g, m);
            r->learned++;
        } else if (overrides(m, e->hlc, s)) {
            if (s != BR_MEMBER_ALIVE && m->links > 0 && strcmp(from, e->node) != 0) {
                /* we hold a link to it: keep it alive here, and let it refute */
                m->inc = e->hlc;
                touched(g, m);
            } else {
                m->inc = e->hlc;
                set_state(g, m, s, now_ms);
                if (s == BR_MEMBER_ALIVE)
                    m->probing = false;
            }
            m->heard_ms = now_ms;
            r->changed++;
        }
        /* addresses: the member's own word (or anyone's for a member without any) */
        if (strcmp(from, e->node) == 0 || m->n_addrs == 0)
            for (size_t k = e->n_addrs; k-- > 0;)
                add_addr(m, e->addrs[k], strlen(e->addrs[k]));
        r->accepted++;
    next:;
    }
#undef REFUSE
    return BR_OK;
}

size_t br_gossip_tick(br_gossip *g, uint64_t now_ms)
{
    size_t changed = 0;
    for (size_t i = 0; i < g->n;) {
        struct br_gossip_member *m = &g->m[i];
        if (m->probing && now_ms >= m->probe_deadline_ms) {
            m->probing = false;
            if (m->links == 0 && m->state == BR_MEMBER_ALIVE) {
                set_state(g, m, BR_MEMBER_SUSPECT, now_ms);
                changed++;
            }
        }
        if (m->state == BR_MEMBER_SUSPECT && m->links == 0 &&
            now_ms - m->state_since_ms >= g->o.dead_ms) {
            set_state(g, m, BR_MEMBER_DEAD, now_ms);
            changed++;
        }
        if (m->state == BR_MEMBER_DEAD && m->links == 0 &&
            now_ms - m->state_since_ms >= g->o.forget_ms) {
            g->m[i] = g->m[--g->n];
            continue;
        }
        i++;
    }
    return changed;
}

static void to_wire(br_gossip *g, const struct br_gossip_member *m, struct br_wire_peer *w,
                    size_t slot)
{
    for (size_t k = 0; k < m->n_addrs; k++)
        g->ring[slot][k] = m->addrs[k];
    w->node = m->id;
    w->addrs = g->ring[slot];
    w->n_addrs = m->n_addrs;
    w->hlc = m->inc;
    w->state = (uint64_t)m->state;
}

size_t br_gossip_entries(br_gossip *g, struct br_wire_peer *out, size_t max, size_t sample,
                         uint64_t rnd)
{
    size_t k = 0;
    if (max > BR_GOSSIP_MAX_ENTRIES)
        max = BR_GOSSIP_MAX_ENTRIES;
    if (k < max && g->self.sends_left) {
        to_wire(g, &g->self, &out[k], k);
        k++;
        g->self.sends_left--;
    }
    for (size_t i = 0; i < g->n && k < max; i++)
        if (g->m[i].sends_left) {
            g->m[i].sends_left--;
            to_wire(g, &g->m[i], &out[k], k);
            k++;
        }
    /* a sample: start at a random member and take every step-th */
    if (g->n && sample) {
        size_t start = (size_t)(rnd % g->n);
        size_t taken = 0;
        for (size_t j = 0; j < g->n && k < max && taken < sample; j++) {
            const struct br_gossip_member *m = &g->m[(start + j) % g->n];
            bool dup = false;
            for (size_t q = 0; q < k && !dup; q++)
                dup = out[q].node == m->id;
            if (dup || m->state == BR_MEMBER_DEAD)
                continue;
            to_wire(g, m, &out[k], k);
            k++;
            taken++;
        }
    }
    return k;
}

size_t br_gossip_all(br_gossip *g, struct br_wire_peer *out, size_t max)
{
    size_t k = 0;
    if (max > BR_GOSSIP_MAX_ENTRIES)
        max = BR_GOSSIP_MAX_ENTRIES;
    if (k < max) {
        to_wire(g, &g->self, &out[k], k);
        k++;
    }
    for (size_t i = 0; i < g->n && k < max; i++) {
        to_wire(g, &g->m[i], &out[k], k);
        k++;
    }
    return k;
}

static uint64_t member_hash(const struct br_gossip_member *m)
{
    uint8_t b[BR_GOSSIP_ID_MAX + 13];
    size_t n = strlen(m->id);
    memcpy(b, m->id, n);
    for (int i = 0; i < 8; i++)
        b[n + (size_t)i] = (uint8_t)(m->inc.wall >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        b[n + 8 + (size_t)i] = (uint8_t)(m->inc.logical >> (24 - 8 * i));
    b[n + 12] = (uint8_t)m->state;
    return XXH3_64bits(b, n + 13);
}

uint64_t br_gossip_mhash(const br_gossip *g)
{
    uint64_t h = member_hash(&g->self);
    for (size_t i = 0; i < g->n; i++)
        h ^= member_hash(&g->m[i]);
    return h ? h : 1;
}

size_t br_gossip_count(const br_gossip *g)
{
    return g->n;
}

const struct br_gossip_member *br_gossip_at(const br_gossip *g, size_t i)
{
    return i < g->n ? &g->m[i] : NULL;
}

void br_gossip_counts(const br_gossip *g, size_t *alive, size_t *suspect, size_t *dead)
{
    size_t c[3] = {0, 0, 0};
    for (size_t i = 0; i < g->n; i++)
        c[g->m[i].state]++;
    *alive = c[0];
    *suspect = c[1];
    *dead = c[2];
}

size_t br_gossip_dial_candidates(const br_gossip *g, uint64_t now_ms,
                                 const struct br_gossip_member **out, size_t max)
{
    size_t k = 0;
    /* alive first, then suspects (a dial may prove them alive), then the dead (a healed
     * partition: they are retried every reconnect_ms) */
    for (int pass = 0; pass < 3; pass++)
        for (size_t i = 0; i < g->n && k < max; i++) {
            const struct br_gossip_member *m = &g->m[i];
            enum br_member_state want = (enum br_member_state)pass;
            if (pass == 2 && now_ms < m->state_since_ms + g->o.reconnect_ms)
                continue;
            if (m->state != want || m->links || !m->n_addrs || now_ms < m->next_dial_ms)
                continue;
            out[k++] = m;
        }
    return k;
}
