// The WebAssembly engine (wasm/run.c built by emcc), wrapped for the worker.
//
// The checkpoint is written straight into WebAssembly memory as it downloads (one copy of the
// weights, no second ArrayBuffer), then the engine reads it in place. forward() returns a
// Float32Array view of the engine's logits, which Python copies into numpy once.

export class EngineError extends Error {}

/** WebAssembly memory's limit for the engine: tasks.py builds it with MAXIMUM_MEMORY=4GB. */
const WASM_MAX_MEMORY = 2 ** 32;

export class Engine {
  /** Instantiates the module at `moduleUrl` (an emcc MODULARIZE + EXPORT_ES6 build). One module
   *  holds any number of models: make an Engine on it for each. */
  static async instantiate(moduleUrl, { relaxed = true, cores = 0 } = {}) {
    const kernel = relaxed ? fetchRelaxedKernel(moduleUrl) : null; // meanwhile
    const factory = (await import(moduleUrl)).default;
    // cores sizes the threaded build's pool of workers (0: this context's hardwareConcurrency)
    const module = await factory({ locateFile: (file) => new URL(file, moduleUrl).href, cores });
    module.int8Note = relaxed ? useRelaxedKernel(module, await kernel) : 'relaxed=0 in the URL';
    module.int8Kernel = module.UTF8ToString(module._l2c_int8_kernel());
    module.engineUrl = moduleUrl; // RoPE tables sit beside it
    return module;
  }

  constructor(module) {
    this.m = module;
    this.handle = 0; // l2c engine pointer
    this.data = 0; // checkpoint bytes in WebAssembly memory
    this.size = 0;
    this.vocabSize = 0;
    this.scratch = 0; // expf's buffer
    this.scratchSize = 0;
    this.drawBuffers = 0; // draw()'s: logits, then ids and sums (n each), then its work
    this.rope = 0; // RoPE's table in WebAssembly memory
    this.logits = 0; // the last forward()'s logits in WebAssembly memory
  }

  lastError() {
    return this.m.UTF8ToString(this.m._l2c_last_error());
  }

  /** The most checkpoint bytes this engine could still take: WebAssembly memory ends at 4 GiB
   *  (the build's MAXIMUM_MEMORY), and what is already in use is not free. */
  maxBytes() {
    return WASM_MAX_MEMORY - this.m.HEAPU8.length;
  }

  /** The error for a checkpoint of `size` bytes, or of more than `size` when `more` (a download
   *  of unknown length that passed the limit). */
  static tooLarge(size, more = false) {
    return new EngineError(
      `the model is too large for this browser: ${more ? 'more than ' : ''}` +
        `${(size / 1e6).toFixed(0)} MB does not fit in WebAssembly memory (at most 4 GB, weights ` +
        'and KV cache together)');
  }

  /** Frees any loaded model, then reserves `size` bytes for the next checkpoint. A size the engine
   *  cannot hold is refused before malloc: malloc takes a 32-bit size, so 2^32 + 16 bytes would
   *  wrap to a 16-byte block that the download then writes past. */
  allocate(size) {
    this.free();
    if (!Number.isSafeInteger(size) || size < 0 || size > this.maxBytes()) throw Engine.tooLarge(size);
    const ptr = this.m._malloc(Math.max(size, 1));
    if (!ptr) throw Engine.tooLarge(size);
    this.data = ptr;
    this.size = size;
  }

  /** Copies a downloaded chunk into the reserved buffer at `offset`. */
  write(offset, chunk) {
    if (offset + chunk.length > this.size) throw new EngineError('model larger than announced');
    this.m.HEAPU8.set(chunk, this.data + offset); // HEAPU8 is re-read: memory may have grown
  }

  /** Validates the checkpoint written so far without loading it. Throws with the engine's
   *  message for a truncated or corrupt checkpoint. */
  check() {
    if (this.m._l2c_check(this.data, this.size, 0) !== 0) this.failLoading();
  }

  /** Validates and loads the checkpoint written so far. Throws with the engine's message. From
   *  here on the buffer is the engine's: its fp32 matrices are rearranged in place. */
  load() {
    this.handle = this.m._l2c_load(this.data, this.size);
    if (!this.handle) this.failLoading();
    this.vocabSize = this.config().vocab_size;
  }

  /** Frees the checkpoint that failed check() or load() and throws the engine's message. */
  failLoading() {
    const message = this.lastError();
    this.free();
    throw new EngineError(message);
  }

