/* fuzz_mango.c — libFuzzer harness for CouchDB Mango _find bodies (br_query_from_mango).
 *
 * The input is JSON text. When it translates, the query is rendered with br_query_to_json (the
 * barrel form), compiled with br_query_compile and rendered again: the two renderings must be
 * equal (every Mango construct has a barrel form), and both compiled queries must give the
 * same answer on a few fixed documents. The subscription patterns must be valid patterns, and a
 * document the query matches must have a topic under one of them (unless the set is "#").
 * Finally the input bytes themselves are evaluated as a (mostly malformed) CBOR body, which
 * must not crash. Any broken property aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/json.h"
#include "barrel/paths.h"
#include "barrel/query.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static const char *const DOCS[] = {
    "{\"type\":\"user\",\"name\":\"Alice\",\"age\":30,\"org\":{\"id\":\"acme\",\"n\":[1,2.5]},"
    "\"tags\":[\"a\",\"b\",[\"c\"]],\"_meta\":{\"x\":1},\"ok\":true,\"z\":null}",
    "{\"items\":[{\"sku\":\"A\",\"q\":1},{\"sku\":\"B\",\"q\":5,\"0\":\"k\"}],\"e\":[],\"o\":{},"
    "\"s\":\"aaaaaaaaaaaaaaaaaaaaaaab\",\"big\":9007199254740993,\"neg\":-1.5e300}",
    "{}",
};
#define NDOCS (sizeof DOCS / sizeof DOCS[0])

static br_buf bodies[NDOCS];
static bool ready;

static void init_docs(void)
{
    if (ready)
        return;
    for (size_t i = 0; i < NDOCS; i++) {
        json_t *v = NULL;
        struct br_errbuf eb;
        br_buf_init(&bodies[i], 0);
        check(br_json_parse(DOCS[i], strlen(DOCS[i]), 0, &v, &eb) == BR_OK);
        check(br_json_to_cbor(v, &bodies[i], &eb) == BR_OK);
        json_decref(v);
    }
    ready = true;
}

/* A matching document has a topic under one of the query's patterns. */
static void check_patterns(const br_query *q, const br_buf *body, bool matched)
{
    char **p = NULL, **t = NULL;
    size_t np = 0, nt = 0;
    if (br_query_patterns(q, &p, &np) != BR_OK)
        return; /* only BR_ENOMEM */
    for (size_t i = 0; i < np; i++)
        check(br_pattern_check(p[i], strlen(p[i]), NULL) == BR_OK);
    bool all = np == 1 && strcmp(p[0], "#") == 0;
    if (matched && !all && br_paths_topics(body->data, body->len, &t, &nt) == BR_OK) {
        bool covered = false;
        for (size_t i = 0; i < np && !covered; i++)
            for (size_t j = 0; j < nt && !covered; j++)
                covered = br_pattern_match(p[i], strlen(p[i]), t[j], strlen(t[j]));
        check(covered);
        br_free(t);
    }
    br_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *spec = NULL, *j1 = NULL, *j2 = NULL;
    br_query *q = NULL, *q2 = NULL;
    struct br_errbuf eb;
    init_docs();
    if (br_json_parse((const char *)data, size, 1 << 16, &spec, &eb) != BR_OK)
        return 0;
    if (br_query_from_mango(spec, &q, &eb) != BR_OK)
        goto done;
    check(br_query_to_json(q, &j1) == BR_OK);
    check(br_query_compile(j1, &q2, &eb) == BR_OK);
    check(br_query_to_json(q2, &j2) == BR_OK);
    check(json_equal(j1, j2));
    for (size_t i = 0; i < NDOCS; i++) {
        bool m = br_query_match(q, bodies[i].data, bodies[i].len);
        check(m == br_query_match(q2, bodies[i].data, bodies[i].len));
        check_patterns(q, &bodies[i], m);
    }
    (void)br_query_match(q, data, size);
done:
    br_query_free(q);
    br_query_free(q2);
    json_decref(j1);
    json_decref(j2);
    json_decref(spec);
    return 0;
}
