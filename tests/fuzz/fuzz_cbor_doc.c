/* fuzz_cbor_doc.c — libFuzzer harness for CBOR document bodies from peers and the disk.
 *
 * Canonicalises the input; when that succeeds, the result must validate, canonicalise to the
 * same bytes (a fixed point), and survive a trip through JSON (br_json_from_cbor then
 * br_json_to_cbor) unchanged whenever JSON can hold it. The raw input must validate whenever it
 * canonicalises. Taken as a read document's body, the raw input must give the same JSON text
 * (or the same error) through br_json_doc_write as through br_json_doc_render and json_dumps.
 * Any broken property aborts, which the fuzzer reports as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "barrel/buf.h"
#include "barrel/cbor.h"
#include "barrel/json.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

/* The direct writer against the tree path, on data as a document body. */
static void check_doc_write(const uint8_t *data, size_t size)
{
    struct br_doc d;
    memset(&d, 0, sizeof d);
    d.id = "fuzz";
    d.id_len = 4;
    d.rev.gen = 1;
    d.rev.hash_len = 1;
    d.rev.hash[0] = 'a';
    d.body = (uint8_t *)data;
    d.body_len = size;
    json_t *j = NULL;
    br_err want = br_json_doc_render(&d, &j, NULL);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    br_buf out;
    br_buf_init(&out, 0);
    br_err got = br_json_doc_write(&d, &out, NULL);
    check(got == want);
    if (!got)
        check(text && out.len == strlen(text) && memcmp(out.data, text, out.len) == 0);
    else
        check(out.len == 0);
    free(text);
    br_buf_fini(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    br_buf a, b, c;
    struct br_errbuf eb;
    json_t *v = NULL;
    br_buf_init(&a, 0);
    br_buf_init(&b, 0);
    br_buf_init(&c, 0);

    /* the reader alone must never misbehave on raw bytes */
    struct br_cbor_reader r;
    br_cbor_reader_init(&r, data, size);
    while (!br_cbor_at_end(&r) && br_cbor_skip(&r, BR_CBOR_MAX_DEPTH) == BR_OK)
        ;
    check_doc_write(data, size);

    if (br_cbor_doc_canonical(data, size, 0, &a, &eb) != BR_OK)
        goto done;
    check(br_cbor_doc_validate(data, size, 0, &eb) == BR_OK);
    check(a.len <= size);
    check(br_cbor_doc_validate(a.data, a.len, 0, &eb) == BR_OK);
    check(br_cbor_doc_canonical(a.data, a.len, 0, &b, &eb) == BR_OK);
    check(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);

    /* JSON cannot hold integers above INT64_MAX: that is the only allowed refusal */
    if (br_json_from_cbor(a.data, a.len, &v, &eb) == BR_OK) {
        check(br_json_to_cbor(v, &c, &eb) == BR_OK);
        check(a.len == c.len && memcmp(a.data, c.data, a.len) == 0);
    }

done:
    json_decref(v);
    br_buf_fini(&c);
    br_buf_fini(&b);
    br_buf_fini(&a);
    return 0;
}
