// The application: first-run settings, then the workspace — sidebar, tabs (one channel each
// over the one connection), the editor, the status bar — and the keyboard shortcuts.

import { createEditor, type Editor } from "./editor/editor";
import type { ConnectionState, DocState, Settings } from "./state/types";
import { DocBridge, flushPushes } from "./sync/bridge";
import type { Transport } from "./sync/transport";
import { INDEX_DOC, Workspace } from "./sync/workspace";
import { el } from "./views/dom";
import { DEFAULT_SETTINGS, renderSettings } from "./views/settings";
import { askText, dialogOpen, tell } from "./views/dialog";
import { HistoryPanel, message } from "./views/history";
import { requireTitle, Sidebar } from "./views/sidebar";
import { StatusBar } from "./views/statusbar";
import { TrashView } from "./views/trash";
import type { ImportedFile } from "./state/types";

interface Tab {
  bridge: DocBridge;
  editor: Editor;
  pane: HTMLElement;
  tab: HTMLElement;
}

export class App {
  private settings: Settings = DEFAULT_SETTINGS;
  private index: DocBridge | null = null;
  private workspace: Workspace | null = null;
  private sidebar: Sidebar | null = null;
  private readonly tabs = new Map<string, Tab>();
  private order: string[] = [];
  private active: string | null = null;
  private readonly docStates = new Map<string, DocState>();
  private readonly status: StatusBar;
  private readonly tabStrip = el("div", { class: "tabs", "data-testid": "tabs" });
  private readonly panes = el("div", { class: "panes" });
  private readonly settingsRoot = el("div", { class: "settings-root" });
  private readonly history: HistoryPanel;
  private trash: TrashView | null = null;
  private readonly historyButton = el("button", { class: "small toolbar-button", "data-testid": "show-history", title: "History (Ctrl+Shift+H)" }, "History");
  private readonly editorArea = el("div", { class: "editor-area" });

  constructor(
    private readonly root: HTMLElement,
    private readonly transport: Transport,
  ) {
    this.status = new StatusBar({
      fixSettings: () => this.showSettings(true),
      trust: (fingerprint) => void this.transport.trustFingerprint(fingerprint),
    });
    this.history = new HistoryPanel(transport, (doc) => this.tabs.get(doc)?.bridge.text.toString() ?? "");
    this.historyButton.addEventListener("click", () => this.onCommand("history"));
    this.editorArea.append(this.panes, this.history.root);
  }

  async start(): Promise<void> {
    await this.transport.onConnection((state) => this.status.showConnection(state));
    await this.transport.onRemoteUpdate((doc, update) => this.bridge(doc)?.applyRemote(update));
    await this.transport.onAwareness((doc, states) => {
      this.bridge(doc)?.applyAwareness(states);
      if (doc === this.active) this.status.showPeople(this.tabs.get(doc)?.bridge.people() ?? []);
    });
    await this.transport.onDocState((doc, state) => {
      if (state.kind === "failed" && state.code === 4410 && this.tabs.has(doc)) {
        // Someone moved it to the trash: its tab goes, as it did from the list.
        void this.closeTab(doc);
        return;
      }
      this.docStates.set(doc, state);
      if (doc === this.active) this.status.showDoc(state);
      this.tabs.get(doc)?.tab.setAttribute("data-state", state.kind);
    });
    await this.transport.onMenu((item) => this.onCommand(item));
    await this.transport.onQuitRequested(flushPushes);
    await this.transport.onFilesDropped((paths) => void this.importDropped(paths));
    document.addEventListener("keydown", (event) => this.onKey(event));

    const saved = await this.transport.getSettings();
    if (saved === null) {
      this.showSettings(false);
      return;
    }
    this.settings = saved;
    await this.showWorkspace();
  }

  private bridge(doc: string): DocBridge | undefined {
    return doc === INDEX_DOC ? (this.index ?? undefined) : this.tabs.get(doc)?.bridge;
  }

  private showSettings(cancellable: boolean): void {
    this.root.replaceChildren(this.settingsRoot);
    renderSettings(
      this.settingsRoot,
      this.settings,
      async (next) => {
        await this.transport.saveSettings(next);
        this.settings = next;
        await this.showWorkspace();
      },
      cancellable ? () => void this.showWorkspace() : null,
    );
  }

