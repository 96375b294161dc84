#!/usr/bin/env python3
"""Ingest benchmark runner (see bench/README.md). Builds nothing: it runs build/zhost as it is.

For each scenario and order count it starts bench/pagefake.py, then runs three contenders one after
another against the same pages and the same ClickHouse table, emptying the table before each; with
--repeat N, N rounds of that, so that each round's runs meet the same moment of a shared machine
(the table shows each contender's fastest run and the median of zhost ÷ floor within a round):

  zhost   build/zhost run bench/ingest.lua  (pages fetched --concurrency at a time)
  python  bench/py_ingest.py                (Python 3 stdlib, pages one after another)
  floor   curl fetching every page (--parallel, same concurrency) while a second curl streams
          the already-mapped rows (prepared beforehand by py_ingest.py --dump, not timed) to
          ClickHouse: what moving the bytes costs with no mapping at all

Each is measured with GNU time (/usr/bin/time -f, else wait4()): wall time, user+system CPU seconds
of the process and its children, peak RSS (the largest single process). After each run the table must hold exactly the expected basket
rows (count() and uniqExact(basket_id)), else the run is marked FAILED.

  python3 bench/ingest.py --ch http://127.0.0.1:18600 [--sizes 10000,100000] [--big]
        [--latency-ms 150] [--latency-orders 10000] [--concurrency 8] [--out bench/results.md]

--big adds 1,000,000 orders to the CPU-bound scenario (zhost and python only; the floor's
pre-mapped file would be ~600 MB: --big-floor runs the floor there too). ClickHouse must have the zakaz schema (zhost migrate); the runner
creates bench.baskets (the columns of zakaz.stg_qtickets_api_baskets_raw, plain MergeTree); --table
and --schema-db name others (the smoke test runs it in a test's own database).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TABLE = "bench.baskets"


def ch(url, sql):
    req = urllib.request.Request(url + "/", data=sql.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read().decode().strip()


TIME_BIN = "/usr/bin/time"


def proc_cpu(pids):
    """CPU seconds (user + system) used so far by these processes; gone ones count 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def pid_listening_on(port):
    """The pid of the process with a listening TCP socket on this port (ClickHouse), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                for line in fh.readlines()[1:]:
                    f = line.split()
                    if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f[9])
        except OSError:
            pass
    for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return pid
        except OSError:
            continue
    return None


def children_of(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


# Whose CPU the 2 cores also spend during a contender's run: ClickHouse's and the fake's.
SIDE_PIDS = {"clickhouse": [], "fake": []}


def measure(argv, env=None):
    """Runs argv; returns dict(rc, wall, cpu, rss_mb, out).

    Peak RSS comes from GNU time when it is installed: a child forked straight from this Python
    process starts with this process's resident pages counted in its ru_maxrss (~22 MB here), which
    would hide any contender smaller than the runner."""
    use_time = os.access(TIME_BIN, os.X_OK)
    full = [TIME_BIN, "-f", "ZHBENCH %e %U %S %M"] + argv if use_time else argv
    side0 = {k: proc_cpu(v) for k, v in SIDE_PIDS.items()}
    t0 = time.monotonic()
    p = subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    text = out.decode("utf-8", "replace")
    time.sleep(0.5)  # ClickHouse finishes the last part's work (merges start later and are not counted)
    side = {k: proc_cpu(v) - side0[k] for k, v in SIDE_PIDS.items()}
    r = {"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024.0, "out": text,
         "ch_cpu": side["clickhouse"], "fake_cpu": side["fake"]}
    m = re.findall(r"^ZHBENCH (\S+) (\S+) (\S+) (\d+)$", text, re.M) if use_time else None
    if m:
        e, u, s_, kb = m[-1]
        r.update(cpu=float(u) + float(s_), rss_mb=int(kb) / 1024.0)
    return r


class Fake:
    def __init__(self, orders, latency_ms):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "pagefake.py"), "--orders", str(orders),
                                   "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        m = re.match(r"READY (http://\S+)", line)
        if not m:
            raise SystemExit("pagefake did not start: %r" % line)
        self.url = m.group(1)
        SIDE_PIDS["fake"] = [self.p.pid] + children_of(self.p.pid)
        # Warm-up, not measured: 16 connections at once reach all 16 pre-forked workers, and 320
        # pages touch every template in each (copy-on-write faults after fork, first-render costs),
        # so whichever contender runs first does not pay for them.
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--parallel", "--parallel-max", "16",
                        "%s/orders?page=[1-320]" % self.url], check=False)

    def stop(self):
        self.p.terminate()
        self.p.wait(30)


def expected_rows(orders):
    with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
        subprocess.run([sys.executable, os.path.join(HERE, "pagefake.py"), "--orders", str(orders), "--expected",
                        f.name], check=True)
        return json.load(open(f.name))


def verify(chu, want):
    got = ch(chu, "SELECT count(), uniqExact(basket_id) FROM %s" % TABLE).split()
    return [int(x) for x in got] == [want, want], got


REPEAT = 1


def run_once(name, argv, chu, want, env=None):
    """One run of a contender into an emptied table, verified."""
    ch(chu, "TRUNCATE TABLE %s" % TABLE)
    r = measure(argv, env=env)
    ok, got = verify(chu, want)
    r["ok"] = ok and r["rc"] == 0
    r["got"] = got
    r["name"] = name
    r["rows"] = want
    if not r["ok"]:
        sys.stderr.write("!! %s failed (rc=%s, rows %s, want %d):\n%s\n" % (name, r["rc"], got, want,
                                                                         r["out"][-2000:]))
    print("   %-12s %7.2f s wall %7.2f s cpu %7.1f MB  %s" % (name, r["wall"], r["cpu"], r["rss_mb"],
                                                            "ok" if r["ok"] else "FAILED"), flush=True)
    return r


def run_rounds(specs, chu, want):
    """Runs every contender once per round, REPEAT rounds, so that each round's runs meet the same
    moment of a shared machine. Returns {key: fastest run (a failed one only if all failed)} and
    {key: [each round's run]}."""
    runs = {key: [] for key, _, _ in specs}
    for i in range(REPEAT):
        if REPEAT > 1:
            print("   -- round %d of %d" % (i + 1, REPEAT), flush=True)
        for key, argv, env in specs:
            runs[key].append(run_once(key, argv, chu, want, env))
    best = {key: max(rs, key=lambda r: (r["ok"], -r["wall"])) for key, rs in runs.items()}
    return best, runs


def paired_ratio(zruns, fruns):
    """zhost's wall ÷ the floor's in the same round, over the rounds where both succeeded:
    (median, lowest, highest), or None."""
    rs = [z["wall"] / f["wall"] for z, f in zip(zruns, fruns) if z["ok"] and f["ok"] and f["wall"] > 0]
    return (statistics.median(rs), min(rs), max(rs)) if rs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ch", default=os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:18600"))
    ap.add_argument("--zhost", default=os.path.join(ROOT, "build", "zhost"))
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--big", action="store_true", help="also 1,000,000 orders, CPU-bound (zhost, python)")
    ap.add_argument("--big-floor", action="store_true",
                    help="run the floor at 1,000,000 orders too (its pre-mapped rows: a ~600 MB file, ~2 min to make)")
    ap.add_argument("--latency-ms", type=float, default=150)
    ap.add_argument("--latency-orders", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency-concurrency", default="4,8",
                    help="latency scenario: zhost runs once per value (the floor uses the largest)")
    ap.add_argument("--contenders", default="zhost,python,floor")
    ap.add_argument("--scenarios", default="cpu,latency")
    ap.add_argument("--decode", default="view", help="bench/ingest.lua --decode: view or cjson")
    ap.add_argument("--map", default=None,
                    help="bench/ingest.lua --map: template (the default with --decode view) or lua")
    ap.add_argument("--batch", type=int, default=0, help="bench/ingest.lua --batch: rows per INSERT (default: the sink's)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--table", default="bench.baskets", help="the table every contender loads (made if missing)")
    ap.add_argument("--schema-db", default="zakaz",
                    help="the database whose stg_qtickets_api_baskets_raw gives the table's columns")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds (each runs every contender once); the table shows each one's fastest run "
                         "and the median of zhost ÷ floor within a round")
    args = ap.parse_args()
    global REPEAT, TABLE
    REPEAT = max(1, args.repeat)
    TABLE = args.table
    args.load0 = " ".join("%.1f" % x for x in os.getloadavg())
    chu = args.ch.rstrip("/")
    ch(chu, "CREATE DATABASE IF NOT EXISTS %s" % TABLE.split(".")[0])
    ch(chu, "CREATE TABLE IF NOT EXISTS %s AS %s.stg_qtickets_api_baskets_raw ENGINE = MergeTree ORDER BY basket_id"
       % (TABLE, args.schema_db))
    work = tempfile.mkdtemp(prefix="zhbench-")
    secrets = os.path.join(work, "secrets")
    os.makedirs(secrets)
    env = dict(os.environ, CLICKHOUSE_URL=chu, ZHOST_SPOOL=os.path.join(work, "spool"))
    ch_pid = pid_listening_on(urllib.parse.urlsplit(chu).port or 8123)
    SIDE_PIDS["clickhouse"] = [ch_pid] if ch_pid else []
    contenders = args.contenders.split(",")
    plan = []
    if "cpu" in args.scenarios:
        sizes = [int(x) for x in args.sizes.split(",") if x]
        if args.big:
            sizes.append(1000000)
        plan += [("cpu", n, 0) for n in sizes]
    if "latency" in args.scenarios:
        plan.append(("latency", args.latency_orders, args.latency_ms))
    results = []
    try:
        for scen, n, lat in plan:
            exp = expected_rows(n)
            want = exp["rows"]
            print("== %s: %d orders, %d pages, %d basket rows, latency %g ms" % (scen, n, exp["pages"], want, lat),
                  flush=True)
            fake = Fake(n, lat)
            try:
                row = {"scenario": scen, "orders": n, "pages": exp["pages"], "rows": want, "latency": lat}
                concs = [args.concurrency]
                if scen == "latency":
                    concs = [int(x) for x in args.latency_concurrency.split(",") if x]
                row["conc"] = concs
                # The fake's own ceiling: curl fetching every page, nothing else.
                pages_url = "%s/orders?page=[1-%d]" % (fake.url, exp["pages"])
                fetch = ["curl", "-sS", "--fail", "-o", "/dev/null", "--parallel", "--parallel-max",
                         str(max(concs)), "--parallel-immediate", pages_url]
                f = measure(fetch)
                row["ceiling"] = f
                print("   fake ceiling (curl, %d at a time): %.2f s, %.0f pages/s" % (
                    max(concs), f["wall"], exp["pages"] / f["wall"]), flush=True)
                big = n >= 1000000
                specs = []
                zhost_conc = {}  # key -> concurrency
                if "zhost" in contenders:
                    for c in concs:
                        key = "zhost" if c == concs[-1] else "zhost c=%d" % c
                        zhost_conc[key] = c
                        specs.append((key, [args.zhost, "run", os.path.join(HERE, "ingest.lua"), "--secrets",
                                            secrets, "--base", fake.url, "--table", TABLE, "--concurrency",
                                            str(c), "--decode", args.decode]
                                      + (["--map", args.map] if args.map else [])
                                      + (["--batch", str(args.batch)] if args.batch else []), env))
                if "python" in contenders:
                    specs.append(("python", [sys.executable, os.path.join(HERE, "py_ingest.py"), "--base",
                                             fake.url, "--ch", chu, "--table", TABLE], None))
                if "floor" in contenders and (not big or args.big_floor):
                    rows_file = os.path.join(work, "rows-%d.jsonl" % n)
                    if not os.path.exists(rows_file):
                        subprocess.run([sys.executable, os.path.join(HERE, "py_ingest.py"), "--base", fake.url,
                                        "--table", TABLE, "--dump", rows_file], check=True, stdout=subprocess.DEVNULL)
                    insert = "%s/?query=%s" % (chu, urllib.parse.quote("INSERT INTO %s FORMAT JSONEachRow" % TABLE))
                    script = ('%s & a=$!; curl -sS --fail -X POST -T "$1" "$2" -o /dev/null & b=$!; '
                              'wait $a && wait $b' % " ".join("'%s'" % a for a in fetch))
                    specs.append(("floor", ["bash", "-c", script, "floor", rows_file, insert], None))
                best, runs = run_rounds(specs, chu, want)
                row.update(best)
                for key, c in zhost_conc.items():
                    row[key]["conc"] = c
                    if "floor" in runs:
                        row[key]["paired"] = paired_ratio(runs[key], runs["floor"])
                results.append(row)
            finally:
                fake.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table(args, results)


