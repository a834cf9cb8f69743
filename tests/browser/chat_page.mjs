// Headless-Chromium test of kiln serve's chat page (crates/kiln-serve/assets/chat.html).
//
// Run it with `bash tests/browser/run.sh`, which installs playwright-core, starts
// `kiln serve` and sets KILN_URL. By hand:
//   KILN_URL=http://127.0.0.1:8199 PLAYWRIGHT_CORE_DIR=~/.cache/kiln/npm node tests/browser/chat_page.mjs
//
// Environment: KILN_URL (server), CHROMIUM (default /usr/bin/chromium), KILN_ARTIFACTS
// (screenshots, default target/artifacts), PLAYWRIGHT_CORE_DIR (where node_modules/playwright-core is).

import { loadPlaywright } from './playwright.mjs';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const BASE = (process.env.KILN_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.KILN_ARTIFACTS || 'target/artifacts';


const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(1) + 's';
let step = '';
function begin(name) { step = name; console.log(`[${secs()}] ${name}`); }
function check(cond, message) { if (!cond) throw new Error(message); }

async function metric(name) {
  const text = await (await fetch(BASE + '/metrics')).text();
  const m = text.match(new RegExp('^' + name + ' (\\S+)$', 'm'));
  return m ? Number(m[1]) : NaN;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const lastAssistant = '.message.assistant >> nth=-1';

let browser;
try {
  const { chromium } = loadPlaywright();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
} catch (e) {
  console.error(`FAIL chat page: could not start Chromium (${CHROMIUM}): ${e.message}`);
  process.exit(1);
}
const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light' });
try { await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE }); } catch {}
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => { if (m.type() === 'error' && !/status of (401|503)/.test(m.text())) pageErrors.push('console: ' + m.text()); });
page.setDefaultTimeout(30_000);

async function assistantText() {
  return page.locator(lastAssistant).locator('.content').innerText();
}

