"""Predict a cohort: `radiogenomics predict ckpt_path=<ckpt | run dir | multirun dir> data.root=DIR`
(also `python predict.py ...` in a checkout); an export folder (`radiogenomics export`) as
ckpt_path predicts with its ONNX or TorchScript network.

Loads the model(s) with the training run's config, predicts every patient, writes
submission.csv, predictions.csv and errors.csv (segmenters: masks and segmentations.csv;
plus maps, uncertainty.csv and the evaluation report when asked or when the cohort has
labels) into `output_dir`; see `radiogenomics.inference.pipeline`. Exits with code 3 when a
patient could not be read (it still has a row, with the fallback value).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from radiogenomics import config as rc
from radiogenomics.evaluation.report import EvaluationReport
from radiogenomics.inference.pipeline import EXIT_PATIENTS_FAILED, Result, predict_cohort

log = logging.getLogger("predict")


@rc.task_wrapper
def predict(cfg: DictConfig) -> tuple[Result, EvaluationReport | None]:
    return predict_cohort(cfg)


@hydra.main(version_base="1.3", config_path=rc.CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    result, _ = predict(cfg)
    if result.failures:
        log.error("%d patient(s) could not be predicted: see %s",
                  len({f.patient for f in result.failures}), Path(cfg.output_dir) / "errors.csv")
        sys.exit(EXIT_PATIENTS_FAILED)


def cli() -> None:
    """The command line: one message and exit 2 for a user error (see `config.run_cli`)."""
    rc.run_cli(main)


if __name__ == "__main__":
    cli()
