// The page's Web Worker: Pyodide, numpy, the llama2c package and the WebAssembly engine all live
// here, so the page never freezes. The generation loop is Python (llama2c.generate), the same code
// the command line runs; this file only loads things and pulls one piece of text at a time.
//
// Messages in:  {type: 'init'} | {type: 'load', model, tokenizer} | {type: 'generate', params}
//               | {type: 'stop'}
// Messages out: {type: 'progress', what, loaded, total} | {type: 'runtime', engine}
//               | {type: 'model', config, bytes} | {type: 'start'} | {type: 'piece', text}
//               | {type: 'done', stopped, report} | {type: 'error', message, during}

import { loadPyodide } from './pyodide/pyodide.mjs';
import { Engine } from './engine.js';

const BASE = new URL('.', import.meta.url);
const PYODIDE_URL = new URL('pyodide/', BASE).href;
// Threads need SharedArrayBuffer, which only a cross-origin isolated page has.
const ENGINE_URLS = {
  single: new URL('engine/llama2c-engine.mjs', BASE).href,
  threads: new URL('engine/llama2c-engine-mt.mjs', BASE).href,
};

let pyodide = null; // the Python runtime
let engine = null; // the WebAssembly engine
let session = null; // llama2c.browser.Session: model + tokenizer + generation in progress
let stopRequested = false;
let threadsWanted = 0; // 0 = automatic
let threaded = false;
let queue = Promise.resolve(); // messages run one after another

const post = (message) => self.postMessage(message);
const progress = (what, loaded, total) => post({ type: 'progress', what, loaded, total });

async function init(options) {
  threadsWanted = Number(options.threads) || 0;
  threaded = self.crossOriginIsolated && threadsWanted !== 1 &&
    (navigator.hardwareConcurrency || 1) > 1;
  progress('runtime', 0, 3);
  pyodide = await loadPyodide({ indexURL: PYODIDE_URL });
  progress('runtime', 1, 3);
  const lock = await (await fetch(new URL('pyodide-lock.json', PYODIDE_URL))).json();
  await pyodide.loadPackage(['numpy', 'llama2c'], { messageCallback: () => {} });
  if (!lock.packages.llama2c) throw new Error('pyodide-lock.json has no llama2c package');
  progress('runtime', 2, 3);
  engine = await Engine.create(threaded ? ENGINE_URLS.threads : ENGINE_URLS.single);
  progress('runtime', 3, 3);
  post({ type: 'runtime', engine: engineLabel(1) });
}

function engineLabel(threads) {
  const kind = threaded ? 'WebAssembly SIMD + threads' : 'WebAssembly SIMD';
  return `${kind}, ${threads} thread${threads === 1 ? '' : 's'}`;
}

/** Fetches `url` (or reads a File/Blob) and hands each chunk to `sink(offset, chunk)`. */
async function download(source, what, begin, sink) {
  let body, total;
  if (source instanceof Blob) {
    body = source.stream();
    total = source.size;
  } else {
    let response;
    try {
      response = await fetch(source);
    } catch (e) {
      throw new Error(`could not download the ${what} from ${source}: ${e.message}`);
    }
    if (!response.ok) {
      throw new Error(`could not download the ${what} from ${source}: HTTP ${response.status} ` +
        `${response.statusText}`.trim());
    }
    body = response.body;
    total = Number(response.headers.get('Content-Length')) || 0;
  }
  const chunks = [];
  let loaded = 0;
  const reader = body.getReader();
  const direct = total > 0 ? begin(total) : false; // write in place when the size is known
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (direct) sink(loaded, value);
    else chunks.push(value);
    loaded += value.length;
    progress(what, loaded, total);
  }
  if (direct && loaded !== total) throw new Error(`the ${what} download ended early`);
  if (!direct) {
    begin(loaded);
    let offset = 0;
    for (const chunk of chunks) {
      sink(offset, chunk);
      offset += chunk.length;
    }
  }
  return loaded;
}

async function loadModel(modelSource, tokenizerSource) {
  if (session) {
    session.destroy();
    session = null;
  }
  const bytes = await download(modelSource, 'model', (size) => {
    engine.allocate(size);
    return true;
  }, (offset, chunk) => engine.write(offset, chunk));
  engine.load(); // throws the engine's message for a truncated or corrupt checkpoint
  const threads = threaded ? engine.setThreads(threadsWanted) : 1;
  let tokenizer = null;
  await download(tokenizerSource, 'tokenizer', (size) => {
    tokenizer = new Uint8Array(size);
    return true;
  }, (offset, chunk) => tokenizer.set(chunk, offset));
  const browser = pyodide.pyimport('llama2c.browser');
  try {
    session = browser.Session(engine, tokenizer);
  } finally {
    browser.destroy();
  }
  const [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len, shared] =
    engine.configList();
  post({
    type: 'model',
    bytes,
    engine: engineLabel(threads),
    config: { dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
      shared_classifier: !!shared, format: 'fp32' },
  });
}

/** Lets queued messages (Stop) run between two tokens. */
const yieldToEvents = () => new Promise((resolve) => {
  const channel = new MessageChannel();
  channel.port1.onmessage = () => resolve();
  channel.port2.postMessage(null);
});

async function generate(params) {
  if (!session) throw new Error('no model is loaded');
  stopRequested = false;
  const options = pyodide.toPy(params);
  let seed;
  try {
    seed = session.start(options);
  } finally {
    options.destroy();
  }
  post({ type: 'start', seed: String(seed) });
  for (;;) {
    const text = session.step();
    if (text === undefined || text === null) break;
    if (text) post({ type: 'piece', text });
    await yieldToEvents();
    if (stopRequested) break;
  }
  const report = session.report().toJs({ dict_converter: Object.fromEntries });
  post({ type: 'done', stopped: stopRequested, report });
}

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === 'stop') {
    stopRequested = true; // seen by the running loop after its current token
    return;
  }
  queue = queue.then(async () => {
    try {
      if (message.type === 'init') await init(message);
      else if (message.type === 'load') await loadModel(message.model, message.tokenizer);
      else if (message.type === 'generate') await generate(message.params);
    } catch (e) {
      const text = String(e && e.message ? e.message : e);
      post({ type: 'error', during: message.type, message: pythonMessage(text) });
    }
  });
};

/** The last line of a Python traceback is the useful part: "TokenizerError: ...". */
function pythonMessage(text) {
  if (!text.includes('Traceback')) return text;
  const lines = text.trim().split('\n');
  return lines[lines.length - 1].replace(/^llama2c\.errors\.\w+: |^\w+Error: /, '');
}
