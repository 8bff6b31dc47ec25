// The page: reads the URL contract, drives the worker through client.js, and shows the story or
// the chat as plain text.
//
// URL parameters: model, tokenizer (URLs relative to the page, or absolute; default: the site's
// default model from models/index.json), prompt, temperature, topp, steps, seed (a number, or
// absent/"random"), mode (generate|chat), system, chatinput (chat lines separated by newlines,
// answered in order), threads (a number; absent = as many as pay off), relaxed=0 (int8 models:
// the SIMD128 kernel even where the browser has relaxed SIMD), autostart=1.
// Test hooks: document.body.dataset.state is loading|ready|generating|waiting|done|error;
// #output holds the story or the chat transcript (the command line's stdout without the final
// newline); #tokps; #error.

import { Client, DEFAULTS as RUN_DEFAULTS, FrameBatcher, connect, modelIndex, textNodes }
  from './client.js';

const FALLBACK_MODEL = { model: 'models/stories15M.bin', tokenizer: 'models/tokenizer.bin' };
const DEFAULTS = {
  ...FALLBACK_MODEL, // until models/index.json names the site's default
  prompt: '',
  ...RUN_DEFAULTS,
  seed: '',
  mode: 'generate',
  system: '',
  threads: '',
};
const FIELDS = ['model', 'tokenizer', 'mode', 'system', 'prompt', 'temperature', 'topp', 'steps',
  'seed'];

const $ = (id) => document.getElementById(id);
const url = new URL(location.href);
const query = url.searchParams;
const settings = Object.fromEntries(
  Object.entries(DEFAULTS).map(([key, value]) => [key, query.get(key) ?? value]));
// Lines for chat, answered in order before the input box is used (for links and tests).
const chatInput = query.has('chatinput') ? query.get('chatinput').split('\n') : [];

let client = null;
let modelReady = false;
let index = null; // models/index.json, when the site has one
let autostarted = false;

// -- state and messages ---------------------------------------------------------------------

function setState(state) {
  const focused = document.activeElement;
  document.body.dataset.state = state;
  $('state').textContent = state;
  const busy = state === 'loading' || state === 'generating';
  $('generate').disabled = busy || state === 'waiting' || !modelReady;
  $('stop').disabled = state !== 'generating' && state !== 'waiting';
  $('load').disabled = busy || state === 'waiting';
  for (const input of $('model-list').querySelectorAll('input')) input.disabled = busy;
  const chatting = settings.mode === 'chat' && (state === 'waiting' || state === 'done' ||
    state === 'generating');
  $('chat-form').hidden = !chatting;
  $('chat-input').disabled = state !== 'waiting';
  $('send').disabled = state !== 'waiting';
  $('new-chat').disabled = busy;
  handOverFocus(focused);
}

