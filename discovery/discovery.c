/* discovery.c — publish, browse and resolve `_barrel._tcp` through the Avahi client library.
 *
 * All Avahi objects and the state below the "Avahi thread only" line live on the threaded
 * poll's thread: they are touched there (in Avahi callbacks, which run with the poll's lock
 * held), in br_discovery_start() before that thread starts, and in br_discovery_stop() after
 * it has been joined. Nothing else crosses threads except `state`, an atomic, so no lock is
 * taken by this module.
 *
 * One `struct entry` per service instance the browser reports, keyed by (interface, protocol,
 * name, domain), each with its resolver kept open so address and TXT changes are seen. An
 * entry whose TXT parses, is not ours and is of our mesh is "reported": found() was called for
 * it. lost(id) is called when the last reported entry of that id goes.
 *
 * The daemon may be missing at start or may go away: the client is made with
 * AVAHI_CLIENT_NO_FAIL, so with a system bus but no daemon it waits for the daemon; when the
 * client fails (no bus at all, daemon or bus gone), every Avahi object is dropped and the
 * client is made again after retry_ms, from a timeout on the poll thread (a client cannot be
 * freed inside its own callback). One warning is logged each time discovery goes off. */
#include "barrel/discovery.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/thread-watch.h>
#include <avahi-common/timeval.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

#define TAG "discovery"
#define MAX_ENTRIES 1024 /* service instances tracked at once; more are dropped */
#define MAX_RENAMES 32   /* alternative names tried in a row when ours is taken */
#define SHORT_LEN 8
#define LOG_NAME_MAX 80

enum entry_state {
    E_PENDING,  /* resolving, or the resolver failed */
    E_REPORTED, /* found() was called with e->id */
    E_IGNORED,  /* our own id or another mesh (e->id says who) */
    E_BAD,      /* the TXT did not parse, or disagrees with the SRV record */
};

struct entry {
    struct entry *next;
    AvahiIfIndex ifindex;
    AvahiProtocol proto;
    char *name;
    char *domain;
    AvahiServiceResolver *resolver; /* NULL once it failed */
    enum entry_state state;
    char id[BR_DISCOVERY_ID_LEN + 1]; /* E_REPORTED, E_IGNORED; "" otherwise */
};

struct br_discovery {
    /* Set by br_discovery_start(), read-only after. */
    char id[BR_DISCOVERY_ID_LEN + 1];
    char short_id[SHORT_LEN + 1];
    char mesh[BR_DISCOVERY_MESH_LEN + 1];
    uint16_t port;
    AvahiProtocol proto; /* AVAHI_PROTO_UNSPEC, or AVAHI_PROTO_INET with ipv4_only */
    unsigned retry_ms;
    br_discovery_found_fn found;
    br_discovery_lost_fn lost;
    void *arg;
    AvahiStringList *txt; /* what we publish */
    AvahiThreadedPoll *poll;
    bool thread_running; /* touched by the thread that starts and stops */
    atomic_int state;    /* enum br_discovery_state */

    /* Avahi thread only (see the top of the file). */
    AvahiClient *client;
    AvahiEntryGroup *group;
    bool group_filled; /* our service is added and committed */
    AvahiServiceBrowser *browser;
    AvahiTimeout *retry; /* recreates the client; disabled while not needed */
    char *name;          /* our instance name; renamed on collisions */
    struct entry *entries;
    size_t n_entries;
    bool off_logged;  /* the warning for this off period is out */
    bool ever_on;     /* the daemon was reachable at some point */
    bool full_logged; /* the MAX_ENTRIES warning is out */
};

/* The handle whose callback this thread is running, to catch br_discovery_stop() from inside
 * one (joining the poll thread from itself would never return). */
static _Thread_local const br_discovery *dispatching;

static void client_cb(AvahiClient *c, AvahiClientState st, void *arg);

static void set_state(br_discovery *d, enum br_discovery_state s)
{
    atomic_store(&d->state, (int)s);
}

/* The short form of an id for logs: its first 8 characters without the dash. */
static void short_id(const char *id, char out[SHORT_LEN + 1])
{
    size_t n = 0;
    for (size_t i = 0; id[i] && n < SHORT_LEN; i++)
        if (id[i] != '-')
            out[n++] = id[i];
    out[n] = '\0';
}

