/* control.h — the daemon side of the operator channel: a unix socket in the state directory
 * (mode 0660) that `zhost status|logs|enable|disable|trigger|restart` talk to. */
#ifndef ZH_CONTROL_H
#define ZH_CONTROL_H

#include "serve.h"

typedef struct zh_control zh_control;

zh_control *zh_control_start(zh_serve *s, char **err);
/* Stops accepting; requests in progress are answered. */
void zh_control_stop(zh_control *c);
void zh_control_free(zh_control *c);

#endif
