/**
 * The environments Kiln gives the programs it starts. Nothing is inherited wholesale: a child sees
 * only the variables named here, so registry passwords, signing passphrases, cloud credentials and
 * any KILN_* setting in Kiln's own environment never reach a host tool, a playbook or an image.
 */

/** Variables a host tool may see from Kiln's environment: where things are, and how to reach the network. */
export const HOST_ENV_ALLOWED = [
  'PATH', 'HOME', 'TMPDIR', 'TERM', 'USER', 'LOGNAME',
  // Proxies are needed by curl and apt on networks that have them; they name a host, not a credential
  // Kiln owns (a user who puts a password in a proxy URL has put it in every tool's environment anyway).
  'http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY',
] as const;

/** The PATH inside the build sandbox and in the image (what Debian's sudo calls secure_path). */
export const SANDBOX_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The environment of a host tool: the allowed variables from `from` (Kiln's environment), then
 * `extra`. `pass` names further variables one call needs (ssh-agent's socket for signing, say).
 */
export function hostEnv(extra: Record<string, string | undefined> = {}, pass: readonly string[] = [], from: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of [...HOST_ENV_ALLOWED, ...pass]) {
    const v = from[k];
    if (v !== undefined) env[k] = v;
  }
  if (!env.PATH) env.PATH = SANDBOX_PATH;
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

/** The environment of a program in the build sandbox: fixed, with nothing from the build host. */
export function sandboxEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: SANDBOX_PATH, HOME: '/root', LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8', TZ: 'UTC', ...extra };
}
