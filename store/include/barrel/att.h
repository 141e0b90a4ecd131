/* att.h — attachments: content-addressed blobs streamed in and out in 64 KiB chunks.
 *
 * A blob is stored once per content (BLAKE2b-256 key) per database, in a column family with
 * RocksDB blob files, and is referenced by the revisions whose _attachments name it; it goes
 * when the last leaf revision referencing it does. Nothing here holds a whole attachment in
 * memory: a 1 GiB attachment costs one chunk of memory to write or read.
 *
 * Attachments belong to revisions (CouchDB): adding or removing one writes a new revision.
 * The document-level calls below do exactly that, through br_db_put.
 * Thread: a writer or reader handle is used by one thread at a time. */
#ifndef BARREL_ATT_H
#define BARREL_ATT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"
#include "barrel/rev.h"
#include "barrel/store.h"

#define BR_ATT_CHUNK (64u * 1024u)
#define BR_ATT_NAME_MAX 1024

/* Names: 1..1024 bytes of UTF-8, no NUL, '/' or '\\', not starting with '_' (ATT-03). */
bool br_att_name_valid(const char *name, size_t len);
/* Content type for a file name from its extension ("a.png" -> "image/png"); unknown:
 * "application/octet-stream" (ATT-04). Never NULL; a static string. */
const char *br_att_content_type(const char *name);

/* ---- streaming write ---- */
typedef struct br_att_writer br_att_writer;

/* Start streaming a blob into db. Chunks are written as they fill (unsynced); an unfinished
 * upload is removed at the next store open. */
BR_NODISCARD br_err br_att_writer_open(br_db *db, br_att_writer **out);
BR_NODISCARD br_err br_att_writer_write(br_att_writer *w, const void *p, size_t n);
/* Finish: the blob is stored (or, if the database already holds the same content, the new
 * copy is dropped) and identified by key; digest gets "md5-<base64>". Pass key as
 * br_att_in.blob_key in a br_db_put to attach it. The writer is freed either way. */
BR_NODISCARD br_err br_att_writer_finish(br_att_writer *w, uint8_t key[32], char digest[48],
                                         uint64_t *length);
void br_att_writer_abort(br_att_writer *w); /* removes what was written; NULL is a no-op */

/* ---- streaming read ---- */
typedef struct br_att_reader br_att_reader;

/* Open the blob `key` of db. BR_ENOTFOUND. *length (may be NULL) gets its size. */
BR_NODISCARD br_err br_att_reader_open(br_db *db, const uint8_t key[32], br_att_reader **out,
                                       uint64_t *length);
/* Next chunk: *p is valid until the next call or close; *n == 0 at the end. Verifies each chunk
 * is present (a missing chunk is BR_ESTORE). */
BR_NODISCARD br_err br_att_reader_read(br_att_reader *r, const uint8_t **p, size_t *n);
void br_att_reader_close(br_att_reader *r); /* NULL is a no-op */

/* ---- document level (CouchDB's /{db}/{doc}/{att}) ---- */

/* The stub of attachment `name` on the winning revision (or `rev`) of a document, without
 * reading its data (ATT-06). Caller frees the strings with br_att_stub_fini. BR_ENOTFOUND. */
BR_NODISCARD br_err br_db_att_info(br_db *db, const char *id, size_t id_len,
                                   const struct br_rev *rev, const char *name,
                                   struct br_att_stub *out);
void br_att_stub_fini(struct br_att_stub *s);
/* Write a new revision of document id (child of `rev`, which must be the current winner; NULL
 * creates the document) that adds or replaces attachment `name` with blob `key`. */
BR_NODISCARD br_err br_db_att_put(br_db *db, const char *id, size_t id_len,
                                  const struct br_rev *rev, const char *name,
                                  const char *content_type, const uint8_t key[32],
                                  const struct br_write_opts *wo, struct br_put_result *res);
/* Write a new revision without attachment `name`. BR_ENOTFOUND if it is not there. */
BR_NODISCARD br_err br_db_att_delete(br_db *db, const char *id, size_t id_len,
                                     const struct br_rev *rev, const char *name,
                                     const struct br_write_opts *wo, struct br_put_result *res);

#endif
