"""The training loss log: an append-only CSV file that survives crashes and resumes."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import atomic_path
from ..tables import format_number


class CSVLog:
    """An append-only CSV log whose first column is ``step``.

    Rows are appended with one ``write`` of a complete line, so a crash leaves at most the
    rows logged so far; whenever the header must change (a new column, or rows dropped on
    resume) the whole file is rewritten atomically.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict[str, str]]:
        """All rows (values as strings; empty string for a missing value)."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _fields(self) -> list[str] | None:
        if not self.path.is_file():
            return None
        with open(self.path, newline="") as f:
            header = f.readline()
        return next(csv.reader([header])) if header.strip() else None

    @staticmethod
    def _render(fields: Sequence[str], rows: Sequence[Mapping[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="raise", lineterminator="\n")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: format_number(row.get(k, ""), 6, missing="") for k in fields})
        return buf.getvalue()

    def _rewrite(self, fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(self._render(fields, rows, header=True))

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (dict); new keys add columns (the file is rewritten once)."""
        fields = self._fields()
        if fields is None:
            self._rewrite(list(row), [row])
            return
        new = [k for k in row if k not in fields]
        if new:
            self._rewrite(fields + new, self.read() + [dict(row)])
            return
        with open(self.path, "a", newline="") as f:
            f.write(self._render(fields, [row], header=False))
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop rows with ``step`` greater than ``step`` (used when resuming)."""
        fields = self._fields()
        if fields is None:
            return
        rows = self.read()
        kept = [r for r in rows if r.get("step", "") == "" or int(float(r["step"])) <= step]
        if len(kept) != len(rows):
            self._rewrite(fields, kept)
