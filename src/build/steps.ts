import type { Step } from '../pipeline/runner.js';
import type { BuildContext } from './context.js';
import { diskStep } from './steps-image.js';
import { fetchSourceStep, imageLayerStep, provisionStep, publishStep, resolveVersionStep, stampStep, workAreaStep } from './steps-prepare.js';

/** What `kiln build` does, in order. */
export const buildSteps: Step<BuildContext>[] = [
  resolveVersionStep,
  workAreaStep,
  fetchSourceStep,
  imageLayerStep,
  provisionStep,
  stampStep,
  diskStep,
  publishStep,
];
