"""HEIC files written around HEVC-coded tiles, as a phone writes them.

A phone's 12 MP photo is a grid of 48 HEVC tiles of 512x512. ``grid_heic`` writes such a
grid of copies of one coded tile at any size: ``scones bench memory`` decodes the largest
HEIC the rules accept from the tile in ``HEIC_TILE`` (a real photo, coded by libheif),
and the image tests break each rule of ``scones_core.heif_structure`` one at a time on
otherwise real files (``single_heic``, ``heic_file`` for any item of their own choosing).
Nothing here encodes: there is no HEVC encoder in the product.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

# A 512x512 photo (a CIFAR-100 bicycle enlarged, with sensor-like noise), coded by libheif
# and x265 at quality 80 (4:2:0, 8 bits, 116 KB): one tile of a phone's grid.
HEIC_TILE = Path(__file__).with_name("data") / "tile-512.heic"


@dataclass(frozen=True)
class HevcTile:
    hvcc: bytes  # the whole hvcC box
    width: int
    height: int
    data: bytes  # the coded image, as the file's mdat held it


def tile_from_heic(data: bytes) -> HevcTile:
    """The one coded image of a file libheif wrote (its hvcC, ispe and mdat)."""
    start = data.index(b"hvcC") - 4
    hvcc = data[start : start + struct.unpack(">I", data[start : start + 4])[0]]
    ispe = data.index(b"ispe") + 8
    width, height = struct.unpack(">II", data[ispe : ispe + 8])
    return HevcTile(hvcc=hvcc, width=width, height=height, data=_top_box(data, b"mdat"))


def _top_box(data: bytes, kind: bytes) -> bytes:
    pos = 0
    while pos < len(data):
        size = struct.unpack(">I", data[pos : pos + 4])[0]
        if data[pos + 4 : pos + 8] == kind:
            return data[pos + 8 : pos + size]
        pos += size
    raise AssertionError(f"no {kind!r} box")


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full_box(kind: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


@dataclass
class Item:
    """One item of the file: its type, its properties (boxes) and its bytes."""

    kind: bytes
    data: bytes = b""
    properties: list[bytes] = field(default_factory=list)
    hidden: bool = False
    in_idat: bool = False
    location: tuple[int, int] | None = None  # (offset, length) to write instead of the real one


def ispe(width: int, height: int) -> bytes:
    return full_box(b"ispe", struct.pack(">II", width, height))


def grid_description(rows: int, columns: int, width: int, height: int) -> bytes:
    wide = width > 0xFFFF or height > 0xFFFF
    sizes = struct.pack(">II" if wide else ">HH", width, height)
    return bytes([0, int(wide), rows - 1, columns - 1]) + sizes


def exif_item(exif: Image.Exif) -> Item:
    """An EXIF item as a phone writes it: the offset of the TIFF header past the 4 bytes
    that hold it (6: past "Exif\\0\\0", which Pillow's bytes start with), then the block."""
    block = exif.tobytes()
    return Item(b"Exif", struct.pack(">I", block.index(b"Exif\0\0") + 6) + block)


def heic_file(
    items: dict[int, Item],
    primary: int,
    references: Sequence[tuple[bytes, int, Sequence[int]]] = (),
    *,
    brand: bytes = b"heic",
    handler: bytes = b"pict",
) -> bytes:
    """A HEIF file of ``items`` (ids to items) whose primary item is ``primary``."""
    ftyp = box(b"ftyp", brand + b"\0\0\0\0" + b"mif1heic")
    infos = b"".join(
        full_box(b"infe", struct.pack(">HH", item_id, 0) + item.kind + b"\0", 2, int(item.hidden))
        for item_id, item in items.items()
    )
    iinf = full_box(b"iinf", struct.pack(">H", len(items)) + infos)
    properties: list[bytes] = []
    associations = b""
    for item_id, item in items.items():
        indices = []
        for prop in item.properties:
            if prop not in properties:
                properties.append(prop)
            indices.append(properties.index(prop) + 1)
        associations += struct.pack(">HB", item_id, len(indices)) + bytes(
            0x80 | i if i < 0x80 else i for i in indices
        )
    ipma = full_box(b"ipma", struct.pack(">I", len(items)) + associations)
    iprp = box(b"iprp", box(b"ipco", b"".join(properties)) + ipma)
    iref = full_box(
        b"iref",
        b"".join(
            box(
                kind,
                struct.pack(">HH", source, len(targets))
                + struct.pack(f">{len(targets)}H", *targets),
            )
            for kind, source, targets in references
        ),
    )
    idat_payload = b"".join(item.data for item in items.values() if item.in_idat)
    idat = box(b"idat", idat_payload) if idat_payload else b""
    hdlr = full_box(b"hdlr", b"\0\0\0\0" + handler + bytes(12) + b"\0")
    pitm = full_box(b"pitm", struct.pack(">H", primary))

    def meta_with(iloc: bytes) -> bytes:
        return full_box(b"meta", hdlr + pitm + iloc + iinf + iref + iprp + idat)

    # iloc version 1 (construction methods), 4-byte offsets and lengths, no base offset.
    def iloc_for(mdat_start: int) -> bytes:
        entries = b""
        mdat_pos, idat_pos = mdat_start, 0
        for item_id, item in items.items():
            if item.in_idat:
                offset, length, method = idat_pos, len(item.data), 1
                idat_pos += len(item.data)
            else:
                offset, length, method = mdat_pos, len(item.data), 0
                mdat_pos += len(item.data)
            if item.location is not None:
                offset, length = item.location
            entries += struct.pack(">HHHHII", item_id, method, 0, 1, offset, length)
        return full_box(b"iloc", bytes([0x44, 0x00]) + struct.pack(">H", len(items)) + entries, 1)

    # The iloc's size does not depend on the offsets in it: measure it, then write it.
    head = len(ftyp) + len(meta_with(iloc_for(0))) + 8
    mdat = box(b"mdat", b"".join(item.data for item in items.values() if not item.in_idat))
    return ftyp + meta_with(iloc_for(head)) + mdat


def single_heic(
    tile: HevcTile, *, extra: Sequence[bytes] = (), exif: Image.Exif | None = None
) -> bytes:
    """One HEVC image, with ``extra`` properties (``irot``, ``imir``) and an EXIF block."""
    items = {1: Item(b"hvc1", tile.data, [tile.hvcc, ispe(tile.width, tile.height), *extra])}
    references: list[tuple[bytes, int, Sequence[int]]] = []
    if exif is not None:
        items[2] = exif_item(exif)
        references.append((b"cdsc", 2, [1]))
    return heic_file(items, 1, references)


def grid_heic(
    tile: HevcTile | Sequence[HevcTile],
    rows: int,
    columns: int,
    size: tuple[int, int] | None = None,
    *,
    tile_size: tuple[int, int] | None = None,
    extra: Sequence[bytes] = (),
    alpha: HevcTile | None = None,
    alpha_size: tuple[int, int] | None = None,
) -> bytes:
    """A grid of ``rows`` x ``columns`` tiles, row by row: ``tile`` is each of them, or one
    copy of it each (each tile item has its own copy of the coded data). ``size``: the
    grid's (default: the tiles exactly). ``tile_size``: the size the tiles' ispe
    declares, if not each tile's own."""
    coded = [tile] * (rows * columns) if isinstance(tile, HevcTile) else list(tile)
    first = coded[0]
    width, height = size or (columns * first.width, rows * first.height)
    declared = ispe(*tile_size) if tile_size else None
    items: dict[int, Item] = {
        1: Item(
            b"grid",
            grid_description(rows, columns, width, height),
            [ispe(width, height), *extra],
            in_idat=True,
        )
    }
    tiles = list(range(2, 2 + rows * columns))
    for tile_id, each in zip(tiles, coded, strict=True):
        size_property = declared or ispe(each.width, each.height)
        items[tile_id] = Item(b"hvc1", each.data, [each.hvcc, size_property], hidden=True)
    references = [(b"dimg", 1, tiles)]
    if alpha is not None:
        alpha_id = tiles[-1] + 1
        auxc = full_box(b"auxC", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha\0")
        items[alpha_id] = Item(
            b"hvc1",
            alpha.data,
            [alpha.hvcc, ispe(*(alpha_size or (alpha.width, alpha.height))), auxc],
            hidden=True,
        )
        references.append((b"auxl", alpha_id, [1]))
    return heic_file(items, 1, references)
