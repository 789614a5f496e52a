"""gptlib.finetune: passages split by play, padding and windows, the classifier's shapes, pooling, gradients
(frozen and not), classifiers' independence from their GPT and each other, dtype and device, the auxiliary LM
loss, scores, input checks, determinism and a toy task it must learn."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from gptlib.data import KINDS, VALIDATION_PLAYS, plays
from gptlib.finetune import (FOLIO, Examples, GPTClassifier, Passage, chunks, class_names, encode_passages,
                             evaluate, finetune, passages, predict, scores, split_plays)
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer
from gptlib.train import TrainConfig

TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
FAST = TrainConfig(max_iters=40, batch_size=8, learning_rate=3e-3, min_lr=3e-4, warmup_iters=4, seed=1)


def _gpt(config: GPTConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def _examples(n: int = 12, T: int = 8, n_classes: int = 3, seed: int = 0) -> Examples:
    g = torch.Generator().manual_seed(seed)
    return Examples(torch.randint(0, TINY.vocab_size, (n, T), generator=g),
                    torch.randint(1, T + 1, (n,), generator=g), torch.randint(0, n_classes, (n,), generator=g))


# --- data -------------------------------------------------------------------------------------------------

def test_split_is_by_play_and_covers_all():
    train, test = split_plays()
    assert set(test) == set(VALIDATION_PLAYS) and set(train).isdisjoint(test)
    assert sorted(train + test) == sorted(p.slug for p in plays())
    with pytest.raises(ValueError, match="unknown plays"):
        split_plays(["hamlet", "no-such-play"])
    with pytest.raises(ValueError, match="single string"):
        split_plays("hamlet")


def test_passages_are_balanced_deterministic_and_from_their_plays():
    train, test = split_plays()
    a = passages(train, per_class=20, chars=200, seed=5)
    assert a == passages(train, per_class=20, chars=200, seed=5)
    assert a != passages(train, per_class=20, chars=200, seed=6)
    names = class_names(FOLIO)
    kind_of = {p.slug: p.kind for p in plays()}
    assert [sum(p.label == i for p in a) for i in range(len(names))] == [20] * len(names)
    assert all(names[p.label] == FOLIO[kind_of[p.slug]] and len(p.text) == 200 for p in a)
    b = passages(test, per_class=20, chars=200, seed=5)
    assert {p.slug for p in a} <= set(train) and {p.slug for p in b} <= set(test)


def test_passages_keep_only_mapped_kinds_and_check_input():
    classes = {"comedies": "comedy", "tragedies": "tragedy"}
    got = passages(["hamlet", "henry-v", "as-you-like-it"], classes, chars=300)
    assert {p.slug for p in got} == {"hamlet", "as-you-like-it"}
    with pytest.raises(ValueError, match="fewer than per_class"):
        passages(["hamlet", "as-you-like-it"], classes, per_class=10**6)
    with pytest.raises(ValueError, match="unknown kinds"):
        class_names({"sonnets": "poem", "comedies": "comedy"})
    with pytest.raises(ValueError, match="at least two classes"):
        class_names({k: "play" for k in KINDS})
    with pytest.raises(ValueError, match="unknown plays"):
        passages(["hamlet", "nope"])
    with pytest.raises(ValueError, match="per_class"):
        passages(["hamlet"], per_class=0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab\n", max_size=60), st.integers(1, 10))
def test_chunks_are_the_greedy_line_aligned_pieces(text, chars):
    expected, pos = [], 0
    while True:  # the first non-empty line starting at or after pos, scanning index by index
        starts = [j for j in range(pos, len(text)) if (j == 0 or text[j - 1] == "\n") and text[j] != "\n"]
        if not starts or starts[0] + chars > len(text):
            break
        expected.append(text[starts[0]:starts[0] + chars])
        pos = starts[0] + chars
    assert chunks(text, chars) == expected


def test_chunks_example():
    assert chunks("AB:\nxyz\n\nCD:\nuvw\n", 5) == ["AB:\nx", "CD:\nu"]
    assert chunks("short", 10) == []
    with pytest.raises(ValueError):
        chunks("text", 0)


def test_encode_pads_truncates_and_records_lengths():
    tok = CharTokenizer.from_text("abcdef")
    items = [Passage("abc", 0, "x"), Passage("abcdefabcdef", 1, "y")]
    ex = encode_passages(tok, items, 8)
    assert ex.ids.shape == (2, 8) and ex.lengths.tolist() == [3, 8] and ex.labels.tolist() == [0, 1]
    assert ex.ids[0, 3:].eq(0).all() and tok.decode(ex.ids[1].tolist()) == "abcdefab"
    assert len(ex[1:]) == 1 and ex[torch.tensor([1])].lengths.tolist() == [8]
    with pytest.raises(ValueError, match="no tokens"):
        encode_passages(tok, [Passage("", 0, "x")], 8)
    with pytest.raises(ValueError, match="lengths"):
        Examples(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 4]), torch.tensor([0, 1]))


# --- the classifier ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("T", [5, 8, 24])
def test_shapes_and_padding_is_ignored(pooling, T):
    clf = GPTClassifier(_gpt(), 3, pooling=pooling).eval()
    ex = _examples(n=6, T=T)
    logits, loss = clf(ex.ids, ex.labels, ex.lengths)
    assert logits.shape == (6, 3) and loss.dim() == 0
    assert clf.features(ex.ids, ex.lengths).shape == (6, TINY.n_embd)
    pad = torch.arange(T) >= ex.lengths[:, None]
    other = ex.ids.masked_fill(pad, 7)  # change only the padding
    torch.testing.assert_close(clf(other, None, ex.lengths)[0], logits)
    assert clf(ex.ids)[1] is None


def test_mean_pooling_is_the_mean_of_hidden_states_over_windows():
    gpt = _gpt()
    clf = GPTClassifier(gpt, 2).eval()
    ids = torch.randint(0, TINY.vocab_size, (1, 16))
    with torch.no_grad():
        h = torch.cat([gpt.hidden_states(ids[:, :8]), gpt.hidden_states(ids[:, 8:])], dim=1)
        torch.testing.assert_close(clf.features(ids, torch.tensor([12])), h[:, :12].mean(1))
        last = GPTClassifier(gpt, 2, pooling="last").eval()
        torch.testing.assert_close(last.features(ids, torch.tensor([12])), h[:, 11])


def test_gradients_reach_the_gpt_unless_frozen():
    ex = _examples()
    clf = GPTClassifier(_gpt(), 3)
    clf(ex.ids, ex.labels, ex.lengths)[1].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.gpt.parameters())
    frozen = GPTClassifier(_gpt(), 3, freeze=True)
    frozen(ex.ids, ex.labels, ex.lengths)[1].backward()
    assert all(p.grad is None for p in frozen.gpt.parameters()) and frozen.head.weight.grad is not None


def test_last_pooling_reads_only_the_window_of_the_last_token():
    gpt = _gpt()
    clf = GPTClassifier(gpt, 2, pooling="last").eval()
    ids, lengths = torch.randint(0, TINY.vocab_size, (3, 24)), torch.tensor([20, 9, 24])
    with torch.no_grad():
        got = clf.features(ids, lengths)
        for row, n in enumerate(lengths.tolist()):
            w = (n - 1) // 8  # the window holding the last real token, read alone from position 0
            torch.testing.assert_close(got[row], gpt.hidden_states(ids[row:row + 1, 8 * w:8 * w + 8])[0, (n - 1) % 8])
        other = ids.clone()
        other[:, :8] = (other[:, :8] + 1) % TINY.vocab_size  # change the first window: not the last one of any row
        torch.testing.assert_close(clf.features(other, lengths), got)
        aux = GPTClassifier(gpt, 2, pooling="last", lm_weight=0.5).eval()  # with the LM loss, every window is read
        aux.head.load_state_dict(clf.head.state_dict())
        torch.testing.assert_close(aux(ids, torch.tensor([0, 1, 0]), lengths)[0], clf(ids, None, lengths)[0])


def test_classifiers_copy_their_gpt_so_they_never_change_it_or_each_other():
    gpt = _gpt()
    original = {k: v.clone() for k, v in gpt.state_dict().items()}
    probe = GPTClassifier(gpt, 2, freeze=True)
    tuned = GPTClassifier(gpt, 2)  # built on the same GPT after the probe: the probe stays frozen
    assert not any(p.requires_grad for p in probe.gpt.parameters())
    GPTClassifier(gpt, 2, freeze=True)  # and a probe built later does not freeze `tuned`
    assert all(p.requires_grad for p in tuned.gpt.parameters()) and all(p.requires_grad for p in gpt.parameters())
    assert tuned.gpt.lm_head.weight is tuned.gpt.transformer.wte.weight  # the copy keeps the tied matrix tied
    train, test = _toy(64, 0), _toy(32, 1)
    with torch.no_grad():
        probe_features = probe.features(test.ids, test.lengths)
    tuned(train.ids, train.labels, train.lengths)[1].backward()
    assert all(p.grad is None for p in [*gpt.parameters(), *probe.gpt.parameters()])
    finetune(tuned, train, FAST, show_progress=False)
    assert not all(torch.equal(original[k], v) for k, v in tuned.gpt.state_dict().items())  # tuned did learn
    for model in (gpt, probe.gpt):  # the GPT it was built from and the probe did not
        assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(probe.features(test.ids, test.lengths), probe_features)
    tuned_state = {k: v.clone() for k, v in tuned.state_dict().items()}
    finetune(probe, train, FAST, show_progress=False)
    assert all(torch.equal(tuned_state[k], v) for k, v in tuned.state_dict().items())


def test_lm_weight_adds_the_language_model_loss():
    gpt = _gpt()
    ex = _examples(n=4, T=16)
    plain = GPTClassifier(gpt, 3).eval()
    aux = GPTClassifier(gpt, 3, lm_weight=0.7).eval()
    aux.head.load_state_dict(plain.head.state_dict())
    with torch.no_grad():
        logits, l2 = plain(ex.ids, ex.labels, ex.lengths)
        _, l3 = aux(ex.ids, ex.labels, ex.lengths)
        total, count = 0.0, 0
        for row, n in zip(ex.ids, ex.lengths.tolist()):
            for w in range(0, 16, 8):  # each window is read from position 0; targets stay inside it
                window = row[w:w + 8]
                real = max(0, min(8, n - w))
                if real > 1:
                    lm = gpt(window[None])[0][0, :real - 1]
                    total += F.cross_entropy(lm, window[1:real], reduction="sum").item()
                    count += real - 1
    assert math.isclose(l3.item(), l2.item() + 0.7 * total / count, rel_tol=1e-5)


def test_bad_input_raises_clear_errors():
    gpt = _gpt()
    with pytest.raises(ValueError, match="n_classes"):
        GPTClassifier(gpt, 1)
    with pytest.raises(ValueError, match="pooling"):
        GPTClassifier(gpt, 2, pooling="max")
    with pytest.raises(ValueError, match="lm_weight"):
        GPTClassifier(gpt, 2, lm_weight=-1)
    with pytest.raises(ValueError, match="freeze"):
        GPTClassifier(gpt, 2, freeze=True, lm_weight=0.5)
    with pytest.raises(ValueError, match="GPT"):
        GPTClassifier(torch.nn.Linear(2, 2), 2)
    clf = GPTClassifier(gpt, 3)
    ids = torch.zeros(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="labels"):
        clf(ids, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths"):
        clf(ids, None, torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="multiple"):
        clf(torch.zeros(2, 12, dtype=torch.long))
    with pytest.raises(ValueError, match="idx"):
        clf(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="classes"):
        finetune(GPTClassifier(gpt, 2), _examples(n_classes=3, seed=1), FAST, show_progress=False)
    with pytest.raises(ValueError, match="TrainConfig"):
        finetune(clf, _examples(), {"max_iters": 3}, show_progress=False)


# --- training and scores ----------------------------------------------------------------------------------

def _toy(n: int, seed: int) -> Examples:
    """Class 0: passages of ids 1-4; class 1: ids 6-9; trivially separable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids = torch.randint(1, 5, (n, 8), generator=g) + 5 * labels[:, None]
    return Examples(ids, torch.randint(3, 9, (n,), generator=g), labels)


