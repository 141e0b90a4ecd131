/* buf.h — a growable byte buffer with a hard maximum (curl's dynbuf).
 *
 * Anything filled from outside (network, client, disk) goes into a br_buf whose `max` bounds
 * it; appending past max fails with BR_ETOOBIG and leaves the buffer as it was. The buffer
 * owns `data`; it is always NUL-terminated one byte past `len` (not counted), so text can be
 * read as a C string. A zeroed struct with max set is a valid empty buffer. */
#ifndef BARREL_BUF_H
#define BARREL_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "barrel/err.h"

typedef struct br_buf {
    uint8_t *data; /* owned; NULL while empty and never grown */
    size_t len;
    size_t cap;
    size_t max; /* hard maximum of len; 0 means SIZE_MAX/2 */
} br_buf;

void br_buf_init(br_buf *b, size_t max);
void br_buf_fini(br_buf *b);  /* frees data; b can be reused after br_buf_init */
void br_buf_reset(br_buf *b); /* len = 0, keeps the memory */
BR_NODISCARD br_err br_buf_reserve(br_buf *b, size_t extra);
BR_NODISCARD br_err br_buf_append(br_buf *b, const void *p, size_t n);
BR_NODISCARD br_err br_buf_append_byte(br_buf *b, uint8_t c);
BR_NODISCARD br_err br_buf_append_str(br_buf *b, const char *s);
BR_NODISCARD br_err br_buf_printf(br_buf *b, const char *fmt, ...) BR_PRINTF(2, 3);
/* Hand the bytes to the caller (who frees them with br_free) and leave b empty. */
uint8_t *br_buf_steal(br_buf *b, size_t *len);

#endif
