"""The model card of a run: ``model_card.md`` in the run directory, written when training ends.

It says what was trained (model, target, classes), on what (cohort, sequences, grid, split,
preprocessing, augmentation), how well (the test metrics the run logged; for binary targets
the statistics of its validation predictions with their intervals), how safely (the cheap
leakage checks of the audit on this run's parts), what it is not for, and with which code.
Every section is computed on its own: one that cannot be computed is named in the card and
in a logged warning, and never stops the run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from radiogenomics.audit.checks import check_ids, check_slices
from radiogenomics.audit.subject import SPLITS_RECORD, served_partition
from radiogenomics.callbacks import OOF_FILE
from radiogenomics.data.case import CLASS_NAMES, LABELS
from radiogenomics.data.datamodule import SEGMENTATION_TARGET
from radiogenomics.data.labels import INTERNAL_CLASSES, REGIONS
from radiogenomics.data.series import PLANE_CLASSES, SEQUENCE_CLASSES, SERIES_TARGET
from radiogenomics.evaluation.report import classification_metrics
from radiogenomics.evaluation.statistics import ECE_BINS, binary_statistics
from radiogenomics.files import write_text_atomic
from radiogenomics.runs import RUN_INFO, data_setup, saved_info

log = logging.getLogger(__name__)

MODEL_CARD = "model_card.md"
"""The model card's file name in a run directory."""
N_BOOTSTRAP = 1000
"""Bootstrap resamples of the intervals (as in predict.py's report)."""
SPLIT_KEYS = ("fold", "n_folds", "split_seed", "splits_file", "split_unit", "target")
"""Keys of `runs.data_setup` that the split and task lines show, not the inputs line."""
LIMITS = (
    "Research use only: not a medical device, not for clinical decisions about any patient.",
    "Scores come from one split of one cohort; other scanners, protocols and populations "
    "may score lower.",
)
MGMT_LIMIT = ("MGMT promoter methylation is barely predictable from MRI: the RSNA-MICCAI 2021 "
              "winner scored 0.62 AUC on the private test set. A validation score far above "
              "~0.65 on real data more likely means leakage than a better model.")


# ---------------------------------------------------------------------------- helpers
def _plain(value: Any) -> Any:
    """A config value as plain Python (containers resolved)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def _interval(estimate: float, low: float, high: float) -> str:
    return f"{_number(estimate)} ({_number(low)} to {_number(high)})"


def _kwargs(node: Mapping[str, Any]) -> str:
    """``name=value`` of a config node's entries that are no nodes (nor ``_target_``...)."""
    return ", ".join(f"{k}={v}" for k, v in node.items()
                     if not k.startswith("_") and not isinstance(v, dict))


# ---------------------------------------------------------------------------- sections
def class_names(target: str | None, model_cfg: Mapping[str, Any]) -> str:
    """What the model's outputs mean, in the field's words."""
    if target in CLASS_NAMES:
        return ", ".join(f"{code} = {name}" for code, name in enumerate(CLASS_NAMES[target]))
    if target == SEGMENTATION_TARGET:
        if model_cfg.get("output", "regions") == "labels":
            return "labels " + ", ".join(INTERNAL_CLASSES) + " (softmax)"
        return "regions " + ", ".join(REGIONS) + " (one sigmoid each)"
    if target == SERIES_TARGET:
        return (f"sequence ({', '.join(SEQUENCE_CLASSES)}) and plane "
                f"({', '.join(PLANE_CLASSES)})")
    return "not recorded for this target"


def model_lines(model_cfg: Mapping[str, Any], model: Any, target: str | None) -> list[str]:
    """The model's class, size, target and settings."""
    lines = [f"- Class: `{model_cfg.get('_target_')}`"]
    if hasattr(model, "parameters") and hasattr(model, "state_dict"):  # a torch module
        counts = [(p.numel(), p.requires_grad) for p in model.parameters()]
        lines.append(f"- Parameters: {sum(n for n, _ in counts):,} "
                     f"({sum(n for n, grad in counts if grad):,} trainable)")
    elif hasattr(model, "search"):  # the scikit-learn survival models
        best = getattr(model.search, "best_params_", None)
        lines.append("- Parameters: a scikit-learn estimator, no network"
                     + (f"; grid-search choice {best}" if best else ""))
    else:
        raise TypeError(f"cannot count the parameters of a {type(model).__name__}")
    lines.append(f"- Task: `{target}`; outputs: {class_names(target, model_cfg)}")
    settings = _kwargs(model_cfg)
    if settings:
        lines.append(f"- Settings: {settings}")
    for name, node in model_cfg.items():
        if isinstance(node, dict) and "_target_" in node:
            lines.append(f"- {name}: `{node['_target_']}` ({_kwargs(node)})")
        elif isinstance(node, dict) and node:
            lines.append(f"- {name}: {node}")
    return lines


