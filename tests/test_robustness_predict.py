"""Predict on a folder of bad files (issue #17): a corpus built here of truncated, lying, odd and
non-file entries next to good files. The job ends normally, every folder entry is in summary.json
with its status and reason, values the reader changed carry a warning, the good files get the
predictions they get alone, and no two inputs share an output file. The corpus size and the
handled / refused / warned counts are printed (pytest -s shows them)."""

from __future__ import annotations

import collections
import gzip
import io
import json
import os
import pickle
import socket
import struct
import zlib
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from prepnet_jax.data import readers
from prepnet_jax.data.readers import nifti
from prepnet_jax.tasks.predict import job as predict
from test_predict import ct_model, phantom_ct_images, png_bytes, predict_config  # noqa: F401 (ct_model: a fixture)

OPTIONS = readers.ReadOptions()
VOLUME_SHAPE = (128, 128, 8)  # after the MosMed crop (25, 45): 38×78 px slices
AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


class Expect(NamedTuple):
  status: str           # 'ok', 'failed' or 'skipped'
  texts: tuple = ()     # ok: each in some warning (none: no warning); failed / skipped: each in the reason
  good: bool = False    # a good file: predicted alone too, and the two must agree


def ok(*warnings: str) -> Expect:
  return Expect("ok", warnings)


def good() -> Expect:
  return Expect("ok", (), True)


def refused(*reasons: str) -> Expect:
  return Expect("failed", reasons)


def skipped(*reasons: str) -> Expect:
  return Expect("skipped", reasons)


