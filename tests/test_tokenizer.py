"""Tests of gptlib.tokenizer: the fast trainer against the plain one, encoding against tiktoken,
round trips, special tokens, errors, and saving/loading."""

import json
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlib.data import shakespeare_split
from gptlib.tokenizer import (
    ENDOFTEXT,
    GPT2_PATTERN,
    BPETokenizer,
    CharTokenizer,
    encode_plain,
    merge_pair,
    pair_counts,
    token_bytes,
    train_plain,
)

# Strings that tokenizers get wrong: emoji (with a zero-width joiner and a skin tone), CJK,
# combining marks, control characters, Windows line ends, non-breaking and other Unicode spaces,
# digits of other scripts, contractions, and the special token's text.
AWKWARD = [
    "", " ", "\n", "\r\n", "\t\t", "a", "  leading", "trailing  ", "I'll've 'tis WE'RE",
    "👩🏽‍💻 🙂🙂", "文字化け、日本語。中文", "e\u0301 n\u0303 \u0301", "\x00\x01\x7f\x1b[0m",
    "line one\r\nline two\r\n", "a\u00a0b\u2003c\u3000d\u2028e", "\u0663\u0664 ١٢٣ 12345", "ﬁ Ⅻ ½",
    "<|endoftext|>", "<|endoftext", "x<|endoftext|>y", "\U0010FFFF\U000E0001",
]


def mixed_text(n: int, seed: int = 0) -> str:
    """A deterministic text mixing scripts, emoji, digits, punctuation and white space, so that the
    tokenizer learns merges of multi-byte characters too."""
    rng = random.Random(seed)
    pieces = ["the", " the", "and", " König", " straße", " Ελλάδα", " мир", " 日本語", " 中文字",
              " 🙂", "👍🏽", " 123", " ٣٤", ",", ".", "!?", "\n", "\r\n", "  ", "\t", "'s", "'ll",
              " e\u0301", " naïve", " café", " ...", " --"]
    weights = [rng.random() for _ in pieces]
    return "".join(rng.choices(pieces, weights=weights, k=n))


@pytest.fixture(scope="module")
def corpus_slice():
    train, val = shakespeare_split()
    return train[:150_000], val[:60_000]


@pytest.fixture(scope="module")
def shakespeare_tok(corpus_slice):
    return BPETokenizer.train(corpus_slice[0], 700)


@pytest.fixture(scope="module")
def mixed_tok():
    return BPETokenizer.train(mixed_text(20_000) + mixed_text(5_000, seed=1), 600)


@pytest.fixture(scope="module")
def encodings(mixed_tok, shakespeare_tok):
    """tiktoken versions of the two tokenizers, built once (keyed by the tokenizer's id())."""
    return {id(tok): tok.to_tiktoken() for tok in (mixed_tok, shakespeare_tok)}


# --- training -----------------------------------------------------------------------------------

def test_pair_counts_and_merge_pair():
    assert pair_counts([[1, 2, 1, 2], [2, 1]]) == {(1, 2): 2, (2, 1): 2}
    assert pair_counts([[5, 5, 5]]) == {(5, 5): 2}
    assert merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]
    assert merge_pair([5, 5, 5, 5], (5, 5), 9) == [9, 9]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 7) == [7, 3, 7]


def test_fast_trainer_learns_the_plain_merges(corpus_slice):
    text = corpus_slice[0][:20_000]
    assert BPETokenizer.train(text, 256 + 40, special_tokens=()).merges == train_plain(text, 256 + 40)
    text = mixed_text(2_000, seed=3)
    assert BPETokenizer.train(text, 256 + 60, special_tokens=()).merges == train_plain(text, 256 + 60)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="aab \nxé🙂", max_size=80), st.integers(256, 300))
def test_fast_trainer_learns_the_plain_merges_on_small_texts(text, vocab_size):
    # small alphabets give long runs and overlapping pairs ("aaa"), the hard cases for incremental counts
    assert BPETokenizer.train(text or "a", vocab_size, special_tokens=()).merges == train_plain(text or "a", vocab_size)


