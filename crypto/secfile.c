/* secfile.c — small secret files: created atomically with mode 0600, read with a permission
 * check. Used for the identity key and mesh key files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "barrel/alloc.h"

#include "crypto_int.h"

static void init_once(void)
{
    if (sodium_init() < 0)
        abort(); /* no usable libsodium: nothing safe to do */
}

void brc_init(void)
{
    init_once(); /* sodium_init is idempotent and thread-safe */
}

void brc_random(const struct br_env *env, void *buf, size_t n)
{
    brc_init();
    if (env)
        br_env_random(env, buf, n);
    else
        randombytes_buf(buf, n);
}

static br_err write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return BR_EIO;
        p += w;
        n -= (size_t)w;
    }
    return BR_OK;
}

/* fsync the directory holding path so a new name survives a crash. */
static br_err sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash ? br_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : br_strdup(".");
    if (!dir)
        return BR_ENOMEM;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    br_free(dir);
    if (fd < 0)
        return BR_EIO;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? BR_OK : BR_EIO;
}

br_err brc_secfile_write(const char *path, const uint8_t *data, size_t len, struct br_errbuf *eb)
{
    size_t plen = strlen(path);
    char *tmp = br_malloc(plen + sizeof ".tmp.XXXXXX");
    if (!tmp)
        return BR_ENOMEM;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    br_err e = BR_OK;
    int fd = mkstemp(tmp); /* mode 0600, O_EXCL */
    if (fd < 0) {
        e = br_fail(eb, BR_EIO, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, data, len) != BR_OK || fsync(fd) != 0) {
        e = br_fail(eb, BR_EIO, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) != 0) {
        e = br_fail(eb, BR_EIO, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (link(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        if (err == EEXIST)
            e = br_fail(eb, BR_EEXIST, "%s already exists", path);
        else
            e = br_fail(eb, BR_EIO, "cannot create %s: %s", path, strerror(err));
        goto out;
    }
    unlink(tmp);
    e = sync_parent(path);
    if (e)
        br_errbuf_set(eb, "cannot sync the directory of %s", path);
out:
    br_free(tmp);
    return e;
}

br_err brc_secfile_read(const char *path, const char *what, uint8_t *buf, size_t cap, size_t *len,
                        struct br_errbuf *eb)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return br_fail(eb, BR_ENOTFOUND, "%s %s does not exist", what, path);
        return br_fail(eb, BR_EIO, "cannot open %s %s: %s", what, path, strerror(errno));
    }
    br_err e = BR_OK;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        e = br_fail(eb, BR_EIO, "cannot stat %s %s: %s", what, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        e = br_fail(eb, BR_EINVAL, "%s %s is not a regular file", what, path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        e = br_fail(eb, BR_EINVAL,
                    "%s %s has mode %04o: refusing a secret readable by others "
                    "(chmod 600 %s)",
                    what, path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    if ((uintmax_t)st.st_size > cap) {
        e = br_fail(eb, BR_EPROTO, "%s %s is corrupt (%jd bytes, too large)", what, path,
                    (intmax_t)st.st_size);
        goto out;
    }
    size_t n = 0;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            e = br_fail(eb, BR_EIO, "cannot read %s %s: %s", what, path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *len = n;
out:
    close(fd);
    return e;
}
