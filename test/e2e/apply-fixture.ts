/**
 * The upgrade scenario's pieces: a tiny application package `kiln-demo-app` in two versions, a flat
 * apt repository serving them on 127.0.0.1, and an image repository (the example's, with a `demo_app`
 * role that pins the package version, manages /etc/kiln-demo.conf and restarts the app's service).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { exampleRepo } from './fixture.js';

/** The Debian changelog of kiln-demo-app up to version v (2.0's entry is a security fix: kiln diff shows it). */
function demoChangelog(v: string, versions: string[]): string {
  const entry = (x: string) => `kiln-demo-app (${x}) bookworm${x === '2.0' ? '-security' : ''}; urgency=${x === '2.0' ? 'high' : 'medium'}\n\n`
    + (x === '2.0' ? '  * Fix CVE-2026-0001: the demo service trusted its environment.\n' : `  * Release ${x}.\n`)
    + `\n -- Kiln tests <e2e@kiln.test>  Mon, 0${versions.indexOf(x) + 1} Jun 2026 10:00:00 +0000\n`;
  return versions.slice(0, versions.indexOf(v) + 1).reverse().map(entry).join('\n');
}

/** Writes a package tree's control file and builds it into dir. */
function buildDeb(root: string, control: string[], out: string): void {
  writeFileSync(join(root, 'DEBIAN/control'), [...control, 'Architecture: all', 'Maintainer: Kiln tests <e2e@kiln.test>', 'Section: misc', 'Priority: optional', ''].join('\n'));
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', root, out], { stdio: 'pipe' });
  rmSync(root, { recursive: true, force: true });
}

/**
 * Builds kiln-demo-app_<v>_all.deb for each version (with its Debian changelog) and
 * kiln-demo-extra_1.0_all.deb (the package release-0.2.0's playbook adds) into dir, and indexes them.
 */
export function buildAptRepo(dir: string, versions: string[]): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const v of versions) {
    const root = join(dir, '..', `pkg-${v}`);
    rmSync(root, { recursive: true, force: true });
    mkdirSync(join(root, 'DEBIAN'), { recursive: true });
    mkdirSync(join(root, 'usr/share/kiln-demo-app'), { recursive: true });
    writeFileSync(join(root, 'usr/share/kiln-demo-app/VERSION'), `${v}\n`);
    mkdirSync(join(root, 'usr/share/doc/kiln-demo-app'), { recursive: true });
    writeFileSync(join(root, 'usr/share/doc/kiln-demo-app/changelog.Debian.gz'), gzipSync(demoChangelog(v, versions), { level: 9 }));
    // A service that says its version in the journal when it (re)starts: the role's handler restarts it.
    mkdirSync(join(root, 'usr/lib/systemd/system'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/systemd/system/kiln-demo-app.service'), [
      '[Unit]', 'Description=Kiln upgrade demo application', '', '[Service]', 'Type=oneshot', 'RemainAfterExit=yes',
      'ExecStart=/bin/sh -c \'echo "kiln-demo-app $(cat /usr/share/kiln-demo-app/VERSION) started"\'', '',
    ].join('\n'));
    buildDeb(root, ['Package: kiln-demo-app', `Version: ${v}`, 'Description: Kiln upgrade demo application', ' Installs its version in /usr/share/kiln-demo-app/VERSION.'], join(dir, `kiln-demo-app_${v}_all.deb`));
  }
  const extra = join(dir, '..', 'pkg-extra');
  rmSync(extra, { recursive: true, force: true });
  mkdirSync(join(extra, 'DEBIAN'), { recursive: true });
  mkdirSync(join(extra, 'usr/share/kiln-demo-extra'), { recursive: true });
  writeFileSync(join(extra, 'usr/share/kiln-demo-extra/README'), 'The package release-0.2.0 adds.\n');
  buildDeb(extra, ['Package: kiln-demo-extra', 'Version: 1.0', 'Description: Kiln diff demo: a package a later release adds'], join(dir, 'kiln-demo-extra_1.0_all.deb'));
  const packages = execFileSync('dpkg-scanpackages', ['--multiversion', '.', '/dev/null'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  writeFileSync(join(dir, 'Packages'), packages);
}

/** release-0.2.0's other changes besides the version: its playbook adds kiln-demo-extra and its template a line. */
export function addExtraPackageAndEditTemplate(dir: string): void {
  writeFileSync(join(dir, 'roles/demo_app/tasks/main.yml'), readFileSync(join(dir, 'roles/demo_app/tasks/main.yml'), 'utf8') + `
- name: Install kiln-demo-extra
  ansible.builtin.apt:
    name: kiln-demo-extra
    state: present
`);
  edit(join(dir, 'roles/demo_app/templates/kiln-demo.conf.j2'), 'release = ', 'extra = installed\nrelease = ');
}

export interface AptServer { port: number; stop(): Promise<void> }

/** Serves dir over HTTP on 127.0.0.1:port until stop(). */
export async function serveAptRepo(dir: string, port: number): Promise<AptServer> {
  const child: ChildProcess = spawn('python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', dir, String(port)], { stdio: 'ignore' });
  let exited = false;
  child.on('exit', () => { exited = true; });
  const stop = async () => {
    if (exited) return;
    child.kill('SIGTERM');
    for (let i = 0; i < 50 && !exited; i++) await new Promise((r) => setTimeout(r, 100));
    if (!exited) child.kill('SIGKILL');
  };
  for (let i = 0; i < 100; i++) {
    if (exited) throw new Error('python3 -m http.server exited at start');
    if (await listening(port)) return { port, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(`the apt repository server did not listen on 127.0.0.1:${port}`);
}

function listening(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); res(true); });
    s.on('error', () => res(false));
  });
}

