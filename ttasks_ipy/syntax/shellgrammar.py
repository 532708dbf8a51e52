"""Where a value stands in a bash command, and how to quote it there.

``ShellLexer`` reads a command from left to right the way bash's parser does,
far enough to say, at any point, what a value put there would be:

* a **word** (unquoted): single-quoted, so that bash sees exactly the value as
  one argument; a list becomes several words where bash splits words;
* inside ``"…"``: backslash before ``\\ $ ` "``;
* inside ``'…'`` or ``$'…'``: the quote is closed, the value quoted as a word,
  the quote reopened;
* inside ``$(…)``, ``<(…)`` and ``(…)``: a fresh unquoted context, whatever
  quotes are around the ``$(``;
* inside backticks: quoted for the context inside them, then escaped for each
  backtick layer (``\\ $ `` and, within ``"…"``, ``"`` get a backslash, which
  bash removes before it reads the inner command);
* arithmetic (``$((…))``, ``((…))``, ``$[…]``, ``let``, an array subscript in
  an assignment, an operand of ``-eq``… inside ``[[ ]]``, an assignment to an
  integer variable): bash evaluates text there again, quoted or not, so only
  a Python ``int`` may stand there;
* refused: inside ``${…}``, a here-document body or delimiter, a ``case``
  pattern, an argument of ``eval``/``trap`` or the script of ``bash -c``, and
  where bash reads a variable *name* (``read``, ``declare``'s names,
  ``printf -v``, ``-v`` tests), since a value there can run code;
* in a comment: left alone.

``quote_at(place, value)`` renders a value for a ``Place`` or raises
``Unquotable`` saying why it cannot stand there. The lexer keeps the names the
command sets itself (``for i in``, ``NAME=…``, ``read NAME``) in ``names``.
It follows bash 5's grammar; ``$((`` is always arithmetic (write ``$( (`` for
a subshell in a command substitution).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Place", "ShellLexer", "Unclosed", "Unquotable", "quote_at", "quote_word"]

#: bash's reserved words: an unquoted value equal to one of them would change the grammar
RESERVED = frozenset(
    "case coproc do done elif else esac fi for function if in select then time until while".split()
)
#: characters a value may hold and still stand unquoted (no glob, brace, tilde, assignment or quote meaning)
_SAFE = re.compile(r"[A-Za-z0-9_./-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[.*\])?\+?=")
_SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[[^\]]*")
_ARITH_OPS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
#: keywords after which a command starts again
_OPENERS = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!", "{", "time", "coproc"})
_CLOSERS = frozenset({"fi", "done", "}", "esac"})
#: commands that run an argument as shell code
_CODE = frozenset({"eval", "trap"})
_SHELLS = frozenset({"bash", "sh", "dash", "ksh", "zsh", "mksh", "ash"})
#: builtins whose arguments are variable names (a value there may hold a subscript that runs code)
_DECLARE = frozenset({"declare", "typeset", "local", "readonly", "export"})
_NAMES = frozenset({"read", "mapfile", "readarray", "unset", "getopts", "wait"})
#: commands that run the command after their options and assignments
_WRAPPERS = frozenset({"builtin", "command", "exec", "sudo", "nohup", "env", "setsid"})
#: shell variables whose assignment bash evaluates as arithmetic
INT_VARIABLES = frozenset({"RANDOM", "SRANDOM", "OPTIND", "HISTCMD", "SECONDS", "LINENO", "OPTERR"})


class Unquotable(Exception):
    """A value cannot be made safe where it stands: ``reason`` says where, ``hint`` how to pass it instead."""

    def __init__(self, reason: str, hint: str = "env", tag: Any = None) -> None:
        super().__init__(reason)
        self.reason, self.hint, self.tag = reason, hint, tag


class Unclosed(Exception):
    """The command ends inside a quote (``quote`` is the opening one)."""

    def __init__(self, quote: str) -> None:
        super().__init__(quote)
        self.quote = quote


@dataclass(frozen=True)
class Place:
    """What a value inserted at one point of a command would be (see the module docstring).

    ``quote`` is 'word', 'dquote', 'squote', 'ansi' or 'comment'; ``arith``
    means only an int may stand there; ``refuse`` (with ``hint``) says why no
    value may; ``glued`` that the word already has text before this point;
    ``splits`` that a list may become several words; ``layers`` the backtick
    layers around it, innermost first (True: that backtick is inside ``"…"``);
    ``mark`` (inside ``[[ ]]``) is called with a tag for a value that is not
    an int, so that the lexer can refuse it once it sees an arithmetic
    operator beside it; ``always_quote`` (inside ``[[ ]]``, where an unquoted
    ``-n`` is an operator) quotes even a plainly safe word.
    """

    quote: str
    layers: tuple[bool, ...] = ()
    arith: str = ""
    refuse: str = ""
    hint: str = "env"
    glued: bool = False
    splits: bool = True
    mark: Any = None
    always_quote: bool = False
    in_expression: bool = False  # an arithmetic expression itself (a negative int goes in parentheses)


# ---- frames -------------------------------------------------------------------
@dataclass(eq=False)
class _Cmd:
    """Unquoted command text: the top level, or the inside of ``$(…)``, ``(…)``, ``<(…)`` or backticks."""

    closer: str = ""  # ')' for $( ( <( >( ; '' at the top of a lexer
    array: bool = False  # inside NAME=( … )
    part_of_word: bool = False  # $( <( @( : the text around it is one word
    word: str = ""
    in_word: bool = False
    plain: bool = True  # the word so far has no quote, escape or expansion
    words: list[str] = field(default_factory=list)  # words of the simple command, dequoted where possible
    command: str | None = None  # the command word of the simple command (dequoted), once seen
    cmdpos: bool = True
    expect: str = ""  # what the next word is: 'loopvar', 'heredoc', 'redirect', 'name'
    heredoc_strip: bool = False
    dbracket: list[str] | None = None
    marks: list[tuple[int, Any]] = field(default_factory=list)
    case: list[str] = field(default_factory=list)  # 'subject', 'in', 'pattern', 'body'
    options: str = ""  # option letters of a declare-like command

    kind = "cmd"

    def key(self) -> tuple[Any, ...]:
        return ("cmd", self.closer, self.array, self.dbracket is not None, tuple(self.case), self.expect)


@dataclass(eq=False)
class _Quote:
    kind: str  # 'dq', 'sq', 'ansi'

    def key(self) -> tuple[Any, ...]:
        return (self.kind,)


@dataclass(eq=False)
class _Param:
    kind = "param"

    def key(self) -> tuple[Any, ...]:
        return ("param",)


@dataclass(eq=False)
class _Arith:
    closer: str  # '))' or ']'
    opener: str  # '$((' '((' '$['
    depth: int = 0
    kind = "arith"

    def key(self) -> tuple[Any, ...]:
        return ("arith", self.closer, self.depth)


@dataclass(eq=False)
class _Comment:
    kind = "comment"

    def key(self) -> tuple[Any, ...]:
        return ("comment",)


@dataclass(eq=False)
class _Heredoc:
    pending: list[tuple[str, bool]]  # (delimiter, strip tabs), the first is being read
    line: str = ""
    kind = "heredoc"

    def key(self) -> tuple[Any, ...]:
        return ("heredoc", tuple(self.pending))


@dataclass(eq=False)
class _Backtick:
    child: ShellLexer
    in_dq: bool
    escape: bool = False  # the last raw character was a backslash
    kind = "bt"

    def key(self) -> tuple[Any, ...]:
        return ("bt", self.in_dq, self.escape, self.child.key())


_Frame = Any


def _dequote(word: str) -> str | None:
    """``word`` without its quotes and backslashes, or None when it holds an expansion."""
    out, i, n = [], 0, len(word)
    while i < n:
        c = word[i]
        if c == "'":
            j = word.find("'", i + 1)
            if j < 0:
                return None
            out.append(word[i + 1:j])
            i = j + 1
        elif c == '"':
            j = i + 1
            while j < n and word[j] != '"':
                if word[j] in "$`":
                    return None
                j += 2 if word[j] == "\\" else 1
            out.append(re.sub(r'\\([\\"$`])', r"\1", word[i + 1:j]))
            i = j + 1
        elif c == "\\":
            out.append(word[i + 1:i + 2])
            i += 2
        elif c in "$`":
            return None
        else:
            out.append(c)
            i += 1
    return "".join(out)


class ShellLexer:
    """Reads a bash command piece by piece; ``place()`` says what a value put at the current end would be.

    ``feed(text)`` as many times as needed, ``place()`` between pieces, and
    ``end()`` at the end (raises ``Unclosed`` when a quote is left open).
    ``names`` collects the variables the command sets itself.
    """

    def __init__(self, *, names: set[str] | None = None,
                 int_names: set[str] | None = None) -> None:
        self.stack: list[_Frame] = [_Cmd()]
        self.names: set[str] = set() if names is None else names
        self.int_names: set[str] = set() if int_names is None else int_names
        self.heredocs: list[tuple[str, bool]] = []
        self._hold = ""  # text that needs the next characters to be read

    # ---- public --------------------------------------------------------------
    def feed(self, text: str) -> None:
        """Read ``text`` (a piece of the command)."""
        self._run(self._hold + text, final=False)

    def key(self) -> tuple[Any, ...]:
        """The lexer's state, without the words read so far (equal before and after a quoted value)."""
        return (tuple(f.key() for f in self.stack), tuple(self.heredocs), self._hold)

    def place(self) -> Place:
        """What a value inserted at the current end of the command would be."""
        layers: list[bool] = []
        lex = self
        around: _Param | _Arith | None = None  # the innermost ${ or arithmetic around the point, at any depth
        while True:
            if lex._hold.endswith("\\") and (len(lex._hold) - len(lex._hold.rstrip("\\"))) % 2:
                return Place("word", refuse="right after a backslash", hint="escape")
            lex._flush()
            for f in lex.stack:
                if isinstance(f, (_Param, _Arith)):
                    around = f
            top = lex.stack[-1]
            if not isinstance(top, _Backtick):
                break
            if top.escape:
                return Place("word", refuse="right after a backslash", hint="escape")
            layers.append(top.in_dq)
            lex = top.child
        return lex._local_place(tuple(reversed(layers)), around)

    def end(self) -> None:
        """The command is complete: raise ``Unclosed`` for a quote left open."""
        lex = self
        while True:
            lex._flush()
            for f in reversed(lex.stack):
                if isinstance(f, _Quote):
                    raise Unclosed({"dq": '"', "sq": "'", "ansi": "$'"}[f.kind])
            top = lex.stack[-1]
            if isinstance(top, _Backtick):
                lex = top.child
                continue
            if isinstance(top, _Cmd):
                lex._end_word(top)
            return

    def settle(self) -> None:
        """Read what was held back for lack of the next characters (after a value, before comparing ``key()``)."""
        lex = self
        while True:
            lex._flush()
            top = lex.stack[-1]
            if not isinstance(top, _Backtick):
                return
            lex = top.child

    # ---- places --------------------------------------------------------------
    def _local_place(self, layers: tuple[bool, ...], around: _Param | _Arith | None) -> Place:
        """The place at the end of this lexer; ``around``: the innermost ``${`` or arithmetic, here or outside.

        Inside ``${…}`` or arithmetic at any depth (``$(( $(echo {v}) ))``: bash
        evaluates the command's output too) the rules of that frame apply.
        """
        top = self.stack[-1]
        if isinstance(top, _Comment):
            return Place("comment", layers)
        if isinstance(top, _Heredoc):
            return Place("word", layers, refuse="in a here-document", hint="env")
        quote = "word"
        if isinstance(top, _Quote):
            quote = {"dq": "dquote", "sq": "squote", "ansi": "ansi"}[top.kind]
        if isinstance(around, _Param):
            return Place(quote, layers, refuse="inside ${…}", hint="env")
        if isinstance(around, _Arith):
            direct = next(f for f in reversed(self.stack) if not isinstance(f, _Quote)) is around
            return Place(quote, layers, arith=f"inside {around.opener}…{around.closer}", in_expression=direct)
        cmd = self._cmd_below()
        glued = cmd.in_word
        role = self._role(cmd)
        if role is not None:
            kind, why = role
            if kind == "arith":
                return Place(quote, layers, arith=why, glued=glued, in_expression=why.endswith("of let"))
            return Place(quote, layers, refuse=why, hint=kind, glued=glued)
        splits = not (cmd.dbracket is not None or cmd.expect or (cmd.case and cmd.case[-1] in ("subject", "in")))
        mark = None
        if cmd.dbracket is not None:
            index = len(cmd.dbracket)

            def mark(tag: Any, cmd: _Cmd = cmd, index: int = index) -> None:
                cmd.marks.append((index, tag))

        return Place(quote, layers, glued=glued, splits=splits, mark=mark, always_quote=cmd.dbracket is not None)

    def _role(self, cmd: _Cmd) -> tuple[str, str] | None:
        """Why the word being read is special: ('arith'|'code'|'name'|'env', where), or None."""
        if cmd.case and cmd.case[-1] == "pattern":
            return "env", "in a case pattern"
        if cmd.expect == "heredoc":
            return "env", "as a here-document delimiter"
        if cmd.expect == "loopvar":
            return "name", "as the variable of a for loop"
        if cmd.expect == "redirect":
            return None
        word = cmd.word
        if cmd.dbracket is not None:
            if cmd.dbracket and cmd.dbracket[-1] in ("-v", "-R"):
                return "name", f"after {cmd.dbracket[-1]} inside [[ ]], where bash reads a variable name"
            return None
        command, args = self._effective(cmd)
        at_assignment = cmd.cmdpos or command in _DECLARE
        if at_assignment and not cmd.expect:
            if _SUBSCRIPT.fullmatch(word):
                return "arith", "in an array subscript"
            m = _ASSIGN.match(word)
            if m and (m.group(1) in INT_VARIABLES or m.group(1) in self.int_names or
                      (command in _DECLARE and "i" in cmd.options)):
                return "arith", f"in an assignment to the integer variable {m.group(1)}"
        if cmd.cmdpos or command is None:
            return None
        if command in _CODE:
            return "code", f"in an argument of {command}, which runs it as code"
        if command == "let":
            return "arith", "in an argument of let"
        if command in _SHELLS:
            for j, a in enumerate(args):
                if re.fullmatch(r"-[A-Za-z]*c[A-Za-z]*", a):
                    if all(b.startswith("-") for b in args[j + 1:]):
                        return "code", f"in the script of {command} {a}, which runs it as code"
                    break
        if command in _DECLARE:
            if "n" in cmd.options:
                return "name", f"in an argument of {command} -n, where bash reads a variable name"
            if not _ASSIGN.match(word):
                return "name", f"in an argument of {command}, where bash reads a variable name"
        if command in _NAMES:
            return "name", f"in an argument of {command}, where bash reads variable names"
        if args and args[-1] == "-v" and command in ("printf", "test", "["):
            return "name", f"after {command} -v, where bash reads a variable name"
        if args and args[-1] == "-R" and command in ("test", "["):
            return "name", f"after {command} -R, where bash reads a variable name"
        return None

    @staticmethod
    def _effective(cmd: _Cmd) -> tuple[str | None, list[str]]:
        """The command that runs (past ``sudo``, ``command``, ``env A=1``…) and its arguments so far."""
        words = cmd.words
        i = 0
        while i < len(words) and words[i] in _WRAPPERS:
            i += 1
            while i < len(words) and (words[i].startswith("-") or _ASSIGN.match(words[i])):
                i += 1
        if i >= len(words):
            return (None, []) if words else (cmd.command, [])
        return words[i], words[i + 1:]

    # ---- reading -------------------------------------------------------------
    def _flush(self) -> None:
        if self._hold:
            text, self._hold = self._hold, ""
            self._run(text, final=True)

    def _run(self, text: str, *, final: bool) -> None:
        self._hold = ""
        i, n = 0, len(text)
        while i < n:
            j = self._step(text, i, final)
            if j < 0:
                self._hold = text[i:]
                return
            i = j

    def _cmd_below(self) -> _Cmd:
        for f in reversed(self.stack):
            if isinstance(f, _Cmd):
                return f
        raise AssertionError("no command frame")

    def _in_dq(self) -> bool:
        """True when the innermost quoting around the current point is ``"…"`` (``$(`` resets it)."""
        for f in reversed(self.stack):
            if isinstance(f, _Quote) and f.kind == "dq":
                return True
            if isinstance(f, _Cmd):
                return False
        return False

    @staticmethod
    def _append(cmd: _Cmd, piece: str) -> None:
        """Add ``piece`` (quoted text, an expansion) to the word ``cmd`` is reading."""
        cmd.word += piece
        cmd.in_word = True
        cmd.plain = False

    def _dollar(self, text: str, i: int, final: bool) -> int:
        """Handle ``$`` at ``i`` (any frame): push what it opens; -1 when more text is needed."""
        if i + 3 > len(text) and not final:
            return -1
        nxt = text[i + 1:i + 3]
        if nxt.startswith("(("):
            self.stack.append(_Arith("))", "$(("))
            return i + 3
        if nxt[:1] == "(":
            self.stack.append(_Cmd(closer=")", part_of_word=True))
            return i + 2
        if nxt[:1] == "{":
            self.stack.append(_Param())
            return i + 2
        if nxt[:1] == "[":
            self.stack.append(_Arith("]", "$["))
            return i + 2
        return i + 1

    def _step(self, text: str, i: int, final: bool) -> int:
        top = self.stack[-1]
        c = text[i]
        if isinstance(top, _Cmd):
            return self._step_cmd(top, text, i, final)
        if isinstance(top, _Quote):
            owner = self._cmd_below()
            start = i
            if top.kind == "sq":
                j = text.find("'", i)
                if j < 0:
                    self._append(owner, text[i:])
                    return len(text)
                self.stack.pop()
                self._append(owner, text[start:j + 1])
                return j + 1
            if c == "\\":
                if i + 1 >= len(text) and not final:
                    return -1
                j = i + 2
            elif top.kind == "ansi":
                j = i + 1
                if c == "'":
                    self.stack.pop()
            elif c == '"':
                self.stack.pop()
                j = i + 1
            elif c == "`":
                self.stack.append(_Backtick(self._child(), True))
                j = i + 1
            elif c == "$":
                j = self._dollar(text, i, final)
            else:
                j = i + 1
            if j > 0:
                self._append(owner, text[start:j])
            return j
        if isinstance(top, _Backtick):
            return self._step_backtick(top, text, i)
        if isinstance(top, _Comment):
            j = text.find("\n", i)
            if j < 0:
                return len(text)
            self.stack.pop()
            return j
        if isinstance(top, _Heredoc):
            return self._step_heredoc(top, text, i)
        return self._step_nested(top, text, i, final)

    def _child(self) -> ShellLexer:
        return ShellLexer(names=self.names, int_names=self.int_names)

    def _step_nested(self, top: _Param | _Arith, text: str, i: int, final: bool) -> int:
        """One step inside ``${…}`` or arithmetic."""
        c = text[i]
        owner = self._cmd_below()
        j = i + 1
        if c == "\\":
            if i + 1 >= len(text) and not final:
                return -1
            j = i + 2
        elif c == "$":
            j = self._dollar(text, i, final)
        elif c == '"':
            self.stack.append(_Quote("dq"))
        elif c == "'" and not (isinstance(top, _Param) and self._in_dq()):
            self.stack.append(_Quote("sq"))
        elif c == "`":
            self.stack.append(_Backtick(self._child(), self._in_dq()))
        elif isinstance(top, _Param):
            if c == "}":  # bash ends ${ at the first unquoted }: ${x:-{a}} is ${x:-{a} and a }
                self.stack.pop()
        elif c in "([":
            top.depth += 1
        elif c == "]" and top.closer == "]" and top.depth == 0:
            self.stack.pop()
        elif c in ")]":
            if top.depth > 0:
                top.depth -= 1
            elif c == ")" and top.closer == "))":
                if i + 1 >= len(text) and not final:
                    return -1
                self.stack.pop()
                if text[i + 1:i + 2] == ")":
                    j = i + 2
        if j > 0:
            self._append(owner, text[i:j])
        return j

    def _step_backtick(self, top: _Backtick, text: str, i: int) -> int:
        """Raw text inside backticks: remove bash's backslash layer and feed the inner command."""
        j = i
        n = len(text)
        out: list[str] = []
        while j < n:
            c = text[j]
            if top.escape:
                top.escape = False
                out.append(c if c in "$`\\" or (top.in_dq and c == '"') else "\\" + c)
                j += 1
                continue
            if c == "\\":
                top.escape = True
                j += 1
                continue
            if c == "`":
                top.child.feed("".join(out))
                self.stack.pop()
                self._append(self._cmd_below(), text[i:j + 1])
                return j + 1
            k = j
            while k < n and text[k] not in "\\`":
                k += 1
            out.append(text[j:k])
            j = k
        top.child.feed("".join(out))
        self._append(self._cmd_below(), text[i:j])
        return j

    def _step_heredoc(self, top: _Heredoc, text: str, i: int) -> int:
        j = text.find("\n", i)
        if j < 0:
            top.line += text[i:]
            return len(text)
        line, top.line = top.line + text[i:j], ""
        delim, strip = top.pending[0]
        if (line.lstrip("\t") if strip else line) == delim:
            top.pending.pop(0)
            if not top.pending:
                self.stack.pop()
        return j + 1

    def _step_cmd(self, f: _Cmd, text: str, i: int, final: bool) -> int:
        c = text[i]
        n = len(text)
        more = final or i + 3 <= n  # enough text to decide on a three-character operator

        def word(piece: str, plain: bool = True) -> None:
            f.word += piece
            f.in_word = True
            f.plain = f.plain and plain

        if c == "\\":
            if i + 1 >= n:
                if not final:
                    return -1
                word("\\", False)
                return n
            if text[i + 1] == "\n":
                return i + 2
            word(text[i:i + 2], False)
            return i + 2
        if c == "'":
            word("'", False)
            self.stack.append(_Quote("sq"))
            return i + 1
        if c == '"':
            word('"', False)
            self.stack.append(_Quote("dq"))
            return i + 1
        if c == "`":
            word("`", False)
            self.stack.append(_Backtick(self._child(), False))
            return i + 1
        if c == "$":
            if not more:
                return -1
            if text[i + 1:i + 2] == "'":
                word("$'", False)
                self.stack.append(_Quote("ansi"))
                return i + 2
            if text[i + 1:i + 2] == '"':
                word('$"', False)
                self.stack.append(_Quote("dq"))
                return i + 2
            j = self._dollar(text, i, final)
            if j > 0:
                word(text[i:j], False)
            return j
        if c == "#" and not f.in_word:
            self.stack.append(_Comment())
            return i + 1
        if c in " \t":
            self._end_word(f)
            return i + 1
        if c == "\n":
            self._separator(f)
            if self.heredocs:
                self.stack.append(_Heredoc(self.heredocs))
                self.heredocs = []
            return i + 1
        if c in ";&|":
            if not more:
                return -1
            two = text[i:i + 2]
            if c == "&" and text[i + 1:i + 2] == ">":
                self._end_word(f)
                f.expect = "redirect"
                return i + 3 if text[i + 2:i + 3] == ">" else i + 2
            if c == "|" and f.case and f.case[-1] == "pattern":
                self._end_word(f)
                return i + 1
            self._separator(f)
            if c == ";" and f.case and f.case[-1] == "body" and two in (";;", ";&"):
                f.case[-1] = "pattern"
                return i + 3 if text[i:i + 3] == ";;&" else i + 2
            return i + 2 if two in ("&&", "||", "|&") else i + 1
        if c in "<>":
            if not more:
                return -1
            if text[i + 1:i + 2] == "(":
                word(text[i:i + 2], False)
                self.stack.append(_Cmd(closer=")", part_of_word=True))
                return i + 2
            if f.in_word and f.plain and f.word.isdigit():  # 2>file: the digits are the descriptor
                f.word, f.in_word = "", False
            self._end_word(f)
            if text.startswith("<<<", i):
                f.expect = "redirect"
                return i + 3
            if text.startswith("<<", i):
                f.expect = "heredoc"
                f.heredoc_strip = text[i + 2:i + 3] == "-"
                return i + 3 if f.heredoc_strip else i + 2
            f.expect = "redirect"
            j = i + 1
            while j < n and j < i + 2 and text[j] in "<>&|":
                j += 1
            return j
        if c == "(":
            if f.case and f.case[-1] == "pattern":
                return i + 1
            if f.dbracket is not None:
                self._end_word(f)
                return i + 1
            if not f.in_word and (f.cmdpos or f.expect == "loopvar"):
                if i + 1 >= n and not final:
                    return -1
                if text[i + 1:i + 2] == "(":
                    f.expect = ""
                    self.stack.append(_Arith("))", "(("))
                    return i + 2
            if f.in_word and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\+?=", f.word):
                self._end_word(f)
                self.stack.append(_Cmd(closer=")", array=True, cmdpos=False))
                return i + 1
            inside = f.in_word
            if inside:
                word("(", False)  # extglob @( ) or f( ): read the inside as a nested group
            else:
                self._end_word(f)
            self.stack.append(_Cmd(closer=")", cmdpos=not inside, part_of_word=inside))
            return i + 1
        if c == ")":
            if f.case and f.case[-1] == "pattern":
                self._end_word(f)
                f.case[-1] = "body"
                f.cmdpos = True
                return i + 1
            if f.dbracket is not None:
                self._end_word(f)
                return i + 1
            if f.closer == ")" and len(self.stack) > 1:
                self._end_word(f)
                self.stack.pop()
                if f.part_of_word:
                    self._append(self._cmd_below(), ")")
                return i + 1
            self._end_word(f)
            return i + 1
        word(c)
        return i + 1

    def _separator(self, f: _Cmd) -> None:
        self._end_word(f)
        f.cmdpos = True
        f.words = []
        f.command = None
        f.options = ""
        f.expect = ""

    def _end_word(self, f: _Cmd) -> None:
        if not f.in_word:
            return
        raw, plain = f.word, f.plain
        f.word, f.in_word, f.plain = "", False, True
        w = _dequote(raw)
        text = w if w is not None else raw
        if f.expect == "heredoc":
            self.heredocs.append((text, f.heredoc_strip))
            f.expect = ""
            return
        if f.expect == "redirect":
            f.expect = ""
            return
        if f.expect == "loopvar":
            f.expect = ""
            if _IDENT.fullmatch(raw):
                self.names.add(raw)
            return
        if f.dbracket is not None:
            if plain and raw == "]]":
                self._check_dbracket(f)
                f.dbracket = None
            else:
                f.dbracket.append(text)
            return
        if f.case:
            state = f.case[-1]
            if state == "subject":
                f.case[-1] = "in"
                return
            if state == "in":
                f.case[-1] = "pattern"
                return
            if plain and raw == "esac" and (state == "pattern" or f.cmdpos):
                f.case.pop()
                f.cmdpos = False
                return
            if state == "pattern":
                return
        if f.cmdpos:
            if plain and raw in _OPENERS:
                return
            if plain and raw in _CLOSERS:
                f.cmdpos = False
                return
            if plain and raw in ("for", "select"):
                f.expect, f.cmdpos = "loopvar", False
                return
            if plain and raw == "case":
                f.case.append("subject")
                f.cmdpos = False
                return
            if plain and raw == "[[":
                f.dbracket, f.marks = [], []
                f.cmdpos = False
                return
            if plain and raw == "function":
                f.expect = "redirect"  # the function's name follows
                f.cmdpos = False
                return
            m = _ASSIGN.match(raw)
            if m:
                self.names.add(m.group(1))
                return
            f.command = w
            f.words = [text]
            f.cmdpos = False
            return
        f.words.append(text)
        command, args = self._effective(f)
        if command in _DECLARE:
            if text.startswith("-") and text != "--":
                f.options += text[1:]
                return
            m = _ASSIGN.match(text) or _IDENT.fullmatch(text)
            if m:
                name = m.group(1) if m.re is _ASSIGN else m.group()
                self.names.add(name)
                if "i" in f.options or "n" in f.options:
                    self.int_names.add(name)
        elif command in ("read", "mapfile", "readarray") and _IDENT.fullmatch(text):
            self.names.add(text)

    def _check_dbracket(self, f: _Cmd) -> None:
        words = f.dbracket or []
        for index, tag in f.marks:
            for k in (index - 1, index + 1):
                if 0 <= k < len(words) and words[k] in _ARITH_OPS:
                    raise Unquotable(f"beside {words[k]} inside [[ ]]", "int", tag)
        f.marks = []


