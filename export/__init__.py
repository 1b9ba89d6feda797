"""Checkpoint -> ONNX + metadata, with parity, evaluation and calibration. The contract it writes is contract/."""
