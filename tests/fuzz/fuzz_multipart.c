/* fuzz_multipart.c — libFuzzer harness for the streaming multipart parser (node/multipart.c).
 *
 * The input is "CONTENT-TYPE\nBODY". The boundary is taken from the Content-Type (a fixed one
 * when it has none); the body is parsed twice, whole and in pieces of 1..8 bytes (sizes drawn
 * from the body itself): both parses must agree on success and on every part's headers and
 * bytes. A successful parse is encoded again (each part with its Content-Type, file name and
 * length) and parsed once more: the parts must be equal. Any broken property aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

#define MAXP 64

struct part {
    char ct[BR_MP_VALUE_MAX], fn[BR_MP_VALUE_MAX];
    int has_ct, has_fn, has_len;
    uint64_t len;
    unsigned char *data;
    size_t n;
};

struct res {
    struct part p[MAXP];
    size_t n;
    int open;
};

static void check(int ok)
{
    if (!ok)
        abort();
}

static br_err on_begin(void *arg, const struct br_mp_part *h, struct br_errbuf *eb)
{
    struct res *r = arg;
    (void)eb;
    check(!r->open && h->index == r->n && r->n < MAXP);
    struct part *p = &r->p[r->n++];
    memset(p, 0, sizeof *p);
    if (h->content_type) {
        p->has_ct = 1;
        snprintf(p->ct, sizeof p->ct, "%s", h->content_type);
    }
    if (h->filename) {
        p->has_fn = 1;
        snprintf(p->fn, sizeof p->fn, "%s", h->filename);
    }
    p->has_len = h->has_length;
    p->len = h->length;
    r->open = 1;
    return BR_OK;
}

static br_err on_data(void *arg, const void *d, size_t n, struct br_errbuf *eb)
{
    struct res *r = arg;
    (void)eb;
    check(r->open && n > 0);
    struct part *p = &r->p[r->n - 1];
    p->data = realloc(p->data, p->n + n);
    check(p->data != NULL);
    memcpy(p->data + p->n, d, n);
    p->n += n;
    return BR_OK;
}

static br_err on_end(void *arg, struct br_errbuf *eb)
{
    struct res *r = arg;
    (void)eb;
    check(r->open);
    r->open = 0;
    return BR_OK;
}

static void res_fini(struct res *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->p[i].data);
    memset(r, 0, sizeof *r);
}

/* Parse body in pieces (step 0: whole; otherwise sizes from steps[]). */
static int parse(const char *boundary, const uint8_t *b, size_t n, const uint8_t *steps,
                 size_t n_steps, struct res *r)
{
    memset(r, 0, sizeof *r);
    struct br_mp_cb cb = {on_begin, on_data, on_end, r};
    br_mp *m = NULL;
    if (br_mp_new(boundary, MAXP, &cb, &m) != BR_OK)
        return 0;
    struct br_errbuf eb;
    int ok = 1;
    size_t off = 0, k = 0;
    while (ok && off < n) {
        size_t step = n_steps ? 1u + (size_t)(steps[k++ % n_steps] % 8u) : n - off;
        if (step > n - off)
            step = n - off;
        ok = br_mp_feed(m, b + off, step, &eb) == BR_OK;
        off += step;
    }
    if (ok)
        ok = br_mp_finish(m, &eb) == BR_OK;
    if (ok)
        check(!r->open && br_mp_parts(m) == r->n);
    br_mp_free(m);
    return ok;
}

static int same(const struct res *a, const struct res *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const struct part *x = &a->p[i], *y = &b->p[i];
        if (x->has_ct != y->has_ct || x->has_fn != y->has_fn || x->has_len != y->has_len ||
            x->len != y->len || x->n != y->n || (x->has_ct && strcmp(x->ct, y->ct) != 0) ||
            (x->has_fn && strcmp(x->fn, y->fn) != 0) || (x->n && memcmp(x->data, y->data, x->n)))
            return 0;
    }
    return 1;
}

/* Encode r again with boundary; returns a malloc'd body. */
static uint8_t *encode(const char *boundary, const struct res *r, size_t *out_n)
{
    size_t cap = 64;
    for (size_t i = 0; i < r->n; i++)
        cap += r->p[i].n + 2 * BR_MP_VALUE_MAX + 256;
    uint8_t *o = malloc(cap);
    check(o != NULL);
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct part *p = &r->p[i];
        n += (size_t)snprintf((char *)o + n, cap - n, "%s--%s\r\n", i ? "\r\n" : "", boundary);
        if (p->has_ct)
            n += (size_t)snprintf((char *)o + n, cap - n, "Content-Type: %s\r\n", p->ct);
        if (p->has_fn) {
            n += (size_t)snprintf((char *)o + n, cap - n,
                                  "Content-Disposition: attachment; filename=\"");
            for (const char *c = p->fn; *c; c++) {
                if (*c == '"' || *c == '\\')
                    o[n++] = '\\';
                o[n++] = (uint8_t)*c;
            }
            n += (size_t)snprintf((char *)o + n, cap - n, "\"\r\n");
        }
        if (p->has_len)
            n += (size_t)snprintf((char *)o + n, cap - n, "Content-Length: %llu\r\n",
                                  (unsigned long long)p->len);
        n += (size_t)snprintf((char *)o + n, cap - n, "\r\n");
        memcpy(o + n, p->data, p->n);
        n += p->n;
    }
    n += (size_t)snprintf((char *)o + n, cap - n, "\r\n--%s--", boundary);
    *out_n = n;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl)
        return 0;
    size_t hl = (size_t)(nl - data);
    char *ct = malloc(hl + 1);
    check(ct != NULL);
    memcpy(ct, data, hl);
    ct[hl] = '\0';
    char boundary[BR_MP_BOUNDARY_MAX + 1];
    if (br_mp_boundary(ct, "multipart/related", boundary, NULL) != BR_OK)
        snprintf(boundary, sizeof boundary, "abc");
    free(ct);
    check(strlen(boundary) >= 1 && strlen(boundary) <= BR_MP_BOUNDARY_MAX);
    const uint8_t *body = nl + 1;
    size_t n = size - hl - 1;
    struct res a, b;
    int ok_a = parse(boundary, body, n, NULL, 0, &a);
    int ok_b = parse(boundary, body, n, body, n, &b);
    check(ok_a == ok_b);
    if (ok_a) {
        check(same(&a, &b));
        size_t en;
        uint8_t *enc = encode(boundary, &a, &en);
        struct res c;
        /* a file name or Content-Type with bytes the encoder cannot carry may not survive */
        if (parse(boundary, enc, en, NULL, 0, &c))
            check(same(&a, &c));
        res_fini(&c);
        free(enc);
    }
    res_fini(&a);
    res_fini(&b);
    return 0;
}
