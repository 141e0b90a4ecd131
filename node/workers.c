/* workers.c — worker threads with a job queue and a completion queue (see workers.h). Both
 * queues are singly linked FIFO lists under one mutex; workers sleep on a condition variable. */
#include "workers.h"

#include <pthread.h>
#include <stdbool.h>

#include "barrel/alloc.h"

struct job {
    struct job *next;
    br_work_fn run, done;
    void *arg;
};

struct fifo {
    struct job *head, *tail;
};

struct br_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fifo todo, finished;
    bool stopping;
    size_t pending; /* submitted, done not yet run (loop thread only) */
    void (*wake)(void *);
    void *wake_arg;
    pthread_t *threads;
    size_t n_threads;
};

static void fifo_push(struct fifo *f, struct job *j)
{
    j->next = NULL;
    if (f->tail)
        f->tail->next = j;
    else
        f->head = j;
    f->tail = j;
}

static struct job *fifo_pop(struct fifo *f)
{
    struct job *j = f->head;
    if (j) {
        f->head = j->next;
        if (!f->head)
            f->tail = NULL;
    }
    return j;
}

static void *worker_main(void *arg)
{
    br_workers *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct job *j = fifo_pop(&w->todo);
        if (!j) {
            if (w->stopping)
                break;
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        pthread_mutex_unlock(&w->mu);
        j->run(j->arg);
        pthread_mutex_lock(&w->mu);
        fifo_push(&w->finished, j);
        pthread_mutex_unlock(&w->mu);
        w->wake(w->wake_arg);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

br_err br_workers_new(size_t n, void (*wake)(void *), void *wake_arg, br_workers **out)
{
    if (n == 0 || n > 64 || !wake)
        return BR_EINVAL;
    br_workers *w = br_calloc(1, sizeof *w);
    if (!w)
        return BR_ENOMEM;
    w->threads = br_calloc(n, sizeof *w->threads);
    if (!w->threads) {
        br_free(w);
        return BR_ENOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->wake = wake;
    w->wake_arg = wake_arg;
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0) {
            br_workers_free(w);
            return BR_ENOMEM;
        }
        w->n_threads++;
    }
    *out = w;
    return BR_OK;
}

br_err br_workers_submit(br_workers *w, br_work_fn run, br_work_fn done, void *arg)
{
    struct job *j = br_malloc(sizeof *j);
    if (!j)
        return BR_ENOMEM;
    j->run = run;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        br_free(j);
        return BR_ECLOSED;
    }
    fifo_push(&w->todo, j);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->pending++;
    return BR_OK;
}

size_t br_workers_drain(br_workers *w)
{
    pthread_mutex_lock(&w->mu);
    struct fifo got = w->finished;
    w->finished = (struct fifo){NULL, NULL};
    pthread_mutex_unlock(&w->mu);
    size_t n = 0;
    for (struct job *j = fifo_pop(&got); j; j = fifo_pop(&got)) {
        w->pending--;
        if (j->done)
            j->done(j->arg);
        br_free(j);
        n++;
    }
    return n;
}

size_t br_workers_pending(const br_workers *w)
{
    return w->pending;
}

void br_workers_free(br_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    /* Jobs queued with no thread left to run them (only if thread creation failed). */
    for (struct job *j = fifo_pop(&w->todo); j; j = fifo_pop(&w->todo)) {
        j->run(j->arg);
        fifo_push(&w->finished, j);
    }
    br_workers_drain(w);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    br_free(w->threads);
    br_free(w);
}
