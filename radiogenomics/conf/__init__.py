"""Hydra configs of radiogenomics, shipped as package data (`pkg://radiogenomics.conf`)."""
