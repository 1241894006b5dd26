"""Gathered LoRA against peft's per-adapter path: mixed batches of 1-16 adapters of different
ranks and target-module sets (rank/alpha patterns, rsLoRA), some rows on the plain base, give
the logits each row gets alone from peft with its own adapter set — per row (decode, BGMV),
per packed prompt (prefill, segment-wise) and through the engine's scheduler; the byte bound
holds while the LRU swaps adapters, and a cold adapter is read while a running batch keeps
decoding."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from gpu_runtime.registry import load_model
from gpu_runtime.serving import GenerationRequest, SamplingParams
from gpu_runtime.serving import adapters as adapters_module
from gpu_runtime.serving.adapters import ModelInstance
from gpu_runtime.serving.gathered import gather_refusal, read_lora_weights

from .conftest import make_lora_artifact

LOGITS_ATOL = 1e-5
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
# (rank, target modules, extra LoraConfig fields): cycled over the 16 adapters.
VARIANTS = (
    (2, ["q_proj", "v_proj"], {}),
    (4, ATTENTION, {}),
    (8, MLP, {}),
    (16, ATTENTION + MLP, {}),
    (
        4,
        ["o_proj", "down_proj"],
        {"rank_pattern": {"down_proj": 8}, "alpha_pattern": {"o_proj": 32}},
    ),
    (8, ["q_proj", "k_proj", "down_proj"], {"use_rslora": True}),
)
N_ADAPTERS = 16


def build_adapter(base_dir: Path, out: Path, index: int) -> Path:
    """A random (non-zero lora_B) plain-LoRA adapter, saved the way peft saves one."""
    rank, targets, extra = VARIANTS[index % len(VARIANTS)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + index)
        model = get_peft_model(
            load_model(str(base_dir)),
            LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, **extra),
        )
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.3)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gathered_dirs(base_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gathered")
    return {f"g{i}": build_adapter(base_dir, root / f"g{i}", i) for i in range(N_ADAPTERS)}


@pytest.fixture(scope="module")
def dora_dir(base_dir, tmp_path_factory) -> Path:
    return make_lora_artifact(base_dir, tmp_path_factory.mktemp("g-dora"), seed=6, use_dora=True)


@pytest.fixture(scope="module")
def reference(base_dir, gathered_dirs) -> PeftModel:
    """peft's per-adapter path: every adapter loaded into one PeftModel, one active at a time."""
    names = list(gathered_dirs)
    model = PeftModel.from_pretrained(
        load_model(str(base_dir)), gathered_dirs[names[0]], adapter_name=names[0]
    )
    for name in names[1:]:
        model.load_adapter(gathered_dirs[name], adapter_name=name)
    return model.eval()


@torch.inference_mode()
def peft_alone(reference: PeftModel, adapter: str | None, **inputs) -> torch.Tensor:
    if adapter is None:
        with reference.disable_adapter():
            return reference(**inputs).logits
    reference.set_adapter(adapter)
    return reference(**inputs).logits


def fresh_instance(base_dir) -> ModelInstance:
    """The base on CPU in a ModelInstance of its own (tests that change its residency)."""
    from gpu_runtime.serving.adapters import InstanceSpec

    model = load_model(str(base_dir))
    return ModelInstance(
        InstanceSpec(base_dir, model.config, None, "auto", torch.device("cpu")), model
    )


@pytest.fixture(scope="module")
def instance(base_dir, gathered_dirs, dora_dir) -> ModelInstance:
    """A base with a DoRA adapter in peft (wrapping the layers first) and the 16 gathered."""
    loaded = fresh_instance(base_dir)
    loaded.load_adapter("dora", dora_dir)
    for name, path in gathered_dirs.items():
        loaded.load_adapter(name, path)
    yield loaded
    loaded.close()


def test_what_can_and_cannot_be_gathered(gathered_dirs, dora_dir, base_dir, tmp_path):
    assert all(gather_refusal(path) is None for path in gathered_dirs.values())
    assert gather_refusal(dora_dir) == "use_dora is set"
    longlora = make_lora_artifact(
        base_dir, tmp_path / "ll", seed=5, train_embeddings_and_norms=True
    )
    assert gather_refusal(longlora) == "modules_to_save is set"
    weights = read_lora_weights(gathered_dirs["g4"])  # rank_pattern + alpha_pattern
    down = weights.modules["model.layers.0.mlp.down_proj"]
    o_proj = weights.modules["model.layers.0.self_attn.o_proj"]
    assert (down.rank, down.scaling, o_proj.rank, o_proj.scaling) == (8, 1.0, 4, 8.0)
    rslora = read_lora_weights(gathered_dirs["g5"]).modules["model.layers.1.self_attn.q_proj"]
    assert rslora.scaling == pytest.approx(16 / 8**0.5)
    assert weights.rank == 8


