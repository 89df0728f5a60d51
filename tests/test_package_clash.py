"""``agents.package_clash``: another installed distribution with a top-level ``agents`` (the OpenAI Agents
SDK, ``openai-agents``) stops ``import agents`` and the command line with a message saying what to do.

Fake distributions are ``*.dist-info`` folders in a temporary directory, as pip writes them: a wheel built
by hatchling (as ``openai-agents`` is) has METADATA and a RECORD but no ``top_level.txt``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from agents.package_clash import (
    OWN_DISTRIBUTION,
    PackageClashError,
    clash_message,
    clashing_distributions,
    normalize_name,
)

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "lmrl-gym and openai-agents both install the top-level package `agents`"


def fake_distribution(
    site: Path, name: str, record: list[str] | None = None, top_level: str | None = None
) -> Path:
    """Write ``<name>-0.1.dist-info`` with METADATA, and RECORD / top_level.txt when given, into ``site``."""
    folder = site / f"{name.replace('-', '_')}-0.1.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.4\nName: {name}\nVersion: 0.1\n")
    if record is not None:
        (folder / "RECORD").write_text("".join(f"{path},sha256=x,1\n" for path in record))
    if top_level is not None:
        (folder / "top_level.txt").write_text(top_level)
    return site


def openai_agents(site: Path) -> Path:
    """``openai-agents`` as its wheel installs it (the first lines of the real RECORD)."""
    return fake_distribution(
        site,
        "openai-agents",
        record=["agents/__init__.py", "agents/_config.py", "openai_agents-0.1.dist-info/RECORD"],
    )


def test_no_clash_in_this_environment() -> None:
    """Our own distribution provides ``agents`` too (editable installs included) and must not count."""
    assert clashing_distributions() == []
    try:
        own = metadata.distribution(OWN_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.skip("lmrl-gym is not installed here (run from a source tree)")
    assert "agents" in (own.read_text("top_level.txt") or "").split()


@pytest.mark.parametrize("spelling", ["lmrl-gym", "lmrl_gym", "LMRL.Gym"])
def test_our_own_distribution_is_skipped_however_spelled(tmp_path: Path, spelling: str) -> None:
    fake_distribution(tmp_path, spelling, record=["agents/__init__.py"], top_level="agents\nlmrl_gym\n")
    assert clashing_distributions(path=[str(tmp_path)]) == []


def test_openai_agents_wheel_is_a_clash(tmp_path: Path) -> None:
    assert clashing_distributions(path=[str(openai_agents(tmp_path))]) == ["openai-agents"]


def test_openai_agents_editable_install_is_found_by_name(tmp_path: Path) -> None:
    # An editable install's RECORD lists a .pth file and a finder, not the package.
    record = ["__editable__.openai_agents-0.1.pth", "openai_agents-0.1.dist-info/RECORD"]
    fake_distribution(tmp_path, "openai-agents", record=record)
    assert clashing_distributions(path=[str(tmp_path)]) == ["openai-agents"]


def test_any_distribution_with_a_top_level_agents_is_a_clash(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "Some_Agents", top_level="agents\n")  # setuptools: top_level.txt
    fake_distribution(tmp_path, "module-agents", record=["agents.py", "module_agents-0.1.dist-info/RECORD"])
    # Names that merely start with "agents" are other packages.
    fake_distribution(tmp_path, "agents-extra", record=["agents_extra/__init__.py", "agentsx.py"])
    fake_distribution(tmp_path, "tf-agents", top_level="tf_agents\n")
    assert clashing_distributions(path=[str(tmp_path)]) == ["module-agents", "some-agents"]


def test_message_names_both_and_the_fix() -> None:
    message = clash_message(["openai-agents"])
    assert message.startswith(MESSAGE)
    assert "separate virtual environments" in message and "uninstall openai-agents" in message
    assert issubclass(PackageClashError, ImportError)
    assert normalize_name("OpenAI_Agents") == normalize_name("openai.agents") == "openai-agents"


def run_python(args: list[str], pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def test_import_agents_stops_with_the_message(tmp_path: Path) -> None:
    site = openai_agents(tmp_path / "site")
    result = run_python(["-c", "import agents"], [site], cwd=REPO)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"agents.package_clash.PackageClashError: {MESSAGE}"), result.stderr


def test_command_line_stops_with_the_message(tmp_path: Path) -> None:
    """The command line checks before importing the rest of ``agents``, which matters where the other
    distribution's ``agents/__init__.py`` won (it never runs our check) but our other files are there, as
    in one ``site-packages/agents`` folder that both wrote into."""
    site = openai_agents(tmp_path / "site")
    mixed = tmp_path / "mixed" / "agents"
    mixed.mkdir(parents=True)
    (mixed / "__init__.py").write_text(f"__path__.append({str(REPO / 'agents')!r})  # the other's __init__\n")
    for pythonpath, cwd in (([site], REPO), ([mixed.parent, site, REPO], tmp_path)):
        result = run_python(["-m", "agents.cli", "train", "--help"], pythonpath, cwd=cwd)
        assert result.returncode == 1
        assert f"PackageClashError: {MESSAGE}" in result.stderr.strip().splitlines()[-1], result.stderr
        assert "usage:" not in result.stdout
