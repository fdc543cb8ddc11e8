#!/usr/bin/env python3
"""Engine throughput: micro-batched pipeline vs one onnxruntime call per reading, same run.

    python bench/bench_engine.py [--streams 10000] [--steps 5] [--batch 1024] [--model M]

Pipeline measured (what the daemon's worker does, without the network):
    payload bytes --Decoder.decode--> Reading --Engine.process--> Result --encode--> payload bytes

- batched:  the payloads of one time step (one per stream) are cut into batches of `--batch` (the
            daemon's `engine.max_batch`, default 1024) and each batch goes through
            decode → Engine.process(batch) → encode;
- baseline: the same payloads, one at a time: decode → Engine.process([reading]) → encode,
            i.e. one onnxruntime call per reading.

Each mode has its own engine (own state table, `max_streams` = streams). Steps alternate which mode
runs first, so drift of the machine (thermal, other load) hits both alike; the first step of each mode
(table growth, onnxruntime warm-up) is not timed. Reported: readings/s per mode over all timed steps,
the median of the per-step ratios, and time per reading by stage.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_lstm import Decoder, Engine, Rejection, encode, load_model
from edge_lstm.contract import ModelFormatError
from edge_lstm.onnx_model import default_model_path

ROOT = Path(__file__).resolve().parent.parent


def fallback_model(directory: Path, features: tuple[str, ...]) -> Path:
    """A generated LSTM step model (random weights) when the packaged model is not there yet."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.models import make_step_model  # needs the `onnx` package (test extra)

    return make_step_model(
        directory / "bench-fallback.onnx", features=features, hidden=32, layers=2, warmup_steps=5, name="bench-fallback"
    )


def make_payloads(
    n_streams: int, n_steps: int, features: tuple[str, ...], t0: float, seed: int = 0
) -> tuple[list[str], list[list[bytes]]]:
    """Realistic sensor payloads: {"ts": ..., "<feature>": value, ...}, one per stream per step."""
    rng = np.random.default_rng(seed)
    streams = [f"machine-{i:05d}" for i in range(n_streams)]
    base = rng.uniform(0.0, 50.0, size=(n_streams, len(features)))
    steps = []
    for t in range(n_steps):
        vals = base + rng.normal(0.0, 1.0, size=base.shape)
        ts = t0 + t
        steps.append(
            [json.dumps({"ts": ts, **{f: round(float(v), 4) for f, v in zip(features, row)}}).encode() for row in vals]
        )
    return streams, steps


class Mode:
    def __init__(self, name: str, model, n_streams: int, decoder: Decoder) -> None:
        self.name = name
        self.engine = Engine(model, max_streams=n_streams)
        self.decoder = decoder
        self.t_decode = self.t_engine = self.t_encode = 0.0
        self.readings = 0
        self.calls = 0  # model calls during timed steps
        self._calls_mark = 0
        self.out_bytes = 0
        self.step_times: list[float] = []

    def mark(self) -> None:
        self._calls_mark = self.engine.stats.model_calls

    def record(self, td: float, te: float, tc: float, n: int, timed: bool) -> None:
        if timed:
            self.calls += self.engine.stats.model_calls - self._calls_mark
            self.t_decode += td
            self.t_engine += te
            self.t_encode += tc
            self.readings += n
            self.step_times.append(td + te + tc)


def run_batched(mode: Mode, streams: list[str], payloads: list[bytes], batch: int, now: float, timed: bool) -> None:
    dec, eng, pc = mode.decoder.decode, mode.engine.process, time.perf_counter
    mode.mark()
    td = te = tc = 0.0
    out_bytes = 0
    for start in range(0, len(payloads), batch):
        t_a = pc()
        items = [dec(s, p, now) for s, p in zip(streams[start : start + batch], payloads[start : start + batch])]
        t_b = pc()
        outs = eng(items)
        t_c = pc()
        encoded = [encode(o) for o in outs if not isinstance(o, Rejection)]
        t_d = pc()
        td += t_b - t_a
        te += t_c - t_b
        tc += t_d - t_c
        out_bytes += sum(map(len, encoded))
    assert out_bytes > 0
    mode.out_bytes += out_bytes
    mode.record(td, te, tc, len(payloads), timed)