def _rows(n_adapters: int, per_adapter: int, seed: int) -> list[str | None]:
    """`per_adapter` rows per adapter plus three base rows, shuffled (seeded)."""
    rows: list[str | None] = [f"g{i}" for i in range(n_adapters) for _ in range(per_adapter)]
    rows += [None, None, None]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    return [rows[i] for i in order]


# per_adapter 1: a gather per row (BGMV); 3: rows grouped by adapter, one gather per adapter.
@pytest.mark.parametrize("per_adapter", [1, 3])
@pytest.mark.parametrize("n_adapters", [1, 2, 4, 16])
@torch.inference_mode()
def test_mixed_rows_equal_each_row_alone_with_peft(instance, reference, n_adapters, per_adapter):
    adapters = _rows(n_adapters, per_adapter, seed=n_adapters)
    input_ids = torch.randint(
        6, 500, (len(adapters), 7), generator=torch.Generator().manual_seed(3)
    )
    assert instance.can_mix(None) and all(instance.can_mix(a) for a in adapters)
    mixed = instance.forward_rows(adapters, input_ids=input_ids).logits  # [B, 7, V]
    base_logits = peft_alone(reference, None, input_ids=input_ids[:1])[0]
    for row, adapter in enumerate(adapters):
        alone = peft_alone(reference, adapter, input_ids=input_ids[row : row + 1])[0]
        diff = (mixed[row] - alone).abs().max().item()
        assert diff <= LOGITS_ATOL, (row, adapter, diff)
    # Every adapter changes its rows' logits (else the equality proves nothing).
    for adapter in {a for a in adapters if a is not None}:
        row = adapters.index(adapter)
        first = peft_alone(reference, None, input_ids=input_ids[row : row + 1])[0]
        assert (mixed[row] - first).abs().max().item() > 1e-2, adapter
    assert base_logits.shape == mixed[0].shape


@torch.inference_mode()
def test_packed_prompts_on_mixed_adapters_equal_each_alone_with_peft(instance, reference):
    """Segment-wise: one packed row of 7 prompts (5 adapters of 4 ranks, 2 base), every
    position's logits against that prompt alone with peft."""
    assert instance.can_pack_prefill
    adapters = ["g3", None, "g0", "g5", "g3", None, "g10"]
    lengths = [5, 9, 3, 11, 6, 4, 8]
    generator = torch.Generator().manual_seed(4)
    prompts = [torch.randint(6, 500, (n,), generator=generator) for n in lengths]
    input_ids = torch.cat(prompts)[None]  # [1, T]
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]  # restarts per prompt
    packed = instance.forward_packed(
        adapters, lengths, input_ids=input_ids, position_ids=position_ids
    ).logits[0]  # [T, V]
    start = 0
    for adapter, ids in zip(adapters, prompts, strict=True):
        alone = peft_alone(reference, adapter, input_ids=ids[None])[0]  # [n, V]
        diff = (packed[start : start + len(ids)] - alone).abs().max().item()
        assert diff <= LOGITS_ATOL, (adapter, diff)
        start += len(ids)


@torch.inference_mode()
def test_peft_fallback_still_serves_next_to_the_gathered(instance, dora_dir, base_dir):
    """The DoRA adapter (peft, its own forward) is unaffected by the gathered pools in the
    layers it wraps, and gathered forwards run with its layers disabled."""
    input_ids = torch.randint(6, 500, (2, 6), generator=torch.Generator().manual_seed(5))
    dora = PeftModel.from_pretrained(load_model(str(base_dir)), dora_dir).eval()
    want = dora(input_ids=input_ids).logits
    got = instance.forward_rows(["dora", "dora"], input_ids=input_ids).logits
    assert (got - want).abs().max().item() <= LOGITS_ATOL
    with pytest.raises(ValueError, match="cannot share a forward"):
        instance.forward_rows(["dora", "g1"], input_ids=input_ids)


