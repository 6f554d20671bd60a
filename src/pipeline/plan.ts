/**
 * Steps that declare what they read, need and provide (osbuild's stages declare their inputs the
 * same way): the slice of kiln.yaml a step reads, the results of earlier steps it needs (its run()
 * sees them as present, typed, with no non-null assertion), those it may use when present, and
 * those it provides. Before anything runs, checkPlan proves that every need is provided by an
 * earlier step that always runs, for the whole build and for partial pipelines such as
 * `kiln lock`'s, and that a step begun early (prepare) reads nothing the step beside it sets; while
 * the build runs, each step is held to its declaration.
 */
import type { Step, StepProgress } from './runner.js';

/** The part of the state a step is promised: its needs present and defined. */
export type Given<S, N extends keyof S> = Omit<S, N> & { [K in N]-?: NonNullable<S[K]> };

export interface StepDeclaration<S> {
  /** Top-level keys of kiln.yaml the step reads (its slice of the configuration). */
  readonly reads: readonly string[];
  /** Results the step cannot run without; each must come from an earlier step that always runs. */
  readonly needs: readonly (keyof S)[];
  /** Results the step reads when an earlier step provided them (a pipeline without that step is fine: `kiln lock`'s has no lock step). */
  readonly uses: readonly (keyof S)[];
  /** Results the step always sets when it runs (not when it is skipped). */
  readonly provides: readonly (keyof S)[];
  /** Results the step sets only in some builds (e.g. the lock, when kiln.lock exists). */
  readonly mayProvide: readonly (keyof S)[];
}

export interface DeclaredStep<C, S> extends Step<C> {
  readonly declared: StepDeclaration<S>;
}

export interface StepDefinition<E, S, N extends keyof S> {
  name: string;
  describe: string;
  reads?: readonly string[];
  needs?: readonly N[];
  uses?: readonly (keyof S)[];
  provides?: readonly (keyof S)[];
  mayProvide?: readonly (keyof S)[];
  run(ctx: E & Given<S, N>, progress: StepProgress, signal: AbortSignal): Promise<void>;
  /** Runs on failure and interrupt: it sees whatever state there is, needs included or not. */
  cleanup?(ctx: E & S, outcome: 'success' | 'failure'): Promise<void>;
  skip?(ctx: E & Given<S, N>): boolean;
  /** Begun while the step before runs (src/pipeline/runner.ts); it sees the state as the step before that left it. */
  prepare?(ctx: E & S, signal: AbortSignal): Promise<void>;
}

/** A programming error in the pipeline's wiring (exit 70 with its stack, never a user error). */
export class PlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PlanError';
  }
}

const missing = <S>(ctx: S, keys: readonly (keyof S)[]) => keys.filter((k) => ctx[k] === undefined).map(String);

/**
 * The step constructor for one kind of pipeline: E is what every step gets (the environment), S the
 * results steps pass on. `needs` is inferred from the literal list, so run() sees those as defined.
 */
export function stepsOver<E, S>() {
  return function defineStep<N extends keyof S = never>(d: StepDefinition<E, S, N>): DeclaredStep<E & S, S> {
    const declared: StepDeclaration<S> = { reads: d.reads ?? [], needs: d.needs ?? [], uses: d.uses ?? [], provides: d.provides ?? [], mayProvide: d.mayProvide ?? [] };
    const given = (ctx: E & S): E & Given<S, N> => {
      const absent = missing<S>(ctx, declared.needs);
      if (absent.length) throw new PlanError(`step ${d.name} needs ${absent.join(', ')}, which no earlier step provided`);
      return ctx as E & Given<S, N>;
    };
    return {
      name: d.name,
      describe: d.describe,
      declared,
      async run(ctx, progress, signal) {
        await d.run(given(ctx), progress, signal);
        const absent = missing<S>(ctx, declared.provides);
        if (absent.length) throw new PlanError(`step ${d.name} declares that it provides ${absent.join(', ')} but did not`);
      },
      ...(d.cleanup ? { cleanup: d.cleanup } : {}),
      ...(d.skip ? { skip: (ctx: E & S) => (d.skip as (c: E & Given<S, N>) => boolean)(given(ctx)) } : {}),
      ...(d.prepare ? { prepare: d.prepare } : {}),
    };
  };
}

/**
 * Proves a list of steps can run in this order: every need is provided by an earlier step that
 * always runs (a step with a skip() condition, or a result it only may provide, cannot satisfy a
 * need); a use is a use of something that may be absent, so it needs no provider (its key is typed,
 * so a misspelt one does not compile). `initial` is what the context holds before the first step.
 * Throws a PlanError naming each problem.
 */
export function checkPlan<S>(steps: readonly DeclaredStep<unknown, S>[], initial: readonly (keyof S)[] = []): void {
  const sure = new Set<keyof S>(initial);
  const maybe = new Set<keyof S>();
  const problems: string[] = [];
  const names = new Set<string>();
  let previous: DeclaredStep<unknown, S> | undefined;
  for (const s of steps) {
    if (names.has(s.name)) problems.push(`two steps are named ${s.name}`);
    names.add(s.name);
    const d = s.declared;
    // prepare() runs beside the step before: it cannot read what that step sets.
    if (s.prepare && previous) {
      const set = new Set([...previous.declared.provides, ...previous.declared.mayProvide]);
      for (const n of [...d.needs, ...d.uses].filter((k) => set.has(k))) problems.push(`step ${s.name} begins while ${previous.name} runs (prepare), so it cannot need or use ${String(n)}, which ${previous.name} provides`);
    }
    previous = s;
    for (const n of d.needs) {
      if (sure.has(n)) continue;
      problems.push(maybe.has(n)
        ? `step ${s.name} needs ${String(n)}, which an earlier step provides only in some builds (declare it in uses)`
        : `step ${s.name} needs ${String(n)}, which no earlier step provides`);
    }
    for (const p of d.provides) (s.skip ? maybe : sure).add(p);
    for (const p of d.mayProvide) maybe.add(p);
  }
  if (problems.length) throw new PlanError(`the pipeline cannot run in this order:\n${problems.map((p) => `  ${p}`).join('\n')}`);
}
