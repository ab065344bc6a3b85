"""predict's records written as they come: text for people, JSON Lines or CSV for programs.

A record is `{"image": PATH, "top": [{"index": I, "label": NAME, "probability": P}, ...]}`,
or `{"image": PATH, "error": MESSAGE}` for an image that could not be read.
"""

from __future__ import annotations

import csv
import json
from typing import Iterable, Optional, TextIO

FORMATS = ("text", "jsonl", "csv")


def format_for(output: Optional[str], requested: Optional[str]) -> str:
    """The format asked for, else JSON Lines into a file (CSV for a .csv name), text on stdout."""
    if requested:
        return requested
    if output is None:
        return "text"
    return "csv" if output.lower().endswith(".csv") else "jsonl"


def csv_header(top: int) -> list[str]:
    ranks = [[f"index_{r}", f"label_{r}", f"probability_{r}"] for r in range(1, top + 1)]
    return ["image", *(name for rank in ranks for name in rank), "error"]


def csv_row(record: dict, top: int) -> list[str]:
    cells: list[str] = [record["image"]]
    for r in range(top):
        entry = record["top"][r] if r < len(record.get("top", ())) else None
        cells += [str(entry["index"]), entry["label"], repr(entry["probability"])] if entry else ["", "", ""]
    return [*cells, record.get("error", "")]


def _text(record: dict) -> str:
    if "error" in record:
        return f"{record['image']}\n  error: {record['error']}\n"
    lines = [record["image"]] + [
        f"  {rank}. {entry['label']} ({entry['index']}): {entry['probability']:.4f}"
        for rank, entry in enumerate(record["top"], 1)
    ]
    return "\n".join(lines) + "\n"


def write_records(records: Iterable[dict], stream: TextIO, fmt: str, top: int) -> tuple[int, int]:
    """Write each record as it comes; returns (records, of which errors)."""
    writer = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writerow(csv_header(top))
    count = failed = 0
    for record in records:
        count += 1
        failed += "error" in record
        if writer:
            writer.writerow(csv_row(record, top))
        else:
            stream.write(json.dumps(record) + "\n" if fmt == "jsonl" else _text(record))
    return count, failed
