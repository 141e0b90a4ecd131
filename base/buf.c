/* buf.c — bounded growable buffer. */
#include "barrel/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "barrel/alloc.h"

#define DEFAULT_MAX (SIZE_MAX / 2)

void br_buf_init(br_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void br_buf_fini(br_buf *b)
{
    br_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void br_buf_reset(br_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = 0;
}

br_err br_buf_reserve(br_buf *b, size_t extra)
{
    /* A max above DEFAULT_MAX is clamped to it, so len + extra + 1 cannot wrap around. */
    size_t max = b->max && b->max < DEFAULT_MAX ? b->max : DEFAULT_MAX;
    if (extra > max || b->len > max - extra)
        return BR_ETOOBIG;
    size_t need = b->len + extra + 1; /* +1 for the trailing NUL */
    if (need <= b->cap)
        return BR_OK;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    if (ncap > max + 1) /* the hard maximum bounds the memory too */
        ncap = max + 1;
    uint8_t *p = br_realloc(b->data, ncap);
    if (!p)
        return BR_ENOMEM;
    b->data = p;
    b->cap = ncap;
    return BR_OK;
}

br_err br_buf_append(br_buf *b, const void *p, size_t n)
{
    br_err e = br_buf_reserve(b, n);
    if (e)
        return e;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return BR_OK;
}

br_err br_buf_append_byte(br_buf *b, uint8_t c)
{
    return br_buf_append(b, &c, 1);
}

br_err br_buf_append_str(br_buf *b, const char *s)
{
    return br_buf_append(b, s, strlen(s));
}

br_err br_buf_printf(br_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return BR_EINVAL;
    if ((size_t)n < sizeof small)
        return br_buf_append(b, small, (size_t)n);
    br_err e = br_buf_reserve(b, (size_t)n);
    if (e)
        return e;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return BR_OK;
}

uint8_t *br_buf_steal(br_buf *b, size_t *len)
{
    uint8_t *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
