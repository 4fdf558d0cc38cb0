import { describe, expect, test } from "vitest";
import { Outbox, backoff, classify, type OutboxEntry, type OutboxStorage } from "../src/lib/outbox";

function memory(initial: OutboxEntry[] = []): OutboxStorage & { saved: OutboxEntry[] } {
  const s = {
    saved: initial,
    load: () => JSON.parse(JSON.stringify(s.saved)),
    save: (e: OutboxEntry[]) => { s.saved = JSON.parse(JSON.stringify(e)); },
  };
  return s;
}

const msg = (id: string, conv = "dm:a:b") => ({ clientId: id, conversationId: conv, body: `body ${id}`, attachments: [], createdAt: 1 });

describe("outbox", () => {
  test("sends one at a time per conversation, oldest first", () => {
    const o = new Outbox();
    o.add(msg("1"));
    o.add(msg("2"));
    o.add(msg("3", "room:x"));
    expect(o.due(0).map((e) => e.clientId)).toEqual(["1", "3"]);
    o.begin("1");
    expect(o.due(0).map((e) => e.clientId)).toEqual(["3"]);
    o.ack("1");
    expect(o.due(0).map((e) => e.clientId)).toEqual(["2", "3"]);
  });

  test("a transient failure is retried later under the same id", () => {
    const o = new Outbox(undefined, () => 0.5);
    o.add(msg("1"));
    o.begin("1");
    expect(o.failed("1", classify(14), "unavailable", 1000)).toBe("queued");
    const e = o.get("1")!;
    expect(e.clientId).toBe("1");
    expect(e.nextAttemptAt).toBeGreaterThan(1000);
    expect(o.due(1000)).toEqual([]);
    expect(o.due(e.nextAttemptAt).map((x) => x.clientId)).toEqual(["1"]);
    expect(o.nextWake()).toBe(e.nextAttemptAt);
  });

  test("the wait grows with each attempt and is capped", () => {
    const r = () => 1;
    expect(backoff(1, r)).toBe(500);
    expect(backoff(2, r)).toBe(1000);
    expect(backoff(3, r)).toBe(2000);
    expect(backoff(30, r)).toBe(15000);
    expect(backoff(1, () => 0)).toBe(250); // jitter stays in the upper half
  });

  test("a reconnect makes waiting retries due at once", () => {
    const o = new Outbox(undefined, () => 1);
    o.add(msg("1"));
    o.begin("1");
    o.failed("1", "retry", "unavailable", 0);
    expect(o.due(1)).toEqual([]);
    o.wake();
    expect(o.due(1).map((e) => e.clientId)).toEqual(["1"]);
  });

  test("a rejected message stays as failed and does not block the next", () => {
    const o = new Outbox();
    o.add(msg("1"));
    o.add(msg("2"));
    o.begin("1");
    expect(o.failed("1", classify(3), "body too long", 0)).toBe("failed");
    expect(o.get("1")!.error).toBe("body too long");
    expect(o.due(0).map((e) => e.clientId)).toEqual(["2"]);
    o.retryNow("1");
    expect(o.get("1")!.state).toBe("queued");
  });

  test("codes sort into retry, fatal and auth", () => {
    expect(classify(14)).toBe("retry"); // UNAVAILABLE
    expect(classify(4)).toBe("retry"); // DEADLINE_EXCEEDED
    expect(classify(8)).toBe("retry"); // RESOURCE_EXHAUSTED
    expect(classify(3)).toBe("fatal"); // INVALID_ARGUMENT
    expect(classify(7)).toBe("fatal"); // PERMISSION_DENIED
    expect(classify(16)).toBe("auth"); // UNAUTHENTICATED
  });

  test("it survives a reload; what was in flight is sent again", () => {
    const store = memory();
    const o = new Outbox(store);
    o.add(msg("1"));
    o.add(msg("2"));
    o.begin("1");
    const again = new Outbox(store);
    expect(again.all().map((e) => [e.clientId, e.state])).toEqual([["1", "queued"], ["2", "queued"]]);
    expect(again.due(0).map((e) => e.clientId)).toEqual(["1"]);
    again.ack("1");
    again.ack("2");
    expect(store.saved).toEqual([]);
  });
});
