"""Patient-level predictions from slice-level ones (2D models): mean probability or vote."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

AGGREGATIONS: tuple[str, ...] = ("mean", "vote")

VOTE_TIE_BREAK = 1e-4
"""Weight of the mean probability in a vote score: it only orders patients of equal votes."""


def patient_code(patient: str) -> int:
    """A stable 63-bit integer for a patient id, so that ids can travel in tensors (DDP)."""
    return int.from_bytes(hashlib.blake2b(patient.encode(), digest_size=8).digest(), "big") >> 1


def aggregate(codes: torch.Tensor, probabilities: torch.Tensor, how: str = "mean"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One score per patient: unique patient codes and their aggregated probabilities.

    ``probabilities`` holds the positive-class probability of each slice ``(N,)`` or the
    class probabilities ``(N, K)``. ``mean`` averages them; ``vote`` gives the share of the
    patient's slices that predict each class (binary: the share predicted positive), so
    the patient's class is the majority vote and the share ranks patients for AUC. Patients
    with the same share (e.g. every slice voting the majority class) are ranked by their
    mean probability, which moves the score by at most ``VOTE_TIE_BREAK``: a vote that is
    not a tie keeps its side of 0.5, and a tie goes the way of the mean probability.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, not {how!r}")
    if how == "vote":
        patients, mean = _mean_by_patient(codes, probabilities)
        if probabilities.ndim == 1:
            votes = (probabilities >= 0.5).to(probabilities.dtype)
        else:
            classes = probabilities.argmax(dim=-1)
            votes = torch.nn.functional.one_hot(classes, probabilities.shape[-1])
            votes = votes.to(probabilities.dtype)
        _, share = _mean_by_patient(codes, votes)
        return patients, (1 - VOTE_TIE_BREAK) * share + VOTE_TIE_BREAK * mean
    return _mean_by_patient(codes, probabilities)


def _mean_by_patient(codes: torch.Tensor, probabilities: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    patients, inverse = torch.unique(codes, return_inverse=True)
    counts = torch.zeros(len(patients), dtype=probabilities.dtype, device=probabilities.device)
    counts.index_add_(0, inverse, torch.ones_like(inverse, dtype=probabilities.dtype))
    sums = torch.zeros((len(patients), *probabilities.shape[1:]), dtype=probabilities.dtype,
                       device=probabilities.device)
    sums.index_add_(0, inverse, probabilities)
    return patients, sums / counts.view(-1, *([1] * (probabilities.ndim - 1)))


def aggregate_by_patient(patients: Sequence[str], probabilities: torch.Tensor,
                         how: str = "mean") -> dict[str, torch.Tensor]:
    """Patient id -> aggregated probability, for slice predictions of a 2D model."""
    names = {patient_code(p): p for p in patients}
    codes = torch.tensor([patient_code(p) for p in patients], dtype=torch.int64)
    unique, scores = aggregate(codes, probabilities.detach().cpu().float(), how)
    return {names[int(code)]: score for code, score in zip(unique, scores)}


class PatientAggregation(Metric):
    """Collects slice probabilities and targets; ``compute`` gives them per patient.

    Any string that groups slices works as the patient, e.g. ``"<patient>/<series>"``.

    The states are tensors concatenated across processes, so the result is the same in DDP.
    """

    full_state_update = False

    def __init__(self, how: str = "mean") -> None:
        super().__init__()
        if how not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, not {how!r}")
        self.how = how
        self.add_state("codes", default=[], dist_reduce_fx="cat")
        self.add_state("probabilities", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, patients: Sequence[str], probabilities: torch.Tensor,
               targets: torch.Tensor) -> None:
        codes = [patient_code(p) for p in patients]
        self.codes.append(torch.tensor(codes, dtype=torch.int64, device=probabilities.device))
        self.probabilities.append(probabilities.float())
        self.targets.append(targets.long())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregated probabilities and the target of each patient, in patient-code order."""
        codes = dim_zero_cat(self.codes)
        targets = dim_zero_cat(self.targets)
        patients, scores = aggregate(codes, dim_zero_cat(self.probabilities), self.how)
        patient_targets = torch.zeros(len(patients), dtype=targets.dtype, device=targets.device)
        patient_targets[torch.searchsorted(patients, codes)] = targets
        return scores, patient_targets
