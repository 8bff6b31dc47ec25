"""Builds the native engine (wasm/run.c) into the package, next to the Python code.

The engine is a plain C library that llama2c.native loads with ctypes; it is built as an extension
module only so that pip compiles and installs it. LLAMA2C_PURE=1 builds a pure-Python wheel, which
is what the browser (Pyodide) gets: there the engine is WebAssembly.
"""

import os

from setuptools import Extension, setup

ENGINE = Extension(
    "llama2c._engine",
    sources=["wasm/run.c"],
    depends=["wasm/q8.h"],
    extra_compile_args=["-std=c11", "-O3", "-ffp-contract=off", "-pthread", "-fvisibility=hidden"],
    extra_link_args=["-pthread"],
    libraries=["m"],
)

setup(ext_modules=[] if os.environ.get("LLAMA2C_PURE") == "1" else [ENGINE])
