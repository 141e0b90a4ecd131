/* attstream.c — attachment downloads in pieces (see attstream.h). */
#include "attstream.h"

#include "barrel/alloc.h"
#include "barrel/log.h"

static void as_free(struct att_stream *a)
{
    for (size_t i = 0; i < a->n_segs; i++)
        br_buf_fini(&a->segs[i].text);
    br_free(a->segs);
    br_att_reader_close(a->rd);
    br_db_close(a->db);
    br_buf_fini(&a->piece);
    br_free(a);
}

void att_stream_free(struct att_stream *a)
{
    if (a)
        as_free(a);
}

/* The next segment: a text goes on from text_off; a blob opens its reader. */
static br_err next_seg(struct att_stream *a)
{
    struct att_seg *g = &a->segs[a->cur];
    if (g->blob) {
        a->cur++;
        return br_att_reader_open(a->db, g->key, &a->rd, NULL);
    }
    size_t n = g->text.len - a->text_off;
    if (n > ATT_STREAM_PIECE - a->piece.len)
        n = ATT_STREAM_PIECE - a->piece.len;
    br_err e = br_buf_append(&a->piece, g->text.data + a->text_off, n);
    if (e)
        return e;
    a->text_off += n;
    if (a->text_off == g->text.len) {
        br_buf_fini(&g->text);
        a->text_off = 0;
        a->cur++;
    }
    return BR_OK;
}

static void piece_run(void *arg)
{
    struct att_stream *a = arg;
    br_buf_reset(&a->piece);
    while (a->piece.len < ATT_STREAM_PIECE) {
        br_err e = BR_OK;
        if (!a->rd) {
            if (a->cur == a->n_segs) {
                a->eof = true;
                return;
            }
            if ((e = next_seg(a))) {
                br_log(BR_LOG_ERROR, "att", "event=segment_failed err=%s", br_strerror(e));
                a->failed = true;
                return;
            }
            continue;
        }
        const uint8_t *p;
        size_t n;
        e = br_att_reader_read(a->rd, &p, &n);
        if (e) {
            br_log(BR_LOG_ERROR, "att", "event=read_failed err=%s", br_strerror(e));
            a->failed = true;
            return;
        }
        if (n == 0) {
            br_att_reader_close(a->rd);
            a->rd = NULL;
            continue;
        }
        if (br_buf_append(&a->piece, p, n) != BR_OK) {
            a->failed = true;
            return;
        }
    }
}

static void next_piece(struct att_stream *a);

static void piece_done(void *arg)
{
    struct att_stream *a = arg;
    a->busy = false;
    if (!a->x) {
        as_free(a);
        return;
    }
    br_http_ex *x = a->x;
    if (a->failed) { /* the length is promised: only closing tells the client */
        x->close_after = true;
        a->x = NULL;
        x->user = NULL;
        br_http_stream_end(x);
        as_free(a);
        return;
    }
    if (a->piece.len && br_http_stream_write(x, a->piece.data, a->piece.len) != BR_OK)
        a->failed = true;
    if (a->eof || a->failed) {
        if (a->failed)
            x->close_after = true;
        a->x = NULL;
        x->user = NULL;
        br_http_stream_end(x);
        as_free(a);
    }
    /* otherwise the next piece is read when the client has taken this one (drained) */
}

static void next_piece(struct att_stream *a)
{
    if (a->busy || a->eof)
        return;
    if (br_workers_submit(a->w, piece_run, piece_done, a) != BR_OK) {
        br_http_ex *x = a->x;
        x->close_after = true;
        a->x = NULL;
        x->user = NULL;
        br_http_stream_end(x);
        as_free(a);
        return;
    }
    a->busy = true;
}

void att_stream_start(br_workers *w, br_http_ex *x)
{
    struct att_stream *a = x->user;
    if (!br_http_ex_alive(x)) {
        x->user = NULL;
        as_free(a);
        br_http_respond(x);
        return;
    }
    a->w = w;
    a->x = x;
    br_buf_init(&a->piece, 0);
    x->resp.status = 200;
    br_http_stream_begin(x);
    next_piece(a);
}

void att_stream_on_drained(br_http_ex *x)
{
    struct att_stream *a = x->user;
    if (a)
        next_piece(a);
}

void att_stream_on_gone(br_http_ex *x)
{
    struct att_stream *a = x->user;
    if (!a)
        return;
    x->user = NULL;
    a->x = NULL;
    if (!a->busy)
        as_free(a);
}
