// The Web Worker behind the page and the widgets: Pyodide, numpy, the llama2c package and the
// WebAssembly engine all live here, so the page never freezes. The generation loop is Python
// (llama2c.generate / llama2c.chat), the same code the command line runs; this file only loads
// things and pulls one piece of text at a time.
//
// One worker serves every client on a page (the page, or several widgets): each message carries a
// `client` id, each model is downloaded and loaded once, and requests run one after another.
// web/client.js is the other end of this protocol; nothing else speaks it.
//
// Requests carry an `id`, and each gets exactly one answer: {type: 'result', id, value} or
// {type: 'failure', id, during, message}.
//   {type: 'init', threads, cores, relaxed}            (cores: the page's hardwareConcurrency;
//                                                      relaxed false: the SIMD128 int8 kernel)
//   {type: 'load', client, model, tokenizer}          -> {config, bytes, engine, cache}
//   {type: 'generate', client, params, stopFlag?}     -> a Turn (below)
//   {type: 'reply', client, text}                     -> a Turn: the chat goes on with this line
//   {type: 'finish', client}                          -> a Turn: ends a chat that waits for a line
//   {type: 'cache-state', urls}                       -> {cached: [bool], usage, quota}
//   {type: 'clear-cache'}                             -> null
// A Turn is {status: 'done' | 'waiting', guide?, stopped, report}: generation runs until the story
// ends or chat waits for a line (`guide` is what it printed, e.g. "User: ").
// {type: 'stop', client} has no answer and skips the queue: it ends the reply in progress after its
// current token (stopFlag: a SharedArrayBuffer whose first int32 the client adds 1 to on each Stop
// does the same without waiting for this worker's message loop). In chat, Stop ends the reply and chat asks for
// the next line; in a story, it ends the story.
// Events: {type: 'progress', client?, what, loaded, total, cached} | {type: 'runtime', engine}
//      | {type: 'start', client, seed} | {type: 'piece', client, text, view?}
//      | {type: 'error', during: 'init', message}

import { loadPyodide } from './pyodide/pyodide.mjs';
import { Engine, EngineError } from './engine.js';

const BASE = new URL('.', import.meta.url);
const PYODIDE_URL = new URL('pyodide/', BASE).href;
const ENGINE_URLS = {
  single: new URL('engine/llama2c-engine.mjs', BASE).href,
  threads: new URL('engine/llama2c-engine-mt.mjs', BASE).href, // needs SharedArrayBuffer
};
const MODEL_CACHE = 'llama2c-models-v1'; // Cache Storage: downloaded models and tokenizers
const RUNTIME_CACHE = 'llama2c-runtime-v1'; // Cache Storage: Python's memory right after it booted
const PACKAGES = ['numpy', 'llama2c']; // the wheels Python gets (pyodide-lock.json names them)

let pyodide = null; // the Python runtime
let engineModule = null; // the WebAssembly module; each model is an Engine on it
let runtimeReady = null; // a Promise, made by init: Pyodide with numpy and llama2c loaded
let engineReady = null; // a Promise, made by init: engineModule instantiated
let threaded = false;
let threadsWanted = 0; // 0 = automatic
// How Python started, in the report: 'restored' from its snapshot; booted and 'saved' one; booted
// after the saved one failed and 'replaced' it ('unusable' until the new one is kept); or 'none'.
let snapshotState = 'none';
let cores = 1; // the machine's, as the page sees them
const models = new Map(); // model URL + tokenizer URL -> Promise of {engine, session, ...}
const clients = new Map(); // client id -> the model entry it uses
let running = null; // the turn in progress: {client, session, chat, flag, stop, ...}
let queue = Promise.resolve(); // messages run one after another

const post = (message) => self.postMessage(message);

// How long each start-up step took, in ms (in the 'done' report: `invoke bench` prints them).
// Steps overlap: the engine and the model load while Python starts. A synchronous step is timed
// as soon as it returns, so that nothing else queued on this thread counts in it; a step that
// waits (a fetch, a read) also waits while Python's start holds the thread.
const startup = {};
async function timed(step, work) {
  const began = performance.now();
  const done = () => {
    startup[step] = performance.now() - began;
    startup[`${step} ends at`] = performance.now(); // since the worker started
  };
  let result;
  try {
    result = work();
  } finally {
    if (!(result instanceof Promise)) done(); // returned or threw: timed now
  }
  return result instanceof Promise ? result.finally(done) : result;
}

