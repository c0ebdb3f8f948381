"""A project that runs no kvcheck test pays nothing for having kvcheck installed: neither importing
the plugin nor a pytest run without kvcheck tests loads torch or transformers."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers")


def test_importing_the_plugin_loads_no_torch():
    code = ("import sys, kvcheck, kvcheck.plugin, kvcheck.judge, kvcheck.store\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_without_kvcheck_tests_loads_no_torch(pytester):
    pytester.makepyfile(test_plain=f'''
import sys

def test_no_heavy_imports():
    assert [m for m in {HEAVY!r} if m in sys.modules] == []
''')
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)
    assert "kvcheck: model=smollm2-135m-instruct" in r.stdout.str()  # the plugin was loaded
