/* fuzz_json_doc.c — libFuzzer harness for JSON documents from clients and CouchDB peers.
 *
 * Parses the input; any value is converted to canonical CBOR and back, and must come back
 * equal. An object is split with br_json_doc_parse; when that succeeds, the split is rendered
 * as a read document (attachments as stubs), parsed again, and the second split must agree
 * with the first (id, revision, history, deleted flag, attachment names and body bytes). Any
 * broken property aborts, which the fuzzer reports as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "barrel/alloc.h"
#include "barrel/buf.h"
#include "barrel/cbor.h"
#include "barrel/json.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Render the split document d as a read document and split the result into *again. */
static void render_and_reparse(const struct br_json_doc *d)
{
    struct br_doc doc;
    struct br_att_stub *stubs = NULL;
    struct br_json_doc again;
    struct br_errbuf eb;
    json_t *out = NULL;
    memset(&doc, 0, sizeof doc);
    memset(&again, 0, sizeof again);

    if (d->n_atts) {
        stubs = calloc(d->n_atts, sizeof *stubs);
        check(stubs != NULL);
    }
    for (size_t i = 0; i < d->n_atts; i++) {
        stubs[i].name = (char *)d->atts[i].name;
        stubs[i].content_type = (char *)d->atts[i].content_type;
        stubs[i].length = d->atts[i].len;
        stubs[i].revpos = d->atts[i].revpos;
        const char *dg = d->atts[i].digest;
        if (dg && strlen(dg) < sizeof stubs[i].digest)
            memcpy(stubs[i].digest, dg, strlen(dg) + 1);
    }
    doc.id = d->id;
    doc.id_len = d->put.id_len;
    if (d->put.rev)
        doc.rev = *d->put.rev;
    doc.deleted = d->put.deleted;
    doc.body = d->body.data;
    doc.body_len = d->body.len;
    doc.atts = stubs;
    doc.n_atts = d->n_atts;
    doc.revisions = d->history;
    doc.n_revisions = d->n_history;

    /* a one-entry history from _rev alone renders as _revisions, which parses back the same */
    check(br_json_doc_render(&doc, &out, &eb) == BR_OK);
    check(br_json_doc_parse(out, NULL, &again, &eb) == BR_OK);
    check((d->id == NULL) == (again.id == NULL));
    check(!d->id ||
          (again.put.id_len == d->put.id_len && memcmp(again.id, d->id, d->put.id_len) == 0));
    check((d->put.rev == NULL) == (again.put.rev == NULL));
    check(!d->put.rev || br_rev_eq(again.put.rev, d->put.rev));
    check(again.n_history == d->n_history);
    for (size_t i = 0; i < d->n_history; i++)
        check(br_rev_eq(&again.history[i], &d->history[i]));
    check(again.put.deleted == d->put.deleted);
    check(again.n_atts == d->n_atts);
    for (size_t i = 0; i < again.n_atts; i++)
        check(again.atts[i].stub);
    check(again.body.len == d->body.len && memcmp(again.body.data, d->body.data, d->body.len) == 0);

    br_json_doc_fini(&again);
    json_decref(out);
    free(stubs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = NULL, *back = NULL;
    struct br_errbuf eb;
    struct br_json_doc d;
    br_buf b;
    br_buf_init(&b, 0);

    if (br_json_parse((const char *)data, size, 0, &v, &eb) != BR_OK)
        goto done;

    /* any value: JSON -> CBOR -> JSON is the identity (deeper than the cap is refused) */
    if (br_json_to_cbor(v, &b, &eb) == BR_OK) {
        check(br_json_from_cbor(b.data, b.len, &back, &eb) == BR_OK);
        check(json_equal(v, back));
    }

    if (json_is_object(v) && br_json_doc_parse(v, NULL, &d, &eb) == BR_OK) {
        /* the body is canonical already */
        br_buf c;
        br_buf_init(&c, 0);
        check(br_cbor_doc_canonical(d.body.data, d.body.len, 0, &c, &eb) == BR_OK);
        check(c.len == d.body.len && memcmp(c.data, d.body.data, c.len) == 0);
        br_buf_fini(&c);
        render_and_reparse(&d);
        br_json_doc_fini(&d);
    }

done:
    json_decref(back);
    json_decref(v);
    br_buf_fini(&b);
    return 0;
}
