"""What predict.py does, from its config: models, cohort, predictions, files, report.

`predict_cohort` loads the model(s) that ``ckpt_path`` names with their training config,
reads the cohort, and hands classifiers to `classify` (submission.csv, predictions.csv,
maps, uncertainty.csv, report; probabilities calibrated by the multirun's calibration.json,
and a DeLong comparison with the model(s) of ``compare_ckpt_path``, when there are) and
segmenters to `segment` (masks, segmentations.csv, voxel-wise uncertainty maps and
uncertainty.csv, Dice report); both write errors.csv. A multi-task run (not its export,
which holds the class output only) is classified and writes its masks and segmentations.csv
too (`multitask_masks`; its report is the classification one).
Every patient of the cohort has a row, even when none could be read: the caller exits with
`EXIT_PATIENTS_FAILED` when any failed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from radiogenomics import config as rc
from radiogenomics.audit.checks import Verdict, check_unseen
from radiogenomics.audit.subject import recorded_partitions
from radiogenomics.data.cohorts import Cohort, masks_in_template_space, prediction_cohort
from radiogenomics.data.template_space import load as load_registration
from radiogenomics.errors import ConfigError, Failure, RadiogenomicsError
from radiogenomics.evaluation.calibration import CALIBRATION_FILE, DESCRIPTIONS, load_calibrator
from radiogenomics.evaluation.report import (
    EvaluationReport,
    ModelComparison,
    log_figures,
    log_report,
    write_classification_report,
    write_segmentation_report,
)
from radiogenomics.inference import outputs
from radiogenomics.inference.exported import ExportedNet, refuse_gradient_tools
from radiogenomics.inference.figures import ranked_cases, write_segmentation_figure
from radiogenomics.inference.masks import truth_on_series
from radiogenomics.inference.predicted_masks import check_roi_masks
from radiogenomics.inference.runner import (
    CohortPrediction,
    CohortPredictor,
    labelled,
    resolve_device,
)
from radiogenomics.inference.segmentation import CohortSegmentation, CohortSegmenter
from radiogenomics.inference.trained_models import TrainedModel, load_models

log = logging.getLogger(__name__)

EXIT_PATIENTS_FAILED = 3
"""Exit code of predict.py when a patient could not be predicted (it has a fallback row)."""

Result = CohortPrediction | CohortSegmentation


def _tool(cfg: DictConfig, group: str) -> Any:
    """The interpret= or uncertainty= object of the config, None when off.

    A refusal of the tool itself (e.g. TTA with no random transform) is raised as it is,
    not inside Hydra's instantiation error.
    """
    if not cfg.get(group):
        return None
    try:
        return rc.instantiate(cfg[group])
    except Exception as err:  # Hydra wraps what the constructor raises
        if isinstance(err.__cause__, RadiogenomicsError):
            raise err.__cause__ from err
        raise


def classify(cfg: DictConfig, models: list[TrainedModel], cohort: Cohort, out_dir: Path,
             device: torch.device, notes: list[str] | None = None
             ) -> tuple[CohortPrediction, EvaluationReport | None]:
    """Probabilities (+ maps, uncertainty) of every patient, the submission and the report
    (with `notes`, lines on what else was written)."""
    explainer = _tool(cfg, "interpret")
    uncertainty = _tool(cfg, "uncertainty")
    predictor = CohortPredictor(models, out_dir, fallback=cfg.fallback, explainer=explainer,
                                uncertainty=uncertainty, device=device)
    result = predictor.predict(cohort)
    for pid in outputs.reject_non_finite(result, cfg.fallback):
        log.warning("patient %s: the model's output is not finite: fallback %s written",
                    pid, cfg.fallback)
    calibration = _calibrate(cfg, result)
    outputs.write_submission(result, out_dir / "submission.csv")
    outputs.write_predictions(result, out_dir / "predictions.csv")
    if uncertainty is not None:
        outputs.write_uncertainty(result, out_dir / "uncertainty.csv")
    if result.maps:
        log.info("%d map files in %s", len(result.maps), out_dir / "maps")
    ids, y, probabilities = labelled(result)
    if not (cfg.report and ids):
        return result, None
    notes = _notes(cohort, models, len(ids), result.failures) + list(notes or [])
    if calibration:
        notes.append(f"probabilities calibrated: {calibration}")
    comparison = (_comparison(cfg, cohort, ids, result.target, device)
                  if cfg.get("compare_ckpt_path") else None)
    return result, write_classification_report(
        out_dir, y, probabilities, result.target, title=f"{result.target} predictions",
        notes=notes, n_bootstrap=cfg.bootstrap, seed=cfg.seed, comparison=comparison,
        calibration=calibration and (
            f"Probabilities were calibrated by {calibration}, fitted on the out-of-fold "
            "predictions of the cross-validation and applied to the mean of its fold models; "
            "every statistic above is of the calibrated probabilities."))


def _calibrate(cfg: DictConfig, result: CohortPrediction) -> str | None:
    """Apply a multirun's calibrator (``<ckpt_path>/calibration.json``, see `cv.calibrate_sweep`)
    to the ensemble's probabilities, unless ``calibrate=false``; what was applied, for the
    report. Failed patients keep the fallback value, members their raw probabilities."""
    path = Path(cfg.ckpt_path) / CALIBRATION_FILE
    if not (cfg.get("calibrate", True) and path.is_file()):
        return None
    calibrator = load_calibrator(path)
    if any(p.probabilities.size != 1 for p in result.patients):
        raise RadiogenomicsError(f"{path} calibrates binary probabilities; {result.target} has "
                                 "several classes -> predict with calibrate=false")
    for patient in result.patients:
        if not patient.failed:
            patient.probabilities = calibrator.apply(patient.probabilities)
    log.info("probabilities calibrated by %s (%s)", calibrator.method, path)
    return f"{DESCRIPTIONS[calibrator.method]} ({path})"


def _comparison(cfg: DictConfig, cohort: Cohort, ids: list[str], target: str,
                device: torch.device) -> ModelComparison:
    """The model(s) of ``compare_ckpt_path`` predict the same cohort: their probabilities of
    the labelled patients `ids` (NaN for a patient they could not predict)."""
    models = load_models(cfg.compare_ckpt_path, cfg.checkpoint, device)
    if models[0].target != target:
        raise RadiogenomicsError(f"compare_ckpt_path={cfg.compare_ckpt_path} predicts "
                                 f"{models[0].target}, ckpt_path predicts {target} -> compare "
                                 "models of one target")
    other = CohortPredictor(models, fallback=cfg.fallback, device=device).predict(cohort)
    outputs.reject_non_finite(other, cfg.fallback)
    other_ids, _, probabilities = labelled(other)
    if probabilities.shape[1] != 1:
        raise RadiogenomicsError("compare_ckpt_path= compares binary classifiers (DeLong's "
                                 f"test of two AUCs); {target} has several classes")
    by_id = dict(zip(other_ids, probabilities[:, 0]))
    return ModelComparison(str(cfg.compare_ckpt_path),
                           np.array([by_id.get(pid, np.nan) for pid in ids], dtype=float))


def segment(cfg: DictConfig, models: list[TrainedModel], cohort: Cohort,
            out_dir: Path) -> tuple[CohortSegmentation, EvaluationReport | None]:
    """Masks, region volumes (+ uncertainty maps) of every patient; Dice and HD95 where the
    cohort has masks."""
    if cfg.get("interpret"):
        raise RadiogenomicsError("interpret= explains classifiers -> predict a segmenter with "
                                 "interpret=none (uncertainty=tta or mc_dropout gives maps)")
    uncertainty = _tool(cfg, "uncertainty")
    segmenter = CohortSegmenter(models, out_dir, uncertainty=uncertainty)
    result = segmenter.segment(cohort)
    outputs.write_segmentations(result, out_dir / "segmentations.csv")
    if uncertainty is not None:
        outputs.write_segmentation_uncertainty(result, out_dir / "uncertainty.csv")
    scores = {p.id: p.scores for p in result.patients if p.scores}
    if not (cfg.report and scores):
        return result, None
    return result, write_segmentation_report(
        out_dir, scores, title="Segmentation", notes=_notes(cohort, models, len(scores),
                                                            result.failures),
        cases=_ranked_figures(result, cohort, segmenter, out_dir))


def multitask_masks(cfg: DictConfig, models: list[TrainedModel], cohort: Cohort,
                    out_dir: Path) -> list[str]:
    """A multi-task model's tumour masks (``masks/<id>_seg.nii.gz``) and segmentations.csv
    (region volumes; Dice and HD95 where the cohort has masks), written as `segment` writes a
    segmenter's, beside its class predictions; lines for the classification report."""
    if not hasattr(models[0].module, "segmentation_head"):
        return []
    if models[0].segmentation_module is None:
        log.info("%s is an exported multi-task model, which holds its class output only: no "
                 "masks written (masks need the training run: ckpt_path=<run>)",
                 models[0].run_dir)
        return []
    if cfg.get("interpret") or cfg.get("uncertainty"):
        log.info("interpret= and uncertainty= apply to the multi-task model's class output: "
                 "its masks are written without uncertainty maps")
    result = CohortSegmenter(models, out_dir).segment(cohort)
    outputs.write_segmentations(result, out_dir / "segmentations.csv")
    written = sum(p.mask is not None for p in result.patients)
    scores = [p.scores["dice_wt"] for p in result.patients if p.scores]
    line = f"tumour masks: {written} in masks/, volumes and scores in segmentations.csv"
    if scores:
        line += (f"; mean whole-tumour Dice {np.mean(scores):.3f} over {len(scores)} "
                 "patient(s) with masks")
    log.info("%s", line)
    return [line]


