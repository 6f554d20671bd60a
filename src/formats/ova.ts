/**
 * The OVA: a tar of the OVF descriptor, then the manifest, then the disk (DSP0243 §5.3, the order
 * VMware and VirtualBox stream-import). Members are written with Kiln's own headers (tar-header.ts:
 * owner root/0, mode 0644, mtime SOURCE_DATE_EPOCH), hashing the archive while it is written.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract } from 'tar-stream';
import { KilnError } from '../errors.js';
import { buildTarHeader, chooseTarFormat, padding, trailerSize, type TarFormat } from './tar-header.js';

export interface OvaMember {
  name: string;
  /** In-memory content (descriptor, manifest)... */
  data?: Buffer;
  /** ...or a file streamed into the archive (the disk). */
  path?: string;
  size: number;
}

const CHUNK = 4 * 1024 * 1024;

/** Writes the OVA and returns its sha256 and tar format. */
export async function writeOva(dst: string, members: OvaMember[], mtime: number): Promise<{ sha256: string; format: TarFormat }> {
  const format = chooseTarFormat(members.map((m) => m.size));
  const hash = createHash('sha256');
  const out = await open(dst, 'w');
  let pos = 0;
  const put = async (b: Buffer) => {
    hash.update(b);
    await out.write(b, 0, b.length, pos);
    pos += b.length;
  };
  try {
    for (const m of members) {
      await put(buildTarHeader({ name: m.name, size: m.size, mtime }, format));
      if (m.data) {
        if (m.data.length !== m.size) throw new Error(`OVA member ${m.name}: size ${m.size} != data length ${m.data.length}`);
        await put(m.data);
      } else if (m.path) {
        const src = await open(m.path, 'r');
        try {
          const buf = Buffer.alloc(CHUNK);
          let copied = 0;
          for (;;) {
            const { bytesRead } = await src.read(buf, 0, CHUNK, copied);
            if (bytesRead === 0) break;
            await put(buf.subarray(0, bytesRead));
            copied += bytesRead;
          }
          if (copied !== m.size) throw new KilnError(`${m.name} changed size while being archived into the OVA: expected ${m.size} bytes, read ${copied}`, { hint: 'make sure nothing else writes the build\'s output directory, and build again' });
        } finally {
          await src.close();
        }
      }
      await put(Buffer.alloc(padding(m.size)));
    }
    await put(Buffer.alloc(trailerSize(pos)));
  } finally {
    await out.close();
  }
  return { sha256: hash.digest('hex'), format };
}

export interface OvaEntry { name: string; size: number; mode: number; uid: number; gid: number; mtime: number; type: string }

/** The members of an OVA, in archive order (read with tar-stream, independently of the writer). */
export async function listOva(ova: string): Promise<OvaEntry[]> {
  const ex = tarExtract();
  const entries: OvaEntry[] = [];
  const reading = pipeline(createReadStream(ova), ex);
  for await (const e of ex) {
    const h = e.header;
    entries.push({ name: h.name, size: h.size ?? 0, mode: h.mode ?? 0, uid: h.uid ?? -1, gid: h.gid ?? -1, mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000), type: h.type ?? '' });
    e.resume();
  }
  await reading;
  return entries;
}

/** Reads one member of an OVA into memory (for the descriptor and manifest). */
export async function readOvaMember(ova: string, name: string): Promise<Buffer> {
  const ex = tarExtract();
  const reading = pipeline(createReadStream(ova), ex);
  let found: Buffer | undefined;
  for await (const e of ex) {
    if (e.header.name === name && !found) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      found = Buffer.concat(parts);
    } else e.resume();
  }
  await reading;
  if (!found) throw new KilnError(`${basename(ova)} has no member ${name}`);
  return found;
}

/**
 * Extracts the disk of an OVA (the VMDK its descriptor references) into outDir and returns its path.
 * Used by boot tests: the VMDK that boots is the one inside the OVA.
 */
export async function extractOvaDisk(ova: string, outDir: string): Promise<string> {
  const ex = tarExtract();
  const reading = pipeline(createReadStream(ova), ex);
  let hrefs: string[] | undefined;
  let written: string | undefined;
  for await (const e of ex) {
    const name = e.header.name;
    if (name.endsWith('.ovf') && !hrefs) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      hrefs = [...Buffer.concat(parts).toString('utf8').matchAll(/ovf:href="([^"]+)"/g)].map((m) => m[1]);
      continue;
    }
    const isDisk = hrefs ? hrefs.includes(name) : name.endsWith('.vmdk');
    if (isDisk && !written) {
      if (name !== basename(name) || name.startsWith('.')) throw new KilnError(`OVA member name ${JSON.stringify(name)} is not a plain file name`);
      written = join(outDir, name);
      await pipeline(e, createWriteStream(written));
    } else e.resume();
  }
  await reading;
  if (!written) throw new KilnError(`${basename(ova)} holds no VMDK referenced by its descriptor`);
  return written;
}
