"""What a HEIC file asks of its decoder, read from its boxes without decoding.

A HEIC photo is a tree of ISO base media boxes: a ``meta`` box lists the file's items
(coded images, a grid that tiles them, thumbnails, depth and gain maps, EXIF), their
properties (``ispe``: the coded size) and where each item's bytes are (``iloc``). A phone
stores a 12 MP photo as a ``grid`` of 48 HEVC tiles of 512x512, and the decoder decodes
every tile the grid names, each whole, whatever the grid's own size says. So a grid
declaring 1000x1000 pixels whose tiles are each 8000x8000 is a bomb the image's size
does not show, as is an alpha plane far larger than its image.

``heif_layout`` walks the boxes the decoder will use for the primary image (the image
and its alpha plane; thumbnails, depth and gain maps are never decoded) and returns the
pixels it will decode, so the rules refuse a bomb from the header. It raises the
rejection itself for a structure no decode should start on: a primary image coded
other than HEVC, a grid that is not a grid, an item whose bytes lie outside the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

from scones_core.errors import CorruptImage, ImageTooComplex, UnsupportedImageFormat

# Items a HEIC file may list: a phone's 48 MP photo in 512x512 tiles lists about 200
# (192 tiles, the grid, a thumbnail, EXIF, depth and gain maps). Each is a step here and
# in the decoder's parse; libheif's own limit is 1,000.
MAX_HEIF_ITEMS = 1_000
# Boxes walked in all (the items' own ``infe`` boxes, properties, references).
MAX_HEIF_BOXES = 20_000
# References one item makes (a grid's to its tiles; libheif reads at most 1,000), and
# references and property associations over the whole file; and the pieces one item is
# stored in (libheif reads at most 32).
MAX_HEIF_ITEM_REFERENCES = 1_000
MAX_HEIF_REFERENCES = 20_000
MAX_HEIF_EXTENTS = 32
# NAL units in all the coded data decoded: an encoder writes a slice or a few per tile.
MAX_HEIF_NAL_UNITS = 20_000
# HEVC's sequence parameter set declares the coded picture's size, which the decoder
# allocates before libheif compares it with the item's ispe: a tile declaring 256x256
# in its ispe and 11264x11264 in an SPS in its coded data made it allocate 190 MB. Each
# SPS, in the hvcC and in the data, must declare the ispe's size, up to the 64-pixel
# coding blocks the picture is cut into (the conformance window crops the rest).
_SPS_NAL_TYPE = 33
_CODING_BLOCK = 64
_SPS_READ_BYTES = 256
# The coding the decoder has (libde265): HEVC. What else a HEIF can hold, by item type.
_HEVC = "hvc1"
_GRID = "grid"
_OTHER_CODINGS = {
    "av01": "AV1 (AVIF)",
    "avc1": "H.264",
    "vvc1": "H.266 (VVC)",
    "jpeg": "JPEG",
    "j2k1": "JPEG 2000",
    "unci": "uncompressed",
    "iovl": "an overlay of images",
    "iden": "a derived (identity) image",
    "tmap": "a tone map",
}
# The auxiliary image types that are an image's alpha plane, decoded with it.
_ALPHA_TYPES = {b"urn:mpeg:hevc:2015:auxid:1", b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha"}


@dataclass(frozen=True)
class HeifLayout:
    """The primary image's decode: its coded size and how many pixels decoding takes."""

    width: int
    height: int
    tiles: int  # HEVC images decoded for the primary image (1 unless it is a grid)
    coded_pixels: int  # every decoded tile's coded pixels, the alpha plane's included
    plane_bytes: int  # the decoded tiles' Y, Cb and Cr planes, by their chroma and depth
    # The coded pixels of 8-bit 4:2:0 tiles (a phone's) that take as long to decode: the
    # decoder's time grows with the samples it reconstructs, so a 4:4:4 tile (3 a pixel)
    # costs twice a 4:2:0 one (1.5), a monochrome alpha plane (1) two thirds, and samples
    # over 8 bits HIGH_BIT_DECODE_FACTOR more.
    decode_work: int
    # The largest tile's planes: the decoder holds its own picture of the tile it decodes
    # while libheif copies it into the image (one tile at a time: one decode thread).
    # ``image_rules.decode_bytes`` counts what that costs.
    tile_plane_bytes: int = 0
    high_bit_depth: bool = False  # more than 8 bits a sample: libheif converts at 16 bits
    alpha: bool = False
    exif: tuple[bytes, ...] = ()  # the primary image's EXIF blocks, which Pillow parses
    quarter_turns: int = 0  # the primary image's irot: turned counter-clockwise for display


