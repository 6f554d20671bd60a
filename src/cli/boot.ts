import { existsSync, readFileSync } from 'node:fs';
import { KilnError } from '../errors.js';
import { FORMAT_SPECS } from '../formats/registry.js';
import { exec } from '../exec.js';
import { createLogger } from '../log.js';
import { bootVm, type Accel, type Firmware } from '../vm/qemu.js';
import type { StoreFlags } from '../store/from-cli.js';
import { parse, splitAtDashes, type Command } from './command.js';

export const bootCommand: Command = {
  name: 'boot',
  summary: 'Boot an image in QEMU (KVM or TCG), inject an SSH key, run a command or open a shell',
  usage: 'kiln boot <image|name@version> [--firmware bios|uefi] [--format F] [--accel auto|kvm|tcg] [--memory MiB] [--cpus N] [--mac MAC] [--timeout SEC] [--console] [--store DIR] [--require-signature] [--trust-key FILE]... [-- command...]',
  async run(argv) {
    const split = splitAtDashes(argv);
    const own = split.own;
    const command = split.command ?? [];
    const { values, positionals } = parse(this, own, {
      firmware: { type: 'string', default: 'bios', description: 'Boot under BIOS or UEFI (OVMF)', value: 'bios|uefi' },
      format: { type: 'string', description: 'Which artifact of a release to boot (default: raw, else the first bootable format)', value: 'F' },
      accel: { type: 'string', default: 'auto', description: 'QEMU accelerator: KVM when usable, else TCG', value: 'auto|kvm|tcg' },
      memory: { type: 'string', default: '1024', description: 'The VM\'s memory', value: 'MiB' },
      cpus: { type: 'string', default: '2', description: 'The VM\'s CPUs', value: 'N' },
      mac: { type: 'string', description: 'The VM\'s network card address', value: 'MAC' },
      timeout: { type: 'string', default: '360', description: 'Give up when the VM has not answered on SSH after this many seconds', value: 'SEC' },
      store: { type: 'string', description: 'The release store to read name@version from', value: 'DIR|oci://...' },
      'require-signature': { type: 'boolean', description: 'Refuse releases that are not signed by a trusted key' },
      'trust-key': { type: 'string', multiple: true, description: 'A public key whose signatures are trusted', value: 'FILE' },
      verbose: { type: 'boolean', short: 'v', description: 'Show the commands run' },
      console: { type: 'boolean', description: 'Show the VM\'s serial console as it boots' },
    });
    if (positionals.length !== 1) throw new KilnError('kiln boot takes one image (a file, or name@version from the release store)', { hint: `usage: ${this.usage}`, exitCode: 2 });
    const firmware = values.firmware as Firmware;
    if (firmware !== 'bios' && firmware !== 'uefi') throw new KilnError(`--firmware must be bios or uefi, not ${values.firmware}`, { exitCode: 2 });
    const logger = createLogger({ verbose: values.verbose });
    const { path: image, format, signedBy } = await resolveImage(positionals[0], values, values.format);
    if (signedBy) logger.info(`${positionals[0]}: ${signedBy}`);
    logger.info(`booting ${image} (${firmware}) ...`);
    const t0 = Date.now();
    const vm = await bootVm({
      image, format, firmware, accel: values.accel as Accel, memoryMiB: Number(values.memory), cpus: Number(values.cpus),
      mac: values.mac, timeoutSec: Number(values.timeout), logger,
    });
    logger.info(`SSH is up after ${((Date.now() - t0) / 1000).toFixed(1)}s (${vm.accel}); ssh -p ${vm.sshPort} ${vm.user}@127.0.0.1`);
    try {
      if (values.console) logger.info(readFileSync(vm.serialLog, 'utf8'));
      if (command.length) {
        const r = await vm.ssh(command.join(' '), { allowFailure: true });
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        return r.code ?? 1;
      }
      const [cmd, ...args] = vm.sshCommand();
      const r = await exec(cmd, ['-t', ...args], { interactive: true, allowFailure: true });
      return r.code ?? 0;
    } finally {
      await vm.stop();
    }
  },
};

/** A file path, or name@version resolved through the release store. */
async function resolveImage(ref: string, flags: StoreFlags, format?: string): Promise<{ path: string; format?: string; signedBy?: string }> {
  if (existsSync(ref)) return { path: ref, format };
  if (/^[a-z0-9][a-z0-9._-]*@.+$/.test(ref)) {
    const { resolveForBoot } = await import('../store/boot.js');
    // --format takes qemu-img's names (vpc for VHD); the release names its artifacts by Kiln's.
    return resolveForBoot(ref, flags, format === undefined ? undefined : FORMAT_SPECS.find((f) => 'qemuImg' in f && f.qemuImg === format)?.name ?? format);
  }
  throw new KilnError(`image not found: ${ref}`, { hint: 'pass a disk image file, or name@version of a release' });
}
