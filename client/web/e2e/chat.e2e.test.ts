// End to end: two people in two browser contexts of headless Chromium chat
// through a real parleyd; the server restarts under them; a Go client
// (the parley CLI) sends while the page is cut off. Steps run in order and
// share state. A step whose server feature is not there yet (the server
// answers Unimplemented) is skipped with that reason, never faked.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { Code, codeOf, makeClients } from "../src/api";
import { Cli, Server, artifacts, freePort, launch, makePng, sleep, tempDir, until } from "./harness";

const PASSWORD = "correct horse battery";
let server: Server;
let browser: Browser;
let alice: { ctx: BrowserContext; page: Page };
let bob: { ctx: BrowserContext; page: Page };
const dm = "dm:alice:bob";
const missing = new Map<string, string>();

async function newPerson(width = 1280, height = 800) {
  const ctx = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1, locale: "en-US", timezoneId: "UTC" });
  await ctx.grantPermissions(["notifications"], { origin: server.url });
  // Record notifications the page shows, to check them.
  await ctx.addInitScript(() => {
    const shown: { title: string; body?: string }[] = [];
    (window as unknown as { __notes: typeof shown }).__notes = shown;
    class Fake {
      static permission = "granted";
      static requestPermission = async () => "granted";
      onclick: (() => void) | null = null;
      constructor(title: string, opts?: { body?: string }) {
        shown.push({ title, body: opts?.body });
      }
      close() {}
    }
    (window as unknown as { Notification: unknown }).Notification = Fake;
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(server.url);
  return { ctx, page };
}

async function signUp(page: Page, user: string) {
  await page.getByRole("tab", { name: "Create account" }).click();
  await page.fill("#username", user);
  await page.fill("#password", PASSWORD);
  await page.getByRole("button", { name: "Create account", exact: true }).click();
  await page.locator(".me-name", { hasText: user }).waitFor();
}

function bubble(page: Page, text: string) {
  return page.locator(".msg", { hasText: text });
}

async function send(page: Page, text: string) {
  const input = page.getByRole("textbox", { name: "Message" });
  await input.fill(text);
  await input.press("Enter");
}

async function openConv(page: Page, id: string) {
  const row = page.locator(`.conv[data-conv="${id}"]`);
  await row.waitFor({ timeout: 20_000 });
  await row.click();
  await page.locator(".chat-head").waitFor();
}

async function dismissToasts(page: Page) {
  for (const b of await page.locator(".toast").getByRole("button", { name: "Dismiss" }).all()) await b.click();
  await page.waitForTimeout(300);
}

/** token logs in over grpc-web from Node, for probing what the server has. */
async function probe() {
  const anon = makeClients(server.url, () => undefined);
  const res = await anon.auth.login({ username: "bob", password: PASSWORD });
  const api = makeClients(server.url, () => res.token?.value);
  const check = async (feature: string, call: () => Promise<unknown>) => {
    try {
      await call();
    } catch (e) {
      if (codeOf(e) === Code.Unimplemented) missing.set(feature, `the server does not implement ${feature} yet (Unimplemented)`);
    }
  };
  await check("receipts", () => api.chat.getReceipts({ conversationId: dm }));
  await check("typing", () => api.chat.setTyping({ conversationId: dm, typing: false }));
  await check("presence", () => api.chat.getPresence({ userIds: ["alice"] }));
  await check("attachments", () => api.attachments.upload({ name: "probe.txt", contentType: "text/plain", data: new TextEncoder().encode("probe") }));
  await check("edit", () => api.chat.editMessage({ conversationId: dm, seq: 1n << 40n, clientMessageId: "probe-edit", body: "x" }));
  return api;
}

function needs(ctx: { skip: (note?: string) => void }, feature: string) {
  const why = missing.get(feature);
  if (why) ctx.skip(`pending: ${why}`);
}

beforeAll(async () => {
  await mkdir(artifacts, { recursive: true });
  server = new Server(await freePort(), await tempDir("data"), ["--heartbeat", "2s", "--max-attachment", String(256 << 10)]);
  await server.start();
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

describe("two people chat in Chromium", () => {
  test("a wrong password gets an error a person can act on", async () => {
    bob = await newPerson();
    await bob.page.fill("#username", "nobody");
    await bob.page.fill("#password", "wrong password");
    await bob.page.getByRole("button", { name: "Log in", exact: true }).click();
    await bob.page.getByRole("alert").filter({ hasText: "Wrong username or password." }).waitFor();
    await bob.page.screenshot({ path: join(artifacts, "login-error-desktop.png") });
  });

  test("both register and log in", async () => {
    alice = await newPerson();
    await signUp(alice.page, "alice");
    await signUp(bob.page, "bob");
    await alice.page.getByText("No conversations yet").waitFor();
  });

  test("alice starts a direct chat and they talk both ways", async () => {
    const p = alice.page;
    await p.getByRole("button", { name: "New", exact: true }).click();
    await p.fill("#dm-user", "bob");
    await p.getByRole("button", { name: "Start chat" }).click();
    await p.locator(".head-title", { hasText: "bob" }).waitFor();
    await send(p, "Hi Bob! Are we still on for lunch?");
    // Optimistic: the bubble is there at once, then it is acknowledged.
    await bubble(p, "still on for lunch").waitFor();
    await until("alice's message to be sent", async () => ["sent", "delivered", "read"].includes((await bubble(p, "still on for lunch").getAttribute("data-state")) ?? ""));

    // Bob learns about the new conversation by himself.
    await openConv(bob.page, dm);
    await bubble(bob.page, "still on for lunch").waitFor();
    await send(bob.page, "Yes! 12:30 at the usual place 🍜");
    await bubble(p, "12:30 at the usual place").waitFor();
    await send(p, "Perfect, see you there.");
    await bubble(bob.page, "see you there").waitFor();
    // Never twice.
    expect(await bubble(bob.page, "still on for lunch").count()).toBe(1);
    expect(await bubble(p, "12:30 at the usual place").count()).toBe(1);
  });

  test("receipts move to read", async (ctx) => {
    await probe();
    needs(ctx, "receipts");
    await until("alice's last message to show read", async () => (await bubble(alice.page, "see you there").getAttribute("data-state")) === "read", 15_000);
  });

  test("typing shows on the other side", async (ctx) => {
    needs(ctx, "typing");
    await bob.page.getByRole("textbox", { name: "Message" }).pressSequentially("On my w", { delay: 30 });
    await alice.page.locator(".head-sub", { hasText: "bob is typing" }).waitFor();
    await bob.page.getByRole("textbox", { name: "Message" }).fill("");
  });

  test("presence shows the other person online", async (ctx) => {
    needs(ctx, "presence");
    await alice.page.locator(".chat-head .presence.on").waitFor();
  });

  test("reload keeps the history", async () => {
    await alice.page.reload();
    await bubble(alice.page, "still on for lunch").waitFor();
    await bubble(alice.page, "12:30 at the usual place").waitFor();
    await bubble(alice.page, "see you there").waitFor();
    expect(await alice.page.locator(".msg").count()).toBe(3);
  });

  test("a hidden tab gets a notification and a title badge", async () => {
    await bob.page.evaluate(() => {
      Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
      document.dispatchEvent(new Event("visibilitychange"));
    });
    await send(alice.page, "Bring the umbrella, it's raining ☔");
    await until("bob's title badge", async () => (await bob.page.title()) === "(1) Parley");
    const notes = await bob.page.evaluate(() => (window as unknown as { __notes: { title: string; body?: string }[] }).__notes);
    expect(notes.some((n) => n.title === "alice" && n.body?.includes("umbrella"))).toBe(true);
    await bob.page.evaluate(() => {
      Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "visible" });
      document.dispatchEvent(new Event("visibilitychange"));
    });
    await until("bob's title badge to clear", async () => (await bob.page.title()) === "Parley");
  });

  test("the server restarts under the page; it reconnects and catches up what a Go client sent", async () => {
    const cli = await Cli.make(server, "bob");
    await cli.run(["login", "bob"], { password: PASSWORD });
    const stranger = await newPerson(390, 844);
    await server.stop();
    // Logging in while the server is down says so.
    await stranger.page.fill("#username", "alice");
    await stranger.page.fill("#password", PASSWORD);
    await stranger.page.getByRole("button", { name: "Log in", exact: true }).click();
    await stranger.page.getByRole("alert").filter({ hasText: "Can't reach the server" }).waitFor();
    await stranger.ctx.close();
    await alice.page.locator(".chat .banner.warn", { hasText: /Connection lost|offline/ }).waitFor({ timeout: 20_000 });
    // Typed while the server is down: shown at once, pending, sent later.
    await send(alice.page, "Are you there? The server blinked.");
    expect(await bubble(alice.page, "The server blinked").getAttribute("data-state")).toBe("pending");
    await alice.page.screenshot({ path: join(artifacts, "reconnecting-desktop.png") });
    await server.start();
    await cli.run(["send", dm, "Sent from the terminal while your page was away"]);
    await bubble(alice.page, "Sent from the terminal while your page was away").waitFor({ timeout: 30_000 });
    await until("the banner to clear", async () => (await alice.page.locator(".chat .banner.warn").count()) === 0, 20_000);
    await until("the pending message to be sent", async () => ["sent", "delivered", "read"].includes((await bubble(alice.page, "The server blinked").getAttribute("data-state")) ?? ""), 20_000);
    await bubble(bob.page, "The server blinked").waitFor({ timeout: 30_000 });
    await bubble(bob.page, "Sent from the terminal").waitFor({ timeout: 30_000 });
    expect(await bubble(bob.page, "The server blinked").count()).toBe(1);
    expect(await bubble(alice.page, "Sent from the terminal").count()).toBe(1);
  });

  test("an attachment uploaded by one is downloaded by the other", async (ctx) => {
    needs(ctx, "attachments");
    const png = makePng();
    await alice.page.locator('input[type="file"]').setInputFiles({ name: "sunset.png", mimeType: "image/png", buffer: png });
    await alice.page.locator(".chip", { hasText: "sunset.png" }).waitFor();
    await send(alice.page, "Photo from yesterday");
    await until("the photo to be sent", async () => ["sent", "delivered", "read"].includes((await bubble(alice.page, "Photo from yesterday").getAttribute("data-state")) ?? ""), 20_000);
    const msg = bubble(bob.page, "Photo from yesterday");
    await msg.waitFor();
    const img = msg.locator("img.preview");
    await until("the image preview", async () => (await img.count()) === 1 && img.evaluate((el: HTMLImageElement) => el.complete && el.naturalWidth === 64))
      .catch(async (e) => { throw new Error(`${e.message}\n${await msg.innerHTML()}`); });
    const [download] = await Promise.all([
      bob.page.waitForEvent("download"),
      msg.getByRole("button", { name: "Download sunset.png" }).last().click(),
    ]);
    expect(download.suggestedFilename()).toBe("sunset.png");
    const path = join(await tempDir("download"), "sunset.png");
    await download.saveAs(path);
    expect(Buffer.compare(await readFile(path), png)).toBe(0);

    // Over the server's --max-attachment: the person is told, nothing is lost silently.
    await alice.page.locator('input[type="file"]').setInputFiles({ name: "huge.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(300 * 1024, 7) });
    await alice.page.getByRole("textbox", { name: "Message" }).press("Enter");
    await alice.page.locator(".toast", { hasText: "huge.bin is too large to send" }).waitFor();
    await bubble(alice.page, "huge.bin").locator(".failed", { hasText: /too large/i }).waitFor();
    await bubble(alice.page, "huge.bin").getByRole("button", { name: "Discard" }).click();
    await until("the failed message to go", async () => (await bubble(alice.page, "huge.bin").count()) === 0);
  });

  test("edit and delete reach the other side", async (ctx) => {
    needs(ctx, "edit");
    const p = alice.page;
    await send(p, "Dinner at 7 tonight?");
    await bubble(bob.page, "Dinner at 7 tonight?").waitFor();
    await until("the message to be sent", async () => ["sent", "delivered", "read"].includes((await bubble(p, "Dinner at 7 tonight?").getAttribute("data-state")) ?? ""));
    // Up in an empty composer edits the last message.
    const input = p.getByRole("textbox", { name: "Message" });
    await input.press("ArrowUp");
    await p.locator(".edit-bar", { hasText: "Editing message" }).waitFor();
    await input.fill("Dinner at 8 tonight?");
    await input.press("Enter");
    await bubble(bob.page, "Dinner at 8 tonight?").locator(".edited").waitFor();
    await bubble(p, "Dinner at 8 tonight?").hover();
    await bubble(p, "Dinner at 8 tonight?").getByRole("button", { name: "Delete message" }).click();
    await p.locator("dialog[open]").getByRole("button", { name: "Delete", exact: true }).click();
    await until("the tombstone on both sides", async () =>
      (await bubble(bob.page, "This message was deleted").count()) === 1 && (await bubble(p, "This message was deleted").count()) === 1);
    expect(await bubble(bob.page, "Dinner at").count()).toBe(0);
  });

  test("a room to join and a group with members", async () => {
    const p = alice.page;
    await p.getByRole("button", { name: "New", exact: true }).click();
    await p.getByRole("tab", { name: "Room" }).click();
    await p.fill("#room-name", "lobby");
    await p.fill("#room-title", "Lobby");
    await p.getByRole("button", { name: "Create room" }).click();
    await p.locator(".head-title", { hasText: "Lobby" }).waitFor();
    await send(p, "Welcome to the lobby, everyone 👋");

    const b = bob.page;
    await b.getByRole("button", { name: "New", exact: true }).click();
    await b.getByRole("tab", { name: "Room" }).click();
    await b.fill("#room-name", "lobby");
    await b.getByRole("button", { name: "Join room" }).click();
    await bubble(b, "Welcome to the lobby").waitFor();

    const carol = await Cli.make(server, "carol");
    await carol.run(["register", "carol"], { password: PASSWORD });
    await p.getByRole("button", { name: "New", exact: true }).click();
    await p.getByRole("tab", { name: "Group" }).click();
    await p.fill("#group-title", "Weekend trip");
    await p.fill("#group-members", "bob");
    await p.getByRole("button", { name: "Create group" }).click();
    await p.locator(".head-title", { hasText: "Weekend trip" }).waitFor();
    await p.getByRole("button", { name: "Conversation info" }).click();
    await p.fill("#add-member", "carol");
    await p.getByRole("button", { name: "Add member" }).click();
    await p.locator(".members li", { hasText: "carol" }).waitFor();
    await p.keyboard.press("Escape");
    await until("the dialog to close", async () => !(await p.locator("dialog[open]").count()));
    await send(p, "Who's in for hiking on Saturday? ⛰️");
    const group = b.locator(".conv", { hasText: "Weekend trip" });
    await group.waitFor({ timeout: 20_000 });
    await until("the unread badge", async () => (await group.locator(".badge").textContent()) === "1");
    await group.click();
    await until("the badge to clear once read", async () => (await group.locator(".badge").count()) === 0);
    await send(b, "I'm in! I'll bring snacks 🥨");
    await carol.run(["send", (await p.evaluate(() => decodeURIComponent(location.hash.replace("#/c/", "")))), "Count me in too. Meet at the station at 8?"]);
    await bubble(p, "Meet at the station").waitFor({ timeout: 20_000 });
    await bubble(p, "bring snacks").waitFor();
    await send(p, "8 works. See you both there!");
    await dismissToasts(p);
    await p.screenshot({ path: join(artifacts, "group-desktop.png") });
  });

  test("history pages in as you scroll up and the DOM stays bounded", async () => {
    const api = makeClients(server.url, () => undefined);
    const login = await api.auth.login({ username: "bob", password: PASSWORD });
    const bobApi = makeClients(server.url, () => login.token?.value);
    for (let i = 1; i <= 320; i++) {
      await bobApi.chat.send({ conversationId: "room:lobby", clientMessageId: `bulk-${i}`, body: `Message number ${i} in a long conversation` });
    }
    const p = alice.page;
    await openConv(p, "room:lobby");
    await bubble(p, "Message number 320 in").waitFor();
    let sawFirst = false;
    for (let i = 0; i < 40 && !sawFirst; i++) {
      await p.locator(".messages").evaluate((el) => (el.scrollTop = 0));
      await sleep(150);
      expect(await p.locator(".msg").count()).toBeLessThanOrEqual(200);
      sawFirst = (await bubble(p, "Welcome to the lobby").count()) > 0;
    }
    expect(sawFirst).toBe(true);
    expect(await bubble(p, "Message number 320 in").count()).toBe(0); // paged out of the DOM
    await p.getByRole("button", { name: "Jump to latest messages" }).click();
    await bubble(p, "Message number 320 in").waitFor();
    expect(await p.locator(".msg").count()).toBeLessThanOrEqual(200);
  });

  test("screenshots of the chat window, desktop and phone", async () => {
    await openConv(alice.page, dm);
    await dismissToasts(alice.page);
    await alice.page.screenshot({ path: join(artifacts, "chat-desktop.png") });

    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, locale: "en-US", timezoneId: "UTC" });
    const page = await phone.newPage();
    await page.goto(server.url);
    await page.fill("#username", "bob");
    await page.fill("#password", PASSWORD);
    await page.getByRole("button", { name: "Log in", exact: true }).click();
    await page.locator(".conv").first().waitFor();
    await page.screenshot({ path: join(artifacts, "list-phone.png") });
    await openConv(page, dm);
    await bubble(page, "The server blinked").waitFor();
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(artifacts, "chat-phone.png") });
    await phone.close();
  });
});
