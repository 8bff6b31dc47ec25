// The one module that talks to worker.js, for the page (app.js) and the widget
// (llama2c-widget.js): request ids and promises, the Stop flag, seeds, the worker's parameters
// (one meaning for "no system prompt"), and per-frame batching of the text that streams in.
//
//   const client = new Client(connect(), 'page', { piece: (m) => ..., progress: (m) => ... });
//   await client.load(modelUrl, tokenizerUrl);          // {config, bytes, engine, cache}
//   let turn = await client.generate(settings);         // {status: 'done' | 'waiting', guide, ...}
//   while (turn.status === 'waiting') turn = await client.reply(nextLine);
//
// The worker protocol is described at the top of worker.js.

export const DEFAULTS = { temperature: '1.0', topp: '0.9', steps: '256' }; // run.c's -t -p -n
export const INDEX = 'models/index.json'; // the site's model list, written by `invoke build`
const WORKER = new URL('worker.js', import.meta.url);

/** One Worker per page, shared by every client on it. */
export class WorkerLink {
  /** threads: 0 for automatic; relaxed: false forces the SIMD128 int8 kernel. */
  constructor({ threads = 0, relaxed = true } = {}) {
    this.worker = startWorker(WORKER.href);
    this.pending = new Map(); // request id -> {resolve, reject}
    this.listeners = new Map(); // client id -> event handlers
    this.nextId = 1;
    this.worker.onmessage = (event) => this.receive(event.data);
    this.worker.onerror = (event) => {
      const message = `the worker failed: ${event.message || 'unknown error'}`;
      for (const { reject } of this.pending.values()) reject(new Error(message));
      this.pending.clear();
      this.broadcast({ type: 'error', during: 'init', message });
    };
    this.request({ type: 'init', threads, cores: navigator.hardwareConcurrency, relaxed });
  }

  /** Sends a request; resolves with its result, rejects with its error message. */
  request(message) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id });
    });
  }

  /** Messages that need no answer (Stop). */
  send(message) {
    this.worker.postMessage(message);
  }

  receive(m) {
    if (m.type === 'result' || m.type === 'failure') {
      const request = this.pending.get(m.id);
      if (!request) return;
      this.pending.delete(m.id);
      if (m.type === 'result') request.resolve(m.value);
      else request.reject(Object.assign(new Error(m.message), { during: m.during }));
    } else if (m.client === undefined) {
      this.broadcast(m); // runtime progress and start-up errors concern every client
    } else {
      const handlers = this.listeners.get(m.client);
      if (handlers && handlers[m.type]) handlers[m.type](m);
    }
  }

  broadcast(m) {
    for (const handlers of this.listeners.values()) if (handlers[m.type]) handlers[m.type](m);
  }
}

/** Same origin: a module worker. Another origin (a widget's site): a blob module that imports it,
 *  since a page may only start workers from its own origin. */
function startWorker(url) {
  if (new URL(url).origin === location.origin) return new Worker(url, { type: 'module' });
  const source = `import ${JSON.stringify(url)};`;
  const blob = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
  return new Worker(blob, { type: 'module' });
}

let shared = null;

/** The page's WorkerLink (made on first use; `threads` counts only then). */
export function connect(options = {}) {
  shared ??= new WorkerLink(options);
  return shared;
}

/** One conversation with the worker: a model, and the story or chat running on it. */
export class Client {
  /** `on`: event handlers by type: progress, runtime, start, piece ({text, view}), error. */
  constructor(link, id, on = {}) {
    this.link = link;
    this.id = id;
    this.ready = settled(Promise.reject(new Error('no model was asked for')));
    this.stopFlag = null;
    this.turn = null; // 'generating' or 'waiting' while a story or chat is under way
    link.listeners.set(id, on);
  }

  /** Loads a model; `ready` becomes this load. Resolves with the model's description. */
  load(model, tokenizer) {
    this.ready = settled(this.link.request({ type: 'load', client: this.id, model, tokenizer }));
    return this.ready;
  }

