/* The user's own account settings: LLM provider keys and default budgets.
 *
 * Keys are write-only: the page sends one and clears the field; the gateway
 * only ever says which providers have a key. Budgets and price overrides are
 * defaults for the user's new tasks (a task's own budget wins). */
import { useEffect, useState } from "react";
import { api, ApiError } from "../api/http";
import type { ProviderKeyList, UserSettings } from "../api/protocol";
import { BudgetFields, numberOrNull } from "../components/BudgetFields";

function message(err: unknown): string {
  return err instanceof ApiError ? err.message : String(err);
}

export function SettingsPage() {
  return (
    <main className="page settings">
      <h1>Settings</h1>
      <KeysCard />
      <BudgetCard />
    </main>
  );
}

export function KeysCard() {
  const [keys, setKeys] = useState<ProviderKeyList | null>(null);
  const [provider, setProvider] = useState("openai");
  const [value, setValue] = useState("");
  const [status, setStatus] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const reload = () => api.listKeys().then(setKeys, (err: unknown) => setError(message(err)));
  useEffect(() => void reload(), []);

  async function save(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setStatus(null);
    try {
      await api.setKey(provider, value.trim());
      setStatus(`Stored your ${provider} key.`);
      await reload();
    } catch (err) {
      setError(message(err));
    } finally {
      setValue(""); // never keep a key in the page longer than the request
    }
  }

  async function remove(name: string) {
    setError(null);
    try {
      await api.deleteKey(name);
      setStatus(`Deleted your ${name} key.`);
      await reload();
    } catch (err) {
      setError(message(err));
    }
  }

  const providers = Object.entries(keys?.providers ?? { openai: "OPENAI_API_KEY" });
  return (
    <section className="card" aria-labelledby="keys-title">
      <h2 id="keys-title">Provider keys</h2>
      <p className="muted">
        Your keys are stored encrypted and reach only your own tasks, as environment variables.
        {keys &&
          (keys.gateway_fallback
            ? " Where you store none, the server's own key is used."
            : " Without one, your tasks have none.")}
      </p>
      {keys && keys.items.length === 0 && <p data-testid="no-keys">No keys stored.</p>}
      {keys && keys.items.length > 0 && (
        <ul className="keys" aria-label="Stored keys">
          {keys.items.map((item) => (
            <li key={item.provider} data-provider={item.provider}>
              <strong>{item.provider}</strong> <code>{item.env_var}</code>{" "}
              <span className="muted">set {new Date(item.updated_at).toLocaleString()}</span>{" "}
              <button type="button" className="small danger" onClick={() => void remove(item.provider)}>
                Delete {item.provider} key
              </button>
            </li>
          ))}
        </ul>
      )}
      <form className="row-fields" onSubmit={(e) => void save(e)}>
        <label className="field">
          <span>Provider</span>
          <select value={provider} onChange={(e) => setProvider(e.target.value)}>
            {providers.map(([name, variable]) => (
              <option key={name} value={name}>
                {name} ({variable})
              </option>
            ))}
          </select>
        </label>
        <label className="field">
          <span>Key</span>
          <input
            type="password"
            autoComplete="off"
            spellCheck={false}
            value={value}
            onChange={(e) => setValue(e.target.value)}
            placeholder="sk-…"
          />
        </label>
        <button type="submit" disabled={value.trim().length === 0}>
          Save key
        </button>
      </form>
      {status && <p role="status">{status}</p>}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

export function BudgetCard() {
  const [cost, setCost] = useState("");
  const [tokens, setTokens] = useState("");
  const [prices, setPrices] = useState("{}");
  const [status, setStatus] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  function show(settings: UserSettings) {
    setCost(settings.max_cost_usd == null ? "" : String(settings.max_cost_usd));
    setTokens(settings.max_tokens == null ? "" : String(settings.max_tokens));
    setPrices(JSON.stringify(settings.prices ?? {}, null, 2));
  }
  useEffect(() => void api.getSettings().then(show, (err: unknown) => setError(message(err))), []);

  async function save(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setStatus(null);
    let parsed: UserSettings["prices"];
    try {
      parsed = JSON.parse(prices || "{}") as UserSettings["prices"];
    } catch {
      setError("Prices must be a JSON object.");
      return;
    }
    try {
      show(
        await api.putSettings({ max_cost_usd: numberOrNull(cost), max_tokens: numberOrNull(tokens), prices: parsed }),
      );
      setStatus("Saved. New tasks use these defaults.");
    } catch (err) {
      setError(message(err));
    }
  }

  return (
    <form className="card" onSubmit={(e) => void save(e)} aria-labelledby="budget-title">
      <h2 id="budget-title">Default budget for new tasks</h2>
      <p className="muted">A task that spends more is stopped and ends failed; its files are kept.</p>
      <div className="row-fields">
        <BudgetFields
          cost={cost}
          tokens={tokens}
          onCost={setCost}
          onTokens={setTokens}
          costLabel="Max cost (USD)"
          placeholder="none"
        />
      </div>
      <label className="field">
        <span>Price overrides (USD per million tokens, by model)</span>
        <textarea
          rows={4}
          value={prices}
          onChange={(e) => setPrices(e.target.value)}
          placeholder='{"gpt-4o": {"prompt_usd_per_mtok": 2.5, "completion_usd_per_mtok": 10}}'
        />
      </label>
      <button type="submit">Save defaults</button>
      {status && <p role="status">{status}</p>}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}
