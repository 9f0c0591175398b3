/* Binds a SessionStore to the session's WebSocket for as long as a view is
 * on screen, batching bursts of events into one store update. */
import { useEffect, useMemo, useSyncExternalStore } from "react";
import { wsUrl } from "../api/http";
import type { Event } from "../api/protocol";
import { SessionStream } from "../api/socket";
import { SessionStore } from "../state/sessionStore";
import { connection, liveApprovals } from "../state/shared";

// A timer rather than requestAnimationFrame: background tabs get no frames,
// and they must keep up too (another tab may resolve an approval).
const FLUSH_MS = 30;

export function useSessionStream(
  sessionId: string,
  onUnauthorized: () => void,
): { store: SessionStore; version: number } {
  const store = useMemo(() => new SessionStore(), [sessionId]);
  const version = useSyncExternalStore(store.subscribe, store.getVersion);

  useEffect(() => {
    let queue: Event[] = [];
    let timer: ReturnType<typeof setTimeout> | null = null;
    const flush = () => {
      timer = null;
      const batch = queue;
      queue = [];
      store.apply(batch);
      liveApprovals.set([...store.approvals.values()].map((a) => ({ ...a })));
    };
    const stream = new SessionStream({
      url: (after) => wsUrl(`/ws/sessions/${encodeURIComponent(sessionId)}`, { after }),
      after: store.lastSeq,
      onEvent: (event) => {
        queue.push(event);
        if (timer === null) timer = setTimeout(flush, FLUSH_MS);
      },
      onState: (state, info) => {
        connection.set({ state, info });
        if (state === "unauthorized") onUnauthorized();
      },
    });
    stream.start();
    const online = () => stream.reconnectNow();
    window.addEventListener("online", online);
    return () => {
      window.removeEventListener("online", online);
      stream.stop();
      if (timer !== null) clearTimeout(timer);
      liveApprovals.set([]);
      connection.set({ state: "online", info: { attempt: 0 } });
    };
  }, [store, sessionId, onUnauthorized]);

  return { store, version };
}
