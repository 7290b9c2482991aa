// What the history panel shows for a version: its text line by line, with the lines that
// differ from the current text marked (those only the version has, and those only the
// current text has), so a reader sees at a glance what restoring it would change.

import { diffLines } from "diff";

import type { Version } from "./types";

export type DiffKind = "same" | "onlyInVersion" | "onlyNow";

export interface DiffLine {
  kind: DiffKind;
  text: string;
}

/** The version's lines and the current text's, in order, each marked. */
export function versionDiff(current: string, version: string): DiffLine[] {
  const lines: DiffLine[] = [];
  // Every line ends with a newline here, so that the last line compares equal to the same
  // line followed by more.
  const ended = (text: string) => (text === "" || text.endsWith("\n") ? text : `${text}\n`);
  for (const part of diffLines(ended(current), ended(version))) {
    const kind: DiffKind = part.added ? "onlyInVersion" : part.removed ? "onlyNow" : "same";
    const body = part.value.endsWith("\n") ? part.value.slice(0, -1) : part.value;
    for (const text of body.split("\n")) lines.push({ kind, text });
  }
  return lines;
}

/** How many lines restoring would add and remove. */
export function changeCount(lines: DiffLine[]): { added: number; removed: number } {
  return {
    added: lines.filter((l) => l.kind === "onlyInVersion").length,
    removed: lines.filter((l) => l.kind === "onlyNow").length,
  };
}

/** A version's heading: its name, or what made it. */
export function versionLabel(version: Version): string {
  if (version.kind === "named") return version.name;
  if (version.kind === "beforeRestore") return "Before a restore";
  return "Automatic version";
}

/** "6 Dec 2026, 01:02" in the user's locale and time zone. */
export function formatTime(ms: number): string {
  return new Date(ms).toLocaleString(undefined, {
    day: "numeric",
    month: "short",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}
