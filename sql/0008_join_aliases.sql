-- 0008_join_aliases: every subquery in a JOIN gets an alias, so the views run on current ClickHouse.
-- Since 20.3 joined_subquery_requires_alias is on by default (ClickHouse PR 9274, backward incompatible):
-- a JOIN whose left or right side is a subquery without an alias fails with code 206 ALIAS_REQUIRED,
-- on the old query analyzer when the view is read, on the new one (24.3 and later) already at CREATE VIEW.
-- 18.16 has no such setting and gave no error, so only 18.16 ever ran these views.
-- Same definitions otherwise (0004, 0005, and 0007 for the dashboard). The aliases are never used
-- to qualify a column: the output columns, their types and the rows stay what they were.
-- Each view is dropped with DROP TABLE IF EXISTS and created again right after (see 0007),
-- dependencies first, because the new analyzer checks the views a CREATE VIEW reads.

DROP TABLE IF EXISTS zakaz.v_qtickets_events_latest;
CREATE VIEW IF NOT EXISTS zakaz.v_qtickets_events_latest AS
SELECT
    event_id,
    event_name,
    coalesce(nullIf(city_canon, ''), city_raw) AS city,
    city_raw,
    city_id,
    place_name,
    start_date,
    end_date,
    inv_total AS tickets_total,
    inv_left  AS tickets_left,
    is_active,
    is_deleted,
    currency,
    if(isNull(inv_total) AND isNull(inv_left), NULL, latest_loaded_at) AS inventory_loaded_at,
    loaded_at,
    last_ver
FROM
(
    SELECT
        event_id,
        argMax(event_name, _ver)                                       AS event_name,
        argMax(city, _ver)                                             AS city_raw,
        lowerUTF8(argMax(city, _ver))                                  AS city_key,
        argMax(city_id, _ver)                                          AS city_id,
        argMax(place_name, _ver)                                       AS place_name,
        tupleElement(argMax(tuple(start_date), _ver), 1)               AS start_date,
        tupleElement(argMax(tuple(end_date), _ver), 1)                 AS end_date,
        tupleElement(argMax(tuple(tickets_total), _ver), 1)            AS inv_total,
        tupleElement(argMax(tuple(tickets_left), _ver), 1)             AS inv_left,
        argMax(is_active, _ver)                                        AS is_active,
        argMax(is_deleted, _ver)                                       AS is_deleted,
        argMax(currency, _ver)                                         AS currency,
        argMax(_loaded_at, _ver)                                       AS latest_loaded_at,
        max(_loaded_at)                                                AS loaded_at,
        max(_ver)                                                      AS last_ver
    FROM zakaz.dim_events
    GROUP BY event_id
) AS ev_agg
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) AS city_map USING (city_key);

DROP TABLE IF EXISTS zakaz.v_qtickets_sales_lines;
CREATE VIEW IF NOT EXISTS zakaz.v_qtickets_sales_lines AS
SELECT
    sales_date,
    event_id,
    ifNull(ev_name, '')     AS event_name,
    ifNull(ev_city, '')     AS city,
    currency,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_content,
    utm_term,
    order_id,
    basket_id,
    tickets,
    revenue,
    refunded_tickets,
    refunds,
    loaded_at,
    last_ver
FROM
(
    SELECT
        sales_date,
        event_id,
        currency,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_content,
        utm_term,
        order_id,
        basket_id,
        if(b_live, b_quantity, toUInt32(0))                                      AS tickets,
        if(b_live, b_price * b_quantity, toDecimal64(0, 2))                      AS revenue,
        if(b_refunded, b_quantity, toUInt32(0))                                  AS refunded_tickets,
        if(b_refunded, ifNull(b_refunded_amount, b_price * b_quantity), toDecimal64(0, 2)) AS refunds,
        greatest(b_loaded_at, o_loaded_at)                                       AS loaded_at,
        greatest(b_ver, o_ver)                                                   AS last_ver
    FROM
    (
        SELECT
            order_id,
            basket_id,
            price                                          AS b_price,
            quantity                                       AS b_quantity,
            refunded_amount                                AS b_refunded_amount,
            isNotNull(refunded_at)                         AS b_refunded,
            isNull(refunded_at) AND isNull(deleted_at)     AS b_live,
            loaded_at                                      AS b_loaded_at,
            last_ver                                       AS b_ver
        FROM zakaz.v_qtickets_baskets_latest
        WHERE isNotNull(refunded_at) OR isNull(deleted_at)
    ) AS bsk
    ALL INNER JOIN
    (
        SELECT
            order_id,
            event_id,
            toDate(sale_ts)  AS sales_date,
            currency,
            utm_source,
            utm_medium,
            utm_campaign,
            utm_content,
            utm_term,
            loaded_at        AS o_loaded_at,
            last_ver         AS o_ver
        FROM zakaz.v_qtickets_orders_latest
        WHERE payed = 1 AND isNull(deleted_at)
    ) AS ord USING (order_id)
) AS lines
LEFT JOIN
(
    SELECT event_id, event_name AS ev_name, city AS ev_city FROM zakaz.v_qtickets_events_latest
) AS evn USING (event_id);

