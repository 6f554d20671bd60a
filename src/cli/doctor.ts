import { existsSync } from 'node:fs';
import { exec, hasTool } from '../exec.js';
import { parse, type Command } from './command.js';

interface HostTool { check: string; pkg: string; why: string }

async function loadTools(): Promise<HostTool[]> {
  // The list lives in scripts/host-packages.mjs so the shell installer and `kiln doctor` agree. Only
  // hostTools, what Kiln runs: the tests' own tools (testTools there) are not a user's concern.
  const m = (await import(new URL('../../../scripts/host-packages.mjs', import.meta.url).href)) as { hostTools: [string, string, string][] };
  return m.hostTools.map(([check, pkg, why]) => ({ check, pkg, why }));
}

export async function missingTools(): Promise<HostTool[]> {
  const missing: HostTool[] = [];
  for (const t of await loadTools()) {
    const ok = t.check.startsWith('/') ? existsSync(t.check) : await hasTool(t.check);
    if (!ok) missing.push(t);
  }
  return missing;
}

export const doctorCommand: Command = {
  name: 'doctor',
  summary: "List missing host tools; install them from Debian's packages when run as root",
  usage: 'kiln doctor [--check]',
  async run(argv) {
    const { values } = parse(this, argv, { check: { type: 'boolean', description: 'Only report the missing host tools; install nothing' } }, false);
    const missing = await missingTools();
    if (missing.length === 0) {
      process.stderr.write('all host tools are present\n');
      return 0;
    }
    for (const t of missing) process.stderr.write(`missing: ${t.check} (package ${t.pkg}): ${t.why}\n`);
    const pkgs = [...new Set(missing.map((t) => t.pkg))];
    if (values.check) return 1;
    if (process.getuid?.() !== 0) {
      process.stderr.write(`run as root to install them, or: sudo apt-get install ${pkgs.join(' ')}\n`);
      return 1;
    }
    process.stderr.write(`installing: ${pkgs.join(' ')}\n`);
    await exec('apt-get', ['update', '-q'], { interactive: true });
    await exec('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...pkgs], { interactive: true, env: { DEBIAN_FRONTEND: 'noninteractive' } });
    const still = await missingTools();
    for (const t of still) process.stderr.write(`still missing: ${t.check} (package ${t.pkg})\n`);
    return still.length ? 1 : 0;
  },
};
