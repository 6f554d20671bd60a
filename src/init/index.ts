/**
 * `kiln init [dir]`: a new image repository that builds as it is: kiln.yaml (with the schema comment for
 * editors), a playbook with one role (defaults, a template, a handler), .gitignore for .kiln/, a short
 * README; `git init` when the folder is not in a repository yet. Nothing that exists is overwritten.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { KilnError } from '../errors.js';
import { exec } from '../exec.js';
import { kilnSchema } from '../template/schema.js';

/** An image name from a folder name: kiln.yaml's name pattern (lower case, digits, . _ -). */
export function imageName(dir: string): string {
  const n = basename(resolve(dir)).toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 63);
  return n || 'image';
}

export function initFiles(name: string): Record<string, string> {
  return {
    'kiln.yaml': `# yaml-language-server: $schema=.kiln/kiln.schema.json
# What Kiln builds (every key: kiln schema, or the README). Editors with the YAML language server check
# and complete this file against .kiln/kiln.schema.json (kiln init wrote it; kiln schema prints it again).
name: ${name}
description: Debian 13 with a hardened SSH configuration and a message of the day
source:
  debian:
    suite: trixie
    mirror: http://deb.debian.org/debian
provision:
  playbook: playbook.yml
  idempotence: fail
disk:
  size: 2GiB
  firmware: [bios, uefi]
  hostname: ${name.replace(/[._]/g, '-').replace(/^-+|-+$/g, '') || 'image'}
formats: [raw, qcow2]
`,
    'playbook.yml': `# The desired state of the image. Kiln runs it over a chroot at build time, and over SSH when
# \`kiln apply\` upgrades a running machine (kiln_build tells the two apart).
- name: ${name}
  hosts: all
  become: true
  gather_facts: false
  roles:
    - role: base
`,
    'roles/base/defaults/main.yml': `# The role's settings: override them in playbook.yml, or in kiln.yaml's provision.vars.
base_motd: "Built by Kiln."
base_ssh_password_authentication: false
`,
    'roles/base/tasks/main.yml': `- name: Write the message of the day
  ansible.builtin.template:
    src: motd.j2
    dest: /etc/motd
    owner: root
    group: root
    mode: "0644"

# sshd -G parses the file and fails on any bad option; unlike -t it needs neither host keys nor
# /run/sshd, which an image being built does not have.
- name: Harden the SSH server
  ansible.builtin.template:
    src: sshd-kiln.conf.j2
    dest: /etc/ssh/sshd_config.d/50-kiln.conf
    owner: root
    group: root
    mode: "0644"
    validate: /usr/sbin/sshd -G -f %s
  notify: Restart ssh
`,
    'roles/base/handlers/main.yml': `# On a running machine this restarts sshd; while the image is built nothing runs, and Kiln
# records the restart as deferred to first boot.
- name: Restart ssh
  ansible.builtin.service:
    name: ssh
    state: restarted
`,
    'roles/base/templates/motd.j2': `{{ base_motd }}
Image {{ kiln_image_name }} {{ kiln_image_version }}
`,
    'roles/base/templates/sshd-kiln.conf.j2': `# Managed by Kiln (role base): local edits are drift (kiln status --check).
PermitRootLogin prohibit-password
PasswordAuthentication {{ 'yes' if base_ssh_password_authentication else 'no' }}
KbdInteractiveAuthentication no
`,
    '.gitignore': '.kiln/\n',
    'README.md': `# ${name}

A virtual-machine image built by [Kiln](https://kiln.invalid): Debian 13 from the signed archive, configured
by \`playbook.yml\` (role \`base\`), sealed, versioned by git tag.

\`\`\`
git add -A && git commit -m init
git tag release-0.1.0
kiln build                      # the sealed image in every format of kiln.yaml, released in .kiln/store
kiln boot ${name}@release-0.1.0 -- cat /etc/motd
\`\`\`

A new version: change the playbook, commit, \`git tag release-0.2.0\`, \`kiln build\`.
`,
  };
}

export interface InitResult { dir: string; name: string; files: string[]; gitInit: boolean }

export async function initRepository(dir: string, opts: { name?: string } = {}): Promise<InitResult> {
  const root = resolve(dir);
  const name = opts.name ?? imageName(root);
  if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) throw new KilnError(`--name ${JSON.stringify(name)}: an image name is lower case letters, digits, ".", "_" and "-", starting with a letter or digit`, { exitCode: 2 });
  const files = initFiles(name);
  const existing = Object.keys(files).filter((f) => existsSync(join(root, f)));
  if (existing.length) {
    throw new KilnError(`nothing was written: ${root} already has ${existing.join(', ')}`, { hint: 'kiln init starts a new image repository; run it in an empty folder (or give one: kiln init DIR)', exitCode: 2 });
  }
  mkdirSync(root, { recursive: true });
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(join(root, f, '..'), { recursive: true });
    writeFileSync(join(root, f), text, { flag: 'wx' });
  }
  mkdirSync(join(root, '.kiln'), { recursive: true });
  writeFileSync(join(root, '.kiln', 'kiln.schema.json'), JSON.stringify(kilnSchema, null, 2) + '\n');
  const inRepo = (await exec('git', ['-C', root, 'rev-parse', '--is-inside-work-tree'], { allowFailure: true })).code === 0;
  if (!inRepo) await exec('git', ['init', '-q', root]);
  return { dir: root, name, files: Object.keys(files), gitInit: !inRepo };
}