  private async showWorkspace(): Promise<void> {
    if (this.index === null) {
      this.index = new DocBridge(INDEX_DOC, this.transport);
      await this.index.start();
      this.workspace = new Workspace(this.index.ydoc);
      this.sidebar = new Sidebar(this.workspace, {
        open: (id) => void this.openDoc(id),
        create: () => this.onCommand("new"),
        trash: (id) => void this.trashDoc(id),
        showTrash: () => this.onCommand("trash"),
      });
      this.trash = new TrashView(
        this.transport,
        this.workspace,
        () => {
          this.editorArea.hidden = false;
        },
        () => this.localOnly(),
      );
      this.workspace.onChange(() => this.refreshTitles());
    }
    const toolbar = el("div", { class: "toolbar" }, this.tabStrip, this.historyButton);
    const main = el("main", { class: "main" }, toolbar, this.editorArea, this.trash!.root);
    this.root.replaceChildren(el("div", { class: "layout" }, this.sidebar!.root, main), this.status.root);
    this.status.showConnection(await this.transport.connectionState());
    for (const tab of this.tabs.values()) this.setUser(tab.bridge);
  }

  private setUser(bridge: DocBridge): void {
    bridge.awareness.setLocalStateField("user", { name: this.settings.displayName, color: this.settings.color });
  }

  async openDoc(id: string): Promise<void> {
    if (this.tabs.has(id)) {
      this.activate(id);
      return;
    }
    const bridge = new DocBridge(id, this.transport);
    await bridge.start();
    this.setUser(bridge);
    const pane = el("div", { class: "pane", "data-doc": id });
    this.panes.append(pane);
    const editor = createEditor(pane, bridge);
    const close = el("button", { class: "small", title: "Close tab (Ctrl+W)" }, "×");
    const tab = el("div", { class: "tab", "data-doc": id, "data-testid": "tab" }, el("span", {}, this.titleOf(id)), close);
    tab.addEventListener("click", () => this.activate(id));
    close.addEventListener("click", (event) => {
      event.stopPropagation();
      void this.closeTab(id);
    });
    this.tabStrip.append(tab);
    this.tabs.set(id, { bridge, editor, pane, tab });
    this.order.push(id);
    this.activate(id);
  }

  private titleOf(id: string): string {
    return this.workspace?.title(id) ?? id;
  }

  private refreshTitles(): void {
    for (const [id, tab] of this.tabs) {
      const label = tab.tab.querySelector("span");
      if (label) label.textContent = this.titleOf(id);
    }
    if (this.active) this.setTitle(`${this.titleOf(this.active)} — Quire`);
  }

  /** Names the document in the window title (native) and the page title (what tests read). */
  private setTitle(title: string): void {
    document.title = title;
    void this.transport.setTitle(title);
  }

  private activate(id: string): void {
    this.active = id;
    this.trash?.hide();
    this.editorArea.hidden = false;
    if (this.history.visible) void this.history.show(id);
    for (const [docId, tab] of this.tabs) {
      const on = docId === id;
      tab.pane.hidden = !on;
      tab.tab.classList.toggle("active", on);
    }
    const tab = this.tabs.get(id);
    tab?.editor.view.focus();
    this.sidebar?.render(id);
    this.status.showDoc(this.docStates.get(id) ?? null);
    this.status.showPeople(tab?.bridge.people() ?? []);
    this.setTitle(`${this.titleOf(id)} — Quire`);
  }

  async closeTab(id: string): Promise<void> {
    const tab = this.tabs.get(id);
    if (!tab) return;
    this.tabs.delete(id);
    const position = this.order.indexOf(id);
    this.order = this.order.filter((d) => d !== id);
    tab.editor.destroy();
    tab.pane.remove();
    tab.tab.remove();
    await tab.bridge.close();
    const next = this.order[Math.min(position, this.order.length - 1)];
    if (next) this.activate(next);
    else {
      this.active = null;
      this.history.hide();
      this.status.showDoc(null);
      this.setTitle("Quire");
    }
  }

  private async createDoc(): Promise<void> {
    const title = await askText({
      title: "New document",
      label: "Title",
      value: "Untitled",
      confirm: "Create",
      validate: requireTitle,
    });
    if (title !== null && this.workspace) await this.openDoc(this.workspace.create(title));
  }

