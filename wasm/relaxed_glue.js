// Emscripten JS library (emcc --js-library): how the engine calls the relaxed-SIMD int8 kernel,
// wasm/relaxed.c, a separate WebAssembly module that shares the engine's memory.
//
// Each thread has its own instances (the page's worker, and every pthread worker of the threaded
// build), so each compiles and instantiates the kernel the first time it needs it, from the bytes
// the engine keeps in its own memory (l2c_use_relaxed_kernel). Compiling synchronously is fine
// here: this always runs in a worker, and the module is 4 KB. After that a call costs one
// WebAssembly -> JavaScript -> WebAssembly hop per block of rows (about 43 a token on one thread).
mergeInto(LibraryManager.library, {
  l2c_relaxed_rows: function (module, moduleSize, out, xq, prepared, xs, wq, ws, n, gs, begin,
    end) {
    var rows = Module['l2cRelaxedRows'];
    if (!rows) {
      var bytes = HEAPU8.slice(module, module + moduleSize); // a copy: not a shared buffer
      var instance = new WebAssembly.Instance(new WebAssembly.Module(bytes),
        { env: { memory: wasmMemory } });
      rows = Module['l2cRelaxedRows'] = instance.exports['rows'];
    }
    rows(out, xq, prepared, xs, wq, ws, n, gs, begin, end);
  },
});
