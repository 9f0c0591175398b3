/* Small React hooks: hash routing, the theme, a ticking clock. */
import { useEffect, useState } from "react";

export type Route = { page: "sessions" } | { page: "session"; id: string } | { page: "settings" };

export function parseRoute(hash: string): Route {
  if (/^#\/settings\b/.test(hash)) return { page: "settings" };
  const match = /^#\/sessions\/([^/?#]+)/.exec(hash);
  return match ? { page: "session", id: decodeURIComponent(match[1]) } : { page: "sessions" };
}

export function sessionHref(id: string): string {
  return `#/sessions/${encodeURIComponent(id)}`;
}

/** Hash routing: the gateway serves one index.html at `/`, so paths stay in the hash. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const update = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return route;
}

export type Theme = "system" | "light" | "dark";
const THEME_KEY = "cmbtask.theme";

export function useTheme(): [Theme, () => void] {
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem(THEME_KEY) as Theme) ?? "system");
  useEffect(() => {
    if (theme === "system") document.documentElement.removeAttribute("data-theme");
    else document.documentElement.setAttribute("data-theme", theme);
    localStorage.setItem(THEME_KEY, theme);
  }, [theme]);
  const next = () => setTheme((t) => (t === "system" ? "light" : t === "light" ? "dark" : "system"));
  return [theme, next];
}

/** Current time, updated every `ms` (for countdowns). */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}
