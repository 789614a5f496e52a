"""Which book model to train: bits per character on the validation plays against minutes of training.

Each setting is a gptlib Recipe (tokenizer, shape, context, batch, steps, schedule) trained from scratch
with ``gptlib.train.train_recipe`` on this machine, timed by the wall clock, then scored with
``bits_per_char`` on the first ``--chars`` characters of the validation plays: every token's loss is
counted once, windows of the model's context overlap by half of it, and the summed loss in nats is
divided by ln 2 and by the number of characters. The goal behind the sweep: at most 2.00 bits per
character from about 10 minutes of training on 2 CPU cores.

    python bench/sweep_book_model.py --list                 # the settings
    python bench/sweep_book_model.py --only A C --threads 2 # train and score some of them
    python bench/sweep_book_model.py --steps-only           # seconds per step of each, 20 steps

Results are appended to ``--out`` (JSON lines), so a sweep can be run in parts and the table printed
with ``--table``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from gptlib.data import shakespeare_split
from gptlib.train import TrainConfig
from gptlib.zoo import Recipe, train_recipe

from gptlib.metrics import bits_per_char
from gptlib.tokenizer import BPETokenizer

_TOKENIZERS: dict = {}


def _cached_bpe_train(cls, text, vocab_size, *args, **kwargs):
    """The sweep trains each tokenizer size once (the zoo's training is the same call)."""
    key = (len(text), vocab_size)
    if key not in _TOKENIZERS:
        t0 = time.perf_counter()
        _TOKENIZERS[key] = (_REAL_BPE_TRAIN(text, vocab_size, *args, **kwargs), time.perf_counter() - t0)
    return _TOKENIZERS[key][0]


_REAL_BPE_TRAIN = BPETokenizer.train


def setting(vocab: int, ctx: int, batch: int, steps: int, lr: float, *, width: int = 128, layers: int = 4,
            heads: int = 4, warmup: int = 100, min_lr_ratio: float = 0.1, tokenizer: str = "bpe") -> Recipe:
    return Recipe(
        tokenizer,
        dict(block_size=ctx, n_layer=layers, n_head=heads, n_embd=width, dropout=0.0),
        # evaluations as in the zoo's recipes, so a setting can become one unchanged
        TrainConfig(max_iters=steps, batch_size=batch, learning_rate=lr, min_lr=lr * min_lr_ratio,
                    warmup_iters=warmup, eval_interval=250, eval_iters=20),
        bpe_vocab_size=vocab,
    )


SETTINGS: dict[str, Recipe] = {
    # the untuned reference runs quoted when the goal was set
    "ref512": setting(512, 128, 16, 4000, 1e-3),
    "ref1024": setting(1024, 128, 16, 4000, 1e-3),
    # a higher peak rate (small models tolerate it)
    "A": setting(1024, 128, 16, 4000, 2e-3),
    "B": setting(1024, 128, 16, 4000, 3e-3),
    # a larger vocabulary: more characters per token and per window
    "C": setting(2048, 128, 16, 4000, 2e-3),
    # a longer context, half the batch (same tokens per step)
    "D": setting(1024, 256, 8, 4000, 2e-3),
    # wider and shallower, deeper and narrower
    "E": setting(1024, 128, 16, 3000, 2e-3, width=192, heads=6),
    "F": setting(1024, 128, 16, 3000, 2e-3, layers=6),
    # bigger batches, fewer steps
    "G": setting(1024, 128, 32, 2200, 3e-3),
    # after A and B: a still higher rate, and the steps that fit in about 10 minutes
    "H": setting(1024, 128, 16, 4600, 4e-3),
    "I": setting(2048, 128, 16, 4600, 3e-3),
    "J": setting(1024, 128, 16, 4600, 3e-3),
}


def describe(r: Recipe) -> str:
    m, t = r.model, r.train
    return (f"{r.tokenizer}{r.bpe_vocab_size if r.tokenizer == 'bpe' else ''} L{m['n_layer']} d{m['n_embd']} "
            f"ctx{m['block_size']} b{t.batch_size} {t.max_iters} steps lr {t.learning_rate:g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chars", type=int, default=300_000)
    ap.add_argument("--out", default="bench/sweep_book_model.jsonl")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--steps-only", action="store_true", help="time 30 steps of each setting instead")
    ap.add_argument("--save", default=None, help="also save each trained model as a checkpoint in this folder")
    args = ap.parse_args()
    if args.list:
        for k, r in SETTINGS.items():
            print(f"{k:8s} {describe(r)}")
        return
    if args.table:
        rows = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
        print(f"| setting | what | params | train tokens | minutes | bits/char |\n|---|---|---:|---:|---:|---:|")
        for r in sorted(rows, key=lambda r: r["bpc"]):
            print(f"| {r['name']} | {r['what']} | {r['params'] / 1e6:.2f} M | {r['tokens'] / 1e6:.1f} M "
                  f"| {r['minutes']:.1f} | {r['bpc']:.3f} |")
        return
    torch.set_num_threads(args.threads)
    BPETokenizer.train = classmethod(_cached_bpe_train)
    _, val_text = shakespeare_split()
    text = val_text[: args.chars]
    names = args.only or list(SETTINGS)
    for name in names:
        r = SETTINGS[name]
        if args.steps_only:
            import dataclasses
            r = dataclasses.replace(r, train=dataclasses.replace(r.train, max_iters=30, warmup_iters=5,
                                                                 eval_interval=1000, eval_iters=1))
        t0 = time.perf_counter()
        model, tok, hist = train_recipe(r, show_progress=False)
        minutes = (time.perf_counter() - t0) / 60
        if args.steps_only:
            print(f"{name:8s} {describe(SETTINGS[name])}: {1000 * hist.elapsed[-1] / 30:.0f} ms/step "
                  f"(30 steps, evaluation included)", flush=True)
            continue
        model.eval()
        if args.save:
            from gptlib.checkpoint import save_checkpoint
            save_checkpoint(Path(args.save) / f"{name}-{r.fingerprint()}", model, step=r.train.max_iters,
                            tokenizer=tok, train_config=r.train, history=hist)
        bpc = bits_per_char(model, tok, text)
        tok_seconds = _TOKENIZERS.get((len(shakespeare_split()[0]), r.bpe_vocab_size), (None, 0.0))[1]
        row = dict(name=name, what=describe(r), params=model.num_params(), minutes=minutes, bpc=bpc,
                   train_minutes=hist.elapsed[-1] / 60, tokenizer_minutes=tok_seconds / 60,
                   ms_per_step=1000 * hist.elapsed[-1] / r.train.max_iters,
                   tokens=r.train.max_iters * r.train.batch_size * r.model["block_size"],
                   val_loss=hist.val_loss[-1], threads=args.threads,
                   when=time.strftime("%Y-%m-%d %H:%M:%S"))
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
