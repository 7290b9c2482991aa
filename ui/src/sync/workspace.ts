// The workspace index: a document like any other whose Y.Map lists the user's documents
// (ID → title). Creating, renaming and deleting documents are edits to it, so every desktop
// sharing the workspace sees the same list, offline included. Deleted documents move to a
// second map, "trash" (ID → title), while the server keeps them in its trash.

import * as Y from "yjs";

export const INDEX_DOC = "workspace/index";

export interface DocEntry {
  id: string;
  title: string;
}

export class Workspace {
  readonly entries: Y.Map<string>;
  readonly trash: Y.Map<string>;

  constructor(readonly ydoc: Y.Doc) {
    this.entries = ydoc.getMap<string>("documents");
    this.trash = ydoc.getMap<string>("trash");
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

  /** Moves a document from the list to the trash, keeping its title. */
  moveToTrash(id: string): void {
    this.ydoc.transact(() => {
      this.trash.set(id, this.entries.get(id) ?? id);
      this.entries.delete(id);
    });
  }

  /** Brings a document back from the trash into the list. */
  restoreFromTrash(id: string): void {
    this.ydoc.transact(() => {
      this.entries.set(id, this.trash.get(id) ?? id);
      this.trash.delete(id);
    });
  }

  /** Forgets a document deleted for good. */
  forgetTrashed(id: string): void {
    this.trash.delete(id);
  }

  /** Forgets every trashed document but `kept` (the server purged the others). */
  forgetTrashedExcept(kept: Set<string>): void {
    const gone = [...this.trash.keys()].filter((id) => !kept.has(id));
    if (gone.length > 0) this.ydoc.transact(() => gone.forEach((id) => this.trash.delete(id)));
  }

  trashedTitle(id: string): string {
    return this.trash.get(id) ?? id;
  }

  title(id: string): string {
    return this.entries.get(id) ?? id;
  }

  onChange(listener: () => void): void {
    this.entries.observe(listener);
    this.trash.observe(listener);
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
