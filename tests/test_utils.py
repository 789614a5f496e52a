import pytest
import torch

from gptlib.utils import progress, set_seed


def test_set_seed_repeats_torch_draws():
    set_seed(3)
    a = torch.randn(5)
    set_seed(3)
    assert torch.equal(a, torch.randn(5))


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        set_seed(bad)


def test_final_mode_prints_one_line(monkeypatch, capsys):
    monkeypatch.setenv("GPTLIB_PROGRESS", "final")
    bar = progress(range(300), desc="work")
    for _ in bar:
        pass
    bar.close()
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1 and "work: 100%" in out and "300/300" in out and "\r" not in out


def test_off_mode_is_silent(monkeypatch, capsys):
    monkeypatch.setenv("GPTLIB_PROGRESS", "off")
    for _ in progress(range(10)):
        pass
    assert capsys.readouterr() == ("", "")


def test_unknown_mode_is_an_error(monkeypatch):
    monkeypatch.setenv("GPTLIB_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="GPTLIB_PROGRESS must be one of"):
        progress(range(3))


def test_patch_to_adds_methods_of_every_kind():
    from gptlib.utils import patch_to

    class Box:
        def __init__(self, x):
            self.x = x

    @patch_to(Box)
    def double(self):
        return 2 * self.x

    @patch_to(Box)
    @classmethod
    def of_one(cls):
        return cls(1)

    @patch_to(Box)
    @property
    def half(self):
        return self.x / 2

    assert Box(3).double() == 6 and Box.of_one().x == 1 and Box(3).half == 1.5
    assert Box.double.__qualname__.endswith("Box.double")


def test_patch_to_needs_a_class():
    from gptlib.utils import patch_to

    with pytest.raises(TypeError, match="expects a class"):
        patch_to(len)
