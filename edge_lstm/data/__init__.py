"""Data shipped with the package: the default model (`default.onnx`, made by scripts/make_default_model.py)."""
