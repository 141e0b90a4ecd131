/* idle.h — give memory back when the node is idle: once no batch has been committed for
 * idle_s seconds, flush the store's memtables to disk (br_store_flush) and return freed heap
 * pages to the OS (malloc_trim), once per idle period.
 *
 * It runs on its own thread, which touches only the store (thread-safe) and never loop
 * objects; a flush takes disk I/O, so it must not run on the loop. Thread: loop (start/stop). */
#ifndef BARREL_NODE_IDLE_H
#define BARREL_NODE_IDLE_H

#include "barrel/store.h"

typedef struct br_idle br_idle;

/* Start watching s (borrowed; must outlive br_idle_stop). idle_s 0: *out = NULL (off). */
BR_NODISCARD br_err br_idle_start(br_store *s, unsigned idle_s, br_idle **out);
/* Stop the thread (waits for a flush in progress) and free. NULL is a no-op. */
void br_idle_stop(br_idle *w);
/* How many idle flushes have run (for tests and logs). Thread: any. */
unsigned br_idle_flushes(const br_idle *w);

#endif
