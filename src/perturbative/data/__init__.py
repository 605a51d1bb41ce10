"""Datasets of images with named binary attributes: CelebA from disk, embedded digits."""

from perturbative.data.celeba import CelebAFormatError as CelebAFormatError
from perturbative.data.celeba import load_celeba as load_celeba
from perturbative.data.dataset import AttributeDataset as AttributeDataset
from perturbative.data.dataset import group_heldout_split as group_heldout_split
from perturbative.data.digits import DIGIT_ATTRIBUTE_NAMES as DIGIT_ATTRIBUTE_NAMES
from perturbative.data.digits import load_digits_attributes as load_digits_attributes

__all__ = [
    "AttributeDataset",
    "CelebAFormatError",
    "DIGIT_ATTRIBUTE_NAMES",
    "group_heldout_split",
    "load_celeba",
    "load_digits_attributes",
]
