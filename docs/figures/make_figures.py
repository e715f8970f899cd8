"""Regenerate the README's figures with the real commands on the default synthetic cohort.

    python docs/figures/make_figures.py [WORK_DIR]

Trains cnn3d as the default run does (8 epochs) and a 3D U-Net for 40 epochs (CPU, about a
quarter of an hour on 2 cores), predicts the 30 held-out test patients with
``interpret=gradcam`` and with the segmenter, and copies the Grad-CAM overlay of the first
test patient and the segmentation of the median patient (by whole-tumour Dice) here as
``gradcam.png`` and ``segmentation.png``; then a small U-Net trained on moved patients'
template-space NIfTI segments held-out patients' DICOM through ``data.register=true``:
``registered_segmentation.png`` (the better of two).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _run(*arguments: str) -> None:
    print("$", " ".join(arguments), flush=True)
    subprocess.run([sys.executable, *arguments], cwd=ROOT, check=True)


def main(work: Path) -> None:
    classifier, segmenter = work / "cnn3d", work / "unet"
    _run("train.py", "test=false", f"hydra.run.dir={classifier}")
    _run("predict.py", f"ckpt_path={classifier}", "interpret=gradcam",
         f"output_dir={work / 'gradcam'}", f"hydra.run.dir={work / 'gradcam'}")
    _run("train.py", "model=unet", "trainer.max_epochs=40", "test=false",
         f"hydra.run.dir={segmenter}")
    _run("predict.py", f"ckpt_path={segmenter}", f"output_dir={work / 'masks'}",
         f"hydra.run.dir={work / 'masks'}")
    first = sorted((work / "gradcam" / "maps").glob("*_gradcam.png"))[0]
    shutil.copy(first, HERE / "gradcam.png")
    shutil.copy(work / "masks" / "segmentation_median.png", HERE / "segmentation.png")
    # a small U-Net trained on moved patients' template-space NIfTI, applied to the held-out
    # patients' scanner-world DICOM through data.register=true (README, issue 17)
    registered = work / "unet-registered"
    _run("train.py", "model=unet", "data.synthetic.preset=realistic",
         "data.synthetic.patients=8", "data.synthetic.test_patients=2", "data.synthetic.size=96",
         "data.cohort_options.image_format=nifti", "data.register=true",
         "model.net.channels=[8,16,32]", "model.net.strides=[2,2]", "model.optimizer.lr=3e-3",
         "trainer.max_epochs=100", "trainer.check_val_every_n_epoch=50", "data.batch_size=2",
         "data.n_folds=2", f"hydra.run.dir={registered}")
    _run("predict.py", f"ckpt_path={registered}", "data.image_format=dicom",
         f"output_dir={work / 'registered'}", f"hydra.run.dir={work / 'registered'}")
    shutil.copy(work / "registered" / "segmentation_best.png",
                HERE / "registered_segmentation.png")
    print("written:", HERE / "gradcam.png", HERE / "segmentation.png",
          HERE / "registered_segmentation.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="figures-")))
