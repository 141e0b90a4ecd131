/* ep_peer.c — the replication RPC's transport (rpc.h) over a link to a peer: the endpoint's
 * requests go through p2p_request, made on the replication's thread while the loop moves the
 * frames (an `error` reply comes back as its error, p2p_request turns it). The peer's announced
 * database heads (its hello and digests) are kept on the link, and wait() sleeps on the link's
 * condition variable until the announced head passes `since`. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "barrel/alloc.h"
#include "barrel/rpc.h"

#include "p2p_int.h"

struct peer {
    struct link *l;
    bool interrupted; /* under l->mu */
};

static br_err t_call(void *ctx, struct br_wire_msg *req, struct br_wire_msg **reply,
                     struct br_errbuf *eb)
{
    struct peer *q = ctx;
    return p2p_request(q->l, req, reply, eb);
}

static struct br_hlc t_remote_last(void *ctx, const char *db)
{
    struct peer *q = ctx;
    pthread_mutex_lock(&q->l->mu);
    struct br_hlc last = p2p_remote_last(q->l, db);
    pthread_mutex_unlock(&q->l->mu);
    return last;
}

static br_err t_wait(void *ctx, const char *db, struct br_hlc since, uint64_t timeout_ms)
{
    struct peer *q = ctx;
    struct link *l = q->l;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000);
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    br_err e = BR_OK;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (q->interrupted || l->closed) {
            e = BR_ECLOSED;
            break;
        }
        if (br_hlc_cmp(p2p_remote_last(l, db), since) > 0)
            break;
        if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) != 0) {
            e = br_hlc_cmp(p2p_remote_last(l, db), since) > 0 ? BR_OK : BR_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return e;
}

static void t_interrupt(void *ctx)
{
    struct peer *q = ctx;
    pthread_mutex_lock(&q->l->mu);
    q->interrupted = true;
    pthread_cond_broadcast(&q->l->cv);
    pthread_mutex_unlock(&q->l->mu);
}

static void t_free(void *ctx)
{
    struct peer *q = ctx;
    p2p_link_unref(q->l);
    br_free(q);
}

br_err p2p_endpoint_new(struct link *l, const char *db, struct br_endpoint **out)
{
    struct peer *q = br_calloc(1, sizeof *q);
    if (!q)
        return BR_ENOMEM;
    q->l = l;
    p2p_link_ref(l);
    const struct br_rpc_transport t = {
        .ctx = q,
        .call = t_call,
        .remote_last = t_remote_last,
        .wait = t_wait,
        .interrupt = t_interrupt,
        .free = t_free,
    };
    char name[BR_ENDPOINT_NAME_MAX];
    snprintf(name, sizeof name, "%s/%s", l->peer_text, db);
    return br_endpoint_rpc_new(&t, db, name, out); /* owns q now, even when it fails */
}
