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
import uuid
from pathlib import Path
from typing import Any

import cachelab

__all__ = ["MANIFEST", "MANIFEST_VERSION", "write_manifest"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def write_manifest(out_dir: str | os.PathLike, kind: str, **fields: Any) -> Path:
    """Write ``out_dir/manifest.json`` atomically (a reader never sees half a file); returns its path."""
    path = Path(out_dir) / MANIFEST
    data = {
        "kind": kind,
        "version": MANIFEST_VERSION,
        "cachelab_version": cachelab.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        **fields,
    }
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path
