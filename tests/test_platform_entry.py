"""The `platform` entry package must stand in for the stdlib module completely, and stay a thin layer."""

import importlib.util
import pathlib
import re
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _stdlib_platform():
    path = pathlib.Path(sysconfig.get_paths()["stdlib"]) / "platform.py"
    spec = importlib.util.spec_from_file_location("stdlib_platform_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_platform_here_is_the_project_package():
    import platform

    assert pathlib.Path(platform.__file__).resolve() == ROOT / "platform" / "__init__.py"


def test_every_stdlib_name_is_reexported_and_works():
    import platform

    stdlib = _stdlib_platform()
    missing = [name for name in vars(stdlib) if not name.startswith("__") and not hasattr(platform, name)]
    assert missing == []
    assert platform.system() == stdlib.system()
    assert platform.uname() == stdlib.uname()
    assert platform.python_version() == stdlib.python_version()
    assert platform.machine() and platform.platform()
    assert set(stdlib.__all__ if hasattr(stdlib, "__all__") else []) <= set(dir(platform))


def test_uname_pickles_like_the_stdlib_one():
    import pickle
    import platform

    assert pickle.loads(pickle.dumps(platform.uname())) == platform.uname()


def test_libraries_that_import_platform_work_under_the_entry_layer():
    code = "import platform, torch, ray, transformers, mlflow; print(platform.__file__, platform.system())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert str(ROOT / "platform") in out.stdout


def test_entry_point_help_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "platform.search", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--tracking-uri" in out.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "shrinktune").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_never_imports_the_entry_layer(path):
    text = path.read_text()
    assert "from platform." not in text and "import platform." not in text


@pytest.mark.parametrize("room", ["data", "models", "training", "measure"])
def test_model_rooms_do_not_import_orchestration(room):
    for path in (ROOT / "shrinktune" / room).rglob("*.py"):
        text = path.read_text()
        for banned in ("import ray", "from ray", "import optuna", "from optuna", "import mlflow", "from mlflow"):
            assert banned not in text, f"{path} imports {banned.split()[-1]}"


def test_pareto_help_is_fast_and_imports_neither_mlflow_nor_torch():
    out = subprocess.run([sys.executable, "-m", "platform.pareto", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--pick" in out.stdout and "--register" in out.stdout
    code = "import sys, shrinktune.pick; print(sorted({'mlflow', 'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_pick_package_keeps_its_entry_point():
    import shrinktune.pick
    import shrinktune.pick.cli

    assert shrinktune.pick.main is shrinktune.pick.cli.main  # [project.scripts] and older `shrinktune.pick:main`


@pytest.mark.parametrize("room, banned", [("tracking", ("search", "pick")), ("search", ("pick",))])
def test_tracking_and_search_do_not_import_the_picker(room, banned):
    imports = re.compile(r"^\s*(?:from|import)\s+shrinktune\.(\w+)", re.MULTILINE)
    for path in (ROOT / "shrinktune" / room).rglob("*.py"):
        found = set(imports.findall(path.read_text())) & set(banned)
        assert not found, f"{path.relative_to(ROOT)} imports shrinktune.{found.pop()}"


@pytest.mark.parametrize("command", ["search", "pareto", "submit"])
def test_console_script_offers_every_command_the_search_prints(capsys, command):
    """`shrinktune <command>` stands in for `python -m platform.<command>` outside the repository root, where the
    search prints it (`shrinktune.cli.entry_command`)."""
    from shrinktune.cli import main

    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "usage: " in capsys.readouterr().out


def test_the_mlflow_model_code_is_never_imported_by_the_library():
    """`shrinktune/pick/model_entry.py` registers a model with MLflow when run: only MLflow runs it, on loading."""
    imports = re.compile(r"^\s*(?:from|import)\s+[\w.]*model_entry|^\s*from\s+[\w.]+\s+import\s+.*\bmodel_entry\b",
                         re.MULTILINE)
    for path in (ROOT / "shrinktune").rglob("*.py"):
        assert not imports.search(path.read_text()), path
