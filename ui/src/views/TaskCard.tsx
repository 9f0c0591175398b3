/* One task: phase, plan with step progress ("step N of M"), costs and tokens,
 * produced files, cancel, and its output. */
import { useEffect, useState } from "react";
import { api, ApiError } from "../api/http";
import type { FileCreated } from "../api/protocol";
import { OutputPanel } from "../components/OutputPanel";
import { isFinal, progressOf, spendText, type TaskState } from "../state/sessionStore";

const PHASE_WORDS: Record<string, string> = {
  queued: "Queued",
  starting: "Starting",
  running: "Running",
  waiting_approval: "Waiting for approval",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
  timed_out: "Timed out",
};

export function TaskCard({ task, version }: { task: TaskState; version: number }) {
  const [error, setError] = useState<string | null>(null);
  const progress = progressOf(task);
  const final = isFinal(task.phase);
  async function cancel() {
    try {
      await api.cancelTask(task.id);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  }
  return (
    <article className="card task" aria-label={`Task ${task.id}`} data-task-id={task.id} data-phase={task.phase}>
      <header className="task-head">
        <span className={`badge phase-${task.phase}`} data-testid="task-phase">
          {PHASE_WORDS[task.phase] ?? task.phase}
        </span>
        <span className="muted">
          {task.engine} · {task.mode} · <code>{task.id.slice(0, 8)}</code>
        </span>
        {task.attempt > 1 && (
          <span className="badge" data-testid="task-attempt">
            Attempt {task.attempt}
            {task.retries > 0 ? ` of ${task.retries + 1}` : ""}
          </span>
        )}
        {!final && (
          <button type="button" className="small danger" onClick={() => void cancel()}>
            Cancel task
          </button>
        )}
      </header>
      {task.phase === "queued" && task.behind && (
        <p className="muted" data-testid="task-waiting">
          Waiting for task <code>{task.behind.slice(0, 8)}</code> to finish: this session runs one task at a time.
        </p>
      )}
      {task.phase === "queued" && task.retryAt && (
        <p className="muted" data-testid="task-retrying">
          Its runner died ({task.reason}); attempt {task.attempt} starts at{" "}
          {new Date(task.retryAt).toLocaleTimeString()}.
        </p>
      )}
      {task.prompt && <p className="prose prompt">{task.prompt}</p>}
      {task.reason && final && <p className="muted">Reason: {task.reason}</p>}
      {progress.total > 0 && (
        <div className="progress-wrap">
          <div className="progress-label">
            <span data-testid="step-label">
              {task.step === 0 ? `${progress.total} steps, not started` : `Step ${task.step} of ${progress.total}`}
            </span>
            {task.stepTitle && <span className="muted"> — {task.stepTitle}</span>}
          </div>
          <div
            className="progress"
            role="progressbar"
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={progress.percent}
            aria-label={`Progress: ${progress.done} of ${progress.total} steps done`}
          >
            <div className="bar" style={{ width: `${progress.percent}%` }} />
          </div>
          <ol className="steps">
            {task.stepStatus.map((status, i) => (
              <li key={i} className={`step-${status}`}>
                <span className="sr-only">{status}: </span>
                {task.plan[i]?.title ?? `Step ${i + 1}`}
                {task.plan[i]?.agent && <span className="muted"> ({task.plan[i].agent})</span>}
              </li>
            ))}
          </ol>
        </div>
      )}
      {(task.promptTokens > 0 || task.costUsd > 0 || task.maxCostUsd !== null || task.maxTokens !== null) && (
        <p className="costs" aria-label="Costs" data-testid="task-costs">
          {spendText(task)}
        </p>
      )}
      {task.files.length > 0 && <Files taskId={task.id} files={task.files} />}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <OutputPanel taskId={task.id} lines={task.output} version={version} />
    </article>
  );
}

function Files({ taskId, files }: { taskId: string; files: FileCreated[] }) {
  return (
    <section aria-label="Files">
      <h3>Files</h3>
      <ul className="files">
        {files.map((f) => (
          <li key={f.path}>
            <FileItem taskId={taskId} file={f} />
          </li>
        ))}
      </ul>
    </section>
  );
}

function isImage(file: FileCreated): boolean {
  return (file.mime ?? "").startsWith("image/") || /\.(png|jpe?g|gif|svg|webp)$/i.test(file.path);
}

/** Files are fetched with the token (an <img src> could not send it) and shown from a blob URL. */
function FileItem({ taskId, file }: { taskId: string; file: FileCreated }) {
  const [url, setUrl] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const image = isImage(file);
  useEffect(() => {
    if (!image) return;
    let objectUrl: string | null = null;
    api
      .fileBlob(taskId, file.path)
      .then((blob) => setUrl((objectUrl = URL.createObjectURL(blob))))
      .catch((err: unknown) => setError(String(err)));
    return () => {
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [taskId, file.path, image]);

  async function open() {
    try {
      const blob = await api.fileBlob(taskId, file.path);
      const objectUrl = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = objectUrl;
      a.download = file.path.split("/").pop() ?? "file";
      a.click();
      setTimeout(() => URL.revokeObjectURL(objectUrl), 10_000);
    } catch (err) {
      setError(String(err));
    }
  }

  return (
    <>
      <button type="button" className="link" onClick={() => void open()}>
        {file.path}
      </button>{" "}
      <span className="muted">({formatSize(file.size)})</span>
      {image && url && <img className="file-image" src={url} alt={file.path} />}
      {error && <span className="error"> {error}</span>}
    </>
  );
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
