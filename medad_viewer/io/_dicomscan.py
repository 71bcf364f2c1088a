"""A small structural scan of a DICOM file: finds truncation and damage fast and reads a few text tags.

GDCM can spend many seconds on a truncated file before giving up; this walk over the element
lengths (no values decoded except the few asked for) notices an element or pixel-data item
running past the end of the file in well under a millisecond. It also reads the series tags of
a file GDCM cannot read, so a damaged slice can be reported against the right series.

It finds damage GDCM handles badly: garbage whose made-up lengths GDCM allocates (gigabytes for a
small file) before failing, found as an element claiming more data than the file holds either
after the pixel data or where the bytes are no element header at all (read, as GDCM reads them,
with an implicit-VR length); and an RLE frame header GDCM divides by zero over (a crash).
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
from dataclasses import dataclass, field

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_PIXEL_DATA = (0x7FE0, 0x0010)
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_RLE = "1.2.840.10008.1.2.5"
_MAX_DEPTH = 16

# Image size tags stored as binary numbers (US), read as decimal text.
_US = frozenset({(0x0028, 0x0002), (0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0101),
                 (0x0028, 0x0103)})
# Tags read at the top level of the data set: series identity, the image size (to compare with the pixel data
# before GDCM allocates what the header claims), and what grouping a series and ordering its slices need (SOP
# instance, instance and echo numbers, position, orientation) and what MONOCHROME1 inversion needs (bits stored,
# pixel representation, rescale): with these, a single-frame file is grouped and ordered without GDCM reading its
# header (io/dicom.py, `_light_header`).
WANTED = frozenset({
    (0x0008, 0x0018), (0x0008, 0x0060), (0x0008, 0x103E), (0x0020, 0x000D), (0x0020, 0x000E),
    (0x0020, 0x0011), (0x0020, 0x0013), (0x0020, 0x0052), (0x0020, 0x0032), (0x0020, 0x0037),
    (0x0018, 0x0086), (0x0028, 0x0004), (0x0028, 0x0008), (0x0028, 0x1052), (0x0028, 0x1053),
}) | _US


class _Truncated(Exception):
    pass


class _Unparsable(Exception):
    pass


class _Damaged(Exception):
    pass


@dataclass
class ScanResult:
    values: dict[str, str] = field(default_factory=dict)  # 'gggg|eeee' (lower case) -> text
    truncated: bool = False
    has_pixel_data: bool = False
    parsed: bool = True  # False when the layout was not understood (e.g. deflated): no verdict
    damage: str = ""  # what is wrong, in plain words, when the file is damaged (not merely truncated)
    pixel_bytes: int | None = None  # bytes of pixel data: the element's length, or its fragments' when encapsulated
    encapsulated: bool = False  # pixel data stored as fragments (compressed)


def scan_dicom(path: str) -> ScanResult:
    """Walk the element structure of a DICOM file; never raises."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return ScanResult(truncated=True)
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Scanner(buf, size).run()
    except (OSError, ValueError):
        return ScanResult(parsed=False)


