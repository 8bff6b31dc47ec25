// <llama2c-story>: a story generator any page can embed, even from another origin.
//
//   <script type="module" src="https://example.org/llama2c/llama2c-widget.js"></script>
//   <llama2c-story model="models/stories15M.bin" tokenizer="models/tokenizer.bin"
//                  prompt="Once upon a time" temperature="0.8" topp="0.9" steps="256" seed="42">
//   </llama2c-story>
//
// Relative model and tokenizer URLs resolve against this script's URL, where the site lives;
// without a model attribute, the site's default model (models/index.json). Attributes: model,
// tokenizer, prompt, temperature, topp, steps, seed, mode (generate|chat), system, threads,
// autostart.
// JS API:
//   generate()  starts a story (or a chat); waits for the model first. Resolves with `text` when
//               the story is done or the chat waits for a line; rejects with the load error.
//   reply(text) the next line of a chat (run.c's `User: ` read); resolves like generate().
//   stop()      ends a reply after its current token (a chat then waits for a line); ends a chat
//               that waits.
//   ready       a promise of the loaded model (rejects with the load error).
//   text        the story or chat so far: exactly what `llama2c run` prints, final newline aside.
//   state       loading | ready | generating | waiting | done | error (also data-state).
// Events: `progress` ({what, loaded, total}), `token` ({text}), `waiting` ({guide}), `done`
// ({text, report}), `error` ({message}).
//
// Every widget on a page shares one worker (one Python runtime, one engine) and each model is
// downloaded once. This file is one module script for other sites; it imports client.js from
// beside itself.

import { Client, FrameBatcher, connect, modelIndex, textNodes } from './client.js';

const BASE = new URL('.', import.meta.url);
const FALLBACK = { model: 'models/stories15M.bin', tokenizer: 'models/tokenizer.bin' };
let siteDefault = null; // a Promise of the site's default model's {model, tokenizer}
let nextClient = 1;

