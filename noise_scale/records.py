"""``metrics.jsonl`` read back: what a kill leaves behind, what is damage, what a resume redoes.

Why apart from ``metrics`` (which writes the file): reading is where a run meets files it
did not just write. The writer replaces the file whole (``run_files.write_text``), but a
file copied while a run wrote it, a bucket without atomic renames or a run killed by an
older version can end in half a line; that is what a kill does, and the resume rewrites
the records after its checkpoint anyway, so the cut line is dropped with a warning.
A damaged line *before* the last is not what a kill does: the records after it would
be trusted blindly, so the command stops (exit status 2) naming the line and the fix.
"""

from __future__ import annotations

import json
import logging

from noise_scale import run_files
from noise_scale.errors import UsageError


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir``'s metrics.jsonl, oldest first ([] without the file)."""
    path = run_files.path(workdir, run_files.METRICS)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    records = []
    for k, (n, line) in enumerate(numbered):
        record = _parse(line)
        if record is not None:
            records.append(record)
        elif k == len(numbered) - 1:  # the last line: cut short by a kill
            logging.warning("%s: line %d is cut short (a run killed while writing it); "
                            "dropped. A resumed run writes its records again.", path, n)
        else:
            raise UsageError(
                f"{path}: line {n} of {len(numbered)} is damaged ({_shown(line)}); a kill cuts "
                "only the last line, so the file was changed or its disk failed, and the "
                "records around it cannot be trusted. Fix: move the file away (e.g. "
                f"`mv {path} {path}.damaged`) and rerun; a resumed run then writes the "
                "records from its checkpoint on, and the moved file keeps the earlier ones.")
    return records


def _parse(line: bytes) -> dict | None:
    """A line's record, or None when it is not one whole JSON object."""
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError both are
        return None
    return record if isinstance(record, dict) else None


def _shown(line: bytes) -> str:
    text = line[:40].decode("utf-8", "replace")
    return repr(text + ("..." if len(line) > 40 else ""))


def recomputed_note(records: list[dict], examples_seen: int) -> str | None:
    """What a resume at ``examples_seen`` redoes: the records after its checkpoint, which a
    kill made before the next checkpoint lost; None when there are none."""
    after = [r["examples_seen"] for r in records if r.get("examples_seen", 0) > examples_seen]
    if not after:
        return None
    where = (f"resuming at {examples_seen:,} examples seen (checkpoint)" if examples_seen else
             "starting from the beginning (no checkpoint)")
    many = len(after) > 1
    return (f"{where}; {len(after)} record{'s' if many else ''} after it (to {max(after):,}) "
            f"{'are' if many else 'is'} recomputed")
