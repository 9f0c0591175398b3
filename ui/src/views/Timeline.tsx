/* The session's events rendered for reading: task lifecycle, plans, steps,
 * agent messages with the agent's name, code, tool calls, approvals, errors.
 * Output lines live in each task's output panel instead. */
import { memo } from "react";
import type { Event, PlanStep } from "../api/protocol";
import { ApprovalCard } from "../components/ApprovalCard";
import { CodeBlock, RichText } from "../components/CodeBlock";
import type { ApprovalState, SessionStore } from "../state/sessionStore";

type Data = Record<string, unknown>;
const str = (v: unknown) => (v === undefined || v === null ? "" : String(v));

export function Timeline({ store }: { store: SessionStore; version: number }) {
  return (
    <section className="timeline" aria-label="Event stream">
      <h2>Activity</h2>
      {store.timeline.length === 0 && <p className="muted">No events yet. Run a task to start.</p>}
      <ol>
        {store.timeline.map((event) => {
          const approval =
            event.type === "approval.requested" ? store.approvals.get(str(event.data?.approval_id)) : undefined;
          return (
            <li key={event.seq} className={`ev ev-${event.type.replace(/\./g, "-")}`} data-seq={event.seq}>
              <Item
                event={event}
                approval={approval}
                approvalKey={approval ? `${approval.status}|${approval.resolvedBy ?? ""}` : ""}
              />
            </li>
          );
        })}
      </ol>
    </section>
  );
}

function Stamp({ event }: { event: Event }) {
  return (
    <time className="stamp muted" dateTime={event.ts}>
      {new Date(event.ts).toLocaleTimeString()}
    </time>
  );
}

interface ItemProps {
  event: Event;
  approval?: ApprovalState;
  /** changes when the (mutable) approval does, so the memo below re-renders it */
  approvalKey: string;
}

// Events never change once stored: re-render an item only when its approval does.
const Item = memo(EventItem);

function EventItem({ event, approval }: ItemProps) {
  const d = (event.data ?? {}) as Data;
  const task = event.task_id ? <code className="muted">{event.task_id.slice(0, 8)}</code> : null;
  switch (event.type) {
    case "task.queued":
      return (
        <p>
          <Stamp event={event} /> Task {task} queued ({str(d.engine)}, {str(d.mode)})
        </p>
      );
    case "task.started":
      return (
        <p>
          <Stamp event={event} /> Task {task} started{d.host ? ` on ${str(d.host)}` : ""}
          {d.resumed_from_version ? ` (resumed from state v${str(d.resumed_from_version)})` : ""}
          {Number(d.attempt) > 1 ? `, attempt ${str(d.attempt)}` : ""}
        </p>
      );
    case "task.succeeded":
    case "task.failed":
    case "task.cancelled":
    case "task.timed_out":
      return (
        <p className={`final final-${event.type.slice(5)}`}>
          <Stamp event={event} /> Task {task} {event.type.slice(5).replace("_", " ")}
          {d.reason ? `: ${str(d.reason)}` : ""}
        </p>
      );
    case "task.retrying":
      return (
        <p className="final final-failed">
          <Stamp event={event} /> Task {task} will run again (attempt {str(d.attempt)} of{" "}
          {String(Number(d.retries) + 1)}, in {str(d.delay_s)} s): {str(d.reason)}
        </p>
      );
    case "plan.proposed":
      return (
        <div>
          <p>
            <Stamp event={event} /> <strong>Plan proposed</strong>
          </p>
          <ol className="plan-list">
            {((d.steps as PlanStep[]) ?? []).map((s, i) => (
              <li key={i}>
                {s.title}
                {s.agent && <span className="muted"> — {s.agent}</span>}
              </li>
            ))}
          </ol>
        </div>
      );
    case "step.started":
      return (
        <p>
          <Stamp event={event} /> Step {str(d.step)} of {str(d.total)} started{d.title ? `: ${str(d.title)}` : ""}
          {d.agent ? <span className="agent"> {str(d.agent)}</span> : null}
        </p>
      );
    case "step.completed":
      return (
        <p>
          <Stamp event={event} /> Step {str(d.step)} of {str(d.total)} completed{d.summary ? `: ${str(d.summary)}` : ""}
        </p>
      );
    case "step.failed":
      return (
        <p className="error">
          <Stamp event={event} /> Step {str(d.step)} of {str(d.total)} failed: {str(d.error)}
        </p>
      );
    case "agent.message":
      return (
        <div className="message">
          <p>
            <Stamp event={event} /> <span className="agent">{str(d.agent)}</span>
            {d.recipient ? <span className="muted"> → {str(d.recipient)}</span> : null}
          </p>
          <RichText text={str(d.content)} />
        </div>
      );
    case "agent.tool_call":
      return (
        <details className="tool">
          <summary>
            <Stamp event={event} /> <span className="agent">{str(d.agent)}</span> called <code>{str(d.tool)}</code>
          </summary>
          <CodeBlock
            source={typeof d.arguments === "string" ? d.arguments : JSON.stringify(d.arguments ?? {}, null, 2)}
            language="json"
          />
        </details>
      );
    case "code":
      return (
        <div>
          <p>
            <Stamp event={event} /> {d.agent ? <span className="agent">{str(d.agent)}</span> : null} code
          </p>
          <CodeBlock
            source={str(d.source)}
            language={str(d.language) || undefined}
            title={str(d.filename) || undefined}
          />
        </div>
      );
    case "approval.requested":
      return approval ? <ApprovalCard approval={{ ...approval }} /> : null;
    case "file.created":
      return (
        <p>
          <Stamp event={event} /> File <code>{str(d.path)}</code> created
        </p>
      );
    case "error":
      return (
        <p className="error">
          <Stamp event={event} /> {str(d.code)}: {str(d.message)}
        </p>
      );
    default:
      return null;
  }
}
