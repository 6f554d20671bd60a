/**
 * Where Kiln talks to the user. Everything goes to stderr so stdout stays clean for --json
 * and for commands whose output is data (resolve, schema).
 */
export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  /** Host command lines and other detail, shown with --verbose. */
  debug(msg: string): void;
  verbose: boolean;
}

export function createLogger(opts: { verbose?: boolean; quiet?: boolean; stream?: NodeJS.WritableStream } = {}): Logger {
  const out = opts.stream ?? process.stderr;
  const verbose = opts.verbose ?? false;
  return {
    verbose,
    info: (m) => { if (!opts.quiet) out.write(m + '\n'); },
    warn: (m) => out.write(`warning: ${m}\n`),
    debug: (m) => { if (verbose) out.write(`  $ ${m}\n`); },
  };
}

export const silentLogger: Logger = { verbose: false, info() {}, warn() {}, debug() {} };

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function humanSeconds(ms: number): string {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  return `${Math.floor(s / 60)}m${(s % 60).toFixed(0).padStart(2, '0')}s`;
}
