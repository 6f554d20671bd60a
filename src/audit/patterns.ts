/**
 * Kiln's own secret checks, for what the maintained rule set (rules.ts) lacks or gets wrong for
 * images: AWS key ids, Azure and GCP credentials, private keys in every PEM flavour (PGP armour,
 * ENCRYPTED, JSON-escaped) and base64-encoded PEM (kubeconfig client-key-data). Pure: text in,
 * what was found out. Tuned against a stock Debian tree so a sealed image audits clean: a private
 * key needs its END line and a body (a script that merely names the BEGIN line is not a key);
 * AWS's documented example keys (…EXAMPLE) are not keys.
 */
export interface SecretMatch {
  /** Scanner name, shown as the finding's check. */
  check: string;
  /** What was found, the secret masked. */
  message: string;
  /** Where in the text the secret is, and the secret itself (for the fingerprint; never printed). */
  start: number;
  end: number;
  secret: string;
}

/** A secret as it may be printed: a few leading characters and its length. */
export function mask(secret: string): string {
  const shown = secret.length >= 16 ? secret.slice(0, Math.min(4, Math.floor(secret.length / 8))) : '';
  return `${shown}…(${secret.length} chars)`;
}

const BEGIN = /-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----/g;

/** Longest span between a BEGIN line and its END line that counts as one key. */
export const MAX_KEY_SPAN = 256 * 1024;

/** Every real private key block in text: its kind ("OPENSSH", "RSA", "PGP", "" for PKCS#8) and span. */
export function privateKeys(text: string): { kind: string; start: number; end: number }[] {
  const out: { kind: string; start: number; end: number }[] = [];
  BEGIN.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = BEGIN.exec(text))) {
    const kind = m[1].trim();
    const end = `-----END ${m[1]}PRIVATE KEY${m[2] ?? ''}-----`;
    const stop = text.indexOf(end, m.index);
    if (stop < 0 || stop - m.index > MAX_KEY_SPAN) continue;
    // The body, with JSON-escaped newlines (service account files) and armour headers gone.
    const body = text.slice(m.index + m[0].length, stop).replace(/\\n/g, '\n').split('\n').filter((l) => !l.includes(':')).join('');
    if ((body.match(/[A-Za-z0-9+/=]/g)?.length ?? 0) >= 40) {
      out.push({ kind, start: m.index, end: stop + end.length });
      BEGIN.lastIndex = stop + end.length;
    }
  }
  return out;
}

/** The kind of the first real private key block in text, or undefined. */
export function privateKeyKind(text: string): string | undefined {
  return privateKeys(text)[0]?.kind;
}

const keyName = (kind: string) => (kind === 'PGP' ? 'OpenPGP private key block' : kind === '' ? 'private key (PKCS#8)' : `${kind} private key`);

const AWS_KEY_ID = /(?<![A-Za-z0-9+/])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9+/])/g;
const AWS_SECRET = /aws_secret_access_key\s*[=:]\s*["']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])/gi;
const AZURE_ACCOUNT_KEY = /\b(?:AccountKey|SharedAccessKey)=([A-Za-z0-9+/]{40,}={0,2})/g;
const AZURE_CLIENT_SECRET_VALUE = /(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])/g;
const AZURE_CLIENT_SECRET_KEY = /(?:AZURE_CLIENT_SECRET|"clientSecret")\s*[=:]\s*["']?([^\s"'$<{]{16,})/g;
const GCP_TYPE = /"type"\s*:\s*"service_account"/;
const GCP_KEY = /"private_key"\s*:\s*"(-----BEGIN[^"]*)"/g;
/** base64 of "-----BEGIN" as it starts an encoded PEM (kubeconfig client-key-data, Kubernetes secrets, env files). */
const B64_PEM = /(?<![A-Za-z0-9+/])LS0tLS1CRUdJT[A-Za-z0-9+/]{60,}={0,2}/g;

/** Each match of a global pattern: its capture group 1 (or the whole match) as the secret. */
function* each(re: RegExp, text: string): Generator<{ start: number; end: number; secret: string }> {
  for (const m of text.matchAll(re)) {
    const secret = m[1] ?? m[0];
    const start = (m.index ?? 0) + (m[1] === undefined ? 0 : m[0].indexOf(m[1]));
    yield { start, end: start + secret.length, secret };
  }
}

type Hit = { message: string; start: number; end: number; secret: string };

/** Kiln's scanners in priority order: where two findings overlap, the earlier scanner names it. */
export const contentScanners: { name: string; hints: string[]; window: number | 'whole'; scan(text: string): Hit[] }[] = [
  {
    name: 'gcp-service-account',
    hints: ['service_account'],
    window: 'whole',
    scan: (t) => (GCP_TYPE.test(t) ? [...each(GCP_KEY, t)].map((h) => ({ ...h, message: 'GCP service account key (JSON with a private_key)' })) : []),
  },
  {
    name: 'aws-credentials',
    hints: ['AKIA', 'ASIA', 'ws_secret_access_key', 'WS_SECRET_ACCESS_KEY'],
    window: 4096,
    scan: (t) => [
      ...[...each(AWS_KEY_ID, t)].filter((h) => !h.secret.endsWith('EXAMPLE')).map((h) => ({ ...h, message: `AWS access key id ${mask(h.secret)}` })),
      ...[...each(AWS_SECRET, t)].map((h) => ({ ...h, message: `AWS secret access key ${mask(h.secret)}` })),
    ],
  },
  {
    name: 'azure-credentials',
    hints: ['AccountKey=', 'SharedAccessKey=', 'Q~', 'AZURE_CLIENT_SECRET', 'clientSecret'],
    window: 4096,
    scan: (t) => [
      ...[...each(AZURE_ACCOUNT_KEY, t)].map((h) => ({ ...h, message: `Azure storage/service bus account key (connection string) ${mask(h.secret)}` })),
      ...[...each(AZURE_CLIENT_SECRET_VALUE, t), ...each(AZURE_CLIENT_SECRET_KEY, t)].map((h) => ({ ...h, message: `Azure AD client secret ${mask(h.secret)}` })),
    ],
  },
  {
    name: 'private-key',
    hints: ['PRIVATE KEY', 'LS0tLS1CRUdJT'],
    window: MAX_KEY_SPAN + 4096,
    scan: (t) => [
      ...privateKeys(t).map((k) => ({ start: k.start, end: k.end, secret: t.slice(k.start, k.end), message: keyName(k.kind) })),
      ...[...each(B64_PEM, t)].flatMap((h) => {
        const kind = privateKeyKind(Buffer.from(h.secret, 'base64').toString('latin1'));
        return kind === undefined ? [] : [{ ...h, message: `base64-encoded ${keyName(kind)} (e.g. kubeconfig client-key-data)` }];
      }),
    ],
  },
];

/** Every secret Kiln's own scanners find in text, in priority order. */
export function scanKiln(text: string): SecretMatch[] {
  return contentScanners.filter((s) => s.hints.some((h) => text.includes(h))).flatMap((s) => s.scan(text).map((h) => ({ check: s.name, ...h })));
}

/** Matches that do not overlap an earlier one: one secret, one finding. */
export function distinct(matches: readonly SecretMatch[]): SecretMatch[] {
  const kept: SecretMatch[] = [];
  for (const m of matches) if (!kept.some((k) => m.start < k.end && k.start < m.end)) kept.push(m);
  return kept;
}

/** First secret Kiln's own scanners find in text, in priority order. */
export function scanText(text: string): SecretMatch | undefined {
  return scanKiln(text)[0];
}

