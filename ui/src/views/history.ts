// The history panel beside the editor: the open document's versions (time, name, authors),
// one selected for reading with its differences from the current text marked, restoring it
// (after a confirmation), and naming the current state as a version.

import { changeCount, formatTime, versionDiff, versionLabel } from "../state/versionDiff";
import type { Version } from "../state/types";
import type { Transport } from "../sync/transport";
import { askConfirm, askText, tell } from "./dialog";
import { el } from "./dom";

export class HistoryPanel {
  readonly root = el("aside", { class: "history", "data-testid": "history", hidden: "" });
  private readonly list = el("ul", { class: "version-list", "data-testid": "version-list" });
  private readonly reader = el("div", { class: "version-reader", "data-testid": "version-reader" });
  private doc: string | null = null;
  private versions: Version[] = [];
  private selected: number | null = null;
  /** While the panel is open, versions others make (or the server's automatic ones) show up. */
  private poll: ReturnType<typeof setInterval> | null = null;
  /** The IDs the list shows, or null when it shows something else. */
  private rendered: string | null = null;

  constructor(
    private readonly transport: Transport,
    /** The current text of a document (the editor's). */
    private readonly currentText: (doc: string) => string,
  ) {
    const name = el("button", { "data-testid": "name-version" }, "Name this version…");
    name.addEventListener("click", () => void this.nameVersion());
    const close = el("button", { class: "small", title: "Close history", "data-testid": "close-history" }, "×");
    close.addEventListener("click", () => this.hide());
    this.root.append(
      el("div", { class: "history-head" }, el("h2", {}, "History"), close),
      name,
      this.list,
      this.reader,
    );
  }

  get visible(): boolean {
    return !this.root.hidden;
  }

  /** Shows the panel for `doc` and loads its versions. */
  async show(doc: string): Promise<void> {
    this.root.hidden = false;
    this.poll ??= setInterval(() => void this.refresh(), REFRESH_MS);
    if (doc !== this.doc) {
      this.doc = doc;
      this.selected = null;
      this.rendered = null;
      this.reader.replaceChildren();
    }
    await this.refresh();
  }

  hide(): void {
    this.root.hidden = true;
    if (this.poll !== null) clearInterval(this.poll);
    this.poll = null;
    this.selected = null;
    this.reader.replaceChildren();
  }

  async refresh(): Promise<void> {
    const doc = this.doc;
    if (doc === null) return;
    let versions: Version[];
    try {
      versions = await this.transport.listVersions(doc);
    } catch (error) {
      this.list.replaceChildren(el("li", { class: "hint" }, `History unavailable: ${message(error)}`));
      this.rendered = null;
      return;
    }
    if (doc !== this.doc) return;
    // The same list again (a periodic refresh) leaves the items, and the focus, alone.
    const key = versions.map((v) => v.id).join(",");
    this.versions = versions;
    if (key !== this.rendered) this.renderList();
    this.rendered = key;
  }

  private renderList(): void {
    if (this.versions.length === 0) {
      this.list.replaceChildren(
        el("li", { class: "hint", "data-testid": "no-versions" }, "No versions yet. Name one, or keep writing: the server saves one every few minutes of editing."),
      );
      return;
    }
    this.list.replaceChildren(
      ...this.versions.map((version) => {
        const item = el(
          "li",
          { "data-testid": "version", "data-version": String(version.id), "data-kind": version.kind },
          el("span", { class: "version-name" }, versionLabel(version)),
          el("span", { class: "version-time" }, formatTime(version.createdMs)),
          el("span", { class: "version-authors" }, version.authors.join(", ")),
        );
        if (version.id === this.selected) item.classList.add("selected");
        item.tabIndex = 0;
        item.setAttribute("role", "button");
        item.addEventListener("click", () => void this.select(version));
        item.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            void this.select(version);
          }
        });
        return item;
      }),
    );
  }

  private async select(version: Version): Promise<void> {
    const doc = this.doc;
    if (doc === null) return;
    this.selected = version.id;
    this.renderList();
    let text: string;
    try {
      text = await this.transport.versionText(doc, version.id);
    } catch (error) {
      this.reader.replaceChildren(el("p", { class: "hint" }, `Could not read this version: ${message(error)}`));
      return;
    }
    if (this.selected !== version.id || doc !== this.doc) return;
    const lines = versionDiff(this.currentText(doc), text);
    const { added, removed } = changeCount(lines);
    const summary =
      added + removed === 0
        ? "Same text as now."
        : `Restoring brings back ${added} line${added === 1 ? "" : "s"} and removes ${removed}.`;
    const restore = el("button", { class: "primary", "data-testid": "restore-version" }, "Restore this version");
    restore.addEventListener("click", () => void this.restore(version));
    const view = el(
      "pre",
      { class: "version-text", "data-testid": "version-text", "aria-readonly": "true" },
      ...lines.map((line) => el("div", { class: `diff-line diff-${line.kind}`, "data-diff": line.kind }, line.text || " ")),
    );
    this.reader.replaceChildren(
      el("div", { class: "reader-head" }, el("strong", {}, versionLabel(version)), el("span", { class: "hint", "data-testid": "diff-summary" }, summary)),
      view,
      restore,
    );
  }

  private async restore(version: Version): Promise<void> {
    const doc = this.doc;
    if (doc === null) return;
    const go = await askConfirm({
      title: "Restore this version",
      message: `Make the document read as it did at ${formatTime(version.createdMs)}? Everyone editing it sees the change; the current text is kept as a version, so you can go back.`,
      confirm: "Restore",
    });
    if (!go) return;
    try {
      await this.transport.restoreVersion(doc, version.id);
    } catch (error) {
      await tell("Restore failed", message(error));
      return;
    }
    this.selected = null;
    this.reader.replaceChildren();
    await this.refresh();
  }

  private async nameVersion(): Promise<void> {
    const doc = this.doc;
    if (doc === null) return;
    const name = await askText({
      title: "Name this version",
      label: "Name",
      value: "",
      confirm: "Save version",
      validate: (value) => (value.trim() === "" ? "A version needs a name." : value.length > 100 ? "Keep it under 100 characters." : null),
    });
    if (name === null) return;
    try {
      await this.transport.createVersion(doc, name);
    } catch (error) {
      await tell("Could not save the version", message(error));
      return;
    }
    await this.refresh();
  }
}

/** How often an open panel asks for the list again. */
const REFRESH_MS = 20_000;

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
