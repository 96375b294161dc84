-- 0003_ads_staging: daily ad statistics of VK Ads and Yandex Direct.
--
-- One row per (day, account, campaign, ad group, ad). A level the report does
-- not break down is sent as id 0. Re-loading a day writes the same keys with a
-- higher _ver, views take argMax per key. Money in roubles, Decimal(18,2).
-- utm_city, utm_day, utm_month are parsed by the loader from utm_content
-- of the form city_dd_mm (empty and 0 when it does not parse).

CREATE TABLE IF NOT EXISTS zakaz.fact_vk_ads_daily
(
    stat_date     Date,
    account_id    UInt64,
    campaign_id   UInt64,
    ad_group_id   UInt64,
    ad_id         UInt64,
    campaign_name String,
    impressions   UInt64,
    clicks        UInt64,
    spent         Decimal(18, 2),
    utm_source    String,
    utm_medium    String,
    utm_campaign  String,
    utm_content   String,
    utm_term      String,
    utm_city      String,
    utm_day       UInt8,
    utm_month     UInt8,
    _ver          UInt64,
    _loaded_at    DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
PARTITION BY toYYYYMM(stat_date)
ORDER BY (stat_date, account_id, campaign_id, ad_group_id, ad_id);

CREATE TABLE IF NOT EXISTS zakaz.fact_direct_daily
(
    stat_date     Date,
    account_login String,
    campaign_id   UInt64,
    campaign_name String,
    ad_group_id   UInt64,
    ad_id         UInt64,
    impressions   UInt64,
    clicks        UInt64,
    cost          Decimal(18, 2),
    utm_source    String,
    utm_medium    String,
    utm_campaign  String,
    utm_content   String,
    utm_term      String,
    utm_city      String,
    utm_day       UInt8,
    utm_month     UInt8,
    _ver          UInt64,
    _loaded_at    DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
PARTITION BY toYYYYMM(stat_date)
ORDER BY (stat_date, account_login, campaign_id, ad_group_id, ad_id);
