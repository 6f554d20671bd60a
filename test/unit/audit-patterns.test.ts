import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { privateKeyKind, scanText } from '../../src/audit/patterns.js';
import { KeepList } from '../../src/seal/keep.js';
import { pem } from './seal-fixture.js';

test('private keys are recognised by kind, and need a body and an END line', () => {
  assert.equal(privateKeyKind(pem('OPENSSH PRIVATE KEY', 1)), 'OPENSSH');
  assert.equal(privateKeyKind(pem('RSA PRIVATE KEY', 1)), 'RSA');
  assert.equal(privateKeyKind(pem('ENCRYPTED PRIVATE KEY', 1)), 'ENCRYPTED');
  assert.equal(privateKeyKind(`x\n${pem('PRIVATE KEY', 1)}`), '');
  assert.equal(privateKeyKind(pem('PGP PRIVATE KEY BLOCK', 1)), 'PGP');
  assert.equal(privateKeyKind(pem('CERTIFICATE', 1)), undefined);
  assert.equal(privateKeyKind(pem('PUBLIC KEY', 1)), undefined);
  assert.equal(privateKeyKind('grep "-----BEGIN RSA PRIVATE KEY-----" f; echo -----END RSA PRIVATE KEY-----'), undefined);
  assert.equal(privateKeyKind(pem('RSA PRIVATE KEY', 1).replace(/-----END.*/, '')), undefined, 'no END line');
  assert.equal(privateKeyKind(pem('RSA PRIVATE KEY', 1).replace('RSA PRIVATE KEY-----\n', 'RSA PRIVATE KEY-----\n').replace(/-----END RSA/, '-----END EC')), undefined, 'END must match BEGIN');
});

test('cloud secrets are found; documentation examples and placeholders are not', () => {
  const id = ['AKIA', 'ZZ3XK7V2M9PLR4TZ'].join('');
  assert.equal(scanText(`key=${id}\n`)?.check, 'aws-credentials');
  assert.equal(scanText(`key=${id.replace('AKIA', 'ASIA')}\n`)?.check, 'aws-credentials');
  assert.equal(scanText(`x${id}`), undefined, 'part of a longer token');
  assert.equal(scanText('aws_access_key_id = AKIAIOSFODNN7EXAMPLE'), undefined);
  assert.equal(scanText('aws_secret_access_key: "wJalrXUtnFEMIK7MDENGbPxRfiCYzq3x0Trk8Zb2"')?.check, 'aws-credentials');
  assert.equal(scanText('aws_secret_access_key = <your secret here>'), undefined);
  assert.equal(scanText(`DefaultEndpointsProtocol=https;AccountName=a;AccountKey=${'A'.repeat(86)}==`)?.check, 'azure-credentials');
  const sb = scanText('Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=r;SharedAccessKey=' + 'b'.repeat(43) + '=');
  assert.deepEqual([sb?.check, sb?.message], ['azure-credentials', 'Azure storage/service bus account key (connection string) bbbb…(44 chars)']);
  assert.equal(scanText('secret: Abc8Q~xYz0123456789abcdefghijklmnopqrstu')?.check, 'azure-credentials');
  assert.equal(scanText('{"clientId": "x", "clientSecret": "S3cr3tValueThatIsLongEnough"}')?.check, 'azure-credentials');
  assert.equal(scanText('AccountKey=${KEY}\nAZURE_CLIENT_SECRET=$FROM_VAULT'), undefined);
  const sa = JSON.stringify({ type: 'service_account', private_key: pem('PRIVATE KEY', 2) });
  assert.equal(scanText(sa)?.check, 'gcp-service-account', 'the specific finding wins over the generic private key');
  assert.equal(scanText(JSON.stringify({ type: 'service_account', client_email: 'a@b' })), undefined);
});

test('seal.keep: exact paths, directories, * within a component, ** across components', () => {
  const k = new KeepList(['/root/.ssh/authorized_keys', '/home/*/.ssh/authorized_keys', '/var/lib/cloud/seed', '/srv/**/keep.me']);
  assert.ok(k.has('/root/.ssh/authorized_keys'));
  assert.ok(k.has('/home/alice/.ssh/authorized_keys'));
  assert.ok(!k.has('/home/alice/.ssh/id_rsa'));
  assert.ok(!k.has('/home/alice/x/.ssh/authorized_keys'), '* stays within one component');
  assert.ok(k.has('/var/lib/cloud/seed') && k.has('/var/lib/cloud/seed/nocloud/user-data'));
  assert.ok(!k.has('/var/lib/cloud/instances'));
  assert.ok(k.has('/srv/a/b/keep.me') && k.has('/srv/keep.me'));
  assert.ok(k.below('/var/lib/cloud') && k.below('/root/.ssh') && k.below('/home') && k.below('/srv/x'));
  assert.ok(!k.below('/var/log'));
  assert.ok(!k.below('/tmp'));
  assert.throws(() => new KeepList(['etc/x']), /absolute/);
});
