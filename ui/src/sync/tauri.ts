// The Transport over Tauri IPC: commands for requests, events for what the Rust side pushes.

import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import { getCurrentWebview } from "@tauri-apps/api/webview";

import type { ConnectionState, DocEvent, DocState, ImportedFile, Settings, TrashEntry, Version } from "../state/types";
import { fromBase64, toBase64 } from "./base64";
import type { Transport, Unlisten } from "./transport";

export const tauriTransport: Transport = {
  async openDoc(doc) {
    return fromBase64(await invoke<string>("open_document", { doc }));
  },
  closeDoc(doc) {
    return invoke("close_document", { doc });
  },
  pushUpdate(doc, update) {
    return invoke("push_update", { doc, update: toBase64(update) });
  },
  setAwareness(doc, state) {
    return invoke("set_awareness", { doc, state: state === null ? null : JSON.stringify(state) });
  },
  async onRemoteUpdate(listener) {
    const off = await listen<DocEvent<string>>("doc-update", (e) => listener(e.payload.doc, fromBase64(e.payload.value)));
    return off as Unlisten;
  },
  async onAwareness(listener) {
    const off = await listen<DocEvent<Record<string, string>>>("awareness", (e) => {
      const states: Record<string, unknown> = {};
      for (const [client, json] of Object.entries(e.payload.value)) {
        try {
          states[client] = JSON.parse(json);
        } catch {
          // A peer's malformed presence is ignored, never fatal.
        }
      }
      listener(e.payload.doc, states);
    });
    return off as Unlisten;
  },
  async onDocState(listener) {
    const off = await listen<DocEvent<DocState>>("doc-state", (e) => listener(e.payload.doc, e.payload.value));
    return off as Unlisten;
  },
  async onConnection(listener) {
    const off = await listen<ConnectionState>("connection-state", (e) => listener(e.payload));
    return off as Unlisten;
  },
  async onMenu(listener) {
    const off = await listen<string>("menu", (e) => listener(e.payload));
    return off as Unlisten;
  },
  async onQuitRequested(flush) {
    const off = await listen("quit-requested", () => {
      void flush().finally(() => invoke("ready_to_quit"));
    });
    return off as Unlisten;
  },
  setTitle(title) {
    return invoke("set_title", { title });
  },
  connectionState() {
    return invoke<ConnectionState>("connection_state");
  },
  getSettings() {
    return invoke<Settings | null>("get_settings");
  },
  saveSettings(settings) {
    return invoke("save_settings", { settings });
  },
  trustFingerprint(fingerprint) {
    return invoke("trust_fingerprint", { fingerprint });
  },
  listVersions(doc) {
    return invoke<Version[]>("list_versions", { doc });
  },
  createVersion(doc, name) {
    return invoke<Version>("create_version", { doc, name });
  },
  versionText(doc, version) {
    return invoke<string>("version_text", { doc, version });
  },
  restoreVersion(doc, version) {
    return invoke<Version>("restore_version", { doc, version });
  },
  trashDoc(doc) {
    return invoke("trash_document", { doc });
  },
  untrashDoc(doc) {
    return invoke("untrash_document", { doc });
  },
  listTrash() {
    return invoke<TrashEntry[]>("list_trash");
  },
  purgeDoc(doc) {
    return invoke("purge_document", { doc });
  },
  exportMarkdown(doc, title) {
    return invoke<string | null>("export_markdown", { doc, title });
  },
  importMarkdown() {
    return invoke<ImportedFile[]>("import_markdown");
  },
  async onFilesDropped(listener) {
    const off = await getCurrentWebview().onDragDropEvent((event) => {
      if (event.payload.type === "drop") listener(event.payload.paths);
    });
    return off as Unlisten;
  },
  readMarkdownFiles(paths) {
    return invoke<ImportedFile[]>("read_markdown_files", { paths });
  },
};
