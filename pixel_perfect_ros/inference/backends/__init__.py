"""Inference backends of the PPD image model behind one interface (see ``base``)."""
from .base import BACKENDS, DTYPES, Backend, BackendOptions, BackendUnavailable, create_backend

__all__ = ["BACKENDS", "DTYPES", "Backend", "BackendOptions", "BackendUnavailable", "create_backend"]
