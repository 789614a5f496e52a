"""gptlib.generate: the filters against Hugging Face's logits warpers (hypothesis), greedy decoding, seeds,
the context-window rule, cached against uncached decoding, streaming, the model's mode, and the errors."""

import math

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from gptlib.generate import generate, next_token_probs, stream, top_k_filter, top_p_filter, window_start
from gptlib.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=32)


def _model(config: GPTConfig = CONFIG, seed: int = 0) -> GPT:
    """A random model whose logits are spread out (GPT-2's initialisation makes them all nearly equal, and
    argmax over near-ties would depend on rounding)."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


def _prompt(batch: int = 1, length: int = 5, vocab: int = CONFIG.vocab_size, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _naive_greedy(model: GPT, idx: torch.Tensor, n: int, keep: int) -> torch.Tensor:
    """Greedy decoding written out: the whole window through the model at every step, the window moved by
    the documented rule (a long prompt keeps its last block_size tokens; a full window restarts from its
    last keep tokens)."""
    block = model.config.block_size
    start = max(0, idx.shape[1] - block)
    for _ in range(n):
        if idx.shape[1] - start > block:
            start = idx.shape[1] - keep
        logits = model(idx[:, start:])[0][:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


def _hf(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    scores = logits.clone()
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores


# ---------------------------------------------------------------- the filters

logit_rows = st.integers(1, 40).flatmap(lambda v: st.lists(
    st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=v, max_size=v), min_size=1, max_size=3))
# rows without ties: distinct multiples of 0.01, so that no two tokens are equally probable
distinct_rows = st.integers(1, 40).flatmap(lambda v: st.lists(
    st.lists(st.integers(-800, 800), min_size=v, max_size=v, unique=True).map(lambda r: [x / 100 for x in r]),
    min_size=1, max_size=3))


@settings(max_examples=100, deadline=None)
@given(rows=logit_rows, k=st.integers(1, 45))
def test_top_k_matches_transformers(rows, k):
    logits = torch.tensor(rows)
    ours = top_k_filter(logits, k)
    assert torch.equal(ours, _hf(logits, top_k=k))  # ties with the k-th are kept by both
    kept = (ours > -math.inf).sum(-1)
    assert (kept >= min(k, logits.shape[-1])).all()
    assert torch.equal(ours[ours > -math.inf], logits[ours > -math.inf])  # kept logits are untouched


def _boundary_gap(logits: torch.Tensor, p: float) -> float:
    """How close p comes to a partial sum of the sorted probabilities (where rounding could decide)."""
    probs = logits.double().softmax(-1).sort(-1, descending=True).values
    return (probs.cumsum(-1) - p).abs().min().item()


@settings(max_examples=100, deadline=None)
@given(rows=distinct_rows, p=st.floats(0.01, 0.99))
def test_top_p_matches_transformers(rows, p):
    logits = torch.tensor(rows)
    assume(_boundary_gap(logits, p) > 1e-5)  # away from ties and from sums exactly at p, rounding cannot matter
    ours = top_p_filter(logits, p)
    assert torch.equal(ours, _hf(logits, top_p=p))


@settings(max_examples=100, deadline=None)
@given(rows=distinct_rows, p=st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_set_reaching_p(rows, p):
    logits = torch.tensor(rows)
    assume(_boundary_gap(logits, p) > 1e-5)
    kept = top_p_filter(logits, p) > -math.inf
    probs = logits.double().softmax(-1)
    for row_probs, row_kept in zip(probs, kept):
        order = row_probs.argsort(descending=True)
        m = int(row_kept.sum())
        assert m >= 1 and set(order[:m].tolist()) == set(torch.nonzero(row_kept).flatten().tolist())
        assert row_probs[order[:m]].sum() >= p - 1e-9 or m == len(row_probs)
        assert row_probs[order[:m - 1]].sum() < p


@settings(max_examples=100, deadline=None)
@given(rows=distinct_rows, t=st.floats(0.05, 20.0), k=st.one_of(st.none(), st.integers(1, 45)),
       p=st.one_of(st.none(), st.floats(0.01, 1.0)))
def test_next_token_probs_matches_transformers_pipeline(rows, t, k, p):
    logits = torch.tensor(rows)
    if p is not None and p < 1.0:
        scaled = top_k_filter(logits / t, k) if k is not None else logits / t
        assume(_boundary_gap(scaled, p) > 1e-5)
    ours = next_token_probs(logits, t, k, p)
    torch.testing.assert_close(ours, _hf(logits, t, k, p).softmax(-1))
    torch.testing.assert_close(ours.sum(-1), torch.ones(logits.shape[0]))


def test_ties_are_kept_together():
    logits = torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0])
    assert torch.equal(top_k_filter(logits, 2) > -math.inf, torch.tensor([True, True, True, True, False]))
    # probabilities ~ (0.74, 0.10, 0.10, 0.10, 0.04): 0.8 is reached inside the tie, so the whole tie stays
    assert torch.equal(top_p_filter(logits, 0.8) > -math.inf, torch.tensor([True, True, True, True, False]))
    assert torch.equal(top_p_filter(logits, 0.5) > -math.inf, torch.tensor([True, False, False, False, False]))


def test_filters_that_keep_everything_change_nothing():
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top_k_filter(logits, 11), logits) and torch.equal(top_k_filter(logits, 100), logits)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    torch.testing.assert_close(next_token_probs(logits), logits.softmax(-1))


def test_temperature_sharpens_and_flattens():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 3

    def entropy(t):
        p = next_token_probs(logits, t)
        p = p[p > 0]
        return -(p * p.log()).sum().item()

    values = [entropy(t) for t in (0.1, 0.5, 1.0, 2.0, 10.0)]
    assert all(a < b for a, b in zip(values, values[1:])) and values[-1] < math.log(50)


# ---------------------------------------------------------------- decoding

def test_greedy_is_top_k_1_argmax_and_draws_no_random_numbers():
    model = _model()
    idx = _prompt()
    g = torch.Generator().manual_seed(7)
    state, global_state = g.get_state(), torch.get_rng_state()
    out = generate(model, idx, 30, top_k=1, generator=g, temperature=0.3, top_p=0.5)
    assert torch.equal(g.get_state(), state) and torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(out, _naive_greedy(model, idx, 30, keep=CONFIG.block_size // 2))


def test_same_seed_same_tokens_other_seed_other_tokens():
    model = _model()
    idx = _prompt(batch=2)
    a = generate(model, idx, 40, generator=torch.Generator().manual_seed(1))
    b = generate(model, idx, 40, generator=torch.Generator().manual_seed(1))
    c = generate(model, idx, 40, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = generate(model, idx, 40)  # no generator: PyTorch's global one
    torch.manual_seed(3)
    assert torch.equal(d, generate(model, idx, 40))


def test_sampling_uses_the_documented_distribution():
    """The first token sampled many times (one sequence per row) follows next_token_probs."""
    model = _model()
    idx = _prompt(batch=1).repeat(4000, 1)
    kwargs = dict(temperature=1.3, top_k=6, top_p=0.8)
    out = generate(model, idx, 1, generator=torch.Generator().manual_seed(0), **kwargs)
    with torch.no_grad():
        expected = next_token_probs(model(idx[:1])[0][0, -1], **kwargs)
    counts = torch.bincount(out[:, -1], minlength=CONFIG.vocab_size).double() / len(out)
    assert set(torch.nonzero(counts).flatten().tolist()) <= set(torch.nonzero(expected).flatten().tolist())
    assert (counts - expected.double()).abs().max() < 0.03  # 4000 draws: standard error below 0.008


@pytest.mark.parametrize("prompt_len", [1, 5, 16, 40])
@pytest.mark.parametrize("keep", [1, 8, 15, 16])
def test_cached_and_uncached_greedy_follow_the_same_rule(prompt_len, keep):
    model = _model()
    idx = _prompt(batch=2, length=prompt_len)
    expected = _naive_greedy(model, idx, 60, keep)
    for use_cache in (True, False):
        out = generate(model, idx, 60, top_k=1, use_cache=use_cache, keep=keep)
        assert torch.equal(out, expected), (use_cache, keep)


def test_keep_block_size_is_nanogpt_sliding_window():
    model = _model()
    idx = _prompt(length=3)
    with torch.no_grad():
        x = idx
        for _ in range(50):
            x = torch.cat([x, model(x[:, -CONFIG.block_size:])[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    for use_cache in (True, False):
        assert torch.equal(generate(model, idx, 50, top_k=1, use_cache=use_cache, keep=CONFIG.block_size), x)


def test_cached_and_uncached_sampling_agree():
    model = _model()
    idx = _prompt(batch=3)
    outs = [generate(model, idx, 80, temperature=0.9, top_p=0.95, use_cache=c,
                     generator=torch.Generator().manual_seed(4)) for c in (True, False)]
    assert torch.equal(*outs)


def test_long_prompt_keeps_its_last_block_size_tokens():
    model = _model()
    idx = _prompt(length=45)
    out = generate(model, idx, 20, generator=torch.Generator().manual_seed(0))
    tail = generate(model, idx[:, -CONFIG.block_size:], 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :45], idx) and torch.equal(out[:, 45:], tail[:, CONFIG.block_size:])


def test_batch_rows_are_independent_under_greedy():
    model = _model()
    idx = _prompt(batch=3, length=4)
    out = generate(model, idx, 25, top_k=1)
    for row in range(3):
        assert torch.equal(out[row:row + 1], generate(model, idx[row:row + 1], 25, top_k=1))


@settings(max_examples=100, deadline=None)
@given(block=st.integers(1, 40), data=st.data())
def test_window_start_always_fits_the_context(block, data):
    keep = data.draw(st.integers(1, block))
    prompt_len = data.draw(st.integers(1, 3 * block))
    start = None
    for length in range(prompt_len, prompt_len + 3 * block + 5):
        new = window_start(start, length, block, keep)
        assert 1 <= length - new <= block  # the window is never empty nor longer than the context
        if start is None:
            assert new == max(0, length - block)
        elif new != start:
            assert length - new == keep and length - start == block + 1  # a restart only when full
        start = new


def test_stream_yields_what_generate_returns():
    model = _model()
    idx = _prompt(batch=2)
    steps = list(stream(model, idx, 33, top_k=5, generator=torch.Generator().manual_seed(9)))
    assert len(steps) == 33 and all(s.shape == (2,) and s.dtype == torch.long for s in steps)
    out = generate(model, idx, 33, top_k=5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(torch.stack(steps, dim=1), out[:, 5:])


def test_training_flag_is_restored_and_no_gradients():
    model = _model().train()
    out = generate(model, _prompt(), 10)
    assert model.training and not out.requires_grad and out.dtype == torch.long
    it = stream(model, _prompt(), 10)
    next(it)
    assert model.training  # eval mode only while a step runs: between steps the model is the caller's
    it.close()
    assert model.training
    model.eval()
    list(stream(model, _prompt(), 3))
    assert not model.training


def test_interleaved_streams_on_a_training_model_use_eval_mode_and_restore_every_flag():
    config = GPTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.5)
    model = _model(config).train()
    model.transformer.h[1].mlp.eval()  # a submodule the caller put in eval mode on purpose
    flags = {name: m.training for name, m in model.named_modules()}
    first, second = stream(model, _prompt(), 20, top_k=1), stream(model, _prompt(), 20, top_k=1)
    a, b = [], []
    for _ in range(20):
        a.append(next(first))
        assert {name: m.training for name, m in model.named_modules()} == flags
        b.append(next(second))
    expected = _naive_greedy(model.eval(), _prompt(), 20, keep=8)[:, _prompt().shape[1]:]
    assert torch.equal(torch.stack(a, 1), expected) and torch.equal(torch.stack(b, 1), expected)  # no dropout
    model.train()
    model.transformer.h[1].mlp.eval()
    generate(model, _prompt(), 5)
    assert {name: m.training for name, m in model.named_modules()} == flags


def test_dropout_is_off_during_generation():
    config = GPTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.5)
    model = _model(config).train()
    a = generate(model, _prompt(), 20, top_k=1)
    b = generate(model, _prompt(), 20, top_k=1)
    assert torch.equal(a, b) and torch.equal(a, _naive_greedy(model.eval(), _prompt(), 20, keep=8))


def test_zero_new_tokens_and_int32_prompts():
    model = _model()
    idx = _prompt()
    assert torch.equal(generate(model, idx, 0), idx) and list(stream(model, idx, 0)) == []
    assert torch.equal(generate(model, idx.int(), 12, top_k=1), generate(model, idx, 12, top_k=1))


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, words", [
    (dict(temperature=0), "temperature must be a finite number > 0"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(temperature=True), "temperature"),
    (dict(top_k=0), "top_k must be an int >= 1"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_k=True), "top_k"),
    (dict(top_p=0.0), "top_p must be a number in (0, 1]"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=float("nan")), "top_p"),
    (dict(use_cache=1), "use_cache"),
    (dict(keep=0), "keep must be an int in [1, block_size=16]"),
    (dict(keep=17), "keep"),
    (dict(generator=object()), "generator must be a torch.Generator"),
])
def test_bad_settings_raise_clear_errors(kwargs, words):
    model = _model()
    for fn in (generate, stream):
        with pytest.raises(ValueError, match=None) as e:
            fn(model, _prompt(), 5, **kwargs)  # stream checks at once, not at the first token
        assert words in str(e.value)


@pytest.mark.parametrize("idx, words", [
    (torch.tensor([1, 2, 3]), "2-D tensor (batch, time) of integer token ids"),
    (torch.zeros(1, 3), "integer token ids"),
    (torch.zeros(1, 3, dtype=torch.bool), "integer token ids"),
    ([[1, 2]], "integer token ids"),
    (torch.zeros(0, 3, dtype=torch.long), "at least one token"),
    (torch.zeros(2, 0, dtype=torch.long), "at least one token"),
    (torch.tensor([[1, 29]]), "token id 29 is outside the vocabulary [0, vocab_size=29)"),
    (torch.tensor([[-1, 2]]), "token id -1"),
])
def test_bad_prompts_raise_clear_errors(idx, words):
    for fn in (generate, stream):
        with pytest.raises(ValueError) as e:
            fn(_model(), idx, 5)
        assert words in str(e.value)


@pytest.mark.parametrize("n", [-1, 2.0, True, None])
def test_bad_max_new_tokens(n):
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        generate(_model(), _prompt(), n)


def test_bad_filter_arguments():
    logits = torch.randn(5)
    for call, words in ((lambda: top_k_filter(logits, 0), "top_k"), (lambda: top_k_filter(logits, None), "k must"),
                        (lambda: top_p_filter(logits, 0), "top_p"), (lambda: top_p_filter(logits, None), "p must"),
                        (lambda: next_token_probs(torch.tensor([1, 2])), "floating-point"),
                        (lambda: next_token_probs(logits, temperature=0.0), "top_k=1")):
        with pytest.raises(ValueError) as e:
            call()
        assert words in str(e.value)


def test_not_a_model():
    with pytest.raises(ValueError, match="model must be a gptlib.model.GPT"):
        generate(torch.nn.Linear(2, 2), _prompt(), 3)


def test_generator_on_another_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device to make a generator on")
    with pytest.raises(ValueError, match="generator is on cuda"):
        generate(_model(), _prompt(), 3, generator=torch.Generator(device="cuda"))


@pytest.mark.parametrize("args, words", [
    ((None, 0, 8, 4), "length must be an int >= 1"),
    ((None, 5, 0, 1), "block_size must be an int >= 1"),
    ((None, 5, 8, 0), "keep must be an int >= 1"),
    ((None, 5, 8, 9), "keep=9 must be at most block_size=8"),
    ((5, 5, 8, 4), "start must be None or an int in [0, length=5)"),
    ((-1, 5, 8, 4), "start"),
    ((1.0, 5, 8, 4), "start"),
])
def test_window_start_checks_its_arguments(args, words):
    with pytest.raises(ValueError) as e:
        window_start(*args)
    assert words in str(e.value)
