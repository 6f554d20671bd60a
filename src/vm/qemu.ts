/**
 * Boots a disk image in QEMU for tests and `kiln boot`: a throwaway qcow2 overlay (the artifact is
 * never written), a NoCloud seed with a fresh SSH key, user networking with SSH forwarded to a free
 * loopback port, and the serial console logged to a file. KVM when it works, TCG otherwise.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { checkedDiskFormat } from '../image/disk-file.js';
import { commandLine, exec } from '../exec.js';
import { silentLogger, type Logger } from '../log.js';
import { writeSeed } from './seed.js';
import { endSshMaster, sshArgs, waitForSsh } from './ssh.js';
import type { Firmware } from '../disk/index.js';

export type { Firmware };
export type Accel = 'auto' | 'kvm' | 'tcg';

export interface BootOptions {
  image: string;
  /** qemu-img format the caller expects; checked against the file's own header, which decides. */
  format?: string;
  firmware: Firmware;
  memoryMiB?: number;
  cpus?: number;
  accel?: Accel;
  /** MAC address of the first NIC (two VMs from one image get different ones). */
  mac?: string;
  user?: string;
  /** How long to wait for SSH, in seconds. */
  timeoutSec?: number;
  logger?: Logger;
  /** Keep the work dir (overlay, serial log, key) after stop. */
  keep?: boolean;
  /** More top-level #cloud-config lines for the NoCloud seed. */
  cloudConfig?: readonly string[];
}

export interface RunningVm {
  sshPort: number;
  user: string;
  keyFile: string;
  serialLog: string;
  workDir: string;
  accel: 'kvm' | 'tcg';
  /** Runs a command over SSH; throws on a non-zero exit unless allowFailure. */
  ssh(command: string, opts?: { allowFailure?: boolean; input?: string }): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** The ssh argv (for an interactive shell or for Ansible). */
  sshCommand(): string[];
  stop(): Promise<void>;
}

const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

