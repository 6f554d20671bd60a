/**
 * A release's fixed VHD as a page blob, against Azurite (Microsoft's real storage emulator, started
 * here on 127.0.0.1): only non-zero ranges are written, each 512-aligned and at most 4 MiB; the blob
 * reads back as the VHD; an upload is reused when complete, resumed when interrupted, and refused when
 * the name belongs to another release; the bytes are checked against the release's digest.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { BlobServiceClient } from '@azure/storage-blob';
import { galleryVersionName, pageRanges } from '../../src/cloud/azure/page-ranges.js';
import { META, uploadVhdPageBlob, type VhdToUpload } from '../../src/cloud/azure/upload.js';
import { KilnError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { startAzurite, type Azurite } from '../support/azurite.js';
import { scratch } from './store-fixtures.js';

const MIB = 1024 * 1024;
let azurite: Azurite;
let dir: string;
let saved: string | undefined;

before(async () => {
  dir = scratch('kiln-azure-unit-');
  azurite = await startAzurite(join(dir, 'azurite'));
  saved = process.env.AZURE_STORAGE_CONNECTION_STRING;
  process.env.AZURE_STORAGE_CONNECTION_STRING = azurite.connectionString;
});
after(async () => {
  if (saved === undefined) delete process.env.AZURE_STORAGE_CONNECTION_STRING; else process.env.AZURE_STORAGE_CONNECTION_STRING = saved;
  await azurite?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A fixed-VHD-shaped file: 12 MiB + 512, data in a few places (one run crossing a 4 MiB boundary), a footer. */
function vhd(name: string): { file: string; sha256: string; size: number } {
  const file = join(dir, name);
  const size = 12 * MIB + 512;
  writeFileSync(file, '');
  truncateSync(file, size);
  const fd = openSync(file, 'r+');
  writeSync(fd, randomBytes(70_000), 0, 70_000, 0);
  writeSync(fd, randomBytes(300_000), 0, 300_000, 4 * MIB - 100_000);
  writeSync(fd, randomBytes(4096), 0, 4096, 9 * MIB + 4096);
  writeSync(fd, Buffer.from('conectix'), 0, 8, size - 512);
  closeSync(fd);
  return { file, sha256: createHash('sha256').update(readFileSync(file)).digest('hex'), size };
}

function release(v: { file: string; sha256: string; size: number }, version = 'release-0.1.0', digest = `sha256:${'a'.repeat(64)}`): VhdToUpload {
  return { name: 'web', version, digest, commit: 'c'.repeat(40), vhdFile: v.file, vhdSha256: v.sha256, vhdSize: v.size };
}

const container = () => BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('images');

test('the page ranges of a VHD: non-zero runs only, 512-aligned, at most 4 MiB, and the whole file hashed', async () => {
  const v = vhd('ranges.vhd');
  const stats: { bytes: number; sent: number; skipped: number; sha256?: string } = { bytes: 0, sent: 0, skipped: 0 };
  const ranges: { offset: number; length: number }[] = [];
  for await (const r of pageRanges(v.file, stats)) ranges.push({ offset: r.offset, length: r.data.length });
  assert.ok(ranges.every((r) => r.offset % 512 === 0 && r.length % 512 === 0 && r.length <= 4 * MIB && r.length > 0));
  assert.equal(stats.sha256, v.sha256);
  assert.equal(stats.bytes, v.size);
  assert.equal(stats.sent + stats.skipped, v.size);
  assert.ok(stats.sent < 2 * MIB, `only the data is sent (${stats.sent} bytes)`);
  // The run across the 4 MiB boundary is two ranges, one per chunk.
  assert.ok(ranges.some((r) => r.offset + r.length === 4 * MIB) && ranges.some((r) => r.offset === 4 * MIB));
  assert.deepEqual(ranges[ranges.length - 1], { offset: 12 * MIB, length: 512 }, 'the footer');
});

