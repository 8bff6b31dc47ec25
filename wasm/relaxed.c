/*
 * The int8 kernel of wasm/q8.h built with WebAssembly relaxed SIMD (i32x4.relaxed_dot_i8x16_i7x16
 * _add): 16 int8 products in one instruction instead of five. Emscripten 3.1.6 cannot emit relaxed
 * SIMD, so clang builds this file on its own (tasks.py), as a module with no libc, no stack and no
 * data that imports the engine's memory and exports one function. The engine calls it through
 * wasm/relaxed_glue.js when the browser validates the module and its results pass a self-test
 * (l2c_use_relaxed_kernel in run.c); otherwise the engine's own SIMD128 kernel runs.
 */

#define Q8_RELAXED 1
#include "q8.h"

__attribute__((export_name("rows"))) void rows(float* out, const int8_t* xq,
                                               const unsigned char* prepared, const float* xs,
                                               const int8_t* wq, const float* ws, int n, int gs,
                                               int begin, int end) {
    q8_matmul_rows(out, xq, prepared, xs, wq, ws, n, gs, begin, end);
}
