/* log.h — one line per event on stderr: time, level, job, message, key=value fields.
 * Secret values registered with zh_log_secret() are replaced by "***" in every line. */
#ifndef ZH_LOG_H
#define ZH_LOG_H

#include "zh.h"

enum zh_log_level { ZH_LOG_DEBUG = 0, ZH_LOG_INFO, ZH_LOG_WARN, ZH_LOG_ERROR };

void zh_log_set_level(int level);
int zh_log_get_level(void);
/* Also append every line to this file (NULL to stop); the daemon uses it for `zhost logs`. */
void zh_log_set_file(const char *path);
void zh_log_secret(const char *value);
/* A setting KEY=value (secrets file, environment): registered as a secret unless its name says it is
 * an address, a user or database name, a switch or a size (zh_log_key_is_public); an address still
 * has its password and query values registered. */
void zh_log_setting(const char *key, const char *value);
bool zh_log_key_is_public(const char *key);
/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int zh_log_parse_level(const char *s);

void zh_log(int level, const char *job, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Writes a complete, already formatted line body (after time/level/job). */
void zh_log_line(int level, const char *job, const char *body);
/* Redacts registered secrets in place into out. */
void zh_log_redact(zh_buf *out, const char *text);
/* A malloc'd copy of text with registered secrets replaced by "***", line breaks kept: for what
 * leaves the process other than log lines (a run's message in meta_job_runs, stderr, tracebacks). */
char *zh_log_redacted(const char *text);

#define ZH_DEBUG(job, ...) zh_log(ZH_LOG_DEBUG, job, __VA_ARGS__)
#define ZH_INFO(job, ...) zh_log(ZH_LOG_INFO, job, __VA_ARGS__)
#define ZH_WARN(job, ...) zh_log(ZH_LOG_WARN, job, __VA_ARGS__)
#define ZH_ERROR(job, ...) zh_log(ZH_LOG_ERROR, job, __VA_ARGS__)

/* Lua module `log`: log.debug/info/warn/error(msg [, fields]). */
int zh_open_log(lua_State *L);

#endif
