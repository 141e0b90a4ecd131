/* fuzz_txt.c — libFuzzer harness for the mDNS TXT record parser (discovery.h). The input is
 * cut at '\n' into items (one trailing '\n' ends the last item, so corpus files are plain text
 * with one "key=value" per line; NUL and other bytes pass through). Parse the items; if that
 * succeeds, encode the result (which must succeed: the encoder accepts whatever the parser
 * accepts), parse the encoding again and encode once more: the records and both encodings
 * must be equal. Any violation aborts. Built with -fsanitize=fuzzer,address,undefined, or
 * linked with replay_main.c to replay the corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "barrel/discovery.h"

static void require(bool ok)
{
    if (!ok)
        abort();
}

static bool same_txt(const struct br_discovery_txt *a, const struct br_discovery_txt *b)
{
    return strcmp(a->id, b->id) == 0 && a->version == b->version && strcmp(a->mesh, b->mesh) == 0 &&
           a->port == b->port;
}

static bool same_items(const struct br_discovery_txt_items *a,
                       const struct br_discovery_txt_items *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->len[i] != b->len[i] || memcmp(a->item[i], b->item[i], a->len[i]) != 0)
            return false;
    return true;
}

static br_err parse_items(const struct br_discovery_txt_items *e, struct br_discovery_txt *out)
{
    const uint8_t *items[BR_DISCOVERY_TXT_ENC_ITEMS];
    for (size_t i = 0; i < e->n; i++)
        items[i] = (const uint8_t *)e->item[i];
    return br_discovery_txt_parse(items, e->len, e->n, out, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 0;
    if (size > 0 && data[size - 1] == '\n')
        size--; /* a final newline ends the last item; it does not start another */
    for (size_t i = 0; i < size; i++)
        n += data[i] == '\n';
    n++;
    if (size == 0)
        n = 0;
    const uint8_t **items = malloc((n ? n : 1) * sizeof *items);
    size_t *lens = malloc((n ? n : 1) * sizeof *lens);
    require(items && lens);
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= size && n; i++) {
        if (i == size || data[i] == '\n') {
            items[k] = data + start;
            lens[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    require(k == n);

    struct br_discovery_txt t, t2;
    struct br_discovery_txt_items a, b;
    struct br_errbuf eb;
    if (br_discovery_txt_parse(items, lens, n, &t, &eb) == BR_OK) {
        require(br_discovery_txt_encode(&t, &a, &eb) == BR_OK);
        require(parse_items(&a, &t2) == BR_OK);
        require(same_txt(&t, &t2));
        require(br_discovery_txt_encode(&t2, &b, &eb) == BR_OK);
        require(same_items(&a, &b));
    } else {
        require(eb.msg[0] != '\0'); /* a refusal always says why */
    }
    free(items);
    free(lens);
    return 0;
}
