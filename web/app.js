// The page: reads the URL contract, drives the worker, and shows the story as plain text.
//
// URL parameters: model, tokenizer (URLs relative to the page, or absolute), prompt, temperature,
// topp, steps, seed (a number, or absent/"random"), mode (generate|chat), system, threads (a
// number; absent = as many as pay off), relaxed=0 (int8 models: the SIMD128 kernel even where
// the browser has relaxed SIMD), autostart=1.
// Test hooks: document.body.dataset.state is loading|ready|generating|done|error; #output holds
// the story (the command line's stdout without the final newline); #tokps; #error.

const DEFAULTS = {
  model: 'models/stories15M.bin',
  tokenizer: 'models/tokenizer.bin',
  prompt: '',
  temperature: '1.0',
  topp: '0.9',
  steps: '256',
  seed: '',
  mode: 'generate',
  system: '',
  threads: '',
};
const FIELDS = ['model', 'tokenizer', 'mode', 'system', 'prompt', 'temperature', 'topp', 'steps',
  'seed'];

const CLIENT = 'page'; // the worker serves clients by id (widgets share one worker the same way)
const $ = (id) => document.getElementById(id);
const url = new URL(location.href);
const query = url.searchParams;
const settings = Object.fromEntries(
  Object.entries(DEFAULTS).map(([key, value]) => [key, query.get(key) ?? value]));

let worker = null;
let modelReady = false;
let generating = false;
let stopFlag = null; // Int32Array on a SharedArrayBuffer, when the page is cross-origin isolated

// -- state and messages ---------------------------------------------------------------------

function setState(state) {
  const focused = document.activeElement;
  document.body.dataset.state = state;
  $('state').textContent = state;
  const busy = state === 'loading' || state === 'generating';
  $('generate').disabled = busy || !modelReady;
  $('stop').disabled = state !== 'generating';
  $('load').disabled = busy;
  handOverFocus(focused, $('generate'), $('stop'));
}

/** A button that becomes disabled drops the keyboard focus: hand it to the one taking over. */
function handOverFocus(focused, generate, stop) {
  if (focused === generate && generate.disabled && !stop.disabled) stop.focus();
  else if (focused === stop && stop.disabled && !generate.disabled) generate.focus();
}

