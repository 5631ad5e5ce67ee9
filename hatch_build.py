"""Build hook: compiles ``clipaudit/_scan.c``, the curated matcher's automaton pass, into the wheel.

The module is optional. Where no C compiler is at hand the build goes on without it, with a
warning, and the matcher runs the same pass with pyahocorasick: the same hits, about 1.6x the
time end to end (``benchmarks/RESULTS.md``). An editable install (``uv sync``, ``make test``) builds the
module in place, beside its source, where the editable package imports it from.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODULE = "clipaudit._scan"
SOURCE = "clipaudit/_scan.c"


class ScanExtensionHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        editable = version == "editable"
        self._scratch = Path(tempfile.mkdtemp(prefix="clipaudit-build-"))
        out = Path(self.root) if editable else self._scratch / "lib"
        try:
            built = _compile(out, self._scratch / "temp", in_place=editable)
        except Exception as error:  # any compiler failure: the pure Python route remains
            self.app.display_warning(
                f"clipaudit: {SOURCE} was not compiled ({type(error).__name__}: {error}); "
                "the lexical matcher will use pyahocorasick, with the same results, more slowly"
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if not editable:
            build_data["force_include"][str(built)] = str(built.relative_to(out))

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self.target_name == "wheel":
            shutil.rmtree(self._scratch, ignore_errors=True)


def _compile(out: Path, temp: Path, *, in_place: bool) -> Path:
    """Compile the module with setuptools' ``build_ext`` (it knows each platform's compiler and
    flags) into ``out`` (the source tree when ``in_place``: the build runs from the project's
    root); the path of the built file."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    extension = Extension(MODULE, [SOURCE])  # Python's own optimisation flags (-O3 with gcc)
    distribution = Distribution({"name": "clipaudit", "ext_modules": [extension]})
    distribution.script_name = "hatch_build.py"
    command = build_ext(distribution)
    command.inplace = in_place
    command.build_lib = str(out)
    command.build_temp = str(temp)
    command.ensure_finalized()
    command.run()
    return Path(command.get_ext_fullpath(MODULE)).resolve()