  private async localOnly(): Promise<boolean> {
    return (await this.transport.connectionState()).kind === "localOnly";
  }

  /** Moves a document to the server's trash (without a server, only the index's), then out
   * of the workspace list. */
  private async trashDoc(id: string): Promise<void> {
    try {
      if (!(await this.localOnly())) await this.transport.trashDoc(id);
    } catch (error) {
      await tell("Could not move the document to the trash", message(error));
      return;
    }
    await this.closeTab(id);
    this.workspace?.moveToTrash(id);
    if (this.trash?.visible) await this.trash.refresh();
  }

  private async showTrash(): Promise<void> {
    if (!this.trash) return;
    this.editorArea.hidden = true;
    await this.trash.show();
  }

  private async exportActive(): Promise<void> {
    if (!this.active) {
      await tell("Nothing to export", "Open a document first.");
      return;
    }
    try {
      const path = await this.transport.exportMarkdown(this.active, this.titleOf(this.active));
      if (path !== null) this.status.notice(`Exported to ${path}`);
    } catch (error) {
      await tell("Export failed", message(error));
    }
  }

  private async importPicked(): Promise<void> {
    try {
      await this.importFiles(await this.transport.importMarkdown());
    } catch (error) {
      await tell("Import failed", message(error));
    }
  }

  private async importDropped(paths: string[]): Promise<void> {
    if (this.workspace === null || paths.length === 0) return;
    try {
      await this.importFiles(await this.transport.readMarkdownFiles(paths));
    } catch (error) {
      await tell("Import failed", message(error));
    }
  }

  /** Each file becomes a new document, titled after the file, and opens in a tab. */
  private async importFiles(files: ImportedFile[]): Promise<void> {
    for (const file of files) {
      if (!this.workspace) return;
      const id = this.workspace.create(file.name);
      await this.openDoc(id);
      this.tabs.get(id)?.bridge.text.insert(0, file.text);
    }
    if (files.length > 0) this.status.notice(`Imported ${files.length} file${files.length === 1 ? "" : "s"}`);
  }

  private cycle(step: number): void {
    if (this.order.length === 0 || this.active === null) return;
    const at = this.order.indexOf(this.active);
    const next = this.order[(at + step + this.order.length) % this.order.length];
    if (next) this.activate(next);
  }

  private onCommand(item: string): void {
    switch (item) {
      case "new": {
        void this.createDoc();
        break;
      }
      case "close-tab":
        if (this.active) void this.closeTab(this.active);
        break;
      case "next-tab":
        this.cycle(1);
        break;
      case "previous-tab":
        this.cycle(-1);
        break;
      case "settings":
        this.showSettings(true);
        break;
      case "history":
        if (this.history.visible) this.history.hide();
        else if (this.active) void this.history.show(this.active);
        break;
      case "trash":
        void this.showTrash();
        break;
      case "export":
        void this.exportActive();
        break;
      case "import":
        void this.importPicked();
        break;
    }
  }

  private onKey(event: KeyboardEvent): void {
    const mod = event.ctrlKey || event.metaKey;
    if (!mod || dialogOpen()) return;
    let command: string | null = null;
    if (event.key === "n" || event.key === "N") command = "new";
    else if (event.key === "w" || event.key === "W") command = "close-tab";
    else if ((event.key === "Tab" && !event.shiftKey) || event.key === "PageDown") command = "next-tab";
    else if ((event.key === "Tab" && event.shiftKey) || event.key === "PageUp") command = "previous-tab";
    else if (event.key === ",") command = "settings";
    else if ((event.key === "h" || event.key === "H") && event.shiftKey) command = "history";
    else if ((event.key === "e" || event.key === "E") && event.shiftKey) command = "export";
    else if ((event.key === "o" || event.key === "O") && !event.shiftKey) command = "import";
    if (command) {
      event.preventDefault();
      this.onCommand(command);
    }
  }

  /** For end-to-end tests and diagnostics: the connection label shown. */
  connectionLabel(): string {
    return this.status.root.querySelector("[data-testid=connection-status]")?.textContent ?? "";
  }
}

export type { ConnectionState };
