/* config.c — the config file (see config.h). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "barrel/alloc.h"

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        br_free(v[i]);
    br_free(v);
}

void br_config_fini(struct br_config *c)
{
    br_free(c->bind);
    br_free(c->admin_user);
    br_free(c->admin_hash);
    for (size_t i = 0; i < c->n_cors_origins; i++)
        br_free(c->cors_origins[i]);
    br_free(c->cors_origins);
    br_free(c->cors_headers);
    br_free(c->cors_methods);
    free_list(c->allow, c->n_allow);
    free_list(c->deny, c->n_deny);
    br_free(c->mesh_key_file);
    for (size_t i = 0; i < c->n_peers; i++) {
        br_free(c->peers[i].url);
        free_list(c->peers[i].dbs, c->peers[i].n_dbs);
    }
    br_free(c->peers);
    memset(c, 0, sizeof *c);
    c->port = -1;
}

static bool only_keys(json_t *o, const char *const *keys, const char *where, struct br_errbuf *eb)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        bool known = false;
        for (size_t i = 0; keys[i] && !known; i++)
            known = strcmp(keys[i], k) == 0;
        if (!known) {
            br_errbuf_set(eb, "unknown key \"%s\" in %s", k, where);
            return false;
        }
    }
    return true;
}

/* A string member copied into *out (left NULL when absent). */
static br_err str_member(json_t *o, const char *key, const char *where, char **out,
                         struct br_errbuf *eb)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return BR_OK;
    if (!json_is_string(v))
        return br_fail(eb, BR_EINVAL, "%s.%s must be a string", where, key);
    *out = br_strdup(json_string_value(v));
    return *out ? BR_OK : BR_ENOMEM;
}

static br_err load_cors(json_t *j, struct br_config *c, struct br_errbuf *eb)
{
    static const char *const keys[] = {"origins", "credentials", "headers",
                                       "methods", "max_age",     NULL};
    if (!json_is_object(j))
        return br_fail(eb, BR_EINVAL, "cors must be an object");
    if (!only_keys(j, keys, "cors", eb))
        return BR_EINVAL;
    json_t *o = json_object_get(j, "origins");
    if (o && !json_is_array(o))
        return br_fail(eb, BR_EINVAL, "cors.origins must be a list of origins");
    size_t n = json_array_size(o);
    if (n) {
        c->cors_origins = br_calloc(n, sizeof *c->cors_origins);
        if (!c->cors_origins)
            return BR_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(o, i));
        if (!s || !*s)
            return br_fail(eb, BR_EINVAL, "cors.origins[%zu] must be a non-empty string", i);
        if (!(c->cors_origins[i] = br_strdup(s)))
            return BR_ENOMEM;
        c->n_cors_origins++;
    }
    json_t *cr = json_object_get(j, "credentials");
    if (cr && !json_is_boolean(cr))
        return br_fail(eb, BR_EINVAL, "cors.credentials must be true or false");
    c->cors_credentials = json_is_true(cr);
    json_t *ma = json_object_get(j, "max_age");
    if (ma &&
        (!json_is_integer(ma) || json_integer_value(ma) < 0 || json_integer_value(ma) > 86400))
        return br_fail(eb, BR_EINVAL, "cors.max_age must be 0..86400 seconds");
    c->cors_max_age = ma ? (unsigned)json_integer_value(ma) : 600;
    br_err e = str_member(j, "headers", "cors", &c->cors_headers, eb);
    if (!e)
        e = str_member(j, "methods", "cors", &c->cors_methods, eb);
    return e;
}

/* A list of non-empty strings. */
static br_err str_list(json_t *o, const char *key, const char *where, char ***out, size_t *n_out,
                       struct br_errbuf *eb)
{
    json_t *a = json_object_get(o, key);
    if (!a)
        return BR_OK;
    if (!json_is_array(a))
        return br_fail(eb, BR_EINVAL, "%s.%s must be a list of strings", where, key);
    size_t n = json_array_size(a);
    if (!n)
        return BR_OK;
    char **v = br_calloc(n, sizeof *v);
    if (!v)
        return BR_ENOMEM;
    *out = v;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !*s)
            return br_fail(eb, BR_EINVAL, "%s.%s[%zu] must be a non-empty string", where, key, i);
        if (!(v[i] = br_strdup(s)))
            return BR_ENOMEM;
        (*n_out)++;
    }
    return BR_OK;
}

static br_err ms_member(json_t *o, const char *key, unsigned *out, struct br_errbuf *eb)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return BR_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 50 || json_integer_value(v) > 3600000)
        return br_fail(eb, BR_EINVAL, "p2p.%s must be 50..3600000 milliseconds", key);
    *out = (unsigned)json_integer_value(v);
    return BR_OK;
}

