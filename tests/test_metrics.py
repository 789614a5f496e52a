"""gptlib.metrics.bits_per_char against a slow token-by-token count; gptlib.zoo's fingerprint; the utils checks."""

import math

import pytest
import torch

import gptlib.zoo as gz
from gptlib.metrics import bits_per_char
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import BPETokenizer, CharTokenizer
from gptlib.utils import check_int, check_number

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 3


def _model(vocab: int, block: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def _slow_bits(model: GPT, tokenizer, text: str) -> float:
    """Each token t >= 1 predicted from the tokens before it: all of them while they fit in the context, else
    the window the fast version uses (it starts at a multiple of half the context, full windows only)."""
    ids = tokenizer.encode(text)
    T, stride = model.config.block_size, max(1, model.config.block_size // 2)
    nats = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            if t <= T:
                start = 0
            else:  # the window whose newly counted part holds t
                k = math.ceil((t - T) / stride)
                end = min(T + k * stride, len(ids) - 1)
                start = end - T
            x = torch.tensor([ids[start:t]])
            logits, _ = model(x)
            nats -= torch.log_softmax(logits[0, -1].double(), -1)[ids[t]].item()
    return nats / (len(text) - len(tokenizer.decode(ids[:1]))) / math.log(2)


@pytest.mark.parametrize("block", [1, 2, 7, 16, 400])
def test_bits_per_char_counts_every_token_once_with_its_window(block):
    tok = CharTokenizer.from_text(TEXT)
    model = _model(tok.vocab_size, block)
    fast, slow = bits_per_char(model, tok, TEXT, batch_size=3), _slow_bits(model, tok, TEXT)
    # sums of a few hundred float32 log-probabilities of size ~3: far inside 1e-4
    assert abs(fast - slow) < 1e-4, (fast, slow)


def test_bits_per_char_of_an_untrained_model_is_about_log2_v_and_counts_characters():
    tok = BPETokenizer.train(TEXT * 4, 300)
    model = _model(tok.vocab_size, 8)
    bits = bits_per_char(model, tok, TEXT)
    tokens = len(tok.encode(TEXT)) - 1
    chars = len(TEXT) - len(tok.decode(tok.encode(TEXT)[:1]))
    # near-uniform predictions: about log2(V) bits per token, spread over the characters those tokens cover
    assert abs(bits - math.log2(tok.vocab_size) * tokens / chars) < 0.3
    assert model.training is False


def test_bits_per_char_restores_training_mode_and_refuses_bad_input():
    tok = CharTokenizer.from_text(TEXT)
    model = _model(tok.vocab_size, 8).train()
    bits_per_char(model, tok, TEXT)
    assert model.training
    with pytest.raises(ValueError, match="at least 2 tokens"):
        bits_per_char(model, tok, "T")
    with pytest.raises(ValueError, match="model must be a GPT"):
        bits_per_char(torch.nn.Linear(2, 2), tok, TEXT)


def test_the_recipe_fingerprint_follows_the_corpus_and_the_code_version(monkeypatch):
    recipe = gz.RECIPES["shakespeare-char"]
    before = recipe.fingerprint()
    monkeypatch.setattr(gz, "corpus_fingerprint", lambda: "another-text")
    assert recipe.fingerprint() != before
    monkeypatch.undo()
    monkeypatch.setattr(gz, "ZOO_VERSION", gz.ZOO_VERSION + 1)
    assert recipe.fingerprint() != before


def test_check_int_and_check_number_name_what_was_wrong():
    assert check_int("n", 3, 1) == 3 and check_number("lr", 1, 0.0) == 1.0
    for bad in (True, 2.5, "3", 0):
        with pytest.raises(ValueError, match="f: n must be an int >= 1"):
            check_int("n", bad, 1, "f")
    for bad in (True, float("nan"), float("inf"), -1.0, "1"):
        with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
            check_number("lr", bad, 0.0)
    with pytest.raises(ValueError, match="> 0"):
        check_number("clip", 0.0, 0.0, above=True)
