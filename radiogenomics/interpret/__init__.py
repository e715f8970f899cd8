"""Grad-CAM, attention maps and uncertainty."""
