"""The engine's published bytes on bench/golden_scores.py's synthetic replay are the recorded ones.

A CPU optimisation of the scoring code must not change a byte of output (issue 24): this runs the
synthetic case of bench/golden_scores.py (three interleaved streams with a level shift, a stuck sensor, a
spike and a gap, through the packaged model, in rounds that mix streams at different stages) and compares
its payload, replay-row and state hashes with bench/golden_scores.json. The two fitted-model cases need
../shared and a `fit` (not byte-reproducible between machines): run `bench/golden_scores.py --check` for
those. A change of behaviour on purpose re-records the file (`--write`) and says so.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_synthetic_replay_is_byte_identical_to_the_recorded_hashes() -> None:
    spec = importlib.util.spec_from_file_location("golden_scores", ROOT / "bench" / "golden_scores.py")
    assert spec is not None and spec.loader is not None
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    want = json.loads((ROOT / "bench" / "golden_scores.json").read_text())["synthetic"]
    got = golden.replay_hashes(golden.synthetic_csv(), None, 7)
    assert got == want
