"""radiogenomics: deep learning on brain-tumour MRI with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
