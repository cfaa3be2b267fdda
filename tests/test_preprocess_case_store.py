"""CASE.npz: a plain numpy archive, memory-mappable member by member, and K-slice windows cut from it."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from transseg.paths import TranssegError
from transseg.preprocessing.case_store import (_member_layout, case_is_current, load_case, open_member, read_window,
                                               save_case, window_indices, write_npz)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 11, 6, 5)).astype(np.float16)
    seg = rng.integers(0, 4, (11, 6, 5)).astype(np.uint8)
    return data, seg


def test_archive_is_plain_npz_with_aligned_uncompressed_members(tmp_path, arrays):
    data, seg = arrays
    extra = np.arange(7, dtype=np.int64)
    path = tmp_path / "case.npz"
    write_npz(path, {"data": data, "seg": seg, "extra": extra})
    with np.load(path, allow_pickle=False) as archive:          # numpy reads it as any .npz (CRC checked)
        assert np.array_equal(archive["data"], data) and np.array_equal(archive["seg"], seg)
        assert np.array_equal(archive["extra"], extra)
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    for name, array in (("data", data), ("seg", seg), ("extra", extra)):
        offset, shape, dtype = _member_layout(path, name)
        assert offset % 64 == 0 and shape == array.shape and dtype == array.dtype
        mapped = open_member(path, name)
        assert isinstance(mapped, np.memmap) and np.array_equal(mapped, array)
    payload = data.nbytes + seg.nbytes + extra.nbytes
    assert path.stat().st_size <= payload + 3 * (64 + 128) + 400    # headers only: no copies, no padding


def test_windows_from_memory_map_equal_slicing_the_loaded_array(tmp_path, arrays):
    data, seg = arrays
    save_case(tmp_path, "case", data, seg, {"shape_after_resampling": list(seg.shape), "plans_hash": "h"})
    mapped_data, mapped_seg, _ = load_case(tmp_path, "case")
    loaded_data, loaded_seg, _ = load_case(tmp_path, "case", mmap=False)
    assert not isinstance(loaded_data, np.memmap) and np.array_equal(loaded_data, data)

    window = read_window(mapped_data, centre=5, slices=5, stride=1, axis=1)
    assert np.shares_memory(window, mapped_data)                    # a view: nothing else is read
    assert np.array_equal(window, loaded_data[:, 3:8])
    assert np.array_equal(read_window(mapped_data, 5, 5, stride=2, axis=1), loaded_data[:, 1:10:2])
    assert np.array_equal(read_window(mapped_seg, 4, 3, axis=0), loaded_seg[3:6])

    clamped = read_window(mapped_data, centre=1, slices=5, stride=1, axis=1)
    assert np.array_equal(clamped, loaded_data[:, [0, 0, 1, 2, 3]]) and not isinstance(clamped, np.memmap)
    clamped = read_window(mapped_data, centre=10, slices=5, stride=2, axis=1)
    assert np.array_equal(clamped, loaded_data[:, [6, 8, 10, 10, 10]])
    padded = read_window(mapped_seg, centre=0, slices=5, axis=0, mode="constant", pad_value=0)
    assert np.array_equal(padded[2:], loaded_seg[0:3]) and not padded[:2].any()

    assert window_indices(11, 0, 5, 1).tolist() == [0, 0, 0, 1, 2]
    assert window_indices(11, 0, 5, 1, mode="constant").tolist() == [-2, -1, 0, 1, 2]
    with pytest.raises(IndexError):
        read_window(mapped_seg, centre=11)


def test_damaged_or_compressed_archives_are_named_and_not_current(tmp_path, arrays):
    data, seg = arrays
    properties = {"shape_after_resampling": list(seg.shape), "plans_hash": "abc"}
    save_case(tmp_path, "case", data, seg, properties)
    assert case_is_current(tmp_path, "case", "abc") and not case_is_current(tmp_path, "case", "other")

    path = tmp_path / "case.npz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert not case_is_current(tmp_path, "case", "abc")
    with pytest.raises(TranssegError, match="case.npz"):
        open_member(path, "seg")

    np.savez_compressed(path, data=data, seg=seg)
    with pytest.raises(TranssegError, match="compressed and cannot be memory-mapped"):
        open_member(path, "data")
    write_npz(path, {"data": data})
    with pytest.raises(TranssegError, match="has no array 'nothing'"):
        open_member(path, "nothing")


def test_json_is_the_completion_marker(tmp_path, arrays):
    data, seg = arrays
    save_case(tmp_path, "case", data, seg, {"shape_after_resampling": list(seg.shape), "plans_hash": "h"})
    (tmp_path / "case.json").unlink()                 # as if killed between the archive and its JSON
    assert not case_is_current(tmp_path, "case", "h")
    save_case(tmp_path, "case", data, None, {"shape_after_resampling": list(seg.shape), "plans_hash": "h",
                                             "has_seg": False})
    assert case_is_current(tmp_path, "case", "h")
    assert load_case(tmp_path, "case")[1] is None