def fmt(r, rows):
    if not r:
        return "| – | – | – | – | – | – |"
    return "| %s%.2f | %s | %.2f | %.1f | %.2f | %.2f |" % (
        "" if r["ok"] else "FAILED ", r["wall"], "{:,}".format(int(rows / r["wall"])), r["cpu"], r["rss_mb"],
        r.get("ch_cpu", 0), r.get("fake_cpu", 0))


def write_table(args, results):
    lines = ["| scenario | orders | basket rows | contender | wall s | rows/s | CPU s | peak RSS MB "
             "| ClickHouse CPU s | fake CPU s |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in results:
        label = "CPU-bound" if row["scenario"] == "cpu" else "latency %g ms" % row["latency"]
        names = ["zhost c=%d" % c for c in row["conc"][:-1]] + ["zhost", "python", "floor"]
        for name in names:
            r = row.get(name)
            if not r:
                continue
            shown = "zhost (concurrency %d)" % r["conc"] if name.startswith("zhost") else name
            lines.append("| %s | %s | %s | %s %s" % (label, "{:,}".format(row["orders"]), "{:,}".format(row["rows"]),
                                                   shown, fmt(r, row["rows"])))
    lines += ["", "| scenario | orders | fake ceiling (curl, pages/s) | zhost concurrency | zhost ÷ python, rows/s "
              "| zhost ÷ python, rows per CPU s | zhost wall ÷ floor wall | same round: median (range) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results:
        label = "CPU-bound" if row["scenario"] == "cpu" else "latency %g ms" % row["latency"]
        p, f = row.get("python"), row.get("floor")
        for name in ["zhost c=%d" % c for c in row["conc"][:-1]] + ["zhost"]:
            z = row.get(name)
            if not z:
                continue
            pr = z.get("paired")
            lines.append("| %s | %s | %.0f | %d | %s | %s | %s | %s |" % (
                label, "{:,}".format(row["orders"]), row["pages"] / row["ceiling"]["wall"], z["conc"],
                "%.2f×" % (p["wall"] / z["wall"]) if p else "–",
                "%.2f×" % (p["cpu"] / z["cpu"]) if p else "–",
                "%.2f×" % (z["wall"] / f["wall"]) if f else "–",
                "%.2f× (%.2f–%.2f)" % pr if pr else "–"))
    text = "\n".join(lines) + "\n"
    hdr = "<!-- bench/ingest.py %s; decode %s; map %s; batch %s; %s; load average before: %s -->\n" % (
        " ".join(sys.argv[1:]), args.decode, args.map or ("template" if args.decode == "view" else "lua"),
        args.batch or "default", time.strftime("%Y-%m-%d %H:%M"), args.load0)
    with open(args.out, "w") as fh:
        fh.write(hdr + text)
    print()
    print(text)


if __name__ == "__main__":
    main()
