"""Values expanded into commands cannot inject: a matrix of values × places, run through real ``bash -c``.

Each case expands a template, runs it with bash in an empty directory and
asserts that no command ran that the template did not write (the directory
stays empty: no canary file) and that the argument bash saw is exactly the
value (``printf '%s\\0'`` output compared byte for byte), unless the
expansion was refused with a one-line ``SpecError``.

The reduced form runs by default; ``TTASKS_RELIABILITY=full`` runs many more
random values and nested templates.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttasks_ipy.core.errors import SpecError
from ttasks_ipy.syntax.expand import expand_shell

FULL = os.environ.get("TTASKS_RELIABILITY") == "full"
EXAMPLES = 400 if FULL else 12

#: values that try to break out of every kind of quoting, and ordinary awkward ones
VALUES = [
    "plain", "", "a b", "x; touch C1", "$(touch C2)", "`touch C3`", "'; touch C4; '", '"; touch C5; "',
    '\\"; touch C6; \\"', "a\nb", "a\n", "\n", "*", "?", "[a", "[a]*", "-n", "-e", "--", "~", "~root", "é ü 中 🙂",
    "!x", "!!", "\\", "\\\\", "a\\", "'", '"', "`", "$", "$$", "${x}", "}", "{", ")", "(", "$((1))", "EOF",
    "a[$(touch C7)]", "\\`touch C8\\`", "\\$(touch C9)", "x=1", "if", "done", "{a,b}", "a..b", "\t", " lead",
    "trail ", "\\n", "$'x'", "+o", "-c",
    "#x", "a#b", ";;", "&", "|", ">f", "<f", "' \"$(touch C10)\" '", "\"'`touch C11`'\"", "$(touch C12)`touch C13`",
    "<(touch C14)", ">(touch C15)", "\r", "\x1b[31m",
]

Want = Callable[[str], str]
#: name -> (template with {v}, what bash must print for value v)
PLACES: dict[str, tuple[str, Want]] = {
    "bare word": ("printf '%s\\0' {v}", lambda v: v + "\0"),
    "glued word": ("printf '%s\\0' a{v}b", lambda v: "a" + v + "b\0"),
    "double quotes": ("printf '%s\\0' \"a{v}b\"", lambda v: "a" + v + "b\0"),
    "single quotes": ("printf '%s\\0' 'a{v}b'", lambda v: "a" + v + "b\0"),
    "ansi-c quotes": ("printf '%s\\0' $'a{v}b'", lambda v: "a" + v + "b\0"),
    "$( ) bare": ("x=$(printf '%s.' {v}); printf '%s\\0' \"$x\"", lambda v: v + ".\0"),
    "$( ) in double quotes": ("printf '%s\\0' \"R: $(printf '%s.' {v})\"", lambda v: "R: " + v + ".\0"),
    "quotes in $( ) in quotes": ("printf '%s\\0' \"$(printf '%s.' \"{v}\")\"", lambda v: v + ".\0"),
    "nested $( \"$( )\" )": ("printf '%s\\0' \"$( printf '%s' \"$( printf '%s.' {v} )\" )\"", lambda v: v + ".\0"),
    "backticks bare": ("x=`printf '%s.' {v}`; printf '%s\\0' \"$x\"", lambda v: v + ".\0"),
    "backticks in double quotes": ("printf '%s\\0' \"`printf '%s.' {v}`\"", lambda v: v + ".\0"),
    "quotes in backticks": ("x=`printf '%s.' \"{v}\"`; printf '%s\\0' \"$x\"", lambda v: v + ".\0"),
    "quotes in backticks in quotes": ("printf '%s\\0' \"`printf '%s.' \\\"{v}\\\"`\"", lambda v: v + ".\0"),
    "nested backticks": ("x=`printf '%s' \"\\`printf '%s.' {v}\\`\"`; printf '%s\\0' \"$x\"", lambda v: v + ".\0"),
    "backticks in $( ) in quotes": ("printf '%s\\0' \"$(printf '%s' \"`printf '%s.' {v}`\")\"", lambda v: v + ".\0"),
    "process substitution": ("cat <(printf '%s.' {v})", lambda v: v + "."),
    "array assignment": ("a=({v}); printf '%s\\0' \"${a[@]}\"", lambda v: v + "\0"),
    "assignment": ("X={v}; printf '%s\\0' \"$X\"", lambda v: v + "\0"),
    "VAR=value cmd": ("X={v} printenv X", lambda v: v + "\n"),
    "[[ == ]]": ("[[ {v} == \"$V\" ]] && printf 'same\\0'", lambda v: "same\0"),
    "case word": ("case {v} in \"$V\") printf 'same\\0';; esac", lambda v: "same\0"),
    "after #": ("printf 'ok\\0' # {v}", lambda v: "ok\0"),
    "here-string": ("cat <<< {v}", lambda v: v + "\n"),
    "subshell": ("(printf '%s\\0' {v})", lambda v: v + "\0"),
    "{ group; }": ("{ printf '%s\\0' {v}; }", lambda v: v + "\0"),
    "command word": ("{v} 2>/dev/null; printf 'ok\\0'", lambda v: "ok\0"),
    "[ test ]": ("[ {v} = \"$V\" ] 2>/dev/null; printf 'ok\\0'", lambda v: "ok\0"),
    "export": ("export X={v}; printf '%s\\0' \"$X\"", lambda v: v + "\0"),
    "after bash -c script": ("bash -c 'printf \"%s\\0\" \"$0\"' {v}", lambda v: v + "\0"),
}

#: places where only an int may stand, or no value at all: a str is always refused there
REFUSED = {
    "${x:-…}": "printf '%s\\0' ${x:-{v}}",
    "${…} in double quotes": "printf '%s\\0' \"${x:-{v}}\"",
    "$(( ))": "echo $(( {v} + 1 ))",
    "(( ))": "(( x = {v} ))",
    "quotes in $(( ))": "echo $(( \"{v}\" ))",
    "$( ) in $(( ))": "echo $(( $(printf %s {v}) ))",
    "$[ ]": "echo $[ {v} ]",
    "let": "let x={v}",
    "array subscript": "a[{v}]=1",
    "[[ -eq ]]": "[[ {v} -eq 1 ]]",
    "[[ -eq ]] right": "[[ 1 -eq {v} ]]",
    "[[ -v ]]": "[[ -v {v} ]]",
    "integer variable": "RANDOM={v}",
    "declare -i": "declare -i n; n={v}",
    "here-document": "cat <<EOF\n{v}\nEOF",
    "quoted here-document": "cat <<'EOF'\nx {v}\nEOF",
    "case pattern": "case x in {v}) echo;; esac",
    "eval": "eval printf '%s' {v}",
    "trap": "trap {v} EXIT",
    "bash -c": "bash -c {v}",
    "printf -v": "printf -v {v} %s 1",
    "read": "read {v} <<< x",
    "declare name": "declare {v}=1",
    "for variable": "for {v} in 1; do :; done",
}


def run_bash(command: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[bytes, list[str]]:
    """Run ``command`` with ``bash -c`` in ``cwd``; its stdout and what it left in ``cwd``."""
    r = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, timeout=20,
                       env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return r.stdout, sorted(os.listdir(cwd))


def check(template: str, value: object, want: str | None, cwd: Path) -> str:
    """Expand and run; assert exact output and no side effect. Returns 'ran' or 'refused'."""
    for p in cwd.iterdir():
        p.unlink()
    try:
        command = expand_shell(template, {"v": value})
    except SpecError as e:
        assert "\n" not in str(e) and str(e).startswith("{v}"), str(e)
        return "refused"
    out, left = run_bash(command, cwd, {"V": str(value)})
    assert left == [], f"{template!r} with {value!r} ran extra commands: {command!r} left {left}"
    if want is not None:
        assert out == want.encode("utf-8", "surrogateescape"), f"{template!r} with {value!r}: {command!r} gave {out!r}"
    return "ran"


@pytest.mark.parametrize("place", list(PLACES))
def test_values_reach_bash_exactly(place: str, tmp_path: Path) -> None:
    template, want = PLACES[place]
    outcomes = {check(template, v, want(v), tmp_path) for v in VALUES}
    assert outcomes == {"ran"}, f"{place}: a value was refused where it can be quoted"


@pytest.mark.parametrize("place", list(REFUSED))
def test_strings_are_refused_where_bash_evaluates_or_cannot_quote(place: str, tmp_path: Path) -> None:
    for v in VALUES:
        assert check(REFUSED[place], v, None, tmp_path) == "refused", (place, v)


@pytest.mark.parametrize("value", [0, 7, -3, 2**40])
@pytest.mark.parametrize("template,want", [
    ("printf '%s\\0' $(( {v} + 1 ))", lambda n: f"{n + 1}\0"),
    ("(( x = {v} )); printf '%s\\0' \"$x\"", lambda n: f"{n}\0"),
    ("let x={v}; printf '%s\\0' \"$x\"", lambda n: f"{n}\0"),
    ("[[ {v} -eq \"$V\" ]] && printf 'eq\\0'", lambda n: "eq\0"),
    ("for (( i={v}; i<{v}+2; i++ )); do printf '%s\\0' \"$i\"; done", lambda n: f"{n}\0{n + 1}\0"),
])
def test_ints_stand_in_arithmetic(template: str, want: Callable[[int], str], value: int, tmp_path: Path) -> None:
    assert check(template, value, want(value), tmp_path) == "ran"


@pytest.mark.parametrize("value", [True, 2.5, "3", [1, 2]])
def test_only_ints_stand_in_arithmetic(value: object, tmp_path: Path) -> None:
    assert check("echo $(( {v} ))", value, None, tmp_path) == "refused"


def test_lists_are_words_only_where_bash_splits_words(tmp_path: Path) -> None:
    items = ["a b", "$(touch C)", "", "*"]
    assert check("printf '%s\\0' {v}", items, "a b\0$(touch C)\0\0*\0", tmp_path) == "ran"
    assert check("a=({v}); printf '%s\\0' \"${a[@]}\"", items, "a b\0$(touch C)\0\0*\0", tmp_path) == "ran"
    assert check("printf '%s\\0' \"{v}\"", items, "a b $(touch C)  *\0", tmp_path) == "ran"  # joined, as "$*" does
    assert check("printf '%s\\0' '{v}'", items, "a b $(touch C)  *\0", tmp_path) == "ran"
    assert check("printf '%s\\0' x {v} y", [], "x\0y\0", tmp_path) == "ran"  # an empty list is no word at all
    for glued in ("printf '%s\\0' a{v}", "X={v} true", "[[ {v} == x ]]", "case {v} in x) ;; esac", "cat < {v}"):
        assert check(glued, items, None, tmp_path) == "refused", glued


def test_a_nul_character_is_refused(tmp_path: Path) -> None:
    assert check("printf '%s\\0' {v}", "a\0b", None, tmp_path) == "refused"


def test_history_expansion_is_off(tmp_path: Path) -> None:
    assert check("printf '%s\\0' \"{v}\" {v}", "!!", "!!\0!!\0", tmp_path) == "ran"
    assert check("true; printf '%s\\0' \"!!\"", "", "!!\0", tmp_path) == "ran"


# ---- random values -----------------------------------------------------------
_SPECIAL = st.sampled_from(list("\\'\"`$(){}[]<>|&;#*?~!= \t\n-+%^@,.:") + ["$(", "${", "$((", "`", "\\\\", "EOF"])
VALUE_TEXT = st.lists(st.one_of(_SPECIAL, st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                                st.just("touch C")), max_size=12).map("".join)


@pytest.mark.parametrize("place", [p for p in PLACES if p != "command word"])  # a random command might run
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=VALUE_TEXT)
def test_random_values_reach_bash_exactly(place: str, value: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    template, want = PLACES[place]
    cwd = tmp_path_factory.mktemp("bash")
    assert check(template, value, want(value), cwd) == "ran"


@pytest.mark.parametrize("place", list(REFUSED))
@settings(max_examples=max(3, EXAMPLES // 5), deadline=None, suppress_health_check=list(HealthCheck))
@given(value=VALUE_TEXT)
def test_random_strings_are_refused(place: str, value: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert check(REFUSED[place], value, None, tmp_path_factory.mktemp("bash")) == "refused"


# ---- random nesting --------------------------------------------------------------
def _in_backticks(text: str, in_dq: bool) -> str:
    """``text`` written inside backticks (inside ``"…"`` when ``in_dq``): bash's own backslash layer."""
    out = text.replace("\\", "\\\\").replace("`", "\\`").replace("$", "\\$")
    return out.replace('"', '\\"') if in_dq else out


