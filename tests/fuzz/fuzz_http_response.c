/* fuzz_http_response.c — libFuzzer harness for the CLI's HTTP response parser (node/httpc.c).
 *
 * The input is a whole response as read from a socket. If it parses, the status is 100..599,
 * the body within the limit; the response is written again with a Content-Length and parsed
 * again: status, ETag and body must come back equal. Any broken property aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpc.h"

#define MAX_BODY (1u << 20)

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct br_httpc_resp r;
    struct br_errbuf eb = {{0}};
    br_err e = br_httpc_parse(data, size, MAX_BODY, &r, &eb);
    if (e) {
        check(e == BR_ENOMEM || eb.msg[0] != '\0'); /* a malformed answer always says why */
        return 0;
    }
    check(r.status >= 100 && r.status <= 599);
    check(r.body.len <= MAX_BODY);
    size_t cap = 256 + sizeof r.etag + r.body.len;
    char *again = malloc(cap);
    check(again != NULL);
    int h = snprintf(again, cap, "HTTP/1.1 %d X\r\nETag: %s\r\nContent-Length: %zu\r\n\r\n",
                     r.status, r.etag, r.body.len);
    check(h > 0 && (size_t)h < cap);
    if (r.body.len)
        memcpy(again + h, r.body.data, r.body.len);
    struct br_httpc_resp r2;
    check(br_httpc_parse(again, (size_t)h + r.body.len, MAX_BODY, &r2, &eb) == BR_OK);
    check(r2.status == r.status);
    check(strcmp(r2.etag, r.etag) == 0);
    check(r2.body.len == r.body.len);
    check(r.body.len == 0 || memcmp(r2.body.data, r.body.data, r.body.len) == 0);
    br_httpc_resp_fini(&r2);
    br_httpc_resp_fini(&r);
    free(again);
    return 0;
}
