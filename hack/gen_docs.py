"""Write the generated blocks of the docs (``make docs``).

* README.md: the table of ``imageops run``'s options and environment variables,
  from imageops.settings (tests/unit/test_settings.py fails on drift).
* docs/install.md: the table of the chart's values, helm-docs' rendering of the
  ``# --`` comments of charts/imageops/values.yaml with docs/values-table.gotmpl
  (tests/e2e/test_docs.py fails on drift). helm-docs is built from the Go module
  proxy by hack/build-tools.sh: on PATH after ``source .testenv/env.sh``, else
  taken from .testenv/bin.

A block sits between ``<!-- BEGIN GENERATED: NAME -->`` and ``<!-- END GENERATED: NAME -->``;
only its inside is rewritten.

Usage: python hack/gen_docs.py [--check] [--only readme|values]
  --check  write nothing; print a diff and exit 1 when a block is out of date
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from imageops.settings import options_table  # noqa: E402

CHART = REPO / "charts" / "imageops"
TEMPLATE = REPO / "docs" / "values-table.gotmpl"


def block_pattern(name: str) -> re.Pattern[str]:
    """The block NAME: groups begin marker, inside, end marker."""
    begin, end = (f"<!-- {w} GENERATED: {re.escape(name)} -->" for w in ("BEGIN", "END"))
    return re.compile(rf"({begin}\n)(.*?)({end})", re.DOTALL)


def replace_block(text: str, name: str, inside: str) -> str:
    """``text`` with the inside of block NAME replaced (which must be there exactly once)."""
    pattern = block_pattern(name)
    if len(pattern.findall(text)) != 1:
        raise SystemExit(f"gen_docs: expected one block {name!r}")
    return pattern.sub(lambda m: m.group(1) + inside + m.group(3), text)


def helm_docs_binary() -> str:
    """helm-docs from PATH, else the bed's .testenv/bin."""
    found = shutil.which("helm-docs")
    bed = REPO / ".testenv" / "bin" / "helm-docs"
    if found:
        return found
    if bed.exists():
        return str(bed)
    raise SystemExit("gen_docs: helm-docs not found: `bash hack/build-tools.sh` builds it")


def values_table() -> str:
    """helm-docs' rendering of the chart's values with docs/values-table.gotmpl."""
    out = subprocess.run(
        [
            helm_docs_binary(),
            "--chart-search-root",
            str(CHART),
            "--template-files",
            str(TEMPLATE),
            "--sort-values-order",
            "file",
            "--dry-run",
            "--log-level",
            "warning",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if out.returncode != 0:
        raise SystemExit(f"gen_docs: helm-docs failed:\n{out.stderr}")
    return out.stdout.strip("\n") + "\n"


BLOCKS: dict[str, tuple[Path, str, Callable[[], str]]] = {
    "readme": (REPO / "README.md", "imageops run options", options_table),
    "values": (REPO / "docs" / "install.md", "chart values", values_table),
}


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or check) the generated blocks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1)")
    parser.add_argument("--only", choices=sorted(BLOCKS), action="append")
    args = parser.parse_args(argv)
    stale = 0
    for key in args.only or BLOCKS:
        path, name, generate = BLOCKS[key]
        text = path.read_text()
        new = replace_block(text, name, generate())
        if new == text:
            continue
        stale += 1
        if args.check:
            rel = str(path.relative_to(REPO))
            diff = difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), rel, f"{rel} (generated)"
            )
            sys.stdout.writelines(diff)
        else:
            path.write_text(new)
            print(f"gen_docs: wrote {path.relative_to(REPO)} ({name})")
    if args.check and stale:
        print(f"gen_docs: {stale} generated block(s) out of date: run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
