// A real-browser check of the auth example's flows (Chromium via playwright-core).
//   PORT=3111 cargo run --example auth   (with fresh users/sessions databases)
//   mkdir -p /tmp/pw && (cd /tmp/pw && npm install playwright-core) && NODE_PATH=/tmp/pw/node_modules node examples/browser/auth.js
// It prints each step; a cross-site form from http://127.0.0.1:3112 must get the 403.
const { chromium } = require('playwright-core');
const http = require('http');
const base = 'http://localhost:3111';
(async () => {
  // An attacker's site on another origin: auto-submits a sign-in form.
  const evil = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<form id=f method=post action="${base}/login"><input name=username value=ferris><input name=password value=correct-horse-9></form><script>f.submit()</script>`);
  }).listen(3112);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const laptop = await browser.newContext();
  const phone = await browser.newContext();
  const out = [];
  const a = await laptop.newPage();
  let r = await a.goto(base + '/devices');
  out.push(['protected page redirects to', a.url()]);
  out.push(['hidden next', await a.getAttribute('input[name=next]', 'value')]);
  await a.fill('input[name=username]', 'ferris');
  await a.fill('input[name=password]', 'wrong');
  await a.click('button');
  out.push(['wrong password says', await a.textContent('.message')]);
  await a.fill('input[name=username]', 'ferris');
  await a.fill('input[name=password]', 'hunter42');
  await a.click('button');
  out.push(['after sign-in at', a.url()]);
  out.push(['devices page', (await a.textContent('ul')).trim()]);
  const cookies = await laptop.cookies();
  out.push(['cookie', JSON.stringify(cookies.map(c => ({name: c.name, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite})))]);
  const p = await phone.newPage();
  await p.goto(base + '/');
  await p.fill('input[name=username]', 'ferris');
  await p.fill('input[name=password]', 'hunter42');
  await p.click('button');
  out.push(['phone signed in at', p.url(), (await p.textContent('p')).trim()]);
  await a.goto(base + '/devices');
  out.push(['laptop sees devices', (await a.$$('li')).length]);
  await a.goto(base + '/password');
  await a.fill('input[name=current]', 'hunter42');
  await a.fill('input[name=new]', 'correct-horse-9');
  await a.click('button');
  out.push(['password change says', (await a.textContent('p')).trim()]);
  await a.goto(base + '/');
  out.push(['laptop after change', a.url(), (await a.textContent('p')).trim()]);
  await p.goto(base + '/');
  out.push(['phone after change', p.url()]);
  // Cross-site auto-submitted sign-in, in the phone (signed out now).
  const e = await phone.newPage();
  await e.goto('http://127.0.0.1:3112/');
  await e.waitForLoadState('networkidle');
  out.push(['cross-site sign-in', e.url(), (await e.textContent('body')).trim()]);
  await p.goto(base + '/');
  out.push(['phone after cross-site form', p.url()]);
  // Sign out on the laptop.
  await a.goto(base + '/');
  await a.click('form[action="/logout"] button');
  out.push(['after sign-out at', a.url()]);
  await a.goto(base + '/');
  out.push(['protected after sign-out', a.url()]);
  for (const line of out) console.log(line.join(' | '));
  await browser.close();
  evil.close();
})().catch(e => { console.error(e); process.exit(1); });
