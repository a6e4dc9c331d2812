"""Content-addressed caches shared by every trial of a search, and by later searches.

A cached thing lives at `<cache root>/<kind>/<fingerprint>/`, where the fingerprint hashes everything that decides
its content (model, data, settings). Producers write into a temporary folder and rename it into place, under a
file lock, so trials running at once compute each thing once and never read a half-written one. The root is
`$SHRINKTUNE_CACHE`, else `~/.cache/shrinktune`; on a multi-node cluster point it at shared storage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from shrinktune.paths import file_lock

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where caches live: `$SHRINKTUNE_CACHE` if set, else `$XDG_CACHE_HOME/shrinktune` or `~/.cache/shrinktune`."""
    if os.environ.get("SHRINKTUNE_CACHE"):
        return Path(os.environ["SHRINKTUNE_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shrinktune"


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (dicts are key-sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    """Hash of a file or folder's names, sizes and first/last MiB: cheap, and changes when weights change."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def cached_dir(kind: str, key: str, produce: Callable[[Path], None], root: Path | None = None) -> Path:
    """Returns `<root>/<kind>/<key>/`, calling `produce(tmp_dir)` to fill it the first time.

    `produce` writes into an empty temporary folder; the folder is renamed into place only if it returns, so an
    interrupted or failed producer leaves nothing behind. Concurrent callers wait on a lock and then reuse.
    """
    root = root or cache_root()
    final = root / kind / key
    if (final / ".complete").exists():
        return final
    with file_lock(root / kind / f"{key}.lock"):
        if (final / ".complete").exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        try:
            produce(tmp)
            (tmp / ".complete").write_text("ok\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("cached %s/%s", kind, key)
    return final
