/* stubs.c — commands not built yet; each is replaced by its subsystem's file. */
#include "commands.h"
#include <stdio.h>
int zh_cmd_spool(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "zhost spool: not built yet\n"); return 1; }
int zh_cmd_migrate(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "zhost migrate: not built yet\n"); return 1; }
