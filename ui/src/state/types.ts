// The shapes the Rust side sends over IPC (src-tauri/src/dto.rs is the other half).

export type ConnectionState =
  | { kind: "connecting"; attempt: number }
  | { kind: "connected"; rttMs: number | null }
  | { kind: "reconnecting"; retryInMs: number; attempt: number; lastCode: number; reason: string }
  | { kind: "authFailed"; reason: string }
  | { kind: "untrusted"; fingerprint: string | null; reason: string }
  | { kind: "refused"; reason: string }
  | { kind: "localOnly" }
  | { kind: "closed" };

export type DocState =
  | { kind: "offline"; pending: number }
  | { kind: "syncing"; received: number }
  | { kind: "synced"; pending: number }
  | { kind: "failed"; code: number; reason: string };

export interface Settings {
  serverUrl: string;
  token: string;
  localOnly: boolean;
  displayName: string;
  color: string;
  trustedFingerprint: string | null;
}

export interface DocEvent<T> {
  doc: string;
  value: T;
}

export type VersionKind = "auto" | "named" | "beforeRestore";

/** One version of a document (src-tauri/src/dto.rs `VersionDto`). */
export interface Version {
  id: number;
  createdMs: number;
  kind: VersionKind;
  name: string;
  authors: string[];
  size: number;
}

/** A document in the trash, as the server lists it. */
export interface TrashEntry {
  doc: string;
  trashedMs: number;
  purgeMs: number;
}

/** A Markdown file read for import. */
export interface ImportedFile {
  name: string;
  text: string;
}
