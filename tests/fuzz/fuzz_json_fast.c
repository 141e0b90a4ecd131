/* fuzz_json_fast.c — differential libFuzzer harness: the one-pass JSON document converter
 * (store_json_doc_fast, behind br_json_doc_parse_text) against the jansson tree path
 * (br_json_parse then br_json_doc_parse), which is the reference.
 *
 * For every input, with no URL id and with the URL id "a": the one-pass converter must accept
 * exactly what the tree path accepts, and then produce the same document (id, revision,
 * history, deleted flag, attachments with their bytes, and the body's CBOR to the byte, on which
 * revision hashes depend), which cbor.c's canonicaliser leaves unchanged.
 * br_json_doc_parse_text must give the tree path's result exactly: the same code, the same
 * message on error, an empty document then; and BR_ETOOBIG when the text is one byte over max.
 * Any disagreement aborts, which the fuzzer reports as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "barrel/cbor.h"
#include "barrel/json.h"
#include "barrel/rev.h"

#include "json_int.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static int str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static int rev_eq(const struct br_rev *a, const struct br_rev *b)
{
    return (a == NULL && b == NULL) || (a && b && br_rev_eq(a, b));
}

static void check_empty(const struct br_json_doc *d)
{
    check(d->id == NULL && d->history == NULL && d->atts == NULL && d->body.data == NULL);
    check(d->n_history == 0 && d->n_atts == 0 && d->body.len == 0);
}

/* Both documents say the same, and each one's put points into itself. */
static void check_same(const struct br_json_doc *a, const struct br_json_doc *b)
{
    check((a->id == NULL) == (b->id == NULL));
    check(a->put.id == a->id && b->put.id == b->id);
    check(a->put.id_len == b->put.id_len);
    check(!a->id || memcmp(a->id, b->id, a->put.id_len) == 0);
    check(rev_eq(a->put.rev, b->put.rev));
    check(!a->put.rev || a->put.rev == &a->rev);
    check(!b->put.rev || b->put.rev == &b->rev);
    check(a->put.deleted == b->put.deleted);
    check(a->n_history == b->n_history && a->put.n_history == b->put.n_history);
    check(a->put.history == a->history && b->put.history == b->history);
    for (size_t i = 0; i < a->n_history; i++)
        check(br_rev_eq(&a->history[i], &b->history[i]));
    check(a->n_atts == b->n_atts && a->put.n_atts == b->put.n_atts);
    check(a->put.atts == a->atts && b->put.atts == b->atts);
    for (size_t i = 0; i < a->n_atts; i++) {
        const struct br_att_in *x = &a->atts[i], *y = &b->atts[i];
        check(str_eq(x->name, y->name));
        check(str_eq(x->content_type, y->content_type));
        check(str_eq(x->digest, y->digest));
        check(x->stub == y->stub && x->revpos == y->revpos && x->len == y->len);
        check((x->data == NULL) == (y->data == NULL));
        check(!x->len || memcmp(x->data, y->data, x->len) == 0);
    }
    check(a->put.body == a->body.data && b->put.body == b->body.data);
    check(a->put.body_trusted && b->put.body_trusted);
    check(a->body.len == b->body.len && a->put.body_len == a->body.len &&
          b->put.body_len == b->body.len);
    check(memcmp(a->body.data, b->body.data, a->body.len) == 0);
}

static void one(const char *text, size_t len, const char *url)
{
    struct br_json_doc tree, fast, pub;
    struct br_errbuf teb = {{0}}, peb = {{0}};
    json_t *j = NULL;

    memset(&tree, 0, sizeof tree);
    br_err te = br_json_parse(text, len, 0, &j, &teb);
    if (!te) {
        te = br_json_doc_parse(j, url, &tree, &teb);
        json_decref(j);
    }

    br_err fe = store_json_doc_fast(text, len, url, &fast);
    check((te == BR_OK) == (fe == BR_OK));
    if (fe == BR_OK) {
        check_same(&tree, &fast);
        /* and canonical by cbor.c's own, independent canonicaliser */
        br_buf c;
        br_buf_init(&c, 0);
        check(br_cbor_doc_canonical(fast.body.data, fast.body.len, 0, &c, NULL) == BR_OK);
        check(c.len == fast.body.len && memcmp(c.data, fast.body.data, c.len) == 0);
        br_buf_fini(&c);
    } else {
        check_empty(&fast);
    }

    br_err pe = br_json_doc_parse_text(text, len, 0, url, &pub, &peb);
    check(pe == te);
    if (pe == BR_OK) {
        check_same(&tree, &pub);
    } else {
        check(strcmp(peb.msg, teb.msg) == 0);
        check_empty(&pub);
    }

    br_json_doc_fini(&tree);
    br_json_doc_fini(&fast);
    br_json_doc_fini(&pub);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    one(text, size, NULL);
    one(text, size, "a");

    if (size >= 2) { /* one byte over the limit: the tree path's BR_ETOOBIG, whatever the text */
        struct br_json_doc d;
        struct br_errbuf eb = {{0}};
        check(br_json_doc_parse_text(text, size, size - 1, NULL, &d, &eb) == BR_ETOOBIG);
        check_empty(&d);
        check(br_json_doc_parse_text(text, size, size, NULL, &d, &eb) != BR_ETOOBIG);
        br_json_doc_fini(&d);
    }
    return 0;
}
