/**
 * A root tree with one planted problem of every kind the seal and the audit know, plus innocent
 * look-alikes that must not be reported. `planted` is what the audit must report, exactly.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface Expected { check: string; path: string }

/** A PEM-style block with a plausible body; deterministic. */
export function pem(label: string, seed: number, lines = 6): string {
  const body: string[] = [];
  for (let i = 0; i < lines; i++) body.push(Buffer.from(Array.from({ length: 48 }, (_, j) => (seed * 31 + i * 7 + j * 13) % 256)).toString('base64'));
  return `-----BEGIN ${label}-----\n${body.join('\n')}\n-----END ${label}-----\n`;
}

const AWS_ID = ['AKIA', 'Q3XK7V2M9PLR4TZB'].join('');
const AWS_SECRET = 'wJalrXUtnFEMIK7MDENGbPxRfiCYzq3x0Trk8Zb2';

export function buildFixture(root: string): { planted: Expected[]; unsealable: Expected[] } {
  rmSync(root, { recursive: true, force: true });
  const planted: Expected[] = [];
  const unsealable: Expected[] = [];
  const put = (p: string, text: string, mode = 0o644) => {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), text);
    chmodSync(join(root, p), mode);
  };
  const dir = (p: string) => mkdirSync(join(root, p), { recursive: true });
  const link = (p: string, target: string) => { mkdirSync(dirname(join(root, p)), { recursive: true }); symlinkSync(target, join(root, p)); };
  const bad = (check: string, p: string, text: string, mode = 0o644) => { put(p, text, mode); planted.push({ check, path: p }); };
  const secret = (check: string, p: string, text: string) => { bad(check, p, text); unsealable.push({ check, path: p }); };
  const sshKey = (p: string, comment: string) => {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', join(root, p)]);
  };

  // The skeleton every Debian tree has; empty dirs and empty logs are innocent.
  for (const d of ['tmp', 'var/tmp', 'var/log/private', 'var/lib/apt/lists/partial', 'var/cache/apt/archives/partial', 'var/lib/dbus', 'home/bob', 'usr/sbin', 'usr/local/bin', 'var/log/journal']) dir(d);
  put('/etc/passwd', 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n');
  put('/etc/shadow', 'root:*:19000:0:99999:7:::\n', 0o640);
  put('/etc/hosts', '127.0.0.1 localhost\n');
  put('/etc/ssh/sshd_config', 'PermitRootLogin prohibit-password\n');
  put('/etc/apt/sources.list', 'deb http://deb.debian.org/debian bookworm main\n');
  put('/var/log/wtmp', '');
  put('/var/log/btmp', '');
  link('/var/log/README', '../../usr/share/doc/systemd/README.logs');
  put('/var/lib/apt/lists/lock', '');
  put('/var/cache/apt/archives/lock', '');
  put('/usr/sbin/sshd', '#!/bin/sh\n', 0o755);
  put('/usr/sbin/make-ssl-cert', '#!/bin/sh\n', 0o755);
  // A test key exactly as its Debian package ships it (dpkg's md5sums say so) is the distribution's, not the build's.
  put('/usr/lib/python3/dist-packages/tests/key.pem', pem('PRIVATE KEY', 99));
  put('/var/lib/dpkg/info/python3-tests.md5sums', `${createHash('md5').update(pem('PRIVATE KEY', 99)).digest('hex')}  usr/lib/python3/dist-packages/tests/key.pem\n`);

  // ssh-hostkeys (sshd is installed, the first-boot unit is not)
  sshKey('/etc/ssh/ssh_host_ed25519_key', 'root@build');
  planted.push({ check: 'ssh-hostkeys', path: '/etc/ssh/ssh_host_ed25519_key' }, { check: 'ssh-hostkeys', path: '/etc/ssh/ssh_host_ed25519_key.pub' });
  planted.push({ check: 'ssh-hostkeys', path: '/etc/systemd/system/kiln-firstboot-ssh-keys.service' });
  // ssh-userdir; authorized_keys, *.pub and config are innocent
  sshKey('/root/.ssh/id_ed25519', 'root@build');
  planted.push({ check: 'ssh-userdir', path: '/root/.ssh/id_ed25519' });
  put('/root/.ssh/authorized_keys', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0bXkz8VZ7 admin@example\n', 0o600);
  bad('ssh-userdir', '/root/.ssh/known_hosts', 'github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n');
  bad('ssh-userdir', '/home/alice/.ssh/id_rsa', pem('RSA PRIVATE KEY', 1), 0o600);
  bad('ssh-userdir', '/home/alice/.ssh/known_hosts', '|1|abc= ecdsa-sha2-nistp256 AAAA\n');
  put('/home/alice/.ssh/config', 'Host *\n  IdentityFile ~/.ssh/id_rsa\n');
  // ssl-snakeoil (ssl-cert installed, no first-boot unit); the certificate is public
  bad('ssl-snakeoil', '/etc/ssl/private/ssl-cert-snakeoil.key', pem('PRIVATE KEY', 2), 0o640);
  planted.push({ check: 'ssl-snakeoil', path: '/etc/systemd/system/kiln-firstboot-ssl-snakeoil.service' });
  put('/etc/ssl/certs/ssl-cert-snakeoil.pem', pem('CERTIFICATE', 3));
  put('/etc/ssl/certs/ca-certificates.crt', pem('CERTIFICATE', 4) + pem('CERTIFICATE', 5));
  // machine-id
  bad('machine-id', '/etc/machine-id', '4c4c4544004a4b1080335ac04f4d3532\n', 0o444);
  bad('machine-id', '/var/lib/dbus/machine-id', '4c4c4544004a4b1080335ac04f4d3532\n');
  // random-seed
  bad('random-seed', '/var/lib/systemd/random-seed', 'x'.repeat(512), 0o600);
  bad('random-seed', '/var/lib/urandom/random-seed', 'y'.repeat(512), 0o600);
  bad('random-seed', '/var/lib/systemd/credential.secret', 'z'.repeat(32), 0o400);
  // net-hwaddr, every flavour; the match-by-name configs are innocent
  bad('net-hwaddr', '/etc/network/interfaces', 'auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n  hwaddress ether 52:54:00:12:34:56\n');
  bad('net-hwaddr', '/etc/network/interfaces.d/eth1', 'iface eth1 inet dhcp\n    hwaddress 52:54:00:12:34:57\n');
  bad('net-hwaddr', '/etc/sysconfig/network-scripts/ifcfg-eth0', 'DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=dhcp\n');
  bad('net-hwaddr', '/etc/NetworkManager/system-connections/Wired.nmconnection', '[connection]\nid=Wired\ntype=ethernet\n[ethernet]\nmac-address=52:54:00:12:34:56\n[ipv4]\nmethod=auto\n', 0o600);
  bad('net-hwaddr', '/etc/netplan/50-cloud-init.yaml', 'network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n      match:\n        macaddress: "52:54:00:12:34:56"\n      set-name: eth0\n');
  bad('net-hwaddr', '/etc/systemd/network/10-eth0.network', '[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nDHCP=yes\n');
  bad('net-hwaddr', '/etc/systemd/network/10-eth0.link', '[Match]\nPermanentMACAddress=52:54:00:12:34:56\n\n[Link]\nName=lan0\n');
  bad('net-hwaddr', '/etc/udev/rules.d/70-persistent-net.rules', '# generated\nSUBSYSTEM=="net", ACTION=="add", ATTR{address}=="52:54:00:12:34:56", NAME="eth0"\n');
  put('/etc/systemd/network/20-dhcp.network', '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n');
  put('/etc/netplan/01-netcfg.yaml', 'network:\n  version: 2\n  ethernets:\n    all:\n      match:\n        name: "en*"\n      dhcp4: true\n');
  put('/etc/udev/rules.d/99-local.rules', 'SUBSYSTEM=="block", ATTR{queue/scheduler}="none"\n');
  // dhcp-leases
  bad('dhcp-leases', '/var/lib/dhcp/dhclient.eth0.leases', 'lease {\n  interface "eth0";\n  fixed-address 10.0.2.15;\n}\n');
  bad('dhcp-leases', '/var/lib/NetworkManager/internal-6a1c-eth0.lease', 'ADDRESS=10.0.2.15\n');
  bad('dhcp-leases', '/var/lib/dhcpcd/eth0.lease', 'lease\n');
  // cloud-init state (and its log, which is the logs operation's)
  put('/var/lib/cloud/instances/iid-build/user-data.txt', '#cloud-config\n');
  link('/var/lib/cloud/instance', '/var/lib/cloud/instances/iid-build');
  put('/var/lib/cloud/seed/nocloud/meta-data', 'instance-id: iid-build\n');
  put('/var/lib/cloud/data/instance-id', 'iid-build\n');
  for (const n of ['data', 'instance', 'instances', 'seed']) planted.push({ check: 'cloud-init', path: `/var/lib/cloud/${n}` });
  put('/etc/cloud/cloud.cfg.d/90-kiln.cfg', 'datasource_list: [ NoCloud, None ]\n');
  // waagent (its certificate file holds a private key: the operation names it first)
  bad('waagent', '/var/lib/waagent/ovf-env.xml', '<Environment><UserPassword>hunter2</UserPassword></Environment>\n');
  bad('waagent', '/var/lib/waagent/Certificates.pem', pem('PRIVATE KEY', 6));
  // provisioner-artifacts
  put('/root/.ansible/tmp/ansible-tmp-1700000000.1-42/AnsiballZ_apt.py', 'print(1)\n');
  planted.push({ check: 'provisioner-artifacts', path: '/root/.ansible' });
  put('/home/alice/.ansible/galaxy_cache/api.json', '{}\n');
  planted.push({ check: 'provisioner-artifacts', path: '/home/alice/.ansible' });
  dir('/root/~jdoe');
  planted.push({ check: 'provisioner-artifacts', path: '/root/~jdoe' });
  dir('/home/alice/~me/.ansible');
  planted.push({ check: 'provisioner-artifacts', path: '/home/alice/~me' });
  bad('provisioner-artifacts', '/usr/sbin/policy-rc.d', '#!/bin/sh\nexit 101\n', 0o755);
  put('/var/lib/kiln-staging/playbook.yml', '- hosts: all\n');
  planted.push({ check: 'provisioner-artifacts', path: '/var/lib/kiln-staging' });
  put('/tmp/.kiln-ansible-1/vars.json', '{}\n');
  planted.push({ check: 'provisioner-artifacts', path: '/tmp/.kiln-ansible-1' });
  dir('/var/tmp/ansible-tmp-1700000001.2-7');
  planted.push({ check: 'provisioner-artifacts', path: '/var/tmp/ansible-tmp-1700000001.2-7' });
  bad('provisioner-artifacts', '/srv/deploy/site.retry', 'localhost\n');
  // credential-files (the AWS credentials file also holds a key: the operation names it first)
  bad('credential-files', '/root/.netrc', 'machine example.com login deploy password s3cret\n', 0o600);
  bad('credential-files', '/home/alice/.git-credentials', 'https://alice:ghp_abcdefghijklmnop@github.com\n', 0o600);
  bad('credential-files', '/home/alice/.pgpass', 'db:5432:*:app:s3cret\n', 0o600);
  bad('credential-files', '/root/.aws/credentials', `[default]\naws_access_key_id = ${AWS_ID}\naws_secret_access_key = ${AWS_SECRET}\n`, 0o600);
  bad('credential-files', '/home/alice/.docker/config.json', JSON.stringify({ auths: { 'registry.example.com': { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
  put('/root/.aws/config', '[default]\nregion = eu-west-1\n');
  put('/home/bob/.docker/config.json', JSON.stringify({ credsStore: 'pass', auths: {} }));
  // shell-history
  for (const p of ['/root/.bash_history', '/root/.python_history', '/root/.lesshst', '/root/.viminfo', '/home/alice/.zsh_history', '/home/alice/.mysql_history', '/home/alice/.psql_history']) bad('shell-history', p, 'ls\n');
  put('/root/.bashrc', 'export HISTSIZE=1000\n');
  // backup-files; a name ending in '-' without its original is innocent
  bad('backup-files', '/etc/passwd-', 'root:x:0:0:root:/root:/bin/bash\n');
  bad('backup-files', '/etc/shadow-', 'root:$6$salt$hash:19000:0:99999:7:::\n', 0o640);
  bad('backup-files', '/etc/ssh/sshd_config.ucf-old', 'PermitRootLogin yes\n');
  bad('backup-files', '/etc/apt/sources.list.dpkg-old', 'deb http://old bookworm main\n');
  bad('backup-files', '/etc/apt/sources.list.dpkg-dist', 'deb http://deb.debian.org/debian bookworm main\n');
  bad('backup-files', '/etc/hosts~', '127.0.0.1 localhost\n');
  // systemd-resolved's postinst keeps the resolv.conf it replaced: the build sandbox's resolver.
  bad('backup-files', '/etc/.resolv.conf.systemd-resolved.bak', 'nameserver 10.255.255.53\n');
  put('/etc/opt-', 'innocent\n');
  // package-cache
  bad('package-cache', '/var/cache/apt/pkgcache.bin', 'bin');
  bad('package-cache', '/var/cache/apt/srcpkgcache.bin', 'bin');
  bad('package-cache', '/var/cache/apt/archives/curl_7.88.1-10_amd64.deb', '!<arch>\n');
  bad('package-cache', '/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease', 'Origin: Debian\n');
  // logs: the journal's per-machine directory, live logs, rotated logs
  put('/var/log/journal/4c4c4544004a4b1080335ac04f4d3532/system.journal', 'LPKSHHRH');
  planted.push({ check: 'logs', path: '/var/log/journal/4c4c4544004a4b1080335ac04f4d3532' });
  bad('logs', '/var/log/syslog', 'Nov 24 build: started\n');
  bad('logs', '/var/log/apt/history.log', 'Start-Date: 2024-01-01\n');
  bad('logs', '/var/log/dpkg.log.1', 'old\n');
  bad('logs', '/var/log/apt/term.log.2.gz', 'gz');
  bad('logs', '/var/log/cloud-init.log', 'cloud-init ran\n');
  bad('logs', '/var/log/waagent.log', 'provisioned\n');
  // tmp-files
  bad('tmp-files', '/tmp/build.sh', 'echo hi\n');
  bad('tmp-files', '/var/tmp/cache.bin', 'cache');
  // Secrets no seal operation can know about: the audit's scanners, and the build must fail on them.
  secret('aws-credentials', '/etc/myapp/config.ini', `[aws]\nkey_id = ${AWS_ID}\n`);
  secret('aws-credentials', '/opt/tool/env', `export AWS_SECRET_ACCESS_KEY=${AWS_SECRET}\n`);
  secret('azure-credentials', '/etc/myapp/storage.conf', `conn=DefaultEndpointsProtocol=https;AccountName=x;AccountKey=${Buffer.alloc(64, 7).toString('base64')};EndpointSuffix=core.windows.net\n`);
  secret('azure-credentials', '/srv/app/azure.env', 'AZURE_CLIENT_ID=00000000-0000-0000-0000-000000000000\nAZURE_CLIENT_SECRET=Abc8Q~xYz0123456789abcdefghijklmnopqrstu\n');
  secret('gcp-service-account', '/opt/app/sa.json', JSON.stringify({ type: 'service_account', project_id: 'p', private_key_id: 'abc', private_key: pem('PRIVATE KEY', 7), client_email: 'sa@p.iam.gserviceaccount.com' }, null, 2));
  secret('private-key', '/etc/myapp/tls.key', pem('EC PRIVATE KEY', 8));
  secret('private-key', '/srv/backup/signing.asc', pem('PGP PRIVATE KEY BLOCK', 9).replace('\n', '\nVersion: GnuPG v2\n\n'));
  secret('private-key', '/usr/local/share/deploy/id_deploy', pem('OPENSSH PRIVATE KEY', 10));
  // Innocent look-alikes for the scanners
  put('/usr/local/bin/checkkey.sh', '#!/bin/sh\ngrep -q -- "-----BEGIN RSA PRIVATE KEY-----" "$1" && echo "found -----END RSA PRIVATE KEY-----"\n', 0o755);
  put('/etc/myapp/README', 'Set aws_access_key_id = AKIAIOSFODNN7EXAMPLE and aws_secret_access_key = <your secret> in ~/.aws/credentials.\nAKIA keys are 20 characters: AKIA1234.\n');
  put('/opt/app/client.json', JSON.stringify({ type: 'service_account', client_email: 'sa@p.iam.gserviceaccount.com' }));
  put('/etc/myapp/azure.conf', 'AccountName=x;AccountKey=${ACCOUNT_KEY}\nAZURE_CLIENT_SECRET=$SECRET_FROM_VAULT\n');
  put('/etc/ssh/ssh_known_hosts', 'git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0\n');
  put('/srv/app/public.pem', pem('PUBLIC KEY', 11));
  return { planted, unsealable };
}

/** A GPT disk made from files: a BIOS boot partition, then the tree as ext4 in a Linux root partition. */
export function buildDisk(tree: string, disk: string): void {
  const part = `${disk}.root`;
  const rootSectors = 32 * 2048;
  execFileSync('truncate', ['-s', `${(4096 + rootSectors + 2048) * 512}`, disk]);
  execFileSync('sfdisk', ['-q', disk], {
    input: 'label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios\n'
      + `start=4096, size=${rootSectors}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n`,
  });
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', tree, part, `${rootSectors / 2}k`]);
  execFileSync('dd', [`if=${part}`, `of=${disk}`, 'bs=512', 'seek=4096', 'conv=notrunc,sparse', 'status=none']);
  rmSync(part);
}
