"""report.write: a copy of the run report where the operator wants it (an incident folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recovery.engine.context import StepContext
from recovery.engine.registry import Outputs, doc, step
from recovery.errors import StepError
from recovery.safety.files import make_dirs, write_atomic

# The report names hosts, users and key paths: the operator's to share, not every local user's.
REPORT_MODE = 0o600


@dataclass(frozen=True)
class WriteParams:
    path: str = doc("file to write; .json gives JSON, anything else Markdown")


@step("report.write", params=WriteParams, outputs={"path": "the file written"}, repeatable=True)
def write(ctx: StepContext, params: WriteParams) -> Outputs:
    """Write the run report (as it stands when this step runs) to a file, atomically and 0600.

    A reader sees the old report or the new one; a symlink at the path is replaced, not
    written through; missing directories are made 0700.
    """
    path = Path(params.path).expanduser()
    report = ctx.report
    text = json.dumps(report.to_json(), indent=2) + "\n" if path.suffix == ".json" else report.to_markdown()
    try:
        make_dirs(path.parent)
        write_atomic(path, text, mode=REPORT_MODE)
    except OSError as exc:
        raise StepError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
    return {"path": str(path)}
