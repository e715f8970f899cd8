"""Train a model: `python train.py [data=...] [model=...] [trainer=...] [key=value ...]`.

The shim a checkout's users know, over the package's entry point `radiogenomics.train`
(installed: `radiogenomics train ...` or `python -m radiogenomics train ...`).
"""

from radiogenomics.train import cli

if __name__ == "__main__":
    cli()
