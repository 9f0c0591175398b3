/* Always-visible connection state: connected, reconnecting (with the backoff
 * countdown), replaying missed events. */
import { connection, useBox } from "../state/shared";

const WORDS: Record<string, string> = {
  idle: "Idle",
  online: "Online",
  offline: "Gateway unreachable",
  connecting: "Connecting…",
  replaying: "Replaying missed events…",
  connected: "Connected",
  reconnecting: "Reconnecting",
  unauthorized: "Signed out",
  not_found: "Session not found",
  closed: "Closed",
};

export function ConnectionBadge() {
  const { state, info } = useBox(connection);
  let text = WORDS[state] ?? state;
  if (state === "reconnecting" && info.retryInMs !== undefined) {
    text += ` (attempt ${info.attempt}, retry in ${(info.retryInMs / 1000).toFixed(1)} s)`;
  }
  return (
    <span className={`badge conn conn-${state}`} role="status" aria-live="polite" data-state={state}>
      <span className="dot" aria-hidden="true" />
      {text}
    </span>
  );
}
