/* migrate.c — owns `zhost migrate`: numbered, forward-only SQL migrations from sql/ applied in
 * order, each once, recorded in <db>.schema_migrations.
 *
 * File format: sql/NNNN_name.sql; statements end with ';' at the end of a line (outside quotes);
 * whole-line `--` comments are dropped; `zakaz.` and `bi.` qualifiers are replaced with the
 * configured database names (CLICKHOUSE_DB, CLICKHOUSE_BI_DB). A file already applied is never
 * run again; if it changed since, --status says so. */
#include "clickhouse.h"
#include "commands.h"
#include "host.h"
#include "log.h"
#include "secrets.h"
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct migration {
    unsigned version;
    char *name, *path;
    char checksum[17];
    bool applied;
    char applied_sum[64];
} migration;

static void fnv_hex(const char *s, size_t n, char out[17]) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static int cmp_mig(const void *a, const void *b) {
    const migration *x = a, *y = b;
    return x->version < y->version ? -1 : x->version > y->version;
}

static int list_migrations(const char *dir, migration **out, char **err) {
    DIR *d = opendir(dir);
    if (!d) {
        zh_buf b;
        zh_buf_init(&b);
        zh_buf_printf(&b, "%s: %s", dir, strerror(errno));
        *err = b.data;
        return -1;
    }
    int n = 0;
    *out = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        size_t l = strlen(nm);
        if (l < 9 || strcmp(nm + l - 4, ".sql") != 0) continue;
        if (!(nm[0] >= '0' && nm[0] <= '9')) continue;
        unsigned v = (unsigned)strtoul(nm, NULL, 10);
        *out = zh_xrealloc(*out, (size_t)(n + 1) * sizeof **out);
        migration *m = &(*out)[n++];
        memset(m, 0, sizeof *m);
        m->version = v;
        m->name = zh_xstrndup(nm, l - 4);
        zh_buf p;
        zh_buf_init(&p);
        zh_buf_printf(&p, "%s/%s", dir, nm);
        m->path = p.data;
        size_t len;
        char *text = zh_read_file(m->path, 0, &len);
        if (text) fnv_hex(text, len, m->checksum);
        free(text);
    }
    closedir(d);
    qsort(*out, (size_t)n, sizeof **out, cmp_mig);
    for (int i = 1; i < n; i++) {
        if ((*out)[i].version == (*out)[i - 1].version) {
            zh_buf b;
            zh_buf_init(&b);
            zh_buf_printf(&b, "two migrations with number %u: %s and %s", (*out)[i].version, (*out)[i - 1].name, (*out)[i].name);
            *err = b.data;
            return -1;
        }
    }
    return n;
}

/* Splits at ';' that ends a line outside quotes; drops whole-line -- comments. */
static int split_statements(const char *text, char ***out) {
    int n = 0;
    *out = NULL;
    zh_buf cur;
    zh_buf_init(&cur);
    const char *p = text;
    char quote = 0;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *s = p;
        while (s < p + len && (*s == ' ' || *s == '\t')) s++;
        bool comment = !quote && s + 1 < p + len && s[0] == '-' && s[1] == '-';
        if (!comment) {
            for (size_t i = 0; i < len; i++) {
                char c = p[i];
                if (quote) {
                    if (c == '\\') { i++; continue; }
                    if (c == quote) quote = 0;
                } else if (c == '\'' || c == '"' || c == '`') {
                    quote = c;
                }
            }
            zh_buf_add(&cur, p, len);
            zh_buf_addc(&cur, '\n');
            const char *e = p + len;
            while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
            if (!quote && e > p && e[-1] == ';') {
                /* drop the ';' and surrounding space */
                while (cur.len && (cur.data[cur.len - 1] == '\n' || cur.data[cur.len - 1] == ' ' || cur.data[cur.len - 1] == '\r' || cur.data[cur.len - 1] == '\t')) cur.len--;
                if (cur.len && cur.data[cur.len - 1] == ';') cur.len--;
                cur.data[cur.len] = 0;
                const char *t = cur.data;
                while (*t == ' ' || *t == '\n' || *t == '\t' || *t == '\r') t++;
                if (*t) {
                    *out = zh_xrealloc(*out, (size_t)(n + 1) * sizeof **out);
                    (*out)[n++] = zh_xstrdup(t);
                }
                cur.len = 0;
            }
        }
        p += len + (eol ? 1 : 0);
    }
    const char *t = cur.data ? cur.data : "";
    while (*t == ' ' || *t == '\n' || *t == '\t' || *t == '\r') t++;
    if (*t) {
        *out = zh_xrealloc(*out, (size_t)(n + 1) * sizeof **out);
        (*out)[n++] = zh_xstrdup(t);
    }
    zh_buf_free(&cur);
    return n;
}

