"""The NIfTI checks beneath ITK (transseg.nifti): what ITK's reader would zero-fill or hide is refused."""
import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from transseg.io import read_image
from transseg.nifti import check_nifti, parse_header
from transseg.paths import TranssegError


@pytest.fixture
def image(tmp_path):
    array = np.random.default_rng(0).normal(0, 100, (12, 20, 24)).astype(np.float32)
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=True)
    return path, array


def test_itk_zero_fills_a_truncated_file_and_we_refuse_it(image):
    path, array = image
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])
    filled = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))          # why the check exists
    assert filled.shape == array.shape and (filled == 0).mean() > 0.5
    with pytest.raises(TranssegError, match=rf"^{path}: truncated: the gzip stream stops after about \d+ of the "
                                            rf"{12 * 20 * 24 * 4 + 352} bytes"):
        read_image(path)


def test_cut_inside_the_header_is_an_unreadable_file(image):
    path, _ = image
    raw = gzip.decompress(path.read_bytes())[:200]
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(TranssegError, match=rf"^{path}: cannot be read as an image"):
        read_image(path)


def test_several_gzip_members_and_trailing_bytes_are_fine(image):
    """bgzip-style files: the trailer holds only the last member's length, so the stream is read to decide."""
    path, array = image
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    assert np.array_equal(read_image(path)[0][0], array)
    path.write_bytes(gzip.compress(raw + b"\0" * 16))                  # bytes after the voxels: ignored by ITK
    check_nifti(path)
    check_nifti(path, thorough=True)


def test_thorough_check_finds_crc_damage_and_stored_nan(image):
    path, array = image
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01                                                     # the CRC-32 of the trailer
    path.write_bytes(bytes(data))
    check_nifti(path)                                                    # the quick check reads no data
    with pytest.raises(TranssegError, match=rf"^{path}: damaged gzip data \(CRC check failed"):
        check_nifti(path, thorough=True)
    array[1, 2, 3], array[4, 5, 6], array[7, 8, 9] = np.nan, np.inf, -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=True)
    assert np.isfinite(read_image(path)[0]).all()                        # ITK reads them as 0
    with pytest.raises(TranssegError, match=rf"^{path}: 3 NaN/Inf voxel\(s\) stored"):
        read_image(path, thorough=True)


def test_uncompressed_file_size_is_checked(tmp_path):
    path = tmp_path / "image.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.int16)), str(path))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(TranssegError, match=rf"^{path}: truncated: holds {352 + 239} of the {352 + 240} bytes"):
        read_image(path)


def test_nan_and_inf_in_other_formats_are_counted(tmp_path):
    array = np.ones((4, 5, 6), np.float32)
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = -np.inf
    path = tmp_path / "image.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(TranssegError, match=rf"^{path}: 4 NaN/Inf voxel\(s\) \(3 NaN, 1 Inf\)"):
        read_image(path)


def test_header_layouts_nifti1_both_byte_orders_and_nifti2():
    def nifti1(order):
        header = bytearray(348)
        header[0:4] = struct.pack(order + "i", 348)
        header[40:56] = struct.pack(order + "8h", 3, 10, 20, 30, 1, 1, 1, 1)
        header[70:74] = struct.pack(order + "2h", 16, 32)               # float32
        header[108:112] = struct.pack(order + "f", 352.0)
        return bytes(header)
    for order in "<>":
        layout = parse_header(nifti1(order))
        assert (layout.data_offset, layout.data_bytes) == (352, 6000 * 4)
        assert layout.float_type == np.dtype(order + "f4")
    header = bytearray(540)
    header[0:4] = struct.pack("<i", 540)
    header[12:16] = struct.pack("<2h", 4, 16)                            # int16
    header[16:80] = struct.pack("<8q", 4, 10, 20, 30, 2, 1, 1, 1)
    header[168:176] = struct.pack("<q", 544)
    layout = parse_header(bytes(header))
    assert (layout.data_offset, layout.data_bytes, layout.float_type) == (544, 12000 * 2, None)
    assert parse_header(b"NRRD0004\n" + bytes(400)) is None
