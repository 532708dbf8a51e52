"""No piece of a key leaves the engine: the redaction rules, and prompts against a server that repeats the request.

The local server's ``reflect`` behaviour answers with an error that quotes the
request's credential header, all its headers and its body, with the key placed
so that it straddles each point where a message is cut. Every text a user can
read (errors, tracebacks, exceptions and their chains, events, log records,
output files) is searched for the key and for every 8-character piece of it
(``tests/secret_search.py``). This is the reduced set of offsets;
``tests/reliability/test_secret_sweep.py`` tries them all.
"""
from __future__ import annotations

import logging
from typing import Any

import pytest
from secret_search import (
    REFLECT_CUTS,
    Events,
    assert_no_leak,
    everything,
    find_leaks,
    fragments,
    make_secret,
    reflect_models,
    reflect_settings,
    sweep,
)

from ttasks_ipy.core import Executor, TaskSpec
from ttasks_ipy.core import secrets as core_secrets
from ttasks_ipy.core.runners.prompt import PromptFailed, PromptRunner, PromptSettings
from ttasks_ipy.core.secrets import clip, redact

try:
    from tests.llm_server import FakeLLM
except ImportError:
    from llm_server import FakeLLM

pytestmark = pytest.mark.timeout(60)

KEY = make_secret()
HEADER_SECRET = make_secret("hdr-", 32)


@pytest.fixture(scope="module")
def server():
    with FakeLLM() as srv:
        yield srv


@pytest.fixture
def ex(tmp_path):
    executor = Executor(max_workers=64, output_dir=tmp_path)
    yield executor
    executor.shutdown()


# ---- the rules ------------------------------------------------------------
@pytest.fixture
def known_key(monkeypatch):
    monkeypatch.setenv("TTASKS_TEST_SECRET_KEY", KEY)
    core_secrets.register_env("TTASKS_TEST_SECRET_KEY")
    return KEY


def test_whole_key_and_any_run_of_eight(known_key):
    assert redact(f"bad key {KEY}.") == "bad key ***."
    for i in range(len(KEY) - 8):
        piece = KEY[i:i + 8 + i % 5]
        assert find_leaks({"x": redact(f"[{piece}]")}, KEY) == [], piece


def test_a_text_cut_anywhere_keeps_no_piece_of_four(known_key):
    text = f"Incorrect API key provided: {KEY}; retry with another key"
    for i in range(len(text) + 1):
        head, tail = redact(text[:i]), redact(text[i:])
        assert find_leaks({"head": head, "tail": tail}, KEY, n=4) == [], i
        assert redact(text)[:i].count("sk-") == 0


def test_masked_forms_providers_use(known_key):
    masked = f"Incorrect API key provided: {KEY[:5]}{'*' * 20}{KEY[-4:]}. You can find your key..."
    assert find_leaks({"m": redact(masked)}, KEY, n=4) == []
    assert find_leaks({"m": redact(f"key ending in '{KEY[-6:]}'")}, KEY, n=4) == []


def test_short_pieces_inside_words_are_left_alone(known_key):
    word = "x" + KEY[-5:] + "y"  # five characters of the key's end, inside a longer word
    assert redact(f"id {word} ok") == f"id {word} ok"


@pytest.mark.parametrize(("text", "want"), [
    ("Authorization: Bearer abc123secretvalue", "Authorization: Bearer ***"),
    ('{"authorization": "Bearer abc123secret"}', '{"authorization": "Bearer ***"}'),
    ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': 'Basic ***'}"),
    ("[(b'authorization', b'Bearer tok-123456789')]", "[(b'authorization', b'Bearer ***')]"),
    ("api-key: 0a1b2c3d4e5f", "api-key: ***"),
    ("X-Api-Key=qwerty12345;", "X-Api-Key=***;"),
    ("proxy-authorization: Basic Zm9vOmJhcg==", "proxy-authorization: Basic ***"),
    ("sent Bearer eyJhbGciOiJIUzI1NiJ9.e30 to the proxy", "sent Bearer *** to the proxy"),
])
def test_credential_headers_are_masked_whatever_their_value(text, want):
    assert redact(text) == want
    assert redact(want) == want


