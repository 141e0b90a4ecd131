/* frame_test.c — secretstream framing: round trips, size limits, tamper / replay / reorder /
 * truncation kill the link (sticky), rekey tags on the wire, clean end with FINAL. */
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <sodium.h>

#include "barrel/frame.h"

static const uint8_t KA[32] = {1, 2, 3}, KB[32] = {4, 5, 6};

/* a sends with KA and receives with KB; b the opposite. */
static void pair(br_frame **a, br_frame **b, const struct br_frame_opts *o)
{
    cr_assert_eq(br_frame_new(KA, KB, o, a), BR_OK);
    cr_assert_eq(br_frame_new(KB, KA, o, b), BR_OK);
}

static br_buf seal(br_frame *f, const char *s)
{
    br_buf w;
    br_buf_init(&w, 0);
    cr_assert_eq(br_frame_seal(f, (const uint8_t *)s, strlen(s), &w), BR_OK);
    return w;
}

static br_err open1(br_frame *f, const br_buf *w, const char *want)
{
    br_buf p;
    br_buf_init(&p, 0);
    br_err e = br_frame_open(f, w->data, w->len, &p, NULL);
    if (!e && want)
        cr_assert(p.len == strlen(want) && memcmp(p.data, want, p.len) == 0);
    br_buf_fini(&p);
    return e;
}

Test(frame, round_trip_both_directions_and_sizes)
{
    br_frame *a, *b;
    pair(&a, &b, NULL);
    size_t sizes[] = {0, 1, 17, 1000, 65536, BR_FRAME_DEFAULT_MAX};
    uint8_t *msg = malloc(BR_FRAME_DEFAULT_MAX);
    randombytes_buf(msg, BR_FRAME_DEFAULT_MAX);
    br_buf w, p;
    br_buf_init(&w, 0);
    br_buf_init(&p, 0);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        br_buf_reset(&w);
        br_buf_reset(&p);
        cr_assert_eq(br_frame_seal(a, msg, sizes[k], &w), BR_OK);
        cr_assert_eq(w.len, sizes[k] + 17 + (k == 0 ? 24 : 0));
        bool fin = true;
        cr_assert_eq(br_frame_open(b, w.data, w.len, &p, &fin), BR_OK);
        cr_assert_not(fin);
        cr_assert(p.len == sizes[k] && memcmp(p.data, msg, p.len) == 0);
        br_buf_reset(&w);
        br_buf_reset(&p);
        cr_assert_eq(br_frame_seal(b, msg, sizes[k], &w), BR_OK);
        cr_assert_eq(br_frame_open(a, w.data, w.len, &p, NULL), BR_OK);
        cr_assert(p.len == sizes[k] && memcmp(p.data, msg, p.len) == 0);
    }
    cr_assert_eq(br_frame_sealed(a), 6);
    cr_assert_eq(br_frame_opened(b), 6);
    br_buf_fini(&w);
    br_buf_fini(&p);
    free(msg);
    br_frame_free(a);
    br_frame_free(b);
}

Test(frame, limits_on_both_ends)
{
    struct br_frame_opts small = {.max_plain = 100};
    br_frame *a, *b, *x;
    pair(&a, &b, &small);
    uint8_t msg[101] = {0};
    br_buf w;
    br_buf_init(&w, 0);
    cr_assert_eq(br_frame_seal(a, msg, 101, &w), BR_ETOOBIG);
    cr_assert_eq(w.len, 0);
    cr_assert_eq(br_frame_seal(a, msg, 100, &w), BR_OK); /* the stream was not disturbed */
    cr_assert_eq(open1(b, &w, NULL), BR_OK);
    /* a bigger sender against a small receiver: refused, and the link is dead */
    br_frame *big;
    cr_assert_eq(br_frame_new(KA, KB, NULL, &big), BR_OK);
    cr_assert_eq(br_frame_new(KB, KA, &small, &x), BR_OK);
    br_buf_reset(&w);
    cr_assert_eq(br_frame_seal(big, msg, 101, &w), BR_OK);
    cr_assert_eq(open1(x, &w, NULL), BR_EPROTO);
    br_buf_reset(&w);
    cr_assert_eq(br_frame_seal(big, msg, 1, &w), BR_OK);
    cr_assert_eq(open1(x, &w, NULL), BR_ECLOSED);
    /* a receiving buffer too small for the plaintext */
    br_frame *c, *d;
    pair(&c, &d, NULL);
    br_buf_reset(&w);
    cr_assert_eq(br_frame_seal(c, msg, 50, &w), BR_OK);
    br_buf tiny;
    br_buf_init(&tiny, 10);
    cr_assert_eq(br_frame_open(d, w.data, w.len, &tiny, NULL), BR_ETOOBIG);
    br_buf_fini(&tiny);
    struct br_frame_opts huge = {.max_plain = BR_FRAME_HARD_MAX + 1};
    cr_assert_eq(br_frame_new(KA, KB, &huge, &x), BR_EINVAL);
    br_buf_fini(&w);
    br_frame_free(a);
    br_frame_free(b);
    br_frame_free(big);
    br_frame_free(c);
    br_frame_free(d);
}