# --------------------------------------------------------------------------- the engine
def _greedy(ids: list[int], adapter: str | None, n: int, seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt_token_ids=ids,
        adapter=adapter,
        sampling=SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, seed=seed),
    )


@torch.inference_mode()
def _assert_engine_logits_match_peft(reference, ids, adapter, result, recorded) -> None:
    """Teacher-forced: peft alone over prompt + generated tokens gives, at every sampled
    position, the logits the engine sampled from in its mixed batch."""
    full = torch.tensor([list(ids) + list(result.token_ids[:-1])])
    logits = peft_alone(reference, adapter, input_ids=full)[0, len(ids) - 1 :]  # [n, V]
    assert len(recorded) == len(result.token_ids) == logits.shape[0]
    for step, row in enumerate(recorded):
        diff = (row - logits[step]).abs().max().item()
        assert diff <= LOGITS_ATOL, (adapter, step, diff)


def test_engine_mixed_batch_of_16_adapters_equals_peft_alone(
    engine_factory, gathered_dirs, reference, record_logits
):
    engine = engine_factory(
        autostart=False, prefill_chunk_size=256, max_batch_size=32, max_loaded_adapters=N_ADAPTERS
    )
    for name, path in gathered_dirs.items():
        engine.register_adapter(name, str(path))
    generator = torch.Generator().manual_seed(6)
    specs = []
    for i, adapter in enumerate([f"g{i}" for i in range(N_ADAPTERS)] + [None, None, "g3", "g8"]):
        ids = torch.randint(6, 500, (int(torch.randint(3, 14, (1,), generator=generator)),),
                            generator=generator).tolist()  # fmt: skip
        specs.append((ids, adapter, 5 + i % 4))
    handles = [engine.submit(_greedy(ids, a, n, 100 + i)) for i, (ids, a, n) in enumerate(specs)]
    engine.start()
    results = [h.result(120) for h in handles]
    stats = engine.stats
    assert stats.max_decode_batch == len(specs)
    assert stats.max_decode_adapters == N_ADAPTERS + 1  # + the base
    assert stats.decode_forwards == stats.decode_steps  # one forward per step, all adapters
    assert stats.prefill_forwards == 1 and stats.max_prefill_pack == len(specs)
    for i, ((ids, adapter, _), result) in enumerate(zip(specs, results, strict=True)):
        _assert_engine_logits_match_peft(reference, ids, adapter, result, record_logits[100 + i])


def _page_bytes(model: torch.nn.Module, targets: list[str]) -> int:
    """Bytes one page costs over the given target layers: an A row + a B column."""
    return sum(
        (m.in_features + m.out_features) * m.weight.element_size()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    )


def test_byte_bound_evicts_lru_and_reuses_pages(
    engine_factory, gathered_dirs, reference, record_logits, base_model
):
    """Rank-16 all-linear adapters (g3, g9, g15) with room for two: the third evicts the LRU
    one, allocated bytes never pass the bound, and every answer is still peft's."""
    per_page = _page_bytes(base_model, ATTENTION + MLP)
    bound = (1 + 2 * 16 + 4) * per_page  # page 0, two rank-16 adapters, a little slack
    engine = engine_factory(max_adapter_bytes=bound, max_loaded_adapters=16)
    for name in ("g3", "g9", "g15"):
        engine.register_adapter(name, str(gathered_dirs[name]))
    ids = [7, 8, 9, 10, 11]
    order = ["g3", "g9", "g3", "g15", "g9", "g3"]
    for i, name in enumerate(order):
        result = engine.generate(_greedy(ids, name, 4, 300 + i), timeout=60)
        _assert_engine_logits_match_peft(reference, ids, name, result, record_logits[300 + i])
        assert engine.pool.default.gathered.allocated_bytes <= bound
    # g3, g9 resident; g15 evicts g9 (LRU after g3's reuse); g9 evicts g3; g3 evicts g15.
    assert engine.pool.evictions == ["g9", "g3", "g15"]
    assert sorted(engine.pool.resident) == ["g3", "g9"]


def test_adapter_too_big_for_the_bound_fails_its_request_only(
    engine_factory, gathered_dirs, base_model
):
    bound = 8 * _page_bytes(base_model, ATTENTION + MLP)  # less than one rank-16 adapter
    engine = engine_factory(max_adapter_bytes=bound)
    engine.register_adapter("g3", str(gathered_dirs["g3"]))
    with pytest.raises(Exception, match="does not fit in max_adapter_bytes") as error:
        engine.generate(_greedy([7, 8, 9], "g3", 2, 1), timeout=30)
    assert getattr(error.value, "code", None) == "request_failed"
    assert engine.generate(_greedy([7, 8, 9], None, 2, 2), timeout=30).finish_reason == "length"


