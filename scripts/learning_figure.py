"""One picture of several `pong-train bench --learning` reports (their learning.json files), as docs/learning.md
shows the 2-core runs side by side: return against agent steps and wall time, and policy entropy.

    python scripts/learning_figure.py OUT.png REPORT.json [REPORT.json ...] [--only SETTING ...]
"""

import argparse
import json
from pathlib import Path

from pong_train.benchmarks.learning import chart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("reports", type=Path, nargs="+")
    parser.add_argument("--only", nargs="*", help="settings to draw (default: every run of every report)")
    args = parser.parse_args()
    runs = [run for path in args.reports for run in json.loads(path.read_text())["runs"]
            if not args.only or run["setting"] in args.only]
    if not runs:
        parser.error("no run to draw")
    print(chart({"runs": runs}, args.out))


if __name__ == "__main__":
    main()
