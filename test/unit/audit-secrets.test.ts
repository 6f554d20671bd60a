import { strict as assert } from 'node:assert';
import { generateKeyPairSync, randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { auditTree, pycSource } from '../../src/audit/tree.js';
import { CHUNK, findSecrets } from '../../src/audit/secrets.js';
import type { Finding } from '../../src/audit/finding.js';

const work = mkdtempSync(join(tmpdir(), 'kiln-audit-secrets-'));
after(() => rmSync(work, { recursive: true, force: true }));
let n = 0;

/** An image-like root (it has /etc) with the given files. */
function tree(files: Record<string, string | Buffer>): string {
  const root = join(work, `t${n++}`);
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/hostname'), 'localhost\n');
  writeFileSync(join(root, 'etc/machine-id'), ''); // as a sealed image has it
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), data);
  }
  return root;
}

const B62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const rand = (len: number, alphabet = B62) => Array.from({ length: len }, () => alphabet[randomInt(alphabet.length)]).join('');
const pemKey = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const rsaKey = () => generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();

/** A 1Password service account token: ops_ + base64 of a JSON object whose length makes the base64 end in fQ==. */
function onePassword(): string {
  let json = JSON.stringify({ email: `${rand(12).toLowerCase()}@1passwordserviceaccounts.lcl`, secretKey: rand(40), srpX: randomBytes(32).toString('hex'), signInAddress: 'my.1password.com' });
  while (json.length % 3 !== 1) json = json.replace('"email"', ' "email"');
  return Buffer.from(json).toString('base64');
}

/** One generated secret of each family the scan covers: where it is planted, and the check that must find it. */
function family(): { path: string; text: string; check: RegExp }[] {
  const awsId = `AKIA${rand(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}`;
  return [
    { path: '/srv/app/github.env', text: `GITHUB_TOKEN=ghp_${rand(36)}\n`, check: /secretlint-github/ },
    { path: '/srv/app/github-fine.env', text: `TOKEN=github_pat_${rand(82)}\n`, check: /secretlint-github/ },
    { path: '/srv/app/gitlab.env', text: `GL=glpat-${rand(20)}\n`, check: /secretlint-gitlab/ },
    { path: '/srv/app/slack.env', text: `SLACK=xoxb-${randomInt(1e9, 1e10)}-${randomInt(1e9, 1e10)}-${rand(24)}\n`, check: /secretlint-slack/ },
    { path: '/srv/app/webhook.json', text: `{"url": "https://hooks.slack.com/services/T${rand(8)}/B${rand(8)}/${rand(24)}"}\n`, check: /secretlint-slack/ },
    { path: '/home/dev/.npmrc', text: `//registry.npmjs.org/:_authToken=npm_${rand(36)}\n`, check: /secretlint-npm/ },
    { path: '/etc/vault/token', text: `VAULT_TOKEN=hvs.${rand(95)}\n`, check: /secretlint-hashicorp-vault/ },
    { path: '/etc/app/db.conf', text: `DATABASE_URL=postgresql://app:${rand(20)}@db.internal:5432/app\n`, check: /secretlint-(database-connection-string|basicauth)/ },
    { path: '/etc/app/mongo.conf', text: `uri: mongodb://root:${rand(20)}@mongo.internal/admin\n`, check: /secretlint-database-connection-string/ },
    { path: '/etc/app/fetch.conf', text: `url = https://deploy:${rand(20)}@files.example.org/x\n`, check: /secretlint-basicauth/ },
    { path: '/etc/app/aws.ini', text: `key_id = ${awsId}\n`, check: /aws-credentials/ },
    { path: '/etc/app/aws.env', text: `AWS_SECRET_ACCESS_KEY=${rand(40)}\n`, check: /aws-credentials/ },
    { path: '/etc/app/azure.conf', text: `AccountName=x;AccountKey=${randomBytes(64).toString('base64')}\n`, check: /azure-credentials/ },
    { path: '/opt/app/sa.json', text: JSON.stringify({ type: 'service_account', private_key_id: rand(40), private_key: pemKey() }), check: /gcp-service-account/ },
    { path: '/etc/app/tls.key', text: pemKey(), check: /private-key/ },
    { path: '/etc/app/rsa.key', text: rsaKey(), check: /private-key/ },
    // The rule's pattern ends in \b: a key whose last character is "-" (1 run in 64) matched nothing and
    // failed the test at random. Real keys end in a letter or digit; so does this one.
    { path: '/srv/ai/openai.env', text: `OPENAI_API_KEY=sk-proj-${rand(74, B62 + '_-')}T3BlbkFJ${rand(73, B62 + '_-')}${rand(1)}\n`, check: /secretlint-openai/ },
    { path: '/srv/ai/anthropic.env', text: `ANTHROPIC_API_KEY=sk-ant-api03-${rand(93, B62 + '_-')}AA\n`, check: /secretlint-anthropic/ },
    { path: '/srv/ai/groq.env', text: `GROQ_API_KEY=gsk_${rand(52)}\n`, check: /secretlint-groq/ },
    { path: '/srv/ai/hf.env', text: `HF_TOKEN=hf_${rand(34, B62.slice(0, 52))}\n`, check: /secretlint-huggingface/ },
    { path: '/srv/app/linear.env', text: `LINEAR=lin_api_${rand(40)}\n`, check: /secretlint-linear/ },
    { path: '/srv/app/notion.env', text: `NOTION=ntn_${rand(11, '0123456789')}${rand(35)}\n`, check: /secretlint-notion/ },
    { path: '/srv/app/sendgrid.env', text: `SENDGRID=SG.${rand(22)}.${rand(43)}\n`, check: /secretlint-sendgrid/ },
    { path: '/srv/app/shopify.env', text: `SHOPIFY=shpat_${rand(32)}\n`, check: /secretlint-shopify/ },
    { path: '/srv/app/grafana.env', text: `GRAFANA=glsa_${rand(32)}_${randomBytes(4).toString('hex')}\n`, check: /secretlint-grafana/ },
    { path: '/srv/app/op.env', text: `OP_SERVICE_ACCOUNT_TOKEN=ops_${onePassword()}\n`, check: /secretlint-1password/ },
    { path: '/srv/app/vercel.env', text: `VERCEL=vcp_${rand(40)}\n`, check: /secretlint-vercel/ },
    { path: '/srv/app/databricks.env', text: `DATABRICKS=dapi${randomBytes(16).toString('hex')}\n`, check: /secretlint-databricks/ },
    { path: '/root/.docker/token', text: `DOCKER_PAT=dckr_pat_${rand(27)}\n`, check: /secretlint-docker/ },
    { path: '/srv/app/figma.env', text: `FIGMA=figd_${rand(40)}\n`, check: /secretlint-figma/ },
    { path: '/etc/app/kubeconfig.yaml', text: `users:\n- name: admin\n  user:\n    client-key-data: ${Buffer.from(pemKey()).toString('base64')}\n`, check: /private-key/ },
  ];
}

