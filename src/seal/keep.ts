/**
 * seal.keep: image paths the playbook installs on purpose. A kept path and everything below it
 * survives sealing and is not reported by the audit. Patterns are absolute paths where `*` and `?`
 * match within one path component and `**` matches any number of components,
 * e.g. `/home/*\/.ssh/authorized_keys` or `/srv/app/**`.
 */
import { KilnError } from '../errors.js';

export class KeepList {
  readonly patterns: readonly string[];
  private readonly compiled: Matcher[][];

  constructor(patterns: readonly string[] = []) {
    for (const p of patterns) {
      if (!p.startsWith('/')) throw new KilnError(`seal.keep: '${p}' is not an absolute path inside the image`, { hint: 'write paths as the image sees them, e.g. /root/.ssh/authorized_keys' });
    }
    this.patterns = patterns;
    this.compiled = patterns.map((p) => components(p).map(compile));
  }

  /** True when path, or a directory above it, matches a keep pattern. */
  has(path: string): boolean {
    const parts = components(path);
    for (let n = parts.length; n >= 0; n--) {
      const prefix = parts.slice(0, n);
      if (this.compiled.some((m) => matches(m, prefix, false))) return true;
    }
    return false;
  }

  /** True when something strictly below dir may be kept, so dir must not be removed wholesale. */
  below(dir: string): boolean {
    const parts = components(dir);
    return this.compiled.some((m) => matches(m, parts, true));
  }
}

type Matcher = '**' | RegExp | string;

function components(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

function compile(c: string): Matcher {
  if (c === '**') return '**';
  if (!/[*?]/.test(c)) return c;
  const re = c.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  return new RegExp(`^${re}$`);
}

function one(m: Matcher, c: string): boolean {
  return typeof m === 'string' ? m === c : m instanceof RegExp ? m.test(c) : true;
}

/** Whole match, or with prefixOnly: path is a strict prefix of something the pattern matches. */
function matches(m: Matcher[], parts: string[], prefixOnly: boolean): boolean {
  if (parts.length === 0) return prefixOnly ? m.length > 0 : m.every((x) => x === '**');
  if (m.length === 0) return false;
  if (m[0] === '**') return matches(m.slice(1), parts, prefixOnly) || matches(m, parts.slice(1), prefixOnly);
  return one(m[0], parts[0]) && matches(m.slice(1), parts.slice(1), prefixOnly);
}
