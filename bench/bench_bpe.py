"""Benchmark gptlib's BPE tokenizer against the plain algorithm, Hugging Face `tokenizers` and tiktoken.

Everything is measured side by side in one run, on the same text and the same vocabulary size, and
reported as ratios (the machine may be shared and noisy; ratios from one run are what to compare).

    python bench/bench_bpe.py                      # the first 1,000,000 characters of gptlib.data.shakespeare()
    python bench/bench_bpe.py PATH/TO/input.txt    # any UTF-8 text file instead
    python bench/bench_bpe.py --plain-vocab-size 400   # a shorter plain run (both trainers are timed at 400)

Training: `BPETokenizer.train` (the fast trainer) against `train_plain` (the plain algorithm the
tokenization notebook teaches: recount all pairs, merge everywhere, for every merge) and against
Hugging Face's ByteLevel BPE trainer with the same GPT-2 pre-tokenization. The plain trainer must
learn exactly the fast trainer's merges. Encoding: `encode_plain` against `BPETokenizer.encode`
(pure Python, with a chunk cache, started cold) and `BPETokenizer.to_tiktoken()`; all three must give
identical ids.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from gptlib.data import shakespeare
from gptlib.tokenizer import BPETokenizer, encode_plain, train_plain


def timed(fn, repeat: int = 1):
    """(result of the last call, best wall-clock seconds over `repeat` calls)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def hf_train(pieces: list[str], vocab_size: int):
    """Hugging Face ByteLevel BPE with GPT-2's pre-tokenization regex, no special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(pieces, trainer)
    return tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("text", nargs="?", type=Path, help="a UTF-8 text file (default: the book's corpus)")
    ap.add_argument("--chars", type=int, default=1_000_000, help="use the first CHARS characters (default 1,000,000)")
    ap.add_argument("--vocab-size", type=int, default=1024, help="vocabulary size, 256 bytes + merges (default 1024)")
    ap.add_argument("--plain-vocab-size", type=int, default=None,
                    help="train the plain algorithm only to this size (default: --vocab-size; the plain run takes minutes)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each fast trainer and encoder; the best counts (default 5)")
    args = ap.parse_args(argv)

    source = str(args.text) if args.text else "gptlib.data.shakespeare()"
    text = (args.text.read_text(encoding="utf-8") if args.text else shakespeare())[: args.chars]
    mb = len(text.encode("utf-8")) / 1e6
    plain_size = args.plain_vocab_size or args.vocab_size
    print(f"text: {source}, {len(text):,} characters ({mb:.2f} MB); vocabulary {args.vocab_size}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (a busy machine makes every figure noisy)")

    # --- training ---------------------------------------------------------------------------------
    fast, t_fast = timed(lambda: BPETokenizer.train(text, args.vocab_size, special_tokens=()), args.repeat)
    print(f"\ntrain  fast (BPETokenizer.train)            {t_fast:8.2f} s   best of {args.repeat}")

    lines = text.splitlines(keepends=True)
    hf_one, t_hf_one = timed(lambda: hf_train([text], args.vocab_size), args.repeat)
    hf_lines, t_hf_lines = timed(lambda: hf_train(lines, args.vocab_size), args.repeat)
    t_hf = min(t_hf_one, t_hf_lines)
    print(f"train  Hugging Face tokenizers, one string   {t_hf_one:8.2f} s   best of {args.repeat}")
    print(f"train  Hugging Face tokenizers, line by line {t_hf_lines:8.2f} s   best of {args.repeat} (can use all cores)")
    assert hf_one.get_vocab_size() == args.vocab_size, hf_one.get_vocab_size()

    print(f"train  plain (train_plain) to {plain_size} ...", flush=True)
    plain_merges, t_plain = timed(lambda: train_plain(text, plain_size))
    if plain_size == args.vocab_size:
        fast_same, t_fast_same = fast, t_fast
    else:
        fast_same, t_fast_same = timed(lambda: BPETokenizer.train(text, plain_size, special_tokens=()), args.repeat)
    assert plain_merges == fast_same.merges, "the plain and the fast trainer learned different merges"
    print(f"train  plain (train_plain), {plain_size - 256} merges        {t_plain:8.2f} s   one run; "
          f"merges identical to the fast trainer's")

    # --- encoding ---------------------------------------------------------------------------------
    merges = fast.merges
    ids_plain, t_enc_plain = timed(lambda: encode_plain(text, merges), args.repeat)
    # a new tokenizer for every run, so the chunk cache starts empty each time
    ids_ours, t_enc_ours = timed(lambda: BPETokenizer(merges, special_tokens=()).encode(text), args.repeat)
    enc = fast.to_tiktoken()
    ids_tt, t_enc_tt = timed(lambda: enc.encode_ordinary(text), args.repeat)
    assert ids_plain == ids_ours == ids_tt, "the encoders disagree"
    print(f"\nencode plain (encode_plain)                 {t_enc_plain:8.2f} s   {mb / t_enc_plain:6.2f} MB/s   best of {args.repeat}")
    print(f"encode ours (BPETokenizer.encode, cold)      {t_enc_ours:8.2f} s   {mb / t_enc_ours:6.2f} MB/s   best of {args.repeat}")
    print(f"encode tiktoken (to_tiktoken())              {t_enc_tt:8.2f} s   {mb / t_enc_tt:6.2f} MB/s   best of {args.repeat}")
    print(f"       {len(ids_ours):,} tokens, identical from all three")

    # --- ratios -----------------------------------------------------------------------------------
    rows = [
        ("train: fast vs plain (same text, same merges)", t_plain / t_fast_same, ">= 100x", t_plain / t_fast_same >= 100),
        ("train: fast time / Hugging Face time", t_fast / t_hf, "<= 5x", t_fast / t_hf <= 5),
        ("encode: ours vs plain", t_enc_plain / t_enc_ours, ">= 3x", t_enc_plain / t_enc_ours >= 3),
        ("encode: tiktoken vs plain", t_enc_plain / t_enc_tt, ">= 20x", t_enc_plain / t_enc_tt >= 20),
    ]
    print("\nratio                                              measured   target")
    for name, value, target, ok in rows:
        print(f"{name:50} {value:8.1f}x   {target:7}  {'met' if ok else 'NOT met'}")
    if plain_size != args.vocab_size:
        print(f"(the plain trainer ran to {plain_size}; the fast trainer was timed at the same size for the first ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
