/* Submit a task to the session: mode, engine, prompt, parameters as JSON,
 * timeout. Parameters are checked as JSON here; the gateway validates them. */
import { useState } from "react";
import { BudgetFields, numberOrNull } from "../components/BudgetFields";
import { api, ApiError } from "../api/http";
import type { ModeInfo } from "../api/protocol";
import { IMPLEMENTATION, modeNote, pickEngine, pickMode } from "./modePicker";

const DEFAULT_PARAMS: Record<string, string> = {
  demo: JSON.stringify({ steps: 3, step_delay_s: 0.5, lines_per_step: 3, approve_plan: true }, null, 2),
  script: JSON.stringify({ code: "print('hello from cmbtask')" }, null, 2),
  cmbagent: "{}",
};

/** demo and script take any mode as a label. */
const LABEL_ENGINES = ["demo", "script"];

export interface EngineChoice {
  name: string;
  usable: boolean;
  /** why it cannot run this mode here (shown next to the disabled option) */
  reason: string | null;
}

/** The engines offered for a mode: those the gateway says can run it, and,
 * when the mode is unavailable, its real engine disabled with the reason. */
export function engineChoices(mode: ModeInfo | undefined): EngineChoice[] {
  const names = mode?.engines ?? LABEL_ENGINES;
  const usable = names.map((name) => ({ name, usable: true, reason: null }));
  if (mode && mode.available === false && !names.includes(IMPLEMENTATION)) {
    const reason = mode.unavailable_reason || "not available on this server";
    return [{ name: IMPLEMENTATION, usable: false, reason }, ...usable];
  }
  return usable;
}

/** One sentence on whether a later task of the session continues this mode's run. */
export function resumeNote(mode: ModeInfo): string {
  return mode.supports_resume
    ? "Resumable: the session's next task continues from the last completed step."
    : "Resume is not available for this mode.";
}

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
  // Until the user picks, the mode and engine follow the modes as they load.
  const [pickedMode, setMode] = useState<string | null>(null);
  const mode = pickedMode ?? pickMode(modes, defaultMode);
  const modeInfo = modes.find((m) => m.name === mode);
  const choices = engineChoices(modeInfo);
  const [pickedEngine, setEngine] = useState<string | null>(null);
  const engine = pickedEngine ?? pickEngine(modeInfo);
  const [prompt, setPrompt] = useState("");
  const [editedParams, setParams] = useState<string | null>(null);
  const params = editedParams ?? DEFAULT_PARAMS[engine] ?? "{}";
  const [timeout, setTimeoutS] = useState("");
  const [maxCost, setMaxCost] = useState("");
  const [maxTokens, setMaxTokens] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  function chooseEngine(next: string) {
    setEngine(next);
    setParams(DEFAULT_PARAMS[next] ?? "{}");
  }

  function chooseMode(next: string) {
    setMode(next);
    // an engine that cannot run the new mode would only be refused on submit
    const nextInfo = modes.find((m) => m.name === next);
    const offered = engineChoices(nextInfo);
    if (!offered.some((c) => c.name === engine && c.usable)) {
      chooseEngine(pickEngine(nextInfo));
    }
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
        max_cost_usd: numberOrNull(maxCost),
        max_tokens: numberOrNull(maxTokens),
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
          <select value={mode} onChange={(e) => chooseMode(e.target.value)}>
            {modes.map((m) => (
              <option key={m.name} value={m.name}>
                {m.title}
                {modeNote(m)}
              </option>
            ))}
          </select>
        </label>
        <label className="field">
          <span>Engine</span>
          <select value={engine} onChange={(e) => chooseEngine(e.target.value)}>
            {choices.map((choice) => (
              <option
                key={choice.name}
                value={choice.name}
                disabled={!choice.usable}
                title={choice.reason ?? undefined}
              >
                {choice.name}
                {choice.usable ? "" : " (unavailable)"}
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
        <BudgetFields
          cost={maxCost}
          tokens={maxTokens}
          onCost={setMaxCost}
          onTokens={setMaxTokens}
          costLabel="Budget (USD)"
          placeholder="your default"
        />
      </div>
      {modeInfo && (
        <p className="muted mode-info" data-testid="mode-info">
          {modeInfo.description} <span data-testid="mode-resume">{resumeNote(modeInfo)}</span>
          {modeInfo.available === false && (
            <span className="mode-unavailable" role="note" data-testid="mode-unavailable">
              {" "}
              Not available with the {IMPLEMENTATION} engine here: {modeInfo.unavailable_reason || "no reason given"}.
              {modeInfo.engines.length > 0 ? ` It still runs as a label with ${modeInfo.engines.join(" or ")}.` : ""}
            </span>
          )}
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
