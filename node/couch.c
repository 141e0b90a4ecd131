/* couch.c — mapping of br_err onto CouchDB's HTTP statuses and error names. */
#include "barrel/couch.h"

struct br_couch_error br_couch_error(br_err e)
{
    switch (e) {
    case BR_OK:
        return (struct br_couch_error){200, "ok"};
    case BR_ENOTFOUND:
        return (struct br_couch_error){404, "not_found"};
    case BR_ECONFLICT:
        return (struct br_couch_error){409, "conflict"};
    case BR_EEXIST:
        return (struct br_couch_error){412, "file_exists"};
    case BR_EINVAL:
    case BR_EBADREV:
    case BR_EPROTO:
        return (struct br_couch_error){400, "bad_request"};
    case BR_EBADNAME:
        return (struct br_couch_error){400, "illegal_docid"};
    case BR_ETOOBIG:
        return (struct br_couch_error){413, "too_large"};
    case BR_ENOCONFLICT:
        return (struct br_couch_error){400, "no_conflicts"};
    case BR_ECLOCK:
        return (struct br_couch_error){409, "clock_skew"};
    case BR_EBUSY:
        return (struct br_couch_error){503, "busy"};
    case BR_ETIMEDOUT:
        return (struct br_couch_error){504, "timeout"};
    default:
        return (struct br_couch_error){500, "internal_server_error"};
    }
}
