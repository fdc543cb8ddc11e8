"""Helper code for the tests (importable as `support`: pytest's `pythonpath = ["tests"]`).

- `models`: small ONNX LSTM step models built with the `onnx` helper API (no torch)
- `traffic`: synthetic readings and reading payloads
- `config`: daemon config files (TOML) and JSON log lines
- `mqtt`: the one paho client factory, and the test clients built on it
- `daemon`: the daemon as a restartable subprocess, or in a thread
- `faults`: the fault tests' broker, reference run and state comparison

Fixtures live in tests/conftest.py.
"""
