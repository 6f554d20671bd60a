/**
 * YAML syntax errors located at their cause. The `yaml` library reports an unclosed `[`, `{` or quote
 * where it gave up (often the start of the next key, or the end of the file), and a misindented key at
 * column 1 of its line. Here each error is moved to the token that opened the construct (found in the
 * library's own concrete syntax tree) or to the key itself, and says what was expected. Used for
 * kiln.yaml, kiln.lock and the trust file; pure, so unit-tested on each kind of mistake.
 */
import { LineCounter, Parser, parseDocument, type YAMLError } from 'yaml';

export interface YamlProblem { line: number; column: number; message: string }

interface Tok { type?: string; offset?: number; source?: string; end?: { source?: string }[]; items?: { key?: Tok | null; value?: Tok | null }[]; key?: Tok | null; value?: Tok | null }

/** Every token of the concrete syntax tree, depth first. */
function tokens(text: string): Tok[] {
  const out: Tok[] = [];
  const walk = (t: Tok | null | undefined) => {
    if (!t || typeof t !== 'object') return;
    if (t.type) out.push(t);
    walk(t.key);
    walk(t.value);
    for (const it of t.items ?? []) { walk(it.key); walk(it.value); }
  };
  for (const t of new Parser().parse(text)) walk(t as Tok);
  return out;
}

/** The flow collections ([...] and {...}) and quoted scalars that are not closed. */
function unclosed(text: string): { offset: number; what: string }[] {
  const out: { offset: number; what: string }[] = [];
  for (const t of tokens(text)) {
    if (t.offset === undefined) continue;
    if (t.type === 'flow-collection') {
      const open = text[t.offset];
      const close = open === '[' ? ']' : '}';
      if (!(t.end ?? []).some((e) => e.source === close)) out.push({ offset: t.offset, what: `"${open}" is not closed: expected "${close}" (a ${open === '[' ? 'flow sequence' : 'flow mapping'} opened here)` });
    } else if (t.type === 'double-quoted-scalar' || t.type === 'single-quoted-scalar') {
      const q = t.type === 'double-quoted-scalar' ? '"' : "'";
      const s = t.source ?? '';
      const closed = s.length >= 2 && s.endsWith(q) && (q === "'" || !/(^|[^\\])(\\\\)*\\"$/.test(s));
      if (!closed) out.push({ offset: t.offset, what: `the quoted string opened here with ${q} is not closed` });
    }
  }
  return out;
}

/** Each error of a parsed document, located at its cause. */
export function locateYamlErrors(text: string, errors: readonly YAMLError[], lc: LineCounter): YamlProblem[] {
  const open = errors.length ? unclosed(text) : [];
  const used = new Set<number>();
  const out: YamlProblem[] = [];
  for (const e of errors) {
    const first = e.message.split('\n')[0];
    const at = e.pos[0];
    // The last construct opened before the point the parser gave up, not yet reported.
    const cause = /Flow (sequence|map)|closing|Missing|Unexpected flow|end with/.test(first) ? open.filter((u) => u.offset <= at && !used.has(u.offset)).at(-1) : undefined;
    if (cause) {
      used.add(cause.offset);
      const p = lc.linePos(cause.offset);
      out.push({ line: p.line, column: p.col, message: `invalid YAML: ${cause.what}` });
      continue;
    }
    const p = lc.linePos(at);
    let column = p.col;
    // A misindented line: point at its first character, the key that is out of line.
    if (e.code === 'BAD_INDENT' || e.code === 'TAB_AS_INDENT') {
      const line = text.split('\n')[p.line - 1] ?? '';
      const m = /^[ \t]*/.exec(line);
      if (m && m[0].length < line.length) column = m[0].length + 1;
    }
    out.push({ line: p.line, column, message: `invalid YAML: ${first}` });
  }
  // One construct left open can make several errors: each cause once, in file order.
  return out.filter((x, i) => out.findIndex((y) => y.line === x.line && y.column === x.column) === i).sort((a, b) => a.line - b.line || a.column - b.column);
}

/** Parses text and returns its located syntax errors (none: valid YAML). */
export function yamlSyntaxProblems(text: string): YamlProblem[] {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  return locateYamlErrors(text, doc.errors, lc);
}
