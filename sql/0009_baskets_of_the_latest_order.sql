-- 0009_baskets_of_the_latest_order: a basket counts only while the latest snapshot of its order lists it.
-- The loader writes all baskets of an order at one version per run. A basket that a later run no longer
-- finds in its order (QTickets drops it from the list, as with the PHP-keyed baskets of a filtered list)
-- kept its older row, which the view went on counting as a live sale for good. Now a basket whose last
-- version is older than the newest basket version of its order is left out. The baskets are compared with
-- each other, not with the order row, so a run stopped between the order and basket inserts (or with the
-- baskets in the spool) leaves the previous snapshot counting until the next run. Same as 0008 otherwise.

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
        FROM zakaz.v_qtickets_baskets_latest AS bl
        ALL INNER JOIN
        (
            SELECT order_id, max(last_ver) AS snap_ver FROM zakaz.v_qtickets_baskets_latest GROUP BY order_id
        ) AS snap USING (order_id)
        WHERE (isNotNull(refunded_at) OR isNull(deleted_at)) AND last_ver >= snap_ver
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
