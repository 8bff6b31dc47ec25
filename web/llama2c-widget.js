// <llama2c-story>: a story generator any page can embed, even from another origin.
//
//   <script type="module" src="https://example.org/llama2c/llama2c-widget.js"></script>
//   <llama2c-story model="models/stories15M.bin" tokenizer="models/tokenizer.bin"
//                  prompt="Once upon a time" temperature="0.8" topp="0.9" steps="256" seed="42">
//   </llama2c-story>
//
// Relative model and tokenizer URLs resolve against this script's URL, where the site lives.
// Attributes: model, tokenizer, prompt, temperature, topp, steps, seed, mode (generate|chat),
// system, threads, autostart. JS API: generate(), stop(), `text` (the story so far, exactly what
// `llama2c run` prints, final newline aside), `state`; events `progress` (detail: {what, loaded,
// total}), `token` (detail: {text}), `done` (detail: {text, report}), `error` (detail: {message}).
//
// Every widget on a page shares one worker (one Python runtime, one engine) and each model is
// downloaded once.

const BASE = new URL('.', import.meta.url);
const DEFAULTS = {
  model: 'models/stories15M.bin',
  tokenizer: 'models/tokenizer.bin',
  temperature: '1.0',
  topp: '0.9',
  steps: '256',
};

// -- the shared worker ------------------------------------------------------------------------

let sharedWorker = null;
const widgets = new Map(); // client id -> widget
let nextClient = 1;

/** One worker per page. A blob module worker that imports ours works across origins. */
function worker(threads) {
  if (sharedWorker) return sharedWorker;
  const script = new URL('worker.js', BASE).href;
  let instance;
  if (new URL(script).origin === location.origin) {
    instance = new Worker(script, { type: 'module' });
  } else {
    const source = `import ${JSON.stringify(script)};`;
    const blob = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
    instance = new Worker(blob, { type: 'module' });
  }
  instance.onmessage = (event) => {
    const m = event.data;
    if (m.type === 'progress' && m.what === 'runtime') {
      for (const widget of widgets.values()) widget.onWorkerMessage(m);
    } else if (m.type === 'error' && m.client === undefined) {
      for (const widget of widgets.values()) widget.onWorkerMessage(m);
    } else if (widgets.has(m.client)) {
      widgets.get(m.client).onWorkerMessage(m);
    }
  };
  instance.postMessage({ type: 'init', threads });
  sharedWorker = instance;
  return instance;
}

// -- the element ------------------------------------------------------------------------------

const TEMPLATE = `
<style>
  :host { display: block; font-family: system-ui, sans-serif; color: inherit; }
  .box { border: 1px solid color-mix(in srgb, currentColor 25%, transparent); border-radius: 0.5rem;
         padding: 0.75rem 1rem; }
  .story { white-space: pre-wrap; overflow-wrap: anywhere; min-height: 3lh; line-height: 1.6;
           font-family: Georgia, serif; font-size: 1.05rem; }
  .bar { display: flex; gap: 0.5rem; align-items: center; margin-top: 0.5rem; font-size: 0.85rem; }
  button { font: inherit; padding: 0.3rem 0.9rem; border-radius: 0.3rem; cursor: pointer; }
  progress { flex: 0 0 8rem; }
  [hidden] { display: none !important; }
  .error { color: #b3261e; }
  @media (prefers-color-scheme: dark) { .error { color: #ffb4ab; } }
</style>
<div class="box" part="box">
  <div class="story" part="story" role="log" aria-live="polite"></div>
  <div class="bar">
    <button class="go" part="generate" type="button" disabled>Generate</button>
    <button class="stop" part="stop" type="button" disabled>Stop</button>
    <progress max="1" value="0" hidden></progress>
    <span class="status" aria-live="polite"></span>
  </div>
  <p class="error" role="alert" hidden></p>
</div>`;

export class Llama2cStory extends HTMLElement {
  static get observedAttributes() {
    return ['model', 'tokenizer'];
  }

  constructor() {
    super();
    this.client = `widget-${nextClient++}`;
    this.state = 'loading';
    this._pieces = [];
    this._pendingText = []; // pieces of story text waiting for the next frame
    this._ready = false;
    this._stopFlag = null;
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = TEMPLATE;
    this.$story = root.querySelector('.story');
    this.$go = root.querySelector('.go');
    this.$stop = root.querySelector('.stop');
    this.$progress = root.querySelector('progress');
    this.$status = root.querySelector('.status');
    this.$error = root.querySelector('.error');
    this.$go.addEventListener('click', () => this.generate());
    this.$stop.addEventListener('click', () => this.stop());
  }

