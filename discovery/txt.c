/* txt.c — the TXT records of a `_barrel._tcp` service: a strict parser for what strangers on
 * the network send, and the encoder for what we publish.
 *
 * The bytes come from anyone on the link, so every rule is checked and a reason is given;
 * values are never copied into a reason (they could hold anything). */
#include <stdio.h>
#include <string.h>

#include "barrel/discovery.h"

enum key { KEY_ID, KEY_V, KEY_MESH, KEY_PORT, KEY_COUNT };

static const char *const key_names[KEY_COUNT] = {"id", "v", "mesh", "port"};

static bool is_id_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7');
}

/* Shape of a node id text: 8 groups of 7 base32 characters joined by '-'. The reason says
 * where it is wrong. */
static bool id_shape_ok(const uint8_t *s, size_t len, struct br_errbuf *eb)
{
    if (len != BR_DISCOVERY_ID_LEN) {
        br_errbuf_set(eb, "id is %zu characters, not %d", len, BR_DISCOVERY_ID_LEN);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        bool dash_here = (i + 1) % 8 == 0;
        if (dash_here ? s[i] != '-' : !is_id_char(s[i])) {
            br_errbuf_set(eb, "id has %s at position %zu",
                          dash_here ? "no dash" : "a bad character", i);
            return false;
        }
    }
    return true;
}

static bool mesh_ok(const uint8_t *s, size_t len)
{
    if (len == 0)
        return true;
    if (len != BR_DISCOVERY_MESH_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* A canonical decimal in 1..max: digits only, no sign, no leading zero. NULL when it is one
 * (and *out is set), else what is wrong with it. */
static const char *decimal_problem(const uint8_t *s, size_t len, uint32_t max, uint32_t *out)
{
    uint32_t v = 0;
    if (len == 0)
        return "is empty";
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return "is not a decimal number";
    if (s[0] == '0')
        return len == 1 ? "is zero" : "has a leading zero";
    for (size_t i = 0; i < len; i++) {
        v = v * 10u + (uint32_t)(s[i] - '0');
        if (v > max)
            return "is too large";
    }
    *out = v;
    return NULL;
}

/* Which known key item[0..klen) names, ignoring case; KEY_COUNT if none. */
static enum key key_of(const uint8_t *item, size_t klen)
{
    for (int k = 0; k < KEY_COUNT; k++) {
        const char *name = key_names[k];
        if (strlen(name) != klen)
            continue;
        size_t i = 0;
        while (i < klen && (item[i] | 0x20) == (uint8_t)name[i])
            i++;
        if (i == klen)
            return (enum key)k;
    }
    return KEY_COUNT;
}

br_err br_discovery_txt_parse(const uint8_t *const *items, const size_t *lens, size_t n,
                              struct br_discovery_txt *out, struct br_errbuf *eb)
{
    struct br_discovery_txt t;
    bool seen[KEY_COUNT] = {false};
    memset(&t, 0, sizeof t);
    if (n > BR_DISCOVERY_TXT_MAX_ITEMS)
        return br_fail(eb, BR_EPROTO, "%zu TXT items (at most %d)", n, BR_DISCOVERY_TXT_MAX_ITEMS);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *item = items[i];
        size_t len = lens[i];
        if (len > BR_DISCOVERY_TXT_ITEM_MAX)
            return br_fail(eb, BR_EPROTO, "TXT item %zu is %zu bytes (at most %d)", i, len,
                           BR_DISCOVERY_TXT_ITEM_MAX);
        if (len == 0)
            continue; /* an empty TXT record is one empty string */
        if (memchr(item, 0, len))
            return br_fail(eb, BR_EPROTO, "TXT item %zu holds a NUL byte", i);
        const uint8_t *eq = memchr(item, '=', len);
        size_t klen = eq ? (size_t)(eq - item) : len;
        if (klen == 0)
            continue; /* RFC 6763 6.4: an item without a key is ignored */
        enum key k = key_of(item, klen);
        if (k == KEY_COUNT)
            continue; /* someone else's key, or a later version's */
        if (seen[k])
            return br_fail(eb, BR_EPROTO, "duplicate %s", key_names[k]);
        seen[k] = true;
        if (!eq)
            return br_fail(eb, BR_EPROTO, "%s has no value", key_names[k]);
        const uint8_t *val = eq + 1;
        size_t vlen = len - klen - 1;
        uint32_t num;
        const char *why;
        switch (k) {
        case KEY_ID:
            if (!id_shape_ok(val, vlen, eb))
                return BR_EPROTO;
            memcpy(t.id, val, vlen);
            t.id[vlen] = '\0';
            break;
        case KEY_V:
            why = decimal_problem(val, vlen, BR_DISCOVERY_VERSION_MAX, &num);
            if (why)
                return br_fail(eb, BR_EPROTO, "v %s (1..%d)", why, BR_DISCOVERY_VERSION_MAX);
            t.version = num;
            break;
        case KEY_MESH:
            if (!mesh_ok(val, vlen))
                return br_fail(eb, BR_EPROTO, "mesh is neither empty nor %d lowercase hex digits",
                               BR_DISCOVERY_MESH_LEN);
            memcpy(t.mesh, val, vlen);
            t.mesh[vlen] = '\0';
            break;
        case KEY_PORT:
            why = decimal_problem(val, vlen, 65535, &num);
            if (why)
                return br_fail(eb, BR_EPROTO, "port %s (1..65535)", why);
            t.port = (uint16_t)num;
            break;
        case KEY_COUNT:
            break;
        }
    }
    if (!seen[KEY_ID])
        return br_fail(eb, BR_EPROTO, "missing id");
    if (!seen[KEY_V])
        return br_fail(eb, BR_EPROTO, "missing v");
    *out = t;
    return BR_OK;
}

br_err br_discovery_txt_encode(const struct br_discovery_txt *t, struct br_discovery_txt_items *out,
                               struct br_errbuf *eb)
{
    struct br_discovery_txt_items r;
    size_t id_len = strnlen(t->id, sizeof t->id);
    size_t mesh_len = strnlen(t->mesh, sizeof t->mesh);
    struct br_errbuf why;
    if (!id_shape_ok((const uint8_t *)t->id, id_len, &why))
        return br_fail(eb, BR_EINVAL, "%s", why.msg);
    if (t->version < 1 || t->version > BR_DISCOVERY_VERSION_MAX)
        return br_fail(eb, BR_EINVAL, "version %u is not in 1..%d", (unsigned)t->version,
                       BR_DISCOVERY_VERSION_MAX);
    if (mesh_len == sizeof t->mesh || !mesh_ok((const uint8_t *)t->mesh, mesh_len))
        return br_fail(eb, BR_EINVAL, "mesh is neither empty nor %d lowercase hex digits",
                       BR_DISCOVERY_MESH_LEN);
    memset(&r, 0, sizeof r);
    int len[BR_DISCOVERY_TXT_ENC_ITEMS];
    len[0] = snprintf(r.item[0], sizeof r.item[0], "id=%s", t->id);
    len[1] = snprintf(r.item[1], sizeof r.item[1], "v=%u", (unsigned)t->version);
    len[2] = snprintf(r.item[2], sizeof r.item[2], "mesh=%s", t->mesh);
    r.n = 3;
    if (t->port != 0)
        len[r.n++] = snprintf(r.item[3], sizeof r.item[3], "port=%u", (unsigned)t->port);
    for (size_t i = 0; i < r.n; i++)
        r.len[i] = (size_t)len[i]; /* all fit: the longest is "id=" and 63 characters */
    *out = r;
    return BR_OK;
}
