// web/engine.js's download limits, under node with the page's WebAssembly engine: for each size
// given, what allocate() does, and how many times it called malloc. Prints one JSON object.
//
//   node engine_limits.mjs ENGINE_MJS_URL SIZE...
import { readFileSync } from 'node:fs';
import { Engine } from '../../web/engine.js';

const [engineUrl, ...sizes] = process.argv.slice(2);
const factory = (await import(engineUrl)).default;
const m = await factory({ wasmBinary: readFileSync(new URL(engineUrl.replace(/\.mjs$/, '.wasm'))) });
let mallocs = 0;
m._free(m._malloc(1)); // emcc binds its exports on first call, replacing Module._malloc: do it now
const malloc = m._malloc;
m._malloc = (n) => { mallocs += 1; return malloc(n); };

const results = { maxBytes: new Engine(m).maxBytes(), cases: [] };
for (const text of sizes) {
  const size = Number(text);
  const engine = new Engine(m);
  const before = mallocs;
  let outcome;
  try {
    engine.allocate(size);
    outcome = `allocated ${engine.size}`;
    engine.free();
  } catch (e) {
    outcome = `${e.constructor.name}: ${e.message}`;
  }
  results.cases.push({ size: text, outcome, mallocs: mallocs - before });
}
console.log(JSON.stringify(results));
