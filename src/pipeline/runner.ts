/**
 * A build is an ordered list of steps over one context, like Packer's builder steps.
 * The runner times each step, reports progress, and on failure or interrupt runs the cleanups
 * of the steps already started, in reverse order: after an interrupt, once the running step has
 * returned (it is told through its AbortSignal, and its host tools are killed).
 */
import { hostError, InterruptedError, KilnError } from '../errors.js';
import { killAllChildren, runningChildren } from '../exec.js';
import { humanSeconds, type Logger } from '../log.js';

export interface Step<C> {
  /** Short name shown in progress and the build record, e.g. "provision". */
  name: string;
  /** One line saying what the step does. */
  describe: string;
  /**
   * The signal is aborted on SIGINT/SIGTERM (its reason an InterruptedError): a step that writes
   * what outlives the build checks it before each irreversible action and undoes what it did.
   * The runner waits for run() to return before any cleanup starts.
   */
  run(ctx: C, progress: StepProgress, signal: AbortSignal): Promise<void>;
  /** Releases what run() acquired; runs in reverse order after the last step, on success, failure and interrupt (unless --on-error=keep). */
  cleanup?(ctx: C, outcome: 'success' | 'failure'): Promise<void>;
  /** Skip when this returns true. */
  skip?(ctx: C): boolean;
  /**
   * Work the step may begin ahead of its turn, while the step before it runs (the tools tree is built
   * with mmdebstrap while the base tree is). It may read only what the steps before that one
   * provided, and sets no state: run() takes its result. The runner starts it when the previous step
   * starts and waits for it before run(); its failure is the step's, reported at the step's turn. If
   * the previous step fails or is interrupted, the runner stops it (its host tools are killed) and
   * waits for it before any cleanup starts.
   */
  prepare?(ctx: C, signal: AbortSignal): Promise<void>;
}

export interface StepProgress {
  /** A live status line (e.g. the Ansible task being run); without a terminal, shown at most every few seconds unless `important`. */
  status(msg: string, important?: boolean): void;
  log(msg: string): void;
}

export interface StepRecord {
  name: string;
  status: 'ok' | 'failed' | 'skipped' | 'interrupted';
  durationMs: number;
  error?: string;
}

export interface RunResult {
  steps: StepRecord[];
  durationMs: number;
}

export interface RunOptions {
  logger: Logger;
  /** When true, the cleanups are not run on failure (--on-error=keep); the caller prints how to resume. */
  keepOnError?: boolean;
  /** Called with the failing step before cleanups run (keep mode prints its debug instructions here). */
  onFailure?: (step: string, error: unknown) => Promise<void> | void;
  /** Called as each step finishes (the release step records the earlier steps' timings). */
  onStepDone?: (record: StepRecord) => void;
}

/** A step failed with a KilnError (the user's to act on): the same error, located at the step. */
export class StepFailure extends KilnError {
  readonly steps: StepRecord[];
  readonly original: KilnError;
  constructor(step: string, original: KilnError, steps: StepRecord[]) {
    super(original.message, { where: { ...original.where, step }, hint: original.hint, detail: original.detail, exitCode: original.exitCode, cause: original });
    this.name = 'StepFailure';
    this.steps = steps;
    this.original = original;
  }
}

/**
 * A step threw something other than a KilnError: a bug in that step. It stays a bug (src/errors.ts):
 * not a KilnError, with the original stack, so the CLI shows it as one and exits 70.
 */
export class StepBug extends Error {
  readonly step: string;
  readonly steps: StepRecord[];
  readonly original: unknown;
  constructor(step: string, original: unknown, steps: StepRecord[]) {
    super(`step ${step}: ${original instanceof Error ? original.message : String(original)}`, { cause: original });
    this.name = 'StepBug';
    this.step = step;
    this.steps = steps;
    this.original = original;
    this.stack = `${this.name}: ${this.message}\n${original instanceof Error && original.stack ? original.stack : '(thrown value, no stack)'}`;
  }
}

/** What runSteps throws: the user's error at a step, or a step's bug; both carry the step records. */
function stepError(step: string, e: unknown, steps: StepRecord[]): StepFailure | StepBug {
  const host = hostError(e);
  if (host) return new StepFailure(step, host, steps);
  return e instanceof KilnError ? new StepFailure(step, e, steps) : new StepBug(step, e, steps);
}