/* A name from the network made safe for a quoted log value: printable ASCII, no quotes. */
static void log_name(const char *s, char out[LOG_NAME_MAX])
{
    size_t n = 0;
    for (; *s && n < LOG_NAME_MAX - 1; s++) {
        unsigned char c = (unsigned char)*s;
        out[n++] = (c < 0x20 || c > 0x7e || c == '"' || c == '\\') ? '?' : (char)c;
    }
    out[n] = '\0';
}

static void go_off(br_discovery *d, const char *what, const char *why)
{
    set_state(d, BR_DISCOVERY_OFF);
    if (d->off_logged) {
        br_log(BR_LOG_DEBUG, TAG, "event=mdns_off reason=\"%s\"", why);
        return;
    }
    d->off_logged = true;
    br_log(BR_LOG_WARN, TAG,
           "mDNS discovery off: %s (%s); static and gossip-learned peers still work", what, why);
}

/* ---- Reporting ---------------------------------------------------------------------------- */

static void call_found(br_discovery *d, const struct br_discovery_peer *p)
{
    if (!d->found)
        return;
    dispatching = d;
    d->found(d->arg, p);
    dispatching = NULL;
}

/* Call lost(id) unless another entry still reports id. */
static void maybe_lost(br_discovery *d, const char *id, bool notify)
{
    char s[SHORT_LEN + 1];
    for (const struct entry *e = d->entries; e; e = e->next)
        if (e->state == E_REPORTED && strcmp(e->id, id) == 0)
            return;
    if (!notify)
        return;
    short_id(id, s);
    br_log(BR_LOG_INFO, TAG, "event=mdns_lost id=%s", s);
    if (!d->lost)
        return;
    dispatching = d;
    d->lost(d->arg, id);
    dispatching = NULL;
}

/* Move e to state st with id (NULL for none), reporting lost if it was the last of its id. */
static void entry_set(br_discovery *d, struct entry *e, enum entry_state st, const char *id)
{
    char old[BR_DISCOVERY_ID_LEN + 1];
    bool was_reported = e->state == E_REPORTED;
    memcpy(old, e->id, sizeof old);
    e->state = st;
    snprintf(e->id, sizeof e->id, "%s", id ? id : "");
    if (was_reported && !(st == E_REPORTED && strcmp(old, e->id) == 0))
        maybe_lost(d, old, true);
}

/* True if the reason for dropping `self` was logged already: it or another entry is in state
 * st for the same node (E_IGNORED: the same id) or the same instance name (E_BAD). */
static bool already_logged(const br_discovery *d, const struct entry *self, enum entry_state st,
                           const char *id)
{
    for (const struct entry *e = d->entries; e; e = e->next) {
        if (e->state != st)
            continue;
        if (st == E_BAD ? strcmp(e->name, self->name) == 0 : strcmp(e->id, id) == 0)
            return true;
    }
    return false;
}

static void entry_free(br_discovery *d, struct entry *e, bool notify)
{
    bool was_reported = e->state == E_REPORTED;
    if (e->resolver)
        avahi_service_resolver_free(e->resolver);
    if (was_reported)
        maybe_lost(d, e->id, notify);
    br_free(e->name);
    br_free(e->domain);
    br_free(e);
}

/* Drop the browser and every entry; with notify, lost() is called for every reported node. */
static void drop_browsing(br_discovery *d, bool notify)
{
    while (d->entries) {
        struct entry *e = d->entries;
        d->entries = e->next;
        d->n_entries--;
        entry_free(d, e, notify);
    }
    d->full_logged = false;
    if (d->browser) {
        avahi_service_browser_free(d->browser);
        d->browser = NULL;
    }
}

/* Drop every Avahi object of the current client (the client itself stays: it may be inside
 * its own callback). */
static void teardown(br_discovery *d, bool notify)
{
    drop_browsing(d, notify);
    if (d->group) {
        avahi_entry_group_free(d->group);
        d->group = NULL;
    }
    d->group_filled = false;
}

/* ---- Resolving ---------------------------------------------------------------------------- */

