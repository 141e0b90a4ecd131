/* hlc.h — the node's Hybrid Logical Clock (BEHAVIOURS.md Decisions §6).
 *
 * A timestamp is (wall milliseconds u64, logical counter u32). Its binary form is 12 bytes,
 * big-endian, so byte order is time order; its text form is "wall:logical". One clock per node,
 * shared by every database; it reads physical time only through struct br_env. */
#ifndef BARREL_HLC_H
#define BARREL_HLC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/env.h"
#include "barrel/err.h"

#define BR_HLC_BYTES 12
#define BR_HLC_TEXT_MAX 32                /* "18446744073709551615:4294967295" + NUL */
#define BR_HLC_LOGICAL_MAX 0x7fffffffu    /* HLC-14: incrementing past this is an error */
#define BR_HLC_DEFAULT_MAX_SKEW_MS 300000 /* Decisions §6 */

struct br_hlc {
    uint64_t wall; /* ms since the Unix epoch */
    uint32_t logical;
};

#define BR_HLC_MIN ((struct br_hlc){0, 0})
#define BR_HLC_MAX ((struct br_hlc){UINT64_MAX, UINT32_MAX})

/* -1, 0, 1 as a is before, equal to, after b (wall first, then logical). */
int br_hlc_cmp(struct br_hlc a, struct br_hlc b);
void br_hlc_encode(struct br_hlc h, uint8_t out[BR_HLC_BYTES]);
struct br_hlc br_hlc_decode(const uint8_t in[BR_HLC_BYTES]);
/* Writes "wall:logical" and a NUL into out; returns the length. */
size_t br_hlc_format(struct br_hlc h, char out[BR_HLC_TEXT_MAX]);
/* Parses exactly "wall:logical" (decimal, no sign, no spaces, in range); BR_EINVAL otherwise. */
BR_NODISCARD br_err br_hlc_parse(const char *s, size_t len, struct br_hlc *out);

typedef struct br_hlc_clock br_hlc_clock;

/* A clock reading env's wall clock; max_skew_ms 0 disables the skew check. Thread: any. */
BR_NODISCARD br_err br_hlc_clock_new(const struct br_env *env, uint64_t max_skew_ms,
                                     br_hlc_clock **out);
void br_hlc_clock_free(br_hlc_clock *c); /* NULL is a no-op */
/* Restore a persisted last value (so a restarted node never goes backwards). Thread: any. */
void br_hlc_clock_restore(br_hlc_clock *c, struct br_hlc last);
/* A new timestamp for a local event (HLC §4.2), strictly after every one issued or received
 * before. BR_ECLOCK if the logical counter would pass BR_HLC_LOGICAL_MAX. Thread: any. */
BR_NODISCARD br_err br_hlc_now(br_hlc_clock *c, struct br_hlc *out);
/* Merge a remote timestamp (HLC §4.3). If remote is more than max_skew ahead of our physical
 * clock it is not adopted: BR_ECLOCK and the clock is unchanged. On success *out (may be NULL)
 * receives the new value, which is >= remote. Thread: any. */
BR_NODISCARD br_err br_hlc_update(br_hlc_clock *c, struct br_hlc remote, struct br_hlc *out);
/* The last issued value, without advancing. Thread: any. */
struct br_hlc br_hlc_peek(br_hlc_clock *c);
/* How many remote timestamps were refused for skew (a metric for /_peers and /_metrics). */
uint64_t br_hlc_skew_rejections(br_hlc_clock *c);

#endif
