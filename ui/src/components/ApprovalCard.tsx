/* One approval request: prompt, context, the allowed decisions, a free-text
 * answer where allowed, a countdown to expiry, and once decided, by whom. */
import { useState } from "react";
import { api, ApiError } from "../api/http";
import type { ApprovalView, Decision } from "../api/protocol";
import { useNow } from "../hooks";
import type { ApprovalState } from "../state/sessionStore";

const LABELS: Record<Decision, string> = {
  approve: "Approve",
  reject: "Reject",
  modify: "Modify",
  answer: "Send answer",
};

const KIND_TITLES: Record<string, string> = {
  approval: "Approval needed",
  plan: "Review the plan",
  step: "Approve the next step",
  question: "Question for you",
  input: "Your input is needed",
};

const STATUS_WORDS: Record<string, string> = {
  approved: "Approved",
  rejected: "Rejected",
  modified: "Modified",
  answered: "Answered",
  expired: "Expired",
  cancelled: "Cancelled",
};

export function countdown(expiresAt: string | null, now: number): string | null {
  if (!expiresAt) return null;
  const left = Math.max(0, Math.round((Date.parse(expiresAt) - now) / 1000));
  const h = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = String(left % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function ApprovalCard({ approval: given, compact = false }: { approval: ApprovalState; compact?: boolean }) {
  // The gateway's answer to our own decision, shown until the stream or poll catches up.
  const [answer, setAnswer] = useState<ApprovalView | null>(null);
  const approval: ApprovalState =
    answer && given.status === "pending"
      ? {
          ...given,
          status: answer.status,
          decision: answer.decision ?? null,
          text: answer.response ?? null,
          resolvedBy: answer.resolved_by ?? null,
        }
      : given;
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const now = useNow(1000);
  const pending = approval.status === "pending";
  const left = pending ? countdown(approval.expiresAt, now) : null;
  const needsText = (d: Decision) => d === "modify" || d === "answer";

  async function resolve(decision: Decision) {
    setBusy(true);
    setError(null);
    try {
      setAnswer(await api.resolveApproval(approval.id, decision, text || null));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <article
      className={`approval ${pending ? "pending" : "done"}`}
      aria-label={`Approval: ${approval.prompt}`}
      data-approval-id={approval.id}
    >
      <header>
        <strong>{KIND_TITLES[approval.kind] ?? `Approval needed (${approval.kind})`}</strong>
        {left && (
          <span className="countdown" title="Time left before the task's timeout policy applies">
            expires in {left}
          </span>
        )}
      </header>
      <p className="prose">{approval.prompt}</p>
      {!compact && <ApprovalContext context={approval.context} />}
      {pending ? (
        <form onSubmit={(e) => e.preventDefault()}>
          {approval.allowText && (
            <label className="field">
              <span>Your answer</span>
              <textarea rows={2} value={text} onChange={(e) => setText(e.target.value)} />
            </label>
          )}
          <div className="actions">
            {approval.options.map((d) => (
              <button
                type="button"
                key={d}
                className={d === "approve" ? "primary" : d === "reject" ? "danger" : ""}
                disabled={busy || (needsText(d) && !text.trim())}
                onClick={() => void resolve(d)}
              >
                {LABELS[d] ?? d}
              </button>
            ))}
          </div>
        </form>
      ) : (
        <p className="resolution" role="status">
          {STATUS_WORDS[approval.status] ?? approval.status}
          {approval.resolvedBy ? ` by ${approval.resolvedBy}` : ""}
          {approval.text ? `: “${approval.text}”` : ""}
        </p>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </article>
  );
}

function ApprovalContext({ context }: { context: Record<string, unknown> }) {
  const steps = context.plan ?? context.steps;
  if (Array.isArray(steps)) {
    return (
      <ol className="plan-list">
        {steps.map((s, i) => (
          <li key={i}>{typeof s === "string" ? s : String((s as { title?: string }).title ?? JSON.stringify(s))}</li>
        ))}
      </ol>
    );
  }
  const keys = Object.keys(context);
  if (keys.length === 0) return null;
  return (
    <details>
      <summary>Context</summary>
      <pre className="json">{JSON.stringify(context, null, 2)}</pre>
    </details>
  );
}
