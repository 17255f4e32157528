"""Inference backends of the PPD image model behind one interface (see ``base``)."""
from .base import BACKENDS, Backend, BackendOptions, BackendUnavailable
from .fallback import create_backend

__all__ = ["BACKENDS", "Backend", "BackendOptions", "BackendUnavailable", "create_backend"]