@pytest.mark.parametrize("freeze", [False, True])
def test_finetuning_learns_a_separable_toy_task(freeze):
    train, test = _toy(64, 0), _toy(64, 1)
    clf = GPTClassifier(_gpt(), 2, freeze=freeze)
    before = {k: v.clone() for k, v in clf.gpt.state_dict().items()}
    config = FAST if not freeze else TrainConfig(max_iters=200, batch_size=16, learning_rate=3e-2, seed=1)
    losses = finetune(clf, train, config, show_progress=False)
    assert losses[-1] < losses[0] and evaluate(clf, test).accuracy == 1.0
    unchanged = all(torch.equal(before[k], v) for k, v in clf.gpt.state_dict().items())
    assert unchanged == freeze and not clf.training


@pytest.mark.parametrize("freeze", [False, True])
def test_a_float64_gpt_gives_a_float64_classifier_that_trains_like_float32(freeze):
    clf32 = GPTClassifier(_gpt(), 2, freeze=freeze)
    clf64 = GPTClassifier(_gpt().to(torch.float64), 2, freeze=freeze)  # the head follows the GPT's dtype
    assert {p.dtype for p in clf64.parameters()} == {torch.float64}
    clf64.head.load_state_dict(clf32.head.state_dict())
    train, test = _toy(64, 0), _toy(64, 1)
    losses32 = finetune(clf32, train, FAST, show_progress=False)
    losses64 = finetune(clf64, train, FAST, show_progress=False)
    assert math.isclose(losses64[0], losses32[0], rel_tol=1e-5)
    assert losses64[-1] < losses64[0] and torch.equal(predict(clf64, test), predict(clf32, test))


