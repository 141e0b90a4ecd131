/* frame.c — secretstream framing of a link: seal and open frames, rekey, clean end.
 *
 * The wire rules are in barrel/frame.h. The struct holds both stream states and the direction
 * keys, so it lives in sodium_malloc memory, wiped on free. */
#include "barrel/frame.h"

#include <string.h>

#include <sodium.h>

#include "crypto_int.h"

_Static_assert(BR_FRAME_HEADER_BYTES == crypto_secretstream_xchacha20poly1305_HEADERBYTES,
               "secretstream header size");
_Static_assert(BR_FRAME_ABYTES == crypto_secretstream_xchacha20poly1305_ABYTES,
               "secretstream tag size");
_Static_assert(BR_FRAME_KEY_BYTES == crypto_secretstream_xchacha20poly1305_KEYBYTES,
               "secretstream key size");

enum rx_state { RX_FIRST, RX_OPEN, RX_DEAD, RX_DONE };

struct br_frame {
    crypto_secretstream_xchacha20poly1305_state tx, rx;
    uint8_t tx_key[BR_FRAME_KEY_BYTES], rx_key[BR_FRAME_KEY_BYTES];
    size_t max_plain;
    uint64_t rekey_every, sealed, opened;
    bool tx_started, tx_done, rekey_next;
    enum rx_state rx_state;
};

br_err br_frame_new(const uint8_t tx_key[BR_FRAME_KEY_BYTES],
                    const uint8_t rx_key[BR_FRAME_KEY_BYTES], const struct br_frame_opts *o,
                    br_frame **out)
{
    brc_init();
    size_t max = o && o->max_plain ? o->max_plain : BR_FRAME_DEFAULT_MAX;
    if (max > BR_FRAME_HARD_MAX)
        return BR_EINVAL;
    br_frame *f = sodium_malloc(sizeof *f);
    if (!f)
        return BR_ENOMEM;
    memset(f, 0, sizeof *f);
    memcpy(f->tx_key, tx_key, BR_FRAME_KEY_BYTES);
    memcpy(f->rx_key, rx_key, BR_FRAME_KEY_BYTES);
    f->max_plain = max;
    f->rekey_every = o && o->rekey_every ? o->rekey_every : BR_FRAME_REKEY_DEFAULT;
    f->rx_state = RX_FIRST;
    *out = f;
    return BR_OK;
}

void br_frame_free(br_frame *f)
{
    if (f)
        sodium_free(f);
}

void br_frame_rekey(br_frame *f)
{
    f->rekey_next = true;
}

bool br_frame_peer_finished(const br_frame *f)
{
    return f->rx_state == RX_DONE;
}

uint64_t br_frame_sealed(const br_frame *f)
{
    return f->sealed;
}

uint64_t br_frame_opened(const br_frame *f)
{
    return f->opened;
}

static br_err seal(br_frame *f, const uint8_t *msg, size_t len, br_buf *out, bool final)
{
    if (f->tx_done)
        return BR_ECLOSED;
    if (len > f->max_plain)
        return BR_ETOOBIG;
    size_t hdr = f->tx_started ? 0 : BR_FRAME_HEADER_BYTES;
    br_err e = br_buf_reserve(out, hdr + len + BR_FRAME_ABYTES);
    if (e)
        return e;
    uint8_t *p = out->data + out->len;
    if (!f->tx_started) {
        crypto_secretstream_xchacha20poly1305_init_push(&f->tx, p, f->tx_key);
        f->tx_started = true;
    }
    uint8_t tag = crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    if (final)
        tag = crypto_secretstream_xchacha20poly1305_TAG_FINAL;
    else if (f->rekey_next || (f->sealed + 1) % f->rekey_every == 0)
        tag = crypto_secretstream_xchacha20poly1305_TAG_REKEY;
    crypto_secretstream_xchacha20poly1305_push(&f->tx, p + hdr, NULL, msg, len, NULL, 0, tag);
    if (tag == crypto_secretstream_xchacha20poly1305_TAG_REKEY)
        f->rekey_next = false;
    out->len += hdr + len + BR_FRAME_ABYTES;
    out->data[out->len] = 0;
    f->sealed++;
    f->tx_done = final;
    return BR_OK;
}

br_err br_frame_seal(br_frame *f, const uint8_t *msg, size_t len, br_buf *out)
{
    return seal(f, msg, len, out, false);
}

br_err br_frame_seal_final(br_frame *f, const uint8_t *msg, size_t len, br_buf *out)
{
    return seal(f, msg, len, out, true);
}

static br_err die(br_frame *f, br_err e)
{
    f->rx_state = RX_DEAD;
    return e;
}

br_err br_frame_open(br_frame *f, const uint8_t *wire, size_t len, br_buf *out, bool *final)
{
    if (f->rx_state == RX_DEAD || f->rx_state == RX_DONE)
        return BR_ECLOSED;
    if (f->rx_state == RX_FIRST) {
        if (len < BR_FRAME_HEADER_BYTES)
            return die(f, BR_EPROTO);
        if (crypto_secretstream_xchacha20poly1305_init_pull(&f->rx, wire, f->rx_key) != 0)
            return die(f, BR_ECRYPTO);
        wire += BR_FRAME_HEADER_BYTES;
        len -= BR_FRAME_HEADER_BYTES;
        f->rx_state = RX_OPEN;
    }
    if (len < BR_FRAME_ABYTES || len - BR_FRAME_ABYTES > f->max_plain)
        return die(f, BR_EPROTO);
    size_t plen = len - BR_FRAME_ABYTES;
    br_err e = br_buf_reserve(out, plen);
    if (e)
        return die(f, e);
    unsigned long long got = 0;
    uint8_t tag = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(&f->rx, out->data + out->len, &got, &tag, wire,
                                                   len, NULL, 0) != 0)
        return die(f, BR_ECRYPTO);
    if (tag == crypto_secretstream_xchacha20poly1305_TAG_PUSH)
        return die(f, BR_EPROTO);
    out->len += (size_t)got;
    out->data[out->len] = 0;
    f->opened++;
    bool fin = tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL;
    if (fin)
        f->rx_state = RX_DONE;
    if (final)
        *final = fin;
    return BR_OK;
}
