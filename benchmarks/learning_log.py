"""Figures for docs/learning.md: curves of finished runs, compared as `pong-train bench --learning` does.

    python benchmarks/learning_log.py OUT_STEM NAME=RUN_DIR [NAME=RUN_DIR ...]

writes OUT_STEM.json (each run's curve, milestones and memory) and OUT_STEM.png.
"""

import json
import sys
from pathlib import Path

from pong_train.learning import chart, summarize, table


def main() -> None:
    stem, pairs = Path(sys.argv[1]), [arg.partition("=") for arg in sys.argv[2:]]
    runs = []
    for name, _, run_dir in pairs:
        record = json.loads((Path(run_dir) / "run.json").read_text())
        run = summarize(name, record["config"], record["config"].get("seed") or 0, Path(run_dir))
        run["run_dir"] = Path(run_dir).name
        runs.append(run)
    report = {"env": "PongNoFrameskip-v4", "runs": runs}
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    chart(report, stem.with_suffix(".png"))
    print(table(report))


if __name__ == "__main__":
    main()