function showError(message) {
  $('error').textContent = message; // text, never HTML
  $('error').hidden = false;
  setState('error');
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function showProgress(what, loaded, total, cached) {
  const box = $('progress');
  box.hidden = false;
  const bar = $('progress-bar');
  bar.max = total || 1;
  bar.value = total ? loaded : 0;
  const mb = (n) => (n / 1e6).toFixed(1);
  const percent = total ? ` (${Math.floor((100 * loaded) / total)}%)` : '';
  const action = what === 'runtime' ? 'Loading the Python runtime and engine'
    : cached ? `Reading the ${what} from the cache` : `Downloading the ${what}`;
  $('progress-text').textContent = `${action}: ${mb(loaded)}${total ? ' of ' + mb(total) : ''} MB` +
    percent;
}

function describe(config, bytes) {
  const c = config;
  return `${(bytes / 1e6).toFixed(1)} MB ${c.format}: dim ${c.dim}, hidden ${c.hidden_dim}, ` +
    `${c.n_layers} layers, ${c.n_heads} heads (${c.n_kv_heads} kv), vocab ${c.vocab_size}, ` +
    `context ${c.seq_len}`;
}

function cacheText(cache) {
  if (cache === 'cached') return 'Loaded from this browser\'s cache.';
  if (cache === 'stored') return 'Saved in this browser\'s cache for next time.';
  if (cache === 'local file') return 'Read from your disk; nothing was uploaded.';
  if (cache.startsWith('quota')) return 'Browser storage is full: the model is kept in memory only.';
  return '';
}

function missingModelHint(message) {
  if (!/HTTP 404/.test(message)) return message;
  return `${message}. Fetch a model into the site with "invoke fetch-model stories15M" and ` +
    '"invoke build", give another model URL, or open a .bin file from your computer above.';
}

function onWorkerMessage(event) {
  const m = event.data;
  switch (m.type) {
    case 'progress':
      showProgress(m.what, m.loaded, m.total, m.cached);
      break;
    case 'cache-cleared':
      $('cache-status').textContent = 'Cache cleared: models will be downloaded again.';
      break;
    case 'runtime':
      if (!modelReady) $('engine').textContent = m.engine; // a loaded model's label says more
      break;
    case 'model':
      modelReady = true;
      $('engine').textContent = m.engine;
      $('progress').hidden = true;
      $('model-info').textContent = describe(m.config, m.bytes);
      $('cache-status').textContent = cacheText(m.cache);
      setState('ready');
      if (query.get('autostart') === '1' && !autostarted) {
        autostarted = true;
        startGeneration();
      }
      break;
    case 'start':
      $('seed-used').textContent = m.seed;
      break;
    case 'piece':
      showText(m.text);
      break;
    case 'done':
      flushText();
      generating = false;
      $('tokps').textContent = m.report.tokps ? m.report.tokps.toFixed(1) : '–';
      document.body.dataset.report = JSON.stringify(m.report);
      setState('done');
      break;
    case 'error':
      flushText();
      generating = false;
      autostarted = true; // autostart is for the link's own model, not for a later Load
      if (m.during === 'load') modelReady = false;
      showError(m.during === 'load' ? missingModelHint(m.message) : m.message);
      break;
  }
}
let autostarted = false;

// Story text arrives a token at a time; the page adds it once per frame (a text node per piece),
// so that a fast model does not keep the page's thread, and the core the engine could use, busy.
let pendingText = [];

function showText(text) {
  if (!pendingText.length) requestAnimationFrame(flushText);
  pendingText.push(text);
}

function flushText() {
  const nodes = document.createDocumentFragment();
  for (const text of pendingText) nodes.append(text); // text nodes: never parsed as HTML
  $('output').append(nodes);
  pendingText = [];
}

// -- actions --------------------------------------------------------------------------------

function loadModel(model, tokenizer) {
  clearError();
  modelReady = false;
  $('model-info').textContent = '';
  setState('loading');
  worker.postMessage({ type: 'load', client: CLIENT, model, tokenizer });
}

function loadFromControls() {
  const modelFile = $('model-file').files[0];
  const tokenizerFile = $('tokenizer-file').files[0];
  if (modelFile || tokenizerFile) {
    // Local files stay on this computer: the worker reads them directly.
    loadModel(modelFile ?? resolve(settings.model), tokenizerFile ?? resolve(settings.tokenizer));
  } else {
    loadModel(resolve(settings.model), resolve(settings.tokenizer));
  }
}

function resolve(path) {
  try {
    return new URL(path, location.href).href;
  } catch {
    return path; // the worker reports the bad URL
  }
}

/** A seed in [1, 2^31): shown as is, and `llama2c run -s SEED` reproduces the story. */
function randomSeed() {
  const buffer = new Uint32Array(1);
  do crypto.getRandomValues(buffer); while ((buffer[0] & 0x7fffffff) === 0);
  return String(buffer[0] & 0x7fffffff);
}

function startGeneration() {
  if (!modelReady || generating) return;
  clearError();
  generating = true;
  pendingText = [];
  $('output').textContent = '';
  $('tokps').textContent = '–';
  const seed = /^\s*(random)?\s*$/i.test(settings.seed) ? randomSeed() : settings.seed;
  setState('generating');
  stopFlag = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;
  worker.postMessage({
    type: 'generate',
    client: CLIENT,
    stopFlag: stopFlag && stopFlag.buffer,
    params: {
      mode: settings.mode,
      prompt: query.has('prompt') || settings.prompt ? settings.prompt : null,
      // as run.c: without -y (no `system` parameter) chat asks for one and reads end of input
      system_prompt: settings.mode === 'chat' && (query.has('system') || settings.system)
        ? settings.system : null,
      temperature: settings.temperature,
      topp: settings.topp,
      steps: settings.steps,
      seed,
    },
  });
}

function stopGeneration() {
  if (stopFlag) Atomics.store(stopFlag, 0, 1); // seen by the worker after its current token
  worker.postMessage({ type: 'stop', client: CLIENT });
}

// -- controls and the URL -------------------------------------------------------------------

function syncUrl() {
  for (const key of FIELDS) {
    if (settings[key] === DEFAULTS[key]) query.delete(key);
    else query.set(key, settings[key]);
  }
  history.replaceState(null, '', url);
}

function showModeFields() {
  $('system-field').hidden = settings.mode !== 'chat';
}

function bindControls() {
  for (const key of FIELDS) {
    const input = $(key);
    input.value = settings[key];
    input.addEventListener('input', () => {
      settings[key] = input.value;
      syncUrl();
      showModeFields();
    });
  }
  showModeFields();
  $('controls').addEventListener('submit', (event) => {
    event.preventDefault();
    startGeneration();
  });
  $('prompt').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) startGeneration();
  });
  $('stop').addEventListener('click', stopGeneration);
  $('clear-cache').addEventListener('click', () => worker.postMessage({ type: 'clear-cache' }));
  $('load').addEventListener('click', loadFromControls);
}

function startWorker() {
  const script = new URL('worker.js', import.meta.url);
  worker = new Worker(script, { type: 'module' });
  worker.onmessage = onWorkerMessage;
  worker.onerror = (event) => showError(`the worker failed: ${event.message || 'unknown error'}`);
  worker.postMessage({ type: 'init', threads: settings.threads,
    cores: navigator.hardwareConcurrency, relaxed: query.get('relaxed') !== '0' });
  loadModel(resolve(settings.model), resolve(settings.tokenizer));
}

bindControls();
setState('loading');
startWorker();
