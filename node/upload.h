/* upload.h — streamed request bodies: an attachment upload (or a multipart/related document)
 * is never held whole in memory.
 *
 * The http server hands the body's pieces to the loop as they arrive (http.h, stream_body);
 * here they are queued and written by a sink on the workers, one job at a time per upload, so
 * the sink's state (a blob writer) is only ever used by one thread at a time. At most
 * UPLOAD_QUEUE_MAX bytes wait per upload (what the loop holds plus what a job is writing):
 * beyond it reading pauses (br_http_body_rx) and resumes on the loop when a job has drained
 * the queue. When the body is complete the sink finishes (writes the revision) and answers;
 * on an error the sink answers early and the rest of the body is discarded; if the client
 * leaves, the sink aborts (what was written is removed) and nothing is stored.
 * Thread: loop, except the sink's functions, which run on a worker. */
#ifndef BARREL_NODE_UPLOAD_H
#define BARREL_NODE_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "api.h"
#include "auth.h"
#include "http.h"
#include "workers.h"

#define UPLOAD_QUEUE_MAX ((size_t)1 << 20)

/* Where a streamed body goes. Every function runs on a worker. open prepares state (a zeroed
 * block of state_size bytes): false when x is answered (an error) and nothing is held. write
 * takes the next bytes: false when x is answered; abort is still called. finish answers x and
 * releases state; abort releases state without storing anything. */
struct upload_sink {
    size_t state_size;
    bool (*open)(struct br_api *api, br_http_ex *x, void *state);
    bool (*write)(br_http_ex *x, void *state, const void *p, size_t n);
    void (*finish)(br_http_ex *x, void *state);
    void (*abort)(void *state);
};

/* What uploads share; the node owns it. Set w to NULL once the workers are freed: an upload
 * whose client leaves later is then aborted on the loop. */
struct upload_ctx {
    struct br_api *api;
    br_workers *w;
    br_auth *auth;
};

/* The sink for PUT /{db}/{docid}/{name} (api_att_put_* stages). */
extern const struct upload_sink upload_att_sink;
/* The sink for PUT /{db}/{docid} with multipart/related (api_multipart.c). */
extern const struct upload_sink upload_mp_doc_sink;

/* Take over x (body_streamed, dispatched): open the sink on a worker (checking the credentials
 * first when verify), then stream the body into it. x->user is the upload until x is
 * answered. */
void upload_start(struct upload_ctx *c, br_http_ex *x, const struct upload_sink *sink, bool verify);
/* The http server's body callbacks for x (x->user is the upload). */
void upload_on_piece(br_http_ex *x, const void *p, size_t n);
void upload_on_end(br_http_ex *x);
void upload_on_gone(br_http_ex *x);

#endif
