"""Helpers that build tiny random models for tests, benchmarks and the self-test."""

from sdstudio.testing.tiny import build_tiny_pipeline, save_tiny_model

__all__ = ["build_tiny_pipeline", "save_tiny_model"]
