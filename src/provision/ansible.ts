/**
 * Ansible is the configuration engine; Kiln drives Debian's ansible-playbook and reads its
 * machine-readable results (ansible.posix.jsonl), deciding the outcome from the stats, not the
 * exit code alone (a YAML error exits 4 like an unreachable host does).
 */
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import type { LoadedTemplate } from '../template/load.js';

export async function syntaxCheck(t: LoadedTemplate): Promise<void> {
  const r = await exec('ansible-playbook', ['--syntax-check', '-i', 'localhost,', t.playbook], {
    cwd: t.dir, allowFailure: true,
    env: { ...process.env, ANSIBLE_NOCOLOR: '1', ANSIBLE_LOCALHOST_WARNING: 'False', ANSIBLE_INVENTORY_UNPARSED_WARNING: 'False' },
  });
  if (r.code === 0) return;
  throw playbookError(t.playbook, r.stderr || r.stdout);
}

/** Turns ansible's "ERROR! ... The error appears to be in 'FILE': line N, column M" into a located KilnError. */
export function playbookError(playbook: string, text: string): KilnError {
  const m = /appears to be in '([^']+)': line (\d+), column (\d+)/.exec(text);
  const first = (/ERROR! (.*)/.exec(text)?.[1] ?? text.trim().split('\n')[0] ?? 'syntax error').trim();
  if (/the playbook: .* could not be found/.test(text)) {
    return new KilnError(`playbook not found: ${playbook}`, { where: { file: playbook } });
  }
  return new KilnError(`playbook syntax error: ${first}`, {
    where: m ? { file: m[1], line: Number(m[2]), column: Number(m[3]) } : { file: playbook },
    detail: text.split('\n').filter((l) => l.trim() && !l.startsWith('[WARNING]')).slice(0, 20).join('\n'),
    exitCode: 2,
  });
}