def test_cold_adapter_is_read_while_the_batch_keeps_decoding(
    engine_factory, gathered_dirs, reference, record_logits, monkeypatch
):
    """S-LoRA's swap-in: the cold adapter's files are read on the loader thread, held there
    until the running request has decoded 5 more tokens — proof that decoding went on — and
    then installed between two steps; both requests end with peft's logits."""
    release, reading = threading.Event(), threading.Event()
    real = adapters_module.prepare_adapter

    def slow_prepare(location: str):
        reading.set()
        assert release.wait(60), "the test never released the load"
        return real(location)

    monkeypatch.setattr(adapters_module, "prepare_adapter", slow_prepare)
    engine = engine_factory()
    for name in ("g1", "g2"):
        engine.register_adapter(name, str(gathered_dirs[name]))
    running_ids, cold_ids = [7, 8, 9, 10], [11, 12, 13]
    # g1 loads inline (nothing is running yet); then it decodes 40 tokens.
    release.set()
    running = engine.submit(_greedy(running_ids, "g1", 40, 500))
    stream = running.stream(timeout=60)
    next(stream)
    release.clear()
    cold = engine.submit(_greedy(cold_ids, "g2", 6, 501))
    assert reading.wait(30)
    decoded_while_loading = sum(len(next(stream).token_ids) for _ in range(5))
    assert decoded_while_loading >= 5 and not cold.done
    release.set()
    cold_result, running_result = cold.result(60), running.result(60)
    swap_in = engine.pool.swap_ins[-1]
    assert (swap_in.name, swap_in.gathered, swap_in.background) == ("g2", True, True)
    assert engine.stats.max_decode_adapters == 2  # g2 joined g1's batch
    _assert_engine_logits_match_peft(reference, cold_ids, "g2", cold_result, record_logits[501])
    _assert_engine_logits_match_peft(
        reference, running_ids, "g1", running_result, record_logits[500]
    )


# --------------------------------------------------------------------------- plan layouts
def _assert_rows_equal_peft(reference, adapters, mixed, input_ids) -> None:
    for row, adapter in enumerate(adapters):
        alone = peft_alone(reference, adapter, input_ids=input_ids[row : row + 1])[0]
        diff = (mixed[row] - alone).abs().max().item()
        assert diff <= LOGITS_ATOL, (row, adapter, diff)


# (rows, what the plan must be; span None: every row) sorted equal runs are a view of the batch;
# unequal runs and base rows in the middle take the padded-group layout and/or an index.
LAYOUTS = [
    (["g0", "g0", "g1", "g1", "g2", "g2"], {"span": None, "take": False, "groups": 3}),
    ([None, "g3", "g3", "g7", "g7"], {"span": (1, 5), "take": False, "groups": 2}),
    (["g3", "g3", "g3", "g3", "g1", "g1"], {"span": None, "take": False, "groups": 3}),
    (["g0"] * 5 + ["g1"], {"span": None, "take": True, "groups": 3}),
    (["g2", None, "g2", "g5", None, "g5", "g5"], {"span": None, "take": True, "groups": 2}),
]


@pytest.mark.parametrize(("adapters", "layout"), LAYOUTS)
@torch.inference_mode()
def test_each_plan_layout_equals_peft_alone(instance, reference, adapters, layout):
    """Every layout the planner picks gives each row peft's logits alone: the in-place view
    of sorted equal runs (no gather of inputs, no scatter of outputs), runs cut in equal
    groups, and padded groups of m = ceil(n / D) rows with an index around base rows."""
    plan = instance.gathered.row_plan(adapters)
    assert plan.span == layout["span"] and (plan.take is not None) == layout["take"]
    assert plan.groups == layout["groups"]
    assert plan.targets  # only modules some adapter of the plan targets are touched
    input_ids = torch.randint(
        6, 500, (len(adapters), 6), generator=torch.Generator().manual_seed(len(adapters))
    )
    mixed = instance.forward_rows(adapters, input_ids=input_ids).logits
    _assert_rows_equal_peft(reference, adapters, mixed, input_ids)


