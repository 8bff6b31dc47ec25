// The WebAssembly engine's verdict on each checkpoint file, under node: the same steps and output
// as tests/c/verdicts.c, which tests/test_hostile_headers.py compares line by line.
//
//   node verdicts.mjs ENGINE_MJS_URL FILE...
// The ES6 build needs its .wasm handed over (wasmBinary): under node it cannot fetch it itself.
import { readFileSync } from 'node:fs';

const [engineUrl, ...files] = process.argv.slice(2);
const factory = (await import(engineUrl)).default;
const m = await factory({ wasmBinary: readFileSync(new URL(engineUrl.replace(/\.mjs$/, '.wasm'))) });
const lastError = () => m.UTF8ToString(m._l2c_last_error());

const lines = [];
for (const file of files) {
  const bytes = readFileSync(file);
  const data = m._malloc(Math.max(bytes.length, 1));
  if (!data) throw new Error(`no memory for ${file}`);
  m.HEAPU8.set(bytes, data);
  const config = m._malloc(7 * 4);
  let rc = m._l2c_check(data, bytes.length, config);
  const [vocab, seqLen] = [m.HEAP32[(config >> 2) + 5], m.HEAP32[(config >> 2) + 6]];
  m._free(config);
  let engine = 0;
  if (rc === 0) {
    engine = m._l2c_load(data, bytes.length);
    rc = engine ? 0 : m._l2c_last_error_code();
  }
  if (engine) {
    let hash = 1469598103934665603n;
    const mask = (1n << 64n) - 1n;
    for (const pos of [0, seqLen - 1]) {
      const logits = m._l2c_forward(engine, 1 % vocab, pos);
      if (!logits) {
        rc = m._l2c_last_error_code();
        break;
      }
      if (pos !== 0) continue; // only position 0 is bit-identical across libms (verdicts.c)
      const values = m.HEAPF32.subarray(logits >> 2, (logits >> 2) + vocab);
      const words = new Uint32Array(values.buffer, values.byteOffset, vocab);
      for (let j = 0; j < vocab; j++) {
        const word = Number.isNaN(values[j]) ? 0x7fc00000 : words[j]; // as verdicts.c counts NaNs
        hash = ((hash ^ BigInt(word)) * 1099511628211n) & mask;
      }
    }
    if (rc === 0) lines.push(`0\tok ${hash.toString(16).padStart(16, '0')}`);
    m._l2c_free(engine);
  }
  if (rc !== 0) lines.push(`${rc}\t${lastError()}`);
  m._free(data);
}
process.stdout.write(lines.map((line) => `${line}\n`).join(''));
