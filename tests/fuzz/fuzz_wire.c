/* fuzz_wire.c — libFuzzer harness for the sync protocol's message decoder (wire.h). Decode the
 * bytes; if that succeeds, encode the message (which must succeed: the encoder accepts whatever
 * the decoder accepts), decode that again and encode once more: both encodings must be equal.
 * Any violation aborts. Built with -fsanitize=fuzzer,address,undefined, or linked with
 * replay_main.c to replay the corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/wire.h"

static void require(bool ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct br_wire_msg *m = NULL, *m2 = NULL;
    struct br_errbuf eb;
    if (br_wire_decode(data, size, &m, NULL, &eb) != BR_OK)
        return 0;
    br_buf a, b;
    br_buf_init(&a, 0);
    br_buf_init(&b, 0);
    require(br_wire_encode(m, &a, &eb) == BR_OK);
    require(br_wire_decode(a.data, a.len, &m2, NULL, &eb) == BR_OK);
    require(m2->type == m->type && m2->rid == m->rid);
    require(br_wire_encode(m2, &b, &eb) == BR_OK);
    require(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    br_buf_fini(&a);
    br_buf_fini(&b);
    br_wire_msg_free(m);
    br_wire_msg_free(m2);
    return 0;
}
