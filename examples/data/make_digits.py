#!/usr/bin/env python3
"""Convert scikit-learn's copy of the UCI handwritten digits (digits.csv.gz) to digits.bin.

Standard library only. Usage:

    python3 examples/data/make_digits.py [PATH/TO/digits.csv.gz] [OUT.bin]

Without a path it looks for the file inside an importable scikit-learn
(sklearn/datasets/data/digits.csv.gz); without OUT it writes digits.bin next to
this script. The output is byte-for-byte deterministic.

digits.bin layout (all integers little-endian):

    offset  size        field
    0       8           magic b"FODIGIT1"
    8       4  u32      count     number of samples (1797)
    12      1  u8       rows      image height (8)
    13      1  u8       cols      image width (8)
    14      1  u8       classes   number of classes (10)
    15      1  u8       max_value largest pixel value (16)
    16      4  u32      checksum  FNV-1a (32-bit) of every byte after the header
    20      count*rows*cols u8    pixels, sample-major, row-major within an image
    ...     count u8              labels 0..classes-1

20 + 1797 * 65 = 116825 bytes.
"""

import csv
import gzip
import hashlib
import io
import os
import struct
import sys

MAGIC = b"FODIGIT1"
ROWS, COLS, CLASSES, MAX_VALUE, COUNT = 8, 8, 10, 16, 1797


def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def find_default_input() -> str:
    try:
        import sklearn  # only used to locate the file; not needed with an explicit path
    except ImportError:
        sys.exit("make_digits.py: give the path of digits.csv.gz (scikit-learn is not importable)")
    return os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "digits.csv.gz")


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else find_default_input()
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "digits.bin")

    raw = open(src, "rb").read()
    text = gzip.decompress(raw).decode("ascii")
    pixels = bytearray()
    labels = bytearray()
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row:
            continue
        if len(row) != ROWS * COLS + 1:
            sys.exit(f"{src}:{lineno}: expected {ROWS * COLS + 1} fields, got {len(row)}")
        # The CSV stores floats ("0.0") in some versions and integers in others.
        values = [float(x) for x in row]
        for v in values:
            if v != int(v):
                sys.exit(f"{src}:{lineno}: non-integer value {v}")
        px, label = [int(v) for v in values[:-1]], int(values[-1])
        if min(px) < 0 or max(px) > MAX_VALUE:
            sys.exit(f"{src}:{lineno}: pixel outside 0..{MAX_VALUE}")
        if not 0 <= label < CLASSES:
            sys.exit(f"{src}:{lineno}: label {label} outside 0..{CLASSES - 1}")
        pixels.extend(px)
        labels.append(label)
    if len(labels) != COUNT:
        sys.exit(f"{src}: expected {COUNT} samples, got {len(labels)}")

    payload = bytes(pixels) + bytes(labels)
    header = MAGIC + struct.pack("<IBBBBI", len(labels), ROWS, COLS, CLASSES, MAX_VALUE,
                                 fnv1a32(payload))
    out = header + payload
    with open(dst, "wb") as f:
        f.write(out)

    counts = [labels.count(c) for c in range(CLASSES)]
    print(f"input : {src}")
    print(f"        sha256 {hashlib.sha256(raw).hexdigest()}")
    print(f"output: {dst} ({len(out)} bytes, {len(labels)} samples, class counts {counts})")
    print(f"        sha256 {hashlib.sha256(out).hexdigest()}")


if __name__ == "__main__":
    main()
