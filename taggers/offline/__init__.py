"""The offline two-tower model: image backbone (ONNX Runtime), text tower, heads and their precision."""
