/** version: the version, commit and SOURCE_DATE_EPOCH from the git tag at HEAD. */
import { resolveVersion } from '../../version/git.js';
import { step } from '../context.js';

export const versionStep = step({
  name: 'version',
  describe: 'resolve the version from the git tag at HEAD',
  reads: ['name', 'version'],
  provides: ['version'],
  async run(ctx, p) {
    const t = ctx.template;
    ctx.version = await resolveVersion(t.dir, t.file, { tagPattern: t.config.version.tag_pattern, snapshot: ctx.options.snapshot });
    const v = ctx.version;
    p.log(`${t.config.name}@${v.version} (commit ${v.commit.slice(0, 12)}, SOURCE_DATE_EPOCH=${v.sourceDateEpoch}${v.snapshot ? ', SNAPSHOT: cannot be released' : ''})`);
  },
});
