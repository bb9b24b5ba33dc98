"""Merge sweeps of one config run over disjoint seeds (for instance on two machines) into one results table.

    python benchmarks/merge_sweeps.py OUT SWEEP_DIR [SWEEP_DIR ...]

Reads each SWEEP_DIR/results.json and writes OUT/results.json, OUT/results.md and OUT/gain_map.png (wall time:
the sum).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pskd.evaluate.gains import merge, plot_gain_map, results_table


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, parts = Path(args[0]), [json.loads((Path(d) / "results.json").read_text()) for d in args[1:]]
    results = merge(parts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_table(results))
    if "ce" in results["variants"]:
        plot_gain_map(results, out / "gain_map.png")
    print(results_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
