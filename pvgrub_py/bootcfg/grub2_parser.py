"""Parse GRUB 2 script tokens into statements.

The grammar is the one of ``grub-core/script/parser.y`` restricted to what
configs use (GRUB manual, "Shell-like scripting"):

* simple commands: words up to ``;``/newline/``}``, optionally followed by a
  ``{ ... }`` block (how ``menuentry`` and ``submenu`` receive their body);
* ``if``/``elif``/``else``/``fi``, ``for NAME in WORDS; do ...; done``,
  ``while``/``until ...; do ...; done``, ``function NAME { ... }`` and
  ``! command``.

Keywords are recognised only where a command starts and only as unquoted
words, so ``echo fi`` and ``menuentry 'if'`` are ordinary arguments, as in
GRUB.  GRUB reads a config line by line and executes each complete
top-level command: a syntax error discards that command and parsing
resumes after the line where the error was seen.  `parse_script` does the
same and returns the errors next to the statements it kept.

We accept a few things GRUB's grammar rejects but that GRUB-compatible
parsers (petitboot) accept and real configs contain: empty bodies
(``{ }``) and several ``;`` in a row.
"""

from __future__ import annotations

from pvgrub_py.bootcfg.grub2_lexer import Kind, Token, tokenize
from pvgrub_py.record import record

#: A word is kept as the token the lexer produced (its parts and raw text).
Word = Token


@record(slots=True)
class SimpleCommand:
    words: tuple[Word, ...]
    block: tuple[Stmt, ...] | None
    line: int


@record(slots=True)
class IfCommand:
    branches: tuple[tuple[tuple[Stmt, ...], tuple[Stmt, ...]], ...]
    orelse: tuple[Stmt, ...] | None
    line: int


@record(slots=True)
class ForCommand:
    var: str
    words: tuple[Word, ...]
    body: tuple[Stmt, ...]
    line: int


@record(slots=True)
class WhileCommand:
    cond: tuple[Stmt, ...]
    body: tuple[Stmt, ...]
    until: bool
    line: int


@record(slots=True)
class FunctionDef:
    name: str
    body: tuple[Stmt, ...]
    line: int


@record(slots=True)
class NotCommand:
    cmd: Stmt
    line: int


Stmt = SimpleCommand | IfCommand | ForCommand | WhileCommand | FunctionDef | NotCommand


@record(frozen=True)
class Script:
    stmts: tuple[Stmt, ...]
    errors: tuple[tuple[int, str], ...]


class NestingTooDeep(Exception):
    """Blocks nested deeper than the parser's bound (not a GRUB syntax error)."""

    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"blocks nested deeper than {limit} levels")
        self.line = line


class _SyntaxError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SEPARATORS = (Kind.NEWLINE, Kind.SEMI)
#: Keywords that end a list; they cannot start a command.
_CLOSERS = frozenset({"then", "elif", "else", "fi", "do", "done", "in"})