  /** The loaded model, by name: its header (llama2c.checkpoint.Config's fields, with a positive
   *  vocab_size), shared_classifier (bool), format ('fp32' or 'int8') and group_size (int8). */
  config() {
    const out = this.m._malloc(7 * 4);
    try {
      this.m._l2c_config(this.handle, out); // the 7 ints of run.c's Config, in its order
      const [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] =
        this.m.HEAP32.subarray(out >> 2, (out >> 2) + 7);
      return {
        dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
        shared_classifier: this.m._l2c_shared_classifier(this.handle) === 1,
        format: this.m._l2c_format(this.handle) === 2 ? 'int8' : 'fp32',
        group_size: this.m._l2c_group_size(this.handle),
      };
    } finally {
      this.m._free(out);
    }
  }

  /**
   * Makes the loaded model's RoPE use run.c's cos and sin (glibc's, written by the native engine
   * at build time: engine/rope-<head size>.bin) instead of this engine's libm (musl), whose last
   * bit differs for a few percent of angles; then the logits are the command line's, bit for bit.
   * Returns what the page shows about it.
   */
  async useRopeTable() {
    const { dim, n_heads: heads, seq_len: seqLen } = this.config();
    const headSize = dim / heads;
    // engine/rope.json lists the tables the build wrote: {head size: positions}
    this.m.ropeTables ??= fetch(new URL('rope.json', this.m.engineUrl))
      .then((r) => (r.ok ? r.json() : {}), () => ({}));
    const tables = await this.m.ropeTables;
    // fetched once per module: later models of this head size (a local file too) reuse it
    this.m.ropeFiles ??= {};
    if (tables[headSize] && !this.m.ropeFiles[headSize]) {
      this.m.ropeFiles[headSize] = fetch(new URL(`rope-${headSize}.bin`, this.m.engineUrl))
        .then((r) => (r.ok ? r.arrayBuffer() : null), () => null);
    }
    const buffer = tables[headSize] ? await this.m.ropeFiles[headSize] : null;
    if (!buffer) {
      return `RoPE: this browser's sin/cos, no table for head size ${headSize} (logits may ` +
        "differ from the command line's in the last bit)";
    }
    const bytes = new Uint8Array(buffer);
    const positions = Math.floor(bytes.length / (4 * headSize));
    this.rope = this.m._malloc(bytes.length);
    this.m.HEAPU8.set(bytes, this.rope);
    if (this.m._l2c_use_rope_table(this.handle, this.rope, headSize, positions) !== 0) {
      throw new EngineError(this.lastError());
    }
    if (positions >= seqLen) return "RoPE: run.c's sin/cos";
    return `RoPE: run.c's sin/cos to position ${positions}, then this browser's`;
  }

  /** The thread count that pays for this model with `cores` cores for its engine. */
  autoThreads(cores) {
    return this.m._l2c_auto_threads(this.handle, cores);
  }

  /** Uses n threads (0: as many as pay off here); returns the count in use. */
  setThreads(n) {
    return this.m._l2c_set_threads(this.handle, n);
  }

  forward(token, pos) {
    const ptr = this.m._l2c_forward(this.handle, token, pos);
    if (!ptr) throw new EngineError(this.lastError());
    this.logits = ptr;
    return this.m.HEAPF32.subarray(ptr >> 2, (ptr >> 2) + this.vocabSize);
  }

  /** C's expf over float32 values (the sampler's softmax): a Float32Array, or a PyProxy of a
   *  numpy array, read in place. Returns a view of engine memory, valid until the next call. */
  expf(values) {
    const buffer = values.getBuffer ? values.getBuffer('f32') : null; // Python memory, no copy
    try {
      const input = buffer ? buffer.data : values;
      const n = input.length;
      if (this.scratchSize < n) {
        if (this.scratch) this.m._free(this.scratch);
        this.scratch = this.m._malloc(8 * n); // n inputs, then n outputs
        this.scratchSize = n;
      }
      const start = this.scratch >> 2;
      this.m.HEAPF32.set(input, start);
      this.m._l2c_expf(this.scratch, this.scratch + 4 * n, n);
      return this.m.HEAPF32.subarray(start + n, start + 2 * n);
    } finally {
      if (buffer) buffer.release();
    }
  }

