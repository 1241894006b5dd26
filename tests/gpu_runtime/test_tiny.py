"""The tiny model builder is deterministic and its tokenizer behaves like a real one."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from gpu_runtime.tiny import build_tiny_model_dir, build_tokenizer, main


def test_same_seed_gives_identical_weight_bytes(tmp_path, tiny_model_dir):
    again = build_tiny_model_dir(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    assert json.loads((again / "config.json").read_text()) == json.loads(
        (tiny_model_dir / "config.json").read_text()
    )


def test_different_seed_gives_different_weights(tmp_path, tiny_model_dir):
    other = load_file(build_tiny_model_dir(tmp_path / "seed7", seed=7) / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert other.keys() == base.keys()
    assert not all((other[k] == base[k]).all() for k in base if base[k].dim() > 1)


def test_model_dir_is_a_llama_checkpoint(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_key_value_heads"] == 2 and config["num_attention_heads"] == 4
    assert config["max_position_embeddings"] == 256
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (tiny_model_dir / name).is_file()


def test_tokenizer_is_deterministic_and_round_trips(tokenizer):
    assert build_tokenizer(seed=0).get_vocab() == tokenizer.get_vocab()
    assert len(tokenizer) == 512
    text = "The river 4821 runs  under the bridge — naïve ünïcode!\n\tdone?"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(ids) < len(text.encode())  # BPE merges really happened


def test_tokenizer_special_tokens_are_distinct(tokenizer):
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert None not in ids and len(ids) == 3


def test_chat_template_renders_roles_and_generation_prompt(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<s><|system|>\nBe brief.</s><|user|>\nHi</s><|assistant|>\nHello!</s>"
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n") and rendered.startswith(prompt)
    # role markers are single special tokens
    assert len(tokenizer("<|assistant|>", add_special_tokens=False).input_ids) == 1


def test_cli_builds_model(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--num-layers", "1"])
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["num_hidden_layers"] == 1
    assert str(tmp_path / "cli") in capsys.readouterr().out


@pytest.mark.parametrize("vocab_size", [300, 1024])
def test_vocab_size_is_respected(vocab_size):
    assert len(build_tokenizer(vocab_size=vocab_size)) == vocab_size