static struct entry *entry_by_resolver(br_discovery *d, const AvahiServiceResolver *r)
{
    for (struct entry *e = d->entries; e; e = e->next)
        if (e->resolver == r)
            return e;
    return NULL;
}

static void drop_bad(br_discovery *d, struct entry *e, const char *reason)
{
    char name[LOG_NAME_MAX];
    if (!already_logged(d, e, E_BAD, NULL)) {
        log_name(e->name, name);
        br_log(BR_LOG_INFO, TAG, "event=mdns_bad_txt reason=\"%s\" name=\"%s\"", reason, name);
    }
    entry_set(d, e, E_BAD, NULL);
}

static void drop_ignored(br_discovery *d, struct entry *e, const struct br_discovery_txt *t,
                         const char *reason)
{
    char s[SHORT_LEN + 1];
    if (!already_logged(d, e, E_IGNORED, t->id)) {
        short_id(t->id, s);
        br_log(BR_LOG_INFO, TAG, "event=mdns_ignored id=%s reason=%s mesh=%s", s, reason,
               t->mesh[0] ? t->mesh : "none");
    }
    entry_set(d, e, E_IGNORED, t->id);
}

static void resolved(br_discovery *d, struct entry *e, const AvahiAddress *a, uint16_t port,
                     AvahiStringList *txt)
{
    const uint8_t *items[BR_DISCOVERY_TXT_MAX_ITEMS + 1];
    size_t lens[BR_DISCOVERY_TXT_MAX_ITEMS + 1];
    size_t n = 0;
    struct br_discovery_txt t;
    struct br_errbuf eb;
    /* One item more than allowed is enough for the parser to refuse too many. */
    for (AvahiStringList *l = txt; l && n <= BR_DISCOVERY_TXT_MAX_ITEMS;
         l = avahi_string_list_get_next(l)) {
        items[n] = avahi_string_list_get_text(l);
        lens[n] = avahi_string_list_get_size(l);
        n++;
    }
    if (br_discovery_txt_parse(items, lens, n, &t, &eb) != BR_OK) {
        drop_bad(d, e, eb.msg);
        return;
    }
    if (t.port != 0 && t.port != port) {
        drop_bad(d, e, "TXT port differs from the SRV port");
        return;
    }
    if (strcmp(t.id, d->id) == 0) {
        drop_ignored(d, e, &t, "own_id");
        return;
    }
    if (strcmp(t.mesh, d->mesh) != 0) {
        drop_ignored(d, e, &t, "mesh_mismatch");
        return;
    }
    struct br_discovery_peer p;
    memset(&p, 0, sizeof p);
    memcpy(p.id, t.id, sizeof p.id);
    memcpy(p.mesh, t.mesh, sizeof p.mesh);
    p.version = t.version;
    avahi_address_snprint(p.addr, sizeof p.addr, a);
    p.family = a->proto == AVAHI_PROTO_INET6 ? AF_INET6 : AF_INET;
    p.port = port;
    p.ifindex = e->ifindex;
    bool first = !(e->state == E_REPORTED && strcmp(e->id, t.id) == 0);
    entry_set(d, e, E_REPORTED, t.id);
    char s[SHORT_LEN + 1];
    short_id(t.id, s);
    br_log(first ? BR_LOG_INFO : BR_LOG_DEBUG, TAG,
           "event=mdns_found id=%s addr=%s port=%u if=%d v=%u", s, p.addr, (unsigned)p.port,
           p.ifindex, (unsigned)p.version);
    call_found(d, &p);
}

static void resolve_cb(AvahiServiceResolver *r, AvahiIfIndex ifindex, AvahiProtocol proto,
                       AvahiResolverEvent ev, const char *name, const char *type,
                       const char *domain, const char *host, const AvahiAddress *a, uint16_t port,
                       AvahiStringList *txt, AvahiLookupResultFlags flags, void *arg)
{
    br_discovery *d = arg;
    struct entry *e = entry_by_resolver(d, r);
    (void)ifindex;
    (void)proto;
    (void)type;
    (void)domain;
    (void)host;
    (void)flags;
    if (!e) { /* cannot happen: entries free their resolver first */
        avahi_service_resolver_free(r);
        return;
    }
    if (ev == AVAHI_RESOLVER_FOUND && a) {
        resolved(d, e, a, port, txt);
        return;
    }
    char lname[LOG_NAME_MAX];
    log_name(name ? name : "", lname);
    br_log(BR_LOG_DEBUG, TAG, "event=mdns_resolve_failed name=\"%s\" reason=\"%s\"", lname,
           avahi_strerror(avahi_client_errno(avahi_service_resolver_get_client(r))));
    avahi_service_resolver_free(r);
    e->resolver = NULL;
    entry_set(d, e, E_PENDING, NULL);
}

