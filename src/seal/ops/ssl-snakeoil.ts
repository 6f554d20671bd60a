import { firstbootProblem, installFirstboot, type FirstbootUnit } from '../firstboot.js';
import { isFile, remove } from '../tree.js';
import type { SealOperation } from '../types.js';

/**
 * Debian's ssl-cert generates a "snakeoil" key pair at install time: a private key every clone
 * would share. It is removed and regenerated on first boot, before the servers that use it.
 */
const KEY = '/etc/ssl/private/ssl-cert-snakeoil.key';
const CERT = '/etc/ssl/certs/ssl-cert-snakeoil.pem';

export const snakeoilUnit: FirstbootUnit = {
  name: 'kiln-firstboot-ssl-snakeoil.service',
  description: 'Generate this machine\'s snakeoil TLS certificate (kiln first boot)',
  unlessExists: KEY,
  before: ['apache2.service', 'nginx.service', 'postfix.service', 'exim4.service', 'dovecot.service'],
  wantedBy: ['multi-user.target'],
  exec: '/usr/sbin/make-ssl-cert generate-default-snakeoil --force-overwrite',
};

const hasSslCert = (root: string) => isFile(root, '/usr/sbin/make-ssl-cert');

export const sslSnakeoil: SealOperation = {
  name: 'ssl-snakeoil',
  description: 'Remove the ssl-cert snakeoil key pair; it is regenerated on first boot',
  async apply(root, ctx) {
    const changed = [KEY, CERT].flatMap((p) => remove(root, p, ctx));
    if (hasSslCert(root)) changed.push(...installFirstboot(root, snakeoilUnit, ctx));
    return changed;
  },
  async check(root) {
    const found = isFile(root, KEY) ? [{ check: this.name, path: KEY, message: 'snakeoil TLS private key baked into the image: every clone would share it' }] : [];
    const problem = hasSslCert(root) ? firstbootProblem(root, snakeoilUnit) : undefined;
    if (problem) found.push({ check: this.name, path: `/etc/systemd/system/${snakeoilUnit.name}`, message: `ssl-cert is installed but nothing regenerates the snakeoil certificate: ${problem}` });
    return found;
  },
};
