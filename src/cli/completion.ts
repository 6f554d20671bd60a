/**
 * `kiln completion bash|zsh`: shell completion. Command names are written into the script; a command's
 * flags are read from its own `--help` when completed, so they are always the installed Kiln's.
 * zsh uses the same function through bashcompinit.
 */
import { KilnError } from '../errors.js';
import { parse, type Command } from './command.js';

export function completionScript(shell: 'bash' | 'zsh', names: string[]): string {
  const fn = `# kiln shell completion (${shell}): eval "$(kiln completion ${shell})", or save it where your shell reads completions.
_kiln() {
  local cur=\${COMP_WORDS[COMP_CWORD]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${names.join(' ')}" -- "$cur"))
    return
  fi
  if [[ $cur == -* ]]; then
    local flags
    flags=$(command kiln "\${COMP_WORDS[1]}" --help 2>/dev/null | sed -n 's/^  \\(-[a-z], \\|    \\)\\(--[a-z][a-z-]*\\).*/\\2/p')
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -f -- "$cur"))
}
`;
  const hook = shell === 'zsh' ? 'autoload -U +X bashcompinit && bashcompinit\ncomplete -o filenames -F _kiln kiln\n' : 'complete -o filenames -F _kiln kiln\n';
  return fn + hook;
}

export function completionCommand(all: () => Command[]): Command {
  return {
    name: 'completion',
    summary: 'Print shell completion for bash or zsh (eval "$(kiln completion bash)")',
    usage: 'kiln completion bash|zsh',
    async run(argv) {
      const { positionals } = parse(this, argv, {});
      const shell = positionals[0];
      if (positionals.length !== 1 || (shell !== 'bash' && shell !== 'zsh')) throw new KilnError('kiln completion takes one shell: bash or zsh', { hint: `usage: ${this.usage}`, exitCode: 2 });
      process.stdout.write(completionScript(shell, all().map((c) => c.name)));
      return 0;
    },
  };
}
