/* crypto_bench.c — link crypto figures: full handshakes per second (both sides in one
 * process, one core, identities and mesh key loaded once) and frame seal+open throughput for
 * 1 KiB and 64 KiB messages. Prints one line per figure.
 *
 * usage: barrel-bench-crypto [SECONDS_PER_FIGURE]   (default 2) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "barrel/handshake.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "crypto_bench: %s failed\n", what);
    exit(1);
}

static void bench_handshakes(double secs, const br_identity *a, const br_identity *b,
                             const br_meshkey *mk)
{
    struct br_handshake_opts oi = {.identity = a, .mesh = mk};
    struct br_handshake_opts orr = {.identity = b, .mesh = mk};
    br_buf m1, m2, m3;
    br_buf_init(&m1, 4096);
    br_buf_init(&m2, 4096);
    br_buf_init(&m3, 4096);
    long n = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 50; k++) {
            br_handshake *hi = NULL, *hr = NULL;
            br_frame *fi = NULL, *fr = NULL;
            br_buf_reset(&m1);
            br_buf_reset(&m2);
            br_buf_reset(&m3);
            if (br_handshake_new(&oi, true, &hi) || br_handshake_new(&orr, false, &hr) ||
                br_handshake_start(hi, &m1) || br_handshake_recv(hr, m1.data, m1.len, &m2) ||
                br_handshake_recv(hi, m2.data, m2.len, &m3) ||
                br_handshake_recv(hr, m3.data, m3.len, &m1) || br_handshake_link(hi, NULL, &fi) ||
                br_handshake_link(hr, NULL, &fr))
                die("handshake");
            br_frame_free(fi);
            br_frame_free(fr);
            br_handshake_free(hi);
            br_handshake_free(hr);
            n++;
        }
        t = now() - t0;
    } while (t < secs);
    printf("handshake (mesh key, both sides, incl. link setup): %.0f handshakes/s "
           "(%.1f us each)\n",
           (double)n / t, t / (double)n * 1e6);
    br_buf_fini(&m1);
    br_buf_fini(&m2);
    br_buf_fini(&m3);
}

static void bench_frames(double secs, size_t len)
{
    static const uint8_t k1[32] = {1}, k2[32] = {2};
    br_frame *tx = NULL, *rx = NULL;
    if (br_frame_new(k1, k2, NULL, &tx) || br_frame_new(k2, k1, NULL, &rx))
        die("frame_new");
    uint8_t *msg = malloc(len);
    if (!msg)
        die("malloc");
    for (size_t i = 0; i < len; i++)
        msg[i] = (uint8_t)(i * 7);
    br_buf w, p;
    br_buf_init(&w, 0);
    br_buf_init(&p, 0);
    long n = 0;
    double seal_t = 0, open_t = 0, t0 = now();
    do {
        for (int k = 0; k < 64; k++) {
            br_buf_reset(&w);
            br_buf_reset(&p);
            double a = now();
            if (br_frame_seal(tx, msg, len, &w))
                die("seal");
            double b = now();
            if (br_frame_open(rx, w.data, w.len, &p, NULL) || p.len != len)
                die("open");
            double c = now();
            seal_t += b - a;
            open_t += c - b;
            n++;
        }
    } while (now() - t0 < secs);
    double bytes = (double)n * (double)len;
    printf("frames %6zu B: seal+open %.0f MB/s (%.0f msgs/s); seal %.0f MB/s, open %.0f MB/s\n",
           len, bytes / (seal_t + open_t) / 1e6, (double)n / (seal_t + open_t),
           bytes / seal_t / 1e6, bytes / open_t / 1e6);
    br_buf_fini(&w);
    br_buf_fini(&p);
    free(msg);
    br_frame_free(tx);
    br_frame_free(rx);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    if (secs <= 0)
        secs = 2.0;
    uint8_t s1[32] = {1}, s2[32] = {2}, mkb[32] = {3};
    br_identity *a = NULL, *b = NULL;
    br_meshkey *mk = NULL;
    if (br_identity_from_seed(s1, &a) || br_identity_from_seed(s2, &b) ||
        br_meshkey_from_bytes(mkb, &mk))
        die("setup");
    bench_handshakes(secs, a, b, mk);
    bench_frames(secs, 1024);
    bench_frames(secs, 65536);
    br_meshkey_free(mk);
    br_identity_free(a);
    br_identity_free(b);
    return 0;
}
