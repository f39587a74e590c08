// Drives Debian's headless Chromium for tests/gateway/browser.py: one JSON
// command per stdin line, one JSON answer per stdout line.
//   {"id": 1, "op": "goto", "url": "http://127.0.0.1:8000/"}
//   {"id": 2, "op": "eval", "expr": "fetch('/x').then(r => r.status)"}
// Answers: {"id": 1, "ok": true, "value": ...} or {"id": 1, "ok": false, "error": "..."}.
// The page's console goes to stderr. Exits when stdin closes.
import readline from 'node:readline';
import puppeteer from 'puppeteer-core';

const args = ['--disable-dev-shm-usage', '--disable-gpu'];
if (process.getuid && process.getuid() === 0) args.push('--no-sandbox'); // Chromium refuses root otherwise

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args,
});
const page = await browser.newPage();
page.on('console', (message) => process.stderr.write(`page: ${message.text()}\n`));

const send = (answer) => process.stdout.write(JSON.stringify(answer) + '\n');
send({ready: true, version: await browser.version()});

const lines = readline.createInterface({input: process.stdin});
for await (const line of lines) {
  const command = JSON.parse(line);
  try {
    let value = null;
    if (command.op === 'goto') {
      const response = await page.goto(command.url);
      value = response ? response.status() : null;
    } else if (command.op === 'eval') {
      value = await page.evaluate(command.expr);
    } else {
      throw new Error(`unknown op ${command.op}`);
    }
    send({id: command.id, ok: true, value: value === undefined ? null : value});
  } catch (error) {
    send({id: command.id, ok: false, error: String(error && error.message || error)});
  }
}
await browser.close();
