"""The serving side: BentoML services over ONNX artifacts. Never imports torch."""

__version__ = "0.1.0"  # the project's version (pyproject.toml reads it from here); the image does not install it
