/* cli_remote.h — the `barrel` subcommands against a running node (--url): the same commands,
 * arguments, JSON output and error lines as on a data directory (cli.c), over the node's
 * CouchDB-compatible HTTP API (httpc.h). Thread: any. */
#ifndef BARREL_NODE_CLI_REMOTE_H
#define BARREL_NODE_CLI_REMOTE_H

#include <stdio.h>

struct br_cli_remote {
    const char *url;      /* http://[user:pass@]host:port */
    const char *user;     /* --user, or NULL (then the URL's) */
    const char *password; /* for --user (BARREL_PASSWORD), or NULL */
    FILE *in, *out, *err;
};

/* Run argv[0] (a subcommand) with its arguments. Returns the exit code: 0, 1 when the node
 * refused or could not be reached, 2 for usage. */
int br_cli_remote_run(const struct br_cli_remote *r, int argc, char **argv);

#endif