/* ---- Browsing ----------------------------------------------------------------------------- */

static struct entry **entry_find(br_discovery *d, AvahiIfIndex ifindex, AvahiProtocol proto,
                                 const char *name, const char *domain)
{
    for (struct entry **pe = &d->entries; *pe; pe = &(*pe)->next) {
        struct entry *e = *pe;
        if (e->ifindex == ifindex && e->proto == proto && strcmp(e->name, name) == 0 &&
            strcmp(e->domain, domain) == 0)
            return pe;
    }
    return NULL;
}

static void browse_new(br_discovery *d, AvahiClient *c, AvahiIfIndex ifindex, AvahiProtocol proto,
                       const char *name, const char *type, const char *domain)
{
    if (entry_find(d, ifindex, proto, name, domain))
        return;
    if (d->n_entries >= MAX_ENTRIES) {
        if (!d->full_logged)
            br_log(BR_LOG_WARN, TAG, "event=mdns_too_many_services max=%d", MAX_ENTRIES);
        d->full_logged = true;
        return;
    }
    struct entry *e = br_calloc(1, sizeof *e);
    if (!e)
        goto nomem;
    e->name = br_strdup(name);
    e->domain = br_strdup(domain);
    if (!e->name || !e->domain)
        goto nomem;
    e->ifindex = ifindex;
    e->proto = proto;
    e->state = E_PENDING;
    /* The address family follows the transport: IPv4 over IPv4, IPv6 over IPv6. */
    e->resolver =
        avahi_service_resolver_new(c, ifindex, proto, name, type, domain, proto, 0, resolve_cb, d);
    if (!e->resolver)
        br_log(BR_LOG_DEBUG, TAG, "event=mdns_resolve_failed reason=\"%s\"",
               avahi_strerror(avahi_client_errno(c)));
    e->next = d->entries;
    d->entries = e;
    d->n_entries++;
    return;
nomem:
    br_log(BR_LOG_WARN, TAG, "event=mdns_dropped reason=\"out of memory\"");
    if (e) {
        br_free(e->name);
        br_free(e->domain);
    }
    br_free(e);
}

static void schedule_retry(br_discovery *d);

static void browse_cb(AvahiServiceBrowser *b, AvahiIfIndex ifindex, AvahiProtocol proto,
                      AvahiBrowserEvent ev, const char *name, const char *type, const char *domain,
                      AvahiLookupResultFlags flags, void *arg)
{
    br_discovery *d = arg;
    AvahiClient *c = avahi_service_browser_get_client(b);
    struct entry **pe;
    switch (ev) {
    case AVAHI_BROWSER_NEW:
        if (flags & AVAHI_LOOKUP_RESULT_OUR_OWN)
            return;
        browse_new(d, c, ifindex, proto, name, type, domain);
        break;
    case AVAHI_BROWSER_REMOVE:
        pe = entry_find(d, ifindex, proto, name, domain);
        if (pe) {
            struct entry *e = *pe;
            *pe = e->next;
            d->n_entries--;
            entry_free(d, e, true);
        }
        break;
    case AVAHI_BROWSER_FAILURE:
        br_log(BR_LOG_WARN, TAG, "event=mdns_browse_failed reason=\"%s\"",
               avahi_strerror(avahi_client_errno(c)));
        teardown(d, true);
        go_off(d, "browsing failed", avahi_strerror(avahi_client_errno(c)));
        schedule_retry(d);
        break;
    case AVAHI_BROWSER_ALL_FOR_NOW:
    case AVAHI_BROWSER_CACHE_EXHAUSTED:
        break;
    }
}

