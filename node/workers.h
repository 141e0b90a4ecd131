/* workers.h — a small pool of worker threads and the completion queue that brings results
 * back to the event loop (STYLE.md "Threads: one event loop").
 *
 * A job is two functions: run(arg) on a worker thread (slow work: store writes that fsync,
 * large batches, big reads), then done(arg) on the loop thread when the loop calls
 * br_workers_drain(). The job's arg is owned by the job from submit until done returns; run
 * must not touch loop objects. After each completed job the pool calls the wake function
 * (given at creation; for the node it is lws_cancel_service), from the worker thread. */
#ifndef BARREL_NODE_WORKERS_H
#define BARREL_NODE_WORKERS_H

#include <stddef.h>

#include "barrel/err.h"

typedef struct br_workers br_workers;
typedef void (*br_work_fn)(void *arg);

/* Start n threads (1..64). wake(wake_arg) is called from workers; it must be thread-safe.
 * Thread: loop. */
BR_NODISCARD br_err br_workers_new(size_t n, void (*wake)(void *), void *wake_arg,
                                   br_workers **out);
/* Queue a job. BR_ECLOSED once stopping, BR_ENOMEM; on error the caller still owns arg.
 * Thread: loop. */
BR_NODISCARD br_err br_workers_submit(br_workers *w, br_work_fn run, br_work_fn done, void *arg);
/* Run done() for every completed job, in completion order. Returns how many ran.
 * Thread: loop. */
size_t br_workers_drain(br_workers *w);
/* Jobs submitted whose done() has not run yet. Thread: loop. */
size_t br_workers_pending(const br_workers *w);
/* Finish every queued job (run, then done on the calling thread), join the threads, free.
 * NULL is a no-op. Thread: loop. */
void br_workers_free(br_workers *w);

#endif
