/**
 * The out directory: the latest local copy of a build's artifacts and its build.json, beside
 * whatever else the user keeps there (`--out .` is a fair thing to type). Kiln lists the files it
 * wrote in .kiln-outputs.json and never touches another: a new artifact whose name is taken by a
 * file Kiln did not write is refused before anything changes, a file of the previous build that
 * this one does not produce is removed, and the directory itself is never removed.
 *
 * Each file is replaced by a rename over it, so a reader sees the old file or the new one. The new
 * files are first made complete as hidden temporaries in the out directory (a rename from the
 * staging directory, or a hole-keeping copy when the out directory is on another filesystem), then
 * renamed into place one after the other.
 */
import { lstat, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { KilnError } from '../errors.js';
import { artifactFileName } from '../formats/names.js';
import { copyFileSparse, fsyncPath, writeFileDurable } from '../fsio.js';
import { processAlive } from '../store/lock.js';
import type { Artifact } from '../formats/index.js';
import type { BuildVersion } from '../version/git.js';
import type { BuildEnv } from './context.js';

/** Kiln's list of the files it wrote in an out directory. */
export const OUTPUTS_MANIFEST = '.kiln-outputs.json';
/** The build record, written into the out directory after the build. */
export const BUILD_RECORD = 'build.json';
const TMP_PREFIX = '.kiln-tmp-';

interface OutputsManifest { kiln: 1; files: string[] }

/** What the out directory's functions read of a build. */
export type OutputsContext = BuildEnv & { version: BuildVersion };

export function outDirOf(ctx: OutputsContext): string {
  return ctx.options.outDir ?? defaultOutDir(ctx);
}

function defaultOutDir(ctx: OutputsContext): string {
  return join(ctx.kilnDir, 'out', `${ctx.template.config.name}-${ctx.version.version}`);
}

/**
 * Refuses, before the build does any work, an out directory where an artifact's name is taken by
 * a file Kiln did not write: found at the end, the release would exist without its outputs.
 */
export async function checkOutDir(ctx: OutputsContext): Promise<void> {
  const c = ctx.template.config;
  const names = c.formats.map((f) => artifactFileName(c.name, ctx.version.version, f));
  const out = outDirOf(ctx);
  await checkCollisions(out, [...names, BUILD_RECORD], await readManifest(out), out === defaultOutDir(ctx));
}

/** Moves the finished artifacts from the staging directory into the out directory; returns them where they are now. */
export async function publishOutputs(ctx: OutputsContext, artifacts: readonly Artifact[], signal?: AbortSignal): Promise<{ outDir: string; artifacts: Artifact[] }> {
  const out = outDirOf(ctx);
  const placed = await replaceOutputs(out, artifacts.map((a) => a.file), {
    reserved: [BUILD_RECORD],
    // .kiln/out/<name>-<version> is Kiln's own: a file there with one of Kiln's names was written by a Kiln from before the manifest.
    owned: out === defaultOutDir(ctx),
    signal,
  });
  return { outDir: out, artifacts: artifacts.map((a) => ({ ...a, file: placed.get(a.file) ?? a.file })) };
}

/** Writes build.json into the out directory the outputs step filled (listed in its manifest already). */
export function writeBuildRecord(outDir: string, record: unknown): void {
  writeFileDurable(join(outDir, BUILD_RECORD), JSON.stringify(record, null, 2) + '\n');
}

export interface ReplaceOptions {
  /** Names Kiln writes there later (build.json): checked for collisions and listed now. */
  reserved?: string[];
  /** The directory is Kiln's: without a manifest, files with Kiln's names count as Kiln's. */
  owned?: boolean;
  signal?: AbortSignal;
}

/**
 * Puts each staged file into out under its own name, replacing Kiln's previous files only.
 * Returns staged path -> final path.
 */
export async function replaceOutputs(out: string, staged: string[], opts: ReplaceOptions = {}): Promise<Map<string, string>> {
  const dir = await lstat(out).catch(() => null);
  if (dir && !dir.isDirectory()) throw new KilnError(`the out directory ${out} is not a directory`, { where: { file: out }, hint: 'pass --out a directory (it is created when missing)' });
  await mkdir(out, { recursive: true });
  const previous = await readManifest(out);
  const names = [...staged.map((f) => basename(f)), ...(opts.reserved ?? [])];
  if (new Set(names).size !== names.length) throw new Error(`two outputs share a name: ${names.join(', ')}`);
  await checkCollisions(out, names, previous, Boolean(opts.owned));
  await removeDeadTemps(out);

  const temps = new Map<string, string>();
  const movedBack: [string, string][] = [];
  try {
    for (const f of staged) {
      opts.signal?.throwIfAborted();
      const tmp = join(out, `${TMP_PREFIX}${process.pid}-${basename(f)}`);
      try {
        await rename(f, tmp);
        movedBack.push([tmp, f]);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
        await copyFileSparse(f, tmp, { signal: opts.signal });
      }
      temps.set(f, tmp);
    }
    opts.signal?.throwIfAborted();
  } catch (e) {
    for (const [tmp, f] of movedBack) await rename(tmp, f).catch(() => undefined);
    for (const tmp of temps.values()) await rm(tmp, { force: true });
    throw e;
  }

  // Listed before they appear, so a crash halfway leaves no file of Kiln's that Kiln would not own.
  writeManifest(out, [...new Set([...(previous ?? []), ...names])]);
  const placed = new Map<string, string>();
  for (const [f, tmp] of temps) {
    const final = join(out, basename(f));
    await rename(tmp, final);
    placed.set(f, final);
  }
  await fsyncPath(out);
  for (const name of previous ?? []) {
    if (names.includes(name)) continue;
    // A stale file of Kiln's; anything else by that name (a directory, a link) is the user's since.
    const path = join(out, name);
    if ((await lstat(path).catch(() => null))?.isFile()) await rm(path, { force: true });
  }
  writeManifest(out, names);
  return placed;
}

/** Throws naming the first of names that is taken by something Kiln did not write. */
async function checkCollisions(out: string, names: string[], previous: Set<string> | null, owned: boolean): Promise<void> {
  for (const name of names) {
    const path = join(out, name);
    const st = await lstat(path).catch(() => null);
    if (!st) continue;
    const kilns = previous ? previous.has(name) : owned;
    if (!kilns || !st.isFile()) {
      throw new KilnError(`${path} exists and was not written by Kiln; the build would replace it`, {
        where: { file: path },
        hint: 'nothing in the out directory was changed: move or rename that file, or pass another --out directory',
      });
    }
  }
}

/** The names the previous build wrote, or null when Kiln never wrote a manifest there. */
async function readManifest(out: string): Promise<Set<string> | null> {
  const text = await readFile(join(out, OUTPUTS_MANIFEST), 'utf8').catch(() => null);
  if (text === null) return null;
  let files: unknown;
  try {
    files = (JSON.parse(text) as Partial<OutputsManifest>).files;
  } catch {
    files = undefined;
  }
  // An unreadable manifest owns nothing: Kiln then refuses to replace rather than guess.
  if (!Array.isArray(files)) return new Set();
  // Only plain names in this directory: a manifest never makes Kiln delete anything elsewhere.
  return new Set(files.filter((n): n is string => typeof n === 'string' && n === basename(n) && n !== '.' && n !== '..' && n !== OUTPUTS_MANIFEST && !n.startsWith(TMP_PREFIX)));
}

function writeManifest(out: string, files: string[]): void {
  const m: OutputsManifest = { kiln: 1, files: [...files].sort() };
  writeFileDurable(join(out, OUTPUTS_MANIFEST), JSON.stringify(m, null, 2) + '\n');
}

/** Temporaries of a build killed while it placed its outputs (named by its pid). */
async function removeDeadTemps(out: string): Promise<void> {
  for (const n of await readdir(out)) {
    const pid = Number(/^\.kiln-tmp-(\d+)-/.exec(n)?.[1]);
    if (pid && pid !== process.pid && !processAlive(pid)) await rm(join(out, n), { force: true });
  }
}
