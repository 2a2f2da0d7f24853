"""Where the project's shared folder is: standards, the NAB subset (``../shared`` by the checkout).

One lookup for the tests, the ``nab`` command and the benches. Called when needed, not at import:
it may ask git where a clone came from.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``CITYBRAIN_SHARED``, else ``../shared`` next to the checkout, else next to the repository it
    was cloned from (``git clone /work/main /tmp/fresh`` finds /work/shared)."""
    candidates = [os.environ.get("CITYBRAIN_SHARED"), ROOT.parent / "shared"]
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and "://" not in origin:
        candidates.append(Path(origin).resolve().parent / "shared")
    for c in candidates:
        if c and (Path(c) / "standards").is_dir():
            return Path(c)
    return ROOT.parent / "shared"


def nab_data() -> Path:
    """The NAB development subset's data folder (``<category>/<file>.csv``)."""
    return shared_dir() / "data" / "nab" / "data"
