"""Fixtures for the serving engine: tiny bases, real LoRA artifacts, reference generations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from gpu_runtime.attention import select_attention_implementation
from gpu_runtime.output import save_artifact
from gpu_runtime.registry import load_model, load_tokenizer
from gpu_runtime.serving import EngineConfig, InferenceEngine
from gpu_runtime.train import embedding_and_norm_names

PROMPTS = (
    "The river and the mountain",
    "Quick slow bright",
    "Music story run walk read write think build",
    "When the city light",
)


def make_lora_artifact(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    rope_method: str | None = None,
    target_context: int | None = None,
    train_embeddings_and_norms: bool = False,
    use_dora: bool = False,
) -> Path:
    """A trainer-format LoRA artifact (peft adapter + extended config.json + tokenizer) whose
    lora_B weights are random (seeded) so it visibly changes the base's outputs.

    train_embeddings_and_norms: LongLoRA's option (modules_to_save = embedding + norms, as
    gpu_runtime.train attaches it), with those copies perturbed too; use_dora: a DoRA adapter.

    WHY get_peft_model runs inside the seeded fork_rng: peft draws lora_A from the global RNG,
    so outside it the artifact (and every expected token) would depend on whatever ran earlier
    in the pytest process; the fork keeps the caller's RNG stream untouched as well."""
    model = load_model(str(base_dir), rope_method=rope_method, target_context=target_context)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(
            model,
            LoraConfig(
                r=4,
                lora_alpha=8,
                lora_dropout=0.0,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                modules_to_save=embedding_and_norm_names(model)
                if train_embeddings_and_norms
                else None,
                use_dora=use_dora,
            ),
        )
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5)
                elif "modules_to_save" in name:
                    param.add_(torch.randn_like(param) * 0.2)
    return save_artifact(
        peft_model, load_tokenizer(str(base_dir)), out_dir, method="lora", base_model=str(base_dir)
    )


def merged_reference_model(base_dir: Path, artifact: Path) -> torch.nn.Module:
    """What peft itself serves for the artifact: base (artifact's config) + adapter, merged."""
    base = AutoModelForCausalLM.from_pretrained(
        base_dir,
        config=AutoConfig.from_pretrained(artifact),
        attn_implementation=select_attention_implementation("auto"),
    )
    return PeftModel.from_pretrained(base, artifact).merge_and_unload().eval()


def greedy_reference(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """model.generate(do_sample=False) continuation, eos ignored like the engine requests.

    WHY eos_token_id=None and not min_new_tokens: `ignore_eos` (vLLM semantics) means EOS does
    not end the request but is still a token the model may pick; min_new_tokens instead masks
    EOS to -inf, so wherever EOS is the argmax the reference would pick the runner-up."""
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    continuation = out[0, ids.shape[1] :].tolist()
    assert len(continuation) == max_new_tokens, "generate stopped early: EOS was not ignored"
    return continuation


@pytest.fixture(scope="module")
def base_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="module")
def serving_tokenizer(base_dir: Path):
    return load_tokenizer(str(base_dir))


@pytest.fixture(scope="module")
def base_model(base_dir: Path):
    return load_model(str(base_dir)).eval()


@pytest.fixture
def engine_factory(base_dir: Path, base_model, serving_tokenizer):
    """Build engines sharing the module's base model; every engine is shut down afterwards."""
    engines: list[InferenceEngine] = []

    def make(autostart: bool = True, **config_fields) -> InferenceEngine:
        engine = InferenceEngine(
            EngineConfig(base_model=str(base_dir), **config_fields),
            model=base_model,
            tokenizer=serving_tokenizer,
            autostart=autostart,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


@pytest.fixture(scope="module")
def artifacts(base_dir, tmp_path_factory) -> dict[str, str]:
    """Trainer-format LoRA artifacts: three at the base's scaling, one trained with YaRN."""
    root = tmp_path_factory.mktemp("adapters")
    built = {
        name: make_lora_artifact(base_dir, root / name, seed=seed)
        for name, seed in (("acme", 1), ("bolt", 2), ("cove", 3))
    }
    # Trained at 2x the base context with YaRN: its config.json carries that scaling.
    built["yarn"] = make_lora_artifact(
        base_dir, root / "yarn", seed=4, rope_method="yarn", target_context=512
    )
    return {name: str(path) for name, path in built.items()}


@pytest.fixture
def record_logits(monkeypatch) -> dict[int, list[torch.Tensor]]:
    """Every logits row the engine samples from (prefill's last token first), keyed by the
    request's seed — greedy requests still get a seeded generator, so the seed names it."""
    from gpu_runtime.serving import engine as engine_module

    seen: dict[int, list[torch.Tensor]] = {}
    real = engine_module.sample_next_token

    def recording(logits, params, generator):
        seen.setdefault(generator.initial_seed(), []).append(logits.detach().float().clone())
        return real(logits, params, generator)

    monkeypatch.setattr(engine_module, "sample_next_token", recording)
    return seen
