/**
 * Loads kiln.yaml: parse with source positions, validate against the schema (filling defaults),
 * then check what a schema cannot (files exist). Every problem names file:line:column and what
 * was expected; all problems are reported together.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { isMap, isPair, isScalar, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { KilnError } from '../errors.js';
import { locateYamlErrors } from '../yaml-errors.js';
import { kilnSchema, type KilnConfig } from './schema.js';

export interface Problem { file: string; line: number; column: number; message: string }

export class TemplateError extends KilnError {
  readonly problems: Problem[];
  constructor(problems: Problem[]) {
    const first = problems[0];
    super(first.message, {
      where: { file: first.file, line: first.line, column: first.column },
      detail: problems.length > 1 ? problems.slice(1).map((p) => `${p.file}:${p.line}:${p.column}: ${p.message}`).join('\n') : undefined,
      hint: 'see `kiln schema` for every key kiln.yaml accepts',
      exitCode: 2,
    });
    this.name = 'TemplateError';
    this.problems = problems;
  }
}

export interface LoadedTemplate {
  config: KilnConfig;
  /** Absolute path of kiln.yaml. */
  file: string;
  /** Directory holding kiln.yaml: the image's repository root (or a folder in it). */
  dir: string;
  playbook: string;
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
const validateSchema = ajv.compile(kilnSchema);

export function findTemplate(start: string): string {
  const p = resolve(start);
  if (existsSync(p) && statSync(p).isFile()) return p;
  const f = join(p, 'kiln.yaml');
  if (!existsSync(f)) throw new KilnError(`no kiln.yaml in ${p}`, { hint: 'run kiln in the image repository, or pass --file path/to/kiln.yaml' });
  return f;
}

export function loadTemplate(path: string): LoadedTemplate {
  const file = resolve(path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new KilnError(`cannot read ${file}: ${(e as Error).message}`);
  }
  return parseTemplate(text, file);
}

export function parseTemplate(text: string, file: string): LoadedTemplate {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined, message: string): Problem => {
    const pos = lc.linePos(offset ?? 0);
    return { file, line: pos.line, column: pos.col, message };
  };
  if (doc.errors.length) {
    throw new TemplateError(locateYamlErrors(text, doc.errors, lc).map((p) => ({ file, ...p })));
  }
  const data = doc.toJS() as unknown;
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new TemplateError([at(0, 'expected a mapping at the top level (name:, source:, provision:, ...)')]);
  }
  if (!validateSchema(data)) {
    const problems = dedupe((validateSchema.errors ?? []).map((e) => schemaProblem(e, doc, at)));
    throw new TemplateError(problems.sort((a, b) => a.line - b.line || a.column - b.column));
  }
  const config = data as unknown as KilnConfig;
  const dir = dirname(file);
  const problems: Problem[] = [];
  const playbook = resolve(dir, config.provision.playbook);
  if (!existsSync(playbook)) {
    problems.push(at(nodeAt(doc, ['provision', 'playbook'])?.range?.[0], `playbook not found: ${config.provision.playbook} (expected a file relative to ${dir})`));
  }
  // The schema's pattern keeps quotes and shell characters out; the URL parser catches what a pattern cannot.
  for (const key of ['mirror', 'snapshot'] as const) {
    const url = config.source.debian[key];
    if (url !== undefined && !URL.canParse(url)) problems.push(at(nodeAt(doc, ['source', 'debian', key])?.range?.[0], `source.debian.${key}: ${JSON.stringify(url)} is not a valid URL`));
  }
  if (config.source.image && config.source.release) {
    problems.push(at(nodeAt(doc, ['source', 'release'])?.range?.[0], 'source.image and source.release are both set: an image has one parent, the vendor image or the Kiln release'));
  }
  const img = config.source.image;
  if (img) {
    for (const key of ['url', 'checksums', 'signature'] as const) {
      const ref = img[key];
      if (ref !== undefined && !URL.canParse(ref, URL.canParse(img.url) ? img.url : 'file:///')) problems.push(at(nodeAt(doc, ['source', 'image', key])?.range?.[0], `source.image.${key}: ${JSON.stringify(ref)} is not a valid URL`));
    }
    img.keys.forEach((k, i) => {
      if (!existsSync(resolve(dir, k))) problems.push(at(nodeAt(doc, ['source', 'image', 'keys', i])?.range?.[0], `source.image.keys: key file not found: ${k} (expected a file relative to ${dir})`));
    });
    if (img.checksums && !img.keys.length) {
      problems.push(at(nodeAt(doc, ['source', 'image', 'checksums'])?.range?.[0], 'source.image.checksums needs source.image.keys: a checksum file is read only once a pinned key has verified its signature'));
    }
    if (img.url.startsWith('ec2://')) {
      if (!img.owner) problems.push(at(nodeAt(doc, ['source', 'image', 'url'])?.range?.[0], 'source.image.url names an AMI: set source.image.owner to the AWS account that must own it (a distribution\'s publishing account)'));
      for (const key of ['checksums', 'signature', 'checksum_name'] as const) if (img[key] !== undefined) problems.push(at(nodeAt(doc, ['source', 'image', key])?.range?.[0], `source.image.${key} does not apply to an AMI (ec2://): it is trusted by its pinned owner, and pinned by digest in kiln.lock`));
    } else if (img.owner) {
      problems.push(at(nodeAt(doc, ['source', 'image', 'owner'])?.range?.[0], 'source.image.owner applies only to an AMI (source.image.url: ec2://<region>/<ami>)'));
    }
    if (img.signature && !img.checksums) problems.push(at(nodeAt(doc, ['source', 'image', 'signature'])?.range?.[0], 'source.image.signature signs the checksum file: set source.image.checksums too'));
  }
  for (const [key, rel] of [['ssh_key', config.release.sign?.ssh_key], ['pgp_key', config.release.sign?.pgp_key]] as const) {
    if (rel && !existsSync(resolve(dir, rel))) problems.push(at(nodeAt(doc, ['release', 'sign', key])?.range?.[0], `signing key not found: ${rel}`));
  }
  const health = config.apply.health;
  if (health && !health.http && !health.command) problems.push(at(nodeAt(doc, ['apply', 'health'])?.range?.[0], 'apply.health checks nothing: give http (a URL and the status expected), command, or both'));
  if (problems.length) throw new TemplateError(problems);
  return { config, file, dir, playbook };
}