export function qemuArgs(o: { overlay: string; seed: string; firmware: Firmware; vars?: string; memoryMiB: number; cpus: number; accel: 'kvm' | 'tcg'; port: number; mac: string; serialLog: string; singleThreadTcg?: boolean }): string[] {
  const args = [
    '-name', 'kiln-vm', '-nodefaults', '-display', 'none', '-no-user-config',
    '-machine', o.firmware === 'uefi' ? 'q35' : 'pc',
    '-accel', o.accel === 'tcg' && o.singleThreadTcg ? 'tcg,thread=single' : o.accel, '-cpu', o.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(o.cpus), '-m', String(o.memoryMiB),
    '-serial', `file:${o.serialLog}`,
    '-drive', `file=${o.overlay},format=qcow2,if=virtio,cache=unsafe`,
    '-drive', `file=${o.seed},format=raw,if=virtio,readonly=on`,
    '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${o.port}-:22`,
    '-device', `virtio-net-pci,netdev=n0,mac=${o.mac}`,
    '-device', 'virtio-rng-pci',
  ];
  if (o.firmware === 'uefi') {
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,unit=1,file=${o.vars}`);
  }
  return args;
}

let kvmVerdict: boolean | undefined;

/** Sets (or, with undefined, forgets) this process's verdict on KVM, as if the probe had run: for tests of the fallback. */
export function presetKvmVerdict(works: boolean | undefined): void {
  kvmVerdict = works;
}

/** What QEMU prints when KVM cannot go on running a guest (it then pauses the guest). */
const KVM_FAILURE = /KVM internal error|emulation failure/;

/** The accelerator asked for: KILN_ACCEL, unless unset or auto, else the caller's. */
function chooseAccelWant(requested: Accel): Accel {
  const env = process.env.KILN_ACCEL as Accel | undefined;
  return env && env !== 'auto' ? env : requested;
}

/**
 * KVM is used only when /dev/kvm is usable and a guest actually runs under it; KILN_ACCEL overrides.
 * A KVM that passes the probe and then fails a guest is given up for TCG by bootVm, for the rest of the process.
 */
async function chooseAccel(requested: Accel): Promise<'kvm' | 'tcg'> {
  const want = chooseAccelWant(requested);
  if (want === 'kvm' || want === 'tcg') return want;
  if (kvmVerdict !== undefined) return kvmVerdict ? 'kvm' : 'tcg';
  kvmVerdict = existsSync('/dev/kvm') && kvmKind() === 'hardware' && (await probeKvm());
  return kvmVerdict ? 'kvm' : 'tcg';
}

/**
 * Which KVM the host kernel has, from its modules: 'hardware' (kvm_intel or kvm_amd, VT-x or AMD-V,
 * which runs any guest), 'pvm' (kvm_pvm only: Pagetable-based Virtual Machine, made for running VMs
 * inside a cloud VM without nested virtualisation; it runs PVM-aware guest kernels, and a stock Debian
 * kernel dies under it with "KVM internal error ... emulation failure" minutes into a very slow boot,
 * while the probe's real-mode BIOS runs fine), or 'none'.
 */
export function kvmKind(sysModule = '/sys/module'): 'hardware' | 'pvm' | 'none' {
  if (existsSync(join(sysModule, 'kvm_intel')) || existsSync(join(sysModule, 'kvm_amd'))) return 'hardware';
  return existsSync(join(sysModule, 'kvm_pvm')) ? 'pvm' : 'none';
}

/** Runs a tiny real-mode program under KVM (SeaBIOS prints to the debug console); failures mean TCG. */
async function probeKvm(): Promise<boolean> {
  const r = await exec('qemu-system-x86_64', ['-accel', 'kvm', '-machine', 'pc', '-cpu', 'host', '-nodefaults', '-display', 'none', '-m', '64',
    '-chardev', 'stdio,id=dbg', '-device', 'isa-debugcon,iobase=0x402,chardev=dbg', '-no-reboot'], { allowFailure: true, timeoutMs: 4000 });
  // SeaBIOS writes its banner to port 0x402; a working KVM shows it within the timeout.
  return /SeaBIOS/.test(r.stdout) && !/KVM internal error|failed to initialize kvm/i.test(r.stderr);
}

/** What a Linux guest prints on its console when its kernel panics. */
const PANIC = /Kernel panic - not syncing/;

export async function bootVm(o: BootOptions): Promise<RunningVm> {
  const logger = o.logger ?? silentLogger;
  const image = resolve(o.image);
  if (!existsSync(image)) throw new KilnError(`image not found: ${o.image}`);
  const workDir = mkdtempSync(join(tmpdir(), 'kiln-vm-'));
  const cleanupDir = () => { if (!o.keep) rmSync(workDir, { recursive: true, force: true }); };
  try {
    const user = o.user ?? 'kiln';
    const keyFile = join(workDir, 'id_ed25519');
    await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kiln-boot', '-f', keyFile], { logger });
    const pub = readFileSync(`${keyFile}.pub`, 'utf8');
    const seed = await writeSeed(workDir, { user, publicKey: pub, instanceId: `iid-kiln-${workDir.slice(-6)}`, hostname: 'kiln-vm', cloudConfig: o.cloudConfig }, logger);
    const overlay = join(workDir, 'overlay.qcow2');
    // The format comes from the file's own header, and an image that names another file (a
    // backing file, extents, a parent) is refused: QEMU would open that file for the guest.
    const facts = checkedDiskFormat(image, o.image, o.format);
    const serialLog = join(workDir, 'serial.log');
    const requested = o.accel ?? 'auto';
    let accel = await chooseAccel(requested);
    // Left to Kiln (not asked for by name): a KVM that then fails the guest is given up for TCG.
    const auto = chooseAccelWant(requested) === 'auto';
    // Under multi-threaded TCG a guest kernel now and then dies early on an int3 left in code it is
    // patching (QEMU's cross-modifying-code handling; seen here: "Oops: int3" in sched_clock_cpu at
    // 3 s). Such a boot is tried once more on single-threaded TCG; a kernel that panics there too is
    // the image's fault and is reported.
    let singleThreadTcg = false;
    for (let attempt = 1; ; attempt++) {
      rmSync(overlay, { force: true });
      await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', facts.format, '-b', image, overlay], { logger });
      let vars: string | undefined;
      if (o.firmware === 'uefi') {
        vars = join(workDir, 'OVMF_VARS.fd');
        copyFileSync(OVMF_VARS, vars);
      }
      rmSync(serialLog, { force: true });
      const port = await freePort();
      const mac = o.mac ?? '52:54:00:12:34:56';
      const args = qemuArgs({ overlay, seed, firmware: o.firmware, vars, memoryMiB: o.memoryMiB ?? 1024, cpus: o.cpus ?? 2, accel, port, mac, serialLog, singleThreadTcg });
      logger.debug(commandLine('qemu-system-x86_64', args));
      const errFd = openSync(join(workDir, 'qemu.stderr'), 'w');
      const child: ChildProcess = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', errFd], detached: true });
      let exited = false;
      child.on('exit', () => { exited = true; });
      const kill = async () => {
        if (!exited && child.pid) {
          try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
          const end = Date.now() + 5000;
          while (!exited && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
          if (!exited) try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
        }
      };
      const onExit = () => { if (child.pid && !exited) try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } };
      process.once('exit', onExit);
      // vm.ssh's commands share one SSH connection (a master in the background, its socket in the
      // work dir): under TCG each new connection's handshake took 1.5 s. stop() ends the master; a
      // VM that dies ends it too (the connection drops). Unix socket paths are limited to 108 bytes.
      const control = join(workDir, `ssh-${attempt}`);
      const mux = control.length < 100 ? ['-o', 'ControlMaster=auto', '-o', `ControlPath=${control}`, '-o', 'ControlPersist=600'] : [];
      const endMux = () => endSshMaster(control, logger);
      const vm: RunningVm = {
        sshPort: port, user, keyFile, serialLog, workDir, accel,
        sshCommand: () => ['ssh', ...sshArgs(keyFile, port, user)],
        ssh: async (command, opts = {}) => exec('ssh', [...mux, ...sshArgs(keyFile, port, user), command], { allowFailure: opts.allowFailure, input: opts.input, logger }),
        stop: async () => { process.off('exit', onExit); await endMux(); await kill(); cleanupDir(); },
      };
      const panicked = () => (existsSync(serialLog) && PANIC.test(readFileSync(serialLog, 'utf8')) ? 'the guest kernel panicked while booting' : undefined);
      // QEMU pauses a guest KVM cannot run ("KVM internal error ... emulation failure") and keeps running: without this, the wait would last its whole timeout.
      const kvmFailed = () => (accel === 'kvm' && KVM_FAILURE.test(readFileSync(join(workDir, 'qemu.stderr'), 'utf8')) ? 'KVM stopped the guest: KVM internal error (see QEMU\'s output below)' : undefined);
      try {
        await waitForSsh(vm, { timeoutSec: o.timeoutSec ?? 360, isAlive: () => !exited, failed: () => panicked() ?? kvmFailed(), logger });
      } catch (e) {
        const serial = existsSync(serialLog) ? readFileSync(serialLog, 'utf8') : '';
        const qerr = readFileSync(join(workDir, 'qemu.stderr'), 'utf8');
        process.off('exit', onExit);
        await endMux();
        await kill();
        if (accel === 'kvm' && auto && KVM_FAILURE.test(qerr)) {
          // The host's KVM passed kvmKind and the probe, but a full guest did not run (what a PVM host did before kvmKind: an emulation failure on a locked cmpxchg16b in the kernel).
          logger.warn(`KVM could not run this guest (${qerr.split('\n').find((l) => KVM_FAILURE.test(l))?.trim()}): booting again under TCG, as every later boot of this run will`);
          kvmVerdict = false;
          accel = 'tcg';
          continue;
        }
        if (accel === 'tcg' && !singleThreadTcg && PANIC.test(serial)) {
          logger.warn(`the guest kernel panicked under multi-threaded TCG (${/RIP: [0-9a-f]{4}:(\S+)/.exec(serial)?.[1] ?? 'see the serial log'}): a known QEMU fault with code the kernel patches; booting again on single-threaded TCG`);
          singleThreadTcg = true;
          continue;
        }
        cleanupDir();
        const hint = accel === 'kvm' && KVM_FAILURE.test(qerr) ? 'KVM was asked for (--accel kvm or KILN_ACCEL=kvm) and cannot run this guest here: use --accel tcg, or auto to let Kiln choose' : undefined;
        if (e instanceof KilnError) throw new KilnError(e.message, { hint: hint ?? e.hint, detail: [qerr.trim(), serial.split('\n').slice(-25).join('\n')].filter(Boolean).join('\n') });
        throw e;
      }
      return vm;
    }
  } catch (e) {
    cleanupDir();
    throw e;
  }
}