@dataclass
class _Item:
    kind: str = ""
    properties: tuple[int, ...] = ()  # 1-based indices into the ipco box's properties
    associated: bool = False  # an ipma entry gave it its properties
    extents: tuple[tuple[int, int, int], ...] = ()  # (construction method, offset, length)


@dataclass
class _Meta:
    """The ``meta`` box's items, their properties, references and stored data."""

    data: bytes
    items: dict[int, _Item] = field(default_factory=dict)
    properties: list[tuple[bytes, bytes]] = field(default_factory=list)
    refs: dict[bytes, dict[int, list[int]]] = field(default_factory=dict)
    idat: bytes = b""
    primary: int | None = None
    # NAL units walked in all the coded data so far.
    nal_units: _Budget = field(
        default_factory=lambda: _Budget(
            MAX_HEIF_NAL_UNITS,
            f"The HEIF's coded images hold more than {MAX_HEIF_NAL_UNITS} NAL units; an "
            "encoder writes a few a tile.",
        )
    )
    checked: set[int] = field(default_factory=set)  # items whose coded data was walked
    stored_bytes: int = 0  # the bytes of every item read so far

    def item(self, item_id: int, what: str) -> _Item:
        found = self.items.get(item_id)
        if found is None:
            raise CorruptImage(f"The HEIF's {what} (item {item_id}) is not in its item list.")
        return found

    def property(self, item: _Item, kind: bytes) -> bytes | None:
        found = [
            self.properties[index - 1][1]
            for index in item.properties
            if 0 < index <= len(self.properties) and self.properties[index - 1][0] == kind
        ]
        if len(found) > 1 and kind in _ONCE_PER_ITEM:
            raise CorruptImage(_twice(f"an item has two {_text(kind)!r} properties"))
        return found[0] if found else None

    def size(self, item_id: int, item: _Item) -> tuple[int, int]:
        body = self.property(item, b"ispe")
        if body is None or len(body) < 12:
            raise CorruptImage(f"The HEIF's image item {item_id} has no size (ispe property).")
        return _int(body, 4, 4), _int(body, 8, 4)

    def planes(self, item_id: int, item: _Item) -> tuple[float, bool]:
        """(bytes a coded pixel's planes take, whether samples exceed 8 bits), from the
        tile's HEVC configuration (hvcC: chroma format and bit depths, bytes 16 to 18)."""
        body = self.property(item, b"hvcC")
        if body is None or len(body) < 19:
            raise CorruptImage(
                f"The HEIF's image item {item_id} has no HEVC configuration (hvcC property)."
            )
        depth = max(_depths(body))
        sample = 1 if depth <= 8 else 2
        return (1 + _CHROMA_SHARE[body[16] & 3]) * sample, depth > 8

    def describing(self, kind: bytes, target: int) -> list[int]:
        """The items with a ``kind`` reference to ``target`` (an alpha plane, EXIF)."""
        return [source for source, targets in self.refs.get(kind, {}).items() if target in targets]

    def check_extents(self, item: _Item, what: str) -> None:
        if not item.extents:
            raise CorruptImage(f"The HEIF's {what} has no data (no iloc entry).")
        for method, offset, length in item.extents:
            if method not in (0, 1):
                raise UnsupportedImageFormat(
                    f"The HEIF's {what} is stored by reference to another item; not supported."
                )
            room = len(self.data) if method == 0 else len(self.idat)
            if offset + length > room or offset >= room:
                raise CorruptImage(
                    f"The HEIF is truncated: its {what}'s data runs to byte "
                    f"{offset + length} of {room}."
                )

    def check_coded_data(self, item_id: int, item: _Item, what: str) -> None:
        """Walk the HEVC NAL units of an hvc1 item, its hvcC's and its data's, once an
        item however many tiles name it: ``CorruptImage`` for one past the data's end, or
        an SPS whose size, chroma format or bit depth is not the item's."""
        if item_id in self.checked:
            return
        self.checked.add(item_id)
        config = self.property(item, b"hvcC")
        if config is None or len(config) < 23:
            raise CorruptImage(
                f"The HEIF's image item {item_id} has no HEVC configuration (hvcC property)."
            )
        if config[21] & 3 != 3:
            # libheif hands libde265 4-byte lengths whatever the hvcC says: a walk with
            # other lengths would count other NAL units than the decoder gets.
            raise UnsupportedImageFormat(
                f"The HEIF's {what} prefixes its NAL units with {(config[21] & 3) + 1}-byte "
                "lengths; libheif reads 4-byte ones."
            )
        expected = _Sequence(self.size(item_id, item), config[16] & 3, *_depths(config))
        for nal in _configuration_nal_units(config):
            self.nal_units.take()
            _check_sps(nal, expected, what)
        coded, pos = self.stored(item, what), 0
        while pos < len(coded):
            self.nal_units.take()
            length = _int(coded, pos, 4)
            start = pos + 4
            if length < 2 or start + length > len(coded):
                raise CorruptImage(
                    f"The HEIF's {what} is truncated or corrupt: a NAL unit of {length} bytes "
                    f"at byte {start} of its {len(coded)}."
                )
            _check_sps(coded[start : start + length], expected, what)
            pos = start + length

    def byte_count(self, item: _Item) -> int:
        """The bytes an item's pieces name (a length of 0 runs to the end of its source)."""
        return sum(
            (len(self.data if method == 0 else self.idat) - offset) if length == 0 else length
            for method, offset, length in item.extents
        )

    def stored(self, item: _Item, what: str) -> bytes:
        """An item's bytes (a length of 0 runs to the end of the file, or of the idat).

        Items do not share bytes: pieces that repeat or overlap, or tiles that all name one
        region, would be copied and decoded once each (32 pieces each the whole of a 15 MB
        file rose 484 MB here; 270 tiles naming one 14 MB region, 4 GB in the decoder), so
        the bytes of every item read may add up to the file's own and no more."""
        self.check_extents(item, what)
        self.stored_bytes += self.byte_count(item)
        if self.stored_bytes > len(self.data) + len(self.idat):
            raise ImageTooComplex(
                "The HEIF's items name more bytes than the file holds: their pieces repeat or "
                "overlap, and each would be read and decoded again."
            )
        return b"".join(
            (self.data if method == 0 else self.idat)[offset : offset + length if length else None]
            for method, offset, length in item.extents
        )