  /** The story so far: exactly what `llama2c run` prints, final newline aside. */
  get text() {
    return this._pieces.join('');
  }

  connectedCallback() {
    widgets.set(this.client, this);
    this._worker = worker(this.getAttribute('threads') || 0);
    this._load();
  }

  disconnectedCallback() {
    this.stop();
    widgets.delete(this.client);
  }

  attributeChangedCallback(name, old, value) {
    if (this.isConnected && old !== null && old !== value) this._load();
  }

  _option(name) {
    return this.getAttribute(name) ?? DEFAULTS[name] ?? null;
  }

  _url(name) {
    return new URL(this._option(name), BASE).href;
  }

  _load() {
    this._ready = false;
    this._setState('loading');
    this._worker.postMessage({ type: 'load', client: this.client, model: this._url('model'),
      tokenizer: this._url('tokenizer') });
  }

  /** Starts a story with the element's attributes. Resolves when it is done. */
  generate() {
    if (!this._ready || this.state === 'generating') return Promise.resolve(this.text);
    this._pieces = [];
    this._pendingText = [];
    this.$story.textContent = '';
    this.$error.hidden = true;
    this._stopFlag = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;
    const seed = this.getAttribute('seed');
    this._setState('generating');
    this._worker.postMessage({
      type: 'generate',
      client: this.client,
      stopFlag: this._stopFlag && this._stopFlag.buffer,
      params: {
        mode: this._option('mode') || 'generate',
        prompt: this._option('prompt'),
        system_prompt: this._option('mode') === 'chat' ? this._option('system') ?? '' : null,
        temperature: this._option('temperature'),
        topp: this._option('topp'),
        steps: this._option('steps'),
        seed: seed && seed !== 'random' ? seed : String(1 + Math.floor(Math.random() * 0x7ffffffe)),
      },
    });
    return new Promise((resolve) => {
      this.addEventListener('done', () => resolve(this.text), { once: true });
    });
  }

  /** Ends the story in progress after its current token. */
  stop() {
    if (this._stopFlag) Atomics.store(this._stopFlag, 0, 1);
    if (this._worker) this._worker.postMessage({ type: 'stop', client: this.client });
  }

  onWorkerMessage(m) {
    switch (m.type) {
      case 'progress': {
        this.$progress.hidden = false;
        this.$progress.max = m.total || 1;
        this.$progress.value = m.total ? m.loaded : 0;
        const percent = m.total ? ` ${Math.floor((100 * m.loaded) / m.total)}%` : '';
        this.$status.textContent = `${m.what === 'runtime' ? 'runtime' : m.what}${percent}`;
        this._emit('progress', { what: m.what, loaded: m.loaded, total: m.total });
        break;
      }
      case 'model':
        this._ready = true;
        this.$progress.hidden = true;
        this.$status.textContent = '';
        this._setState('ready');
        if (this.hasAttribute('autostart')) this.generate();
        break;
      case 'piece':
        this._pieces.push(m.text);
        this._showText(m.text);
        this._emit('token', { text: m.text });
        break;
      case 'done':
        this._flushText();
        this.$status.textContent = m.report.tokps ? `${m.report.tokps.toFixed(1)} tok/s` : '';
        this._setState('done');
        this._emit('done', { text: this.text, report: m.report });
        break;
      case 'error':
        this._flushText();
        this.$error.textContent = m.message;
        this.$error.hidden = false;
        this.$progress.hidden = true;
        if (m.during === 'load' || m.during === 'init') this._ready = false;
        this._setState('error');
        this._emit('error', { message: m.message });
        break;
    }
  }

  /** Adds story text once per frame: a fast model must not keep the page's thread busy. */
  _showText(text) {
    if (!this._pendingText.length) requestAnimationFrame(() => this._flushText());
    this._pendingText.push(text);
  }

  _flushText() {
    const nodes = document.createDocumentFragment();
    for (const text of this._pendingText) nodes.append(text); // text nodes: never parsed as HTML
    this.$story.append(nodes);
    this._pendingText = [];
  }

  _setState(state) {
    const focused = this.shadowRoot.activeElement;
    this.state = state;
    this.dataset.state = state;
    this.$go.disabled = !this._ready || state === 'generating' || state === 'loading';
    this.$stop.disabled = state !== 'generating';
    // A button that becomes disabled drops the keyboard focus: hand it to the one taking over.
    if (focused === this.$go && this.$go.disabled && !this.$stop.disabled) this.$stop.focus();
    else if (focused === this.$stop && this.$stop.disabled && !this.$go.disabled) this.$go.focus();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

if (!customElements.get('llama2c-story')) customElements.define('llama2c-story', Llama2cStory);
