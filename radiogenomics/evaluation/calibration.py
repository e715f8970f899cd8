"""Post-hoc calibration of binary probabilities, fitted on held-out predictions.

Three calibrators, each ``fit(y, p)`` then ``apply(p)``, saved and loaded as JSON:

- temperature scaling (Guo et al., ICML 2017): the logit divided by one fitted temperature;
- Platt scaling (Platt 1999): a logistic regression on the logit, with Platt's smoothed targets;
- isotonic regression (Zadrozny & Elkan, KDD 2002): a monotone step function (its thresholds).

Temperature and Platt scaling are strictly increasing, so they keep every ranking (and the AUC);
isotonic regression may merge neighbouring scores into ties.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.evaluation.bootstrap import binary_inputs

CALIBRATION_FILE = "calibration.json"
"""The calibrator of a cross-validation sweep, in its multirun folder."""

_EDGE = 1e-12
"""Probabilities are clipped to [_EDGE, 1 - _EDGE] before taking logits."""


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=float), _EDGE, 1 - _EDGE))


class Calibrator(ABC):
    """Maps a model's probabilities of the positive class to calibrated ones."""

    method: ClassVar[str]

    @abstractmethod
    def fit(self, y: np.ndarray, p: np.ndarray) -> Calibrator:
        """Fit on labels `y` (0/1) and the model's probabilities `p`; returns itself."""

    @abstractmethod
    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of `p` (same shape)."""

    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """What the JSON file stores: enough for `from_parameters` to rebuild it."""

    @classmethod
    @abstractmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> Calibrator:
        """The calibrator that `parameters` describes."""


class TemperatureScaling(Calibrator):
    """``sigmoid(logit(p) / T)`` with T minimising the log loss."""

    method = "temperature"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def fit(self, y: np.ndarray, p: np.ndarray) -> TemperatureScaling:
        y, p = binary_inputs(y, p)
        z = _logit(p)

        def log_loss(log_temperature: float) -> float:
            s = z / np.exp(log_temperature)
            return float(np.mean(np.logaddexp(0.0, s) - y * s))

        self.temperature = float(np.exp(minimize_scalar(log_loss, bounds=(-5.0, 5.0),
                                                        method="bounded").x))
        return self

    def apply(self, p: np.ndarray) -> np.ndarray:
        return expit(_logit(p) / self.temperature)

    def parameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> TemperatureScaling:
        return cls(float(parameters["temperature"]))


class PlattScaling(Calibrator):
    """``sigmoid(slope * logit(p) + intercept)``, a logistic regression fitted to Platt's
    targets ((N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives), which keeps the
    fit finite when the scores separate the classes."""

    method = "platt"

    def __init__(self, slope: float = 1.0, intercept: float = 0.0) -> None:
        self.slope = slope
        self.intercept = intercept

    def fit(self, y: np.ndarray, p: np.ndarray) -> PlattScaling:
        y, p = binary_inputs(y, p)
        n_positive, n_negative = int(y.sum()), int(y.size - y.sum())
        target = np.where(y == 1, (n_positive + 1) / (n_positive + 2), 1 / (n_negative + 2))
        # soft targets as weights: every patient once as a positive (weight t), once as a negative
        z = np.concatenate([_logit(p), _logit(p)])[:, None]
        labels = np.concatenate([np.ones(y.size), np.zeros(y.size)])
        weights = np.concatenate([target, 1 - target])
        model = LogisticRegression(C=np.inf, max_iter=1000).fit(z, labels, sample_weight=weights)
        self.slope, self.intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
        return self

    def apply(self, p: np.ndarray) -> np.ndarray:
        return expit(self.slope * _logit(p) + self.intercept)

    def parameters(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> PlattScaling:
        return cls(float(parameters["slope"]), float(parameters["intercept"]))


class IsotonicCalibration(Calibrator):
    """A non-decreasing step function of p: linear between its thresholds, flat beyond them."""

    method = "isotonic"

    def __init__(self, thresholds: np.ndarray | None = None,
                 values: np.ndarray | None = None) -> None:
        self.thresholds = np.asarray([0.0, 1.0] if thresholds is None else thresholds, float)
        self.values = np.asarray([0.0, 1.0] if values is None else values, float)

    def fit(self, y: np.ndarray, p: np.ndarray) -> IsotonicCalibration:
        y, p = binary_inputs(y, p)
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        self.thresholds, self.values = model.X_thresholds_, model.y_thresholds_
        return self

    def apply(self, p: np.ndarray) -> np.ndarray:
        # IsotonicRegression.predict with out_of_bounds="clip", from the stored thresholds
        return np.interp(np.asarray(p, dtype=float), self.thresholds, self.values)

    def parameters(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.tolist(), "values": self.values.tolist()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> IsotonicCalibration:
        return cls(np.asarray(parameters["thresholds"]), np.asarray(parameters["values"]))


CALIBRATORS: dict[str, type[Calibrator]] = {
    c.method: c for c in (TemperatureScaling, PlattScaling, IsotonicCalibration)}
"""``calibration=`` choices (besides ``none``) and their calibrators."""

DESCRIPTIONS: dict[str, str] = {
    "temperature": "temperature scaling (Guo et al., ICML 2017)",
    "platt": "Platt scaling (Platt, Advances in Large Margin Classifiers 1999)",
    "isotonic": "isotonic regression (Zadrozny & Elkan, KDD 2002)",
}
"""How a report names each method, with its reference."""


def fit_calibrator(method: str, y: np.ndarray, p: np.ndarray) -> Calibrator:
    """The calibrator `method` (temperature, platt or isotonic) fitted on `y` and `p`."""
    if method not in CALIBRATORS:
        raise ValueError(f"calibration={method} is not a method -> choose none, "
                         f"{', '.join(CALIBRATORS)}")
    y, p = binary_inputs(y, p)
    if len(np.unique(y)) != 2:
        raise ValueError("a calibrator needs labels of both classes to be fitted")
    return CALIBRATORS[method]().fit(y, p)


def save_calibrator(calibrator: Calibrator, path: str | Path, **fitted_on: Any) -> Path:
    """Write `calibrator` as JSON (method, parameters, and `fitted_on`: what it was fitted on)."""
    path = Path(path)
    path.write_text(json.dumps({"method": calibrator.method,
                                "parameters": calibrator.parameters(),
                                "fitted_on": fitted_on}, indent=2) + "\n")
    return path


def load_calibrator(path: str | Path) -> Calibrator:
    """The calibrator that `save_calibrator` wrote to `path`."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
        return CALIBRATORS[saved["method"]].from_parameters(saved["parameters"])
    except (ValueError, KeyError, TypeError) as err:
        raise RadiogenomicsError(f"{path} is not a calibration file ({err}) -> fit it again: "
                                 "python -m radiogenomics.cv <multirun> --calibration "
                                 "<temperature|platt|isotonic>") from err
