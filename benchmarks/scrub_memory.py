"""Peak memory of validate+scrub on a large generated upload (stream in -> stream out).

Reproduce:  python benchmarks/scrub_memory.py --size-mb 1024 --compression zstd

Generates --size-mb of chat JSONL (decompressed size) into a temp file, optionally
zstd/gzip-compressed as a user would upload it, then runs `validate_and_scrub`
in a fresh child process writing scrubbed JSONL to another temp file, and reports
the child's peak RSS (ru_maxrss) and throughput. Target: peak RSS < 300 MB.
Temp files are deleted afterwards.

Person names are off here (the pattern entities only): the name model is a fixed per-process
cost (spaCy, which imports torch, plus ~15 MB of weights) and runs far slower than the
streaming it would be measured with (see benchmarks/results/pii_scrub.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "benchmarks")]


def generate(path: str, size_mb: int, compression: str) -> int:
    import zstandard
    from pii_corpus import iter_jsonl

    with open(path, "wb") as raw:
        if compression == "zstd":
            sink = zstandard.ZstdCompressor(level=3).stream_writer(raw)
        elif compression == "gzip":
            sink = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)
        else:
            sink = raw
        written = 0
        for line in iter_jsonl(size_mb * 1024 * 1024, seed=5):
            sink.write(line)
            written += len(line)
        if sink is not raw:
            sink.close()
    return written


def worker(src_path: str, dst_path: str) -> None:
    from longtune.datasets.pii import PATTERN_ENTITIES, PiiPolicy
    from longtune.datasets.validation import validate_and_scrub

    start = time.perf_counter()
    with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
        report = validate_and_scrub(src, dst, PiiPolicy(entities=PATTERN_ENTITIES))
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps({"seconds": elapsed, "peak_rss_mb": peak_kib / 1024, "report": report.to_dict()})
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size-mb", type=int, default=1024, help="decompressed size of the generated upload"
    )
    parser.add_argument("--compression", choices=["none", "gzip", "zstd"], default="zstd")
    parser.add_argument("--worker", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    tmp = tempfile.mkdtemp(prefix="scrub_memory_")
    src, dst = os.path.join(tmp, "upload.jsonl"), os.path.join(tmp, "scrubbed.jsonl")
    try:
        decompressed = generate(src, args.size_mb, args.compression)
        uploaded = os.path.getsize(src)
        child = subprocess.run(
            [sys.executable, __file__, "--worker", src, dst],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout)
        report = result["report"]
        assert report["valid"], report["errors"][:3]
        mbs = decompressed / 1e6 / result["seconds"]
        print(
            f"upload: {uploaded / 1e6:.0f} MB on the wire ({args.compression}), {decompressed / 1e6:.0f} MB JSONL, "
            f"{report['examples']} examples"
        )
        print(
            f"scrubbed output: {os.path.getsize(dst) / 1e6:.0f} MB; PII replaced: {report['pii']['counts']}"
        )
        print(
            f"time: {result['seconds']:.1f} s  throughput: {mbs:.2f} MB/s (decompressed bytes, one core)"
        )
        print(
            f"peak RSS (ru_maxrss of the worker process): {result['peak_rss_mb']:.1f} MB "
            f"-> {'OK' if result['peak_rss_mb'] < 300 else 'OVER'} (target < 300 MB)"
        )
        print(
            f"reproduce: python benchmarks/scrub_memory.py --size-mb {args.size_mb} --compression {args.compression}"
        )
    finally:
        for path in (src, dst):
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
