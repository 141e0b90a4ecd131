/* json_int.h — json.c's private entry point, for its tests and its differential fuzzer.
 *
 * br_json_doc_parse_text (json.h) tries the one-pass converter below and, when it refuses,
 * runs the tree path (br_json_parse, br_json_doc_parse) to decide and word the error. Tests
 * call the one-pass converter alone to check that it accepts exactly what the tree path
 * accepts, with identical results. */
#ifndef BARREL_JSON_INT_H
#define BARREL_JSON_INT_H

#include <stddef.h>

#include "barrel/json.h"

/* Convert one JSON document text (no size limit) in one pass. BR_OK with *d filled exactly as
 * br_json_parse + br_json_doc_parse would fill it (release with br_json_doc_fini); any refusal
 * is BR_EINVAL with *d empty and no reason given. Thread: any. */
BR_NODISCARD br_err store_json_doc_fast(const char *text, size_t len, const char *id_from_url,
                                        struct br_json_doc *d);

#endif
