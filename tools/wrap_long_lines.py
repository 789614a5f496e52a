#!/usr/bin/env python3
"""Wrap the code lines of the book's notebooks that the formatter leaves too long.

    python tools/wrap_long_lines.py [NOTEBOOK ...]     # default: every notebook under chapters/

`ruff format` lays code out to the line length the website's column holds, but it never splits a
comment, a string or a docstring. This tool does, without changing what the code does:

- a comment is re-wrapped over several comment lines (a trailing comment first moves above its line);
- a one-line string literal is split into adjacent literals at a space (Python joins adjacent
  literals when it reads them), inside the brackets around it or inside new parentheses;
- a line of a docstring is split at a space, the rest continuing with the same indentation.

Cells with IPython syntax (magics, shell escapes) and lines it cannot split safely are left alone;
`tests/test_book.py` names whatever is still too long. Run `make export` afterwards, which formats
the notebooks again and regenerates gptlib/.
"""

from __future__ import annotations

import io
import json
import re
import sys
import textwrap
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 79
QUOTE = re.compile(r"^([A-Za-z]*)(['\"])(.*)\2$", re.DOTALL)


def _split_point(body: str, limit: int, is_f: bool) -> int | None:
    """Largest i <= limit with body[i - 1] a space outside an f-string's braces, or None."""
    depth, best = 0, None
    i = 0
    while i < len(body) and i <= limit:
        ch = body[i]
        if is_f and ch in "{}":
            if i + 1 < len(body) and body[i + 1] == ch and depth == 0:
                i += 2
                continue
            depth += 1 if ch == "{" else -1
        elif ch == "\\":
            i += 2
            continue
        elif ch == " " and depth == 0 and 10 < i + 1 < len(body):
            if i + 1 <= limit:
                best = i + 1
        i += 1
    return best


def _literal(prefix: str, q: str, body: str) -> str:
    if "f" in prefix.lower() and "{" not in body and "}" not in body:
        prefix = prefix.replace("f", "").replace("F", "")
    return f"{prefix}{q}{body}{q}"


def _wrap_comment(indent: str, text: str) -> list[str]:
    width = max(30, WIDTH - len(indent) - 2)
    return [f"{indent}# {part}" for part in textwrap.wrap(text, width, break_long_words=False)]


def wrap_source(src: str) -> str:
    """One pass over a cell's source; returns the new source (unchanged if nothing was safe)."""
    lines = src.split("\n")
    if not any(len(line) > WIDTH for line in lines):
        return src
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return src
    edits: dict[int, list[str]] = {}  # 0-based line -> replacement lines
    depth = 0
    prev_sig = None
    for tok in tokens:
        row, col = tok.start[0] - 1, tok.start[1]
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        line = lines[row] if row < len(lines) else ""
        if tok.type == tokenize.STRING and _triple(tok.string):
            pass
        elif row in edits or len(line) <= WIDTH:
            pass
        elif tok.type == tokenize.COMMENT and not tok.string.startswith("#|"):
            indent = line[: len(line) - len(line.lstrip())]
            text = tok.string.lstrip("#").strip()
            code = line[:col].rstrip()
            if not code:
                edits[row] = _wrap_comment(indent, text)
            elif len(code) <= WIDTH:
                edits[row] = _wrap_comment(indent, text) + [code]
        elif (
            tok.type == tokenize.STRING
            and not _triple(tok.string)
            and tok.end[1] > WIDTH
        ):
            m = QUOTE.match(tok.string)
            if m and len(tok.string) > 20:
                prefix, q, body = m.groups()
                head = col + len(prefix) + 1
                cut = _split_point(body, WIDTH - 1 - head, "f" in prefix.lower())
                if cut:
                    first = _literal(prefix, q, body[:cut])
                    second = _literal(prefix, q, body[cut:])
                    before, after = line[:col], line[tok.end[1] :]
                    if depth > 0:
                        edits[row] = [before + first, " " * col + second + after]
                    elif before.strip() and not before.rstrip().endswith(("=", ",", "(", "assert", "return")):
                        pass
                    else:
                        edits[row] = [before + "(" + first, " " * (col + 1) + second + ")" + after]
        if tok.type == tokenize.STRING and _triple(tok.string):
            is_docstring = prev_sig is None or prev_sig.type in (
                tokenize.NEWLINE,
                tokenize.INDENT,
                tokenize.DEDENT,
            )
            if is_docstring and not line[:col].strip():
                for r in range(tok.start[0] - 1, tok.end[0]):
                    ln = lines[r]
                    if len(ln) <= WIDTH or r in edits:
                        continue
                    first = r == tok.start[0] - 1
                    indent = " " * col if first else ln[: len(ln) - len(ln.lstrip())]
                    parts = textwrap.wrap(
                        ln.strip(),
                        WIDTH - len(indent),
                        break_long_words=False,
                        break_on_hyphens=False,
                    )
                    edits[r] = [indent + p for p in parts]
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            prev_sig = tok
    if not edits:
        return src
    reference = _ast_dump(src)
    new = _apply(lines, edits)
    if _same(new, reference):
        return new
    kept: dict[int, list[str]] = {}  # some edit was unsafe: keep the ones that are safe alone
    for row, repl in edits.items():
        if _same(_apply(lines, {**kept, row: repl}), reference):
            kept[row] = repl
    return _apply(lines, kept)


