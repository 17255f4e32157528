"""Pipelines, preprocessing and checkpoint loading."""