export async function runSteps<C>(steps: readonly Step<C>[], ctx: C, opts: RunOptions): Promise<RunResult> {
  const { logger } = opts;
  const started: Step<C>[] = [];
  const records: StepRecord[] = [];
  const t0 = Date.now();
  const abort = new AbortController();
  let interrupted: string | undefined;
  let rejectInterrupt: ((e: unknown) => void) | undefined;
  const interruptPromise = new Promise<never>((_, rej) => { rejectInterrupt = rej; });
  interruptPromise.catch(() => { /* observed via race */ });
  let stopWaiting: (() => void) | undefined;
  // The next step's prepare(), begun when the current step started, with its own signal (aborted on
  // an interrupt, and when the current step fails).
  let ahead: { index: number; work: Promise<void>; settled: boolean; stop: AbortController } | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) {
      stopWaiting?.();
      return;
    }
    interrupted = sig;
    logger.info(`\n${sig} received: stopping and cleaning up...`);
    abort.abort(new InterruptedError(sig));
    ahead?.stop.abort(new InterruptedError(sig));
    killAllChildren('SIGTERM');
    rejectInterrupt?.(new InterruptedError(sig));
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);
  const isTTY = Boolean((process.stderr as NodeJS.WriteStream).isTTY);
  const stopAhead = async () => {
    if (!ahead || ahead.settled) return;
    // Told through its signal; its host tools are ours to stop: nothing else runs once a step has failed.
    if (!ahead.stop.signal.aborted) ahead.stop.abort(new KilnError('stopped: the step before failed'));
    killAllChildren('SIGTERM');
    await ahead.work.catch(() => undefined);
  };
  const fail = async (step: string, e: unknown): Promise<never> => {
    await stopAhead();
    await opts.onFailure?.(step, e);
    if (!opts.keepOnError || interrupted) await runCleanups(started, ctx, 'failure', logger);
    throw stepError(step, interrupted && !(e instanceof InterruptedError) ? new InterruptedError(interrupted) : e, records);
  };
  try {
    for (const [i, step] of steps.entries()) {
      if (step.skip?.(ctx)) {
        records.push({ name: step.name, status: 'skipped', durationMs: 0 });
        logger.info(`[${i + 1}/${steps.length}] ${step.name}: skipped`);
        continue;
      }
      const s0 = Date.now();
      logger.info(`[${i + 1}/${steps.length}] ${step.name}: ${step.describe}`);
      let lastStatus = '';
      let lastPrinted = 0;
      const progress: StepProgress = {
        status(msg, important = false) {
          if (msg === lastStatus) return;
          lastStatus = msg;
          if (isTTY) process.stderr.write(`\r\x1b[K      ${msg.slice(0, 110)}`);
          else if (important || Date.now() - lastPrinted > 5000) { lastPrinted = Date.now(); logger.info(`      ${msg}`); }
        },
        log(msg) {
          if (isTTY && lastStatus) process.stderr.write('\r\x1b[K');
          logger.info(`      ${msg}`);
          lastStatus = '';
        },
      };
      if (ahead?.index !== i) started.push(step);
      const early = ahead?.index === i ? ahead.work : undefined;
      const run = early ? early.then(() => step.run(ctx, progress, abort.signal)) : step.run(ctx, progress, abort.signal);
      const next = steps[i + 1];
      if (next?.prepare && !next.skip?.(ctx)) {
        const stop = new AbortController();
        const a = { index: i + 1, work: next.prepare(ctx, stop.signal), settled: false, stop };
        a.work.then(() => { a.settled = true; }, () => { a.settled = true; });
        ahead = a;
        started.push(next);
      }
      // Settled below; a step that fails after an interrupt won the race must not crash the process.
      run.catch(() => undefined);
      let error: { e: unknown } | undefined;
      try {
        await Promise.race([run, interruptPromise]);
      } catch (e) {
        error = { e };
      }
      if (error && interrupted) {
        // Work stops before cleanup starts: the step saw the abort and its children were killed, but it
        // may still be writing (a copy, the release's rollback); meanwhile the children get a moment to
        // exit, then SIGKILL. Cleanups must not pull files from under either.
        const children = waitForChildren(5000);
        const late = await settle(run, step.name, logger, (stop) => { stopWaiting = stop; });
        stopWaiting = undefined;
        if (late === 'ok') error = undefined;
        else if (late !== 'forced') error = { e: late.e };
        await children;
      }
      if (isTTY && lastStatus) process.stderr.write('\r\x1b[K');
      const d = Date.now() - s0;
      if (!error) {
        records.push({ name: step.name, status: 'ok', durationMs: d });
        opts.onStepDone?.(records[records.length - 1]);
        logger.info(`      done in ${humanSeconds(d)}`);
        // A step that finished although the interrupt came during it: stop before the next one.
        if (interrupted) await fail(step.name, new InterruptedError(interrupted));
        continue;
      }
      const status = interrupted ? 'interrupted' : 'failed';
      records.push({ name: step.name, status, durationMs: d, error: error.e instanceof KilnError ? error.e.message : String(error.e) });
      logger.info(`      ${status} after ${humanSeconds(d)}`);
      await fail(step.name, error.e);
    }
    await runCleanups(started, ctx, 'success', logger);
    return { steps: records, durationMs: Date.now() - t0 };
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
  }
}

/** Waits for an interrupted step to return; a second interrupt stops the waiting ('forced'). */
async function settle(run: Promise<void>, name: string, logger: Logger, onForce: (stop: () => void) => void): Promise<'ok' | 'forced' | { e: unknown }> {
  let force: () => void = () => undefined;
  const forced = new Promise<'forced'>((res) => { force = () => res('forced'); });
  onForce(force);
  const slow = setTimeout(() => logger.info(`      waiting for ${name} to stop (interrupt again to clean up without waiting)`), 2000);
  try {
    return await Promise.race([run.then(() => 'ok' as const, (e: unknown) => ({ e })), forced]);
  } finally {
    clearTimeout(slow);
  }
}

async function waitForChildren(ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (runningChildren() > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  if (runningChildren() > 0) killAllChildren('SIGKILL');
  const end2 = Date.now() + 2000;
  while (runningChildren() > 0 && Date.now() < end2) await new Promise((r) => setTimeout(r, 100));
}

async function runCleanups<C>(started: Step<C>[], ctx: C, outcome: 'success' | 'failure', logger: Logger): Promise<void> {
  for (const step of [...started].reverse()) {
    if (!step.cleanup) continue;
    try {
      await step.cleanup(ctx, outcome);
    } catch (e) {
      logger.warn(`cleanup of ${step.name} failed: ${e instanceof KilnError ? e.format() : String(e)}`);
    }
  }
}
