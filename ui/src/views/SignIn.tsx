/* Sign-in for the gateway's `token` auth mode: paste the bearer token that
 * `cmbtask token create USER` printed. */
import { useState } from "react";
import { api, ApiError, setToken } from "../api/http";
import type { Me } from "../api/http";

export function SignIn({ onSignedIn }: { onSignedIn: (me: Me) => void }) {
  const [token, setTokenText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setToken(token.trim());
    try {
      onSignedIn(await api.me());
    } catch (err) {
      setToken(null);
      setError(err instanceof ApiError && err.status === 401 ? "That token was not accepted." : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="signin">
      <form onSubmit={(e) => void submit(e)} aria-labelledby="signin-title">
        <h1 id="signin-title">Sign in to cmbtask</h1>
        <p className="muted">
          This gateway needs a token. Ask an administrator, or run <code>cmbtask token create YOUR_NAME</code>.
        </p>
        <label className="field">
          <span>Token</span>
          <input
            type="password"
            autoComplete="current-password"
            value={token}
            onChange={(e) => setTokenText(e.target.value)}
            required
            autoFocus
          />
        </label>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy || !token.trim()}>
          Sign in
        </button>
      </form>
    </main>
  );
}