@dataclass(frozen=True)
class _Decode:
    """What decoding an item (a tile, a grid of them) takes."""

    tiles: int
    pixels: int
    plane_bytes: int
    high_bit_depth: bool
    largest: int = 0  # one tile's planes, the largest
    work: float = 0.0  # HeifLayout.decode_work

    def __add__(self, other: _Decode) -> _Decode:
        return _Decode(
            self.tiles + other.tiles,
            self.pixels + other.pixels,
            self.plane_bytes + other.plane_bytes,
            self.high_bit_depth or other.high_bit_depth,
            max(self.largest, other.largest),
            self.work + other.work,
        )


# Chroma samples per luma sample, by the HEVC chroma_format_idc: 4:0:0, 4:2:0, 4:2:2, 4:4:4.
_CHROMA_SHARE = {0: 0.0, 1: 0.5, 2: 1.0, 3: 2.0}
# Samples a coded pixel of a phone's 8-bit 4:2:0 tile takes: the unit of decode_work.
_PHONE_SAMPLES = 1.5
# How much longer a sample over 8 bits takes to decode. Measured through normalise_image
# on one x86 core: a 25 MP 4:2:0 grid 18 % slower at 10 bits than at 8, a 12 MP 4:4:4
# grid 16 % (2.57 s against 2.24 s).
HIGH_BIT_DECODE_FACTOR = 1.18


def decode_work(pixels: float, plane_bytes_per_pixel: float, high_bit_depth: bool) -> float:
    """``HeifLayout.decode_work`` of ``pixels`` coded pixels whose planes take
    ``plane_bytes_per_pixel`` (``_Meta.planes``: 2 bytes a sample over 8 bits)."""
    samples = plane_bytes_per_pixel / (2 if high_bit_depth else 1)
    depth = HIGH_BIT_DECODE_FACTOR if high_bit_depth else 1.0
    return pixels * samples / _PHONE_SAMPLES * depth


