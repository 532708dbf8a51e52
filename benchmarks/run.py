"""Run every benchmark figure, print the table, write ``benchmarks/results.json``.

    .venv/bin/python benchmarks/run.py            # the full run (under 10 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # smaller sizes, fewer repeats (under a minute)
    .venv/bin/python -m benchmarks --only 2,3     # some figures
    .venv/bin/python benchmarks/run.py --readme   # also put the table in benchmarks/README.md
    .venv/bin/python benchmarks/run.py --from-json benchmarks/results.json --readme   # re-render only

Each figure module runs in a subprocess of its own, so one figure's threads,
memory or a hang cannot change the next figure (a figure that outlives its
time limit is killed and reported as skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Result, Stats, log, machine, table  # noqa: E402

HERE = Path(__file__).resolve().parent

#: figure number -> (module, time limit in seconds for the full run)
FIGURES = {
    "1": ("fig_dispatch", 180),
    "2": ("fig_throughput", 300),
    "3": ("fig_graph", 300),
    "4": ("fig_stream", 180),
    "5": ("fig_responsive", 180),
    "6": ("fig_widgets", 180),
    "7": ("fig_delivery", 180),
    "8": ("fig_extras", 180),
    "9": ("fig_dask", 600),
}


def run_figure(key: str, quick: bool) -> tuple[list[Result], float]:
    module, limit = FIGURES[key]
    if quick:
        limit = max(60, limit // 3)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    started = time.monotonic()
    cmd = [sys.executable, "-m", "benchmarks._one", module, out] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, env=env, timeout=limit, start_new_session=True)
        if proc.returncode != 0:
            return [Result(key, f"figure {key} ({module})", "-", "", None,
                           skipped=f"the figure failed (exit status {proc.returncode}; see stderr)")], 0.0
        with open(out) as f:
            rows = json.load(f)
    except subprocess.TimeoutExpired:
        return [Result(key, f"figure {key} ({module})", "-", "", None,
                       skipped=f"did not finish in {limit}s")], time.monotonic() - started
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass
    return sorted((from_dict(r) for r in rows), key=lambda r: r.id), time.monotonic() - started


def from_dict(d: dict) -> Result:
    d = dict(d)
    d.pop("ratio", None)
    for k in ("value", "baseline"):
        if d.get(k) is not None:
            d[k] = Stats(**d[k])
    return Result(**d)


def update_readme(md_table: str, notes: list[str], info: dict, quick: bool, seconds: float) -> None:
    path = HERE / "README.md"
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    doc = path.read_text() if path.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in doc:
        doc += f"\n{start}\n{end}\n"
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    mode = "`--quick`" if quick else "full run"
    vers = ", ".join(f"{k} {info[k]}" for k in ("ipykernel", "IPython", "jupyter_client", "ipywidgets", "dask")
                     if info.get(k))
    block = (
        f"{start}\n"
        f"Measured {info['date']} ({mode}, {seconds:.0f} s, commit {info['commit'] or '?'}) on "
        f"{info['nproc']} CPUs ({info['cpu']}), {info['memory_gb']} GB memory, Python {info['python']}, "
        f"{info['platform']}; {vers}.\n\n{md_table}\n\nNotes:\n\n" + "\n".join(f"- {n}" for n in notes) + f"\n{end}"
    )
    path.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under a minute)")
    p.add_argument("--only", help="comma-separated figure numbers (1-9)")
    p.add_argument("--out", default=str(HERE / "results.json"), help="where to write the JSON results")
    p.add_argument("--readme", action="store_true", help="put the table into benchmarks/README.md")
    p.add_argument("--from-json", metavar="PATH", help="measure nothing: show (and --readme) the results in PATH")
    args = p.parse_args(argv)
    keys = list(FIGURES) if not args.only else [k.strip() for k in args.only.split(",") if k.strip()]
    for k in keys:
        if k not in FIGURES:
            p.error(f"--only {k}: no such figure (1-{len(FIGURES)})")
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        info, quick, total = doc["machine"], doc["quick"], doc["seconds"]
        results = [from_dict(r) for r in doc["results"]]
    else:
        info = machine()
        quick = args.quick
        log(f"benchmarks: {'quick' if quick else 'full'} run of figures {', '.join(keys)} "
            f"on {info['nproc']} CPUs, Python {info['python']}")
        started = time.monotonic()
        results = []
        timings = {}
        for k in keys:
            log(f"figure {k}: {FIGURES[k][0]} ...")
            rows, secs = run_figure(k, quick)
            timings[k] = round(secs, 1)
            log(f"figure {k}: {secs:.1f}s")
            results.extend(rows)
        total = time.monotonic() - started
        doc = {
            "machine": info,
            "quick": quick,
            "seconds": round(total, 1),
            "figure_seconds": timings,
            "results": [r.as_dict() for r in results],
        }
        Path(args.out).write_text(json.dumps(doc, indent=1))
        log(f"wrote {args.out}")
    print(table(results))
    notes = [f"{r.id}: {r.note}" for r in results if r.note]
    if notes:
        print("\nnotes:\n" + "\n".join("  " + n for n in notes))
    print(f"\nratio = ttasks_ipy cost / baseline cost (medians; >1: ttasks_ipy slower or heavier). "
          f"{total:.0f}s in all.")
    if args.readme:
        update_readme(table(results, markdown=True), notes, info, quick, total)
        log(f"updated {HERE / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
