"""One picture of several learning runs, as docs/learning.md shows the 2-core runs side by side: return against agent
steps and wall time, and policy entropy. Each input is a `pong-train bench --learning` report (learning.json) or the
run directory of a plain `pong-train` command (NAME=RUN_DIR names its curve; its metrics.jsonl is read).

    python scripts/learning_figure.py OUT.png INPUT [INPUT ...] [--only SETTING ...] [--save REPORT.json]

--save writes the runs drawn as one learning.json-style report, so a run directory's curve can be kept in docs/.
"""

import argparse
import json
from pathlib import Path

from pong_train.benchmarks.learning import chart, summarize
from pong_train.job import JOB_FILE, Job


def runs_of(source: str) -> list[dict]:
    name, _, path = source.rpartition("=")
    path = Path(path)
    if path.is_dir():
        job = Job.load(path / JOB_FILE)
        return [summarize(name or f"{job.run} ({path.name})", {"run": job.run, **job.config.model_dump(
            exclude_defaults=True)}, 0, path)]
    return json.loads(path.read_text())["runs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--only", nargs="*", help="settings to draw (default: every run of every input)")
    parser.add_argument("--save", type=Path, help="also write the runs drawn as one report (JSON)")
    args = parser.parse_args()
    runs = [run for source in args.inputs for run in runs_of(source) if not args.only or run["setting"] in args.only]
    if not runs:
        parser.error("no run to draw")
    if args.save:
        args.save.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(chart({"runs": runs}, args.out))


if __name__ == "__main__":
    main()
