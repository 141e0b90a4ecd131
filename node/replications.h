/* replications.h — the node's replication manager: POST /_replicate and GET /_active_tasks
 * (CouchDB's shapes), replications on their own threads, continuous ones persisted in
 * <data>/_replications.json and restarted at boot, failed ones restarted with capped
 * exponential backoff (1 s doubling to 60 s), cancellation that ends a run at once.
 *
 * Endpoints: a local database name, an http(s) URL of a CouchDB-compatible database, or a
 * peer's database over a /_p2p link: ws://host:port/db or barrel://NODEID/db (once
 * br_repmgr_set_p2p gave the node's links; without them those are refused with 501
 * not_implemented). Thread: any (one lock guards the task list). */
#ifndef BARREL_NODE_REPLICATIONS_H
#define BARREL_NODE_REPLICATIONS_H

#include <jansson.h>

#include "barrel/err.h"
#include "barrel/store.h"

typedef struct br_repmgr br_repmgr;
struct br_p2p;

/* A manager for store s; continuous replications recorded in data_dir are started. */
BR_NODISCARD br_err br_repmgr_new(br_store *s, const char *data_dir, br_repmgr **out);
/* The node's links, for peer endpoints (NULL: none). A continuous replication with a peer
 * recorded before the links exist retries with backoff until they do. */
void br_repmgr_set_p2p(br_repmgr *m, struct br_p2p *p);
/* Cancel every running replication (persisted ones stay recorded) and join their threads; new
 * requests are refused with 503 from then on. Call before the links stop: a peer endpoint's
 * calls wait for the event loop. Idempotent. */
void br_repmgr_stop(br_repmgr *m);
/* br_repmgr_stop, then free. NULL is a no-op. */
void br_repmgr_free(br_repmgr *m);

/* Handle a POST /_replicate body. Returns the HTTP status; *out is the JSON answer (CouchDB's
 * shapes, errors as {"error","reason"}). A one-shot replication runs on the calling thread. */
int br_repmgr_replicate(br_repmgr *m, const json_t *body, json_t **out);
/* GET /_active_tasks: a new JSON array. */
json_t *br_repmgr_tasks(br_repmgr *m);

#endif
