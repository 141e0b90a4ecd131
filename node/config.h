/* config.h — the node's config file (`barrel serve --config FILE`), JSON:
 *
 *   {"bind": "0.0.0.0", "port": 7070,
 *    "admin": {"username": "admin", "password_hash": "$argon2id$..."},
 *    "cors": {"origins": ["http://localhost:8080"], "credentials": true,
 *             "headers": "accept, authorization, content-type, origin, referer",
 *             "methods": "GET, HEAD, POST, PUT, DELETE", "max_age": 600}}
 *
 * Every key is optional; an unknown key or a value of the wrong type is an error naming it, so
 * a typo never silently leaves a node open. Command-line flags override the file. CORS is off
 * unless "cors" names at least one origin ("*" allows any, but not with credentials, which
 * then echo the request's origin). Links: "p2p" and "peers" (see the fields below and p2p.h).
 * Thread: any. */
#ifndef BARREL_NODE_CONFIG_H
#define BARREL_NODE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "barrel/err.h"

struct br_config {
    char *bind;          /* NULL: not set */
    int port;            /* -1: not set */
    char *admin_user;    /* NULL: no admin */
    char *admin_hash;    /* crypto_pwhash string */
    char **cors_origins; /* n_cors_origins == 0: CORS off */
    size_t n_cors_origins;
    bool cors_credentials;
    char *cors_headers;    /* NULL: CouchDB's default list */
    char *cors_methods;    /* NULL: CouchDB's default list */
    unsigned cors_max_age; /* seconds */
    /* "p2p": {"mesh_key_file": PATH, "allow": [node ids], "deny": [node ids],
     *         "heartbeat_ms": N, "timeout_ms": N} */
    char *mesh_key_file;
    char **allow;
    size_t n_allow;
    char **deny;
    size_t n_deny;
    unsigned heartbeat_ms; /* 0: default */
    unsigned timeout_ms;   /* 0: default */
    /* "peers": [{"url": "ws://host:port", "dbs": ["a", "b"]}]: kept in sync both ways */
    struct br_config_peer *peers;
    size_t n_peers;
};

struct br_config_peer {
    char *url;
    char **dbs;
    size_t n_dbs;
};

/* Read and check the file at path into c (zeroed first). BR_EINVAL / BR_EIO with the reason in
 * eb. On error c holds nothing to free. */
BR_NODISCARD br_err br_config_load(const char *path, struct br_config *c, struct br_errbuf *eb);
void br_config_fini(struct br_config *c);

#endif
