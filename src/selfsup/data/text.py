"""Text sources: the standard library's docstrings, the Python documentation, text files.

Every source returns a :class:`TextCorpus`: a list of documents (plain strings, not yet
tokenised), a label per document for downstream probes (``-1`` when unlabelled), and the
files that could not be read, with the reason. Tokenising is
:mod:`selfsup.data.tokenizer`'s business; masking is :mod:`selfsup.augment.masking`'s.

Sources (:func:`load_corpus` spec in brackets):

* :func:`stdlib_docstrings` [``stdlib-docs``, the default]: the docstrings of the running
  Python's standard library, read with :mod:`ast` (nothing is imported), labelled by
  top-level package or module. Always present, needs no network.
* :func:`python_docs` [``python-docs``]: the reStructuredText sources of the Python
  documentation from Debian's ``python3.11-doc`` package, one paragraph per document,
  labelled by top folder (``library``, ``c-api``, ``tutorial``, ...).
* :func:`text_files` [any path]: a ``.txt``/``.md``/``.rst`` file or a folder of them, one
  paragraph per document, labelled by first-level subfolder.

Bad files never stop a folder from loading: a file that is binary (holds NUL bytes), not
UTF-8, or unreadable is skipped and listed in :attr:`TextCorpus.skipped` with the reason.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sysconfig
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from selfsup.cache import CorpusCache
from selfsup.data.base import DataError

__all__ = [
    "DEFAULT_CORPUS",
    "MIN_CLASS_SIZE",
    "PYTHON_DOCS_ROOT",
    "TEXT_EXTENSIONS",
    "TextCorpus",
    "load_corpus",
    "python_docs",
    "split_corpus",
    "stdlib_docstrings",
    "text_files",
]

DEFAULT_CORPUS = "stdlib-docs"
#: File-name suffixes (compared lower-case) that :func:`text_files` reads from a folder.
TEXT_EXTENSIONS = frozenset({".txt", ".md", ".rst"})
#: Where Debian's python3.11-doc package installs the documentation's reST sources.
PYTHON_DOCS_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
_PYTHON_DOCS_INSTALL = "apt-get install -y python3.11-doc"
#: Built-in corpora: a label (top-level module, documentation folder) becomes a class only
#: when it has at least this many documents; rarer ones are unlabelled (-1). Fewer than
#: ~50 examples per class leaves too few test documents for a probe's accuracy to mean much.
MIN_CLASS_SIZE = 50
#: Top-level names of the standard library that are not part of its documented API: the
#: test suites, IDLE, the deprecated 2to3 tool (mostly fixer boilerplate), installed
#: third-party packages, byte-code caches, and two generated packages: ``encodings``
#: (codec tables whose docstrings differ only in the codec's name, which would make a
#: trivially separable class) and ``pydoc_data`` (0.75 MB of help text in one dict,
#: without docstrings; skipping both saves a fifth of the parsing time).
_STDLIB_EXCLUDED = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "site-packages",
        "__pycache__",
        "encodings",
        "pydoc_data",
    }
)
#: Folders skipped at any depth of the standard library (package-internal test suites
#: such as ``unittest/test`` or ``ctypes/test``).
_STDLIB_TEST_FOLDERS = frozenset({"test", "tests", "idle_test"})
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n")
#: Longer paragraphs are cut: no sequence model here reads that far (the encoder keeps
#: text.max_length tokens), and the tokenizer's time and memory grow with the length (a
#: single 40 MB line took 2 minutes and 6.7 GB).
MAX_DOCUMENT_CHARACTERS = 1_000_000
#: How many skip reasons a "nothing could be read" error quotes.
_REASONS_QUOTED = 5


@dataclass
class TextCorpus:
    """Documents (plain strings) with their labels.

    Attributes:
        documents: the texts, in a deterministic order.
        labels: class index of each document, ``-1`` where unlabelled.
        label_names: class index -> name; ``[]`` when the corpus is unlabelled.
        name: where the documents came from, e.g. ``"stdlib-docs"``, ``"text:/path"``.
        skipped: ``(path, reason)`` for every source file that could not be read.
    """

    documents: list[str]
    labels: list[int]
    label_names: list[str]
    name: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.documents):
            raise ValueError(
                f"TextCorpus {self.name!r}: {len(self.labels)} labels for "
                f"{len(self.documents)} documents"
            )
        bad = [label for label in self.labels if not -1 <= label < len(self.label_names)]
        if bad:
            raise ValueError(
                f"TextCorpus {self.name!r}: labels must lie in -1..{len(self.label_names) - 1} "
                f"({len(self.label_names)} label names), got {bad[0]}"
            )

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def characters(self) -> int:
        """Total number of characters in the documents."""
        return sum(len(document) for document in self.documents)

    def subset(self, indices: Sequence[int], name: str) -> TextCorpus:
        """The documents at ``indices`` (in that order), as a new corpus called ``name``.

        ``label_names`` and ``skipped`` are kept whole: they describe the source.
        """
        return TextCorpus(
            documents=[self.documents[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            label_names=list(self.label_names),
            name=name,
            skipped=list(self.skipped),
        )


# --------------------------------------------------------------------------- stdlib


def stdlib_docstrings(
    min_chars: int = 40, root: str | Path | None = None, min_class_size: int = MIN_CLASS_SIZE
) -> TextCorpus:
    """The docstrings of the standard library: modules, classes and functions.

    Every ``.py`` file under ``root`` (default: the running Python's
    ``sysconfig.get_paths()["stdlib"]``) is parsed with :mod:`ast`, never imported, in
    sorted path order, and the docstrings of the module and of each class and function
    (methods and nested definitions included, in source order) are taken, cleaned of
    their indentation by :func:`ast.get_docstring`. Docstrings shorter than ``min_chars``
    characters (``"Return self."``) are dropped, and so are repeats of an earlier
    docstring (about 190 in Python 3.11: ``mailbox``'s per-format classes, interfaces re-documented by
    their implementations, ...), so that a document-level split never has the same text
    on both sides.

    Left out: ``test``/``tests``/``idle_test`` folders at any depth, ``idlelib``,
    ``lib2to3``, ``site-packages``, ``__pycache__``, the generated ``encodings`` and
    ``pydoc_data`` packages, private top-level modules and packages (``_pydecimal``,
    ``__future__``, ...) and names that cannot be imported (``config-3.11-x86_64-linux-gnu``).

    Labels: a document's label is the top-level package or module it comes from
    (``email/mime/text.py`` -> ``email``, ``argparse.py`` -> ``argparse``). Names with at
    least ``min_class_size`` documents are the classes (sorted); documents of rarer names
    are unlabelled (``-1``) and still part of the corpus for pretraining.

    Files that cannot be read, decoded or parsed are skipped and listed in ``skipped``.

    Parsing the library takes seconds, so the result is kept in ``$SELFSUP_CACHE``
    (:class:`selfsup.cache.CorpusCache`), keyed by the files' paths, sizes and modification
    times and the arguments: a later run reads it back, a changed library is parsed again.

    Raises:
        DataError: when ``root`` is not a folder or yields no docstring.
    """
    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    if not root.is_dir():
        raise DataError(f"standard library folder {root} does not exist")
    files = _stdlib_files(root)
    listing = hashlib.sha256()
    for path in files:
        stat = path.stat()
        listing.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    cache = CorpusCache({"corpus": "stdlib-docs", "root": str(root), "files": listing.hexdigest(), "min_chars": min_chars,
                         "min_class_size": min_class_size})
    if (stored := cache.read()) is not None:
        return TextCorpus(**{**stored, "skipped": [tuple(entry) for entry in stored["skipped"]]})  # JSON keeps lists
    corpus = _parse_stdlib(root, files, min_chars, min_class_size)
    cache.write(asdict(corpus))
    return corpus


def _parse_stdlib(root: Path, files: list[Path], min_chars: int, min_class_size: int) -> TextCorpus:
    """:func:`stdlib_docstrings` without the cache."""
    documents: list[str] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in files:
        try:
            docstrings = _docstrings(path)
        except _UnreadableFile as error:
            skipped.append((str(path), error.reason))
            continue
        top_level = path.relative_to(root).parts[0].removesuffix(".py")
        for docstring in docstrings:
            if len(docstring) >= min_chars and docstring not in seen:
                seen.add(docstring)
                documents.append(docstring)
                names.append(top_level)
    if not documents:
        raise DataError(
            f"no docstring of at least {min_chars} characters found under {root}"
            + _quoted_reasons(skipped)
        )
    labels, label_names = _frequent_labels(names, min_class_size)
    return TextCorpus(documents, labels, label_names, "stdlib-docs", skipped)


def _stdlib_files(root: Path) -> list[Path]:
    """The public ``.py`` files of the standard library under ``root``, sorted."""
    files = []
    for entry in sorted(root.iterdir()):
        name = entry.name.removesuffix(".py") if entry.is_file() else entry.name
        if name in _STDLIB_EXCLUDED or name.startswith("_") or not name.isidentifier():
            continue
        if entry.is_file() and entry.suffix == ".py":
            files.append(entry)
        elif entry.is_dir():
            files.extend(
                path
                for path in entry.rglob("*.py")
                if not _STDLIB_TEST_FOLDERS & set(path.relative_to(root).parts[:-1])
            )
    return sorted(files)


class _UnreadableFile(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _docstrings(path: Path) -> list[str]:
    """The docstrings of a module, its classes and functions, in source order."""
    try:
        source = path.read_bytes()
    except OSError as error:
        raise _UnreadableFile(f"cannot read: {error.strerror or error}") from error
    try:
        with warnings.catch_warnings():  # invalid escape sequences in old modules
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=str(path))  # honours coding: cookies
    except (SyntaxError, ValueError, RecursionError) as error:
        # UnicodeDecodeError is a ValueError; source with NUL bytes raises ValueError.
        raise _UnreadableFile(f"cannot parse: {type(error).__name__}: {error}") from error
    definitions = sorted(
        (
            node
            for node in ast.walk(tree)
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        ),
        key=lambda node: (node.lineno, node.col_offset),
    )
    docstrings = (ast.get_docstring(node, clean=True) for node in [tree, *definitions])
    return [docstring for docstring in docstrings if docstring]


# --------------------------------------------------------------------------- python docs


def python_docs(
    root: str | Path = PYTHON_DOCS_ROOT,
    min_chars: int = 40,
    min_class_size: int = MIN_CLASS_SIZE,
) -> TextCorpus:
    """The Python documentation's reStructuredText sources, one paragraph per document.

    Reads the ``*.rst.txt`` files that Debian's ``python3.11-doc`` package installs under
    :data:`PYTHON_DOCS_ROOT` (recursively, sorted), splits them into paragraphs
    (blank-line separated blocks: prose, code examples, directive blocks, section
    titles with their underline), and keeps paragraphs of at least ``min_chars``
    characters that are not repeats of an earlier one. The reST markup is kept as it is.

    Labels: the top folder of a file (``library``, ``c-api``, ``reference``,
    ``tutorial``, ``whatsnew``, ...); folders with fewer than ``min_class_size``
    paragraphs and the files directly in ``root`` (``glossary``, ``license``, ...) are
    unlabelled (``-1``). Unreadable files are skipped and listed in ``skipped``.

    Raises:
        DataError: when the sources are not installed (naming the apt command), or none
            can be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"the Python documentation sources are not installed ({root} does not exist);"
            f" install them with: {_PYTHON_DOCS_INSTALL}"
        )
    files = sorted(root.rglob("*.rst.txt"))
    if not files:
        raise DataError(
            f"no .rst.txt files under {root}; reinstall them with: {_PYTHON_DOCS_INSTALL}"
        )
    documents: list[str] = []
    names: list[str | None] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path, folder, paragraphs in _read_paragraphs(files, root, skipped):
        for paragraph in paragraphs:
            if len(paragraph) >= min_chars and paragraph not in seen:
                seen.add(paragraph)
                documents.append(paragraph)
                names.append(folder)
    if not documents:
        raise DataError(
            f"no paragraph of at least {min_chars} characters in the documentation sources"
            f" under {root}" + _quoted_reasons(skipped)
        )
    labels, label_names = _frequent_labels(names, min_class_size)
    return TextCorpus(documents, labels, label_names, "python-docs", skipped)


