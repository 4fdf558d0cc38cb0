// Deleting the account, without a server: what the person is told when it
// fails, and that the login page says the account was deleted even when the
// server's UNAUTHENTICATED for the ended session arrives first.
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { App, accountDeleted, deleteAccountError, loadSession, saveSession, type Session } from "../src/app";
import { Code, ConnectError } from "../src/api";
import { loginError } from "../src/ui/login";

const EXPIRED = "Your session has expired. Please log in again.";
const WRONG = new ConnectError("unauthenticated: wrong username or password", Code.Unauthenticated);

function memoryStorage(): Storage {
  const m = new Map<string, string>();
  return {
    get length() { return m.size; },
    clear: () => m.clear(),
    getItem: (k) => m.get(k) ?? null,
    key: (i) => [...m.keys()][i] ?? null,
    removeItem: (k) => void m.delete(k),
    setItem: (k, v) => void m.set(k, String(v)),
  };
}

beforeEach(() => {
  vi.stubGlobal("localStorage", memoryStorage());
});

afterEach(() => {
  vi.unstubAllGlobals();
});

function setup() {
  const session: Session = { user: "alice", token: "t", expiresAt: Date.now() + 1e6 };
  saveSession(session);
  const logouts: (string | undefined)[] = [];
  const app = new App(session, () => {}, (reason) => logouts.push(reason), () => {}, "http://127.0.0.1:9");
  app.stop(); // no network: the deletion's answer is given by hand
  const calls: { username: string; password: string }[] = [];
  let answer: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  (app as unknown as { auth: unknown }).auth = {
    deleteAccount: (req: { username: string; password: string }) => {
      calls.push(req);
      return new Promise<void>((resolve, reject) => (answer = { resolve, reject }));
    },
  };
  return { app, logouts, calls, answer: () => answer! };
}

describe("deleting the account", () => {
  test("a wrong password is an error and the session stays", async () => {
    const { app, logouts, calls, answer } = setup();
    const done = app.deleteAccount("not it");
    expect(calls).toEqual([{ username: "alice", password: "not it" }]);
    answer().reject(WRONG);
    await expect(done).rejects.toBe(WRONG);
    expect(logouts).toEqual([]);
    expect(loadSession()?.user).toBe("alice");
  });

  test("success logs out once, saying the account was deleted, and drops unsent messages", async () => {
    const { app, logouts, answer } = setup();
    app.outbox.add({ clientId: "c1", conversationId: "room:lobby", body: "never sent", attachments: [], createdAt: 1 });
    const done = app.deleteAccount("correct horse");
    answer().resolve();
    await done;
    expect(logouts).toEqual([accountDeleted("alice")]);
    expect(loadSession()).toBeUndefined();
    expect(app.outbox.all()).toEqual([]);
    expect(localStorage.getItem("parley.outbox.alice")).toBeNull();
    // The stream or a send failing afterwards changes nothing.
    app.logout(EXPIRED);
    expect(logouts).toEqual([accountDeleted("alice")]);
  });

  test("the ended stream's UNAUTHENTICATED before the answer does not say the session expired", async () => {
    const { app, logouts, answer } = setup();
    const done = app.deleteAccount("correct horse");
    app.logout(EXPIRED); // what the stream's loop does when the server ends it
    expect(logouts).toEqual([]);
    answer().resolve();
    await done;
    expect(logouts).toEqual([accountDeleted("alice")]);
  });

  test("a logout held back during a failed deletion still happens", async () => {
    const { app, logouts, answer } = setup();
    const done = app.deleteAccount("not it");
    app.logout(EXPIRED);
    answer().reject(WRONG);
    await expect(done).rejects.toBe(WRONG);
    expect(logouts).toEqual([EXPIRED]);
    expect(loadSession()).toBeUndefined();
  });

  test("errors say what to do", () => {
    expect(deleteAccountError(WRONG)).toBe("Wrong username or password.");
    expect(deleteAccountError(new ConnectError("", Code.Unauthenticated))).toBe("Wrong password.");
    expect(deleteAccountError(new ConnectError("Failed to fetch", Code.Unknown))).toMatch(/^Can't reach the server/);
    expect(deleteAccountError(new TypeError("Failed to fetch"))).toMatch(/^Can't reach the server/);
    expect(deleteAccountError(new ConnectError("slow down", Code.ResourceExhausted))).toBe("Too many attempts. Wait a moment and try again.");
    expect(deleteAccountError(new ConnectError("", Code.Unimplemented))).toBe("This server doesn't support deleting the account yet.");
  });

  test("the login page and the delete dialog word shared failures alike", () => {
    for (const err of [new TypeError("Failed to fetch"), new ConnectError("slow down", Code.ResourceExhausted)]) {
      expect(loginError(err, "login")).toBe(deleteAccountError(err));
    }
    expect(loginError(new ConnectError("", Code.Unauthenticated), "login")).toBe("Wrong username or password.");
    expect(loginError(new ConnectError("", Code.AlreadyExists), "register")).toMatch(/^That username is taken/);
  });
});
