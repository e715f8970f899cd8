"""The package as users install it: a wheel that runs from any folder, one `radiogenomics`
command, optional extras named when missing, and a package without import circles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from radiogenomics import cli
from radiogenomics.config import EXIT_USER_ERROR

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "radiogenomics"
TINY = ["data.spatial_size=[16,16,16]", "data.batch_size=2", "data.n_folds=2",
        "data.num_workers=0", "data.prepare_workers=0", "trainer=cpu", "data.synthetic=null"]


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("HYDRA_FULL_ERROR", "_RG_FULL_ERROR_SET", "RADIOGENOMICS_HOME",
                          "PYTHONPATH")}
    return {**env, "WANDB_MODE": "offline", **extra}


# ---------------------------------------------------------------------------- import graph
def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that `path` imports, anywhere in it (lazy imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= submodules or ({target} & modules)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names} & modules
    return found - {name}


def import_circles() -> list[list[str]]:
    """Groups of package modules that import each other (strongly connected components)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, set(files)) for name, path in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_of_the_package_imports_a_module_that_imports_it_back() -> None:
    assert len(list(PACKAGE.rglob("*.py"))) > 50  # the scan reaches the package
    assert import_circles() == []


def test_the_import_check_finds_a_circle(tmp_path: Path, monkeypatch) -> None:
    """The check above can fail: two modules importing each other are reported."""
    fake = tmp_path / "radiogenomics"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("from radiogenomics import b\n")
    (fake / "b.py").write_text("def f():\n    from radiogenomics.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert import_circles() == [["radiogenomics.a", "radiogenomics.b"]]


# ---------------------------------------------------------------------------- the command
def test_radiogenomics_without_a_subcommand_lists_every_subcommand() -> None:
    result = subprocess.run([sys.executable, "-m", "radiogenomics", "--help"], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for name in ("train", "predict", "convert", "synthetic", "cv", "compare"):
        assert f"  {name} " in result.stdout


def test_an_unknown_subcommand_is_one_message_and_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "radiogenomics", "trian"], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown subcommand 'trian'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", [n for n, sub in cli.SUBCOMMANDS.items() if not sub.hydra])
def test_each_subcommand_answers_help(name: str) -> None:
    result = subprocess.run([sys.executable, "-m", "radiogenomics", name, "--help"], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage:" in result.stdout


# ---------------------------------------------------------------------------- extras
def _blocked_run(cwd: Path, blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`radiogenomics <args>` in a Python where the optional package `blocked` is missing."""
    code = (f"import sys; sys.modules[{blocked!r}] = None; "
            "from radiogenomics.cli import main; main()")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("blocked", "overrides", "extra"), [
    ("wandb", ["logger=wandb"], "wandb"),
    ("tensorboard", ["logger=tensorboard"], "tensorboard"),
    ("optuna", ["-m", "hparams_search=cnn3d_optuna", "hydra.sweeper.n_trials=1"], "sweep"),
])
def test_a_missing_extra_is_one_message_naming_it(tiny_cohort: Path, tmp_path: Path,
                                                  blocked: str, overrides: list[str],
                                                  extra: str) -> None:
    # one real epoch with the loggers on (debug configs turn them off); a sweep's -m first
    result = _blocked_run(tmp_path, blocked, "train", *overrides, f"data.root={tiny_cohort}",
                          *TINY, "trainer.max_epochs=1")
    output = result.stdout + result.stderr  # a job's errors go to its log (stdout)
    assert result.returncode == EXIT_USER_ERROR, output[-3000:]
    assert f"pip install 'radiogenomics[{extra}]'" in output
    assert "Traceback" not in output


def test_an_error_whose_cause_chain_loops_is_still_reported() -> None:
    """A user error wrapped in an exception whose context loops back (as re-raising inside
    handlers can make) is found, not chased forever."""
    from radiogenomics.config import user_error_of
    from radiogenomics.errors import ConfigError

    user = ConfigError("uncertainty=tta needs a random transform")
    outer = RuntimeError("wrapped")
    outer.__context__ = user
    user.__context__ = outer  # the loop
    assert user_error_of(outer) is user
    plain = ValueError("a bug")
    plain.__context__ = plain
    assert user_error_of(plain) is None


def test_a_missing_launcher_plugin_names_its_extra(tmp_path: Path) -> None:
    result = _blocked_run(tmp_path, "hydra_plugins.hydra_joblib_launcher", "train", "-m",
                          "hydra/launcher=joblib", "debug=fdr")
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    assert "pip install 'radiogenomics[sweep]'" in result.stderr


def test_the_default_install_needs_no_extra() -> None:
    """The core dependencies hold none of the extras' packages (a plain install trains)."""
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {Requirement(r).name.lower() for r in project["dependencies"]}
    assert not core & {"wandb", "tensorboard", "optuna", "submitit", "joblib",
                       "hydra-joblib-launcher", "hydra-submitit-launcher", "pylibjpeg-libjpeg"}
    assert set(project["optional-dependencies"]) >= {"wandb", "tensorboard", "sweep", "slurm",
                                                      "all", "libjpeg"}


def test_monai_is_bounded_to_the_versions_the_resampler_was_checked_on() -> None:
    """data/resample.py mirrors MONAI internals: the installed MONAI lies inside the bound
    (its equivalence tests, tests/data/test_resample.py, ran on it), and the internals it
    imports are still there."""
    import monai
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    monai_req = next(Requirement(r) for r in project["dependencies"] if r.startswith("monai"))
    assert any(spec.operator == "<" for spec in monai_req.specifier)
    assert Version(monai.__version__.split("+")[0]) in monai_req.specifier
    from monai.data.utils import AFFINE_TOL
    from monai.utils import LazyAttr

    assert AFFINE_TOL > 0 and {"AFFINE", "SHAPE", "PADDING_MODE", "INTERP_MODE"} <= {
        attr.name for attr in LazyAttr}


def test_a_run_trained_before_the_redesign_names_classes_that_still_load(
        tmp_path: Path) -> None:
    """A run directory whose saved config names a class at its old home reads with the new
    one, and every class such a config can name imports."""
    import importlib

    from omegaconf import OmegaConf

    from radiogenomics.runs import MOVED_TARGETS, RUN_CONFIG, read_config

    OmegaConf.save({"model": {"_target_": "radiogenomics.models.series.SeriesModule"},
                    "data": {"_target_": "radiogenomics.data.series.SeriesDataModule"},
                    "callbacks": {"oof": {"_target_": "radiogenomics.cv.OutOfFoldPredictions"}}},
                   tmp_path / RUN_CONFIG)
    config = read_config(tmp_path)
    assert config.model._target_ == "radiogenomics.models.series_classifier.SeriesModule"
    assert config.callbacks.oof._target_ == "radiogenomics.callbacks.OutOfFoldPredictions"
    for target in MOVED_TARGETS.values():
        module, name = target.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name)


# ---------------------------------------------------------------------------- the wheel
@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the tree (no network: the build backend of this environment)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(ROOT)], check=True, timeout=600,
                   env=_env())
    return next(out.glob("radiogenomics-*.whl"))


