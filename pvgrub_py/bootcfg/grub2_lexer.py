"""Tokens of GRUB 2's shell-like script language.

The rules follow the GRUB manual, "Shell-like scripting" (quoting and
variable expansion) and GRUB's lexer (``grub-core/script/yylex.l``):

* Blanks are space and tab; a newline is a token of its own.  ``;``, ``{``,
  ``}`` are tokens even inside what looks like a word (``{linux /vmlinux}``
  is ``{``, ``linux``, ``/vmlinux``, ``}``).  ``|``, ``&``, ``<``, ``>`` are
  tokens GRUB's grammar has no use for; we return them as `Kind.BAD`.
* ``#`` starts a comment only where a token could start; ``a#b`` is a word.
* A backslash outside quotes keeps the next character literally;
  backslash-newline is a line continuation.
* Single quotes keep everything literally, newlines included.
* Double quotes keep everything except ``$`` (expansion) and a backslash
  before ``$``, ``"``, ``\\`` or newline.  ``$"..."`` (gettext) is read as a
  plain double-quoted string.
* Variables: ``$name``, ``${name}``, ``$1``/``${10}`` (positional),
  ``$?``, ``$#``, ``$*``, ``$@``; a ``$`` that starts none of these is
  literal.

A word is kept as a sequence of `Lit` and `Var` parts with their quoting,
because GRUB splits the value of an *unquoted* variable into several
arguments and keeps a quoted one whole (see `grub2_expand`).  An opening
quote always contributes a (possibly empty) quoted `Lit`, which is how
``""`` and ``"$unset"`` still produce an (empty) argument.
"""

from __future__ import annotations

import enum
import re

from pvgrub_py.record import record


class Kind(enum.Enum):
    WORD = "word"
    NEWLINE = "newline"
    SEMI = ";"
    LBRACE = "{"
    RBRACE = "}"
    BAD = "bad"
    EOF = "end of file"


@record(slots=True)
class Lit:
    """Literal text; ``quoted`` when it came from quotes or a backslash."""

    text: str
    quoted: bool


@record(slots=True)
class Var:
    """A variable reference; ``quoted`` when inside double quotes."""

    name: str
    quoted: bool


Part = Lit | Var


@record(slots=True)
class Token:
    kind: Kind
    line: int
    parts: tuple[Part, ...] = ()
    raw: str = ""

    @property
    def plain(self) -> str | None:
        """The text of a word made of one unquoted literal (keywords, names)."""
        if self.kind is Kind.WORD and len(self.parts) == 1:
            part = self.parts[0]
            if isinstance(part, Lit) and not part.quoted:
                return part.text
        return None

    def describe(self) -> str:
        if self.kind is Kind.WORD:
            return repr(self.raw[:40])
        if self.kind is Kind.BAD:
            return self.raw
        return str(self.kind.value)


