import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from gptlib.scale import GPT_CONFIGS, ParamCount, measure_matmul_flops, param_count, training_flops


def hf_gpt2(vocab_size, block_size, n_layer, n_embd, n_head, tied=True, n_inner=None, device="cpu"):
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_layer=n_layer, n_embd=n_embd,
                        n_head=n_head, n_inner=n_inner, tie_word_embeddings=tied,
                        bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    with torch.device(device):
        return GPT2LMHeadModel(config)


def numel(model):
    return sum(p.numel() for p in model.parameters())  # a tied matrix is listed once


# The sizes of the released GPT-2 checkpoints (sum of the tensors in OpenAI's weights).
RELEASED_GPT2 = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


@pytest.mark.parametrize("name", sorted(RELEASED_GPT2))
def test_released_gpt2_sizes(name):
    assert param_count(**GPT_CONFIGS[name]).total == RELEASED_GPT2[name]


@pytest.mark.parametrize("name", sorted(RELEASED_GPT2))
def test_matches_transformers_gpt2_on_meta_device(name):
    assert numel(hf_gpt2(**GPT_CONFIGS[name], device="meta")) == param_count(**GPT_CONFIGS[name]).total


@settings(max_examples=20, deadline=None)
@given(
    vocab_size=st.integers(2, 300),
    block_size=st.integers(1, 64),
    n_layer=st.integers(1, 3),
    n_head=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    tied=st.booleans(),
    mlp_ratio=st.integers(1, 5),
)
def test_matches_transformers_gpt2(vocab_size, block_size, n_layer, n_head, head_dim, tied, mlp_ratio):
    n_embd = n_head * head_dim
    model = hf_gpt2(vocab_size, block_size, n_layer, n_embd, n_head, tied=tied, n_inner=mlp_ratio * n_embd)
    count = param_count(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_embd=n_embd,
                        n_head=n_head, tied=tied, mlp_ratio=mlp_ratio)
    assert count.total == numel(model)
    assert count.token_embedding == model.transformer.wte.weight.numel()
    assert count.position_embedding == model.transformer.wpe.weight.numel()
    assert count.attention == sum(p.numel() for n, p in model.named_parameters() if ".attn." in n)
    assert count.mlp == sum(p.numel() for n, p in model.named_parameters() if ".mlp." in n)
    assert count.layer_norms == sum(p.numel() for n, p in model.named_parameters() if ".ln_" in n)


class _Block(nn.Module):
    """A GPT-2 block's parameters, written independently of Transformers (nanoGPT's layout)."""

    def __init__(self, d, bias, ratio):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=bias), nn.LayerNorm(d, bias=bias)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=bias), nn.Linear(d, d, bias=bias)
        self.c_fc, self.mlp_proj = nn.Linear(d, ratio * d, bias=bias), nn.Linear(ratio * d, d, bias=bias)


