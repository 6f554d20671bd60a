import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MAX_SOCKET_PATH, serveHostPorts } from '../../src/sandbox/ports.js';

const work = mkdtempSync(join(tmpdir(), 'kiln-ports-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('a relayed port reaches the host service, and close() ends open connections and removes the sockets', async () => {
  const service = createServer((s) => s.end('hello from the host\n'));
  await new Promise<void>((ok) => service.listen(0, '127.0.0.1', () => ok()));
  const port = (service.address() as { port: number }).port;
  try {
    const relay = await serveHostPorts([port], work);
    assert.ok(Buffer.byteLength(join(relay.dir, `${port}.sock`)) <= MAX_SOCKET_PATH);
    const got = await new Promise<string>((ok, fail) => {
      let text = '';
      const c = connect(join(relay.dir, `${port}.sock`));
      c.setEncoding('utf8').on('data', (d: string) => { text += d; }).on('end', () => ok(text)).on('error', fail);
    });
    assert.equal(got, 'hello from the host\n');
    const idle = connect(join(relay.dir, `${port}.sock`));
    await new Promise((ok) => idle.once('connect', ok));
    await relay.close();
    assert.equal(existsSync(relay.dir), false);
  } finally {
    service.close();
  }
});

test('a temp dir too deep for a unix socket is a clear error, and nothing is left listening or on disk', async () => {
  // The bug this guards: libuv cut the long path short, the chmod of the real name failed, and the
  // listener that had started kept a failed build running forever.
  const deep = join(work, 'a'.repeat(60), 'b'.repeat(60));
  mkdirSync(deep, { recursive: true });
  await assert.rejects(serveHostPorts([8080], deep), /longer than 107 bytes[\s\S]*/);
  assert.deepEqual(readdirSync(deep), [], 'the socket directory is removed');
});
