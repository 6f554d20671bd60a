/** configure: the base tree unpacked, with Kiln's layer: hostname, DHCP on any NIC, cloud-init user injection. */
import { applyImageLayer } from '../../image/layer.js';
import { extractTree } from '../../source/debian.js';
import { step } from '../context.js';

export const configureStep = step({
  name: 'configure',
  describe: "the base tree, with Kiln's layer: hostname, DHCP on any NIC, cloud-init user injection",
  reads: ['disk'],
  needs: ['source', 'base'],
  uses: ['cache'],
  mayProvide: ['treeSince'],
  async run(ctx, p) {
    if (ctx.cache?.disk || ctx.cache?.tree) {
      p.log(`not needed: the ${ctx.cache.disk ? 'disk' : 'provisioned tree'} is cached`);
      return;
    }
    ctx.treeSince = Date.now();
    await extractTree(ctx.base.tar, ctx.root, ctx.logger);
    // A vendor image keeps its own network, hostname and cloud-init configuration: it is made for its platform.
    if (ctx.source.type === 'image') p.log("vendor image: its network, hostname and cloud-init configuration are kept (Kiln's layer is not applied)");
    // A parent release has Kiln's layer already; writing it again sets this image's hostname.
    else applyImageLayer(ctx.root, { hostname: ctx.template.config.disk.hostname });
  },
});
