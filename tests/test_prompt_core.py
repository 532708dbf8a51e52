"""Prompt tasks in the core: ``PromptRunner`` on an ``Executor`` against a real local HTTP server.

The server (``tests/llm_server.py``) speaks the chat-completions protocol; its
model name picks a behaviour (slow stream, 429, cut stream, ...). Every wait
is bounded; synchronisation is by events and the server's records, never by
sleeping.
"""
from __future__ import annotations

import asyncio
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from ttasks_ipy.core import EventKind, Executor, SpecError, TaskEvent, TaskSpec, TaskState
from ttasks_ipy.core.errors import TaskFailed
from ttasks_ipy.core.llm import loop as llm_loop
from ttasks_ipy.core.llm.chat import _retry_wait
from ttasks_ipy.core.runners.prompt import PromptFailed, PromptRunner, PromptSettings, shutdown_loop

try:
    from tests.llm_server import FakeLLM
except ImportError:  # tests/ itself is on sys.path (pytest's default rootdir-less import)
    from llm_server import FakeLLM

pytestmark = pytest.mark.timeout(30)

FAKE_KEY = "sk-ttasks-FAKE-" + uuid.uuid4().hex
HERE = Path(__file__).resolve().parent


# ---- fixtures ------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    with FakeLLM() as srv:
        yield srv


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    return FAKE_KEY


@pytest.fixture
def ex(tmp_path):
    # prompts wait on the network, not on a CPU: give them room until the executor
    # lets prompt tasks run without a worker slot (PromptRunner.needs_worker_slot)
    executor = Executor(max_workers=64, output_dir=tmp_path)
    yield executor
    executor.shutdown()


@pytest.fixture
def settings(server, key) -> PromptSettings:
    return PromptSettings(base_url=server.base_url, model="echo", backoff=0.01)


class Recorder:
    """Every event of a bus, with the time it was published, and a bounded wait on them."""

    def __init__(self, executor: Executor) -> None:
        self.events: list[tuple[float, TaskEvent]] = []
        self.cond = threading.Condition()
        executor.bus.subscribe(self._on)

    def _on(self, ev: TaskEvent) -> None:
        with self.cond:
            self.events.append((time.monotonic(), ev))
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred([e for _, e in self.events]), timeout)

    def of(self, task) -> list[tuple[float, TaskEvent]]:
        with self.cond:
            return [(t, e) for t, e in self.events if e.task is task]


def tag(model: str) -> str:
    """A model name unique to this call (the server counts requests per name)."""
    return f"{model}#{uuid.uuid4().hex[:8]}"


def run(ex: Executor, runner: PromptRunner, timeout: float | None = None):
    return ex.submit(TaskSpec(runner, timeout=timeout)).wait(15)


