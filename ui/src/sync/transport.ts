// What the UI needs from the Rust side, as an interface so that the sync bridge can be tested
// without Tauri. `tauri.ts` implements it over IPC.

import type { ConnectionState, DocState, ImportedFile, Settings, TrashEntry, Version } from "../state/types";

export interface Unlisten {
  (): void;
}

export interface Transport {
  /** Opens a document; resolves with its full local state as one Yjs v1 update. */
  openDoc(doc: string): Promise<Uint8Array>;
  closeDoc(doc: string): Promise<void>;
  /** Sends a local Yjs update to the Rust replica (which stores and syncs it). */
  pushUpdate(doc: string, update: Uint8Array): Promise<void>;
  setAwareness(doc: string, state: unknown | null): Promise<void>;
  onRemoteUpdate(listener: (doc: string, update: Uint8Array) => void): Promise<Unlisten>;
  onAwareness(listener: (doc: string, states: Record<string, unknown>) => void): Promise<Unlisten>;
  onDocState(listener: (doc: string, state: DocState) => void): Promise<Unlisten>;
  onConnection(listener: (state: ConnectionState) => void): Promise<Unlisten>;
  /** Native menu items chosen (new, close-tab, next-tab, previous-tab, settings). */
  onMenu(listener: (item: string) => void): Promise<Unlisten>;
  /** The app is about to quit: `flush` must resolve once local edits are handed over. */
  onQuitRequested(flush: () => Promise<void>): Promise<Unlisten>;
  connectionState(): Promise<ConnectionState>;
  setTitle(title: string): Promise<void>;
  getSettings(): Promise<Settings | null>;
  saveSettings(settings: Settings): Promise<void>;
  trustFingerprint(fingerprint: string): Promise<void>;

  // Versions of an open document (PROTOCOL §6.9), newest first.
  listVersions(doc: string): Promise<Version[]>;
  createVersion(doc: string, name: string): Promise<Version>;
  /** A version's text, for reading. */
  versionText(doc: string, version: number): Promise<string>;
  /** Restores a version as a new edit; resolves with the version that undoes it. */
  restoreVersion(doc: string, version: number): Promise<Version>;

  // The trash (PROTOCOL §5.4).
  trashDoc(doc: string): Promise<void>;
  untrashDoc(doc: string): Promise<void>;
  listTrash(): Promise<TrashEntry[]>;
  purgeDoc(doc: string): Promise<void>;

  // Markdown files, through native dialogs.
  /** Resolves with the path written, or null if the user cancelled. */
  exportMarkdown(doc: string, title: string): Promise<string | null>;
  /** Resolves with the files picked (none if cancelled). */
  importMarkdown(): Promise<ImportedFile[]>;
  /** Files dropped on the window: their paths. */
  onFilesDropped(listener: (paths: string[]) => void): Promise<Unlisten>;
  readMarkdownFiles(paths: string[]): Promise<ImportedFile[]>;
}
