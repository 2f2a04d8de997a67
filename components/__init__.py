"""Reusable Kubeflow Pipelines v2 components for the PyTorch model lifecycle.

Each component lives in its own folder: ``component.py`` holds the thin KFP
wrapper, the other modules hold plain Python logic that is importable and
tested without KFP, and ``README.md`` documents inputs and outputs.
"""

__version__ = "0.1.0"
