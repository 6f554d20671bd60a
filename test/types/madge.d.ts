// The part of madge's API the import-cycle test uses (madge ships no types; @types/madge is for 5.x).
declare module 'madge' {
  interface MadgeConfig {
    fileExtensions?: string[];
    tsConfig?: string;
    detectiveOptions?: Record<string, Record<string, unknown>>;
  }
  interface MadgeResult {
    /** Each cycle as its files in import order, relative to the scanned directory. */
    circular(): string[][];
    warnings(): { skipped: string[] };
    obj(): Record<string, string[]>;
  }
  export default function madge(path: string, config?: MadgeConfig): Promise<MadgeResult>;
}