test('a VHD uploaded as a page blob: only non-zero pages written, it reads back byte for byte, metadata says whose and complete', async () => {
  const v = vhd('a.vhd');
  const up = await uploadVhdPageBlob(release(v), { container: 'images' }, { logger: silentLogger });
  assert.equal(up.existing, false);
  const blob = container().getPageBlobClient(up.blobName);
  const ranges: { start: number; end: number }[] = [];
  for await (const r of blob.listPageRanges()) ranges.push({ start: r.start ?? -1, end: r.end ?? -1 });
  const written = ranges.reduce((n, r) => n + r.end + 1 - r.start, 0);
  assert.equal(written, up.sent, 'Get Page Ranges shows exactly what was sent');
  assert.ok(ranges.every((r) => r.start % 512 === 0 && (r.end + 1) % 512 === 0));
  const back = await blob.downloadToBuffer();
  assert.equal(createHash('sha256').update(back).digest('hex'), v.sha256);
  const props = await blob.getProperties();
  assert.equal(props.blobType, 'PageBlob');
  assert.equal(props.metadata?.[META.digest], `sha256:${'a'.repeat(64)}`);
  assert.equal(props.metadata?.[META.version], 'release-0.1.0');
  assert.equal(props.metadata?.[META.complete], 'true');
  assert.equal(props.leaseState, 'available', 'the lease is released');
  // Debian's Azure CLI, an independent client, sees the page blob and Kiln's metadata.
  const az = JSON.parse(execFileSync('/usr/bin/az', ['storage', 'blob', 'show', '--connection-string', azurite.connectionString, '-c', 'images', '-n', up.blobName, '-o', 'json'], {
    encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: dir, AZURE_CONFIG_DIR: join(dir, 'az'), AZURE_CORE_COLLECT_TELEMETRY: 'false' },
  })) as { properties: { blobType: string; contentLength: number }; metadata: Record<string, string> };
  assert.equal(az.properties.blobType, 'PageBlob');
  assert.equal(az.properties.contentLength, v.size);
  assert.equal(az.metadata[META.version], 'release-0.1.0');
  assert.equal(az.metadata[META.sha256], v.sha256);
  // Again: nothing sent.
  const again = await uploadVhdPageBlob(release(v), { container: 'images' }, { logger: silentLogger });
  assert.equal(again.existing, true);
  assert.equal(again.sent, 0);
});

test('an interrupted upload is resumed: pages already written right are not sent again, pages written wrong are', async () => {
  const v = vhd('b.vhd');
  const rel = release(v, 'release-0.2.0', `sha256:${'b'.repeat(64)}`);
  // What an interrupted run leaves: the blob with Kiln's metadata, its first range written, not complete.
  const blob = container().getPageBlobClient('web-release-0.2.0.vhd');
  await blob.create(v.size, { metadata: { [META.digest]: rel.digest, [META.image]: 'web', [META.version]: rel.version, [META.commit]: rel.commit } });
  const full = { bytes: 0, sent: 0, skipped: 0 };
  const ranges: { offset: number; data: Buffer }[] = [];
  for await (const r of pageRanges(v.file, full)) ranges.push(r);
  await blob.uploadPages(ranges[0].data, ranges[0].offset, ranges[0].data.length);
  // A second range "written" with other bytes (someone else, or a damaged earlier upload): it must be put again.
  await blob.uploadPages(Buffer.alloc(ranges[1].data.length, 0x5a), ranges[1].offset, ranges[1].data.length);
  const up = await uploadVhdPageBlob(rel, { container: 'images' }, { logger: silentLogger });
  assert.equal(up.existing, false);
  assert.equal(up.sent, full.sent - ranges[0].data.length, 'the range written right was not sent again; the one written wrong was');
  assert.equal(createHash('sha256').update(await blob.downloadToBuffer()).digest('hex'), v.sha256);
});

test('a blob of this name from another release, or not Kiln\'s, is refused and left alone', async () => {
  const v = vhd('c.vhd');
  await uploadVhdPageBlob(release(v, 'release-0.3.0', `sha256:${'c'.repeat(64)}`), { container: 'images' }, { logger: silentLogger });
  await assert.rejects(uploadVhdPageBlob(release(v, 'release-0.3.0', `sha256:${'d'.repeat(64)}`), { container: 'images' }, { logger: silentLogger }),
    (e: KilnError) => /web-release-0\.3\.0\.vhd exists, made from another release \(sha256:c{64}\)/.test(e.message));
  await container().getPageBlobClient('web-release-0.4.0.vhd').create(v.size);
  await assert.rejects(uploadVhdPageBlob(release(v, 'release-0.4.0'), { container: 'images' }, { logger: silentLogger }), /Kiln did not make it/);
});

test('bytes that do not hash to the release\'s VHD digest: the blob is deleted, never marked complete', async () => {
  const v = vhd('d.vhd');
  await assert.rejects(uploadVhdPageBlob({ ...release(v, 'release-0.5.0'), vhdSha256: 'e'.repeat(64) }, { container: 'images' }, { logger: silentLogger }),
    /read [0-9a-f]{64}, the release says e{64}: the blob was deleted/);
  assert.equal(await container().getPageBlobClient('web-release-0.5.0.vhd').exists(), false);
});

test('Azure needs N MiB + 512: other sizes are refused before anything is sent', async () => {
  const v = vhd('e.vhd');
  truncateSync(v.file, v.size + 512);
  await assert.rejects(uploadVhdPageBlob({ ...release(v, 'release-0.6.0'), vhdSize: v.size + 512 }, { container: 'images' }, { logger: silentLogger }), /whole number of MiB/);
});

test('gallery version names: the x.y.z of the Kiln version, 32-bit parts', () => {
  assert.equal(galleryVersionName('release-0.1.0'), '0.1.0');
  assert.equal(galleryVersionName('v2.10.3'), '2.10.3');
  assert.throws(() => galleryVersionName('release-2026-11'), /no x\.y\.z/);
  assert.throws(() => galleryVersionName('release-0.1.4294967296'), /32-bit/);
});
