"""The ternary `cond ? a : b`, rewritten into Jinja's `(a if cond else b)` before parsing.

Jinja's lexer has no `?` operator, so the source is rewritten first. The rewrite tokenises every
`{{ ... }}` block the way Jinja's lexer does (string literals are opaque, brackets nest, the block
ends at `}}` only outside brackets), so a `?` or `:` inside a string literal, a dict literal
`{'a': 1}` or a slice `x[1:2]` is never mistaken for the ternary. Within one bracket level, a `:`
that follows a pending `?` belongs to the ternary; any other `:` is a dict or slice separator.

Semantics, as in C: the ternary has the lowest precedence (`a or b ? x : y | upper` is
`(a or b) ? x : (y | upper)`) and nests to the right (`a ? b : c ? d : e` is `a ? b : (c ? d : e)`).
It is allowed anywhere inside `{{ ... }}`, and inside brackets in `{% ... %}` statements:
`{% set x = (ok ? 1 : 2) %}`. Text outside blocks, comments and `{% raw %}` sections are untouched;
newlines are kept, so line numbers in later error messages still match the original source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jinja2.exceptions import TemplateSyntaxError

__all__ = ["rewrite_ternary"]

_BLOCK_START = re.compile(r"\{[{%#]")
_RAW_START = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_TOKEN = re.compile(
    r"""
    (?P<str>'[^'\\]*(?:\\.[^'\\]*)*'|"[^"\\]*(?:\\.[^"\\]*)*")
    |(?P<ws>\s+)
    |(?P<op>==|!=|<=|>=)
    |(?P<special>[()\[\]{}?:,=])
    |(?P<word>\w+(?:\.\w+)*)
    |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_IDENT = re.compile(r"[^\W\d]\w*\Z")
_OPEN_TO_CLOSE = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = frozenset(")]}")


@dataclass(slots=True)
class _Tok:
    kind: str  # "str", "ws", "op", "special", "word", "other"
    text: str
    pos: int


@dataclass(slots=True)
class _Group:
    open: _Tok
    items: list[_Tok | _Group] = field(default_factory=list)
    close: _Tok | None = None


_Atom = _Tok | _Group


def rewrite_ternary(source: str) -> str:
    """Return `source` with every `cond ? a : b` rewritten to `((a) if (cond) else (b))`.

    Sources without a `?` are returned unchanged (and quickly). Raises Jinja's
    `TemplateSyntaxError` for a `?` without its `:` or with an empty operand.
    """
    if "?" not in source:
        return source
    out: list[str] = []
    pos = 0
    n = len(source)
    while pos < n:
        m = _BLOCK_START.search(source, pos)
        if m is None:
            break
        start = m.start()
        out.append(source[pos:start])
        opener = m.group()
        if opener == "{#":
            end = source.find("#}", start + 2)
            if end < 0:
                break  # unterminated comment: leave it to Jinja's error
            out.append(source[start : end + 2])
            pos = end + 2
            continue
        if opener == "{%":
            raw = _RAW_START.match(source, start)
            if raw is not None:
                end_m = _RAW_END.search(source, raw.end())
                if end_m is None:
                    break
                out.append(source[start : end_m.end()])
                pos = end_m.end()
                continue
        block = _scan_block(source, start, statement=opener == "{%")
        if block is None:
            break  # unterminated block: leave it to Jinja's error
        text, pos = block
        out.append(text)
    out.append(source[pos:])
    return "".join(out)


def _scan_block(source: str, start: int, *, statement: bool) -> tuple[str, int] | None:
    """Rewrite the block starting at `start`; return (new text, position after the block)."""
    pos = start + 2
    head_end = pos + 1 if source[pos : pos + 1] in ("-", "+") else pos
    head = source[start:head_end]
    pos = head_end
    root = _Group(_Tok("special", "", start))
    stack: list[_Group] = [root]
    n = len(source)
    while pos < n:
        if len(stack) == 1:
            end = _block_end(source, pos, statement=statement)
            if end is not None:
                body = _convert_level(root.items, top=not statement, source=source)
                return head + body + source[pos:end], end
        m = _TOKEN.match(source, pos)
        if m is None:  # pragma: no cover - the pattern matches any character
            return None
        kind = m.lastgroup or "other"
        tok = _Tok(kind, m.group(), pos)
        pos = m.end()
        if kind == "special" and tok.text in _OPEN_TO_CLOSE:
            group = _Group(tok)
            stack[-1].items.append(group)
            stack.append(group)
        elif kind == "special" and tok.text in _CLOSERS and len(stack) > 1:
            group = stack.pop()
            group.close = tok
        else:
            stack[-1].items.append(tok)
    return None


def _block_end(source: str, pos: int, *, statement: bool) -> int | None:
    if statement:
        for marker in ("-%}", "+%}", "%}"):
            if source.startswith(marker, pos):
                return pos + len(marker)
        return None
    for marker in ("-}}", "}}"):
        if source.startswith(marker, pos):
            return pos + len(marker)
    return None


def _text(atoms: list[_Atom], source: str) -> str:
    parts: list[str] = []
    for atom in atoms:
        if isinstance(atom, _Tok):
            parts.append(atom.text)
        else:
            parts.append(atom.open.text)
            parts.append(_convert_level(atom.items, top=True, source=source))
            if atom.close is not None:
                parts.append(atom.close.text)
    return "".join(parts)


def _is(atom: _Atom, text: str) -> bool:
    return isinstance(atom, _Tok) and atom.kind == "special" and atom.text == text


def _convert_level(atoms: list[_Atom], *, top: bool, source: str) -> str:
    """Convert one bracket level; `top` is False at the top level of a `{% %}` statement."""
    question = next((a for a in atoms if _is(a, "?")), None)
    if question is None:
        return _text(atoms, source)
    if not top:
        assert isinstance(question, _Tok)
        raise TemplateSyntaxError(
            "inside {% ... %} the ternary needs parentheses: (cond ? a : b)",
            source.count("\n", 0, question.pos) + 1,
        )
    parts: list[str] = []
    item: list[_Atom] = []
    for atom in atoms:
        if _is(atom, ","):
            parts.append(_convert_item(item, source))
            parts.append(",")
            item = []
        else:
            item.append(atom)
    parts.append(_convert_item(item, source))
    return "".join(parts)


def _convert_item(atoms: list[_Atom], source: str) -> str:
    """Split one comma-separated item on dict/slice colons and convert each segment."""
    parts: list[str] = []
    segment: list[_Atom] = []
    pending = 0
    for atom in atoms:
        if _is(atom, "?"):
            pending += 1
        elif _is(atom, ":"):
            if pending:
                pending -= 1
            else:
                parts.append(_convert_segment(segment, source))
                parts.append(":")
                segment = []
                continue
        segment.append(atom)
    parts.append(_convert_segment(segment, source))
    return "".join(parts)


def _convert_segment(atoms: list[_Atom], source: str) -> str:
    # Keep a keyword argument's `name=` out of the condition: `f(size=ok ? 1 : 2)`.
    significant = [i for i, a in enumerate(atoms) if not (isinstance(a, _Tok) and a.kind == "ws")]
    if len(significant) >= 2:
        first, second = atoms[significant[0]], atoms[significant[1]]
        if (
            isinstance(first, _Tok)
            and first.kind == "word"
            and _IDENT.match(first.text)
            and _is(second, "=")
        ):
            cut = significant[1] + 1
            return _text(atoms[:cut], source) + _ternary(atoms[cut:], source)
    return _ternary(atoms, source)


def _ternary(atoms: list[_Atom], source: str) -> str:
    q = next((i for i, a in enumerate(atoms) if _is(a, "?")), None)
    if q is None:
        return _text(atoms, source)
    depth = 0
    colon = None
    for j in range(q + 1, len(atoms)):
        if _is(atoms[j], "?"):
            depth += 1
        elif _is(atoms[j], ":"):
            if depth == 0:
                colon = j
                break
            depth -= 1
    mark = atoms[q]
    assert isinstance(mark, _Tok)
    lineno = source.count("\n", 0, mark.pos) + 1
    if colon is None:
        raise TemplateSyntaxError("ternary '?' without its ':' (cond ? a : b)", lineno)
    cond, then, other = atoms[:q], atoms[q + 1 : colon], atoms[colon + 1 :]
    for part, name in ((cond, "condition"), (then, "value after '?'"), (other, "value after ':'")):
        if not _text(part, source).strip():
            raise TemplateSyntaxError(f"ternary with an empty {name} (cond ? a : b)", lineno)
    then_text, cond_text, other_text = (
        _ternary(then, source),
        _text(cond, source),
        _ternary(other, source),
    )
    return f"(({then_text}) if ({cond_text}) else ({other_text}))"
