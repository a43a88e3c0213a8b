"""Images Pillow decodes (PNG, JPEG, TIFF, GIF, BMP, WebP, ...) → uint8 H×W×C, one set of rules
for training folders (`image_folder`), predict and serve (`readers.read_input`):

  size           read from the header before anything is decoded (`header`): sides in
                 [min_side, max_side], at most max_pixels pixels (`ReadOptions`); Pillow's own
                 decompression-bomb limit is left as it is (it is higher, so it never decides).
  channels       grey modes (1, L, LA, La) → C = 1; everything else → RGB, C = 3 (palettes expanded).
  bit depth      16/32-bit images (Pillow modes I;16*, I, F): integers in 0..65535 are scaled to
                 0..255 by their bit depth b (v · 255 / (2^b − 1)): the significant bits a PNG
                 declares in its sBIT chunk when the values fit them, else the smallest of 8, 10,
                 12, 14, 16 bits that holds the observed maximum; a warning names which, except for
                 full 16-bit data (÷ 257). Other values (negative, fractional, above 65535): the
                 image's min–max range, with a warning. Non-finite values: the non-finite rule of
                 `common.finite`. 1-bit images: 0/1 → 0/255, with a warning.
  alpha          dropped, colour values used as stored, with a warning when any pixel is not fully
                 opaque.
  frames         images with several frames (GIF, TIFF pages, APNG): the first, with a warning.
  orientation    an EXIF Orientation other than 1 is not applied (pixels as stored), with a warning.

`read_image` is the whole check (header, `verify`, a full decode); `decode` is the same decode and
conversion without the header limits and `verify`, for the per-example reads of files an index
already checked (`image_folder.decode_image`).
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from prepnet_jax.data.readers.common import InputError, ReadOptions, check_size, finite, to_uint8, warn

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_GRAY_MODES = ("1", "L", "LA", "La")
_BIT_DEPTHS = (8, 10, 12, 14, 16)
# Pillow modes that become L or RGB without a value changing (no warning).
_PLAIN_MODES = ("L", "RGB", "P", "LA", "La", "RGBA", "RGBa", "PA")
_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageHeader(NamedTuple):
  format: str
  height: int
  width: int
  frames: int
  orientation: int | None  # EXIF Orientation, None without one


def _pillow_error(path: str, what: str, e: Exception) -> InputError:
  """Pillow's failures as the one error type (it raises OSError, SyntaxError, ValueError, struct.error, ...)."""
  if isinstance(e, UnidentifiedImageError):
    return InputError(path, "not an image: Pillow cannot identify it, and it is neither DICOM ('DICM' at "
                            "byte 128) nor NIfTI; expected PNG, JPEG, DICOM or NIfTI")
  if isinstance(e, Image.DecompressionBombError):
    return InputError(path, f"the header declares too many pixels ({e}); far above config.max_pixels")
  return InputError(path, f"{what}: {type(e).__name__}: {e}")


def header(path: str, options: ReadOptions) -> ImageHeader:
  """The header's size (checked against the limits), format, frame count and EXIF orientation;
  nothing is decoded."""
  try:
    im = Image.open(path)  # reads the header only
  except Exception as e:
    raise _pillow_error(path, "cannot read the image header", e) from e
  with im:
    width, height = im.size
    check_size(path, height, width, options)
    try:
      return ImageHeader(im.format or "unknown format", height, width, int(getattr(im, "n_frames", 1)),
                         im.getexif().get(_EXIF_ORIENTATION))
    except Exception as e:
      raise _pillow_error(path, "corrupt or truncated image", e) from e


def read_image(path: str, options: ReadOptions, notes: list[str], warnings: list[str]) -> np.ndarray:
  """One image by the rules of the module docstring: the header's size first, then `verify`
  (chunk CRCs and structure) and a full decode."""
  head = header(path, options)
  try:
    with Image.open(path) as im:
      im.verify()  # it must come right after opening, and ends the image
  except Exception as e:
    raise _pillow_error(path, "corrupt or truncated image", e) from e
  return decode(path, notes, warnings, head)