/** A control that becomes disabled drops the keyboard focus: hand it to the one taking over. */
function handOverFocus(focused) {
  if (!focused || !focused.disabled) return;
  const next = ['chat-input', 'stop', 'generate', 'new-chat'].map($).find((el) => !el.disabled &&
    !el.closest('[hidden]'));
  if (next) next.focus();
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

function showProgress(m) {
  const box = $('progress');
  box.hidden = false;
  const bar = $('progress-bar');
  bar.max = m.total || 1;
  bar.value = m.total ? m.loaded : 0;
  const percent = m.total ? ` (${Math.floor((100 * m.loaded) / m.total)}%)` : '';
  const action = m.what === 'runtime' ? 'Loading the Python runtime and engine'
    : m.cached ? `Reading the ${m.what} from the cache` : `Downloading the ${m.what}`;
  $('progress-text').textContent = `${action}: ${mb(m.loaded)}${m.total ? ' of ' + mb(m.total) : ''}` +
    ` MB${percent}`;
}

const mb = (n) => (n / 1e6).toFixed(1);

function describe(config, bytes) {
  const c = config;
  return `${mb(bytes)} MB ${c.format}: dim ${c.dim}, hidden ${c.hidden_dim}, ` +
    `${c.n_layers} layers, ${c.n_heads} heads (${c.n_kv_heads} kv), vocab ${c.vocab_size}, ` +
    `context ${c.seq_len}`;
}

function cacheText(cache) {
  if (cache === 'cached') return 'Loaded from this browser\'s cache.';
  if (cache === 'stored') return 'Saved in this browser\'s cache for next time.';
  if (cache === 'local file') return 'Read from your disk; nothing was uploaded.';
  if (cache.startsWith('quota')) {
    return 'Not saved: browser storage is full. The model runs from memory and will be ' +
      'downloaded again next time.';
  }
  return '';
}

function missingModelHint(message) {
  if (!/HTTP 404/.test(message)) return message;
  return `${message}. Fetch a model into the site with "invoke fetch-model stories15M" and ` +
    '"invoke build", choose one of the site\'s models, give another model URL, or open a .bin ' +
    'file from your computer above.';
}

// -- the model list and storage -------------------------------------------------------------

/** The site's models, each a radio button: choosing one loads it and puts it in the URL. */
function showModelList() {
  if (!index || !index.models.length) return;
  const list = $('model-list');
  list.replaceChildren();
  for (const entry of index.models) {
    const item = document.createElement('li');
    const label = document.createElement('label');
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'site-model';
    input.id = `model-choice-${entry.name}`;
    input.value = entry.path;
    input.checked = entry.path === settings.model;
    input.addEventListener('change', () => chooseModel(entry));
    const cached = document.createElement('span');
    cached.className = 'cached';
    label.append(input, ` ${entry.name}, ${mb(entry.bytes)} MB ${entry.format}`, cached);
    item.append(label);
    list.append(item);
  }
  $('model-list-field').hidden = false;
}

function chooseModel(entry) {
  settings.model = entry.path;
  settings.tokenizer = entry.tokenizerPath;
  $('model').value = settings.model;
  $('tokenizer').value = settings.tokenizer;
  query.set('model', settings.model); // a link reproduces the story, whatever the default
  query.set('tokenizer', settings.tokenizer);
  syncUrl();
  loadModel(resolve(settings.model), resolve(settings.tokenizer));
}

/** Marks the models this browser has cached, and shows the storage used and left. */
async function showStorage() {
  const models = index ? index.models : [];
  const state = await client.cacheState(models.flatMap((m) => [m.url, m.tokenizerUrl]));
  const spans = $('model-list').querySelectorAll('.cached');
  models.forEach((m, i) => {
    const both = state.cached[2 * i] && state.cached[2 * i + 1];
    if (spans[i]) spans[i].textContent = both ? ', cached' : '';
  });
  if (state.usage !== null && state.quota !== null) {
    $('storage').textContent = `Storage: ${mb(state.usage)} MB used, ` +
      `${mb(Math.max(state.quota - state.usage, 0))} MB left.`;
  }
}

// -- actions --------------------------------------------------------------------------------

async function loadModel(model, tokenizer) {
  clearError();
  modelReady = false;
  $('model-info').textContent = '';
  setState('loading');
  let info;
  try {
    info = await client.load(model, tokenizer);
  } catch (e) {
    autostarted = true; // autostart is for the link's own model, not for a later Load
    $('progress').hidden = true;
    showError(missingModelHint(e.message));
    return;
  }
  modelReady = true;
  $('engine').textContent = info.engine;
  $('progress').hidden = true;
  $('model-info').textContent = describe(info.config, info.bytes);
  $('cache-status').textContent = cacheText(info.cache);
  if (info.cache === 'stored' && navigator.storage && navigator.storage.persist) {
    // Keep models when space runs low. Not awaited: Firefox asks the user, and may never answer.
    navigator.storage.persist().then(() => showStorage(), () => {});
  }
  showStorage().catch(() => {});
  setState('ready');
  if (query.get('autostart') === '1' && !autostarted) {
    autostarted = true;
    startGeneration();
  }
}

function loadFromControls() {
  const modelFile = $('model-file').files[0];
  const tokenizerFile = $('tokenizer-file').files[0];
  // Local files stay on this computer: the worker reads them directly.
  loadModel(modelFile ?? resolve(settings.model), tokenizerFile ?? resolve(settings.tokenizer));
}

function resolve(path) {
  try {
    return new URL(path, location.href).href;
  } catch {
    return path; // the worker reports the bad URL
  }
}

// Pieces arrive a token at a time; they are shown once per frame.
const shown = new FrameBatcher((pieces) => {
  $('output').append(textNodes(pieces.map((p) => p.text)));
  const views = pieces.filter((p) => p.view);
  if (views.length) $('tokens').append(...views.map(tokenItem));
});

async function startGeneration() {
  if (!modelReady || client.turn) return;
  clearError();
  shown.clear();
  $('output').textContent = '';
  $('tokens').textContent = '';
  $('tokps').textContent = '–';
  const tokenView = $('token-view').checked;
  $('token-panel').hidden = !tokenView;
  setState('generating');
  const chat = settings.mode === 'chat';
  const lines = [...chatInput];
  await runTurn(() => client.generate({
    mode: settings.mode,
    prompt: query.has('prompt') || settings.prompt ? settings.prompt : null,
    // as run.c: without -y (no `system` parameter) chat reads the system prompt first
    system: chat && (query.has('system') || settings.system) ? settings.system : null,
    temperature: settings.temperature,
    topp: settings.topp,
    steps: settings.steps,
    seed: settings.seed,
    tokenView,
  }), lines);
}

/** Runs one request (generate or reply) and the chat lines queued behind it, then shows the
 *  state the chat is left in: waiting for a line, or done. */
async function runTurn(request, lines = []) {
  let turn;
  try {
    turn = await request();
    while (turn.status === 'waiting' && lines.length) turn = await client.reply(lines.shift());
  } catch (e) {
    shown.flush();
    showError(e.message);
    return;
  }
  shown.flush();
  $('tokps').textContent = turn.report.tokps ? turn.report.tokps.toFixed(1) : '–';
  document.body.dataset.report = JSON.stringify(turn.report);
  if (turn.status === 'waiting') {
    $('chat-guide').textContent = turn.guide.trim();
    setState('waiting');
    if (document.activeElement === document.body || document.activeElement === $('send') ||
        document.activeElement === $('stop')) $('chat-input').focus();
  } else {
    setState('done');
  }
}

function sendLine(event) {
  event.preventDefault();
  if (client.turn !== 'waiting') return;
  const text = $('chat-input').value;
  $('chat-input').value = '';
  setState('generating');
  runTurn(() => client.reply(text));
}

function stopGeneration() {
  const waiting = client.turn === 'waiting';
  const finished = client.stop(); // a reply ends after its current token; a waiting chat ends
  if (waiting) runTurn(() => finished);
}

async function newChat() {
  if (client.turn === 'waiting') await client.stop();
  startGeneration();
}

// -- the token view ---------------------------------------------------------------------------

const percent = (p) => `${(100 * p).toFixed(p >= 0.001 ? 1 : 3)}%`;

/** One generated token and the candidates the sampler chose it from, as text. */
function tokenItem({ text, view }) {
  const nucleus = view.nucleus ?? null; // Python's None arrives as undefined
  const item = document.createElement('li');
  item.dataset.token = view.token;
  item.dataset.nucleus = nucleus ?? '';
  const chosen = document.createElement('span');
  chosen.className = 'chosen';
  chosen.textContent = JSON.stringify(text);
  const note = view.greedy ? ' (temperature 0: the most likely is taken)'
    : nucleus === null ? '' : ` (top-p kept ${nucleus})`;
  item.append(chosen, note);
  const list = document.createElement('ol');
  view.candidates.forEach((c, i) => {
    const row = document.createElement('li');
    row.dataset.id = c.id;
    row.dataset.p = c.p;
    const inside = nucleus === null || i < nucleus;
    row.dataset.inside = inside;
    if (!inside) row.className = 'outside';
    if (i === nucleus) row.classList.add('cut'); // the first one top-p left out
    row.textContent = `${JSON.stringify(c.text)} ${percent(c.p)}` +
      (c.id === view.token ? ' (chosen)' : '') + (inside ? '' : ' (outside top-p)');
    list.append(row);
  });
  item.append(list);
  return item;
}

// -- controls and the URL -------------------------------------------------------------------

function syncUrl() {
  for (const key of FIELDS) {
    const chosen = (key === 'model' || key === 'tokenizer') && query.has(key);
    if (settings[key] === DEFAULTS[key] && !chosen) query.delete(key);
    else query.set(key, settings[key]);
  }
  history.replaceState(null, '', url);
}

function showModeFields() {
  $('system-field').hidden = settings.mode !== 'chat';
  $('generate').textContent = settings.mode === 'chat' ? 'Start chat' : 'Generate';
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
  $('chat-form').addEventListener('submit', sendLine);
  $('new-chat').addEventListener('click', newChat);
  $('clear-cache').addEventListener('click', async () => {
    await client.clearCache();
    $('cache-status').textContent = 'Cache cleared: models will be downloaded again.';
    showStorage().catch(() => {});
  });
  $('load').addEventListener('click', loadFromControls);
}

/** The site's model list, and its default model when the URL names none. */
async function readIndex() {
  index = await modelIndex(location.href);
  if (!index) return;
  for (const m of index.models) {
    m.path = `models/${m.file}`; // short, page-relative URLs for the fields and links
    m.tokenizerPath = `models/${m.tokenizer}`;
  }
  const chosen = index.models.find((m) => m.name === index.default);
  if (chosen) {
    DEFAULTS.model = chosen.path;
    DEFAULTS.tokenizer = chosen.tokenizerPath;
    if (!query.has('model')) settings.model = chosen.path;
    if (!query.has('tokenizer')) settings.tokenizer = chosen.tokenizerPath;
  }
}

/** Offline after the first visit: sw.js keeps the site and the runtime (versioned by build). */
async function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || !self.isSecureContext) return;
  try {
    const response = await fetch('offline.json', { cache: 'no-cache' });
    if (!response.ok) return; // not a built site
    const { version } = await response.json();
    await navigator.serviceWorker.register(`sw.js?v=${encodeURIComponent(version)}`);
  } catch {
    // no offline copy: the page works as before
  }
}

async function main() {
  setState('loading');
  const relaxed = query.get('relaxed') !== '0';
  client = new Client(connect({ threads: settings.threads, relaxed }), 'page', {
    progress: showProgress,
    runtime: (m) => { if (!modelReady) $('engine').textContent = m.engine; },
    start: (m) => { $('seed-used').textContent = m.seed; },
    piece: (m) => shown.push(m),
    error: (m) => showError(m.message),
  });
  await readIndex();
  bindControls();
  showModelList();
  registerServiceWorker();
  loadModel(resolve(settings.model), resolve(settings.tokenizer));
}

main();
