"""End-to-end browser tests: the built site in headless Chromium, driven by Playwright."""