def heif_layout(data: bytes) -> HeifLayout:
    """The primary image's layout, from the ``meta`` box; the rejection that names a file
    no decode should start on (see the module's docstring)."""
    meta = _read_meta(data)
    if meta.primary is None:
        raise CorruptImage("The HEIF names no primary image (it has no pitm box).")
    primary = meta.primary
    item = meta.item(primary, "primary image")
    width, height = meta.size(primary, item)
    image = _decoded(meta, primary, "primary image")
    decoded, alpha = image, False
    for source in meta.describing(b"auxl", primary):
        aux = meta.items.get(source)
        auxiliary = meta.property(aux, b"auxC") if aux is not None else None
        if auxiliary is not None and auxiliary[4:].split(b"\0", 1)[0] in _ALPHA_TYPES:
            plane = _decoded(meta, source, "alpha plane")
            if plane.pixels > image.pixels:
                raise CorruptImage(
                    f"The HEIF's alpha plane has {plane.pixels} coded pixels, more than its "
                    f"image's {image.pixels}."
                )
            decoded, alpha = decoded + plane, True
    exif = [
        _exif_as_pi_heif_reads_it(meta.stored(described, "EXIF block"))
        for source in meta.describing(b"cdsc", primary)
        if (described := meta.items.get(source)) is not None and described.kind == "Exif"
    ]
    _check_metadata_copies(meta)
    rotation = meta.property(item, b"irot")
    meta.property(item, b"imir")  # each given once, or refused as ambiguous
    meta.property(item, b"clap")
    return HeifLayout(
        quarter_turns=(rotation[0] & 3) if rotation else 0,
        width=width,
        height=height,
        tiles=decoded.tiles,
        coded_pixels=decoded.pixels,
        plane_bytes=decoded.plane_bytes,
        decode_work=int(decoded.work),
        tile_plane_bytes=decoded.largest,
        high_bit_depth=image.high_bit_depth,
        alpha=alpha,
        exif=tuple(exif),
    )


def _exif_as_pi_heif_reads_it(payload: bytes) -> bytes:
    """The EXIF block pi-heif hands Pillow: past the 4-byte offset of its TIFF header and
    that offset, or past the 4 bytes alone when the offset leaves 4 bytes or fewer, and
    keeping an "Exif" prefix just before it. An offset that pointed nowhere had the walk
    check nothing where pi-heif passed the whole block (8 M numbers: +243 MB)."""
    skip = 4 + (_int(payload, 0, 4) if len(payload) >= 4 else 0)
    if len(payload) - skip <= 4:
        skip = 4
    elif skip >= 10 and payload[skip - 6 : skip] == b"Exif\0\0":
        skip -= 6
    return payload[skip:]


# What pi-heif copies for every image of the file (not only the primary) as it opens it.
_COPIED_PROPERTIES = frozenset({b"colr"})


def _check_metadata_copies(meta: _Meta) -> None:
    """pi-heif copies each image's EXIF, XMP and colour profile as it opens a file, for
    every image, so metadata shared by many images is copied many times (40 images sharing
    one 15 MB EXIF block rose 647 MB). Those copies may add up to the file's size."""
    copies = 0
    for source, targets in meta.refs.get(b"cdsc", {}).items():
        described = meta.items.get(source)
        if described is not None:
            copies += len(targets) * meta.byte_count(described)
    for item in meta.items.values():
        copies += sum(
            len(meta.properties[index - 1][1])
            for index in item.properties
            if 0 < index <= len(meta.properties)
            and meta.properties[index - 1][0] in _COPIED_PROPERTIES
        )
    if copies > len(meta.data):
        raise ImageTooComplex(
            "The HEIF's metadata (EXIF, XMP, colour profiles) is shared by so many of its "
            "images that the copies the decoder makes of it, one an image, come to more "
            "bytes than the file holds."
        )


