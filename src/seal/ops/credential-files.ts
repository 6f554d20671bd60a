import { readText, remove } from '../tree.js';
import type { TreeEntry } from '../types.js';
import type { Finding } from '../../audit/finding.js';
import type { SealOperation } from '../types.js';

/**
 * Credential files tools write in a home directory (often the build's, copied in by accident).
 * An image should receive credentials at deploy time, never carry them.
 */
const BY_NAME = new Map([
  ['.netrc', 'netrc with login credentials'],
  ['_netrc', 'netrc with login credentials'],
  ['.git-credentials', 'git credential store'],
  ['.pgpass', 'PostgreSQL password file'],
]);
const BY_SUFFIX: [string, string][] = [
  ['/.aws/credentials', 'AWS credentials file'],
  ['/.config/gcloud/credentials.db', 'gcloud credential store'],
  ['/.config/gcloud/access_tokens.db', 'gcloud access tokens'],
  ['/.config/gcloud/application_default_credentials.json', 'gcloud application default credentials'],
  ['/.azure/accessTokens.json', 'Azure CLI access tokens'],
  ['/.azure/msal_token_cache.json', 'Azure CLI token cache'],
  ['/.azure/msal_token_cache.bin', 'Azure CLI token cache'],
  ['/.azure/service_principal_entries.json', 'Azure CLI service principal secrets'],
];

/**
 * Image-specific secrets and personal data, after virt-sysprep's operations (crash-data,
 * cron-spool, mail-spool, kerberos-hostkeys) plus GnuPG secret keys and dropbear host keys: by
 * where they live, anywhere in the tree.
 */
const BY_PATTERN: [RegExp, string][] = [
  [/\/private-keys-v1\.d\/[^/]+\.key$/, 'GnuPG private key (private-keys-v1.d)'],
  [/\/secring\.gpg$/, 'GnuPG secret keyring (secring.gpg)'],
  [/^\/var\/crash\//, 'crash dump (may hold memory of the build: keys, passwords)'],
  [/^\/var\/lib\/systemd\/coredump\//, 'systemd core dump (may hold memory of the build: keys, passwords)'],
  [/^\/var\/spool\/cron\/crontabs\//, "a user's crontab from the build (cron spool)"],
  [/^\/var\/spool\/mail\//, 'mail spool with mail from the build'],
  [/^\/var\/mail\//, 'mail spool with mail from the build'],
  [/\.keytab$/, 'Kerberos keytab (long-term keys of a principal)'],
  [/^\/etc\/dropbear\/dropbear_[a-z0-9]+_host_key$/, 'dropbear SSH host key: every VM from the image would share it'],
];

function dockerAuths(text: string): boolean {
  try {
    const auths = (JSON.parse(text) as { auths?: Record<string, { auth?: string; identitytoken?: string }> }).auths ?? {};
    return Object.values(auths).some((a) => Boolean(a?.auth || a?.identitytoken));
  } catch {
    return false;
  }
}

export function credentialFiles(root: string, entries: TreeEntry[]): { path: string; why: string }[] {
  const out: { path: string; why: string }[] = [];
  for (const e of entries) {
    if (e.kind !== 'file' || e.size === 0) continue;
    const name = e.path.slice(e.path.lastIndexOf('/') + 1);
    const why = BY_NAME.get(name) ?? BY_SUFFIX.find(([s]) => e.path.endsWith(s))?.[1] ?? BY_PATTERN.find(([re]) => re.test(e.path))?.[1];
    if (why) out.push({ path: e.path, why });
    else if (e.path.endsWith('/.docker/config.json') && dockerAuths(readText(root, e.path))) out.push({ path: e.path, why: 'Docker registry credentials (auths)' });
    else if (e.path.endsWith('/.kube/config') && /^\s*(token|client-key-data|password)\s*:\s*\S/m.test(readText(root, e.path))) out.push({ path: e.path, why: 'kubeconfig with credentials' });
  }
  return out;
}

export const credentialFilesOp: SealOperation = {
  name: 'credential-files',
  description: 'Remove credential files, GnuPG secret keys, keytabs, crash dumps, cron and mail spools',
  async apply(root, ctx) {
    return credentialFiles(root, await ctx.entries()).flatMap((c) => remove(root, c.path, ctx));
  },
  async check(root, ctx) {
    return credentialFiles(root, await ctx.entries()).map((c): Finding => ({ check: this.name, path: c.path, message: c.why }));
  },
};