// -- the runtime ----------------------------------------------------------------------------

/** Files the runtime fetches, prefetched for a progress bar in bytes (the HTTP cache keeps them for
 *  Pyodide and the engine, which fetch them again: 304s on a second visit). */
function runtimeFiles(lock) {
  const engine = threaded ? ENGINE_URLS.threads : ENGINE_URLS.single;
  return [
    new URL('pyodide.asm.wasm', PYODIDE_URL),
    new URL('pyodide.asm.js', PYODIDE_URL),
    new URL('python_stdlib.zip', PYODIDE_URL),
    ...PACKAGES.map((name) => new URL(lock.packages[name].file_name, PYODIDE_URL)),
    new URL(engine.replace(/\.mjs$/, '.wasm')),
  ].map(String);
}

/**
 * Starts the engine and the Python runtime without waiting for them, so that a model named in the
 * next message downloads (or comes out of the cache) while Python starts: loading a model waits
 * for the engine, and only its last step, the tokenizer, waits for Python.
 */
function init(options) {
  threadsWanted = Number(options.threads) || 0;
  // Threads need SharedArrayBuffer (a cross-origin isolated page) and pthread workers, which a
  // worker may only start from its own origin.
  const sameOrigin = new URL(self.location.href).origin === BASE.origin;
  // Automatic: the engine gets every core but one, which the browser and the page keep (on two
  // cores, two compute threads measured slower than one: `invoke bench`), and the threaded build
  // only when that leaves it more than one. The page sends its navigator.hardwareConcurrency.
  cores = Number(options.cores) || navigator.hardwareConcurrency || 1;
  const wanted = threadsWanted || cores - 1;
  threaded = self.crossOriginIsolated && sameOrigin && wanted > 1 && cores > 1;
  const relaxed = options.relaxed !== false; // relaxed=0 in the URL forces the SIMD128 kernel
  engineReady = timed('engine instantiate', () => Engine.instantiate(
    threaded ? ENGINE_URLS.threads : ENGINE_URLS.single, { relaxed, cores }))
    .then((module) => { engineModule = module; });
  runtimeReady = startPython();
  Promise.all([engineReady, runtimeReady]).then(
    () => post({ type: 'runtime', engine: engineLabel(1) }),
    (e) => post({ type: 'error', during: 'init', message: String(e && e.message ? e.message : e) }));
}

/**
 * Starts Pyodide with numpy and llama2c, and imports the package (numpy's import is most of that),
 * so that a model's Session only has its tokenizer left to read. Pyodide boots from its memory
 * snapshot when this browser saved one (below). A download of the same files runs beside it for a
 * progress bar in bytes (the browser's HTTP cache serves both from one download).
 */
async function startPython() {
  const lock = await (await fetch(new URL('pyodide-lock.json', PYODIDE_URL))).json();
  if (!lock.packages.llama2c) throw new Error('pyodide-lock.json lists no llama2c package');
  const wheels = fetchWheels(lock);
  const [download, start] = await Promise.allSettled([
    showRuntimeProgress(runtimeFiles(lock)),
    (async () => {
      const snapshots = await openCache(RUNTIME_CACHE); // null: nothing can be kept
      const key = snapshotKey(lock);
      const saved = snapshots && await savedSnapshot(snapshots, key);
      if (saved) {
        try {
          await startRuntime(wheels, { _loadSnapshot: saved.bytes });
          snapshotState = 'restored';
          return;
        } catch {
          snapshotState = 'unusable'; // never tried again: boot as usual and save a new one
          await snapshots.delete(key).catch(() => false);
        }
      }
      await startRuntime(wheels, snapshots ? { _makeSnapshot: true } : {},
        snapshots && ((py) => saveSnapshot(py, snapshots, key)));
    })(),
  ]);
  // A failed download explains a failure best ("HTTP 404"), so it is reported first.
  for (const result of [download, start]) if (result.status === 'rejected') throw result.reason;
}

/** Boots Pyodide (`options`: a snapshot to restore, or to make one), then installs the `wheels`
 *  (fetchWheels) and imports llama2c. `save(pyodide)`, when given, keeps a snapshot of Python as
 *  it is before any package loads. */
