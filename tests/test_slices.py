"""The 2D slice pipeline: slices of cached volumes, split by patient, scored per patient."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from radiogenomics.data.readers import load_volume
from radiogenomics.data.slices import SliceDataModule, select_slices
from radiogenomics.errors import LabelError
from radiogenomics.evaluation.aggregation import PatientAggregation, aggregate_by_patient
from tests.conftest import write_png_series


@pytest.fixture(scope="module")
def slice_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preprocessing cache shared by this module's datamodules."""
    return tmp_path_factory.mktemp("slice_cache")


def make_datamodule(root: Path, cache: Path, **options) -> SliceDataModule:
    settings = dict(layout="synthetic", root=str(root), target="mgmt", sequences=("FLAIR",),
                    spatial_size=(16, 16, 8), n_folds=2, batch_size=4, num_workers=0,
                    prepare_workers=0, cache_dir=str(cache), augment=None, slices_per_case=4)
    settings.update(options)
    datamodule = SliceDataModule(**settings)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def patients_served(loader: torch.utils.data.DataLoader) -> list[str]:
    return [pid for batch in loader for pid in batch["id"]]


def test_items_are_slices_of_the_cached_volume_with_their_patient(tiny_cohort, slice_cache):
    datamodule = make_datamodule(tiny_cohort, slice_cache, selection="central")
    dataset = datamodule.val_dataloader().dataset
    assert len(dataset) == 4 * len(datamodule.val_cases)
    item = dataset[0]
    assert item["image"].shape == (1, 16, 16)
    assert item["id"] == datamodule.val_cases[0]["id"]
    volume = np.asarray(datamodule.cache.load(datamodule.val_cases[0])["image"], np.float32)
    assert item["slice"] == 2  # the 4 central slices of 8 are 2..5
    assert torch.equal(item["image"], torch.from_numpy(volume[:, :, :, 2]))
    assert item["label"] == datamodule.val_cases[0]["labels"]["mgmt"]


def test_no_patient_has_slices_in_two_splits(tiny_cohort, slice_cache):
    datamodule = make_datamodule(tiny_cohort, slice_cache, test_split="test",
                                 augment={"flip_prob": 0.5})
    train = patients_served(datamodule.train_dataloader())
    val = patients_served(datamodule.val_dataloader())
    test = patients_served(datamodule.test_dataloader())
    assert train and val and test
    assert not set(train) & set(val)
    assert not set(train) & set(test)
    assert not set(val) & set(test)
    # every slice of every patient is served once per epoch, in its patient's split only
    assert sorted(set(train) | set(val)) == sorted(c["id"] for c in
                                                  datamodule.train_cases + datamodule.val_cases)
    assert all(count == 4 for count in np.unique(train + val, return_counts=True)[1])


@pytest.mark.parametrize("plane, shape", [("axial", (1, 16, 16)), ("coronal", (1, 16, 8)),
                                          ("sagittal", (1, 16, 8))])
def test_plane_decides_the_slice_axis(tiny_cohort, slice_cache, plane, shape):
    datamodule = make_datamodule(tiny_cohort, slice_cache, plane=plane, slices_per_case=2)
    assert datamodule.val_dataloader().dataset[0]["image"].shape == shape


def test_selection_picks_central_brain_or_tumour_slices():
    image = np.zeros((1, 4, 4, 10), np.float32)
    image[0, :, :, 1:4] = 1.0  # brain on slices 1-3, largest on 2
    image[0, :2, :, 2] = 2.0
    image[0, 3, 3, 7] = 1.0
    seg = np.zeros((1, 4, 4, 10), np.uint8)
    seg[0, :2, :2, 7:9] = 1
    assert select_slices(image, None, "axial", 4, "central") == [3, 4, 5, 6]
    assert select_slices(image, None, "axial", 3, "brain_area") == [1, 2, 3]
    assert select_slices(image, seg, "axial", 2, "tumour") == [7, 8]
    assert select_slices(image, None, "axial", 20, "central") == list(range(10))


