"""Minimal FITS writer for small image HDUs: 80-character header cards and 2880-byte blocks.

Alert packets carry three 30 x 30 cutouts each; building them with astropy.io.fits (Header, HDU
and HDUList objects, verification, card parsing) costs ~3 ms per cutout, ten times the alert
budget. The layout of a simple image HDU is fixed by the FITS standard (v4.0, sections 3-5):
an ASCII header of 80-byte cards ending with END, padded with blanks to a multiple of 2880 bytes,
then the big-endian data padded with zeros to a multiple of 2880 bytes. Cards here are written
in the standard's fixed format (value right-justified in columns 11-30, strings quoted and at
least 8 characters wide), as astropy writes them, so constant cards are formatted once and only
the numbers that change from cutout to cutout are formatted per cutout.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 2880
CARD = 80
END_CARD = b"END".ljust(CARD)
_VALUE_WIDTH = 20


def format_value(value: bool | int | float | str) -> str:
    """FITS fixed-format value field: numbers and logicals right-justified in 20 columns."""
    if isinstance(value, (bool, np.bool_)):
        return ("T" if value else "F").rjust(_VALUE_WIDTH)
    if isinstance(value, (int, np.integer)):
        return str(int(value)).rjust(_VALUE_WIDTH)
    if isinstance(value, (float, np.floating)):
        return _format_float(float(value)).rjust(_VALUE_WIDTH)
    if isinstance(value, str):
        return ("'" + value.replace("'", "''").ljust(8) + "'").ljust(_VALUE_WIDTH)
    raise TypeError(f"FITS card value must be bool, int, float or str, got {type(value).__name__}")


def _format_float(value: float) -> str:
    """Shortest exact repr when it fits 20 columns, else as many significant digits as fit (>= 14)."""
    if not math.isfinite(value):
        raise ValueError(f"FITS header values must be finite, got {value}")
    text = repr(value).upper()
    if "." not in text and "E" not in text:
        text += ".0"
    elif "E" in text and "." not in text:
        mantissa, exponent = text.split("E")
        text = f"{mantissa}.0E{exponent}"
    digits = 16
    while len(text) > _VALUE_WIDTH:
        digits -= 1
        text = f"{value:.{digits}E}"
    return text


def card(key: str, value: bool | int | float | str, comment: str = "") -> bytes:
    """One 80-byte header card ``KEY     = value / comment`` (comment cut to fit)."""
    if len(key) > 8 or not key.isascii() or key != key.upper():
        raise ValueError(f"FITS keyword {key!r} must be at most 8 upper-case ASCII characters")
    text = f"{key:<8}= {format_value(value)}"
    if len(text) > CARD:
        raise ValueError(f"FITS card {key} value does not fit 80 columns")
    if comment:
        text += f" / {comment}"
    return text[:CARD].ljust(CARD).encode("ascii")


def header_bytes(cards: list[bytes]) -> bytes:
    """Header cards + END, blank-padded to whole 2880-byte blocks."""
    raw = b"".join(cards) + END_CARD
    return raw + b" " * (-len(raw) % BLOCK)


def data_bytes(array: np.ndarray) -> bytes:
    """Array data big-endian (C order: FITS NAXIS1 is the last axis), zero-padded to whole blocks."""
    raw = np.ascontiguousarray(array, array.dtype.newbyteorder(">")).tobytes()
    return raw + b"\0" * (-len(raw) % BLOCK)


def bitpix(dtype: np.dtype) -> int:
    """FITS BITPIX of a float32 / float64 array."""
    codes = {np.dtype(np.float32): -32, np.dtype(np.float64): -64}
    if np.dtype(dtype) not in codes:
        raise ValueError(f"only float32 and float64 image HDUs are written, got {dtype}")
    return codes[np.dtype(dtype)]


def image_cards(shape: tuple[int, int], dtype: np.dtype, primary: bool) -> list[bytes]:
    """Mandatory leading cards of a 2-d image HDU (primary, or an IMAGE extension)."""
    ny, nx = shape
    first = (card("SIMPLE", True, "conforms to FITS standard") if primary
             else card("XTENSION", "IMAGE", "Image extension"))
    cards = [first, card("BITPIX", bitpix(dtype), "array data type"),
             card("NAXIS", 2, "number of array dimensions"), card("NAXIS1", nx), card("NAXIS2", ny)]
    if primary:
        cards.append(card("EXTEND", True))
    else:
        cards += [card("PCOUNT", 0, "number of parameters"), card("GCOUNT", 1, "number of groups")]
    return cards
