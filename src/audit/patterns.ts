/**
 * What a secret looks like in a file. Pure: text in, what was found out. Tuned against a stock
 * Debian tree so a sealed image audits clean: a private key needs its END line and a body (a
 * script that merely names the BEGIN line is not a key); AWS's documented example keys
 * (…EXAMPLE) are not keys.
 */
export interface SecretMatch {
  /** Scanner name, shown as the finding's check. */
  check: string;
  message: string;
}

const BEGIN = /-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----/g;

/** The kind of the first real private key block in text ("OPENSSH", "RSA", "PGP", "" for PKCS#8), or undefined. */
export function privateKeyKind(text: string): string | undefined {
  BEGIN.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = BEGIN.exec(text))) {
    const kind = m[1].trim();
    const end = `-----END ${m[1]}PRIVATE KEY${m[2] ?? ''}-----`;
    const stop = text.indexOf(end, m.index);
    if (stop < 0 || stop - m.index > 256 * 1024) continue;
    // The body, with JSON-escaped newlines (service account files) and armour headers gone.
    const body = text.slice(m.index + m[0].length, stop).replace(/\\n/g, '\n').split('\n').filter((l) => !l.includes(':')).join('');
    if ((body.match(/[A-Za-z0-9+/=]/g)?.length ?? 0) >= 40) return kind;
  }
  return undefined;
}

const AWS_KEY_ID = /(?<![A-Za-z0-9+/])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9+/])/g;
const AWS_SECRET = /aws_secret_access_key\s*[=:]\s*["']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])/i;
const AZURE_ACCOUNT_KEY = /\b(AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{40,}={0,2}/;
const AZURE_CLIENT_SECRET_VALUE = /(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])/;
const AZURE_CLIENT_SECRET_KEY = /(AZURE_CLIENT_SECRET|"clientSecret")\s*[=:]\s*["']?[^\s"'$<{]{16,}/;
const GCP_TYPE = /"type"\s*:\s*"service_account"/;
const GCP_KEY = /"private_key"\s*:\s*"-----BEGIN/;

/** Every scanner in priority order: the first that matches names a file's finding. */
export const contentScanners: { name: string; scan(text: string): string | undefined }[] = [
  {
    name: 'gcp-service-account',
    scan: (t) => (GCP_TYPE.test(t) && GCP_KEY.test(t) ? 'GCP service account key (JSON with a private_key)' : undefined),
  },
  {
    name: 'aws-credentials',
    scan(t) {
      const ids = [...t.matchAll(AWS_KEY_ID)].map((m) => m[0]).filter((k) => !k.endsWith('EXAMPLE'));
      if (ids.length) return `AWS access key id ${ids[0].slice(0, 8)}…`;
      return AWS_SECRET.test(t) ? 'AWS secret access key' : undefined;
    },
  },
  {
    name: 'azure-credentials',
    scan(t) {
      if (AZURE_ACCOUNT_KEY.test(t)) return 'Azure storage/service bus account key (connection string)';
      if (AZURE_CLIENT_SECRET_VALUE.test(t) || AZURE_CLIENT_SECRET_KEY.test(t)) return 'Azure AD client secret';
      return undefined;
    },
  },
  {
    name: 'private-key',
    scan(t) {
      const kind = privateKeyKind(t);
      if (kind === undefined) return undefined;
      return kind === 'PGP' ? 'OpenPGP private key block' : kind === '' ? 'private key (PKCS#8)' : `${kind} private key`;
    },
  },
];

/** First secret found in a file's text, in scanner priority order. */
export function scanText(text: string): SecretMatch | undefined {
  for (const s of contentScanners) {
    const message = s.scan(text);
    if (message) return { check: s.name, message };
  }
  return undefined;
}

/** Quick filter: files without any of these bytes cannot match a scanner. */
export const HINTS = ['PRIVATE KEY', 'AKIA', 'ASIA', 'ws_secret_access_key', 'WS_SECRET_ACCESS_KEY', 'AccountKey=', 'SharedAccessKey=', 'Q~', 'AZURE_CLIENT_SECRET', 'clientSecret', 'service_account'];