function nodeAt(doc: Document, path: (string | number)[]): YamlNode | undefined {
  const n = doc.getIn(path, true);
  return n && typeof n === 'object' && 'range' in (n as object) ? (n as YamlNode) : undefined;
}

function keyNode(doc: Document, path: (string | number)[], key: string): YamlNode | undefined {
  const parent = path.length ? doc.getIn(path, true) : doc.contents;
  if (!isMap(parent)) return undefined;
  for (const item of parent.items) {
    if (isPair(item) && isScalar(item.key) && String(item.key.value) === key) return item.key as YamlNode;
  }
  return undefined;
}

function schemaAt(path: (string | number)[]): Record<string, unknown> | undefined {
  let s: Record<string, unknown> | undefined = kilnSchema as unknown as Record<string, unknown>;
  for (const p of path) {
    if (!s) return undefined;
    if (typeof p === 'number') s = s.items as Record<string, unknown> | undefined;
    else s = (s.properties as Record<string, Record<string, unknown>> | undefined)?.[p];
  }
  return s;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function schemaProblem(e: ErrorObject, doc: Document, at: (o: number | undefined, m: string) => Problem): Problem {
  const path = e.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~')).map((s) => (/^\d+$/.test(s) ? Number(s) : s));
  const where = path.length ? path.join('.') : 'top level';
  const node = nodeAt(doc, path) ?? (doc.contents as YamlNode | null) ?? undefined;
  const value = doc.getIn(path);
  const plain = value !== null && typeof value === 'object' && 'toJSON' in (value as object) ? (value as { toJSON(): unknown }).toJSON() : value;
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(e.params.additionalProperty);
      const allowed = Object.keys((schemaAt(path)?.properties as object) ?? {});
      return at(keyNode(doc, path, key)?.range?.[0] ?? node?.range?.[0], `unknown key '${key}' in ${where} (expected one of: ${allowed.join(', ')})`);
    }
    case 'required':
      return at(node?.range?.[0], `missing required key '${e.params.missingProperty}' in ${where}`);
    case 'type':
      return at(node?.range?.[0], `${where}: expected ${article(String(e.params.type))}, got ${describeValue(plain)}`);
    case 'enum':
      return at(node?.range?.[0], `${where}: expected one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(plain)}`);
    case 'pattern': {
      const d = schemaAt(path)?.description;
      return at(node?.range?.[0], `${where}: ${describeValue(plain)} does not match ${e.params.pattern}${d ? ` (${d})` : ''}`);
    }
    default:
      return at(node?.range?.[0], `${where}: ${e.message ?? 'invalid value'}`);
  }
}

function article(type: string): string {
  const words: Record<string, string> = { object: 'a mapping', array: 'a list', string: 'a string', boolean: 'true or false', integer: 'a whole number', number: 'a number' };
  return type.split(',').map((t) => words[t] ?? t).join(' or ');
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => { const k = `${p.line}:${p.column}:${p.message}`; if (seen.has(k)) return false; seen.add(k); return true; });
}
