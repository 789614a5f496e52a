"""The website check (tools/check_site.py) on a tiny fake site: it passes a clean site and catches
every kind of problem it is meant to catch. Needs Chromium (Debian's `chromium`) and Playwright;
skips without them. No jupyter-book build is needed: the pages are written by hand below."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import check_site

TOOL = Path(check_site.__file__).resolve()

pytest.importorskip("playwright", reason="Playwright is not installed (pip install -r requirements.txt)")
if check_site.find_chromium(None) is None:
    pytest.skip("no Chromium on this machine (apt-get install -y chromium)", allow_module_level=True)



def _png(width: int = 4, height: int = 3) -> bytes:
    """A small red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = _png()
# Stands in for MathJax: typesets every .math element except those marked `stub-skip`.
MATHJAX_STUB = """
window.MathJax = Object.assign(window.MathJax || {}, {version: 'stub'});
MathJax.startup = {promise: new Promise((resolve) => setTimeout(() => {
  document.querySelectorAll('.math:not(.stub-skip)').forEach((el) => {
    el.innerHTML = '<mjx-container class="MathJax">typeset</mjx-container>';
  });
  resolve();
}, 150))};
"""
CONFIG = """\
repository:
  url: https://github.com/owner/book
  branch: main
"""
GOOD_COLAB = "https://colab.research.google.com/github/owner/book/blob/main/{}.ipynb"


def page(pagename: str, body: str, *, colab: str | None = None, buttons: int = 1, mathjax: bool = True) -> str:
    depth = pagename.count("/")
    up = "../" * depth
    head = f"<script>var DOCUMENTATION_OPTIONS = {{pagename: '{pagename}'}};</script>"
    if mathjax:
        head += f'<script defer src="{up}_static/mathjax/stub.js"></script>'
    button = f'<a class="btn" href="{colab}">Colab</a>' * buttons if colab else ""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{pagename}</title>{head}</head>"
        f"<body><nav><a href='{up}good.html'>home</a></nav><div class='article-header-buttons'>{button}</div>"
        f"<main>{body}</main></body></html>"
    )


def cell(source: str, output: str = "", extra: str = "", classes: str = "") -> str:
    out = f'<div class="cell_output"><div class="output stream"><pre>{output}</pre></div>{extra}</div>' if output or extra else ""
    return f'<div class="cell {classes}"><div class="cell_input"><pre>{source}</pre></div>{out}</div>'


