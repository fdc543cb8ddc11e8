"""Fuzz the payload decoder: feed N random, mutated and hostile payloads through Decoder.decode.

    .venv/bin/python bench/fuzz_decoder.py                # 1,000,000 payloads
    .venv/bin/python bench/fuzz_decoder.py -n 100000 --seed 7 --features temperature,vibration,current

Prints the number of payloads by generator and by outcome (each rejection reason, or `accepted`),
checks that every accepted reading is valid (finite values within float32 range, a sane timestamp),
and exits non-zero if decode ever raised or accepted something invalid. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_lstm.reading import MIN_TS, REASONS, Decoder, Reading, Rejection

NOW = 1_750_000_000.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NASTY_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e39",
    "3.1e38",
    "1" + "0" * 400,
    "-0",
    "0.0",
    "5e-324",
    "1e-400",
    "123456789012345678901234567890",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
    "1e",
    "--1",
    "true",
    "null",
    '"1"',
    "[]",
    "{}",
    "[1]",
]
NASTY_TS = [
    '"yesterday"',
    '"2024-13-01"',
    '"1999-12-31T23:59:59Z"',
    '"9999-12-31T23:59:59Z"',
    '"2024-01-01T00:00:00+25:00"',
    '""',
    "-1",
    "0",
    "1e30",
    "1e400",
    "NaN",
    "true",
    "[]",
    "{}",
    str(NOW * 1000),
    str(NOW + 301),
    "1" + "0" * 400,
    "-" + "9" * 5000,
    '"\\ud800"',
    '"2024-01-01T00:00:00"',
]
BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]


class Fuzzer:
    def __init__(self, features: list[str], rng: random.Random, max_payload: int) -> None:
        self.f, self.rng, self.max_payload = features, rng, max_payload
        self.corpus: list[bytes] = [self.valid() for _ in range(200)]

    def value(self) -> float | int:
        r = self.rng.random()
        if r < 0.6:
            return round(self.rng.gauss(0, 100), self.rng.randint(0, 17))
        if r < 0.8:
            return self.rng.randint(-(10**12), 10**12)
        return self.rng.uniform(-3e38, 3e38)

    def ts(self) -> str | None:
        r = self.rng.random()
        us = self.rng.randint(int(NOW - 86_400 * 365) * 10**6, int(NOW + 299) * 10**6)
        if r < 0.25:
            return None
        if r < 0.6:
            return json.dumps(us / 10**6)
        if r < 0.7:
            return str(us // 10**6)
        dt = EPOCH + timedelta(microseconds=us)
        if r < 0.85:
            dt = dt.astimezone(timezone(timedelta(minutes=self.rng.randint(-840, 840))))
        return json.dumps(dt.isoformat())

    def obj(self, values: list[str], ts: str | None, extra: int = 0) -> bytes:
        if self.rng.random() < 0.5:
            items = [f'"{k}":{v}' for k, v in zip(self.f, values)]
        else:
            items = [f'"values":[{",".join(values)}]']
        if ts is not None:
            items.append(f'"ts":{ts}')
        items += [f'"x{i}":{json.dumps(self.rng.random())}' for i in range(extra)]
        self.rng.shuffle(items)
        return ("{" + ",".join(items) + "}").encode()

    def valid(self) -> bytes:
        return self.obj([json.dumps(self.value()) for _ in self.f], self.ts(), self.rng.randint(0, 2))

    # -- generators of hostile input --

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 2, 8, 64, 512, self.max_payload + 1]))

    def random_ascii(self) -> bytes:
        return bytes(self.rng.choice(b'{}[]:,"0123456789.eE+-abcNIfinty \\u') for _ in range(self.rng.randint(1, 60)))

    def mutated(self) -> bytes:
        p = bytearray(self.rng.choice(self.corpus))
        for _ in range(self.rng.randint(1, 6)):
            op, pos = self.rng.random(), self.rng.randint(0, len(p))
            if op < 0.3 and pos < len(p):
                p[pos] ^= 1 << self.rng.randrange(8)
            elif op < 0.5:
                p[pos:pos] = bytes([self.rng.randrange(256)])
            elif op < 0.7:
                del p[pos : pos + self.rng.randint(1, 8)]
            elif op < 0.8:
                del p[pos:]
            elif op < 0.9:
                p[pos:pos] = self.rng.choice(BAD_UTF8)
            else:
                other = self.rng.choice(self.corpus)
                p[pos:] = other[self.rng.randint(0, len(other)) :]
        return bytes(p)

    def bad_number(self) -> bytes:
        vals = [json.dumps(self.value()) for _ in self.f]
        vals[self.rng.randrange(len(vals))] = self.rng.choice(NASTY_NUMBERS)
        return self.obj(vals, self.ts())

    def bad_ts(self) -> bytes:
        return self.obj([json.dumps(self.value()) for _ in self.f], self.rng.choice(NASTY_TS))

    def wrong_length(self) -> bytes:
        n = self.rng.choice([0, 1, len(self.f) - 1, len(self.f) + 1, 100])
        return f'{{"values":[{",".join(json.dumps(self.value()) for _ in range(n))}]}}'.encode()

    def missing(self) -> bytes:
        keep = [k for k in self.f if self.rng.random() < 0.5][: len(self.f) - 1]
        return json.dumps({k: self.value() for k in keep}).encode()

    def nested(self) -> bytes:
        depth = self.rng.choice([10, 500, 990, 1000, 5000, 100_000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        inner = opener * depth + ("1" if opener != "[" else "") + closer * self.rng.choice([0, depth])
        return (f'{{"{self.f[0]}":{inner}}}' if self.rng.random() < 0.5 else inner).encode()

    def oversized(self) -> bytes:
        return self.valid() + b" " * (self.max_payload + self.rng.randint(-10, 100))

    def wrong_shape(self) -> bytes:
        return self.rng.choice([b"null", b"true", b'"1.5"', b"[1,2,3]", b"42", b"-1e400", b"NaN", b""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="payloads (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", default="temperature,vibration,current")
    ap.add_argument("--max-payload-bytes", type=int, default=4096)
    args = ap.parse_args(argv)

    features = args.features.split(",")
    dec = Decoder(features, max_payload_bytes=args.max_payload_bytes)
    fz = Fuzzer(features, random.Random(args.seed), args.max_payload_bytes)
    gens: list[tuple[str, Callable[[], bytes], float]] = [
        ("valid", fz.valid, 0.15),
        ("random_bytes", fz.random_bytes, 0.1),
        ("random_ascii", fz.random_ascii, 0.1),
        ("mutated", fz.mutated, 0.3),
        ("bad_number", fz.bad_number, 0.08),
        ("bad_ts", fz.bad_ts, 0.08),
        ("wrong_length", fz.wrong_length, 0.04),
        ("missing", fz.missing, 0.04),
        ("nested", fz.nested, 0.02),
        ("oversized", fz.oversized, 0.02),
        ("wrong_shape", fz.wrong_shape, 0.07),
    ]
    names = [g[0] for g in gens]
    weights = [g[2] for g in gens]
    funcs = dict((g[0], g[1]) for g in gens)
    picks = random.Random(args.seed + 1).choices(names, weights, k=args.n)

    by_gen: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter()
    failures: list[str] = []
    t_gen = t_dec = 0.0
    t_start = time.perf_counter()
    for name in picks:
        t0 = time.perf_counter()
        payload = funcs[name]()
        t1 = time.perf_counter()
        by_gen[name] += 1
        try:
            out = dec.decode("fuzz", payload, NOW)
        except BaseException:  # noqa: BLE001 - anything at all is a failure of the decoder
            failures.append(f"{name}: {payload[:200]!r}\n{traceback.format_exc()}")
            by_outcome["RAISED"] += 1
            continue
        finally:
            t_dec += time.perf_counter() - t1
            t_gen += t1 - t0
        if isinstance(out, Reading):
            ok = (
                len(out.values) == len(features)
                and all(math.isfinite(v) and abs(v) <= 3e38 for v in out.values)
                and MIN_TS <= out.ts <= NOW + dec.max_future_s
            )
            by_outcome["accepted" if ok else "ACCEPTED_INVALID"] += 1
            if not ok:
                failures.append(f"{name}: accepted {payload[:200]!r} as {out}")
        elif isinstance(out, Rejection) and out.reason in REASONS:
            by_outcome[out.reason] += 1
        else:
            by_outcome["UNKNOWN_OUTCOME"] += 1
            failures.append(f"{name}: {payload[:200]!r} -> {out!r}")
    total = time.perf_counter() - t_start

    print(
        f"fuzz_decoder: {args.n:,} payloads, seed {args.seed}, features {features}, "
        f"limit {args.max_payload_bytes} bytes"
    )
    print("by generator: " + ", ".join(f"{k} {v:,}" for k, v in by_gen.most_common()))
    print("by outcome:")
    for k, v in by_outcome.most_common():
        print(f"  {k:<18} {v:>10,}")
    print(f"raised: {by_outcome['RAISED']}, accepted invalid: {by_outcome['ACCEPTED_INVALID']}")
    print(
        f"time: {total:.1f} s total, {t_dec:.1f} s in decode ({t_dec / args.n * 1e6:.2f} us/payload), "
        f"{t_gen:.1f} s generating"
    )
    for f in failures[:5]:
        print("FAILURE", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
