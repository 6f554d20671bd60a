/**
 * The report as one self-contained HTML file: styles, scripts (Chart.js for the step chart) and data
 * inline, system fonts, no request to anywhere (a Content-Security-Policy in the page forbids every
 * fetch, image, font and frame besides its own inline code). Handlebars escapes every value it
 * writes; the data the scripts read is JSON with `<` escaped, so a package or file name from an image
 * cannot close a tag. Light and dark (prefers-color-scheme), and readable on a phone (tables scroll
 * sideways inside their card, the page does not).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import Handlebars from 'handlebars';
import { humanBytes } from '../log.js';
import type { ReportRelease, StoreIndex } from './data.js';

const require = createRequire(import.meta.url);
let chartJs: string | undefined;
/** Chart.js's UMD build, inlined (it has no `</script` in it; checked). */
function chartScript(): string {
  if (chartJs === undefined) {
    // The package exports no path to its UMD build: it sits beside the CommonJS entry (dist/).
    const src = readFileSync(join(dirname(require.resolve('chart.js')), 'chart.umd.min.js'), 'utf8');
    if (/<\/script/i.test(src)) throw new Error('chart.js contains </script: cannot inline it');
    chartJs = src;
  }
  return chartJs;
}

/** JSON for a <script type="application/json"> block: nothing in it can end the element. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

const hb = Handlebars.create();
hb.registerHelper('bytes', (n: number) => humanBytes(n));
hb.registerHelper('short', (s: string, n: number) => (typeof s === 'string' ? (s.length > n ? `${s.slice(0, n)}…` : s) : ''));
hb.registerHelper('eq', (a: unknown, b: unknown) => a === b);
hb.registerHelper('json', (v: unknown) => new hb.SafeString(scriptJson(v)));
hb.registerHelper('statusClass', (s: string) => (s === 'ok' ? 'good' : s === 'out-of-date' || s === 'unsigned' || s === 'untrusted' ? 'warn' : 'bad'));
hb.registerHelper('page', (name: string, version: string) => `${encodeURIComponent(`${name}@${version}`)}.html`);
hb.registerHelper('entries', (o: Record<string, unknown>) => Object.entries(o ?? {}).map(([key, value]) => ({ key, value })));
hb.registerHelper('hasKeys', (o: Record<string, unknown>) => Object.keys(o ?? {}).length > 0);
hb.registerHelper('len', (a: unknown[]) => (Array.isArray(a) ? a.length : 0));

const CSS = `
:root{--bg:#f7f7f5;--card:#fff;--fg:#1d1d1f;--muted:#5f6368;--line:#e3e3df;--accent:#9a3412;--good:#166534;--goodbg:#dcfce7;--warn:#854d0e;--warnbg:#fef9c3;--bad:#991b1b;--badbg:#fee2e2;--code:#f1f1ee}
@media (prefers-color-scheme:dark){:root{--bg:#121212;--card:#1c1c1e;--fg:#ececec;--muted:#a1a1aa;--line:#2e2e32;--accent:#fb923c;--good:#86efac;--goodbg:#14361f;--warn:#fde68a;--warnbg:#3b3209;--bad:#fca5a5;--badbg:#3f1515;--code:#26262a}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif}
header{padding:1.25rem 1rem .5rem;max-width:72rem;margin:0 auto}
h1{font-size:1.5rem;margin:.2rem 0;word-break:break-all}
h2{font-size:1.1rem;margin:0 0 .6rem}
main{max-width:72rem;margin:0 auto;padding:0 1rem 3rem}
nav{display:flex;flex-wrap:wrap;gap:.4rem;margin:.6rem 0}
nav a{color:var(--accent);text-decoration:none;border:1px solid var(--line);border-radius:999px;padding:.1rem .6rem;font-size:.85rem;background:var(--card)}
section{background:var(--card);border:1px solid var(--line);border-radius:.6rem;padding:1rem;margin:1rem 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600}
code,.mono{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:.85em;background:var(--code);padding:.05rem .3rem;border-radius:.3rem;word-break:break-all}
.muted{color:var(--muted)}
.badge{display:inline-block;border-radius:999px;padding:0 .55rem;font-size:.8rem;font-weight:600}
.good{color:var(--good);background:var(--goodbg)}.warn{color:var(--warn);background:var(--warnbg)}.bad{color:var(--bad);background:var(--badbg)}
button.copy{font:inherit;font-size:.75rem;border:1px solid var(--line);background:var(--bg);color:var(--fg);border-radius:.3rem;padding:.05rem .45rem;cursor:pointer;margin-left:.3rem}
button.copy.done{color:var(--good);border-color:var(--good)}
input[type=search]{width:100%;max-width:24rem;font:inherit;padding:.35rem .6rem;border:1px solid var(--line);border-radius:.4rem;background:var(--bg);color:var(--fg);margin-bottom:.6rem}
a{color:var(--accent)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .9rem;margin:0}dt{color:var(--muted)}dd{margin:0;min-width:0}
.chart{position:relative;height:clamp(14rem,40vh,22rem)}
@media (max-width:40rem){body{font-size:14px}dl{grid-template-columns:1fr}dt{margin-top:.4rem}th,td{padding:.3rem}}
`;

const COPY_JS = `
document.querySelectorAll('button.copy').forEach(function (b) {
  b.addEventListener('click', function () {
    var text = b.getAttribute('data-copy');
    var done = function () { b.classList.add('done'); b.textContent = 'copied'; b.setAttribute('data-copied', text); };
    var fallback = function () { var t = document.createElement('textarea'); t.value = text; document.body.appendChild(t); t.select(); try { document.execCommand('copy'); } catch (e) {} t.remove(); done(); };
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, fallback); else fallback();
  });
});
var q = document.getElementById('sbom-filter');
if (q) q.addEventListener('input', function () {
  var s = q.value.toLowerCase(), shown = 0, rows = document.querySelectorAll('#sbom tbody tr');
  rows.forEach(function (r) { var hit = r.textContent.toLowerCase().indexOf(s) >= 0; r.hidden = !hit; if (hit) shown++; });
  document.getElementById('sbom-count').textContent = shown + ' of ' + rows.length;
});
`;

const CHART_JS = `
(function () {
  var el = document.getElementById('steps-data'); var c = document.getElementById('steps-chart');
  if (!el || !c || !window.Chart) return;
  var steps = JSON.parse(el.textContent);
  var dark = window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches;
  var fg = dark ? '#ececec' : '#1d1d1f', grid = dark ? '#2e2e32' : '#e3e3df';
  new Chart(c, { type: 'bar', data: { labels: steps.map(function (s) { return s.name; }), datasets: [{ label: 'seconds', data: steps.map(function (s) { return s.seconds; }), backgroundColor: dark ? '#fb923c' : '#9a3412' }] },
    options: { indexAxis: 'y', maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } },
      scales: { x: { title: { display: true, text: 'seconds', color: fg }, ticks: { color: fg }, grid: { color: grid } }, y: { ticks: { color: fg, autoSkip: false }, grid: { display: false } } } } });
})();
`;

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="color-scheme" content="light dark">
<title>{{title}}</title><style>{{{css}}}</style></head>
<body>{{{body}}}
<script>{{{copyJs}}}</script>
{{#if chart}}<script>{{{chartLib}}}</script><script>{{{chartJs}}}</script>{{/if}}
</body></html>`;

const copy = `<button class="copy" type="button" data-copy="{{this}}" aria-label="copy">copy</button>`;
hb.registerPartial('copy', copy);

const RELEASE = `<header>
<div class="muted">Kiln release · <code>{{r.store}}</code></div>
<h1>{{r.name}}@{{r.version}} <span class="badge {{statusClass r.status}}" id="status">{{r.status}}</span></h1>
{{#if r.statusReason}}<div class="muted">{{r.statusReason}}</div>{{/if}}
{{#if r.revocation}}<div class="badge bad">revoked {{r.revocation.time}}: {{r.revocation.reason}}</div>{{/if}}
<nav>{{#each sections}}<a href="#{{this.[0]}}">{{this.[1]}}</a>{{/each}}{{#if index}}<a href="index.html">all releases</a>{{/if}}</nav>
</header><main>
<section id="summary"><h2>Summary</h2><dl>
<dt>Manifest digest</dt><dd><code>{{r.digest}}</code>{{> copy r.digest}}</dd>
<dt>Reference</dt><dd><code>{{r.reference}}</code>{{> copy r.reference}}</dd>
<dt>Date (commit)</dt><dd>{{r.date}}</dd>
<dt>Commit</dt><dd><code>{{r.commit}}</code>{{#if r.tag}} · tag <code>{{r.tag}}</code>{{/if}}</dd>
<dt>Source</dt><dd>{{#if r.sourceVerified}}verified against its signature{{else}}<span class="badge bad">UNVERIFIED source</span>{{/if}}</dd>
<dt>Built by</dt><dd>Kiln {{r.kilnVersion}}{{#if r.buildSeconds}} in {{r.buildSeconds}} s{{/if}}</dd>
</dl></section>
<section id="artifacts"><h2>Artifacts</h2><div class="scroll"><table><thead><tr><th>format</th><th>file</th><th>size</th><th>digest</th></tr></thead><tbody>
{{#each r.artifacts}}<tr><td>{{format}}</td><td>{{file}}</td><td>{{bytes size}}</td><td><code title="{{digest}}">{{short digest 23}}</code>{{> copy digest}}</td></tr>{{/each}}
</tbody></table></div></section>
<section id="published"><h2>Published</h2>
{{#if (hasKeys r.cloudIds)}}<div class="scroll"><table><thead><tr><th>cloud</th><th>where</th><th>image</th></tr></thead><tbody>
{{#each (entries r.cloudIds)}}{{#each (entries value)}}<tr><td>{{../key}}</td><td>{{key}}</td><td><code>{{value}}</code>{{> copy value}}</td></tr>{{/each}}{{/each}}
</tbody></table></div>{{else}}<p class="muted">Not published to a cloud (kiln publish records image ids here).</p>{{/if}}
<p>Store: <code>{{r.store}}</code></p></section>
<section id="signatures"><h2>Signatures</h2>
{{#if r.signatures.length}}<div class="scroll"><table><thead><tr><th>signer</th><th>kind</th><th>verdict</th></tr></thead><tbody>
{{#each r.signatures}}<tr><td>{{signer}}</td><td>{{kind}}</td><td>{{#if valid}}{{#if trusted}}<span class="badge good">valid, trusted</span>{{else}}<span class="badge warn">valid, key not trusted</span>{{/if}}{{else}}<span class="badge bad">does not verify</span> {{problem}}{{/if}}</td></tr>{{/each}}
</tbody></table></div>{{else}}<p><span class="badge warn">unsigned</span></p>{{/if}}
{{#if r.metadataSigner}}<p class="muted">Channels, revocations and cloud ids signed by {{r.metadataSigner}}.</p>{{/if}}</section>
<section id="ancestry"><h2>Ancestry</h2><dl>
<dt>Parent</dt><dd>{{#if r.parent}}{{#if index}}<a href="{{page r.parentName r.parentVersion}}">{{r.parent.ref}}</a>{{else}}{{r.parent.ref}}{{/if}} <code>{{short r.parent.digest 23}}</code>{{#if r.parent.status}} <span class="badge {{statusClass r.parent.status}}">{{r.parent.status}}</span>{{/if}}{{else}}none: built from its upstream{{/if}}</dd>
<dt>Children</dt><dd>{{#each r.children}}<div>{{ref}} <span class="badge {{statusClass status}}">{{status}}</span></div>{{else}}none in this store{{/each}}</dd>
</dl></section>
<section id="channels"><h2>Channels</h2>
{{#if r.channels.length}}<div class="scroll"><table><thead><tr><th>channel</th><th>points at</th><th>history</th></tr></thead><tbody>
{{#each r.channels}}<tr><td>{{channel}}{{#if here}} <span class="badge good">this release</span>{{/if}}</td><td>{{version}}</td><td>{{#each log}}<div class="muted">{{time}} → {{version}}{{#if by}} by {{by}}{{/if}}</div>{{/each}}</td></tr>{{/each}}
</tbody></table></div>{{else}}<p class="muted">No channels for {{r.name}}.</p>{{/if}}</section>
<section id="changes"><h2>Package changes</h2>
{{#if r.previous}}<p>Since {{#if index}}<a href="{{page r.name r.previousVersion}}">{{r.previous.ref}}</a>{{else}}{{r.previous.ref}}{{/if}}: {{len r.previous.added}} added, {{len r.previous.removed}} removed, {{len r.previous.changed}} changed, {{r.previous.unchanged}} unchanged.</p>
<div class="scroll"><table><thead><tr><th></th><th>package</th><th>version</th></tr></thead><tbody>
{{#each r.previous.added}}<tr class="added"><td><span class="badge good">added</span></td><td>{{name}}</td><td>{{version}}</td></tr>{{/each}}
{{#each r.previous.removed}}<tr class="removed"><td><span class="badge bad">removed</span></td><td>{{name}}</td><td>{{version}}</td></tr>{{/each}}
{{#each r.previous.changed}}<tr class="changed"><td><span class="badge warn">{{direction}}</span></td><td>{{name}}</td><td>{{from}} → {{to}}</td></tr>{{/each}}
</tbody></table></div><p class="muted">Changelog entries and file changes: <code>kiln diff {{r.previous.ref}} {{r.name}}@{{r.version}}</code></p>
{{else}}<p class="muted">The first release of {{r.name}} in this store.</p>{{/if}}</section>
<section id="audit"><h2>Audit</h2><p><span class="badge good">clean</span> {{r.audit}}</p></section>
<section id="provenance"><h2>Provenance</h2><dl>
<dt>Builder</dt><dd>{{#if r.provenance.builder}}<code>{{r.provenance.builder}}</code>{{else}}—{{/if}}</dd>
<dt>Build type</dt><dd>{{#if r.provenance.buildType}}<code>{{r.provenance.buildType}}</code>{{else}}—{{/if}}</dd>
{{#if r.provenance.ansible}}<dt>Ansible</dt><dd>ansible-core {{r.provenance.ansible.core}}, collections {{r.provenance.ansible.collections}} ({{r.provenance.ansible.controller}})</dd>{{/if}}
</dl>
<h3>Materials</h3><div class="scroll"><table><thead><tr><th>name</th><th>uri</th><th>digest</th></tr></thead><tbody>
{{#each r.provenance.materials}}<tr><td>{{name}}</td><td><code>{{uri}}</code></td><td><code>{{short digest 40}}</code>{{> copy digest}}</td></tr>{{/each}}
</tbody></table></div>
{{#if (hasKeys r.provenance.hostTools)}}<h3>Host tools</h3><div class="scroll"><table><tbody>{{#each (entries r.provenance.hostTools)}}<tr><td>{{key}}</td><td>{{value}}</td></tr>{{/each}}</tbody></table></div>{{/if}}
</section>
<section id="timings"><h2>Build steps</h2>
{{#if r.steps}}<div class="chart"><canvas id="steps-chart" role="img" aria-label="seconds per build step"></canvas></div>
<script type="application/json" id="steps-data">{{json r.steps}}</script>
<details><summary class="muted">as a table</summary><table><tbody>{{#each r.steps}}<tr><td>{{name}}</td><td>{{seconds}} s</td></tr>{{/each}}</tbody></table></details>
{{else}}<p class="muted">This release does not record its step times (released by an older Kiln).</p>{{/if}}</section>
<section id="sbom"><h2>Software bill of materials <span class="muted" id="sbom-count">{{len r.packages}} packages</span></h2>
<input type="search" id="sbom-filter" placeholder="filter packages" aria-label="filter packages">
<div class="scroll"><table><thead><tr><th>package</th><th>version</th><th>arch</th><th>purl</th></tr></thead><tbody>
{{#each r.packages}}<tr><td>{{name}}</td><td>{{version}}</td><td>{{arch}}</td><td><code>{{purl}}</code></td></tr>{{/each}}
</tbody></table></div></section>
</main>`;

const INDEX = `<header><div class="muted">Kiln release store</div><h1><code>{{s.store}}</code></h1>
<div class="muted">{{len s.releases}} releases · generated {{s.generated}}</div></header><main>
<section id="releases"><h2>Releases</h2><div class="scroll"><table><thead><tr><th>release</th><th>date</th><th>status</th><th>formats</th><th>signer</th><th>parent</th><th>published</th><th>digest</th></tr></thead><tbody>
{{#each s.releases}}<tr><td><a href="{{page name version}}">{{name}}@{{version}}</a></td><td>{{date}}</td><td><span class="badge {{statusClass status}}">{{status}}</span>{{#if reason}}<div class="muted">{{reason}}</div>{{/if}}</td><td>{{#each formats}}{{this}} {{/each}}</td><td>{{signer}}</td><td>{{parent}}</td><td>{{#each (entries cloudIds)}}<div>{{key}}</div>{{/each}}</td><td><code>{{short digest 19}}</code>{{> copy digest}}</td></tr>{{/each}}
</tbody></table></div></section>
<section id="channels"><h2>Channels</h2>{{#if s.channels.length}}<div class="scroll"><table><thead><tr><th>image</th><th>channel</th><th>version</th></tr></thead><tbody>
{{#each s.channels}}<tr><td>{{name}}</td><td>{{channel}}</td><td><a href="{{page name version}}">{{version}}</a></td></tr>{{/each}}
</tbody></table></div>{{else}}<p class="muted">No channels.</p>{{/if}}</section>
</main>`;

const page = hb.compile(PAGE, { noEscape: false, strict: false });
const release = hb.compile(RELEASE, { strict: false });
const index = hb.compile(INDEX, { strict: false });

const SECTIONS = [['summary', 'Summary'], ['artifacts', 'Artifacts'], ['published', 'Published'], ['signatures', 'Signatures'], ['ancestry', 'Ancestry'], ['channels', 'Channels'], ['changes', 'Changes'], ['audit', 'Audit'], ['provenance', 'Provenance'], ['timings', 'Build steps'], ['sbom', 'SBOM']];

/** The page of one release; `linked`: written beside the store index and the other releases' pages. */
export function releaseHtml(r: ReportRelease, opts: { linked?: boolean } = {}): string {
  const view = {
    ...r,
    parentName: r.parent?.ref.split('@')[0], parentVersion: r.parent?.ref.split('@').slice(1).join('@'),
    previousVersion: r.previous?.ref.split('@').slice(1).join('@'),
  };
  const body = release({ r: view, sections: SECTIONS, index: opts.linked ?? false });
  return page({ title: `${r.name}@${r.version} · Kiln`, css: CSS, body, copyJs: COPY_JS, chart: Boolean(r.steps?.length), chartLib: r.steps?.length ? chartScript() : '', chartJs: CHART_JS });
}

/** The store's index page (links to each release's page beside it). */
export function indexHtml(s: StoreIndex): string {
  return page({ title: `Kiln releases · ${s.store}`, css: CSS, body: index({ s }), copyJs: COPY_JS, chart: false });
}
