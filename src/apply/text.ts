/** The first non-blank line of a message, trimmed: Ansible's messages and a command's stderr are multi-line. */
export function firstLine(s?: string): string {
  return (s ?? '').split('\n').map((l) => l.trim()).filter(Boolean)[0] ?? '';
}
