import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import * as openpgp from 'openpgp';
import { loadSigner, loadTrustedKey, openStore } from '../../src/store/index.js';
import { publishFake, scratch, sshKey } from './store-fixtures.js';

async function pgpKey(dir: string, name: string): Promise<{ priv: string; pub: string }> {
  const k = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name, email: `${name}@example` }], format: 'armored' });
  const priv = join(dir, `${name}.asc`);
  const pub = join(dir, `${name}.pub.asc`);
  writeFileSync(priv, k.privateKey);
  writeFileSync(pub, k.publicKey);
  return { priv, pub };
}

/** The key's SHA256 fingerprint, regex-escaped (it contains + and /). */
function fingerprint(pub: string): string {
  return execFileSync('ssh-keygen', ['-l', '-f', pub]).toString().split(' ')[1].replace(/[+/]/g, '\\$&');
}

test('an SSH ed25519 signature verifies and names the signer; a trust policy requires it', async () => {
  const dir = scratch('kiln-sign-');
  const alice = sshKey(dir, 'alice');
  const mallory = sshKey(dir, 'mallory');
  const open = async (keys: string[], requireSignature = true) =>
    openStore(join(dir, 'store'), dir, { trust: { requireSignature, keys: await Promise.all(keys.map(loadTrustedKey)) } });
  const unsignedStore = await open([], false);
  await publishFake(unsignedStore, dir, 'web', 'unsigned');
  const signer = await loadSigner(alice.priv);
  assert.match(signer.identity, new RegExp(`${fingerprint(alice.pub)} alice@example \\(ED25519\\)`));
  // Mallory first: the image's metadata is then signed by alice, the last publisher (see store-metadata.test for the other order).
  await publishFake(unsignedStore, dir, 'web', 'by-mallory', { signer: await loadSigner(mallory.priv) });
  await publishFake(unsignedStore, dir, 'web', 'signed', { signer });

  const store = await open([alice.pub]);
  const v = await store.verify('web@signed');
  assert.equal(v.ok, true);
  assert.equal(v.signatures.length, 1);
  assert.equal(v.signatures[0].trusted, true);
  assert.match(v.signatures[0].signer, new RegExp(`^${fingerprint(alice.pub)} alice@example`));
  assert.deepEqual((await store.resolve('web@signed', { format: 'raw' })).signers, [v.signatures[0].signer]);
  await assert.rejects(store.resolve('web@unsigned'), /unsigned, and the trust policy requires a signature/);
  await assert.rejects(store.resolve('web@by-mallory'), new RegExp(`not signed by a trusted key \\(signed by ${fingerprint(mallory.pub)}`));
  const listed = Object.fromEntries((await store.list('web')).map((l) => [l.version, l.status]));
  assert.deepEqual(listed, { 'by-mallory': 'untrusted', signed: 'ok', unsigned: 'unsigned' });
  // Without a policy the signature still verifies, untrusted.
  const v2 = await unsignedStore.verify('web@signed');
  assert.equal(v2.signatures[0].valid, true);
  assert.equal(v2.signatures[0].trusted, false);
});

test('a signature moved onto another release (or a tampered record) is refused', async () => {
  const dir = scratch('kiln-sign-');
  const alice = sshKey(dir, 'alice');
  const store = await openStore(join(dir, 'store'), dir, { trust: { requireSignature: true, keys: [await loadTrustedKey(alice.pub)] } });
  const signer = await loadSigner(alice.priv);
  await publishFake(store, dir, 'web', 'v1', { signer });
  const v1 = await store.release('web', 'v1');
  // Graft v1's referrers index onto an unsigned v2 by rewriting index.json: same signature, other digest.
  const plain = await openStore(join(dir, 'store'), dir);
  await publishFake(plain, dir, 'web', 'v2');
  const v2 = await store.release('web', 'v2');
  const idxPath = join(dir, 'store', 'index.json');
  const idx = JSON.parse(readFileSync(idxPath, 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
  const v1Ref = idx.manifests.find((m) => m.annotations['org.opencontainers.image.ref.name'] === `web:sha256-${v1!.digest.slice(7)}`)!;
  idx.manifests.push({ ...v1Ref, annotations: { 'org.opencontainers.image.ref.name': `web:sha256-${v2!.digest.slice(7)}` } });
  writeFileSync(idxPath, JSON.stringify(idx));
  // The referrer's subject is v1, so it is not attached to v2 at all: v2 stays unsigned.
  await assert.rejects(store.resolve('web@v2'), /unsigned/);
  assert.equal((await store.verify('web@v1')).ok, true);
});

test('an OpenPGP signature verifies against a trusted key and names the user id', async () => {
  const dir = scratch('kiln-sign-');
  const bob = await pgpKey(dir, 'bob');
  const eve = await pgpKey(dir, 'eve');
  const store = await openStore(join(dir, 'store'), dir, { trust: { requireSignature: true, keys: [await loadTrustedKey(bob.pub)] } });
  const signer = await loadSigner(bob.priv);
  assert.equal(signer.kind, 'pgp');
  await publishFake(store, dir, 'web', 'v2', { signer: await loadSigner(eve.priv) });
  await publishFake(store, dir, 'web', 'v1', { signer });
  const v = await store.verify('web@v1');
  assert.equal(v.ok, true);
  const fpr = (await openpgp.readKey({ armoredKey: readFileSync(bob.pub, 'utf8') })).getFingerprint().toUpperCase();
  assert.equal(v.signatures[0].signer, `${fpr} bob <bob@example>`);
  assert.equal(v.signatures[0].trusted, true);
  assert.equal((await store.resolve('web@v1', { format: 'qcow2' })).version, 'v1');
  const v2 = await store.verify('web@v2');
  assert.equal(v2.ok, false);
  assert.equal(v2.signatures[0].valid, true);
  assert.equal(v2.signatures[0].trusted, false);
  assert.match(v2.signatures[0].signer, /eve <eve@example>/);
  await assert.rejects(store.resolve('web@v2'), /not signed by a trusted key/);
});

test('a trust policy file in the store is ignored: whoever writes the store cannot add their key', async () => {
  const dir = scratch('kiln-sign-');
  const alice = sshKey(dir, 'alice');
  const mallory = sshKey(dir, 'mallory');
  const store = await openStore(join(dir, 'store'), dir);
  await publishFake(store, dir, 'web', 'v1', { signer: await loadSigner(mallory.priv) });
  // The store writer adds their own key to a policy file in the store.
  writeFileSync(join(dir, 'store', 'trust.json'), JSON.stringify({ require_signature: true, keys: [readFileSync(mallory.pub, 'utf8')] }));
  const guarded = await openStore(join(dir, 'store'), dir, { trust: { requireSignature: true, keys: [await loadTrustedKey(alice.pub)] } });
  assert.deepEqual(guarded.trust.keys.map((k) => k.source), [alice.pub]);
  await assert.rejects(guarded.resolve('web@v1'), /not signed by a trusted key/);
});
