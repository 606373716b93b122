"""Networks, presets, run folders, model cards and ONNX export."""
