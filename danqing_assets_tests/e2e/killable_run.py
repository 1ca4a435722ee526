"""The child process of the killed-run tests: materialize a sample crawl through one asset, in this process.

    python -m danqing_assets_tests.e2e.killable_run HOME CRAWL THROUGH [RUN_CONFIG_JSON]

Runs exactly what `conftest.run_pipeline` runs in the tests (snapshot `sample`, no CLIP model, an ephemeral Dagster
instance). With `DANQING_TEST_PAUSE_AT` set (`lib/faults.py`) the step stops at that point and writes the marker, so
the test can SIGKILL this process's group there.
"""

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from danqing_assets_tests.e2e.conftest import run_pipeline

    home, crawl, through = argv[:3]
    run_config = json.loads(argv[3]) if len(argv) > 3 else {}
    run_pipeline(Path(home), Path(crawl), through=through, run_config=run_config)


if __name__ == "__main__":  # the steps' worker processes are spawned: they import this module, not run it
    main(sys.argv[1:])
