"""The one ``{expr}``/``$name`` expander: per-field rules, quoting by place, option values, prompts, graphs.

Commands are run through real ``bash -c`` where the result matters; the
kernel tests at the end go through ``%bg`` as a user types it.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttasks_ipy.core import Executor, SpecError
from ttasks_ipy.core.fields import Template as FilledText
from ttasks_ipy.core.graph import GraphRun
from ttasks_ipy.syntax.expand import bind_prompt, expand_shell, expand_text
from ttasks_ipy.syntax.graph import compile_graph
from ttasks_ipy.syntax.template import Template

pytestmark = pytest.mark.timeout(60)


def bash(command: str, cwd: Path | None = None) -> str:
    r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=10, cwd=cwd,
                       stdin=subprocess.DEVNULL, env={**os.environ, "HOME": "/home/someone"})
    return r.stdout


def one_line_error(call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(SpecError) as e:
        call(*args, **kw)
    text = str(e.value)
    assert "\n" not in text, text
    return text


# ---- what plain IPython passes to the shell untouched ------------------------------
IPYTHON_EXAMPLES = [
    ("for i in 1 2; do echo $i; done", "1\n2\n"),
    ("echo $HOME", "/home/someone\n"),
    ("printf 'a b\\nc d\\n' | awk '{print $1}'", "a\nc\n"),
    ("echo ${HOME}", "/home/someone\n"),
    ("echo d/{src,test}", "d/src d/test\n"),
    ("echo {1..3}", "1 2 3\n"),
    ("{ echo grouped; }", "grouped\n"),
    ("echo '{\"id\": 1}' | tr -d '\"'", "{id: 1}\n"),
    ("set -- a b; echo $1 $# $@ $?", "a 2 a b 0\n"),
    ("find /dev/null -maxdepth 0 -exec echo {} +", "/dev/null\n"),
    ("x=5; echo ${x:-{nosuch}} ${#x}", "5} 1\n"),  # bash ends ${ at the first }
]


@pytest.mark.parametrize(("command", "output"), IPYTHON_EXAMPLES, ids=[c for c, _ in IPYTHON_EXAMPLES])
def test_what_belongs_to_the_shell_is_passed_untouched(command: str, output: str) -> None:
    # the namespace even holds i, x and HOME: the command sets i and x itself, and $HOME... is in ns, see below
    ns = {"i": 99, "x": "py", "src": "S"}
    assert expand_shell(command, ns) == command
    assert bash(command) == output


def test_a_name_the_command_sets_itself_stays_the_shell_s() -> None:
    ns = {"i": 99, "line": "py", "n": 1}
    for command in ("for i in a b; do echo $i; done", "while read -r line; do echo $line; done < f",
                    "n=3; echo $n", "export n=2; echo $n"):
        assert expand_shell(command, ns) == command
    assert expand_shell("echo $i; echo {i}", ns) == "echo 99; echo 99"


def test_dollar_names_of_the_namespace_expand_and_are_quoted() -> None:
    ns = {"label": "a b", "evil": "x; touch owned"}
    assert expand_shell("printf '[%s]' $label \"$label\"", ns) == "printf '[%s]' 'a b' \"a b\""
    assert bash(expand_shell("printf '[%s]' $evil", ns)) == "[x; touch owned]"
    # inside single quotes $name is the program's own (awk, sed), as in IPython
    assert expand_shell("awk '{print $label}'", ns) == "awk '{print $label}'"


def test_dollar_escapes() -> None:
    ns = {"HOME": "py-home"}
    assert expand_shell("echo $$HOME \\$HOME $$ $HOME", ns) == "echo $HOME \\$HOME $$ py-home"
    assert bash(expand_shell("echo $$HOME \\$HOME", ns)) == "/home/someone $HOME\n"
    assert bash(expand_shell("test $$ -gt 1 && echo pid", ns)) == "pid\n"  # $$ alone is the shell's process id


def test_brace_fields_that_are_not_python_or_name_nothing_defined_are_kept() -> None:
    ns = {"n": 3, "name": "x"}
    kept = ["echo {}", "echo {1..3}", "echo {print}", "jq '{id, type}'", "awk '{print $1}'", "echo {1,2}",
            "echo {nosuch}", "echo {n + nosuch}", "echo {", "echo }", "echo {x", "echo \\{n\\}", "echo {a b}",
            "echo ${x:-{nosuch}} $(( {nosuch} ))"]
    for command in kept:
        assert expand_shell(command, ns) == command, command
    assert expand_shell("echo {{n}} {{{n}}}", ns) == "echo {n} {3}"
    assert expand_shell("{ echo {n}; echo {nosuch}; }", ns) == "{ echo 3; echo {nosuch}; }"
    assert expand_shell("echo {name!r} {n:>4}", ns) == "echo {name!r} {n:>4}"  # no format specs: the shell's


def test_a_python_field_that_fails_is_one_line_naming_it() -> None:
    ns = {"d": {}, "n": 0}
    assert one_line_error(expand_shell, "echo {d['k']}", ns) == "{d['k']} failed: KeyError: 'k'"
    assert one_line_error(expand_shell, "echo { 1 / n }", ns) == "{1 / n} failed: ZeroDivisionError: division by zero"
    assert "AttributeError" in one_line_error(expand_shell, "echo {n.nope}", ns)


def test_quoting_follows_the_place() -> None:
    ns = {"path": "x; touch owned", "xs": ["a b", "c"], "n": 5}
    assert expand_shell('echo "Result: $(basename {path})"', ns) == 'echo "Result: $(basename \'x; touch owned\')"'
    assert expand_shell('echo "{path}"', ns) == 'echo "x; touch owned"'
    assert expand_shell("echo '{path}'", ns) == "echo '''x; touch owned'''"  # the quote closed and reopened
    assert expand_shell("echo `echo {path}`", ns) == "echo `echo 'x; touch owned'`"
    assert expand_shell("printf '<%s>' {xs}", ns) == "printf '<%s>' 'a b' c"
    assert expand_shell('echo "{xs}"', ns) == 'echo "a b c"'
    assert expand_shell("echo $(( {n} * 2 ))", ns) == "echo $(( 5 * 2 ))"
    assert expand_shell("echo {n}", ns) == "echo 5"


def test_refusals_name_the_field_and_say_how_to_pass_it() -> None:
    ns = {"n": "5", "v": "x", "xs": [1, 2]}
    assert one_line_error(expand_shell, "echo $(( {n} + 1 ))", ns) == (
        "{n} stands inside $((…)), where bash evaluates text as arithmetic: only a Python int can stand there, "
        "not a str (convert it, e.g. {int(...)})")
    assert one_line_error(expand_shell, "echo ${x:-{v}}", ns) == (
        "{v} stands inside ${…}, where a value cannot be quoted: pass it with --env V=v and write \"$V\" there")
    assert one_line_error(expand_shell, "cat <<EOF\n$v\nEOF", ns) == (
        "$v stands in a here-document, where a value cannot be quoted: pass it with --env V=v and write $V there")
    assert "in a case pattern" in one_line_error(expand_shell, "case a in {v}) ;; esac", ns)
    assert "which runs it as code" in one_line_error(expand_shell, "eval echo {v}", ns)
    assert "where bash reads a variable name" in one_line_error(expand_shell, "printf -v {v} %s 1", ns)
    assert one_line_error(expand_shell, "echo d/{xs}", ns) == (
        "{xs} is a list glued to other text of its word: give it a word of its own, or join it into one "
        "(e.g. {' '.join(...)})")
    assert one_line_error(expand_shell, "echo 'open {v}", ns) == "unclosed ' quote in the command"
    # a comment is left as written, value or not
    assert expand_shell("echo hi # {v} $(( {n} ))", ns) == "echo hi # {v} $(( {n} ))"


def test_readme_commands_are_unchanged_or_quoted(tmp_path: Path) -> None:
    ns = {"evil": f"a; touch {tmp_path}/PWNED", "words": ["x y", "z"]}
    for command in ("sleep 2; echo hello", "python train.py", "make build", "ruff check .", "pytest -q",
                    "echo is it France?", "trap '' TERM; sleep 300 & sleep 300",
                    "python -m http.server 0 --bind 127.0.0.1", "sleep 0.5; echo done", "echo try; exit 1"):
        assert expand_shell(command, ns) == command
    assert expand_shell("echo $$N $$PWD", ns) == "echo $N $PWD"
    out = bash(expand_shell("printf '%s|' {evil} \"$evil\" {words}", ns))
    assert out == f"{ns['evil']}|{ns['evil']}|x y|z|"
    assert not (tmp_path / "PWNED").exists()


def test_a_leading_value_is_never_an_option_of_bash() -> None:
    assert bash(expand_shell("{flag} 2>/dev/null; echo ran", {"flag": "-n"})) == "ran\n"


# ---- option values and prompts -----------------------------------------------------
def test_option_values_expand_without_quoting_and_unknown_names_are_errors() -> None:
    ns = {"p": 2, "d": "/tmp/a b"}
    assert expand_text("part{p}", ns) == "part2"
    assert expand_text("$d/x", ns) == "/tmp/a b/x"
    assert expand_text(r"port \d{3}$", ns) == r"port \d{3}$"  # a regex for --ready stays a regex
    assert expand_text(r"^\$x {{p}}", ns) == r"^\$x {p}"
    assert one_line_error(expand_text, "r{nosuch}", ns) == (
        "{nosuch}: name 'nosuch' is not defined (write {{ and }} for literal braces)")
    assert one_line_error(expand_text, "r$nosuch", ns) == (
        "$nosuch: name 'nosuch' is not defined (write $$nosuch for a literal $nosuch)")
    assert one_line_error(expand_text, "{p + nosuch}", ns).startswith("{p + nosuch}: name 'nosuch'")


def test_prompts_keep_what_is_not_a_field_of_theirs() -> None:
    ns = {"name": "France", "xs": [1, 2], "n": 3, "d": {}}
    assert expand_text("capital of {name}?", ns, dollar=False) == "capital of France?"
    assert expand_text("{xs} {n * 2} {len(xs)} {[x * n for x in xs]}", ns, dollar=False) == "[1, 2] 6 2 [3, 6]"
    json = 'Answer as {"city": "...", "n": 1} about {name}; fill {placeholder}; cost $n'
    assert expand_text(json, ns, dollar=False) == 'Answer as {"city": "...", "n": 1} about France; fill ' \
                                                  "{placeholder}; cost $n"
    assert expand_text('{{"json": {n}}} and {"}"}', ns, dollar=False) == '{"json": 3} and {"}"}'
    assert expand_text("a } alone, { open, {}", ns, dollar=False) == "a } alone, { open, {}"
    assert one_line_error(expand_text, "{d['k']}", ns, dollar=False) == "{d['k']} failed: KeyError: 'k'"


def test_a_bound_prompt_is_the_core_s_template_filled_in_when_rendered() -> None:
    ns = {"city": "Paris"}
    bound = bind_prompt("about {city} {{x}}", ns)
    assert isinstance(bound, FilledText)
    assert bound.source == "about {city} {{x}}"
    ns["city"] = "Lyon"
    assert bound.render() == "about Lyon {x}"


def test_fields_are_found_once_with_their_lines() -> None:
    t = Template("a {x}\n b $y {{no}} { z; {w} }")
    assert [(f.label, f.line, f.dollar) for f in t.fields()] == [
        ("{x}", 0, False), ("$y", 1, True), ("{z; {w}}", 1, False), ("{w}", 1, False)]
    assert [f.tree is not None for f in t.fields()] == [True, False, False, True]


# ---- graphs ------------------------------------------------------------------------
@pytest.fixture
def ex() -> Iterator[Executor]:
    e = Executor(max_workers=4, grace=0.5)
    yield e
    e.shutdown()


def test_upstream_values_in_graph_commands_are_quoted_for_their_place(ex: Executor, tmp_path: Path) -> None:
    cell = (
        f"evil: 'x; touch {tmp_path}/owned'\n"
        "n: 4\n"
        "sub after evil: !echo \"Result: $(printf %s {upstream.evil.value})\"\n"
        "tick after evil: !echo \"`echo {upstream.evil.value}`\"\n"
        "loop: !for i in 1 2; do echo $i; done\n"
        "math after n: !echo $(( {upstream.n.value} * 2 ))\n"
        "bad after evil: !echo $(( {upstream.evil.value} ))\n"
    )
    g = GraphRun(ex, "g", compile_graph("g", cell, {}, grace=0.5)).start().wait(20)
    assert g.sub.result.output == f"Result: x; touch {tmp_path}/owned\n"
    assert g.tick.result.output == f"x; touch {tmp_path}/owned\n"
    assert g.loop.result.output == "1\n2\n"
    assert g.math.result.output == "8\n"
    assert g.bad.status == "failed" and "{upstream.evil.value} stands inside $((…))" in g.bad.error
    assert not (tmp_path / "owned").exists()


# ---- through a real kernel -----------------------------------------------------------
def test_kernel_command_substitution_in_quotes_delivers_exact_text(kernel, tmp_path: Path) -> None:
    kernel.run(f"import os\nos.chdir({str(tmp_path)!r})\npath = 'x; touch owned'")
    kernel.run("%bg -n subst -o r !echo \"Result: $(basename {path})\"\n%bg --wait subst")
    assert kernel.value("r.output") == repr("Result: x; touch owned\n")
    assert not (tmp_path / "owned").exists()
    assert os.listdir(tmp_path) == []


def test_kernel_shell_loop_and_variables_pass_untouched(kernel) -> None:
    kernel.run("i = 'python i'")  # a leftover loop variable must not leak into the shell loop
    kernel.run("%bg -n loop -o r !for i in 1 2; do echo $i; done\n%bg --wait loop")
    assert kernel.value("r.output") == repr("1\n2\n")
    kernel.run("%bg -n shellvars -o s !echo ${HOME} $HOME d/{src,test} | awk '{print $3, $4}'\n%bg --wait shellvars")
    assert kernel.value("s.output") == repr("d/src d/test\n")


def test_kernel_refusal_is_a_one_line_usage_error(kernel) -> None:
    kernel.run("path = 'x; touch owned'")
    r = kernel.run("%bg !echo $(( {path} + 1 ))", allow_error=True)
    err = r.stderr.strip()
    assert err.startswith("UsageError: %bg") and "\n" not in err, err
    assert "{path} stands inside $((…))" in err
