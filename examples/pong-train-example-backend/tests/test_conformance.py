"""The example backend passes pong-train's conformance suite: one class, plus a check of its own file."""

import csv

from pong_train.testing import BackendConformance


class TestExampleBackend(BackendConformance):
    backend = "example"

    def check_run(self, run_dir, rows):
        # After a run interrupted by Ctrl-C and resumed, the CSV holds every result once, like metrics.jsonl.
        with open(run_dir / "example-results.csv", newline="") as f:
            written = list(csv.DictReader(f))
        assert [int(r["training_iteration"]) for r in written] == [r["training_iteration"] for r in rows]
