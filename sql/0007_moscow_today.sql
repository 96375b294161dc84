-- 0007_moscow_today: the views that compare dates with today take the date in Moscow,
-- toDate(now(), Europe/Moscow), instead of today(), the date in the ClickHouse server time zone.
-- On a server in UTC that lagged Moscow by three hours after midnight, so freshness (days_behind and
-- the alerts on it) and the last-N-days views were a day off from 00:00 to 03:00 MSK.
-- Same definitions otherwise (0004 to 0006). 18.16 has no DROP VIEW and no CREATE OR REPLACE VIEW,
-- so each view is dropped with DROP TABLE IF EXISTS and created again right after.

DROP TABLE IF EXISTS zakaz.v_sales_14d;
CREATE VIEW IF NOT EXISTS zakaz.v_sales_14d AS
SELECT
    event_date           AS d,
    sum(tickets_sold)    AS tickets,
    sum(revenue)         AS net_revenue,
    sum(refunds)         AS refunds
FROM zakaz.v_sales_latest
WHERE event_date >= toDate(now(), 'Europe/Moscow') - 13
GROUP BY event_date;

DROP TABLE IF EXISTS zakaz.v_sales_by_city;
CREATE VIEW IF NOT EXISTS zakaz.v_sales_by_city AS
SELECT
    city,
    total_tickets,
    net_revenue,
    refunds,
    days_with_sales,
    round(total_tickets / days_with_sales, 2) AS avg_tickets_per_day
FROM
(
    SELECT
        city,
        sum(tickets_sold)        AS total_tickets,
        sum(revenue)             AS net_revenue,
        sum(refunds)             AS refunds,
        uniqExact(event_date)    AS days_with_sales
    FROM zakaz.v_sales_latest
    WHERE event_date >= toDate(now(), 'Europe/Moscow') - 29
    GROUP BY city
);

DROP TABLE IF EXISTS zakaz.v_qtickets_sales_dashboard;
CREATE VIEW IF NOT EXISTS zakaz.v_qtickets_sales_dashboard AS
SELECT
    event_id,
    if(ifNull(ev_name, '') = '', s_name, ev_name)   AS event_name,
    if(ifNull(ev_city, '') = '', s_city, ev_city)   AS city,
    tickets_sold_today,
    revenue_today,
    tickets_sold_14d,
    revenue_14d,
    tickets_total,
    tickets_left,
    inventory_updated_at,
    start_date,
    end_date
FROM
(
    SELECT
        event_id,
        any(s_name0)                                   AS s_name,
        any(s_city0)                                   AS s_city,
        sum(t_today)                                   AS tickets_sold_today,
        sum(r_today)                                   AS revenue_today,
        sum(t_14)                                      AS tickets_sold_14d,
        sum(r_14)                                      AS revenue_14d
    FROM
    (
        SELECT
            event_id,
            event_name                                         AS s_name0,
            city                                               AS s_city0,
            if(sales_date = toDate(now(), 'Europe/Moscow'), tickets_sold, toUInt64(0))  AS t_today,
            if(sales_date = toDate(now(), 'Europe/Moscow'), revenue, toDecimal128(0, 2)) AS r_today,
            tickets_sold                                       AS t_14,
            revenue                                            AS r_14
        FROM zakaz.fact_qtickets_sales_daily
        WHERE sales_date >= toDate(now(), 'Europe/Moscow') - 13
        UNION ALL
        SELECT
            event_id,
            event_name,
            city,
            toUInt64(0),
            toDecimal128(0, 2),
            toUInt64(0),
            toDecimal128(0, 2)
        FROM zakaz.v_qtickets_events_latest
        WHERE is_deleted = 0
    )
    GROUP BY event_id
)
LEFT JOIN
(
    SELECT
        event_id,
        event_name             AS ev_name,
        city                   AS ev_city,
        tickets_total,
        tickets_left,
        inventory_loaded_at    AS inventory_updated_at,
        start_date,
        end_date
    FROM zakaz.v_qtickets_events_latest
) USING (event_id);

