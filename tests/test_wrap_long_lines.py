"""tools/wrap_long_lines.py: long comments, strings and docstrings are split, the code's meaning kept."""

from __future__ import annotations

import ast
import textwrap

import wrap_long_lines as w

SOURCE = textwrap.dedent('''\
    def check(n: int) -> int:
        """Return n, after checking it: a docstring whose first line is much longer than the column holds."""
        # a comment on its own line that is far too long for the website's column of seventy-nine characters
        if n < 0:
            raise ValueError(f"n must be at least 0, got {n!r}; negative sizes make no sense here, and {n} is one")
        x = n + 1  # a trailing comment that pushes this short line of code far past the edge of the column
        return n
    message = "a plain string at the top level of a cell, long enough that it cannot stay on one line"
    ''')


def _run(src: str) -> str:
    for _ in range(6):
        new = w.wrap_source(src)
        if new == src:
            return src
        src = new
    return src


def test_everything_fits_and_means_the_same():
    out = _run(SOURCE)
    assert max(len(line) for line in out.split("\n")) <= w.WIDTH, out
    ns_before, ns_after = {}, {}
    exec(SOURCE, ns_before)
    exec(out, ns_after)
    assert ns_after["message"] == ns_before["message"]
    try:
        ns_after["check"](-1)
    except ValueError as e:
        after = str(e)
    try:
        ns_before["check"](-1)
    except ValueError as e:
        before = str(e)
    assert after == before
    assert " ".join(ns_after["check"].__doc__.split()) == " ".join(ns_before["check"].__doc__.split())
    assert "x = n + 1" in out and "# a trailing comment" in out


def test_leaves_alone_what_it_cannot_split_safely():
    magic = "%pip install -q 'gptlib @ git+https://github.com/example/a-very-long-repository-name-indeed'\n"
    assert w.wrap_source(magic) == magic  # IPython syntax: not Python, left alone
    code = 'data = b"' + "x" * 100 + '"\n'  # no space to split at
    assert w.wrap_source(code) == code
    value = 'text = """' + "word " * 30 + '"""\n'  # a triple-quoted value, not a docstring
    assert w.wrap_source(value) == value


def _first_argument(src: str, env: dict) -> str:
    call = ast.parse(src).body[0].value
    return eval(compile(ast.Expression(call.args[0]), "<cell>", "eval"), env)


def test_f_strings_split_outside_their_fields():
    src = 'print(f"{a} and {b} are both here, {a + b:>10} is their sum, and this line goes on and on")\n'
    out = _run(src)
    assert max(len(line) for line in out.split("\n")) <= w.WIDTH, out
    assert out.count("\n") > 1
    env = {"a": 1, "b": 2}
    assert _first_argument(out, env) == _first_argument(src, env)


def test_a_comment_after_a_closing_bracket_moves_above_its_statement():
    src = "if True:\n    _, w = mha(\n        x, x, x, attn_mask=~causal\n    )  # True = masked out\n"
    out = w.lift_closing_comments(src)
    assert out == "if True:\n    # True = masked out\n    _, w = mha(\n        x, x, x, attn_mask=~causal\n    )\n"
    assert w._ast_dump(out) == w._ast_dump(src)
    inner = "f(\n    g(\n        1\n    ),  # one\n)\n"  # inside an outer call: left where it is
    assert w.lift_closing_comments(inner) == inner


def test_a_verbose_regex_is_not_a_docstring():
    """White space in any string but a docstring is part of its value (a verbose regex's comments
    end at the line's end): the check refuses to move it."""
    regex = 'R = re.compile(\n    r"""\n    a  # one\n    b  # two\n    """,\n    re.VERBOSE,\n)\n'
    joined = 'R = re.compile(\n    r""" a  # one b  # two """,\n    re.VERBOSE,\n)\n'
    assert not w._same(joined, w._ast_dump(regex))
    assert w.wrap_source(regex) == regex
