/**
 * `kiln plan`: a family of images (folders each with a kiln.yaml) as a build graph. An image whose
 * source.release names another image of the family builds after it; images of one stage build in
 * parallel; each cloud in an image's kiln.yaml `publish` gets a publish job after its build; an image
 * whose version (the tag at HEAD) is already in its store is skipped. The graph is printed, or written
 * as a CI pipeline that only calls `kiln build` and `kiln publish` (src/plan/emit.ts): Kiln runs on the
 * CI engine a team already has, it does not schedule.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { parseReleaseRef } from '../store/release-store.js';
import { loadTemplate, type LoadedTemplate } from '../template/load.js';

export interface PlannedImage {
  name: string;
  /** The folder of its kiln.yaml, relative to the directory plan ran in (what a job `cd`s into). */
  dir: string;
  /** source.release of an image of the family: its name, and the reference as written (base@stable). */
  parent?: { name: string; ref: string };
  /** source.release of an image outside the family: it must be released already. */
  externalParent?: string;
  /** The tag at HEAD matching release.tag_pattern, or undefined (the build job would refuse: no tag). */
  version?: string;
  /** True when name@version is in its store already: no build job. */
  released: boolean;
  /** Clouds kiln.yaml publishes to with `kiln publish` (publish.<cloud>, unless on_build publishes in the build). */
  publish: string[];
  /** 1 for an image with no parent in the family, else its parent's stage + 1. */
  stage: number;
}

export interface Plan {
  images: PlannedImage[];
  /** Image names per stage, stage 1 first. */
  stages: string[][];
}

/** The kiln.yaml files a plan reads: each argument is an image's folder, or a folder of image folders. */
export function familyFiles(args: string[]): string[] {
  const out: string[] = [];
  for (const a of args.length ? args : ['.']) {
    const d = resolve(a);
    if (!existsSync(d)) throw new KilnError(`${a}: no such folder`, { exitCode: 2 });
    if (existsSync(join(d, 'kiln.yaml'))) { out.push(join(d, 'kiln.yaml')); continue; }
    const subs = readdirSync(d).sort().filter((n) => !n.startsWith('.') && statSync(join(d, n)).isDirectory() && existsSync(join(d, n, 'kiln.yaml')));
    if (!subs.length) throw new KilnError(`${a}: no kiln.yaml in it or in its folders`, { hint: 'name the image folders of the family, or the folder that holds them', exitCode: 2 });
    out.push(...subs.map((n) => join(d, n, 'kiln.yaml')));
  }
  return [...new Set(out)];
}

async function tagAtHead(t: LoadedTemplate): Promise<string | undefined> {
  const r = await exec('git', ['-C', t.dir, 'tag', '--points-at', 'HEAD', '--list', t.config.version.tag_pattern], { allowFailure: true });
  const tags = r.code === 0 ? r.stdout.split('\n').filter(Boolean).sort() : [];
  return tags.length === 1 ? tags[0] : undefined;
}

export interface PlanOptions {
  cwd: string;
  /** Whether name@version is released already (the image's own store; injectable for tests). */
  released: (t: LoadedTemplate, version: string) => Promise<boolean>;
}

/** Reads the family and orders it. Errors name the file: two images of one name, a cycle of parents. */
export async function makePlan(files: string[], o: PlanOptions): Promise<Plan> {
  const templates = files.map((f) => loadTemplate(f));
  const byName = new Map<string, LoadedTemplate>();
  for (const t of templates) {
    const other = byName.get(t.config.name);
    if (other) throw new KilnError(`two images of the family are named ${t.config.name}`, { where: { file: t.file }, detail: `also ${other.file}`, hint: 'an image name is its releases\' name: rename one' });
    byName.set(t.config.name, t);
  }
  const images = new Map<string, PlannedImage>();
  for (const t of templates) {
    const ref = t.config.source.release?.ref;
    const parentName = ref ? parseReleaseRef(ref).name : undefined;
    const version = await tagAtHead(t);
    const publish = (['aws', 'azure', 'gce'] as const).filter((c) => t.config.publish?.[c] && !(t.config.publish[c] as { on_build?: boolean }).on_build);
    images.set(t.config.name, {
      name: t.config.name, dir: relative(o.cwd, t.dir) || '.',
      ...(parentName && byName.has(parentName) ? { parent: { name: parentName, ref: ref as string } } : {}),
      ...(ref && !(parentName && byName.has(parentName)) ? { externalParent: ref } : {}),
      version, released: version ? await o.released(t, version) : false, publish, stage: 0,
    });
  }
  // Stages: the longest chain of family parents above each image; a cycle is an error naming it.
  const stageOf = (name: string, path: string[]): number => {
    const img = images.get(name) as PlannedImage;
    if (img.stage) return img.stage;
    if (path.includes(name)) {
      const cycle = [...path.slice(path.indexOf(name)), name];
      throw new KilnError(`the family's parents form a cycle: ${cycle.join(' -> ')}`, { where: { file: byName.get(name)?.file }, hint: 'source.release must name an image that does not build on this one' });
    }
    img.stage = img.parent ? stageOf(img.parent.name, [...path, name]) + 1 : 1;
    return img.stage;
  };
  for (const n of images.keys()) stageOf(n, []);
  const list = [...images.values()].sort((a, b) => a.stage - b.stage || a.name.localeCompare(b.name));
  const stages: string[][] = [];
  for (const i of list) (stages[i.stage - 1] ??= []).push(i.name);
  return { images: list, stages };
}

/** The graph for people. */
export function planText(p: Plan): string {
  const out: string[] = [`family: ${p.images.length} image(s) in ${p.stages.length} stage(s)`];
  p.stages.forEach((names, i) => {
    out.push(`stage ${i + 1}${names.length > 1 ? ' (in parallel)' : ''}:`);
    for (const n of names) {
      const img = p.images.find((x) => x.name === n) as PlannedImage;
      const what = !img.version ? 'no release tag at HEAD: its build job would refuse' : img.released ? `${img.version} already released: skipped` : `build ${img.version}`;
      const parent = img.parent ? p.images.find((x) => x.name === img.parent?.name) : undefined;
      const pinned = img.parent && parent?.version && img.parent.ref === `${parent.name}@${parent.version}`;
      const on = img.parent ? `, on ${img.parent.ref}${pinned ? '' : ' (after its build; the pipeline does not move channels: `kiln channel set` does)'}` : img.externalParent ? `, on ${img.externalParent} (outside the family: must be released)` : '';
      out.push(`  ${n}  (${img.dir})  ${what}${on}${img.publish.length ? `; then publish to ${img.publish.join(', ')}` : ''}`);
    }
  });
  return out.join('\n') + '\n';
}
