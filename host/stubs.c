/* stubs.c — commands not built yet; each is replaced by its subsystem's file. */
#include "commands.h"
#include <stdio.h>
int zh_cmd_repl(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "zhost repl: not built yet\n"); return 1; }