def _ranked_figures(result: CohortSegmentation, cohort: Cohort, segmenter: CohortSegmenter,
                    out_dir: Path) -> dict[str, Path]:
    """``segmentation_<best|median|worst>.png``: scan, truth and prediction of the patients
    of best, median and worst whole-tumour Dice."""
    scored = {p.id: p for p in result.patients if p.scores and p.mask is not None}
    ranks = ranked_cases({pid: p.scores["dice_wt"] for pid, p in scored.items()})
    cases = {case["id"]: case for case in cohort.cases}
    figures = {}
    for rank, pid in ranks.items():
        dice = scored[pid].scores["dice_wt"]
        saved = scored[pid].registration
        # a registered case's mask is in template space: drawn through its registration
        truth = ({"truth": truth_on_series(cases[pid], load_registration(saved),
                                           segmenter.preprocessor.reference)} if saved else {})
        figures[f"segmentation_{rank}"] = write_segmentation_figure(
            cases[pid], scored[pid].mask, segmenter.preprocessor,
            out_dir / f"segmentation_{rank}.png",
            f"{rank} of {len(scored)} patients by whole-tumour Dice: patient {pid}, "
            f"Dice WT {dice:.3f}", **truth)
    return figures


def _notes(cohort: Cohort, models: list[TrainedModel], evaluated: int,
           failures: list[Failure]) -> list[str]:
    notes = [f"cohort: {cohort.root}", "models: " + ", ".join(str(m.checkpoint) for m in models),
             f"evaluated: {evaluated} patients with labels"]
    if failures:
        notes.append(f"left out: {len({f.patient for f in failures})} patient(s) that could "
                     "not be read (errors.csv)")
    return notes + [f"leakage audit: {unseen_patients(cohort, models).line()}"]


