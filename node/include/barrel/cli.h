/* cli.h — the `barrel` command line: subcommands that work on a data directory.
 *
 *   barrel [--data DIR] [--log-level L] db create|delete|list|info NAME
 *   barrel put DB ID [JSON|-]        barrel get DB ID [--rev R] [--revs] [--conflicts]
 *   barrel delete DB ID --rev R      barrel changes DB [--since S] [--limit N] [--all-docs]
 *   barrel revsdiff DB [JSON|-]      barrel bulk DB [JSON|-]     barrel all-docs DB [...]
 *
 * Output is JSON on `out`, one document per line; an error is one line on `err`
 * ("barrel: not_found: missing") and a non-zero exit: 1 for a failed operation, 2 for a usage
 * error. The default data directory is ./barrel-data. */
#ifndef BARREL_CLI_H
#define BARREL_CLI_H

#include <stdio.h>

/* Run one command line (argv[0] is the program name). Returns the process exit code.
 * Thread: one at a time (it sets the log level). */
int br_cli_run(int argc, char **argv, FILE *in, FILE *out, FILE *err);

#endif
