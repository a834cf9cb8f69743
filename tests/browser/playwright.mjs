// playwright-core for the browser tests, from PLAYWRIGHT_CORE_DIR (where run.sh installs it),
// the working directory, or beside these scripts.

import { createRequire } from 'node:module';
import path from 'node:path';

export function loadPlaywright() {
  const dirs = [process.env.PLAYWRIGHT_CORE_DIR, process.cwd(), path.dirname(new URL(import.meta.url).pathname)].filter(Boolean);
  for (const dir of dirs) {
    try { return createRequire(path.join(path.resolve(dir), 'noop.js'))('playwright-core'); } catch {}
  }
  throw new Error('playwright-core not found (set PLAYWRIGHT_CORE_DIR, or run tests/browser/run.sh)');
}
