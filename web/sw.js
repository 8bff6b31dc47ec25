// The service worker: the site and its runtime (Pyodide, numpy, the llama2c wheel, the engines)
// work offline after the first visit. Models are not kept here: the worker keeps them in its own
// cache (llama2c-models-v1), which outlives every build.
//
// `invoke build` writes offline.json: the build's version (a hash of the files) and the files to
// keep. The page registers sw.js?v=VERSION, so a new build is a new service worker: it keeps the
// new files under a new cache name and deletes the old build's cache when it takes over.

const VERSION = new URL(self.location.href).searchParams.get('v') || 'dev';
const PREFIX = 'llama2c-site-';
const CACHE = PREFIX + VERSION;
const SCOPE = new URL('./', self.location.href);
// Asked of the network first (a new build or model list shows at once), the cache when offline.
const FRESH = new Set(['offline.json', 'models/index.json'].map((p) => new URL(p, SCOPE).href));

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const list = new URL('offline.json', SCOPE).href;
    const response = await fetch(list, { cache: 'no-store' });
    if (!response.ok) throw new Error(`offline.json: HTTP ${response.status}`);
    const cache = await caches.open(CACHE);
    await cache.put(list, response.clone()); // offline, the page still finds its version
    const { files } = await response.json();
    await cache.addAll(files.map((file) => new Request(new URL(file, SCOPE), { cache: 'no-store' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    const names = await caches.keys();
    await Promise.all(names.filter((n) => n.startsWith(PREFIX) && n !== CACHE)
      .map((n) => caches.delete(n)));
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || !request.url.startsWith(SCOPE.href)) return;
  const url = new URL(request.url);
  url.search = '';
  if (FRESH.has(url.href)) {
    event.respondWith(fetch(request).catch(() => fromCache(url.href, request)));
    return;
  }
  event.respondWith((async () => {
    const cached = await caches.open(CACHE).then((cache) => cache.match(url.href));
    return cached || fetch(request); // models and anything else: the network (or its error)
  })());
});

async function fromCache(url, request) {
  const cached = await caches.open(CACHE).then((cache) => cache.match(url));
  if (cached) return cached;
  return fetch(request); // fails again, as the page expects when offline
}
