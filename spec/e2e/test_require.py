"""require() search path: next to the script, ZHOST_LUA_PATH, scripts/lib under the current
directory, and the error that lists where it looked. Real binary, dry runs, no ClickHouse."""
import os
import shutil
import subprocess
import tempfile
import unittest

from zhtest import ZHOST


class RequireTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zt-require-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, rel, text):
        path = os.path.join(self.tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_script(self, path, cwd, extra_env=None):
        env = dict(os.environ)
        env.pop("ZHOST_LUA_PATH", None)
        env.update(extra_env or {})
        return subprocess.run([ZHOST, "run", path, "--dry-run"], capture_output=True, text=True, cwd=cwd,
                              env=env, timeout=60)

    def test_zhost_lua_path_directories_in_order(self):
        self.write("one/m.lua", "return { who = 'one' }")
        self.write("two/m.lua", "return { who = 'two' }")
        self.write("two/only_two.lua", "return 42")
        spec = self.write("spec/s_spec.lua", "assert(require('m').who == 'one'); assert(require('only_two') == 42)\n"
                                             "print('required ok')")
        lp = os.path.join(self.tmp, "missing") + ":" + os.path.join(self.tmp, "one") + "::" + os.path.join(self.tmp, "two")
        r = self.run_script(spec, self.tmp, {"ZHOST_LUA_PATH": lp})
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("required ok", r.stdout)

    def test_scripts_lib_under_the_current_directory(self):
        self.write("scripts/lib/helper.lua", "return { n = 7 }")
        spec = self.write("spec/lua/h_spec.lua", "assert(require('helper').n == 7); print('cwd ok')")
        r = self.run_script(spec, self.tmp)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("cwd ok", r.stdout)
        # the same spec run from elsewhere does not find it
        r = self.run_script(spec, os.path.join(self.tmp, "spec"))
        self.assertNotEqual(r.returncode, 0)

    def test_the_scripts_own_lib_wins(self):
        self.write("scripts/lib/m.lua", "return 'own'")
        self.write("elsewhere/m.lua", "return 'path'")
        script = self.write("scripts/job.lua", "assert(require('m') == 'own'); print('own ok')")
        r = self.run_script(script, self.tmp, {"ZHOST_LUA_PATH": os.path.join(self.tmp, "elsewhere")})
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("own ok", r.stdout)

    def test_not_found_lists_the_places_tried(self):
        spec = self.write("spec/x_spec.lua", "require('nope')")
        r = self.run_script(spec, self.tmp, {"ZHOST_LUA_PATH": "/no/such/dir"})
        self.assertNotEqual(r.returncode, 0)
        out = r.stdout + r.stderr
        self.assertIn("module 'nope' not found in", out)
        self.assertIn("/no/such/dir/", out)
        self.assertIn("scripts/lib/", out)


if __name__ == "__main__":
    unittest.main()
