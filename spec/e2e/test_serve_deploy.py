"""Deployment files of `zhost serve` (Docker cannot run here): the Dockerfile's RUN steps are the
README's install steps, the systemd unit carries the required hardening, the shipped
configurations parse and match the runbook's schedule."""
import os
import re
import shutil
import subprocess
import unittest

SRC = os.environ.get("ZHOST_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ZHOST = os.environ.get("ZHOST_BIN") or os.path.join(SRC, "build", "zhost")


def read(rel):
    with open(os.path.join(SRC, rel)) as fh:
        return fh.read()


def dockerfile_runs():
    text = read("Dockerfile").replace("\\\n", " ")
    return [re.sub(r"\s+", " ", l[4:]).strip() for l in text.splitlines() if l.startswith("RUN ")]


def readme_steps():
    block = re.search(r"## Install.*?```sh\n(.*?)```", read("README.md"), re.S).group(1)
    steps = []
    for line in block.splitlines():
        line = line.split("#")[0].strip()
        if line:
            steps.append(re.sub(r"^sudo ", "", re.sub(r"\s+", " ", line)))
    return steps


class Deploy(unittest.TestCase):
    def test_dockerfile_runs_the_readme_install_steps(self):
        runs = dockerfile_runs()
        steps = readme_steps()
        self.assertIn("tools/install-deps.sh build", runs)
        self.assertIn("tools/install-deps.sh build", steps)
        self.assertTrue(any(r.startswith("/tmp/install-deps.sh runtime") for r in runs), runs)
        self.assertIn("tools/install-deps.sh runtime", steps)
        # the build command is the same text in both
        build = [s for s in steps if s.startswith("cmake -S")]
        self.assertEqual(len(build), 1)
        self.assertIn(build[0], runs)
        self.assertTrue(any(r.startswith("cmake --install build --prefix") for r in runs))
        self.assertTrue(any(s.startswith("cmake --install build --prefix") for s in steps))
        # no package installs outside the shared script
        for r in runs:
            self.assertNotRegex(r, r"apt-get|apt |pip ", r)

    def test_install_script_lists_what_the_code_links_and_tests_use(self):
        script = read("tools/install-deps.sh")
        for pkg in ("liblua5.4-dev", "lua-cjson-dev", "libuv1-dev", "libcurl4-openssl-dev", "libedit-dev", "cmake",
                    "liblua5.4-0", "libuv1", "libcurl4", "tzdata", "curl", "clickhouse-server", "chromium", "jq"):
            self.assertRegex(script, r"[\" ]%s[\" ]" % re.escape(pkg), pkg)
        r = subprocess.run(["sh", os.path.join(SRC, "tools/install-deps.sh"), "nonsense"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)

    def test_build_and_tests_read_nothing_outside_the_checkout(self):
        # A clean clone on a fresh machine has only the repository: the suite once read the old
        # runbook from the developers' /work/shared, and failed everywhere else.
        files = ["dev", "Dockerfile", "CMakeLists.txt", ".ci/run"]
        for top in ("spec", "tools", "bench"):
            for d, _, names in os.walk(os.path.join(SRC, top)):
                files += [os.path.relpath(os.path.join(d, n), SRC) for n in names
                          if n.endswith((".py", ".sh", ".cmake", ".lua", ".c", ".h")) or n == "CMakeLists.txt"]
        outside = re.compile(r"""["'](/work/|/root/|/home/)|["']\.\.["']\s*,\s*["']shared["']""")
        bad = ["%s:%d: %s" % (f, i, line.strip()) for f in files
               for i, line in enumerate(read(f).splitlines(), 1) if outside.search(line)]
        self.assertEqual(bad, [])

    def test_dockerfile_is_multistage_non_root_with_a_healthcheck(self):
        text = read("Dockerfile")
        self.assertEqual(len(re.findall(r"(?m)^FROM debian:bookworm", text)), 2)
        self.assertRegex(text, r"(?m)^USER zhost$")
        self.assertRegex(text, r"(?m)^HEALTHCHECK .*curl -fsS http://127\.0\.0\.1:8080/healthz")
        self.assertRegex(text, r"(?m)^COPY conf/zhost\.docker\.conf /etc/zhost/zhost\.conf$")
        r = subprocess.run([ZHOST, "serve", "--check", "--conf", os.path.join(SRC, "conf/zhost.docker.conf")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("health on 0.0.0.0:8080", r.stdout)

    def test_systemd_unit(self):
        unit = read("ops/systemd/zhost.service")
        for d in ("User=zhost", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                  "ReadWritePaths=/var/lib/zhost -/etc/zhost/secrets/gmail", "Environment=ZHOST_STATE_DIR=/var/lib/zhost", "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=zhost"):
            self.assertRegex(unit, r"(?m)^%s$" % re.escape(d), d)
        self.assertRegex(unit, r"(?m)^ExecStart=/usr/local/bin/zhost serve --conf /etc/zhost/zhost.conf")
        analyze = shutil.which("systemd-analyze")
        if analyze:
            r = subprocess.run([analyze, "verify", os.path.join(SRC, "ops/systemd/zhost.service")],
                               capture_output=True, text=True)
            self.assertNotIn("Unknown key", r.stderr)
            self.assertNotIn("Unknown section", r.stderr)

    def test_default_configuration_is_the_runbooks_schedule(self):
        r = subprocess.run([ZHOST, "serve", "--check", "--conf", os.path.join(SRC, "conf/zhost.conf")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        plan = {l.split()[0]: l for l in r.stdout.splitlines()[1:]}
        want = {
            "qtickets": ("enabled", "*/15 * * * *"), "qtickets_refunds": ("enabled", "40 3 * * *"),
            "vk_ads": ("enabled", "0 0 * * *"),
            "direct": ("enabled", "10 0 * * *"), "gmail_ingest": ("disabled", "0 */4 * * *"),
            "alerts": ("enabled", "0 */2 * * *"), "backup_full": ("disabled", "30 2 * * *"),
            "backup_incr": ("disabled", "30 */4 * * *"), "backup_prune": ("disabled", "0 3 * * *"),
        }
        self.assertEqual(set(plan), set(want) | {"spool_replay"})
        for job, (state, sched) in want.items():
            self.assertRegex(plan[job], r"^%s\s+%s\s+%s\s+Europe/Moscow" % (job, state, re.escape(sched)))
        # the daemon delivers its spool by itself, at most every 5 minutes, backing off to an hour
        # while replays fail, each stopped after an hour
        self.assertRegex(plan["spool_replay"], r"^spool_replay\s+enabled\s+when spooled\s+zhost spool replay: "
                                               r".*at most every 300 s, up to 3600 s after failures "
                                               r"\(looks every 30 s; timeout 3600 s\)$")
        # one column each: the state starts at the same place on every line (qtickets_refunds is 16 long)
        self.assertEqual(len({re.search(r" (en|dis)abled ", l).start() for l in plan.values()}), 1, r.stdout)


if __name__ == "__main__":
    unittest.main()
