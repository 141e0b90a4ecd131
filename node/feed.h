/* feed.h — the streaming _changes feeds (longpoll, continuous, eventsource) on the event loop.
 *
 * No thread waits for changes. A feed registers a store watch (br_db_watch); a write marks the
 * feed dirty and wakes the loop (one wake per burst of writes, however many feeds listen). On
 * wake, each dirty feed with no read in flight queues one read job on the workers (chg_read
 * from its position); the job's rows are written to the client as chunks of a chunked
 * response. Heartbeats and the timeout run on the connection's lws timer. A continuous or
 * eventsource feed catches up in batches of FEED_BATCH rows, so a long backlog never sits
 * whole in memory.
 *
 * Endings (CouchDB shapes): longpoll answers {"results":[...],"last_seq","pending"} with the
 * first changes or, at the timeout, with none; continuous ends with {"last_seq":...} at the
 * timeout or after `limit` rows; eventsource just ends. All feeds end that way when the node
 * stops (br_feeds_stop). Thread: loop, except the watch callback inside. */
#ifndef BARREL_NODE_FEED_H
#define BARREL_NODE_FEED_H

#include <stddef.h>

#include "barrel/err.h"

#include "changes.h"
#include "http.h"
#include "workers.h"

#define FEED_BATCH 500

typedef struct br_feeds br_feeds;

/* The node's set of live feeds. Read jobs go to w; wake(wake_arg) (thread-safe) wakes the loop
 * when a watched database changes. */
BR_NODISCARD br_err br_feeds_new(br_workers *w, void (*wake)(void *), void *wake_arg,
                                 br_feeds **out);
/* Start the feed x->user (a struct chg_stream from api_changes, taken) on exchange x: send the
 * headers and begin waiting. If x's client is gone already, just free both. */
void br_feeds_start(br_feeds *f, br_http_ex *x);
/* The loop was woken: queue reads for the feeds whose database changed. */
void br_feeds_on_wake(br_feeds *f);
/* The http server's stream callbacks, for the feed on x. */
void br_feeds_on_timer(br_feeds *f, br_http_ex *x);
void br_feeds_on_gone(br_feeds *f, br_http_ex *x);
/* End every feed as at its timeout; feeds started later end at once. */
void br_feeds_stop(br_feeds *f);
/* Feeds open (for metrics and tests). */
size_t br_feeds_count(const br_feeds *f);
/* Free the set and any feed left (after the workers are gone). NULL is a no-op. */
void br_feeds_free(br_feeds *f);

#endif