def _triple(literal: str) -> bool:
    body = literal.lstrip("rRbBfFuU")
    return body[:3] in ('"""', "'''")


def _apply(lines: list[str], edits: dict[int, list[str]]) -> str:
    out: list[str] = []
    for i, line in enumerate(lines):
        out.extend(edits.get(i, [line]))
    return "\n".join(out)


def _same(new: str, reference: str) -> bool:
    try:
        return _ast_dump(new) == reference
    except SyntaxError:
        return False


def _ast_dump(src: str) -> str:
    """The code's AST, with only docstrings' white space normalised (wrapping may move it there;
    anywhere else a change of white space changes a value, and is refused)."""
    import ast

    tree = ast.parse(src)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    first.value.value = " ".join(first.value.value.split())
    return ast.dump(_merge_joined(tree))


def _merge_joined(tree):
    import ast

    class Merge(ast.NodeTransformer):  # f"a {x} " f"b" and f"a {x} b": the same parts
        def visit_JoinedStr(self, node):
            self.generic_visit(node)
            merged: list = []
            for v in node.values:
                if merged and isinstance(v, ast.Constant) and isinstance(merged[-1], ast.Constant):
                    merged[-1] = ast.Constant(merged[-1].value + v.value)
                else:
                    merged.append(v)
            node.values = merged
            return node

    return Merge().visit(tree)


CLOSING_COMMENT = re.compile(r"^\s*[)\]}]+[:,]?\s+(#.*)$")


def lift_closing_comments(src: str) -> str:
    """Move a comment that the formatter left after a lone closing bracket (a call it split because
    the comment made the line too long) above the statement, so the formatter can join the call."""
    lines = src.split("\n")
    if not any(CLOSING_COMMENT.match(line) for line in lines):
        return src
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return src
    stack: list[int] = []  # rows of the open brackets
    moves: dict[int, int] = {}  # row of the comment -> row of the statement's first bracket
    for tok in tokens:
        if tok.type == tokenize.OP and tok.string in "([{":
            stack.append(tok.start[0] - 1)
        elif tok.type == tokenize.OP and tok.string in ")]}" and stack:
            opened = stack.pop()
            row = tok.start[0] - 1
            if not stack and row != opened and CLOSING_COMMENT.match(lines[row]):
                moves[row] = opened
    if not moves:
        return src
    above: dict[int, list[str]] = {}
    out = list(lines)
    for row, opened in moves.items():
        comment = CLOSING_COMMENT.match(lines[row]).group(1)
        out[row] = lines[row][: lines[row].index(comment)].rstrip()
        start = opened
        while start > 0 and lines[start - 1].rstrip().endswith(("\\",)):
            start -= 1
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        above.setdefault(start, []).append(indent + comment)
    result: list[str] = []
    for i, line in enumerate(out):
        result.extend(above.get(i, []))
        result.append(line)
    new = "\n".join(result)
    try:
        reference = _ast_dump(src)
    except SyntaxError:  # IPython syntax
        return src
    return new if _same(new, reference) else src


def wrap_notebook(path: Path) -> int:
    nb = json.loads(path.read_text(encoding="utf-8"))
    changed = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        new = lift_closing_comments(src)
        for _ in range(6):
            nxt = wrap_source(new)
            if nxt == new:
                break
            new = nxt
        if new != src:
            changed += 1
            cell["source"] = new.splitlines(keepends=True)
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "chapters").rglob("*.ipynb"))
    for p in paths:
        n = wrap_notebook(p)
        if n:
            print(f"{p}: {n} cells wrapped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
