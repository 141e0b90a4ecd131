/* testutil.h — helpers shared by the Criterion tests: temporary directories and log capture. */
#ifndef BARREL_TESTUTIL_H
#define BARREL_TESTUTIL_H

#include <stddef.h>

/* Create a fresh temporary directory (under $TMPDIR or /tmp); returns its path in a heap copy
 * that the caller owns and frees with free() (after its last use: keep it for the whole test).
 * Aborts the test on failure. */
char *tu_tmpdir(const char *tag);
/* Remove a directory tree (best effort). */
void tu_rmtree(const char *path);
/* Start capturing barrel logs into memory; tu_log_contains() searches them. */
void tu_log_capture(void);
int tu_log_contains(const char *needle);

#endif
