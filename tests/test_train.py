"""gptlib.train: the learning-rate schedule, weight-decay groups, batches, checkpoints (round trip, damaged files,
wrong configs, no pickle), bit-for-bit resume, a NaN loss, and the cache of pre-trained models (two processes)."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import gptlib.checkpoint as gc
import gptlib.train as gt
import gptlib.zoo as gz
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import BPETokenizer, CharTokenizer
from gptlib.batches import get_batch
from gptlib.checkpoint import Checkpoint, History, load_checkpoint, save_checkpoint
from gptlib.metrics import estimate_loss
from gptlib.train import configure_optimizer, learning_rate, NonFiniteLossError, train, TrainConfig
from gptlib.zoo import pretrained, pretrained_path, Recipe

ROOT = Path(__file__).resolve().parent.parent
TINY = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1)
TINY_TRAIN = TrainConfig(max_iters=30, batch_size=4, learning_rate=3e-3, min_lr=3e-4, warmup_iters=5,
                         eval_interval=10, eval_iters=2, seed=3)
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")  # pickle protocols, torch.save zip


def _model(config: GPTConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def _ids(n: int = 4000, vocab: int = 23, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def _same_weights(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- TrainConfig and the schedule ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("max_iters", -1), ("batch_size", 0), ("eval_interval", 1.5),
                                          ("learning_rate", float("nan")), ("min_lr", -1e-3), ("betas", (0.9, 1.0)),
                                          ("grad_clip", 0.0), ("warmup_iters", True), ("seed", -2)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_config_min_lr_above_peak_and_decay_before_warmup_are_errors():
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(learning_rate=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="lr_decay_iters"):
        TrainConfig(warmup_iters=100, lr_decay_iters=50)


def test_config_dict_round_trip_is_json_and_rejects_unknown_keys():
    c = dataclasses.replace(TINY_TRAIN, checkpoint_dir="somewhere", grad_clip=None)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"max_iter": 5})


def test_schedule_warmup_peak_cosine_end_and_after():
    c = TrainConfig(max_iters=1000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100)
    assert learning_rate(0, c) == pytest.approx(1e-3 / 101)
    assert learning_rate(49, c) == pytest.approx(1e-3 * 50 / 101)
    assert learning_rate(100, c) == pytest.approx(1e-3)  # the peak, where the cosine starts
    assert learning_rate(550, c) == pytest.approx((1e-3 + 1e-4) / 2)  # half way down the cosine
    assert learning_rate(999, c) == pytest.approx(1e-4, rel=1e-3)
    assert learning_rate(1000, c) == learning_rate(5000, c) == 1e-4


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 50), st.integers(0, 200), st.integers(0, 400))
def test_schedule_rises_during_warmup_then_never_rises(warmup, extra, step):
    c = TrainConfig(max_iters=warmup + extra, learning_rate=1e-3, min_lr=1e-5, warmup_iters=warmup)
    lr, nxt = learning_rate(step, c), learning_rate(step + 1, c)
    assert c.min_lr <= lr <= c.learning_rate
    if step + 1 < warmup:
        assert nxt > lr
    elif step >= warmup:
        assert nxt <= lr


# --- optimizer and batches -----------------------------------------------------------------------------------------

def test_weight_decay_only_on_matrices_and_tied_weight_once():
    model = _model()
    opt = configure_optimizer(model, 1e-3, 0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()
    decayed = {names[id(p)] for p in decay["params"]}
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert "transformer.h.0.ln_1.weight" in {names[id(p)] for p in no_decay["params"]}


def test_the_fused_adamw_kernel_is_the_default_on_cpu_and_takes_the_same_step():
    def one_step(fused):
        model = _model(dataclasses.replace(TINY, dropout=0.0))
        opt = configure_optimizer(model, 1e-2, 0.1, fused=fused)
        x, y = get_batch(_ids(), 16, 4, torch.Generator().manual_seed(0))
        model(x, y)[1].backward()
        opt.step()
        return model, opt
    (fused, opt_f), (plain, opt_p) = one_step(None), one_step(False)
    assert opt_f.defaults["fused"] is True and not opt_p.defaults["fused"]
    gap = max((a - b).abs().max().item() for a, b in zip(fused.parameters(), plain.parameters()))
    assert gap < 1e-6
    assert not _same_weights(fused, _model(dataclasses.replace(TINY, dropout=0.0)))  # it did take a step


def test_train_uses_fused_adamw_and_leaves_an_ordinary_model():
    model = _model()
    seen = {}
    original = gt.configure_optimizer

    def spy(*args, **kwargs):
        seen["optimizer"] = original(*args, **kwargs)
        return seen["optimizer"]

    gt.configure_optimizer, saved = spy, gt.configure_optimizer
    try:
        train(model, _ids(), _ids(seed=1), dataclasses.replace(TINY_TRAIN, max_iters=3), show_progress=False)
    finally:
        gt.configure_optimizer = saved
    opt = seen["optimizer"]
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"] is True
    assert len({p.untyped_storage().data_ptr() for p in model.parameters()}) == len(list(model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_dtype_is_float32_or_bfloat16():
    assert TrainConfig().dtype == "float32"
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'bfloat16'.*got 'float16'"):
        TrainConfig(dtype="float16")


def test_bfloat16_autocast_trains_and_tracks_float32():
    ids = _ids()
    runs = {}
    for dtype in ("float32", "bfloat16"):
        model = _model(dataclasses.replace(TINY, dropout=0.0))
        config = dataclasses.replace(TINY_TRAIN, max_iters=20, dtype=dtype)
        runs[dtype] = train(model, ids[:3000], ids[3000:], config, show_progress=False)
        assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    f32, bf16 = runs["float32"].train_loss, runs["bfloat16"].train_loss
    assert f32 != bf16  # autocast really ran in another precision
    assert max(abs(a - b) for a, b in zip(f32, bf16)) < 0.05  # bf16 keeps ~3 significant digits
    assert bf16[-1] < bf16[0]


def test_get_batch_shapes_shift_and_determinism():
    ids = torch.arange(1000)
    x, y = get_batch(ids, 8, 5, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)  # consecutive windows
    x2, _ = get_batch(ids, 8, 5, torch.Generator().manual_seed(1))
    x3, _ = get_batch(ids, 8, 5, torch.Generator().manual_seed(2))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_get_batch_uses_every_window_including_the_last():
    ids = torch.arange(10)
    x, y = get_batch(ids, 4, 2000, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == set(range(6))  # starts 0..5: the last window ends at token 9
    assert y.max().item() == 9


def test_get_batch_errors_for_long_windows_and_short_data():
    with pytest.raises(ValueError, match=r"block_size=32.*longer than the model's context block_size=16"):
        get_batch(_ids(), 32, 2, context=16)
    with pytest.raises(ValueError, match="need at least 9"):
        get_batch(torch.arange(8), 8, 2)


def test_train_rejects_a_window_longer_than_the_context_before_training():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="longer than the model's context"):
        train(model, _ids(), _ids(), dataclasses.replace(TINY_TRAIN, block_size=17), show_progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_rejects_ids_outside_the_vocabulary_and_bad_types():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        train(_model(), _ids(vocab=40), _ids(), TINY_TRAIN, show_progress=False)
    with pytest.raises(ValueError, match="integer token ids"):
        train(_model(), torch.rand(100), _ids(), TINY_TRAIN, show_progress=False)
    with pytest.raises(ValueError, match="TrainConfig"):
        train(_model(), _ids(), _ids(), {"max_iters": 3}, show_progress=False)


def test_estimate_loss_leaves_rng_and_mode_alone():
    model = _model().train()
    state = torch.get_rng_state()
    a = estimate_loss(model, _ids(), 16, 4, 3, seed=5)
    b = estimate_loss(model, _ids(), 16, 4, 3, seed=5)
    assert a == b and model.training and torch.equal(state, torch.get_rng_state())
    assert a == pytest.approx(math.log(23), abs=0.3)  # an untrained model is close to uniform


# --- training ------------------------------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_fills_the_history():
    ids = torch.arange(4000) % 23  # a perfectly predictable sequence
    cfg = dataclasses.replace(TINY_TRAIN, learning_rate=1e-2, min_lr=1e-3)
    h = train(_model(), ids, ids, cfg, show_progress=False)
    assert h.step == list(range(30)) and len(h.train_loss) == len(h.lr) == len(h.elapsed) == 30
    assert h.eval_step == [0, 10, 20, 30] and len(h.val_loss) == len(h.eval_train_loss) == 4
    assert h.val_loss[-1] < 0.5 * h.val_loss[0]
    assert h.lr == [learning_rate(s, cfg) for s in range(30)]
    assert all(b >= a for a, b in zip(h.elapsed, h.elapsed[1:]))


def test_training_is_deterministic():
    h1 = train(m1 := _model(), _ids(), _ids(seed=1), TINY_TRAIN, show_progress=False)
    h2 = train(m2 := _model(), _ids(), _ids(seed=1), TINY_TRAIN, show_progress=False)
    assert _same_weights(m1, m2) and h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss


def test_gradient_clipping_changes_the_update():
    m1, m2 = _model(), _model()
    train(m1, _ids(), _ids(), dataclasses.replace(TINY_TRAIN, max_iters=3, grad_clip=1e-3), show_progress=False)
    train(m2, _ids(), _ids(), dataclasses.replace(TINY_TRAIN, max_iters=3, grad_clip=None), show_progress=False)
    assert not _same_weights(m1, m2)


def test_callback_sees_every_evaluation():
    seen = []
    train(_model(), _ids(), _ids(), TINY_TRAIN, callback=lambda step, m: seen.append((step, m.training)),
          show_progress=False)
    assert seen == [(0, True), (10, True), (20, True), (30, True)]


# --- checkpoints ---------------------------------------------------------------------------------------------------

def _checkpoint(tmp_path, tokenizer=None):
    model = _model()
    cfg = dataclasses.replace(TINY_TRAIN, max_iters=12)
    history = train(model, _ids(), _ids(), cfg, show_progress=False)
    opt = configure_optimizer(model, 1e-3, 0.1)
    _, loss = model(*get_batch(_ids(), 16, 2))
    loss.backward()
    opt.step()
    gen = torch.Generator().manual_seed(9)
    torch.rand(3, generator=gen)
    path = save_checkpoint(tmp_path / "ck", model, optimizer=opt, step=12, tokenizer=tokenizer, train_config=cfg,
                           generator=gen, history=history)
    return path, model, opt, gen, cfg, history


@pytest.mark.parametrize("tokenizer", [CharTokenizer("abcdefghijklmnopqrstuvw"), None])
def test_checkpoint_round_trip(tmp_path, tokenizer):
    path, model, opt, gen, cfg, history = _checkpoint(tmp_path, tokenizer)
    rng = torch.get_rng_state()
    ck = load_checkpoint(path)
    assert isinstance(ck, Checkpoint) and ck.config == TINY and ck.step == 12 and TrainConfig.from_dict(ck.train_config) == cfg
    assert _same_weights(ck.model, model)
    assert ck.model.lm_head.weight is ck.model.transformer.wte.weight  # still tied after loading
    assert ck.history == history and torch.equal(ck.torch_rng_state, rng)
    assert torch.equal(ck.data_rng_state, gen.get_state())
    if tokenizer is None:
        assert ck.tokenizer is None
    else:
        assert ck.tokenizer.chars == tokenizer.chars
    fresh = configure_optimizer(ck.model, 1e-3, 0.1)
    fresh.load_state_dict(ck.optimizer_state)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for k in a["state"][i])


def test_checkpoint_with_a_bpe_tokenizer(tmp_path):
    tok = BPETokenizer.train("to be or not to be, that is the question " * 20, 260)
    model = _model(dataclasses.replace(TINY, vocab_size=tok.vocab_size))
    ck = load_checkpoint(save_checkpoint(tmp_path / "ck", model, tokenizer=tok))
    assert ck.tokenizer.merges == tok.merges and ck.optimizer_state is None and ck.history is None


def test_checkpoint_has_no_pickle_and_stores_the_tied_matrix_once(tmp_path):
    path, model, *_ = _checkpoint(tmp_path, CharTokenizer("abcdefghijklmnopqrstuvw"))
    files = sorted(f.name for f in path.iterdir())
    assert files == ["checkpoint.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json"]
    for f in path.iterdir():
        assert not f.read_bytes().startswith(PICKLE_MAGIC)
    from safetensors import safe_open
    with safe_open(path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys
    assert len(keys) == len(list(model.parameters())) + sum(1 for _ in model.buffers())


def test_the_loader_never_unpickles(tmp_path, monkeypatch):
    path, *_ = _checkpoint(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")
    monkeypatch.setattr(torch, "load", forbidden)
    import pickle
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    load_checkpoint(path)


def test_saving_over_a_checkpoint_replaces_it_whole(tmp_path):
    path, model, *_ = _checkpoint(tmp_path)
    save_checkpoint(path, model, step=99)
    ck = load_checkpoint(path)
    assert ck.step == 99 and ck.optimizer_state is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary folders left behind


def test_a_truncated_weight_file_is_an_error(tmp_path):
    path, *_ = _checkpoint(tmp_path)
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors does not match its checksum"):
        load_checkpoint(path)


def test_a_flipped_byte_is_an_error(tmp_path):
    path, *_ = _checkpoint(tmp_path)
    f = path / "optimizer.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="optimizer.safetensors does not match its checksum"):
        load_checkpoint(path)


def test_a_damaged_json_and_a_missing_checkpoint_are_errors(tmp_path):
    path, *_ = _checkpoint(tmp_path)
    meta = path / "checkpoint.json"
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def _rewrite(path: Path, tensors: dict) -> None:
    """Replace model.safetensors and fix its checksum, as a checkpoint written by other code would look."""
    from safetensors.torch import save_file
    save_file(tensors, path / "model.safetensors")
    meta = json.loads((path / "checkpoint.json").read_text())
    meta["sha256"]["model.safetensors"] = gc._sha256(path / "model.safetensors")
    (path / "checkpoint.json").write_text(json.dumps(meta))


def test_a_missing_tensor_is_an_error_naming_it(tmp_path):
    path, *_ = _checkpoint(tmp_path)
    from safetensors.torch import load_file
    tensors = load_file(path / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    _rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"missing \['transformer.h.1.mlp.c_fc.bias'\]"):
        load_checkpoint(path)


def test_a_mis_shaped_tensor_is_an_error_naming_it(tmp_path):
    path, *_ = _checkpoint(tmp_path)
    from safetensors.torch import load_file
    tensors = load_file(path / "model.safetensors")
    tensors["transformer.wpe.weight"] = torch.zeros(8, 32)
    _rewrite(path, tensors)
    with pytest.raises(ValueError, match=r"'transformer.wpe.weight' has shape \(8, 32\).*needs \(16, 32\)"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_config_is_an_error(tmp_path):
    path, *_ = _checkpoint(tmp_path)
    other = dataclasses.replace(TINY, n_embd=64)
    with pytest.raises(ValueError, match="another model config.*n_embd"):
        load_checkpoint(path, config=other)
    with pytest.raises(ValueError, match="another model config"):
        train(_model(other), _ids(), _ids(), TINY_TRAIN, resume=path, show_progress=False)
    meta = json.loads((path / "checkpoint.json").read_text())  # a config that does not fit the weights
    meta["model_config"]["n_layer"] = 3
    (path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit the config"):
        load_checkpoint(path)


# --- resume and faults ---------------------------------------------------------------------------------------------

class _Stop(Exception):
    pass


def _stop_at(step):
    def callback(s, model):
        if s == step:
            raise _Stop
    return callback


@pytest.mark.parametrize("interval", [7, 10])
def test_resume_is_bit_for_bit_an_uninterrupted_run(tmp_path, interval):
    cfg = dataclasses.replace(TINY_TRAIN, checkpoint_dir=str(tmp_path / "ck"), checkpoint_interval=interval)
    full = _model()
    h_full = train(full, _ids(), _ids(seed=1), dataclasses.replace(cfg, checkpoint_dir=None), show_progress=False)
    with pytest.raises(_Stop):  # a run that crashes at step 20, after checkpointing
        train(_model(), _ids(), _ids(seed=1), cfg, callback=_stop_at(20), show_progress=False)
    assert load_checkpoint(cfg.checkpoint_dir).step == 20 // interval * interval
    torch.manual_seed(1234)  # a different process state: resume must restore everything itself
    resumed = _model(seed=77)
    h = train(resumed, _ids(), _ids(seed=1), cfg, resume=cfg.checkpoint_dir, show_progress=False)
    assert _same_weights(full, resumed)  # dropout 0.1 is on: the RNG state is restored too
    assert h.train_loss == h_full.train_loss and h.val_loss == h_full.val_loss and h.step == h_full.step
    assert load_checkpoint(cfg.checkpoint_dir).step == 30


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = dataclasses.replace(TINY_TRAIN, checkpoint_dir=str(tmp_path / "ck"), checkpoint_interval=5)
    model = _model()

    def poison(step, m):
        if step == 10:  # damage the weights after the checkpoint at step 10
            with torch.no_grad():
                m.transformer.ln_f.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 10.*last good checkpoint"):
        train(model, _ids(), _ids(), cfg, callback=poison, show_progress=False)
    ck = load_checkpoint(cfg.checkpoint_dir)
    assert ck.step == 10 and all(torch.isfinite(p).all() for p in ck.model.parameters())


def test_resume_needs_optimizer_and_data_state(tmp_path):
    path = save_checkpoint(tmp_path / "ck", _model(), step=3)
    with pytest.raises(ValueError, match="cannot be resumed"):
        train(_model(), _ids(), _ids(), TINY_TRAIN, resume=path, show_progress=False)


# --- pre-trained models --------------------------------------------------------------------------------------------

TINY_RECIPE = Recipe("char", dict(block_size=16, n_layer=1, n_head=2, n_embd=16),
                     TrainConfig(max_iters=6, batch_size=4, warmup_iters=2, eval_interval=3, eval_iters=2),
                     max_chars=20_000)


def test_the_books_recipes_exist():
    assert {"shakespeare-char", "shakespeare-bpe"} <= set(gz.RECIPES)
    r = gz.RECIPES["shakespeare-char"]
    assert dict(r.model) == dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    assert r.tokenizer == "char" and gz.RECIPES["shakespeare-bpe"].tokenizer == "bpe"
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        pretrained("nope")


def test_cache_dir_from_argument_environment_or_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLIB_CACHE", str(tmp_path / "env"))
    assert gz.resolve_cache_dir() == tmp_path / "env"
    assert gz.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("GPTLIB_CACHE")
    assert gz.resolve_cache_dir() == Path.home() / ".cache" / "gptlib"


def test_pretrained_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(gz.RECIPES, "tiny-test", TINY_RECIPE)
    calls = []
    real = gz.train_recipe
    monkeypatch.setattr(gz, "train_recipe", lambda *a, **k: calls.append(1) or real(*a, **k))
    m1, tok1 = pretrained("tiny-test", cache_dir=tmp_path, show_progress=False)
    m2, tok2 = pretrained("tiny-test", cache_dir=tmp_path, show_progress=False)
    assert len(calls) == 1 and _same_weights(m1, m2) and tok1.chars == tok2.chars and not m1.training
    ck = load_checkpoint(pretrained_path("tiny-test", cache_dir=tmp_path))
    assert ck.history.eval_step == [0, 3, 6] and ck.step == 6
    model, tok, _ = real(TINY_RECIPE, show_progress=False)  # the recipe is deterministic
    assert _same_weights(model, m1)


def test_a_changed_recipe_gets_its_own_cache_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(gz.RECIPES, "tiny-test", TINY_RECIPE)
    a = pretrained_path("tiny-test", cache_dir=tmp_path)
    monkeypatch.setitem(gz.RECIPES, "tiny-test", dataclasses.replace(TINY_RECIPE, seed=1))
    assert pretrained_path("tiny-test", cache_dir=tmp_path) != a


def test_two_processes_share_one_training(tmp_path):
    script = textwrap.dedent(f"""
        import sys, torch
        import gptlib.zoo as gz
        from gptlib.train import TrainConfig
        from gptlib.zoo import Recipe
        gz.RECIPES["tiny-test"] = Recipe("char", dict(block_size=16, n_layer=1, n_head=2, n_embd=16),
            TrainConfig(max_iters=30, batch_size=4, warmup_iters=2, eval_interval=10, eval_iters=2),
            max_chars=20_000)
        real = gz.train_recipe
        def counted(*a, **k):
            with open({str(tmp_path / "trained.txt")!r}, "a") as f:
                f.write("x")
            return real(*a, **k)
        gz.train_recipe = counted
        model, tok = gz.pretrained("tiny-test", show_progress=False)
        print(sum(float(p.double().sum()) for p in model.parameters()))
    """)
    env = {**os.environ, "GPTLIB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert outs[0][0] == outs[1][0]  # the same weights in both
    assert (tmp_path / "trained.txt").read_text() == "x"  # trained by one process only
    entries = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len([e for e in entries if not e.endswith(".lock")]) == 1  # no temporary folder left


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    cfg = dataclasses.replace(TINY_TRAIN, block_size=8, checkpoint_dir=str(tmp_path / "ck"), checkpoint_interval=5)

    def poison(step, m):
        if step == 10:  # positions 8..15 are unused with windows of 8: the loss stays finite
            with torch.no_grad():
                m.transformer.wpe.weight[12].fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="without writing a checkpoint"):
        train(_model(), _ids(), _ids(), cfg, callback=poison, show_progress=False)
    ck = load_checkpoint(cfg.checkpoint_dir)
    assert ck.step == 10 and all(torch.isfinite(p).all() for p in ck.model.parameters())


def test_a_damaged_cache_entry_says_how_to_recover(tmp_path, monkeypatch):
    monkeypatch.setitem(gz.RECIPES, "tiny-test", TINY_RECIPE)
    pretrained("tiny-test", cache_dir=tmp_path, show_progress=False)
    weights = pretrained_path("tiny-test", cache_dir=tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ValueError, match="damaged; delete .* trained again"):
        pretrained("tiny-test", cache_dir=tmp_path, show_progress=False)
