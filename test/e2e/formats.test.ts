/** Issue 4 on the real image: every format holds the same disk, the OVA is valid, VMDK and VHD boot (the VHD through `kiln boot`). */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { extractOvaDisk, listOva, parseVhdFooter, readOvaMember, validateOvf } from '../../src/formats/index.js';
import { bootVm, type RunningVm } from '../../src/vm/qemu.js';
import { artifact, builtExample, kiln, type BuiltExample, type KilnRun } from './fixture.js';

let built: BuiltExample;
let scratch: string;
before(async () => { built = await builtExample(); scratch = mkdtempSync(join(tmpdir(), 'kiln-fmt-e2e-')); });
after(() => rmSync(scratch, { recursive: true, force: true }));

describe('one build, every format', () => {
  test('the build wrote every format in kiln.yaml, each with size and sha256', () => {
    assert.deepEqual(built.record.artifacts.map((a) => a.format).sort(), ['gce', 'ova', 'qcow2', 'raw', 'vhd', 'vhdx', 'vmdk']);
  });

  for (const [format, qfmt] of [['qcow2', 'qcow2'], ['vmdk', 'vmdk'], ['vhd', 'vpc'], ['vhdx', 'vhdx']] as const) {
    test(`${format} holds exactly the raw disk (qemu-img compare)`, () => {
      const out = execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', qfmt, artifact(built, 'raw'), artifact(built, format)], { encoding: 'utf8' });
      assert.match(out, /Images are identical/);
    });
  }

  test('the VHD is fixed, Azure-sized (N MiB + 512) and its footer checks out', () => {
    const vhd = artifact(built, 'vhd');
    const size = statSync(vhd).size;
    assert.equal((size - 512) % (1024 * 1024), 0);
    const buf = Buffer.alloc(512);
    const fd = openSync(vhd, 'r');
    readSync(fd, buf, 0, 512, size - 512);
    closeSync(fd);
    const f = parseVhdFooter(buf);
    assert.equal(f.cookie, 'conectix');
    assert.equal(f.diskType, 2);
    assert.equal(Number(f.currentSize), size - 512);
  });

  test('the OVA is ovf, mf, vmdk in that order, with a valid descriptor and manifest', async () => {
    const ova = artifact(built, 'ova');
    const names = (await listOva(ova)).map((e) => e.name);
    assert.equal(names.length, 3);
    assert.match(names[0], /\.ovf$/);
    assert.match(names[1], /\.mf$/);
    assert.match(names[2], /\.vmdk$/);
    const ovf = (await readOvaMember(ova, names[0])).toString('utf8');
    assert.deepEqual(validateOvf(ovf), []);
    assert.match(ovf, /release-0\.1\.0/);
    const mf = (await readOvaMember(ova, names[1])).toString('utf8');
    assert.match(mf, new RegExp(`^SHA256\\(${names[0].replace('.', '\\.')}\\)= [0-9a-f]{64}$`, 'm'));
  });
});

describe('the VMDK from the OVA boots, and `kiln boot` boots the VHD of the release under UEFI', () => {
  // Both boot at once, one vCPU each (TCG: a vCPU per host core). The VHD is booted by `kiln boot`,
  // which resolves web@release-0.1.0 through the store (the VHD by --format vpc, qemu-img's name),
  // runs the command over SSH and passes its output and exit status on.
  let vmdk: Promise<RunningVm>;
  let viaKilnBoot: Promise<KilnRun>;
  before(() => {
    vmdk = extractOvaDisk(artifact(built, 'ova'), scratch).then((f) => bootVm({ image: f, format: 'vmdk', firmware: 'bios', cpus: 1, timeoutSec: 480 }));
    viaKilnBoot = kiln(['boot', '--firmware', 'uefi', '--format', 'vpc', '--cpus', '1', '--timeout', '480', 'web@release-0.1.0', '--',
      'cat /etc/release; test -d /sys/firmware/efi && echo efi; exit 3'], { cwd: built.dir });
    vmdk.catch(() => {});
    viaKilnBoot.catch(() => {});
  });
  after(async () => { await Promise.allSettled([vmdk.then((v) => v.stop()), viaKilnBoot]); });

  test('the VMDK taken out of the OVA boots to SSH with the version', async () => {
    assert.match((await (await vmdk).ssh('cat /etc/release')).stdout, /IMAGE_VERSION=release-0\.1\.0/);
  });

  test('kiln boot resolves name@version to the fixed VHD, boots it under UEFI, runs a command, returns its output and status', async () => {
    const r = await viaKilnBoot;
    assert.equal(r.code, 3, r.stderr.slice(-2000));
    assert.match(r.stdout, /IMAGE_VERSION=release-0\.1\.0[\s\S]*efi/);
    assert.match(r.stderr, /SSH is up after/);
    const vhd = built.record.artifacts.find((a) => a.format === 'vhd')!;
    assert.match(r.stderr, new RegExp(`^booting [^\\n]*/${vhd.sha256} \\(uefi\\)`, 'm'), 'the disk booted is the release\'s VHD blob');
    assert.ok(!readFileSync('/proc/mounts', 'utf8').includes('kiln-vm-'));
  });
});
