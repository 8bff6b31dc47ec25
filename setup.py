"""Builds the native engine (wasm/run.c) into the package, next to the Python code.

The engine is a plain C library that llama2c.native loads with ctypes; it is built as an extension
module only so that pip compiles and installs it. LLAMA2C_PURE=1 builds a pure-Python wheel, which
is what the browser (Pyodide) gets: there the engine is WebAssembly, and the training half
(llama2c.train, which needs PyTorch) is left out.
"""

import os

from setuptools import Extension, setup

ENGINE = Extension(
    "llama2c._engine",
    sources=["wasm/run.c"],
    extra_compile_args=["-std=c11", "-O3", "-ffp-contract=off", "-pthread", "-fvisibility=hidden"],
    extra_link_args=["-pthread"],
    libraries=["m"],
)

PURE = os.environ.get("LLAMA2C_PURE") == "1"

setup(packages=["llama2c"] if PURE else ["llama2c", "llama2c.train"],
      ext_modules=[] if PURE else [ENGINE])
