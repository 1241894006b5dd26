"""``python manage.py bootstrap_demo``: the tiny local base model, built once and registered.

The model is built in a SUBPROCESS (``python -m gpu_runtime.tiny``): the web tier never
imports torch. Idempotent: an existing model directory is reused, the BaseModel row upserted.
"""

from __future__ import annotations

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


def build_tiny_model(out_dir: Path, original_context: int) -> None:
    command = [
        sys.executable, "-m", "gpu_runtime.tiny", "--out", str(out_dir),
        "--max-position-embeddings", str(original_context),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise CommandError(f"building the tiny model failed:\n{result.stderr[-4000:]}")


class Command(BaseCommand):
    help = "Build the tiny demo base model into MODELS_DIR and register it as 'tiny-llama'."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--models-dir", default=settings.MODELS_DIR)
        parser.add_argument("--original-context", type=int, default=DEMO_ORIGINAL_CONTEXT)

    def handle(self, *args, models_dir: str, original_context: int, **options) -> None:
        out_dir = Path(models_dir) / DEMO_MODEL_NAME
        if (out_dir / "config.json").is_file():
            self.stdout.write(f"reusing {out_dir}")
        else:
            self.stdout.write(f"building the tiny model into {out_dir} ...")
            build_tiny_model(out_dir, original_context)
        original = json.loads((out_dir / "config.json").read_text())["max_position_embeddings"]
        model, created = BaseModel.objects.update_or_create(
            name=DEMO_MODEL_NAME,
            defaults={
                "location": str(out_dir.resolve()),
                "original_context_length": original,
                "max_context_length": original * DEMO_MAX_CONTEXT_FACTOR,
                "is_public": True,
                "description": "Tiny random Llama built locally for demos and tests.",
            },
        )
        self.stdout.write(
            f"{'registered' if created else 'updated'} base model {model.name} "
            f"(context {model.original_context_length}, max {model.max_context_length})"
        )
        self.stdout.write(
            "Staff admin: python manage.py createsuperuser, then /admin/ to register more "
            "base models (local directory or s3://bucket/prefix)."
        )