def _decoded(meta: _Meta, item_id: int, what: str) -> _Decode:
    """What decoding ``item_id`` (a tile, or a grid of tiles) takes."""
    item = meta.item(item_id, what)
    if not item.kind:  # located or given properties, but not in the item list
        raise CorruptImage(f"The HEIF's {what} (item {item_id}) is not in its item list.")
    if item.kind == _HEVC:
        meta.check_coded_data(item_id, item, what)
        width, height = meta.size(item_id, item)
        plane, high = meta.planes(item_id, item)
        planes = int(width * height * plane)
        work = decode_work(width * height, plane, high)
        return _Decode(1, width * height, planes, high, planes, work)
    if item.kind != _GRID:
        coding = _OTHER_CODINGS.get(item.kind, f"{item.kind!r}")
        raise UnsupportedImageFormat(
            f"The HEIF's {what} is coded as {coding}; only HEVC-coded HEIC images are "
            "supported (save it as HEIC, or as JPEG)."
        )
    grid = meta.stored(item, what)
    if len(grid) < 8:
        raise CorruptImage(f"The HEIF's {what} is a grid whose description is cut short.")
    rows, columns = grid[2] + 1, grid[3] + 1
    field_size = 4 if grid[1] & 1 else 2
    out_width, out_height = _int(grid, 4, field_size), _int(grid, 4 + field_size, field_size)
    if (out_width, out_height) != meta.size(item_id, item):
        declared = "x".join(str(side) for side in meta.size(item_id, item))
        raise CorruptImage(
            f"The HEIF's {what} is a grid of {out_width}x{out_height} by its description "
            f"and {declared} by its ispe."
        )
    tiles = meta.refs.get(b"dimg", {}).get(item_id, [])
    if len(tiles) != rows * columns:
        raise CorruptImage(
            f"The HEIF's {what} is a grid of {rows}x{columns} tiles that names {len(tiles)}."
        )
    sizes, decode = set(), _Decode(0, 0, 0, False)
    for tile in tiles:
        tile_item = meta.item(tile, f"{what}'s tile")
        if tile_item.kind != _HEVC:
            coding = _OTHER_CODINGS.get(tile_item.kind, f"{tile_item.kind!r}")
            raise UnsupportedImageFormat(
                f"A tile of the HEIF's {what} is coded as {coding}; only HEVC-coded tiles "
                "are supported."
            )
        decode += _decoded(meta, tile, f"{what}'s tile")
        sizes.add(meta.size(tile, tile_item))
    if len(sizes) != 1:
        raise CorruptImage(f"The tiles of the HEIF's {what} are not all one size.")
    tile_width, tile_height = sizes.pop()
    # The tiles cover the grid, and none lies wholly outside it (ISO/IEC 23008-12, 6.6.2.3).
    if not (
        (columns - 1) * tile_width < out_width <= columns * tile_width
        and (rows - 1) * tile_height < out_height <= rows * tile_height
    ):
        raise CorruptImage(
            f"The HEIF's {what} is a {out_width}x{out_height} grid of {rows}x{columns} tiles "
            f"of {tile_width}x{tile_height}, which do not cover it exactly."
        )
    return decode


# ---- HEVC parameter sets -----------------------------------------------------------


def _configuration_nal_units(config: bytes) -> Iterator[bytes]:
    """The NAL units of an hvcC (HEVCDecoderConfigurationRecord): arrays after byte 22."""
    arrays, pos = _int(config, 22, 1), 23
    for _ in range(arrays):
        count, pos = _int(config, pos + 1, 2), pos + 3
        for _ in range(count):
            length, pos = _int(config, pos, 2), pos + 2
            if pos + length > len(config):
                raise CorruptImage("The HEIF's HEVC configuration (hvcC) is truncated.")
            yield config[pos : pos + length]
            pos += length


@dataclass(frozen=True)
class _Sequence:
    """What an SPS codes: the picture's size, chroma format and bit depths."""

    size: tuple[int, int]
    chroma_format: int
    luma_depth: int
    chroma_depth: int


def _depths(config: bytes) -> tuple[int, int]:
    """An hvcC's luma and chroma bit depths (bytes 17 and 18)."""
    return 8 + (config[17] & 7), 8 + (config[18] & 7)


