/* hlc.c — the node's Hybrid Logical Clock (spec §4, BEHAVIOURS.md Decisions §6). A timestamp is
 * (wall ms, logical); a local event takes max(last, physical) and bumps the counter when the
 * physical clock has not moved past the last value (§4.2); receiving a remote timestamp merges
 * it with the same rule (§4.3), except that a remote more than max_skew ahead of our physical
 * clock is refused (BR_ECLOCK, clock unchanged, counted and logged) so one peer with a wrong
 * clock cannot drag the mesh into its future. The counter never wraps: passing
 * BR_HLC_LOGICAL_MAX is BR_ECLOCK (HLC-14). Physical time is read only through struct br_env;
 * one mutex guards the clock state. Also the 12-byte big-endian and "wall:logical" forms. */
#include "barrel/hlc.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include "barrel/alloc.h"
#include "barrel/log.h"

struct br_hlc_clock {
    pthread_mutex_t mu;
    const struct br_env *env;
    uint64_t max_skew_ms; /* 0: no skew check */
    struct br_hlc last;
    uint64_t skew_rejections;
};

int br_hlc_cmp(struct br_hlc a, struct br_hlc b)
{
    if (a.wall != b.wall)
        return a.wall < b.wall ? -1 : 1;
    if (a.logical != b.logical)
        return a.logical < b.logical ? -1 : 1;
    return 0;
}

void br_hlc_encode(struct br_hlc h, uint8_t out[BR_HLC_BYTES])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(h.wall >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        out[8 + i] = (uint8_t)(h.logical >> (24 - 8 * i));
}

struct br_hlc br_hlc_decode(const uint8_t in[BR_HLC_BYTES])
{
    struct br_hlc h = {0, 0};
    for (int i = 0; i < 8; i++)
        h.wall = (h.wall << 8) | in[i];
    for (int i = 0; i < 4; i++)
        h.logical = (h.logical << 8) | in[8 + i];
    return h;
}

size_t br_hlc_format(struct br_hlc h, char out[BR_HLC_TEXT_MAX])
{
    int n = snprintf(out, BR_HLC_TEXT_MAX, "%" PRIu64 ":%" PRIu32, h.wall, h.logical);
    return n > 0 ? (size_t)n : 0;
}

/* Parse a run of decimal digits of s[*i..len) up to max; at least one digit, no sign. */
static br_err parse_dec(const char *s, size_t len, size_t *i, uint64_t max, uint64_t *out)
{
    size_t start = *i;
    uint64_t v = 0;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        uint64_t d = (uint64_t)(s[*i] - '0');
        if (v > (max - d) / 10)
            return BR_EINVAL;
        v = v * 10 + d;
        (*i)++;
    }
    if (*i == start)
        return BR_EINVAL;
    *out = v;
    return BR_OK;
}

br_err br_hlc_parse(const char *s, size_t len, struct br_hlc *out)
{
    uint64_t wall, logical;
    size_t i = 0;
    if (!s)
        return BR_EINVAL;
    if (parse_dec(s, len, &i, UINT64_MAX, &wall) != BR_OK)
        return BR_EINVAL;
    if (i >= len || s[i] != ':')
        return BR_EINVAL;
    i++;
    if (parse_dec(s, len, &i, UINT32_MAX, &logical) != BR_OK)
        return BR_EINVAL;
    if (i != len)
        return BR_EINVAL;
    out->wall = wall;
    out->logical = (uint32_t)logical;
    return BR_OK;
}

br_err br_hlc_clock_new(const struct br_env *env, uint64_t max_skew_ms, br_hlc_clock **out)
{
    br_hlc_clock *c;
    if (!env || !env->wall_ms || !out)
        return BR_EINVAL;
    c = br_calloc(1, sizeof *c);
    if (!c)
        return BR_ENOMEM;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        br_free(c);
        return BR_ENOMEM;
    }
    c->env = env;
    c->max_skew_ms = max_skew_ms;
    c->last = BR_HLC_MIN;
    *out = c;
    return BR_OK;
}

void br_hlc_clock_free(br_hlc_clock *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    br_free(c);
}

void br_hlc_clock_restore(br_hlc_clock *c, struct br_hlc last)
{
    pthread_mutex_lock(&c->mu);
    if (br_hlc_cmp(last, c->last) > 0)
        c->last = last;
    pthread_mutex_unlock(&c->mu);
}

/* (wall, logical + 1), or BR_ECLOCK when the counter would pass BR_HLC_LOGICAL_MAX. */
static br_err bump(uint64_t wall, uint32_t logical, struct br_hlc *out)
{
    if (logical >= BR_HLC_LOGICAL_MAX)
        return BR_ECLOCK;
    out->wall = wall;
    out->logical = logical + 1;
    return BR_OK;
}

br_err br_hlc_now(br_hlc_clock *c, struct br_hlc *out)
{
    struct br_hlc next;
    br_err e = BR_OK;
    pthread_mutex_lock(&c->mu);
    uint64_t pt = br_env_wall_ms(c->env);
    if (c->last.wall >= pt) {
        e = bump(c->last.wall, c->last.logical, &next);
    } else {
        next.wall = pt;
        next.logical = 0;
    }
    if (e == BR_OK)
        c->last = next;
    pthread_mutex_unlock(&c->mu);
    if (e == BR_OK)
        *out = next;
    return e;
}

br_err br_hlc_update(br_hlc_clock *c, struct br_hlc remote, struct br_hlc *out)
{
    struct br_hlc next;
    br_err e = BR_OK;
    uint64_t pt, ahead = 0;
    pthread_mutex_lock(&c->mu);
    struct br_hlc l = c->last;
    pt = br_env_wall_ms(c->env);
    if (pt > l.wall && pt > remote.wall) {
        next.wall = pt;
        next.logical = 0;
    } else if (remote.wall > l.wall) {
        ahead = remote.wall > pt ? remote.wall - pt : 0;
        if (c->max_skew_ms > 0 && ahead > c->max_skew_ms) {
            c->skew_rejections++;
            e = BR_ECLOCK;
        } else {
            e = bump(remote.wall, remote.logical, &next);
            ahead = 0;
        }
    } else if (l.wall > remote.wall) {
        e = bump(l.wall, l.logical, &next);
    } else {
        e = bump(l.wall, l.logical > remote.logical ? l.logical : remote.logical, &next);
    }
    if (e == BR_OK)
        c->last = next;
    pthread_mutex_unlock(&c->mu);
    if (ahead > 0)
        br_log(BR_LOG_WARN, "hlc",
               "remote clock ahead, not adopted remote_wall=%" PRIu64 " wall=%" PRIu64
               " ahead_ms=%" PRIu64,
               remote.wall, pt, ahead);
    if (e == BR_OK && out)
        *out = next;
    return e;
}

struct br_hlc br_hlc_peek(br_hlc_clock *c)
{
    pthread_mutex_lock(&c->mu);
    struct br_hlc h = c->last;
    pthread_mutex_unlock(&c->mu);
    return h;
}

uint64_t br_hlc_skew_rejections(br_hlc_clock *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->skew_rejections;
    pthread_mutex_unlock(&c->mu);
    return n;
}