DROP TABLE IF EXISTS zakaz.v_qtickets_gmail_latest;
CREATE VIEW IF NOT EXISTS zakaz.v_qtickets_gmail_latest AS
SELECT
    event_date,
    coalesce(nullIf(city_canon, ''), city_raw) AS city,
    event_id,
    event_name,
    tickets_sold,
    revenue,
    refunds,
    currency,
    src_msg_id,
    ingested_at,
    loaded_at,
    last_ver
FROM
(
    SELECT
        event_date,
        lowerUTF8(city)                AS city_key,
        event_name,
        event_id,
        argMax(city, _ver)             AS city_raw,
        argMax(tickets_sold, _ver)     AS tickets_sold,
        argMax(revenue, _ver)          AS revenue,
        argMax(refunds, _ver)          AS refunds,
        argMax(currency, _ver)         AS currency,
        argMax(src_msg_id, _ver)       AS src_msg_id,
        argMax(ingested_at, _ver)      AS ingested_at,
        max(_loaded_at)                AS loaded_at,
        max(_ver)                      AS last_ver
    FROM zakaz.stg_qtickets_sales_raw
    GROUP BY event_date, city_key, event_name, event_id
) AS gm_agg
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) AS city_map USING (city_key);

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
) AS sales14
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
) AS evinfo USING (event_id);

DROP TABLE IF EXISTS zakaz.v_plan_vs_fact;
CREATE VIEW IF NOT EXISTS zakaz.v_plan_vs_fact AS
SELECT
    sales_date,
    event_id,
    city,
    plan_tickets,
    plan_revenue,
    fact_tickets,
    fact_revenue,
    fact_tickets - plan_tickets                                                        AS diff_tickets,
    fact_revenue - plan_revenue                                                        AS diff_revenue,
    if(plan_tickets = 0, NULL, round((fact_tickets - plan_tickets) / plan_tickets, 4))  AS diff_tickets_pct,
    if(plan_revenue = 0, NULL, round((toFloat64(fact_revenue) - toFloat64(plan_revenue)) / toFloat64(plan_revenue), 4)) AS diff_revenue_pct
FROM
(
    SELECT
        sales_date,
        event_id,
        city,
        sum(p_tickets)   AS plan_tickets,
        sum(p_revenue)   AS plan_revenue,
        sum(f_tickets)   AS fact_tickets,
        sum(f_revenue)   AS fact_revenue
    FROM
    (
        SELECT
            sales_date,
            event_id,
            coalesce(nullIf(city_canon, ''), city_raw) AS city,
            toInt64(plan_tickets_v)                    AS p_tickets,
            toDecimal128(plan_revenue_v, 2)            AS p_revenue,
            toInt64(0)                                 AS f_tickets,
            toDecimal128(0, 2)                         AS f_revenue
        FROM
        (
            SELECT
                sales_date,
                city                              AS city_raw,
                lowerUTF8(city)                   AS city_key,
                event_id,
                argMax(plan_tickets, _ver)        AS plan_tickets_v,
                argMax(plan_revenue, _ver)        AS plan_revenue_v
            FROM zakaz.plan_sales
            GROUP BY sales_date, city, event_id
        ) AS plan_agg
        LEFT JOIN
        (
            SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
        ) AS city_map USING (city_key)
        UNION ALL
        SELECT
            event_date,
            event_id,
            city,
            toInt64(0),
            toDecimal128(0, 2),
            tickets_sold,
            revenue
        FROM zakaz.v_sales_combined_daily
    )
    GROUP BY sales_date, event_id, city
);

DROP TABLE IF EXISTS zakaz.v_vk_ads_latest;
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
) AS vk_agg
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) AS city_map USING (city_key);

DROP TABLE IF EXISTS zakaz.v_direct_latest;
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
) AS dr_agg
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) AS city_map USING (city_key);
