"""Readers, cohorts, synthetic data, splits, transforms, cache and datamodules."""
