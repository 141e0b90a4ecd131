/* workers_test.c — the worker pool runs jobs off the calling thread and hands completions
 * back, in order of completion, only when the owner drains. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "workers.h"

struct item {
    pthread_t ran_on;
    int done_count;
    atomic_int *running;
};

static atomic_int wakes;
static pthread_t loop_thread;

static void wake(void *arg)
{
    (void)arg;
    atomic_fetch_add(&wakes, 1);
}

static void run(void *arg)
{
    struct item *it = arg;
    it->ran_on = pthread_self();
    usleep(1000);
}

static void done(void *arg)
{
    struct item *it = arg;
    cr_expect(pthread_equal(pthread_self(), loop_thread));
    it->done_count++;
}

Test(workers, jobs_run_on_workers_and_complete_on_the_owner)
{
    br_workers *w = NULL;
    loop_thread = pthread_self();
    atomic_store(&wakes, 0);
    cr_assert_eq(br_workers_new(2, wake, NULL, &w), BR_OK);
    struct item items[50] = {{0}};
    for (int i = 0; i < 50; i++)
        cr_assert_eq(br_workers_submit(w, run, done, &items[i]), BR_OK);
    cr_expect_eq(br_workers_pending(w), 50);
    size_t total = 0;
    for (int spins = 0; total < 50 && spins < 5000; spins++) {
        total += br_workers_drain(w);
        usleep(1000);
    }
    cr_expect_eq(total, 50);
    cr_expect_eq(br_workers_pending(w), 0);
    cr_expect_eq(atomic_load(&wakes), 50);
    for (int i = 0; i < 50; i++) {
        cr_expect_eq(items[i].done_count, 1);
        cr_expect(!pthread_equal(items[i].ran_on, loop_thread));
    }
    br_workers_free(w);
}

Test(workers, free_finishes_queued_jobs)
{
    br_workers *w = NULL;
    loop_thread = pthread_self();
    cr_assert_eq(br_workers_new(1, wake, NULL, &w), BR_OK);
    struct item items[10] = {{0}};
    for (int i = 0; i < 10; i++)
        cr_assert_eq(br_workers_submit(w, run, done, &items[i]), BR_OK);
    br_workers_free(w); /* no drain: free runs every done */
    for (int i = 0; i < 10; i++)
        cr_expect_eq(items[i].done_count, 1, "job %d", i);
}

Test(workers, bad_arguments)
{
    br_workers *w = NULL;
    cr_expect_eq(br_workers_new(0, wake, NULL, &w), BR_EINVAL);
    cr_expect_eq(br_workers_new(65, wake, NULL, &w), BR_EINVAL);
    cr_expect_eq(br_workers_new(1, NULL, NULL, &w), BR_EINVAL);
    br_workers_free(NULL);
}