def decode(path: str, notes: list[str], warnings: list[str], head: ImageHeader | None = None) -> np.ndarray:
  """The file decoded and converted by the channel, bit-depth and alpha rules; `head` adds the
  frame and orientation notes of `read_image`. Only Pillow's calls are wrapped into InputError, so
  a fault in this module's own code still raises as itself."""
  try:
    with Image.open(path) as im:
      im.load()
      image_format, mode, height, width = im.format or "unknown format", im.mode, im.height, im.width
      if mode in _HIGH_BIT_DEPTH_MODES:
        pixels = np.asarray(im)
      else:
        pixels = np.asarray(im.convert("L"))[..., None] if mode in _GRAY_MODES else np.asarray(im.convert("RGB"))
      alpha = _alpha(im)
  except Exception as e:
    raise _pillow_error(path, "corrupt or truncated image", e) from e
  notes.append(f"{image_format} image, {height}×{width} px, mode {mode}")
  if head is not None and head.frames > 1:
    warn(notes, warnings, f"{head.frames} frames ({image_format}): the first frame used")
  if head is not None and head.orientation not in (None, 1):
    warn(notes, warnings, f"EXIF Orientation {head.orientation} not applied: pixels used as stored, as "
                          "the training-folder reader reads them")
  if mode in _HIGH_BIT_DEPTH_MODES:
    sbit = significant_bits(path) if image_format == "PNG" else None
    pixels = _high_bit_depth_to_uint8(path, pixels, mode, sbit, notes, warnings)[..., None]
  elif mode == "1":
    warn(notes, warnings, "1-bit image: black/white → 0/255")
  elif mode not in _PLAIN_MODES:
    warn(notes, warnings, f"mode {mode}: converted to RGB by Pillow")
  if alpha is not None:
    transparent = int(np.count_nonzero(alpha < 255))
    if transparent:
      warn(notes, warnings, f"alpha channel: {transparent} of {alpha.size} pixels not fully opaque; alpha "
                            "dropped, colour values used as stored (as the training-folder reader does)")
    else:
      notes.append("alpha channel fully opaque: dropped")
  return pixels


def _alpha(im: Image.Image) -> np.ndarray | None:
  """The alpha values of a loaded image (a palette's transparency included), None without alpha."""
  if "A" in im.getbands():
    return np.asarray(im.getchannel("A"))
  if im.mode == "P" and "transparency" in im.info:
    return np.asarray(im.convert("RGBA").getchannel("A"))
  return None


def significant_bits(path: str) -> int | None:
  """The grey sample's significant bits from a PNG's sBIT chunk (Pillow does not expose it), None
  without one. Chunks: 4-byte length, 4-byte type, data, 4-byte CRC; sBIT precedes the image data."""
  with open(path, "rb") as f:
    if f.read(8) != _PNG_SIGNATURE:
      return None
    while len(chunk := f.read(8)) == 8:
      length, kind = struct.unpack(">I4s", chunk)
      if kind == b"sBIT":
        data = f.read(length)
        return data[0] if data else None
      if kind in (b"IDAT", b"IEND"):
        return None
      f.seek(length + 4, os.SEEK_CUR)
  return None


def _high_bit_depth_to_uint8(name: str, pixels: np.ndarray, mode: str, sbit: int | None,
                             notes: list[str], warnings: list[str]) -> np.ndarray:
  """The bit-depth rule of the module docstring."""
  values = finite(name, np.asarray(pixels, np.float64), "pixel values", notes, warnings)
  low, high = float(values.min()), float(values.max())
  if low < 0 or high > 65535 or (mode == "F" and not np.array_equal(values, np.rint(values))):
    warn(notes, warnings, f"mode {mode} with values in [{low:g}, {high:g}] (not integers in 0..65535): "
                          "this image's min–max range mapped to 0..255")
    return to_uint8(values, low, high)
  if sbit is not None and not (1 <= sbit <= 16 and high < 2**sbit):
    warn(notes, warnings, f"the PNG sBIT chunk declares {sbit} significant bits, but the values reach "
                          f"{high:g}: the declaration is ignored")
    sbit = None
  if sbit is not None:
    bits, how = sbit, f"the significant bits the PNG declares (sBIT {sbit})"
  else:
    bits = next(b for b in _BIT_DEPTHS if high < 2**b)
    how = (f"the observed value range: maximum {high:g}, the smallest of 8/10/12/14/16 bits that holds it "
           "(no sBIT chunk)")
  text = f"mode {mode}, {bits}-bit values by {how}: scaled by 255/{2**bits - 1} to 0..255"
  if bits == 16:
    notes.append(text)  # full 16-bit data: ÷ 257, no value needs a person's attention
  else:
    warn(notes, warnings, text)
  return np.rint(values * (255.0 / (2**bits - 1))).astype(np.uint8)
