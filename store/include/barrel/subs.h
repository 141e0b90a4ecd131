/* subs.h — live subscriptions: register path patterns or a query on a database and receive
 * every matching committed change through a callback (DESIGN.md "Paths, queries,
 * subscriptions"; BEHAVIOURS.md SUB-09..27).
 *
 * A writer hands each committed change (id, rev, its topics) to a bounded per-database queue;
 * the delivery thread matches them in commit order through one pattern trie per database (a
 * change is tested against the patterns its topics can reach, not against every subscription;
 * when that queue is full the writer matches the oldest changes itself, in the same order);
 * a subscription never receives a change committed before it registered;
 * a query subscription registers the patterns its query touches (br_query_patterns) and then
 * checks the body. Each subscription is notified at most once per change, however many of its
 * patterns match. Events go to a bounded per-subscription queue and a per-database delivery
 * thread calls the callbacks, so a slow subscriber never stalls writers: when its queue is full
 * the subscription drops changes until it has caught up, then receives one BR_SUB_OVERFLOW
 * event counting what it lost (it can re-read the changes feed from the last seq it saw).
 * A deletion is reported with the paths of the revision it deleted (CHG-26). */
#ifndef BARREL_SUBS_H
#define BARREL_SUBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"
#include "barrel/hlc.h"
#include "barrel/query.h"
#include "barrel/rev.h"
#include "barrel/store.h"

#define BR_SUB_QUEUE_DEFAULT 1024
#define BR_SUB_PATTERNS_MAX 1024 /* patterns per subscription */

enum br_sub_kind { BR_SUB_CHANGE, BR_SUB_OVERFLOW };

struct br_sub_event {
    enum br_sub_kind kind;
    /* BR_SUB_CHANGE (borrowed: valid during the callback) */
    const char *id;
    size_t id_len;
    struct br_rev rev; /* the winning revision after the change */
    bool deleted;
    struct br_hlc seq;
    const char *const *paths; /* the document's topics (paths.h), sorted */
    size_t n_paths;
    /* BR_SUB_OVERFLOW: changes dropped since the last event delivered */
    uint64_t dropped;
};
/* Called on the database's delivery thread, one event at a time per database. It may call
 * br_sub_close (its own subscription included) but must not block for long: other
 * subscriptions of the database wait meanwhile (their queues keep filling, not the writers). */
typedef void (*br_sub_fn)(void *arg, const struct br_sub_event *ev);

struct br_sub_opts {
    const char *const *patterns; /* MQTT patterns; with a query, ANDed with it */
    size_t n_patterns;
    const br_query *query; /* borrowed: must outlive the subscription */
    size_t queue_max;      /* events buffered; 0: BR_SUB_QUEUE_DEFAULT */
};

typedef struct br_sub br_sub;

/* Subscribe. Needs at least one pattern or a query. BR_EINVAL (reason in eb) for a bad
 * pattern (SUB-10) or too many. The subscription holds a reference to db. Thread: any. */
BR_NODISCARD br_err br_db_subscribe(br_db *db, const struct br_sub_opts *o, br_sub_fn fn, void *arg,
                                    br_sub **out, struct br_errbuf *eb);
/* Unsubscribe: when it returns, fn is not running and will not be called again (called from
 * fn itself, it takes effect when fn returns). NULL is a no-op. */
void br_sub_close(br_sub *s);
/* How many subscriptions the database has (SUB-11). */
size_t br_db_sub_count(br_db *db);
/* Changes matched but not yet delivered, and changes dropped by overflow, for one
 * subscription (metrics, tests). */
void br_sub_stats(br_sub *s, uint64_t *queued, uint64_t *delivered, uint64_t *dropped);

#endif