static void free_migs(migration *m, int n) {
    for (int i = 0; i < n; i++) {
        free(m[i].name);
        free(m[i].path);
    }
    free(m);
}

int zh_cmd_migrate(int argc, char **argv) {
    const char *secrets = NULL, *sqldir = NULL, *v;
    bool status = false;
    for (int i = 1; i < argc; i++) {
        if ((v = zh_opt_value(argc, argv, &i, "--secrets"))) secrets = v;
        else if ((v = zh_opt_value(argc, argv, &i, "--sql"))) sqldir = v;
        else if (!strcmp(argv[i], "--status")) status = true;
        else {
            fprintf(stderr, "usage: zhost migrate [--status] [--sql DIR] [--secrets DIR]\n");
            return 2;
        }
    }
    if (!sqldir) sqldir = getenv("ZHOST_SQL_DIR");
    /* From a checkout ./sql; on an installed system the migrations cmake --install put in place. */
    if (!sqldir) sqldir = access("sql", R_OK) == 0 ? "sql" : ZHOST_DATADIR "/sql";
    char *err = NULL;
    migration *migs;
    int n = list_migrations(sqldir, &migs, &err);
    if (n < 0) {
        fprintf(stderr, "zhost migrate: %s\n", err);
        free(err);
        return 1;
    }
    zh_host_opts ho = {.secrets_dir = zh_secrets_dir(secrets)};
    zh_host *h = zh_host_new(&ho);
    if (!h) {
        free_migs(migs, n);
        return 1;
    }
    const char *db = zh_ch_database(h);
    int rc = 0;
    zh_buf sql, out;
    zh_buf_init(&sql);
    zh_buf_init(&out);
    const char *setup[] = {
        "CREATE DATABASE IF NOT EXISTS %s",
        "CREATE DATABASE IF NOT EXISTS %s",
        "CREATE TABLE IF NOT EXISTS %s.schema_migrations (version UInt32, name String, checksum String, "
        "applied_at DateTime) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version", /* as in 0001 */
    };
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (status && i < 2) continue;
        sql.len = 0;
        zh_buf_printf(&sql, setup[i], i == 1 ? zh_ch_bi_database(h) : db);
        if (status) break;
        if (zh_ch_exec_sync_db(h, NULL, sql.data, NULL, &err) != 0) {
            fprintf(stderr, "zhost migrate: %s\n", err);
            free(err);
            rc = 1;
        }
    }
    if (rc == 0) {
        sql.len = 0;
        zh_buf_printf(&sql, "SELECT version, checksum FROM %s.schema_migrations FORMAT TabSeparated", db);
        /* --status on a fresh server has no schema_migrations yet: everything is pending. Any other
         * failure (down, wrong password) must not be reported as "0 applied, all pending". */
        int code = 0;
        if (zh_ch_exec_sync_code(h, sql.data, &out, &code, &err) != 0) {
            if (!status || (code != 60 && code != 81)) { /* UNKNOWN_TABLE, UNKNOWN_DATABASE */
                fprintf(stderr, "zhost migrate: %s\n", err);
                rc = 1;
            }
            free(err);
        } else {
            const char *p = out.data ? out.data : "";
            while (*p) {
                unsigned ver = (unsigned)strtoul(p, NULL, 10);
                const char *tab = strchr(p, '\t');
                const char *nl = strchr(p, '\n');
                for (int i = 0; i < n; i++) {
                    if (migs[i].version == ver) {
                        migs[i].applied = true;
                        if (tab && nl && nl > tab) snprintf(migs[i].applied_sum, sizeof migs[i].applied_sum, "%.*s", (int)(nl - tab - 1), tab + 1);
                    }
                }
                if (!nl) break;
                p = nl + 1;
            }
        }
    }
    if (rc == 0 && !status) {
        /* 0004-0007 join subqueries without aliases, which servers since 20.3 refuse at CREATE VIEW
         * (joined_subquery_requires_alias; the analyzer of 24.3+ too). Applied files cannot change,
         * so on such a server they are applied with the check off and 0008 re-creates those views
         * with aliases in the same run. 18.16 has no such setting and would refuse it by name. */
        out.len = 0;
        if (zh_ch_exec_sync(h, "SELECT count() FROM system.settings WHERE name = 'joined_subquery_requires_alias'",
                            &out, &err) != 0) {
            fprintf(stderr, "zhost migrate: %s\n", err);
            free(err);
            rc = 1;
        } else if (out.data && out.data[0] == '1') {
            zh_ch_set_url_setting(h, "joined_subquery_requires_alias", "0");
        }
    }
    if (status && rc == 0) {
        int pending = 0;
        for (int i = 0; i < n; i++) {
            const char *state = migs[i].applied ? (strcmp(migs[i].applied_sum, migs[i].checksum) ? "applied (file changed since)" : "applied") : "pending";
            if (!migs[i].applied) pending++;
            printf("%04u  %-40s %s\n", migs[i].version, migs[i].name, state);
        }
        printf("%d applied, %d pending (database %s)\n", n - pending, pending, db);
    } else if (rc == 0) {
        int applied = 0;
        for (int i = 0; i < n && rc == 0; i++) {
            if (migs[i].applied) continue;
            size_t len;
            char *text = zh_read_file(migs[i].path, 0, &len);
            if (!text) {
                fprintf(stderr, "zhost migrate: cannot read %s\n", migs[i].path);
                rc = 1;
                break;
            }
            char **stmts;
            int ns = split_statements(text, &stmts);
            free(text);
            for (int s = 0; s < ns; s++) {
                if (rc == 0) {
                    char *q = zh_ch_substitute_db(h, stmts[s]);
                    if (zh_ch_exec_sync(h, q, NULL, &err) != 0) {
                        fprintf(stderr, "zhost migrate: %s, statement %d: %s\n", migs[i].path, s + 1, err);
                        free(err);
                        rc = 1;
                    }
                    free(q);
                }
                free(stmts[s]);
            }
            free(stmts);
            if (rc) break;
            sql.len = 0;
            zh_buf_printf(&sql, "INSERT INTO %s.schema_migrations (version, name, checksum, applied_at) VALUES (%u, '%s', '%s', now())",
                          db, migs[i].version, migs[i].name, migs[i].checksum);
            if (zh_ch_exec_sync(h, sql.data, NULL, &err) != 0) {
                fprintf(stderr, "zhost migrate: recording %s: %s\n", migs[i].name, err);
                free(err);
                rc = 1;
                break;
            }
            printf("applied %s\n", migs[i].name);
            applied++;
        }
        if (rc == 0) printf("%d migrations applied, schema is up to date (database %s)\n", applied, db);
    }
    zh_buf_free(&sql);
    zh_buf_free(&out);
    free_migs(migs, n);
    zh_host_free(h);
    return rc;
}
