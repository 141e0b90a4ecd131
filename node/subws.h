/* subws.h — WS /{db}/_subscribe: live changes pushed over a WebSocket (DESIGN.md "Paths,
 * queries, subscriptions").
 *
 *   ws://host/{db}/_subscribe?paths=site/+/temp&paths=type/sensor   (MQTT patterns)
 *   ws://host/{db}/_subscribe?query={"where":[...]}                 (barrel query JSON)
 *   &include_docs=true adds the document to each message
 *
 * Each matching change is one text frame {"id","rev","seq","deleted"[,"doc"]}, in commit
 * order. It is built on store subscriptions (subs.h): their delivery thread formats messages
 * into a bounded per-socket queue and wakes the loop, which writes one frame per WRITEABLE. A
 * client that does not keep up is never buffered without bound: when the queue (or the
 * store's) overflows, the socket gets a last frame {"error":"overflow","reason","dropped"}
 * and is closed with status 1013 and the reason; the client can resume from the changes feed
 * at the last seq it saw. Thread: loop, unless noted. */
#ifndef BARREL_NODE_SUBWS_H
#define BARREL_NODE_SUBWS_H

#include <stdbool.h>
#include <stddef.h>

#include "barrel/err.h"
#include "barrel/store.h"

#include "http.h"
#include "metrics.h"

#define SUBWS_QUEUE_MAX 256                 /* messages waiting for one socket */
#define SUBWS_QUEUE_BYTES ((size_t)4 << 20) /* bytes waiting for one socket */

typedef struct br_subws_set br_subws_set;

/* wake(wake_arg) is called from store delivery threads (thread-safe). m may be NULL. */
BR_NODISCARD br_err br_subws_new(br_store *store, br_metrics *m, void (*wake)(void *),
                                 void *wake_arg, br_subws_set **out);
/* The server's on_ws_open for a path: a subscription, or NULL with x->resp set (400
 * bad_request, 404 not_found) when x does not name one. */
void *br_subws_open(br_subws_set *s, br_http_ex *x, br_http_ws *ws);
bool br_subws_writeable(br_subws_set *s, void *user);
void br_subws_closed(br_subws_set *s, void *user);
/* The loop was woken: ask to write on sockets with queued messages. */
void br_subws_on_wake(br_subws_set *s);
size_t br_subws_count(const br_subws_set *s);
/* Free the set (its sockets must be closed already). NULL is a no-op. */
void br_subws_free(br_subws_set *s);

#endif
