"""Prediction: trained models from run directories, cohort prediction, fold ensembles, outputs."""
