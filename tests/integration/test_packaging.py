"""The folder mapping survives installation: in a fresh virtualenv, editable and from a wheel,
`flotilla.operator`, `flotilla.router` and `flotilla.placement` come from operator/, router/ and
placement/, `import operator` is still the standard library, and `flotilla --help` works.

To stay fast and mostly offline, the project is installed with `--no-deps --no-build-isolation`
and the fresh environment sees the dependencies already installed in .venv through a .pth file
(appended to sys.path, after the fresh site-packages; .venv's own editable finder is not loaded
that way). The build back-end (setuptools>=77) is installed into the fresh environment by pip.
The sources are copied first so that the build never writes into the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "flotilla", "operator", "router", "placement")

PROBE = """
import json, operator, sys, sysconfig
import flotilla, flotilla.operator, flotilla.router, flotilla.placement
print(json.dumps({
    "flotilla": flotilla.__file__,
    "operator": flotilla.operator.__file__,
    "router": flotilla.router.__file__,
    "placement": flotilla.placement.__file__,
    "stdlib_operator": operator.__file__,
    "stdlib": sysconfig.get_paths()["stdlib"],
    "has_attrgetter": hasattr(operator, "attrgetter"),
}))
"""


def run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    env = root / "venv"
    run([sys.executable, "-m", "venv", str(env)], root)
    run(
        [str(env / "bin/pip"), "install", "-q", "--disable-pip-version-check", "setuptools>=77", "wheel"],
        root,
    )
    site = Path(
        run(
            [str(env / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root
        ).strip()
    )
    (site / "_flotilla_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


@pytest.fixture
def source(tmp_path: Path) -> Path:
    copy = tmp_path / "src"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, copy / name, ignore=ignore)
        else:
            shutil.copy2(path, copy / name)
    return copy


def install(venv: Path, *target: str) -> None:
    pip = [
        str(venv / "bin/pip"),
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
    ]
    run([*pip, *target], venv.parent)


def probe(venv: Path, cwd: Path) -> dict[str, str]:
    result: dict[str, str] = json.loads(run([str(venv / "bin/python"), "-c", PROBE], cwd))
    return result


def check_cli(venv: Path, cwd: Path) -> None:
    out = run([str(venv / "bin/flotilla"), "--help"], cwd)
    for command in ("operator", "router", "placement", "cluster", "demo", "bench"):
        assert command in out


def check_stdlib_operator(found: dict[str, str]) -> None:
    assert found["has_attrgetter"]
    assert Path(found["stdlib_operator"]).parent == Path(found["stdlib"])


def test_editable_install_maps_component_folders(venv: Path, source: Path, tmp_path: Path) -> None:
    install(venv, "-e", str(source))
    try:
        elsewhere = tmp_path / "elsewhere"  # not the source root: nothing found through the cwd
        elsewhere.mkdir()
        found = probe(venv, elsewhere)
        assert Path(found["flotilla"]) == source / "flotilla/__init__.py"
        for component in ("operator", "router", "placement"):
            assert Path(found[component]) == source / component / "__init__.py"
        check_stdlib_operator(found)
        check_cli(venv, elsewhere)
    finally:
        run([str(venv / "bin/pip"), "uninstall", "-q", "-y", "flotilla"], venv.parent)


def test_wheel_install_maps_component_folders(venv: Path, source: Path, tmp_path: Path) -> None:
    install(venv, str(source))
    try:
        site = Path(
            run(
                [str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                tmp_path,
            ).strip()
        )
        found = probe(venv, tmp_path)
        assert Path(found["flotilla"]) == site / "flotilla/__init__.py"
        for component in ("operator", "router", "placement"):
            assert Path(found[component]) == site / "flotilla" / component / "__init__.py"
        assert not (site / "operator").exists()  # no top-level package shadows the stdlib
        assert (site / "flotilla/localcluster/kwok_stages.yaml").is_file()  # package data ships
        check_stdlib_operator(found)
        check_cli(venv, tmp_path)
    finally:
        run([str(venv / "bin/pip"), "uninstall", "-q", "-y", "flotilla"], venv.parent)