def test_tumour_selection_needs_masks_and_says_so(tiny_cohort, slice_cache, tmp_path):
    rsna = tmp_path / "rsna"  # the Kaggle layout: no masks
    rsna.mkdir()
    (rsna / "train").symlink_to(tiny_cohort / "rsna" / "train")
    shutil.copy(tiny_cohort / "rsna" / "train_labels.csv", rsna)
    with pytest.raises(LabelError, match="selection=tumour"):
        make_datamodule(rsna, slice_cache, layout="rsna", selection="tumour",
                        cohort_options={"exclude": []})


def test_segmentation_target_serves_mask_slices(tiny_cohort, slice_cache):
    datamodule = make_datamodule(tiny_cohort, slice_cache, target="seg", selection="tumour",
                                 slices_per_case=2)
    dataset = datamodule.train_dataloader().dataset
    items = [dataset[0], dataset[1]]  # the first patient's two slices of most tumour
    assert all(i["seg"].shape == (1, 16, 16) and i["seg"].dtype == torch.int64 for i in items)
    assert "label" not in items[0]
    mask = np.asarray(datamodule.cache.load(datamodule.train_cases[0])["seg"])
    assert {i["slice"] for i in items} == set(np.argsort((mask > 0).sum(axis=(0, 1, 2)))[-2:])
    assert torch.equal(items[0]["seg"][0], torch.from_numpy(mask[0, :, :, items[0]["slice"]]
                                                            .astype(np.int64)))


def test_png_layout_serves_slices(tiny_cohort, slice_cache, tmp_path):
    root = tmp_path / "png"
    for folder in sorted((tiny_cohort / "rsna" / "train").iterdir())[:4]:
        grey = write_png_series(folder / "FLAIR", root / folder.name / "FLAIR", first_number=7)
    labels = pd.read_csv(tiny_cohort / "rsna" / "train_labels.csv", dtype=str)
    labels[labels.BraTS21ID.str.zfill(5).isin(p.name for p in root.iterdir())].to_csv(
        root / "train_labels.csv", index=False)
    assert np.array_equal(load_volume(root / folder.name / "FLAIR").array, grey)
    datamodule = make_datamodule(root, slice_cache, layout="png", spacing=None,
                                 cohort_options={"sequences": ["FLAIR"]})
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape[1:] == (1, 16, 16)
    assert set(batch["id"]) <= {c["id"] for c in datamodule.train_cases}


def test_patient_score_is_the_mean_or_the_vote_of_its_slices():
    ids = ["a", "a", "a", "b", "b"]
    probabilities = torch.tensor([0.9, 0.6, 0.3, 0.2, 0.4])
    mean = aggregate_by_patient(ids, probabilities, "mean")
    vote = aggregate_by_patient(ids, probabilities, "vote")
    assert mean["a"].item() == pytest.approx(0.6) and mean["b"].item() == pytest.approx(0.3)
    assert vote["a"].item() == pytest.approx(2 / 3, abs=1e-3)
    assert vote["b"].item() == pytest.approx(0.0, abs=1e-3)
    classes = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.1, 0.6, 0.3]])
    assert torch.allclose(aggregate_by_patient(["c"] * 3, classes, "vote")["c"],
                          torch.tensor([1 / 3, 2 / 3, 0.0]), atol=1e-3)


def test_equal_votes_are_ranked_by_mean_probability():
    """A biased model voting every slice positive still ranks its patients (AUC is not 0.5)."""
    ids = ["a", "a", "b", "b", "c", "c"]
    probabilities = torch.tensor([0.9, 0.8, 0.6, 0.7, 0.55, 0.52])
    vote = aggregate_by_patient(ids, probabilities, "vote")
    assert vote["a"] > vote["b"] > vote["c"] >= 0.5
    tie = aggregate_by_patient(["d", "d"], torch.tensor([0.9, 0.2]), "vote")["d"]
    assert tie > 0.5  # a tied vote goes the way of the mean probability (0.55)


def test_patient_aggregation_metric_gives_one_row_per_patient():
    metric = PatientAggregation("mean")
    metric.update(["p1", "p2"], torch.tensor([0.8, 0.1]), torch.tensor([1, 0]))
    metric.update(["p1", "p3"], torch.tensor([0.6, 0.3]), torch.tensor([1, 1]))
    scores, targets = metric.compute()
    order = torch.argsort(scores)
    assert targets[order].tolist() == [0, 1, 1]
    assert scores[order].tolist() == pytest.approx([0.1, 0.3, 0.7])
