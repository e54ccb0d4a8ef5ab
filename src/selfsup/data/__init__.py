"""Data sources: built-in image sets, folders, text corpora and generated clips, each loaded
into a set that follows :class:`SampleSet`. This module only gathers the names."""

from selfsup.data.base import DataError, ImageSet, InMemorySamples, SampleSet, labelled_subset
from selfsup.data.digits import load_digits
from selfsup.data.fashion_mnist import fashion_mnist_available, load_fashion_mnist
from selfsup.data.folder import FolderFiles, iter_folder_batches, load_folder
from selfsup.data.images import BUILTIN_SOURCES, SOURCES_HELP, default_source, describe_skipped, load_splits

__all__ = [
    "BUILTIN_SOURCES",
    "SOURCES_HELP",
    "DataError",
    "FolderFiles",
    "ImageSet",
    "InMemorySamples",
    "SampleSet",
    "default_source",
    "describe_skipped",
    "fashion_mnist_available",
    "iter_folder_batches",
    "labelled_subset",
    "load_digits",
    "load_fashion_mnist",
    "load_folder",
    "load_splits",
]
