"""The README is the test: every command of its code blocks and of its command-line contracts
table runs as written, as a subprocess in a copy of the repository.

Placeholders (`DIR`, `<run>`, ...) are filled with a tiny cohort written by the README's own
synthetic-cohort command, or with a run that an earlier README command made; training
commands get `debug=smoke` appended (one epoch of two batches, every output file), nothing
else (Optuna sweeps: `hydra.sweeper.n_trials=2`; each also runs as written under `-m slow`).
A README command without a case here fails `test_every_readme_command_has_a_case`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SMOKE = "debug=smoke"
TIMEOUT = 900


def _code_block_commands(text: str) -> list[str]:
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def _table_commands(text: str) -> list[str]:
    section = text.split("## Command-line contracts", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.replace("\\|", "\x00").split("|")[1].replace("\x00", "|")
        spans = re.findall(r"`([^`]+)`", cell)
        first = spans[0]
        commands.append(first)
        for variant in spans[1:]:  # `a` / `key=value`, or (`other`, ...) values of a's last key
            if "=" in variant:
                commands.append(f"{first.rsplit(' ', 1)[0]} {variant}")
            else:
                commands.append(f"{first.rsplit('=', 1)[0]}={variant}")
    return commands


def readme_commands() -> list[str]:
    """Every command of README.md, once each, in the order they appear."""
    text = README.read_text()
    return list(dict.fromkeys(_code_block_commands(text) + _table_commands(text)))


# --- the places the commands run in and the runs they make -------------------------------


_GENERATED = {".git", ".venv", "venv", "data", "logs", "outputs", "multirun", "wandb", ".gl",
              ".whl", "optuna.db"}


def _not_source(folder: str, names: list[str]) -> set[str]:
    """What a copy of the repository leaves out: what runs wrote, caches, environments."""
    top = Path(folder).resolve() == ROOT
    return {name for name in names if (top and name in _GENERATED) or name in (
        "__pycache__", ".pytest_cache", ".ruff_cache") or name.endswith(".egg-info")}


class Workspace:
    """A copy of the repository where the commands run, a tiny cohort, and the runs made so far
    (each made once, by the README command that makes it)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.repo = base / "repo"
        shutil.copytree(ROOT, self.repo, ignore=_not_source)
        self.env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("RADIOGENOMICS_HOME", None)
        self.env.pop("HYDRA_FULL_ERROR", None)
        self.made: dict[str, Path] = {}

    def run(self, command: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the repository copy; check its exit status."""
        args = shlex.split(command)
        if args[0] in ("python", "python3"):
            args[0] = sys.executable
        elif args[0] == "radiogenomics":  # the console script of this environment's install
            args[0] = str(Path(sys.executable).parent / "radiogenomics")
        result = subprocess.run(args, cwd=self.repo, env=self.env, capture_output=True,
                                text=True, timeout=TIMEOUT)
        output = result.stdout + result.stderr
        assert result.returncode == rc, (
            f"`{command}` exited {result.returncode}, expected {rc}:\n{output[-4000:]}")
        return result

    def newest(self, folder: str, before: set[Path]) -> Path:
        """The folder that a command added under `folder` (relative to the repo copy)."""
        added = set((self.repo / folder).glob("*")) - before
        assert len(added) == 1, f"expected one new folder in {folder}, found {sorted(added)}"
        return added.pop()

    def listing(self, folder: str) -> set[Path]:
        return set((self.repo / folder).glob("*"))

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.repo))

    # the tiny cohort, by the README's own synthetic command
    @property
    def cohort(self) -> Path:
        if "cohort" not in self.made:
            out = self.base / "cohort"
            self.run(f"python -m radiogenomics.data.synthetic --out {out} --patients 12 --seed 3 "
                     "--format both --size 32")
            self.made["cohort"] = out
        return self.made["cohort"]

    def train(self, key: str, command: str, task: str = "train") -> Path:
        """Run a training command once; the run (or multirun) folder it made."""
        key = f"run:{key}"
        if key not in self.made:
            args = command.replace("python -m radiogenomics ", "radiogenomics ", 1)
            multirun = " -m " in f" {args} " or "cv=" in args
            folder = f"logs/{task}/{'multiruns' if multirun else 'runs'}"
            before = self.listing(folder)
            self.run(command if " debug=" in command else f"{command} {SMOKE}")
            self.made[key] = self.newest(folder, before)
        return self.made[key]

    @property
    def default_run(self) -> Path:
        return self.train("default", "python train.py")

    @property
    def cv_run(self) -> Path:
        return self.train("cv", "python train.py -m data.fold=0,1,2,3,4")

    @property
    def segmenter_run(self) -> Path:
        return self.train("unet", "python train.py model=unet")

    @property
    def png_cohort(self) -> Path:
        if "png" not in self.made:
            from tests.conftest import write_png_series

            out = self.base / "png"
            for patient in sorted((self.cohort / "rsna" / "train").iterdir()):
                for sequence in ("T1wCE", "FLAIR"):
                    write_png_series(patient / sequence, out / patient.name / sequence)
            shutil.copy(self.cohort / "rsna" / "train_labels.csv", out / "train_labels.csv")
            self.made["png"] = out
        return self.made["png"]

    @property
    def png_run(self) -> Path:
        return self.train("png", "python train.py model=multiscale data=png "
                                 f"data.root={self.png_cohort}")

    @property
    def hgg_lgg(self) -> Path:
        """The tiny cohort's BraTS cases in BraTS 2018/2019 folders: HGG/ and LGG/."""
        if "hgg_lgg" not in self.made:
            out = self.base / "hgg_lgg"
            manifest = json.loads((self.cohort / "cohort.json").read_text())
            for case in manifest["cases"]:
                source = self.cohort / "brats" / f"BraTS2021_{case['id']}"
                if source.is_dir():
                    shutil.copytree(source, out / ("HGG" if case["grade"] else "LGG") / source.name)
            self.made["hgg_lgg"] = out
        return self.made["hgg_lgg"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"))


# --- what each command must do ------------------------------------------------------------


def _resumes_finished_run(run: Path) -> None:
    """A run resumed from a finished run's checkpoint: nothing left to train, tested, done."""
    assert (run / "config.yaml").is_file() and (run / "run_info.json").is_file()


def _has_checkpoints(run: Path) -> None:
    for name in ("config.yaml", "run_info.json", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), f"{run} has no {name}"


def _has_run_outputs(run: Path) -> None:
    for name in ("config.yaml", "run_info.json", "csv/metrics.csv", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), f"{run} has no {name}"


def _submission_is_complete(out: Path, patients: int | None = None) -> None:
    submission = pd.read_csv(out / "submission.csv", dtype={"BraTS21ID": str})
    assert list(submission.columns) == ["BraTS21ID", "MGMT_value"]
    assert len(submission) and np.isfinite(submission.MGMT_value).all()
    assert submission.MGMT_value.between(0, 1).all()
    if patients is not None:
        assert len(submission) == patients


def _test_patients(cohort: Path) -> int:
    return len(list((cohort / "rsna" / "test").iterdir()))


def _train_run(key: str, command: str, task: str = "train") -> Callable[[Workspace, str], None]:
    def check(ws: Workspace, filled: str) -> None:
        _has_run_outputs(ws.train(key, filled, task))
    return check


def _trainer_needs_gpu(ws: Workspace, filled: str) -> None:
    import torch

    if torch.cuda.is_available():
        _has_run_outputs(ws.train(filled, filled))
        return
    result = ws.run(f"{filled} {SMOKE}", rc=2)
    output = result.stdout + result.stderr
    assert "no CUDA GPU" in output and "Traceback" not in output


def _multirun(key: str, files: tuple[str, ...]) -> Callable[[Workspace, str], None]:
    def check(ws: Workspace, filled: str) -> None:
        sweep = ws.train(key, filled)
        for name in files:
            assert (sweep / name).is_file(), f"{sweep} has no {name}"
    return check


def _predict(ws: Workspace, filled: str, patients: int | None = None) -> Path:
    before = ws.listing("logs/predict/runs")
    ws.run(filled)
    out = ws.newest("logs/predict/runs", before)
    _submission_is_complete(out, patients)
    return out


@dataclass
class Case:
    """How one README command runs: its placeholders filled from the workspace, then a check."""

    fill: dict[str, Callable[[Workspace], str]] = field(default_factory=dict)
    check: Callable[[Workspace, str], None] | None = None
    slow: bool = False
    append: str = ""


def _train_case(key: str, *, slow: bool = False, **fill: Callable[[Workspace], str]) -> Case:
    return Case(fill=fill, check=lambda ws, filled: _has_run_outputs(ws.train(key, filled)),
                slow=slow)


def _fresh_install_then(ws: Workspace, filled: str) -> None:
    """The README's fresh-machine commands: the install steps are .ci/run's own (checked), the
    last step runs here (for the tests: .ci/run runs them)."""
    ci = (ROOT / ".ci" / "run").read_text()
    steps = [step.strip() for step in filled.split("&&")]
    assert steps[:3] == ["python3 -m venv .venv", ". .venv/bin/activate",
                         "pip install torch==2.13.0"]
    assert "pip install --quiet torch==2.13.0" in ci
    last = steps[-1]
    if last == "python train.py":
        assert steps[3] == "pip install -e ."
        _has_run_outputs(ws.default_run)
    else:
        assert steps[3] == 'pip install -e ".[dev]"' and '-e ".[dev]"' in ci
        assert last == "WANDB_MODE=offline python -m pytest -q"
        assert "export WANDB_MODE=offline" in ci and "python -m pytest -q" in ci


def _cohort(part: str = "") -> Callable[[Workspace], str]:
    return lambda ws: str(ws.cohort / part)


def _run_of(attribute: str) -> Callable[[Workspace], str]:
    return lambda ws: ws.rel(getattr(ws, attribute))


def _check_cohort_cli(ws: Workspace, filled: str) -> None:
    out = Path(shlex.split(filled)[shlex.split(filled).index("--out") + 1])
    ws.run(filled)
    manifest = json.loads((out / "cohort.json").read_text())
    assert len(manifest["cases"]) == 4
    assert (out / "rsna" / "train_labels.csv").is_file() and (out / "brats").is_dir()


def _check_convert(ws: Workspace, filled: str) -> None:
    out = ws.base / "converted"
    ws.run(filled)
    volumes = list(out.rglob("*.nii.gz"))
    patients = list((ws.cohort / "rsna" / "train").iterdir())
    assert len(volumes) >= 4 * len(patients)
    # the contract: a cohort that data=brats reads as it is, with the labels copied
    _has_run_outputs(ws.train("converted", f"python train.py data=brats data.root={out}"))


def _check_convert_cli(ws: Workspace, filled: str) -> None:
    ws.run(filled)
    patients = list((ws.cohort / "rsna" / "test").iterdir())
    out = ws.base / "converted-cli"
    assert len(list(out.glob("BraTS2021_*/*.nii.gz"))) == 4 * len(patients)


def _check_register(ws: Workspace, filled: str) -> None:
    ws.run(filled)
    case = next((ws.base / "registered").glob("BraTS2021_*"))
    assert len(list(case.glob("*.nii.gz"))) == 4
    saved = json.loads((case / "registration" / "registration.json").read_text())
    assert set(saved["series"]) == {"FLAIR", "T1w", "T1wCE", "T2w"} and saved["n4"] is True
    assert len(list((case / "registration").glob("*.tfm"))) == 4


def _check_registration_benchmark(ws: Workspace, filled: str) -> None:
    ws.run(filled)
    results = json.loads((ws.repo / "registration.json").read_text())
    assert results["patients"] == 10
    assert results["tre_mm_median"] <= 1.5 < 10 < results["identity_tre_mm_median"]
    assert results["brain_dice_median"] >= 0.95 and results["seconds_per_patient"] > 0


UNET_BRATS = ("python train.py model=unet data=brats data.root=DIR data.register=true "
              "hydra.run.dir=logs/train/runs/unet-brats")


def _unet_brats(ws: Workspace) -> Path:
    """The README's U-Net trained on BraTS-layout NIfTI with data.register=true."""
    return ws.train("unet-brats", UNET_BRATS.replace("DIR", str(ws.cohort / "brats")))


def _check_registered_masks(ws: Workspace, filled: str) -> None:
    """A BraTS-trained segmenter on one RSNA DICOM patient: registered, masks on its series."""
    import nibabel as nib

    from radiogenomics.data.readers import load_volume

    _unet_brats(ws)
    patient = Path(shlex.split(filled)[-1].split("=", 1)[1])
    before = ws.listing("logs/predict/runs")
    ws.run(filled)
    out = ws.newest("logs/predict/runs", before)
    assert (out / "registration" / patient.name / "registration.json").is_file()
    sequences = json.loads((out / "registration" / patient.name / "registration.json")
                           .read_text())["series"]
    first = nib.load(out / "masks" / f"{patient.name}_seg.nii.gz")
    assert nib.load(out / "masks" / f"{patient.name}_template_seg.nii.gz").shape == (240, 240, 155)
    assert any(first.shape == load_volume(patient / s).array.shape for s in sequences)
    assert len(list((out / "masks").glob(f"{patient.name}_*_seg.nii.gz"))) >= len(sequences)


def _check_survival_on_predicted_masks(ws: Workspace, filled: str) -> None:
    run = ws.train("survival-predicted", filled)
    info = json.loads((run / "run_info.json").read_text())
    assert info["mask_source"] == f"predicted by logs/train/runs/{ws.segmenter_run.name}"
    assert (run / "csv" / "metrics.csv").is_file()


def _check_segment_then_classify(ws: Workspace, filled: str) -> None:
    ws.run(filled)
    results = json.loads((ws.repo / "table.json").read_text())["results"]
    assert len(results) == 4
    for row in results.values():
        assert 0 <= row["oof_low"] <= row["oof_auc"] <= row["oof_high"] <= 1


def _check_cv_cli(ws: Workspace, filled: str) -> None:
    sweep = ws.cv_run
    (sweep / "cv_summary.csv").unlink()
    result = ws.run(filled)
    assert (sweep / "cv_summary.csv").is_file()
    assert "PASS id-overlap: no patient in two parts (5 folds" in result.stdout


def _check_calibration_cli(ws: Workspace, filled: str) -> None:
    ws.run(filled)
    assert json.loads((ws.cv_run / "calibration.json").read_text())["method"] == "platt"


def _check_delong_report(ws: Workspace, filled: str) -> None:
    page = (_predict(ws, filled) / "report.md").read_text()
    assert "## Comparison with another model" in page and "## Methods" in page


def _check_compare_cli(ws: Workspace, filled: str) -> None:
    ws.run(filled)
    assert (ws.cv_run / "comparison.csv").is_file()


def _check_optuna(ws: Workspace, filled: str) -> None:
    sweep = ws.train(filled, filled)
    assert (sweep / "optimization_results.yaml").is_file()


def _exits_0(ws: Workspace, filled: str) -> None:
    ws.run(filled)


EXPORT_ONNX = "radiogenomics export {run} --format onnx --out exported/mgmt-onnx"


def _check_export(ws: Workspace, filled: str) -> None:
    """An export folder: its network, manifest, the run's config and the MONAI bundle."""
    args = shlex.split(filled)
    out = ws.repo / args[args.index("--out") + 1]
    ws.run(filled)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["run"] == str((ws.repo / args[args.index("export") + 1]).resolve())
    for name in (manifest["model_file"], "config.yaml", "bundle/configs/metadata.json",
                 "bundle/configs/inference.json", "bundle/models/model.ts"):
        assert (out / name).is_file(), f"{out} has no {name}"


def _check_exported_predict(ws: Workspace, filled: str) -> None:
    """Predicting with the export (made by the README's export command if not yet)."""
    if not (ws.repo / "exported" / "mgmt-onnx" / "manifest.json").is_file():
        ws.run(EXPORT_ONNX.format(run=ws.rel(ws.default_run)))
    out = _predict(ws, filled, _test_patients(ws.cohort))
    assert "member_mgmt-onnx" in pd.read_csv(out / "predictions.csv").columns


def _check_audit(ws: Workspace, filled: str) -> None:
    """The leakage audit of a clean run, CV or cohort: four verdict lines, none a FAIL."""
    result = ws.run(filled)
    verdicts = [line for line in result.stdout.splitlines()
                if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    checks = [line.split()[1].rstrip(":") for line in verdicts]
    assert checks == ["id-overlap", "slice-overlap", "near-duplicates", "label-permutation"]
    assert not [line for line in verdicts if line.startswith("FAIL")], verdicts
    assert verdicts[0].startswith("PASS") and verdicts[2].startswith("PASS")


def _check_benchmarks(ws: Workspace, filled: str) -> None:
    result = ws.run(filled)
    assert "| measure |" in result.stdout or "|" in result.stdout


def _check_prepare(ws: Workspace, filled: str) -> None:
    """`radiogenomics prepare`: the cache entries and the splits of the data config, no run."""
    before = ws.listing("logs/train/runs")
    result = ws.run(filled)
    assert "preprocessing cache ready" in result.stdout + result.stderr
    patients = list((ws.cohort / "rsna" / "train").iterdir())
    assert len(list((ws.repo / "data" / "cache" / "rsna").glob("[!.]*-*"))) >= len(patients)
    assert list((ws.repo / "data" / "splits").glob("rsna-*/splits_mgmt_5fold_seed42.json"))
    assert ws.listing("logs/train/runs") == before


def _overrides(command: str) -> list[str]:
    """The Hydra overrides of a README training command, sweeps reduced to their first value."""
    args = shlex.split(command)
    args = args[args.index("train.py") + 1:]
    return [arg.split(",")[0] for arg in args if "=" in arg and not arg.startswith("-")]


def _check_slurm(ws: Workspace, filled: str) -> None:
    """Submitting needs SLURM's sbatch, not here: the submitit launcher is installed and the
    jobs it would submit ask for the trainer's nodes and devices."""
    import importlib

    from tests.conftest import compose_train

    importlib.import_module("hydra_plugins.hydra_submitit_launcher.submitit_launcher")
    launcher = compose_train(_overrides(filled)).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)


TORCHRUN_CPU = ("torchrun --nnodes 2 --nproc_per_node 1 --node_rank 0 --master_addr HOST0 "
                "--master_port 29500 train.py trainer=ddp_cpu trainer.num_nodes=2 "
                "hydra.run.dir=logs/train/runs/two-machines")


def _check_torchrun_gpu(ws: Workspace, filled: str) -> None:
    """Eight GPUs on two machines are not here: the command is the CPU one (run by its own
    case) with 4 processes per machine on GPUs, and its trainer config composes so."""
    from tests.conftest import compose_train

    assert filled.replace("--nproc_per_node 4", "--nproc_per_node 1").replace(
        "trainer=ddp ", "trainer=ddp_cpu ").replace(" trainer.devices=4", "") == TORCHRUN_CPU
    trainer = compose_train(_overrides(filled)).trainer
    assert (trainer.accelerator, trainer.num_nodes, trainer.devices) == ("gpu", 2, 4)


def _check_torchrun_cpu(ws: Workspace, filled: str) -> None:
    """Both machines' commands (`--node_rank 0` as written, and `--node_rank 1`) at once on
    loopback, started from the same folder: one run folder, written by rank 0."""
    import socket

    ws.default_run  # noqa: B018 (the default cohort and cache, made by `python train.py`)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    args = shlex.split(filled.replace("29500", port)) + [SMOKE]
    args[0] = str(Path(sys.executable).parent / "torchrun")
    nodes = []
    for rank in ("0", "1"):
        args[args.index("--node_rank") + 1] = rank
        nodes.append(subprocess.Popen(list(args), cwd=ws.repo, env=ws.env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [node.communicate(timeout=TIMEOUT)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]
    run = ws.repo / "logs" / "train" / "runs" / "two-machines"
    _has_run_outputs(run)
    assert (run / "train.log").read_text().count("final metrics") == 1  # rank 0's log alone


CASES: dict[str, Case] = {
    # the top of the README
    "python train.py": Case(check=lambda ws, filled: _has_run_outputs(ws.default_run)),
    "python train.py model=cnn3d data=rsna data.root=/data/rsna-miccai":
        _train_case("rsna-cnn3d", slow=True,  # the path of `data=rsna data.root=DIR`
                    **{"/data/rsna-miccai": _cohort("rsna")}),
    "python train.py -m data.fold=0,1,2,3,4":
        Case(check=lambda ws, filled: _multirun("cv", ("cv_summary.csv", "oof_predictions.csv",
                                                       "cv_folds.csv"))(ws, filled)),
    # two commands on a fresh machine
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    "pip install -e . && python train.py": Case(check=_fresh_install_then),
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    'pip install -e ".[dev]" && WANDB_MODE=offline python -m pytest -q':
        Case(check=_fresh_install_then),
    # predicting
    "python predict.py ckpt_path=logs/train/runs/<run> data.root=/data/rsna data.split=test":
        Case(fill={"logs/train/runs/<run>": _run_of("default_run"),
                   "/data/rsna": _cohort("rsna")},
             check=lambda ws, filled: _predict(ws, filled, _test_patients(ws.cohort))),
    "python predict.py ckpt_path=logs/train/multiruns/<cv run> data.root=DIR":
        Case(fill={"logs/train/multiruns/<cv run>": _run_of("cv_run"), "DIR": _cohort("rsna")},
             check=lambda ws, filled: _predict(ws, filled, _test_patients(ws.cohort)),
             slow=True),  # the same multirun predicts in the DeLong case below
    "python predict.py ckpt_path=logs/train/multiruns/<cv run> data.root=DIR data.split=train "
    "compare_ckpt_path=logs/train/runs/<run>":
        Case(fill={"logs/train/multiruns/<cv run>": _run_of("cv_run"), "DIR": _cohort("rsna"),
                   "logs/train/runs/<run>": _run_of("default_run")},
             check=_check_delong_report),
    "python -m radiogenomics.cv logs/train/multiruns/<time> --calibration platt":
        Case(fill={"logs/train/multiruns/<time>": _run_of("cv_run")},
             check=_check_calibration_cli),
    "python predict.py ckpt_path=<run> interpret=gradcam uncertainty=tta":
        Case(fill={"<run>": _run_of("default_run")},
             check=lambda ws, filled: _check_maps(_predict(ws, filled)),
             slow=True),  # Grad-CAM and TTA maps: tests/test_predict.py
    "python predict.py ckpt_path=<segmenter run> data.root=DIR uncertainty=tta":
        Case(fill={"<segmenter run>": _run_of("segmenter_run"), "DIR": _cohort()},
             check=lambda ws, filled: _check_masks(ws, filled),
             slow=True),  # segmenter + TTA: tests/test_predict.py
    "python predict.py ckpt_path=<run trained with data=png> data.root=PNG_DIR":
        Case(fill={"<run trained with data=png>": _run_of("png_run"),
                   "PNG_DIR": lambda ws: str(ws.png_cohort)},
             check=lambda ws, filled: _predict(ws, filled, len(list(ws.png_cohort.iterdir())) - 1),
             slow=True),  # a PNG-trained model on PNG cohorts: tests/test_predict.py
    # export
    "radiogenomics export logs/train/runs/<run> --format onnx --out exported/mgmt-onnx":
        Case(fill={"logs/train/runs/<run>": _run_of("default_run")}, check=_check_export,
             slow=True),  # the export command: tests/test_export.py, both formats
    "python -m radiogenomics export logs/train/runs/<run> --format torchscript "
    "--out exported/mgmt-ts":
        Case(fill={"logs/train/runs/<run>": _run_of("default_run")}, check=_check_export),
    "python predict.py ckpt_path=exported/mgmt-onnx data.root=DIR":
        Case(fill={"DIR": _cohort("rsna")}, check=_check_exported_predict,
             slow=True),  # predict.py with an export: tests/test_export.py, both formats
    "radiogenomics export logs/train/multiruns/<cv run> --format onnx --out exported/mgmt-cv":
        Case(fill={"logs/train/multiruns/<cv run>": _run_of("cv_run")}, check=_check_export,
             slow=True),  # the fold ensemble's export and predictions: tests/test_export.py
    # command-line contracts
    "python train.py model=<name>":  # unet: tests/test_segmentation.py trains model=unet
        _train_case("unet", slow=True, **{"<name>": lambda ws: "unet"}),
    "python train.py data=rsna data.root=DIR": _train_case("rsna", DIR=_cohort("rsna")),
    "python train.py data=brats data.root=DIR":  # data=brats: tests/test_export.py, test_multitask
        _train_case("brats", slow=True, DIR=_cohort("brats")),
    "python train.py data=brats_hgg_lgg data.root=DIR model.target=grade":
        _train_case("hgg_lgg", slow=True,  # grade on HGG/LGG: the experiment=<recipe> case
                    DIR=lambda ws: str(ws.hgg_lgg)),
    "python train.py data.sequences=[FLAIR,T1w,T1wCE,T2w]":
        _train_case("sequences", slow=True),  # four sequences: also tests/test_train.py
    "python train.py -m hparams_search=<name>":
        Case(fill={"<name>": lambda ws: "cnn3d_optuna"}, append="hydra.sweeper.n_trials=2",
             check=_check_optuna, slow=True),  # = hparams_search=cnn3d_optuna, below
    "python train.py experiment=<recipe> data.root=DIR":
        Case(fill={"<recipe>": lambda ws: "multiscale", "DIR": lambda ws: str(ws.hgg_lgg)},
             check=lambda ws, filled: _has_run_outputs(ws.train(filled, filled, "multiscale"))),
    "python train.py ckpt_path=last":  # also tests/test_cli.py, on a finished run
        _train_case("ckpt-last", slow=True),
    "python train.py ckpt_path=<file or run dir>":
        Case(fill={"<file or run dir>": lambda ws: str(ws.default_run / "checkpoints" /
                                                        "last.ckpt")},
             check=lambda ws, filled: _resumes_finished_run(ws.train(filled, filled)),
             slow=True),  # a finished run rerun from its checkpoint: tests/test_cli.py
    "python train.py debug=fdr": Case(check=_exits_0),
    "python train.py debug=overfit": Case(check=_exits_0, slow=True),
    "python train.py debug=limit": Case(check=_exits_0, slow=True),
    "python train.py debug=smoke": Case(check=lambda ws, filled: _has_run_outputs(
        ws.train("smoke", filled)), slow=True),
    "python train.py logger=wandb":  # the W&B logger's offline run: tests/test_cv.py
        Case(check=lambda ws, filled: _check_logger(ws, filled, "wandb"), slow=True),
    "python train.py logger=tensorboard":
        Case(check=lambda ws, filled: _check_logger(ws, filled, "tensorboard"),
             slow=True),  # the TensorBoard logger's output: tests/test_figures.py
    "python train.py logger=none":
        Case(check=lambda ws, filled: _has_checkpoints(ws.train(filled, filled)), slow=True),
    "python train.py trainer=cpu": Case(check=lambda ws, filled: _has_run_outputs(
        ws.train("trainer-cpu", filled)), slow=True),
    "python train.py trainer=gpu": Case(check=_trainer_needs_gpu),
    "python train.py trainer=ddp": Case(check=_trainer_needs_gpu),
    "python predict.py ckpt_path=<ckpt or run dir> data.root=DIR":
        Case(fill={"<ckpt or run dir>": lambda ws: str(ws.default_run / "checkpoints" /
                                                        "last.ckpt"),
                   "DIR": _cohort("rsna/test")},
             check=lambda ws, filled: _predict(ws, filled, _test_patients(ws.cohort))),
    "python -m radiogenomics.data.synthetic --out DIR --patients N --seed S --format "
    "dicom|nifti|both":
        Case(fill={"DIR": lambda ws: str(ws.base / "cli-cohort"), "N": lambda ws: "4",
                   "S": lambda ws: "1", "dicom|nifti|both": lambda ws: "both"},
             check=_check_cohort_cli),
    "python -m radiogenomics.data.convert IN OUT [--skip-invalid-files] [--philips-precise]":
        Case(fill={"IN": _cohort("rsna/train"), "OUT": lambda ws: str(ws.base / "converted"),
                   "[--skip-invalid-files] [--philips-precise]":
                       lambda ws: "--skip-invalid-files"},
             check=_check_convert, slow=True),  # tests/test_careless_user.py, test_bad_inputs.py
    # the radiogenomics command
    "radiogenomics train debug=fdr": Case(check=_exits_0),
    # unet training: tests/test_segmentation.py; `python -m radiogenomics`: radiogenomics
    # train debug=fdr below and tests/test_packaging.py
    "python -m radiogenomics train model=unet": _train_case("python-m-unet", slow=True),
    "radiogenomics predict ckpt_path=logs/train/runs/<run> data.root=DIR":
        Case(fill={"logs/train/runs/<run>": _run_of("default_run"), "DIR": _cohort("rsna/test")},
             check=lambda ws, filled: _predict(ws, filled, _test_patients(ws.cohort))),
    "radiogenomics convert IN OUT":
        Case(fill={"IN": _cohort("rsna/test"), "OUT": lambda ws: str(ws.base / "converted-cli")},
             check=_check_convert_cli),
    # registration (~20 s a patient; tests/data/test_register.py tests its parts)
    "python -m radiogenomics register IN OUT --n4":
        Case(fill={"IN": lambda ws: str(min((ws.cohort / "rsna" / "test").iterdir())),
                   "OUT": lambda ws: str(ws.base / "registered")},
             check=lambda ws, filled: _check_register(ws, filled), slow=True),
    "python benchmarks/registration.py --patients 10 --json registration.json":
        Case(check=lambda ws, filled: _check_registration_benchmark(ws, filled), slow=True),
    # BraTS models on DICOM, segment-then-classify: tests/test_register_pipeline.py,
    # tests/test_roi.py and tests/test_multitask.py run these paths by default
    UNET_BRATS: Case(fill={"DIR": _cohort("brats")},
                     check=lambda ws, filled: _has_run_outputs(_unet_brats(ws)), slow=True),
    "python predict.py ckpt_path=logs/train/runs/unet-brats data.root=DIR":
        Case(fill={"DIR": lambda ws: str(min((ws.cohort / "rsna" / "test").iterdir()))},
             check=_check_registered_masks, slow=True),
    "python train.py data.roi=tumour": _train_case("roi", slow=True),
    "python train.py data.roi=tumour data.roi_model=logs/train/runs/<unet run>":
        _train_case("roi-predicted", slow=True, **{"<unet run>": lambda ws: ws.segmenter_run.name}),
    "python predict.py ckpt_path=logs/train/runs/<ROI run> data.root=DIR "
    "data.roi_model=logs/train/runs/<unet run>":
        Case(fill={"<ROI run>": lambda ws: ws.train("roi", "python train.py data.roi=tumour").name,
                   "<unet run>": lambda ws: ws.segmenter_run.name, "DIR": _cohort("rsna/test")},
             check=lambda ws, filled: _predict(ws, filled, _test_patients(ws.cohort)), slow=True),
    "python train.py model=survival_rf data.roi_model=logs/train/runs/<unet run>":
        Case(fill={"<unet run>": lambda ws: ws.segmenter_run.name},
             check=_check_survival_on_predicted_masks, slow=True),
    "python train.py model=multitask": _train_case("multitask", slow=True),
    "python benchmarks/segment_then_classify.py --json table.json":
        Case(check=_check_segment_then_classify, slow=True),
    # cross-validation, sweeps, benchmarks
    "python train.py cv=5fold":
        Case(check=lambda ws, filled: _multirun(filled, ("cv_summary.csv",))(ws, filled),
             slow=True),
    "python -m radiogenomics.cv logs/train/multiruns/<time>":
        Case(fill={"logs/train/multiruns/<time>": _run_of("cv_run")}, check=_check_cv_cli),
    "python -m radiogenomics.compare logs/train/multiruns/<time>":
        Case(fill={"logs/train/multiruns/<time>": _run_of("cv_run")}, check=_check_compare_cli),
    "python train.py -m hparams_search=cnn3d_optuna":  # the sweeper: tests/test_sweeps.py
        Case(append="hydra.sweeper.n_trials=2", check=_check_optuna, slow=True),
    "python train.py -m hparams_search=cnn3d_optuna hydra.sweeper.storage=sqlite:///optuna.db "
    "hydra.sweeper.study_name=cnn3d":
        Case(append="hydra.sweeper.n_trials=2", check=_check_optuna, slow=True),
    "python train.py -m hparams_search=cnn3d_optuna hydra/launcher=joblib "
    "hydra.launcher.n_jobs=4":
        Case(append="hydra.sweeper.n_trials=2", check=_check_optuna, slow=True),
    # the leakage audit
    "radiogenomics audit <run>":
        Case(fill={"<run>": _run_of("default_run")}, append="--permutations 0",
             check=_check_audit),
    "radiogenomics audit logs/train/runs/<run>":
        Case(fill={"logs/train/runs/<run>": _run_of("default_run")}, check=_check_audit,
             slow=True),  # 3 retrainings; tests/test_audit.py runs the permutation test
    "radiogenomics audit logs/train/multiruns/<cv run> --permutations 0":
        Case(fill={"logs/train/multiruns/<cv run>": _run_of("cv_run")}, check=_check_audit),
    "radiogenomics audit --data data=rsna data.root=DIR":
        Case(fill={"DIR": _cohort("rsna")}, check=_check_audit),
    # several machines
    "radiogenomics prepare data=rsna data.root=DIR":
        Case(fill={"DIR": _cohort("rsna")}, check=_check_prepare),
    "python train.py -m hydra/launcher=slurm trainer=ddp trainer.num_nodes=2 trainer.devices=4 "
    "data.fold=0,1,2,3,4 hydra.launcher.partition=gpu": Case(check=_check_slurm),
    "torchrun --nnodes 2 --nproc_per_node 4 --node_rank 0 --master_addr HOST0 --master_port "
    "29500 train.py trainer=ddp trainer.num_nodes=2 trainer.devices=4 "
    "hydra.run.dir=logs/train/runs/two-machines": Case(check=_check_torchrun_gpu),
    # the same command, both nodes: tests/test_multinode.py
    TORCHRUN_CPU: Case(fill={"HOST0": lambda ws: "127.0.0.1"}, check=_check_torchrun_cpu,
                       slow=True),
    "python -m benchmarks": Case(check=_check_benchmarks, slow=True),
    "python -m benchmarks --quick": Case(check=_check_benchmarks, slow=True),
    "python -m benchmarks --only reading,prepare": Case(check=_check_benchmarks, slow=True),
}


def _check_maps(out: Path) -> None:
    assert list((out / "maps").rglob("*.png")), f"no map figures in {out / 'maps'}"
    uncertainty = pd.read_csv(out / "uncertainty.csv")
    assert len(uncertainty) and np.isfinite(uncertainty.select_dtypes("number")).all().all()


def _check_masks(ws: Workspace, filled: str) -> None:
    before = ws.listing("logs/predict/runs")
    ws.run(filled)
    out = ws.newest("logs/predict/runs", before)
    assert list((out / "masks").glob("*_seg.nii.gz")) and list((out / "masks").glob(
        "*_entropy.nii.gz"))


def _check_logger(ws: Workspace, filled: str, kind: str) -> None:
    run = ws.train(filled, filled)
    _has_run_outputs(run)
    found = list(run.rglob("offline-run-*")) if kind == "wandb" else list(
        run.rglob("events.out.tfevents.*"))
    assert found, f"{kind} wrote nothing under {run}"


def test_every_readme_command_has_a_case() -> None:
    commands = readme_commands()
    assert len(commands) > 30
    assert set(commands) == set(CASES), (
        f"README commands without a case: {sorted(set(commands) - set(CASES))}; "
        f"cases no longer in the README: {sorted(set(CASES) - set(commands))}")


def _params() -> list:
    return [pytest.param(command, marks=[pytest.mark.slow] if case.slow else [], id=command[:80])
            for command, case in CASES.items()]


@pytest.mark.parametrize("command", _params())
def test_readme_command_runs_as_written(command: str, ws: Workspace) -> None:
    case = CASES[command]
    filled = command
    for placeholder, value in case.fill.items():
        assert placeholder in filled
        filled = filled.replace(placeholder, value(ws))
    if case.append:
        filled = f"{filled} {case.append}"
    assert case.check is not None
    case.check(ws, filled)


RECIPE_COHORTS: dict[str, Callable[[Workspace], Path]] = {
    "multiscale": lambda ws: ws.hgg_lgg,
    "attention_vgg_grading": lambda ws: ws.hgg_lgg,
    "rsna_winner": lambda ws: ws.cohort / "rsna",
    "vgg16_flair": lambda ws: ws.cohort / "rsna",
    "unet2d_brats": lambda ws: ws.cohort / "brats",
}


def test_every_recipe_has_a_cohort_here() -> None:
    recipes = {path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert recipes == set(RECIPE_COHORTS)


def _recipe_marks(name: str) -> list:
    import torch

    marks = [] if name == "multiscale" else [pytest.mark.slow]
    if name == "rsna_winner":  # batch 8 at 256x256x64: the process was killed (OOM) on 24 GB
        marks.append(pytest.mark.skipif(not torch.cuda.is_available(),
                                        reason="rsna_winner as written needs a GPU"))
    return marks


@pytest.mark.parametrize("recipe", [pytest.param(name, marks=_recipe_marks(name))
                                    for name in RECIPE_COHORTS])
def test_every_recipe_runs_as_the_readme_writes_it(recipe: str, ws: Workspace) -> None:
    """`python train.py experiment=<recipe> data.root=DIR` for each recipe on its own cohort
    (rsna_winner: its five folds at 256x256x64 and batch 8, on a GPU only)."""
    command = "python train.py experiment=<recipe> data.root=DIR"
    assert command in readme_commands()
    filled = command.replace("<recipe>", recipe).replace("DIR", str(RECIPE_COHORTS[recipe](ws)))
    run = ws.train(filled, filled, task=recipe)
    if recipe == "rsna_winner":
        assert (run / "cv_summary.csv").is_file()
    else:
        _has_run_outputs(run)


@pytest.mark.slow
def test_the_optuna_sweep_runs_as_written_with_all_its_trials(ws: Workspace) -> None:
    """`python train.py -m hparams_search=cnn3d_optuna`: its 20 trials, nothing but debug=smoke."""
    command = "python train.py -m hparams_search=cnn3d_optuna"
    assert command in readme_commands()
    sweep = ws.train("optuna-all-trials", command)
    assert (sweep / "optimization_results.yaml").is_file()
    assert len([job for job in sweep.iterdir() if job.name.isdigit()]) == 20