async function startRuntime(wheels, options, save = null) {
  pyodide = await timed('pyodide boot', () => loadPyodide({ indexURL: PYODIDE_URL, ...options }));
  if (save) save(pyodide);
  // Unpacked, not pyodide.loadPackage: that compiles every shared library in numpy's wheel (7.4
  // MB of WebAssembly, random and fft too, which llama2c never imports) before Python starts
  // importing; unpacked, Python loads the two it needs when it imports them. Load and import took
  // 0.54 s instead of 0.73 s (six paired rounds in Chromium's worker).
  await timed('numpy + llama2c load', async () => {
    const sitePackages = pyodide.runPython('import site; site.getsitepackages()[0]');
    for (const bytes of await Promise.all(wheels)) {
      pyodide.unpackArchive(bytes, 'wheel', { extractDir: sitePackages });
    }
  });
  await timed('llama2c import', () => pyodide.pyimport('llama2c.browser'));
}

/** Starts downloading the wheels of numpy and llama2c (while Pyodide boots): a Promise of each
 *  one's bytes, checked against the sha256 in pyodide-lock.json. */
function fetchWheels(lock) {
  const wheels = PACKAGES.map(async (name) => {
    const url = new URL(lock.packages[name].file_name, PYODIDE_URL);
    const digest = lock.packages[name].sha256.match(/../g).map((hex) => parseInt(hex, 16));
    const integrity = `sha256-${btoa(String.fromCharCode(...digest))}`;
    let response;
    try {
      response = await fetch(url, { integrity });
    } catch (e) {
      throw new Error(`could not load ${url}: ${e.message} (a network error, or its sha256 is ` +
        'not the one pyodide-lock.json lists)');
    }
    if (!response.ok) throw new Error(`could not load ${url}: HTTP ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  });
  wheels.forEach((wheel) => wheel.catch(() => {})); // startRuntime reports it
  return wheels;
}

// -- the runtime's memory snapshot ---------------------------------------------------------
// Pyodide 0.27's (experimental) memory snapshot is Python's memory right after it booted, before
// any package: a later visit restores it instead of booting. Measured on warm loads in paired
// rounds: the boot takes 0.45-0.7 s instead of 1.7-2.2 s, and the first token comes 0.70x as
// late (0.56-0.83); numpy's load and import cost the same either way. Pyodide refuses a snapshot
// taken once numpy is loaded, so only the boot is saved. It lives in RUNTIME_CACHE (21 MB) under
// a key naming Pyodide's version and the packages' sha256, so a new Pyodide or wheel makes a new
// one, and Pyodide itself refuses one from another build. Any failure falls back to a boot.

/** This runtime's snapshot key: Pyodide's version and the packages the worker loads. */
function snapshotKey(lock) {
  const sums = PACKAGES.map((name) => lock.packages[name].sha256.slice(0, 16));
  return new URL(`snapshot-${lock.info.version}-${sums.join('-')}.bin`, PYODIDE_URL).href;
}

/** The saved snapshot, {bytes: a Promise of them, read while Pyodide's own files load}, or null. */
async function savedSnapshot(snapshots, key) {
  const response = await snapshots.match(key).catch(() => undefined);
  if (!response) return null;
  const size = Number(response.headers.get('Content-Length'));
  const bytes = response.arrayBuffer().then((buffer) => {
    if (buffer.byteLength !== size) throw new Error('the snapshot is truncated');
    return new Uint8Array(buffer);
  });
  bytes.catch(() => {}); // loadPyodide rejects with it
  return { bytes }; // not the Promise itself, which an async function's caller would wait for
}

// The snapshot is made right after the boot (before numpy loads) but written to Cache Storage only
// after the first token, or SNAPSHOT_WRITE_WAIT_MS without one: its 21 MB write beside the model's
// held a cold start up (first token 0.09 s sooner, medians of three sets of six paired cold loads).
const SNAPSHOT_WRITE_WAIT_MS = 10000;
let firstTokenCame;
const firstToken = new Promise((resolve) => { firstTokenCame = resolve; });

/** Saves a booted Pyodide's snapshot in place of any other runtime's, once the first token came.
 *  One that cannot be made or kept (quota) is only missing next time. */
function saveSnapshot(py, snapshots, key) {
  let bytes;
  try {
    bytes = py.makeMemorySnapshot();
  } catch {
    return;
  }
  const headers = { 'Content-Length': String(bytes.length) };
  (async () => {
    const timeout = new Promise((wait) => setTimeout(wait, SNAPSHOT_WRITE_WAIT_MS));
    await Promise.race([firstToken, timeout]);
    for (const old of await snapshots.keys()) await snapshots.delete(old);
    await snapshots.put(key, new Response(bytes, { headers }));
    snapshotState = snapshotState === 'unusable' ? 'replaced' : 'saved';
  })().catch(() => {});
}

/** Reads the runtime's `files` once, posting progress as bytes arrive. Throws for an HTTP error.
 *  Files the offline copy (sw.js) keeps come from disk: reading them here too was measured to
 *  cost a warm load a tenth of its time to the first token (0.90x without, paired rounds). */
async function showRuntimeProgress(files) {
  const kept = await Promise.all(files.map((file) => (self.caches
    ? caches.match(file).then(Boolean, () => false) : false)));
  files = files.filter((_, i) => !kept[i]);
  // Start every download at once: their Content-Lengths give the total before any body is read.
  const responses = await Promise.all(files.map((file) => fetch(file)));
  const failed = responses.find((response) => !response.ok);
  if (failed) throw new Error(`could not load ${failed.url}: HTTP ${failed.status}`);
  const total = responses.reduce((sum, r) => sum + (Number(r.headers.get('Content-Length')) || 0), 0);
  let loaded = 0;
  for (const response of responses) {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      loaded += value.length;
      post({ type: 'progress', what: 'runtime', loaded, total });
    }
  }
}

function engineLabel(threads, format = 'fp32') {
  const kind = threaded ? 'WebAssembly SIMD + threads' : 'WebAssembly SIMD';
  let label = `${kind}, ${threads} thread${threads === 1 ? '' : 's'}`;
  if (format === 'int8') { // which kernel runs, and why not the relaxed one
    const note = engineModule.int8Note;
    label += `; int8 kernel: ${engineModule.int8Kernel}${note ? ` (${note})` : ''}`;
  }
  return label;
}

// -- downloads ------------------------------------------------------------------------------

/**
 * Streams a URL or a local File into `sink(offset, chunk)` after `begin(size)`, with progress.
 * URLs go through Cache Storage: a second visit reads the model without downloading it. Returns
 * {bytes, cache}: `cache` is a Promise of the cache state the page shows ('cached', 'stored', or
 * why not: when the storage quota is exceeded the bytes still arrive).
 */
async function download(source, what, client, begin, sink, limit = Infinity) {
  let response;
  let cache = 'none';
  let writer = null;
  if (!(source instanceof Blob)) {
    try {
      source = new URL(source, self.location.href).href; // "http://[::1" fails here, readably
    } catch {
      throw new Error(`the ${what} URL ${source} is not a valid URL`);
    }
  }
  if (source instanceof Blob) {
    response = new Response(source, { headers: { 'Content-Length': String(source.size) } });
    cache = 'local file';
  } else {
    const store = await openCache();
    response = store ? await store.match(source) : undefined;
    if (response) {
      cache = 'cached';
    } else {
      try {
        // Cache Storage is the model cache: keep the bytes out of the HTTP cache too, so a model
        // is not stored twice and, once cleared, really is downloaded again.
        response = await fetch(source, store ? { cache: 'no-store' } : {});
      } catch (e) {
        throw new Error(`could not download the ${what} from ${source}: ${e.message}`);
      }
      if (!response.ok) {
        throw new Error(`could not download the ${what} from ${source}: HTTP ${response.status} ` +
          `${response.statusText}`.trim());
      }
      if (store) {
        cache = 'stored';
        writer = cacheWriter(store, source, response.headers.get('Content-Length'));
      }
    }
  }
  const total = Number(response.headers.get('Content-Length')) || 0;
  const chunks = [];
  let loaded = 0;
  const reader = response.body.getReader();
  const where = source instanceof Blob ? source.name : source;
  let direct = false;
  try {
    // Write in place when the size is known; begin() refuses a size too large before any byte.
    direct = total > 0 && begin(total);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      // Without a Content-Length the bytes are held here until the end: never more than `limit`.
      if (!direct && loaded + value.length > limit) throw tooLarge(what, limit);
      if (direct) sink(loaded, value);
      else chunks.push(value);
      loaded += value.length;
      post({ type: 'progress', client, what, loaded, total, cached: cache === 'cached' });
      if (writer) await writer.push(value);
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    if (writer) writer.fail(e); // nothing is kept of a download that failed
    if (e instanceof EngineError) throw e; // too large, or longer than announced
    // A connection cut short: say which download failed, not a bare "network error".
    throw new Error(`could not download the ${what} from ${where}: ${e.message} ` +
      `(after ${loaded} of ${total || 'an unknown number of'} bytes)`);
  }
  if (direct && loaded !== total) {
    const e = new Error(`could not download the ${what} from ${where}: the download ended ` +
      `early (${loaded} of ${total} bytes)`);
    if (writer) writer.fail(e);
    throw e;
  }
  if (writer) writer.end();
  if (!direct) {
    begin(loaded);
    let offset = 0;
    for (const chunk of chunks) {
      sink(offset, chunk);
      offset += chunk.length;
    }
  }
  return { bytes: loaded, cache: writer ? writer.stored : Promise.resolve(cache) };
}

/**
 * Writes a download into the model cache as it arrives, beside its copy into engine memory, so the
 * model can load as soon as its last byte is in (writing it to the cache afterwards, from engine
 * memory, held a cold load up by 0.8 s for stories15M). While more than CACHE_BACKLOG bytes wait
 * for the disk, push() waits too: a slow disk slows the download instead of filling memory.
 * `stored` is a Promise of the cache state the page shows.
 */
const CACHE_BACKLOG = 4 << 20;
function cacheWriter(store, url, length) {
  let controller;
  let wake = null; // resolves a push() waiting for the backlog to shrink
  let cancelled = false;
  const resume = () => {
    if (wake) wake();
    wake = null;
  };
  const body = new ReadableStream({
    start(c) {
      controller = c;
    },
    pull: resume,
    cancel() { // the cache gave up (quota): the download goes on without it
      cancelled = true;
      resume();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: CACHE_BACKLOG }));
  const headers = { 'Content-Type': 'application/octet-stream' };
  if (length) headers['Content-Length'] = length;
  const stored = store.put(url, new Response(body, { headers })).then(() => 'stored', (e) => (
    e && e.name === 'QuotaExceededError' ? 'quota exceeded: kept in memory only'
      : `not cached: ${e && e.message}`));
  return {
    stored,
    async push(chunk) {
      if (cancelled) return;
      controller.enqueue(chunk);
      if (controller.desiredSize <= 0) await new Promise((resolve) => { wake = resolve; });
    },
    end() {
      if (!cancelled) controller.close();
    },
    fail(e) {
      if (!cancelled) controller.error(e);
    },
  };
}

async function openCache(name = MODEL_CACHE) {
  try {
    return self.caches ? await caches.open(name) : null;
  } catch {
    return null; // storage disabled (private mode, opaque origin): download every time
  }
}

/** The error for a download of unknown length that passed `limit` bytes. */
function tooLarge(what, limit) {
  return what === 'model' ? Engine.tooLarge(limit, true)
    : new EngineError(`the ${what} is too large for this browser: more than ` +
      `${(limit / 1e6).toFixed(0)} MB`);
}

// -- models ---------------------------------------------------------------------------------

function modelKey(model, tokenizer) {
  const name = (x) => (x instanceof Blob ? `file:${x.name}:${x.size}:${x.lastModified}` : x);
  return `${name(model)}\n${name(tokenizer)}`;
}

/** Downloads and loads a model and tokenizer once; later clients share the entry. */
function loadModel(client, model, tokenizer) {
  const key = modelKey(model, tokenizer);
  if (!models.has(key)) {
    const entry = createModel(client, model, tokenizer).then((loaded) => ({ ...loaded, key }));
    models.set(key, entry);
    entry.catch(() => models.delete(key)); // a failed load may be retried
  }
  return models.get(key);
}

async function createModel(client, modelSource, tokenizerSource) {
  if (!engineReady) throw new Error('the worker was not initialised');
  await engineReady;
  const engine = new Engine(engineModule);
  const writes = []; // the cache writes of the downloads, which go on while the model loads
  try {
    const model = await timed('model read', () => download(modelSource, 'model', client,
      (size) => {
        engine.allocate(size);
        return true;
      }, (offset, chunk) => engine.write(offset, chunk), engine.maxBytes()));
    writes.push(model.cache);
    engine.check(); // throws the engine's message for a truncated or corrupt checkpoint
    let tokenizerBytes = null;
    const tokenizer = await download(tokenizerSource, 'tokenizer', client, (size) => {
      if (size > engine.maxBytes()) throw tooLarge('tokenizer', engine.maxBytes());
      tokenizerBytes = new Uint8Array(size);
      return true;
    }, (offset, chunk) => tokenizerBytes.set(chunk, offset), engine.maxBytes());
    writes.push(tokenizer.cache);
    await timed('engine load', () => engine.load());
    const rope = await timed('RoPE table', () => engine.useRopeTable()); // fetched once per head size
    // automatic: what pays for this model (one for a small one) on all cores but one
    const threads = threaded ? engine.setThreads(threadsWanted || engine.autoThreads(cores - 1)) : 1;
    await runtimeReady.catch((e) => { // not the model's fault: keep its cached bytes
      throw Object.assign(e instanceof Error ? e : new Error(String(e)), { runtime: true });
    });
    const browser = pyodide.pyimport('llama2c.browser');
    let session;
    try {
      session = await timed('tokenizer + session', () => browser.Session(engine, tokenizerBytes));
    } finally {
      browser.destroy();
    }
    const config = engine.config();
    return {
      engine,
      session,
      info: {
        bytes: model.bytes,
        cache: await model.cache, // long written by now
        engine: `${engineLabel(threads, config.format)}; ${rope}`,
        config: { ...config, format: config.format === 'int8'
          ? `int8 (Q8_0, groups of ${config.group_size})` : 'fp32' },
      },
    };
  } catch (e) {
    engine.free();
    if (e && e.runtime) throw e;
    await Promise.allSettled(writes); // then delete what they wrote
    const store = await openCache(); // never reuse bytes that failed to load: fetch them again
    const urls = [modelSource, tokenizerSource].filter((s) => typeof s === 'string');
    if (store) await Promise.all(urls.map((url) => store.delete(url).catch(() => false)));
    throw e;
  }
}

async function load(client, model, tokenizer) {
  const previous = clients.get(client);
  clients.delete(client);
  if (previous) release(previous); // free it first: two large models may not fit together
  const entry = await loadModel(client, model, tokenizer);
  clients.set(client, entry);
  return entry.info;
}

/** Frees a model that no client uses any more. */
function release(entry) {
  if ([...clients.values()].includes(entry)) return;
  models.delete(entry.key);
  entry.session.destroy();
  entry.engine.free();
}

// -- generation -----------------------------------------------------------------------------

/** Lets queued messages (a Stop) run: one message round trip on a channel made once. */
const channel = new MessageChannel();
let wakeUp = null;
channel.port1.onmessage = () => wakeUp();
const yieldToEvents = () => new Promise((resolve) => {
  wakeUp = resolve;
  channel.port2.postMessage(null);
});

/**
 * Pulls the story piece by piece until it ends or chat waits for a line. A Stop must end a reply
 * within one token, so the loop looks for one after every token: in a shared flag when the client
 * sent one (cross-origin isolated pages), or else by letting the worker's queued messages run.
 */
async function run(client) {
  const entry = clients.get(client);
  const turn = entry && entry.turn;
  if (!turn || turn.client !== client) throw new Error('no chat is in progress');
  const { session, flag, tokenView } = turn;
  // The flag counts Stops (the client adds 1 per Stop): one not seen yet ends the reply.
  const stopRequested = () => turn.stop || (flag !== null && Atomics.load(flag, 0) !== turn.stops);
  running = turn;
  const began = performance.now();
  let lastYield = began;
  let stopped = false;
  try {
    for (;;) {
      const text = session.step();
      if (startup['first token'] === undefined) { // `invoke bench` reads these
        startup['first token'] = performance.now() - began;
        startup['first token ends at'] = performance.now();
        firstTokenCame();
      }
      if (text === undefined || text === null) break;
      // chat waits only where step() returned '': no call into Python for the other pieces
      if (text === '' && session.waiting !== undefined && session.waiting !== null) {
        return turnResult(session, 'waiting', stopped, began);
      }
      if (text) {
        const view = tokenView ? toJs(session.view()) : undefined; // no work when the view is off
        post({ type: 'piece', client, text, view });
      }
      if (!flag || performance.now() - lastYield > 100) {
        await yieldToEvents();
        lastYield = performance.now();
      }
      if (stopRequested()) {
        stopped = true;
        if (!turn.chat) break;
        session.end_turn(); // chat goes on: the reply ends here and chat asks for a line
        turn.stop = false;
        if (flag) turn.stops = Atomics.load(flag, 0);
      }
    }
    entry.turn = null;
    return turnResult(session, 'done', stopped, began);
  } finally {
    running = null;
  }
}

function turnResult(session, status, stopped, began) {
  const report = toJs(session.report());
  report.loop_ms = performance.now() - began;
  report.startup = startup;
  report.snapshot = snapshotState;
  return { status, guide: status === 'waiting' ? session.waiting : undefined, stopped, report };
}

/** A Python dict or list as plain JavaScript data (null stays null). */
function toJs(value) {
  if (value === undefined || value === null) return null;
  const plain = value.toJs({ dict_converter: Object.fromEntries });
  value.destroy();
  return plain;
}

/** Starts a story or a chat for `client` on its model, and runs it. */
async function generate(client, params, stopFlag) {
  const entry = clients.get(client);
  if (!entry) throw new Error('no model is loaded');
  const { session } = entry;
  const options = pyodide.toPy(params);
  let seed;
  try {
    seed = session.start(options); // ends any chat another client had waiting on this model
  } finally {
    options.destroy();
  }
  entry.turn = { client, session, chat: params.mode === 'chat', tokenView: !!params.token_view,
    flag: stopFlag ? new Int32Array(stopFlag) : null, stops: 0, stop: false };
  post({ type: 'start', client, seed: String(seed) });
  return run(client);
}

/** The next line of a chat that waits for one. */
function reply(client, text) {
  const entry = clients.get(client);
  const turn = entry && entry.turn;
  if (!turn || turn.client !== client || turn.session.waiting == null) {
    throw new Error('no chat is waiting for a line');
  }
  turn.session.reply(String(text));
  return run(client);
}

/** Ends a chat that waits for a line (Stop while it waits). */
function finish(client) {
  const entry = clients.get(client);
  const turn = entry && entry.turn;
  if (!turn || turn.client !== client) throw new Error('no chat is in progress');
  entry.turn = null;
  return { status: 'done', stopped: true, report: toJs(turn.session.report()) };
}

async function clearCache() {
  if (self.caches) await Promise.all([MODEL_CACHE, RUNTIME_CACHE].map((n) => caches.delete(n)));
  return null;
}

/** Which of `urls` the model cache holds, and the storage the origin uses and may use. */
async function cacheState(urls) {
  // caches.open would make the cache again after "Clear cache": look only if it is there
  const store = self.caches && await caches.has(MODEL_CACHE).catch(() => false)
    ? await openCache() : null;
  const cached = await Promise.all(urls.map(async (url) => !!(store && await store.match(url))));
  const estimate = navigator.storage && navigator.storage.estimate
    ? await navigator.storage.estimate().catch(() => ({})) : {};
  return { cached, usage: estimate.usage ?? null, quota: estimate.quota ?? null };
}

// Each request type's handler. They run one after another (a generation holds the queue until it
// ends or waits for a line), except `stop`, which must reach the generation in progress.
const handlers = {
  init: (m) => init(m),
  load: (m) => load(m.client, m.model, m.tokenizer),
  generate: (m) => generate(m.client, m.params, m.stopFlag),
  reply: (m) => reply(m.client, m.text),
  finish: (m) => finish(m.client),
  'cache-state': (m) => cacheState(m.urls),
  'clear-cache': () => clearCache(),
};

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === 'stop') {
    if (running && running.client === message.client) running.stop = true; // after this token
    return;
  }
  queue = queue.then(async () => {
    try {
      const handler = handlers[message.type];
      if (!handler) throw new Error(`unknown request: ${message.type}`);
      const value = await handler(message);
      if (message.id !== undefined) post({ type: 'result', id: message.id, value: value ?? null });
    } catch (e) {
      const text = String(e && e.message ? e.message : e);
      post({ type: 'failure', id: message.id, client: message.client, during: message.type,
        message: pythonMessage(text) });
    }
  });
};

/** The last line of a Python traceback is the useful part: "TokenizerError: ...". */
function pythonMessage(text) {
  if (!text.includes('Traceback')) return text;
  const lines = text.trim().split('\n');
  return lines[lines.length - 1].replace(/^llama2c\.errors\.\w+: |^\w+Error: /, '');
}