@pytest.mark.parametrize("prose", [
    "authentication failed (HTTP 401): check the key in $OPENAI_API_KEY",
    "Bearer authentication required",
    "Basic usage: see the docs",
    "check the authorization, then retry",
    "the model `gpt-4o` does not exist",
])
def test_prose_is_kept(prose, known_key):
    assert redact(prose) == prose


def test_redact_then_clip(known_key):
    text = "." * 290 + f"Bearer {KEY} and more"
    assert find_leaks({"cut": clip(redact(text), 300)}, KEY, n=4) == []
    assert clip("abcdef", 4) == "abc…" and clip("abc", 4) == "abc"


def test_settings_redact_their_own_secrets_in_part(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    s = PromptSettings(base_url="http://user:pw-0123456789@h:1/v1", model="m",
                       extra_headers={"X-Proxy-Token": HEADER_SECRET})
    text = f"{KEY[3:20]} {HEADER_SECRET[5:17]} pw-0123456789 {KEY[-6:]}"
    assert_no_leak({"redacted": s.redact(text)}, KEY, HEADER_SECRET, "pw-0123456789")


def test_log_records_are_redacted(known_key, caplog):
    caplog.set_level(logging.DEBUG, logger="ttasks_ipy")
    log = logging.getLogger("ttasks_ipy")
    log.warning("server said %s", f"Incorrect API key provided: {KEY[:30]}")
    try:
        raise RuntimeError(f"echo: Authorization: Bearer {KEY}")
    except RuntimeError:
        log.exception("request failed for %s", KEY[10:])
    formatted = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    assert_no_leak({"caplog.text": caplog.text, "records": formatted}, KEY)
    assert "RuntimeError: echo: Authorization: Bearer ***" in caplog.text


# ---- against the reflecting server ------------------------------------------------
@pytest.mark.parametrize("auth", ["bearer", "azure", "header"])
def test_reflected_requests_leak_no_piece_of_the_key(ex, server, monkeypatch, caplog, auth):
    caplog.set_level(logging.DEBUG)
    settings, secrets = reflect_settings(server.base_url, monkeypatch, auth, KEY, HEADER_SECRET)
    events = Events(ex)
    key_len = len(secrets[0])
    models = reflect_models(key_len) + [f"reflect?form=json&status=500&at={REFLECT_CUTS['json'] - 4}"]
    tasks = sweep(ex, settings, models)
    assert all(t.status == "failed" and isinstance(t.exception, PromptFailed) for t in tasks)
    # the server did get the key, and its answer did quote it
    sent = [r for r in server.requests if isinstance(r.body, dict) and r.body.get("model") == models[0]][-1]
    assert secrets[0] in " ".join(sent.headers.values())
    assert any("***" in t.error for t in tasks)
    assert_no_leak(everything(ex, tasks, events, caplog), *secrets)
    # the model's own answer before the failure is kept as it came
    mid = next(t for t in tasks if "midstream" in t.spec.runner.model)
    assert mid.exception.partial == "Echo:" == mid.output


def test_a_callable_that_quotes_the_key_in_part(ex, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    events = Events(ex)
    runners = [PromptRunner("q", PromptSettings(callable=f"{__name__}:{name}")) for name in
               ("quotes_a_piece", "quotes_the_masked_key", "quotes_the_headers")]
    tasks = [ex.submit(TaskSpec(r)) for r in runners]
    ex.wait(tasks, timeout=15)
    assert all(t.status == "failed" for t in tasks)
    assert_no_leak(everything(ex, tasks, events, caplog), KEY)
    masked = find_leaks({t.label: (t.error, t.traceback) for t in tasks}, KEY[:4], KEY[-4:], n=4)
    assert masked == []


def quotes_a_piece(prompt: str, **options: Any) -> str:
    import os

    raise ValueError(f"provider refused {os.environ['OPENAI_API_KEY'][:20]}")


def quotes_the_masked_key(prompt: str, **options: Any) -> str:
    import os

    key = os.environ["OPENAI_API_KEY"]
    raise PermissionError(f"Incorrect API key provided: {key[:4]}{'*' * 30}{key[-4:]}.")


def quotes_the_headers(prompt: str, **options: Any):
    import os

    yield "half an answer"
    raise ConnectionError(str({"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"[:40]}))


def test_fragments_helper():
    assert fragments("abcdefghij") == {"abcdefgh", "bcdefghi", "cdefghij"}
    assert find_leaks({"a": "xx cdefghij"}, "abcdefghij")[0].where == "a"
