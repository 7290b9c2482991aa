// The document list: filter by title, create, rename, delete, open.

import type { Workspace } from "../sync/workspace";
import { askConfirm, askText } from "./dialog";
import { el } from "./dom";

export interface SidebarActions {
  open(id: string): void;
  create(): void;
  /** Moves a document to the trash (after the user confirmed). */
  trash(id: string): void;
  showTrash(): void;
}

export class Sidebar {
  readonly root = el("nav", { class: "sidebar", "data-testid": "sidebar" });
  private readonly filter = el("input", { type: "search", placeholder: "Filter by title", "data-testid": "filter" });
  private readonly list = el("ul", { "data-testid": "doc-list" });

  constructor(
    private readonly workspace: Workspace,
    private readonly actions: SidebarActions,
  ) {
    const create = el("button", { "data-testid": "new-doc", title: "New document (Ctrl+N)" }, "+ New");
    create.addEventListener("click", () => actions.create());
    this.filter.addEventListener("input", () => this.render());
    const trash = el("button", { class: "sidebar-trash", "data-testid": "show-trash", title: "Deleted documents" }, "Trash");
    trash.addEventListener("click", () => actions.showTrash());
    this.root.append(el("div", { class: "sidebar-head" }, this.filter, create), this.list, trash);
    workspace.onChange(() => this.render());
    this.render();
  }

  render(active: string | null = null): void {
    const items = this.workspace.list(this.filter.value).map((entry) => {
      const title = el("span", { class: "title" }, entry.title);
      title.addEventListener("click", () => this.actions.open(entry.id));
      const rename = el("button", { class: "small", title: "Rename", "data-testid": "rename-doc" }, "✎");
      rename.addEventListener("click", async () => {
        const next = await askText({
          title: "Rename document",
          label: "Title",
          value: entry.title,
          confirm: "Rename",
          validate: requireTitle,
        });
        if (next !== null) this.workspace.rename(entry.id, next);
      });
      const remove = el("button", { class: "small", title: "Move to the trash", "data-testid": "delete-doc" }, "✕");
      remove.addEventListener("click", async () => {
        const go = await askConfirm({
          title: "Move to the trash",
          message: `Move “${entry.title}” to the trash? It leaves the list for everyone in this workspace, and can be restored from the trash for 30 days.`,
          confirm: "Move to trash",
          danger: true,
        });
        if (go) this.actions.trash(entry.id);
      });
      const item = el("li", { "data-doc": entry.id, "data-testid": "doc-item" }, title, rename, remove);
      if (entry.id === active) item.classList.add("active");
      return item;
    });
    if (items.length === 0) {
      const hint = this.filter.value.trim()
        ? "No document matches this filter."
        : "No documents yet. Create one with + New (Ctrl+N).";
      items.push(el("li", { class: "hint", "data-testid": "empty-hint" }, hint));
    }
    this.list.replaceChildren(...items);
  }
}

/** A document's title cannot be blank. */
export function requireTitle(title: string): string | null {
  return title.trim() === "" ? "A title cannot be empty." : null;
}
