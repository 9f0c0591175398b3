/* Which rows of a fixed-row-height list are on screen. Kept pure so that the
 * arithmetic behind "100,000 lines stay smooth" is tested on its own. */

export interface RowWindow {
  start: number;
  end: number; // exclusive
}

export function visibleRows(
  count: number,
  rowHeight: number,
  scrollTop: number,
  viewportHeight: number,
  overscan = 10,
): RowWindow {
  if (count === 0) return { start: 0, end: 0 };
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const visible = Math.ceil(viewportHeight / rowHeight) + 1;
  const start = Math.max(0, Math.min(count - 1, first) - overscan);
  const end = Math.min(count, first + visible + overscan);
  return { start, end };
}
