// Light or dark, as the system prefers, following it when it changes. The colours themselves
// are variables in style.css, read by the app and the editor alike.

export type Theme = "light" | "dark";

const DARK = "(prefers-color-scheme: dark)";

/** Sets `root`'s theme from the system's preference now and whenever it changes. */
export function followSystemTheme(root: HTMLElement = document.documentElement): void {
  if (typeof window.matchMedia !== "function") {
    setTheme("light", root);
    return;
  }
  const query = window.matchMedia(DARK);
  const apply = () => setTheme(query.matches ? "dark" : "light", root);
  apply();
  query.addEventListener("change", apply);
}

export function setTheme(theme: Theme, root: HTMLElement = document.documentElement): void {
  root.dataset.theme = theme;
}
