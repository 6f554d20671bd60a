import { existsSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkedRaw, diffSides, type DiffSide } from '../diff/index.js';
import { paint, diffText } from '../diff/text.js';
import { KilnError } from '../errors.js';
import { createLogger } from '../log.js';
import { BUILD_RECORD } from '../pipeline/outputs.js';
import type { BuildRecord } from '../pipeline/build.js';
import { STORE_USAGE, storeFromFlags, storeOptions } from '../store/from-cli.js';
import type { ReleaseStore } from '../store/release-store.js';
import { parse, type Command } from './command.js';

/** A release in the store: its record, signers, and its raw disk verified (the store hashes it as it resolves). */
async function releaseSide(store: ReleaseStore, ref: string, files: boolean): Promise<DiffSide> {
  const e = await store.entry(ref);
  // force: a revoked release can still be compared (and says so); a bad signature is refused all the same.
  const hasRaw = e.record.artifacts.some((a) => a.format === 'raw');
  const r = await store.resolve(ref, { force: true, format: hasRaw && files && !store.backend.remote ? 'raw' : undefined, verifyArtifacts: hasRaw && files });
  const side: DiffSide = {
    label: `${e.name}@${e.version}`, name: e.name, version: e.version, kind: 'release', digest: e.digest, commit: e.record.git.commit,
    template: e.record.template, packages: e.record.source.packages ?? [], artifacts: e.record.artifacts.map((a) => ({ format: a.format, size: a.size, sha256: a.sha256 })),
    signers: r.signers, parent: e.record.parents[0] ? `${e.record.parents[0].name}@${e.record.parents[0].version}` : undefined,
  };
  if (r.revoked) side.label += ' (REVOKED)';
  if (!files) side.rawMissing = 'not asked for';
  else if (!hasRaw) side.rawMissing = `the release has no raw artifact (formats: ${e.record.artifacts.map((a) => a.format).join(', ')})`;
  else if (store.backend.remote) side.rawMissing = `the store ${store.location} is a registry: \`kiln pull ${e.name}@${e.version}\` first, then diff in the local store`;
  else side.raw = r.artifact?.location;
  return side;
}

/** A snapshot build's output directory (its build.json): the raw disk hashed against the record. */
async function snapshotSide(dir: string, files: boolean): Promise<DiffSide> {
  const file = join(dir, BUILD_RECORD);
  if (!existsSync(file)) throw new KilnError(`${dir} is not a build output directory (no ${BUILD_RECORD})`, { where: { file: dir }, hint: 'give a release (name@version) or the directory a build printed (.kiln/out/…)', exitCode: 2 });
  let rec: BuildRecord;
  try { rec = JSON.parse(readFileSync(file, 'utf8')) as BuildRecord; } catch (e) { throw new KilnError(`${file}: not JSON: ${(e as Error).message}`, { where: { file } }); }
  if (typeof rec.name !== 'string' || typeof rec.commit !== 'string' || !Array.isArray(rec.artifacts) || !Array.isArray(rec.packages)) throw new KilnError(`${file}: not a Kiln build record (expected name, commit, artifacts and packages)`, { where: { file } });
  const raw = rec.artifacts.find((a) => a.format === 'raw');
  const side: DiffSide = {
    label: `${rec.name}@${rec.version}`, name: rec.name, version: rec.version, kind: rec.snapshot ? 'snapshot' : 'release', commit: rec.commit, template: rec.template,
    packages: rec.packages.map((p) => ({ name: p.name, version: p.version, arch: p.arch })), artifacts: rec.artifacts.map((a) => ({ format: a.format, size: a.size, sha256: a.sha256 })), signers: [],
  };
  // The record names files by absolute path when written; a moved directory keeps them beside build.json.
  const rawFile = raw ? [raw.file, join(dir, raw.file.split('/').pop() ?? '')].find((f) => existsSync(f)) : undefined;
  if (!files) side.rawMissing = 'not asked for';
  else if (!raw) side.rawMissing = `the build wrote no raw disk (formats: ${rec.artifacts.map((a) => a.format).join(', ')})`;
  else if (!rawFile) side.rawMissing = `its raw disk ${raw.file} is gone`;
  else side.raw = await checkedRaw(rawFile, raw.sha256);
  return side;
}

export const diffCommand: Command = {
  name: 'diff',
  summary: 'What changed between two releases (or a release and a snapshot build): packages with changelogs, files, the repository, seal, sizes, signers',
  usage: `kiln diff <a> <b> [--json] [--patch] [--no-files] ${STORE_USAGE}   (a, b: name@version, name@channel, or a build output directory)`,
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      ...storeOptions,
      json: { type: 'boolean', description: 'Print the whole report as JSON on stdout (every file, the patch, the changelog entries)' },
      patch: { type: 'boolean', description: 'Print the repository changes between the two commits as a patch' },
      'no-files': { type: 'boolean', description: 'Do not read the two disks: packages, repository, settings, sizes and signers only (no file list, no changelogs)' },
      color: { type: 'string', description: 'Colour the report: auto (a terminal without NO_COLOR), always or never', value: 'auto|always|never' },
    });
    if (positionals.length !== 2) throw new KilnError(`kiln diff takes two releases or build directories, got ${positionals.length}`, { hint: `usage: ${this.usage}`, exitCode: 2 });
    const color = values.color ?? 'auto';
    if (!['auto', 'always', 'never'].includes(color)) throw new KilnError(`--color: expected auto, always or never, got ${JSON.stringify(color)}`, { exitCode: 2 });
    const files = !values['no-files'];
    let store: ReleaseStore | undefined;
    const side = async (arg: string): Promise<DiffSide> => {
      const path = resolve(arg);
      if (!arg.includes('@') && existsSync(path) && statSync(path).isDirectory()) return snapshotSide(path, files);
      if (!arg.includes('@')) throw new KilnError(`${arg}: expected name@version (a release), name@channel, or a build output directory`, { exitCode: 2 });
      store ??= await storeFromFlags(values);
      return releaseSide(store, arg, files);
    };
    const a = await side(positionals[0]);
    const b = await side(positionals[1]);
    if (a.name !== b.name) process.stderr.write(`note: comparing two images (${a.name} and ${b.name})\n`);
    const logger = createLogger({});
    const report = await diffSides(a, b, { cwd: process.cwd(), scratch: tmpdir(), logger, files });
    if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    else process.stdout.write(diffText(report, paint(color === 'always' || (color === 'auto' && Boolean(process.stdout.isTTY) && !process.env.NO_COLOR)), { patch: values.patch }));
    return 0;
  },
};
