/* A task's stdout/stderr/log lines: collapsible, and virtualised so that only
 * the rows on screen are in the DOM (a task may print 100,000 lines). It
 * follows the tail while the reader is at the bottom and stops when they
 * scroll up to read. */
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import type { OutputLine } from "../state/sessionStore";
import { visibleRows } from "./virtualWindow";

export const ROW_HEIGHT = 18;
const VIEWPORT_HEIGHT = 320;

interface Props {
  taskId: string;
  lines: OutputLine[];
  /** bumps whenever lines were appended (the array is mutated in place) */
  version: number;
}

export function OutputPanel({ taskId, lines, version }: Props) {
  const [open, setOpen] = useState(true);
  const count = lines.length;
  const bodyId = `output-${taskId}`;
  return (
    <section className="output" aria-label="Output">
      <div className="output-head">
        <button
          type="button"
          className="link"
          aria-expanded={open}
          aria-controls={bodyId}
          onClick={() => setOpen((o) => !o)}
        >
          {open ? "▾" : "▸"} Output
        </button>
        <span className="muted" data-testid="output-count">
          {count.toLocaleString("en-US")} {count === 1 ? "line" : "lines"}
        </span>
        <button type="button" className="small" disabled={count === 0} onClick={() => download(taskId, lines)}>
          Download
        </button>
      </div>
      {open && <OutputRows id={bodyId} lines={lines} version={version} />}
    </section>
  );
}

function OutputRows({ id, lines, version }: { id: string; lines: OutputLine[]; version: number }) {
  const ref = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [follow, setFollow] = useState(true);
  const count = lines.length;
  const height = Math.min(VIEWPORT_HEIGHT, Math.max(count, 1) * ROW_HEIGHT + 2);

  useLayoutEffect(() => {
    const el = ref.current;
    if (el && follow) {
      el.scrollTop = el.scrollHeight;
      setScrollTop(el.scrollTop);
    }
  }, [version, follow, count]);

  const onScroll = useCallback(() => {
    const el = ref.current;
    if (!el) return;
    setScrollTop(el.scrollTop);
    setFollow(el.scrollTop + el.clientHeight >= el.scrollHeight - ROW_HEIGHT);
  }, []);

  useEffect(() => {
    if (count === 0) setFollow(true);
  }, [count]);

  const { start, end } = visibleRows(count, ROW_HEIGHT, scrollTop, height);
  const rows = [];
  for (let i = start; i < end; i++) {
    const line = lines[i];
    rows.push(
      <div key={i} className={`row ${line.stream}`} style={{ top: i * ROW_HEIGHT }}>
        {line.text || " "}
      </div>,
    );
  }
  return (
    <div
      id={id}
      ref={ref}
      className="output-body"
      style={{ height }}
      onScroll={onScroll}
      tabIndex={0}
      role="log"
      aria-label="Task output"
    >
      <div className="output-space" style={{ height: count * ROW_HEIGHT }}>
        {rows}
      </div>
    </div>
  );
}

function download(taskId: string, lines: OutputLine[]): void {
  const text = lines.map((l) => l.text).join("\n") + "\n";
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `${taskId}-output.txt`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