try {
  begin('open the page, see the model name');
  const models = await (await fetch(BASE + '/v1/models')).json();
  const modelId = models.data[0].id;
  await page.goto(BASE + '/');
  await page.waitForFunction((id) => document.querySelector('#model-name')?.textContent.trim() === id, modelId, { timeout: 10_000 })
    .catch(async () => { throw new Error(`#model-name shows "${await page.textContent('#model-name')}", expected "${modelId}"`); });
  check(await page.isVisible('#prompt'), '#prompt is not visible');
  check(await page.isVisible('#send') && !(await page.isVisible('#stop')), 'expected #send visible and #stop hidden at start');
  // The page starts from a clean state (the browser context is fresh).
  check((await page.locator('.message').count()) === 0, 'a fresh page should have no messages');

  begin('Shift+Enter adds a line, Enter sends');
  await page.click('#prompt');
  await page.keyboard.type('line one');
  await page.keyboard.press('Shift+Enter');
  await page.keyboard.type('line two');
  check((await page.inputValue('#prompt')) === 'line one\nline two', 'Shift+Enter should insert a newline');
  check((await page.locator('.message').count()) === 0, 'Shift+Enter must not send');
  await page.fill('#prompt', '');

  begin('settings: keep replies short (max tokens 200), kept in localStorage');
  const setMaxTokens = async (n) => {
    await page.click('#settings-btn');
    await page.waitForSelector('#settings[open]');
    await page.fill('#set-max_tokens', String(n));
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.getElementById('settings').open);
    const saved = await page.evaluate(() => JSON.parse(localStorage.getItem('kiln.settings')));
    check(saved.max_tokens === n, `settings not persisted: ${JSON.stringify(saved)}`);
  };
  await setMaxTokens(200);

  begin('ask a question, watch the answer stream');
  // Record the length of the reply each time the DOM changes, until the speed line appears.
  const observe = () => page.evaluate(() => {
    window.__lengths = [];
    const obs = new MutationObserver(() => {
      const msgs = document.querySelectorAll('.message.assistant');
      const last = msgs[msgs.length - 1];
      if (!last) return;
      if (last.querySelector('.tps')) { window.__lengths.push('done'); obs.disconnect(); return; }
      const n = last.querySelector('.content').textContent.length;
      const prev = window.__lengths[window.__lengths.length - 1];
      if (n > 0 && n !== prev) window.__lengths.push(n);
    });
    obs.observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
  });
  await observe();
  await page.fill('#prompt', 'What is the capital of France?');
  await page.press('#prompt', 'Enter');
  await page.waitForSelector('.message.user');
  check((await page.locator('.message.user').last().innerText()).includes('capital of France'), 'the user message is not shown');
  check((await page.inputValue('#prompt')) === '', 'the composer should be cleared after sending');
  let growth = [], lengths = [];
  for (let attempt = 1; ; attempt++) {
    await page.waitForSelector(lastAssistant + ' >> .tps', { timeout: 60_000 });
    lengths = await page.evaluate(() => window.__lengths);
    growth = lengths.filter((x) => typeof x === 'number');
    if (growth.length >= 2 || attempt === 3) break;
    // A one-token answer can arrive in a single frame: ask again (Regenerate) for a longer one.
    console.log(`    the answer arrived in ${growth.length} step(s); regenerating`);
    await observe();
    await page.locator(lastAssistant).locator('.regenerate').click();
  }
  // Overall growth, not strictly at every step: re-rendering Markdown can shorten the visible
  // text for a moment (a `**` that closes becomes bold and its markers vanish).
  check(growth.length >= 2 && growth[growth.length - 1] > growth[0],
    `the reply should grow over at least two observations before it completes; saw lengths ${JSON.stringify(lengths)}`);
  const answer = (await assistantText()).trim();
  check(answer.length > 0, 'the answer is empty');
  const tps = await page.locator(lastAssistant).locator('.tps').innerText();
  check(/[\d.]+ tok\/s/.test(tps) && /\d+ tokens/.test(tps), `the speed line reads "${tps}"`);
  check(await page.isVisible('#send') && !(await page.isVisible('#stop')), 'after the reply, #send should be back');
  console.log(`    answer (${growth.length} growth steps): ${JSON.stringify(answer.slice(0, 120))}  [${tps.replace(/\s+/g, ' ')}]`);

  begin('long generation (max tokens 3000), then Stop');
  await setMaxTokens(3000);
  let sentBody = null;
  page.once('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) sentBody = r.postDataJSON(); });
  await page.fill('#prompt', 'Write a very long story about a dragon who learns to bake bread. Make it at least twenty paragraphs long.');
  await page.press('#prompt', 'Enter');
  for (let attempt = 1; ; attempt++) {
    await page.waitForSelector('#stop', { state: 'visible' });
    check(!(await page.isVisible('#send')), '#send should turn into #stop while generating');
    // Wait for some text, or for the model to end the story on its own.
    await page.waitForFunction(() => {
      const m = [...document.querySelectorAll('.message.assistant')].pop();
      return m && (m.querySelector('.content').textContent.length > 40 || m.querySelector('.tps'));
    }, null, { timeout: 30_000 });
    if (await page.isVisible('#stop')) break;
    check(attempt < 3, 'the model ended the story three times before Stop could be clicked');
    console.log('    the model ended the story early; regenerating');
    await page.locator(lastAssistant).locator('.regenerate').click();
  }
  check(sentBody && sentBody.max_tokens === 3000 && typeof sentBody.temperature === 'number' && Number.isInteger(sentBody.seed) && sentBody.stream === true && sentBody.stream_options?.include_usage === true,
    `the request should carry the settings: ${JSON.stringify(sentBody)}`);
  const runningBefore = await metric('kiln_requests_running');
  await page.click('#stop');
  const stoppedAt = Date.now();
  await page.waitForSelector('#send', { state: 'visible', timeout: 5_000 });
  check(!(await page.isVisible('#stop')), '#stop should be hidden after stopping');
  const len1 = (await assistantText()).length;
  let running = NaN;
  while (Date.now() - stoppedAt < 3_000) {
    running = await metric('kiln_requests_running');
    if (running === 0) break;
    await sleep(50);
  }
  check(running === 0, `kiln_requests_running is ${running} 3 s after Stop (the server did not free the slot)`);
  const freedMs = Date.now() - stoppedAt;
  await sleep(1_000);
  const len2 = (await assistantText()).length;
  check(len1 === len2, `the reply kept growing after Stop (${len1} -> ${len2} characters)`);
  check(await page.locator(lastAssistant).getAttribute('data-stopped') !== null, 'the stopped reply should be marked as stopped');
  console.log(`    stopped after ${len1} characters; kiln_requests_running ${runningBefore} -> 0 within ${freedMs} ms of the click`);

  await setMaxTokens(200);

  begin('a prompt that asks for code');
  await page.fill('#prompt', 'Write a Python function that adds two numbers. Use a code block.');
  await page.press('#prompt', 'Enter');
  await page.waitForSelector(lastAssistant + ' >> .tps', { timeout: 60_000 });
  check((await assistantText()).trim().length > 0, 'the code answer is empty');
  const realBlocks = await page.locator(lastAssistant).locator('.codeblock').count();
  console.log(`    the model's reply has ${realBlocks} rendered code block(s)`);

  begin('Markdown rendering and escaping (synthetic message)');
  const md = [
    '## Heading two',
    'Some **bold**, *italic*, `inline <b>code</b>` and a [link](https://example.com/docs).',
    'A [bad link](javascript:alert(1)) and raw HTML: <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">',
    '',
    '```python',
    'def add(a, b):',
    '    return a + b  # <script>alert(1)</script>',
    '```',
    '',
    '- first item',
    '- second item',
    '  - nested item',
    '',
    '1. one',
    '2. two',
    '3. three',
    '',
    '| Language | Typing |',
    '| --- | :---: |',
    '| Rust | static |',
    '| Python | dynamic |',
    '',
    '> a quote',
  ].join('\n');
  await page.evaluate((text) => window.kilnAppendMessage('assistant', text), md);
  const r = await page.evaluate(() => {
    const m = [...document.querySelectorAll('.message.assistant')].pop().querySelector('.content');
    const q = (s) => m.querySelectorAll(s).length;
    return {
      h2: m.querySelector('h2')?.textContent, strong: q('strong'), em: q('em'), inlineCode: m.querySelector('p code')?.textContent,
      link: m.querySelector('a')?.getAttribute('href'), badLinks: q('a[href^="javascript"]'), anchors: q('a'),
      lang: m.querySelector('.codeblock .lang')?.textContent, code: m.querySelector('.codeblock code')?.textContent,
      copyButtons: q('.codeblock .copy-code'), ul: q('ul > li'), nested: q('ul ul > li'), ol: q('ol > li'),
      th: q('table th'), td: q('table td'), quote: q('blockquote'),
      scripts: q('script'), imgs: q('img'), text: m.textContent, pwned: window.__pwned,
    };
  });
  check(r.h2 === 'Heading two', `heading: ${r.h2}`);
  check(r.strong >= 1 && r.em >= 1, `bold/italic: ${r.strong}/${r.em}`);
  check(r.inlineCode === 'inline <b>code</b>', `inline code: ${r.inlineCode}`);
  check(r.link === 'https://example.com/docs' && r.badLinks === 0 && r.anchors === 1, `links: first ${r.link}, javascript: ${r.badLinks}, all ${r.anchors}`);
  check(r.lang === 'python' && r.code.includes('def add(a, b):\n    return a + b  # <script>alert(1)</script>'), `code block: ${r.lang} ${JSON.stringify(r.code)}`);
  check(r.copyButtons === 1, 'the code block has no Copy button');
  check(r.ul === 3 && r.nested === 1 && r.ol === 3, `lists: ul ${r.ul}, nested ${r.nested}, ol ${r.ol}`);
  check(r.th === 2 && r.td === 4, `table: ${r.th} th, ${r.td} td`);
  check(r.quote === 1, 'blockquote missing');
  check(r.scripts === 0 && r.imgs === 0 && r.pwned === undefined, `HTML from the model was not escaped: ${r.scripts} script, ${r.imgs} img, pwned=${r.pwned}`);
  check(r.text.includes('<script>window.__pwned = 1</script>'), 'the escaped <script> text should be shown literally');
  const rendered = await page.evaluate(() => window.kilnRenderMarkdown('x <svg onload=alert(1)> **y**'));
  check(!rendered.includes('<svg') && rendered.includes('&lt;svg') && rendered.includes('<strong>y</strong>'), `kilnRenderMarkdown: ${rendered}`);
  // Random Markdown-ish soup: the output may only hold the renderer's own tags and attributes.
  const soup = await page.evaluate(() => {
    const parts = ['<', '>', '"', "'", '&', '`', '```', '\n', '\n\n', '*', '**', '_', '[', ']', '(', ')', '](', '|', '-', '1.', '#', '>', ' ',
      'javascript:', 'https://a.b/', 'mailto:x@y', 'data:text/html,', '<script>', '</script>', '<img src=x onerror=alert(1)>', 'onload=', '<a href="', '&#106;', '\u0000', '\uE000', 'x', 'word'];
    const tags = new Set(['P', 'BR', 'STRONG', 'EM', 'DEL', 'CODE', 'PRE', 'A', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'UL', 'OL', 'LI', 'BLOCKQUOTE', 'HR',
      'TABLE', 'THEAD', 'TBODY', 'TR', 'TH', 'TD', 'DIV', 'SPAN', 'BUTTON', 'svg', 'use']);
    const attrs = new Set(['href', 'target', 'rel', 'class', 'type', 'aria-label', 'aria-hidden', 'data-action', 'start', 'style', 'width', 'height']);
    let seed = 12345;
    const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    for (let k = 0; k < 400; k++) {
      let text = '';
      for (let j = 0, n = 5 + rnd(40); j < n; j++) text += parts[rnd(parts.length)];
      const t = document.createElement('template');
      t.innerHTML = window.kilnRenderMarkdown(text);
      for (const e of t.content.querySelectorAll('*')) {
        if (!tags.has(e.tagName)) return `tag <${e.tagName}> from ${JSON.stringify(text)}`;
        for (const a of e.attributes) {
          if (!attrs.has(a.name)) return `attribute ${a.name} from ${JSON.stringify(text)}`;
          if (a.name === 'href' && !(e.tagName === 'use' ? a.value === '#i-copy' : /^(https?:\/\/|mailto:)/i.test(a.value))) return `href ${a.value} from ${JSON.stringify(text)}`;
          if (a.name === 'style' && !/^text-align:(left|right|center)$/.test(a.value)) return `style ${a.value} from ${JSON.stringify(text)}`;
        }
      }
    }
    return null;
  });
  check(soup === null, 'unsafe Markdown output: ' + soup);

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.locator('.conversation').evaluate((c) => { c.scrollTop = c.scrollHeight; });
  await sleep(400); // let the message's fade-in finish
  await page.mouse.move(760, 420); // no hover highlight on the header buttons
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.locator(lastAssistant).locator('.copy-code').click();
  const clip = await page.evaluate(() => navigator.clipboard.readText().catch(() => null));
  if (clip !== null) check(clip.startsWith('def add(a, b):'), `Copy put ${JSON.stringify(clip)} on the clipboard`);

  begin('errors: a busy server (503) is shown inline');
  await page.route('**/v1/chat/completions', (route) => route.fulfill({
    status: 503, contentType: 'application/json',
    body: JSON.stringify({ error: { message: 'the server is busy: 2 requests running and 32 queued (the limit); retry in a moment', type: 'server_error', code: 'server_busy' } }),
  }), { times: 1 });
  await page.fill('#prompt', 'Hello?');
  await page.press('#prompt', 'Enter');
  const busy = page.locator(lastAssistant).locator('.error-box');
  await busy.waitFor();
  const busyText = await busy.innerText();
  check(/busy/i.test(busyText) && busyText.includes('2 requests running and 32 queued'), `503 message: ${busyText}`);
  await page.waitForSelector('#send', { state: 'visible' });

  begin('errors: 401 asks for an API key and sends it');
  let authHeader = null;
  await page.route('**/v1/chat/completions', (route) => route.fulfill({
    status: 401, contentType: 'application/json',
    body: JSON.stringify({ error: { message: 'a valid API key is required', type: 'invalid_request_error', code: 'invalid_api_key' } }),
  }), { times: 1 });
  await page.locator(lastAssistant).locator('[data-action="regenerate"]').first().click();
  await page.waitForSelector('#key-dialog[open]');
  await page.route('**/v1/chat/completions', (route) => { authHeader = route.request().headers().authorization; return route.continue(); }, { times: 1 });
  await page.fill('#api-key-input', 'test-key-123');
  await page.click('#key-save');
  await page.waitForSelector(lastAssistant + ' >> .tps', { timeout: 60_000 });
  check(authHeader === 'Bearer test-key-123', `the retried request carried Authorization: ${authHeader}`);
  check((await page.evaluate(() => JSON.parse(localStorage.getItem('kiln.apiKey')))) === 'test-key-123', 'the API key is not in localStorage');
  await page.evaluate(() => localStorage.removeItem('kiln.apiKey'));

  begin('conversations persist across a reload; New chat');
  const userCount = await page.locator('.message.user').count();
  await page.reload();
  await page.waitForSelector('.message.user');
  check((await page.locator('.message.user').count()) === userCount, 'the conversation was not restored after reload');
  check((await page.locator('#chat-list .chat-item').count()) >= 1, 'the sidebar lists no chats');
  await page.click('#settings-btn');
  check((await page.inputValue('#set-max_tokens')) === '200', 'the settings were not restored after reload');
  await page.keyboard.press('Escape');
  await page.click('#new-chat');
  check((await page.locator('.message').count()) === 0, 'New chat should start an empty conversation');
  check(await page.isVisible('#welcome'), 'the empty state should show');
  await page.locator('#chat-list .open-chat').first().click();
  check((await page.locator('.message.user').count()) === userCount, 'reopening the chat from the sidebar failed');

  begin('edit the first message; keyboard only');
  const first = page.locator('.message.user').first();
  await first.hover();
  await first.locator('[data-action="edit"]').click();
  check((await page.inputValue('#prompt')).includes('capital of France'), 'Edit should put the message back in the composer');
  check((await page.locator('.message').count()) === 0, 'Edit should drop the message and everything after it');
  await page.keyboard.press('Enter'); // the composer has focus after Edit
  await page.waitForSelector(lastAssistant + ' >> .tps', { timeout: 60_000 });
  check((await page.locator('.message.user').count()) === 1, 'the edited message was not sent');

  begin('accessibility smoke check: names for buttons and fields');
  const unnamed = await page.evaluate(() => {
    const bad = [];
    for (const b of document.querySelectorAll('button')) {
      if (!(b.getAttribute('aria-label') || b.textContent.trim() || b.title)) bad.push(b.outerHTML.slice(0, 80));
    }
    for (const f of document.querySelectorAll('input, textarea')) {
      if (!(f.labels && f.labels.length) && !f.getAttribute('aria-label')) bad.push(f.outerHTML.slice(0, 80));
    }
    return bad;
  });
  check(unnamed.length === 0, 'controls without an accessible name: ' + unnamed.join(', '));
  await page.focus('#prompt');
  await page.keyboard.press('Shift+Tab');
  check(await page.evaluate(() => document.activeElement && document.activeElement !== document.body), 'keyboard focus got lost');

  check(pageErrors.length === 0, 'errors in the page: ' + pageErrors.join(' | '));
  console.log(`[${secs()}] PASS chat page (screenshots in ${ARTIFACTS}/chat-page.png, chat-page-dark.png)`);
} catch (e) {
  console.error(`FAIL chat page, step "${step}": ${e.message}`);
  if (pageErrors.length) console.error('page errors: ' + pageErrors.join(' | '));
  try {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'chat-page-failure.png') });
    console.error(`screenshot: ${ARTIFACTS}/chat-page-failure.png`);
  } catch {}
  process.exitCode = 1;
} finally {
  await browser.close();
}
