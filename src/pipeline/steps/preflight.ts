/** preflight: a released version is never rebuilt in place, and a signing key that will be needed works now. */
import { KilnError } from '../../errors.js';
import { signerFromConfig } from '../../store/index.js';
import { step } from '../context.js';
import { buildStore, releasing } from './release-store.js';

export const preflightStep = step({
  name: 'preflight',
  describe: 'refuse to rebuild a released version (releases are immutable); check the signing key works',
  reads: ['name', 'release'],
  needs: ['version'],
  skip: (ctx) => !releasing(ctx),
  async run(ctx, p) {
    const v = ctx.version;
    const name = ctx.template.config.name;
    // A signing key that is missing, unreadable or locked fails now, not after the whole build.
    const signer = await signerFromConfig(ctx.template.config.release.sign, ctx.template.dir);
    if (signer) {
      await signer.sign(Buffer.from('kiln-preflight: the signing key works\n'));
      p.log(`signing key ${signer.identity}`);
    }
    const s = await buildStore(ctx);
    const there = await s.exists(name, v.version);
    if (there && ctx.options.ifReleased === 'verify') {
      p.log(`${name}@${v.version} is released already: this build is compared with it (--if-released verify)`);
      return;
    }
    if (there) {
      throw new KilnError(`${name}@${v.version} is already released in ${ctx.template.config.release.store}; a version is never rebuilt in place`, {
        hint: 'tag a new version for any change, --if-released verify builds and compares with the release, `kiln rebuild` checks reproducibility, and --no-release or --snapshot builds without releasing',
      });
    }
    p.log(`${name}@${v.version} is not released yet`);
  },
});