def run_single(mode: Mode, streams: list[str], payloads: list[bytes], now: float, timed: bool) -> None:
    dec, eng, pc = mode.decoder.decode, mode.engine.process, time.perf_counter
    mode.mark()
    td = te = tc = 0.0
    out_bytes = 0
    for s, p in zip(streams, payloads):
        t_a = pc()
        item = dec(s, p, now)
        t_b = pc()
        out = eng([item])[0]
        t_c = pc()
        data = encode(out)  # type: ignore[arg-type]
        t_d = pc()
        td += t_b - t_a
        te += t_c - t_b
        tc += t_d - t_c
        out_bytes += len(data)
    mode.out_bytes += out_bytes
    mode.record(td, te, tc, len(payloads), timed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=5, help="timed time steps per mode (default 5)")
    ap.add_argument("--batch", type=int, default=1024, help="readings per engine call (daemon max_batch)")
    ap.add_argument("--model", help="ONNX step model (default: the packaged model, else a generated one)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (daemon default 1)")
    args = ap.parse_args(argv)
    if args.streams < 1 or args.steps < 1 or args.batch < 1:
        ap.error("--streams, --steps and --batch must be >= 1")

    tmp = tempfile.TemporaryDirectory(prefix="edge-lstm-bench-")
    path = args.model
    if path is None:
        path = default_model_path()
        if not Path(path).is_file():
            from edge_lstm.demo.simulate import FEATURES

            path = fallback_model(Path(tmp.name), FEATURES)
            print(f"note: no packaged model at {default_model_path()}; using a generated one", file=sys.stderr)
    try:
        model = load_model(path, threads=args.threads)
    except ModelFormatError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    meta = model.meta
    features = tuple(meta.features)
    state_desc = " + ".join("x".join(map(str, s)) for s in model.state_shapes)

    now = time.time()
    n_steps = args.steps + 1  # + one untimed warm-up step
    t_prep = time.perf_counter()
    streams, steps = make_payloads(args.streams, n_steps, features, t0=now - n_steps - 10)
    prep = time.perf_counter() - t_prep
    decoder = Decoder(features)
    batched = Mode("batched", model, args.streams, decoder)
    single = Mode("per-message", model, args.streams, decoder)

    print(
        f"model     {meta.name} {meta.version} ({Path(path).name}): {len(features)} features, "
        f"state {state_desc} per stream, output {meta.output.kind}"
    )
    print(
        f"workload  {args.streams} streams x {args.steps} timed steps (+1 warm-up), batch {args.batch}, "
        f"onnxruntime threads {args.threads}, {os.cpu_count()} CPUs; payloads prepared in {prep:.1f} s"
    )
    ratios = []
    for t, payloads in enumerate(steps):
        timed = t > 0
        order = [0, 1] if t % 2 == 0 else [1, 0]
        for which in order:
            if which == 0:
                run_batched(batched, streams, payloads, args.batch, now, timed)
            else:
                run_single(single, streams, payloads, now, timed)
        if timed:
            ratios.append(single.step_times[-1] / batched.step_times[-1])
            print(
                f"  step {t}: batched {args.streams / batched.step_times[-1]:>10,.0f}/s   "
                f"per-message {args.streams / single.step_times[-1]:>9,.0f}/s   "
                f"ratio {ratios[-1]:.1f}x",
                flush=True,
            )

    print("\nmicroseconds per reading, by stage:")
    print(
        f"{'mode':<12} {'readings/s':>12} {'decode':>10} {'engine':>10} {'encode':>10} {'total':>10}"
        f" {'model calls':>12}"
    )
    for m in (batched, single):
        tot = m.t_decode + m.t_engine + m.t_encode
        us = 1e6 / m.readings
        print(
            f"{m.name:<12} {m.readings / tot:>12,.0f} {m.t_decode * us:>10.2f} {m.t_engine * us:>10.2f} "
            f"{m.t_encode * us:>10.2f} {tot * us:>10.2f} {m.calls:>12}"
        )
    tb = batched.t_decode + batched.t_engine + batched.t_encode
    ts_ = single.t_decode + single.t_engine + single.t_encode
    print()
    print(f"engine stage alone: {single.t_engine / batched.t_engine:.1f}x faster batched")
    print(
        f"ratio (full pipeline, batched / per-message readings/s): {ts_ / tb:.1f}x "
        f"(median of steps {statistics.median(ratios):.1f}x, range {min(ratios):.1f}-{max(ratios):.1f}x)"
    )
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
