#!/usr/bin/env python3
"""Deterministic data set for fakeapi.py, and the expected aggregates computed independently from it.

  python3 spec/fakes/datagen.py --seed 7 --orders 300 --events 8 --days 14 --start 2025-11-01 \
      --out data.json [--expected expected.json]
  python3 spec/fakes/datagen.py --from-data data.json --expected expected.json

Importable: generate(**params) -> data dict, expected(data) -> dict.
The expected side reads only the data set (wire-format objects), never the generator's internals.
"""

import argparse
import base64
import csv
import datetime as dt
import io
import json
import random
import sys
from collections import defaultdict
from decimal import Decimal, ROUND_HALF_UP

MSK = dt.timezone(dt.timedelta(hours=3))

CITIES = [
    # id, name, timezone, utm slug
    (1, "Москва", "Europe/Moscow", "msk"),
    (2, "Санкт-Петербург", "Europe/Moscow", "spb"),
    (3, "Казань", "Europe/Moscow", "kzn"),
    (4, "Екатеринбург", "Asia/Yekaterinburg", "ekb"),
    (24, "Томск", "Asia/Krasnoyarsk", "tomsk"),
    (6, "Новосибирск", "Asia/Novosibirsk", "nsk"),
]
EVENT_NAMES = [
    "Детская интерактивная выставка",
    "Концерт \"AC/DC Tribute\"",
    "Стендап: большой сольный концерт",
    "Шоу мыльных пузырей",
    "Лекция «Космос/Вселенная»",
    "Spektakl / Гамлет",
    "Новогодняя ёлка 2026",
    "Jazz & Blues Night",
    "Квиз, плиз!",
]
PLACES = ["ТЦ \"Смайл Сити\"", "ДК \"Энергетик\"", "Клуб A/B", "Филармония", "Театр на Литейном"]
FIRST = ["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Анна", "Сергей", "Екатерина", "John", "Zoë"]
LAST = ["Петров", "Иванова", "Сидоров", "Кузнецова", "Смирнов", "Попова", "O'Brien"]
PAYMENT_TYPES = ["bankcard", "sbp", "invoice", "cash"]


def _d(x):
    return x if isinstance(x, Decimal) else Decimal(repr(x)) if isinstance(x, float) else Decimal(str(x))


def _money_json(x: Decimal):
    """int if whole, else float (both occur on the wire)."""
    return int(x) if x == x.to_integral_value() else float(x)


def _iso(t: dt.datetime):
    return t.astimezone(MSK).isoformat(timespec="seconds")


def _hex(rng, n):
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


# =========================================================================== generation


def generate(seed=1, orders=300, events=8, days=14, start="2025-11-01", vk_plans=3, direct_campaigns=3,
             gmail_reports=6):
    rng = random.Random(seed)
    start_d = dt.date.fromisoformat(start)
    end_d = start_d + dt.timedelta(days=days - 1)
    data = {
        "meta": {"generator": "spec/fakes/datagen.py", "params": {
            "seed": seed, "orders": orders, "events": events, "days": days, "start": start,
            "vk_plans": vk_plans, "direct_campaigns": direct_campaigns, "gmail_reports": gmail_reports},
            "date_from": start_d.isoformat(), "date_to": end_d.isoformat()},
        "auth": default_auth(),
    }
    evs = _gen_events(rng, events, start_d, days)
    data["qtickets"] = {"events": evs, "orders": _gen_orders(rng, orders, evs, start_d, days)}
    data["vk"] = _gen_vk(rng, vk_plans, evs, start_d, days)
    data["direct"] = _gen_direct(rng, direct_campaigns, start_d, days)
    data["gmail"] = {"messages": _gen_gmail(rng, gmail_reports, evs, start_d, days)}
    return data


def default_auth():
    return {
        "qtickets": {"tokens": ["qt-test-token"], "forbidden_tokens": ["qt-forbidden-token"]},
        "google": {
            "clients": [{"client_id": "1234-fake.apps.googleusercontent.com", "client_secret": "GOCSPX-fake-secret"}],
            "refresh_tokens": ["1//fake-refresh-token"],
            "revoked_refresh_tokens": ["1//revoked-refresh-token"],
            "static_access_tokens": ["ya29.fake-static-token"],
            "scope": "https://www.googleapis.com/auth/gmail.readonly",
        },
        "vkads": {
            "clients": [{"client_id": "vk-client-id", "client_secret": "vk-client-secret",
                         "agency_clients": ["agency_client_1"]}],
            "static_tokens": ["vkads-static-token"],
        },
        "vkapi": {"tokens": ["vk1.a.fake-user-token"]},
        "direct": {"tokens": {
            "y0_fake-direct-token": {"login": "fake-client-login"},
            "y0_fake-agency-token": {"agency": True, "clients": ["fake-client-login"]},
        }},
    }


