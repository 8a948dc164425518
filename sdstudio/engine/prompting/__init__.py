"""Prompt-side networks: what ``<lora:…>`` and similar tags load and how it changes the model."""
