"""noise_scale._python: on Python < 3.11 every command says so in one line and exits 2.

The commands are run in a subprocess whose ``sys.version_info`` is set to 3.10.12 before
the entry point runs: the check must come before absl and JAX are imported, and must
stop the command there.
"""

import os
import subprocess
import sys

import pytest

from noise_scale import _python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY310 = (3, 10, 12, "final", 0)


def test_message_names_the_running_version_and_the_minimum():
    message = _python.unsupported(PY310)
    assert "Python 3.10.12" in message and "needs Python 3.11 or later" in message
    assert "\n" not in message and message.startswith("error: ")


@pytest.mark.parametrize("version", [(3, 11, 0, "final", 0), (3, 12, 4, "final", 0),
                                     (4, 0, 0, "alpha", 1)])
def test_supported_versions_pass(version):
    assert _python.unsupported(version) == ""


def test_require_supported_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "version_info", PY310)
    with pytest.raises(SystemExit) as info:
        _python.require_supported()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3.10.12" in err and "3.11" in err


def test_require_supported_is_silent_on_this_python(capsys):
    _python.require_supported()  # the tests run on >= 3.11 (pyproject's requires-python)
    assert capsys.readouterr() == ("", "")


RUN_AS_PY310 = """
import runpy, sys
sys.version_info = {version!r}
sys.argv = [{module!r}, "--config=configs/mnist1d.py:increase_batch", "--workdir=/nonexistent"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
print(code, "jax" in sys.modules, "absl" in sys.modules)
"""


@pytest.mark.parametrize("module", ["noise_scale.main", "noise_scale.reproduce",
                                    "noise_scale.schedule"])
def test_each_command_checks_before_absl_and_jax(module):
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-c", RUN_AS_PY310.format(version=PY310, module=module)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.stdout.split() == ["2", "False", "False"], (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "this is Python 3.10.12" in r.stderr
