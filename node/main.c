/* main.c — the barrel program: everything happens in br_cli_run. */
#include <stdio.h>

#include "barrel/cli.h"

int main(int argc, char **argv)
{
    return br_cli_run(argc, argv, stdin, stdout, stderr);
}
