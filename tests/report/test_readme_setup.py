"""The README's two set-up commands work on a Python that refuses ``pip install`` (PEP 668).

Running them for real takes minutes and a network or a wheel cache; that is
done by hand in a fresh clone (see the commit that added this test).  Here:
their shape, which is what broke on an externally managed system Python.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Set-up section has no bash block"
    return [line for line in block[1].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _steps(command: str) -> list[list[str]]:
    return [shlex.split(step) for step in command.split("&&")]


def test_the_readme_has_two_setup_commands():
    assert len(_setup_commands()) == 2


def test_every_pip_install_runs_inside_a_virtual_environment_the_command_makes():
    for command in _setup_commands():
        steps = _steps(command)
        made = [i for i, s in enumerate(steps) if s[:3] == ["python3", "-m", "venv"]]
        activated = [i for i, s in enumerate(steps) if s[:1] == ["."] and s[1].endswith("/bin/activate")]
        installs = [i for i, s in enumerate(steps) if "install" in s and ("pip" in s or "pip" in s[0])]
        assert made and activated and installs, command
        venv = steps[made[0]][3]
        assert steps[activated[0]][1] == f"{venv}/bin/activate", command
        assert made[0] < activated[0] < min(installs), command
        # After activation nothing calls the system interpreter's pip by name.
        assert not any(s[:3] == ["python3", "-m", "pip"] for s in steps), command


def test_ci_runs_the_readme_test_command():
    test_command = _steps(_setup_commands()[1])[-1]
    assert test_command == ["tox"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec \S*tox$", ci, re.M), ci
