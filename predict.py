"""Predict a cohort: `python predict.py ckpt_path=<ckpt | run dir | multirun dir> data.root=DIR`.

Loads the model(s) with the training run's config, predicts every patient, writes
submission.csv, predictions.csv and errors.csv (plus maps, uncertainty.csv and the
evaluation report when asked or when the cohort has labels) into `output_dir`. Exits with
code 3 when a patient could not be read (it still has a row, with the fallback value).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from radiogenomics import config as rc
from radiogenomics.data.cohorts import Cohort
from radiogenomics.data.errors import RadiogenomicsError
from radiogenomics.evaluation.report import (
    EvaluationReport,
    log_report,
    write_classification_report,
    write_segmentation_report,
)
from radiogenomics.inference import outputs
from radiogenomics.inference.cohort import prediction_cohort
from radiogenomics.inference.models import TrainedModel, load_models
from radiogenomics.inference.runner import (
    CohortPrediction,
    CohortPredictor,
    Failure,
    labelled,
    resolve_device,
)
from radiogenomics.inference.segmentation import CohortSegmentation, CohortSegmenter

log = logging.getLogger("predict")

EXIT_PATIENTS_FAILED = 3


def classify(cfg: DictConfig, models: list[TrainedModel], cohort: Cohort, out_dir: Path,
             device: torch.device) -> tuple[CohortPrediction, EvaluationReport | None]:
    """Probabilities (+ maps, uncertainty) of every patient, the submission and the report."""
    explainer = rc.instantiate(cfg.interpret) if cfg.get("interpret") else None
    uncertainty = rc.instantiate(cfg.uncertainty) if cfg.get("uncertainty") else None
    predictor = CohortPredictor(models, out_dir, fallback=cfg.fallback, explainer=explainer,
                                uncertainty=uncertainty, device=device)
    result = predictor.predict(cohort)
    outputs.write_submission(result, out_dir / "submission.csv")
    outputs.write_predictions(result, out_dir / "predictions.csv")
    if uncertainty is not None:
        outputs.write_uncertainty(result, out_dir / "uncertainty.csv")
    if result.maps:
        log.info("%d map files in %s", len(result.maps), out_dir / "maps")
    ids, y, probabilities = labelled(result)
    if not (cfg.report and ids):
        return result, None
    return result, write_classification_report(
        out_dir, y, probabilities, result.target, title=f"{result.target} predictions",
        notes=_notes(cohort, models, len(ids), result.failures),
        n_bootstrap=cfg.bootstrap, seed=cfg.seed)


def segment(cfg: DictConfig, models: list[TrainedModel], cohort: Cohort,
            out_dir: Path) -> tuple[CohortSegmentation, EvaluationReport | None]:
    """Masks and region volumes of every patient; Dice and HD95 where the cohort has masks."""
    if cfg.get("interpret") or cfg.get("uncertainty"):
        raise RadiogenomicsError("interpret= and uncertainty= are for classifiers -> predict a "
                                 "segmenter with interpret=none uncertainty=none")
    result = CohortSegmenter(models, out_dir).segment(cohort)
    outputs.write_segmentations(result, out_dir / "segmentations.csv")
    scores = {p.id: p.scores for p in result.patients if p.scores}
    if not (cfg.report and scores):
        return result, None
    return result, write_segmentation_report(
        out_dir, scores, title="Segmentation", notes=_notes(cohort, models, len(scores),
                                                            result.failures))


def _notes(cohort: Cohort, models: list[TrainedModel], evaluated: int,
           failures: list[Failure]) -> list[str]:
    notes = [f"cohort: {cohort.root}", "models: " + ", ".join(str(m.checkpoint) for m in models),
             f"evaluated: {evaluated} patients with labels"]
    if failures:
        notes.append(f"left out: {len({f.patient for f in failures})} patient(s) that could "
                     "not be read (errors.csv)")
    return notes


@rc.task_wrapper
def predict(cfg: DictConfig) -> tuple[CohortPrediction | CohortSegmentation,
                                      EvaluationReport | None]:
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    models = load_models(cfg.ckpt_path, cfg.checkpoint, device)
    trained_data = models[0].config.data
    formats = trained_data.get("cohort_options") or {}
    cohort = prediction_cohort(
        cfg.data.root or trained_data.root,
        models[0].preprocess.sequences,
        layout=cfg.data.layout or (None if cfg.data.root else trained_data.layout),
        split=cfg.data.split,
        image_format=cfg.data.image_format or formats.get("image_format", "dicom"),
    )
    if models[0].is_segmenter:
        result, report = segment(cfg, models, cohort, out_dir)
    else:
        result, report = classify(cfg, models, cohort, out_dir, device)
    outputs.write_errors(result, out_dir / "errors.csv")
    log.info(outputs.summary_line(result))
    if report is not None:
        log.info("report: %s", report.markdown)
        log_report(report, rc.instantiate_group(cfg.get("logger"), "logger"))
    return result, report


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    result, _ = predict(cfg)
    if result.failures:
        log.error("%d patient(s) could not be predicted: see %s",
                  len({f.patient for f in result.failures}), Path(cfg.output_dir) / "errors.csv")
        sys.exit(EXIT_PATIENTS_FAILED)


if __name__ == "__main__":
    main()