def _gen_events(rng, n, start_d, days):
    n = max(n, 3)
    evs = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        name = EVENT_NAMES[i % len(EVENT_NAMES)]
        if i == 1:  # same name, same city as event 0 (different id): per-name aggregates must merge them
            city, name = CITIES[0], EVENT_NAMES[0]
        if i == 2:  # same name as event 0 in another city
            name = EVENT_NAMES[0]
        eid = 24089 + i * 7
        shows = []
        for k in range(rng.randint(1, 3)):
            sd = dt.datetime.combine(start_d + dt.timedelta(days=rng.randrange(days + 7)), dt.time(19, 0), MSK)
            sid = 152887 + i * 10 + k
            shows.append({
                "id": sid, "name": "", "is_active": rng.choice([1, 1, 0]),
                "sale_start_date": None, "sale_finish_date": _iso(sd - dt.timedelta(minutes=5)),
                "open_date": _iso(sd - dt.timedelta(hours=1)), "start_date": _iso(sd),
                "finish_date": _iso(sd + dt.timedelta(hours=2)),
                "prices": [{"id": 541248 + i * 10 + k, "default_price": rng.choice([490, 990, 1500]),
                            "color_theme": rng.choice(["2", 3]), "modifiers": []}],
                "deleted_at": None,
            })
        created = dt.datetime.combine(start_d - dt.timedelta(days=30 + i), dt.time(15, 39, 40), MSK)
        evs.append({
            "id": eid, "is_active": rng.choice([0, 1]), "name": name, "scheme_id": 11707 + i,
            "currency_id": "RUB", "place_name": rng.choice(PLACES), "place_address": "ул. Ленина, д. %d" % (i + 1),
            "city_id": city[0], "city": {"id": city[0], "name": city[1], "timezone": city[2]},
            "age": rng.choice(["0+", "6+", "12+", "18+"]), "event_type_id": 11,
            "url": "https://%s.qtickets.events/%d-event" % (city[3], eid),
            "poster": "https://qtickets.ru/uploads/posters/%d.jpg" % eid,
            "shows": shows, "created_at": _iso(created), "updated_at": _iso(created + dt.timedelta(days=3)),
            "deleted_at": None if i != n - 1 else _iso(created + dt.timedelta(days=5)),
            "_utm_slug": city[3],
        })
    return evs


def _price(rng):
    if rng.random() < 0.25:
        return Decimal(rng.choice(["1222.03", "990.50", "749.99", "1333.33", "250.10"]))
    return Decimal(rng.choice([300, 500, 800, 990, 1500, 2500]))


