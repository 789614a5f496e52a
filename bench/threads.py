"""How many PyTorch threads should the book's tests and builds use on a 2-core machine?

Times a small Transformer training step (4 layers, 128 wide, batch 12, context 64: the size of the
book's models) in four set-ups, alternating, and prints medians and ratios:
one process with 1 or 2 threads, and two processes at once with 1 or 2 threads each.

    python bench/threads.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

STEP = r"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
layer = torch.nn.TransformerEncoderLayer(128, 4, 512, batch_first=True, dropout=0.0)
m = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
opt = torch.optim.AdamW(m.parameters())
x = torch.randn(12, 64, 128)
def step():
    m(x).pow(2).mean().backward(); opt.step(); opt.zero_grad()
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(20):
    step()
print((time.perf_counter() - t) / 20 * 1000)
"""


def run(threads: int, copies: int) -> float:
    procs = [subprocess.Popen([sys.executable, "-c", STEP, str(threads)], stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    return statistics.mean(float(p.communicate()[0]) for p in procs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    setups = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (2, 1),
              "2 processes, 1 thread each": (1, 2), "2 processes, 2 threads each": (2, 2)}
    times: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(args.rounds):
        for name, (threads, copies) in setups.items():
            times[name].append(run(threads, copies))
    base = statistics.median(times["1 process, 1 thread"])
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"{name:30s} {ms:7.1f} ms/step  ({ms / base:4.2f}x one process with one thread)")


if __name__ == "__main__":
    main()