@torch.inference_mode()
def test_sorted_packed_prompts_are_a_view_and_equal_peft(instance, reference):
    """A packed row sorted by adapter with equal token counts per adapter: one group per
    adapter over a span of the row (the layout the engine's prefill gets), still peft's."""
    adapters, lengths = [None, "g0", "g0", "g9", "g9"], [4, 3, 5, 6, 2]
    plan = instance.gathered.segment_plan(adapters, lengths)
    assert (plan.span, plan.take, plan.index, plan.groups) == ((4, 20), None, None, 2)
    generator = torch.Generator().manual_seed(8)
    prompts = [torch.randint(6, 500, (n,), generator=generator) for n in lengths]
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    packed = instance.forward_packed(
        adapters, lengths, input_ids=torch.cat(prompts)[None], position_ids=position_ids
    ).logits[0]
    start = 0
    for adapter, ids in zip(adapters, prompts, strict=True):
        alone = peft_alone(reference, adapter, input_ids=ids[None])[0]
        assert (packed[start : start + len(ids)] - alone).abs().max().item() <= LOGITS_ATOL
        start += len(ids)


@torch.inference_mode()
def test_decode_plan_is_cached_until_residency_changes(base_dir, gathered_dirs, reference):
    """The same batch asks for the same plan (its gathered weights reused, within the cache's
    byte bound); evicting or installing an adapter drops every cached plan; with no room in
    the bound a plan gathers in every forward and answers the same."""
    loaded = fresh_instance(base_dir)
    try:
        for name in ("g0", "g1", "g3"):
            loaded.load_adapter(name, gathered_dirs[name])
        store = loaded.gathered
        adapters = ["g0", "g1", "g1", "g3"]
        input_ids = torch.randint(6, 500, (4, 5), generator=torch.Generator().manual_seed(9))
        first = loaded.forward_rows(adapters, input_ids=input_ids).logits
        plan = store.row_plan(adapters)
        assert store.row_plan(list(adapters)) is plan and plan.weights
        assert set(plan.weights) == plan.targets  # one gathered pair per targeted module
        assert 0 < store.plan_cache_bytes <= store.max_plan_cache_bytes
        again = loaded.forward_rows(adapters, input_ids=input_ids).logits
        assert torch.equal(first, again)
        _assert_rows_equal_peft(reference, adapters, again, input_ids)

        loaded.unload_adapter("g3")
        assert store.plan_cache_bytes == 0 and store.row_plan(["g0", "g1"]) is not plan
        loaded.load_adapter("g3", gathered_dirs["g3"])
        assert store.row_plan(adapters) is not plan

        store.max_plan_cache_bytes = 0
        store._clear_plans()
        uncached = store.row_plan(adapters)
        assert uncached.weights is None and store.plan_cache_bytes == 0
        mixed = loaded.forward_rows(adapters, input_ids=input_ids).logits
        assert uncached.weights is None
        _assert_rows_equal_peft(reference, adapters, mixed, input_ids)
    finally:
        loaded.close()


def test_engine_sorts_rows_by_adapter_so_equal_runs_are_views(engine_factory, gathered_dirs):
    """The decode batch holds its rows base first, then adapter by adapter, whatever the
    submission order: the plan of a round-robin batch is then the view layout (no take, no
    index), and the requests still finish."""
    engine = engine_factory(autostart=False, max_batch_size=16)
    for name in ("g0", "g1", "g2"):
        engine.register_adapter(name, str(gathered_dirs[name]))
    order = ["g2", None, "g0", "g1", "g0", None, "g2", "g1"]
    handles = [
        engine.submit(_greedy([7 + i, 8, 9], adapter, 6, 700 + i))
        for i, adapter in enumerate(order)
    ]
    with torch.inference_mode():
        engine._step()  # admit (inline loads), packed prefill, first decode step
    (batch,) = engine._batches.values()
    rows = [seq.adapter for seq in batch.seqs]
    assert rows == [None, None, "g0", "g0", "g1", "g1", "g2", "g2"]
    plan = batch.instance.gathered.row_plan(rows)
    assert (plan.span, plan.take, plan.index, plan.groups) == ((2, 8), None, None, 3)
    engine.start()
    assert [h.result(60).finish_reason for h in handles] == ["length"] * len(order)


