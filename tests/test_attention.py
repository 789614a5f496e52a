"""gptlib.attention: the explicit function against PyTorch's kernels, the layer against nn.MultiheadAttention,
gradients against finite differences, the key/value cache against full recomputation, and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from gptlib.attention import CausalSelfAttention, KVCache, attention, causal_mask

SETTINGS = settings(max_examples=40, deadline=None)


def _copy_to_mha(layer: CausalSelfAttention) -> torch.nn.MultiheadAttention:
    mha = torch.nn.MultiheadAttention(layer.n_embd, layer.n_head, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(layer.c_attn.weight)
        mha.in_proj_bias.copy_(layer.c_attn.bias)
        mha.out_proj.weight.copy_(layer.c_proj.weight)
        mha.out_proj.bias.copy_(layer.c_proj.bias)
    return mha


def _pair(n_embd: int, n_head: int, seed: int = 0) -> tuple[CausalSelfAttention, CausalSelfAttention]:
    torch.manual_seed(seed)
    fused = CausalSelfAttention(n_embd, n_head)
    explicit = CausalSelfAttention(n_embd, n_head, fused=False)
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


# --- causal_mask ---------------------------------------------------------------------------------------------

def test_causal_mask_is_lower_triangular_and_slides_right():
    assert torch.equal(causal_mask(5), torch.ones(5, 5).tril().bool())
    for T_q in range(1, 6):
        assert torch.equal(causal_mask(T_q, 6), causal_mask(6)[-T_q:])
    assert causal_mask(1, 7).all()


@pytest.mark.parametrize("args", [(0,), (3, 2), (2.0,), (True,), (-1, 4)])
def test_causal_mask_rejects_bad_sizes(args):
    with pytest.raises(ValueError, match="causal_mask"):
        causal_mask(*args)


# --- attention vs scaled_dot_product_attention (properties) ------------------------------------------------------

shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9),
                   st.integers(1, 17), st.integers(1, 9))


@SETTINGS
@given(shapes, st.booleans(), st.integers(0, 2**31 - 1))
def test_explicit_matches_sdpa_and_weights_are_distributions(shape, use_mask, seed):
    B, H, T_q, T_k, d, d_v = shape
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, H, T_q, d, generator=g), torch.randn(B, H, T_k, d, generator=g)
    v = torch.randn(B, H, T_k, d_v, generator=g)
    mask = None
    if use_mask:
        mask = torch.rand(B, 1, T_q, T_k, generator=g) < 0.5
        mask[..., torch.randint(T_k, (1,), generator=g)] = True  # every query sees at least one key
    out, weights = attention(q, k, v, mask, return_weights=True)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert out.shape == (B, H, T_q, d_v) and weights.shape == (B, H, T_q, T_k)
    torch.testing.assert_close(out, reference, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T_q))
    if mask is not None:
        assert (weights.masked_select(~mask) == 0).all()  # exactly zero, not just small
        assert (weights.masked_select(mask.expand_as(weights)) > 0).all()


def test_causal_attention_matches_is_causal_and_scale():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 11, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, causal_mask(11)),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-12, rtol=0)
    torch.testing.assert_close(attention(q, k, v, scale=0.3), F.scaled_dot_product_attention(q, k, v, scale=0.3),
                               atol=1e-12, rtol=0)


def test_attention_weights_follow_the_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(4, 3), torch.randn(6, 3), torch.randn(6, 2)
    out, w = attention(q, k, v, return_weights=True)
    expected = torch.softmax(q @ k.T / math.sqrt(3), dim=-1)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(out, expected @ v)


def test_check_false_skips_the_checks_but_computes_the_same():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 3)
    mask = causal_mask(5, 7)
    assert torch.equal(attention(q, k, v, mask, check=False), attention(q, k, v, mask))
    hides_all = torch.zeros(5, 7, dtype=torch.bool)
    with pytest.raises(ValueError, match="hides every key"):
        attention(q, k, v, hides_all)
    assert attention(q, k, v, hides_all, check=False).isnan().all()  # 0/0, unchecked


def test_attention_dropout_drops_weights_only_when_asked():
    torch.manual_seed(0)
    q, k, v = torch.randn(8, 16), torch.randn(8, 16), torch.ones(8, 1)
    assert torch.equal(attention(q, k, v, dropout_p=0.0), attention(q, k, v))
    dropped = attention(q, k, v, dropout_p=0.5)  # rows of kept weights, rescaled by 2
    assert not torch.allclose(dropped, torch.ones(8, 1))


# --- the layer ------------------------------------------------------------------------------------------------

layers = st.sampled_from([(8, 1), (8, 2), (12, 3), (16, 4), (32, 8), (24, 6)])


@SETTINGS
@given(layers, st.integers(1, 3), st.integers(1, 20), st.integers(0, 1000))
def test_fused_and_explicit_paths_agree(layer_shape, B, T, seed):
    fused, explicit = _pair(*layer_shape, seed=seed)
    x = torch.randn(B, T, layer_shape[0])
    torch.testing.assert_close(fused(x), explicit(x), atol=1e-6, rtol=1e-5)


def test_layer_matches_multihead_attention_within_1e_6():
    layer, explicit = _pair(128, 4)
    mha = _copy_to_mha(layer)
    x = torch.randn(3, 64, 128)
    expected, _ = mha(x, x, x, attn_mask=~causal_mask(64), need_weights=False)
    assert (layer(x) - expected).abs().max() <= 1e-6
    assert (explicit(x) - expected).abs().max() <= 1e-6
    # and with MultiheadAttention's explicit path (need_weights=True)
    expected_slow, weights = mha(x, x, x, attn_mask=~causal_mask(64), average_attn_weights=False)
    assert (layer(x) - expected_slow).abs().max() <= 1e-6
    torch.testing.assert_close(layer.attention_weights(x), weights, atol=1e-6, rtol=0)


def test_gradients_match_between_paths():
    fused, explicit = _pair(32, 4)
    x = torch.randn(2, 17, 32)
    fused(x).square().sum().backward()
    explicit(x).square().sum().backward()
    for p1, p2 in zip(fused.parameters(), explicit.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck_in_float64(fused):
    torch.manual_seed(0)
    layer = CausalSelfAttention(6, 3, fused=fused).double()
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *weights):
        return torch.func.functional_call(layer, dict(zip(names, weights)), (x,))

    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, *layer.parameters()), eps=1e-6, atol=1e-5)


def test_layer_is_causal():
    layer, _ = _pair(16, 4)
    x = torch.randn(1, 10, 16)
    changed = x.clone()
    changed[:, 6:] = torch.randn(1, 4, 16)
    torch.testing.assert_close(layer(x)[:, :6], layer(changed)[:, :6], atol=0, rtol=0)
    assert not torch.allclose(layer(x)[:, 6:], layer(changed)[:, 6:])


def test_parameter_count_and_no_bias():
    assert sum(p.numel() for p in CausalSelfAttention(64, 4).parameters()) == 4 * 64**2 + 4 * 64
    assert sum(p.numel() for p in CausalSelfAttention(64, 4, bias=False).parameters()) == 4 * 64**2


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    layer = CausalSelfAttention(32, 4, dropout=0.5)
    plain = CausalSelfAttention(32, 4)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 9, 32)
    layer.eval()
    torch.testing.assert_close(layer(x), plain(x))
    layer.train()
    assert not torch.allclose(layer(x), plain(x))
    layer.fused = False
    assert not torch.allclose(layer(x), plain(x))


def test_attention_weights_are_causal_distributions():
    layer, _ = _pair(16, 4)
    w = layer.attention_weights(torch.randn(2, 7, 16))
    assert w.shape == (2, 4, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 7))
    assert (w[..., ~causal_mask(7)] == 0).all()


# --- the key/value cache --------------------------------------------------------------------------------------

@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=8), st.booleans(), st.integers(0, 1000))
def test_incremental_decoding_matches_the_full_sequence(chunks, fused, seed):
    layer = _pair(16, 4, seed=seed)[0 if fused else 1]
    T = sum(chunks)
    x = torch.randn(2, T, 16)
    with torch.no_grad():
        full = layer(x)
        cache = layer.new_cache(2, T + 3)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(layer(x[:, start:start + size], cache=cache))
            start += size
    assert len(cache) == T
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_a_chunk_after_cached_positions_sees_the_sliding_triangle(fused):
    # is_causal=True would align the triangle top-left: query 0 of the chunk would see key 0 only
    layer = _pair(16, 4)[0 if fused else 1]
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        cache = layer.new_cache(1, 9)
        layer(x[:, :5], cache=cache)
        chunk = layer(x[:, 5:], cache=cache)
        torch.testing.assert_close(chunk, layer(x)[:, 5:], atol=1e-6, rtol=1e-5)
        q, k, v = layer._qkv(x)
        wrong = F.scaled_dot_product_attention(q[:, :, 5:], k, v, is_causal=True)
        right = F.scaled_dot_product_attention(q[:, :, 5:], k, v, attn_mask=causal_mask(4, 9))
        assert not torch.allclose(wrong, right, atol=1e-3)


def test_cache_reset_and_reuse():
    layer, _ = _pair(16, 2)
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        cache = layer.new_cache(1, 5)
        first = layer(x, cache=cache)
        cache.reset()
        assert len(cache) == 0
        torch.testing.assert_close(layer(x, cache=cache), first, atol=0, rtol=0)


def test_cache_follows_the_layer_dtype():
    layer = CausalSelfAttention(8, 2).double()
    cache = layer.new_cache(3, 10)
    assert cache.keys.dtype == torch.float64 and cache.keys.shape == (3, 2, 10, 4) and cache.max_len == 10


# --- bad input ------------------------------------------------------------------------------------------------

def test_bad_layer_configuration_fails_at_construction():
    with pytest.raises(ValueError, match=r"n_embd=100 is not divisible by n_head=8"):
        CausalSelfAttention(100, 8)
    for kwargs in ({"n_embd": 0, "n_head": 1}, {"n_embd": 8, "n_head": 0}, {"n_embd": 8.0, "n_head": 2},
                   {"n_embd": 8, "n_head": 2, "dropout": 1.0}, {"n_embd": 8, "n_head": 2, "dropout": -0.1}):
        with pytest.raises(ValueError, match="CausalSelfAttention"):
            CausalSelfAttention(**kwargs)


def test_mismatched_shapes_name_the_shapes():
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"q \(2, 5, 16\) and k \(2, 5, 8\)"):
        attention(q, k, v)
    with pytest.raises(ValueError, match=r"k \(2, 5, 8\) and v \(2, 4, 8\)"):
        attention(torch.randn(2, 3, 8), k, torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match=r"do not broadcast"):
        attention(torch.randn(2, 3, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match=r"mask \(4, 4\) does not broadcast to the scores \(2, 5, 5\)"):
        attention(k, k, v, mask=causal_mask(4))
    with pytest.raises(ValueError, match="bool"):
        attention(k, k, v, mask=causal_mask(5).float())
    with pytest.raises(ValueError, match="hides every key"):
        attention(k, k, v, mask=torch.zeros(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected input \(batch, time, n_embd=16\), got \(2, 5, 8\)"):
        CausalSelfAttention(16, 2)(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"expected input"):
        CausalSelfAttention(16, 2)(torch.randn(5, 16))


def test_a_cache_from_another_batch_or_layer_is_refused():
    layer = CausalSelfAttention(16, 4)
    with torch.no_grad():
        cache = layer.new_cache(batch_size=2, max_len=8)
        with pytest.raises(ValueError, match=r"keys \(3, 4, 1, 4\).*batch=2, n_head=4"):
            layer(torch.randn(3, 1, 16), cache=cache)
        with pytest.raises(ValueError, match=r"batch=2, n_head=4, positions, head_size=4"):
            CausalSelfAttention(16, 2)(torch.randn(2, 1, 16), cache=cache)
        layer(torch.randn(2, 6, 16), cache=cache)
        with pytest.raises(ValueError, match=r"6 cached \+ 3 new positions exceed max_len=8"):
            layer(torch.randn(2, 3, 16), cache=cache)
        with pytest.raises(ValueError, match="float64"):
            layer.double()(torch.randn(2, 1, 16, dtype=torch.float64), cache=cache)
    with pytest.raises(RuntimeError, match="no_grad"):
        CausalSelfAttention(16, 4)(torch.randn(2, 1, 16), cache=CausalSelfAttention(16, 4).new_cache(2, 4))
    with pytest.raises(ValueError, match="max_len"):
        KVCache(1, 1, 1, 0)


# --- on a GPU (these run only where CUDA is available; the CPU tests above cover the same code paths) --------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_layer_matches_cpu_and_explicit_path():
    fused, explicit = _pair(128, 4)
    x = torch.randn(4, 96, 128)
    expected = fused(x)
    fused_gpu, explicit_gpu = fused.to("cuda"), explicit.to("cuda")
    x_gpu = x.to("cuda")
    with torch.no_grad():
        torch.testing.assert_close(fused_gpu(x_gpu).cpu(), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(explicit_gpu(x_gpu), fused_gpu(x_gpu), atol=1e-5, rtol=1e-4)
    w = fused_gpu.attention_weights(x_gpu)
    assert w.device.type == "cuda" and (w[..., ~causal_mask(96)] == 0).all()


@cuda
def test_cuda_bf16_autocast_paths_agree():
    fused, explicit = (m.to("cuda") for m in _pair(128, 4))
    x = torch.randn(4, 96, 128, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = fused(x), explicit(x)
    assert a.dtype == torch.bfloat16 and b.dtype == torch.bfloat16
    torch.testing.assert_close(a.float(), fused(x), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)


@cuda
def test_cuda_incremental_decoding_and_gradients():
    for layer in (m.to("cuda") for m in _pair(64, 4)):
        x = torch.randn(2, 30, 64, device="cuda")
        with torch.no_grad():
            full = layer(x)
            cache = layer.new_cache(2, 30)
            assert cache.keys.device.type == "cuda"
            pieces = [layer(x[:, :7], cache=cache)] + [layer(x[:, t:t + 1], cache=cache) for t in range(7, 30)]
        torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)
    fused, explicit = (m.to("cuda") for m in _pair(64, 4))
    x = torch.randn(2, 30, 64, device="cuda")
    fused(x).square().sum().backward()
    explicit(x).square().sum().backward()
    for p1, p2 in zip(fused.parameters(), explicit.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-4, rtol=1e-4)
