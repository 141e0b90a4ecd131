/* wire.h — the sync protocol's messages (DESIGN.md "Sync protocol"): one CBOR map per message,
 * with a text "type" and an unsigned request id "rid", plus an encoder and a strict decoder of
 * untrusted bytes.
 *
 * Every message is a definite-length CBOR map with text keys. The decoder rejects, with
 * BR_EPROTO and a reason naming the problem: bytes past BR_WIRE_MAX_MSG (BR_ETOOBIG), anything
 * that is not exactly one map, unknown message types, unknown or duplicate keys, missing
 * required keys, wrong types, lists longer than BR_WIRE_MAX_ITEMS, strings longer than their
 * limit, a hello whose protocol version is not BR_WIRE_VERSION, malformed revision ids and
 * HLCs, and document bodies or queries that are not JSON-typed CBOR maps at most
 * BR_CBOR_MAX_DEPTH deep. Keys may come in any order; the encoder writes a fixed order.
 *
 * A decoded message owns all its memory in an arena (strings are NUL-terminated copies), so the
 * input buffer may be freed at once; br_wire_msg_free releases it. The same record types
 * (changes, revision documents, attachments) are what sync endpoints exchange in-process
 * (endpoint.h), so a remote endpoint only has to encode and decode them.
 *
 * Message types and their fields (? marks an optional field):
 *   hello            version uint, node text, hlc bytes(12), dbs [{name, last bytes(12),
 *                    count uint, hash bytes(16)}]
 *   digest           dbs [same as hello]
 *   changes          db, since bytes(12), limit uint, ?filter {?paths [text], ?query map}
 *   changes_reply    changes [{id, revs [rev], deleted bool, hlc bytes(12)}], last bytes(12),
 *                    pending uint (nonzero: more changes may follow)
 *   revsdiff         db, docs [{id, revs [rev]}]
 *   revsdiff_reply   docs [{id, missing [rev], ancestors [rev]}]
 *   get_revs         db, docs [{id, revs [rev]}], have [digest], data bool (false: stubs only)
 *   get_revs_reply   docs [{id, rev, ?missing true | deleted bool, body map, start uint,
 *                    ids [hash], atts [{name, type, digest, length, revpos, ?key bytes(32),
 *                    ?data bytes}]}], one per revision asked for, in the request's order.
 *                    A revision may come as {id, known true, deleted, body, start, ids, atts}:
 *                    no rev, and ids lists only the ancestors (gen start-1 down, may be
 *                    empty): the asker named that revision at that position, and restores
 *                    its hash from its request (version 2; saves a hash twice per doc)
 *   peers            peers [{node, addrs [text], hlc bytes(12), ?state uint (0..2)}],
 *                    ?mhash uint (the sender's membership hash, gossip.h)
 *   ping, pong       hlc bytes(12)
 *   error            code uint (a br_err value), reason text
 *   put_revs         db, docs [as in get_revs_reply, never missing]  (push to a peer)
 *   put_revs_reply   results [uint] (a br_err per doc, in order)
 *   local_get        db, id text (a local doc id without "_local/")
 *   local_get_reply  rev, body map  (not found: an error message with BR_ENOTFOUND)
 *                    (local docs' revs are "0-N", N decimal: they have no revision tree)
 *   local_put        db, id, ?rev (absent: create), body map
 *   local_put_reply  rev
 *   probe            node text (SWIM's indirect probe: can you reach this member?)
 *   probe_reply      alive bool
 *   z                z bytes: a zstd frame whose content is one other message (never a z),
 *                    with rid equal to the inner message's rid (see "Compression" below)
 * Messages up to "error" are version 1's first set; the rest were added later and only ever
 * appended (values are never renumbered).
 *
 * Compression (protocol version 2): br_wire_encode compresses every message whose plain
 * encoding is at least BR_WIRE_Z_MIN bytes with zstd (level BR_WIRE_Z_LEVEL, no dictionary)
 * and sends it as a `z` envelope when that is smaller; br_wire_decode opens envelopes
 * transparently, so callers never see type z (decoding gives the inner message, encoding a z
 * is BR_EINVAL). The envelope's frame must declare its content size, at most BR_WIRE_MAX_MSG,
 * be exactly one frame with no dictionary, and decompress to exactly that size; anything else
 * (a decompression bomb, a truncated or corrupt frame, trailing bytes) is BR_EPROTO before or
 * instead of allocating past the declared size. Each thread keeps one compression and one
 * decompression context, made on first use and freed when the thread exits.
 * Thread: any; nothing here keeps state. */
#ifndef BARREL_WIRE_H
#define BARREL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrel/buf.h"
#include "barrel/err.h"
#include "barrel/hlc.h"
#include "barrel/rev.h"
#include "barrel/store.h"