Test(frame, tampering_any_byte_kills_the_link)
{
    br_frame *a, *b;
    br_buf w0 = {0}, w1 = {0};
    pair(&a, &b, NULL);
    w0 = seal(a, "first frame");
    w1 = seal(a, "second frame");
    br_frame_free(a);
    br_frame_free(b);
    for (int which = 0; which < 2; which++) {
        const br_buf *t = which ? &w1 : &w0;
        for (size_t off = 0; off < t->len; off++) {
            /* the same keys, a fresh receiver each time: re-seal is random, so replay w0/w1 */
            br_frame *r;
            cr_assert_eq(br_frame_new(KB, KA, NULL, &r), BR_OK);
            if (which == 1)
                cr_assert_eq(open1(r, &w0, "first frame"), BR_OK);
            uint8_t bad[64];
            memcpy(bad, t->data, t->len);
            bad[off] ^= 0x01;
            br_buf p;
            br_buf_init(&p, 0);
            br_err e = br_frame_open(r, bad, t->len, &p, NULL);
            cr_assert(e == BR_ECRYPTO || e == BR_EPROTO, "frame %d offset %zu: %d", which, off, e);
            cr_assert_eq(p.len, 0);
            /* sticky: the genuine frame is refused afterwards */
            cr_assert_eq(open1(r, t, NULL), BR_ECLOSED);
            br_buf_fini(&p);
            br_frame_free(r);
        }
    }
    br_buf_fini(&w0);
    br_buf_fini(&w1);
}

Test(frame, replay_reorder_drop_and_truncation_fail)
{
    br_frame *a, *b;
    pair(&a, &b, NULL);
    br_buf w[4];
    for (int k = 0; k < 4; k++) {
        char s[16];
        snprintf(s, sizeof s, "msg %d", k);
        w[k] = seal(a, s);
    }
    cr_assert_eq(open1(b, &w[0], "msg 0"), BR_OK);
    cr_assert_eq(open1(b, &w[0], NULL), BR_ECRYPTO); /* replayed */
    cr_assert_eq(open1(b, &w[1], NULL), BR_ECLOSED); /* and dead */
    br_frame_free(b);

    cr_assert_eq(br_frame_new(KB, KA, NULL, &b), BR_OK);
    cr_assert_eq(open1(b, &w[0], "msg 0"), BR_OK);
    cr_assert_eq(open1(b, &w[2], NULL), BR_ECRYPTO); /* reordered / one dropped */
    br_frame_free(b);

    cr_assert_eq(br_frame_new(KB, KA, NULL, &b), BR_OK);
    /* the first frame (the one with the header) lost: too short for a header here, and a
     * long one fails authentication */
    cr_assert_eq(open1(b, &w[1], NULL), BR_EPROTO);
    br_frame_free(b);
    cr_assert_eq(br_frame_new(KB, KA, NULL, &b), BR_OK);
    br_buf lng = seal(a, "a frame long enough to be read as header and ciphertext");
    cr_assert_eq(open1(b, &lng, NULL), BR_ECRYPTO);
    br_buf_fini(&lng);
    br_frame_free(b);

    cr_assert_eq(br_frame_new(KB, KA, NULL, &b), BR_OK);
    cr_assert_eq(open1(b, &w[0], "msg 0"), BR_OK);
    br_buf cut = w[1];
    cut.len--; /* truncated by one byte */
    cr_assert_eq(open1(b, &cut, NULL), BR_ECRYPTO);
    br_frame_free(b);

    cr_assert_eq(br_frame_new(KB, KA, NULL, &b), BR_OK);
    cr_assert_eq(open1(b, &w[0], "msg 0"), BR_OK);
    cut.len = 16; /* shorter than a tag */
    cr_assert_eq(open1(b, &cut, NULL), BR_EPROTO);
    br_frame_free(b);

    cr_assert_eq(br_frame_new(KB, KA, NULL, &b), BR_OK);
    cut = w[0];
    cut.len = 23; /* shorter than the header */
    cr_assert_eq(open1(b, &cut, NULL), BR_EPROTO);
    br_frame_free(b);

    /* the wrong key never opens */
    cr_assert_eq(br_frame_new(KA, KB, NULL, &b), BR_OK); /* rx KB: a sent with KA */
    cr_assert_eq(open1(b, &w[0], NULL), BR_ECRYPTO);
    br_frame_free(b);
    for (int k = 0; k < 4; k++)
        br_buf_fini(&w[k]);
    br_frame_free(a);
}

