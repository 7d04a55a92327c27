"""TFRecord framing, without TensorFlow: the container of TF Serving's warm-up file.

Each record is ``uint64 length (LE) | uint32 masked crc32c(length) | data |
uint32 masked crc32c(data)``; ``masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8``
(mod 2^32). Uncompressed only: TF Serving opens the warm-up file without options.

Written here because no library fits: TensorFlow's writer and reader import TensorFlow
(which the deploy path must not); tensorboard's ``RecordWriter`` is internal (not a
public API), has no public reader, and computes crc32c in pure Python (about 11 MB/s
here, ~90 ms per MiB); the ``tfrecord`` package on PyPI writes only ``tf.train.Example``
dicts, not raw bytes. crc32c itself comes from ``google-crc32c`` (C), which
google-cloud-storage already installs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import google_crc32c

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER_BYTES = _LENGTH.size + _CRC.size
_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    """A truncated or corrupted record (TensorFlow reports these as DATA_LOSS)."""

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(f"{message} at byte offset {offset}")
        self.offset = offset


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked crc32c (Castagnoli) of ``data``."""
    crc: int = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record: length, its masked crc, the data, the data's masked crc."""
    length = _LENGTH.pack(len(data))
    return length + _CRC.pack(masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data))


def encode(records: Iterable[bytes]) -> bytes:
    """A whole TFRecord file holding ``records`` in order."""
    return b"".join(frame(r) for r in records)


def read_records(stream: BinaryIO) -> Iterator[bytes]:
    """Yield each record's data; raise TFRecordError at the first bad or truncated one.

    The length's crc is checked before the data is read, so a corrupted length never
    makes this allocate or read a bogus size.
    """
    offset = 0
    while True:
        header = stream.read(_HEADER_BYTES)
        if not header:
            return
        if len(header) < _HEADER_BYTES:
            raise TFRecordError("truncated record header", offset=offset)
        length_bytes = header[: _LENGTH.size]
        (length_crc,) = _CRC.unpack(header[_LENGTH.size :])
        if masked_crc32c(length_bytes) != length_crc:
            raise TFRecordError("corrupted record length (crc32c mismatch)", offset=offset)
        (length,) = _LENGTH.unpack(length_bytes)
        data = stream.read(length)
        footer = stream.read(_CRC.size)
        if len(data) < length or len(footer) < _CRC.size:
            raise TFRecordError(f"truncated record of {length} bytes", offset=offset)
        if masked_crc32c(data) != _CRC.unpack(footer)[0]:
            raise TFRecordError("corrupted record data (crc32c mismatch)", offset=offset)
        yield data
        offset += _HEADER_BYTES + length + _CRC.size
