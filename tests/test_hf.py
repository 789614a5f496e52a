"""gptlib.hf: our GPT and tokenizer to and from Hugging Face Transformers' GPT-2 format (offline)."""

import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never touch the network
transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, pipeline  # noqa: E402

from gptlib.data import shakespeare_split  # noqa: E402
from gptlib.hf import (  # noqa: E402
    CONV1D_WEIGHTS, bytes_to_unicode, from_hf, from_hf_state_dict, hf_tokenizer_files, hub_reachable,
    read_hf_tokenizer, to_hf, to_hf_state_dict, token_string,
)
from gptlib.model import GPT, GPTConfig  # noqa: E402
from gptlib.tokenizer import ENDOFTEXT, BPETokenizer, CharTokenizer  # noqa: E402

SMALL = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture(scope="module")
def texts():
    train, val = shakespeare_split()
    return train, val


@pytest.fixture(scope="module")
def bpe(texts):
    """A tokenizer of 512 ids (255 merges + <|endoftext|>) learnt from the start of the training plays."""
    return BPETokenizer.train(texts[0][:100_000], 512)


@pytest.fixture(scope="module")
def small_bpe(texts):
    return BPETokenizer.train(texts[0][:50_000], SMALL.vocab_size)


def _model(config=SMALL, seed=0):
    torch.manual_seed(seed)
    return GPT(config).eval()


def _hf_model(config=SMALL, seed=0, **kwargs):
    torch.manual_seed(seed)
    hf_config = GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_layer=config.n_layer,
                           n_head=config.n_head, n_embd=config.n_embd, activation_function="gelu_new",
                           bos_token_id=config.vocab_size - 1, eos_token_id=config.vocab_size - 1, **kwargs)
    return GPT2LMHeadModel(hf_config).eval()


def _ids(config=SMALL, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, config.block_size), generator=g)


def _gap(ours, theirs, idx):
    with torch.no_grad():
        return (ours(idx)[0] - theirs(idx).logits).abs().max().item()


def _gpt2_style_folder(path, hf, tokenizer, gpt2_byte_order=False):
    """`hf` saved with save_pretrained plus `tokenizer`'s files; optionally with GPT-2's own byte ids."""
    hf.save_pretrained(path)
    files = hf_tokenizer_files(tokenizer, hf.config.n_positions)
    if gpt2_byte_order:
        table = bytes_to_unicode()
        order = sorted(range(256), key=lambda b: ord(table[b]))  # printable bytes first, as GPT-2 numbers them
        vocab = json.loads(files["vocab.json"])
        vocab = {s: i for s, i in vocab.items() if i >= 256} | {table[b]: i for i, b in enumerate(order)}
        files["vocab.json"] = json.dumps(vocab, ensure_ascii=False)
        del files["tokenizer.json"]  # numbered our way; vocab.json + merges.txt are read instead
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ weights


def test_state_dict_conversion_transposes_the_conv1d_weights_and_round_trips():
    ours = _model()
    hf_state = to_hf_state_dict(ours)
    assert "lm_head.weight" not in hf_state
    for name, t in ours.state_dict().items():
        if name == "lm_head.weight":
            continue
        expected = t.T if name.endswith(CONV1D_WEIGHTS) else t
        assert torch.equal(hf_state[name], expected), name
    back = from_hf_state_dict(hf_state, SMALL)
    assert back.keys() == ours.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())


def test_hugging_face_names_without_the_transformer_prefix_are_read():
    hf = _hf_model()
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    ours = GPT(SMALL).eval()
    ours.load_state_dict(from_hf_state_dict(state, SMALL))
    assert _gap(ours, hf, _ids()) < 1e-5


def test_random_weights_give_the_same_logits_both_ways(tmp_path, small_bpe):
    ours = _model()
    hf = GPT2LMHeadModel.from_pretrained(to_hf(ours, small_bpe, tmp_path / "out")).eval()
    assert hf.config.activation_function == "gelu_pytorch_tanh"  # F.gelu's tanh form, the kernel ours calls
    assert _gap(ours, hf, _ids()) == 0  # the same operations in the same order: bit for bit
    theirs = _hf_model(seed=1)
    back, tok = from_hf(_gpt2_style_folder(tmp_path / "in", theirs, small_bpe))
    assert tok.merges == small_bpe.merges
    assert _gap(back, theirs, _ids(seed=1)) < 1e-5


