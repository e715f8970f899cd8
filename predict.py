"""Predict a cohort: `python predict.py ckpt_path=<ckpt | run dir | multirun dir> data.root=DIR`.

The shim a checkout's users know, over the package's entry point `radiogenomics.predict`
(installed: `radiogenomics predict ...` or `python -m radiogenomics predict ...`).
"""

from radiogenomics.predict import cli

if __name__ == "__main__":
    cli()
