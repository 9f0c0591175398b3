/* The session list: newest first, filtered by mode and status, searched by
 * title, paginated; create, rename, suspend, resume and delete. */
import { useEffect, useRef, useState } from "react";
import { api, ApiError } from "../api/http";
import type { ModeInfo, SessionList as SessionPage, SessionView } from "../api/protocol";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { sessionHref } from "../hooks";
import { connection, reportReachable, useBox } from "../state/shared";
import { modeNote, pickMode } from "./modePicker";

const PAGE_SIZE = 20;
const STATUSES = ["active", "suspended", "completed", "expired"];

interface Filters {
  mode: string;
  status: string;
  q: string;
  offset: number;
}

export function SessionList({ modes }: { modes: ModeInfo[] }) {
  const [filters, setFilters] = useState<Filters>({ mode: "", status: "", q: "", offset: 0 });
  const [page, setPage] = useState<SessionPage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [deleting, setDeleting] = useState<SessionView | null>(null);

  // Bumped after an action, and when the gateway is reachable again, to reload
  // with whatever filters are current by then.
  const [reloads, setReloads] = useState(0);
  const online = useBox(connection).state === "online";
  const latest = useRef(0);

  useEffect(() => {
    if (!online && page !== null) return;
    // typing in the search box fires one request per key: keep only the newest answer
    const ticket = ++latest.current;
    api.listSessions({ ...filters, limit: PAGE_SIZE }).then(
      (result) => {
        if (ticket !== latest.current) return;
        result.items.sort((a, b) => b.created_at.localeCompare(a.created_at));
        setPage(result);
        setError(null);
        reportReachable(true);
      },
      (err: unknown) => {
        if (ticket !== latest.current) return;
        setError(err instanceof ApiError ? err.message : String(err));
        if (!(err instanceof ApiError)) reportReachable(false);
      },
    );
    // an answer arriving after a newer request, or after the list is gone, is dropped
    return () => {
      latest.current += 1;
    };
    // `page` is left out on purpose: it only decides whether an offline gateway is worth a try
  }, [filters, reloads, online]);

  const act = async (fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
    setReloads((n) => n + 1);
  };
  const set = (patch: Partial<Filters>) => setFilters((f) => ({ ...f, offset: 0, ...patch }));
  const total = page?.total ?? 0;

  return (
    <main className="page">
      <NewSession modes={modes} onCreated={(s) => (window.location.hash = sessionHref(s.id))} />
      <section aria-labelledby="sessions-title">
        <h1 id="sessions-title">Sessions</h1>
        <div className="filters" role="search">
          <label className="field inline">
            <span>Search title</span>
            <input type="search" value={filters.q} onChange={(e) => set({ q: e.target.value })} />
          </label>
          <label className="field inline">
            <span>Mode</span>
            <select value={filters.mode} onChange={(e) => set({ mode: e.target.value })}>
              <option value="">All modes</option>
              {modes.map((m) => (
                <option key={m.name} value={m.name}>
                  {m.title}
                </option>
              ))}
            </select>
          </label>
          <label className="field inline">
            <span>Status</span>
            <select value={filters.status} onChange={(e) => set({ status: e.target.value })}>
              <option value="">All statuses</option>
              {STATUSES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </label>
        </div>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        {page && page.items.length === 0 && <p className="muted">No sessions yet.</p>}
        <ul className="session-list">
          {page?.items.map((s) => (
            <SessionRow
              key={s.id}
              session={s}
              onRename={(title) => act(() => api.renameSession(s.id, s.version, title))}
              onSuspend={() => act(() => api.suspendSession(s.id))}
              onResume={() => act(() => api.resumeSession(s.id))}
              onDelete={() => setDeleting(s)}
            />
          ))}
        </ul>
        {total > PAGE_SIZE && (
          <nav className="pager" aria-label="Pages">
            <button
              type="button"
              disabled={filters.offset === 0}
              onClick={() => setFilters((f) => ({ ...f, offset: Math.max(0, f.offset - PAGE_SIZE) }))}
            >
              ← Newer
            </button>
            <span>
              {filters.offset + 1}–{Math.min(total, filters.offset + PAGE_SIZE)} of {total}
            </span>
            <button
              type="button"
              disabled={filters.offset + PAGE_SIZE >= total}
              onClick={() => setFilters((f) => ({ ...f, offset: f.offset + PAGE_SIZE }))}
            >
              Older →
            </button>
          </nav>
        )}
      </section>
      <ConfirmDialog
        open={deleting !== null}
        title="Delete session?"
        message={`“${deleting?.title ?? ""}” and all its tasks and events will be deleted. This cannot be undone.`}
        confirmLabel="Delete"
        onCancel={() => setDeleting(null)}
        onConfirm={() => {
          const id = deleting?.id;
          setDeleting(null);
          if (id) void act(() => api.deleteSession(id));
        }}
      />
    </main>
  );
}

function NewSession({ modes, onCreated }: { modes: ModeInfo[]; onCreated: (s: SessionView) => void }) {
  const [title, setTitle] = useState("");
  // until the user picks one: a mode that runs here (the modes may load after the first render)
  const [picked, setPicked] = useState<string | null>(null);
  const current = picked ?? pickMode(modes, "planning-control");
  const [error, setError] = useState<string | null>(null);
  async function submit(e: React.FormEvent) {
    e.preventDefault();
    try {
      onCreated(await api.createSession({ title: title.trim() || "Untitled session", mode: current }));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  }
  return (
    <form className="card new-session" onSubmit={(e) => void submit(e)} aria-labelledby="new-session-title">
      <h2 id="new-session-title">New session</h2>
      <div className="row-fields">
        <label className="field">
          <span>Title</span>
          <input
            value={title}
            maxLength={200}
            onChange={(e) => setTitle(e.target.value)}
            placeholder="Untitled session"
          />
        </label>
        <label className="field">
          <span>Mode</span>
          <select value={current} onChange={(e) => setPicked(e.target.value)}>
            {modes.map((m) => (
              <option key={m.name} value={m.name}>
                {m.title}
                {modeNote(m)}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" className="primary">
          Create session
        </button>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

interface RowProps {
  session: SessionView;
  onRename: (title: string) => Promise<void>;
  onSuspend: () => Promise<void>;
  onResume: () => Promise<void>;
  onDelete: () => void;
}

function SessionRow({ session, onRename, onSuspend, onResume, onDelete }: RowProps) {
  const [editing, setEditing] = useState(false);
  const [title, setTitle] = useState(session.title);
  const created = new Date(session.created_at);
  return (
    <li className="card session-row" data-session-id={session.id}>
      {editing ? (
        <form
          className="rename"
          onSubmit={(e) => {
            e.preventDefault();
            setEditing(false);
            if (title.trim() && title !== session.title) void onRename(title.trim());
          }}
        >
          <label className="field inline">
            <span className="sr-only">New title</span>
            <input value={title} maxLength={200} autoFocus onChange={(e) => setTitle(e.target.value)} />
          </label>
          <button type="submit" className="small primary">
            Save
          </button>
          <button type="button" className="small" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <a className="session-title" href={sessionHref(session.id)}>
          {session.title}
        </a>
      )}
      <div className="meta">
        <span className={`badge status-${session.status}`}>{session.status}</span>
        <span className="muted">{session.mode}</span>
        {session.phase && <span className={`badge phase-${session.phase}`}>{session.phase.replace("_", " ")}</span>}
        <time className="muted" dateTime={session.created_at}>
          {created.toLocaleString()}
        </time>
      </div>
      <div className="actions">
        <button type="button" className="small" onClick={() => setEditing(true)} aria-label={`Rename ${session.title}`}>
          Rename
        </button>
        {session.status === "active" && (
          <button
            type="button"
            className="small"
            onClick={() => void onSuspend()}
            aria-label={`Suspend ${session.title}`}
          >
            Suspend
          </button>
        )}
        {session.status === "suspended" && (
          <button
            type="button"
            className="small"
            onClick={() => void onResume()}
            aria-label={`Resume ${session.title}`}
          >
            Resume
          </button>
        )}
        <button type="button" className="small danger" onClick={onDelete} aria-label={`Delete ${session.title}`}>
          Delete
        </button>
      </div>
    </li>
  );
}