# ---- streaming and delivery ------------------------------------------------
def test_tokens_stream_into_output_before_the_end(ex, settings):
    rec = Recorder(ex)
    state_at_first_output: list[TaskState] = []

    def first(ev: TaskEvent) -> None:
        if ev.kind is EventKind.OUTPUT and not state_at_first_output:
            state_at_first_output.append(ev.task.state)

    ex.bus.subscribe(first)
    runner = PromptRunner("one two three four", settings, model="slow?delay=0.05")
    t = run(ex, runner)
    assert t.status == "succeeded"
    assert t.result == "Echo: one two three four" and type(t.result) is str
    evs = rec.of(t)
    outputs = [(ts, e.data["text"]) for ts, e in evs if e.kind is EventKind.OUTPUT]
    assert [x for _, x in outputs] == ["Echo:", " one", " two", " three", " four"]
    done_at = next(ts for ts, e in evs if e.kind is EventKind.SUCCEEDED)
    assert state_at_first_output == [TaskState.RUNNING]
    assert done_at - outputs[0][0] >= 0.15  # the first token came well before the end
    assert t.output == t.result
    m = runner.meta
    assert m["model"] == "slow?delay=0.05" and m["backend"] == "http"
    assert m["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert 0 < m["first_token_s"] < m["latency_s"] and m["finish_reason"] == "stop" and m["chars"] == 24


def test_request_body_and_headers(ex, server, key):
    model = tag("echo")
    s = PromptSettings(base_url=server.base_url, model=model, system="be brief", temperature=0.2,
                       max_tokens=50, extra_headers={"X-Team": "qa"})
    t = run(ex, PromptRunner("hello", s))
    assert t.result == "Echo: hello"
    (req,) = server.requests_for(model)
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {key}" and req.headers["x-team"] == "qa"
    assert req.body == {
        "model": model, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2,
        "max_tokens": 50,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    }


def test_per_task_model_and_system_override_settings(ex, server, settings):
    model = tag("echo")
    t = run(ex, PromptRunner("hi", settings.with_(system="cfg system"), model=model, system="task system"))
    assert t.ok
    (req,) = server.requests_for(model)
    assert req.body["messages"][0] == {"role": "system", "content": "task system"}


def test_azure_uses_api_key_header_and_api_version(ex, server, key):
    model = tag("echo")
    base = server.base_url.replace("/v1", "/openai/deployments/gpt4o")
    t = run(ex, PromptRunner("hi", PromptSettings(base_url=base, model=model, api_version="2024-10-21")))
    assert t.result == "Echo: hi"
    (req,) = server.requests_for(model)
    assert req.path == "/openai/deployments/gpt4o/chat/completions"
    assert req.query == {"api-version": "2024-10-21"}
    assert req.headers["api-key"] == key and "authorization" not in req.headers


def test_server_answering_json_instead_of_a_stream(ex, settings):
    t = run(ex, PromptRunner("a b", settings, model="nostream"))
    assert t.result == "Echo: a b" and t.output == "Echo: a b"
    assert t.spec.runner.meta["usage"]["total_tokens"] == 5


# ---- concurrency -------------------------------------------------------------
def test_twenty_prompts_run_together_on_one_loop_thread(ex, settings):
    slow = "slow?delay=0.1"
    t0 = time.monotonic()
    run(ex, PromptRunner("a b c d e", settings, model=slow))
    one = time.monotonic() - t0  # about 6 tokens x 0.1 s
    t0 = time.monotonic()
    tasks = [ex.submit(TaskSpec(PromptRunner(f"prompt {i} b c d", settings, model=slow))) for i in range(20)]
    dispatched = time.monotonic() - t0
    ex.wait(tasks, timeout=15)
    together = time.monotonic() - t0
    assert all(t.result == f"Echo: prompt {i} b c d" for i, t in enumerate(tasks))
    assert dispatched < 2.0  # submitting never waits for an answer
    assert together < one + 1.0, f"20 prompts took {together:.2f}s, one took {one:.2f}s"
    assert sum(th.name == "ttasks-llm-loop" for th in threading.enumerate()) == 1


def test_max_concurrency_queues_the_rest(ex, settings):
    s = settings.with_(max_concurrency=2)
    runners = [PromptRunner("a b", s, model="slow?delay=0.1") for _ in range(4)]
    tasks = [ex.submit(TaskSpec(r)) for r in runners]
    ex.wait(tasks, timeout=15)
    assert all(t.ok for t in tasks)
    waits = sorted(r.meta["wait_s"] for r in runners)
    assert waits[1] < 0.15 and waits[2] >= 0.2, waits  # two ran at once, two waited for them


# ---- cancel and timeout --------------------------------------------------------
def test_cancel_mid_stream_closes_the_connection(ex, server, settings):
    model = tag("slow?delay=0.2")
    rec = Recorder(ex)
    t = ex.submit(TaskSpec(PromptRunner("a b c d e f g h", settings, model=model)))
    assert rec.wait_for(lambda evs: any(e.kind is EventKind.OUTPUT and e.task is t for e in evs))
    backend = ex.backend("thread")
    assert backend.statistics().running == 1
    t0 = time.monotonic()
    assert t.cancel()
    t.wait(0.5)
    assert t.status == "cancelled"
    assert server.wait_disconnect(model, 2.0)
    # the attempt itself ended too (run raised TaskCancelled): its thread is free again
    deadline = time.monotonic() + 0.5
    while backend.statistics().running and time.monotonic() < deadline:
        time.sleep(0.005)
    assert backend.statistics().running == 0
    assert time.monotonic() - t0 < 0.5
    assert t.output.startswith("Echo:") and len(t.output) < len("Echo: a b c d e f g h")
    with pytest.raises(Exception, match="cancelled"):
        _ = t.result


def test_cancel_while_waiting_for_the_first_byte(ex, server, settings):
    model = tag("hang")
    t = ex.submit(TaskSpec(PromptRunner("x", settings, model=model)))
    assert server.wait_requests(model, 1, 5)
    t0 = time.monotonic()
    t.cancel()
    assert server.wait_disconnect(model, 2.0)
    assert time.monotonic() - t0 < 0.5 and t.status == "cancelled"


def test_timeout_aborts_the_request(ex, server, settings):
    model = tag("hang")
    t0 = time.monotonic()
    t = run(ex, PromptRunner("x", settings, model=model), timeout=0.5)
    assert t.status == "failed" and t.reason == "timed out after 0.5s"
    assert server.wait_disconnect(model, 2.0)
    assert time.monotonic() - t0 < 1.5


# ---- retries -----------------------------------------------------------------------
def test_429_is_retried_honouring_retry_after(ex, server, settings):
    model = tag("429?n=2&after=0.3")
    t0 = time.monotonic()
    runner = PromptRunner("x", settings.with_(backoff=5.0), model=model)  # backoff would be far longer
    t = run(ex, runner)
    assert t.result == "Echo: x"
    assert 0.6 <= time.monotonic() - t0 < 3.0
    assert runner.meta["retries"] == 2 and len(server.requests_for(model)) == 3


def test_retry_after_ms_wins(ex, server, settings):
    model = tag("429?n=1&ms=50&after=30")
    t0 = time.monotonic()
    t = run(ex, PromptRunner("x", settings, model=model))
    assert t.ok and time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("status", ["500", "502", "503"])
def test_5xx_is_retried_then_succeeds(ex, server, settings, status):
    model = tag(f"{status}?n=1")
    runner = PromptRunner("x", settings, model=model)
    assert run(ex, runner).result == "Echo: x"
    assert runner.meta["retries"] == 1 and len(server.requests_for(model)) == 2


def test_retries_run_out(ex, server, settings):
    model = tag("500?n=99")
    t = run(ex, PromptRunner("x", settings.with_(retries=2), model=model))
    assert t.status == "failed" and isinstance(t.exception, PromptFailed)
    assert str(t.exception).startswith("server error (HTTP 500) from http://127.0.0.1:")
    assert "after 2 retries: fake 500" in str(t.exception)
    assert t.exception.status == 500 and len(server.requests_for(model)) == 3


def test_retry_wait_reads_the_headers():
    s = PromptSettings(base_url="http://x/v1", backoff=0.5, max_retry_wait=10)
    assert _retry_wait(httpx.Headers({"retry-after": "2"}), 0, s) == 2.0
    assert _retry_wait(httpx.Headers({"retry-after": "120"}), 0, s) == 10.0
    assert _retry_wait(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"}), 0, s) == 0.25
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3.0 <= _retry_wait(httpx.Headers({"retry-after": date}), 0, s) <= 5.0
    assert 2.0 <= _retry_wait(httpx.Headers(), 2, s) <= 2.5  # 0.5 * 2**2, with jitter


# ---- faults ---------------------------------------------------------------------------
@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_names_the_variable_and_is_not_retried(ex, server, settings, status):
    model = tag(str(status))
    t = run(ex, PromptRunner("x", settings, model=model))
    assert t.status == "failed"
    assert str(t.exception) == f"authentication failed (HTTP {status}): check the key in $OPENAI_API_KEY"
    assert len(server.requests_for(model)) == 1
    assert FAKE_KEY not in t.error


def test_auth_failure_names_a_custom_variable(ex, server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    t = run(ex, PromptRunner("x", PromptSettings(base_url=server.base_url, model="401", api_key_env="MY_LLM_KEY")))
    assert str(t.exception) == "authentication failed (HTTP 401): check the key in $MY_LLM_KEY (it is not set)"


@pytest.mark.parametrize(("behaviour", "words"), [
    ("cut?after=2", "was cut after 7 characters"),
    ("malformed?after=2", "malformed stream"),
    ("nodone?after=2", "ended before its end ([DONE]) after 7 characters"),
    ("errorchunk?after=2", "error mid-stream after 7 characters: the fake model overheated"),
])
def test_broken_streams_fail_keeping_the_partial_text(ex, server, settings, behaviour, words):
    model = tag(behaviour)
    t = run(ex, PromptRunner("a b c d", settings, model=model))
    assert t.status == "failed" and isinstance(t.exception, PromptFailed)
    assert isinstance(t.exception, TaskFailed)
    assert words in str(t.exception)
    assert t.exception.partial == "Echo: a" == t.output
    assert len(server.requests_for(model)) == 1  # never retried once text arrived
    with pytest.raises(TaskFailed, match="PromptFailed"):
        _ = t.result


def test_other_statuses_quote_the_server(ex, settings):
    t = run(ex, PromptRunner("x", settings, model="404"))
    assert "request refused (HTTP 404)" in t.error and "does not exist" in t.error


def test_connection_refused(ex, key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    t = run(ex, PromptRunner("x", PromptSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m")))
    assert t.status == "failed" and isinstance(t.exception, PromptFailed)
    assert str(t.exception).startswith(f"cannot connect to http://127.0.0.1:{port}/v1: is the server running?")
    assert t.exception.partial == "" and time.monotonic() - t0 < 5


# ---- configuration -------------------------------------------------------------------
def test_no_backend_configured_is_one_line_naming_the_settings():
    with pytest.raises(SpecError) as err:
        PromptRunner("hi", PromptSettings.from_env(environ={}))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("no LLM backend configured")
    assert "OPENAI_BASE_URL" in msg and "c.TTasks.llm_base_url" in msg and "llm_callable" in msg


def test_no_model_names_the_settings(server):
    with pytest.raises(SpecError, match=r"no model chosen .* pass --model, or set OPENAI_MODEL or c.TTasks.llm_model"):
        PromptRunner("hi", PromptSettings.from_env(environ={"OPENAI_BASE_URL": server.base_url}))


def test_from_env_reads_the_official_variables():
    s = PromptSettings.from_env(environ={"OPENAI_BASE_URL": "http://h:1/v1/", "OPENAI_MODEL": "m",
                                         "OPENAI_API_KEY": FAKE_KEY})
    assert (s.base_url, s.model, s.api_key_env) == ("http://h:1/v1", "m", "OPENAI_API_KEY")
    assert FAKE_KEY not in repr(s)
    only_key = PromptSettings.from_env(environ={"OPENAI_API_KEY": FAKE_KEY, "OPENAI_MODEL": "gpt-4.1-mini"})
    assert only_key.base_url == "https://api.openai.com/v1"
    given = PromptSettings.from_env(environ={"OPENAI_BASE_URL": "http://h:1/v1", "OPENAI_MODEL": "m"},
                                    base_url="http://cfg:2/v1", model=None, temperature=0.5)
    assert (given.base_url, given.model, given.temperature) == ("http://cfg:2/v1", "m", 0.5)
    traits = PromptSettings.from_env(environ={"OPENAI_BASE_URL": "http://h:1/v1"}, base_url="", model="",
                                     system="", callable="", api_key_env="OPENAI_API_KEY")
    assert (traits.base_url, traits.model, traits.system, traits.backend) == ("http://h:1/v1", None, None, "http")
    with pytest.raises(SpecError, match="unknown prompt setting 'modle'"):
        PromptSettings.from_env(environ={}, modle="x")


@pytest.mark.parametrize(("kw", "words"), [
    ({"base_url": "localhost:8000"}, "must start with http"),
    ({"callable": "no_colon"}, "module:function"),
    ({"retries": -1}, "retries"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"temperature": 3}, "temperature"),
    ({"api_key_env": "sk-abc"}, "NAME of an environment variable"),
])
def test_bad_settings_are_spec_errors(kw, words):
    with pytest.raises(SpecError, match=words):
        PromptSettings(**kw)


def test_empty_prompt_is_a_spec_error(settings):
    with pytest.raises(SpecError, match="the prompt is empty"):
        PromptRunner("  \n", settings)


# ---- the Python callable backend ----------------------------------------------------
def sync_text(prompt: str, **options: Any) -> str:
    return f"text for {prompt} with {sorted(options.items())}"


def sync_chunks(prompt: str, **options: Any):
    yield from ("a", "b", "c")


def sync_broken(prompt: str, **options: Any):
    yield "half"
    raise ValueError(f"provider down ({os.environ.get('OPENAI_API_KEY')})")


async def async_text(prompt: str, **options: Any) -> str:
    await asyncio.sleep(0)
    return "async " + prompt


async def async_chunks(prompt: str, **options: Any):
    for i in range(int(options.get("model") or 3)):
        await asyncio.sleep(float(os.environ.get("TTASKS_TEST_CHUNK_DELAY", "0")))
        yield f"<{i}>"


def not_text(prompt: str, **options: Any) -> int:
    return 42


def cb(name: str, **kw: Any) -> PromptSettings:
    return PromptSettings(callable=f"{__name__}:{name}", **kw)


def test_callable_returning_text_gets_the_options(ex):
    runner = PromptRunner("q", cb("sync_text", temperature=0.1), model="m1", system="sys")
    t = run(ex, runner)
    assert t.result == "text for q with [('model', 'm1'), ('system', 'sys'), ('temperature', 0.1)]"
    assert runner.meta["backend"] == "callable" and runner.meta["first_token_s"] is not None


@pytest.mark.parametrize(("fn", "want"), [("sync_chunks", "abc"), ("async_text", "async q"),
                                          ("async_chunks", "<0><1><2>")])
def test_callable_streams_chunks(ex, fn, want):
    rec = Recorder(ex)
    t = run(ex, PromptRunner("q", cb(fn)))
    assert t.result == want == t.output
    if fn == "sync_chunks":
        assert [e.data["text"] for _, e in rec.of(t) if e.kind is EventKind.OUTPUT] == ["a", "b", "c"]


def test_callable_failure_keeps_partial_text(ex, key):
    t = run(ex, PromptRunner("q", cb("sync_broken")))
    assert t.status == "failed" and isinstance(t.exception, PromptFailed)
    assert t.exception.partial == "half" == t.output
    assert "ValueError: provider down (***)" in str(t.exception)


def test_callable_bad_results_and_imports(ex):
    t = run(ex, PromptRunner("q", cb("not_text")))
    assert "returned a int, not text" in t.error
    with pytest.raises(SpecError, match="cannot load the llm callable 'no_such_module_xyz:f'"):
        PromptRunner("q", PromptSettings(callable="no_such_module_xyz:f"))


def test_async_callable_cancels_at_once(ex, monkeypatch):
    monkeypatch.setenv("TTASKS_TEST_CHUNK_DELAY", "0.2")
    rec = Recorder(ex)
    t = ex.submit(TaskSpec(PromptRunner("q", cb("async_chunks"), model="50")))
    assert rec.wait_for(lambda evs: any(e.kind is EventKind.OUTPUT and e.task is t for e in evs))
    t.cancel()
    t.wait(0.5)
    assert t.status == "cancelled" and t.output == "<0>"


# ---- a template filled in at run time ------------------------------------------
class _Template:
    """The smallest ``fields.Template``: reads ``ns['city']`` when rendered."""

    source = "about {city}"

    def __init__(self, ns):
        self.ns = ns

    def render(self):
        return "about " + self.ns["city"]


def test_template_rendered_at_run_time(ex, settings):
    ns = {"city": "Paris"}
    runner = PromptRunner(_Template(ns), settings)
    ns["city"] = "Lyon"
    assert runner.describe() == "?about {city}"
    assert run(ex, runner).result == "Echo: about Lyon"


# ---- the key never leaks ---------------------------------------------------------
def test_the_key_appears_nowhere(ex, server, key, caplog):
    caplog.set_level("DEBUG")
    rec = Recorder(ex)
    secret_header = "hdr-" + uuid.uuid4().hex
    s = PromptSettings(base_url=server.base_url, model="echo", backoff=0.01, retries=1,
                       extra_headers={"X-Proxy-Token": secret_header})
    runners = [PromptRunner("hello", s), PromptRunner("x", s, model="401"), PromptRunner("x", s, model="403"),
               PromptRunner("a b c", s, model="cut?after=1"), PromptRunner("x", s, model=tag("500?n=9")),
               PromptRunner("a b", s, model="malformed?after=1"), PromptRunner("q", cb("sync_broken")),
               PromptRunner("x", s.with_(base_url=server.base_url.replace("/v1", "/openai/deployments/d"),
                                         api_version="2024-10-21"), model="401")]
    tasks = [ex.submit(TaskSpec(r)) for r in runners]
    hang = ex.submit(TaskSpec(PromptRunner("x", s, model=tag("hang")), timeout=0.3))
    ex.wait([*tasks, hang], timeout=15)
    assert tasks[0].ok and sum(t.status == "failed" for t in tasks) == len(tasks) - 1
    # the key did go out, in the headers of the requests
    sent = [r.headers.get("authorization") or r.headers.get("api-key") for r in server.requests]
    assert f"Bearer {key}" in sent and key in sent

    seen: list[str] = [caplog.text, repr(s), str(s)]
    for _, ev in rec.events:
        seen += [repr(ev), repr(ev.data)]
    for t in [*tasks, hang]:
        runner = t.spec.runner
        seen += [repr(t), t.output, t.stderr, str(t.error), str(t.reason), str(t.traceback),
                 repr(runner), runner.describe(), repr(runner.meta), repr(runner.request_info())]
        if t.exception is not None:
            e = t.exception
            seen += [str(e), repr(e), repr(vars(e)), repr(e.__cause__), repr(e.__context__)]
    for path in ex.output_dir.rglob("*"):
        if path.is_file():
            seen.append(path.read_text(errors="replace"))
    blob = "\n".join(seen)
    assert key not in blob
    assert secret_header not in blob
    assert "Incorrect API key provided" not in blob  # the server's echo of the key is never repeated
    assert runners[0].request_info()["headers"] == {"X-Proxy-Token": "***", "Authorization": "***"}


# ---- the server as a process, and the loop's life ------------------------------------
def test_server_runs_as_a_process(ex, key):
    proc = subprocess.Popen([sys.executable, str(HERE / "llm_server.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(10), "the server printed no port"
        port = int(proc.stdout.readline())
        base = f"http://127.0.0.1:{port}/v1"
        assert run(ex, PromptRunner("hi", PromptSettings(base_url=base, model="echo"))).result == "Echo: hi"
        recorded = httpx.get(f"http://127.0.0.1:{port}/_fake/requests", timeout=5).json()
        assert recorded[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]
    finally:
        proc.terminate()
        proc.wait(5)


def test_shutdown_loop_and_start_again(ex, settings):
    assert run(ex, PromptRunner("one", settings)).ok
    shutdown_loop()
    assert not llm_loop.is_running()
    assert run(ex, PromptRunner("two", settings)).result == "Echo: two"
    assert llm_loop.is_running()


# ---- a real provider, only when asked -----------------------------------------------
@pytest.mark.skipif(not os.environ.get("TTASKS_REAL_LLM"), reason="set TTASKS_REAL_LLM=1 (and OPENAI_* ) to run")
def test_real_provider(ex):
    runner = PromptRunner("Reply with the single word: pong", PromptSettings.from_env())
    t = run(ex, runner, timeout=60)
    assert t.ok, t.error
    assert "pong" in t.result.lower()
    assert runner.meta["first_token_s"] is not None
