"""Attribute datasets: group splits, normalisation, the digits default, the CelebA reader."""

from pathlib import Path

import numpy as np
import pytest
import torch
from cases import SHARED_CELEBA
from PIL import Image

from perturbative.data import (
    CelebAFormatError,
    load_celeba,
)
from perturbative.data.celeba import load_square_images

NAMES = ["Smiling", "Male", "Young"]


def write_celeba(
    root: Path,
    rows: list[tuple[str, list[int]]],
    partitions: list[int] | None = None,
    identities: list[int] | None = None,
    size: tuple[int, int] = (6, 10),
    skip_images: tuple[str, ...] = (),
    count: int | None = None,
) -> Path:
    """A CelebA-layout folder with CRLF files like the official ones; image i is grey level i."""
    (root / "img_align_celeba").mkdir(parents=True)
    attr = [str(len(rows) if count is None else count), " ".join(NAMES) + " "]
    attr += [name + " " + " ".join(f"{v:2d}" for v in values) for name, values in rows]
    (root / "list_attr_celeba.txt").write_bytes("\r\n".join(attr + [""]).encode())
    partitions = partitions if partitions is not None else [0] * len(rows)
    lines = [f"{name} {p}" for (name, _), p in zip(rows, partitions, strict=True)]
    (root / "list_eval_partition.txt").write_bytes("\r\n".join(lines + [""]).encode())
    if identities is not None:
        lines = [f"{name} {i}" for (name, _), i in zip(rows, identities, strict=True)]
        (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    for index, (name, _) in enumerate(rows):
        if name not in skip_images:
            pixels = np.full((size[1], size[0], 3), 10 * index, dtype=np.uint8)
            Image.fromarray(pixels).save(root / "img_align_celeba" / name)
    return root


def rows_of(n: int) -> list[tuple[str, list[int]]]:
    return [(f"{i + 1:06d}.png", [1 if (i >> k) & 1 else -1 for k in range(3)]) for i in range(n)]


def test_celeba_reader_targets_and_official_split(tmp_path):
    root = write_celeba(tmp_path / "celeba", rows_of(6), partitions=[0, 0, 0, 1, 2, 1])
    data = load_celeba(tmp_path, image_size=4)  # the parent works too (torchvision's layout)
    assert data.attribute_names == NAMES and data.name == "celeba"
    assert data.file_names == [f"{i + 1:06d}.png" for i in range(6)]
    expected = torch.tensor([[(i >> k) & 1 for k in range(3)] for i in range(6)]).float()
    assert torch.equal(data.targets, expected)
    assert data.train_indices.tolist() == [0, 1, 2] and data.heldout_indices.tolist() == [3, 5]
    assert data.images.shape == (6, 3, 4, 4) and data.groups is None
    assert torch.equal(data.images[4], torch.full((3, 4, 4), 40, dtype=torch.uint8))
    assert load_celeba(root, image_size=4, limit=2).targets.shape == (2, 3)


def test_celeba_all_train_is_split_by_identity(tmp_path):
    identities = [7, 7, 3, 3, 3, 9, 9, 1, 1, 5]
    root = write_celeba(tmp_path, rows_of(10), identities=identities)
    data = load_celeba(root, image_size=4, heldout_fraction=0.3, seed=0)
    ids = data.groups
    assert ids.tolist() == identities
    assert not set(ids[data.train_indices].tolist()) & set(ids[data.heldout_indices].tolist())
    assert len(data.heldout_indices) >= 3 and len(data.train_indices) >= 1


def test_centre_crop_then_resize(tmp_path):
    # 6 wide, 10 high: the centre square is rows 2..7; mark it white, the rest black
    pixels = np.zeros((10, 6, 3), dtype=np.uint8)
    pixels[2:8] = 255
    path = tmp_path / "tall.png"
    Image.fromarray(pixels).save(path)
    assert torch.equal(
        load_square_images([path], 6), torch.full((1, 3, 6, 6), 255, dtype=torch.uint8)
    )
    assert torch.equal(
        load_square_images([path], 3), torch.full((1, 3, 3, 3), 255, dtype=torch.uint8)
    )


def test_celeba_errors_name_file_and_line(tmp_path):
    rows = rows_of(4)
    bad_value = write_celeba(tmp_path / "a", [*rows[:2], (rows[2][0], [1, 0, 1]), rows[3]])
    with pytest.raises(CelebAFormatError, match=r"list_attr_celeba.txt, line 5: .*Male is '0'"):
        load_celeba(bad_value)
    short = write_celeba(tmp_path / "b", [*rows[:3], (rows[3][0], [1, 1])])
    with pytest.raises(CelebAFormatError, match=r"line 6: expected a file name and 3 values"):
        load_celeba(short)
    count = write_celeba(tmp_path / "c", rows, count=5)
    with pytest.raises(CelebAFormatError, match="line 1 declares 5 rows but the file has 4"):
        load_celeba(count)
    missing = write_celeba(tmp_path / "d", rows, skip_images=("000003.png",))
    with pytest.raises(FileNotFoundError, match=r"000003.png \(line 5\)"):
        load_celeba(missing)
    no_partition = write_celeba(tmp_path / "e", rows)
    (no_partition / "list_eval_partition.txt").write_text("000001.png 0\n")
    with pytest.raises(CelebAFormatError, match="no row for 3 image"):
        load_celeba(no_partition)
    with pytest.raises(FileNotFoundError, match="no list_attr_celeba.txt"):
        load_celeba(tmp_path / "nowhere")


@pytest.mark.skipif(
    not SHARED_CELEBA.is_dir(), reason=f"CelebA subset not found at {SHARED_CELEBA}"
)
def test_shared_celeba_subset():
    data = load_celeba(SHARED_CELEBA, image_size=64, limit=1500)
    assert data.images.shape == (1500, 3, 64, 64) and data.num_attributes == 40
    assert data.attribute_names[0] == "5_o_Clock_Shadow" and data.attribute_names[-1] == "Young"
    # row 000001.jpg of the official file, -1 -> 0
    first = "-1 1 1 -1 -1 -1 -1 -1 -1 -1 -1 1 -1 -1 -1 -1 -1 -1 1 1 -1 1 -1 -1 1 -1 -1 1 -1 -1"
    first += " -1 1 1 -1 1 -1 1 -1 -1 1"
    expected = torch.tensor([(int(v) + 1) // 2 for v in first.split()], dtype=torch.float32)
    assert torch.equal(data.targets[0], expected)
    # all train partition: held out by identity, about 10 %
    ids = data.groups
    assert not set(ids[data.train_indices].tolist()) & set(ids[data.heldout_indices].tolist())
    assert 150 <= len(data.heldout_indices) <= 170
