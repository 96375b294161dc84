-- 0001_meta: migration bookkeeping, job runs, alerts, alert dedup state, backup runs.
--
-- Conventions for every migration file (see docs/schema.md):
--   * zakaz and bi are written as database qualifiers only, the applier rewrites them textually.
--   * one statement per chunk, a chunk ends with a line ending in a semicolon.
--   * comments are whole lines, without quotes or semicolons.
--   * everything is CREATE ... IF NOT EXISTS, nothing is ever dropped except views.
--   * timestamps that carry business meaning are DateTime in Europe/Moscow.

CREATE TABLE IF NOT EXISTS zakaz.schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version;

-- One row per state change of a run: the host writes status running at start
-- and a final row (success, error, interrupted) at the end, both with the same
-- run_id, job and started_at and a higher _ver for the later row.
CREATE TABLE IF NOT EXISTS zakaz.meta_job_runs_raw
(
    job            String,
    run_id         String,
    started_at     DateTime('Europe/Moscow'),
    finished_at    Nullable(DateTime('Europe/Moscow')),
    status         String,
    rows_processed UInt64,
    message        String,
    metrics        String,
    host           String,
    _ver           UInt64,
    _loaded_at     DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
PARTITION BY toYYYYMM(started_at)
ORDER BY run_id;

-- Exactly one row per run: the latest state by _ver.
-- Legacy status words are normalised: ok becomes success, failed becomes error.
CREATE VIEW IF NOT EXISTS zakaz.meta_job_runs AS
SELECT
    job,
    run_id,
    started_at,
    finished_at,
    multiIf(raw_status = 'ok', 'success', raw_status = 'failed', 'error', raw_status) AS status,
    rows_processed,
    message,
    metrics,
    host,
    last_ver AS _ver
FROM
(
    SELECT
        run_id,
        argMax(job, _ver)                                   AS job,
        argMax(started_at, _ver)                            AS started_at,
        tupleElement(argMax(tuple(finished_at), _ver), 1)   AS finished_at,
        argMax(status, _ver)                                AS raw_status,
        argMax(rows_processed, _ver)                        AS rows_processed,
        argMax(message, _ver)                               AS message,
        argMax(metrics, _ver)                               AS metrics,
        argMax(host, _ver)                                  AS host,
        max(_ver)                                           AS last_ver
    FROM zakaz.meta_job_runs_raw
    GROUP BY run_id
);

-- Alerts as sent. Append-only: one row per notification, never updated by
-- the engine. Identical replays (same created_at and alert_id) collapse on merge.
CREATE TABLE IF NOT EXISTS zakaz.alerts
(
    alert_id        String,
    created_at      DateTime('Europe/Moscow'),
    job             String,
    rule            String,
    subject         String,
    alert_type      String,
    title           String,
    message         String,
    details         String,
    channel         String,
    delivered       UInt8,
    acknowledged    UInt8,
    acknowledged_at Nullable(DateTime('Europe/Moscow')),
    acknowledged_by String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (created_at, alert_id);

-- Dedup state of the alert engine: one logical row per (rule, subject).
CREATE TABLE IF NOT EXISTS zakaz.alert_state
(
    rule          String,
    subject       String,
    state         String,
    severity      String,
    first_seen    DateTime('Europe/Moscow'),
    last_seen     DateTime('Europe/Moscow'),
    last_sent     Nullable(DateTime('Europe/Moscow')),
    sent_count    UInt32,
    resolved_at   Nullable(DateTime('Europe/Moscow')),
    last_alert_id String,
    fingerprint   String,
    details       String,
    _ver          UInt64,
    _loaded_at    DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
ORDER BY (rule, subject);

CREATE VIEW IF NOT EXISTS zakaz.v_alert_state AS
SELECT
    rule,
    subject,
    argMax(state, _ver)                                 AS state,
    argMax(severity, _ver)                              AS severity,
    argMax(first_seen, _ver)                            AS first_seen,
    argMax(last_seen, _ver)                             AS last_seen,
    tupleElement(argMax(tuple(last_sent), _ver), 1)     AS last_sent,
    argMax(sent_count, _ver)                            AS sent_count,
    tupleElement(argMax(tuple(resolved_at), _ver), 1)   AS resolved_at,
    argMax(last_alert_id, _ver)                         AS last_alert_id,
    argMax(fingerprint, _ver)                           AS fingerprint,
    argMax(details, _ver)                               AS details,
    max(_ver)                                           AS last_ver
FROM zakaz.alert_state
GROUP BY rule, subject;

-- Backups: a running row at start, then ok or fail (prune may later write deleted),
-- all with the same backup_name and a higher _ver.
CREATE TABLE IF NOT EXISTS zakaz.backup_runs
(
    ts          DateTime('Europe/Moscow'),
    backup_name String,
    mode        String,
    base_backup String,
    target      String,
    status      String,
    bytes       UInt64,
    duration_ms UInt64,
    details     String,
    error_msg   String,
    _ver        UInt64,
    _loaded_at  DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
PARTITION BY toYYYYMM(ts)
ORDER BY backup_name;

CREATE VIEW IF NOT EXISTS zakaz.v_backup_runs AS
SELECT
    backup_name,
    argMax(ts, _ver)          AS ts,
    argMax(mode, _ver)        AS mode,
    argMax(base_backup, _ver) AS base_backup,
    argMax(target, _ver)      AS target,
    argMax(status, _ver)      AS status,
    argMax(bytes, _ver)       AS bytes,
    argMax(duration_ms, _ver) AS duration_ms,
    argMax(details, _ver)     AS details,
    argMax(error_msg, _ver)   AS error_msg,
    max(_ver)                 AS last_ver
FROM zakaz.backup_runs
GROUP BY backup_name;
