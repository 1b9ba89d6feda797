"""Checkpoint -> ONNX + metadata. ``export.contract`` is torch-free and shared with the service."""
