"""Safety: patient identifiers never leave the DICOM files, checkpoints cannot run code, and
paths are only ever paths.

The identifiers of a DICOM header (name, id, dates, institution) must not reach a run's
files, W&B, the logs, the cache or converted NIfTI files. Checkpoints are read with
``torch.load(weights_only=True)``. Data paths, label tables and image headers are data:
nothing in them is evaluated, instantiated or handed to a shell. Configs are code (their
``_target_`` names a Python callable) and only come from conf/, the command line or a run
directory the user chose.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import io
import logging
from pathlib import Path

import pydicom
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from radiogenomics import config as rc
from radiogenomics.data.convert import main as convert_main
from radiogenomics.data.readers import load_volume
from radiogenomics.errors import CheckpointError
from radiogenomics.train import train
from tests.conftest import compose_train
from tests.test_bad_inputs import cohort_view

ROOT = Path(__file__).resolve().parents[1]
PATIENT = "00004"
IDENTIFIERS = {
    "PatientName": "DOE^JOHNATHAN",
    "PatientID": "PHI-ID-8841726",
    "PatientBirthDate": "19700101",
    "StudyDate": "20210412",
    "InstitutionName": "SAINT ELSEWHERE HOSPITAL",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "AccessionNumber": "ACC99172635",
}
"""Recognisable identifiers written into every slice of one patient."""
NEEDLES = [v.lower().encode() for v in IDENTIFIERS.values()] + [b"johnathan", b"elsewhere"]


def leaks(data: bytes) -> list[bytes]:
    """The identifiers found in `data` (case-insensitive; gzip content is searched too)."""
    if data[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError):
            data = gzip.decompress(data)
    data = data.lower()
    return [needle for needle in NEEDLES if needle in data]


def leaking_files(folder: Path) -> dict[str, list[bytes]]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            hits = leaks(path.read_bytes())
            if hits:
                found[str(path)] = hits
    return found


@pytest.fixture(scope="module")
def cache_dir(tiny_cohort: Path) -> Path:
    """The preprocessing cache shared by the reliability suite."""
    return tiny_cohort.parent / "reliability-cache"


@pytest.fixture(scope="module")
def phi_cohort(tiny_cohort: Path, tmp_path_factory) -> Path:
    """The tiny cohort with one patient whose slices carry identifiers, as scanners write."""
    root = cohort_view(tiny_cohort, tmp_path_factory.mktemp("phi") / "cohort", copies=[PATIENT])
    for path in (root / "rsna" / "train" / PATIENT).rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword, value in IDENTIFIERS.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
    return root


def compose_run(cohort: Path, run: Path, cache: Path, *overrides: str) -> DictConfig:
    """A fast CPU train config writing to `run` (conftest's train_cfg, for module fixtures)."""
    cfg = compose_train([f"data.root={cohort}", f"data.cache_dir={cache}", "data.synthetic=null",
                         "data.spatial_size=[16,16,16]", "data.batch_size=2", "data.n_folds=2",
                         "data.num_workers=0", "data.prepare_workers=0", "trainer=cpu",
                         "trainer.max_epochs=1", "model.net.widen_factor=0.25",
                         f"paths.root_dir={run.parent}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(run)
        cfg.paths.log_dir = str(run.parent / "logs")
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def phi_run(phi_cohort: Path, cache_dir: Path, tmp_path_factory) -> tuple[Path, str]:
    """A run on the cohort with identifiers, logging to CSV and W&B (offline), with every
    log record and everything printed captured; returns the run directory and that text."""
    run = tmp_path_factory.mktemp("phi-run") / "run"
    cfg = compose_run(phi_cohort, run, cache_dir, "logger=wandb",
                      "callbacks=default", "~callbacks.progress_bar")
    printed, records = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            train(cfg)
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)
    return run, printed.getvalue() + records.getvalue()


def test_identifiers_are_in_the_source_files(phi_cohort: Path) -> None:
    """The control of the search below: it finds the identifiers where they are."""
    sources = leaking_files(phi_cohort / "rsna" / "train" / PATIENT)
    assert sources and all(set(hits) == set(NEEDLES) for hits in sources.values())


def test_identifiers_never_reach_run_files_wandb_logs_or_cache(phi_run, cache_dir) -> None:
    run, captured = phi_run
    assert (run / "wandb").is_dir() and list(run.rglob("*.ckpt"))
    assert PATIENT in (run / "splits.json").read_text()  # the patient took part
    assert leaking_files(run) == {}
    assert leaks(captured.encode()) == []
    assert leaking_files(cache_dir) == {}


def test_identifiers_never_reach_the_reader_or_converted_files(phi_cohort, tmp_path,
                                                               capsys) -> None:
    patient = phi_cohort / "rsna" / "train" / PATIENT
    volume = load_volume(patient / "FLAIR", patient=PATIENT)
    assert leaks(repr(volume.meta).encode()) == []
    assert convert_main([str(patient), str(tmp_path / "nifti"), "--workers", "1"]) == 0
    assert len(list((tmp_path / "nifti").rglob("*.nii.gz"))) == 4
    assert leaking_files(tmp_path / "nifti") == {}
    assert leaks(capsys.readouterr().out.encode()) == []


def test_checkpoints_of_train_py_load_with_weights_only(phi_run) -> None:
    run, _ = phi_run
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in checkpoints} >= {"last.ckpt"} and len(checkpoints) >= 2
    for path in checkpoints:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["state_dict"] and state["global_step"] > 0


class RunsCode:
    """What an attacker would pickle: loading it calls Path.touch on a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_checkpoint_that_would_run_code_is_refused(train_cfg, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        train(train_cfg(f"ckpt_path={evil}"))
    assert not marker.exists()


SHELL_NAME = "cohort; touch PWNED & echo $(touch PWNED2) | cat >out `touch PWNED3` *?! [a] #c"


def test_paths_with_shell_metacharacters_are_only_paths(tiny_cohort, cache_dir, tmp_path,
                                                        monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    weird = tmp_path / SHELL_NAME
    weird.symlink_to(tiny_cohort)
    cfg = compose_train([f"data.root='{weird}'", "data.synthetic=null",
                         f"data.cache_dir={cache_dir}", "data.spatial_size=[16,16,16]",
                         "data.n_folds=2", "data.num_workers=0", "data.prepare_workers=0"])
    assert cfg.data.root == str(weird)
    datamodule = rc.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    assert all(str(weird) in case["images"]["T1wCE"] for case in datamodule.train_cases)
    out = tmp_path / f"{SHELL_NAME}-nifti"
    assert convert_main([str(weird / "rsna" / "train" / PATIENT), str(out), "--workers", "1"]) == 0
    assert not [p for p in tmp_path.rglob("PWNED*")] and not (ROOT / "PWNED").exists()


def _unsafe_calls(path: Path, root: Path = ROOT) -> list[str]:
    """Calls that could run code from data: eval/exec, shells, pickle, unsafe YAML, or
    torch.load without weights_only=True."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        shell = keywords.get("shell")
        weights_only = keywords.get("weights_only")
        if (
            name in ("eval", "exec", "os.system", "os.popen", "pickle.load", "pickle.loads",
                     "yaml.load", "yaml.unsafe_load")
            or (isinstance(shell, ast.Constant) and shell.value is True)
            or (name == "torch.load" and not (isinstance(weights_only, ast.Constant)
                                              and weights_only.value is True))
        ):
            problems.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)[:80]}")
    return problems


def test_no_code_runs_data_eval_shell_pickle_or_unsafe_torch_load() -> None:
    sources = [*(ROOT / "radiogenomics").rglob("*.py"),
               *(p for p in (ROOT / "train.py", ROOT / "predict.py") if p.is_file())]
    problems = [problem for path in sources for problem in _unsafe_calls(path)]
    assert problems == []


def test_unsafe_call_scan_finds_what_it_looks_for(tmp_path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import torch, subprocess\ntorch.load('x')\n"
                      "subprocess.run('ls', shell=True)\neval('1')\nmodel.eval()\n"
                      "torch.load('y', weights_only=True)\n")
    assert [p.split(": ", 1)[1] for p in _unsafe_calls(sample, tmp_path)] == [
        "torch.load('x')", "subprocess.run('ls', shell=True)", "eval('1')"]