# --------------------------------------------------------------------------- text files


def text_files(path: str | Path) -> TextCorpus:
    """Paragraphs of a text file, or of every text file in a folder tree.

    A file given directly is read whatever its extension. A folder is searched
    recursively for files ending in :data:`TEXT_EXTENSIONS` (hidden files and folders
    are ignored), in sorted order of their path relative to the folder. Each file is read
    as UTF-8 (a byte-order mark is dropped, line endings become ``\\n``) and split into
    paragraphs at blank lines; each non-empty paragraph, stripped, is a document.

    Labels: the first-level subfolder of a file (``root/news/a.txt`` -> ``news``); files
    directly in the folder, and every document of a folder without subfolders or of a
    single file, are unlabelled (``-1``). The corpus is named ``"text:<absolute path>"``.

    Raises:
        DataError: when the path does not exist, a file given directly is binary (holds
            NUL bytes) or not UTF-8, a folder holds no text file, or there is no text at
            all; in a folder, unreadable files are skipped and listed in ``skipped``
            instead.
    """
    path = Path(os.path.abspath(path))
    name = f"text:{path}"
    if path.is_file():
        try:
            paragraphs = _paragraphs(_read_text(path))
        except _UnreadableFile as error:
            raise DataError(f"cannot read text file {path}: {error.reason}") from error
        if not paragraphs:
            raise DataError(f"text file {path} holds no text (it is empty or all whitespace)")
        return TextCorpus(paragraphs, [-1] * len(paragraphs), [], name)
    if not path.is_dir():
        raise DataError(f"text source {path} does not exist")
    files = _scan_text_folder(path)
    if not files:
        raise DataError(
            f"no text files found under {path}; recognised extensions are "
            f"{', '.join(sorted(TEXT_EXTENSIONS))}"
        )
    documents: list[str] = []
    folders: list[str | None] = []
    skipped: list[tuple[str, str]] = []
    for _, folder, paragraphs in _read_paragraphs(files, path, skipped):
        documents.extend(paragraphs)
        folders.extend([folder] * len(paragraphs))
    if not documents:
        raise DataError(
            f"no text in the {len(files)} text files under {path}" + _quoted_reasons(skipped)
        )
    label_names = sorted({folder for folder in folders if folder is not None})
    index = {folder: i for i, folder in enumerate(label_names)}
    labels = [-1 if folder is None else index[folder] for folder in folders]
    return TextCorpus(documents, labels, label_names, name, skipped)


