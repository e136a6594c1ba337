"""report.write: a copy of the run report where the operator wants it (an incident folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recovery.context import StepContext
from recovery.errors import StepError
from recovery.registry import Outputs, doc, step


@dataclass(frozen=True)
class WriteParams:
    path: str = doc("file to write; .json gives JSON, anything else Markdown")


@step("report.write", params=WriteParams, outputs={"path": "the file written"}, repeatable=True)
def write(ctx: StepContext, params: WriteParams) -> Outputs:
    """Write the run report (as it stands when this step runs) to a file."""
    path = Path(params.path).expanduser()
    report = ctx.report
    text = json.dumps(report.to_json(), indent=2) + "\n" if path.suffix == ".json" else report.to_markdown()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise StepError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
    return {"path": str(path)}
