import pytest

from gptlib.data import KINDS, VALIDATION_PLAYS, play_text, plays, render_play, shakespeare, shakespeare_split


def test_corpus_is_deterministic_and_clean():
    text = shakespeare()
    assert text == shakespeare()
    assert len(plays()) == 38
    assert not set("#*_\\") & set(text)
    assert text.startswith(play_text(plays()[0].slug))


def test_split_is_by_play_and_covers_every_kind():
    train, val = shakespeare_split()
    assert len(train) + len(val) + 1 == len(shakespeare())  # one blank line joins the two parts
    kinds = {p.kind for p in plays() if p.slug in VALIDATION_PLAYS}
    assert kinds == set(KINDS)
    for slug in VALIDATION_PLAYS:
        first_long = next(s for s in play_text(slug).split("\n\n") if len(s) > 300)
        assert first_long in val and first_long not in train


def test_render_handles_directions_asides_and_escapes():
    md = "# T\n\n_Enter A\nand B_\n\n**A**  \nOne \\-- two.  \n__\\[Aside]_  \n[To B]_  \nThree.\n\n*Exit.*\n\n**b**  \nFour.\n"
    assert render_play(md) == "A:\nOne -- two.\nThree.\n\nB:\nFour.\n"


def test_bad_input_is_named():
    with pytest.raises(KeyError, match="no play 'hamlet2'"):
        play_text("hamlet2")
    with pytest.raises(KeyError, match="unknown plays"):
        shakespeare_split(["macbeth", "nope"])
    with pytest.raises(ValueError, match="non-empty"):
        shakespeare_split([])
    with pytest.raises(TypeError, match="not a single string"):
        shakespeare("hamlet")
    with pytest.raises(TypeError):
        render_play(b"bytes")
