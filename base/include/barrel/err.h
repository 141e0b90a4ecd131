/* err.h — barrel's one error enum and the small buffer that carries a reason for a person.
 *
 * Every function that can fail returns br_err and is BR_NODISCARD. Values are never
 * renumbered (they may be logged or persisted); new codes go at the end, before BR_ERR_COUNT.
 * Foreign errors (RocksDB, libcbor, jansson, errno) are translated once, in the module that
 * owns the library, and never travel upward. */
#ifndef BARREL_ERR_H
#define BARREL_ERR_H

#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__)
#define BR_NODISCARD __attribute__((warn_unused_result))
#define BR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BR_NODISCARD
#define BR_PRINTF(f, a)
#endif

typedef enum br_err {
    BR_OK = 0,
    BR_ENOMEM = 1,       /* an allocation failed */
    BR_EINVAL = 2,       /* bad argument or malformed input from a client */
    BR_ENOTFOUND = 3,    /* no such database, document, revision or key */
    BR_ECONFLICT = 4,    /* revision conflict (HTTP 409) */
    BR_EEXIST = 5,       /* already exists (HTTP 412 for databases) */
    BR_EPROTO = 6,       /* malformed bytes from a peer or the disk */
    BR_ECRYPTO = 7,      /* a cryptographic check failed */
    BR_ESTORE = 8,       /* the storage engine failed, or a stored record is corrupt */
    BR_ECLOSED = 9,      /* the handle or link is closed */
    BR_ETIMEDOUT = 10,   /* a wait ran out of time */
    BR_ETOOBIG = 11,     /* input beyond a configured maximum (HTTP 413) */
    BR_EIO = 12,         /* an operating-system I/O call failed */
    BR_EBUSY = 13,       /* the resource is held by someone else (e.g. a locked data dir) */
    BR_ECLOCK = 14,      /* a remote clock is too far ahead, or the HLC counter overflowed */
    BR_ENOCONFLICT = 15, /* conflict resolution asked of a document with no conflicts */
    BR_EBADREV = 16,     /* a revision id or history that is malformed or inconsistent */
    BR_EBADNAME = 17,    /* a database, document or attachment name out of rule */
    BR_EWOULDBLOCK = 18, /* the answer needs a slow step (disk I/O) the caller ruled out */
    BR_ERR_COUNT
} br_err;

/* Short, stable, lowercase description of e ("not found"). Never NULL. Thread: any. */
const char *br_strerror(br_err e);

/* Stable identifier of e for logs and machine use ("enotfound"). Never NULL. Thread: any. */
const char *br_errname(br_err e);

#define BR_ERRBUF_SIZE 256

/* A reason for a person, filled next to an error code (HTTP "reason", CLI message). */
struct br_errbuf {
    char msg[BR_ERRBUF_SIZE];
};

/* Write a formatted reason into eb (NULL is a no-op); the text is cut to fit. Thread: any. */
void br_errbuf_set(struct br_errbuf *eb, const char *fmt, ...) BR_PRINTF(2, 3);

/* Set the reason and return e, for `return br_fail(eb, BR_EINVAL, "...")`. */
br_err br_fail(struct br_errbuf *eb, br_err e, const char *fmt, ...) BR_PRINTF(3, 4);

#endif