_PLAIN = re.compile(r"[^ \t\n;{}|&<>$'\"\\]+")
_DQ_PLAIN = re.compile(r'[^"\\$]+')
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_BRACED = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[?#*@])\}")
_BLANKS = " \t\r\f\v"
_WORD_END = frozenset(" \t\n;{}|&<>")


class _WordBuilder:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[Part] = []

    def lit(self, text: str, quoted: bool) -> None:
        if self.parts:
            last = self.parts[-1]
            if isinstance(last, Lit) and last.quoted == quoted:
                self.parts[-1] = Lit(last.text + text, quoted)
                return
        self.parts.append(Lit(text, quoted))

    def var(self, name: str, quoted: bool) -> None:
        self.parts.append(Var(name, quoted))


def _variable(text: str, i: int) -> tuple[str, int] | None:
    """Parse a variable reference at ``text[i] == '$'``: (name, end) or None."""
    j = i + 1
    if j >= len(text):
        return None
    c = text[j]
    if c == "{":
        m = _BRACED.match(text, j)
        if m is None:
            return None
        return m.group(1), m.end()
    if c in "?#*@":
        return c, j + 1
    m = _NAME.match(text, j) or _DIGITS.match(text, j)
    if m is None:
        return None
    return m.group(0), m.end()


class _Unterminated(Exception):
    pass


def _double_quoted(text: str, i: int, word: _WordBuilder) -> tuple[int, int]:
    """Read a double-quoted string starting after its opening quote.

    Returns (index after the closing quote, newlines consumed).
    """
    n = len(text)
    newlines = 0
    word.lit("", True)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1, newlines
        if c == "\\":
            if i + 1 < n and text[i + 1] in '$"\\':
                word.lit(text[i + 1], True)
                i += 2
                continue
            if i + 1 < n and text[i + 1] == "\n":
                newlines += 1
                i += 2
                continue
            word.lit("\\", True)
            i += 1
            continue
        if c == "$":
            ref = _variable(text, i)
            if ref is None:
                word.lit("$", True)
                i += 1
            else:
                word.var(ref[0], True)
                i = ref[1]
            continue
        m = _DQ_PLAIN.match(text, i)
        assert m is not None
        chunk = m.group(0)
        newlines += chunk.count("\n")
        word.lit(chunk, True)
        i = m.end()
    raise _Unterminated("unterminated double quote")


#: A word with no quotes, variables or escapes: the common case, lexed in one step.
_SIMPLE_WORD = re.compile(
    r"[^ \t\n\r\f\v;{}|&<>$'\"\\#][^ \t\n\r\f\v;{}|&<>$'\"\\]*"
    r"(?=[ \t\n\r\f\v;{}|&<>]|\Z)"
)
_SKIP = re.compile(r"[ \t\r\f\v]+")
_SINGLE = {";": Kind.SEMI, "{": Kind.LBRACE, "}": Kind.RBRACE}


def tokenize(text: str) -> list[Token]:
    """Split GRUB script text into tokens; lexical errors become `Kind.BAD`.

    An unterminated quote swallows the rest of the file, as GRUB keeps
    asking for continuation lines until the end of the input.
    """
    toks: list[Token] = []
    append = toks.append
    simple = _SIMPLE_WORD.match
    skip = _SKIP.match
    i = 0
    n = len(text)
    line = 1
    while i < n:
        c = text[i]
        if c in _BLANKS:
            m = skip(text, i)
            assert m is not None
            i = m.end()
            continue
        if c == "\n":
            append(Token(Kind.NEWLINE, line))
            line += 1
            i += 1
            continue
        m = simple(text, i)
        if m is not None:
            word = m.group(0)
            append(Token(Kind.WORD, line, (Lit(word, False),), word))
            i = m.end()
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        kind = _SINGLE.get(c)
        if kind is not None:
            append(Token(kind, line))
            i += 1
            continue
        if c in "|&<>":
            append(Token(Kind.BAD, line, raw=f"unexpected {c!r}"))
            i += 1
            continue
        if c == "\\" and i + 1 < n and text[i + 1] == "\n":
            line += 1
            i += 2
            continue
        i, line = _complex_word(text, i, line, toks)
    toks.append(Token(Kind.EOF, line))
    return toks


def _complex_word(text: str, i: int, line: int, toks: list[Token]) -> tuple[int, int]:
    """Lex a word with quotes, variables or escapes; returns (index, line)."""
    n = len(text)
    start, start_line = i, line
    word = _WordBuilder()
    try:
        while i < n:
            c = text[i]
            if c in _WORD_END or c in _BLANKS:
                break
            if c == "\\":
                if i + 1 >= n:
                    word.lit("\\", False)
                    i += 1
                elif text[i + 1] == "\n":
                    line += 1
                    i += 2
                else:
                    word.lit(text[i + 1], True)
                    i += 2
            elif c == "'":
                j = text.find("'", i + 1)
                if j < 0:
                    raise _Unterminated("unterminated single quote")
                chunk = text[i + 1 : j]
                line += chunk.count("\n")
                word.lit(chunk, True)
                i = j + 1
            elif c == '"':
                i, nl = _double_quoted(text, i + 1, word)
                line += nl
            elif c == "$":
                if i + 1 < n and text[i + 1] == '"':
                    i, nl = _double_quoted(text, i + 2, word)
                    line += nl
                    continue
                ref = _variable(text, i)
                if ref is None:
                    word.lit("$", False)
                    i += 1
                else:
                    word.var(ref[0], False)
                    i = ref[1]
            else:
                m = _PLAIN.match(text, i)
                assert m is not None
                word.lit(m.group(0), False)
                i = m.end()
    except _Unterminated as exc:
        toks.append(Token(Kind.BAD, start_line, raw=str(exc)))
        return n, line + text.count("\n", i)
    toks.append(Token(Kind.WORD, start_line, tuple(word.parts), text[start:i]))
    return i, line
