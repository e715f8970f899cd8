"""Report figures as a reader sees them: what each one states, and where they are sent."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from radiogenomics.evaluation import plots
from radiogenomics.evaluation.bootstrap import ConfidenceInterval
from radiogenomics.evaluation.report import class_names, log_report, write_classification_report


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative scores of `n` patients."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)


def _texts(figure) -> list[str]:
    return [text.get_text() for ax in figure.axes for text in ax.texts]


def test_roc_states_n_positives_auc_interval_and_the_operating_point(tmp_path) -> None:
    y, p = _scores(40)
    auc = ConfidenceInterval(0.712, 0.601, 0.823)
    figure = plots.draw_roc(y, p, auc, "ROC - mgmt", threshold=0.6, positive="methylated")
    ax = figure.axes[0]
    assert f"n = 40 patients, {y.sum()} methylated" in ax.get_title()
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "AUC 0.712 (95% CI 0.601-0.823)" in legend
    sensitivity = np.mean(p[y == 1] >= 0.6)
    specificity = np.mean(p[y == 0] < 0.6)
    point = next(t for t in legend if t.startswith("threshold 0.60"))
    assert f"sensitivity {sensitivity:.2f}" in point and f"specificity {specificity:.2f}" in point
    marker = next(line for line in ax.get_lines() if line.get_label() == point)
    assert marker.get_xydata()[0] == pytest.approx([1 - specificity, sensitivity])
    assert "specificity" in ax.get_xlabel() and "sensitivity" in ax.get_ylabel()
    path = plots.plot_roc(y, p, tmp_path / "roc.png", auc)
    assert path.is_file() and path.stat().st_size > 1000


def test_confusion_cells_hold_counts_and_row_percentages_under_class_names(tmp_path) -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    predicted = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0])
    figure = plots.draw_confusion(y, predicted, ["unmethylated", "methylated"], "mgmt")
    ax = figure.axes[0]
    assert sorted(_texts(figure)) == sorted(["3\n75%", "1\n25%", "1\n17%", "5\n83%"])
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["unmethylated", "methylated"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["unmethylated", "methylated"]
    assert "n = 10" in ax.get_title()
    assert plots.plot_confusion(y, predicted, tmp_path / "c.png", ["a", "b"]).is_file()


def test_a_class_with_no_patient_shows_no_percentage() -> None:
    figure = plots.draw_confusion(np.array([0, 0, 1]), np.array([0, 2, 1]), ["a", "b", "c"])
    assert "0\n-" in _texts(figure) and "1\n50%" in _texts(figure)


def test_classes_are_named_from_the_target() -> None:
    assert class_names("mgmt", 2) == ["unmethylated", "methylated"]
    assert class_names("grade", 2) == ["LGG", "HGG"]
    assert class_names("survival_class", 3) == ["short", "mid", "long"]
    assert class_names("idh", 2) == ["idh=0", "idh=1"]
    assert class_names("grade", 3) == ["grade=0", "grade=1", "grade=2"]


def test_the_report_draws_with_class_names_and_its_threshold(tmp_path, monkeypatch) -> None:
    calls: dict[str, tuple] = {}

    def spy(name):
        original = getattr(plots, name)

        def record(*args, **kwargs):
            calls[name] = (args, kwargs)
            return original(*args, **kwargs)
        monkeypatch.setattr(plots, name, record)

    spy("plot_roc")
    spy("plot_confusion")
    spy("plot_calibration")
    y, p = _scores(30)
    write_classification_report(tmp_path, y, p[:, None], "grade", threshold=0.4, n_bootstrap=50)
    assert calls["plot_confusion"][0][3] == ["LGG", "HGG"]
    assert calls["plot_roc"][1] == {"threshold": 0.4, "positive": "HGG"}
    assert calls["plot_calibration"][1]["class_names"] == ["LGG", "HGG"]


def test_axis_limits_span_close_values_not_zero_to_one() -> None:
    low, high = plots.value_limits([0.55, 0.61, 0.65])
    assert 0.5 < low < 0.55 and 0.65 < high < 0.7
    assert plots.value_limits([0.99, 1.0]) == (pytest.approx(0.98), 1.0)
    assert plots.value_limits([-2.0, 3.0]) == (pytest.approx(-2.75), pytest.approx(3.75))
    assert plots.value_limits([0.7, 0.7]) == (pytest.approx(0.69), pytest.approx(0.71))


def test_sweep_comparison_axis_spans_the_final_values(tmp_path) -> None:
    final = {"run0": 0.58, "run1": 0.62, "run2": 0.60}
    curves = {run: ([0, 1, 2], [0.5, 0.55, value]) for run, value in final.items()}
    figure = plots.draw_sweep_comparison(curves, final, "val/auc_best", "val/auc",
                                         {"run0": "lr=0.001"})
    right = figure.axes[1]
    low, high = right.get_xlim()
    assert 0.5 < low < 0.58 and 0.62 < high < 0.7
    assert [t.get_text() for t in right.get_yticklabels()] == ["run0", "run2", "run1"]
    assert {"0.580", "0.600", "0.620"} <= set(_texts(figure))
    assert plots.plot_sweep_comparison(curves, final, "m", "c", tmp_path / "s.png").is_file()


def test_cv_summary_shows_mean_and_sd_with_error_bars_on_a_close_axis(tmp_path) -> None:
    folds = {"lr=0.001": [0.58, 0.61, 0.63], "lr=0.01": [0.55, 0.57, 0.6]}
    y, p = _scores(40)
    pooled = {"lr=0.001": (y, p, ConfidenceInterval(0.7, 0.6, 0.8))}
    figure = plots.draw_cv_summary(folds, "test/auc", pooled)
    left, right = figure.axes
    assert sum(isinstance(c, ErrorbarContainer) for c in left.containers) == 2
    low, high = left.get_ylim()
    assert 0.45 < low < 0.55 and 0.63 < high < 0.7
    mean, sd = np.mean(folds["lr=0.001"]), np.std(folds["lr=0.001"], ddof=1)
    assert f"{mean:.3f} ± {sd:.3f}" in _texts(figure)
    legend = right.get_legend().get_texts()[0].get_text()
    assert "AUC 0.700 (0.600-0.800)" in legend and f"n = 40, {y.sum()} positive" in legend
    assert plots.plot_cv_summary(folds, "test/auc", {}, tmp_path / "cv.png").is_file()


def test_report_figures_and_metrics_go_to_tensorboard(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from radiogenomics.loggers import tensorboard_logger

    y, p = _scores(30)
    report = write_classification_report(tmp_path / "report", y, p[:, None], "mgmt",
                                         n_bootstrap=50)
    logger = tensorboard_logger(save_dir=str(tmp_path), name="tb", version=0)
    log_report(report, [logger])
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["test/calibration", "test/confusion", "test/roc"]
    assert "test/auc" in events.Tags()["scalars"]
    roc = events.Images("test/roc")[0]
    assert roc.width > 300 and roc.height > 300