def test_trained_weights_give_the_same_logits_both_ways(tmp_path, texts, bpe):
    config = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64)
    model = GPT(config)
    torch.manual_seed(0)
    ids = torch.tensor(bpe.encode(texts[0][:50_000]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        starts = torch.randint(0, len(ids) - 65, (4,))
        x = torch.stack([ids[s:s + 64] for s in starts])
        y = torch.stack([ids[s + 1:s + 65] for s in starts])
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 5.6  # it learnt something: ln(512) = 6.24 at the start
    val = torch.tensor(bpe.encode(texts[1][:10_000]))[: 4 * 64].view(4, 64)
    hf = GPT2LMHeadModel.from_pretrained(to_hf(model, bpe, tmp_path / "m")).eval()
    assert _gap(model, hf, val) < 1e-5
    back, _ = from_hf(tmp_path / "m")
    assert _gap(back, hf, val) < 1e-5


@torch.no_grad()
def _greedy(model, idx, n):
    for _ in range(n):
        idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_greedy_continuations_are_identical_for_100_tokens(tmp_path, bpe):
    # the book's model has a context of 64, so the 100-token test runs on a random model with 128
    model = _model(GPTConfig(vocab_size=512, block_size=128, n_layer=2, n_head=4, n_embd=64), seed=3)
    hf = GPT2LMHeadModel.from_pretrained(to_hf(model, bpe, tmp_path / "g")).eval()
    prompt = torch.tensor([bpe.encode("To be, or not to be")])
    ours = _greedy(model, prompt, 100)
    theirs = hf.generate(prompt, max_new_tokens=100, do_sample=False, eos_token_id=None)
    assert ours.shape[1] == prompt.shape[1] + 100
    assert torch.equal(ours, theirs)


# ------------------------------------------------------------------ tokenizer


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert token_string(" the".encode()) == "Ġthe"


def test_token_ids_agree_with_transformers_and_tiktoken_on_the_validation_text(tmp_path, texts, bpe):
    to_hf(_model(GPTConfig(vocab_size=512, block_size=64, n_layer=1, n_head=2, n_embd=32)), bpe, tmp_path / "t")
    fast = GPT2TokenizerFast.from_pretrained(tmp_path / "t")
    val = texts[1]
    ours = bpe.encode(val)
    assert ours == fast(val)["input_ids"] == bpe.to_tiktoken().encode(val)
    assert fast.decode(ours) == val
    assert fast.eos_token == ENDOFTEXT and fast.eos_token_id == bpe.special_tokens[ENDOFTEXT]


@pytest.fixture(scope="module")
def fast_small(tmp_path_factory, small_bpe):
    path = tmp_path_factory.mktemp("tok")
    to_hf(_model(), small_bpe, path / "m")
    return GPT2TokenizerFast.from_pretrained(path / "m")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("thea nosr'\nTHE,.;:!?0123 \téü€😀ß-")), max_size=80))
def test_any_text_gets_the_same_ids_from_transformers(fast_small, small_bpe, text):
    assert fast_small(text)["input_ids"] == small_bpe.encode(text)


def test_pipeline_generates_from_the_exported_folder(tmp_path, small_bpe):
    model = _model()
    path = to_hf(model, small_bpe, tmp_path / "p")
    generator = pipeline("text-generation", model=str(path))
    text = generator("the king", do_sample=False, max_new_tokens=10)[0]["generated_text"]
    expected = _greedy(model, torch.tensor([small_bpe.encode("the king")]), 10)[0]
    assert text == small_bpe.decode(expected)


def test_round_trip_gives_identical_weights_and_tokenizer(tmp_path, texts):
    tok = BPETokenizer.train(texts[0][:20_000], 300, special_tokens=(ENDOFTEXT, "<|pad|>"))
    model = _model(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    back, tok2 = from_hf(to_hf(model, tok, tmp_path / "r"))
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert back.config == model.config and not back.training
    assert tok2.merges == tok.merges and tok2.special_tokens == tok.special_tokens and tok2.pattern == tok.pattern
    fast = GPT2TokenizerFast.from_pretrained(tmp_path / "r")
    assert fast("a<|pad|>b")["input_ids"] == tok.encode("a<|pad|>b", allowed_special="all")


def test_a_folder_that_transformers_saved_itself_reads_back(tmp_path, texts):
    """Transformers 5's save_pretrained writes tokenizer.json (no vocab.json/merges.txt); from_hf reads it."""
    tok = BPETokenizer.train(texts[0][:20_000], 300, special_tokens=(ENDOFTEXT,))
    model = _model(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16))
    path = to_hf(model, tok, tmp_path / "ours")
    GPT2LMHeadModel.from_pretrained(path).save_pretrained(tmp_path / "theirs")
    GPT2TokenizerFast.from_pretrained(path).save_pretrained(tmp_path / "theirs")
    if not (tmp_path / "theirs" / "vocab.json").is_file():
        assert (tmp_path / "theirs" / "tokenizer.json").is_file()
    back, tok2 = from_hf(tmp_path / "theirs")
    a, b = model.state_dict(), back.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tok2.merges == tok.merges and tok2.special_tokens == tok.special_tokens
    text = texts[1][:2000]
    assert tok2.encode(text) == tok.encode(text)


