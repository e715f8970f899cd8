"""Metrics beyond torchmetrics, reports and plots."""