static br_err load_p2p(json_t *j, struct br_config *c, struct br_errbuf *eb)
{
    static const char *const keys[] = {"mesh_key_file", "allow",      "deny",
                                       "heartbeat_ms",  "timeout_ms", NULL};
    if (!json_is_object(j))
        return br_fail(eb, BR_EINVAL, "p2p must be an object");
    if (!only_keys(j, keys, "p2p", eb))
        return BR_EINVAL;
    br_err e = str_member(j, "mesh_key_file", "p2p", &c->mesh_key_file, eb);
    if (!e)
        e = str_list(j, "allow", "p2p", &c->allow, &c->n_allow, eb);
    if (!e)
        e = str_list(j, "deny", "p2p", &c->deny, &c->n_deny, eb);
    if (!e)
        e = ms_member(j, "heartbeat_ms", &c->heartbeat_ms, eb);
    if (!e)
        e = ms_member(j, "timeout_ms", &c->timeout_ms, eb);
    return e;
}

static br_err load_peers(json_t *j, struct br_config *c, struct br_errbuf *eb)
{
    static const char *const keys[] = {"url", "dbs", NULL};
    if (!json_is_array(j))
        return br_fail(eb, BR_EINVAL, "peers must be a list of {\"url\", \"dbs\"}");
    size_t n = json_array_size(j);
    if (!n)
        return BR_OK;
    if (!(c->peers = br_calloc(n, sizeof *c->peers)))
        return BR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(j, i);
        if (!json_is_object(o) || !only_keys(o, keys, "peers[]", eb))
            return br_fail(eb, BR_EINVAL, "%s",
                           eb->msg[0] ? eb->msg : "peers[] must be objects {\"url\", \"dbs\"}");
        struct br_config_peer *pe = &c->peers[c->n_peers++];
        br_err e = str_member(o, "url", "peers[]", &pe->url, eb);
        if (!e)
            e = str_list(o, "dbs", "peers[]", &pe->dbs, &pe->n_dbs, eb);
        if (e)
            return e;
        if (!pe->url)
            return br_fail(eb, BR_EINVAL, "peers[%zu] needs a url", i);
    }
    return BR_OK;
}

static br_err load(json_t *j, struct br_config *c, struct br_errbuf *eb)
{
    static const char *const keys[] = {"bind", "port", "admin", "cors", "p2p", "peers", NULL};
    if (!json_is_object(j))
        return br_fail(eb, BR_EINVAL, "the config must be a JSON object");
    if (!only_keys(j, keys, "the config", eb))
        return BR_EINVAL;
    br_err e = str_member(j, "bind", "config", &c->bind, eb);
    if (e)
        return e;
    json_t *p = json_object_get(j, "port");
    if (p) {
        if (!json_is_integer(p) || json_integer_value(p) < 0 || json_integer_value(p) > 65535)
            return br_fail(eb, BR_EINVAL, "port must be 0..65535");
        c->port = (int)json_integer_value(p);
    }
    json_t *a = json_object_get(j, "admin");
    if (a) {
        static const char *const akeys[] = {"username", "password_hash", NULL};
        if (!json_is_object(a) || !only_keys(a, akeys, "admin", eb))
            return br_fail(eb, BR_EINVAL, "%s", eb->msg[0] ? eb->msg : "admin must be an object");
        if ((e = str_member(a, "username", "admin", &c->admin_user, eb)) ||
            (e = str_member(a, "password_hash", "admin", &c->admin_hash, eb)))
            return e;
        if (!c->admin_user || !c->admin_hash || !c->admin_user[0])
            return br_fail(eb, BR_EINVAL, "admin needs username and password_hash");
    }
    json_t *cors = json_object_get(j, "cors");
    if (cors && (e = load_cors(cors, c, eb)))
        return e;
    json_t *p2p = json_object_get(j, "p2p");
    if (p2p && (e = load_p2p(p2p, c, eb)))
        return e;
    json_t *peers = json_object_get(j, "peers");
    return peers ? load_peers(peers, c, eb) : BR_OK;
}

br_err br_config_load(const char *path, struct br_config *c, struct br_errbuf *eb)
{
    memset(c, 0, sizeof *c);
    c->port = -1;
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return br_fail(eb, BR_EINVAL, "config %s: %s (line %d)", path, je.text, je.line);
    br_err e = load(j, c, eb);
    json_decref(j);
    if (e) {
        char msg[BR_ERRBUF_SIZE];
        snprintf(msg, sizeof msg, "%s", eb->msg);
        br_errbuf_set(eb, "config %s: %s", path, msg);
        br_config_fini(c);
    }
    return e;
}
