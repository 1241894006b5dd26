"""CLI: `python -m gpu_runtime train --config cfg.json --data data.jsonl`.

The same command runs on N GPUs under `torchrun --nproc_per_node N -m gpu_runtime train ...`.
With `sequence_parallel: S` in the config, the N ranks form N/S data ranks × S sequence ranks
(every packed row split over S ranks: gpu_runtime/sequence_parallel.py).
Progress is one JSON object per line on stdout (rank 0), ending with {"type": "result", ...}.
With `--control-stdin` rank 0 waits for one reply line on stdin after each record (how the
worker's launcher, gpu_runtime/launcher.py, feeds the job's callbacks and stops the run).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from pathlib import Path

from gpu_runtime.contract import TrainConfig


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gpu_runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="fine-tune a model (LoRA or full)")
    train.add_argument("--config", required=True, type=Path, help="TrainConfig as JSON")
    train.add_argument("--data", required=True, type=Path, help="training examples (JSONL)")
    train.add_argument("--eval-data", type=Path, default=None, help="validation examples (JSONL)")
    train.add_argument(
        "--control-stdin",
        action="store_true",
        help="lock-step with a launcher: after each JSON line rank 0 reads one reply line "
        'from stdin ({"stop": reason} stops the run; gpu_runtime.launcher)',
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override one config field, value parsed as JSON (e.g. --set max_steps=10)",
    )
    return parser.parse_args(argv)


def _load_config(path: Path, overrides: list[str]) -> TrainConfig:
    data = json.loads(path.read_text())
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            data[name] = json.loads(raw)
        except json.JSONDecodeError:
            data[name] = raw  # bare strings: --set output_dir=/tmp/x
    return TrainConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    # A crash below Python (gloo, a kernel) prints every thread's stack on stderr, which
    # the launcher and the tests show: without it a rank just dies with -11.
    try:
        faulthandler.enable(all_threads=True)
    except (AttributeError, ValueError):  # called in-process with a stderr that has no fd
        pass
    args = _parse(argv)
    try:
        config = _load_config(args.config, args.set)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from gpu_runtime.callbacks import JsonLinesLogger
    from gpu_runtime.train import train

    control = sys.stdin if args.control_stdin and _is_rank_zero() else None
    result = train(
        config, args.data, [JsonLinesLogger(sys.stdout, control)], eval_data=args.eval_data
    )
    if _is_rank_zero():
        try:
            print(json.dumps({"type": "result", **result.to_dict()}), flush=True)
        except BrokenPipeError:  # the launcher is gone (the run stopped: controller_gone)
            sys.stdout = None  # nothing left to flush at exit
            return 1
    return 0


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