def test_training_is_a_prefix_and_deterministic(corpus_slice):
    text = corpus_slice[0][:60_000]
    big = BPETokenizer.train(text, 500, special_tokens=())
    assert BPETokenizer.train(text, 400, special_tokens=()).merges == big.merges[:144]
    assert BPETokenizer.train(text, 500, special_tokens=()).merges == big.merges


def test_vocabulary_layout(shakespeare_tok):
    tok = shakespeare_tok
    assert tok.vocab_size == 700 == 256 + len(tok.merges) + 1
    assert tok.special_tokens == {ENDOFTEXT: 699}
    assert [tok.decode_bytes([i]) for i in range(256)] == [bytes([i]) for i in range(256)]
    vocab = token_bytes(tok.merges)
    assert len(set(vocab)) == len(vocab)  # no two tokens with the same bytes
    for k, (a, b) in enumerate(tok.merges):
        assert a < 256 + k and b < 256 + k
        assert tok.decode_bytes([256 + k]) == vocab[a] + vocab[b]


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train("ab ab", 1000, special_tokens=())
    assert tok.merges == [(97, 98), (32, 256)] and tok.vocab_size == 258
    assert train_plain("ab ab", 1000) == tok.merges


def test_merges_never_cross_chunks():
    tok = BPETokenizer.train("hello world " * 50, 300, special_tokens=())
    for i in range(256, 256 + len(tok.merges)):
        piece = tok.decode([i])
        assert piece.rstrip() == piece or not piece.strip()  # a space only leads a word


# --- encoding: plain, fast and tiktoken agree -------------------------------------------------

def test_encoders_agree_on_shakespeare(shakespeare_tok, corpus_slice):
    val = corpus_slice[1]
    ids = shakespeare_tok.encode(val)
    assert ids == encode_plain(val, shakespeare_tok.merges)
    assert ids == shakespeare_tok.to_tiktoken().encode(val)
    assert shakespeare_tok.decode(ids) == val
    assert len(ids) < len(val.encode("utf-8")) / 2


@pytest.mark.parametrize("s", AWKWARD)
def test_encoders_agree_on_awkward_strings(mixed_tok, shakespeare_tok, s):
    for tok in (mixed_tok, shakespeare_tok):
        ids = tok.encode(s, disallowed_special=())
        assert ids == tok.to_tiktoken().encode(s, disallowed_special=())
        assert ids == encode_plain(s, tok.merges)
        assert tok.decode(ids) == s


# Python's `regex` and tiktoken's Rust regex engine carry different editions of Unicode's tables,
# so they may put a letter added to Unicode recently into different classes (\p{L} or not) and cut
# the text differently. Characters assigned in the Unicode version of Python's `unicodedata`
# (14.0 on Python 3.11) are classified the same way by both, so the comparison with tiktoken draws
# from those; the comparison with encode_plain (the same regex engine) draws from all characters.
ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(ASSIGNED, max_size=60) | st.text(alphabet=mixed_text(500, seed=7) + "<|>endoftx", max_size=60))
def test_encoders_agree_with_tiktoken_on_random_unicode(mixed_tok, shakespeare_tok, encodings, s):
    for tok in (mixed_tok, shakespeare_tok):
        enc = encodings[id(tok)]
        ids = tok.encode(s, disallowed_special=())
        assert ids == enc.encode(s, disallowed_special=())
        assert tok.encode(s, allowed_special="all") == enc.encode(s, allowed_special="all")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_fast_and_plain_encoders_agree_on_random_unicode(mixed_tok, shakespeare_tok, s):
    for tok in (mixed_tok, shakespeare_tok):
        assert tok.encode(s, disallowed_special=()) == encode_plain(s, tok.merges)


def test_tiktoken_ranks_hold_every_byte(mixed_tok):
    enc = mixed_tok.to_tiktoken()
    assert enc.n_vocab == mixed_tok.vocab_size and enc.eot_token == mixed_tok.special_tokens[ENDOFTEXT]
    assert all(enc.encode_single_token(bytes([b])) == b for b in range(256))
    every_byte = bytes(range(256)).decode("latin-1")  # 256 characters, many of them 2 UTF-8 bytes
    assert enc.encode(every_byte) == mixed_tok.encode(every_byte)
    # a tokenizer without any merge still gives tiktoken every byte
    bare = BPETokenizer([], special_tokens=())
    assert bare.to_tiktoken().encode("ok 🙂") == list("ok 🙂".encode("utf-8"))


