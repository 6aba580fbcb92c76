#!/usr/bin/env python3
"""Time PyTorch and NumPy on the shapes of `sigmax bench` and write the medians as JSON.

The outputs are preallocated, and the JSON has the schema of `sigmax bench --json`, for
`sigmax bench --baseline`.

    python3 benches/compare_python.py --json baseline.json [--runs 5] [--threads N]
    cargo run --release -- bench --backend cpu --baseline baseline.json

Each library that imports is timed; a missing one is skipped with a note on stderr. The
input is uniform in [-20, 20), like sigmax's. Every op writes into an output allocated once
before timing, because allocating 64 MiB costs more than the op itself. A copy of the same
bytes into a preallocated array (numpy.copyto) runs in the same loop, for `copy_gbps`.
"""

import argparse
import json
import statistics
import sys
import time

SHAPES = [
    ("sigmoid", [16777216]),
    ("softmax", [4096, 4096]),
    ("softmax", [1048576, 16]),
    ("softmax", [16384, 1000]),
    ("softmax", [1, 16777216]),
    ("softmax", [65536, 2]),
    ("softmax", [256, 151936]),
]

BYTES_PER_ELEMENT = 8


def median_ms(function, runs):
    """Runs `function` once to warm up, then `runs` times; returns the median in ms."""
    function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def record(op, shape, backend, adapter, kernel_ms, copy_ms):
    elements = 1
    for dim in shape:
        elements *= dim
    gbps = BYTES_PER_ELEMENT * elements / (kernel_ms * 1e6)
    copy_gbps = BYTES_PER_ELEMENT * elements / (copy_ms * 1e6)
    return {
        "op": op,
        "shape": shape,
        "backend": backend,
        "adapter": adapter,
        "kernel_ms": kernel_ms,
        "end_to_end_ms": kernel_ms,
        "gbps": gbps,
        "copy_gbps": copy_gbps,
        "copy_ratio": gbps / copy_gbps,
        "timer": "host clock",
        "temperature": 1.0,
    }


def time_torch(runs, threads):
    import numpy
    import torch

    if threads:
        torch.set_num_threads(threads)
    adapter = f"PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads"
    results = []
    for op, shape in SHAPES:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(shape, generator=generator, dtype=torch.float32) * 40 - 20
        y = torch.empty_like(x)
        if op == "sigmoid":
            kernel = lambda: torch.sigmoid(x, out=y)
        else:
            kernel = lambda: torch.softmax(x, -1, out=y)
        source, target = x.numpy(), y.numpy()
        copy_ms = median_ms(lambda: numpy.copyto(target, source), runs)
        results.append(record(op, shape, "torch", adapter, median_ms(kernel, runs), copy_ms))
    return results


def time_numpy(runs):
    import numpy

    adapter = f"NumPy {numpy.__version__}"
    results = []
    for op, shape in SHAPES:
        x = numpy.random.default_rng(0).uniform(-20, 20, shape).astype(numpy.float32)
        y = numpy.empty_like(x)
        if op == "sigmoid":

            def kernel():
                numpy.negative(x, out=y)
                numpy.exp(y, out=y)
                numpy.add(y, 1, out=y)
                numpy.reciprocal(y, out=y)

        else:
            row_max = numpy.empty(shape[:-1] + [1], dtype=numpy.float32)
            row_sum = numpy.empty_like(row_max)

            def kernel():
                numpy.max(x, axis=-1, keepdims=True, out=row_max)
                numpy.subtract(x, row_max, out=y)
                numpy.exp(y, out=y)
                numpy.sum(y, axis=-1, keepdims=True, out=row_sum)
                numpy.divide(y, row_sum, out=y)

        copy_ms = median_ms(lambda: numpy.copyto(y, x), runs)
        results.append(record(op, shape, "numpy", adapter, median_ms(kernel, runs), copy_ms))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="file to write the JSON array to")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per shape (default 5)")
    parser.add_argument(
        "--threads", type=int, default=0, help="PyTorch threads (default: its own choice)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs {args.runs} is invalid: give 1 or more")

    results = []
    for name, timer in [("torch", lambda: time_torch(args.runs, args.threads)),
                        ("numpy", lambda: time_numpy(args.runs))]:
        try:
            results += timer()
        except ImportError as error:
            print(f"skipping {name}: {error}", file=sys.stderr)
    if not results:
        sys.exit("neither PyTorch nor NumPy imports; install one of them and run again")
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(results, out, indent=2)
        out.write("\n")
    print(f"wrote {len(results)} measurements to {args.json}")


if __name__ == "__main__":
    main()
