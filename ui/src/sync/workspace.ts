// The workspace index: a document like any other whose Y.Map lists the user's documents
// (ID → title). Creating, renaming and deleting documents are edits to it, so every desktop
// sharing the workspace sees the same list, offline included.

import * as Y from "yjs";

export const INDEX_DOC = "workspace/index";

export interface DocEntry {
  id: string;
  title: string;
}

export class Workspace {
  readonly entries: Y.Map<string>;

  constructor(readonly ydoc: Y.Doc) {
    this.entries = ydoc.getMap<string>("documents");
  }

  /** Documents whose title contains `filter` (case-insensitive), sorted by title. */
  list(filter = ""): DocEntry[] {
    const needle = filter.trim().toLowerCase();
    const all: DocEntry[] = [];
    this.entries.forEach((title, id) => all.push({ id, title }));
    return all
      .filter((entry) => entry.title.toLowerCase().includes(needle))
      .sort((a, b) => a.title.localeCompare(b.title) || a.id.localeCompare(b.id));
  }

  /** Adds a document; returns its new ID. */
  create(title: string, random: () => string = randomId): string {
    const id = `doc/${random()}`;
    this.entries.set(id, cleanTitle(title));
    return id;
  }

  rename(id: string, title: string): void {
    if (this.entries.has(id)) this.entries.set(id, cleanTitle(title));
  }

  /** Removes a document from the workspace (its content stays on the server). */
  remove(id: string): void {
    this.entries.delete(id);
  }

  title(id: string): string {
    return this.entries.get(id) ?? id;
  }

  onChange(listener: () => void): void {
    this.entries.observe(listener);
  }
}

function cleanTitle(title: string): string {
  const trimmed = title.trim().replace(/\s+/g, " ");
  return trimmed.length === 0 ? "Untitled" : trimmed.slice(0, 200);
}

function randomId(): string {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
