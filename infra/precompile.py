"""Add compiled bytecode to a Lambda deployment zip: ``python infra/precompile.py ZIP RUNTIME``.

``chalice package`` zips sources only, and Lambda's ``/var/task`` is read-only, so
every cold start compiled every module it imported (27 % of ``import app``'s
instructions in round 5, bench/RESULTS.md).  This writes each ``.py`` file's
``__pycache__/<name>.<tag>.pyc`` into the zip beside it.

The ``.pyc`` files are hash-based and *unchecked* (PEP 552): the loader takes them as
they are, without reading the source's mtime.  Timestamp-checked ones would not do:
a zip keeps mtimes to 2 s, and Lambda unpacks the zip with mtimes of its own, so the
recorded mtime need not match and the module would be compiled after all.  Unchecked
is safe here because the zip is immutable once built and each ``.pyc`` is compiled
from the zip's own bytes of its source, never from a working tree.

Bytecode is specific to a Python minor version (the magic number): the interpreter
running this must be the runtime's (``RUNTIME``, e.g. ``python3.11``, the
``Runtime`` chalice wrote into the template), or it refuses.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

# What Lambda unpacks the zip into: the name the code objects carry for tracebacks.
TASK_ROOT = "/var/task"


def runtime_of_this_python() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def compiled_name(source: str) -> str:
    """``pkg/mod.py`` -> ``pkg/__pycache__/mod.cpython-311.pyc`` (this interpreter's tag)."""
    path = PurePosixPath(source)
    return str(path.parent / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc").removeprefix("./")


def compile_source(name: str, source: bytes, scratch: Path) -> bytes | None:
    """The unchecked hash-based ``.pyc`` of ``source`` (the zip entry ``name``), or None if
    it does not compile (test data, templates for other Pythons: never imported)."""
    src, out = scratch / "module.py", scratch / "module.pyc"
    src.write_bytes(source)
    try:
        py_compile.compile(
            str(src),
            cfile=str(out),
            dfile=f"{TASK_ROOT}/{name}",
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except py_compile.PyCompileError:
        return None
    return out.read_bytes()


def precompile(zip_path: Path) -> tuple[int, list[str]]:
    """Add a ``.pyc`` for every ``.py`` in ``zip_path`` that has none; returns how many
    were added and the sources that did not compile."""
    with zipfile.ZipFile(zip_path) as bundle, tempfile.TemporaryDirectory() as scratch:
        names = bundle.namelist()
        present = set(names)
        sources = [(n, bundle.getinfo(n)) for n in names if n.endswith(".py")]
        compiled: list[tuple[str, zipfile.ZipInfo, bytes]] = []
        failed: list[str] = []
        for name, info in sources:
            target = compiled_name(name)
            if target in present:
                continue
            pyc = compile_source(name, bundle.read(name), Path(scratch))
            if pyc is None:
                failed.append(name)
            else:
                compiled.append((target, info, pyc))
    with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as bundle:
        for target, source_info, pyc in compiled:
            entry = zipfile.ZipInfo(target, date_time=source_info.date_time)
            entry.external_attr = source_info.external_attr or (0o644 << 16)
            entry.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(entry, pyc)
    return len(compiled), failed


def check_magic(zip_path: Path) -> None:
    """Every ``.pyc`` in the zip carries this interpreter's magic number."""
    magic = importlib.util.MAGIC_NUMBER
    with zipfile.ZipFile(zip_path) as bundle:
        for name in bundle.namelist():
            if name.endswith(".pyc"):
                with bundle.open(name) as pyc:
                    head = pyc.read(4)
                if head != magic:
                    raise SystemExit(f"precompile: {name} has magic {head!r}, not {magic!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    zip_path, runtime = Path(argv[0]), argv[1]
    if runtime != runtime_of_this_python():
        print(
            f"precompile: the package targets {runtime} but this is {runtime_of_this_python()}; "
            "its bytecode would not load there (run with that Python's venv)",
            file=sys.stderr,
        )
        return 1
    added, failed = precompile(zip_path)
    check_magic(zip_path)
    print(f"    {added} modules compiled for {runtime} (unchecked hash-based .pyc)")
    if failed:
        print(f"    {len(failed)} sources do not compile and were left as they are, e.g. {failed[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
