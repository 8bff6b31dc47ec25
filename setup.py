"""Builds the native engine (wasm/run.c) into the package, next to the Python code.

The engine is a plain C library that llama2c.native loads with ctypes; it is built as an extension
module only so that pip compiles and installs it, with the flags in llama2c/toolchain.py (the same
as `invoke native`). LLAMA2C_PURE=1 builds the pure-Python wheel that the browser (Pyodide) gets:
there the engine is WebAssembly, the modules in NATIVE_ONLY stay out, and so does the training
half (llama2c.train, which needs PyTorch).
"""

import importlib.util
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

PURE = os.environ.get("LLAMA2C_PURE") == "1"

# The command line, the native engine's loader, and the build, serve and download tools: the page
# runs none of them.
NATIVE_ONLY = {"llama2c.__main__", "llama2c.catalog", "llama2c.cli", "llama2c.command",
               "llama2c.devserver", "llama2c.fetch", "llama2c.native", "llama2c.quantize",
               "llama2c.reference", "llama2c.toolchain"}


def load_toolchain():
    """llama2c/toolchain.py by its path (importing the package would need numpy at build time)."""
    path = Path(__file__).parent / "pylib/llama2c/toolchain.py"
    spec = importlib.util.spec_from_file_location("llama2c_toolchain", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPy(build_py):
    """Leaves NATIVE_ONLY out of the pure (browser) wheel."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if not PURE:
            return modules
        return [m for m in modules if f"{m[0]}.{m[1]}" not in NATIVE_ONLY]


toolchain = load_toolchain()
ENGINE = Extension(
    "llama2c._engine",
    sources=[str(toolchain.ENGINE_SOURCE)],
    depends=[str(toolchain.KERNEL_HEADER)],
    extra_compile_args=toolchain.NATIVE_CFLAGS,
    extra_link_args=toolchain.NATIVE_LDFLAGS,
)

# include_package_data off: it would ship every tracked file under llama2c/ as data, llama2c/train
# in the browser wheel included.
setup(packages=["llama2c"] if PURE else ["llama2c", "llama2c.train"], include_package_data=False,
      ext_modules=[] if PURE else [ENGINE], cmdclass={"build_py": BuildPy})
