"""Training speed: gptlib.train.train against a plain nanoGPT-style PyTorch loop, side by side in one run.

The plain loop is what the issue asks for: a GPT with a fused QKV projection and
``scaled_dot_product_attention``, ``torch.optim.AdamW`` with its defaults (decay on matrices only), the
warm-up + cosine learning rate, gradient clipping and a ``.item()`` every step. Both train the same
config (nanoGPT's CPU recipe: 4 layers, 4 heads, 128 wide, context 64, batch 12, no dropout, betas (0.9, 0.99))
on the same characters.

1. Timing: ``--repeats`` rounds of ``--iters`` steps each, plain and ours alternating (which goes first
   alternates too); the first ``--skip`` steps of each run are not timed. Medians and the ratio ours/plain.
2. Loss: a full ``--full-iters`` run of each (default 2000) for every seed of ``--seeds`` (default 0; the
   seed fixes the initial weights and the batches of both), validation loss at the end on the same
   ``--eval-iters`` batches. ``--repeats 0`` skips the timing, to run seeds in parallel processes.
   ``--interleave N`` (default 300) also times one run of N steps of each, the two alternating step by
   step (a plain step runs inside a forward pre-hook on our model, so ``train`` itself is unchanged).
   Slow drifts in the machine's load then hit both alike; the ratio is the median over blocks of 20 steps.
   ``--compile`` compiles our model's forward pass with ``torch.compile`` (not the library's default);
   the compilation happens in the first step, which is not timed, and its time is printed.
3. Model FLOP utilisation: 6N + 12 L T d FLOPs per token (forward + backward) over the time per step,
   against a float32 matmul measured in the same run.
4. ``--optimizers`` (nothing else runs then): what ``FlatAdamW`` saves of a **whole training step**. Our GPT,
   the same initial weights and the same batches, stepped the way ``train`` steps it (the batch, forward,
   the loss's ``.item()``, backward, clip to norm 1, AdamW step, ``zero_grad``), with
   ``flat``: ``configure_optimizer(..., flat=True)``, clipping the flat parameters of its ``param_groups``
   as ``train`` did (where gptlib no longer has ``flat``: ``BenchFlatAdamW``, a copy of its layout);
   ``fused``: ``torch.optim.AdamW(groups, fused=True)`` over the same two groups and
   ``clip_grad_norm_(model.parameters(), 1.0)``; ``foreach``: the same with ``foreach=True``; and
   ``fused+fnorm``: fused AdamW with a clip by ``torch._foreach_norm`` (one call for all the norms, one
   ``_foreach_mul_``), for information. The optimizers take turns in blocks of ``--block`` steps
   (default 20) for ``--rounds`` rounds (default 7; the order rotates each round; ``--step-by-step``: in
   a round they take turns step by step), after ``--skip`` untimed warm-up steps each; on ``--threads``
   threads (default 2 in this mode). Two shapes: the
   reference (vocab 76, context 64, 4 layers of 128, batch 12, the book's characters) and a BPE-sized one
   (vocab 1024, context 128, batch 16, random token ids: the time does not depend on which ids).
   Printed: the median whole step and the median of its part after ``backward`` per optimizer, and
   flat/fused with the min-max of the per-round ratios (each round: median step over median step), the
   10th percentile of the whole steps (the least disturbed ones, on a loaded machine) and its ratio; the
   after-backward saving as a share of the whole step is the less noisy bound on what flat buffers save
   there (they can change backward's time too, which only the whole step shows).

    python bench/bench_train.py                                      # the book's corpus, split by play
    python bench/bench_train.py --text input.txt   # any text file, e.g. nanoGPT's Tiny Shakespeare: 90/10 split
    python bench/bench_train.py --optimizers                         # FlatAdamW against fused AdamW, whole steps
"""
from __future__ import annotations

import argparse
import inspect
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.model import GPT, GPTConfig
from gptlib.batches import get_batch
from gptlib.metrics import estimate_loss
from gptlib.train import configure_optimizer, learning_rate, train, TrainConfig


# --- the plain reference: a nanoGPT-style model and loop ---------------------------------------------------------

class PlainBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(PlainBlock(c.n_embd, c.n_head) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * c.n_layer) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class PlainStepper:
    """nanoGPT's loop, one step per call, with the seconds each step took."""

    def __init__(self, config: GPTConfig, tc: TrainConfig, train_ids: torch.Tensor) -> None:
        torch.manual_seed(tc.seed)
        self.model = PlainGPT(config)
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=tc.learning_rate, betas=tc.betas)
        self.tc, self.train_ids, self.T = tc, train_ids, config.block_size
        self.it = 0
        self.seconds: list[float] = []

    def step(self) -> None:
        t0 = time.perf_counter()
        model, optimizer, tc, T, B = self.model, self.optimizer, self.tc, self.T, self.tc.batch_size
        for g in optimizer.param_groups:
            g["lr"] = learning_rate(self.it, tc)
        ix = torch.randint(len(self.train_ids) - T, (B,))
        x = torch.stack([self.train_ids[i:i + T] for i in ix])
        y = torch.stack([self.train_ids[i + 1:i + 1 + T] for i in ix])
        loss = model(x, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        self.it += 1
        self.seconds.append(time.perf_counter() - t0)


def plain_train(config: GPTConfig, tc: TrainConfig, train_ids: torch.Tensor, skip: int) -> tuple[PlainGPT, float]:
    """nanoGPT's loop: returns the model and the mean seconds per step after the first ``skip`` steps."""
    stepper = PlainStepper(config, tc, train_ids)
    for _ in range(tc.max_iters):
        stepper.step()
    return stepper.model, statistics.fmean(stepper.seconds[skip:])


def our_model(config: GPTConfig, seed: int, compile: bool = False) -> GPT:
    """Our GPT with the seed's initial weights; ``compile=True`` compiles its ``forward`` with ``torch.compile``
    (the compilation happens in the first training step, which the timings skip; hooks stay outside it)."""
    torch.manual_seed(seed)
    model = GPT(config)
    if compile:
        model.forward = torch.compile(model.forward)
    return model


def interleaved(config: GPTConfig, tc: TrainConfig, train_ids: torch.Tensor, val_ids: torch.Tensor,
                skip: int, every: int = 1, compile: bool = False) -> tuple[list[float], list[float], GPT]:
    """Seconds per step of the plain loop and of ``train``, their steps alternating one by one.

    A forward pre-hook on our model runs one plain step each time ``train`` starts a training forward
    pass; our step is the time from the end of one such hook to the start of the next, which spans
    all of ``train``'s loop (forward, backward, clipping, AdamW step, bookkeeping, the next batch).
    With ``every`` = k, k plain steps run at every k-th of our steps instead. Returns the two lists of
    per-step seconds, the first ``skip`` steps of each dropped, and our trained model."""
    plain = PlainStepper(config, tc, train_ids)
    ours: list[float] = []
    marks: list[float] = []  # when each of our forward passes started (after the plain steps)

    def hook(module: nn.Module, args: tuple) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # an evaluation, not a training step
        now = time.perf_counter()
        if marks:
            ours.append(now - marks[-1])
        if len(ours) % every == 0:
            for _ in range(every):
                plain.step()
        marks.append(time.perf_counter())

    model = our_model(config, tc.seed, compile)
    handle = model.register_forward_pre_hook(hook)
    try:
        train(model, train_ids, val_ids, tc, show_progress=False)
    finally:
        handle.remove()
    n = min(len(ours), len(plain.seconds))  # our last step has no next hook to end it
    return plain.seconds[skip:n], ours[skip:n], model


def ours_train(config: GPTConfig, tc: TrainConfig, train_ids: torch.Tensor, val_ids: torch.Tensor,
               skip: int, compile: bool = False) -> tuple[GPT, float]:
    model = our_model(config, tc.seed, compile)
    h = train(model, train_ids, val_ids, tc, show_progress=False)
    if compile:
        print(f"  (compiled: our first step took {h.elapsed[0]:.1f} s, the compilation included)")
    return model, (h.elapsed[-1] - h.elapsed[skip - 1]) / (tc.max_iters - skip)


@torch.no_grad()
def plain_val_loss(model: PlainGPT, ids: torch.Tensor, tc: TrainConfig, block_size: int) -> float:
    g = torch.Generator().manual_seed(12345)
    return statistics.fmean(model(*get_batch(ids, block_size, tc.batch_size, g)).item() for _ in range(tc.eval_iters))


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n ** 3 / best / 1e9


# --- whole training steps with FlatAdamW and with PyTorch's AdamW (--optimizers) --------------------------------

OPTIMIZERS = ("flat", "fused", "foreach", "fused+fnorm")


def foreach_norm_clip_(grads: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_``'s arithmetic with one ``_foreach_norm`` and one ``_foreach_mul_`` for all tensors
    (on a CPU ``clip_grad_norm_`` takes the norms and scales the gradients one tensor at a time)."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))


class BenchFlatAdamW(torch.optim.AdamW):
    """The layout of the library's former ``FlatAdamW`` (gptlib.train up to commit 2c62ab8), for when
    ``configure_optimizer`` no longer has ``flat``: each group's parameters become views of one buffer and
    their gradients views of one gradient buffer, AdamW steps the buffers and ``zero_grad`` zeroes them in
    place (a gradient set to None would cut the views off)."""

    def __init__(self, groups: list[dict], **kwargs) -> None:
        flat_groups = []
        for g in groups:
            data = torch.cat([p.detach().reshape(-1) for p in g["params"]])
            grad, offset = torch.zeros_like(data), 0
            for p in g["params"]:
                n = p.numel()
                p.data, p.grad = data[offset:offset + n].view(p.shape), grad[offset:offset + n].view(p.shape)
                offset += n
            flat = nn.Parameter(data)
            flat.grad = grad
            flat_groups.append({**g, "params": [flat]})
        super().__init__(flat_groups, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad.zero_()


def optimizer_groups(model: nn.Module, tc: TrainConfig) -> list[dict]:
    """``configure_optimizer``'s two parameter groups (decay on matrices only)."""
    return [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in
            configure_optimizer(model, tc.learning_rate, tc.weight_decay, tc.betas, fused=False).param_groups]


def flat_optimizer(model: nn.Module, tc: TrainConfig) -> tuple[torch.optim.AdamW, str]:
    """``configure_optimizer(..., flat=True)`` where gptlib still has it, else :class:`BenchFlatAdamW` (fused
    kernel, as the library's was); and which of the two it is."""
    if "flat" in inspect.signature(configure_optimizer).parameters:
        return (configure_optimizer(model, tc.learning_rate, tc.weight_decay, tc.betas, flat=True),
                "gptlib's configure_optimizer(flat=True)")
    return (BenchFlatAdamW(optimizer_groups(model, tc), lr=tc.learning_rate, betas=tc.betas, fused=True),
            "BenchFlatAdamW (gptlib has no flat=True any more)")


class OptimizerStepper:
    """Our GPT trained with one of ``OPTIMIZERS``, one step of ``train``'s loop per call (timed)."""

    def __init__(self, kind: str, config: GPTConfig, tc: TrainConfig, train_ids: torch.Tensor) -> None:
        torch.manual_seed(tc.seed)
        self.model = GPT(config).train()
        self.kind, self.tc, self.train_ids, self.T = kind, tc, train_ids, config.block_size
        if kind == "flat":
            self.optimizer, self.source = flat_optimizer(self.model, tc)
            self.to_clip = [p for g in self.optimizer.param_groups for p in g["params"]]  # as train did
        else:  # configure_optimizer's two groups, handed to torch.optim.AdamW
            fast = {"foreach": True} if kind == "foreach" else {"fused": True}
            self.optimizer = torch.optim.AdamW(optimizer_groups(self.model, tc), lr=tc.learning_rate,
                                               betas=tc.betas, **fast)
            self.source = f"torch.optim.AdamW({next(iter(fast))}=True)"
            self.to_clip = list(self.model.parameters())
        self.generator = torch.Generator().manual_seed(tc.seed)  # the same batches for every optimizer
        self.it = 0
        self.seconds: list[float] = []  # whole steps
        self.after: list[float] = []  # the part after backward: clip + step + zero_grad
        self.losses: list[float] = []

    def step(self) -> None:
        t0 = time.perf_counter()
        lr = learning_rate(self.it, self.tc)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        x, y = get_batch(self.train_ids, self.T, self.tc.batch_size, self.generator)
        _, loss = self.model(x, y)
        self.losses.append(loss.item())
        loss.backward()
        t1 = time.perf_counter()
        if self.kind == "fused+fnorm":
            foreach_norm_clip_([p.grad for p in self.to_clip if p.grad is not None], self.tc.grad_clip)
        else:
            nn.utils.clip_grad_norm_(self.to_clip, self.tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        self.it += 1
        self.seconds.append(t2 - t0)
        self.after.append(t2 - t1)


def compare_optimizers(config: GPTConfig, tc: TrainConfig, train_ids: torch.Tensor, rounds: int, block: int,
                       skip: int, kinds: tuple[str, ...] = OPTIMIZERS,
                       step_by_step: bool = False) -> dict[str, OptimizerStepper]:
    """``skip`` untimed steps of each optimizer, then ``rounds`` rounds of ``block`` steps of each in turn
    (round r starts with ``kinds[r % len(kinds)]``; ``step_by_step``: in a round they take turns step by
    step instead of block by block). Returns the steppers; their timed steps come after the first ``skip``."""
    steppers = {k: OptimizerStepper(k, config, tc, train_ids) for k in kinds}
    for s in steppers.values():
        for _ in range(skip):
            s.step()
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        if step_by_step:
            for _ in range(block):
                for k in order:
                    steppers[k].step()
        else:
            for k in order:
                for _ in range(block):
                    steppers[k].step()
    return steppers


def report_optimizers(name: str, config: GPTConfig, steppers: dict[str, OptimizerStepper], rounds: int,
                      block: int, skip: int, step_by_step: bool = False) -> None:
    def per_round(k: str) -> list[float]:
        s = steppers[k].seconds[skip:]
        return [statistics.median(s[r * block:(r + 1) * block]) for r in range(rounds)]

    n = sum(p.numel() for p in steppers["fused"].model.parameters())
    order = "step by step" if step_by_step else "block by block"
    print(f"{name}: vocab {config.vocab_size}, context {config.block_size}, {config.n_layer} layers of "
          f"{config.n_embd}, batch {steppers['fused'].tc.batch_size}, {n:,} parameters; "
          f"{rounds} rounds of {block} steps each ({order}) after {skip} warm-up steps, "
          f"{torch.get_num_threads()} threads")
    def fastest_tenth(k: str) -> float:  # the least disturbed steps: closest to a quiet machine's time
        s = steppers[k].seconds[skip:]
        return statistics.quantiles(s, n=10, method="inclusive")[0] if len(s) > 1 else s[0]

    print(f"  flat: {steppers['flat'].source}")
    fused = statistics.median(steppers["fused"].seconds[skip:])
    for k, s in steppers.items():
        whole, after = statistics.median(s.seconds[skip:]), statistics.median(s.after[skip:])
        ratios = [a / b for a, b in zip(per_round(k), per_round("fused"))]
        gap = max(abs(a - b) for a, b in zip(s.losses, steppers["fused"].losses))
        print(f"  {k:12s} whole step {whole * 1e3:6.2f} ms, after backward {after * 1e3:5.2f} ms "
              f"({after / whole:5.1%}); /fused {whole / fused:.3f} (per round {min(ratios):.3f}-{max(ratios):.3f}); "
              f"10th percentile {fastest_tenth(k) * 1e3:6.2f} ms, "
              f"/fused {fastest_tenth(k) / fastest_tenth('fused'):.3f}; "
              f"largest loss gap to fused {gap:.1e}")
    ratios = [a / b for a, b in zip(per_round("flat"), per_round("fused"))]
    saved = 1 - statistics.median(steppers["flat"].seconds[skip:]) / fused
    after = {k: statistics.median(steppers[k].after[skip:]) for k in ("flat", "fused")}
    print(f"  FlatAdamW saves {saved:.1%} of a whole step against fused AdamW "
          f"(per round {1 - max(ratios):.1%} to {1 - min(ratios):.1%}; 5% is the bar); after backward it saves "
          f"{(after['fused'] - after['flat']) * 1e3:.2f} ms, {(after['fused'] - after['flat']) / fused:.1%} of "
          f"fused's whole step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", help="a text file (split 90/10 like nanoGPT); default: the book's corpus split by play")
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--skip", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full-iters", type=int, default=2000, help="0 skips the loss comparison")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of the full runs, e.g. 0,1,2")
    ap.add_argument("--eval-iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true",
                    help="compile our model's forward with torch.compile (the compilation itself is not timed)")
    ap.add_argument("--interleave", type=int, default=300,
                    help="also time N steps of each, alternating step by step (default 300; 0: off)")
    ap.add_argument("--optimizers", action="store_true",
                    help="only time whole steps with FlatAdamW, fused and foreach AdamW (see 4. above)")
    ap.add_argument("--rounds", type=int, default=7, help="--optimizers: rounds of blocks (default 7)")
    ap.add_argument("--block", type=int, default=20, help="--optimizers: steps per block (default 20)")
    ap.add_argument("--shapes", default="reference,bpe", help="--optimizers: reference, bpe or both (default)")
    ap.add_argument("--kinds", default=",".join(OPTIMIZERS),
                    help=f"--optimizers: which of {','.join(OPTIMIZERS)} (default all; flat and fused are needed)")
    ap.add_argument("--step-by-step", action="store_true",
                    help="--optimizers: in each round the optimizers take turns step by step, not block by block")
    args = ap.parse_args()
    if args.optimizers:
        optimizers_main(args)
        return
    block = 20
    if args.interleave and args.interleave < args.skip + 2 * block + 1:
        ap.error(f"--interleave must be 0 or at least --skip + {2 * block + 1} = {args.skip + 2 * block + 1} "
                 f"(two {block}-step blocks after the skipped steps, and one more to end the last), got {args.interleave}")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.text:
        text = open(args.text, encoding="utf-8").read()
        n = int(0.9 * len(text))
        train_text, val_text = text[:n], text[n:]
    else:
        from gptlib.data import shakespeare_split
        train_text, val_text = shakespeare_split()
    chars = sorted(set(train_text + val_text))
    stoi = {c: i for i, c in enumerate(chars)}
    train_ids = torch.tensor([stoi[c] for c in train_text])
    val_ids = torch.tensor([stoi[c] for c in val_text])
    config = GPTConfig(vocab_size=len(chars), block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)

    def tconf(iters: int, seed: int = 0) -> TrainConfig:
        return TrainConfig(max_iters=iters, seed=seed, batch_size=12, learning_rate=1e-3, min_lr=1e-4,
                           warmup_iters=100, lr_decay_iters=max(iters, 100), betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
                           eval_interval=10 ** 9, eval_iters=args.eval_iters)

    compiled = "; our forward compiled with torch.compile" if args.compile else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vocab {config.vocab_size}, "
          f"{len(train_ids):,} training characters{compiled}")
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    for r in range(args.repeats):
        order = ("plain", "ours") if r % 2 == 0 else ("ours", "plain")
        for name in order:
            tc = tconf(args.iters)
            if name == "plain":
                times[name].append(plain_train(config, tc, train_ids, args.skip)[1])
            else:
                times[name].append(ours_train(config, tc, train_ids, val_ids, args.skip, args.compile)[1])
        print(f"round {r}: plain {times['plain'][-1] * 1e3:.1f} ms/step, ours {times['ours'][-1] * 1e3:.1f} ms/step")
    if args.repeats:
        plain_ms, ours_ms = (statistics.median(times[k]) * 1e3 for k in ("plain", "ours"))
        ratios = [o / p for o, p in zip(times["ours"], times["plain"])]
        print(f"median time per step: plain {plain_ms:.1f} ms, gptlib.train {ours_ms:.1f} ms; "
              f"ours/plain = {ours_ms / plain_ms:.3f} (per round {min(ratios):.3f}-{max(ratios):.3f}; target <= 0.9)")

        tokens = 12 * config.block_size
        model = GPT(config)
        n = model.num_params(non_embedding=True)
        flops = tokens * (6 * n + 12 * config.n_layer * config.block_size * config.n_embd)
        peak = matmul_gflops()
        for name, ms in (("plain", plain_ms), ("ours", ours_ms)):
            achieved = flops / (ms / 1e3) / 1e9
            print(f"{name}: {tokens / (ms / 1e3):,.0f} tokens/s, {achieved:.1f} GFLOP/s of model FLOPs, "
                  f"MFU {achieved / peak:.1%} of a 1024x1024 float32 matmul ({peak:.0f} GFLOP/s, measured now)")

    if args.interleave:
        p_s, o_s, _ = interleaved(config, tconf(args.interleave), train_ids, val_ids, args.skip, compile=args.compile)
        blocks = [sum(o_s[i:i + block]) / sum(p_s[i:i + block]) for i in range(0, len(o_s) - block + 1, block)]
        q = statistics.quantiles(blocks, n=4)
        print(f"interleaved, {len(o_s)} steps each: median step plain {statistics.median(p_s) * 1e3:.1f} ms, "
              f"gptlib.train {statistics.median(o_s) * 1e3:.1f} ms; total ours/plain = {sum(o_s) / sum(p_s):.3f}; "
              f"per {block}-step block median {statistics.median(blocks):.3f} "
              f"(quartiles {q[0]:.3f}-{q[2]:.3f}, {len(blocks)} blocks; target <= 0.9)")

    for seed in (int(x) for x in args.seeds.split(",")) if args.full_iters else ():
        tc = tconf(args.full_iters, seed)
        t = time.perf_counter()
        plain_model, _ = plain_train(config, tc, train_ids, 1)
        t_plain = time.perf_counter() - t
        t = time.perf_counter()
        ours_model, _ = ours_train(config, tc, train_ids, val_ids, 1, args.compile)
        t_ours = time.perf_counter() - t
        ours_model.eval()
        lp = plain_val_loss(plain_model.eval(), val_ids, tc, config.block_size)
        lo = estimate_loss(ours_model, val_ids, config.block_size, tc.batch_size, tc.eval_iters, seed=12345)
        print(f"seed {seed}, {args.full_iters} iterations: plain {t_plain:.1f} s, val loss {lp:.4f}; "
              f"ours {t_ours:.1f} s, val loss {lo:.4f} (same {args.eval_iters} validation batches)")


def optimizers_main(args: argparse.Namespace) -> None:
    """``--optimizers``: both shapes, each on its own data."""
    kinds, wanted = tuple(args.kinds.split(",")), set(args.shapes.split(","))
    if args.rounds < 1 or args.block < 1 or args.skip < 0:
        raise SystemExit("--optimizers needs --rounds >= 1, --block >= 1 and --skip >= 0")
    if not {"flat", "fused"} <= set(kinds) <= set(OPTIMIZERS) or not wanted or not wanted <= {"reference", "bpe"}:
        raise SystemExit(f"--kinds: flat, fused and any of {OPTIMIZERS}; --shapes: reference and/or bpe")
    torch.set_num_threads(args.threads or 2)
    from gptlib.data import shakespeare_split
    text = "".join(shakespeare_split())
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    char_ids = torch.tensor([stoi[c] for c in text[:1_000_000]])
    bpe_ids = torch.randint(1024, (1_000_000,), generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    shapes = (("reference", GPTConfig(vocab_size=len(chars), block_size=64, n_layer=4, n_head=4, n_embd=128,
                                      dropout=0.0), 12, char_ids),
              ("BPE-sized", GPTConfig(vocab_size=1024, block_size=128, n_layer=4, n_head=4, n_embd=128,
                                      dropout=0.0), 16, bpe_ids))
    for name, config, batch, ids in shapes:
        if {"reference": "reference", "BPE-sized": "bpe"}[name] not in wanted:
            continue
        steps = args.skip + args.rounds * args.block
        tc = TrainConfig(max_iters=steps, seed=0, batch_size=batch, learning_rate=1e-3, min_lr=1e-4,
                         warmup_iters=100, lr_decay_iters=max(steps, 100), betas=(0.9, 0.99), weight_decay=0.1,
                         grad_clip=1.0, eval_interval=10 ** 9, eval_iters=1)
        steppers = compare_optimizers(config, tc, ids, args.rounds, args.block, args.skip, kinds,
                                      step_by_step=args.step_by_step)
        report_optimizers(name, config, steppers, args.rounds, args.block, args.skip, args.step_by_step)


if __name__ == "__main__":
    main()
