// The status bar: the connection, the active document's sync state, who else is here.

import { describeConnection, describeDoc } from "../state/format";
import type { ConnectionState, DocState } from "../state/types";
import { askConfirm } from "./dialog";
import { el } from "./dom";

export interface StatusActions {
  fixSettings(): void;
  trust(fingerprint: string): void;
}

export class StatusBar {
  readonly root = el("footer", { class: "statusbar" });
  private readonly connection = el("span", { class: "connection", "data-testid": "connection-status" });
  private readonly action = el("span", { class: "action" });
  private readonly doc = el("span", { class: "doc", "data-testid": "doc-status" });
  private readonly people = el("span", { class: "people", "data-testid": "people" });
  private readonly note = el("span", { class: "note", "data-testid": "status-note", role: "status" });
  private noteTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly actions: StatusActions) {
    this.root.append(this.connection, this.action, this.doc, this.note, this.people);
  }

  /** A passing remark (an export's path, say), cleared after a while. */
  notice(text: string): void {
    this.note.textContent = text;
    if (this.noteTimer !== null) clearTimeout(this.noteTimer);
    this.noteTimer = setTimeout(() => {
      this.note.textContent = "";
      this.noteTimer = null;
    }, 8000);
  }

  showConnection(state: ConnectionState): void {
    const label = describeConnection(state);
    this.connection.textContent = label.text;
    this.connection.dataset.tone = label.tone;
    this.connection.dataset.kind = state.kind;
    this.action.replaceChildren();
    if (state.kind === "authFailed" || state.kind === "refused") {
      const fix = el("button", { "data-testid": "fix-settings" }, "Fix settings");
      fix.addEventListener("click", () => this.actions.fixSettings());
      this.action.append(fix);
    }
    if (state.kind === "untrusted" && state.fingerprint) {
      const fingerprint = state.fingerprint;
      const trust = el("button", { "data-testid": "trust-cert", title: fingerprint }, "Trust this certificate…");
      trust.addEventListener("click", async () => {
        const trusted = await askConfirm({
          title: "Trust this server's certificate?",
          message: `Its SHA-256 fingerprint is ${fingerprint}. Trust it only if it is the one your server printed at start.`,
          confirm: "Trust",
          danger: true,
        });
        if (trusted) this.actions.trust(fingerprint);
      });
      this.action.append(trust);
    }
  }

  showDoc(state: DocState | null): void {
    if (state === null) {
      this.doc.textContent = "";
      return;
    }
    const label = describeDoc(state);
    this.doc.textContent = label.text;
    this.doc.dataset.tone = label.tone;
  }

  showPeople(people: { name: string; color: string }[]): void {
    this.people.replaceChildren(
      ...people.map((p) => el("span", { class: "person", style: `border-color: ${p.color}` }, p.name)),
    );
  }
}
