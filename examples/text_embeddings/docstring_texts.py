"""Real text without a download: the prose paragraphs of Python's own standard library
docstrings, and the three ways of shaping their token ids into requests (exact, padded,
bucketed) with what each costs in padding.

Pure functions, apart from importing the standard library modules the text is read from.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

#: Standard library modules whose docstrings are read (importing them has no side effects).
MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib",
    "email.message", "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client",
    "http.cookies", "imaplib", "inspect", "ipaddress", "itertools", "json", "locale", "logging",
    "lzma", "mailbox", "mimetypes", "multiprocessing.pool", "numbers", "operator", "optparse",
    "pathlib", "pickle", "pickletools", "platform", "poplib", "pprint", "queue", "random", "re",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib", "socket",
    "socketserver", "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "typing",
    "unittest.case", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings",
    "wave", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zoneinfo",
)  # fmt: skip

#: Request lengths of the bucketed mode: each request is padded to the next of these.
BUCKETS = (16, 32, 64, 128)

_WORD = re.compile(r"[A-Za-z]{2,}")


def _docstrings(module: ModuleType) -> Iterator[str]:
    """The docstrings of a module and of the classes, functions and methods it defines."""
    yield inspect.getdoc(module) or ""
    for _, member in inspect.getmembers(module):
        if getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member) or inspect.isfunction(member):
            yield inspect.getdoc(member) or ""
        if inspect.isclass(member):
            for _, method in inspect.getmembers(member, inspect.isfunction):
                if method.__qualname__.startswith(member.__qualname__ + "."):
                    yield inspect.getdoc(method) or ""


def _prose(paragraph: str) -> str | None:
    """A paragraph as one line of text, or None when it is code, a table or a list of names."""
    lines = paragraph.splitlines()
    if not lines or any(line.startswith((" ", "\t", ">>>", "..", "-", "*", "=")) for line in lines):
        return None
    text = " ".join(line.strip() for line in lines)
    words = text.split()
    letters = sum(c.isalpha() or c.isspace() for c in text)
    if len(words) < 5 or letters < 0.85 * len(text) or len(_WORD.findall(text)) < 4:
        return None
    return text if text[-1] in ".:!?)" else None


def stdlib_paragraphs(modules: Sequence[str] = MODULES) -> list[str]:
    """Every distinct prose paragraph of the modules' docstrings, in a fixed order."""
    seen: dict[str, None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some modules warn that parts of them are deprecated
        for name in modules:
            for doc in _docstrings(importlib.import_module(name)):
                for paragraph in re.split(r"\n\s*\n", doc):
                    text = _prose(paragraph)
                    if text is not None:
                        seen.setdefault(text, None)
    return list(seen)


def sample_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` paragraphs drawn without replacement, reproducibly (all of them when fewer)."""
    texts = stdlib_paragraphs()
    random.Random(seed).shuffle(texts)
    return texts[:count]


@dataclass(frozen=True, slots=True)
class Mode:
    """How requests are shaped: ``exact`` (each its own length), ``pad`` (all to the longest)
    or ``bucket`` (each to the next bucket length)."""

    name: str
    title: str

    def length(self, tokens: int, longest: int) -> int:
        """The sequence length a request of ``tokens`` real tokens is sent with."""
        if self.name == "exact":
            return tokens
        if self.name == "pad":
            return longest
        return next((b for b in BUCKETS if b >= tokens), longest)


MODES = (
    Mode("exact", "exact lengths"),
    Mode("pad", "pad to 128"),
    Mode("bucket", "buckets 16/32/64/128"),
)


def shaped(ids: Sequence[int], length: int) -> dict[str, list[list[int]]]:
    """One request's inputs, [1, length]: the token ids padded with [PAD] (0), and the mask."""
    pad = length - len(ids)
    if pad < 0:
        raise ValueError(f"{len(ids)} token ids do not fit a length of {length}")
    return {
        "input_ids": [[*ids, *([0] * pad)]],
        "attention_mask": [[1] * len(ids) + [0] * pad],
    }


def padding_cost(lengths: Sequence[int], mode: Mode, longest: int) -> float:
    """Tokens computed per real token when every request of these lengths is sent in ``mode``
    (batches only join requests of one length, so batching adds no padding of its own)."""
    real = sum(lengths)
    return sum(mode.length(n, longest) for n in lengths) / real if real else 1.0


def percentile(values: Sequence[int], q: float) -> int:
    """The nearest-rank percentile ``q`` (0-100) of integers."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
