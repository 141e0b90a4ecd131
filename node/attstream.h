/* attstream.h — sending a large attachment without holding it: the handler (api_att.c, on a
 * worker) opens the blob reader and leaves a struct att_stream in x->user; on the loop,
 * att_stream_start sends the headers and reads the blob in pieces of ATT_STREAM_PIECE on the
 * workers, queueing the next piece only when the client has taken the last one (the stream's
 * drained callback). At most one piece is in memory per download.
 *
 * A stream may instead (or after rd) send a list of segments, each some text or a blob read
 * the same way: a multipart/mixed open_revs answer (api_mixed.c) with its attachments.
 * Thread: loop. */
#ifndef BARREL_NODE_ATTSTREAM_H
#define BARREL_NODE_ATTSTREAM_H

#include "barrel/att.h"

#include "http.h"
#include "workers.h"

#define ATT_STREAM_PIECE ((size_t)256 << 10)
#define ATT_INLINE_MAX ((size_t)1 << 20) /* smaller attachments are answered in one piece */

struct att_seg {
    br_buf text; /* sent as is, when !blob */
    bool blob;   /* the blob `key` of db instead */
    uint8_t key[32];
};

struct att_stream {
    int kind; /* API_CONT_ATT (api.h) */
    br_db *db;
    br_att_reader *rd;
    struct att_seg *segs; /* after rd (may be NULL): owned, freed with the stream */
    size_t n_segs, cur;
    size_t text_off; /* bytes of segs[cur].text already sent */
    br_http_ex *x;   /* NULL once the client is gone */
    br_workers *w;
    bool busy, eof, failed;
    br_buf piece;
};

/* Free a stream that was never started (x->user set by a handler that then failed). */
void att_stream_free(struct att_stream *a);
/* Take x->user (a struct att_stream with db and rd set) and stream it on x. */
void att_stream_start(br_workers *w, br_http_ex *x);
/* The http server's stream callbacks for an attachment download. */
void att_stream_on_drained(br_http_ex *x);
void att_stream_on_gone(br_http_ex *x);

#endif
