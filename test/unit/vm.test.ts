import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { guessFormat, qemuArgs } from '../../src/vm/qemu.js';
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

test('image formats are guessed from the extension (a fixed VHD is vpc, not raw)', () => {
  assert.equal(guessFormat('a/web.vhd'), 'vpc');
  assert.equal(guessFormat('web.qcow2'), 'qcow2');
  assert.equal(guessFormat('web.raw'), 'raw');
  assert.equal(guessFormat('disk.vmdk'), 'vmdk');
});