class _Parser:
    def __init__(self, toks: list[Token], max_nesting: int) -> None:
        self.toks = toks
        self.pos = 0
        self.depth = 0
        self.max_nesting = max_nesting

    def peek(self) -> Token:
        return self.toks[self.pos]

    def advance(self) -> Token:
        tok = self.toks[self.pos]
        if tok.kind is not Kind.EOF:
            self.pos += 1
        return tok

    def error(self, tok: Token, expecting: str = "") -> _SyntaxError:
        if tok.kind is Kind.BAD:
            msg = f"syntax error: {tok.raw}"
        else:
            msg = f"syntax error: unexpected {tok.describe()}"
        if expecting:
            msg += f", expecting {expecting}"
        return _SyntaxError(tok.line, msg)

    def skip_separators(self) -> None:
        toks = self.toks
        pos = self.pos
        while toks[pos].kind in _SEPARATORS:
            pos += 1
        self.pos = pos

    def expect_keyword(self, kw: str) -> None:
        tok = self.peek()
        if tok.plain != kw:
            raise self.error(tok, repr(kw))
        self.advance()

    # -- statements ---------------------------------------------------------

    def parse_command(self) -> Stmt:
        tok = self.peek()
        if tok.kind is Kind.WORD:
            kw = tok.plain
            if kw == "if":
                return self.parse_if()
            if kw == "for":
                return self.parse_for()
            if kw in ("while", "until"):
                return self.parse_while(kw == "until")
            if kw == "function":
                return self.parse_function()
            if kw == "!":
                self.advance()
                return NotCommand(self.parse_command(), tok.line)
            if kw in _CLOSERS:
                raise self.error(tok)
            return self.parse_simple()
        raise self.error(tok, "a command")

    def parse_simple(self) -> SimpleCommand:
        toks = self.toks
        pos = self.pos
        tok = toks[pos]
        line = tok.line
        words: list[Word] = []
        while tok.kind is Kind.WORD:
            words.append(tok)
            pos += 1
            tok = toks[pos]
        self.pos = pos
        block = None
        if tok.kind is Kind.LBRACE:
            block = self.parse_block()
        return SimpleCommand(tuple(words), block, line)

    def parse_block(self) -> tuple[Stmt, ...]:
        self.advance()  # '{'
        body = self.parse_list(frozenset(), braces=True)
        tok = self.peek()
        if tok.kind is not Kind.RBRACE:
            raise self.error(tok, "'}'")
        self.advance()
        return body

    def parse_list(self, closers: frozenset[str], *, braces: bool = False) -> tuple[Stmt, ...]:
        """Commands separated by ``;``/newlines up to a closing keyword or ``}``."""
        self.depth += 1
        if self.depth > self.max_nesting:
            raise NestingTooDeep(self.peek().line, self.max_nesting)
        stmts: list[Stmt] = []
        while True:
            self.skip_separators()
            tok = self.peek()
            if tok.kind is Kind.RBRACE and braces:
                break
            if tok.kind is Kind.WORD and tok.plain in closers:
                break
            if tok.kind is Kind.EOF:
                want = "'}'" if braces else " or ".join(repr(c) for c in sorted(closers))
                raise self.error(tok, want)
            stmts.append(self.parse_command())
            nxt = self.peek()
            if nxt.kind in (Kind.NEWLINE, Kind.SEMI):
                continue
            if nxt.kind is Kind.RBRACE and braces:
                continue
            raise self.error(nxt, "';' or newline")
        self.depth -= 1
        return tuple(stmts)

    def parse_if(self) -> IfCommand:
        line = self.advance().line  # 'if'
        branches: list[tuple[tuple[Stmt, ...], tuple[Stmt, ...]]] = []
        while True:
            cond = self.parse_list(frozenset({"then"}))
            if not cond:
                raise self.error(self.peek(), "a condition")
            self.expect_keyword("then")
            body = self.parse_list(frozenset({"elif", "else", "fi"}))
            branches.append((cond, body))
            if self.peek().plain == "elif":
                self.advance()
                continue
            break
        orelse = None
        if self.peek().plain == "else":
            self.advance()
            orelse = self.parse_list(frozenset({"fi"}))
        self.expect_keyword("fi")
        return IfCommand(tuple(branches), orelse, line)

    def parse_for(self) -> ForCommand:
        line = self.advance().line  # 'for'
        name_tok = self.peek()
        name = name_tok.plain
        if name is None or not name or not set(name) <= _NAME_CHARS or name[0].isdigit():
            raise self.error(name_tok, "a variable name")
        self.advance()
        self.expect_keyword("in")
        words: list[Word] = []
        while self.peek().kind is Kind.WORD:
            words.append(self.advance())
        if self.peek().kind not in (Kind.NEWLINE, Kind.SEMI):
            raise self.error(self.peek(), "';' or newline")
        self.skip_separators()
        self.expect_keyword("do")
        body = self.parse_list(frozenset({"done"}))
        self.expect_keyword("done")
        return ForCommand(name, tuple(words), body, line)

    def parse_while(self, until: bool) -> WhileCommand:
        line = self.advance().line
        cond = self.parse_list(frozenset({"do"}))
        if not cond:
            raise self.error(self.peek(), "a condition")
        self.expect_keyword("do")
        body = self.parse_list(frozenset({"done"}))
        self.expect_keyword("done")
        return WhileCommand(cond, body, until, line)

    def parse_function(self) -> FunctionDef:
        line = self.advance().line  # 'function'
        name_tok = self.peek()
        name = name_tok.plain
        if name is None or not name:
            raise self.error(name_tok, "a function name")
        self.advance()
        while self.peek().kind is Kind.NEWLINE:
            self.advance()
        if self.peek().kind is not Kind.LBRACE:
            raise self.error(self.peek(), "'{'")
        body = self.parse_block()
        return FunctionDef(name, body, line)

    # -- top level ------------------------------------------------------------

    def parse_script(self) -> Script:
        stmts: list[Stmt] = []
        errors: list[tuple[int, str]] = []
        while True:
            self.skip_separators()
            if self.peek().kind is Kind.EOF:
                break
            self.depth = 0
            try:
                stmt = self.parse_command()
                nxt = self.peek()
                if nxt.kind not in (Kind.NEWLINE, Kind.SEMI, Kind.EOF):
                    raise self.error(nxt, "';' or newline")
                stmts.append(stmt)
            except _SyntaxError as exc:
                errors.append((exc.line, exc.message))
                self.recover()
        return Script(tuple(stmts), tuple(errors))

    def recover(self) -> None:
        """Drop the rest of the line the error was found on (GRUB's behaviour)."""
        while True:
            tok = self.advance()
            if tok.kind in (Kind.NEWLINE, Kind.EOF):
                return


def parse_script(text: str, *, max_nesting: int = 120) -> Script:
    """Tokenize and parse *text*; raises `NestingTooDeep` past *max_nesting*."""
    return _Parser(tokenize(text), max_nesting).parse_script()
