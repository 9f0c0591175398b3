/* One session: its header, the task form, each task's progress and output,
 * and the live activity stream. */
import { useEffect, useState } from "react";
import { api, ApiError } from "../api/http";
import type { ModeInfo, SessionView } from "../api/protocol";
import { TaskCard } from "./TaskCard";
import { TaskForm } from "./TaskForm";
import { Timeline } from "./Timeline";
import { useSessionStream } from "./useSessionStream";

export function SessionPage({
  id,
  modes,
  onUnauthorized,
}: {
  id: string;
  modes: ModeInfo[];
  onUnauthorized: () => void;
}) {
  const [session, setSession] = useState<SessionView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const { store, version } = useSessionStream(id, onUnauthorized);

  useEffect(() => {
    setSession(null);
    api
      .getSession(id)
      .then(setSession)
      .catch((err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
  }, [id]);

  // the session's status can change with its tasks (completed, expired)
  const finishedTasks = [...store.tasks.values()].filter((t) => t.finishedAt).length;
  useEffect(() => {
    if (finishedTasks > 0) void api.getSession(id).then(setSession, () => undefined);
  }, [id, finishedTasks]);

  async function change(action: (id: string) => Promise<SessionView>) {
    try {
      setSession(await action(id));
    } catch (err) {
      setActionError(err instanceof ApiError ? err.message : String(err));
    }
  }

  if (error) {
    return (
      <main className="page">
        <p className="error" role="alert">
          {error}
        </p>
        <a href="#/">Back to sessions</a>
      </main>
    );
  }
  const tasks = store.taskOrder.map((t) => store.tasks.get(t)!).reverse();
  return (
    <main className="page session-page">
      <nav className="crumbs" aria-label="Breadcrumb">
        <a href="#/">Sessions</a> / <span>{session?.title ?? "…"}</span>
      </nav>
      <header className="session-head">
        <h1>{session?.title ?? "Loading…"}</h1>
        {session && (
          <span className="meta">
            <span className={`badge status-${session.status}`} data-testid="session-status">
              {session.status}
            </span>
            <span className="muted">{session.mode}</span>
            {session.status === "active" && (
              <button type="button" className="small" onClick={() => void change(api.suspendSession)}>
                Suspend
              </button>
            )}
            {session.status === "suspended" && (
              <button type="button" className="small" onClick={() => void change(api.resumeSession)}>
                Resume
              </button>
            )}
          </span>
        )}
      </header>
      {actionError && (
        <p className="error" role="alert">
          {actionError}
        </p>
      )}
      <div className="columns">
        <div className="col">
          {session && (
            <TaskForm sessionId={id} modes={modes} defaultMode={session.mode} disabled={session.status !== "active"} />
          )}
          {session && session.status !== "active" && (
            <p className="muted">This session is {session.status}; resume it to run tasks.</p>
          )}
          <section aria-label="Tasks">
            {tasks.map((task) => (
              <TaskCard key={task.id} task={task} version={version} />
            ))}
          </section>
        </div>
        <div className="col">
          <Timeline store={store} version={version} />
        </div>
      </div>
    </main>
  );
}