def test_lone_surrogates_are_replaced_like_tiktoken(mixed_tok):
    enc = mixed_tok.to_tiktoken()
    for s in ["\ud800", "a\ud83d\ude42b", "x\udfff y"]:
        assert mixed_tok.encode(s) == enc.encode(s)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_bpe_round_trip(mixed_tok, s):
    assert mixed_tok.decode(mixed_tok.encode(s, disallowed_special=())) == s
    assert mixed_tok.decode_bytes(mixed_tok.encode(s, disallowed_special=())) == s.encode("utf-8")


# --- special tokens ----------------------------------------------------------------------------

def test_special_tokens_follow_tiktoken(shakespeare_tok):
    tok, enc = shakespeare_tok, shakespeare_tok.to_tiktoken()
    eot = tok.special_tokens[ENDOFTEXT]
    text = "The end." + ENDOFTEXT + "The start."
    with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>'"):
        tok.encode(text)
    with pytest.raises(ValueError):
        enc.encode(text)
    as_text = tok.encode(ENDOFTEXT, disallowed_special=())
    assert len(as_text) > 1 and eot not in as_text and as_text == enc.encode(ENDOFTEXT, disallowed_special=())
    for allowed in ("all", {ENDOFTEXT}):
        ids = tok.encode(text, allowed_special=allowed)
        assert ids.count(eot) == 1 and ids == enc.encode(text, allowed_special=allowed)
        assert tok.decode(ids) == text
    assert tok.encode(ENDOFTEXT * 2, allowed_special="all") == [eot, eot]
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|eot|>"})
    with pytest.raises(TypeError):
        tok.encode("x", allowed_special=ENDOFTEXT)  # a string, not a set


def test_several_special_tokens():
    tok = BPETokenizer.train(mixed_text(5_000, seed=2), 300, special_tokens=("<|a|>", "<|ab|>"))
    assert len(tok.merges) == 42 and tok.special_tokens == {"<|a|>": 298, "<|ab|>": 299}
    ids = tok.encode("x<|ab|>y<|a|>", allowed_special={"<|ab|>"}, disallowed_special=())
    assert 299 in ids and 298 not in ids
    assert ids == tok.to_tiktoken().encode("x<|ab|>y<|a|>", allowed_special={"<|ab|>"}, disallowed_special=())
    with pytest.raises(ValueError, match="<\\|a\\|>"):
        tok.encode("x<|a|>", allowed_special={"<|ab|>"})


# --- errors ------------------------------------------------------------------------------------

def test_training_errors():
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer.train("hello", 256)  # 256 bytes + 1 special token do not fit
    BPETokenizer.train("hello", 257)  # they do
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train("", 300)
    with pytest.raises(TypeError, match="str"):
        BPETokenizer.train(b"hello", 300)
    with pytest.raises(TypeError, match="vocab_size"):
        BPETokenizer.train("hello", 300.0)
    with pytest.raises(ValueError, match="repeated"):
        BPETokenizer.train("hello", 300, special_tokens=("<s>", "<s>"))
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train("hello", 300, special_tokens=("",))
    with pytest.raises(TypeError, match="one string"):
        BPETokenizer.train("hello", 300, special_tokens="<s>")
    with pytest.raises(ValueError, match="same bytes as token"):
        BPETokenizer.train("hello hello hello", 300, special_tokens=("hello",))
    with pytest.raises(ValueError, match="same bytes as token"):
        BPETokenizer.train("hello", 300, special_tokens=("a",))  # a single byte
    with pytest.raises(ValueError, match="every character"):
        BPETokenizer.train("hello world", 300, pattern=r"\w+")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        BPETokenizer.train("hello", 300, pattern="(")


def test_merge_list_errors():
    with pytest.raises(ValueError, match="already token 257"):
        BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])  # ab+c, then a+bc: "abc" twice
    with pytest.raises(ValueError, match="does not exist yet"):
        BPETokenizer([(97, 256)])
    with pytest.raises(TypeError, match="pair"):
        BPETokenizer([(97, 98, 99)])
    with pytest.raises(TypeError, match="ints"):
        BPETokenizer([(97.0, 98)])


