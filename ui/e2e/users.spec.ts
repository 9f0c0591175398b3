/* Token auth: each user signs in with their own token and sees only their
 * own sessions; another user's session is not found, in the list or by URL. */
import { expect, test, type Browser, type Page } from "@playwright/test";
import { join } from "node:path";
import { Gateway, SCREENSHOTS } from "./gateway";

const gateway = new Gateway("token");
let tokens: Record<string, string> = {};

test.beforeAll(async () => {
  await gateway.start();
  tokens = { alice: gateway.token("alice"), bob: gateway.token("bob") };
});
test.afterAll(async () => {
  await gateway.stop();
  gateway.cleanup();
});

async function signIn(browser: Browser, user: string, screenshot?: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(gateway.url);
  await expect(page.getByRole("heading", { name: "Sign in to cmbtask" })).toBeVisible();
  if (screenshot) await page.screenshot({ path: join(SCREENSHOTS, screenshot) });
  await page.getByLabel("Token").fill(tokens[user]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByTestId("user")).toHaveText(user);
  return page;
}

test("a wrong token is refused", async ({ page }) => {
  await page.goto(gateway.url);
  await page.getByLabel("Token").fill("cmbt_not-a-real-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("That token was not accepted.");
});

test("a second user cannot see the first user's sessions", async ({ browser }) => {
  const alice = await signIn(browser, "alice", "sign-in.png");
  const form = alice.getByRole("form", { name: "New session" });
  await form.getByLabel("Title").fill("Alice's private analysis");
  await form.getByRole("button", { name: "Create session" }).click();
  await expect(alice.getByRole("heading", { level: 1, name: "Alice's private analysis" })).toBeVisible();
  await expect(alice.locator(".conn")).toHaveAttribute("data-state", "connected");
  const aliceSessionUrl = alice.url();

  const bob = await signIn(browser, "bob");
  await expect(bob.getByText("No sessions yet.")).toBeVisible();
  await expect(bob.getByText("Alice's private analysis")).toHaveCount(0);

  await bob.goto(aliceSessionUrl);
  await expect(bob.getByRole("alert")).toBeVisible();
  await expect(bob.locator(".conn")).toHaveAttribute("data-state", "not_found");
  await expect(bob.getByText("Alice's private analysis")).toHaveCount(0);

  // alice's pending approval shows in her dock, never in bob's
  const submitted = await alice.request.post(
    `${gateway.url}/api/sessions/${decodeURIComponent(aliceSessionUrl.split("/").pop()!)}/tasks`,
    {
      headers: { Authorization: `Bearer ${tokens.alice}` },
      data: {
        engine: "demo",
        mode: "one-shot",
        params: { steps: 1, step_delay_s: 0, lines_per_step: 1, approve_plan: true },
      },
    },
  );
  expect(submitted.status()).toBe(201);
  await alice.goto(gateway.url);
  await expect(alice.getByRole("complementary", { name: "Pending approvals" })).toBeVisible();
  await bob.goto(gateway.url);
  await expect(bob.getByText("No sessions yet.")).toBeVisible();
  await bob.waitForTimeout(3500); // one more poll of the approvals dock
  await expect(bob.getByRole("complementary", { name: "Pending approvals" })).toHaveCount(0);
  const dock = alice.getByRole("complementary", { name: "Pending approvals" });
  await dock.getByRole("button", { name: "Reject" }).click();
  await expect(dock.getByRole("status")).toHaveText("Rejected by alice");
  await expect(dock).toHaveCount(0, { timeout: 10_000 });

  // alice still sees hers after a reload (the token is kept)
  await alice.goto(gateway.url);
  await expect(alice.getByRole("link", { name: "Alice's private analysis" })).toBeVisible();
  // signing out brings the sign-in screen back
  await alice.getByRole("button", { name: "Sign out" }).click();
  await expect(alice.getByRole("heading", { name: "Sign in to cmbtask" })).toBeVisible();
});
