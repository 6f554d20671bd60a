/**
 * The maintained part of the secret scan: secretlint's recommended rule preset
 * (@secretlint/secretlint-rule-preset-recommend), called directly through a small synchronous
 * adapter of its rule context, without secretlint's engine. Each rule runs only on text holding
 * one of its hints (a rule whose hints are unknown, e.g. one added by a preset upgrade, runs on
 * every text). Rule messages are rendered with every value masked: the audit never prints a
 * secret.
 */
import { rules as presetRules } from '@secretlint/secretlint-rule-preset-recommend';
import { mask, type SecretMatch } from './patterns.js';

/** The parts of secretlint's rule API the preset's scanners use. */
interface RuleSource { content: string; filePath: string; ext: string; contentType: 'text' }
type Translate = (id: string, props?: Record<string, unknown>) => string;
interface RuleContext {
  report(d: { message: string; range: readonly [number, number] }): void;
  ignore(d: unknown): void;
  createTranslator(messages: Record<string, { en: (props: Record<string, unknown>) => string }>): Translate;
}
interface RuleCreator {
  meta: { id: string };
  create(context: RuleContext, options: Record<string, unknown>): { file?(source: RuleSource): unknown };
}

/**
 * What text a rule can match must contain (case-sensitive bytes), and the longest match (its window: the rule reads only the text this
 * far either side of each hint; `whole` rules read the whole text). Derived from each rule's patterns.
 */
const RULE_HINTS: Record<string, { hints: string[]; window?: number | 'whole' }> = {
  aws: { hints: ['ecret', 'ECRET'] },
  gcp: { hints: ['private_key'], window: 'whole' },
  npm: { hints: ['npm_', '_authToken', 'x-oauth-basic'], window: 16 * 1024 },
  slack: { hints: ['xox', 'xapp-', 'hooks.slack.com'] },
  basicauth: { hints: ['://'] },
  openai: { hints: ['T3BlbkFJ'] },
  anthropic: { hints: ['sk-ant-'] },
  groq: { hints: ['gsk_'] },
  huggingface: { hints: ['hf_'] },
  linear: { hints: ['lin_api_'] },
  notion: { hints: ['ntn_'] },
  privatekey: { hints: ['PRIVATE KEY'], window: 12 * 1024 },
  sendgrid: { hints: ['SG.'] },
  shopify: { hints: ['shppa_', 'shpca_', 'shpat_', 'shpss_'] },
  github: { hints: ['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_', 'github_pat_'] },
  gitlab: { hints: ['glpat-'] },
  grafana: { hints: ['glc_', 'glsa_'] },
  '1password': { hints: ['ops_ey'] },
  // mongodb://, mysql://, postgres(ql)://, in any case: the URL's '://' is the hint.
  'database-connection-string': { hints: ['://'] },
  'hashicorp-vault': { hints: ['hvs.', 'hvb.', 'hvr.'] },
  vercel: { hints: ['vcp_', 'vci_', 'vca_', 'vcr_', 'vck_'] },
  databricks: { hints: ['dapi'] },
  docker: { hints: ['dckr_pat_'] },
  figma: { hints: ['figd_'] },
};
/**
 * Left out: filter-comments lets a file silence the scan with a `secretlint-disable` comment,
 * which an image's own files must not be able to do (accepting is kiln.yaml's audit.accept).
 */
const LEFT_OUT = new Set(['filter-comments']);

interface Report { message: string; range: readonly [number, number] }
let reports: Report[] = [];
const context: RuleContext = {
  report: (d) => { reports.push(d); },
  ignore: () => {},
  createTranslator: (messages) => (id, props = {}) => {
    const masked = Object.fromEntries(Object.entries(props).map(([k, v]) => [k, k === 'FILE_NAME' ? v : mask(String(v))]));
    return messages[id]?.en(masked) ?? id;
  },
};

/** Window either side of a hint for rules whose matches are short (tokens, URLs: at most about 1.5 KiB). */
const WINDOW = 4096;

export interface RuleScanner {
  /** Kiln's check name for the rule, e.g. secretlint-github. */
  name: string;
  hints: string[];
  window: number | 'whole';
  file(source: RuleSource): unknown;
}

export const ruleScanners: RuleScanner[] = (presetRules as unknown as RuleCreator[])
  .map((r) => ({ r, short: r.meta.id.replace(/^@secretlint\/secretlint-rule-/, '') }))
  .filter(({ short }) => !LEFT_OUT.has(short))
  .map(({ r, short }) => {
    const handler = r.create(context, {});
    const hints = RULE_HINTS[short];
    return {
      name: `secretlint-${short}`, hints: hints?.hints ?? [],
      window: hints ? hints.window ?? WINDOW : 'whole', file: (s: RuleSource) => handler.file?.(s),
    };
  });

/** What one rule finds in text (a window of a file's latin1 text); path is the image path. */
export function scanWithRule(s: RuleScanner, text: string, path: string): SecretMatch[] {
  const base = path.slice(path.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  // .p12 files go through an asynchronous check of the file itself; Kiln's scan is synchronous and
  // reads text, so they are not handed to the GCP rule (its JSON form is Kiln's own check too).
  const ext = dot > 0 && base.slice(dot) !== '.p12' ? base.slice(dot) : '';
  reports = [];
  try {
    const r = s.file({ content: text, filePath: path, ext, contentType: 'text' });
    if (r instanceof Promise) r.catch(() => {});
  } catch {
    return []; // a rule that throws on odd input (binary text) found nothing
  }
  return reports.map((d) => ({ check: s.name, message: d.message, start: d.range[0], end: d.range[1], secret: text.slice(d.range[0], d.range[1]) }));
}
