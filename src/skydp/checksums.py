"""File checksums: the SHA-256 that the registry, ImageMetadata and difference-image recipes record."""

from __future__ import annotations

import hashlib
import os


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, streamed (memory stays bounded for large images)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
