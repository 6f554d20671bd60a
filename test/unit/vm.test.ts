import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bootVm, kvmKind, presetKvmVerdict, qemuArgs } from '../../src/vm/qemu.js';
import { metaData, userData } from '../../src/vm/seed.js';
import type { Logger } from '../../src/log.js';

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

/**
 * Runs fn with a stand-in for qemu-system-x86_64 first on PATH: it records each -accel it is given in
 * `calls`, sets $accel and $serial (the serial log file), then runs body (shell) and waits to be stopped.
 */
async function withStandInQemu(body: string, fn: (o: { calls: string; img: string; warnings: string[]; logger: Logger }) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-vm-qemu-'));
  const savedPath = process.env.PATH;
  try {
    const calls = join(dir, 'calls');
    writeFileSync(join(dir, 'qemu-system-x86_64'), `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -accel) accel="$2"; echo "$2" >> '${calls}' ;; -serial) serial="\${2#file:}" ;; esac
  shift
done
${body}
exec sleep 60
`, { mode: 0o755 });
    process.env.PATH = `${dir}:${savedPath}`;
    const img = join(dir, 'disk.raw');
    writeFileSync(img, Buffer.alloc(1 << 20));
    const warnings: string[] = [];
    await fn({ calls, img, warnings, logger: { verbose: false, info() {}, debug() {}, warn: (m: string) => { warnings.push(m); } } });
  } finally {
    process.env.PATH = savedPath;
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a guest kernel panic ends the wait at once; under TCG it is booted once more on single-threaded TCG, and a second panic is reported with the console', async () => {
  assert.match(qemuArgs({ overlay: 'o', seed: 's', memoryMiB: 512, cpus: 2, accel: 'tcg', port: 1, mac: '52:54:00:00:00:01', serialLog: 'l', firmware: 'bios', singleThreadTcg: true }).join(' '), /-accel tcg,thread=single -cpu max/);
  // The guest panics at once, as a kernel hit by TCG's int3 fault does.
  await withStandInQemu(`printf 'Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\\nRIP: 0010:sched_clock_cpu+0x9/0x1d0\\nKernel panic - not syncing: Fatal exception in interrupt\\n' > "$serial"`, async ({ calls, img, warnings, logger }) => {
    const t0 = Date.now();
    await assert.rejects(bootVm({ image: img, firmware: 'bios', accel: 'tcg', logger }), (e: Error & { detail?: string }) => {
      assert.match(e.message, /^the guest kernel panicked while booting$/);
      assert.match(e.detail ?? '', /Kernel panic - not syncing/);
      return true;
    });
    assert.ok(Date.now() - t0 < 30_000, 'not the 360 s SSH wait');
    assert.deepEqual(readFileSync(calls, 'utf8').trim().split('\n'), ['tcg', 'tcg,thread=single']);
    assert.match(warnings.join('\n'), /panicked under multi-threaded TCG \(sched_clock_cpu\+0x9\/0x1d0\).*booting again on single-threaded TCG/);
  });
});

test('a KVM that passed the probe but stops the guest (KVM internal error) is given up for TCG at once, for every later boot; asked for by name, it is an error with what to do', async () => {
  const savedAccel = process.env.KILN_ACCEL;
  delete process.env.KILN_ACCEL;
  // Under KVM the stand-in says what QEMU says when KVM cannot emulate an instruction (and, as QEMU does,
  // keeps running with the guest paused); under TCG the guest panics, so each boot ends in seconds.
  await withStandInQemu(`if [ "$accel" = kvm ]; then
  printf 'KVM internal error. Suberror: 1\\nextra data[0]: 0x0000000000000001\\nemulation failure\\n' >&2
else
  printf 'Kernel panic - not syncing: VFS: Unable to mount root fs\\n' > "$serial"
fi`, async ({ calls, img, warnings, logger }) => {
    try {
      presetKvmVerdict(true);
      const t0 = Date.now();
      await assert.rejects(bootVm({ image: img, firmware: 'bios', logger }), /the guest kernel panicked while booting/);
      assert.ok(Date.now() - t0 < 30_000, 'not the 360 s SSH wait');
      assert.deepEqual(readFileSync(calls, 'utf8').trim().split('\n'), ['kvm', 'tcg', 'tcg,thread=single']);
      assert.match(warnings[0], /^KVM could not run this guest \(KVM internal error\. Suberror: 1\): booting again under TCG/);
      // The verdict holds for the rest of the process: the next boot starts under TCG.
      writeFileSync(calls, '');
      await assert.rejects(bootVm({ image: img, firmware: 'bios', logger }), /panicked/);
      assert.deepEqual(readFileSync(calls, 'utf8').trim().split('\n'), ['tcg', 'tcg,thread=single']);
      // Asked for by name, KVM is not replaced: the error says what failed and what to do.
      writeFileSync(calls, '');
      await assert.rejects(bootVm({ image: img, firmware: 'bios', accel: 'kvm', logger }), (e: Error & { hint?: string; detail?: string }) => {
        assert.match(e.message, /^KVM stopped the guest: KVM internal error/);
        assert.match(e.hint ?? '', /use --accel tcg/);
        assert.match(e.detail ?? '', /emulation failure/);
        return true;
      });
      assert.deepEqual(readFileSync(calls, 'utf8').trim().split('\n'), ['kvm']);
    } finally {
      presetKvmVerdict(undefined);
      if (savedAccel === undefined) delete process.env.KILN_ACCEL; else process.env.KILN_ACCEL = savedAccel;
    }
  });
});

test('KVM counts only when it is hardware virtualisation (kvm_intel or kvm_amd): a host whose /dev/kvm is PVM (kvm_pvm) boots under TCG', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-vm-sysmod-'));
  try {
    const mods = (...names: string[]) => {
      rmSync(dir, { recursive: true, force: true });
      for (const n of names) mkdirSync(join(dir, n, 'parameters'), { recursive: true });
      return kvmKind(dir);
    };
    assert.equal(mods('kvm', 'kvm_pvm'), 'pvm');
    assert.equal(mods('kvm', 'kvm_intel'), 'hardware');
    assert.equal(mods('kvm', 'kvm_amd', 'kvm_pvm'), 'hardware');
    assert.equal(mods('kvm'), 'none');
    assert.equal(mods(), 'none');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
