// The app's own dialogs, in place of the webview's prompt() and confirm() (a grey box titled
// after the page's URL). One at a time, modal over the window, keyboard first: the field (or
// the default button) has focus, Enter confirms, Escape or a click outside cancels, Tab stays
// inside, and focus goes back where it was when the dialog closes.

import { el } from "./dom";

export interface TextRequest {
  title: string;
  label: string;
  value?: string;
  confirm: string;
  /** An error message for a value that cannot be accepted, or null. */
  validate?(value: string): string | null;
}

export interface ConfirmRequest {
  title: string;
  message: string;
  confirm: string;
  /** The action destroys something: its button says so, and Cancel has the focus. */
  danger?: boolean;
}

/** Asks for a line of text; resolves to it (trimmed), or to null when cancelled. */
export function askText(request: TextRequest): Promise<string | null> {
  const input = el("input", { type: "text", "data-testid": "dialog-input", "aria-label": request.label });
  input.value = request.value ?? "";
  const error = el("p", { class: "dialog-error", "data-testid": "dialog-error", role: "alert" });
  const label = el("label", { class: "dialog-label" }, request.label, input);
  return open<string | null>(request.title, [label, error], request.confirm, false, null, {
    initialFocus: input,
    accept() {
      const value = input.value.trim();
      const problem = request.validate?.(value) ?? null;
      error.textContent = problem ?? "";
      return problem === null ? { value } : null;
    },
    afterOpen() {
      input.select();
    },
  });
}

/** Asks to go ahead with an action; resolves to true only if confirmed. */
export function askConfirm(request: ConfirmRequest): Promise<boolean> {
  const message = el("p", { class: "dialog-message", "data-testid": "dialog-message" }, request.message);
  return open<boolean>(request.title, [message], request.confirm, request.danger ?? false, false, {
    accept: () => ({ value: true }),
  });
}

/** Tells the user something (an error, say) with one OK button; resolves when dismissed. */
export async function tell(title: string, message: string): Promise<void> {
  const text = el("p", { class: "dialog-message", "data-testid": "dialog-message" }, message);
  await open<boolean>(title, [text], "OK", false, false, {
    accept: () => ({ value: true }),
    afterOpen() {
      document.querySelector<HTMLElement>("[data-testid=dialog-cancel]")?.setAttribute("hidden", "");
    },
  });
}

interface Behaviour<T> {
  initialFocus?: HTMLElement;
  /** The value to resolve with, or null to keep the dialog open (the input was refused). */
  accept(): { value: T } | null;
  afterOpen?(): void;
}

let current: { cancel(): void } | null = null;

function open<T>(
  title: string,
  body: HTMLElement[],
  confirmLabel: string,
  danger: boolean,
  cancelled: T,
  behaviour: Behaviour<T>,
): Promise<T> {
  // A second request (a shortcut pressed while one is open) replaces the first.
  current?.cancel();
  const returnFocus = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  const titleId = `dialog-title-${Math.random().toString(36).slice(2)}`;
  const confirm = el(
    "button",
    { class: danger ? "primary danger" : "primary", "data-testid": "dialog-confirm", type: "submit" },
    confirmLabel,
  );
  const cancel = el("button", { "data-testid": "dialog-cancel", type: "button" }, "Cancel");
  const form = el(
    "form",
    {
      class: "dialog",
      role: "dialog",
      "aria-modal": "true",
      "aria-labelledby": titleId,
      "data-testid": "dialog",
    },
    el("h2", { id: titleId }, title),
    ...body,
    el("div", { class: "dialog-buttons" }, cancel, confirm),
  );
  const backdrop = el("div", { class: "dialog-backdrop" }, form);

  return new Promise<T>((resolve) => {
    const finish = (value: T) => {
      if (current !== handle) return;
      current = null;
      backdrop.remove();
      document.removeEventListener("keydown", onKey, true);
      returnFocus?.focus();
      resolve(value);
    };
    const handle = { cancel: () => finish(cancelled) };
    current = handle;

    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        finish(cancelled);
      } else if (event.key === "Tab") {
        // Keep the focus inside the dialog.
        const stops = Array.from(form.querySelectorAll<HTMLElement>("input, button"));
        const first = stops[0];
        const last = stops[stops.length - 1];
        if (!first || !last) return;
        if (event.shiftKey && document.activeElement === first) {
          event.preventDefault();
          last.focus();
        } else if (!event.shiftKey && document.activeElement === last) {
          event.preventDefault();
          first.focus();
        }
      } else if ((event.ctrlKey || event.metaKey) && !event.altKey) {
        // The app's shortcuts (new, close tab, …) wait until the dialog is answered.
        event.stopPropagation();
      }
    };
    document.addEventListener("keydown", onKey, true);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const accepted = behaviour.accept();
      if (accepted) finish(accepted.value);
    });
    cancel.addEventListener("click", () => finish(cancelled));
    backdrop.addEventListener("mousedown", (event) => {
      if (event.target === backdrop) finish(cancelled);
    });

    document.body.append(backdrop);
    (behaviour.initialFocus ?? (danger ? cancel : confirm)).focus();
    behaviour.afterOpen?.();
  });
}

/** Whether a dialog is open (for the app's global shortcuts). */
export function dialogOpen(): boolean {
  return current !== null;
}