def _scan_text_folder(root: Path) -> list[Path]:
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files.extend(
            Path(folder) / name
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in TEXT_EXTENSIONS
        )
    return sorted(files, key=lambda file: file.relative_to(root).parts)


def _read_paragraphs(
    files: Iterable[Path], root: Path, skipped: list[tuple[str, str]]
) -> Iterable[tuple[Path, str | None, list[str]]]:
    """``(file, first-level folder or None, paragraphs)`` of each readable file.

    Unreadable files are appended to ``skipped``; so are files without any text, since
    a user who put them there probably expected them to count.
    """
    for file in files:
        try:
            paragraphs = _paragraphs(_read_text(file))
        except _UnreadableFile as error:
            skipped.append((str(file), error.reason))
            continue
        if not paragraphs:
            skipped.append((str(file), "no text (empty or all whitespace)"))
            continue
        parts = file.relative_to(root).parts
        yield file, parts[0] if len(parts) > 1 else None, paragraphs


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _UnreadableFile(f"cannot read: {error.strerror or error}") from error
    nul = data.find(b"\0")
    if nul >= 0:
        raise _UnreadableFile(f"binary file (NUL byte at offset {nul})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _UnreadableFile(
            f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})"
        ) from error
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks of ``text``, stripped, empty ones dropped, each cut at
    :data:`MAX_DOCUMENT_CHARACTERS`."""
    return [block.strip()[:MAX_DOCUMENT_CHARACTERS] for block in _PARAGRAPH_BREAK.split(text) if block.strip()]


# --------------------------------------------------------------------------- shared


def _frequent_labels(
    names: Sequence[str | None], min_class_size: int
) -> tuple[list[int], list[str]]:
    """Label indices and sorted label names, keeping names with >= min_class_size uses."""
    counts = Counter(name for name in names if name is not None)
    label_names = sorted(name for name, count in counts.items() if count >= min_class_size)
    index = {name: i for i, name in enumerate(label_names)}
    return [index.get(name, -1) for name in names], label_names


def _quoted_reasons(skipped: Sequence[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    reasons = "; ".join(f"{path}: {reason}" for path, reason in skipped[:_REASONS_QUOTED])
    more = len(skipped) - _REASONS_QUOTED
    return f" (skipped {reasons}{f'; and {more} more' if more > 0 else ''})"


# --------------------------------------------------------------------------- loading, split


def load_corpus(spec: str = DEFAULT_CORPUS) -> TextCorpus:
    """The corpus named by ``spec``: ``"stdlib-docs"``, ``"python-docs"`` or a path.

    A path is read with :func:`text_files` (to read a file or folder named like a
    built-in corpus, write ``./stdlib-docs``).

    Raises:
        DataError: as the chosen source does; for a path that does not exist, the
            message also lists the built-in names.
    """
    if spec == "stdlib-docs":
        return stdlib_docstrings()
    if spec == "python-docs":
        return python_docs()
    if not Path(spec).exists():
        raise DataError(
            f"unknown text corpus {spec!r}: it is neither a built-in corpus "
            f"(stdlib-docs, python-docs) nor an existing file or folder"
        )
    return text_files(spec)


def split_corpus(
    corpus: TextCorpus, test_fraction: float = 0.1, seed: int = 0
) -> tuple[TextCorpus, TextCorpus]:
    """Split the documents into ``(train, test)``, stratified by label.

    Within each label (the unlabelled documents form a group of their own), a random
    permutation drawn from ``seed`` puts ``round(test_fraction * size)`` documents in the
    test split. Both splits keep the corpus order. The result depends only on the
    corpus, ``test_fraction`` and ``seed``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(corpus.labels, dtype=torch.int64)
    is_test = torch.zeros(len(corpus), dtype=torch.bool)
    for label in range(-1, corpus.num_classes):
        members = torch.nonzero(labels == label).flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)]
        is_test[shuffled[: round(test_fraction * len(members))]] = True
    train_rows = torch.nonzero(~is_test).flatten().tolist()
    test_rows = torch.nonzero(is_test).flatten().tolist()
    return (
        corpus.subset(train_rows, f"{corpus.name}:train"),
        corpus.subset(test_rows, f"{corpus.name}:test"),
    )
