"""Prompt tasks from the user's side: %bg ?…, --prompt, %%bg --prompt, against a local OpenAI-compatible server."""
from __future__ import annotations

import json
import os

import pytest
from conftest import start_kernel, stop_kernel
from llm_server import FakeLLM

SECRET = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as srv:
        yield srv


@pytest.fixture(scope="module")
def pk(llm):
    k = start_kernel(env={"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": SECRET, "OPENAI_MODEL": "echo"})
    yield k
    stop_kernel(k)


def test_question_mark_prompt_delivers_text(pk):
    r = pk.run("cap = %bg -n cap -o capital ?What is the capital of France?\n%bg --wait cap --timeout 30")
    assert "pinfo" not in r.all_text
    assert pk.value("capital") == "'Echo: What is the capital of France?'"
    assert pk.value("type(capital).__name__, cap.spec.runner.meta['model']") == "('str', 'echo')"


def test_prompt_expands_values_without_quoting(pk):
    pk.run("log_tail = 'test_a failed; test_b failed'")
    pk.run("%bg --prompt -n summ -o summary Summarize: {log_tail} {{literal}}\n%bg --wait summ --timeout 30")
    assert pk.value("summary") == "'Echo: Summarize: test_a failed; test_b failed {literal}'"


def test_prompt_cell_with_model_and_system(pk, llm):
    pk.run("import inspect\ndef parse(x):\n    return int(x)")
    pk.run("%%bg --prompt -n review -o rv --model echo#cell --system 'Be brief.'\nReview:\n{inspect.getsource(parse)}")
    pk.run("%bg --wait review --timeout 30")
    assert pk.value("rv.startswith('Echo: Review:')") == "True"
    body = [r.body for r in llm.requests if r.body and r.body.get("model") == "echo#cell"][-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "def parse(x)" in body["messages"][-1]["content"]


def test_streams_into_the_task_output(pk):
    pk.run("h = %bg --quiet --model 'slow?delay=0.05' ?one two three four five six")
    pk.run("import time\nwhile len(h.output.split()) < 3: time.sleep(0.01)")
    assert pk.value("h.status") == "'running'"  # part of the text is there before the end
    pk.run("h.wait(30)")
    assert pk.value("h.output") == "'Echo: one two three four five six'"


def test_twenty_prompts_run_together(pk):
    pk.run(
        "import time\nt0 = time.perf_counter()\n"
        "line = \"--quiet --model 'slow?delay=0.1#c{i}' ?a b c d e\"\n"
        "hs = [get_ipython().run_line_magic('bg', line.format(i=i)) for i in range(20)]\n"
        "%bg --wait all --timeout 60\nwall = time.perf_counter() - t0"
    )
    assert pk.value("all(h.status == 'succeeded' for h in hs)") == "True"
    assert float(pk.value("wall")) < 2.5  # one prompt takes about 0.6 s; twenty in a row would take 12 s


def test_cancel_mid_stream_closes_the_connection(pk, llm):
    pk.run("hc = %bg -n talker --quiet --model 'hang#k' ?never answers")
    assert llm.wait_requests("hang#k", 1, timeout=10)
    pk.run("%bg --cancel talker")
    assert llm.wait_disconnect("hang#k", timeout=0.5 + 1)
    assert pk.value("hc.status") == "'cancelled'"


def test_auth_failure_names_the_variable_not_the_key(pk):
    r = pk.run("%bg -n denied --model 401 ?hello\n%bg --wait denied --timeout 30")
    assert "check the key in $OPENAI_API_KEY" in r.all_text
    assert SECRET not in r.all_text


def test_no_backend_configured_is_one_line():
    k = start_kernel(env={"OPENAI_BASE_URL": "", "OPENAI_API_KEY": "", "OPENAI_MODEL": ""})
    try:
        r = k.run("%bg ?hello", allow_error=True)
        err = r.stderr.strip()
        assert err.startswith("UsageError: %bg:") and "\n" not in err and "OPENAI_BASE_URL" in err
    finally:
        stop_kernel(k)


def test_key_never_lands_in_outputs_logs_or_saved_notebooks(pk, tmp_path):
    cells = [
        "%bg -n k1 -o ans ?tell me\n%bg --wait k1 --timeout 30",
        "%bg -n k2 --model 401 ?fail please\n%bg --wait k2 --timeout 30",
        "%bg --log k1\n%bg --log k2\n%bg --list",
        "k1, k1.spec.runner.meta, k1.spec.runner.request_info(), k2.error, k2.traceback",
    ]
    texts = []
    for c in cells:
        r = pk.run(c, allow_error=True)
        texts.append(json.dumps([m["content"] for m in r.messages], default=str))
    joined = "\n".join(texts)
    assert SECRET not in joined
    out_dir = pk.value("str(__import__('ttasks_ipy').kernel.session().executor.output_dir)").strip("'")
    for root, _, files in os.walk(out_dir):
        for f in files:
            with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                assert SECRET not in fh.read()


def test_azure_settings_send_api_key_header_and_version(llm):
    k = start_kernel(env={"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": SECRET, "OPENAI_MODEL": "echo#azure"})
    try:
        k.run("%config TTasks.llm_api_version = '2024-10-21'")
        k.run("%config TTasks.llm_extra_headers = {'X-Team': 'research'}")
        k.run("%bg -n az -o az_answer ?hello azure\n%bg --wait az --timeout 30")
        assert k.value("az_answer") == "'Echo: hello azure'"
        req = [r for r in llm.requests if isinstance(r.body, dict) and r.body.get("model") == "echo#azure"][-1]
        assert req.query.get("api-version") == "2024-10-21"
        assert req.headers.get("api-key") == SECRET and "authorization" not in req.headers
        assert req.headers.get("x-team") == "research"
    finally:
        stop_kernel(k)


def test_every_llm_setting_changed_after_load_reaches_the_next_prompt(pk, llm):
    # model, system prompt and temperature: the next request carries them
    pk.run("%config TTasks.llm_model = 'echo#cfg'\n%config TTasks.llm_system = 'Answer in one word.'\n"
           "%config TTasks.llm_temperature = 0.25")
    pk.run("c1 = %bg --quiet ?hello\nc1.wait(30)")
    body = llm.requests_for("echo#cfg")[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert body["temperature"] == 0.25
    pk.run("%config TTasks.llm_system = ''\n%config TTasks.llm_temperature = None")
    # the key's variable: the next request sends the other key
    pk.run("import os\nos.environ['OTHER_LLM_KEY'] = 'sk-other-KEY-9876543210'\n"
           "%config TTasks.llm_api_key_env = 'OTHER_LLM_KEY'\n%config TTasks.llm_model = 'echo#key'")
    pk.run("c2 = %bg --quiet ?hello\nc2.wait(30)")
    assert llm.requests_for("echo#key")[-1].headers["authorization"] == "Bearer sk-other-KEY-9876543210"
    pk.run("%config TTasks.llm_api_key_env = 'OPENAI_API_KEY'")
    # the base URL: the next request goes to another server
    with FakeLLM() as other:
        pk.run(f"%config TTasks.llm_base_url = {other.base_url!r}\n%config TTasks.llm_model = 'echo#moved'")
        pk.run("c3 = %bg --quiet ?hello\nc3.wait(30)")
        assert other.requests_for("echo#moved") and not llm.requests_for("echo#moved")
        pk.run(f"%config TTasks.llm_base_url = {llm.base_url!r}")
    # the timeout: a prompt slower than it fails with the timeout as its reason
    pk.run("%config TTasks.llm_timeout = 0.5\n%config TTasks.llm_model = 'hang#timeout'")
    pk.run("c4 = %bg --quiet ?hello\nc4.wait(30)")
    assert pk.value("c4.status, c4.reason") == "('failed', 'timed out after 0.5s')"
    pk.run("%config TTasks.llm_timeout = 300.0")
    # the concurrency limit: with 1, a second prompt is not sent while the first hangs
    pk.run("%config TTasks.llm_max_concurrency = 1\n%config TTasks.llm_model = 'hang#limit'")
    pk.run("c5 = %bg --quiet ?first")
    assert llm.wait_requests("hang#limit", 1, 20)
    pk.run("c6 = %bg --quiet --model echo#second ?second")
    assert not llm.wait_requests("echo#second", 1, 1.0), "the second prompt went out past the limit"
    pk.run("c5.cancel()")
    assert llm.wait_requests("echo#second", 1, 20)
    pk.run("c6.wait(30)")
    assert pk.value("c6.status") == "'succeeded'"
    pk.run("%config TTasks.llm_max_concurrency = 32")
    # a Python callable instead of HTTP: no request is made
    pk.run("def shout(prompt, **options):\n    return prompt.upper() + '!'\n"
           "%config TTasks.llm_callable = '__main__:shout'\n%config TTasks.llm_model = 'echo#callable'")
    pk.run("c7 = %bg --quiet -o loud ?hello\nc7.wait(30)")
    assert pk.value("loud") == "'HELLO!'"
    assert not llm.requests_for("echo#callable")
    pk.run("%config TTasks.llm_callable = ''\n%config TTasks.llm_model = ''")
