/* clickhouse.c — placeholder being replaced by the real client (sinks, spool, run log). */
#include "clickhouse.h"
#include <lauxlib.h>
#include <stdlib.h>

void zh_ch_init(zh_host *h) { (void)h; }
void zh_ch_shutdown(zh_host *h) { (void)h; }
void zh_ch_load_env(zh_host *h) { (void)h; }
const char *zh_ch_database(zh_host *h) { (void)h; return "zakaz"; }
void zh_ch_set_dry_run(zh_host *h, zh_group *g, bool dry) { (void)h; (void)g; (void)dry; }
void zh_ch_group_finish(zh_host *h, zh_group *g, void (*done)(void *ud), void *ud) { (void)h; (void)g; done(ud); }
uint64_t zh_ch_group_rows(zh_host *h, zh_group *g) { (void)h; (void)g; return 0; }
uint64_t zh_ch_group_spooled(zh_host *h, zh_group *g) { (void)h; (void)g; return 0; }
void zh_ch_group_tables_json(zh_host *h, zh_group *g, zh_buf *out) { (void)h; (void)g; zh_buf_adds(out, "{}"); }
void zh_ch_group_print_dry_run(zh_host *h, zh_group *g) { (void)h; (void)g; }
void zh_ch_record_run(zh_host *h, const zh_run_record *r, void (*done)(void *ud, const char *err), void *ud) { (void)h; (void)r; done(ud, NULL); }
int zh_ch_exec_sync(zh_host *h, const char *sql, zh_buf *out, char **err) { (void)h; (void)sql; (void)out; *err = NULL; return -1; }
int zh_open_ch(lua_State *L) { lua_newtable(L); return 1; }
