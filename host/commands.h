/* commands.h — the CLI commands; each lives in the file of the subsystem it drives. */
#ifndef ZH_COMMANDS_H
#define ZH_COMMANDS_H

typedef struct zh_command {
    const char *name;
    int (*fn)(int argc, char **argv); /* argv[0] is the command name */
    const char *usage;
    const char *help;
} zh_command;

int zh_cmd_run(int argc, char **argv);    /* main.c */
int zh_cmd_check(int argc, char **argv);  /* main.c */
int zh_cmd_repl(int argc, char **argv);   /* repl.c */
int zh_cmd_spool(int argc, char **argv);  /* spool.c */
int zh_cmd_migrate(int argc, char **argv);/* migrate.c */
int zh_cmd_auth(int argc, char **argv);   /* oauth2.c */
int zh_cmd_backup(int argc, char **argv); /* backup.c */
int zh_cmd_serve(int argc, char **argv);  /* serve.c */
int zh_cmd_status(int argc, char **argv); /* control.c: the operator commands talk to zhost serve */
int zh_cmd_logs(int argc, char **argv);
int zh_cmd_enable(int argc, char **argv);
int zh_cmd_disable(int argc, char **argv);
int zh_cmd_trigger(int argc, char **argv);
int zh_cmd_restart(int argc, char **argv);

/* Shared option parsing: returns the value of --name VALUE / --name=VALUE at argv[*i] (advancing
 * *i), or NULL when argv[*i] is not that option. Exits with usage error when the value is missing. */
const char *zh_opt_value(int argc, char **argv, int *i, const char *name);

#endif