def unseen_patients(cohort: Cohort, models: list[TrainedModel]) -> Verdict:
    """Whether the run(s) trained or validated on patients of the cohort (by id, from their
    splits.json; every member's of an exported fold ensemble): such predictions are no test
    of the model."""
    trained_on = sorted({str(m.config.data.get("root")) for m in models})
    inside = any(Path(cohort.root).resolve().is_relative_to(Path(root).resolve())
                 for root in trained_on)
    elsewhere = "" if inside else (f" (ids only: the run(s) trained on {', '.join(trained_on)}"
                                   f", not {cohort.root}: the ids may merely coincide)")
    runs = [run for model in models for run in model.trained_runs]
    return check_unseen(cohort.ids, recorded_partitions(runs), elsewhere)


def check_mask_space(cohort: Cohort, image_format: str, registered: bool) -> None:
    """Refuse to score masks of unregistered DICOM series against a moved synthetic cohort's
    template-space masks: resampled by world position, they miss the tumour."""
    if (cohort.name == "synthetic" and image_format == "dicom" and not registered
            and masks_in_template_space(cohort.root)):
        raise ConfigError(
            f"the synthetic cohort at {cohort.root} is moved (realistic preset): its DICOM "
            "series lie in the scanner's world and its tumour masks in template space, so the "
            "predicted masks cannot be scored against them", key="data.image_format",
            hint="predict its NIfTI (data.image_format=nifti), or use a segmenter trained with "
                 "data.register=true")


