"""``manifest.json``: what every cachelab output directory says about itself (kind, version, who made it, when).

Shared by the commands that write result directories (``search``, ``ablate``, ``analyze``) and by ``report``, which
reads them: ``{"kind": "ablation" | "analysis" | "search", "version": 1, "cachelab_version", "created" (ISO time),
"command" (argv), ...kind-specific fields}``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cachelab
from cachelab.media import atomic_write

__all__ = ["MANIFEST", "MANIFEST_VERSION", "write_json", "write_manifest"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically (a reader never sees half a file); returns the path."""
    text = json.dumps(data, indent=1, default=str) + "\n"
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def write_manifest(out_dir: str | os.PathLike, kind: str, command: Sequence[str] | None = None, **fields: Any) -> Path:
    """Write ``out_dir/manifest.json``; ``command`` defaults to this process's argv, ``fields`` add to (or replace,
    e.g. ``created`` of a directory written before) the common ones. Returns its path."""
    return write_json(Path(out_dir) / MANIFEST, {
        "kind": kind,
        "version": MANIFEST_VERSION,
        "cachelab_version": cachelab.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv if command is None else command),
        **fields,
    })