const found = (fs: Finding[], path: string) => fs.filter((f) => f.path === path);

test('a generated secret of each covered family is found in an image tree, and never printed', async () => {
  const fam = family();
  const findings = await auditTree(tree(Object.fromEntries(fam.map((f) => [f.path, f.text]))));
  for (const f of fam) {
    const hits = found(findings, f.path);
    assert.ok(hits.some((h) => f.check.test(h.check)), `${f.path}: expected ${f.check}, got ${JSON.stringify(hits)}`);
    for (const h of hits) {
      assert.match(h.fingerprint ?? '', /^[0-9a-f]{16}$/);
      const secret = f.text.match(/[A-Za-z0-9_+/=.-]{16,}/g) ?? [];
      for (const s of secret) assert.ok(!h.message.includes(s), `${f.path}: message shows the secret: ${h.message}`);
    }
  }
});

test('secrets are found past 8 MiB, across a chunk boundary, in binary files, in /usr and in seal.keep paths', async () => {
  const token = `ghp_${rand(36)}`;
  const big = Buffer.alloc(CHUNK + 1024 * 1024, 'x\n');
  const across = Buffer.alloc(CHUNK + 4096, 'y ');
  across.write(` ${token} `, CHUNK - 20, 'latin1');
  const binary = Buffer.concat([randomBytes(4096).fill(0, 0, 100), Buffer.from(`\0\0${token}\0\0`), Buffer.alloc(4096)]);
  const root = tree({
    '/var/lib/app/big.log': Buffer.concat([big, Buffer.from(`\ntoken=${token}\n`)]),
    '/var/lib/app/across.dat': across,
    '/opt/app/blob.bin': binary,
    '/usr/share/app/config': `token=${token}\n`,
    '/boot/grub/secret.cfg': `token=${token}\n`,
    '/etc/app/kept.env': `token=${token}\n`,
  });
  const findings = await auditTree(root, { keep: ['/etc/app/kept.env'] });
  for (const p of ['/var/lib/app/big.log', '/var/lib/app/across.dat', '/opt/app/blob.bin', '/usr/share/app/config', '/boot/grub/secret.cfg', '/etc/app/kept.env']) {
    assert.equal(found(findings, p).length, 1, `${p}: ${JSON.stringify(findings)}`);
  }
});