def test_a_tokenizer_that_adds_a_prefix_space_is_refused(exported):
    cfg = json.loads((exported / "tokenizer_config.json").read_text())
    (exported / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_prefix_space": True}))
    with pytest.raises(ValueError, match="add_prefix_space=True"):
        from_hf(exported)


def test_a_tokenizer_json_of_another_kind_is_refused(exported):
    for name in ("vocab.json", "merges.txt"):
        (exported / name).unlink()
    (exported / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(ValueError, match="'WordPiece' model, not GPT-2's byte-level BPE"):
        from_hf(exported)
    (exported / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no vocab.json or merges.txt and no tokenizer.json"):
        from_hf(exported)


def test_to_hf_replaces_an_earlier_export(tmp_path, small_bpe):
    to_hf(_model(seed=0), small_bpe, tmp_path / "x")
    second = _model(seed=1)
    to_hf(second, small_bpe, tmp_path / "x")
    back, _ = from_hf(tmp_path / "x")
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in second.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary folders left behind


def test_a_gpt2_numbered_vocabulary_reorders_the_embedding(tmp_path, small_bpe):
    theirs = _hf_model(seed=2)
    path = _gpt2_style_folder(tmp_path / "g", theirs, small_bpe, gpt2_byte_order=True)
    ours, tok = from_hf(path)
    hf_id = read_hf_tokenizer(path)[1]
    assert hf_id != list(range(SMALL.vocab_size)) and sorted(hf_id) == list(range(SMALL.vocab_size))
    fast = GPT2TokenizerFast.from_pretrained(path)
    text = "Wherefore art thou Romeo? 1599!"
    our_ids, their_ids = tok.encode(text), fast(text)["input_ids"]
    assert [hf_id[i] for i in our_ids] == their_ids and our_ids != their_ids
    with torch.no_grad():
        a = ours(torch.tensor([our_ids]))[0]
        b = theirs(torch.tensor([their_ids])).logits[..., hf_id]
    assert (a - b).abs().max() < 1e-5


def test_a_bias_free_model_is_exported_with_zero_biases(tmp_path, small_bpe):
    model = _model(GPTConfig(**{**SMALL.to_dict(), "bias": False}))
    hf = GPT2LMHeadModel.from_pretrained(to_hf(model, small_bpe, tmp_path / "b")).eval()
    assert _gap(model, hf, _ids()) < 1e-5
    back, _ = from_hf(tmp_path / "b")
    assert back.config.bias and _gap(back, hf, _ids()) < 1e-5


# ------------------------------------------------------------------ the Hub, offline


def test_hub_names_offline_without_a_cache_say_so(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert hub_reachable() is False
    with pytest.raises(FileNotFoundError, match="'gpt2' is not a local folder.*offline"):
        from_hf("gpt2")
    with pytest.raises(FileNotFoundError, match="no folder"):
        from_hf(tmp_path / "does-not-exist")


# ------------------------------------------------------------------ bad input


@pytest.fixture
def exported(tmp_path, small_bpe):
    return to_hf(_model(), small_bpe, tmp_path / "ok")


def _edit_config(path, **fields):
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **fields}))


@pytest.mark.parametrize("fields, words", [
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "'bert' model"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "'llama' model"),
    ({"activation_function": "relu"}, "activation_function 'relu'"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
    ({"n_inner": 100}, "n_inner 100"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings"),
    ({"n_head": 5}, "not divisible"),
])
def test_from_hf_refuses_other_architectures_and_variants(exported, fields, words):
    _edit_config(exported, **fields)
    with pytest.raises(ValueError, match=words):
        from_hf(exported)


def test_from_hf_names_missing_or_unreadable_weights(exported):
    (exported / "model.safetensors").rename(exported / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="no model.safetensors.*pytorch_model.bin.*unpickler"):
        from_hf(exported)
    (exported / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="weights are missing"):
        from_hf(exported)
    (exported / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read the weights"):
        from_hf(exported)


def test_from_hf_names_wrong_tensors(tmp_path, small_bpe):
    from safetensors.torch import load_file, save_file

    path = to_hf(_model(), small_bpe, tmp_path / "w")
    state = load_file(path / "model.safetensors")
    wrong = dict(state, **{"transformer.h.0.mlp.c_fc.weight": torch.zeros(4, 4)})
    save_file(wrong, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"transformer.h.0.mlp.c_fc.weight has shape \(4, 4\)"):
        from_hf(path)
    missing = {k: v for k, v in state.items() if k != "transformer.ln_f.bias"}
    save_file(missing, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing 1 tensors.*ln_f.bias"):
        from_hf(path)
    untied = dict(state, **{"lm_head.weight": torch.randn_like(state["transformer.wte.weight"])})
    save_file(untied, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="untied"):
        from_hf(path)


def test_from_hf_names_a_vocabulary_that_does_not_match(exported, small_bpe):
    _edit_config(exported, vocab_size=1024)
    with pytest.raises(ValueError, match="300 tokens but config.json says vocab_size 1024"):
        from_hf(exported)


def test_from_hf_names_broken_tokenizer_files(exported):
    vocab = json.loads((exported / "vocab.json").read_text(encoding="utf-8"))
    merges = (exported / "merges.txt").read_text(encoding="utf-8")
    (exported / "tokenizer.json").unlink()  # the classic files alone
    (exported / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no merges.txt"):
        from_hf(exported)
    (exported / "merges.txt").write_text(merges + "Ġzzq Ġzzq\n", encoding="utf-8")
    with pytest.raises(ValueError, match="uses a token that no earlier line makes"):
        from_hf(exported)
    (exported / "merges.txt").write_text(merges, encoding="utf-8")
    del vocab[bytes_to_unicode()[ord("x")]]
    (exported / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json must give the ids 0..298|no token for the byte 120"):
        from_hf(exported)
    vocab["[MASK]"] = max(vocab.values()) + 1
    vocab["x"] = ord("x")
    vocab = {s: i for s, i in vocab.items()}
    (exported / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(ValueError, match=r"no merge makes and that are not special tokens, e.g. \['\[MASK\]'\]"):
        from_hf(exported)


def test_from_hf_refuses_a_file_and_a_folder_without_config(tmp_path, exported):
    with pytest.raises(ValueError, match="is a file"):
        from_hf(exported / "config.json")
    (exported / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_hf(exported)


def test_to_hf_refuses_what_gpt2s_format_cannot_hold(tmp_path, texts, small_bpe):
    model = _model()
    with pytest.raises(ValueError, match="CharTokenizer.*byte-level"):
        to_hf(model, CharTokenizer.from_text(texts[1]), tmp_path / "c")
    other_pattern = BPETokenizer(small_bpe.merges, (ENDOFTEXT,), pattern=r"\S+|\s+")
    with pytest.raises(ValueError, match="own pattern"):
        to_hf(model, other_pattern, tmp_path / "c")
    no_eot = BPETokenizer(small_bpe.merges, ("<|pad|>",))
    with pytest.raises(ValueError, match="no '<\\|endoftext\\|>' token"):
        to_hf(model, no_eot, tmp_path / "c")
    with pytest.raises(ValueError, match="300 tokens.*512"):
        to_hf(_model(GPTConfig(**{**SMALL.to_dict(), "vocab_size": 512})), small_bpe, tmp_path / "c")
    with pytest.raises(TypeError, match="GPT"):
        to_hf(_hf_model(), small_bpe, tmp_path / "c")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="non-empty folder without config.json"):
        to_hf(model, small_bpe, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------ the folder as users meet it


@pytest.fixture(scope="module")
def folder_512(tmp_path_factory, bpe):
    """A random model of the book's shape (vocabulary 512, context 64) exported with to_hf."""
    model = _model(GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64), seed=5)
    return model, to_hf(model, bpe, tmp_path_factory.mktemp("auto") / "m")


def test_the_auto_classes_load_the_folder_as_gpt2(folder_512):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, path = folder_512
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(tok).__name__ == "GPT2Tokenizer" and isinstance(model, GPT2LMHeadModel)
    assert tok.pad_token == tok.eos_token == ENDOFTEXT and tok.pad_token_id == 511


def test_tokenizer_json_alone_gives_gptlibs_ids_on_the_validation_text(tmp_path, folder_512, texts, bpe):
    """tokenizer.json, as the tokenizers library (and so TGI, transformers.js, ...) reads it."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    _, path = folder_512
    val = texts[1]
    ours = bpe.encode(val)
    assert Tokenizer.from_file(str(path / "tokenizer.json")).encode(val).ids == ours
    only_json = tmp_path / "json-only"
    only_json.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (only_json / name).write_bytes((path / name).read_bytes())
    tok = AutoTokenizer.from_pretrained(only_json)
    assert tok(val)["input_ids"] == ours and tok.decode(ours) == val
    assert tok("the end<|endoftext|>")["input_ids"][-1] == 511


def test_padding_batches_and_left_padded_generate(folder_512, bpe):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, path = folder_512
    tok = AutoTokenizer.from_pretrained(path)
    prompts = ["a b", "ROMEO:\nBut soft, what light"]
    batch = tok(prompts, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, len(bpe.encode(prompts[1])))
    assert batch["attention_mask"][0].tolist() == [1] * len(bpe.encode(prompts[0])) + [0] * (
        batch["input_ids"].shape[1] - len(bpe.encode(prompts[0])))
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    tok.padding_side = "left"
    inputs = tok(prompts, padding=True, return_tensors="pt")
    out = hf.generate(**inputs, max_new_tokens=12, do_sample=False)
    for p, row in zip(prompts, out):
        alone = _greedy(model, torch.tensor([bpe.encode(p)]), 12)[0]
        assert row[-12:].tolist() == alone[-12:].tolist()


def test_the_pipeline_batches(folder_512, bpe):
    model, path = folder_512
    generator = pipeline("text-generation", model=str(path))
    prompts = ["the king", "ROMEO:\nBut soft, what light"]
    batched = generator(prompts, batch_size=2, do_sample=False, max_new_tokens=8)
    for p, result in zip(prompts, batched):
        expected = _greedy(model, torch.tensor([bpe.encode(p)]), 8)[0]
        assert result[0]["generated_text"] == bpe.decode(expected)


def test_the_labels_loss_is_gptlibs_loss(folder_512, texts, bpe):
    model, path = folder_512
    hf = GPT2LMHeadModel.from_pretrained(path).eval()
    ids = torch.tensor([bpe.encode(texts[1][:2000])[:64]])
    with torch.no_grad():
        ours = model(ids[:, :-1], ids[:, 1:])[1]
        theirs = hf(ids, labels=ids).loss
    assert abs(ours.item() - theirs.item()) < 1e-5 * max(1.0, ours.item())


def test_sdpa_attention_agrees_exactly_and_eager_to_a_few_ulp(folder_512, texts, bpe):
    model, path = folder_512
    windows = torch.tensor(bpe.encode(texts[1][:20_000])[: 4 * 64]).view(4, 64)
    sdpa = GPT2LMHeadModel.from_pretrained(path, attn_implementation="sdpa").eval()
    eager = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        scale = model(windows)[0].abs().max().item()
    ulp = torch.finfo(torch.float32).eps * scale
    assert _gap(model, sdpa, windows) == 0.0
    assert _gap(model, eager, windows) < 16 * ulp


def test_an_added_token_is_kept_or_refused(tmp_path, folder_512):
    """A token added by Transformers (a new pad token, say) is not silently dropped."""
    from transformers import AutoTokenizer

    _, path = folder_512
    tok = AutoTokenizer.from_pretrained(path)
    hf = GPT2LMHeadModel.from_pretrained(path)
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    assert tok.convert_tokens_to_ids("<|pad|>") == 512
    for name in ("same-model", "resized"):
        tok.save_pretrained(tmp_path / name)
    hf.save_pretrained(tmp_path / "same-model")
    with pytest.raises(ValueError, match="513 tokens but config.json says vocab_size 512"):
        from_hf(tmp_path / "same-model")
    hf.resize_token_embeddings(513, mean_resizing=False)
    hf.save_pretrained(tmp_path / "resized")
    back, back_tok = from_hf(tmp_path / "resized")
    assert back_tok.special_tokens == {ENDOFTEXT: 511, "<|pad|>": 512}
    assert back.config.vocab_size == 513


def _hub_layout(path, hf, tokenizer):
    """`hf` and `tokenizer` saved as the Hub's gpt2 repository holds them: tensor names without the
    `transformer.` prefix, the old attention-mask buffers, GPT-2's byte order in vocab.json and
    tokenizer.json, a `#version` line in merges.txt, and <|endoftext|> as an added token."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    path.mkdir(parents=True)
    _gpt2_style_folder(path, hf, tokenizer, gpt2_byte_order=True)
    T = hf.config.n_positions
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items()
             if k != "lm_head.weight"}
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    assert (path / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    data = json.loads(hf_tokenizer_files(tokenizer, T)["tokenizer.json"])
    data["model"]["vocab"] = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
    assert Tokenizer.from_str(json.dumps(data)).get_vocab()["!"] == 0
    assert [t["content"] for t in data["added_tokens"]] == [ENDOFTEXT]
    (path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_hub_model_name_is_read_from_the_cache_offline(tmp_path, monkeypatch, small_bpe):
    """from_hf("gpt2")'s path through huggingface_hub, on a small stand-in placed in its cache."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from transformers import AutoTokenizer

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--gpt2"
    theirs = _hf_model(seed=4)
    snapshot = _hub_layout(repo / "snapshots" / commit, theirs, small_bpe)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    ours, tok = from_hf("gpt2")
    assert tok.merges == small_bpe.merges and tok.special_tokens == small_bpe.special_tokens
    fast = AutoTokenizer.from_pretrained(snapshot)
    text = "Wherefore art thou Romeo? 1599!"
    hf_id = read_hf_tokenizer(snapshot)[1]
    our_ids, their_ids = tok.encode(text), fast(text)["input_ids"]
    assert [hf_id[i] for i in our_ids] == their_ids and fast("!")["input_ids"] == [0]
    with torch.no_grad():
        a = ours(torch.tensor([our_ids]))[0]
        b = theirs(torch.tensor([their_ids])).logits[..., hf_id]
    assert (a - b).abs().max() < 1e-5


# ------------------------------------------------------------------ 4.3's Keras port


def test_the_keras_port_of_the_attention_layer_computes_ours(monkeypatch):
    """The Keras 3 code printed in 03-tools.ipynb, run on Keras' PyTorch backend with our weights."""
    import re
    from pathlib import Path

    if os.environ.get("KERAS_BACKEND", "torch") != "torch":
        pytest.skip("the check runs on Keras' PyTorch backend")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from gptlib.attention import CausalSelfAttention

    nb = Path(__file__).parents[1] / "chapters" / "04-practice" / "03-tools.ipynb"
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    blocks = [b for c in cells if c["cell_type"] == "markdown"
              for b in re.findall(r"```python\n(.*?)```", "".join(c["source"]), re.DOTALL)
              if "class CausalSelfAttention(layers.Layer)" in b]
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], "03-tools.ipynb (Keras port)", "exec"), namespace)
    torch.manual_seed(0)
    ours = CausalSelfAttention(32, 4, fused=False).eval()
    x = torch.randn(2, 7, 32)
    theirs = namespace["CausalSelfAttention"](32, 4)
    theirs(x.numpy())  # builds the Dense layers
    for name in ("c_attn", "c_proj"):
        lin = getattr(ours, name)
        getattr(theirs, name).set_weights([lin.weight.detach().T.numpy(), lin.bias.detach().numpy()])
    with torch.no_grad():
        want = ours(x)
    got = torch.as_tensor(keras.ops.convert_to_numpy(theirs(x.numpy())))
    # float32 results of the same sums in another order: a few epsilons of the largest term
    assert (got - want).abs().max() <= 64 * torch.finfo(torch.float32).eps * want.abs().max()
    with pytest.raises(ValueError, match="not divisible"):
        namespace["CausalSelfAttention"](30, 4)


def test_hub_reachable_asks_the_endpoint_huggingface_hub_uses(monkeypatch):
    """A mirror (HF_ENDPOINT) counts: here a local web server stands in for it, then a closed port."""
    import http.server
    import socket
    import threading

    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at its import
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *args: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub_reachable(timeout=5.0) is True
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{closed}")
    assert hub_reachable(timeout=2.0) is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
