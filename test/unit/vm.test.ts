import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bootVm, qemuArgs } from '../../src/vm/qemu.js';
import { metaData, userData } from '../../src/vm/seed.js';

test('the NoCloud user-data is cloud-config with the injected key and passwordless sudo', () => {
  const u = userData({ user: 'kiln', publicKey: 'ssh-ed25519 AAAA test\n', instanceId: 'iid-1', hostname: 'h' });
  assert.ok(u.startsWith('#cloud-config\n'));
  assert.match(u, /- name: kiln\n/);
  assert.match(u, /ssh_authorized_keys:\n {6}- ssh-ed25519 AAAA test\n/);
  assert.match(u, /NOPASSWD:ALL/);
  assert.equal(metaData({ user: 'kiln', publicKey: '', instanceId: 'iid-1', hostname: 'h' }), 'instance-id: iid-1\nlocal-hostname: h\n');
});

test('UEFI boots use q35 and OVMF pflash; BIOS uses the pc machine; SSH is forwarded on loopback only', () => {
  const base = { overlay: 'o.qcow2', seed: 's.iso', memoryMiB: 512, cpus: 1, accel: 'tcg' as const, port: 2222, mac: '52:54:00:00:00:01', serialLog: 'l' };
  const uefi = qemuArgs({ ...base, firmware: 'uefi', vars: 'vars.fd' }).join(' ');
  assert.match(uefi, /-machine q35/);
  assert.match(uefi, /if=pflash,format=raw,unit=0,readonly=on,file=\/usr\/share\/OVMF\/OVMF_CODE_4M\.fd/);
  assert.match(uefi, /unit=1,file=vars\.fd/);
  const bios = qemuArgs({ ...base, firmware: 'bios' }).join(' ');
  assert.match(bios, /-machine pc/);
  assert.doesNotMatch(bios, /pflash/);
  assert.match(bios, /hostfwd=tcp:127\.0\.0\.1:2222-:22/);
  assert.match(bios, /mac=52:54:00:00:00:01/);
  assert.match(bios, /-accel tcg -cpu max/);
});

test('kiln boot refuses an image that names another file, before QEMU opens anything', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-vm-test-'));
  try {
    const host = join(dir, 'host-file.raw');
    writeFileSync(host, Buffer.alloc(1 << 20));
    const img = join(dir, 'web.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', host, '-F', 'raw', img]);
    await assert.rejects(bootVm({ image: img, firmware: 'bios', accel: 'tcg' }), /a qcow2 with a backing file/);
    // The extension does not decide the format either: a raw disk named .qcow2 is refused as raw is not qcow2.
    await assert.rejects(bootVm({ image: host, firmware: 'bios', accel: 'tcg', format: 'qcow2' }), /is raw \(no known image header\), not qcow2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
