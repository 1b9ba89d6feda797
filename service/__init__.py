"""The serving side: BentoML services over ONNX artifacts. Never imports torch."""
