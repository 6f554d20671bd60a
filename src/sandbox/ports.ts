/**
 * Host ports a build may reach (provision.host_ports): nothing of the build host's loopback is
 * reachable from the sandbox, except the TCP ports kiln.yaml names, which Kiln itself relays. On
 * the host, Kiln listens on a unix socket per port and connects each accepted stream to
 * 127.0.0.1:PORT; in the sandbox, a small relay listens on 127.0.0.1:PORT (the sandbox's own
 * loopback, which the image shares) and connects to that socket. So a local apt repository or
 * package proxy on the build host serves a build, and no other host service does.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilnError } from '../errors.js';

/** Where the sockets are inside the sandbox (the controller's /run). */
export const PORTS_DIR = '/run/kiln-ports';

/** The relay inside the sandbox: argv = socket dir, then the ports. Prints "ready" once listening. */
export const RELAY_PY = String.raw`
import asyncio, os, sys
async def pipe(src, dst):
    try:
        while True:
            data = await src.read(65536)
            if not data:
                break
            dst.write(data)
            await dst.drain()
    except Exception:
        pass
    finally:
        try:
            dst.close()
        except Exception:
            pass
async def handle(reader, writer, path):
    try:
        r2, w2 = await asyncio.open_unix_connection(path)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
async def main():
    for port in sys.argv[2:]:
        path = os.path.join(sys.argv[1], port + '.sock')
        await asyncio.start_server(lambda r, w, p=path: handle(r, w, p), '127.0.0.1', int(port))
    print('ready', flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
`;

export interface HostPorts { dir: string; close(): Promise<void> }

/** sun_path holds 108 bytes with the final NUL; libuv cuts a longer path short without an error. */
export const MAX_SOCKET_PATH = 107;

/**
 * Listens on <dir>/<port>.sock for each port; each connection is relayed to the host's 127.0.0.1:port.
 * The sockets live in a short directory of their own under the temp dir, not in the work area: a
 * unix socket's path must fit in 107 bytes, and a work area's need not (a repository deep in a
 * directory tree). Everything is closed and removed again if any listener cannot start.
 */
export async function serveHostPorts(ports: readonly number[], tmp = tmpdir()): Promise<HostPorts> {
  const dir = mkdtempSync(join(tmp, 'kiln-ports-'));
  // The sandbox's root is not the host's root: it must be able to reach the sockets through the bind.
  chmodSync(dir, 0o755);
  const servers: Server[] = [];
  const open = new Set<Socket>();
  const close = async () => {
    const closed = Promise.all(servers.map((s) => new Promise<void>((ok) => s.close(() => ok()))));
    // close() waits for every connection to end: a relayed keep-alive connection must not hold the build.
    for (const c of open) c.destroy();
    await closed;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) {
      const path = join(dir, `${port}.sock`);
      if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
        throw new KilnError(`the socket path for host port ${port} is longer than ${MAX_SOCKET_PATH} bytes: ${path}`, { hint: 'set TMPDIR to a shorter directory' });
      }
      const server = createServer((inside) => {
        open.add(inside);
        inside.on('close', () => open.delete(inside));
        const host = connect(port, '127.0.0.1');
        inside.pipe(host).on('error', () => inside.destroy());
        host.pipe(inside).on('error', () => host.destroy());
        inside.on('error', () => host.destroy());
        host.on('error', () => inside.destroy());
      });
      servers.push(server);
      await new Promise<void>((ok, fail) => { server.once('error', fail); server.listen(path, () => ok()); });
      chmodSync(path, 0o666);
    }
  } catch (e) {
    // A listener left open would keep Kiln running after the build failed.
    await close();
    throw e;
  }
  return { dir, close };
}
