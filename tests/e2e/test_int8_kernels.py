"""int8 in the page: runq.c's goldens through each int8 kernel (relaxed SIMD, and the SIMD128
fallback), the kernels against each other and the native one bit for bit, and feature detection.

The relaxed kernel is wasm/relaxed.c built by clang as a module of its own; the page uses it when
the browser validates it, unless the URL says relaxed=0. Chromium 156 has relaxed SIMD, so a
browser without it is simulated by making WebAssembly.validate refuse the module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from llama2c.native import q8_matmul

from .pageutil import MODELS, SHARED, args_to_params, blank_page, open_page, output

Q80 = SHARED / "golden" / "stories260K_q80"
Q80_CASES = json.loads((Q80 / "cases.json").read_text())["cases"]
KERNELS = {"relaxed": ("1", "int8 kernel: relaxed SIMD"),
           "fallback": ("0", "int8 kernel: SIMD128 (relaxed=0 in the URL)")}


@pytest.fixture(scope="module")
def q80_model(test_site) -> dict[str, str]:
    return {"model": test_site.add(MODELS / "stories260K_q80.bin"),
            "tokenizer": test_site.add(MODELS / "tok512.bin")}


def golden_text(case: dict) -> str:
    return (Q80 / case["output"]).read_bytes()[:-1].decode()


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("case", Q80_CASES, ids=[c["name"] for c in Q80_CASES])
def test_runq_golden_through_the_page(page, dev_server, q80_model, case, kernel):
    relaxed, label = KERNELS[kernel]
    open_page(page, dev_server, {**q80_model, "autostart": "1", "relaxed": relaxed,
                                 **args_to_params(case["args"])})
    assert label in page.locator("#engine").text_content()
    assert output(page) == golden_text(case)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_runq_golden_through_the_threaded_engine(page, dev_server, q80_model, kernel):
    """Every pthread worker instantiates the relaxed kernel on its own, on the shared memory."""
    relaxed, label = KERNELS[kernel]
    case = Q80_CASES[0]
    open_page(page, dev_server, {**q80_model, "autostart": "1", "relaxed": relaxed, "threads": "2",
                                 **args_to_params(case["args"])})
    engine = page.locator("#engine").text_content()
    assert "2 threads" in engine and label in engine, engine
    assert output(page) == golden_text(case)


KERNEL_JS = """
async ([engines, cases]) => {
  const { Engine } = await import(new URL('engine.js', location.href).href);
  const results = {};
  for (const [label, url, relaxed] of engines) {
    const m = await Engine.instantiate(new URL(url, location.href).href, { relaxed });
    const bits = [];
    for (const { d, n, gs, xq, xs, wq, ws } of cases) {
      const put = (values, bytes, Kind) => {
        const ptr = m._malloc(bytes);
        new Kind(m.HEAPU8.buffer, ptr, values.length).set(values);
        return ptr;
      };
      const pxq = put(xq, n, Int8Array), pxs = put(xs, 4 * xs.length, Float32Array);
      const pwq = put(wq, d * n, Int8Array), pws = put(ws, 4 * ws.length, Float32Array);
      const out = m._malloc(4 * d);
      if (m._l2c_q8_matmul(out, pxq, pxs, pwq, pws, n, d, gs) !== 0) throw new Error('matmul');
      bits.push(Array.from(new Uint32Array(m.HEAPU8.buffer, out, d)));
      for (const ptr of [pxq, pxs, pwq, pws, out]) m._free(ptr);
    }
    results[label] = { kernel: m.int8Kernel, note: m.int8Note, bits };
  }
  return results;
}
"""

# (d, n, group size) as in tests/test_int8.py: every path of wasm/q8.h
SHAPES = [(64, 288, 32), (67, 768, 64), (13, 172, 4), (9, 64, 4), (6, 36, 6)]
KINDS = ["random", "all -127", "all 127"]


def kernel_cases() -> list[dict]:
    rng = np.random.default_rng(13)
    cases = []
    for d, n, gs in SHAPES:
        for kind in KINDS:
            if kind == "random":
                wq = rng.integers(-128, 128, (d, n)).astype(np.int8)
                xq = rng.integers(-127, 128, n).astype(np.int8)
            else:
                value = -127 if kind == "all -127" else 127
                wq, xq = np.full((d, n), value, np.int8), np.full(n, value, np.int8)
            ws = rng.uniform(1e-4, 0.05, (d, n // gs)).astype(np.float32)
            xs = rng.uniform(1e-3, 0.5, n // gs).astype(np.float32)
            cases.append({"d": d, "n": n, "gs": gs, "kind": kind, "xq": xq, "xs": xs, "wq": wq,
                          "ws": ws})
    return cases


def test_relaxed_fallback_and_native_kernels_agree_bit_for_bit(page, dev_server, test_site):
    cases = kernel_cases()
    native = [q8_matmul(c["xq"], c["xs"], c["wq"], c["ws"]).view(np.uint32).tolist()
              for c in cases]
    plain = [{k: (v.reshape(-1).tolist() if isinstance(v, np.ndarray) else v)
              for k, v in c.items()} for c in cases]
    engines = [["relaxed", "engine/llama2c-engine.mjs", True],
               ["fallback", "engine/llama2c-engine.mjs", False],
               ["relaxed-mt", "engine/llama2c-engine-mt.mjs", True],
               ["fallback-mt", "engine/llama2c-engine-mt.mjs", False]]
    page.goto(blank_page(dev_server, test_site))
    results = page.evaluate(KERNEL_JS, [engines, plain])
    for label, result in results.items():
        expected = "relaxed SIMD" if label.startswith("relaxed") else "SIMD128"
        assert result["kernel"] == expected, (label, result["note"])
        for case, want, got in zip(cases, native, result["bits"]):
            assert got == want, f"{label}: {case['d']}x{case['n']}, groups of {case['gs']}, " \
                                f"{case['kind']}"


def test_feature_detection_falls_back_without_relaxed_simd(page, dev_server, test_site):
    """A browser that does not validate relaxed SIMD gets the SIMD128 kernel, and says why."""
    page.goto(blank_page(dev_server, test_site))
    result = page.evaluate("""async () => {
      const { Engine } = await import(new URL('engine.js', location.href).href);
      const url = new URL('engine/llama2c-engine.mjs', location.href).href;
      const detected = await Engine.instantiate(url);
      const validate = WebAssembly.validate;
      WebAssembly.validate = () => false;  // what a browser without relaxed SIMD answers
      try {
        const without = await Engine.instantiate(url);
        return [[detected.int8Kernel, detected.int8Note], [without.int8Kernel, without.int8Note]];
      } finally {
        WebAssembly.validate = validate;
      }
    }""")
    assert result == [["relaxed SIMD", ""], ["SIMD128", "this browser has no relaxed SIMD"]]


def test_the_relaxed_kernel_never_touches_a_stack():
    """The relaxed module has no stack of its own, and must never need one: it shares the engine's
    memory, where wasm-ld's stack pointer for it (64 KB) lies inside the engine's own data, and every
    engine thread runs it at once. An array on its stack would overwrite the engine and race (the
    prepared input lives in engine memory for this reason: run.c allocates it)."""
    import subprocess

    from .pageutil import SITE
    modules = sorted((SITE / "engine").glob("*-relaxed.wasm"))
    assert len(modules) == 2, modules  # the single-thread engine's and the threaded one's
    for module in modules:
        text = subprocess.run(["wasm-dis", str(module)], capture_output=True, text=True,
                              check=True).stdout
        assert "dot_i8x16_i7x16" in text, module  # the kernel (binaryen 108 spells it its way)
        assert "__stack_pointer)" not in text.replace("(global $__stack_pointer", ""), module
