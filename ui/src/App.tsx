/* The app shell: who is signed in, the header with the always-visible
 * connection state and theme toggle, the routed page, and the approvals dock. */
import { useCallback, useEffect, useState } from "react";
import { api, ApiError, onUnauthorized, setToken, type Me } from "./api/http";
import type { ModeInfo } from "./api/protocol";
import { ApprovalsDock } from "./components/ApprovalsDock";
import { ConnectionBadge } from "./components/ConnectionBadge";
import { useRoute, useTheme } from "./hooks";
import { connection } from "./state/shared";
import { SessionList } from "./views/SessionList";
import { SessionPage } from "./views/SessionPage";
import { SettingsPage } from "./views/SettingsPage";
import { SignIn } from "./views/SignIn";

type Auth = { status: "loading" } | { status: "signed-out"; reason?: string } | { status: "signed-in"; me: Me };

export function App() {
  const [auth, setAuth] = useState<Auth>({ status: "loading" });
  const [modes, setModes] = useState<ModeInfo[]>([]);
  const route = useRoute();
  const [theme, nextTheme] = useTheme();

  const signOut = useCallback(() => {
    setToken(null);
    setAuth({ status: "signed-out" });
  }, []);
  const unauthorized = useCallback(() => setAuth({ status: "signed-out", reason: "Please sign in." }), []);

  useEffect(() => {
    onUnauthorized(unauthorized);
    api.me().then(
      (me) => setAuth({ status: "signed-in", me }),
      (err: unknown) => {
        if (err instanceof ApiError && err.status === 401) return; // the handler showed sign-in
        connection.set({ state: "offline", info: { attempt: 0 } });
        setAuth({ status: "signed-out", reason: String(err) });
      },
    );
  }, [unauthorized]);

  useEffect(() => {
    if (auth.status === "signed-in") void api.modes().then(setModes, () => undefined);
  }, [auth.status]);

  if (auth.status === "loading") return <p className="muted center">Loading…</p>;
  if (auth.status === "signed-out") {
    return <SignIn onSignedIn={(me) => setAuth({ status: "signed-in", me })} />;
  }
  const { me } = auth;
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <a className="brand" href="#/">
          cmbtask
        </a>
        <ConnectionBadge />
        <span className="spacer" />
        <button type="button" className="small" onClick={nextTheme} aria-label={`Theme: ${theme}. Change theme`}>
          {theme === "dark" ? "☾ Dark" : theme === "light" ? "☀ Light" : "◐ System"}
        </button>
        <a className="small" href="#/settings">
          Settings
        </a>
        <span className="user" data-testid="user">
          {me.user}
        </span>
        {me.auth_mode === "token" && (
          <button type="button" className="small" onClick={signOut}>
            Sign out
          </button>
        )}
      </header>
      <div id="main">
        {route.page === "session" ? (
          <SessionPage key={route.id} id={route.id} modes={modes} onUnauthorized={unauthorized} />
        ) : route.page === "settings" ? (
          <SettingsPage />
        ) : (
          <SessionList modes={modes} />
        )}
      </div>
      <ApprovalsDock />
    </>
  );
}
