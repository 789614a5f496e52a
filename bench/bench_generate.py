"""How fast is `gptlib.generate`? Ours with and without the key/value cache against Hugging Face's `generate`.

Greedy decoding of 500 new tokens after a 1-token prompt, batch 1, by the book's model shape (4 layers, 4 heads,
128 wide, vocabulary 76) with a context of 1024 so that 500 tokens fit without any window restart:

- ours, cache:     gptlib.generate.generate(..., top_k=1, use_cache=True)
- ours, no cache:  the same with use_cache=False (the whole text through the model at every step)
- HF, cache:       transformers' GPT2LMHeadModel.generate(do_sample=False, use_cache=True,
                   min_new_tokens=max_new_tokens) on the same weights (n_positions=1024)

The three are timed alternately, round after round; the script prints medians, tokens per second and the
ratios against the targets (cache >= 5x our no-cache path, >= 2x Hugging Face), for 1 and 2 threads. It
also checks that ours and Hugging Face's write the same tokens, times both of our paths on the book's own
context of 64 (where the window restarts every 33 tokens), and with --profile shows where the time of one
cached token goes.

    python bench/bench_generate.py [--tokens 500] [--rounds 5] [--threads 1,2] [--hf-no-cache] [--profile]

Timings are wall-clock and vary with the machine and its load; on a busy machine use --threads 1.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch

from gptlib.generate import generate
from gptlib.model import GPT, GPTConfig


def book_shape(block_size: int, vocab_size: int = 76) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=4, n_head=4, n_embd=128)


def random_model(config: GPTConfig, seed: int = 0) -> GPT:
    """Random weights, spread out enough (std 0.3) that greedy choices are not decided by rounding."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


def to_hf(model: GPT):
    """A transformers GPT2LMHeadModel with the same weights (Conv1D stores the linear weights transposed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                                    n_layer=c.n_layer, n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                    attn_pdrop=0.0, activation_function="gelu_new", bos_token_id=None,
                                    eos_token_id=None, pad_token_id=None))
    state = {}
    for name, t in model.state_dict().items():
        if any(name.endswith(f"{layer}.weight") for layer in ("c_attn", "c_proj", "c_fc")):
            t = t.t()
        state[name] = t.contiguous()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    real_missing = [m for m in missing if not m.endswith(".attn.bias") and not m.endswith("masked_bias")]
    if real_missing or unexpected:
        raise RuntimeError(f"weight mapping failed: missing {real_missing}, unexpected {unexpected}")
    return hf.eval()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(runners: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each runner, timed alternately after one warm-up call each."""
    for fn in runners.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def profile_cached(model: GPT, idx: torch.Tensor, n: int) -> None:
    """Where the time of a cached token goes: cProfile (Python functions) and torch.profiler (PyTorch operators)."""
    wall = min(timed(lambda: generate(model, idx, n, top_k=1)) for _ in range(3))
    prof = cProfile.Profile()
    prof.enable()
    generate(model, idx, n, top_k=1)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    print(f"\nthe cached path without a profiler: {wall / n * 1e6:.0f} µs per token (best of 3); "
          f"under cProfile: {stats.total_tt / n * 1e6:.0f} µs")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]
    print(f"{'µs/token (self)':>16} {'calls/token':>12}  function")
    for (file, line, func), (cc, nc, tt, ct, callers) in rows:
        where = func if file == "~" else f"{file.split('/')[-1]}:{line}({func})"
        print(f"{tt / n * 1e6:16.1f} {nc / n:12.1f}  {where}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as p:
        generate(model, idx, n, top_k=1)
    events = p.key_averages()
    aten = sum(e.self_cpu_time_total for e in events) / 1e6
    print(f"\ntorch.profiler: {aten / n * 1e6:.0f} µs of operator self time per token, "
          f"{sum(e.count for e in events) / n:.0f} operator calls per token")
    print(events.table(sort_by="self_cpu_time_total", row_limit=10))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--hf-no-cache", action="store_true", help="also time transformers without its cache")
    parser.add_argument("--profile", action="store_true", help="profile the cached path per token")
    args = parser.parse_args(argv)
    n = args.tokens

    model = random_model(book_shape(1024))
    idx = torch.zeros(1, 1, dtype=torch.long)
    hf = to_hf(model)

    def hf_generate(use_cache: bool):
        # no end-of-text token, so nothing stops it early (min_new_tokens makes sure of that too)
        return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, use_cache=use_cache)

    ours = generate(model, idx, n, top_k=1)
    theirs = hf_generate(True)
    same = int((ours == theirs).all(dim=0).long().cumprod(0).sum()) - idx.shape[1]
    print(f"torch {torch.__version__}; {n} new tokens, batch 1, greedy; model 4 layers, 4 heads, 128 wide, "
          f"vocabulary 76, context 1024, random weights")
    print(f"ours and Hugging Face's agree on the first {same} of {n} new tokens (same weights)")

    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        runners = {
            "ours, cache": lambda: generate(model, idx, n, top_k=1, use_cache=True),
            "ours, no cache": lambda: generate(model, idx, n, top_k=1, use_cache=False),
            "HF, cache": lambda: hf_generate(True),
        }
        if args.hf_no_cache:
            runners["HF, no cache"] = lambda: hf_generate(False)
        med = measure(runners, args.rounds)
        print(f"\n{threads} thread(s), median of {args.rounds} alternating rounds:")
        for name, t in med.items():
            print(f"  {name:15s} {t:7.3f} s  {n / t:7.0f} tokens/s")
        vs_nocache = med["ours, no cache"] / med["ours, cache"]
        vs_hf = med["HF, cache"] / med["ours, cache"]
        print(f"  cache vs our no cache: {vs_nocache:5.2f}x (target >= 5)")
        print(f"  ours vs HF (both cached): {vs_hf:5.2f}x (target >= 2)")

        short = random_model(book_shape(64))
        med64 = measure({"cache": lambda: generate(short, idx, n, top_k=1, use_cache=True),
                         "no cache": lambda: generate(short, idx, n, top_k=1, use_cache=False)}, args.rounds)
        print(f"  the book's context of 64 (window restarts every 33 tokens): cache {n / med64['cache']:.0f} tokens/s, "
              f"no cache {n / med64['no cache']:.0f} tokens/s, ratio {med64['no cache'] / med64['cache']:.2f}x")

    if args.profile:
        torch.set_num_threads(1)
        profile_cached(model, idx, n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