def _gen_orders(rng, n, evs, start_d, days):
    orders = []
    basket_id = 63993
    t0 = dt.datetime.combine(start_d, dt.time(0, 0), MSK)
    live_events = [e for e in evs if e["deleted_at"] is None] or evs
    for i in range(n):
        oid = 4360 + i
        ev = rng.choice(live_events)
        # payment time: uniform, but ~8% pinned to within 2 s of Moscow midnight
        day = rng.randrange(days)
        if rng.random() < 0.08:
            edge = dt.datetime.combine(start_d + dt.timedelta(days=day), dt.time(0, 0), MSK)
            if day == 0:  # keep the edge cases inside the range
                edge += dt.timedelta(days=1)
            paid_t = edge + dt.timedelta(seconds=rng.choice([-2, -1, 0, 1]))
        else:
            paid_t = t0 + dt.timedelta(days=day, seconds=rng.randrange(86400))
        created = paid_t - dt.timedelta(seconds=rng.randint(10, 900))
        payed = rng.random() < 0.8
        deleted = rng.random() < 0.06
        promo = payed and rng.random() < 0.03  # 100% promo code: paid with price 0
        client_id = 200 + rng.randrange(80)
        fname, lname = rng.choice(FIRST), rng.choice(LAST)
        email = "user%d@example.com" % client_id
        baskets, refunds_list = [], []
        order_total = Decimal(0)
        order_orig = Decimal(0)
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
            show = rng.choice(ev["shows"])
            price = Decimal(0) if promo else _price(rng)
            orig = price if rng.random() < 0.8 else price + Decimal(rng.choice([100, 150, 200]))
            qty = 1 if rng.random() < 0.75 else rng.randint(2, 3)
            basket_id += 1
            b_created = created + dt.timedelta(seconds=rng.randint(0, 30))
            b = {
                "id": basket_id, "barcode": str(877076325904 + basket_id * 13), "show_id": show["id"],
                "seat_id": "CENTER_PARTERRE-%d;%d" % (rng.randint(1, 30), rng.randint(1, 40)) if qty == 1 else None,
                "series": "AA", "seat_name": "Партер, ряд %d, место %d" % (rng.randint(1, 30), rng.randint(1, 40))
                if qty == 1 else "Танцпартер",
                "original_price": _money_json(orig), "ticket_original_price": _money_json(orig),
                "ticket_amount": _money_json(price), "service_fee_amount": 0,
                "discount_value": None if orig == price else _money_json(orig - price),
                "price": _money_json(price), "quantity": qty, "multiprice_code": None,
                "client_email": email, "checked_at": None, "created_at": _iso(b_created),
                "deleted_at": None, "refunded_at": None, "refunded_amount": None, "refunded_deduction_amount": None,
                "services": [] if rng.random() < 0.8 else [{"id": 11, "name": "Страховка билета", "price": 49}],
                "refunds": [],
                "pdf_url": "https://qtickets.ru/tickets/pdf/%d/%s" % (basket_id, _hex(rng, 10)),
                "passbook_url": "https://qtickets.ru/passbook/%d" % basket_id,
            }
            order_total += price * qty
            order_orig += orig * qty
            r = rng.random()
            if payed and r < 0.05:  # ticket removed from the order
                b["deleted_at"] = _iso(paid_t + dt.timedelta(hours=rng.randint(1, 48)))
            elif payed and r < 0.15:  # refund: full, partial, or with null amount
                rt = paid_t + dt.timedelta(hours=rng.randint(1, 72))
                b["refunded_at"] = _iso(rt)
                kind = rng.choice(["full", "partial", "null"])
                if kind == "full":
                    amount, deduction = price * qty, Decimal(0)
                elif kind == "partial":
                    amount = (price * qty * Decimal("0.7")).quantize(Decimal("0.01"), ROUND_HALF_UP)
                    deduction = price * qty - amount
                else:
                    amount = deduction = None
                b["refunded_amount"] = None if amount is None else _money_json(amount)
                b["refunded_deduction_amount"] = None if deduction is None else _money_json(deduction)
                if amount is not None:
                    rf = {"id": 9000 + basket_id, "amount": _money_json(amount), "created_at": _iso(rt)}
                    b["refunds"].append(rf)
                    refunds_list.append(dict(rf, basket_id=basket_id))
            baskets.append(b)
        utm = []
        if rng.random() < 0.6:
            sd = dt.date.fromisoformat(ev["shows"][0]["start_date"][:10])
            utm = {"utm_source": rng.choice(["vk", "yandex", "telegram"]), "utm_medium": "cpc",
                   "utm_campaign": "promo_%d" % ev["id"],
                   "utm_content": "%s_%02d_%02d" % (ev["_utm_slug"], sd.day, sd.month),
                   "utm_term": rng.choice(["", "билеты", "концерт"])}
        o = {
            "id": oid, "uniqid": _hex(rng, 10), "payed": payed,
            "payed_at": _iso(paid_t) if payed else None,
            "created_at": _iso(created),
            "updated_at": _iso(paid_t if payed else created),
            "deleted_at": _iso(paid_t + dt.timedelta(days=1)) if deleted else None,
            "client_id": client_id,
            "client": {"id": client_id, "email": email, "details": {
                "id": client_id - 68, "name": fname, "middlename": None, "surname": lname,
                "phone": "+7910%07d" % rng.randrange(10 ** 7), "vk_id": "", "facebook_id": ""}},
            "site_id": 16, "site": {"id": 16, "host": "qtickets.ru"},
            "payment_id": 36 if payed else None, "payment_type_id": rng.choice(PAYMENT_TYPES),
            "payment_card_number": "427638******%04d" % rng.randrange(10000) if payed and rng.random() < 0.5 else None,
            "discount_id": None, "promo_code_id": 77 if promo else None,
            "reserved": rng.choice([0, False]) if payed else rng.choice([1, True, 0]),
            "reserved_to": _iso(created + dt.timedelta(days=1)),
            "event_id": ev["id"], "price": _money_json(order_total), "original_price": _money_json(order_orig),
            "currency_id": "RUB", "utm": utm,
            "custom": "" if rng.random() < 0.5 else {"var1": "val1", "source_url": "https://vk.com/wall-1_2"},
            "fields": [] if rng.random() < 0.7 else {"organization_name": "ИП %s" % lname},
            "baskets": baskets, "refunds": refunds_list,
            "integrations": {"roistat": {"roistat_visit": str(100000 + oid)}} if rng.random() < 0.3 else [],
        }
        orders.append(o)
    for e in evs:
        e.pop("_utm_slug", None)
    return orders