const DEMO_TASKS = `# The application, pinned: applying a release with another app_version replaces it.
- name: Add the demo apt repository
  ansible.builtin.copy:
    dest: /etc/apt/sources.list.d/kiln-demo.list
    content: "deb [trusted=yes] http://{{ demo_repo_host }}:{{ demo_repo_port }} ./\\n"
    mode: "0644"
  register: demo_source

- name: Install the pinned kiln-demo-app
  ansible.builtin.apt:
    name: "kiln-demo-app={{ app_version }}"
    state: present
    # Pinned means exactly this version: applying an older release goes back to its version.
    allow_downgrade: true
    update_cache: "{{ demo_source is changed }}"
  notify: Restart kiln-demo-app

- name: Write the demo configuration
  ansible.builtin.template:
    src: kiln-demo.conf.j2
    dest: /etc/kiln-demo.conf
    owner: root
    group: root
    mode: "0644"
  notify: Restart kiln-demo-app

# Test-only: with demo_record_applied set (the rollout test's inventory), each inventory name leaves a
# file, so the one VM behind several names shows which names a rollout reached and which it left alone.
- name: Record the inventory name this release was applied as
  ansible.builtin.copy:
    dest: "/var/lib/kiln-demo-applied-{{ inventory_hostname }}"
    content: "{{ kiln_image_version }}\n"
    mode: "0644"
  when: demo_record_applied | default(false)
`;

/**
 * kiln.yaml's apply.health: the app's service is active and its configuration names the release (on the
 * host), and an HTTP GET from the machine running kiln (the test's apt repository; an inventory
 * variable can point a host at a missing object, which is how the rollout test makes one batch fail).
 */
const DEMO_HEALTH = `apply:
  health:
    command: systemctl is-active --quiet kiln-demo-app && grep -qx 'release = {{ kiln_image_version }}' /etc/kiln-demo.conf
    http:
      url: "http://127.0.0.1:{{ demo_repo_port }}/{{ demo_health_object | default('Packages') }}"
      body: "Package: kiln-demo-app"
      from: controller
    timeout: 6s
    interval: 2s
`;

// At build time Kiln defers the restart to first boot; over SSH it restarts the service there and then.
const DEMO_HANDLERS = `- name: Restart kiln-demo-app
  ansible.builtin.service:
    name: kiln-demo-app
    state: restarted
`;

const demoDefaults = (v: string) => `app_version: "${v}"
# At build time Kiln relays provision.host_ports to 127.0.0.1 in its sandbox; a QEMU user-net guest reaches the host as 10.0.2.2.
demo_repo_host: "{{ '127.0.0.1' if kiln_build | default(false) else '10.0.2.2' }}"
`;

const DEMO_CONF = `# Managed by Kiln (demo_app role): local edits are drift.
app_version = {{ app_version }}
release = {{ kiln_image_version | default('unversioned') }}
`;

function edit(file: string, from: string | RegExp, to: string): void {
  const s = readFileSync(file, 'utf8');
  const t = s.replace(from, to);
  if (t === s) throw new Error(`fixture edit of ${file} changed nothing`);
  writeFileSync(file, t);
}

/** Sets the pinned application version of the demo role. */
export function setAppVersion(dir: string, version: string): void {
  edit(join(dir, 'roles/demo_app/defaults/main.yml'), /^app_version: .*$/m, `app_version: "${version}"`);
}

/**
 * The image repository for the upgrade test, committed and tagged: the example's files with the
 * `demo_app` role in place of the `web` role. Raw only, BIOS only (the test boots BIOS), and no fact
 * gathering. Under TCG every module Ansible runs on the VM takes 5-12 s and the test applies the
 * playbook three times, so the role is kept to what an upgrade needs: a pinned package, a managed
 * file, a handler.
 */
export function upgradeRepo(name: string, opts: { repoPort: number; tag: string; appVersion: string }): string {
  return exampleRepo(name, {
    tag: opts.tag,
    edit: (d) => {
      edit(join(d, 'kiln.yaml'), /^formats: .*$/m, 'formats: [raw]');
      // Debian 12: the example is Debian 13, so this test's boot and SSH checks are the ones on bookworm.
      edit(join(d, 'kiln.yaml'), '    suite: trixie\n', '    suite: bookworm\n');
      edit(join(d, 'kiln.yaml'), /^  firmware: .*$/m, '  firmware: [bios]');
      // The build sandbox reaches no host service but the ones kiln.yaml names (host_ports).
      edit(join(d, 'kiln.yaml'), '  idempotence: fail\n', `  idempotence: fail\n  host_ports: [${opts.repoPort}]\n  vars:\n    demo_repo_port: ${opts.repoPort}\n`);
      writeFileSync(join(d, 'kiln.yaml'), readFileSync(join(d, 'kiln.yaml'), 'utf8') + DEMO_HEALTH);
      edit(join(d, 'playbook.yml'), '  become: true\n', '  become: true\n  gather_facts: false\n');
      edit(join(d, 'playbook.yml'), '    - role: web\n', '    - role: demo_app\n');
      rmSync(join(d, 'roles/web'), { recursive: true });
      for (const sub of ['tasks', 'defaults', 'templates', 'handlers']) mkdirSync(join(d, 'roles/demo_app', sub), { recursive: true });
      writeFileSync(join(d, 'roles/demo_app/tasks/main.yml'), DEMO_TASKS);
      writeFileSync(join(d, 'roles/demo_app/handlers/main.yml'), DEMO_HANDLERS);
      writeFileSync(join(d, 'roles/demo_app/defaults/main.yml'), demoDefaults(opts.appVersion));
      writeFileSync(join(d, 'roles/demo_app/templates/kiln-demo.conf.j2'), DEMO_CONF);
    },
  });
}