def write(root: Path, rel: str, text: str | bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


def clean_site(repo: Path) -> Path:
    """Two pages without any problem: one from a notebook, one from markdown."""
    html = repo / "_build" / "html"
    write(repo, "_config.yml", CONFIG)
    write(repo, "good.ipynb", "{}")
    write(repo, "sub/text.md", "# text")
    write(html, "_static/mathjax/stub.js", MATHJAX_STUB)
    write(html, "_images/fig.png", PNG)
    write(html, "_sources/good.ipynb", "{}")
    write(html, "index.html", '<meta http-equiv="Refresh" content="0; url=good.html" />')
    write(
        html,
        "good.html",
        page(
            "good",
            '<section id="top"><h1>Good</h1><p>Inline <span class="math">\\(x^2\\)</span> and a '
            '<a href="sub/text.html#part-two">link</a>, <a href="#top">an anchor</a>, '
            '<a href="_sources/good.ipynb">the source</a> and <a href="https://example.com/x">'
            "an external link</a>. A Colab link in the prose is no launch button: "
            f'<a href="{GOOD_COLAB.format("sub/text")}">text on Colab</a>.</p>'
            '<div class="math">\\[ \\sum_i x_i \\]</div>'
            + cell("print(1 + 1)", "2")
            + cell("plot()", extra='<img src="_images/fig.png" alt="a figure">')
            + "<pre><code>$$ code may show TeX: \\begin{align} \\( \\[ $$</code></pre></section>",
            colab=GOOD_COLAB.format("good"),
        ),
    )
    write(html, "sub/text.html", page("sub/text", '<h1>Text</h1><section id="part-two"><a name="old-anchor"></a>Two</section>'))
    return html


def broken_site(repo: Path) -> Path:
    """The clean site plus one page per kind of problem."""
    html = clean_site(repo)
    for name in ["outputs", "colab-wrong", "colab-none", "colab-two"]:
        write(repo, f"{name}.ipynb", "{}")
    for name in ["raw-tex", "untypeset", "no-mathjax", "offhost", "broken-image", "links", "colab-on-md", "js-error",
                 "wide"]:
        write(repo, f"{name}.md", "# x")
    pages = {
        "raw-tex": "<p>Display math that MyST did not parse: $$ a + b $$</p><p>and \\begin{align} x \\end{align}</p>",
        "untypeset": '<p><span class="math">\\(a\\)</span> <span class="math stub-skip">\\(b + c\\)</span></p>',
        "offhost": '<script src="http://cdn.example.invalid/mathjax.js"></script>'
        '<p><img src="https://images.example.invalid/pic.png"><a href="https://example.com/">fine</a></p>',
        "broken-image": '<p><img src="_images/missing.png" alt="gone"></p>',
        "links": '<p id="here"><a href="nothere.html">a</a> <a href="good.html#nope">b</a> <a href="#missing-here">c</a> '
        '<a href="#here">d</a> <a href="sub/text.html#old-anchor">e</a></p>',
        "js-error": "<script>console.error('something broke'); throw new Error('boom');</script>",
        # 300 characters: wider than any box at 1280 pixels, unless the block wraps its lines
        "wide": cell("wide_code = 1  # " + "c" * 300, "short output")
        + cell("print(x)", "o" * 300)
        + '<details><summary>solution</summary>' + cell("hidden = 2  # " + "h" * 300) + "</details>"
        + cell("fits = 3", '<span style="white-space: pre-wrap">' + "w " * 300 + "</span>")
        + '<section><h2>Plain</h2><pre style="white-space: pre-wrap">' + "p " * 300 + "</pre></section>",
        "outputs": cell("import warnings", "/usr/lib/python3/site-packages/x.py:3: UserWarning: careful\n  warn(msg)")
        + cell("1/0", "Traceback (most recent call last):\nZeroDivisionError: division by zero")
        + cell("print(colour)", "\x1b[31mred\x1b[0m")
        + cell("log()", extra='<div class="output stderr"><pre>some text on stderr</pre></div>')
        + cell("ok()", "all fine")
        + cell("show(err)", "ValueError: vocab_size must be at least 257")
        + cell("raise", "Traceback (most recent call last):\nValueError: on purpose", classes="tag_raises-exception"),
    }
    for name, body in pages.items():
        write(html, f"{name}.html", page(name, f"<h1>{name}</h1>{body}", mathjax=name != "no-mathjax"))
    write(html, "no-mathjax.html", page("no-mathjax", '<p><span class="math">\\(z\\)</span></p>', mathjax=False))
    write(html, "colab-wrong.html", page("colab-wrong", "<h1>w</h1>", colab=GOOD_COLAB.format("colab-wrong").replace("/main/", "/master/")))
    write(html, "colab-none.html", page("colab-none", "<h1>n</h1>"))
    write(html, "colab-two.html", page("colab-two", "<h1>t</h1>", colab=GOOD_COLAB.format("colab-two"), buttons=2))
    write(html, "colab-on-md.html", page("colab-on-md", "<h1>m</h1>", colab=GOOD_COLAB.format("colab-on-md")))
    write(html, "orphan.html", page("orphan", "<h1>no source file in the repository</h1>"))
    write(html, "moved.html", '<meta http-equiv="refresh" content="0; url=gone.html" />')
    # Sphinx's own pages are only loaded: their links are not checked
    write(html, "genindex.html", page("genindex", '<a href="nothere.html">x</a>'))
    return html


def run(html: Path, *args: str) -> tuple[int, dict[str, list[str]], str]:
    # In a process of its own: Playwright's synchronous API runs its own event loop, which can hang in a
    # pytest worker whose asyncio was patched by an earlier notebook test (nbval, jupyter_client).
    # Up to two retries if the browser session hung (exit code 3 from the check's watchdog), which happens
    # when the notebooks' tests load both cores at the same time (once, on 2026-11-29, twice in a row).
    for _ in range(3):
        proc = subprocess.run([sys.executable, str(TOOL), str(html), *args, "--deadline", "150"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        if proc.returncode != 3:
            break
    rc, text = proc.returncode, proc.stdout
    problems: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"(OK|FAIL)\s+(\S+)", line)
        if m:
            current = m.group(2)
            problems[current] = []
        elif line.strip().startswith("- ") and current:
            problems[current].append(line.strip()[2:])
    return rc, problems, text


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    repo = tmp_path_factory.mktemp("broken")
    html = broken_site(repo)
    return run(html, "--screenshots", str(repo / "shots"), "--timeout", "15") + (repo,)


def has(problems: list[str], *patterns: str) -> bool:
    return any(all(re.search(p, msg) for p in patterns) for msg in problems)


def test_clean_site_passes(tmp_path):
    html = clean_site(tmp_path)
    rc, problems, text = run(html, "--screenshots", str(tmp_path / "shots"))
    assert rc == 0, text
    assert set(problems) == {"good.html", "index.html", "sub/text.html"}
    assert all(not p for p in problems.values()), text
    assert "3 pages, 3 OK" in text
    for name in ["good.png", "sub/text.png"]:
        assert (tmp_path / "shots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_site_fails_and_clean_pages_stay_clean(broken):
    rc, problems, text, _ = broken
    assert rc == 1
    for ok in ["good.html", "sub/text.html", "index.html", "genindex.html"]:
        assert problems[ok] == [], (ok, text)
    assert re.search(r"site check: \d+ pages, 4 OK", text)


def test_math(broken):
    _, problems, text, _ = broken
    assert has(problems["raw-tex.html"], r"raw TeX \$\$ in the text", "a \\+ b")
    assert has(problems["raw-tex.html"], r"raw TeX \\begin\{ in the text")
    assert has(problems["untypeset.html"], "1 of 2 math elements not typeset", "b \\+ c")
    assert has(problems["no-mathjax.html"], "MathJax did not load")


def test_network_requests(broken):
    _, problems, text, _ = broken
    assert has(problems["offhost.html"], "loads from the network", "cdn.example.invalid/mathjax.js")
    assert has(problems["offhost.html"], "loads from the network", "images.example.invalid")
    assert not has(problems["offhost.html"], "example.com"), "a plain external link is not a request"


def test_images(broken):
    _, problems, text, _ = broken
    assert has(problems["broken-image.html"], "image did not load", "_images/missing.png")
    assert has(problems["broken-image.html"], "HTTP 404", "_images/missing.png")


def test_cell_outputs(broken):
    _, problems, text, _ = broken
    msgs = problems["outputs.html"]
    assert has(msgs, r"cell 1 \[import warnings\]", "'Warning:'|'site-packages'", "UserWarning: careful")
    assert has(msgs, r"cell 1 ", r"'warn\('")
    assert has(msgs, r"cell 2 \[1/0\]", "'Traceback'")
    assert has(msgs, r"cell 3 ", r"'\\x1b\['")
    assert has(msgs, r"cell 4 \[log\(\)\]", "stderr", "some text on stderr")
    assert not has(msgs, "cell 5") and not has(msgs, "cell 6") and not has(msgs, "cell 7")


def test_blocks_wider_than_their_box(broken):
    rc, problems, text, _ = broken
    wide = problems["wide.html"]
    assert has(wide, r"cell 1 code is wider than its box", r"wide_code = 1")
    assert has(wide, r"cell 2 output is wider than its box", r"oooo")
    assert has(wide, r"cell 3 code is wider than its box", r"hidden = 2"), "a collapsed solution is measured too"
    assert len(wide) == 3, wide  # wrapped lines fit their box


def test_links(broken):
    _, problems, text, _ = broken
    msgs = problems["links.html"]
    assert has(msgs, "broken link: nothere.html", "404")
    assert has(msgs, "broken anchor: good.html#nope")
    assert has(msgs, "broken anchor: links.html#missing-here")
    assert not has(msgs, "#here\\b") and not has(msgs, "old-anchor")
    assert has(problems["moved.html"], "redirects to gone.html")


def test_colab_buttons(broken):
    _, problems, text, _ = broken
    assert has(problems["colab-wrong.html"], "Colab button points at .*/blob/master/colab-wrong.ipynb", "expected .*/blob/main/colab-wrong.ipynb")
    assert has(problems["colab-none.html"], "0 Colab buttons, expected 1")
    assert has(problems["colab-two.html"], "2 Colab buttons, expected 1")
    assert has(problems["colab-on-md.html"], "built from colab-on-md.md has a Colab button")
    assert has(problems["orphan.html"], "no source file orphan")


def test_javascript_errors(broken):
    _, problems, text, _ = broken
    assert has(problems["js-error.html"], "JavaScript error", "boom")
    assert has(problems["js-error.html"], "console error", "something broke")


def test_screenshots(broken):
    _, problems, text, repo = broken
    shots = repo / "shots"
    for name in ["good.png", "sub/text.png", "outputs.png", "genindex.png"]:
        assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_missing_site_is_a_usage_error(tmp_path, capsys):
    assert check_site.main([str(tmp_path / "nothing")]) == 2
    assert "no built site" in capsys.readouterr().err


STALL_SCRIPT = """
import sys, time
sys.path.insert(0, {tools!r})
import check_site
dog = check_site._StallWatchdog(0.6)
for i in range({kicks}):
    dog.kick(f"page{{i}}.html")
    time.sleep(0.2)
time.sleep({wait})
dog.cancel()
print("finished")
"""


@pytest.mark.parametrize("kicks, wait, rc", [(10, 0.0, 0), (2, 3.0, 3)])
def test_stall_watchdog(kicks, wait, rc):
    # pages that keep starting within the limit never trip it; a page that outlasts it ends the
    # process with exit code 3 and names the page
    code = STALL_SCRIPT.format(tools=str(TOOL.parent), kicks=kicks, wait=wait)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    if rc == 0:
        assert proc.stdout.strip() == "finished"
    else:
        assert "page1.html took more than 0.6 s" in proc.stdout and "finished" not in proc.stdout