static void browse_start(br_discovery *d, AvahiClient *c)
{
    if (d->browser)
        return;
    d->browser = avahi_service_browser_new(c, AVAHI_IF_UNSPEC, d->proto, BR_DISCOVERY_SERVICE_TYPE,
                                           NULL, 0, browse_cb, d);
    if (!d->browser)
        br_log(BR_LOG_WARN, TAG, "event=mdns_browse_failed reason=\"%s\"",
               avahi_strerror(avahi_client_errno(c)));
}

/* ---- Publishing --------------------------------------------------------------------------- */

static bool rename_service(br_discovery *d)
{
    char *alt = avahi_alternative_service_name(d->name);
    char *copy = alt ? br_strdup(alt) : NULL;
    avahi_free(alt);
    if (!copy)
        return false;
    br_free(d->name);
    d->name = copy;
    return true;
}

static void group_cb(AvahiEntryGroup *g, AvahiEntryGroupState st, void *arg);

static void publish(br_discovery *d, AvahiClient *c)
{
    char name[LOG_NAME_MAX];
    if (!d->group) {
        d->group = avahi_entry_group_new(c, group_cb, d);
        if (!d->group) {
            br_log(BR_LOG_WARN, TAG, "event=mdns_publish_failed reason=\"%s\"",
                   avahi_strerror(avahi_client_errno(c)));
            return;
        }
    }
    if (d->group_filled)
        return;
    for (int i = 0; i < MAX_RENAMES; i++) {
        int r = avahi_entry_group_add_service_strlst(d->group, AVAHI_IF_UNSPEC, d->proto, 0,
                                                     d->name, BR_DISCOVERY_SERVICE_TYPE, NULL, NULL,
                                                     d->port, d->txt);
        if (r == AVAHI_ERR_COLLISION) { /* the name is taken on our own daemon */
            if (!rename_service(d))
                break;
            log_name(d->name, name);
            br_log(BR_LOG_INFO, TAG, "event=mdns_renamed name=\"%s\"", name);
            continue;
        }
        if (r >= 0)
            r = avahi_entry_group_commit(d->group);
        if (r < 0) {
            br_log(BR_LOG_WARN, TAG, "event=mdns_publish_failed reason=\"%s\"", avahi_strerror(r));
            avahi_entry_group_reset(d->group);
            return;
        }
        d->group_filled = true;
        return;
    }
    log_name(d->name, name);
    br_log(BR_LOG_WARN, TAG, "event=mdns_publish_failed name=\"%s\" reason=\"no free name\"", name);
}

static void group_cb(AvahiEntryGroup *g, AvahiEntryGroupState st, void *arg)
{
    br_discovery *d = arg;
    AvahiClient *c = avahi_entry_group_get_client(g);
    char name[LOG_NAME_MAX];
    switch (st) {
    case AVAHI_ENTRY_GROUP_ESTABLISHED:
        log_name(d->name, name);
        br_log(BR_LOG_INFO, TAG, "event=mdns_published name=\"%s\" port=%u", name,
               (unsigned)d->port);
        break;
    case AVAHI_ENTRY_GROUP_COLLISION:
        /* Someone else on the link has our instance name: take the next one. */
        if (!rename_service(d)) {
            br_log(BR_LOG_WARN, TAG, "event=mdns_publish_failed reason=\"out of memory\"");
            break;
        }
        log_name(d->name, name);
        br_log(BR_LOG_INFO, TAG, "event=mdns_renamed name=\"%s\"", name);
        avahi_entry_group_reset(g);
        d->group_filled = false;
        publish(d, c);
        /* The name we gave up is someone else's now, but the browser flagged it
         * AVAHI_LOOKUP_RESULT_OUR_OWN while it was ours and will not report it again: browse
         * anew (peers already found are reported lost, then found again). */
        drop_browsing(d, true);
        browse_start(d, c);
        break;
    case AVAHI_ENTRY_GROUP_FAILURE:
        br_log(BR_LOG_WARN, TAG, "event=mdns_publish_failed reason=\"%s\"",
               avahi_strerror(avahi_client_errno(c)));
        break;
    case AVAHI_ENTRY_GROUP_UNCOMMITED:
    case AVAHI_ENTRY_GROUP_REGISTERING:
        break;
    }
}

