"""gptlib.mlp: chapter 1's Bengio MLP, its windows, its loss and its trainer."""

import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.mlp import BOOK_MLP, BengioMLP, cross_entropy, train_mlp, windows
from gptlib.utils import progress, set_seed

V, K = 11, 3


def small_model(seed: int = 0, vocab: int = V, context: int = K) -> BengioMLP:
    set_seed(seed)
    return BengioMLP(vocab, context, embed=4, hidden=16)


def random_ids(n: int, vocab: int = V, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def test_shapes():
    model = small_model()
    assert model.context == K
    assert model.embedding.weight.shape == (V, 4)
    assert (model.hidden.in_features, model.hidden.out_features) == (K * 4, 16)
    assert (model.out.in_features, model.out.out_features) == (16, V)
    assert model(torch.zeros(7, K, dtype=torch.long)).shape == (7, V)
    assert model(torch.zeros(2, K, dtype=torch.int32)).shape == (2, V)


def test_windows_are_the_slices_of_the_text():
    ids = torch.arange(100, 120)
    positions = torch.tensor([0, 5, 16])
    x, y = windows(ids, positions, 3)
    assert x.shape == (3, 3) and y.shape == (3,)
    for row, p in enumerate(positions.tolist()):
        assert x[row].tolist() == ids[p : p + 3].tolist()
        assert y[row].item() == ids[p + 3].item()
    x, y = windows(ids, torch.tensor([], dtype=torch.long), 3)
    assert x.shape == (0, 3) and y.shape == (0,)


@pytest.mark.parametrize(
    "sizes",
    [(0, K, 4, 16), (V, 0, 4, 16), (V, K, -1, 16), (V, K, 4, 0), (V, 2.0, 4, 16), (V, True, 4, 16)],
)
def test_model_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="positive ints"):
        BengioMLP(*sizes)


