/**
 * What the audit reports. The seal's checks return findings too (each seal operation carries its
 * own check, which the audit runs on the finished image), so this type sits below both.
 */
/** One problem in an image: which check found it, where (as seen inside the image), and why it matters. */
export interface Finding {
  check: string;
  path: string;
  message: string;
  /** A secret finding's stable name, for kiln.yaml audit.accept (the secret itself is never shown). */
  fingerprint?: string;
}
