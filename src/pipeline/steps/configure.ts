/** configure: Kiln's layer on the base tree: hostname, DHCP on any NIC, cloud-init user injection. */
import { applyImageLayer } from '../../image/layer.js';
import { step } from '../context.js';

export const configureStep = step({
  name: 'configure',
  describe: "Kiln's layer: hostname, DHCP on any NIC, cloud-init user injection",
  reads: ['disk'],
  needs: ['source'],
  async run(ctx) {
    applyImageLayer(ctx.root, { hostname: ctx.template.config.disk.hostname });
  },
});
