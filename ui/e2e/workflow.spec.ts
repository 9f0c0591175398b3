/* A researcher's path through the UI against a real gateway and runners:
 * create a session, run a demo task, approve its plan, watch it finish; and
 * two tabs on one session, where resolving in one updates the other. */
import { expect, test, type Page } from "@playwright/test";
import { join } from "node:path";
import { Gateway, SCREENSHOTS } from "./gateway";

const gateway = new Gateway("none");

test.beforeAll(async () => {
  await gateway.start();
});
test.afterAll(async () => {
  await gateway.stop();
  gateway.cleanup();
});

async function createSession(page: Page, title: string): Promise<string> {
  await page.goto(gateway.url);
  const form = page.getByRole("form", { name: "New session" });
  await form.getByLabel("Title").fill(title);
  await form.getByRole("button", { name: "Create session" }).click();
  await expect(page.getByRole("heading", { level: 1, name: title })).toBeVisible();
  await expect(page.locator(".conn")).toHaveAttribute("data-state", "connected");
  return page.url();
}

async function submitDemo(page: Page, params: object, prompt = "Estimate the CMB power spectrum"): Promise<void> {
  await page.getByLabel("Prompt").fill(prompt);
  await page.getByLabel("Parameters (JSON)").fill(JSON.stringify(params, null, 2));
  await page.getByRole("button", { name: "Run task" }).click();
}

test("create a session, run a demo task, approve its plan, see it finish", async ({ page }) => {
  await page.goto(gateway.url);
  await expect(page.getByTestId("user")).toHaveText("local");
  await createSession(page, "Planck residuals");
  await submitDemo(page, { steps: 3, step_delay_s: 0.2, lines_per_step: 4, approve_plan: true });

  const task = page.locator("article.task").first();
  await expect(task.getByTestId("task-phase")).toHaveText("Waiting for approval");
  const dock = page.getByRole("complementary", { name: "Pending approvals" });
  await expect(dock).toBeVisible();
  await expect(dock.getByText("Approve this plan of 3 steps?")).toBeVisible();
  const inline = page.locator(".timeline article.approval");
  await expect(inline.getByRole("listitem")).toHaveCount(3); // the plan under review
  await page.screenshot({ path: join(SCREENSHOTS, "approval.png"), fullPage: true });

  await inline.getByRole("button", { name: "Approve" }).click();
  await expect(inline.getByRole("status")).toHaveText("Approved by local");
  await expect(dock).toBeHidden();
  await expect(task.getByTestId("task-phase")).toHaveText("Succeeded", { timeout: 60_000 });
  await expect(task.getByTestId("step-label")).toHaveText("Step 3 of 3");
  await expect(task.getByRole("progressbar")).toHaveAttribute("aria-valuenow", "100");
  await expect(task.getByTestId("output-count")).toContainText("12 lines");
  await expect(task.getByLabel("Costs")).toContainText("Tokens: 600 in · 240 out");
  // agent messages carry the agent's name; code is highlighted
  await expect(page.locator(".ev-agent-message .agent").first()).toHaveText("planner");
  await expect(page.locator(".ev-code .hljs-keyword").first()).toHaveText("for");
  await page.screenshot({ path: join(SCREENSHOTS, "session.png"), fullPage: true });

  await page.getByRole("button", { name: /Theme/ }).click(); // system -> light
  await page.getByRole("button", { name: /Theme/ }).click(); // light -> dark
  await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
  await page.screenshot({ path: join(SCREENSHOTS, "session-dark.png"), fullPage: true });

  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(SCREENSHOTS, "session-phone.png") });
  await page.getByRole("button", { name: /Theme/ }).click(); // back to system
});

