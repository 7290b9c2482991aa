import { afterEach, describe, expect, it } from "vitest";

import { askConfirm, askText, dialogOpen } from "../src/views/dialog";
import { requireTitle } from "../src/views/sidebar";

function key(name: string, init: KeyboardEventInit = {}): void {
  document.activeElement?.dispatchEvent(new KeyboardEvent("keydown", { key: name, bubbles: true, ...init }));
}

function dialog(): HTMLFormElement {
  const form = document.querySelector<HTMLFormElement>("[data-testid=dialog]");
  if (!form) throw new Error("no dialog open");
  return form;
}

function input(): HTMLInputElement {
  return dialog().querySelector<HTMLInputElement>("[data-testid=dialog-input]")!;
}

afterEach(() => {
  document.body.replaceChildren();
});

describe("the text dialog", () => {
  it("starts with the value selected and answers the trimmed text on submit", async () => {
    const answer = askText({ title: "New document", label: "Title", value: "Untitled", confirm: "Create" });
    expect(document.activeElement).toBe(input());
    expect(input().selectionStart).toBe(0);
    expect(input().selectionEnd).toBe("Untitled".length);
    input().value = "  Agenda  ";
    dialog().requestSubmit();
    expect(await answer).toBe("Agenda");
    expect(dialogOpen()).toBe(false);
    expect(document.querySelector("[data-testid=dialog]")).toBeNull();
  });

  it("answers null on Escape and gives the focus back", async () => {
    const before = document.createElement("button");
    document.body.append(before);
    before.focus();
    const answer = askText({ title: "Rename", label: "Title", value: "Notes", confirm: "Rename" });
    key("Escape");
    expect(await answer).toBeNull();
    expect(document.activeElement).toBe(before);
  });

  it("stays open with a message while the value is refused", async () => {
    const answer = askText({ title: "Rename", label: "Title", value: "x", confirm: "Rename", validate: requireTitle });
    input().value = "   ";
    dialog().requestSubmit();
    expect(dialogOpen()).toBe(true);
    expect(dialog().querySelector("[data-testid=dialog-error]")!.textContent).toBe("A title cannot be empty.");
    input().value = "Plans";
    dialog().requestSubmit();
    expect(await answer).toBe("Plans");
  });

  it("keeps Tab inside the dialog", () => {
    void askText({ title: "Rename", label: "Title", confirm: "Rename" });
    const confirm = dialog().querySelector<HTMLButtonElement>("[data-testid=dialog-confirm]")!;
    confirm.focus();
    const tab = new KeyboardEvent("keydown", { key: "Tab", bubbles: true, cancelable: true });
    confirm.dispatchEvent(tab);
    expect(tab.defaultPrevented).toBe(true);
    expect(document.activeElement).toBe(input());
  });
});

describe("the confirmation dialog", () => {
  it("puts the focus on Cancel for a destructive action", async () => {
    const answer = askConfirm({ title: "Remove", message: "Remove “Notes”?", confirm: "Remove", danger: true });
    expect((document.activeElement as HTMLElement).dataset.testid).toBe("dialog-cancel");
    (document.activeElement as HTMLButtonElement).click();
    expect(await answer).toBe(false);
  });

  it("answers true when confirmed", async () => {
    const answer = askConfirm({ title: "Remove", message: "Remove “Notes”?", confirm: "Remove", danger: true });
    dialog().querySelector<HTMLButtonElement>("[data-testid=dialog-confirm]")!.click();
    expect(await answer).toBe(true);
  });

  it("a second request cancels the first", async () => {
    const first = askConfirm({ title: "One", message: "1", confirm: "OK" });
    const second = askConfirm({ title: "Two", message: "2", confirm: "OK" });
    expect(await first).toBe(false);
    expect(document.querySelectorAll("[data-testid=dialog]").length).toBe(1);
    dialog().requestSubmit();
    expect(await second).toBe(true);
  });
});