/* ---- The client and its retries ------------------------------------------------------------ */

static void client_connect(br_discovery *d)
{
    int err = 0;
    AvahiClient *c = avahi_client_new(avahi_threaded_poll_get(d->poll), AVAHI_CLIENT_NO_FAIL,
                                      client_cb, d, &err);
    if (!c) {
        /* No system bus at all: NO_FAIL only covers a bus without the daemon. */
        go_off(d, d->ever_on ? "lost the Avahi daemon" : "no Avahi daemon reachable",
               avahi_strerror(err));
        schedule_retry(d);
        return;
    }
    d->client = c;
}

static void retry_cb(AvahiTimeout *t, void *arg)
{
    br_discovery *d = arg;
    avahi_threaded_poll_get(d->poll)->timeout_update(t, NULL); /* disabled until needed */
    if (d->client) {
        avahi_client_free(d->client);
        d->client = NULL;
    }
    br_log(BR_LOG_TRACE, TAG, "event=mdns_reconnect");
    client_connect(d);
}

static void schedule_retry(br_discovery *d)
{
    const AvahiPoll *api = avahi_threaded_poll_get(d->poll);
    struct timeval tv;
    avahi_elapse_time(&tv, d->retry_ms, 0);
    if (d->retry) {
        api->timeout_update(d->retry, &tv);
        return;
    }
    d->retry = api->timeout_new(api, &tv, retry_cb, d);
    if (!d->retry)
        br_log(BR_LOG_ERROR, TAG, "event=mdns_retry_failed reason=\"out of memory\"");
}

static void client_cb(AvahiClient *c, AvahiClientState st, void *arg)
{
    br_discovery *d = arg;
    /* While avahi_client_new() runs, d->client is not set yet: use c throughout. */
    switch (st) {
    case AVAHI_CLIENT_S_RUNNING:
        if (d->off_logged)
            br_log(BR_LOG_INFO, TAG, "mDNS discovery on: the Avahi daemon is reachable");
        d->off_logged = false;
        d->ever_on = true;
        set_state(d, BR_DISCOVERY_ON);
        publish(d, c);
        browse_start(d, c);
        break;
    case AVAHI_CLIENT_S_REGISTERING:
    case AVAHI_CLIENT_S_COLLISION:
        /* The daemon is (re)registering its host name: withdraw, publish again when running. */
        if (d->group)
            avahi_entry_group_reset(d->group);
        d->group_filled = false;
        set_state(d, BR_DISCOVERY_STARTING);
        break;
    case AVAHI_CLIENT_CONNECTING:
        /* A system bus without the daemon: the client waits for it to appear. */
        go_off(d, d->ever_on ? "lost the Avahi daemon" : "no Avahi daemon reachable",
               avahi_strerror(AVAHI_ERR_NO_DAEMON));
        break;
    case AVAHI_CLIENT_FAILURE:
        /* The daemon or the bus went away: drop everything, make a new client later. */
        teardown(d, true);
        go_off(d, d->ever_on ? "lost the Avahi daemon" : "no Avahi daemon reachable",
               avahi_strerror(avahi_client_errno(c)));
        schedule_retry(d);
        break;
    }
}

/* ---- Public functions --------------------------------------------------------------------- */

/* Free what start made, in any partial state; the poll thread must not be running. */
static void destroy(br_discovery *d)
{
    teardown(d, false);
    if (d->client)
        avahi_client_free(d->client);
    d->client = NULL;
    if (d->retry)
        avahi_threaded_poll_get(d->poll)->timeout_free(d->retry);
    d->retry = NULL;
    if (d->poll)
        avahi_threaded_poll_free(d->poll);
    d->poll = NULL;
    avahi_string_list_free(d->txt);
    d->txt = NULL;
    br_free(d->name);
    d->name = NULL;
}

