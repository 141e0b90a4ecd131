/* couch.h — CouchDB's names for barrel's errors, shared by the HTTP API and the CLI so that a
 * person sees the same words ("not_found", "conflict") wherever they meet an error. */
#ifndef BARREL_COUCH_H
#define BARREL_COUCH_H

#include "barrel/err.h"

struct br_couch_error {
    int status;        /* HTTP status CouchDB would answer */
    const char *error; /* CouchDB's "error" field */
};

/* The CouchDB status and error name for e. Never fails; unknown codes map to 500. */
struct br_couch_error br_couch_error(br_err e);

#endif