# ---- quoting ---------------------------------------------------------------------
def quote_word(text: str, *, always: bool = False) -> str:
    """``text`` as one unquoted bash word: as is when it is plainly safe (and not ``always``), else in single quotes."""
    if not always and _SAFE.fullmatch(text) and ".." not in text and text not in RESERVED:
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def _dquote(text: str) -> str:
    return re.sub(r'([\\"$`])', r"\\\1", text)


def _backtick(text: str, in_dq: bool) -> str:
    return re.sub(r'([\\$`"])' if in_dq else r"([\\$`])", r"\\\1", text)


def quote_at(place: Place, value: Any, *, glued_right: bool = False) -> str:
    """``value`` written for ``place``; raises ``Unquotable`` when it cannot stand there.

    A list or tuple is several words where bash splits words and the field is a
    word of its own; inside quotes its items are joined with a space (as
    ``"$*"`` does); elsewhere it is refused. ``glued_right``: the template has
    more text of the same word right after the field.
    """
    if place.refuse:
        raise Unquotable(place.refuse, place.hint)
    if place.arith:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Unquotable(place.arith, "int")
        out = f"({value})" if value < 0 and place.in_expression else str(value)
    else:
        items = [str(v) for v in value] if isinstance(value, (list, tuple)) else None
        text = " ".join(items) if items is not None else str(value)
        if "\0" in text:
            raise Unquotable("with a NUL character, which no bash word can hold", "nul")
        if place.quote == "word":
            if items is None:
                out = quote_word(text, always=place.always_quote)
            elif not place.splits:
                raise Unquotable("a list where bash reads one word", "list")
            elif place.glued or glued_right:
                raise Unquotable("a list glued to other text of its word", "list")
            else:
                out = " ".join(quote_word(a) for a in items) or " "
        elif place.quote == "dquote":
            out = _dquote(text)
        elif place.quote == "squote":
            out = "'" + quote_word(text) + "'"
        elif place.quote == "ansi":
            out = "'" + quote_word(text) + "$'"
        else:
            raise AssertionError(place.quote)
    for in_dq in place.layers:
        out = _backtick(out, in_dq)
    return out
