import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { applyImageLayer } from '../../src/image/layer.js';

test("Kiln's layer enables networkd for every ethernet NIC (no MAC) and a serial console", () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-layer-'));
  applyImageLayer(root, { hostname: 'web' });
  const wants = (t: string, u: string) => readlinkSync(join(root, 'etc/systemd/system', `${t}.wants`, u));
  assert.equal(wants('multi-user.target', 'systemd-networkd.service'), '/lib/systemd/system/systemd-networkd.service');
  assert.equal(wants('sockets.target', 'systemd-networkd.socket'), '/lib/systemd/system/systemd-networkd.socket');
  assert.equal(wants('network-online.target', 'systemd-networkd-wait-online.service'), '/lib/systemd/system/systemd-networkd-wait-online.service');
  assert.equal(wants('getty.target', 'serial-getty@ttyS0.service'), '/lib/systemd/system/serial-getty@.service');
  const net = readFileSync(join(root, 'etc/systemd/network/80-kiln-dhcp.network'), 'utf8');
  assert.match(net, /^Type=ether$/m);
  assert.match(net, /^DHCP=yes$/m);
  assert.doesNotMatch(net, /MACAddress/);
  assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'web\n');
  const cloudInit = readFileSync(join(root, 'etc/cloud/cloud.cfg.d/90-kiln.cfg'), 'utf8');
  assert.match(cloudInit, /config: disabled/);
  // The instance's hostname resolves without DNS (sudo looks it up on every call); the image's /etc/hosts stays otherwise.
  assert.match(cloudInit, /^manage_etc_hosts: localhost$/m);
  assert.match(readFileSync(join(root, 'etc/hosts'), 'utf8'), /^127\.0\.1\.1\tweb$/m);
});
