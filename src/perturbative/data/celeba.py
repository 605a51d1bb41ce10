"""CelebA from a local folder in the original on-disk layout, read without torchvision.

Expected files under ``root`` (or under ``root/celeba``, torchvision's layout)::

    img_align_celeba/000001.jpg ...
    list_attr_celeba.txt      line 1: row count; line 2: the 40 attribute names;
                              then rows "<file> <40 x 1/-1>" separated by runs of spaces
    list_eval_partition.txt   rows "<file> <0|1|2>"  (0 train, 1 valid, 2 test)
    identity_CelebA.txt       optional, rows "<file> <identity id>"

Line endings may be CRLF (as in the official files) or LF. Attributes become 0/1 targets
(``-1 -> 0``). torchvision's ``CelebA`` class is not used: it checks the md5 of the *full*
annotation files and so refuses subsets.

Splits: training is partition 0 and held-out is partition 1 (valid), or partition 2 (test) when
there is no valid partition. When either side would be empty (a subset that is all train, for
instance), the images are split deterministically with :func:`group_heldout_split`, keeping each
identity on one side when ``identity_CelebA.txt`` is present (each image is its own group
otherwise).

Images are centre-cropped to a square (side ``min(H, W)``) and resized to
``image_size x image_size`` with antialiased bilinear interpolation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from perturbative._core.errors import InputError
from perturbative._core.extras import require
from perturbative.data.dataset import AttributeDataset, group_heldout_split

ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_FOLDER = "img_align_celeba"


class CelebAFormatError(InputError):
    """A CelebA annotation file does not have the documented format."""


def find_celeba_root(root: str | os.PathLike) -> Path:
    """The folder holding ``list_attr_celeba.txt``: ``root`` itself or ``root/celeba``.

    Raises:
        FileNotFoundError: if neither holds the attribute file.
    """
    root = Path(root).expanduser()
    for candidate in (root, root / "celeba"):
        if (candidate / ATTRIBUTE_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no {ATTRIBUTE_FILE} in {root} or {root / 'celeba'}: pass the folder that holds "
        f"{IMAGE_FOLDER}/, {ATTRIBUTE_FILE} and {PARTITION_FILE}"
    )


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise CelebAFormatError(f"{path} is not a UTF-8 text file ({error})") from error


def read_attributes(path: Path, limit: int | None = None) -> tuple[list[str], list[str], Tensor]:
    """Parse ``list_attr_celeba.txt``.

    Args:
        path: the attribute file.
        limit: read only the first ``limit`` rows.

    Returns:
        ``(attribute_names, file_names, targets)`` with ``targets`` ``(N, K)`` float32 0/1.

    Raises:
        CelebAFormatError: naming the file and line of the first malformed entry.
    """
    lines = _lines(path)
    if len(lines) < 2:
        raise CelebAFormatError(f"{path}: needs a count line and a names line, has {len(lines)}")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise CelebAFormatError(
            f"{path}, line 1: expected the number of rows, got {lines[0].strip()!r}"
        ) from None
    names = lines[1].split()
    if not names or len(set(names)) != len(names):
        raise CelebAFormatError(f"{path}, line 2: expected distinct attribute names, got {names}")
    rows = [(number, line) for number, line in enumerate(lines[2:], start=3) if line.strip()]
    if len(rows) != declared:
        raise CelebAFormatError(
            f"{path}, line 1 declares {declared} rows but the file has {len(rows)}"
        )
    if limit is not None:
        rows = rows[:limit]
    files: list[str] = []
    values = np.empty((len(rows), len(names)), dtype=np.float32)
    seen: dict[str, int] = {}
    for row, (number, line) in enumerate(rows):
        fields = line.split()
        if len(fields) != len(names) + 1:
            raise CelebAFormatError(
                f"{path}, line {number}: expected a file name and {len(names)} values, "
                f"got {len(fields)} fields"
            )
        name = fields[0]
        if name in seen:
            raise CelebAFormatError(
                f"{path}, line {number}: {name} already appears on line {seen[name]}"
            )
        seen[name] = number
        for column, field in enumerate(fields[1:]):
            if field == "1":
                values[row, column] = 1.0
            elif field == "-1":
                values[row, column] = 0.0
            else:
                raise CelebAFormatError(
                    f"{path}, line {number}: attribute {names[column]} is {field!r}, "
                    "expected 1 or -1"
                )
        files.append(name)
    return names, files, torch.from_numpy(values)


def read_file_labels(path: Path, files: list[str], what: str) -> Tensor:
    """Parse ``<file> <integer>`` rows (partition or identity) for the given files.

    Rows for files not in ``files`` are ignored (the official files list every image).

    Returns:
        ``(len(files),)`` int64 labels in the order of ``files``.

    Raises:
        CelebAFormatError: for a malformed row, or a file in ``files`` that has no row.
    """
    labels: dict[str, int] = {}
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise CelebAFormatError(
                f"{path}, line {number}: expected '<file> <{what}>', got {line.strip()!r}"
            )
        try:
            labels[fields[0]] = int(fields[1])
        except ValueError:
            raise CelebAFormatError(
                f"{path}, line {number}: {what} {fields[1]!r} is not an integer"
            ) from None
    missing = [name for name in files if name not in labels]
    if missing:
        raise CelebAFormatError(
            f"{path} has no row for {len(missing)} image(s) listed in {ATTRIBUTE_FILE}, "
            f"first {missing[:3]}: use annotation files that cover the same images"
        )
    return torch.tensor([labels[name] for name in files], dtype=torch.int64)


def load_square_images(paths: list[Path], image_size: int, chunk: int = 512) -> Tensor:
    """Decode images, centre-crop each to a square and resize to ``image_size``.

    Args:
        paths: image files (any format Pillow reads), converted to RGB.
        image_size: side of the output images.
        chunk: images resized per interpolation call (bounds the float32 memory).

    Returns:
        ``(N, 3, image_size, image_size)`` uint8.

    Raises:
        ValueError: naming a file Pillow cannot decode.
    """
    Image = require("PIL.Image", "reading CelebA images")
    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        positions = [position for position, _ in pending]
        batch = torch.from_numpy(np.stack([array for _, array in pending])).permute(0, 3, 1, 2)
        if batch.shape[-1] != image_size:
            batch = (
                F.interpolate(
                    batch.float(),
                    size=(image_size, image_size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
            )
        out[positions] = batch
        pending.clear()

    for position, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                width, height = image.size
                side = min(width, height)
                left, top = (width - side) // 2, (height - side) // 2
                array = np.asarray(image.crop((left, top, left + side, top + side)))
        except OSError as error:
            raise CelebAFormatError(f"cannot read image {path}: {error}") from error
        if pending and pending[0][1].shape != array.shape:
            flush()
        pending.append((position, array))
        if len(pending) >= chunk:
            flush()
    flush()
    return out


def load_celeba(
    root: str | os.PathLike,
    image_size: int = 64,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> AttributeDataset:
    """Load CelebA (or a subset in the same layout) as an :class:`AttributeDataset`.

    Args:
        root: folder with ``img_align_celeba/`` and the annotation files (or its parent
            holding ``celeba/``).
        image_size: output side; 64 gives ``(N, 3, 64, 64)`` images.
        heldout_fraction: fraction held out when the official partitions leave one side empty.
        seed: seed of that held-out split.
        limit: load only the first ``limit`` rows of the attribute file.

    Returns:
        The dataset, with the 40 attribute names, identities as ``groups`` when available,
        and ``name="celeba"``.

    Raises:
        FileNotFoundError: if a required file or any listed image is missing (the first missing
            images are named with their line in the attribute file).
        CelebAFormatError: for malformed annotation files.
    """
    folder = find_celeba_root(root)
    attribute_path = folder / ATTRIBUTE_FILE
    names, files, targets = read_attributes(attribute_path, limit=limit)
    if not files:
        raise CelebAFormatError(f"{attribute_path} lists no images")
    partition_path = folder / PARTITION_FILE
    if not partition_path.is_file():
        raise FileNotFoundError(
            f"{partition_path} not found: CelebA's split file is required next to {ATTRIBUTE_FILE}"
        )
    partition = read_file_labels(partition_path, files, "partition")
    bad = sorted(set(partition.tolist()) - {0, 1, 2})
    if bad:
        raise CelebAFormatError(f"{partition_path}: partitions must be 0, 1 or 2, found {bad}")
    identity_path = folder / IDENTITY_FILE
    groups = read_file_labels(identity_path, files, "identity") if identity_path.is_file() else None

    image_folder = folder / IMAGE_FOLDER
    if not image_folder.is_dir():
        raise FileNotFoundError(f"{image_folder} not found: it should hold the aligned JPEGs")
    present = set(os.listdir(image_folder))
    missing = [(row, name) for row, name in enumerate(files) if name not in present]
    if missing:
        shown = ", ".join(f"{name} (line {row + 3})" for row, name in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {attribute_path} are missing from "
            f"{image_folder}: {shown}; the attribute file and the image folder must match"
        )
    images = load_square_images([image_folder / name for name in files], image_size)

    train, heldout = _official_split(partition)
    if train is None:
        split_groups = groups if groups is not None else torch.arange(len(files))
        train, heldout = group_heldout_split(split_groups, heldout_fraction, seed)
    return AttributeDataset(
        images,
        targets,
        names,
        train,
        heldout,
        groups=groups,
        name="celeba",
        file_names=files,
    )


def _official_split(partition: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Train = partition 0, held-out = 1 (or 2 without a 1); ``(None, None)`` if one is empty."""
    indices = torch.arange(len(partition))
    train = indices[partition == 0]
    heldout = indices[partition == 1]
    if len(heldout) == 0:
        heldout = indices[partition == 2]
    if len(train) == 0 or len(heldout) == 0:
        return None, None
    return train, heldout
