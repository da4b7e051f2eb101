"""The one way the benchmark scripts (``benchmarks/``) write their results: ``<out_dir>/<name>.json``
and ``.txt``.

``name`` follows ``benchmarks/README.md`` ("File names"): ``<benchmark>_<YYYY-MM-DD>_<machine>[_variant]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union


def write_results(out_dir: Union[str, Path], name: str, data: Any, text: Optional[str] = None) -> Path:
    """Write ``data`` as ``<name>.json`` and, when given, ``text`` as ``<name>.txt`` (newline
    ended) under ``out_dir`` (created if missing); returns ``out_dir / name``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    if text is not None:
        (out / f"{name}.txt").write_text(text if text.endswith("\n") else text + "\n")
    return out / name
