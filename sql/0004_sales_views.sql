-- 0004_sales_views: deduplicated QTickets and Gmail data and the sales views.
--
-- Rules (docs/schema.md, section Sales):
--   * every staging table is read through argMax(col, _ver) GROUP BY its key,
--     Nullable columns through tupleElement(argMax(tuple(col), _ver), 1) because
--     argMax skips NULL arguments and would resurrect an older non-NULL value.
--   * a sale is a basket of a paid (payed = 1), not deleted order.
--   * a basket is live unless it has deleted_at or refunded_at.
--   * tickets = sum of quantity of live baskets, revenue = sum of price * quantity
--     of live baskets, refunds = sum of refunded_amount of refunded baskets
--     (price * quantity when refunded_amount is NULL).
--   * the sales date is the Moscow date of the order payment (sale_ts).
--   * Gmail rows count only for dates without any QTickets API sales line.
--   * one JOIN per SELECT (ClickHouse 18.16), no WITH subqueries, no FINAL.

CREATE VIEW IF NOT EXISTS zakaz.v_city_alias AS
SELECT
    alias,
    argMax(city, _ver) AS city
FROM zakaz.dim_city_alias
GROUP BY alias;

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
)
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) USING (city_key);

-- Inventory per event (the latest known tickets_total and tickets_left).
CREATE VIEW IF NOT EXISTS zakaz.fact_qtickets_inventory_latest AS
SELECT
    event_id,
    event_name,
    city,
    tickets_total,
    tickets_left,
    inventory_loaded_at AS snapshot_ts
FROM zakaz.v_qtickets_events_latest
WHERE isNotNull(tickets_total) OR isNotNull(tickets_left);

CREATE VIEW IF NOT EXISTS zakaz.v_qtickets_orders_latest AS
SELECT
    order_id,
    argMax(event_id, _ver)                               AS event_id,
    argMax(payed, _ver)                                  AS payed,
    tupleElement(argMax(tuple(payed_at), _ver), 1)       AS payed_at,
    argMax(created_at, _ver)                             AS created_at,
    tupleElement(argMax(tuple(deleted_at), _ver), 1)     AS deleted_at,
    argMax(sale_ts, _ver)                                AS sale_ts,
    argMax(price, _ver)                                  AS price,
    argMax(original_price, _ver)                         AS original_price,
    argMax(currency, _ver)                               AS currency,
    argMax(utm_source, _ver)                             AS utm_source,
    argMax(utm_medium, _ver)                             AS utm_medium,
    argMax(utm_campaign, _ver)                           AS utm_campaign,
    argMax(utm_content, _ver)                            AS utm_content,
    argMax(utm_term, _ver)                               AS utm_term,
    argMax(client_id, _ver)                              AS client_id,
    argMax(promo_code_id, _ver)                          AS promo_code_id,
    argMax(baskets_total, _ver)                          AS baskets_total,
    argMax(baskets_live, _ver)                           AS baskets_live,
    max(_loaded_at)                                      AS loaded_at,
    max(_ver)                                            AS last_ver
FROM zakaz.stg_qtickets_api_orders_raw
GROUP BY order_id;

CREATE VIEW IF NOT EXISTS zakaz.v_qtickets_baskets_latest AS
SELECT
    basket_id,
    argMax(order_id, _ver)                                   AS order_id,
    argMax(event_id, _ver)                                   AS event_id,
    argMax(show_id, _ver)                                    AS show_id,
    argMax(price, _ver)                                      AS price,
    argMax(original_price, _ver)                             AS original_price,
    argMax(quantity, _ver)                                   AS quantity,
    tupleElement(argMax(tuple(deleted_at), _ver), 1)         AS deleted_at,
    tupleElement(argMax(tuple(refunded_at), _ver), 1)        AS refunded_at,
    tupleElement(argMax(tuple(refunded_amount), _ver), 1)    AS refunded_amount,
    argMax(sale_ts, _ver)                                    AS sale_ts,
    max(_loaded_at)                                          AS loaded_at,
    max(_ver)                                                AS last_ver
FROM zakaz.stg_qtickets_api_baskets_raw
GROUP BY basket_id;

-- One row per basket that counts (live or refunded) of a paid, not deleted order.
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
    )
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
    ) USING (order_id)
)
LEFT JOIN
(
    SELECT event_id, event_name AS ev_name, city AS ev_city FROM zakaz.v_qtickets_events_latest
) USING (event_id);

-- Daily facts, always consistent with the deduplicated staging (views, not tables).
CREATE VIEW IF NOT EXISTS zakaz.fact_qtickets_sales_daily AS
SELECT
    sales_date,
    event_id,
    city,
    event_name,
    sum(tickets)            AS tickets_sold,
    sum(revenue)            AS revenue,
    sum(refunded_tickets)   AS tickets_refunded,
    sum(refunds)            AS refunds,
    any(currency)           AS currency,
    max(loaded_at)          AS _loaded_at,
    max(last_ver)           AS _ver