  /** Waits for the model (rejecting with its load error), then runs until done or waiting. */
  async generate(settings) {
    await this.ready;
    this.stopFlag = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;
    return this.track(this.link.request({ type: 'generate', client: this.id,
      params: workerParams(settings), stopFlag: this.stopFlag && this.stopFlag.buffer }));
  }

  /** The next line of a chat that waits for one: runs until done or waiting again. */
  reply(text) {
    return this.track(this.link.request({ type: 'reply', client: this.id, text: String(text) }));
  }

  /** Stop: a reply in progress ends after its current token (chat then waits for a line); a chat
   *  that waits for a line ends. Resolves with that chat's last turn, or null. */
  stop() {
    if (this.turn === 'waiting') return this.track(this.link.request({ type: 'finish', client: this.id }));
    if (this.stopFlag) Atomics.add(this.stopFlag, 0, 1); // seen after the current token
    this.link.send({ type: 'stop', client: this.id });
    return Promise.resolve(null);
  }

  async track(request) {
    this.turn = 'generating';
    try {
      const turn = await request;
      this.turn = turn.status === 'waiting' ? 'waiting' : null;
      return turn;
    } catch (e) {
      this.turn = null;
      throw e;
    }
  }

  /** Which of `urls` the model cache holds, and the storage used and available. */
  cacheState(urls) {
    return this.link.request({ type: 'cache-state', urls });
  }

  clearCache() {
    return this.link.request({ type: 'clear-cache' });
  }

  close() {
    this.link.listeners.delete(this.id);
  }
}

/** `promise`, marked as handled: a load that fails rejects for whoever awaits it, without an
 *  "unhandled rejection" for the ones nobody awaits. */
function settled(promise) {
  promise.catch(() => {});
  return promise;
}

/**
 * The worker's parameters for the same settings, wherever they come from (URL or attributes).
 * `prompt` and `system` null mean "not given", as a missing -i or -y: chat without a system
 * prompt reads one first, as run.c does. `seed` empty or "random" means a random seed.
 */
export function workerParams(s) {
  const mode = s.mode || 'generate';
  return {
    mode,
    prompt: s.prompt ?? null,
    system_prompt: mode === 'chat' ? s.system ?? null : null,
    temperature: s.temperature ?? DEFAULTS.temperature,
    topp: s.topp ?? DEFAULTS.topp,
    steps: s.steps ?? DEFAULTS.steps,
    seed: /^\s*(random)?\s*$/i.test(s.seed ?? '') ? randomSeed() : String(s.seed),
    token_view: !!s.tokenView,
  };
}

/** A seed in [1, 2^31): shown as is, and `llama2c run -s SEED` reproduces the story. */
export function randomSeed() {
  const buffer = new Uint32Array(1);
  do crypto.getRandomValues(buffer); while ((buffer[0] & 0x7fffffff) === 0);
  return String(buffer[0] & 0x7fffffff);
}

/**
 * Text arrives a token at a time; this hands it on once per frame, so that a fast model does not
 * keep the page's thread, and the core the engine could use, busy.
 */
export class FrameBatcher {
  constructor(flush) {
    this.items = [];
    this.flushItems = flush;
  }

  push(item) {
    if (!this.items.length) requestAnimationFrame(() => this.flush());
    this.items.push(item);
  }

  flush() {
    if (!this.items.length) return;
    const items = this.items;
    this.items = [];
    this.flushItems(items);
  }

  clear() {
    this.items = [];
  }
}

/** Text nodes for `texts`, in one fragment: model output is never parsed as HTML. */
export function textNodes(texts) {
  const nodes = document.createDocumentFragment();
  for (const text of texts) nodes.append(text);
  return nodes;
}

/** The site's model list (`invoke build` writes it), with URLs resolved against `base`; null when
 *  the site has none. */
export async function modelIndex(base) {
  const url = new URL(INDEX, base);
  try {
    const response = await fetch(url, { cache: 'no-cache' });
    if (!response.ok) return null;
    const index = await response.json();
    const resolve = (path) => new URL(path, url).href;
    for (const m of index.models) Object.assign(m, { url: resolve(m.file), tokenizerUrl: resolve(m.tokenizer) });
    return index;
  } catch {
    return null; // no list: the URL fields still work
  }
}
