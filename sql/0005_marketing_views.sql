-- 0005_marketing_views: deduplicated ad statistics, costs, ROMI and data freshness.
--
-- Full outer combinations (sales with spend) are written as UNION ALL + GROUP BY
-- instead of FULL JOIN: ClickHouse 18.16 has no FULL JOIN ... ON, and the
-- result of FULL JOIN USING depends on join_use_nulls. The UNION form gives the
-- same rows on every version and setting.

CREATE VIEW IF NOT EXISTS zakaz.v_vk_ads_latest AS
SELECT
    stat_date,
    account_id,
    campaign_id,
    ad_group_id,
    ad_id,
    campaign_name,
    impressions,
    clicks,
    spent,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_content,
    utm_term,
    utm_city_raw AS utm_city,
    coalesce(nullIf(city_canon, ''), utm_city_raw) AS city,
    utm_day,
    utm_month,
    loaded_at,
    last_ver
FROM
(
    SELECT
        stat_date,
        account_id,
        campaign_id,
        ad_group_id,
        ad_id,
        argMax(campaign_name, _ver)     AS campaign_name,
        argMax(impressions, _ver)       AS impressions,
        argMax(clicks, _ver)            AS clicks,
        argMax(spent, _ver)             AS spent,
        argMax(utm_source, _ver)        AS utm_source,
        argMax(utm_medium, _ver)        AS utm_medium,
        argMax(utm_campaign, _ver)      AS utm_campaign,
        argMax(utm_content, _ver)       AS utm_content,
        argMax(utm_term, _ver)          AS utm_term,
        argMax(utm_city, _ver)          AS utm_city_raw,
        lowerUTF8(argMax(utm_city, _ver)) AS city_key,
        argMax(utm_day, _ver)           AS utm_day,
        argMax(utm_month, _ver)         AS utm_month,
        max(_loaded_at)                 AS loaded_at,
        max(_ver)                       AS last_ver
    FROM zakaz.fact_vk_ads_daily
    GROUP BY stat_date, account_id, campaign_id, ad_group_id, ad_id
)
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) USING (city_key);

CREATE VIEW IF NOT EXISTS zakaz.v_direct_latest AS
SELECT
    stat_date,
    account_login,
    campaign_id,
    campaign_name,
    ad_group_id,
    ad_id,
    impressions,
    clicks,
    cost,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_content,
    utm_term,
    utm_city_raw AS utm_city,
    coalesce(nullIf(city_canon, ''), utm_city_raw) AS city,
    utm_day,
    utm_month,
    loaded_at,
    last_ver
FROM
(
    SELECT
        stat_date,
        account_login,
        campaign_id,
        ad_group_id,
        ad_id,
        argMax(campaign_name, _ver)     AS campaign_name,
        argMax(impressions, _ver)       AS impressions,
        argMax(clicks, _ver)            AS clicks,
        argMax(cost, _ver)              AS cost,
        argMax(utm_source, _ver)        AS utm_source,
        argMax(utm_medium, _ver)        AS utm_medium,
        argMax(utm_campaign, _ver)      AS utm_campaign,
        argMax(utm_content, _ver)       AS utm_content,
        argMax(utm_term, _ver)          AS utm_term,
        argMax(utm_city, _ver)          AS utm_city_raw,
        lowerUTF8(argMax(utm_city, _ver)) AS city_key,
        argMax(utm_day, _ver)           AS utm_day,
        argMax(utm_month, _ver)         AS utm_month,
        max(_loaded_at)                 AS loaded_at,
        max(_ver)                       AS last_ver
    FROM zakaz.fact_direct_daily
    GROUP BY stat_date, account_login, campaign_id, ad_group_id, ad_id
)
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) USING (city_key);

-- Spend per day, source (vk_ads or direct) and UTM.
CREATE VIEW IF NOT EXISTS zakaz.v_marketing_costs_daily AS
SELECT
    d,
    source,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_content,
    utm_term,
    sum(imp)     AS impressions,
    sum(clk)     AS clicks,
    sum(amount)  AS spend
FROM
(
    SELECT
        stat_date                 AS d,
        'vk_ads'                  AS source,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_content,
        utm_term,
        impressions               AS imp,
        clicks                    AS clk,
        toDecimal128(spent, 2)    AS amount
    FROM zakaz.v_vk_ads_latest
    UNION ALL
    SELECT
        stat_date,
        'direct',
        utm_source,
        utm_medium,
        utm_campaign,
        utm_content,
        utm_term,
        impressions,
        clicks,
        toDecimal128(cost, 2)
    FROM zakaz.v_direct_latest
)
GROUP BY d, source, utm_source, utm_medium, utm_campaign, utm_content, utm_term;

