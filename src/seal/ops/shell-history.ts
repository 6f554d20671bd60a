import { homes, remove } from '../tree.js';
import type { SealOperation } from '../types.js';
import { statInTree } from '../../image/tree.js';

const HISTORIES = [
  '.bash_history', '.zsh_history', '.zhistory', '.histfile', '.sh_history', '.python_history', '.lesshst', '.viminfo',
  '.mysql_history', '.psql_history', '.sqlite_history', '.node_repl_history', '.rediscli_history', '.local/share/fish/fish_history',
];

function histories(root: string): string[] {
  return homes(root).flatMap((h) => HISTORIES.map((f) => `${h}/${f}`)).filter((p) => statInTree(root, p)?.isFile());
}

export const shellHistory: SealOperation = {
  name: 'shell-history',
  description: 'Remove shell and REPL histories (bash, zsh, fish, python, less, vim, mysql, psql) of root and /home/*',
  async apply(root, ctx) {
    return histories(root).flatMap((p) => remove(root, p, ctx));
  },
  async check(root) {
    return histories(root).map((path) => ({ check: this.name, path, message: 'command history from the build' }));
  },
};