#define BR_WIRE_VERSION 2                 /* 2: z envelopes */
#define BR_WIRE_MAX_MSG (16u << 20)       /* bytes of one message, encoded or decoded */
#define BR_WIRE_MAX_ITEMS 10000           /* elements of any one list (changes, docs, revs, ids) */
#define BR_WIRE_MAX_TEXT 1024             /* ids, names, digests, reasons, paths, addresses */
#define BR_WIRE_MAX_TYPE_TEXT 255         /* attachment content types */
#define BR_WIRE_MAX_NODE 128              /* node ids */
#define BR_WIRE_ATT_INLINE_MAX (8u << 20) /* inline attachment bytes a get_revs_reply carries */
#define BR_WIRE_Z_MIN 512                 /* plain bytes from which a message is compressed */
#define BR_WIRE_Z_LEVEL 1                 /* zstd level */
/* Nesting: bodies and queries at most BR_CBOR_MAX_DEPTH (64, cbor.h); the message frame itself
 * is at most 4 levels deep. */

enum br_wire_type {
    BR_WIRE_HELLO = 1,
    BR_WIRE_DIGEST,
    BR_WIRE_CHANGES,
    BR_WIRE_CHANGES_REPLY,
    BR_WIRE_REVSDIFF,
    BR_WIRE_REVSDIFF_REPLY,
    BR_WIRE_GET_REVS,
    BR_WIRE_GET_REVS_REPLY,
    BR_WIRE_PEERS,
    BR_WIRE_PING,
    BR_WIRE_PONG,
    BR_WIRE_ERROR,
    BR_WIRE_PUT_REVS,
    BR_WIRE_PUT_REVS_REPLY,
    BR_WIRE_LOCAL_GET,
    BR_WIRE_LOCAL_GET_REPLY,
    BR_WIRE_LOCAL_PUT,
    BR_WIRE_LOCAL_PUT_REPLY,
    BR_WIRE_PROBE,
    BR_WIRE_PROBE_REPLY,
    BR_WIRE_Z, /* an envelope: never the type of a decoded message, never encoded directly */
};
/* "hello", "changes_reply", ...; NULL for a value outside the enum. */
const char *br_wire_type_name(enum br_wire_type t);

/* An arena: many allocations released at once. A zeroed struct is an empty arena. */
typedef struct br_wire_arena {
    struct br_wire_block *head;
} br_wire_arena;
void *br_wire_alloc(br_wire_arena *a, size_t n); /* zeroed, 16-aligned; NULL on ENOMEM */
void *br_wire_memdup(br_wire_arena *a, const void *p, size_t n);
char *br_wire_strndup(br_wire_arena *a, const char *s, size_t n); /* adds a NUL */
void br_wire_arena_fini(br_wire_arena *a); /* frees everything; a is empty again */
/* Move every allocation of src into dst (src is empty after): what a remote endpoint does to
 * hand a decoded reply's contents to its caller without copying. */
void br_wire_arena_move(br_wire_arena *dst, br_wire_arena *src);

struct br_wire_dbdigest {
    const char *name;
    struct br_db_digest digest;
};

/* A filter run at the source: path patterns and/or a query (AND). */
struct br_wire_filter {
    const char *const *paths;
    size_t n_paths;
    const uint8_t *query; /* CBOR map of a barrel query spec ({"where": ...}), or NULL */
    size_t query_len;
};

/* One entry of a changes reply: every leaf of the document (winner first). */
struct br_wire_change {
    const char *id;
    size_t id_len;
    struct br_rev *revs;
    size_t n_revs;
    bool deleted; /* the winner is a tombstone */
    struct br_hlc seq;
};

/* A document and some of its revisions (revsdiff and get_revs requests). */
struct br_wire_docrevs {
    const char *id;
    size_t id_len;
    const struct br_rev *revs;
    size_t n_revs;
};

struct br_wire_diff {
    const char *id;
    size_t id_len;
    struct br_rev *missing;
    size_t n_missing;
    struct br_rev *ancestors; /* possible_ancestors */
    size_t n_ancestors;
};

/* An attachment of a revision: a stub, with its data when the asker lacked it. */
struct br_wire_att {
    const char *name;
    const char *content_type;
    const char *digest; /* "md5-<base64>" */
    uint64_t length;
    uint64_t revpos;
    bool has_key;
    uint8_t key[32]; /* content key (BLAKE2b-256 of the data), when known */
    bool has_data;
    const uint8_t *data;
    size_t data_len; /* == length when has_data */
};

/* One revision of a document with its history (get_revs reply, and what a target writes with
 * new_edits=false). `missing`: the source does not hold that revision (nothing else is set).
 * `rev_known` (get_revs replies only): the asker named this revision, so the encoder sends it
 * without its hash. A source sets it with rev and history whole; decoding gives rev with only
 * its generation (hash_len 0) and history holding the ancestors only (history[0] is the
 * parent; n_history may be 0), which the asker completes from its request. put_revs and the
 * store ignore the flag and need the whole form. */
