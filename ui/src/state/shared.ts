/* App-wide values that components far apart need: the connection state shown
 * in the header, and the approvals the open session knows live (so the
 * approvals dock updates the moment another tab resolves one).
 */
import { useSyncExternalStore } from "react";
import type { ConnectionState, StateInfo } from "../api/socket";
import type { ApprovalState } from "./sessionStore";

export interface Box<T> {
  get(): T;
  set(value: T): void;
  subscribe(listener: () => void): () => void;
}

export function box<T>(initial: T): Box<T> {
  let value = initial;
  const listeners = new Set<() => void>();
  return {
    get: () => value,
    set(next) {
      value = next;
      for (const listener of listeners) listener();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

export function useBox<T>(b: Box<T>): T {
  return useSyncExternalStore(b.subscribe, b.get);
}

export interface Connection {
  state: ConnectionState | "offline" | "online";
  info: StateInfo;
}

/** The header's indicator: the session socket's state, or the API's on other pages. */
export const connection = box<Connection>({ state: "online", info: { attempt: 0 } });

/** What a page without a session socket learned from an API call. A session
 * socket's state wins: an answer that arrives late (after the user opened a
 * session) must not overwrite "connected" with "online". */
export function reportReachable(ok: boolean): void {
  const { state } = connection.get();
  if (state === "online" || state === "offline")
    connection.set({ state: ok ? "online" : "offline", info: { attempt: 0 } });
}

/** Approvals of the session on screen, as its live stream last told them. */
export const liveApprovals = box<ApprovalState[]>([]);