#: a word that bash turns into the value, possibly changed: (template, change)
Word = tuple[str, Callable[[str], str]]
BASE: list[Word] = [
    ("{v}", lambda v: v), ("'{v}'", lambda v: v), ('"{v}"', lambda v: v), ("$'{v}'", lambda v: v),
    ("p{v}", lambda v: "p" + v), ('"<{v}>"', lambda v: "<" + v + ">"), ("'<'{v}'>'", lambda v: "<" + v + ">"),
]


def _wrap(kind: int, inner: Word) -> Word:
    text, change = inner
    if kind == 0:
        return f'"$(printf %s {text} .)"', lambda v: change(v) + "."
    if kind == 1:
        return f'"`printf %s {_in_backticks(text, True)} .`"', lambda v: change(v) + "."
    return f'"-$(printf %s {text} .)-"', lambda v: "-" + change(v) + ".-"


@st.composite
def nested_words(draw: st.DrawFn) -> Word:
    word = draw(st.sampled_from(BASE))
    for kind in draw(st.lists(st.integers(0, 2), max_size=3 if FULL else 2)):
        word = _wrap(kind, word)
    return word


@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(word=nested_words(), value=st.one_of(st.sampled_from(VALUES), VALUE_TEXT))
def test_random_nesting_of_quotes_and_substitutions(word: Word, value: str,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    text, change = word  # every substitution adds a '.', so $( ) strips no newline of the value
    outcome = check(f"X={text}; printf '%s\\0' \"$X\"", value, change(value) + "\0", tmp_path_factory.mktemp("bash"))
    assert outcome == "ran"
