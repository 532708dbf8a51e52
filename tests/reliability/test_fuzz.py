"""Fuzzing the user's words: ``%bg`` lines, ``%%bg`` first lines and ``%%bgraph`` cells in one real kernel.

Every example is run as a cell, like a user would. Its result is either one
``UsageError`` line (and no task added) or a dispatch; never a traceback from
the package. After each example the engine still works (a trivial ``%bg``
delivers) and whatever was dispatched is cancelled.

The reduced form runs a few examples per form; ``TTASKS_RELIABILITY=full``
runs many more.
"""
from __future__ import annotations

import os
import re

import pytest
from conftest import start_kernel, stop_kernel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttasks_ipy.kernel.magics import DISPATCH_OPTIONS, TAKES_VALUE

FULL = os.environ.get("TTASKS_RELIABILITY") == "full"
EXAMPLES = 300 if FULL else 15

pytestmark = pytest.mark.timeout(1800 if FULL else 90)

FLAGS = [flag for flags, _ in DISPATCH_OPTIONS for flag in flags]
COUNTS = {"runs": 0, "usage errors": 0, "dispatched": 0}

numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-0", "1e999", "-1", "nan", "inf", "٣", "１２", "½", "1_000", "0x10", "3s", "", "²"]),
)
awkward = st.sampled_from([
    "'", '"', "'a b'", '"a b"', "{", "}", "{x}", "{1/0}", "{{", "$", "$x", "${x}", "$(echo hi)", "?", "#",
    "# comment", "\\", "a,b", ",", "x=1", "=", "é", "🙂", "-", "--", "-x", "--bogus", "!", "!!", "\t",
])
values = st.one_of(numbers, awkward, st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=8))
bodies = st.sampled_from([
    "1 + 1", "!true", "!echo {x}", "!exit 3", "x * 2", "print('a  b')", "?what is 2+2?", "1/0", "", "!",
    "{x}", "$x", "!echo $HOME", "import os", "lambda: 1", "# only a comment", "!echo 'unclosed", "(", "x =",
    "France?", "a = 1; b = 2",
])


@st.composite
def option_words(draw: st.DrawFn) -> str:
    words = []
    for _ in range(draw(st.integers(0, 3))):
        flag = draw(st.sampled_from(FLAGS + ["--nope", "-z", "--wait", "--cancel", "--list"]))
        words.append(flag)
        if TAKES_VALUE.get(flag, draw(st.booleans())):
            if draw(st.integers(0, 9)):
                v = draw(values)
                words.append(v if draw(st.booleans()) else repr(v))
    return " ".join(words)


@st.composite
def bg_lines(draw: st.DrawFn) -> str:
    return f"%bg {draw(option_words())} {draw(bodies)}{draw(st.sampled_from(['', '?', ' # c', '  ']))}"


@st.composite
def bg_cells(draw: st.DrawFn) -> str:
    first = draw(option_words()) + draw(st.sampled_from(["", " x", " ?", " {x}"]))
    return f"%%bg {first}\n{draw(bodies)}\ny = 1\n"


names = st.sampled_from(["a", "b", "c", "x", "_z", "1a", "a-b", "é", "upstream", "class", ""])


@st.composite
def graph_line(draw: st.DrawFn, known: list[str]) -> str:
    name = draw(names)
    words = [name]
    if draw(st.booleans()) and known:
        words.append("after " + ", ".join(draw(st.lists(st.sampled_from(known + ["nope"]), min_size=1, max_size=3))))
    for word in draw(st.lists(st.sampled_from(["finally", "optional", "process", "timeout", "retries", "stall",
                                               "model", "bogus"]), max_size=3)):
        words.append(word if word in ("finally", "optional", "process", "bogus") else f"{word}={draw(values)}")
    sep = draw(st.sampled_from([": ", ":", " ", ":: "]))
    body = draw(st.sampled_from(["!true", "!echo {upstream.a}", "1 + 1", "upstream['a']", "?hi {upstream.a}",
                                 "", "!exit 2", "1/0", "(", "x"]))
    known.append(name)
    return " ".join(words) + sep + body


@st.composite
def graph_cells(draw: st.DrawFn) -> str:
    header = draw(st.sampled_from(["g", "g --timeout 5", "g --max-parallel 0", "", "g --timeout -1", "1g",
                                   "g --max-parallel 99999999999999999999", "g extra", "g --replace"]))
    known: list[str] = []
    lines = [draw(graph_line(known)) for _ in range(draw(st.integers(1, 4)))]
    extra = draw(st.sampled_from(["", "    more body\n", "# comment\n", "\n"]))
    return f"%%bgraph {header}\n" + "\n".join(lines) + "\n" + extra


@pytest.fixture(scope="module")
def kernel():
    k = start_kernel()
    k.run("x = 3\nfrom ttasks_ipy.kernel import session as _session")
    yield k
    print(f"\n[fuzz] {COUNTS}")
    stop_kernel(k)


def ntasks(k) -> int:
    """Tasks the session knows (a finished task's notice may arrive in the same cell: read the marked line)."""
    found = re.search(r"NTASKS=(\d+)", k.run("print(f'NTASKS={len(_session().tasks())}')").stdout)
    assert found, "no task count"
    return int(found.group(1))


def check_cell(k, code: str) -> None:
    before = ntasks(k)
    r = k.run(code, timeout=30, allow_error=True)
    COUNTS["runs"] += 1
    after = ntasks(k)
    text = r.all_text
    if r.error is not None:
        tb = "\n".join(r.error.get("traceback", []))
        assert r.error["ename"] == "UsageError", f"{code!r} raised {r.error['ename']}: {r.error['evalue']}\n{tb}"
        assert "\n" not in r.error["evalue"].strip(), f"{code!r}: a UsageError of more than one line: {r.error}"
        assert after == before, f"{code!r}: UsageError but {after - before} task(s) added"
        COUNTS["usage errors"] += 1
    else:
        assert "Traceback" not in text and "ttasks_ipy/" not in text, f"{code!r} printed a traceback:\n{text}"
        if r.stderr.startswith("UsageError:"):
            assert "\n" not in r.stderr.strip(), f"{code!r}: more than one line: {r.stderr!r}"
            assert after == before, f"{code!r}: UsageError but {after - before} task(s) added"
            COUNTS["usage errors"] += 1
        else:
            COUNTS["dispatched"] += 1
    # the engine still works, and nothing is left to fill the kernel
    k.run("%bg --cancel all", allow_error=True)
    k.run("%bg --quiet -o ok 1")
    k.run("%bg --wait --timeout 20", timeout=30)
    assert "OK=1" in k.run("print(f'OK={ok}')").stdout, f"after {code!r} a trivial task did not deliver"
    k.run("del ok")


COMMON = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))


@COMMON
@given(code=bg_lines())
def test_bg_lines(kernel, code):
    check_cell(kernel, code)


@COMMON
@given(code=bg_cells())
def test_bg_cells(kernel, code):
    check_cell(kernel, code)


@COMMON
@given(code=graph_cells())
def test_bgraph_cells(kernel, code):
    check_cell(kernel, code)