-- Per day: sales revenue (v_sales_latest, net of refunded tickets) and total spend.
-- romi = net_revenue / spend_total, NULL when there is no spend.
CREATE VIEW IF NOT EXISTS zakaz.v_marketing_daily AS
SELECT
    d,
    net_revenue,
    spend_total,
    if(spend_total > 0, round(toFloat64(net_revenue) / toFloat64(spend_total), 4), NULL) AS romi
FROM
(
    SELECT
        d,
        sum(rev)   AS net_revenue,
        sum(spd)   AS spend_total
    FROM
    (
        SELECT event_date AS d, revenue AS rev, toDecimal128(0, 2) AS spd FROM zakaz.v_sales_latest
        UNION ALL
        SELECT d, toDecimal128(0, 2), spend FROM zakaz.v_marketing_costs_daily
    )
    GROUP BY d
);

-- Last 30 days including today.
CREATE VIEW IF NOT EXISTS zakaz.v_romi_kpi AS
SELECT
    d,
    net_revenue,
    spend_total,
    romi,
    multiIf(isNull(romi), 'red', romi > 1.5, 'green', romi >= 1, 'yellow', 'red') AS romi_status
FROM zakaz.v_marketing_daily
WHERE d >= today() - 29;

-- Sales (QTickets API, by order UTM) against spend (VK + Direct, by ad UTM) on
-- date and the five UTM fields. UTM values are compared lower-cased, an empty
-- utm_source is shown as unknown. roas = revenue / spend, NULL when no spend.
CREATE VIEW IF NOT EXISTS zakaz.v_romi_daily AS
SELECT
    d,
    if(k_source = '', 'unknown', k_source) AS utm_source,
    k_medium    AS utm_medium,
    k_campaign  AS utm_campaign,
    k_content   AS utm_content,
    k_term      AS utm_term,
    revenue,
    tickets_sold,
    spend,
    if(spend > 0, round(toFloat64(revenue) / toFloat64(spend), 4), NULL) AS roas
FROM
(
    SELECT
        d,
        k_source,
        k_medium,
        k_campaign,
        k_content,
        k_term,
        sum(rev)    AS revenue,
        sum(tix)    AS tickets_sold,
        sum(spd)    AS spend
    FROM
    (
        SELECT
            sales_date                  AS d,
            lowerUTF8(utm_source)       AS k_source,
            lowerUTF8(utm_medium)       AS k_medium,
            lowerUTF8(utm_campaign)     AS k_campaign,
            lowerUTF8(utm_content)      AS k_content,
            lowerUTF8(utm_term)         AS k_term,
            toDecimal128(revenue, 2)    AS rev,
            toInt64(tickets_sold)       AS tix,
            toDecimal128(0, 2)          AS spd
        FROM zakaz.fact_qtickets_sales_utm_daily
        UNION ALL
        SELECT
            d,
            lowerUTF8(utm_source),
            lowerUTF8(utm_medium),
            lowerUTF8(utm_campaign),
            lowerUTF8(utm_content),
            lowerUTF8(utm_term),
            toDecimal128(0, 2),
            toInt64(0),
            spend
        FROM zakaz.v_marketing_costs_daily
    )
    GROUP BY d, k_source, k_medium, k_campaign, k_content, k_term
);

-- Freshness per source. latest_date is NULL and days_behind 9999 when a source
-- has no rows at all. days_behind = today() - latest_date (Moscow dates).
-- qtickets_sales: paid, not deleted API orders by payment date.
CREATE VIEW IF NOT EXISTS zakaz.v_data_freshness AS
SELECT
    source,
    if(total_rows = 0, NULL, latest) AS latest_date,
    if(total_rows = 0, toInt32(9999), toInt32(today() - latest)) AS days_behind,
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

-- Same shape for the Gmail backup channel (kept out of v_data_freshness because
-- the channel is off by default and would always look stale).
CREATE VIEW IF NOT EXISTS zakaz.v_data_freshness_gmail AS
SELECT
    'qtickets_gmail' AS source,
    if(total_rows = 0, NULL, latest) AS latest_date,
    if(total_rows = 0, toInt32(9999), toInt32(today() - latest)) AS days_behind,
    total_rows
FROM
(
    SELECT max(event_date) AS latest, count() AS total_rows FROM zakaz.v_qtickets_gmail_latest
);
