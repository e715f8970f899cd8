"""Figures over a scan as a reader sees them: where the slices cut, what is drawn, which way
the patient faces, and who and what the title names."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest

from radiogenomics.evaluation import overlays
from radiogenomics.inference.figures import map_view, prediction_title, ranked_cases


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _head(shape: tuple[int, int, int] = (24, 28, 20)) -> np.ndarray:
    """A bright ellipsoid 'brain' in dark air, in RAS voxel order."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    radius = np.array(shape) * 0.38
    inside = (((grid - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2).sum(0)
    return np.where(inside <= 1, 100.0, 0.0)


def _panels(figure) -> list:
    """The image axes of a figure (not its colorbar)."""
    return [ax for ax in figure.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_slices_cut_through_the_tumour_when_the_cohort_has_a_mask() -> None:
    image = _head()
    tumour = np.zeros(image.shape, dtype=bool)
    tumour[5:9, 16:20, 12:15] = True  # off centre, away from the map's peak
    heatmap = np.zeros(image.shape)
    heatmap[15, 8, 6] = 1.0
    point = overlays.focus_point(image, heatmap, tumour)
    assert 5 <= point[0] < 9 and 16 <= point[1] < 20 and 12 <= point[2] < 15
    figure = overlays.draw_map_overlay(image, heatmap, tumour=tumour)
    for ax in _panels(figure):  # each view outlines the tumour it cuts
        assert ax.collections, f"{ax.get_title()} shows no tumour outline"


def test_without_a_mask_slices_go_through_the_maps_peak_inside_the_brain() -> None:
    image = _head()
    heatmap = np.zeros(image.shape)
    heatmap[0, 0, 0] = 1.0  # in the air: a network's edge artefact
    heatmap[14, 10, 11] = 0.6
    assert overlays.focus_point(image, heatmap) == (14, 10, 11)
    # a map with nothing inside the brain still shows the brain, not the air around it
    point = overlays.focus_point(image, np.zeros(image.shape))
    for axis, index in enumerate(point):
        section = np.take(image, index, axis=axis)
        assert section.max() > 0


def test_map_is_thresholded_in_a_perceptual_colormap_with_a_colorbar() -> None:
    image = _head()
    heatmap = np.zeros(image.shape)
    heatmap[8:16, 8:20, 6:14] = np.linspace(0, 1, 8)[:, None, None]
    figure = overlays.draw_map_overlay(image, heatmap, name="Grad-CAM", threshold=0.3)
    panels = _panels(figure)
    assert len(panels) == 3
    layer = panels[0].images[1]
    assert layer.get_cmap().name == "inferno"
    shown = layer.get_array()
    assert np.ma.is_masked(shown) and shown.compressed().min() >= 0.3
    bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "Grad-CAM" in bars[0].get_ylabel()


def test_patients_left_is_on_the_image_right_as_radiologists_read() -> None:
    image = _head((20, 20, 20))
    image[3, 8:12, 8:12] = 500.0  # a bright spot on the patient's left (low RAS x)
    figure = overlays.draw_map_overlay(image, np.zeros(image.shape))
    axial, coronal, sagittal = _panels(figure)
    for ax in (axial, coronal):
        pixels = ax.images[0].get_array()
        spot_column = np.unravel_index(np.argmax(pixels), pixels.shape)[1]
        assert spot_column > pixels.shape[1] / 2
        letters = {text.get_text(): text.get_position() for text in ax.texts}
        assert letters["L"][0] > 0.5 > letters["R"][0]
    letters = {text.get_text(): text.get_position() for text in sagittal.texts}
    assert letters["P"][0] > 0.5 > letters["A"][0] and letters["S"][1] > letters["I"][1]


def test_title_names_the_patient_the_class_and_its_probability() -> None:
    assert prediction_title("00012", "mgmt", np.array([0.73]), 1.0) == (
        "patient 00012: predicted methylated, P(methylated) = 0.73 (true: methylated)")
    title = prediction_title("00003", "mgmt", np.array([0.2]))
    assert "predicted unmethylated" in title and "P(methylated) = 0.20" in title
    title = prediction_title("7", "survival_class", np.array([0.1, 0.7, 0.2]), 2.0)
    assert title == "patient 7: predicted mid, P(mid) = 0.70 (true: long)"


def test_segmentation_overlay_shows_image_truth_and_prediction_in_region_colours() -> None:
    image = _head()
    truth = np.zeros(image.shape, dtype=int)
    truth[6:14, 8:16, 6:12] = 2  # oedema around
    truth[8:12, 10:14, 7:11] = 3  # enhancing rim
    truth[9:11, 11:13, 8:10] = 1  # necrotic core
    prediction = np.zeros_like(truth)
    prediction[7:13, 9:15, 7:11] = 2
    figure = overlays.draw_segmentation_overlay(image, truth, prediction, title="patient 1")
    panels = _panels(figure)
    assert [ax.get_title() for ax in panels[:3]] == ["image", "ground truth", "prediction"]
    assert len(panels) == 9  # three views
    assert all(len(ax.images) == 1 for ax in panels[::3])  # the image alone
    truth_layer = panels[1].images[1].get_array()
    assert set(np.unique(truth_layer.compressed())) == {1, 2, 3}  # every label in view
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert [name.split()[0] for name in legend] == ["NCR", "ED", "ET"]
    colours = panels[1].images[1].get_cmap().colors
    assert list(colours) == list(overlays.REGION_COLOURS.values())


def test_best_median_and_worst_cases_by_dice() -> None:
    dice = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.1, "e": 0.6}
    assert ranked_cases(dice) == {"best": "a", "median": "e", "worst": "d"}
    assert ranked_cases({"a": 0.9, "b": 0.2}) == {"best": "a", "worst": "b"}
    assert ranked_cases({"a": 0.9}) == {"best": "a"}
    assert ranked_cases({}) == {}


def test_overlays_are_written_as_png(tmp_path) -> None:
    image = _head()
    written = overlays.plot_map_overlay(image, image / 100, tmp_path / "map.png")
    labels = (image > 0).astype(int) * 2
    masks = overlays.plot_segmentation_overlay(image, labels, labels, tmp_path / "seg.png")
    assert written.stat().st_size > 1000 and masks.stat().st_size > 1000


def test_an_unreadable_tumour_mask_costs_the_outline_not_the_patient(tmp_path, caplog) -> None:
    image = _head()
    scan = tmp_path / "t1wce.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0])), scan)
    (tmp_path / "seg.nii.gz").write_bytes(b"not a NIfTI file")
    case = {"id": "00001", "images": {"T1wCE": str(scan)}, "seg": str(tmp_path / "seg.nii.gz"),
            "labels": {}, "label_scheme": "brats2021"}
    view = map_view(case, np.zeros(image.shape), SimpleNamespace(reference="T1wCE"))
    assert view.tumour is None and view.scan.spacing == (2.0, 2.0, 3.0)
    assert "patient 00001: tumour mask not drawn" in caplog.text
