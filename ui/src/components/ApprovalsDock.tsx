/* Pending approvals, wherever the user is: a dock fixed to the corner of
 * every page. It polls the gateway (approvals of sessions not on screen) and
 * listens to the open session's live stream, which removes an approval the
 * moment any tab resolves it. */
import { useEffect, useState } from "react";
import { api, ApiError } from "../api/http";
import type { ApprovalView } from "../api/protocol";
import { sessionHref } from "../hooks";
import type { ApprovalState } from "../state/sessionStore";
import { liveApprovals, reportReachable, useBox } from "../state/shared";
import { ApprovalCard } from "./ApprovalCard";

const POLL_MS = 3000;

export function fromView(view: ApprovalView): ApprovalState {
  return {
    id: view.id,
    taskId: view.task_id,
    kind: view.kind,
    prompt: view.prompt,
    options: view.options,
    allowText: view.allow_text,
    context: view.context,
    expiresAt: view.expires_at ?? null,
    status: view.status,
    decision: view.decision ?? null,
    text: view.response ?? null,
    resolvedBy: view.resolved_by ?? null,
    seq: 0,
  };
}

/** Polled pending approvals, minus those the live stream knows are settled. */
export function mergePending(
  polled: ApprovalView[],
  live: ApprovalState[],
): { approval: ApprovalState; sessionId: string }[] {
  const liveById = new Map(live.map((a) => [a.id, a]));
  const merged = polled
    .filter((v) => (liveById.get(v.id)?.status ?? "pending") === "pending")
    .map((v) => ({ approval: fromView(v), sessionId: v.session_id }));
  const known = new Set(merged.map((m) => m.approval.id));
  for (const a of live) {
    if (a.status === "pending" && !known.has(a.id)) merged.push({ approval: a, sessionId: "" });
  }
  return merged;
}

export function ApprovalsDock() {
  const [polled, setPolled] = useState<ApprovalView[]>([]);
  const [collapsed, setCollapsed] = useState(false);
  const live = useBox(liveApprovals);

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let asking = false;
    const poll = async () => {
      timer = undefined;
      asking = true;
      try {
        const list = await api.pendingApprovals();
        if (!stopped) setPolled(list.items);
        reportReachable(true);
      } catch (err) {
        // keep the last list meanwhile; the badge says the gateway is away
        if (!(err instanceof ApiError)) reportReachable(false);
      }
      asking = false;
      // a hidden tab stops asking: hundreds of idle tabs must not load the gateway
      if (!stopped && !document.hidden) timer = setTimeout(() => void poll(), POLL_MS);
    };
    const onVisibility = () => {
      if (!document.hidden && timer === undefined && !asking) void poll();
    };
    document.addEventListener("visibilitychange", onVisibility);
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    };
  }, []);

  const items = mergePending(polled, live);
  if (items.length === 0) return null;
  return (
    <aside className="dock" aria-label="Pending approvals" aria-live="polite">
      <header>
        <button type="button" className="link" aria-expanded={!collapsed} onClick={() => setCollapsed((c) => !c)}>
          {collapsed ? "▸" : "▾"} {items.length} pending approval{items.length > 1 ? "s" : ""}
        </button>
      </header>
      {!collapsed &&
        items.map(({ approval, sessionId }) => (
          <div key={approval.id}>
            <ApprovalCard approval={approval} compact />
            {sessionId && (
              <a className="small-link" href={sessionHref(sessionId)}>
                Open session
              </a>
            )}
          </div>
        ))}
    </aside>
  );
}