def split_lines(setup: Mapping[str, Any], datamodule: Any) -> list[str]:
    """Patients per part and how they were split."""
    train, val, test = (getattr(datamodule, f"{part}_cases", None) or []
                        for part in ("train", "val", "test"))
    if not (train or val):
        raise ValueError("the datamodule holds no patients (it was never set up)")
    same = getattr(datamodule, "test_split", "test") != "test"
    lines = [f"- Patients: {len(train)} train, {len(val)} validation, "
             + ("test = the validation patients" if same else f"{len(test)} test")]
    target, folds = setup.get("target"), setup.get("n_folds")
    if setup.get("split_unit") == "slice":
        return lines + [
            f"- Split: **WARNING: slice-level** (`data.split_unit=slice`): one in {folds} of "
            f"the fold's slices validated at random (seed {setup.get('split_seed')}), so slices "
            "of one patient are on both sides; the validation and test scores are inflated (by "
            "30-55% in Yagis et al., Sci Rep 2021) and say nothing about new patients"]
    stratified = f", stratified by `{target}`" if target in LABELS else ""
    return lines + [
        f"- Split: patient-level {folds}-fold{stratified}, fold {setup.get('fold')} (0-based) "
        f"of {folds}, seed {setup.get('split_seed')}; the patients of each part are in "
        f"`{SPLITS_RECORD}`"]


def data_lines(data_cfg: Mapping[str, Any], datamodule: Any, from_source: bool = False
               ) -> list[str]:
    """Cohort, inputs, split, preprocessing and augmentation; `from_source`: the model measures
    its features on the source files (survival), so neither of the last two applies."""
    setup = data_setup(data_cfg)
    inputs = {k: v for k, v in setup.items() if k not in SPLIT_KEYS + ("layout", "root")}
    lines = [f"- Cohort: layout `{setup.get('layout')}`, root `{setup.get('root')}`",
             "- Inputs: " + ", ".join(f"{k} {v}" for k, v in inputs.items())]
    lines += split_lines(setup, datamodule)
    if from_source:
        return lines + ["- Preprocessing: none, features measured on the source images and "
                        "masks; augmentation: none"]
    preprocess = getattr(datamodule, "preprocess", None)
    if dataclasses.is_dataclass(preprocess):
        settings = _kwargs(dataclasses.asdict(preprocess))
        lines.append(f"- Preprocessing (deterministic, cached): {settings}")
    augment = data_cfg.get("augment")
    lines.append(f"- Augmentation (each draw): {_kwargs(augment)}" if augment
                 else "- Augmentation: none")
    return lines


def test_metric_lines(metrics: Mapping[str, float]) -> list[str]:
    """The test metrics the run logged and the best validation value it monitored."""
    shown = {k: v for k, v in sorted(metrics.items())
             if k.startswith("test/") or (k.startswith("val/") and k.endswith("_best"))}
    if not shown:
        return ["No test metric: the run did not test (`test=false`)."]
    return (["Point estimates, as the run logged them (test predictions are not kept: "
             "`predict.py` on the labelled test patients writes their report).", "",
             "| metric | value |", "|---|---|"]
            + [f"| {name} | {_number(value, 4)} |" for name, value in shown.items()])


def prediction_lines(run_dir: Path, target: str | None, tested: bool) -> list[str]:
    """Statistics of the validation predictions (``val_predictions.csv``) that the run wrote
    after testing (`tested`: a file from an earlier run in the folder is not this run's)."""
    if target == SEGMENTATION_TARGET:
        return ["Not applicable: a segmenter is scored by its overlap metrics above."]
    if not tested:
        return ["None: the run did not test, and the validation predictions are written after "
                "testing."]
    path = run_dir / OOF_FILE
    if not path.is_file():
        return [f"No `{OOF_FILE}` in the run (the `oof_predictions` callback writes it for "
                "the deep classifiers): no interval to give."]
    table = pd.read_csv(path)
    y = table["label"].to_numpy(dtype=int)
    if "probability" not in table:
        columns = [c for c in table if c.startswith("probability_")]
        metrics = classification_metrics(y, table[columns].to_numpy(dtype=float))
        return [f"{len(y)} validation patients, multiclass (no interval): one-vs-rest macro "
                f"AUC {_number(metrics['auc'])}, accuracy {_number(metrics['accuracy'])}, "
                f"macro F1 {_number(metrics['f1'])}."]
    if len(np.unique(y)) < 2:
        return [f"{len(y)} validation patients of a single class: no AUC."]
    stats = binary_statistics(y, table["probability"].to_numpy(dtype=float), N_BOOTSTRAP)
    p_value = stats.auc_p_vs_chance
    return [
        f"{stats.n} validation patients ({stats.n_positive} positive), predicted by the tested "
        f"weights (`{OOF_FILE}`); 95% intervals from {N_BOOTSTRAP} stratified bootstrap "
        "resamples (DeLong's from the AUC's variance).", "",
        "| statistic | value (95% CI) |", "|---|---|",
        f"| AUC | {_interval(*stats.auc)} |",
        f"| AUC, DeLong CI | {_interval(*stats.auc_delong)} |",
        f"| p-value of AUC > 0.5 (one-sided Mann-Whitney U) | "
        f"{'< 0.001' if p_value < 0.001 else _number(p_value)} |",
        f"| Brier score | {_interval(*stats.brier)} |",
        f"| ECE, {ECE_BINS} bins | {_interval(*stats.ece)} |",
    ]


