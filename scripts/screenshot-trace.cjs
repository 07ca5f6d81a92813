// screenshot-trace.cjs opens a trace in the Jaeger UI with headless
// Chromium (Debian's `chromium`), expands the root span's attributes,
// process and events, and saves a PNG. Run through scripts/screenshot-trace.sh.
//
// Usage: node screenshot-trace.cjs URL OUT.png
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

async function main() {
  const [url, out] = process.argv.slice(2);
  if (!url || !out) throw new Error('usage: screenshot-trace.cjs URL OUT.png');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mapsentry-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    userDataDir: profile,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      '--window-size=1600,1660',
    ],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1600, height: 1660 });
    await page.goto(url, { waitUntil: 'networkidle0', timeout: 30000 });
    await page.waitForSelector('.span-name', { timeout: 30000 });
    // Expand the root span (the first row) and its attributes ("Tags", the
    // first section); "Process" stays a one-line summary and "Logs" (the
    // span events) is open by default.
    await page.click('.span-name');
    await page.waitForSelector('.detail-row', { timeout: 10000 });
    const sections = await page.$$('.detail-row .AccordianKeyValues--header');
    if (sections.length) await sections[0].click();
    await new Promise((r) => setTimeout(r, 300));
    // Open the first two events (the first fatal event and the strongest
    // partner goroutine); the others stay one-line summaries.
    const events = await page.$$('.detail-row .AccordianLogs--content .AccordianKeyValues--header');
    for (const h of events.slice(0, 2)) {
      await h.click();
    }
    await new Promise((r) => setTimeout(r, 500));
    await page.screenshot({ path: out, fullPage: false });
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`screenshot-trace: ${err.message}`);
  process.exit(1);
});
