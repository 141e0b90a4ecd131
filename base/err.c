/* err.c — the error string table. */
#include "barrel/err.h"

#include <stdio.h>

static const struct {
    const char *name;
    const char *text;
} table[BR_ERR_COUNT] = {
    [BR_OK] = {"ok", "success"},
    [BR_ENOMEM] = {"enomem", "out of memory"},
    [BR_EINVAL] = {"einval", "invalid argument"},
    [BR_ENOTFOUND] = {"enotfound", "not found"},
    [BR_ECONFLICT] = {"econflict", "document update conflict"},
    [BR_EEXIST] = {"eexist", "already exists"},
    [BR_EPROTO] = {"eproto", "malformed data"},
    [BR_ECRYPTO] = {"ecrypto", "cryptographic check failed"},
    [BR_ESTORE] = {"estore", "storage failure"},
    [BR_ECLOSED] = {"eclosed", "closed"},
    [BR_ETIMEDOUT] = {"etimedout", "timed out"},
    [BR_ETOOBIG] = {"etoobig", "too large"},
    [BR_EIO] = {"eio", "i/o error"},
    [BR_EBUSY] = {"ebusy", "resource busy"},
    [BR_ECLOCK] = {"eclock", "clock out of range"},
    [BR_ENOCONFLICT] = {"enoconflict", "document has no conflicts"},
    [BR_EBADREV] = {"ebadrev", "invalid revision"},
    [BR_EBADNAME] = {"ebadname", "invalid name"},
    [BR_EWOULDBLOCK] = {"ewouldblock", "would block"},
};

const char *br_strerror(br_err e)
{
    if ((unsigned)e >= BR_ERR_COUNT || !table[e].text)
        return "unknown error";
    return table[e].text;
}

const char *br_errname(br_err e)
{
    if ((unsigned)e >= BR_ERR_COUNT || !table[e].name)
        return "eunknown";
    return table[e].name;
}

void br_errbuf_set(struct br_errbuf *eb, const char *fmt, ...)
{
    if (!eb)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(eb->msg, sizeof eb->msg, fmt, ap);
    va_end(ap);
}

br_err br_fail(struct br_errbuf *eb, br_err e, const char *fmt, ...)
{
    if (eb) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(eb->msg, sizeof eb->msg, fmt, ap);
        va_end(ap);
    }
    return e;
}
