-- 0006_bi_views: DataLens views in the bi database, fed from the live zakaz views.
-- The applier creates the bi database (CLICKHOUSE_BI_DB) before applying migrations.

-- Sales per day, city and event (QTickets API, Gmail rows for dates without API data).
CREATE VIEW IF NOT EXISTS bi.v_sales_daily AS
SELECT
    event_date           AS d,
    city,
    event_id,
    event_name,
    sum(tickets_sold)    AS tickets_sold,
    sum(revenue)         AS revenue,
    sum(refunds)         AS refunds,
    any(currency)        AS currency,
    max(_loaded_at)      AS _loaded_at
FROM zakaz.v_sales_combined_daily
GROUP BY event_date, city, event_id, event_name;

-- VK Ads per day and city (city from utm_content, canonicalised by dim_city_alias).
CREATE VIEW IF NOT EXISTS bi.v_vk_ads_daily AS
SELECT
    stat_date            AS d,
    city,
    sum(impressions)     AS impressions,
    sum(clicks)          AS clicks,
    sum(spent)           AS spend,
    max(loaded_at)       AS _loaded_at
FROM zakaz.v_vk_ads_latest
GROUP BY stat_date, city;

-- Sales and ad statistics (VK Ads + Yandex Direct) per day and city. Each side is
-- aggregated to (d, city) before they are combined, so spend is counted once per
-- day and city, not once per event. roas = revenue / spend, cpc = spend / clicks,
-- cpt = spend / tickets_sold, each NULL when its divisor is 0.
CREATE VIEW IF NOT EXISTS bi.v_marketing_roi_daily AS
SELECT
    d,
    city,
    revenue,
    tickets_sold,
    impressions,
    clicks,
    spend,
    if(spend > 0, round(toFloat64(revenue) / toFloat64(spend), 4), NULL)    AS roas,
    if(clicks > 0, round(toFloat64(spend) / clicks, 2), NULL)              AS cpc,
    if(tickets_sold > 0, round(toFloat64(spend) / tickets_sold, 2), NULL)  AS cpt,
    toDateTime(last_ts)                                                    AS _loaded_at
FROM
(
    SELECT
        d,
        city,
        sum(rev)    AS revenue,
        sum(tix)    AS tickets_sold,
        sum(imp)    AS impressions,
        sum(clk)    AS clicks,
        sum(spd)    AS spend,
        max(ts)     AS last_ts
    FROM
    (
        SELECT
            event_date                        AS d,
            city,
            revenue                           AS rev,
            tickets_sold                      AS tix,
            toUInt64(0)                       AS imp,
            toUInt64(0)                       AS clk,
            toDecimal128(0, 2)                AS spd,
            toUInt32(_loaded_at)              AS ts
        FROM zakaz.v_sales_combined_daily
        UNION ALL
        SELECT
            stat_date,
            city,
            toDecimal128(0, 2),
            toInt64(0),
            impressions,
            clicks,
            toDecimal128(spent, 2),
            toUInt32(loaded_at)
        FROM zakaz.v_vk_ads_latest
        UNION ALL
        SELECT
            stat_date,
            city,
            toDecimal128(0, 2),
            toInt64(0),
            impressions,
            clicks,
            toDecimal128(cost, 2),
            toUInt32(loaded_at)
        FROM zakaz.v_direct_latest
    )
    GROUP BY d, city
);

-- One row: when sales and ad data were last written and how many hours ago.
-- loaded_at_* is NULL and freshness_hours_* 9999 when nothing was ever loaded.
CREATE VIEW IF NOT EXISTS bi.v_ops_freshness AS
SELECT
    today()                                                                   AS d,
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