test('an accepted fingerprint suppresses exactly that finding', async () => {
  const root = tree({ '/srv/a.env': `A=ghp_${rand(36)}\nB=ghp_${rand(36)}\n`, '/srv/b.env': `A=ghp_${rand(36)}\n` });
  const all = await auditTree(root);
  assert.equal(all.length, 3);
  const accepted = all[0];
  const rest = await auditTree(root, { accept: [accepted.fingerprint ?? ''] });
  assert.deepEqual(rest.map((f) => f.fingerprint), all.slice(1).map((f) => f.fingerprint));
  assert.deepEqual(await auditTree(root), all, 'fingerprints are stable');
});

test('image-specific secret stores are reported as credential files', async () => {
  const paths = [
    '/root/.gnupg/private-keys-v1.d/0A1B2C3D4E5F60718293A4B5C6D7E8F901234567.key',
    '/home/alice/.gnupg/secring.gpg',
    '/etc/backup/secring.gpg',
    '/var/crash/_usr_bin_app.0.crash',
    '/var/lib/systemd/coredump/core.app.0.123.zst',
    '/var/spool/cron/crontabs/alice',
    '/var/spool/mail/alice',
    '/var/mail/root',
    '/etc/krb5.keytab',
    '/etc/app/http.keytab',
    '/etc/dropbear/dropbear_ed25519_host_key',
  ];
  const findings = await auditTree(tree(Object.fromEntries(paths.map((p) => [p, randomBytes(64)]))));
  for (const p of paths) assert.deepEqual(found(findings, p).map((f) => f.check), ['credential-files'], p);
  for (const f of findings) assert.ok(f.message.length > 10);
});

test('harmless look-alikes are not secrets', async () => {
  const root = tree({
    '/etc/app/README': 'aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = <your secret>\n',
    '/usr/local/bin/check.sh': '#!/bin/sh\ngrep -q -- "-----BEGIN RSA PRIVATE KEY-----" "$1" && echo "-----END RSA PRIVATE KEY-----"\n',
    '/etc/app/urls': 'see https://example.org/docs and postgresql://localhost/app and ${DATABASE_URL}\n',
    '/etc/app/pub.pem': generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  });
  assert.deepEqual(await auditTree(root), []);
  assert.deepEqual(findSecrets('nothing to see here', '/x'), []);
});

test('a packaged, unmodified file is the distribution\'s, and so is its byte-compiled cache; a changed one is reported', async () => {
  const example = rsaKey();
  const other = rsaKey();
  const source = `"""Example:\n${example}"""\n`;
  const md5 = (await import('node:crypto')).createHash('md5').update(source).digest('hex');
  const root = tree({
    '/var/lib/dpkg/info/cloud-init.md5sums': `${md5}  usr/lib/python3/dist-packages/cloudinit/cc_ssh.py\n`,
    '/usr/lib/python3/dist-packages/cloudinit/cc_ssh.py': source,
    '/usr/lib/python3/dist-packages/cloudinit/__pycache__/cc_ssh.cpython-311.pyc': Buffer.concat([Buffer.from([0xa7, 0x0d, 0x0d, 0x0a, 0, 0]), Buffer.from(example)]),
    '/usr/lib/python3/dist-packages/cloudinit/__pycache__/cc_ssh.cpython-311.opt-1.pyc': Buffer.concat([Buffer.from([0xa7, 0x0d, 0, 0]), Buffer.from(example), Buffer.from(other.replace('RSA PRIVATE', 'EC PRIVATE'))]),
    '/usr/lib/python3/dist-packages/other/__pycache__/m.cpython-311.pyc': Buffer.from(other),
  });
  const findings = await auditTree(root);
  assert.deepEqual(found(findings, '/usr/lib/python3/dist-packages/cloudinit/cc_ssh.py'), [], 'the packaged file as shipped');
  assert.deepEqual(found(findings, '/usr/lib/python3/dist-packages/cloudinit/__pycache__/cc_ssh.cpython-311.pyc'), [], 'its cache holds only its strings');
  assert.equal(found(findings, '/usr/lib/python3/dist-packages/cloudinit/__pycache__/cc_ssh.cpython-311.opt-1.pyc').length, 1, 'a key the source does not have is reported');
  assert.equal(found(findings, '/usr/lib/python3/dist-packages/other/__pycache__/m.cpython-311.pyc').length, 1, 'no packaged source: reported');
  assert.equal(pycSource('/usr/lib/x/__pycache__/m.cpython-311.opt-2.pyc'), '/usr/lib/x/m.py');
  assert.equal(pycSource('/usr/lib/x/m.pyc'), undefined);
});
