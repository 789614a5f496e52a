"""gptlib.model: configuration checks, parameter counts against the formula and Hugging Face's GPT-2, GPT-2's
initialisation, the loss at initialisation, the key/value cache against full recomputation, gradients, and bad input."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from gptlib.model import GPT, MLP, Block, GPTConfig, LayerNorm, gelu
from gptlib.scale import GPT_CONFIGS, param_count

SETTINGS = settings(max_examples=30, deadline=None)
SMALL = GPTConfig(vocab_size=65, block_size=32, n_layer=3, n_head=4, n_embd=64)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
RELEASED = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


def _model(config: GPTConfig = SMALL, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def _tokens(config: GPTConfig, B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


# --- GPTConfig ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("vocab_size", 0), ("block_size", -3), ("n_layer", 2.0), ("n_head", True),
                                          ("n_embd", "64"), ("vocab_size", None)])
def test_config_rejects_non_positive_ints_naming_the_field(field, value):
    kwargs = {**SMALL.to_dict(), field: value}
    with pytest.raises(ValueError, match=rf"{field} must be a positive int, got {value!r}"):
        GPTConfig(**kwargs)


def test_config_n_head_must_divide_n_embd_and_lists_the_choices():
    with pytest.raises(ValueError) as e:
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=5, n_embd=12)
    message = str(e.value)
    assert "n_embd=12" in message and "n_head=5" in message and "[1, 2, 3, 4, 6, 12]" in message


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, True, "0.1", float("nan")])
def test_config_rejects_bad_dropout(dropout):
    with pytest.raises(ValueError, match="dropout must be a probability in"):
        GPTConfig(**{**SMALL.to_dict(), "dropout": dropout})


def test_config_rejects_non_bool_bias_and_stores_dropout_as_float():
    with pytest.raises(ValueError, match="bias must be True or False, got 1"):
        GPTConfig(**{**SMALL.to_dict(), "bias": 1})
    c = GPTConfig(**{**SMALL.to_dict(), "dropout": 0})
    assert isinstance(c.dropout, float) and c.dropout == 0.0


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        SMALL.n_layer = 5


configs = st.builds(
    lambda V, T, L, H, hd, p, b: GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=H * hd,
                                           dropout=p, bias=b),
    st.integers(1, 60_000), st.integers(1, 2048), st.integers(1, 12), st.integers(1, 8), st.integers(1, 32),
    st.sampled_from([0.0, 0.1, 0.5]), st.booleans())


@SETTINGS
@given(configs)
def test_config_round_trips_through_dict_and_json(config):
    d = config.to_dict()
    assert set(d) == {"vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias"}
    assert GPTConfig.from_dict(d) == config
    assert GPTConfig.from_dict(json.loads(json.dumps(d))) == config


def test_from_dict_names_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['n_ctx'\]"):
        GPTConfig.from_dict({**SMALL.to_dict(), "n_ctx": 8})
    d = SMALL.to_dict()
    del d["n_embd"], d["block_size"]
    with pytest.raises(ValueError, match=r"missing keys \['block_size', 'n_embd'\]"):
        GPTConfig.from_dict(d)
    d = SMALL.to_dict()
    del d["dropout"], d["bias"]  # the fields with defaults may be left out
    assert GPTConfig.from_dict(d) == SMALL
    with pytest.raises(ValueError, match="expected a mapping"):
        GPTConfig.from_dict([("vocab_size", 3)])


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_from_name_gives_the_released_shapes(name):
    c = GPTConfig.from_name(name)
    assert {k: getattr(c, k) for k in GPT_CONFIGS[name]} == dict(GPT_CONFIGS[name])
    assert (c.dropout, c.bias) == (0.0, True)
    assert GPTConfig.from_name(name, dropout=0.1, block_size=256).dropout == 0.1


def test_from_name_rejects_other_names_and_bad_overrides():
    for name in ("gpt1", "gpt3", "GPT2", "llama"):
        with pytest.raises(ValueError, match=f"unknown model '{name}'"):
            GPTConfig.from_name(name)
    with pytest.raises(ValueError, match=r"unknown keys \['heads'\]"):
        GPTConfig.from_name("gpt2", heads=4)
    with pytest.raises(ValueError, match="n_head=7"):
        GPTConfig.from_name("gpt2", n_head=7)


# --- the parts -----------------------------------------------------------------------------------------------------

def test_layer_norm_matches_torch_and_the_formula():
    torch.manual_seed(0)
    x = 2.0 + 3.0 * torch.randn(3, 5, 24)
    ours, ref = LayerNorm(24), torch.nn.LayerNorm(24)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    mu, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, correction=0)
    assert torch.allclose(ours(x), (x - mu) / torch.sqrt(var + 1e-5) * ref.weight + ref.bias, atol=1e-5)
    no_bias = LayerNorm(24, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    assert torch.allclose(no_bias(x), (x - mu) / torch.sqrt(var + 1e-5), atol=1e-5)


@pytest.mark.parametrize("args", [(0,), (-2,), (4.0,), (True,), (4, True, 0.0), (4, True, -1e-5)])
def test_layer_norm_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="LayerNorm"):
        LayerNorm(*args)


def test_mlp_is_gelu_tanh_between_two_linear_maps():
    torch.manual_seed(0)
    mlp = MLP(32)
    x = torch.randn(2, 7, 32)
    expected = mlp.c_proj(F.gelu(mlp.c_fc(x), approximate="tanh"))
    assert torch.equal(mlp(x), expected)
    assert not torch.allclose(mlp(x), mlp.c_proj(F.gelu(mlp.c_fc(x))), atol=0, rtol=0)  # not the exact (erf) form
    assert mlp.c_fc.weight.shape == (128, 32) and mlp.c_proj.weight.shape == (32, 128)


def test_gelu_is_the_tanh_form_with_its_derivative():
    x = (torch.randn(300, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(gelu, (x,)) and torch.autograd.gradgradcheck(gelu, (x,))
    formula = 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    (from_formula,) = torch.autograd.grad(formula.sum(), x)
    (ours,) = torch.autograd.grad(gelu(x).sum(), x)
    assert torch.allclose(gelu(x), formula, atol=1e-12, rtol=0) and torch.allclose(ours, from_formula, atol=1e-12, rtol=0)


def test_gelu_saturates_cleanly():
    big = torch.tensor([-1e15, -1e6, -50.0, 50.0, 1e6, 1e15], requires_grad=True)
    out = gelu(big)
    out.sum().backward()
    assert torch.equal(out.detach(), torch.tensor([0.0, 0.0, 0.0, 50.0, 1e6, 1e15]))
    assert torch.equal(big.grad, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))


def test_gelu_under_bfloat16_autocast():
    torch.manual_seed(0)
    mlp = MLP(16)
    x = torch.randn(3, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mlp(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and all(torch.isfinite(p.grad).all() for p in mlp.parameters())


def test_block_is_pre_ln_with_residuals():
    torch.manual_seed(0)
    block = Block(SMALL).eval()
    x = torch.randn(2, 9, 64)
    h = x + block.attn(block.ln_1(x))
    assert torch.allclose(block(x), h + block.mlp(block.ln_2(h)), atol=1e-6)


# --- parameter counts -------------------------------------------------------------------------------------------

@SETTINGS
@given(configs)
def test_num_params_is_the_sum_of_numel_and_the_formula(config):
    with torch.device("meta"):
        model = GPT(config)
    n = sum(p.numel() for p in model.parameters())
    formula = param_count(vocab_size=config.vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                          n_embd=config.n_embd, n_head=config.n_head, bias=config.bias)
    assert model.num_params() == n == formula.total
    assert model.num_params(non_embedding=True) == n - config.block_size * config.n_embd
    assert model.num_params(non_embedding=True) == formula.non_embedding + formula.token_embedding


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_gpt2_sizes_on_meta(name):
    with torch.device("meta"):
        model = GPT(GPTConfig.from_name(name))
    assert model.num_params() == RELEASED[name]


def test_the_head_is_tied_to_the_token_embedding():
    model = _model()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.bias is None
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names
    copy = GPT(SMALL)
    copy.load_state_dict(model.state_dict())
    assert copy.lm_head.weight is copy.transformer.wte.weight
    assert torch.equal(copy.lm_head.weight, model.transformer.wte.weight)
    model.double()
    assert model.lm_head.weight is model.transformer.wte.weight


# --- initialisation -----------------------------------------------------------------------------------------------

def test_gpt2_initialisation():
    config = GPTConfig(vocab_size=1000, block_size=256, n_layer=8, n_head=8, n_embd=256)
    model = _model(config)
    residual = 0.02 / math.sqrt(2 * config.n_layer)
    seen_proj = 0
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name
        elif "ln_" in name:
            assert (p == 1).all(), name
        else:
            std = residual if name.endswith("c_proj.weight") else 0.02
            seen_proj += name.endswith("c_proj.weight")
            n = p.numel()
            # the sample standard deviation of n normal draws is within 5 standard errors (std / sqrt(2n))
            assert abs(p.std().item() - std) < 5 * std / math.sqrt(2 * n), name
            assert abs(p.mean().item()) < 5 * std / math.sqrt(n), name
    assert seen_proj == 2 * config.n_layer


def test_loss_at_initialisation_is_close_to_log_vocab():
    config = GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = _model(config)
    x, y = _tokens(config, 16, 64, seed=1), _tokens(config, 16, 64, seed=2)
    with torch.no_grad():
        _, loss = model(x, y)
    assert abs(loss.item() - math.log(config.vocab_size)) < 0.1


# --- forward ------------------------------------------------------------------------------------------------------

def test_forward_shapes_and_the_loss_is_mean_cross_entropy_with_ignore_index():
    model = _model()
    x, y = _tokens(SMALL, 3, 20, 1), _tokens(SMALL, 3, 20, 2)
    logits, none = model(x)
    assert logits.shape == (3, 20, SMALL.vocab_size) and none is None
    logits, loss = model(x, y)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, SMALL.vocab_size), y.reshape(-1)))
    y_masked = y.clone()
    y_masked[:, :5] = -1
    _, masked = model(x, y_masked)
    expected = F.cross_entropy(logits[:, 5:].reshape(-1, SMALL.vocab_size), y[:, 5:].reshape(-1))
    assert torch.allclose(masked, expected, atol=1e-6)
    int32, _ = model(x.int())
    assert torch.equal(int32, logits)
    full_context, _ = model(_tokens(SMALL, 1, SMALL.block_size))
    assert full_context.shape == (1, SMALL.block_size, SMALL.vocab_size)


def test_forward_is_causal():
    model = _model()
    x = _tokens(SMALL, 2, 24)
    changed = x.clone()
    changed[:, 16:] = (x[:, 16:] + 1) % SMALL.vocab_size
    with torch.no_grad():
        a, b = model(x)[0], model(changed)[0]
    assert torch.allclose(a[:, :16], b[:, :16], atol=1e-5)
    assert (a[:, 16:] - b[:, 16:]).abs().amax(dim=(0, 2)).min() > 1e-4


def test_the_same_seed_gives_the_same_model_and_logits():
    x = _tokens(SMALL, 2, 16)
    a, b = _model(seed=3), _model(seed=3)
    for (n1, p1), (n2, p2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    with torch.no_grad():
        assert torch.equal(a(x)[0], b(x)[0])
        assert torch.equal(a(x)[0], a(x)[0])
    assert not torch.equal(_model(seed=4).transformer.wte.weight, a.transformer.wte.weight)


def test_dropout_is_active_in_training_mode_only():
    config = GPTConfig(**{**SMALL.to_dict(), "dropout": 0.2})
    model = _model(config)
    x = _tokens(config, 2, 16)
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])  # eval mode
        model.train()
        assert not torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize("bias", [True, False])
def test_gradient_reaches_every_parameter(bias):
    config = GPTConfig(**{**SMALL.to_dict(), "bias": bias})
    model = _model(config).train()
    _, loss = model(_tokens(config, 4, SMALL.block_size, 1), _tokens(config, 4, SMALL.block_size, 2))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bias", [True, False])
def test_cached_token_by_token_logits_equal_the_full_forward(bias):
    config = GPTConfig(**{**SMALL.to_dict(), "bias": bias})
    model = _model(config)
    x = _tokens(config, 3, config.block_size)
    with torch.no_grad():
        full, _ = model(x)
        cache = model.new_cache(batch_size=3)
        stepwise = torch.cat([model(x[:, t:t + 1], cache=cache)[0] for t in range(config.block_size)], dim=1)
        assert (stepwise - full).abs().max() < 1e-5
        assert all(c.length == config.block_size for c in cache)
        cache = model.new_cache(3, max_len=20)
        first, _ = model(x[:, :12], cache=cache)  # a prompt at once, then chunks of different sizes
        second, _ = model(x[:, 12:13], cache=cache)
        third, _ = model(x[:, 13:20], cache=cache)
        assert (torch.cat([first, second, third], dim=1) - full[:, :20]).abs().max() < 1e-5


def test_new_cache_shapes_and_checks():
    model = _model()
    cache = model.new_cache(2)
    assert len(cache) == SMALL.n_layer and all(c.max_len == SMALL.block_size and c.length == 0 for c in cache)
    assert model.new_cache(2, max_len=5)[0].max_len == 5
    for bad in (0, SMALL.block_size + 1, 3.0, True):
        with pytest.raises(ValueError, match=f"max_len must be an int in \\[1, block_size={SMALL.block_size}\\]"):
            model.new_cache(2, max_len=bad)


# --- bad input ----------------------------------------------------------------------------------------------------

def test_token_ids_out_of_range_are_named():
    model = _model()
    x = _tokens(SMALL, 2, 8)
    x[1, 5] = SMALL.vocab_size
    with pytest.raises(ValueError, match=r"token id 65 at \(batch, position\) \(1, 5\) is outside the vocabulary "
                                         r"\[0, vocab_size=65\)"):
        model(x)
    x[1, 5] = -2
    with pytest.raises(ValueError, match=r"token id -2 at \(batch, position\) \(1, 5\)"):
        model(x)


@pytest.mark.parametrize("idx", [torch.zeros(4, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long),
                                 torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), [[1, 2]]])
def test_idx_must_be_a_2d_integer_tensor(idx):
    with pytest.raises(ValueError, match="idx must be a 2-D tensor"):
        _model()(idx)


def test_empty_idx_is_rejected():
    with pytest.raises(ValueError, match=r"at least one token, got shape \(2, 0\)"):
        _model()(torch.zeros(2, 0, dtype=torch.long))


def test_too_long_sequences_are_named():
    model = _model()
    with pytest.raises(ValueError, match="sequence of 33 tokens is longer than the context block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with torch.no_grad():
        cache = model.new_cache(1)
        model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match=r"sequence of 34 tokens \(30 cached \+ 4 new\) is longer than the "
                                             r"context block_size=32"):
            model(torch.zeros(1, 4, dtype=torch.long), cache=cache)


def test_hidden_states_are_what_the_head_reads_and_are_checked_like_forward():
    model = _model()
    x = _tokens(SMALL, 2, 9)
    with torch.no_grad():
        h = model.hidden_states(x)
        assert h.shape == (2, 9, SMALL.n_embd)
        assert torch.equal(model.lm_head(h), model(x)[0])
        cache = model.new_cache(2)  # with a cache: the same features, one position at a time
        stepwise = torch.cat([model.hidden_states(x[:, t:t + 1], cache=cache) for t in range(9)], dim=1)
        assert (stepwise - h).abs().max() < 1e-5
    bad = x.clone()
    bad[1, 3] = SMALL.vocab_size
    with pytest.raises(ValueError, match=r"token id 65 at \(batch, position\) \(1, 3\) is outside"):
        model.hidden_states(bad)
    with pytest.raises(ValueError, match="longer than the context block_size=32"):
        model.hidden_states(_tokens(SMALL, 1, 33))


def test_features_without_checks_and_check_ids_off():
    model = _model()
    x = _tokens(SMALL, 2, 9)
    with torch.no_grad():
        h = model.features(x)
        assert torch.equal(model.features(x, check=False), h)
        cache = model.new_cache(2)
        model.features(x[:, :5], cache=cache, check=False)  # positions continue after the cache
        rest = model.features(x[:, 5:], cache=cache, check=False)
        assert cache[0].length == 9 and (rest - h[:, 5:]).abs().max() < 1e-5
    bad = x.clone()
    bad[0, 2] = SMALL.vocab_size
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(bad)
    model.check_ids = False  # no min/max (and no device sync): the embedding itself fails
    with pytest.raises(IndexError):
        model(bad)
    with pytest.raises(ValueError, match="longer than the context"):  # the shape checks stay
        model(_tokens(SMALL, 1, 33))


def test_a_bad_target_leaves_the_cache_untouched():
    model = _model()
    x = _tokens(SMALL, 1, 4)
    cache = model.new_cache(1)
    with torch.no_grad(), pytest.raises(ValueError, match="targets must be"):
        model(x, x[:, :2], cache=cache)
    assert cache[0].length == 0


def test_targets_must_match_idx():
    model = _model()
    x = _tokens(SMALL, 2, 8)
    with pytest.raises(ValueError, match=r"targets must be token ids \(int64 or int32\) of the shape of idx "
                                         r"\(2, 8\), got shape \(2, 7\)"):
        model(x, x[:, :7])
    with pytest.raises(ValueError, match=r"of the shape of idx \(2, 8\), got list"):
        model(x, x.tolist())
    with pytest.raises(ValueError, match=r"got shape \(2, 8\) and dtype torch.float32"):
        model(x, x.float())


def test_wrong_number_of_caches():
    model = _model()
    with torch.no_grad(), pytest.raises(ValueError, match=r"one KVCache per block \(n_layer=3\), got 2"):
        model(_tokens(SMALL, 1, 1), cache=model.new_cache(1)[:2])


def test_gpt_needs_a_config():
    with pytest.raises(ValueError, match="expected a GPTConfig, got dict"):
        GPT(SMALL.to_dict())


# --- Hugging Face's GPT-2 -------------------------------------------------------------------------------------------

def _hf_twin(config: GPTConfig):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_layer=config.n_layer, n_head=config.n_head,
        n_embd=config.n_embd, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=config.vocab_size - 1, eos_token_id=config.vocab_size - 1)
    torch.manual_seed(1)
    return transformers.GPT2LMHeadModel(hf_config).eval()


def test_state_dict_matches_hugging_face_gpt2_names_and_shapes():
    hf, ours = _hf_twin(SMALL), _model()
    hf_state, our_state = hf.state_dict(), ours.state_dict()
    assert set(hf_state) == set(our_state)
    for name, tensor in our_state.items():
        expected = hf_state[name].T if name.endswith(CONV1D) else hf_state[name]
        assert tensor.shape == expected.shape, name
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())


def test_hugging_face_weights_give_the_same_logits():
    hf, ours = _hf_twin(SMALL), _model()
    with torch.no_grad():
        for name, tensor in hf.state_dict().items():
            ours.state_dict()[name].copy_(tensor.T if name.endswith(CONV1D) else tensor)
        x = _tokens(SMALL, 2, SMALL.block_size)
        expected = hf(x).logits
        logits, _ = ours(x)
    assert (logits - expected).abs().max() < 1e-4
