// End to end: a person deletes their account in Chromium against a real
// parleyd. A wrong password is refused in the dialog and they stay logged
// in; the right one takes them back to the login page, which says so, and
// the same credentials no longer log in nor register.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { Server, artifacts, freePort, launch, tempDir, until } from "./harness";

const USER = "dora";
const PASSWORD = "correct horse battery";
let server: Server;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  await mkdir(artifacts, { recursive: true });
  server = new Server(await freePort(), await tempDir("account"));
  await server.start();
  browser = await launch();
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1, locale: "en-US", timezoneId: "UTC" });
  page = await ctx.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(server.url);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

async function submitLogin(mode: "Log in" | "Create account") {
  await page.getByRole("tab", { name: mode }).click();
  await page.fill("#username", USER);
  await page.fill("#password", PASSWORD);
  await page.getByRole("button", { name: mode, exact: true }).click();
}

describe("deleting an account in Chromium", () => {
  test("register", async () => {
    await submitLogin("Create account");
    await page.locator(".me-name", { hasText: USER }).waitFor();
  });

  test("the dialog explains what happens and Escape closes it", async () => {
    await page.getByRole("button", { name: "Delete account…" }).click();
    const dialog = page.locator("dialog[open]");
    await dialog.getByRole("heading", { name: "Delete your account?" }).waitFor();
    const text = await dialog.innerText();
    expect(text).toMatch(/leave every room and group/);
    expect(text).toMatch(/messages you sent stay/);
    expect(text).toMatch(/can't be registered again/);
    // The password field has the focus, ready to type.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("delete-password");
    await page.keyboard.press("Escape");
    await until("the dialog to close", async () => (await page.locator("dialog[open]").count()) === 0);
  });

  test("a wrong password is refused in the dialog and the person stays logged in", async () => {
    await page.getByRole("button", { name: "Delete account…" }).click();
    const dialog = page.locator("dialog[open]");
    await dialog.getByLabel("Enter your password to confirm").fill("not my password");
    await page.keyboard.press("Enter");
    await dialog.getByRole("alert").filter({ hasText: "Wrong username or password." }).waitFor();
    await page.screenshot({ path: join(artifacts, "delete-account-desktop.png") });
    expect(await page.locator("dialog[open]").count()).toBe(1);
    expect(await page.locator(".me-name", { hasText: USER }).count()).toBe(1);
    expect(await page.locator(".me-status.live").count()).toBe(1);
  });

  test("the right password deletes it and the login page says so", async () => {
    const dialog = page.locator("dialog[open]");
    await dialog.getByLabel("Enter your password to confirm").fill(PASSWORD);
    await dialog.getByRole("button", { name: "Delete account", exact: true }).click();
    await page.getByRole("alert").filter({ hasText: `Your account ${USER} was deleted.` }).waitFor();
    await page.locator("#username").waitFor();
    expect(await page.locator(".app").count()).toBe(0);
    // The session is gone: a reload stays on the login page.
    await page.reload();
    await page.locator("#username").waitFor();
    expect(await page.locator(".me-name").count()).toBe(0);
  });

  test("the same credentials no longer log in, and the name stays taken", async () => {
    await submitLogin("Log in");
    await page.getByRole("alert").filter({ hasText: "Wrong username or password." }).waitFor();
    await submitLogin("Create account");
    await page.getByRole("alert").filter({ hasText: "That username is taken." }).waitFor();
    expect(await page.locator(".me-name").count()).toBe(0);
  });
});
