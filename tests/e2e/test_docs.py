"""The generated tables of the docs are what their generators write now (``make docs``).

The chart's values table in docs/install.md is helm-docs' rendering of the
``# --`` comments of charts/imageops/values.yaml (helm-docs from the bed:
hack/build-tools.sh builds it from the Go module proxy). The README's options
table is checked without the bed, by tests/unit/test_settings.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import missing

REPO = Path(__file__).resolve().parents[2]


def test_the_chart_values_table_is_what_helm_docs_writes() -> None:
    if shutil.which("helm-docs") is None:
        missing("helm-docs is not on PATH: `make testenv-up` builds it; `source .testenv/env.sh`")
    out = subprocess.run(
        [sys.executable, str(REPO / "hack/gen_docs.py"), "--check", "--only", "values"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, (
        f"docs/install.md is out of date (run `make docs`):\n{out.stdout}{out.stderr}"
    )
