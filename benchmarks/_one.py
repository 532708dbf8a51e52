"""Run one figure module and write its rows as JSON: ``python -m benchmarks._one MODULE OUT [--quick]``."""
from __future__ import annotations

import importlib
import json
import sys
import traceback

from .harness import Result, skipped


def main(argv: list[str]) -> int:
    module, out = argv[0], argv[1]
    quick = "--quick" in argv[2:]
    mod = importlib.import_module(f"benchmarks.{module}")
    try:
        rows: list[Result] = mod.run(quick)
    except Exception as e:  # one figure failing must not lose the others
        traceback.print_exc()
        rows = [skipped(module, module, "-", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")]
    with open(out, "w") as f:
        json.dump([r.as_dict() for r in rows], f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