test("two tabs: resolving an approval in one updates the other", async ({ browser }) => {
  const context = await browser.newContext();
  const tabA = await context.newPage();
  const tabB = await context.newPage();
  const url = await createSession(tabA, "Two tabs");
  await tabB.goto(url);
  await expect(tabB.locator(".conn")).toHaveAttribute("data-state", "connected");

  await submitDemo(tabA, { steps: 2, step_delay_s: 0.1, lines_per_step: 2, approve_plan: true });
  const cardA = tabA.locator(".timeline article.approval");
  const cardB = tabB.locator(".timeline article.approval");
  await expect(cardB.getByRole("button", { name: "Approve" })).toBeVisible();
  await expect(tabB.getByRole("complementary", { name: "Pending approvals" })).toBeVisible();

  await cardA.getByRole("button", { name: "Approve" }).click();
  await expect(cardB.getByRole("status")).toHaveText("Approved by local");
  await expect(cardB.getByRole("button", { name: "Approve" })).toHaveCount(0);
  await expect(tabB.getByRole("complementary", { name: "Pending approvals" })).toBeHidden();
  await expect(tabB.locator("article.task").first().getByTestId("task-phase")).toHaveText("Succeeded", {
    timeout: 60_000,
  });
  await context.close();
});

test("the session list filters, renames, suspends, resumes and deletes with confirmation", async ({ page }) => {
  await page.goto(gateway.url);
  for (const [title, mode] of [
    ["Idea storm", "idea-generation"],
    ["One shot fit", "one-shot"],
  ]) {
    const form = page.getByRole("form", { name: "New session" });
    await form.getByLabel("Title").fill(title);
    await form.getByLabel("Mode").selectOption(mode);
    await form.getByRole("button", { name: "Create session" }).click();
    await expect(page.getByRole("heading", { level: 1, name: title })).toBeVisible();
    await page.goto(gateway.url);
  }
  const rows = page.locator("li.session-row");
  // newest first
  await expect(rows.first().locator(".session-title")).toHaveText("One shot fit");
  await page.screenshot({ path: join(SCREENSHOTS, "sessions.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await expect(rows.first().getByRole("button", { name: "Delete One shot fit" })).toBeInViewport();
  await page.screenshot({ path: join(SCREENSHOTS, "sessions-phone.png") });
  await page.setViewportSize({ width: 1280, height: 860 });

  await page.getByRole("search").getByLabel("Mode").selectOption("idea-generation");
  await expect(rows).toHaveCount(1);
  await expect(rows.first().locator(".session-title")).toHaveText("Idea storm");
  await page.getByRole("search").getByLabel("Mode").selectOption("");
  await page.getByLabel("Search title").fill("shot");
  await expect(rows).toHaveCount(1);
  await page.getByLabel("Search title").fill("");

  await page.getByRole("button", { name: "Rename Idea storm" }).click();
  await page.getByLabel("New title").fill("Idea storm II");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("link", { name: "Idea storm II" })).toBeVisible();

  await page.getByRole("button", { name: "Suspend Idea storm II" }).click();
  await page.getByRole("search").getByLabel("Status").selectOption("suspended");
  await expect(rows).toHaveCount(1);
  await page.getByRole("button", { name: "Resume Idea storm II" }).click();
  await expect(rows).toHaveCount(0);
  await page.getByRole("search").getByLabel("Status").selectOption("");

  await page.getByRole("button", { name: "Delete Idea storm II" }).click();
  const dialog = page.getByRole("dialog", { name: "Delete session?" });
  await expect(dialog).toBeVisible();
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await expect(page.getByRole("link", { name: "Idea storm II" })).toBeVisible();
  await page.getByRole("button", { name: "Delete Idea storm II" }).click();
  await dialog.getByRole("button", { name: "Delete" }).click();
  await expect(page.getByRole("link", { name: "Idea storm II" })).toHaveCount(0);
});

test("the session list pages through sessions, newest first", async ({ page, request }) => {
  for (let i = 1; i <= 23; i++) {
    const response = await request.post(`${gateway.url}/api/sessions`, {
      data: { title: `Batch ${String(i).padStart(2, "0")}` },
    });
    expect(response.status()).toBe(201);
  }
  await page.goto(gateway.url);
  await page.getByLabel("Search title").fill("Batch");
  const rows = page.locator("li.session-row");
  await expect(rows).toHaveCount(20);
  await expect(rows.first().locator(".session-title")).toHaveText("Batch 23");
  const pager = page.getByRole("navigation", { name: "Pages" });
  await expect(pager).toContainText("1–20 of 23");
  await pager.getByRole("button", { name: "Older →" }).click();
  await expect(rows).toHaveCount(3);
  await expect(rows.last().locator(".session-title")).toHaveText("Batch 01");
  await expect(pager.getByRole("button", { name: "Older →" })).toBeDisabled();
});

test("keyboard only: create a session, run a task, approve it", async ({ page }) => {
  await page.goto(gateway.url);
  const form = page.getByRole("form", { name: "New session" });
  await form.getByLabel("Title").focus();
  await page.keyboard.type("Keyboard session");
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "Keyboard session" })).toBeVisible();
  await expect(page.locator(".conn")).toHaveAttribute("data-state", "connected");

  await page
    .getByLabel("Parameters (JSON)")
    .fill(JSON.stringify({ steps: 1, step_delay_s: 0, lines_per_step: 1, approve_plan: true }));
  await page.keyboard.press("Tab"); // to "Run task"
  await expect(page.getByRole("button", { name: "Run task" })).toBeFocused();
  await page.keyboard.press("Enter");
  const approve = page.locator(".timeline article.approval").getByRole("button", { name: "Approve" });
  await expect(approve).toBeVisible();

  // Tab through the page until the inline Approve button has focus.
  let reached = false;
  for (let i = 0; i < 80 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await approve.evaluate((el) => el === document.activeElement);
  }
  expect(reached).toBe(true);
  await page.keyboard.press("Enter");
  await expect(page.locator("article.task").first().getByTestId("task-phase")).toHaveText("Succeeded", {
    timeout: 60_000,
  });
});