# --------------------------------------------------------------------------- threads
@torch.inference_mode()
def test_small_deltas_run_on_one_thread_and_the_thread_count_comes_back(
    instance, reference, monkeypatch
):
    """On CPU with 2 intra-op threads, every delta of a small batch (below SERIAL_DELTA_MACS)
    runs with torch's thread count at 1 while the base projections keep 2, the count is 2
    again after every module and after a forward that raises, and the logits are peft's.
    Above the bound the deltas keep every thread."""
    from gpu_runtime.serving import gathered as gathered_module

    adapters = ["g0", "g1", "g3", "g3"]
    input_ids = torch.randint(6, 500, (4, 5), generator=torch.Generator().manual_seed(11))
    store = instance.gathered
    path = "model.layers.0.self_attn.q_proj"  # g1 and g3 target it
    delta_threads: list[int] = []
    base_threads: list[int] = []
    real_delta = gathered_module._ModulePool._delta

    def recording_delta(pool, plan, x, output):
        delta_threads.append(torch.get_num_threads())
        return real_delta(pool, plan, x, output)

    monkeypatch.setattr(gathered_module._ModulePool, "_delta", recording_delta)
    before = store._pools[path].linear.register_forward_pre_hook(
        lambda _m, _a: base_threads.append(torch.get_num_threads())
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        mixed = instance.forward_rows(adapters, input_ids=input_ids).logits
        assert delta_threads and set(delta_threads) == {1}
        assert base_threads == [2] and torch.get_num_threads() == 2
        _assert_rows_equal_peft(reference, adapters, mixed, input_ids)

        def failing_delta(pool, plan, x, output):
            raise RuntimeError("delta failed")

        monkeypatch.setattr(gathered_module._ModulePool, "_delta", failing_delta)
        with pytest.raises(RuntimeError, match="delta failed"):
            instance.forward_rows(adapters, input_ids=input_ids)
        assert torch.get_num_threads() == 2 and store.serial_threads == 0

        monkeypatch.setattr(gathered_module._ModulePool, "_delta", recording_delta)
        monkeypatch.setattr(gathered_module, "SERIAL_DELTA_MACS", 0)  # every delta is "big"
        delta_threads.clear()
        again = instance.forward_rows(adapters, input_ids=input_ids).logits
        assert delta_threads and set(delta_threads) == {2}
        _assert_rows_equal_peft(reference, adapters, again, input_ids)
    finally:
        before.remove()
        torch.set_num_threads(previous)


@torch.inference_mode()
def test_prefill_and_decode_of_the_same_adapters_gather_once(base_dir, gathered_dirs, reference):
    """A packed prefill sorted by adapter and the decode batch its prompts join have the same
    groups: the decode plan adopts the prefill's gathered weights (the very tensors), the next
    prefill over the same adapters reuses the cached decode plan's, and both still give
    peft's logits; installing an adapter drops the sharing."""
    loaded = fresh_instance(base_dir)
    try:
        for name in ("g0", "g1", "g3"):
            loaded.load_adapter(name, gathered_dirs[name])
        store = loaded.gathered
        adapters, lengths = ["g0", "g1", "g3"], [4, 4, 4]
        generator = torch.Generator().manual_seed(12)
        prompts = [torch.randint(6, 500, (n,), generator=generator) for n in lengths]
        packed_ids = torch.cat(prompts)[None]
        position_ids = torch.cat([torch.arange(n) for n in lengths])[None]

        def prefill():
            plan = store.segment_plan(adapters, lengths)
            with store.using(plan):
                logits = loaded.base(input_ids=packed_ids, position_ids=position_ids).logits[0]
            return plan, logits

        first, packed = prefill()
        assert set(first.weights) == first.targets  # gathered in that forward
        decode = store.row_plan(adapters)
        assert decode.weights is first.weights and decode.signature == first.signature
        rows = torch.stack(prompts)  # [3, 4]: each prompt as one decode-batch row
        mixed = loaded.forward_rows(adapters, input_ids=rows).logits
        _assert_rows_equal_peft(reference, adapters, mixed, rows)
        assert torch.allclose(mixed.reshape(-1, mixed.shape[-1]), packed, atol=1e-5)

        second, again = prefill()  # the decode plan is cached: its weights are reused
        assert second.weights is decode.weights and torch.equal(again, packed)

        loaded.unload_adapter("g3")
        loaded.load_adapter("g3", gathered_dirs["g3"])
        third, _ = prefill()
        assert third.weights is not decode.weights
    finally:
        loaded.close()