/* Tags as seen by a plain libsodium reader of a's stream. */
static void read_tags(const br_buf *frames, size_t n, uint8_t *tags)
{
    crypto_secretstream_xchacha20poly1305_state st;
    cr_assert_eq(crypto_secretstream_xchacha20poly1305_init_pull(&st, frames[0].data, KA), 0);
    for (size_t k = 0; k < n; k++) {
        size_t skip = k == 0 ? 24 : 0;
        uint8_t out[64];
        cr_assert_eq(crypto_secretstream_xchacha20poly1305_pull(&st, out, NULL, &tags[k],
                                                                frames[k].data + skip,
                                                                frames[k].len - skip, NULL, 0),
                     0, "frame %zu", k);
    }
}

Test(frame, rekey_every_n_frames_and_on_request)
{
    struct br_frame_opts o = {.rekey_every = 3};
    br_frame *a, *b;
    pair(&a, &b, &o);
    br_buf w[10];
    for (int k = 0; k < 10; k++) {
        if (k == 4)
            br_frame_rekey(a);
        w[k] = seal(a, "data");
        cr_assert_eq(open1(b, &w[k], "data"), BR_OK, "frame %d", k);
    }
    uint8_t tags[10];
    read_tags(w, 10, tags);
    const uint8_t R = crypto_secretstream_xchacha20poly1305_TAG_REKEY;
    const uint8_t M = crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    uint8_t want[10] = {M, M, R, M, R, R, M, M, R, M}; /* 3rd, 6th, 9th; 5th on request */
    for (int k = 0; k < 10; k++)
        cr_assert_eq(tags[k], want[k], "frame %d tag %u", k, tags[k]);
    for (int k = 0; k < 10; k++)
        br_buf_fini(&w[k]);
    br_frame_free(a);
    br_frame_free(b);
}

Test(frame, final_ends_the_direction_cleanly)
{
    br_frame *a, *b;
    pair(&a, &b, NULL);
    br_buf w1 = seal(a, "last but one"), w2;
    br_buf_init(&w2, 0);
    cr_assert_eq(br_frame_seal_final(a, (const uint8_t *)"bye", 3, &w2), BR_OK);
    br_buf w3;
    br_buf_init(&w3, 0);
    cr_assert_eq(br_frame_seal(a, (const uint8_t *)"x", 1, &w3), BR_ECLOSED);
    cr_assert_eq(br_frame_seal_final(a, NULL, 0, &w3), BR_ECLOSED);
    cr_assert_eq(w3.len, 0);
    cr_assert_eq(open1(b, &w1, "last but one"), BR_OK);
    cr_assert_not(br_frame_peer_finished(b)); /* a close now would be a cut */
    br_buf p;
    br_buf_init(&p, 0);
    bool fin = false;
    cr_assert_eq(br_frame_open(b, w2.data, w2.len, &p, &fin), BR_OK);
    cr_assert(fin);
    cr_assert(br_frame_peer_finished(b));
    cr_assert(p.len == 3 && memcmp(p.data, "bye", 3) == 0);
    cr_assert_eq(br_frame_open(b, w2.data, w2.len, &p, &fin), BR_ECLOSED);
    /* the other direction still works */
    br_buf back = seal(b, "ack");
    cr_assert_eq(open1(a, &back, "ack"), BR_OK);
    br_buf_fini(&back);
    br_buf_fini(&p);
    br_buf_fini(&w1);
    br_buf_fini(&w2);
    br_buf_fini(&w3);
    br_frame_free(a);
    br_frame_free(b);
}
