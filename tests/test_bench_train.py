"""bench/bench_train.py's timing harnesses measure what they claim: the plain model computes what ours
does, the plain loop trains it, and interleaving a plain step into every training step leaves `train`'s result unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_train as bt  # noqa: E402

from gptlib.model import GPT, GPTConfig  # noqa: E402
from gptlib.train import train, TrainConfig  # noqa: E402

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)


def tconf(iters: int) -> TrainConfig:
    return TrainConfig(max_iters=iters, seed=3, batch_size=4, learning_rate=1e-3, min_lr=1e-4, warmup_iters=2,
                       lr_decay_iters=iters, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
                       eval_interval=10 ** 9, eval_iters=2)


def ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(CONFIG.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def test_plain_model_is_our_model():
    # the comparison is fair only if both loops train the same function with the same parameters
    torch.manual_seed(0)
    ours = GPT(CONFIG)
    plain = bt.PlainGPT(CONFIG)
    assert sum(p.numel() for p in plain.parameters()) == ours.num_params()
    rename = {"transformer.h.": "blocks.", "transformer.": "", ".attn.": ".", "mlp.c_proj": "mlp_proj", "mlp.": ""}
    theirs = dict(plain.named_parameters())
    with torch.no_grad():
        for p in ours.parameters():  # weights far from GPT-2's small initial ones, so every part shows
            p.normal_(0.0, 0.5)
        for name, p in ours.named_parameters():
            for old, new in rename.items():
                name = name.replace(old, new)
            theirs[name].copy_(p)
    x, y = ids(2 * 8, 4).view(2, 8), ids(2 * 8, 5).view(2, 8)
    _, loss = ours(x, y)
    assert abs(plain(x, y).item() - loss.item()) < 1e-6  # exact GELU instead of tanh: 9e-6


def test_plain_stepper_trains():
    stepper = bt.PlainStepper(CONFIG, tconf(30), ids(500, 0))
    before = [p.detach().clone() for p in stepper.model.parameters()]
    for _ in range(30):
        stepper.step()
    assert stepper.it == 30 and len(stepper.seconds) == 30 and all(s > 0 for s in stepper.seconds)
    assert all(not torch.equal(a, b) for a, b in zip(before, stepper.model.parameters()))


def interleave_next_to_train_alone(monkeypatch, compile: bool):
    """Train one model alone, then another with the plain steps interleaved; returns the lone model, the
    plain steps seen (their step numbers), the two lists of step times and the interleaved model."""
    train_ids, val_ids = ids(500, 1), ids(200, 2)
    torch.manual_seed(3)
    alone = GPT(CONFIG)
    train(alone, train_ids, val_ids, tconf(7), show_progress=False)
    steps_seen = []
    real_step = bt.PlainStepper.step

    def counting_step(self):
        steps_seen.append(self.it)
        real_step(self)

    monkeypatch.setattr(bt.PlainStepper, "step", counting_step)
    plain, ours, model = bt.interleaved(CONFIG, tconf(7), train_ids, val_ids, skip=1, every=1, compile=compile)
    return alone, steps_seen, plain, ours, model


def test_interleaving_leaves_train_unchanged(monkeypatch):
    alone, steps_seen, plain, ours, model = interleave_next_to_train_alone(monkeypatch, compile=False)
    assert steps_seen == list(range(7))  # one plain step per training step, evaluations excluded
    assert len(plain) == len(ours) == 5  # 7 steps, the first skipped, the last has no end mark
    assert all(s > 0 for s in plain + ours)
    for (name, a), b in zip(alone.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name  # the plain steps in between changed nothing of ours


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside torch.compile
def test_interleaving_with_a_compiled_forward(monkeypatch, tmp_path):
    # --compile: the hook that runs the plain steps stays outside the compiled forward pass, and the compiled
    # model trains to the weights of the uncompiled one (up to float rounding: fused kernels round differently)
    # Inductor's own cache folder: its on-disk cache does not tell kernels built under one ATEN_CPU_CAPABILITY
    # from another, and reusing them gave C++ compile errors (default), NaN losses (avx2) and a malloc crash.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    alone, steps_seen, plain, ours, model = interleave_next_to_train_alone(monkeypatch, compile=True)
    assert steps_seen == list(range(7)) and len(plain) == len(ours) == 5
    assert type(model.forward).__name__ != "method"  # compiled, not GPT.forward itself
    for (name, a), b in zip(alone.named_parameters(), model.parameters()):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), name