test("an approval resolved elsewhere says who resolved it", async ({ page, request }) => {
  const session = await (
    await request.post(`${gateway.url}/api/sessions`, { data: { title: "Stale approval" } })
  ).json();
  const task = await request.post(`${gateway.url}/api/sessions/${session.id}/tasks`, {
    data: {
      engine: "demo",
      mode: "one-shot",
      params: { steps: 1, step_delay_s: 0, lines_per_step: 1, approve_plan: true },
    },
  });
  expect(task.status()).toBe(201);

  // The list page learns of approvals by polling; freeze its first answer so
  // that it still offers the approval after someone else has resolved it.
  let frozen: string | null = null;
  await page.route("**/api/approvals?status=pending", async (route) => {
    if (frozen === null) {
      const body = await (await route.fetch()).text();
      if (!body.includes(session.id)) return route.fulfill({ body, contentType: "application/json" });
      frozen = body;
    }
    await route.fulfill({ body: frozen, contentType: "application/json" });
  });
  await page.goto(gateway.url);
  const dock = page.getByRole("complementary", { name: "Pending approvals" });
  await expect(dock.getByRole("button", { name: "Approve" })).toBeVisible({ timeout: 30_000 });

  const pending = await (
    await request.get(`${gateway.url}/api/approvals?status=pending&session_id=${session.id}`)
  ).json();
  const resolved = await request.post(`${gateway.url}/api/approvals/${pending.items[0].id}/resolve`, {
    data: { decision: "reject" },
  });
  expect(resolved.status()).toBe(200);

  await dock.getByRole("button", { name: "Approve" }).click();
  await expect(dock.getByRole("alert")).toHaveText(/already rejected by local/);
});

test("cancel a running task", async ({ page }) => {
  await createSession(page, "Cancel me");
  await submitDemo(page, { steps: 20, step_delay_s: 2, lines_per_step: 1, approve_plan: false });
  const task = page.locator("article.task").first();
  await expect(task.getByTestId("step-label")).toHaveText("Step 1 of 20", { timeout: 60_000 });
  await task.getByRole("button", { name: "Cancel task" }).click();
  await expect(task.getByTestId("task-phase")).toHaveText("Cancelled", { timeout: 60_000 });
  await expect(task.getByRole("button", { name: "Cancel task" })).toHaveCount(0);
  await expect(page.locator(".ev-task-cancelled")).toHaveCount(1);

  // a suspended session takes no tasks until resumed
  await page.getByRole("button", { name: "Suspend" }).click();
  await expect(page.getByTestId("session-status")).toHaveText("suspended");
  await expect(page.getByRole("button", { name: "Run task" })).toBeDisabled();
  await page.getByRole("button", { name: "Resume" }).click();
  await expect(page.getByTestId("session-status")).toHaveText("active");
  await expect(page.getByRole("button", { name: "Run task" })).toBeEnabled();
});