def predict_cohort(cfg: DictConfig) -> tuple[Result, EvaluationReport | None]:
    """Predict the cohort of a predict.py config (conf/predict.yaml) into ``cfg.output_dir``."""
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = outputs.clear_earlier_outputs(out_dir, bool(cfg.get("overwrite", False)))
    if removed:
        log.info("overwrite=true: removed %d file(s) of an earlier prediction in %s",
                 len(removed), out_dir)
    device = resolve_device(cfg.device)
    roi_model = cfg.data.get("roi_model")
    models = load_models(cfg.ckpt_path, cfg.checkpoint, device, roi_model=roi_model)
    if any(isinstance(m.net, ExportedNet) for m in models):
        refuse_gradient_tools(cfg.get("interpret"), cfg.get("uncertainty"))
    trained_data = models[0].config.data
    formats = trained_data.get("cohort_options") or {}
    image_format = cfg.data.image_format or formats.get("image_format", "dicom")
    cohort = prediction_cohort(
        cfg.data.root or trained_data.root,
        models[0].preprocess.sequences,
        layout=cfg.data.layout or (None if cfg.data.root else trained_data.layout),
        split=cfg.data.split,
        image_format=image_format,
    )
    if models[0].segmentation_module is not None:
        check_mask_space(cohort, image_format, models[0].preprocess.register)
    check_roi_masks(models[0], cohort, roi_model)
    if not cohort.cases:
        log.error("none of the %d patient(s) of %s can be read: each gets the fallback row",
                  len(cohort.skipped), cohort.root)
    unseen = unseen_patients(cohort, models)
    (log.warning if unseen.failed else log.info)("%s", unseen.line())
    if models[0].is_segmenter:
        result, report = segment(cfg, models, cohort, out_dir)
    else:
        notes = multitask_masks(cfg, models, cohort, out_dir)
        result, report = classify(cfg, models, cohort, out_dir, device, notes)
    outputs.write_errors(result, out_dir / "errors.csv")
    log.info(outputs.summary_line(result))
    if report is not None:
        log.info("report: %s", report.markdown)
    maps = {path.name.removesuffix(".png"): path for path in getattr(result, "maps", [])
            if path.suffix == ".png"}
    if report is not None or maps:
        loggers = rc.instantiate_group(cfg.get("logger"), "logger")
        log_figures(maps, loggers, "maps")
        if report is not None:
            log_report(report, loggers)
        else:
            for logger in loggers:
                logger.save()
                logger.finalize("success")
    return result, report