# --- writers -------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, rows: bytes | None = None, bit_depth: int = 8, color_type: int = 0,
            extra: bytes = b"") -> bytes:
  """A PNG written chunk by chunk (so headers can lie and sBIT can be added); `rows` are the
  filtered scanlines, zeros when None."""
  if rows is None:
    rows = bytes(height * (1 + width * max(bit_depth // 8, 1)))
  ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(rows, 1))
          + _chunk(b"IEND", b""))


def png16(values: np.ndarray, significant_bits: int | None = None) -> bytes:
  """A 16-bit grayscale PNG of `values`, with an sBIT chunk when `significant_bits` is given."""
  rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
  extra = _chunk(b"sBIT", bytes([significant_bits])) if significant_bits is not None else b""
  return raw_png(values.shape[1], values.shape[0], rows, 16, 0, extra)


def saved(image: Image.Image, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, **kwargs)
  return buffer.getvalue()


def ct_stored(seed: int, shape=(64, 64)) -> np.ndarray:
  """Stored CT values (HU + 1024) with structure: a body disc, two lungs, noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:shape[0], :shape[1]] / np.array(shape).reshape(2, 1, 1)
  hu = np.where((y - 0.5) ** 2 + (x - 0.5) ** 2 < 0.16, 40.0, -1000.0)
  for cx in (0.35, 0.65):
    hu[((y - 0.5) / 0.25) ** 2 + ((x - cx) / 0.1) ** 2 < 1] = -820.0
  return np.clip(hu + rng.normal(0, 30, shape) + 1024, 0, 4095).astype(np.uint16)


def write_ct(path, seed: int = 0, shape=(64, 64), slope: float = 1.0, **kwargs) -> None:
  """A CT slice: HU = slope · stored − 1024, the lung window in the header."""
  kwargs.setdefault("window", (-600.0, 1500.0))
  predict.write_dicom(path, ct_stored(seed, shape), "CT", slope=slope, intercept=-1024.0, bits_stored=12, **kwargs)


def write_dx(path, seed: int = 0, **kwargs) -> None:
  """A DX X-ray: 12-bit values, a header window that maps them to grey levels."""
  predict.write_dicom(path, ct_stored(seed), "DX", window=(2048.0, 4096.0), bits_stored=12, **kwargs)


def patch_dicom(path, tag: tuple[int, int], value: bytes) -> None:
  """Overwrites one element's value in place (same length, space-padded), as a writer that does not
  validate would have stored it. Explicit VR little endian: tag, VR, 2-byte length, value."""
  data = bytearray(path.read_bytes())
  at = data.index(struct.pack("<HH", *tag), 132)  # past the preamble; UIDs are ASCII, tags are not
  length = struct.unpack("<H", data[at + 6:at + 8])[0]
  assert len(value) <= length, (tag, value, length)
  data[at + 8:at + 8 + length] = value.ljust(length)
  path.write_bytes(bytes(data))


def volume(seed: int = 0, dtype=np.int16) -> np.ndarray:
  stored = np.stack([ct_stored(seed + k, VOLUME_SHAPE[:2]) for k in range(VOLUME_SHAPE[2])], axis=-1)
  return (stored.astype(np.float32) - 1024).astype(dtype)


def write_nifti(path, data: np.ndarray, **header) -> None:
  image = nib.Nifti1Image(data, AFFINE)
  for key, value in header.items():
    image.header[key] = value
  nib.save(image, str(path))


def nifti_with_header(path, data: np.ndarray, **fields) -> None:
  """An uncompressed NIfTI whose header fields are set after the data was laid out (a lying header)."""
  write_nifti(path, data)
  raw = path.read_bytes()
  header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
  for key, value in fields.items():
    if isinstance(value, dict):  # {index: value} into an array field such as dim
      for index, item in value.items():
        header[key][index] = item
    else:
      header[key] = value
  path.write_bytes(header.binaryblock + raw[348:])


# --- the corpus ----------------------------------------------------------------------------------

def build_corpus(root) -> dict[str, Expect]:
  """Writes every case below `root`; {path relative to root: what predict must say about it}."""
  root.mkdir()
  cases: dict[str, Expect] = {}
  rng = np.random.default_rng(17)
  ct_pngs = phantom_ct_images(4)

  def put(name: str, data: bytes, expect: Expect) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    cases[name] = expect

  # Good files, also under awkward names.
  good_png = png_bytes(ct_pngs[0])
  put("good.png", good_png, good())
  put("good.jpg", saved(Image.fromarray(ct_pngs[1][..., 0]), format="JPEG", quality=90), good())
  write_ct(root / "good_ct.dcm")
  cases["good_ct.dcm"] = good()
  write_nifti(root / "good_volume.nii.gz", volume())
  cases["good_volume.nii.gz"] = good()
  put("name, with comma.png", png_bytes(ct_pngs[2]), good())
  put("spaced name ü 肺.png", png_bytes(ct_pngs[3]), good())
  put("sub/inner.png", good_png, good())
  put("sub_inner.png", good_png, good())  # its output name collides with sub/inner.png's
  os.symlink("good.png", root / "link_to_good.png")
  cases["link_to_good.png"] = good()
  put("Case.png", good_png, good())  # collides with case.png ignoring case
  put("case.png", good_png, good())
  # A volume and an image named like one of its slices' outputs (x.nii.gz slice k → x_slice<k>).
  write_nifti(root / "x.nii.gz", volume(seed=5))
  cases["x.nii.gz"] = good()
  put(f"x_slice{nifti.slice_indices(VOLUME_SHAPE[2])[1]}.png", png_bytes(ct_pngs[1]), good())
  # A DICOM series (one input for three files) and a series with one truncated slice.
  (root / "series").mkdir()
  (root / "series_broken").mkdir()
  uid, broken_uid = generate_uid(), generate_uid()
  for k in range(3):
    geometry = dict(ImagePositionPatient=[0.0, 0.0, -3.0 * k], ImageOrientationPatient=[1.0, 0, 0, 0, 1.0, 0])
    write_ct(root / "series" / f"IM{k}", seed=k, shape=(128, 128), SeriesInstanceUID=uid, **geometry)
    cases[f"series/IM{k}"] = good()
    write_ct(root / "series_broken" / f"IM{k}", seed=k, shape=(128, 128), SeriesInstanceUID=broken_uid, **geometry)
    cases[f"series_broken/IM{k}"] = refused("IM1: cannot decode DICOM pixel data", "a slice of", "series is refused")
  data = (root / "series_broken" / "IM1").read_bytes()
  (root / "series_broken" / "IM1").write_bytes(data[:len(data) - 2000])

  # Truncations at several offsets.
  for cut in (8, 20, 60, len(good_png) // 2, len(good_png) - 12):
    put(f"cut_png_{cut}.png", good_png[:cut], refused())
  put("cut_png_in_iend.png", good_png[:-6], refused("corrupt"))
  put("cut_png_no_iend_crc.png", good_png[:-4], ok())  # every pixel is there: a complete image
  jpeg = (root / "good.jpg").read_bytes()
  for cut in (2, 100, len(jpeg) // 2, len(jpeg) - 2):
    put(f"cut_jpeg_{cut}.jpg", jpeg[:cut], refused())
  dicom = (root / "good_ct.dcm").read_bytes()
  for cut in (100, 140, 400, len(dicom) // 2, len(dicom) - 1):
    put(f"cut_dicom_{cut}.dcm", dicom[:cut], refused())
  write_nifti(root / "plain.nii", volume())
  nii = (root / "plain.nii").read_bytes()
  (root / "plain.nii").unlink()
  for cut in (100, 400, len(nii) // 2):
    put(f"cut_nifti_{cut}.nii", nii[:cut], refused())
  gz = (root / "good_volume.nii.gz").read_bytes()
  for cut in (30, len(gz) // 2):
    put(f"cut_nifti_gz_{cut}.nii.gz", gz[:cut], refused())

  # Not images at all.
  for extension in (".png", ".jpg", ".dcm", ".nii", ".gif", ".tif"):
    put(f"random{extension}", rng.bytes(3000), refused())
  put("random_gzip.nii.gz", zlib.compress(rng.bytes(3000)), refused())  # zlib, not gzip: not NIfTI
  put("gzip_not_nifti.nii.gz", gzip.compress(rng.bytes(3000)), refused("gzip", "not a NIfTI"))
  put("text.png", b"not an image at all\n", refused("not an image"))
  put("empty.png", b"", refused("empty file"))

  # Lying headers.
  huge = bytearray(raw_png(40, 40))
  huge[16:24] = struct.pack(">II", 100_000, 100_000)
  huge[29:33] = struct.pack(">I", zlib.crc32(bytes(huge[12:29])))
  put("ihdr_huge.png", bytes(huge), refused("too many pixels"))
  lying = bytearray(raw_png(40, 40))
  lying[16:24] = struct.pack(">II", 4000, 4000)
  lying[29:33] = struct.pack(">I", zlib.crc32(bytes(lying[12:29])))
  put("ihdr_4000_data_40.png", bytes(lying), refused("truncated"))
  bad_crc = bytearray(raw_png(40, 40))
  bad_crc[29] ^= 0xFF
  put("ihdr_bad_crc.png", bytes(bad_crc), refused())
  nifti_with_header(root / "nifti_dims_too_big.nii", volume(), dim={1: 200})
  cases["nifti_dims_too_big.nii"] = refused("NIfTI volume")
  nifti_with_header(root / "nifti_dims_too_small.nii", volume(), dim={3: 6})
  cases["nifti_dims_too_small.nii"] = ok("bytes more than its header")
  nifti_with_header(root / "nifti_dim_negative.nii", volume(), dim={1: -5})
  cases["nifti_dim_negative.nii"] = refused("dimension below 1")
  nifti_with_header(root / "nifti_4d.nii", volume(), dim={0: 4, 3: 4, 4: 2})
  cases["nifti_4d.nii"] = refused("expected one 3-D volume")
  nifti_with_header(root / "nifti_pixdim_nan.nii", volume(), pixdim={1: np.nan}, qform_code=0, sform_code=0)
  cases["nifti_pixdim_nan.nii"] = refused("NIfTI")
  nifti_with_header(root / "nifti_datatype_bad.nii", volume(), datatype=1234)
  cases["nifti_datatype_bad.nii"] = refused("NIfTI header")
  nifti_with_header(root / "nifti_slope_nan.nii", volume(), scl_slope=np.nan, scl_inter=0.0)
  cases["nifti_slope_nan.nii"] = ok()  # nibabel's own "no scaling" (it writes NaN itself)
  nifti_with_header(root / "nifti_inter_nan.nii", volume(), scl_slope=1.0, scl_inter=np.nan)
  cases["nifti_inter_nan.nii"] = refused("intercept")
  nifti_with_header(root / "nifti_slope_overflow.nii", volume(), scl_slope=1e38, scl_inter=0.0)
  cases["nifti_slope_overflow.nii"] = ok("not finite", "+Inf", "−Inf")
  nifti_with_header(root / "nifti_offset_past_end.nii", volume(), vox_offset=10**7)
  cases["nifti_offset_past_end.nii"] = refused("NIfTI volume")
  nifti_with_header(root / "nifti_huge_dims.nii", volume(), dim={1: 1024, 2: 1024, 3: 200})
  cases["nifti_huge_dims.nii"] = refused("config.max_voxels")
  write_ct(root / "dicom_rows_lie.dcm")
  patch_dicom(root / "dicom_rows_lie.dcm", (0x0028, 0x0010), struct.pack("<H", 128))
  cases["dicom_rows_lie.dcm"] = refused("pixel data")
  write_ct(root / "dicom_6000x6000.dcm")
  patch_dicom(root / "dicom_6000x6000.dcm", (0x0028, 0x0010), struct.pack("<H", 6000))
  patch_dicom(root / "dicom_6000x6000.dcm", (0x0028, 0x0011), struct.pack("<H", 6000))
  cases["dicom_6000x6000.dcm"] = refused("config.max_pixels")
  write_ct(root / "dicom_frames_lie.dcm", NumberOfFrames=3)
  cases["dicom_frames_lie.dcm"] = refused("pixel data")
  write_ct(root / "dicom_frames_abc.dcm", NumberOfFrames=1)
  patch_dicom(root / "dicom_frames_abc.dcm", (0x0028, 0x0008), b"ab")
  cases["dicom_frames_abc.dcm"] = refused("NumberOfFrames", "not a number")
  write_ct(root / "dicom_no_pixels.dcm")
  ds = pydicom.dcmread(root / "dicom_no_pixels.dcm")
  del ds.PixelData
  ds.save_as(root / "dicom_no_pixels.dcm")
  cases["dicom_no_pixels.dcm"] = refused("no pixel data")
  write_ct(root / "dicom_ybr.dcm", photometric="YBR_FULL")
  cases["dicom_ybr.dcm"] = refused()

  # Header numbers that are not numbers (the reported crash), NaN, 0, infinite.
  for name, writer, tag, value, expect in [
      ("dx_window_center_abc.dcm", write_dx, (0x0028, 0x1050), b"abc", refused("WindowCenter", "not a number")),
      ("dx_window_center_nan.dcm", write_dx, (0x0028, 0x1050), b"NaN", refused("WindowCenter", "not a finite")),
      ("dx_window_width_inf.dcm", write_dx, (0x0028, 0x1051), b"inf", refused("WindowWidth", "not a finite")),
      ("dx_window_width_zero.dcm", write_dx, (0x0028, 0x1051), b"0", refused("window")),
      ("dx_voi_function_bogus.dcm", write_dx, (0x0028, 0x1056), b"BOGUS", refused("window")),
      ("ct_window_center_abc.dcm", write_ct, (0x0028, 0x1050), b"abc", ok("window is unreadable")),
      ("ct_slope_abc.dcm", write_ct, (0x0028, 0x1053), b"x", refused("RescaleSlope", "not a number")),
      ("ct_slope_nan.dcm", write_ct, (0x0028, 0x1053), b"NaN", refused("RescaleSlope", "not a finite")),
      ("ct_slope_zero.dcm", write_ct, (0x0028, 0x1053), b"0", refused("RescaleSlope is 0")),
      ("ct_intercept_inf.dcm", write_ct, (0x0028, 0x1052), b"-inf", refused("RescaleIntercept")),
      ("ct_intercept_text.dcm", write_ct, (0x0028, 0x1052), b"low", refused("RescaleIntercept", "not a number")),
  ]:
    extra = {"VOILUTFunction": "LINEAR"} if "function" in name else {"slope": 1.25} if "slope" in name else {}
    writer(root / name, **extra)
    patch_dicom(root / name, tag, value)
    cases[name] = expect

  # Non-finite and constant values.
  nan_volume = volume(dtype=np.float32)
  nan_volume[:10, :10, :] = np.nan
  nan_volume[20, 20, :] = np.inf
  nan_volume[30, 30, :] = -np.inf
  write_nifti(root / "volume_nan_inf.nii.gz", nan_volume)
  cases["volume_nan_inf.nii.gz"] = ok("not finite", "NaN", "+Inf", "−Inf")
  write_nifti(root / "volume_all_nan.nii", np.full(VOLUME_SHAPE, np.nan, np.float32))
  cases["volume_all_nan.nii"] = refused("no finite")
  write_nifti(root / "volume_zeros.nii", np.zeros(VOLUME_SHAPE, np.int16))
  cases["volume_zeros.nii"] = ok("constant image")
  float_nan = rng.random((48, 48)).astype(np.float32) * 1000
  float_nan[:5] = np.nan
  put("float_nan.tif", saved(Image.fromarray(float_nan), format="TIFF"), ok("not finite", "min–max"))
  put("constant.png", png_bytes(np.full((48, 48, 1), 128, np.uint8)), ok("constant image"))
  predict.write_dicom(root / "constant_ct.dcm", np.full((64, 64), 1000, np.uint16), "CT", intercept=-1024.0)
  cases["constant_ct.dcm"] = ok("constant image")

  # Bit depths.
  twelve = (rng.random((48, 48)) * 4095).astype(np.uint16)
  put("png16_12bit.png", png16(twelve), ok("12-bit", "observed value range"))
  put("png16_12bit_sbit.png", png16(twelve, 12), ok("12-bit", "sBIT 12"))
  put("png16_sbit_lies.png", png16(twelve, 8), ok("declares 8 significant bits", "ignored"))
  put("png16_10bit.png", png16((rng.random((48, 48)) * 1023).astype(np.uint16)), ok("10-bit"))
  put("png16_full.png", png16((rng.random((48, 48)) * 65535).astype(np.uint16)), ok())
  put("bilevel.png", saved(Image.fromarray(rng.random((48, 48)) > 0.5), format="PNG"), ok("1-bit"))
  put("int32_negative.tif", saved(Image.fromarray((rng.random((48, 48)) * 4000 - 2000).astype(np.int32)),
                                  format="TIFF"), ok("min–max"))

  # Alpha, frames, orientation, colour modes.
  rgba = np.dstack([np.repeat(ct_pngs[0], 3, axis=-1), np.full((48, 48), 255, np.uint8)])
  put("rgba_opaque.png", saved(Image.fromarray(rgba), format="PNG"), ok())
  rgba[:10, :, 3] = 0
  put("rgba_transparent.png", saved(Image.fromarray(rgba), format="PNG"), ok("alpha"))
  put("la_transparent.png", saved(Image.fromarray(rgba[..., [0, 3]], "LA"), format="PNG"), ok("alpha"))
  palette = Image.fromarray(np.where(np.arange(48)[:, None] < 5, 0, ct_pngs[0][..., 0]).astype(np.uint8), "P")
  palette.putpalette([v for i in range(256) for v in (i, i, i)])
  put("palette_transparent.png", saved(palette, format="PNG", transparency=0), ok("alpha"))
  frames = [Image.fromarray(image[..., 0]) for image in ct_pngs[:3]]
  put("three_frames.gif", saved(frames[0], format="GIF", save_all=True, append_images=frames[1:]),
      ok("3 frames", "first frame"))
  put("three_pages.tif", saved(frames[0], format="TIFF", save_all=True, append_images=frames[1:]),
      ok("3 frames", "first frame"))
  exif = Image.Exif()
  exif[0x0112] = 6
  put("exif_rotated.jpg", saved(frames[0], format="JPEG", exif=exif.tobytes()), ok("EXIF Orientation 6"))
  put("cmyk.jpg", saved(Image.fromarray(ct_pngs[0][..., 0]).convert("CMYK"), format="JPEG"), ok("CMYK"))
  stored = np.stack([ct_stored(k) for k in range(3)])
  predict.write_dicom(root / "multiframe_ct.dcm", stored[0], "CT", intercept=-1024.0, NumberOfFrames=3)
  ds = pydicom.dcmread(root / "multiframe_ct.dcm")
  ds.PixelData = stored.tobytes()
  ds.save_as(root / "multiframe_ct.dcm")
  cases["multiframe_ct.dcm"] = ok("multi-frame DICOM (3 frames)", "middle frame 1")

  # Sizes and aspect ratios.
  put("one_pixel.png", raw_png(1, 1), refused("1×1 px"))
  put("tiny_12x12.png", png_bytes(ct_pngs[0][:12, :12]), refused("12×12 px"))
  put("strip_1x4000.png", raw_png(4000, 1, bytes(1) + rng.bytes(4000)), refused("1×4000 px"))
  strip = np.tile(ct_pngs[0], (1, 84, 1))[:, :4000]
  put("strip_48x4000.png", png_bytes(strip), ok("aspect ratio"))
  put("wide_40x8200.png", raw_png(8200, 40), refused("40×8200 px", "between 32 and 8192"))
  put("zeros_8000x8000.png", raw_png(8000, 8000), refused("8000×8000", "config.max_pixels"))

  # Entries that are not regular files, and names that are not inputs.
  os.mkfifo(root / "pipe.png")
  cases["pipe.png"] = refused("FIFO", "not opened")
  os.mkfifo(root / "pipe_without_extension")
  cases["pipe_without_extension"] = refused("FIFO")
  os.symlink("no_such_target.png", root / "broken_link.png")
  cases["broken_link.png"] = refused("broken symbolic link")
  os.symlink("loop_b.png", root / "loop_a.png")
  os.symlink("loop_a.png", root / "loop_b.png")
  cases["loop_a.png"] = cases["loop_b.png"] = refused("cannot look it up")
  os.symlink("sub", root / "link_to_folder")
  cases["link_to_folder"] = skipped("symbolic link to the folder")
  cases["sub"] = cases["series"] = cases["series_broken"] = skipped("folder")
  (root / "empty_folder").mkdir()
  cases["empty_folder"] = skipped("folder")
  put(".hidden.png", good_png, skipped("hidden"))
  put("readme.txt", b"notes\n", skipped("not an input by its name"))
  if len(str(root / "socket.png")) < 100:  # AF_UNIX path limit
    with socket.socket(socket.AF_UNIX) as server:
      server.bind(str(root / "socket.png"))
    cases["socket.png"] = refused("socket")
  # root reads a chmod 000 file anyway: the case is only meaningful for other users.
  if os.geteuid() != 0:
    put("unreadable.png", good_png, refused("Permission denied"))
    os.chmod(root / "unreadable.png", 0)
  return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus") / "inputs"
  cases = build_corpus(root)
  yield root, cases
  for name in cases:  # pytest's clean-up cannot remove what it cannot read
    if not os.path.islink(root / name) and os.path.exists(root / name):
      os.chmod(root / name, 0o700 if (root / name).is_dir() else 0o600)


def _listed(root) -> set[str]:
  """Every entry below `root`, links not followed, nothing below hidden entries."""
  found = set()
  for folder, folders, files in os.walk(root):
    for name in folders + files:
      found.add(os.path.relpath(os.path.join(folder, name), root))
    folders[:] = [f for f in folders if not f.startswith(".")]
  return found


def _output_files(records: list[dict]) -> list[str]:
  files = []
  for record in records:
    files.append(record["output"])
    for image in record["images"]:
      files += [image[k] for k in ("gradcam_png", "prepnet_png") if k in image]
  return files


# --- tests ---------------------------------------------------------------------------------------

def test_predict_survives_the_corpus_and_says_what_happened_to_every_entry(ct_model, corpus, tmp_path, capsys):
  model_dir, _, _ = ct_model
  root, cases = corpus
  assert set(cases) == _listed(root), "the corpus lists every entry it wrote"

  summary = predict.run(predict_config(model_dir, str(root)), str(tmp_path / "run"))

  entries = {os.path.relpath(e["file"], root): e for e in summary["entries"]}
  assert set(entries) == set(cases), "summary.json lists every entry of the folder, nothing else"
  for name, expect in cases.items():
    entry = entries[name]
    assert entry["status"] == expect.status, (name, entry)
    if expect.status == "ok":
      warnings = " | ".join(entry["warnings"])
      assert all(text in warnings for text in expect.texts), (name, entry["warnings"])
      assert bool(entry["warnings"]) == bool(expect.texts), (name, entry["warnings"])
    else:
      assert entry["reason"] and all(text in entry["reason"] for text in expect.texts), (name, entry["reason"])
      assert "unexpected" not in entry["reason"], (name, entry["reason"])  # every failure is a refusal
  assert entries["link_to_good.png"]["link_to"] == "good.png"
  assert {entries[f"series/IM{k}"]["series"] for k in range(3)} == {entries["series/IM0"]["series"]}

  # Every output file belongs to one input; the files on disk are exactly the records' files.
  out = tmp_path / "run" / "predictions"
  records = []
  for entry in summary["entries"]:
    if entry["status"] == "ok" and entry["output"] not in {r["output"] for r in records}:
      records.append({**json.loads((out / entry["output"]).read_text()), "output": entry["output"]})
  files = _output_files(records)
  assert len(files) == len(set(f.casefold() for f in files))
  assert sorted(files + ["predictions.csv", "summary.json"]) == sorted(os.listdir(out))
  slice_png = f"x_slice{nifti.slice_indices(VOLUME_SHAPE[2])[1]}.png"
  stems = {entries[name]["output"] for name in ("x.nii.gz", slice_png, "sub/inner.png", "sub_inner.png",
                                                 "Case.png", "case.png")}
  assert len(stems) == 6

  # The good files get the predictions they get alone, named through an inputs file (commas).
  good = [name for name, expect in cases.items() if expect.good]
  listed = [str(root / name) for name in good if not name.startswith("series/")] + [str(root / "series")]
  inputs_file = tmp_path / "good_inputs.txt"
  inputs_file.write_text("\n".join(listed) + "\n", encoding="utf-8")
  alone = predict.run(predict_config(model_dir, "", inputs_file=str(inputs_file)), str(tmp_path / "alone"))
  assert alone["n_failed"] == 0 and alone["n_ok"] == len(listed)
  alone_entries = {os.path.relpath(e["file"], root): e for e in alone["entries"]}
  for name in good:
    together = json.loads((out / entries[name]["output"]).read_text())
    by_itself = json.loads((tmp_path / "alone" / "predictions" / alone_entries[name]["output"]).read_text())
    assert [i["probabilities"] for i in together["images"]] == [i["probabilities"] for i in by_itself["images"]]

  counts = collections.Counter(e.status for e in cases.values())
  warned = sum(1 for e in cases.values() if e.status == "ok" and e.texts)
  folders = {"sub", "series", "series_broken", "empty_folder"}
  bad = [name for name, e in cases.items() if not e.good and name not in folders]
  assert (summary["n_skipped"], summary["n_warned"]) == (counts["skipped"], warned)
  assert len(bad) >= 40
  with capsys.disabled():
    print(f"\n[robustness corpus] {len(cases)} folder entries: {len(good)} good files, {len(bad)} bad cases, "
          f"{len(folders)} folders; handled (predicted) {counts['ok']} of which warned {warned}, "
          f"refused {counts['failed']}, skipped {counts['skipped']}")


def test_the_reading_rules_change_values_as_documented(tmp_path):
  rng = np.random.default_rng(3)
  twelve = (rng.random((40, 40)) * 4095).astype(np.uint16)
  for name, data, bits in [("observed.png", png16(twelve), 12), ("declared.png", png16(twelve, 12), 12),
                           ("declared_14.png", png16(twelve, 14), 14), ("lying.png", png16(twelve, 8), 12)]:
    (tmp_path / name).write_bytes(data)
    loaded = readers.read_input(str(tmp_path / name), OPTIONS)
    np.testing.assert_array_equal(loaded.images[0].image[..., 0],
                                  np.rint(twelve * (255 / (2**bits - 1))).astype(np.uint8), err_msg=name)
  full = (rng.random((40, 40)) * 65535).astype(np.uint16)
  (tmp_path / "full.png").write_bytes(png16(full))
  loaded = readers.read_input(str(tmp_path / "full.png"), OPTIONS)
  np.testing.assert_array_equal(loaded.images[0].image[..., 0], np.rint(full / 257).astype(np.uint8))
  assert loaded.warnings == []

  # Non-finite voxels: NaN and −Inf → the lowest finite value, +Inf → the highest.
  data = volume(dtype=np.float32)
  data[:, :, :] = np.where(rng.random(VOLUME_SHAPE) < 0.01, np.nan, data)
  data[0, 0, 0], data[1, 1, 1] = np.inf, -np.inf
  low, high = data[np.isfinite(data)].min(), data[np.isfinite(data)].max()
  write_nifti(tmp_path / "nan.nii", data)
  replaced = np.where(np.isnan(data), low, np.clip(data, low, high))
  loaded = readers.read_input(str(tmp_path / "nan.nii"), OPTIONS)
  want = nifti.mosmed_slices(replaced)
  for got, expected in zip(loaded.images, want):
    np.testing.assert_array_equal(got.image[..., 0], expected)
  assert any(f"NaN and −Inf set to the lowest finite value {low:g}" in w for w in loaded.warnings)

  # Alpha is dropped, colour kept; the first frame of a GIF is read.
  rgba = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(readers.read_input(str(tmp_path / "rgba.png"), OPTIONS).images[0].image,
                                rgba[..., :3])
  frames = [Image.fromarray(np.full((40, 40), v, np.uint8)) for v in (10, 100, 200)]
  frames[0].save(tmp_path / "frames.gif", save_all=True, append_images=frames[1:])
  loaded = readers.read_input(str(tmp_path / "frames.gif"), OPTIONS)
  assert np.unique(loaded.images[0].image).tolist() == [10]


def test_errors_name_the_file_and_the_limits_are_one_set(tmp_path):
  error = readers.InputError("scan.dcm", "DICOM RescaleSlope = 'x' is not a number")
  assert str(error) == "scan.dcm: DICOM RescaleSlope = 'x' is not a number" and error.path == "scan.dcm"
  assert str(pickle.loads(pickle.dumps(error))) == str(error)
  config = predict_config("", "")
  assert (config.min_side, config.max_side, config.max_pixels, config.max_voxels) == (
      readers.MIN_SIDE, readers.MAX_SIDE, readers.MAX_PIXELS, readers.MAX_VOXELS)
  options = readers.ReadOptions()
  assert (options.max_pixels, options.max_voxels) == (readers.MAX_PIXELS, readers.MAX_VOXELS)
  # The pixel limit is checked on the header: an 8000² PNG is refused without decoding 64·10⁶ px.
  (tmp_path / "big.png").write_bytes(raw_png(8000, 8000))
  with pytest.raises(readers.InputError, match="8000×8000 = 64000000 px"):
    readers.read_input(str(tmp_path / "big.png"), options)
  os.mkfifo(tmp_path / "fifo.png")  # refused without being opened: this returns, it does not block
  with pytest.raises(readers.InputError, match="FIFO"):
    readers.read_input(str(tmp_path / "fifo.png"), options)
