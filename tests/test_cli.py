"""What a user sees when a command fails or is stopped: one message and a documented exit status,
a traceback only for a bug (or when asked for), and Ctrl-C that saves the training state."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radiogenomics import config as rc
from radiogenomics.errors import CohortError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.spatial_size=[16,16,16]", "data.batch_size=2", "data.n_folds=2",
        "data.num_workers=0", "data.prepare_workers=0", "trainer=cpu"]


def _train(cwd: Path, *overrides: str, env: dict[str, str] | None = None,
           timeout: int = 300) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("HYDRA_FULL_ERROR", "_RG_FULL_ERROR_SET")}
    environment.update({"WANDB_MODE": "offline", **(env or {})})
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=timeout)


def test_a_data_error_prints_one_message_without_traceback_and_exits_2(tmp_path: Path) -> None:
    result = _train(tmp_path, "data=rsna", f"data.root={tmp_path / 'no-such-cohort'}")
    output = result.stdout + result.stderr
    assert result.returncode == rc.EXIT_USER_ERROR
    assert "Traceback" not in output
    assert "CohortError" in output and "no-such-cohort" in output


def test_the_traceback_is_one_flag_away(tmp_path: Path) -> None:
    result = _train(tmp_path, "data=rsna", f"data.root={tmp_path / 'no-such-cohort'}",
                    env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "no-such-cohort" in result.stderr


def test_a_config_error_of_hydra_names_the_options_without_traceback(tmp_path: Path) -> None:
    result = _train(tmp_path, "model=no_such_model")
    assert result.returncode == rc.EXIT_USER_ERROR
    assert "Traceback" not in result.stderr
    assert "no_such_model" in result.stderr and "cnn3d" in result.stderr


def test_asking_for_a_gpu_without_one_is_a_config_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _train(tmp_path, "trainer=gpu")
    assert result.returncode == rc.EXIT_USER_ERROR
    output = result.stdout + result.stderr
    assert "no CUDA GPU" in output and "trainer=cpu" in output and "Traceback" not in output


def test_a_multirun_reports_a_bad_job_as_one_message(tmp_path: Path) -> None:
    result = _train(tmp_path, "-m", "data=rsna", f"data.root={tmp_path / 'a'},{tmp_path / 'b'}")
    output = result.stdout + result.stderr
    assert result.returncode == rc.EXIT_USER_ERROR
    assert "Traceback" not in output and "CohortError" in output


def test_a_bug_keeps_its_traceback() -> None:
    def buggy() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        rc.run_cli(buggy)


def test_a_wrapped_project_error_is_found_behind_hydra_instantiation() -> None:
    from hydra.errors import InstantiationException

    cause = CohortError("no patients", path="/x", hint="check data.root")
    try:
        try:
            raise cause
        except CohortError as err:
            raise InstantiationException("Error in call to target") from err
    except InstantiationException as wrapped:
        assert rc.user_error_of(wrapped) is cause
    assert rc.user_error_of(ValueError("a bug")) is None


def test_ctrl_c_while_training_saves_last_checkpoint_and_exits_130(
        tiny_cohort: Path, tmp_path: Path) -> None:
    """A real process group gets SIGINT (what Ctrl-C sends): the batch in progress ends,
    last.ckpt is saved, the DataLoader worker does not crash the run, the status is 130."""
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), f"data.root={tiny_cohort}",
               "data.synthetic=null", *TINY, "data.num_workers=1", "trainer.max_epochs=200",
               "logger=csv", "callbacks.progress_bar=null", "test=false",
               f"hydra.run.dir={run}"]
    log = (tmp_path / "log.txt").open("w")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "WANDB_MODE": "offline"},
                               start_new_session=True, preexec_fn=_default_sigint)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert last.exists(), (tmp_path / "log.txt").read_text()[-3000:]
    first_save = last.stat().st_mtime_ns
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=120) == 130, (tmp_path / "log.txt").read_text()[-3000:]
    text = (tmp_path / "log.txt").read_text()
    assert "Ctrl-C at epoch" in text and "interrupted (Ctrl-C)" in text
    assert "Traceback" not in text
    assert last.stat().st_mtime_ns > first_save


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_run_started_inside_the_cohort_is_refused_before_writing_anything(
        tiny_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "rsna"
    shutil.copytree(tiny_cohort / "rsna", cohort)
    before = _listing(cohort)
    result = _train(cohort, "data=rsna", "data.root=.", "debug=smoke")
    output = result.stdout + result.stderr
    assert result.returncode == rc.EXIT_USER_ERROR, output[-2000:]
    assert "inside data.root" in output and "Traceback" not in output
    assert _listing(cohort) == before


def test_predict_into_the_cohort_is_refused_before_writing_anything(
        tiny_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "rsna"
    shutil.copytree(tiny_cohort / "rsna", cohort)
    before = _listing(cohort)
    result = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), f"ckpt_path={tmp_path / 'run'}",
         f"data.root={cohort}", f"output_dir={cohort / 'predictions'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == rc.EXIT_USER_ERROR, output[-2000:]
    assert "inside data.root" in output and "Traceback" not in output
    assert _listing(cohort) == before


def test_a_home_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    result = _train(tmp_path, "debug=smoke", env={"RADIOGENOMICS_HOME": str(home)})
    output = result.stdout + result.stderr
    assert result.returncode == rc.EXIT_USER_ERROR and "Traceback" not in output
    assert "RADIOGENOMICS_HOME" in output and home.read_text() == "not a folder"


def test_max_epochs_without_limit_is_refused_not_trained_forever(tmp_path: Path) -> None:
    result = _train(tmp_path, "trainer.max_epochs=-1", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == rc.EXIT_USER_ERROR and "trainer.max_epochs" in output


def test_an_ensemble_never_leaves_out_a_fold_that_failed(tmp_path: Path) -> None:
    from radiogenomics.errors import RadiogenomicsError
    from radiogenomics.runs import find_runs

    sweep = tmp_path / "multirun"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / "config.yaml").write_text("model: {}\n")
    (sweep / "1" / ".hydra").mkdir(parents=True)  # fold 1 crashed: no config.yaml
    (sweep / "1" / ".hydra" / "config.yaml").write_text("model: {}\n")
    with pytest.raises(RadiogenomicsError, match=r"\['1'\]"):
        find_runs(sweep)
    with pytest.raises(RadiogenomicsError, match="never finished"):
        find_runs(sweep / "1")
    shutil.rmtree(sweep / "1")
    assert [run for run, _ in find_runs(sweep)] == [sweep / "0"]


def test_labels_of_one_class_are_an_error_not_an_auc_of_zero() -> None:
    from radiogenomics.data.splits import make_splits
    from radiogenomics.errors import LabelError

    with pytest.raises(LabelError, match="one class"):
        make_splits([f"{i:05d}" for i in range(10)], [0] * 10, n_folds=2, stratify="mgmt")


def test_a_finished_run_rerun_with_ckpt_path_last_exits_0_and_keeps_its_metrics(
        tiny_cohort: Path, tmp_path: Path) -> None:
    """The README's resume command on a run that already finished, as a user types it."""
    import pandas as pd

    run = tmp_path / "run"
    command = [f"data.root={tiny_cohort}", "data.synthetic=null", *TINY, "trainer.max_epochs=2",
               "callbacks.progress_bar=null", f"hydra.run.dir={run}"]
    first = _train(tmp_path, *command)
    assert first.returncode == 0, (first.stdout + first.stderr)[-2000:]
    epochs = pd.read_csv(run / "csv" / "metrics.csv")["epoch"].dropna().unique().tolist()
    again = _train(tmp_path, *command, "ckpt_path=last")
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    kept = pd.read_csv(run / "csv" / "metrics.csv")["epoch"].dropna().unique().tolist()
    assert set(epochs) <= set(kept) and {0, 1} <= set(kept)
