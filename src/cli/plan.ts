import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { gitlabPipeline, githubWorkflow } from '../plan/emit.js';
import { familyFiles, makePlan, planText } from '../plan/index.js';
import { storeFromFlags } from '../store/from-cli.js';
import { parse, type Command } from './command.js';

export const planCommand: Command = {
  name: 'plan',
  summary: 'A family of images as a build graph (stages by source.release parents, publish jobs, what is released); --emit writes it as a GitLab CI or GitHub Actions pipeline',
  usage: 'kiln plan [folder...] [--emit gitlab|github] [--cache oci://host/prefix] [--out FILE] [--json]',
  async run(argv) {
    const { values, positionals } = parse(this, argv, {
      emit: { type: 'string', description: 'Write the plan as a pipeline: gitlab (.gitlab-ci.yml) or github (a workflow); jobs call kiln build and kiln publish only', value: 'gitlab|github' },
      out: { type: 'string', short: 'o', description: 'Write the pipeline to this file (default: stdout)', value: 'FILE' },
      json: { type: 'boolean', description: 'Print the plan as JSON on stdout' },
      cache: { type: 'string', description: 'The registry the pipeline\'s runners share as their step cache (KILN_CACHE_REMOTE in the pipeline)', value: 'oci://host[:port]/prefix' },
    }, true);
    if (values.emit !== undefined && !['gitlab', 'github'].includes(values.emit)) throw new KilnError(`--emit: expected gitlab or github, got ${JSON.stringify(values.emit)}`, { exitCode: 2 });
    if (values.cache !== undefined && !/^oci:\/\/[^/\s]+(\/\S*)?$/.test(values.cache)) throw new KilnError(`--cache: expected oci://host[:port]/prefix, got ${JSON.stringify(values.cache)}`, { exitCode: 2 });
    if (values.out && !values.emit) throw new KilnError('--out needs --emit (it names the pipeline file)', { exitCode: 2 });
    const cwd = process.cwd();
    const plan = await makePlan(familyFiles(positionals), {
      cwd,
      // Each image's own store (release.store of its kiln.yaml), read under its trust policy.
      released: async (t, version) => {
        let store;
        try {
          store = await storeFromFlags({}, { cwd: t.dir });
        } catch (e) {
          if (e instanceof KilnError && /^no release store at /.test(e.message)) return false; // nothing released yet
          throw e;
        }
        return store.exists(t.config.name, version);
      },
    });
    if (values.emit) {
      const text = values.emit === 'gitlab' ? gitlabPipeline(plan, { cache: values.cache }) : githubWorkflow(plan, { cache: values.cache });
      if (values.out) {
        const out = resolve(values.out);
        try {
          mkdirSync(dirname(out), { recursive: true });
          writeFileSync(out, text);
        } catch (e) {
          throw new KilnError(`cannot write the pipeline to ${values.out}: ${(e as Error).message}`, { exitCode: 1 });
        }
        process.stderr.write(`wrote ${values.out}\n`);
      } else process.stdout.write(text);
      process.stderr.write(planText(plan));
      return 0;
    }
    process.stdout.write(values.json ? JSON.stringify(plan, null, 2) + '\n' : planText(plan));
    return 0;
  },
};