def test_forward_rejects_bad_ids():
    model = small_model()
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(4, K + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(K, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(torch.zeros(4, K))


def test_windows_rejects_bad_input():
    ids = torch.arange(10)
    with pytest.raises(ValueError, match=r"\[0, 6\]"):
        windows(ids, torch.tensor([7]), 3)  # ids[10] does not exist
    with pytest.raises(ValueError, match=r"\[0, 6\]"):
        windows(ids, torch.tensor([-1]), 3)
    with pytest.raises(ValueError, match="1-D"):
        windows(ids[None], torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="positive ints"):
        windows(ids, torch.tensor([0]), 0)
    x, y = windows(ids, torch.tensor([6]), 3)  # the last full window
    assert y.item() == 9


def test_cross_entropy_rejects_bad_input():
    model = small_model()
    with pytest.raises(ValueError, match="1-D"):
        cross_entropy(model, torch.zeros(2, 5, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="1-D"):
        cross_entropy(model, torch.zeros(0, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="1-D"):
        cross_entropy(model, torch.zeros(5), 0)
    with pytest.raises(ValueError, match="pad_id"):
        cross_entropy(model, torch.zeros(5, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match="context"):
        cross_entropy(torch.nn.Linear(2, 2), torch.zeros(5, dtype=torch.long), 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "positive ints"),
        (dict(steps=20), "steps=20"),
        (dict(batch_size=0), "positive ints"),
        (dict(eval_every=0), "positive ints"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-1e-3), "lr"),
        (dict(train_ids=torch.arange(K)), "longer than"),
        (dict(train_ids=torch.zeros(3, 50, dtype=torch.long)), "1-D"),
        (dict(train_ids=torch.zeros(50)), "ids"),
        (dict(eval_ids=torch.zeros(5, K, dtype=torch.long)), "shape"),
    ],
)
def test_train_mlp_rejects_bad_input(kwargs, match):
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    args = dict(train_ids=random_ids(200), steps=5) | kwargs
    with pytest.raises(ValueError, match=match):
        train_mlp(model, args.pop("train_ids"), args.pop("steps"), show_progress=False, **args)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing trained


def test_untrained_model_is_close_to_uniform():
    # the book's sizes, V = 76 as in the book; an untrained network's logits are small,
    # so its cross-entropy is close to ln V (1.4 asserts the same within 0.2)
    set_seed(0)
    model = BengioMLP(76, BOOK_MLP["context"], BOOK_MLP["embed"], BOOK_MLP["hidden"])
    loss = cross_entropy(model, random_ids(3000, vocab=76), pad_id=0)
    assert abs(loss - math.log(76)) < 0.2


def slow_cross_entropy(model: BengioMLP, ids: torch.Tensor, pad_id: int) -> float:
    """One position at a time, the definition: -ln P(ids[i] | the K ids before it)."""
    padded = [pad_id] * model.context + ids.tolist()
    total = 0.0
    with torch.no_grad():
        for i, target in enumerate(ids.tolist()):
            logits = model(torch.tensor([padded[i : i + model.context]]))[0]
            total -= torch.log_softmax(logits, dim=0)[target].item()
    return total / len(ids)


def test_cross_entropy_scores_every_position_like_a_slow_loop():
    model = small_model().double()
    ids = random_ids(57, seed=3)
    fast = cross_entropy(model, ids, pad_id=2)
    slow = slow_cross_entropy(model, ids, pad_id=2)
    # float64, 57 terms of a few nats each: the two sums differ by rounding only,
    # far below 1e-12
    assert abs(fast - slow) < 1e-12
    # the padding matters: another pad id changes the first K predictions
    assert abs(cross_entropy(model, ids, pad_id=5) - fast) > 1e-6
    assert abs(slow_cross_entropy(model, ids, pad_id=5) - cross_entropy(model, ids, pad_id=5)) < 1e-12


def test_cross_entropy_across_chunks_matches_all_windows_at_once():
    # longer than two of cross_entropy's chunks of 16,384 positions
    model = small_model().double()
    ids = random_ids(2 * 16384 + 7, seed=4)
    padded = torch.cat([torch.full((K,), 1), ids])
    w = padded.unfold(0, K + 1, 1)  # every window, built independently
    assert w.shape == (len(ids), K + 1)
    with torch.no_grad():
        expected = F.cross_entropy(model(w[:, :K]), w[:, K]).item()
    # float64 means of ~33,000 terms below 10 nats: rounding stays below 1e-10
    assert abs(cross_entropy(model, ids, pad_id=1) - expected) < 1e-10


def test_training_lowers_the_loss_on_a_tiny_text():
    text = "abcabd" * 50
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    model = small_model(vocab=len(vocab))
    before = cross_entropy(model, ids, pad_id=0)
    history = train_mlp(model, ids, 60, batch_size=64, lr=3e-2, eval_every=10, show_progress=False)
    after = cross_entropy(model, ids, pad_id=0)
    assert history["step"] == [10, 20, 30, 40, 50, 60] and "val" not in history
    assert after < before - 0.5, (before, after)
    assert history["train"][-1] < history["train"][0]


def test_history_records_validation_only_when_given():
    ids = random_ids(500)
    eval_ids = torch.column_stack(windows(ids, torch.arange(40), K))
    history = train_mlp(small_model(), ids, 30, batch_size=16, eval_ids=eval_ids, eval_every=10, show_progress=False)
    assert history["step"] == [10, 20, 30]
    assert len(history["train"]) == len(history["val"]) == 3
    assert all(isinstance(v, float) and v > 0 for v in history["val"])


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_same_seed_same_weights():
    ids = random_ids(1000)
    runs = []
    for seed in (0, 0, 1):
        model = small_model()
        train_mlp(model, ids, 25, batch_size=32, seed=seed, show_progress=False)
        runs.append(weights(model))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def notebook_recipe(model, train_ids, steps, batch_size, lr):
    """Chapter 1's training loop as the notebook had it before `train_mlp` existed
    (Adam, OneCycleLR, batches from a generator seeded with 0),
    written out here independently of the library."""
    k = model.context
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    batches = torch.Generator().manual_seed(0)
    offsets = torch.arange(k + 1)
    for step in progress(range(1, steps + 1), disable=True):
        pos = torch.randint(0, len(train_ids) - k, (batch_size,), generator=batches)
        w = train_ids[pos[:, None] + offsets]
        loss = F.cross_entropy(model(w[:, :k]), w[:, k])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def test_book_settings_give_the_notebooks_model_bit_for_bit():
    # what a later chapter does (BOOK_MLP, no validation, no progress bar) against what
    # 1.4 did; fewer steps and a random text keep the test short
    assert set(BOOK_MLP) == {"context", "embed", "hidden", "steps", "batch_size", "lr"}
    ids = random_ids(20_000, vocab=76, seed=5)
    val_windows = torch.column_stack(windows(ids, torch.arange(300), BOOK_MLP["context"]))
    sizes = BOOK_MLP["context"], BOOK_MLP["embed"], BOOK_MLP["hidden"]
    steps = 30
    set_seed(0)
    ours = BengioMLP(76, *sizes)
    train_mlp(ours, ids, steps, batch_size=BOOK_MLP["batch_size"], lr=BOOK_MLP["lr"], show_progress=False)
    set_seed(0)
    reference = BengioMLP(76, *sizes)
    notebook_recipe(reference, ids, steps, BOOK_MLP["batch_size"], BOOK_MLP["lr"])
    assert all(torch.equal(a, b) for a, b in zip(weights(ours), weights(reference)))
    # and with validation windows, as 1.4 trains it: evaluation does not touch training
    set_seed(0)
    with_eval = BengioMLP(76, *sizes)
    train_mlp(
        with_eval, ids, steps, batch_size=BOOK_MLP["batch_size"], lr=BOOK_MLP["lr"],
        eval_ids=val_windows, eval_every=10, show_progress=False,
    )
    assert all(torch.equal(a, b) for a, b in zip(weights(ours), weights(with_eval)))
