/**
 * Azurite, Microsoft's Azure Storage emulator (npm `azurite`, a dev dependency), started by the tests
 * on 127.0.0.1: page blobs, Put Page, Get Page Ranges, leases, metadata and SharedKey auth are real
 * there. Its account is the public development account (devstoreaccount1 and its documented key).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';

export const DEV_ACCOUNT = 'devstoreaccount1';
// The documented key of Azurite's development account (not a secret).
export const DEV_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface Azurite { blobEndpoint: string; connectionString: string; process: ChildProcess; stop(): Promise<void> }

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export async function startAzurite(dir: string): Promise<Azurite> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const bin = resolve(new URL('../../../node_modules/.bin/azurite-blob', import.meta.url).pathname);
  const child = spawn(bin, ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--location', dir, '--skipApiVersionCheck', '--disableTelemetry', '--silent', '--loose'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { out += d.toString(); });
  const t0 = Date.now();
  while (!/successfully list/i.test(out)) {
    if (child.exitCode !== null) throw new Error(`azurite exited ${child.exitCode}: ${out}`);
    if (Date.now() - t0 > 30_000) { child.kill(); throw new Error(`azurite did not start in 30 s: ${out}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  const blobEndpoint = `http://127.0.0.1:${port}/${DEV_ACCOUNT}`;
  return {
    blobEndpoint,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_KEY};BlobEndpoint=${blobEndpoint};`,
    process: child,
    stop: () => new Promise<void>((res) => {
      if (child.exitCode !== null) { res(); return; }
      child.once('exit', () => res());
      child.kill('SIGTERM');
    }),
  };
}

export const azuriteData = (dir: string) => join(dir, '__blobstorage__');