def calibration_lines(calibration: str | None) -> list[str]:
    """Whether the probabilities are calibrated."""
    if not calibration or calibration == "none":
        return ["None: the probabilities are the model's own (`calibration=none`)."]
    return [f"`calibration={calibration}`: fitted on the pooled out-of-fold predictions when a "
            "cross-validation multirun ends (`calibration.json` in the multirun folder) and "
            "applied by predict.py to that folder's fold ensemble; this run's own "
            "probabilities are uncalibrated."]


def audit_lines(datamodule: Any, name: str) -> list[str]:
    """The audit's checks that need no retraining, on the parts this run served."""
    partition = served_partition(datamodule, name)
    verdicts = [check_ids([partition]), check_slices([partition])]
    return ([f"- `{verdict.line()}`" for verdict in verdicts]
            + ["", "Scan near-duplicates and label permutation: `radiogenomics audit <run>`."])


def use_lines(target: str | None, layout: str | None, synthetic: Any) -> list[str]:
    """Intended use and limits."""
    lines = [f"- {limit}" for limit in LIMITS]
    if target == "mgmt":
        lines.append(f"- {MGMT_LIMIT}")
    if layout == "synthetic":
        preset = f" (preset `{synthetic.get('preset')}`)" if isinstance(synthetic, dict) else ""
        lines.append(f"- **Trained on synthetic data**{preset}: a generated cohort, not patients; "
                     "its scores say nothing about real scans.")
    return lines


def version_lines(run_dir: Path) -> list[str]:
    """Package, library versions, git commit and command, from the run info."""
    info = saved_info(run_dir)
    if not info:
        raise FileNotFoundError(f"no {RUN_INFO} in {run_dir}")
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["versions"].items())
    return [f"- radiogenomics {info.get('radiogenomics_version')}, Python {info.get('python')}",
            f"- Git commit: `{info.get('git_commit') or 'unknown (not a git checkout)'}`",
            f"- Libraries: {versions}",
            f"- Command: `{' '.join(info.get('command') or [])}`"]


# ---------------------------------------------------------------------------- the card
def _section(title: str, build: Callable[[], list[str]]) -> list[str]:
    """``## title`` and its lines; a section that fails says so (and the log warns)."""
    try:
        body = build()
    except Exception as err:  # a card section never stops a finished run; the log tells why
        log.warning("model card: section %r not written (%s: %s)", title, type(err).__name__,
                    err, exc_info=True)
        body = [f"_Not available: {type(err).__name__}: {err}_"]
    return [f"## {title}", "", *body, ""]


def model_card(cfg: DictConfig, run_dir: Path, model: Any, datamodule: Any,
               metrics: Mapping[str, float]) -> str:
    """The Markdown text of a run's model card."""
    model_cfg, data_cfg = _plain(cfg.model), _plain(cfg.data)
    target = model_cfg.get("target") or getattr(datamodule, "target", None)
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Model card: {run_dir.name}", "",
             f"Written by train.py at the end of the run ({written}).", ""]
    lines += _section("Model", lambda: model_lines(model_cfg, model, target))
    lines += _section("Data", lambda: data_lines(data_cfg, datamodule, hasattr(model, "search")))
    lines += _section("Test metrics", lambda: test_metric_lines(metrics))
    tested = any(name.startswith("test/") for name in metrics)
    lines += _section("Validation predictions", lambda: prediction_lines(run_dir, target, tested))
    lines += _section("Calibration", lambda: calibration_lines(cfg.get("calibration")))
    lines += _section("Leakage audit", lambda: audit_lines(datamodule, run_dir.name))
    lines += _section("Intended use and limits", lambda: use_lines(
        target, data_cfg.get("layout"), data_cfg.get("synthetic")))
    lines += _section("Versions", lambda: version_lines(run_dir))
    return "\n".join(lines)


def write_model_card(cfg: DictConfig, run_dir: str | Path, model: Any, datamodule: Any,
                     metrics: Mapping[str, float]) -> Path | None:
    """Write ``model_card.md`` into `run_dir`; None (and a warning) when it cannot be written."""
    path = Path(run_dir) / MODEL_CARD
    try:
        text = model_card(cfg, Path(run_dir), model, datamodule, metrics)
        write_text_atomic(path, text)
    except Exception as err:  # the card never fails a finished run; the log says why
        log.warning("model card not written to %s (%s: %s)", path, type(err).__name__, err,
                    exc_info=True)
        return None
    log.info("model card: %s", path)
    return path
