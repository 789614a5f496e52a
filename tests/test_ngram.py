import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlib.ngram import NGramModel, encode, tune, vocabulary, window_codes

ALPHABET = "abc d\n"
texts = st.text(alphabet=ALPHABET, min_size=1, max_size=60)
orders = st.integers(min_value=1, max_value=5)
alphas = st.sampled_from([0.01, 0.5, 1.0, 3.0])


@settings(max_examples=60, deadline=None)
@given(text=texts, n=orders, alpha=alphas, context=st.text(alphabet=ALPHABET, max_size=8))
def test_next_char_probs_sum_to_one_for_any_context(text, n, alpha, context):
    if len(text) < n:
        return
    model = NGramModel.fit(text, n, alpha=alpha, vocab=ALPHABET)
    p = model.next_char_probs(context)
    assert p.shape == (len(ALPHABET),) and (p > 0).all()
    assert abs(p.sum() - 1) < 1e-12
    for j, c in enumerate(ALPHABET):
        assert model.prob(c, context) == pytest.approx(p[j], rel=1e-12, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(train=texts, text=texts, n=orders, alpha=alphas)
def test_log_prob_is_the_sum_of_per_character_log_probs(train, text, n, alpha):
    if len(train) < n:
        return
    model = NGramModel.fit(train, n, alpha=alpha, vocab=ALPHABET)
    by_char = sum(math.log(model.prob(c, text[:i])) for i, c in enumerate(text))
    assert model.log_prob(text) == pytest.approx(by_char, rel=1e-10, abs=1e-10)
    assert model.perplexity(text) == pytest.approx(math.exp(-by_char / len(text)), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(train=texts, n=orders, alpha=alphas)
def test_counts_match_a_naive_count(train, n, alpha):
    if len(train) < n:
        return
    model = NGramModel.fit(train, n, alpha=alpha, vocab=ALPHABET)
    grams = Counter(train[i : i + n] for i in range(len(train) - n + 1))
    followed = Counter(g[:-1] for g in grams.elements())
    V = len(ALPHABET)
    a = Fraction(alpha)
    for h in list(followed)[:5] + ["a" * (n - 1)]:
        for c in ALPHABET:
            expected = (grams[h + c] + a) / (followed[h] + a * V)
            assert model.prob(c, h, exact=True) == expected


def test_hand_computed_bigram_fractions():
    mle = NGramModel.fit("abracadabra", 2, alpha=0)
    laplace = NGramModel.fit("abracadabra", 2, alpha=1)

    def exact(model, text):
        p = Fraction(1)
        for i, c in enumerate(text):
            p *= model.prob(c, text[:i], exact=True)
        return p

    assert exact(mle, "abra") == Fraction(5, 11) * Fraction(2, 4)
    assert exact(laplace, "bad") == Fraction(3, 16) * Fraction(1, 7) * Fraction(2, 9)
    assert mle.log_prob("bad") == -math.inf
    assert math.exp(laplace.log_prob("abra")) == pytest.approx(float(Fraction(9, 392)), rel=1e-14)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_uniform_model_has_perplexity_equal_to_vocab_size(n):
    vocab = "abcdefg"
    model = NGramModel.fit("gfedcba", n, alpha=1e12, vocab=vocab)  # smoothing dwarfs every count
    assert model.perplexity("abcabcggg") == pytest.approx(len(vocab), rel=1e-9)
    uniform = NGramModel.fit(vocab, 1, alpha=0)  # every character seen once
    assert uniform.perplexity("gggabcdabc") == pytest.approx(len(vocab), rel=1e-12)


def test_first_characters_use_shorter_contexts():
    model = NGramModel.fit("aab", 3, alpha=0)
    assert model.prob("a", "") == pytest.approx(2 / 3)  # unigram
    assert model.prob("b", "a") == pytest.approx(1 / 2)  # bigram: a->a once, a->b once
    assert model.prob("b", "aa") == 1.0  # trigram
    assert model.log_prob("aab") == pytest.approx(math.log(2 / 3) + math.log(1 / 2) + math.log(1.0))


def test_only_the_last_n_minus_1_characters_of_the_context_matter():
    model = NGramModel.fit("abcabcabd", 3, alpha=0.5)
    np.testing.assert_array_equal(model.next_char_probs("ddab"), model.next_char_probs("ab"))


def test_with_order_and_with_alpha_equal_a_fresh_fit():
    text = "to be or not to be, that is the question\n" * 3
    big = NGramModel.fit(text, 5, alpha=1.0)
    small = NGramModel.fit(text, 3, alpha=0.1)
    derived = big.with_order(3).with_alpha(0.1)
    assert derived.n == 3 and derived.alpha == 0.1
    assert derived.log_prob("not the question") == small.log_prob("not the question")


def test_sampling_is_reproducible_and_stays_in_the_vocabulary():
    model = NGramModel.fit("abracadabra", 3, alpha=0.5)
    a = model.sample(50, prompt="ab", generator=7)
    assert a == model.sample(50, prompt="ab", generator=np.random.default_rng(7))
    assert a.startswith("ab") and len(a) == 52 and set(a) <= set(model.vocab)
    source = "abracadabra" * 3
    unsmoothed = NGramModel.fit(source, 4, alpha=0).sample(100, generator=1)
    assert all(unsmoothed[i : i + 4] in source for i in range(len(unsmoothed) - 3))


def test_window_codes_and_encode():
    ids = encode("abca", "abc")
    assert ids.tolist() == [0, 1, 2, 0]
    assert window_codes(ids, 2, 3).tolist() == [0 * 3 + 1, 1 * 3 + 2, 2 * 3 + 0]
    assert window_codes(ids, 0, 3).tolist() == [0] * 5
    assert vocabulary("banana") == "abn"


def test_tune_picks_the_lowest_validation_cross_entropy():
    train = "the cat sat on the mat. the dog sat on the log. " * 20
    val = "the dog sat on the mat. the cat sat on the log. "
    best, table = tune(train, val, orders=range(1, 5), alphas=(1.0, 0.1))
    assert set(table) == {(n, a) for n in range(1, 5) for a in (1.0, 0.1)}
    assert table[(best.n, best.alpha)] == min(table.values())
    assert best.cross_entropy(val) == pytest.approx(table[(best.n, best.alpha)], rel=1e-12)


def test_bad_input_raises_clear_errors():
    model = NGramModel.fit("abracadabra", 2, alpha=1)
    with pytest.raises(ValueError, match=r"not in the vocabulary: 'xz'"):
        model.log_prob("xaz")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.next_char_probs("Q")
    with pytest.raises(ValueError, match="single character"):
        model.prob("ab", "a")
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        NGramModel.fit("abc", 0)
    with pytest.raises(ValueError, match="fewer than n"):
        NGramModel.fit("abc", 4)
    with pytest.raises(ValueError, match="too large"):
        NGramModel.fit("".join(map(chr, range(65, 65 + 100))), 10)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        NGramModel.fit("abc", 2, alpha=-1)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        model.with_alpha(math.inf)
    with pytest.raises(ValueError, match="n must be an int from 1 to 2"):
        model.with_order(3)
    with pytest.raises(ValueError, match="never seen in training"):
        NGramModel.fit("abracadabra", 2, alpha=0, vocab="abcdrz").next_char_probs("z")
    with pytest.raises(ValueError, match="length must be an int >= 0"):
        model.sample(-1)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.sample(5, prompt="xyz")
    with pytest.raises(TypeError):
        model.next_char_probs(3)
    with pytest.raises(ValueError, match="distinct characters"):
        NGramModel.fit("abc", 1, vocab="abca")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        tune("abc", "abc", alphas=(0,))
    with pytest.raises(ValueError, match="non-empty"):
        model.cross_entropy("")
