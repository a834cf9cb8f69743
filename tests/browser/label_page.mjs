// Headless-Chromium test of `kiln label`'s page (crates/kiln-serve/assets/label.html).
//
// Run it with `bash tests/browser/run.sh`, which starts `kiln label` on two prompts and sets
// KILN_LABEL_URL, then checks the files it wrote. Environment as chat_page.mjs.

import { loadPlaywright } from './playwright.mjs';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const BASE = (process.env.KILN_LABEL_URL || 'http://127.0.0.1:8081').replace(/\/$/, '');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.KILN_ARTIFACTS || 'target/artifacts';


let step = '';
function begin(name) { step = name; console.log(`label page: ${name}`); }
function check(cond, message) { if (!cond) throw new Error(message); }

const { chromium } = loadPlaywright();
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.setDefaultTimeout(60_000);
let status = 0;
try {
  begin('the first comparison appears with the instructions and progress');
  await page.goto(BASE + '/');
  await page.waitForFunction(() => document.getElementById('answer-a').textContent.length > 0);
  check((await page.locator('#instructions').innerText()).includes('helpful'), 'instructions are shown');
  check((await page.locator('#count').innerText()) === '0 / 2', 'progress starts at 0 / 2');
  check((await page.locator('#prompt').innerText()).includes('capital of France'), 'the first prompt is shown');
  const a = await page.locator('#answer-a').innerText();
  const b = await page.locator('#answer-b').innerText();
  check(a.trim() && b.trim() && a !== b, 'two different answers');

  begin('the labeler name is kept, and key 1 picks answer A');
  await page.fill('#labeler', 'ada');
  await page.locator('h1').click();
  await page.keyboard.press('1');
  await page.waitForFunction(() => document.getElementById('count').textContent === '1 / 2');
  await page.waitForFunction(() => document.getElementById('prompt').textContent.includes('fruit'));
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'label-page.png'), fullPage: true });

  begin('a written answer and Tie by button finish the set');
  await page.fill('#better', 'Banana.');
  await page.getByRole('button', { name: /^Tie/ }).click();
  await page.waitForFunction(() => document.getElementById('count').textContent === '2 / 2');
  check(await page.locator('#done').isVisible(), 'the done panel shows');

  begin('a reload remembers both the labels (server) and the labeler (browser)');
  await page.reload();
  await page.waitForFunction(() => document.getElementById('count').textContent === '2 / 2');
  check(await page.locator('#done').isVisible(), 'still done after a reload');
  check((await page.inputValue('#labeler')) === 'ada', 'the labeler name is kept');
  check(pageErrors.length === 0, `page errors: ${pageErrors.join('; ')}`);
  console.log('label page: PASS');
} catch (e) {
  console.error(`FAIL label page (${step}): ${e.message}`);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