function defaultModel() {
  siteDefault ??= modelIndex(BASE).then((index) => {
    const entry = index && index.models.find((m) => m.name === index.default);
    return entry ? { model: entry.url, tokenizer: entry.tokenizerUrl } : {
      model: new URL(FALLBACK.model, BASE).href, tokenizer: new URL(FALLBACK.tokenizer, BASE).href };
  });
  return siteDefault;
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
  .chat { display: flex; gap: 0.5rem; align-items: center; margin-top: 0.5rem; }
  .chat input { flex: 1; font: inherit; padding: 0.3rem 0.5rem; }
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
  <form class="chat" hidden>
    <label class="guide" for="line">User:</label>
    <input id="line" class="line" type="text" autocomplete="off" spellcheck="false">
    <button class="send" part="send" type="submit">Send</button>
  </form>
  <p class="error" role="alert" hidden></p>
</div>`;

export class Llama2cStory extends HTMLElement {
  static get observedAttributes() {
    return ['model', 'tokenizer'];
  }

  constructor() {
    super();
    this.state = 'loading';
    this._pieces = [];
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = TEMPLATE;
    this.$story = root.querySelector('.story');
    this.$go = root.querySelector('.go');
    this.$stop = root.querySelector('.stop');
    this.$progress = root.querySelector('progress');
    this.$status = root.querySelector('.status');
    this.$error = root.querySelector('.error');
    this.$chat = root.querySelector('.chat');
    this.$guide = root.querySelector('.guide');
    this.$line = root.querySelector('.line');
    this._shown = new FrameBatcher((texts) => this.$story.append(textNodes(texts)));
    this.$go.addEventListener('click', () => this.generate().catch(() => {}));
    this.$stop.addEventListener('click', () => this.stop());
    this.$chat.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = this.$line.value;
      this.$line.value = '';
      this.reply(text).catch(() => {});
    });
    this._client = null;
    this._loaded = false;
    // generate() before the element is even connected waits for the load that connecting starts
    this.ready = this._settle(new Promise((resolve) => { this._firstLoad = resolve; }));
  }

  /** The story so far: exactly what `llama2c run` prints, final newline aside. */
  get text() {
    return this._pieces.join('');
  }

  connectedCallback() {
    if (!this._client) {
      this._client = new Client(connect({ threads: this.getAttribute('threads') || 0 }),
        `widget-${nextClient++}`, {
          progress: (m) => this._progress(m),
          piece: (m) => this._piece(m.text),
          error: (m) => this._fail(m.message),
        });
    }
    this._load();
  }

  disconnectedCallback() {
    this.stop();
  }

  attributeChangedCallback(name, old, value) {
    if (this.isConnected && this._client && old !== value) this._load();
  }

  _option(name) {
    return this.getAttribute(name);
  }

  _load() {
    this._loaded = false;
    this._setState('loading');
    const loading = this._settle((async () => {
      const site = this.hasAttribute('model') ? null : await defaultModel();
      const url = (name) => (site ? site[name] : new URL(this._option(name) ??
        FALLBACK[name], BASE).href);
      try {
        const info = await this._client.load(url('model'), url('tokenizer'));
        this._loaded = true;
        this.$progress.hidden = true;
        this.$status.textContent = '';
        this._setState('ready');
        if (this.hasAttribute('autostart')) this.generate().catch(() => {});
        return info;
      } catch (e) {
        this._fail(e.message);
        throw e;
      }
    })());
    if (this._firstLoad) this._firstLoad(loading);
    this._firstLoad = null;
    this.ready = loading;
  }

  /** Starts a story (or a chat) with the element's attributes, once the model is ready. */
  async generate() {
    await this.ready;
    if (this._client.turn) return this.text; // one at a time
    this._pieces = [];
    this._shown.clear();
    this.$story.textContent = '';
    this.$error.hidden = true;
    const mode = this._option('mode') || 'generate';
    return this._run(() => this._client.generate({
      mode,
      prompt: this._option('prompt'),
      system: this._option('system'), // absent: chat reads it first, as run.c without -y
      temperature: this._option('temperature') ?? undefined,
      topp: this._option('topp') ?? undefined,
      steps: this._option('steps') ?? undefined,
      seed: this._option('seed'),
    }));
  }

  /** The next line of a chat that waits for one. */
  reply(text) {
    if (this.state !== 'waiting') return Promise.reject(new Error('the chat is not waiting for a line'));
    return this._run(() => this._client.reply(text));
  }

  /** Ends the reply in progress after its current token; ends a chat that waits for a line. */
  stop() {
    if (!this._client) return;
    const finished = this._client.stop();
    if (this.state === 'waiting') this._run(() => finished).catch(() => {});
  }

  async _run(request) {
    this._setState('generating');
    let turn;
    try {
      turn = await request();
    } catch (e) {
      this._shown.flush();
      this._fail(e.message);
      throw e;
    }
    this._shown.flush();
    const report = turn.report;
    this.$status.textContent = report && report.tokps ? `${report.tokps.toFixed(1)} tok/s` : '';
    if (turn.status === 'waiting') {
      this.$guide.textContent = turn.guide.trim();
      this._setState('waiting');
      this._emit('waiting', { guide: turn.guide });
    } else {
      this._setState('done');
      this._emit('done', { text: this.text, report });
    }
    return this.text;
  }

  _progress(m) {
    this.$progress.hidden = false;
    this.$progress.max = m.total || 1;
    this.$progress.value = m.total ? m.loaded : 0;
    const percent = m.total ? ` ${Math.floor((100 * m.loaded) / m.total)}%` : '';
    this.$status.textContent = `${m.what}${percent}`;
    this._emit('progress', { what: m.what, loaded: m.loaded, total: m.total });
  }

  _piece(text) {
    this._pieces.push(text);
    this._shown.push(text);
    this._emit('token', { text });
  }

  _fail(message) {
    this._shown.flush();
    this.$error.textContent = message; // text, never HTML
    this.$error.hidden = false;
    this.$progress.hidden = true;
    this._setState('error');
    this._emit('error', { message });
  }

  /** `promise`, marked handled: nobody has to await `ready` for a failed load to be quiet. */
  _settle(promise) {
    promise.catch(() => {});
    return promise;
  }

  _setState(state) {
    const focused = this.shadowRoot.activeElement;
    this.state = state;
    this.dataset.state = state;
    this.$go.disabled = !this._loaded || state === 'generating' || state === 'waiting';
    this.$stop.disabled = state !== 'generating' && state !== 'waiting';
    this.$chat.hidden = state !== 'waiting';
    // A control that becomes disabled or hidden drops the keyboard focus: hand it on.
    if (state === 'waiting' && (focused === this.$stop || focused === this.$line ||
        focused === this.$go)) this.$line.focus();
    else if (focused && (focused.disabled || focused.closest('[hidden]'))) {
      (this.$stop.disabled ? this.$go : this.$stop).focus();
    }
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

if (!customElements.get('llama2c-story')) customElements.define('llama2c-story', Llama2cStory);
