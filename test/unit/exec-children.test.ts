import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { test } from 'node:test';
import { exec, findTool } from '../../src/exec.js';
import { KilnError } from '../../src/errors.js';

/** Processes whose command line is this tool (by any path) with these arguments (setpriv execs the tool in place). */
function processesRunning(args: string): string[] {
  return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n').filter((l) => {
    const cmd = l.trim().replace(/^\d+\s+/, '');
    return cmd === args || cmd.endsWith(`/${args}`);
  });
}

test('a host tool dies with Kiln: kill -9 of Kiln while it runs one leaves no process behind', async () => {
  // A duration no other process on the machine uses, so the check finds only this test's sleep.
  const secs = `${3000 + Math.floor(Math.random() * 1000)}.25`;
  const script = `
    import { exec } from ${JSON.stringify(new URL('../../src/exec.js', import.meta.url).href)};
    const run = exec('sleep', [${JSON.stringify(secs)}], { onSpawn: () => process.stdout.write('started\\n') });
    await run;`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pids = () => processesRunning(`sleep ${secs}`).map((l) => Number(l.trim().split(/\s+/)[0]));
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('started')) resolve(); });
      child.on('exit', () => reject(new Error('the child ended before the tool started')));
    });
    const deadline = Date.now() + 5000;
    while (!pids().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(pids().length, 1, 'the tool runs as itself (setpriv exec\'d it)');
    child.kill('SIGKILL');
    const gone = Date.now() + 10_000;
    while (pids().length && Date.now() < gone) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(pids(), [], 'the tool died with Kiln');
  } finally {
    // Whatever failed above, nothing this test started outlives it.
    child.kill('SIGKILL');
    for (const pid of pids()) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

test("a tool's exit status, output and pid are its own; a missing tool is named with the doctor's hint", async () => {
  const r = await exec('sh', ['-c', 'echo out; echo err >&2; exit 3'], { allowFailure: true });
  assert.deepEqual([r.code, r.stdout, r.stderr], [3, 'out\n', 'err\n']);
  let pid: number | undefined;
  const self = await exec('sh', ['-c', 'echo $$'], { onSpawn: (c) => { pid = c.pid; } });
  assert.equal(Number(self.stdout.trim()), pid, 'the spawned pid is the tool (no wrapper process between)');
  assert.equal(findTool('no-such-kiln-tool', process.env.PATH ?? ''), undefined);
  await assert.rejects(exec('no-such-kiln-tool', []), (e: unknown) => e instanceof KilnError && /host tool not found: no-such-kiln-tool/.test(e.message) && /kiln doctor/.test(e.hint ?? ''));
});