class _ReferenceGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_embd, bias, tied, ratio):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(_Block(n_embd, bias, ratio) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tied", [True, False])
def test_matches_an_independent_module_with_and_without_bias(bias, tied):
    shape = dict(vocab_size=37, block_size=11, n_layer=3, n_embd=20)
    with torch.device("meta"):
        model = _ReferenceGPT(**shape, bias=bias, tied=tied, ratio=3)
    assert param_count(**shape, bias=bias, tied=tied, mlp_ratio=3).total == numel(model)


@settings(max_examples=50, deadline=None)
@given(V=st.integers(1, 10**5), T=st.integers(1, 10**4), L=st.integers(1, 100), d=st.integers(1, 10**4))
def test_closed_form(V, T, L, d):
    count = param_count(vocab_size=V, block_size=T, n_layer=L, n_embd=d)
    assert count.total == 12 * L * d**2 + (V + T) * d + (13 * L + 2) * d
    assert count.non_embedding == count.total - (V + T) * d
    assert math.isclose(sum(count.shares().values()), 1.0)
    untied = param_count(vocab_size=V, block_size=T, n_layer=L, n_embd=d, tied=False)
    assert untied.total - count.total == untied.lm_head == V * d
    no_bias = param_count(vocab_size=V, block_size=T, n_layer=L, n_embd=d, bias=False)
    assert count.total - no_bias.total == 11 * L * d + d


def test_heads_do_not_change_the_count():
    base = param_count(**{k: v for k, v in GPT_CONFIGS["gpt2"].items() if k != "n_head"})
    for heads in (1, 2, 3, 12, 768):
        assert param_count(**{**GPT_CONFIGS["gpt2"], "n_head": heads}) == base


def test_published_gpt1_and_gpt3_within_one_percent():
    assert abs(param_count(**GPT_CONFIGS["gpt1"]).total / 117e6 - 1) < 0.01
    assert abs(param_count(**GPT_CONFIGS["gpt3"]).total / 175e9 - 1) < 0.01


def test_known_configs_are_read_only():
    with pytest.raises(TypeError):
        GPT_CONFIGS["gpt2"]["n_layer"] = 1
    with pytest.raises(TypeError):
        GPT_CONFIGS["mine"] = {}


@pytest.mark.parametrize("field", ["vocab_size", "block_size", "n_layer", "n_embd", "mlp_ratio", "n_head"])
@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_sizes_are_rejected(field, bad):
    shape = dict(vocab_size=10, block_size=4, n_layer=1, n_embd=8, n_head=2)
    with pytest.raises(ValueError, match=f"{field} must be a positive int"):
        param_count(**{**shape, field: bad})


@pytest.mark.parametrize("bad", [8.0, "8", True, None])
def test_wrong_types_are_rejected(bad):
    with pytest.raises(TypeError, match="n_embd must be an int"):
        param_count(vocab_size=10, block_size=4, n_layer=1, n_embd=bad)


def test_bad_flags_and_heads_are_rejected():
    shape = dict(vocab_size=10, block_size=4, n_layer=1, n_embd=8)
    with pytest.raises(ValueError, match=r"n_embd \(8\) must be divisible by n_head \(3\)"):
        param_count(**shape, n_head=3)
    with pytest.raises(TypeError, match="bias must be True or False"):
        param_count(**shape, bias=1)
    with pytest.raises(TypeError, match="tied must be True or False"):
        param_count(**shape, tied="yes")
    with pytest.raises(TypeError):
        param_count(10, 4, 1, 8)  # keyword-only: positional sizes are too easy to mix up


def test_param_count_parts():
    count = param_count(vocab_size=10, block_size=4, n_layer=2, n_embd=8, tied=False)
    assert isinstance(count, ParamCount)
    assert count.embeddings == (10 + 4) * 8 and count.lm_head == 10 * 8
    assert count.layer_norms == (2 * 2 + 1) * 2 * 8
    assert count.attention == 2 * (4 * 8 * 8 + 4 * 8) and count.mlp == 2 * (8 * 8 * 8 + 5 * 8)


def test_training_flops():
    assert training_flops(2, 3) == 36.0
    assert abs(training_flops(175e9, 300e9) / 3.14e23 - 1) < 0.01  # GPT-3's published compute
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="n_tokens must be a positive finite number"):
            training_flops(1e6, bad)
    for bad in ("1e6", None, True):
        with pytest.raises(TypeError, match="n_params must be a number"):
            training_flops(bad, 1e6)


def test_measure_matmul_flops_is_positive_and_keeps_the_random_state():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    rate = measure_matmul_flops(n=64, repeats=3)
    assert math.isfinite(rate) and rate > 0
    assert torch.equal(torch.rand(3), expected)
    assert measure_matmul_flops(n=32, repeats=1, dtype=torch.float64) > 0


def test_measure_matmul_flops_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be a positive int"):
        measure_matmul_flops(n=0)
    with pytest.raises(TypeError, match="repeats must be an int"):
        measure_matmul_flops(repeats=2.5)
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        measure_matmul_flops(n=8, dtype=torch.int32)
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        measure_matmul_flops(n=8, dtype="float32")
