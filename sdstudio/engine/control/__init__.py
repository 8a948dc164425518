"""Guiding the picture: ControlNet units (with their preprocessors and model files)."""
