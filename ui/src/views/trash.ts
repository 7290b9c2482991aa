// The trash: documents deleted from the workspace, with when they go for good, each with
// "Restore" and "Delete forever". The server's list is the truth (it purges on its own); the
// workspace index remembers their titles. Without a server (local-only mode) the index's
// trash is the whole trash.

import { formatTime } from "../state/versionDiff";
import type { TrashEntry } from "../state/types";
import type { Transport } from "../sync/transport";
import type { Workspace } from "../sync/workspace";
import { askConfirm, tell } from "./dialog";
import { el } from "./dom";
import { message } from "./history";

export class TrashView {
  readonly root = el("section", { class: "trash", "data-testid": "trash", hidden: "" });
  private readonly list = el("ul", { "data-testid": "trash-list" });

  constructor(
    private readonly transport: Transport,
    private readonly workspace: Workspace,
    /** The trash was closed: show what it covered again. */
    private readonly onClose: () => void,
    /** Whether the app runs without a server. */
    private readonly localOnly: () => Promise<boolean>,
  ) {
    const close = el("button", { class: "small", title: "Close the trash", "data-testid": "close-trash" }, "×");
    close.addEventListener("click", () => {
      this.hide();
      this.onClose();
    });
    this.root.append(el("div", { class: "trash-head" }, el("h2", {}, "Trash"), close), this.list);
  }

  get visible(): boolean {
    return !this.root.hidden;
  }

  async show(): Promise<void> {
    this.root.hidden = false;
    await this.refresh();
  }

  hide(): void {
    this.root.hidden = true;
  }

  async refresh(): Promise<void> {
    let entries: TrashEntry[];
    if (await this.localOnly()) {
      const local = [...this.workspace.trash.keys()].map((doc) => ({ doc, trashedMs: 0, purgeMs: 0 }));
      this.render(local);
      return;
    }
    try {
      entries = await this.transport.listTrash();
    } catch (error) {
      this.list.replaceChildren(el("li", { class: "hint" }, `The trash is unavailable: ${message(error)}`));
      return;
    }
    // What the server purged by itself is gone from the index's trash too.
    this.workspace.forgetTrashedExcept(new Set(entries.map((e) => e.doc)));
    this.render(entries);
  }

  private render(entries: TrashEntry[]): void {
    if (entries.length === 0) {
      this.list.replaceChildren(el("li", { class: "hint", "data-testid": "trash-empty" }, "The trash is empty."));
      return;
    }
    this.list.replaceChildren(...entries.map((entry) => this.item(entry)));
  }

  private item(entry: TrashEntry): HTMLElement {
    const title = this.workspace.trashedTitle(entry.doc);
    const restore = el("button", { "data-testid": "untrash-doc" }, "Restore");
    restore.addEventListener("click", () => void this.restore(entry.doc));
    const purge = el("button", { class: "danger", "data-testid": "purge-doc" }, "Delete forever");
    purge.addEventListener("click", () => void this.purge(entry.doc, title));
    return el(
      "li",
      { "data-doc": entry.doc, "data-testid": "trash-item" },
      el("span", { class: "title" }, title),
      el(
        "span",
        { class: "hint" },
        entry.trashedMs === 0
          ? "Deleted on this computer"
          : `Deleted ${formatTime(entry.trashedMs)} · gone after ${formatTime(entry.purgeMs)}`,
      ),
      el("span", { class: "trash-buttons" }, restore, purge),
    );
  }

  private async restore(doc: string): Promise<void> {
    try {
      if (!(await this.localOnly())) await this.transport.untrashDoc(doc);
    } catch (error) {
      await tell("Could not restore the document", message(error));
      return;
    }
    this.workspace.restoreFromTrash(doc);
    await this.refresh();
  }

  private async purge(doc: string, title: string): Promise<void> {
    const go = await askConfirm({
      title: "Delete forever",
      message: `Delete “${title}” and all its versions for good? This cannot be undone.`,
      confirm: "Delete forever",
      danger: true,
    });
    if (!go) return;
    try {
      if (!(await this.localOnly())) await this.transport.purgeDoc(doc);
    } catch (error) {
      await tell("Could not delete the document", message(error));
      return;
    }
    this.workspace.forgetTrashed(doc);
    await this.refresh();
  }
}