def test_the_wheel_holds_the_configs_the_licence_and_the_command(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "radiogenomics/conf/train.yaml" in names
    assert "radiogenomics/conf/hydra/launcher/slurm.yaml" in names
    assert "radiogenomics/conf/model/cnn3d.yaml" in names
    assert "radiogenomics/py.typed" in names
    assert "hydra_plugins/radiogenomics_optuna/optuna_sweeper.py" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "radiogenomics = radiogenomics.cli:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; its dependencies are this environment's
    (a .pth line), the package itself only the wheel's."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--no-index", "--quiet", str(wheel)], check=True, timeout=600,
                   env=_env())
    return venv


def test_the_installed_package_is_the_wheels_not_the_checkout(installed: Path,
                                                              tmp_path: Path) -> None:
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import radiogenomics, radiogenomics.conf; print(radiogenomics.__file__)"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True)
    assert str(installed) in result.stdout and str(ROOT) not in result.stdout


def test_installed_wheel_composes_its_config_under_the_current_folder(installed: Path,
                                                                     tmp_path: Path) -> None:
    """Both entry points of the installed wheel compose the packaged configs from an empty
    folder, with data and logs under that folder, or under RADIOGENOMICS_HOME when set, and
    write nothing while only printing the config (the slow test below trains)."""
    home, other = tmp_path / "empty", tmp_path / "elsewhere"
    for program, folder, env, root in (
            ([str(installed / "bin" / "radiogenomics")], home, _env(), home),
            ([str(installed / "bin" / "python"), "-m", "radiogenomics"], other,
             {**_env(), "RADIOGENOMICS_HOME": str(home)}, home)):
        folder.mkdir()
        result = subprocess.run([*program, "train", "debug=fdr", "--cfg", "job", "--resolve"],
                                cwd=folder, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert f"data_dir: {root.resolve()}/data" in result.stdout
        assert f"log_dir: {root.resolve()}/logs" in result.stdout
        assert not any(folder.iterdir())


@pytest.mark.slow
def test_installed_wheel_trains_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    """`radiogenomics train debug=fdr` and `python -m radiogenomics train debug=fdr` exactly as
    written, each from an empty folder: data and logs under the folder, or under
    RADIOGENOMICS_HOME when set (the second run, which reuses the first one's cohort)."""
    home, other = tmp_path / "empty", tmp_path / "elsewhere"
    for program, folder, env in (
            ([str(installed / "bin" / "radiogenomics")], home, _env()),
            ([str(installed / "bin" / "python"), "-m", "radiogenomics"], other,
             {**_env(), "RADIOGENOMICS_HOME": str(home)})):
        folder.mkdir()
        result = subprocess.run([*program, "train", "debug=fdr"], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "val/auc" in result.stdout + result.stderr
    runs = list((home / "logs").glob("*/runs/*/config.yaml"))  # fdr writes no checkpoint
    assert len(runs) == 2, sorted(p.relative_to(home) for p in home.rglob("*"))[:40]
    assert (home / "data" / "synthetic").is_dir()
    assert not any(other.iterdir())  # everything went to RADIOGENOMICS_HOME


def test_the_readme_layout_names_every_module_of_the_package() -> None:
    """README's "Layout of the code" is the map: every module of the package is on it."""
    import re

    text = (ROOT / "README.md").read_text()
    layout = text.split("## Layout of the code\n", 1)[1].split("\n## ", 1)[0]
    package = ROOT / "radiogenomics"
    missing = [str(path.relative_to(ROOT)) for path in sorted(package.rglob("*.py"))
               if path.name != "__init__.py"
               and not re.search(rf"(?<![\w.]){re.escape(path.stem)}\b", layout)]
    assert not missing, f"README's Layout of the code does not name: {missing}"