def _gen_vk(rng, n_plans, evs, start_d, days):
    plans, groups, banners, stats = [], [], [], {}
    bid = 8372481
    for p in range(n_plans):
        pid = 101 + p
        plans.append({"id": pid, "name": "Кампания %d / зима" % (p + 1), "status": "active" if p else "blocked",
                      "objective": "traffic", "budget_limit": "%d.00" % (50000 + p * 1000),
                      "budget_limit_day": "%d.00" % (1000 + p * 100),
                      "created": "2025-10-%02d 10:00:00" % (p + 1), "updated": "2025-10-%02d 12:30:00" % (p + 5)})
        for g in range(2):
            gid = 5001 + p * 10 + g
            groups.append({"id": gid, "name": "Группа %d.%d" % (p + 1, g + 1), "status": "active",
                           "ad_plan_id": pid, "package_id": 960, "budget_limit_day": "0",
                           "created": "2025-10-%02d 10:05:00" % (p + 1), "updated": "2025-10-%02d 10:05:00" % (p + 1)})
            for b in range(2):
                bid += 1
                ev = evs[(p * 4 + g * 2 + b) % len(evs)]
                city_slug = ev["url"].split("//")[1].split(".")[0]
                sd = dt.date.fromisoformat(ev["shows"][0]["start_date"][:10])
                url = ("https://%s.qtickets.events/%d?utm_source=vk&utm_medium=cpc&utm_campaign=plan_%d"
                       "&utm_content=%s_%02d_%02d&utm_term=%d" % (city_slug, ev["id"], pid, city_slug, sd.day, sd.month, bid))
                banners.append({"id": bid, "ad_group_id": gid, "campaign_id": gid, "status": "active",
                                "moderation_status": "allowed", "name": "Объявление %d" % bid,
                                "urls": {"primary": {"id": 700000 + bid, "url": url}},
                                "created": "2025-10-%02d 10:10:00" % (p + 1),
                                "updated": "2025-10-%02d 10:10:00" % (p + 1)})
                per_day = {}
                for k in range(days):
                    d = (start_d + dt.timedelta(days=k)).isoformat()
                    if rng.random() < 0.15:
                        continue  # no delivery that day (the API still lists it with zeros)
                    shows = rng.randint(200, 8000)
                    clicks = int(shows * rng.uniform(0.002, 0.03))
                    spent = (Decimal(shows) * Decimal(rng.randint(8000, 30000)) / Decimal(100000)).quantize(
                        Decimal("0.01"), ROUND_HALF_UP)
                    per_day[d] = {"shows": shows, "clicks": clicks, "goals": rng.randint(0, max(0, clicks // 10)),
                                  "spent": str(spent)}
                stats[str(bid)] = per_day
    return {"account_id": 1900001234, "ad_plans": plans, "ad_groups": groups, "banners": banners, "stats": stats}


def _gen_direct(rng, n, start_d, days):
    camps, adgroups, stats = [], [], []
    for c in range(n):
        cid = 70000000 + c * 111
        camps.append({"Id": cid, "Name": ["Поиск / Москва", "РСЯ \"Новый год\"", "Brand"][c % 3] + ("" if c < 3 else " %d" % c),
                      "State": ["ON", "ON", "SUSPENDED", "OFF"][c % 4], "Status": "ACCEPTED",
                      "Type": "TEXT_CAMPAIGN", "StatusPayment": "ALLOWED", "Currency": "RUB",
                      "StartDate": (start_d - dt.timedelta(days=20)).isoformat()})
        with_conv = c != 1  # campaign 1 has no Metrica goals: Conversions are "--"
        for g in range(2):
            gid = 4500000000 + c * 100 + g
            adgroups.append({"Id": gid, "CampaignId": cid, "Name": "Группа %d-%d" % (c + 1, g + 1)})
            for a in range(2):
                aid = 13000000000 + c * 1000 + g * 10 + a
                for k in range(days):
                    d = (start_d + dt.timedelta(days=k)).isoformat()
                    if rng.random() < 0.2:
                        continue  # zero-impression day: no row at all
                    imp = rng.randint(1, 4000)
                    clicks = 0 if rng.random() < 0.15 else int(imp * rng.uniform(0.005, 0.06))
                    cost = clicks * rng.randint(5, 40) * 1000000 + rng.randrange(100) * 10000 if clicks else 0
                    stats.append({"Date": d, "CampaignId": cid, "AdGroupId": gid, "AdId": aid,
                                  "Impressions": imp, "Clicks": clicks, "Cost": cost,
                                  "Conversions": rng.randint(0, max(0, clicks // 8)) if with_conv else None})
    return {"login": "fake-client-login", "campaigns": camps, "ad_groups": adgroups, "stats": stats}


# --------------------------------------------------------------------------- gmail

CSV_VARIANTS = [
    # (encoding, delimiter, header (date,event_id,event,city,tickets,revenue,refunds) or None, day_first,
    #  decimal_comma, thousands_space, mime, delivery)
    dict(enc="utf-8", delim=",", header=["date", "event_id", "event", "city", "tickets_sold", "revenue", "refunds"],
         day_first=False, comma=False, thousands=False, mime="text/csv", inline=False, wrap="mixed_alt"),
    dict(enc="cp1251", delim=";", header=["Дата", "Идентификатор", "Название события", "Город", "Продано билетов",
                                          "Выручка", "Возвраты"],
         day_first=True, comma=True, thousands=True, mime="application/octet-stream", inline=False, wrap="mixed"),
    dict(enc="utf-8-sig", delim=";", header=["дата", None, "событие", "город", "билетов", "сумма", None],
         day_first=True, comma=True, thousands=False, mime="text/csv", inline=True, wrap="mixed"),
    dict(enc="cp1251", delim=";", header=["Дата события", "ИД события", "Событие", "Город", "Продано билетов",
                                          "Сумма продажи", "Возвраты"],
         day_first=True, comma=True, thousands=True, mime="application/vnd.ms-excel", inline=False, wrap="forward"),
    dict(enc="utf-8", delim=",", header=["Event_Date", "Event_ID", "Event", "City", "Tickets_Sold", "Revenue", "Refund"],
         day_first=False, comma=False, thousands=False, mime="application/octet-stream", inline=False, wrap="mixed"),
    # no attachment at all: the rows are an HTML table in the text/html alternative
    dict(enc="utf-8", delim=None, header=["Дата", "ИД события", "Событие", "Город", "Билетов", "Выручка", "Возвраты"],
         day_first=True, comma=True, thousands=True, mime=None, inline=True, wrap="html"),
]


def _fmt_money(x: Decimal, comma, thousands):
    s = format(x.quantize(Decimal("0.01")), "f")
    ip, fp = s.split(".")
    if thousands:
        ip = "{:,}".format(int(ip)).replace(",", " ")
    return ip + ("," if comma else ".") + fp


def _fmt_int(n, thousands):
    return "{:,}".format(n).replace(",", " ") if thousands else str(n)


def _csv_bytes(rows, v):
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=v["delim"], lineterminator="\r\n")
    cols = [i for i, h in enumerate(v["header"]) if h is not None]
    w.writerow([v["header"][i] for i in cols])
    for r in rows:
        d = dt.date.fromisoformat(r["date"])
        vals = [d.strftime("%d.%m.%Y") if v["day_first"] else r["date"], str(r["event_id"]), r["event_name"],
                r["city"], _fmt_int(r["tickets_sold"], v["thousands"]),
                _fmt_money(Decimal(r["revenue"]), v["comma"], v["thousands"]),
                _fmt_money(Decimal(r["refunds"]), v["comma"], v["thousands"])]
        w.writerow([vals[i] for i in cols])
    return buf.getvalue().encode(v["enc"])


def _html_report(r, rows, v, ts, d0, per):
    import html
    cells = lambda vals, tag: "".join("<%s>%s</%s>" % (tag, html.escape(str(x)), tag) for x in vals)
    body = ["<table border=\"1\">", "<tr>%s</tr>" % cells(v["header"], "th")]
    for x in rows:
        d = dt.date.fromisoformat(x["date"]).strftime("%d.%m.%Y")
        body.append("<tr>%s</tr>" % cells([d, x["event_id"], x["event_name"], x["city"],
                                            _fmt_int(x["tickets_sold"], True),
                                            _fmt_money(Decimal(x["revenue"]), True, True),
                                            _fmt_money(Decimal(x["refunds"]), True, True)], "td"))
    body.append("</table>")
    mid = "%016x" % (0x18c1f2a3b4c5d600 + r * 0x1111)
    return {"id": mid, "threadId": mid, "labelIds": ["INBOX"], "internalDate": str(ts),
            "snippet": "Продажи за период",
            "headers": {"From": "QTickets <reports@qtickets.ru>", "To": "sales@example.com",
                        "Subject": "Продажи за %s (таблица)" % d0.strftime("%d.%m.%Y"), "Date": _rfc2822(ts),
                        "Message-ID": "<%s.html@qtickets.ru>" % mid},
            "payload": {"mimeType": "multipart/alternative", "parts": [
                _text_part("Продажи за период во вложенной таблице (HTML)."),
                _text_part("<html><body><p>Продажи:</p>%s</body></html>" % "\n".join(body), "html")]},
            "sales_rows": rows}


def _text_part(text, subtype="plain"):
    return {"mimeType": "text/" + subtype, "text": text, "charset": "UTF-8"}


def _gen_gmail(rng, n_reports, evs, start_d, days):
    msgs = []
    per = max(1, days // max(1, n_reports))
    base_ms = int(dt.datetime.combine(start_d, dt.time(9, 0), MSK).timestamp() * 1000)
    for r in range(n_reports):
        v = CSV_VARIANTS[r % len(CSV_VARIANTS)]
        d0 = start_d + dt.timedelta(days=(r * per) % days)
        rows = []
        for k in range(per):
            d = d0 + dt.timedelta(days=k)
            for ev in [e for i, e in enumerate(evs) if i != 1][:4]:  # (city, name) unique per row
                if rng.random() < 0.2:
                    continue
                t = rng.randint(0, 1300 if v["thousands"] else 120)
                revenue = (Decimal(t) * Decimal(rng.choice(["990", "1222.03", "1500.5", "749.99"]))).quantize(
                    Decimal("0.01"))
                refunds = Decimal(0) if rng.random() < 0.6 else (revenue * Decimal("0.05")).quantize(Decimal("0.01"))
                rows.append({"date": d.isoformat(), "event_id": ev["id"], "event_name": ev["name"],
                             "city": ev["city"]["name"], "tickets_sold": t, "revenue": str(revenue),
                             "refunds": str(refunds)})
        # keys must be unique across messages so that "sum" and "latest wins" agree; drop dropped columns
        if v["header"][1] is None:
            for x in rows:
                x["event_id"] = None
        if v["header"][6] is None:
            for x in rows:
                x["refunds"] = "0.00"
        if v["wrap"] == "html":
            msgs.append(_html_report(r, rows, v, base_ms + (r * per + per) * 86400000 + r * 61000, d0, per))
            continue
        content = _csv_bytes(rows, v)
        fname = ["sales_%s.csv", "Отчёт о продажах %s.csv", "report-%s.csv", "Продажи_%s.csv", "export_%s.CSV"][r % 5] % d0
        att = {"mimeType": v["mime"], "filename": fname, "content_b64": base64.b64encode(content).decode(),
               "inline": v["inline"]}
        if v["mime"] == "text/csv":
            att["charset"] = "windows-1251" if v["enc"] == "cp1251" else "utf-8"
        mid = "%016x" % (0x18c1f2a3b4c5d600 + r * 0x1111)
        ts = base_ms + (r * per + per) * 86400000 + r * 61000
        subject = "Отчёт о продажах за %s — %s" % (d0.strftime("%d.%m.%Y"), (d0 + dt.timedelta(days=per - 1)).strftime("%d.%m.%Y"))
        body_alt = {"mimeType": "multipart/alternative", "parts": [
            _text_part("Добрый день!\nОтчёт во вложении.\n"),
            _text_part("<p>Добрый день!</p><p>Отчёт во вложении.</p>", "html")]}
        if v["wrap"] == "forward":
            inner = {"headers": {"From": "QTickets <reports@qtickets.ru>", "To": "manager@example.com",
                                 "Subject": subject, "Date": _rfc2822(ts - 3600000),
                                 "Message-ID": "<inner-%s@qtickets.ru>" % mid},
                     "payload": {"mimeType": "multipart/mixed", "parts": [_text_part("Отчёт во вложении."), att]}}
            payload = {"mimeType": "multipart/mixed", "parts": [
                _text_part("---------- Forwarded message ---------\n"),
                {"mimeType": "message/rfc822", "filename": "", "message": inner}]}
            subject = "Fwd: " + subject
            sender = "Менеджер <manager@example.com>"
        else:
            parts = [body_alt if v["wrap"] == "mixed_alt" else _text_part("Отчёт во вложении."), att]
            payload = {"mimeType": "multipart/mixed", "parts": parts}
            sender = "QTickets <reports@qtickets.ru>"
        msgs.append({
            "id": mid, "threadId": mid, "labelIds": ["INBOX", "CATEGORY_UPDATES"] + (["UNREAD"] if r % 2 else []),
            "internalDate": str(ts), "snippet": "Добрый день! Отчёт во вложении.",
            "headers": {"From": sender, "To": "sales@example.com", "Subject": subject, "Date": _rfc2822(ts),
                        "Message-ID": "<%s.report@qtickets.ru>" % mid},
            "payload": payload, "sales_rows": rows,
        })
    # noise: no attachment; a PDF-only report; a spam copy
    ts = base_ms + days * 86400000 + 5000
    msgs.append({"id": "18c1f2a3b4c5e001", "threadId": "18c1f2a3b4c5e001", "labelIds": ["INBOX"],
                 "internalDate": str(ts), "snippet": "Напоминание",
                 "headers": {"From": "QTickets <reports@qtickets.ru>", "To": "sales@example.com",
                             "Subject": "Напоминание о мероприятии", "Date": _rfc2822(ts),
                             "Message-ID": "<reminder@qtickets.ru>"},
                 "payload": _text_part("Без вложений."), "sales_rows": []})
    msgs.append({"id": "18c1f2a3b4c5e002", "threadId": "18c1f2a3b4c5e002", "labelIds": ["INBOX"],
                 "internalDate": str(ts + 1000), "snippet": "PDF",
                 "headers": {"From": "QTickets <reports@qtickets.ru>", "To": "sales@example.com",
                             "Subject": "Акт сверки", "Date": _rfc2822(ts + 1000), "Message-ID": "<act@qtickets.ru>"},
                 "payload": {"mimeType": "multipart/mixed", "parts": [
                     _text_part("Акт во вложении."),
                     {"mimeType": "application/pdf", "filename": "act.pdf",
                      "content_b64": base64.b64encode(b"%PDF-1.4\n%fake\n").decode()}]},
                 "sales_rows": []})
    msgs.append({"id": "18c1f2a3b4c5e003", "threadId": "18c1f2a3b4c5e003", "labelIds": ["SPAM"],
                 "internalDate": str(ts + 2000), "snippet": "spam",
                 "headers": {"From": "Spammer <spam@example.net>", "To": "sales@example.com",
                             "Subject": "Отчёт о продажах (spam)", "Date": _rfc2822(ts + 2000),
                             "Message-ID": "<spam@example.net>"},
                 "payload": {"mimeType": "multipart/mixed", "parts": [
                     _text_part("spam"), {"mimeType": "text/csv", "filename": "spam.csv",
                                          "content_b64": base64.b64encode(b"date,city\n2025-01-01,X\n").decode()}]},
                 "sales_rows": []})
    return msgs


def _rfc2822(ms):
    t = dt.datetime.fromtimestamp(int(ms) / 1000, MSK)
    return t.strftime("%a, %d %b %Y %H:%M:%S +0300")


# =========================================================================== expected aggregates


def _msk_date(iso):
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(MSK).date().isoformat()


def _s(x: Decimal):
    return format(x.quantize(Decimal("0.01"), ROUND_HALF_UP), "f")


def expected(data):
    """Aggregates computed straight from the wire objects of the data set.

    QTickets, per Moscow date of payed_at x city name x event name (and per event_id):
      counted orders   = payed is true and deleted_at is null
      live basket      = deleted_at is null and refunded_at is null
      tickets_sold     = sum(quantity) over live baskets
      revenue          = sum(price * quantity) over live baskets (basket price is per ticket, after discount;
                         order.price, services and fees are NOT used)
      refunds          = over baskets with refunded_at set (and deleted_at null) of counted orders:
                         sum(refunded_amount), or price * quantity when refunded_amount is null;
                         attributed to the order's pay date
    VK, per date x ad plan ("campaign"): shows/clicks/spent summed over the plan's banners; exact decimals.
    Direct, per date x CampaignId: Impressions, Clicks, Cost micros (/1e6 for roubles); only rows that exist.
    Gmail, per date x city x event name: the attachment rows (keys are unique across messages).
    """
    out = {}
    q = data.get("qtickets") or {}
    events = {e["id"]: e for e in q.get("events", [])}
    by_name = defaultdict(lambda: {"tickets_sold": 0, "revenue": Decimal(0), "refunds": Decimal(0),
                                   "orders": set(), "event_ids": set()})
    by_event = defaultdict(lambda: {"tickets_sold": 0, "revenue": Decimal(0), "refunds": Decimal(0)})
    by_utm = defaultdict(lambda: {"tickets_sold": 0, "revenue": Decimal(0)})
    counts = defaultdict(int)
    for o in q.get("orders", []):
        counts["orders"] += 1
        if not o.get("payed"):
            counts["unpaid"] += 1
            continue
        if o.get("deleted_at"):
            counts["paid_deleted"] += 1
            continue
        counts["counted"] += 1
        ev = events.get(o["event_id"]) or {}
        city = (ev.get("city") or {}).get("name", "")
        name = ev.get("name", "")
        day = _msk_date(o["payed_at"])
        utm = o.get("utm") if isinstance(o.get("utm"), dict) else {}
        utm_key = tuple(utm.get(k, "") for k in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"))
        a, b, u = by_name[(day, city, name)], by_event[(day, o["event_id"], city, name)], by_utm[(day, o["event_id"], city) + utm_key]
        a["orders"].add(o["id"])
        a["event_ids"].add(o["event_id"])
        for bk in o.get("baskets") or []:
            if bk.get("deleted_at"):
                counts["deleted_baskets"] += 1
                continue
            amount = _d(bk["price"]) * bk["quantity"]
            if bk.get("refunded_at"):
                counts["refunded_baskets"] += 1
                ra = bk.get("refunded_amount")
                r = amount if ra is None else _d(ra)
                a["refunds"] += r
                b["refunds"] += r
                continue
            for agg in (a, b, u):
                agg["tickets_sold"] += bk["quantity"]
                agg["revenue"] += amount
    out["qtickets"] = {
        "rules": "pay date = payed_at converted to +03:00; paid & not deleted orders; live baskets; revenue = price*quantity",
        "sales_daily": [
            {"date": k[0], "city": k[1], "event_name": k[2], "event_ids": sorted(v["event_ids"]),
             "orders": len(v["orders"]), "tickets_sold": v["tickets_sold"], "revenue": _s(v["revenue"]),
             "refunds": _s(v["refunds"])} for k, v in sorted(by_name.items())],
        "sales_daily_by_event": [
            {"date": k[0], "event_id": k[1], "city": k[2], "event_name": k[3], "tickets_sold": v["tickets_sold"],
             "revenue": _s(v["revenue"]), "refunds": _s(v["refunds"])} for k, v in sorted(by_event.items())],
        "sales_utm_daily": [
            {"date": k[0], "event_id": k[1], "city": k[2], "utm_source": k[3], "utm_medium": k[4],
             "utm_campaign": k[5], "utm_content": k[6], "utm_term": k[7], "tickets_sold": v["tickets_sold"],
             "revenue": _s(v["revenue"])} for k, v in sorted(by_utm.items())],
        "counts": dict(counts),
        "totals": {"tickets_sold": sum(v["tickets_sold"] for v in by_name.values()),
                   "revenue": _s(sum((v["revenue"] for v in by_name.values()), Decimal(0))),
                   "refunds": _s(sum((v["refunds"] for v in by_name.values()), Decimal(0)))},
    }

    vk = data.get("vk") or {}
    group_plan = {g["id"]: g["ad_plan_id"] for g in vk.get("ad_groups", [])}
    banner_plan = {b["id"]: group_plan[b["ad_group_id"]] for b in vk.get("banners", [])}
    plan_name = {p["id"]: p["name"] for p in vk.get("ad_plans", [])}
    vk_daily = defaultdict(lambda: {"impressions": 0, "clicks": 0, "spent": Decimal(0)})
    vk_banner = []
    for bid, days in (vk.get("stats") or {}).items():
        for d, s in days.items():
            agg = vk_daily[(d, banner_plan[int(bid)])]
            agg["impressions"] += s["shows"]
            agg["clicks"] += s["clicks"]
            agg["spent"] += Decimal(s["spent"])
            vk_banner.append({"date": d, "banner_id": int(bid), "impressions": s["shows"], "clicks": s["clicks"],
                              "spent": _s(Decimal(s["spent"]))})
    out["vk"] = {
        "daily": [{"date": d, "campaign_id": pid, "campaign_name": plan_name.get(pid), "impressions": v["impressions"],
                   "clicks": v["clicks"], "spent": _s(v["spent"])} for (d, pid), v in sorted(vk_daily.items())],
        "banner_daily": sorted(vk_banner, key=lambda x: (x["date"], x["banner_id"])),
        "totals": {"impressions": sum(v["impressions"] for v in vk_daily.values()),
                   "clicks": sum(v["clicks"] for v in vk_daily.values()),
                   "spent": _s(sum((v["spent"] for v in vk_daily.values()), Decimal(0)))},
    }

    di = data.get("direct") or {}
    cname = {c["Id"]: c["Name"] for c in di.get("campaigns", [])}
    dd = defaultdict(lambda: {"impressions": 0, "clicks": 0, "cost_micros": 0})
    for s in di.get("stats", []):
        agg = dd[(s["Date"], s["CampaignId"])]
        agg["impressions"] += s["Impressions"]
        agg["clicks"] += s["Clicks"]
        agg["cost_micros"] += s["Cost"]
    out["direct"] = {
        "daily": [{"date": d, "campaign_id": cid, "campaign_name": cname.get(cid), "impressions": v["impressions"],
                   "clicks": v["clicks"], "cost_micros": v["cost_micros"],
                   "cost": _s(Decimal(v["cost_micros"]) / Decimal(1000000))}
                  for (d, cid), v in sorted(dd.items()) if v["impressions"] > 0],
        "totals": {"impressions": sum(v["impressions"] for v in dd.values()),
                   "clicks": sum(v["clicks"] for v in dd.values()),
                   "cost": _s(Decimal(sum(v["cost_micros"] for v in dd.values())) / Decimal(1000000))},
    }

    gm = defaultdict(lambda: {"tickets_sold": 0, "revenue": Decimal(0), "refunds": Decimal(0), "messages": set()})
    for m in (data.get("gmail") or {}).get("messages", []):
        if "SPAM" in m.get("labelIds", []) or "TRASH" in m.get("labelIds", []):
            continue
        for r in m.get("sales_rows") or []:
            agg = gm[(r["date"], r["city"], r["event_name"])]
            agg["tickets_sold"] += r["tickets_sold"]
            agg["revenue"] += Decimal(r["revenue"])
            agg["refunds"] += Decimal(r["refunds"])
            agg["messages"].add(m["id"])
    out["gmail"] = {"daily": [{"date": k[0], "city": k[1], "event_name": k[2], "tickets_sold": v["tickets_sold"],
                               "revenue": _s(v["revenue"]), "refunds": _s(v["refunds"]),
                               "message_ids": sorted(v["messages"])} for k, v in sorted(gm.items())],
                    "rows": sum(len(m.get("sales_rows") or []) for m in (data.get("gmail") or {}).get("messages", [])
                                if "SPAM" not in m.get("labelIds", []))}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--events", type=int, default=8)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--start", default="2025-11-01")
    ap.add_argument("--vk-plans", type=int, default=3)
    ap.add_argument("--direct-campaigns", type=int, default=3)
    ap.add_argument("--gmail-reports", type=int, default=6)
    ap.add_argument("--out", help="write the data set here (default: stdout unless --expected only)")
    ap.add_argument("--expected", help="write the expected aggregates here")
    ap.add_argument("--from-data", help="compute --expected from this existing data file instead of generating")
    a = ap.parse_args(argv)
    if a.from_data:
        with open(a.from_data, encoding="utf-8") as f:
            data = json.load(f)
    else:
        data = generate(seed=a.seed, orders=a.orders, events=a.events, days=a.days, start=a.start,
                        vk_plans=a.vk_plans, direct_campaigns=a.direct_campaigns, gmail_reports=a.gmail_reports)
        text = json.dumps(data, ensure_ascii=False, indent=1)
        if a.out:
            with open(a.out, "w", encoding="utf-8") as f:
                f.write(text)
        elif not a.expected:
            sys.stdout.write(text + "\n")
    if a.expected:
        with open(a.expected, "w", encoding="utf-8") as f:
            json.dump(expected(data), f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
