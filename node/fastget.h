/* fastget.h — GET /{db}/{docid} answered on the event loop when RocksDB can answer from memory.
 *
 * Every other store call goes to the worker pool (serve.c). A single-document read is small,
 * and when its record is in a memtable or the block cache (br_db_get's cache_only), handing it
 * to a worker and back costs more than the read. The loop keeps a few open database handles;
 * a GET for a database it holds is tried from memory; anything that would need the disk, or a
 * database not held yet, goes to a worker as before, and that worker opens the handle the loop
 * adopts for next time (so the loop never reads the catalog itself).
 * Thread: loop, except br_fastget_open_for (any). */
#ifndef BARREL_NODE_FASTGET_H
#define BARREL_NODE_FASTGET_H

#include <stdbool.h>

#include "barrel/store.h"

#include "http.h"

typedef struct br_fastget br_fastget;

/* A cache of at most BR_FASTGET_DBS handles on s (borrowed; outlives the cache). With
 * enabled false, br_fastget_try never answers (the worker path for every GET, for tests).
 * Caller frees with br_fastget_free. */
#define BR_FASTGET_DBS 16
BR_NODISCARD br_err br_fastget_new(br_store *s, bool enabled, br_fastget **out);
void br_fastget_free(br_fastget *f); /* closes the handles; NULL is a no-op */

/* Answer x (a GET or HEAD on the document route) from memory: true when x->resp is set; false
 * when it must go to a worker (x untouched). *want_db is set when the database is not held:
 * the worker should open it with br_fastget_open_for and the loop adopt it. */
bool br_fastget_try(br_fastget *f, br_http_ex *x, bool *want_db);

/* On a worker: open the database x names, for br_fastget_adopt. NULL when it cannot. */
br_db *br_fastget_open_for(br_store *s, const br_http_ex *x);

/* Take db (an open handle, owned from now on; NULL is a no-op) into the cache, or close it
 * when the cache already holds that database or is full. */
void br_fastget_adopt(br_fastget *f, br_db *db);

#endif
