/**
 * Host ports a build may reach (provision.host_ports): nothing of the build host's loopback is
 * reachable from the sandbox, except the TCP ports kiln.yaml names, which Kiln itself relays. On
 * the host, Kiln listens on a unix socket per port and connects each accepted stream to
 * 127.0.0.1:PORT; in the sandbox, a small relay listens on 127.0.0.1:PORT (the sandbox's own
 * loopback, which the image shares) and connects to that socket. So a local apt repository or
 * package proxy on the build host serves a build, and no other host service does.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';

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

/** Listens on dir/<port>.sock for each port; each connection is relayed to the host's 127.0.0.1:port. */
export async function serveHostPorts(dir: string, ports: readonly number[]): Promise<HostPorts> {
  mkdirSync(dir, { recursive: true });
  const servers: Server[] = [];
  for (const port of ports) {
    const server = createServer((inside) => {
      const host = connect(port, '127.0.0.1');
      inside.pipe(host).on('error', () => inside.destroy());
      host.pipe(inside).on('error', () => host.destroy());
      inside.on('error', () => host.destroy());
      host.on('error', () => inside.destroy());
    });
    const path = join(dir, `${port}.sock`);
    await new Promise<void>((ok, fail) => { server.once('error', fail); server.listen(path, () => ok()); });
    // The sandbox's root is not the host's root: it may connect, through the read-only bind.
    chmodSync(path, 0o666);
    servers.push(server);
  }
  return {
    dir,
    close: () => Promise.all(servers.map((s) => new Promise<void>((ok) => s.close(() => ok())))).then(() => undefined),
  };
}