  /**
   * The sampler's top-p draw (llama2c.sampler.choose of its nucleus, which define it): run.c's
   * list of candidates at `temperature` and `topp` (l2c_nucleus), then the token `coin` picks
   * from it (l2c_choose), in one call from Python: after a forward pass has filled the caches, each
   * call into numpy or across to JavaScript costs tens of microseconds.
   * The logits are `logits` (a PyProxy of a float32 numpy array, read in place), or without them
   * the last forward()'s where the engine keeps them. `negligible` and `tiny` are the sampler's
   * NEGLIGIBLE and TINY. Returns the token, or -1 where the engine leaves the choice to numpy (a
   * logit that is not finite).
   */
  draw(logits, temperature, topp, coin, negligible, tiny) {
    const n = this.vocabSize;
    const input = this.logitsFor(logits);
    const ids = this.drawBuffers + 4 * n;
    const sums = ids + 4 * n;
    const count = this.m._l2c_nucleus(input, n, temperature, topp, negligible, tiny, ids, sums,
                                      sums + 4 * n);
    if (count < 0) throw new EngineError(this.lastError());
    return count === 0 ? -1 : this.m._l2c_choose(ids, sums, count, coin);
  }

  /** The sampler's greedy choice (l2c_argmax; llama2c.sampler.sample_argmax defines it) from
   *  `logits` as draw() takes them. Returns the token, or -1 for a NaN (numpy decides). */
  argmax(logits) {
    const token = this.m._l2c_argmax(this.logitsFor(logits), this.vocabSize);
    if (token < -1) throw new EngineError(this.lastError());
    return token;
  }

  /** Where draw() and argmax() read their logits: Python's copy, written into engine memory, or
   *  without one the last forward()'s. Makes the sampler's buffers on first use. */
  logitsFor(logits) {
    const n = this.vocabSize;
    if (!this.drawBuffers) {
      this.drawBuffers = this.m._malloc(12 * n + this.m._l2c_nucleus_work_size(n));
      if (!this.drawBuffers) throw new EngineError('out of memory for the sampler');
    }
    if (!logits) { // Python's None arrives as undefined
      if (!this.logits) throw new EngineError('no logits yet: forward() first');
      return this.logits;
    }
    const buffer = logits.getBuffer('f32');
    try {
      if (buffer.data.length !== n) throw new EngineError(`${buffer.data.length} logits, not ${n}`);
      this.m.HEAPF32.set(buffer.data, this.drawBuffers >> 2);
    } finally {
      buffer.release();
    }
    return this.drawBuffers;
  }

  free() {
    if (this.drawBuffers) this.m._free(this.drawBuffers);
    this.drawBuffers = 0;
    if (this.scratch) this.m._free(this.scratch);
    this.scratch = this.scratchSize = 0;
    if (this.handle) this.m._l2c_free(this.handle);
    if (this.data) this.m._free(this.data);
    if (this.rope) this.m._free(this.rope);
    this.handle = this.data = this.size = this.rope = this.logits = 0;
  }
}

// -- the int8 kernel ---------------------------------------------------------------------------

/** The relaxed-SIMD int8 kernel built beside the engine (wasm/relaxed.c), as bytes, or a reason
 *  why not. */
async function fetchRelaxedKernel(moduleUrl) {
  const url = moduleUrl.replace(/\.mjs$/, '-relaxed.wasm');
  try {
    const response = await fetch(url);
    if (!response.ok) return `no relaxed kernel (HTTP ${response.status})`;
    return new Uint8Array(await response.arrayBuffer());
  } catch (e) {
    return `no relaxed kernel (${e.message})`;
  }
}

/**
 * Feature detection: the browser validates the module only if it knows relaxed SIMD. Then the
 * engine checks its results against its own kernel bit for bit before it switches. The bytes stay
 * in engine memory: every engine thread instantiates the kernel from them. Returns why the
 * relaxed kernel is not in use, or '' when it is.
 */
function useRelaxedKernel(module, bytes) {
  if (typeof bytes === 'string') return bytes;
  if (!WebAssembly.validate(bytes)) return 'this browser has no relaxed SIMD';
  const ptr = module._malloc(bytes.length);
  module.HEAPU8.set(bytes, ptr);
  if (module._l2c_use_relaxed_kernel(ptr, bytes.length)) return '';
  module._free(ptr);
  return 'the relaxed kernel failed its self-test';
}