br_err br_discovery_start(const struct br_discovery_opts *o, br_discovery **out,
                          struct br_errbuf *eb)
{
    struct br_discovery_txt t;
    struct br_discovery_txt_items items;
    br_discovery *d;
    memset(&t, 0, sizeof t);
    if (!o->id || strlen(o->id) != BR_DISCOVERY_ID_LEN)
        return br_fail(eb, BR_EINVAL, "id is not a node id (%d characters)", BR_DISCOVERY_ID_LEN);
    if (o->mesh && strlen(o->mesh) > BR_DISCOVERY_MESH_LEN)
        return br_fail(eb, BR_EINVAL, "mesh is neither empty nor %d lowercase hex digits",
                       BR_DISCOVERY_MESH_LEN);
    if (o->port == 0)
        return br_fail(eb, BR_EINVAL, "port must be in 1..65535");
    memcpy(t.id, o->id, BR_DISCOVERY_ID_LEN);
    snprintf(t.mesh, sizeof t.mesh, "%s", o->mesh ? o->mesh : "");
    t.version = o->version;
    t.port = o->port;
    if (br_discovery_txt_encode(&t, &items, eb) != BR_OK)
        return BR_EINVAL;

    d = br_calloc(1, sizeof *d);
    if (!d)
        return br_fail(eb, BR_ENOMEM, "out of memory");
    memcpy(d->id, t.id, sizeof d->id);
    memcpy(d->mesh, t.mesh, sizeof d->mesh);
    short_id(d->id, d->short_id);
    d->port = o->port;
    d->proto = o->ipv4_only ? AVAHI_PROTO_INET : AVAHI_PROTO_UNSPEC;
    d->retry_ms = o->retry_ms ? o->retry_ms : BR_DISCOVERY_RETRY_MS;
    d->found = o->found;
    d->lost = o->lost;
    d->arg = o->arg;
    set_state(d, BR_DISCOVERY_STARTING);
    d->name = br_malloc(sizeof "barrel-" + SHORT_LEN);
    if (!d->name)
        goto nomem;
    snprintf(d->name, sizeof "barrel-" + SHORT_LEN, "barrel-%s", d->short_id);
    for (size_t i = items.n; i-- > 0;) { /* avahi_string_list_add prepends */
        AvahiStringList *l = avahi_string_list_add(d->txt, items.item[i]);
        if (!l)
            goto nomem;
        d->txt = l;
    }
    d->poll = avahi_threaded_poll_new();
    if (!d->poll)
        goto nomem;
    /* The first attempt runs here, before the poll thread exists, so that the state (and the
     * warning when there is no daemon) is known when start returns. */
    client_connect(d);
    if (avahi_threaded_poll_start(d->poll) < 0) {
        destroy(d);
        br_free(d);
        return br_fail(eb, BR_EIO, "cannot start the Avahi poll thread");
    }
    d->thread_running = true;
    *out = d;
    return BR_OK;
nomem:
    destroy(d);
    br_free(d);
    return br_fail(eb, BR_ENOMEM, "out of memory");
}

void br_discovery_stop(br_discovery *d)
{
    if (!d || atomic_load(&d->state) == BR_DISCOVERY_STOPPED)
        return;
    if (dispatching == d) {
        br_log(BR_LOG_ERROR, TAG, "br_discovery_stop() called from a discovery callback");
        abort(); /* it would join its own thread */
    }
    if (d->thread_running)
        avahi_threaded_poll_stop(d->poll);
    d->thread_running = false;
    /* The thread is gone: its objects are ours. Freeing the group withdraws our service. */
    teardown(d, false);
    if (d->client)
        avahi_client_free(d->client);
    d->client = NULL;
    set_state(d, BR_DISCOVERY_STOPPED);
    br_log(BR_LOG_DEBUG, TAG, "event=mdns_stopped");
}

void br_discovery_free(br_discovery *d)
{
    if (!d)
        return;
    br_discovery_stop(d);
    destroy(d);
    br_free(d);
}

enum br_discovery_state br_discovery_state(const br_discovery *d)
{
    return (enum br_discovery_state)atomic_load(&((br_discovery *)d)->state);
}

const char *br_discovery_state_name(enum br_discovery_state s)
{
    switch (s) {
    case BR_DISCOVERY_OFF:
        return "off";
    case BR_DISCOVERY_STARTING:
        return "starting";
    case BR_DISCOVERY_ON:
        return "on";
    case BR_DISCOVERY_STOPPED:
        return "stopped";
    }
    return "?";
}