def _check_sps(nal: bytes, expected: _Sequence, what: str) -> None:
    """An SPS must code the item's size (up to its 64-pixel coding blocks), and the chroma
    format and bit depths its hvcC states, which the memory estimate counts."""
    if not nal or (nal[0] >> 1) & 0x3F != _SPS_NAL_TYPE:
        return
    coded = _sps(nal)
    (width, height), (coded_width, coded_height) = expected.size, coded.size
    if not (
        width <= coded_width < width + _CODING_BLOCK
        and height <= coded_height < height + _CODING_BLOCK
    ):
        raise CorruptImage(
            f"The HEIF's {what} is {width}x{height} by its ispe, but its HEVC sequence "
            f"parameter set codes a {coded_width}x{coded_height} picture."
        )
    if coded != dataclasses.replace(expected, size=coded.size):
        raise CorruptImage(
            f"The HEIF's {what} is configured (hvcC) for chroma format "
            f"{expected.chroma_format} at {expected.luma_depth}/{expected.chroma_depth} bits, "
            f"but its HEVC sequence parameter set codes chroma format {coded.chroma_format} at "
            f"{coded.luma_depth}/{coded.chroma_depth} bits."
        )


def _sps(nal: bytes) -> _Sequence:
    """The size, chroma format and bit depths an SPS NAL unit codes (ITU-T H.265,
    7.3.2.2), read past its profile, tier and level."""
    # The fields read lie in its first 120 bytes; emulation prevention bytes removed.
    bits = _Bits(nal[2:_SPS_READ_BYTES].replace(b"\0\0\3", b"\0\0"))
    bits.skip(4)  # sps_video_parameter_set_id
    sub_layers = bits.read(3)  # sps_max_sub_layers_minus1
    bits.skip(1 + 88 + 8)  # temporal id nesting; general profile (88 bits) and level
    present = [(bits.read(1), bits.read(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.skip(2 * (8 - sub_layers))
    for profile, level in present:
        bits.skip(88 * profile + 8 * level)
    bits.golomb()  # sps_seq_parameter_set_id
    chroma_format = bits.golomb()
    if chroma_format == 3:  # separate_colour_plane_flag
        bits.skip(1)
    size = (bits.golomb(), bits.golomb())
    if bits.read(1):  # conformance_window_flag: four offsets
        for _ in range(4):
            bits.golomb()
    luma, chroma = bits.golomb(), bits.golomb()
    return _Sequence(size, chroma_format, 8 + luma, 8 + chroma)


class _Bits:
    """A big-endian bit reader; ``CorruptImage`` past the end."""

    def __init__(self, data: bytes) -> None:
        self.value, self.left = int.from_bytes(data, "big"), len(data) * 8

    def read(self, count: int) -> int:
        self.skip(count)
        return (self.value >> self.left) & ((1 << count) - 1)

    def skip(self, count: int) -> None:
        if count > self.left:
            raise CorruptImage("The HEIF's HEVC sequence parameter set is truncated.")
        self.left -= count

    def golomb(self) -> int:
        """An unsigned Exp-Golomb number, ue(v) (at most 32 bits, as H.265 allows)."""
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
            if zeros > 32:
                raise CorruptImage("The HEIF's HEVC sequence parameter set is corrupt.")
        return (1 << zeros) - 1 + self.read(zeros)


# ---- reading the boxes ------------------------------------------------------------


# Boxes a meta box holds once (ISO/IEC 23008-12, 9.3). Given twice, libheif reads the
# first and a walk keeping the last would judge another image than the one decoded.
_ONCE_IN_META = frozenset({b"hdlr", b"pitm", b"iinf", b"iloc", b"iref", b"iprp", b"idat"})
# Properties an item has once: a second size, configuration, turn or crop is ambiguous.
_ONCE_PER_ITEM = frozenset({b"ispe", b"hvcC", b"irot", b"imir", b"clap", b"auxC", b"pixi"})


def _twice(what: str) -> str:
    return (
        f"The HEIF is ambiguous: {what}, and a decoder would read one of them where the "
        "image rules read the other."
    )


def _read_meta(data: bytes) -> _Meta:
    budget = _Budget()
    metas = [body for kind, body in _boxes(data, budget) if kind == b"meta"]
    if len(metas) != 1:
        raise CorruptImage(
            f"The HEIF has {len(metas)} meta boxes at its top level; an image file has one."
        )
    meta = _Meta(data)
    seen: set[bytes] = set()
    for kind, body in _boxes(metas[0][4:], budget):  # meta is a full box: version and flags
        if kind in _ONCE_IN_META:
            if kind in seen:
                raise CorruptImage(_twice(f"its meta box has two {_text(kind)!r} boxes"))
            seen.add(kind)
        if kind == b"hdlr" and body[8:12] != b"pict":
            raise UnsupportedImageFormat(
                f"The HEIF's metadata is for {_text(body[8:12])!r}, not a picture; "
                "HEIF image sequences and other media are not supported."
            )
        if kind == b"pitm":
            meta.primary = _int(body, 4, 2 if body[:1] == b"\0" else 4)
        elif kind == b"iinf":
            _read_item_infos(body, meta, budget)
        elif kind == b"iloc":
            _read_locations(body, meta)
        elif kind == b"iref":
            _read_references(body, meta, budget)
        elif kind == b"iprp":
            _read_properties(body, meta, budget)
        elif kind == b"idat":
            meta.idat = body
    return meta


class _Budget:
    """Counts steps of a walk (boxes, NAL units): ``ImageTooComplex`` past ``limit``."""

    def __init__(self, limit: int = MAX_HEIF_BOXES, too_many: str = "") -> None:
        self.limit, self.walked = limit, 0
        self.too_many = too_many or (
            f"The HEIF has more than {limit} boxes; a camera's photo has a few hundred."
        )

    def take(self) -> None:
        self.walked += 1
        if self.walked > self.limit:
            raise ImageTooComplex(self.too_many)


def _boxes(data: bytes, budget: _Budget) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each box in ``data``; ``CorruptImage`` for a box past its end."""
    pos, end = 0, len(data)
    while pos < end:
        budget.take()
        if end - pos < 8:
            raise CorruptImage("The HEIF is truncated: a box header is cut short.")
        size, kind, header = _int(data, pos, 4), data[pos + 4 : pos + 8], 8
        if size == 1:
            if end - pos < 16:
                raise CorruptImage("The HEIF is truncated: a box header is cut short.")
            size, header = _int(data, pos + 8, 8), 16
        elif size == 0:  # to the end of its container
            size = end - pos
        if size < header or pos + size > end:
            raise CorruptImage(
                f"The HEIF is truncated or corrupt: its {_text(kind)!r} box claims "
                f"{size} bytes, and {end - pos} are left."
            )
        yield kind, data[pos + header : pos + size]
        pos += size


def _read_item_infos(body: bytes, meta: _Meta, budget: _Budget) -> None:
    wide = body[:1] != b"\0"
    count = _int(body, 4, 4 if wide else 2)
    if count > MAX_HEIF_ITEMS:
        raise ImageTooComplex(
            f"The HEIF lists {count} items; at most {MAX_HEIF_ITEMS} are read "
            "(a camera's photo has a few hundred)."
        )
    for kind, entry in _boxes(body[8 if wide else 6 :], budget):
        if kind != b"infe" or len(entry) < 4 or entry[0] < 2:
            continue  # versions 0 and 1 describe files, not images
        id_size = 2 if entry[0] == 2 else 4
        item_id = _int(entry, 4, id_size)
        item_type = entry[4 + id_size + 2 : 4 + id_size + 6]
        item = meta.items.setdefault(item_id, _Item())
        if item.kind:
            raise CorruptImage(_twice(f"its item {item_id} is listed twice"))
        item.kind = _text(item_type)
        if len(meta.items) > MAX_HEIF_ITEMS:
            raise ImageTooComplex(f"The HEIF lists more than {MAX_HEIF_ITEMS} items.")


def _read_locations(body: bytes, meta: _Meta) -> None:
    version = _int(body, 0, 1)
    offset_size, length_size = _int(body, 4, 1) >> 4, _int(body, 4, 1) & 15
    base_size = _int(body, 5, 1) >> 4
    index_size = (body[5] & 15) if version in (1, 2) else 0
    count_size = 2 if version < 2 else 4
    count, pos = _int(body, 6, count_size), 6 + count_size
    if count > MAX_HEIF_ITEMS:
        raise ImageTooComplex(f"The HEIF locates {count} items; at most {MAX_HEIF_ITEMS}.")
    for _ in range(count):
        item_id, pos = _int(body, pos, count_size), pos + count_size
        method = 0
        if version in (1, 2):
            method, pos = _int(body, pos, 2) & 15, pos + 2
        pos += 2  # the data reference: this file
        base, pos = _int(body, pos, base_size), pos + base_size
        extent_count, pos = _int(body, pos, 2), pos + 2
        if extent_count > MAX_HEIF_EXTENTS:
            raise ImageTooComplex(
                f"A HEIF item is stored in {extent_count} pieces; at most {MAX_HEIF_EXTENTS} "
                "are read (encoders write one)."
            )
        extents = []
        for _ in range(extent_count):
            pos += index_size
            offset, pos = _int(body, pos, offset_size), pos + offset_size
            length, pos = _int(body, pos, length_size), pos + length_size
            extents.append((method, base + offset, length))
        located = meta.items.setdefault(item_id, _Item())
        if located.extents:
            raise CorruptImage(_twice(f"its item {item_id} is located twice"))
        located.extents = tuple(extents)


def _read_references(body: bytes, meta: _Meta, budget: _Budget) -> None:
    id_size = 2 if body[:1] == b"\0" else 4
    total = 0
    for kind, entry in _boxes(body[4:], budget):
        source = _int(entry, 0, id_size)
        count = _int(entry, id_size, 2)
        if count > MAX_HEIF_ITEM_REFERENCES:
            raise ImageTooComplex(
                f"A HEIF item refers to {count} others; at most {MAX_HEIF_ITEM_REFERENCES} "
                "are read (a phone's grid names a few hundred tiles)."
            )
        if source in meta.refs.get(kind, {}):
            raise CorruptImage(_twice(f"its item {source} has two {_text(kind)!r} references"))
        total += count
        if total > MAX_HEIF_REFERENCES:
            raise ImageTooComplex(
                f"The HEIF's items refer to more than {MAX_HEIF_REFERENCES} others "
                "(a grid names each of its tiles once)."
            )
        start = id_size + 2
        targets = [_int(entry, start + i * id_size, id_size) for i in range(count)]
        if len(set(targets)) != len(targets):
            # libheif refuses it too, after a walk of every cell's tile ("double references").
            raise CorruptImage(f"The HEIF's item {source} names an item twice in one reference.")
        meta.refs.setdefault(kind, {}).setdefault(source, []).extend(targets)


def _read_properties(body: bytes, meta: _Meta, budget: _Budget) -> None:
    for kind, child in _boxes(body, budget):
        if kind == b"ipco":
            if meta.properties:
                raise CorruptImage(_twice("it has two property containers (ipco)"))
            meta.properties.extend(_boxes(child, budget))
        elif kind == b"ipma":
            _read_associations(child, meta)


def _read_associations(ipma: bytes, meta: _Meta) -> None:
    version, wide_index = _int(ipma, 0, 1), bool(_int(ipma, 3, 1) & 1)
    id_size, index_size = (2 if version < 1 else 4), (2 if wide_index else 1)
    count, pos, total = _int(ipma, 4, 4), 8, 0
    if count > MAX_HEIF_ITEMS:
        raise ImageTooComplex(
            f"The HEIF gives properties to {count} items; at most {MAX_HEIF_ITEMS}."
        )
    for _ in range(count):
        item_id, pos = _int(ipma, pos, id_size), pos + id_size
        associations, pos = _int(ipma, pos, 1), pos + 1
        total += associations
        if total > MAX_HEIF_REFERENCES:
            raise ImageTooComplex(
                f"The HEIF gives its items more than {MAX_HEIF_REFERENCES} properties."
            )
        indices = []
        for _ in range(associations):
            value, pos = _int(ipma, pos, index_size), pos + index_size
            indices.append(value & (0x7FFF if wide_index else 0x7F))
        associated = meta.items.setdefault(item_id, _Item())
        if associated.associated:
            raise CorruptImage(_twice(f"its item {item_id} is given properties twice"))
        associated.properties, associated.associated = tuple(indices), True


def _int(data: bytes, pos: int, size: int) -> int:
    """An unsigned big-endian integer of ``size`` bytes at ``pos`` (0 bytes read as 0)."""
    if pos + size > len(data):
        raise CorruptImage("The HEIF is truncated: a box is shorter than its fields.")
    return int.from_bytes(data[pos : pos + size], "big")


def _text(kind: bytes) -> str:
    """A box or item type as a reason may show it: its letters, or its bytes in hex."""
    if all(0x20 <= byte < 0x7F for byte in kind):
        return kind.decode("ascii")
    return f"0x{kind.hex()}"
