/**
 * `source.image.url: ec2://<region>/<ami-id or name pattern>`, parsed without the AWS SDK (which
 * src/cloud/aws/upstream.ts loads, and only a build reading an AMI needs): validating kiln.yaml and
 * every other command stay free of its start-up time.
 */
import { KilnError } from '../../errors.js';

export interface AmiRef { region: string; id?: string; namePattern?: string }

const AMI_ID = /^ami-[0-9a-f]{8,17}$/;

export function isAmiUrl(url: string): boolean {
  return url.startsWith('ec2://');
}

/** ec2://eu-west-1/ami-0123… (an image id) or ec2://eu-west-1/debian-13-amd64-* (the owner's newest image whose name matches). */
export function parseAmiUrl(url: string): AmiRef {
  const m = /^ec2:\/\/([a-z]{2}(?:-[a-z]+)+-[0-9]+)\/([^/?#]+)$/.exec(url);
  if (!m) throw new KilnError(`source.image.url ${JSON.stringify(url)} is not ec2://<region>/<ami-id or name pattern>`, { hint: 'e.g. ec2://eu-west-1/ami-0123456789abcdef0, or ec2://eu-west-1/debian-13-amd64-* with source.image.owner' });
  const what = decodeURIComponent(m[2]);
  return AMI_ID.test(what) ? { region: m[1], id: what } : { region: m[1], namePattern: what };
}
