"""Does `gptlib.attention.CausalSelfAttention` add overhead on top of PyTorch's attention kernel?

Times forward + backward of the layer (fused path) against the same computation written inline around
`torch.nn.functional.scaled_dot_product_attention`, with the same weights and shapes (batch 12,
d = 128, 4 heads, T = 64 and 256). The two are timed alternately, block by block, and the script
prints the median time of each and the ratio layer / inline (target: at most 1.1).

    python bench/bench_attention.py [--rounds 15] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gptlib.attention import CausalSelfAttention


def inline_block(x, w_attn, b_attn, w_proj, b_proj, n_head):
    """nanoGPT-style attention written inline: fused qkv projection, heads, SDPA, output projection."""
    B, T, C = x.shape
    q, k, v = F.linear(x, w_attn, b_attn).split(C, dim=2)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(y.transpose(1, 2).contiguous().view(B, T, C), w_proj, b_proj)


def time_block(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 12, d=128, 4 heads; "
          f"median of {args.rounds} alternating blocks of {args.steps} forward+backward steps")
    worst = 0.0
    for T in (64, 256):
        torch.manual_seed(0)
        layer = CausalSelfAttention(128, 4)
        params = [p.detach().clone().requires_grad_() for p in
                  (layer.c_attn.weight, layer.c_attn.bias, layer.c_proj.weight, layer.c_proj.bias)]
        x = torch.randn(12, T, 128)
        grad_out = torch.randn(12, T, 128)

        def ours():
            layer.zero_grad(set_to_none=True)
            layer(x).backward(grad_out)

        def inline():
            for p in params:
                p.grad = None
            inline_block(x, *params, 4).backward(grad_out)

        ours()
        inline()
        torch.testing.assert_close(params[0].grad, layer.c_attn.weight.grad)  # same computation
        for step in (ours, inline):  # warm-up
            time_block(step, args.steps)
        times = {"layer": [], "inline": []}
        for _ in range(args.rounds):
            times["layer"].append(time_block(ours, args.steps))
            times["inline"].append(time_block(inline, args.steps))
        a, b = statistics.median(times["layer"]), statistics.median(times["inline"])
        worst = max(worst, a / b)
        print(f"T={T:4d}: layer {a * 1e3:7.3f} ms, inline {b * 1e3:7.3f} ms, ratio {a / b:.3f}")
    print(f"worst ratio {worst:.3f} (target <= 1.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
