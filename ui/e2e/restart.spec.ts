/* The gateway is killed (SIGKILL) in the middle of a task and started again:
 * the page must say it is reconnecting, then catch up from its last seq with
 * every output line exactly once. */
import { expect, test } from "@playwright/test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Gateway, SCREENSHOTS } from "./gateway";

// Heartbeats every second, so a silent socket is declared dead after 2.5 s.
const gateway = new Gateway("none", { CMBTASK_HEARTBEAT_S: "1" });

test.beforeAll(async () => {
  await gateway.start();
});
test.afterAll(async () => {
  await gateway.stop();
  gateway.cleanup();
});

const STEPS = 6;
const LINES = 25;

test("kill -9 and restart the gateway mid-task: reconnecting, then no duplicated or missing lines", async ({
  page,
}) => {
  await page.goto(gateway.url);
  const form = page.getByRole("form", { name: "New session" });
  await form.getByLabel("Title").fill("Survives a restart");
  await form.getByRole("button", { name: "Create session" }).click();
  await expect(page.locator(".conn")).toHaveAttribute("data-state", "connected");

  await page
    .getByLabel("Parameters (JSON)")
    .fill(JSON.stringify({ steps: STEPS, step_delay_s: 1.5, lines_per_step: LINES, approve_plan: false }));
  await page.getByRole("button", { name: "Run task" }).click();
  const task = page.locator("article.task").first();
  await expect(task.getByTestId("step-label")).toHaveText(`Step 2 of ${STEPS}`, { timeout: 60_000 });

  // record every state the badge goes through from here on
  await page.evaluate(() => {
    const badge = document.querySelector(".conn")!;
    const seen: string[] = [badge.getAttribute("data-state") ?? ""];
    (window as unknown as { seenStates: string[] }).seenStates = seen;
    new MutationObserver(() => {
      const state = badge.getAttribute("data-state") ?? "";
      if (seen[seen.length - 1] !== state) seen.push(state);
    }).observe(badge, { attributes: true, attributeFilter: ["data-state"] });
  });
  const killedAt = Date.now();
  await gateway.kill9();
  const badge = page.locator(".conn");
  await expect(badge).toHaveAttribute("data-state", "reconnecting");
  await expect(badge).toContainText("Reconnecting");
  await page.screenshot({ path: join(SCREENSHOTS, "reconnecting.png") });

  await gateway.start(); // same port, same data: the runner and the page dial back
  await expect(task.getByTestId("task-phase")).toHaveText("Succeeded", { timeout: 90_000 });
  await expect(badge).toHaveAttribute("data-state", "connected");
  await expect(task.getByTestId("step-label")).toHaveText(`Step ${STEPS} of ${STEPS}`);
  const seen = await page.evaluate(() => (window as unknown as { seenStates: string[] }).seenStates);
  console.log(
    `figure: badge states after kill -9: ${seen.join(" -> ")}; task done ${Date.now() - killedAt} ms after the kill`,
  );
  expect(seen[0]).toBe("connected");
  expect(seen).toContain("reconnecting");
  expect(seen[seen.length - 1]).toBe("connected");

  // Count the lines the page holds, via its own download of the output.
  const downloading = page.waitForEvent("download");
  await task.getByRole("button", { name: "Download" }).click();
  const file = await (await downloading).path();
  const lines = readFileSync(file, "utf-8")
    .split("\n")
    .filter((l) => / step \d+\/\d+ line \d+\/\d+$/.test(l));
  const expected: string[] = [];
  for (let s = 1; s <= STEPS; s++)
    for (let l = 1; l <= LINES; l++) expected.push(`step ${s}/${STEPS} line ${l}/${LINES}`);
  expect(lines.length).toBe(STEPS * LINES);
  expect(new Set(lines).size).toBe(STEPS * LINES);
  expect(lines.map((l) => l.replace(/^\[[^\]]+\] /, ""))).toEqual(expected);

  // and the reading view holds each step exactly once
  await expect(page.locator(".ev-step-completed")).toHaveCount(STEPS);
  await expect(page.locator(".ev-task-succeeded")).toHaveCount(1);

  // A fresh load replays the stored history, and says so while it does.
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { seenStates: string[] }).seenStates = seen;
    new MutationObserver(() => {
      const state = document.querySelector(".conn")?.getAttribute("data-state");
      if (state && seen[seen.length - 1] !== state) seen.push(state);
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"] });
  });
  await page.reload();
  await expect(task.getByTestId("output-count")).toHaveText(`${(STEPS * LINES).toLocaleString("en-US")} lines`);
  await expect(badge).toHaveAttribute("data-state", "connected");
  const replayed = await page.evaluate(() => (window as unknown as { seenStates: string[] }).seenStates);
  expect(replayed).toContain("replaying");
  expect(replayed[replayed.length - 1]).toBe("connected");
});

test("the session list says when the gateway is unreachable, and when it is back", async ({ page }) => {
  await page.goto(gateway.url);
  const badge = page.locator(".conn");
  await expect(badge).toHaveAttribute("data-state", "online");
  await expect(page.getByRole("link", { name: "Survives a restart" })).toBeVisible();
  await gateway.kill9();
  await expect(badge).toHaveAttribute("data-state", "offline", { timeout: 15_000 });
  await expect(badge).toHaveText("Gateway unreachable");
  await gateway.start();
  await expect(badge).toHaveAttribute("data-state", "online", { timeout: 15_000 });
  await expect(page.getByRole("link", { name: "Survives a restart" })).toBeVisible();
});

test("a frozen gateway (open but silent socket) is detected by the heartbeat timeout", async ({ page }) => {
  await page.goto(gateway.url);
  await page.getByRole("link", { name: "Survives a restart" }).click();
  const badge = page.locator(".conn");
  await expect(badge).toHaveAttribute("data-state", "connected");
  const frozenAt = Date.now();
  gateway.freeze(true);
  try {
    await expect(badge).toHaveAttribute("data-state", "reconnecting", { timeout: 15_000 });
    console.log(`figure: silent socket detected after ${Date.now() - frozenAt} ms (heartbeat 1 s)`);
  } finally {
    gateway.freeze(false);
  }
  await expect(badge).toHaveAttribute("data-state", "connected", { timeout: 30_000 });
  await expect(page.locator("article.task").first().getByTestId("task-phase")).toHaveText("Succeeded");
});