def test_examples_move_between_devices_and_predictions_follow_them():
    ex = _examples()
    moved = ex.to("cpu")
    assert isinstance(moved, Examples) and all(torch.equal(getattr(moved, f), getattr(ex, f))
                                               for f in ("ids", "lengths", "labels"))
    assert predict(GPTClassifier(_gpt(), 3), ex).device == ex.labels.device
    with pytest.raises(ValueError, match="batch_size"):
        predict(GPTClassifier(_gpt(), 3), ex, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("freeze", [False, True])
def test_a_classifier_on_cuda_trains_and_predicts_from_examples_on_the_cpu(freeze):
    clf = GPTClassifier(_gpt().cuda(), 2, freeze=freeze)
    assert all(p.is_cuda for p in clf.parameters())
    config = FAST if not freeze else TrainConfig(max_iters=200, batch_size=16, learning_rate=3e-2, seed=1)
    losses = finetune(clf, _toy(64, 0), config, show_progress=False)
    test = _toy(64, 1)
    assert losses[-1] < losses[0] and predict(clf, test).device.type == "cpu"
    assert evaluate(clf, test).accuracy == 1.0


def test_finetune_is_deterministic():
    runs = []
    for _ in range(2):
        clf = GPTClassifier(_gpt(GPTConfig(**{**TINY.to_dict(), "dropout": 0.2})), 3)
        losses = finetune(clf, _examples(n=20, T=16), FAST, show_progress=False)
        runs.append((losses, predict(clf, _examples(n=20, T=16, seed=3))))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_scores_against_counting():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    preds = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])
    s = scores(preds, labels, 3)
    assert s.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [1, 1, 3]]
    assert math.isclose(s.accuracy, 6 / 10)
    assert math.isclose(s.balanced_accuracy, (2 / 3 + 1 / 2 + 3 / 5) / 3)
    f1 = [2 * 2 / (3 + 3), 2 * 1 / (2 + 3), 2 * 3 / (5 + 4)]
    assert math.isclose(s.macro_f1, sum(f1) / 3)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_scores_properties(pairs):
    labels = torch.tensor([a for a, _ in pairs])
    preds = torch.tensor([b for _, b in pairs])
    s = scores(preds, labels, 4)
    assert s.confusion.sum() == len(pairs) and math.isclose(s.accuracy, (labels == preds).double().mean().item())
    assert 0 <= s.macro_f1 <= 1 and 0 <= s.balanced_accuracy <= 1
    perfect = scores(labels, labels, 4)
    assert perfect.accuracy == perfect.balanced_accuracy == perfect.macro_f1 == 1.0


def test_scores_check_input():
    with pytest.raises(ValueError, match="class indices"):
        scores(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="predictions for"):
        scores(torch.tensor([0]), torch.tensor([0, 1]), 3)
