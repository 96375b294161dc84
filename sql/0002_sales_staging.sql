-- 0002_sales_staging: QTickets API staging, events, Gmail backup staging,
-- sales plan and the city alias map.
--
-- Every table is ReplacingMergeTree(_ver) keyed by its natural key, _ver is a
-- per-run version (unix milliseconds of the run start, or of the source message
-- for Gmail). Views never rely on merges: they take argMax(..., _ver) per key.
-- Money is Decimal(18,2) (roubles with kopecks, exact).
-- _loaded_at is MATERIALIZED now(): loaders must NOT send it.

-- City alias map: lower-case spelling found in sources -> canonical city name.
CREATE TABLE IF NOT EXISTS zakaz.dim_city_alias
(
    alias String,
    city  String,
    _ver  UInt64
)
ENGINE = ReplacingMergeTree(_ver)
ORDER BY alias;

-- Curated seed with _ver 1, operators override a row by inserting it with a higher _ver.
INSERT INTO zakaz.dim_city_alias (alias, city, _ver) VALUES
('москва', 'Москва', 1), ('мск', 'Москва', 1), ('msk', 'Москва', 1), ('moscow', 'Москва', 1), ('moskva', 'Москва', 1),
('санкт-петербург', 'Санкт-Петербург', 1), ('петербург', 'Санкт-Петербург', 1), ('спб', 'Санкт-Петербург', 1), ('питер', 'Санкт-Петербург', 1),
('spb', 'Санкт-Петербург', 1), ('piter', 'Санкт-Петербург', 1), ('saint-petersburg', 'Санкт-Петербург', 1), ('sankt-peterburg', 'Санкт-Петербург', 1), ('st-petersburg', 'Санкт-Петербург', 1),
('екатеринбург', 'Екатеринбург', 1), ('екб', 'Екатеринбург', 1), ('ekb', 'Екатеринбург', 1), ('ekaterinburg', 'Екатеринбург', 1), ('yekaterinburg', 'Екатеринбург', 1),
('новосибирск', 'Новосибирск', 1), ('нск', 'Новосибирск', 1), ('nsk', 'Новосибирск', 1), ('novosibirsk', 'Новосибирск', 1),
('казань', 'Казань', 1), ('kazan', 'Казань', 1), ('kzn', 'Казань', 1),
('нижний новгород', 'Нижний Новгород', 1), ('нн', 'Нижний Новгород', 1), ('nnov', 'Нижний Новгород', 1), ('nn', 'Нижний Новгород', 1), ('nizhny-novgorod', 'Нижний Новгород', 1),
('краснодар', 'Краснодар', 1), ('krasnodar', 'Краснодар', 1), ('krd', 'Краснодар', 1),
('самара', 'Самара', 1), ('samara', 'Самара', 1),
('ростов-на-дону', 'Ростов-на-Дону', 1), ('ростов', 'Ростов-на-Дону', 1), ('rostov', 'Ростов-на-Дону', 1), ('rnd', 'Ростов-на-Дону', 1),
('челябинск', 'Челябинск', 1), ('chelyabinsk', 'Челябинск', 1), ('chel', 'Челябинск', 1),
('уфа', 'Уфа', 1), ('ufa', 'Уфа', 1),
('пермь', 'Пермь', 1), ('perm', 'Пермь', 1),
('красноярск', 'Красноярск', 1), ('krasnoyarsk', 'Красноярск', 1), ('krsk', 'Красноярск', 1),
('воронеж', 'Воронеж', 1), ('voronezh', 'Воронеж', 1), ('vrn', 'Воронеж', 1),
('волгоград', 'Волгоград', 1), ('volgograd', 'Волгоград', 1),
('омск', 'Омск', 1), ('omsk', 'Омск', 1),
('томск', 'Томск', 1), ('tomsk', 'Томск', 1),
('тюмень', 'Тюмень', 1), ('tyumen', 'Тюмень', 1);

-- Events (one row per QTickets event id). tickets_total and tickets_left are the
-- inventory known to the run that wrote the row, NULL when unknown. The latest row
-- wins for every column, NULL included: older rows vanish when parts merge, so a
-- view cannot fall back to them without depending on merges.
CREATE TABLE IF NOT EXISTS zakaz.dim_events
(
    event_id      String,
    event_name    String,
    city          String,
    city_id       String,
    place_name    String,
    start_date    Nullable(Date),
    end_date      Nullable(Date),
    tickets_total Nullable(UInt32),
    tickets_left  Nullable(UInt32),
    is_active     UInt8,
    is_deleted    UInt8,
    currency      String,
    _ver          UInt64,
    _loaded_at    DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
ORDER BY event_id;

-- Orders, one row per QTickets order id (every order seen, paid or not).
-- sale_ts is payed_at when the order is paid, else created_at.
CREATE TABLE IF NOT EXISTS zakaz.stg_qtickets_api_orders_raw
(
    order_id       String,
    event_id       String,
    payed          UInt8,
    payed_at       Nullable(DateTime('Europe/Moscow')),
    created_at     DateTime('Europe/Moscow'),
    deleted_at     Nullable(DateTime('Europe/Moscow')),
    sale_ts        DateTime('Europe/Moscow'),
    price          Decimal(18, 2),
    original_price Decimal(18, 2),
    currency       String,
    utm_source     String,
    utm_medium     String,
    utm_campaign   String,
    utm_content    String,
    utm_term       String,
    client_id      String,
    promo_code_id  String,
    baskets_total  UInt32,
    baskets_live   UInt32,
    _ver           UInt64,
    _loaded_at     DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
ORDER BY order_id;

-- Baskets (tickets), one row per QTickets basket id. price is per ticket after discounts.
CREATE TABLE IF NOT EXISTS zakaz.stg_qtickets_api_baskets_raw
(
    basket_id       String,
    order_id        String,
    event_id        String,
    show_id         String,
    price           Decimal(18, 2),
    original_price  Decimal(18, 2),
    quantity        UInt32,
    deleted_at      Nullable(DateTime('Europe/Moscow')),
    refunded_at     Nullable(DateTime('Europe/Moscow')),
    refunded_amount Nullable(Decimal(18, 2)),
    sale_ts         DateTime('Europe/Moscow'),
    _ver            UInt64,
    _loaded_at      DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
ORDER BY basket_id;

-- Gmail backup channel: rows of CSV or HTML report attachments.
-- Natural key (event_date, lowerUTF8(city), event_name, event_id), the latest
-- report wins: _ver is the message internalDate in milliseconds, so reloading an
-- old message never overrides a newer one and never adds to it.
CREATE TABLE IF NOT EXISTS zakaz.stg_qtickets_sales_raw
(
    src_msg_id   String,
    ingested_at  DateTime('Europe/Moscow'),
    event_date   Date,
    event_id     String,
    event_name   String,
    city         String,
    tickets_sold Int32,
    revenue      Decimal(18, 2),
    refunds      Decimal(18, 2),
    currency     String,
    _ver         UInt64,
    _loaded_at   DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, lowerUTF8(city), event_name, event_id);

-- Sales plan, loaded from CSV. Key (sales_date, city, event_id).
CREATE TABLE IF NOT EXISTS zakaz.plan_sales
(
    sales_date   Date,
    event_id     String,
    city         String,
    plan_tickets UInt32,
    plan_revenue Decimal(18, 2),
    _ver         UInt64,
    _loaded_at   DateTime MATERIALIZED now()
)
ENGINE = ReplacingMergeTree(_ver)
PARTITION BY toYYYYMM(sales_date)
ORDER BY (sales_date, city, event_id);