DROP TABLE IF EXISTS zakaz.v_romi_kpi;
CREATE VIEW IF NOT EXISTS zakaz.v_romi_kpi AS
SELECT
    d,
    net_revenue,
    spend_total,
    romi,
    multiIf(isNull(romi), 'red', romi > 1.5, 'green', romi >= 1, 'yellow', 'red') AS romi_status
FROM zakaz.v_marketing_daily
WHERE d >= toDate(now(), 'Europe/Moscow') - 29;

DROP TABLE IF EXISTS zakaz.v_data_freshness;
CREATE VIEW IF NOT EXISTS zakaz.v_data_freshness AS
SELECT
    source,
    if(total_rows = 0, NULL, latest) AS latest_date,
    if(total_rows = 0, toInt32(9999), toInt32(toDate(now(), 'Europe/Moscow') - latest)) AS days_behind,
    total_rows
FROM
(
    SELECT 'qtickets_sales' AS source, max(toDate(sale_ts)) AS latest, count() AS total_rows
    FROM zakaz.v_qtickets_orders_latest
    WHERE payed = 1 AND isNull(deleted_at)
    UNION ALL
    SELECT 'vk_ads', max(stat_date), count() FROM zakaz.v_vk_ads_latest
    UNION ALL
    SELECT 'direct', max(stat_date), count() FROM zakaz.v_direct_latest
);

DROP TABLE IF EXISTS zakaz.v_data_freshness_gmail;
CREATE VIEW IF NOT EXISTS zakaz.v_data_freshness_gmail AS
SELECT
    'qtickets_gmail' AS source,
    if(total_rows = 0, NULL, latest) AS latest_date,
    if(total_rows = 0, toInt32(9999), toInt32(toDate(now(), 'Europe/Moscow') - latest)) AS days_behind,
    total_rows
FROM
(
    SELECT max(event_date) AS latest, count() AS total_rows FROM zakaz.v_qtickets_gmail_latest
);

DROP TABLE IF EXISTS bi.v_ops_freshness;
CREATE VIEW IF NOT EXISTS bi.v_ops_freshness AS
SELECT
    toDate(now(), 'Europe/Moscow')                                                                   AS d,
    'all'                                                                     AS source,
    if(ts_sales = 0, NULL, toDateTime(ts_sales))                              AS loaded_at_sales,
    if(ts_vk = 0, NULL, toDateTime(ts_vk))                                    AS loaded_at_vk,
    if(ts_direct = 0, NULL, toDateTime(ts_direct))                            AS loaded_at_direct,
    if(ts_sales = 0, toInt64(9999), intDiv(toInt64(toUInt32(now())) - ts_sales, 3600))   AS freshness_hours_sales,
    if(ts_vk = 0, toInt64(9999), intDiv(toInt64(toUInt32(now())) - ts_vk, 3600))         AS freshness_hours_vk,
    if(ts_direct = 0, toInt64(9999), intDiv(toInt64(toUInt32(now())) - ts_direct, 3600)) AS freshness_hours_direct
FROM
(
    SELECT
        maxIf(ts, src = 'sales')    AS ts_sales,
        maxIf(ts, src = 'vk')       AS ts_vk,
        maxIf(ts, src = 'direct')   AS ts_direct
    FROM
    (
        SELECT 'sales' AS src, toInt64(toUInt32(max(_loaded_at))) AS ts FROM zakaz.stg_qtickets_api_orders_raw
        UNION ALL
        SELECT 'sales', toInt64(toUInt32(max(_loaded_at))) FROM zakaz.stg_qtickets_api_baskets_raw
        UNION ALL
        SELECT 'sales', toInt64(toUInt32(max(_loaded_at))) FROM zakaz.dim_events
        UNION ALL
        SELECT 'vk', toInt64(toUInt32(max(_loaded_at))) FROM zakaz.fact_vk_ads_daily
        UNION ALL
        SELECT 'direct', toInt64(toUInt32(max(_loaded_at))) FROM zakaz.fact_direct_daily
    )
);
