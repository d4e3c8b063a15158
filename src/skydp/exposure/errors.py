"""Errors and warnings raised while reading or building exposures."""

from __future__ import annotations


class ExposureFormatError(ValueError):
    """A file cannot be read as an exposure; the message is "<path>: <reason>"."""


class ExposureMetadataWarning(UserWarning):
    """A file loaded, but some metadata or the pixel unit was missing or not understood."""
