/* fuzz_frame.c — libFuzzer harness for frame decryption (barrel/frame.h).
 *
 * The input is a sequence of frames, each a 2-byte big-endian length and that many bytes,
 * opened in order by a receiver with fixed keys (max_plain 4096). Properties: a frame either
 * opens with at most max_plain bytes of plaintext, or fails, after which every later frame
 * is refused with BR_ECLOSED; nothing opens after FINAL. Then the round trip: every chunk of
 * the input sealed by a sender with the same keys (one frame marked for rekey, the last one
 * FINAL) opens to the same bytes. Any broken property aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/frame.h"

#define MAX_PLAIN 4096

static const uint8_t K1[32] = {0x11, 0x22, 0x33}, K2[32] = {0x44, 0x55, 0x66};

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct br_frame_opts o = {.max_plain = MAX_PLAIN, .rekey_every = 3};
    br_frame *rx = NULL, *tx = NULL;
    check(br_frame_new(K2, K1, &o, &rx) == BR_OK); /* receives what K1 sealed */
    br_buf p;
    br_buf_init(&p, 0);
    bool dead = false, done = false;
    size_t off = 0;
    while (off + 2 <= size) {
        size_t n = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (n > size - off)
            n = size - off;
        br_buf_reset(&p);
        bool fin = false;
        br_err e = br_frame_open(rx, data + off, n, &p, &fin);
        off += n;
        if (dead || done) {
            check(e == BR_ECLOSED);
            continue;
        }
        if (e == BR_OK) {
            check(p.len <= MAX_PLAIN);
            done = fin;
            check(br_frame_peer_finished(rx) == fin);
        } else {
            check(e == BR_EPROTO || e == BR_ECRYPTO);
            dead = true;
        }
    }
    br_frame_free(rx);

    /* round trip of the raw input, cut into chunks of up to MAX_PLAIN bytes */
    check(br_frame_new(K1, K2, &o, &tx) == BR_OK);
    check(br_frame_new(K2, K1, &o, &rx) == BR_OK);
    br_buf w;
    br_buf_init(&w, 0);
    off = 0;
    int k = 0;
    do {
        size_t n = size - off < MAX_PLAIN ? size - off : MAX_PLAIN;
        if (n > 0 && data[off] % 7 == 0)
            n = (n + 1) / 2; /* never 0: the loop must advance */
        bool last = off + n == size;
        if (k++ == 1)
            br_frame_rekey(tx);
        br_buf_reset(&w);
        br_buf_reset(&p);
        check((last ? br_frame_seal_final(tx, data + off, n, &w)
                    : br_frame_seal(tx, data + off, n, &w)) == BR_OK);
        bool fin = false;
        check(br_frame_open(rx, w.data, w.len, &p, &fin) == BR_OK);
        check(p.len == n && (n == 0 || memcmp(p.data, data + off, n) == 0));
        check(fin == last);
        off += n;
    } while (off < size);
    br_buf_fini(&w);
    br_buf_fini(&p);
    br_frame_free(tx);
    br_frame_free(rx);
    return 0;
}
