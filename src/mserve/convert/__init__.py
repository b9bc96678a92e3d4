"""Trained models -> ONNX, written into a model repository."""
