/* Submit a task to the session: mode, engine, prompt, parameters as JSON,
 * timeout. Parameters are checked as JSON here; the gateway validates them. */
import { useState } from "react";
import { api, ApiError } from "../api/http";
import type { ModeInfo } from "../api/protocol";

const DEFAULT_PARAMS: Record<string, string> = {
  demo: JSON.stringify({ steps: 3, step_delay_s: 0.5, lines_per_step: 3, approve_plan: true }, null, 2),
  script: JSON.stringify({ code: "print('hello from cmbtask')" }, null, 2),
  cmbagent: "{}",
};

export function TaskForm({
  sessionId,
  modes,
  defaultMode,
  disabled,
}: {
  sessionId: string;
  modes: ModeInfo[];
  defaultMode: string;
  disabled: boolean;
}) {
  const [mode, setMode] = useState(defaultMode);
  const modeInfo = modes.find((m) => m.name === mode);
  const engines = modeInfo?.engines ?? ["demo", "script"];
  // an unavailable mode lacks its real engine (cmbagent); demo and script take any mode
  const engineUsable = (name: string) => modeInfo?.available !== false || name === "demo" || name === "script";
  const [engine, setEngine] = useState("demo");
  const [prompt, setPrompt] = useState("");
  const [params, setParams] = useState(DEFAULT_PARAMS.demo);
  const [timeout, setTimeoutS] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  function chooseEngine(next: string) {
    setEngine(next);
    setParams(DEFAULT_PARAMS[next] ?? "{}");
  }

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(params || "{}") as Record<string, unknown>;
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    } catch {
      setError("Parameters must be a JSON object.");
      return;
    }
    setBusy(true);
    try {
      await api.submitTask(sessionId, {
        engine,
        mode,
        prompt,
        params: parsed,
        timeout_s: timeout ? Number(timeout) : null,
      });
      setPrompt("");
    } catch (err) {
      setError(err instanceof ApiError ? describe(err) : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card task-form" onSubmit={(e) => void submit(e)} aria-labelledby="task-form-title">
      <h2 id="task-form-title">Run a task</h2>
      <div className="row-fields">
        <label className="field">
          <span>Mode</span>
          <select value={mode} onChange={(e) => setMode(e.target.value)}>
            {modes.map((m) => (
              <option key={m.name} value={m.name}>
                {m.title}
              </option>
            ))}
          </select>
        </label>
        <label className="field">
          <span>Engine</span>
          <select value={engine} onChange={(e) => chooseEngine(e.target.value)}>
            {engines.map((name) => (
              <option key={name} value={name} disabled={!engineUsable(name)}>
                {name}
                {engineUsable(name) ? "" : " (unavailable)"}
              </option>
            ))}
          </select>
        </label>
        <label className="field">
          <span>Timeout (s)</span>
          <input
            type="number"
            min={1}
            inputMode="numeric"
            value={timeout}
            onChange={(e) => setTimeoutS(e.target.value)}
            placeholder="none"
          />
        </label>
      </div>
      {modeInfo && (
        <p className="muted mode-info">
          {modeInfo.description}
          {modeInfo.available === false && modeInfo.unavailable_reason ? ` — ${modeInfo.unavailable_reason}` : ""}
        </p>
      )}
      <label className="field">
        <span>Prompt</span>
        <textarea
          rows={3}
          value={prompt}
          onChange={(e) => setPrompt(e.target.value)}
          placeholder="What should the agents do?"
        />
      </label>
      <label className="field">
        <span>Parameters (JSON)</span>
        <textarea
          className="mono"
          rows={5}
          value={params}
          spellCheck={false}
          onChange={(e) => setParams(e.target.value)}
        />
      </label>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <button type="submit" className="primary" disabled={busy || disabled}>
        Run task
      </button>
    </form>
  );
}

function describe(err: ApiError): string {
  if (Array.isArray(err.detail)) {
    const first = err.detail[0] as { msg?: string; loc?: unknown[] } | undefined;
    if (first?.msg) return `${err.message}: ${first.loc?.join(".") ?? ""} ${first.msg}`.trim();
  }
  return err.message;
}