def test_decode_errors_and_id_types(shakespeare_tok):
    tok = shakespeare_tok
    ids = tok.encode("Good morrow")
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == tok.decode(tuple(ids)) == "Good morrow"
    for bad in ([tok.vocab_size], [-1]):
        with pytest.raises(ValueError, match="out of range"):
            tok.decode(bad)
    with pytest.raises(TypeError):
        tok.decode("abc")
    with pytest.raises(TypeError):
        tok.decode([1.5])
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


# --- the character tokenizer -------------------------------------------------------------------

CHAR_ALPHABET = "".join(AWKWARD) + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-\n\r\t"


def test_char_tokenizer_basics():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == tuple(sorted(set("hello world"))) and tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"
    assert CharTokenizer.train("hello world").chars == tok.chars
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at position 6"):
        tok.encode("hello zz")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([8])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(TypeError):
        CharTokenizer.from_text(["h", "i"])
    with pytest.raises(ValueError, match="twice"):
        CharTokenizer("aba")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=CHAR_ALPHABET))
def test_char_round_trip(s):
    tok = CharTokenizer.from_text(CHAR_ALPHABET)
    ids = tok.encode(s)
    assert len(ids) == len(s) and tok.decode(ids) == s


# --- saving and loading --------------------------------------------------------------------------

def test_bpe_save_load(tmp_path, mixed_tok):
    path = tmp_path / "tok.json"
    mixed_tok.save(path)
    again = BPETokenizer.load(path)
    assert again.merges == mixed_tok.merges and again.special_tokens == mixed_tok.special_tokens
    assert again.pattern == mixed_tok.pattern == GPT2_PATTERN
    text = mixed_text(2_000, seed=5)
    assert again.encode(text) == mixed_tok.encode(text)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temporary file left behind


def test_bpe_load_refuses_bad_files(tmp_path, mixed_tok):
    path = tmp_path / "tok.json"
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        BPETokenizer.load(path)
    mixed_tok.save(path)
    good = json.loads(path.read_text(encoding="utf-8"))

    def load_with(data=None, raw=None):
        path.write_text(raw if raw is not None else json.dumps(data), encoding="utf-8")
        return BPETokenizer.load(path)

    with pytest.raises(ValueError, match="not valid JSON"):
        load_with(raw=json.dumps(good)[:500])  # truncated
    with pytest.raises(ValueError, match="not a gptlib.BPETokenizer file"):
        load_with({"model": "something else"})
    with pytest.raises(ValueError, match="not a gptlib.BPETokenizer file"):
        load_with(raw="[1, 2, 3]")
    CharTokenizer.from_text("abc").save(path)
    with pytest.raises(ValueError, match="not a gptlib.BPETokenizer file"):
        BPETokenizer.load(path)
    with pytest.raises(ValueError, match="version"):
        load_with({**good, "version": 99})
    with pytest.raises(ValueError, match="'merges' is missing"):
        load_with({k: v for k, v in good.items() if k != "merges"})
    with pytest.raises(ValueError, match="vocab_size"):
        load_with({**good, "merges": good["merges"][:-1]})
    with pytest.raises(ValueError, match="does not exist yet"):
        load_with({**good, "merges": [[97, 5000]] + good["merges"][1:]})
    with pytest.raises(ValueError, match="already token"):
        load_with({**good, "merges": good["merges"] + [good["merges"][0]], "vocab_size": good["vocab_size"] + 1})
    with pytest.raises(ValueError, match="not a valid regular expression"):
        load_with({**good, "pattern": "(("})
    with pytest.raises(ValueError, match="pair"):
        load_with({**good, "merges": [[97]] + good["merges"][1:]})


def test_char_save_load(tmp_path):
    tok = CharTokenizer.from_text(CHAR_ALPHABET)
    path = tmp_path / "chars.json"
    tok.save(path)
    assert CharTokenizer.load(path).chars == tok.chars
    BPETokenizer([]).save(path)
    with pytest.raises(ValueError, match="not a gptlib.CharTokenizer file"):
        CharTokenizer.load(path)
    path.write_text('{"format": "gptlib.CharTokenizer", "version": 1, "chars": "aa"}', encoding="utf-8")
    with pytest.raises(ValueError, match="twice"):
        CharTokenizer.load(path)
