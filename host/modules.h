/* modules.h — openers of the Lua modules the host registers (each lives in its own file). */
#ifndef ZH_MODULES_H
#define ZH_MODULES_H

#include <lua.h>

int zh_open_json(lua_State *L);   /* l_json.c */
int zh_open_http(lua_State *L);   /* l_http.c */
int zh_open_task(lua_State *L);   /* task.c */
int zh_open_log(lua_State *L);    /* log.c */
int zh_open_job(lua_State *L);    /* run.c */
int zh_open_time(lua_State *L);   /* l_time.c */
int zh_open_text(lua_State *L);   /* l_text.c */
int zh_open_ch(lua_State *L);     /* l_ch.c */
int zh_open_oauth2(lua_State *L); /* oauth2.c */
int zh_open_secrets(lua_State *L);/* secrets.c */
int zh_open_mail(lua_State *L);   /* l_mail.c */
int zh_open_fs(lua_State *L);     /* l_fs.c */

#endif