struct br_wire_revdoc {
    const char *id;
    size_t id_len;
    struct br_rev rev;
    bool missing;
    bool rev_known;
    bool deleted;
    const uint8_t *body; /* CBOR map */
    size_t body_len;
    struct br_rev *history; /* newest first; history[0] == rev */
    size_t n_history;
    struct br_wire_att *atts;
    size_t n_atts;
};

/* A member of the mesh as gossip carries it (gossip.h): hlc is its incarnation, the HLC at
 * which it last declared itself alive; state is 0 alive, 1 suspect, 2 dead (absent: alive). */
struct br_wire_peer {
    const char *node;
    const char *const *addrs;
    size_t n_addrs;
    struct br_hlc hlc;
    uint64_t state;
};

struct br_wire_msg {
    enum br_wire_type type;
    uint64_t rid;
    union {
        struct {
            uint64_t version;
            const char *node;
            struct br_hlc hlc;
            struct br_wire_dbdigest *dbs;
            size_t n_dbs;
        } hello;
        struct {
            struct br_wire_dbdigest *dbs;
            size_t n_dbs;
        } digest;
        struct {
            const char *db;
            struct br_hlc since;
            uint64_t limit;
            bool has_filter;
            struct br_wire_filter filter;
        } changes;
        struct {
            struct br_wire_change *changes;
            size_t n;
            struct br_hlc last;
            uint64_t pending;
        } changes_reply;
        struct {
            const char *db;
            struct br_wire_docrevs *docs;
            size_t n;
        } revsdiff;
        struct {
            struct br_wire_diff *docs;
            size_t n;
        } revsdiff_reply;
        struct {
            const char *db;
            struct br_wire_docrevs *docs;
            size_t n;
            const char *const *have; /* digests the asker holds */
            size_t n_have;
            bool data;
        } get_revs;
        struct {
            struct br_wire_revdoc *docs;
            size_t n;
        } get_revs_reply;
        struct {
            struct br_wire_peer *peers;
            size_t n;
            uint64_t mhash; /* the sender's membership hash (0: not given) */
        } peers;
        struct {
            const char *node; /* probe: is this member reachable from you? */
        } probe;
        struct {
            bool alive;
        } probe_reply;
        struct {
            struct br_hlc hlc;
        } ping; /* also pong */
        struct {
            uint64_t code;
            const char *reason;
        } error;
        struct {
            const char *db;
            struct br_wire_revdoc *docs;
            size_t n;
        } put_revs;
        struct {
            uint64_t *results; /* br_err values */
            size_t n;
        } put_revs_reply;
        struct {
            const char *db;
            const char *id;
            bool has_rev; /* local_put only: false to create */
            struct br_rev rev;
            const uint8_t *body; /* local_put: CBOR map */
            size_t body_len;
        } local; /* local_get and local_put */
        struct {
            struct br_rev rev;
            const uint8_t *body; /* local_get_reply only: CBOR map */
            size_t body_len;
        } local_reply; /* local_get_reply and local_put_reply */
    } u;
    br_wire_arena arena; /* owns the decoded contents */
};

/* Append the encoding of m to out, compressed in a z envelope when it is at least BR_WIRE_Z_MIN
 * bytes and that saves space (out's max bounds the result; a plain encoding past out's max or
 * BR_WIRE_MAX_MSG is BR_ETOOBIG). BR_EINVAL for a message the decoder would refuse (unknown
 * type or z, over a limit, a body that is not a map); out is then unchanged. Bodies and queries
 * are copied as given. The output is deterministic: equal messages encode to equal bytes. */
BR_NODISCARD br_err br_wire_encode(const struct br_wire_msg *m, br_buf *out, struct br_errbuf *eb);

/* Decode one message of untrusted bytes, opening a z envelope (the result is the inner message).
 * On success *out is a new message (caller frees with br_wire_msg_free); on error *out is
 * untouched and eb says why. Errors: BR_ETOOBIG (n past BR_WIRE_MAX_MSG), BR_EPROTO (anything
 * malformed, see the top of this file; a bad envelope too), BR_ENOMEM. If
 * the bytes carry a request id before the error, *rid_out (may be NULL) receives it, so the
 * caller can answer with an error message naming the request; otherwise it gets 0. */
BR_NODISCARD br_err br_wire_decode(const uint8_t *p, size_t n, struct br_wire_msg **out,
                                   uint64_t *rid_out, struct br_errbuf *eb);
/* The plain encoding of m, never compressed (for tests and tools that inspect the bytes). */
BR_NODISCARD br_err br_wire_encode_plain(const struct br_wire_msg *m, br_buf *out,
                                         struct br_errbuf *eb);
void br_wire_msg_free(struct br_wire_msg *m); /* NULL is a no-op */

#endif
