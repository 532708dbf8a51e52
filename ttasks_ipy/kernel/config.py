"""Settings, as a traitlets ``Configurable``: ``c.TTasks.max_workers = 4`` in
``ipython_config.py``, or ``%config TTasks.max_workers = 4`` in a session."""
from __future__ import annotations

import math
import os

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, TraitError, Unicode, validate
from traitlets.config import Configurable


class TTasks(Configurable):
    """Background tasks (``%bg``) settings."""

    max_workers = Int(
        max(4, os.cpu_count() or 1),
        help="How many tasks run at once; more wait in the queue (services do not count).",
    ).tag(config=True)
    max_services = Int(16, help="How many --service tasks may run at once.").tag(config=True)
    queue_policy = CaselessStrEnum(
        ["queue", "reject"],
        default_value="queue",
        help="When every worker is busy: 'queue' the task, or 'reject' it with an error.",
    ).tag(config=True)
    grace = Float(
        2.0, help="Seconds between SIGTERM and SIGKILL when a task's processes are ended."
    ).tag(config=True)
    tail_chars = Int(65_536, help="Characters of each output stream kept in memory per task.").tag(config=True)
    file_cap = Int(100 << 20, help="Bytes of each output stream kept in the task's output file.").tag(config=True)
    notices = Bool(True, help="Print a one-line notice when a task's result arrives.").tag(config=True)
    overwrite = Bool(
        False,
        help="Deliver into a name even if it was reassigned since the task was dispatched.",
    ).tag(config=True)
    widgets = Bool(True, help="Show live widgets when the frontend supports them (else text).").tag(config=True)
    llm_model = Unicode("", help="Model for prompt tasks (default: $OPENAI_MODEL).").tag(config=True)
    llm_base_url = Unicode("", help="OpenAI-compatible base URL (default: $OPENAI_BASE_URL).").tag(config=True)
    llm_api_key_env = Unicode(
        "OPENAI_API_KEY", help="NAME of the environment variable holding the API key (never the key)."
    ).tag(config=True)
    llm_system = Unicode("", help="System prompt for prompt tasks.").tag(config=True)
    llm_temperature = Float(None, allow_none=True, help="Sampling temperature (server default if unset).").tag(
        config=True
    )
    llm_timeout = Float(300.0, help="Seconds a prompt may take (also settable per task with --timeout).").tag(
        config=True
    )
    llm_callable = Unicode("", help="'module:function' backend for prompts, instead of HTTP.").tag(config=True)
    llm_max_concurrency = Int(32, help="Prompts running at once (they do not take worker slots).").tag(config=True)
    llm_api_version = Unicode(
        "", help="Azure OpenAI's api-version; when set the key goes in the api-key header."
    ).tag(config=True)
    llm_extra_headers = Dict(
        value_trait=Unicode(),
        help="Extra HTTP headers for prompt requests (never put a key here: use llm_api_key_env).",
    ).tag(config=True)
    llm_retries = Int(3, help="Retries of a prompt refused with 429 or 5xx before its first token.").tag(config=True)
    ledger = Bool(
        True, help="Record every task in the ledger (history, logs and results across kernel restarts)."
    ).tag(config=True)
    ledger_path = Unicode(
        "", help="The ledger's SQLite file (default: ttasks_ipy/ledger.sqlite under the Jupyter data directory)."
    ).tag(config=True)
    ledger_result_cap = Int(
        10 << 20, help="Bytes of a task's serialised result the ledger keeps (%bg --load); larger ones are not kept."
    ).tag(config=True)

    backend = CaselessStrEnum(
        ["thread", "dask"],
        default_value="thread",
        help="Where Python tasks and commands run by default: 'thread' (here) or 'dask' (a Dask cluster); "
             "prompts and services run here either way (--local, --dask and --process choose per task).",
    ).tag(config=True)
    dask_address = Unicode(
        "",
        help="The Dask scheduler for --dask tasks ('tcp://host:8786'); empty: a LocalCluster started on first use.",
    ).tag(config=True)
    dask_workers = Int(2, help="Worker processes of the LocalCluster started when dask_address is empty.").tag(
        config=True
    )
    dask_threads_per_worker = Int(1, help="Threads of each LocalCluster worker process.").tag(config=True)
    dask_timeout = Float(10.0, help="Seconds to wait for the Dask scheduler when connecting.").tag(config=True)

    # ---- bounds: a bad value is refused with one line, and the old value stays ----------
    _BOUNDS = {
        "max_workers": (1, 4096), "max_services": (1, 4096), "grace": (0.0, 600.0),
        "tail_chars": (1_000, 1 << 30), "file_cap": (0, 1 << 40), "llm_timeout": (0.001, 365 * 86400.0),
        "llm_max_concurrency": (1, 4096), "llm_retries": (0, 100), "ledger_result_cap": (0, 1 << 34),
        "dask_workers": (1, 1024), "dask_threads_per_worker": (1, 1024), "dask_timeout": (0.1, 600.0),
    }

    @validate(*_BOUNDS)
    def _in_bounds(self, proposal: dict) -> object:
        name, value = proposal["trait"].name, proposal["value"]
        low, high = self._BOUNDS[name]
        if isinstance(value, float) and not math.isfinite(value) or not low <= value <= high:
            raise TraitError(f"TTasks.{name} must be from {low:g} to {high:g}, not {value!r}")
        return value