class _Scanner:
    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.result = ScanResult()
        self.little = True
        self.explicit = True
        self.syntax = ""
        # Set once the walk has gone past the pixel data or through bytes that are no element header: running
        # past the end from there is damage, not truncation.
        self.astray = False

    def run(self) -> ScanResult:
        try:
            pos = self._start()
            self._elements(pos, self.size, depth=0, top=True)
        except _Truncated:
            if self.astray:
                self.result.damage = "a part of it claims more data than the file holds"
            else:
                self.result.truncated = True
        except _Damaged as exc:
            self.result.damage = str(exc)
        except (_Unparsable, struct.error):
            self.result.parsed = False
        return self.result

    def _need(self, pos: int, n: int) -> None:
        if pos + n > self.size:
            raise _Truncated

    def _start(self) -> int:
        if self.size >= 132 and self.buf[128:132] == b"DICM":
            pos, syntax = 132, ""
            while pos + 8 <= self.size:
                group, elem = struct.unpack_from("<HH", self.buf, pos)
                if group != 0x0002:
                    break
                vr = self.buf[pos + 4 : pos + 6]
                if vr in _LONG_VRS:
                    self._need(pos, 12)
                    (length,) = struct.unpack_from("<I", self.buf, pos + 8)
                    pos += 12
                else:
                    (length,) = struct.unpack_from("<H", self.buf, pos + 6)
                    pos += 8
                self._need(pos, length)
                if (group, elem) == (0x0002, 0x0010):
                    syntax = bytes(self.buf[pos : pos + length]).rstrip(b"\0 ").decode("ascii", "replace")
                pos += length
            self.syntax = syntax
            if syntax == _DEFLATED:
                raise _Unparsable
            self.explicit = syntax != _IMPLICIT_LE
            self.little = syntax != _EXPLICIT_BE
            return pos
        # No preamble: guess explicit VR from the bytes where a VR would be.
        self.explicit = self.size >= 6 and self.buf[4:6].isalpha() and self.buf[4:6].isupper()
        return 0

    def _header(self, pos: int) -> tuple[int, int, bytes, int, int]:
        """(group, element, vr, value length, value position) of the element at `pos`."""
        self._need(pos, 8)
        fmt = "<" if self.little else ">"
        group, elem = struct.unpack_from(fmt + "HH", self.buf, pos)
        if group == 0xFFFE:  # item / delimiters carry no VR
            (length,) = struct.unpack_from(fmt + "I", self.buf, pos + 4)
            return group, elem, b"", length, pos + 8
        if self.explicit:
            vr = bytes(self.buf[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                self._need(pos, 12)
                (length,) = struct.unpack_from(fmt + "I", self.buf, pos + 8)
                return group, elem, vr, length, pos + 12
            if not vr.isalpha():
                # No element header here (a wrong length before it, or garbage). GDCM then reads the bytes as
                # an implicit-VR element and allocates the length it finds; so does this walk (without the
                # allocation), to see whether that runs past the end of the file.
                self.astray = True
                (length,) = struct.unpack_from(fmt + "I", self.buf, pos + 4)
                return group, elem, b"", length, pos + 8
            (length,) = struct.unpack_from(fmt + "H", self.buf, pos + 6)
            return group, elem, vr, length, pos + 8
        (length,) = struct.unpack_from(fmt + "I", self.buf, pos + 4)
        return group, elem, b"", length, pos + 8

    def _elements(self, pos: int, end: int, depth: int, top: bool = False) -> int:
        """Walk elements from `pos` to `end` (or an item delimiter); return the position after."""
        if depth > _MAX_DEPTH:
            raise _Unparsable
        while pos < end:
            if top and self.astray and end - pos < 8:
                return end  # a few stray bytes at the end, too short for an element: GDCM ignores them
            group, elem, vr, length, value = self._header(pos)
            if (group, elem) == _ITEM_END:
                return value
            if top and (group, elem) == _PIXEL_DATA and not self.astray:
                self.result.has_pixel_data = True
                if length == _UNDEFINED:
                    self.result.encapsulated = True
                    pos = self._encapsulated(value)
                else:
                    self._need(value, length)
                    self.result.pixel_bytes = length
                    pos = value + length
                # GDCM reads on after the pixel data: what follows must hold together too (trailing padding does).
                self.astray = True
                continue
            if length == _UNDEFINED:
                pos = self._sequence(value, depth + 1)
                continue
            self._need(value, length)
            if top and (group, elem) in WANTED:
                key = f"{group:04x}|{elem:04x}"
                if (group, elem) in _US:
                    if length == 2:
                        (number,) = struct.unpack_from("<H" if self.little else ">H", self.buf, value)
                        self.result.values[key] = str(number)
                else:
                    text = bytes(self.buf[value : value + length]).rstrip(b"\0 ").strip()
                    self.result.values[key] = text.decode("latin-1")
            pos = value + length
        return pos

    def _not_an_item(self, length: int, value: int) -> _Unparsable:
        # Where an item must start, something else does (a wrong length before it, or garbage): when its length
        # runs past the end of the file GDCM allocates that length before failing, so that is damage.
        if length != _UNDEFINED and value + length > self.size:
            raise _Damaged("a part of it claims more data than the file holds")
        return _Unparsable()

    def _sequence(self, pos: int, depth: int) -> int:
        while True:
            group, elem, _vr, length, value = self._header(pos)
            if (group, elem) == _SEQ_END:
                return value
            if (group, elem) != _ITEM:
                raise self._not_an_item(length, value)
            if length == _UNDEFINED:
                pos = self._elements(value, self.size, depth)
            else:
                self._need(value, length)
                pos = value + length

    def _encapsulated(self, pos: int) -> int:
        # Compressed frames: items of known length up to the sequence delimiter.
        item = fragments = 0
        while True:
            group, elem, _vr, length, value = self._header(pos)
            if (group, elem) == _SEQ_END:
                self.result.pixel_bytes = fragments
                return value
            if (group, elem) != _ITEM:
                raise self._not_an_item(length, value)
            if length == _UNDEFINED:
                raise _Unparsable
            self._need(value, length)
            if item == 1 and self.syntax == _RLE:  # the first fragment of the first frame (item 0: offset table)
                self._check_rle(value, length)
            fragments += length if item else 0
            item += 1
            pos = value + length

    def _check_rle(self, pos: int, length: int) -> None:
        """An RLE frame starts with a 64-byte header: the number of segments (1 to 15), then their offsets."""
        bad = _Damaged("its RLE-compressed pixel data has an invalid frame header")
        if length < 64:
            raise bad
        header = struct.unpack_from("<16I", self.buf, pos)
        count, offsets = header[0], header[1 : header[0] + 1]
        if not 1 <= count <= 15 or offsets[0] != 64:
            raise bad
        if any(b < a for a, b in itertools.pairwise(offsets)) or offsets[-1] > length:
            raise bad
