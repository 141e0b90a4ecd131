/* fuzz_wire.c — libFuzzer harness for the sync protocol's message decoder (wire.h). Decode the
 * bytes; if that succeeds, encode the message (which must succeed: the encoder accepts whatever
 * the decoder accepts), decode that again and encode once more: both encodings must be equal.
 * Then the same bytes go in a z envelope (a hand-made zstd frame of one raw block, so no
 * compressor is needed): the envelope must decode to the same message, unless the bytes were
 * an envelope themselves (envelopes do not nest). Any violation aborts. Built with
 * -fsanitize=fuzzer,address,undefined, or linked with replay_main.c to replay the corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/cbor.h"
#include "barrel/wire.h"

static void require(bool ok)
{
    if (!ok)
        abort();
}

/* {type: "z", rid, z: frame(data)} with a single-segment frame: one raw block. */
static bool envelope(const uint8_t *data, size_t size, uint64_t rid, br_buf *out)
{
    static const uint8_t magic[] = {0x28, 0xb5, 0x2f, 0xfd};
    br_buf f;
    br_buf_init(&f, 0);
    bool ok = size > 0 && size < (1u << 17) && br_buf_append(&f, magic, 4) == BR_OK &&
              br_buf_append_byte(&f, 0xa0) == BR_OK; /* 4-byte content size, single segment */
    for (int i = 0; ok && i < 4; i++)
        ok = br_buf_append_byte(&f, (uint8_t)(size >> (8 * i))) == BR_OK;
    uint32_t h = 1u | (uint32_t)size << 3; /* last block, raw */
    for (int i = 0; ok && i < 3; i++)
        ok = br_buf_append_byte(&f, (uint8_t)(h >> (8 * i))) == BR_OK;
    ok = ok && br_buf_append(&f, data, size) == BR_OK;
    ok = ok && br_cbor_put_map(out, 3) == BR_OK && br_cbor_put_cstr(out, "type") == BR_OK &&
         br_cbor_put_cstr(out, "z") == BR_OK && br_cbor_put_cstr(out, "rid") == BR_OK &&
         br_cbor_put_uint(out, rid) == BR_OK && br_cbor_put_cstr(out, "z") == BR_OK &&
         br_cbor_put_bytes(out, f.data, f.len) == BR_OK;
    br_buf_fini(&f);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct br_wire_msg *m = NULL, *m2 = NULL, *m3 = NULL;
    struct br_errbuf eb;
    if (br_wire_decode(data, size, &m, NULL, &eb) != BR_OK)
        return 0;
    br_buf a, b, z, c;
    br_buf_init(&a, 0);
    br_buf_init(&b, 0);
    br_buf_init(&z, 0);
    br_buf_init(&c, 0);
    require(br_wire_encode(m, &a, &eb) == BR_OK);
    require(br_wire_decode(a.data, a.len, &m2, NULL, &eb) == BR_OK);
    require(m2->type == m->type && m2->rid == m->rid);
    require(br_wire_encode(m2, &b, &eb) == BR_OK);
    require(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    if (envelope(data, size, m->rid, &z)) {
        if (br_wire_decode(z.data, z.len, &m3, NULL, &eb) == BR_OK) {
            require(m3->type == m->type && m3->rid == m->rid);
            require(br_wire_encode(m3, &c, &eb) == BR_OK);
            require(a.len == c.len && memcmp(a.data, c.data, a.len) == 0);
        } else {
            require(strstr(eb.msg, "inside a z envelope") != NULL);
        }
    }
    br_buf_fini(&a);
    br_buf_fini(&b);
    br_buf_fini(&z);
    br_buf_fini(&c);
    br_wire_msg_free(m);
    br_wire_msg_free(m2);
    br_wire_msg_free(m3);
    return 0;
}
