"""Peak RSS while a checkpoint of many streams is written: the streamed format (durable/checkpoint.py)
against the previous one (the whole table gathered into a `numpy.savez` blob, then hashed: kept here as
the baseline), each in a fresh process, in one run (issue 22: "checkpoint without copies").

    python bench/checkpoint_rss.py --streams 100000

For each variant: steady RSS with the table full (the packaged default model, every scoring column),
peak RSS during the checkpoint (VmHWM after resetting it through /proc/self/clear_refs), the peak's
excess over steady (the peak includes the read-back check), the write and verify times and the file
size. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _savez_checkpoint(path: Path, table: Any) -> int:
    """The format before this change (edge_lstm 0.x, checkpoint version 1), as it was written."""
    streams = list(table.slots)
    idx = np.fromiter(table.slots.values(), np.intp, len(streams))
    arrays = {f"state{k}": a[idx] for k, a in enumerate(table.states)}
    arrays.update(last_ts=table.last_ts[idx], steps=table.steps[idx], anomalies=table.anomalies[idx])
    arrays.update(prediction=table.prediction[idx])
    arrays.update({f"col.{k}": a[idx] for k, a in table.columns.items()})
    header = {"model_sha256": "", "journal_segment": 0, "created": time.time(), "streams": streams}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    body = b"EDGE-LSTM-CHECKPOINT 1\n" + buf.getvalue()
    data = body + hashlib.sha256(body).digest()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(data)


def child(variant: str, streams: int, directory: Path) -> dict[str, Any]:
    from edge_lstm import Engine
    from edge_lstm.durable import checkpoint
    from edge_lstm.onnx_model import load_model

    engine = Engine(load_model(None), max_streams=streams)
    table = engine.table
    for i in range(0, streams, 4096):
        table.acquire_many([f"sensor-{k:06d}" for k in range(i, min(i + 4096, streams))], keep_evicted=False)
    rng = np.random.default_rng(0)
    for a in [*table.states, table.prediction, *table.columns.values()]:
        a[...] = rng.standard_normal(a.shape).astype(a.dtype) if a.dtype.kind == "f" else 1
    steady = _kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    path = directory / f"checkpoint.{variant}"
    if variant == "savez":
        size = _savez_checkpoint(path, table)
    else:
        size = checkpoint.save(path, table, model_sha256="", journal_segment=0)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    checkpoint.verify(path)  # the read-back before the older generation may go (streamed: no memory)
    verify_s = time.perf_counter() - t1
    peak = _kb("VmHWM")
    return {
        "variant": variant,
        "steady_mb": steady / 1024,
        "peak_mb": peak / 1024,
        "seconds": seconds,
        "verify_s": verify_s,
        "bytes": size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=100_000)
    ap.add_argument("--child", default="")
    ap.add_argument("--dir", default="")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.streams, Path(args.dir))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for variant in ("savez", "streamed"):
            cmd = [sys.executable, __file__, "--child", variant, "--streams", str(args.streams), "--dir", d]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(f"checkpoint of {args.streams:,} streams (packaged default model, all scoring columns)")
    print(
        f"{'variant':<10} {'steady MB':>10} {'peak MB':>9} {'excess':>8} {'write s':>8} {'verify s':>9} {'file MB':>8}"
    )
    for r in rows:
        excess = (r["peak_mb"] - r["steady_mb"]) / r["steady_mb"]
        print(
            f"{r['variant']:<10} {r['steady_mb']:>10.1f} {r['peak_mb']:>9.1f} {excess:>+8.1%} "
            f"{r['seconds']:>8.2f} {r['verify_s']:>9.2f} {r['bytes'] / 2**20:>8.1f}"
        )


if __name__ == "__main__":
    main()
