// The settings view: server URL, token or local-only mode, display name and colour.

import { validateServerUrl } from "../state/format";
import type { Settings } from "../state/types";
import { el } from "./dom";

export const DEFAULT_SETTINGS: Settings = {
  serverUrl: "wss://localhost:7700/ws",
  token: "",
  localOnly: false,
  displayName: "",
  color: "#3b82f6",
  trustedFingerprint: null,
};

/** Renders the form; `onSave` gets validated settings and may throw to show an error. */
export function renderSettings(
  root: HTMLElement,
  current: Settings,
  onSave: (settings: Settings) => Promise<void>,
  onCancel: (() => void) | null,
): void {
  const url = el("input", { id: "server-url", "data-testid": "server-url", type: "text", value: current.serverUrl });
  const token = el("textarea", { id: "token", "data-testid": "token", rows: "3" });
  token.value = current.token;
  const localOnly = el("input", { id: "local-only", "data-testid": "local-only", type: "checkbox" });
  localOnly.checked = current.localOnly;
  const name = el("input", { id: "display-name", "data-testid": "display-name", type: "text", value: current.displayName });
  const color = el("input", { id: "color", "data-testid": "color", type: "color", value: current.color });
  const error = el("p", { class: "error", "data-testid": "settings-error", role: "alert" });
  const save = el("button", { type: "submit", "data-testid": "save-settings" }, "Save and connect");
  const form = el(
    "form",
    { class: "settings", "data-testid": "settings" },
    el("h1", {}, "Quire settings"),
    el("label", { for: "server-url" }, "Server URL"),
    url,
    el("label", { for: "token" }, "Access token"),
    token,
    el("label", { class: "inline" }, localOnly, " Local only (no server)"),
    el("label", { for: "display-name" }, "Display name"),
    name,
    el("label", { for: "color" }, "Colour"),
    color,
    error,
    el("div", { class: "buttons" }, save),
  );
  if (onCancel) {
    const cancel = el("button", { type: "button", "data-testid": "cancel-settings" }, "Cancel");
    cancel.addEventListener("click", onCancel);
    form.querySelector(".buttons")?.append(cancel);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next: Settings = {
      serverUrl: url.value.trim(),
      token: token.value.trim(),
      localOnly: localOnly.checked,
      displayName: name.value.trim() || "Anonymous",
      color: color.value,
      trustedFingerprint: current.trustedFingerprint,
    };
    if (!next.localOnly) {
      const problem = validateServerUrl(next.serverUrl);
      if (problem) {
        error.textContent = problem;
        return;
      }
    }
    error.textContent = "";
    onSave(next).catch((e: unknown) => {
      error.textContent = e instanceof Error ? e.message : String(e);
    });
  });
  root.replaceChildren(form);
}
