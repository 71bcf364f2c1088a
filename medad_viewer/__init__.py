"""MedAD Viewer: few-shot anomaly detection for medical images, as a desktop viewer."""

__version__ = "0.1.0"
