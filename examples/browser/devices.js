// A real-browser check of the counter and devices examples' flows, on any
// store (Chromium via playwright-core). Start both examples on the store
// under test, then run this; it prints each step and exits non-zero on the
// first that is not what a visitor should see.
//   DATABASE_URL=redis://127.0.0.1:6379 PORT=3121 cargo run --example counter &
//   DATABASE_URL=redis://127.0.0.1:6379 PORT=3122 cargo run --example devices &
//   mkdir -p /tmp/pw && (cd /tmp/pw && npm install playwright-core)
//   NODE_PATH=/tmp/pw/node_modules node examples/browser/devices.js 3121 3122
const { chromium } = require('playwright-core');
const [counterPort = '3121', devicesPort = '3122'] = process.argv.slice(2);
const counter = `http://localhost:${counterPort}`;
const devices = `http://localhost:${devicesPort}`;

function check(what, ok, seen) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${seen}`);
  if (!ok) process.exitCode = 1;
}

async function signIn(context, user) {
  const page = await context.newPage();
  await page.goto(devices + '/');
  await page.fill('input[name=user]', user);
  await page.click('button');
  return page;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    // The counter: each visit of one browser counts on; another browser
    // starts at 1; the cookie is what the docs say.
    const visitor = await browser.newContext();
    const page = await visitor.newPage();
    const counts = [];
    for (let i = 0; i < 3; i++) {
      await page.goto(counter + '/greet');
      counts.push((await page.textContent('body')).trim());
    }
    check('one browser counts', counts.join(',') === '1,2,3', counts.join(','));
    const [cookie] = await visitor.cookies();
    check('its cookie', cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === 'Lax',
      JSON.stringify(cookie && { name: cookie.name, httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite }));
    const other = await (await browser.newContext()).newPage();
    await other.goto(counter + '/greet');
    check('another browser starts at 1', (await other.textContent('body')).trim() === '1',
      (await other.textContent('body')).trim());
    // Parallel visits of one browser: none lost.
    const tabs = await Promise.all([0, 1, 2, 3].map(() => visitor.newPage()));
    await Promise.all(tabs.map((tab) => tab.goto(counter + '/greet')));
    const seen = (await Promise.all(tabs.map((tab) => tab.textContent('body')))).map((t) => t.trim()).sort();
    check('four tabs at once count 4..7', seen.join(',') === '4,5,6,7', seen.join(','));

    // Devices: a laptop and a phone sign in as ada, each sees both; the
    // phone signs out the laptop, then signs out everywhere.
    const user = `ada-${Date.now()}`;
    const laptopContext = await browser.newContext({ userAgent: 'Laptop' });
    const phoneContext = await browser.newContext({ userAgent: 'Phone' });
    const laptop = await signIn(laptopContext, user);
    check('laptop signed in', (await laptop.textContent('h1')).includes(user), await laptop.textContent('h1'));
    const phone = await signIn(phoneContext, user);
    const rows = await phone.$$eval('td:first-child', (cells) => cells.map((cell) => cell.textContent));
    check('phone sees both devices', rows.join('|') === 'Phone (this device)|Laptop', rows.join('|'));
    await laptop.reload();
    const fromLaptop = await laptop.$$eval('td:first-child', (cells) => cells.map((cell) => cell.textContent));
    check('laptop sees both, marked itself', fromLaptop.includes('Laptop (this device)') && fromLaptop.includes('Phone'), fromLaptop.join('|'));
    // The phone signs out the laptop by its row's button.
    await phone.click('tr:has(td:text-is("Laptop")) button');
    const afterRevoke = await phone.$$eval('td:first-child', (cells) => cells.map((cell) => cell.textContent));
    check('phone lists itself only', afterRevoke.join('|') === 'Phone (this device)', afterRevoke.join('|'));
    await laptop.reload();
    check('laptop is signed out', (await laptop.textContent('h1')) === 'Sign in', await laptop.textContent('h1'));
    // The laptop signs in again; the phone signs out everywhere.
    await laptop.fill('input[name=user]', user);
    await laptop.click('button');
    await phone.reload();
    check('two devices again', (await phone.$$('td:first-child')).length === 2, (await phone.$$('td:first-child')).length);
    await phone.click('text=Sign out everywhere');
    check('phone is signed out', (await phone.textContent('h1')) === 'Sign in', await phone.textContent('h1'));
    check('phone cookie removed', (await phoneContext.cookies()).length === 0, JSON.stringify(await phoneContext.cookies()));
    await laptop.reload();
    check('laptop is signed out too', (await laptop.textContent('h1')) === 'Sign in', await laptop.textContent('h1'));
    // A forged cookie: a fresh, anonymous page, not an error.
    await laptopContext.addCookies([{ name: 'session', value: 'forged', url: devices }]);
    const forged = await laptop.goto(devices + '/');
    check('a forged cookie is a fresh session', forged.status() === 200 && (await laptop.textContent('h1')) === 'Sign in',
      `${forged.status()} ${await laptop.textContent('h1')}`);
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