FROM zakaz.v_qtickets_sales_lines
GROUP BY sales_date, event_id, city, event_name;

CREATE VIEW IF NOT EXISTS zakaz.fact_qtickets_sales_utm_daily AS
SELECT
    sales_date,
    event_id,
    city,
    event_name,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_content,
    utm_term,
    sum(tickets)            AS tickets_sold,
    sum(revenue)            AS revenue,
    sum(refunded_tickets)   AS tickets_refunded,
    sum(refunds)            AS refunds,
    any(currency)           AS currency,
    max(loaded_at)          AS _loaded_at,
    max(last_ver)           AS _ver
FROM zakaz.v_qtickets_sales_lines
GROUP BY sales_date, event_id, city, event_name, utm_source, utm_medium, utm_campaign, utm_content, utm_term;

CREATE VIEW IF NOT EXISTS zakaz.v_qtickets_sales_utm_daily AS
SELECT
    sales_date AS d,
    event_id,
    city,
    event_name,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_content,
    utm_term,
    if(utm_source = '', 'unknown', utm_source) AS utm_group,
    tickets_sold,
    revenue,
    refunds
FROM zakaz.fact_qtickets_sales_utm_daily;

-- Gmail rows deduplicated per key (latest message wins), city canonicalised.
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
)
LEFT JOIN
(
    SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
) USING (city_key);

-- API daily facts plus Gmail rows for dates the API has no sales line for.
-- Granularity (event_date, city, event_id, event_name), column source tells the channel.
CREATE VIEW IF NOT EXISTS zakaz.v_sales_combined_daily AS
SELECT
    sales_date                       AS event_date,
    city,
    event_id,
    event_name,
    toInt64(tickets_sold)            AS tickets_sold,
    toDecimal128(revenue, 2)         AS revenue,
    toDecimal128(refunds, 2)         AS refunds,
    currency,
    'qtickets_api'                   AS source,
    _loaded_at
FROM zakaz.fact_qtickets_sales_daily
UNION ALL
SELECT
    event_date,
    city,
    event_id,
    event_name,
    toInt64(tickets_sold),
    toDecimal128(revenue, 2),
    toDecimal128(refunds, 2),
    currency,
    'qtickets_gmail',
    loaded_at
FROM zakaz.v_qtickets_gmail_latest
WHERE event_date NOT IN (SELECT sales_date FROM zakaz.v_qtickets_sales_lines);

-- One row per (event_date, city, event_name). Two events with the same name in the
-- same city on one day are summed, event_id is then the smallest of them.
-- revenue already excludes refunded tickets, refunds is the money returned for them.
CREATE VIEW IF NOT EXISTS zakaz.v_sales_latest AS
SELECT
    event_date,
    city,
    event_id,
    event_name,
    tickets_sold,
    revenue,
    refunds,
    refunds AS refunds_amount,
    currency
FROM
(
    SELECT
        event_date,
        city,
        event_name,
        min(event_id)        AS event_id,
        sum(tickets_sold)    AS tickets_sold,
        sum(revenue)         AS revenue,
        sum(refunds)         AS refunds,
        any(currency)        AS currency
    FROM zakaz.v_sales_combined_daily
    GROUP BY event_date, city, event_name
);

-- Last 14 days including today. net_revenue = revenue (refunded tickets are
-- already out of revenue, subtracting refunds again would count them twice).
CREATE VIEW IF NOT EXISTS zakaz.v_sales_14d AS
SELECT
    event_date           AS d,
    sum(tickets_sold)    AS tickets,
    sum(revenue)         AS net_revenue,
    sum(refunds)         AS refunds
FROM zakaz.v_sales_latest
WHERE event_date >= today() - 13
GROUP BY event_date;

-- Last 30 days including today, per city.
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
    WHERE event_date >= today() - 29
    GROUP BY city
);

-- Per event: today, last 14 days (including today), latest inventory, dates.
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
            if(sales_date = today(), tickets_sold, toUInt64(0))  AS t_today,
            if(sales_date = today(), revenue, toDecimal128(0, 2)) AS r_today,
            tickets_sold                                       AS t_14,
            revenue                                            AS r_14
        FROM zakaz.fact_qtickets_sales_daily
        WHERE sales_date >= today() - 13
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

-- Plan vs fact per (sales_date, event_id, city), a full outer combination made
-- with UNION ALL and GROUP BY (identical on every ClickHouse version and join_use_nulls).
-- diff_*_pct = (fact - plan) / plan, NULL when the plan is 0.
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
        )
        LEFT JOIN
        (
            SELECT alias AS city_key, city AS city_canon FROM zakaz.v_city_alias
        ) USING (city_key)
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
