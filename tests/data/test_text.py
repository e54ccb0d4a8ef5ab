"""Text corpora: standard-library docstrings, the Python docs, text files, splits."""

from __future__ import annotations

import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from selfsup.data import DataError
from selfsup.data import text as text_module
from selfsup.data.text import (
    PYTHON_DOCS_ROOT,
    TextCorpus,
    load_corpus,
    python_docs,
    split_corpus,
    stdlib_docstrings,
    text_files,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
LONG = "x" * 40  # a docstring just long enough to keep

FAKE_MODULE = f'''"""Module docstring of the fake package, long enough to be kept."""


class Thing:
    """Class docstring that is also long enough to be kept here."""

    def method(self):
        """Short."""

        def inner():
            """Nested function docstring, kept as well as the others."""

    async def run(self):
        """Class docstring that is also long enough to be kept here."""


def helper():
    """{LONG}"""
'''


# --------------------------------------------------------------------------- stdlib


def test_stdlib_files_keep_public_packages_and_leave_out_tests():
    files = [path.relative_to(STDLIB).parts for path in text_module._stdlib_files(STDLIB)]
    tops = {parts[0].removesuffix(".py") for parts in files}
    assert {"email", "asyncio", "xml", "http", "json", "argparse"} <= tops
    assert not tops & {"test", "idlelib", "lib2to3", "site-packages", "encodings", "pydoc_data"}
    assert not any(top.startswith("_") for top in tops)
    assert not any({"test", "tests"} & set(parts[:-1]) for parts in files)  # unittest/test, ...
    assert files == sorted(files)


@pytest.fixture(scope="module")
def stdlib_root(tmp_path_factory):
    """Real email and asyncio modules (for the labels) beside fake modules and bad files.

    A few files of each package keep parsing fast; each gives more than 50 docstrings.
    """
    root = tmp_path_factory.mktemp("stdlib")
    (root / "json").symlink_to(STDLIB / "json", target_is_directory=True)
    real = {
        "email": ("message.py", "errors.py", "_policybase.py"),
        "asyncio": ("events.py", "locks.py", "transports.py"),
    }
    for package, modules in real.items():
        (root / package).mkdir()
        for module in modules:
            (root / package / module).symlink_to(STDLIB / package / module)
    (root / "fake").mkdir()
    (root / "fake" / "__init__.py").write_text(FAKE_MODULE)
    (root / "fake" / "copy.py").write_text(FAKE_MODULE)  # all repeats: nothing new
    for left_out in ("test", "idlelib", "_private", "fake/tests"):
        (root / left_out).mkdir()
    (root / "fake" / "tests" / "test_fake.py").write_text(f'"""{LONG} test"""')
    (root / "test" / "test_x.py").write_text(f'"""{LONG} test"""')
    (root / "idlelib" / "x.py").write_text(f'"""{LONG} idle"""')
    (root / "_private" / "x.py").write_text(f'"""{LONG} private"""')
    (root / "_single.py").write_text(f'"""{LONG} private"""')
    (root / "broken.py").write_text(
        '"""A docstring before a syntax error, never read."""\ndef (:\n'
    )
    (root / "latin.py").write_bytes(
        b'"""Caf\xe9 without a coding cookie, so not UTF-8 at all."""\n'
    )
    (root / "cookie.py").write_bytes(
        b'# -*- coding: latin-1 -*-\n"""Caf\xe9 with a coding cookie is read and decoded fine."""\n'
    )
    return root


@pytest.fixture(scope="module")
def stdlib_subset(stdlib_root):
    return stdlib_docstrings(root=stdlib_root)


def test_stdlib_docstrings_are_labelled_by_top_level_package(stdlib_subset, stdlib_root):
    corpus = stdlib_subset
    assert corpus.name == "stdlib-docs" and len(corpus) > 150
    assert all(len(document) >= 40 for document in corpus.documents)
    assert len(set(corpus.documents)) == len(corpus)  # repeats are dropped
    assert corpus.label_names == ["asyncio", "email"]  # json and fake have < 50 docstrings
    counts = Counter(corpus.label_names[label] if label >= 0 else None for label in corpus.labels)
    assert counts["asyncio"] >= 50 and counts["email"] >= 50 and counts[None] > 20
    assert "Café with a coding cookie is read and decoded fine." in corpus.documents
    assert not any(document.endswith(("test", "idle", "private")) for document in corpus.documents)
    skipped = {Path(path).name: reason for path, reason in corpus.skipped}
    assert set(skipped) == {"broken.py", "latin.py"}
    assert skipped["broken.py"].startswith("cannot parse: SyntaxError")
    assert "SyntaxError" in skipped["latin.py"] and "utf-8" in skipped["latin.py"].lower()


def test_stdlib_docstrings_order_cleaning_and_thresholds(stdlib_root):
    fake = stdlib_root.parent / "fake_only"
    fake.mkdir()
    (fake / "fake.py").symlink_to(stdlib_root / "fake" / "__init__.py")
    corpus = stdlib_docstrings(root=fake, min_class_size=2)
    assert corpus.documents == [
        "Module docstring of the fake package, long enough to be kept.",
        "Class docstring that is also long enough to be kept here.",
        "Nested function docstring, kept as well as the others.",
        LONG,
    ]
    assert corpus.label_names == ["fake"] and corpus.labels == [0, 0, 0, 0]
    assert stdlib_docstrings(root=fake, min_chars=56).documents == corpus.documents[:2]
    assert stdlib_docstrings(root=fake, min_class_size=5).labels == [-1] * 4


def test_stdlib_docstrings_are_deterministic(stdlib_root):
    small = stdlib_root.parent / "small"
    small.mkdir()
    (small / "json").symlink_to(STDLIB / "json", target_is_directory=True)
    (small / "wsgiref").symlink_to(STDLIB / "wsgiref", target_is_directory=True)
    first, again = (stdlib_docstrings(root=small, min_class_size=10) for _ in range(2))
    assert first == again and first.label_names == ["json", "wsgiref"]


def test_stdlib_docstrings_are_parsed_once_and_again_when_a_file_changes(tmp_path, monkeypatch, private_cache):
    root = tmp_path / "lib"
    root.mkdir()
    module = root / "mod.py"
    module.write_text(f'"""{LONG}"""')
    first = stdlib_docstrings(root=root, min_class_size=1)
    parses = []
    parse = text_module._parse_stdlib
    monkeypatch.setattr(text_module, "_parse_stdlib", lambda *args: parses.append(args) or parse(*args))
    assert stdlib_docstrings(root=root, min_class_size=1) == first and parses == []  # read back
    assert list((private_cache / "corpora").iterdir())
    module.write_text(f'"""{LONG} Changed."""')
    changed = stdlib_docstrings(root=root, min_class_size=1)
    assert len(parses) == 1 and changed.documents == [f"{LONG} Changed."]
    assert stdlib_docstrings(root=root, min_class_size=2).labels == [-1] and len(parses) == 2  # another key


def test_stdlib_docstrings_bad_root(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'}"):
        stdlib_docstrings(root=tmp_path / "missing")
    (tmp_path / "tiny.py").write_text('"""Too short."""')
    with pytest.raises(DataError, match=f"no docstring .* under {tmp_path}"):
        stdlib_docstrings(root=tmp_path)


# --------------------------------------------------------------------------- text files


@pytest.fixture
def text_folder(tmp_path):
    root = tmp_path / "texts"
    (root / "news").mkdir(parents=True)
    (root / "notes" / "deep").mkdir(parents=True)
    (root / "loose.md").write_text("# Title\n\nFirst paragraph\nstill first.\n \t\nSecond one.\n")
    (root / "news" / "a.txt").write_bytes(b"\xef\xbb\xbfWindows text.\r\n\r\nWith CRLF lines.\r\n")
    (root / "notes" / "deep" / "b.RST").write_text("Deep note.\n")
    (root / "notes" / "binary.txt").write_bytes(b"text then \x00\x01\x02 bytes")
    (root / "notes" / "latin.txt").write_bytes("Café au lait".encode("latin-1"))
    (root / "notes" / "empty.txt").write_text("  \n\n")
    (root / "notes" / "image.png").write_bytes(b"\x89PNG not text")  # other extension: ignored
    (root / ".hidden.txt").write_text("ignored")
    return root


def test_text_folder_reads_paragraphs_and_skips_bad_files_with_reasons(text_folder):
    corpus = text_files(text_folder)
    assert corpus.name == f"text:{text_folder}"
    assert corpus.documents == [
        "# Title",
        "First paragraph\nstill first.",
        "Second one.",
        "Windows text.",
        "With CRLF lines.",
        "Deep note.",
    ]
    assert corpus.label_names == ["news", "notes"]
    assert corpus.labels == [-1, -1, -1, 0, 0, 1]
    reasons = {Path(path).name: reason for path, reason in corpus.skipped}
    assert set(reasons) == {"binary.txt", "latin.txt", "empty.txt"}
    assert reasons["binary.txt"] == "binary file (NUL byte at offset 10)"
    assert reasons["latin.txt"] == "not UTF-8 text (byte 0xe9 at offset 3)"
    assert reasons["empty.txt"].startswith("no text")


def test_text_file_given_directly(text_folder):
    corpus = text_files(text_folder / "loose.md")
    assert len(corpus) == 3 and corpus.labels == [-1] * 3 and corpus.label_names == []
    for name, problem in [
        ("binary.txt", "binary file"),
        ("latin.txt", "not UTF-8"),
        ("empty.txt", "no text"),
    ]:
        path = text_folder / "notes" / name
        with pytest.raises(DataError, match=f"{path}.*{problem}"):
            text_files(path)


def test_empty_or_missing_text_sources_are_errors(tmp_path):
    with pytest.raises(DataError, match=f"no text files found under {tmp_path}"):
        text_files(tmp_path)
    (tmp_path / "blank.txt").write_text("\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\x00")
    with pytest.raises(DataError, match=f"no text in the 2 text files under {tmp_path}.*binary"):
        text_files(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        text_files(tmp_path / "missing")


# --------------------------------------------------------------------------- python docs


def test_python_docs_paragraphs_labelled_by_folder(tmp_path):
    (tmp_path / "library").mkdir()
    (tmp_path / "tutorial").mkdir()
    (tmp_path / "library" / "json.rst.txt").write_text(
        ":mod:`json` --- JSON encoder and decoder\n========================================\n\n"
        + "\n\n".join(f"Paragraph {i} of the json module documentation." for i in range(3))
        + "\n\nShort.\n"
    )
    (tmp_path / "tutorial" / "intro.rst.txt").write_text(
        "An informal introduction to Python, one paragraph.\n"
    )
    (tmp_path / "glossary.rst.txt").write_text("The glossary is at the top and has no folder.\n")
    (tmp_path / "library" / "bad.rst.txt").write_bytes(b"\xff\xfe")
    corpus = python_docs(tmp_path, min_class_size=3)
    assert corpus.name == "python-docs" and len(corpus) == 6
    assert corpus.label_names == ["library"]  # tutorial has one paragraph only
    assert corpus.labels == [-1, 0, 0, 0, 0, -1]  # glossary, library/json x 4, tutorial
    assert corpus.documents[1].startswith(":mod:`json`") and "Short." not in corpus.documents
    assert [Path(path).name for path, _ in corpus.skipped] == ["bad.rst.txt"]


def test_python_docs_missing_names_the_apt_command(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y python3.11-doc"):
        python_docs(tmp_path / "missing")
    with pytest.raises(DataError, match="apt-get install -y python3.11-doc"):
        python_docs(tmp_path)  # exists but holds no .rst.txt


@pytest.mark.skipif(not PYTHON_DOCS_ROOT.is_dir(), reason="python3.11-doc is not installed")
def test_installed_python_docs():
    corpus = python_docs()
    assert len(corpus) > 10_000 and {"library", "tutorial", "reference"} <= set(corpus.label_names)


# --------------------------------------------------------------------------- loading, split


def test_load_corpus_dispatches(monkeypatch, text_folder):
    monkeypatch.setattr(text_module, "stdlib_docstrings", lambda: "stdlib")
    monkeypatch.setattr(text_module, "python_docs", lambda: "docs")
    assert load_corpus() == load_corpus("stdlib-docs") == "stdlib"
    assert load_corpus("python-docs") == "docs"
    assert load_corpus(str(text_folder)).label_names == ["news", "notes"]
    with pytest.raises(DataError, match="stdlib-docs, python-docs"):
        load_corpus("no-such-corpus")


def labelled_corpus() -> TextCorpus:
    labels = [0] * 50 + [1] * 30 + [-1] * 20
    return TextCorpus([f"document {i}" for i in range(100)], labels, ["a", "b"], "toy")


def test_split_corpus_is_stratified_deterministic_and_complete():
    corpus = labelled_corpus()
    train, test = split_corpus(corpus, test_fraction=0.2, seed=3)
    assert (train.name, test.name) == ("toy:train", "toy:test")
    assert Counter(test.labels) == {0: 10, 1: 6, -1: 4}
    assert sorted(train.documents + test.documents, key=corpus.documents.index) == corpus.documents
    assert train.documents == sorted(train.documents, key=corpus.documents.index)  # corpus order
    again = split_corpus(corpus, test_fraction=0.2, seed=3)
    assert again[1].documents == test.documents
    assert split_corpus(corpus, test_fraction=0.2, seed=4)[1].documents != test.documents
    with pytest.raises(ValueError, match="test_fraction"):
        split_corpus(corpus, test_fraction=1.0)


def test_text_corpus_checks_labels():
    with pytest.raises(ValueError, match="2 labels for 1 documents"):
        TextCorpus(["one"], [0, 0], ["a"], "bad")
    with pytest.raises(ValueError, match="labels must lie in -1..0"):
        TextCorpus(["one"], [1], ["a"], "bad")
