/**
 * Headless Chromium (Debian's chromium, driven by playwright-core) for the report pages: every request
 * the page makes and every console error are recorded, so a test can say "no network, no errors".
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

export interface OpenedPage { page: Page; requests: string[]; errors: string[] }

/** Chromium as root on a closed network: no sandbox (root), no background connections of its own. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/setup-host.sh --tests installs Debian's chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

/** Opens a file in a fresh context of the given size and colour scheme, recording requests and errors. */
export async function openFile(browser: Browser, file: string, opts: { width: number; height: number; dark?: boolean }): Promise<OpenedPage> {
  const ctx = await browser.newContext({ viewport: { width: opts.width, height: opts.height }, colorScheme: opts.dark ? 'dark' : 'light', deviceScaleFactor: 1 });
  const page = await ctx.newPage();
  const requests: string[] = [];
  const errors: string[] = [];
  page.on('request', (r) => { requests.push(r.url()); });
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => { errors.push(String(e)); });
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  return { page, requests, errors };
}

/** Screenshots for a person to look at: the first screen as file, the whole page beside it (-full.png). */
export async function screenshot(page: Page, file: string): Promise<void> {
  mkdirSync(dirname(file), { recursive: true });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file });
  await page.screenshot({ path: file.replace(/\.png$/, '-full.png'), fullPage: true });
}
