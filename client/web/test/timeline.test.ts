import { describe, expect, test } from "vitest";
import { KIND_DELETE, KIND_EDIT, KIND_POST, Timeline, mergeReceipt, stateOf, type LogMessage, type ReceiptPos } from "../src/lib/timeline";

const post = (seq: number, sender = "bob", clientId = `c${seq}`, body = `m${seq}`): LogMessage => ({
  seq, senderId: sender, clientId, body, sentAt: seq * 1000, attachments: [], kind: KIND_POST, targetSeq: 0,
});
const page = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => post(from + i));
const seqs = (t: Timeline) => t.all().map((i) => i.seq);

describe("optimistic sends", () => {
  const members = ["alice", "bob"];

  test("pending, then sent, delivered, read as the positions move", () => {
    const t = new Timeline();
    t.setLatest(page(1, 3), false);
    const it = t.addPending({ senderId: "alice", clientId: "x", body: "hi", sentAt: 5, attachments: [] });
    const receipts = new Map<string, ReceiptPos>();
    expect(stateOf(it, "alice", members, receipts)).toBe("pending");
    expect(t.all().at(-1)).toBe(it); // shown at once, at the end
    expect(t.ack("alice", "x", 4, 4000)).toBe("confirmed");
    expect(it.seq).toBe(4);
    expect(stateOf(it, "alice", members, receipts)).toBe("sent");
    mergeReceipt(receipts, "bob", 4, 0);
    expect(stateOf(it, "alice", members, receipts)).toBe("delivered");
    mergeReceipt(receipts, "bob", 4, 4);
    expect(stateOf(it, "alice", members, receipts)).toBe("read");
    // A late, older receipt does not move it back.
    expect(mergeReceipt(receipts, "bob", 2, 1)).toBe(false);
    expect(stateOf(it, "alice", members, receipts)).toBe("read");
  });

  test("read implies delivered even if only read was reported", () => {
    const receipts = new Map<string, ReceiptPos>();
    mergeReceipt(receipts, "bob", 0, 9);
    expect(receipts.get("bob")).toEqual({ deliveredSeq: 9, readSeq: 9 });
  });

  test("the stored copy arriving before the ack confirms it once", () => {
    const t = new Timeline();
    t.setLatest([], false);
    const it = t.addPending({ senderId: "alice", clientId: "x", body: "hi", sentAt: 5, attachments: [] });
    expect(t.apply(post(7, "alice", "x", "hi"))).toBe("confirmed");
    expect(t.ack("alice", "x", 7, 7000)).toBe("duplicate");
    expect(t.all()).toEqual([it]);
    expect(it.seq).toBe(7);
    expect(it.local).toBeUndefined();
  });

  test("a failed send shows its reason and can go back to pending", () => {
    const t = new Timeline();
    t.setLatest([], false);
    const it = t.addPending({ senderId: "alice", clientId: "x", body: "hi", sentAt: 5, attachments: [] });
    t.fail("alice", "x", "too long");
    expect(stateOf(it, "alice", members, new Map())).toBe("failed");
    expect(it.local?.error).toBe("too long");
    t.retrying("alice", "x");
    expect(stateOf(it, "alice", members, new Map())).toBe("pending");
    t.drop("alice", "x");
    expect(t.all()).toEqual([]);
  });

  test("in a group, read means read by everyone else", () => {
    const t = new Timeline();
    t.setLatest([post(3, "alice", "x")], false);
    const it = t.findSeq(3)!;
    const receipts = new Map<string, ReceiptPos>();
    mergeReceipt(receipts, "bob", 3, 3);
    expect(stateOf(it, "alice", ["alice", "bob", "carol"], receipts)).toBe("sent");
    mergeReceipt(receipts, "carol", 3, 0);
    expect(stateOf(it, "alice", ["alice", "bob", "carol"], receipts)).toBe("delivered");
    mergeReceipt(receipts, "carol", 3, 3);
    expect(stateOf(it, "alice", ["alice", "bob", "carol"], receipts)).toBe("read");
  });
});

describe("the window", () => {
  test("duplicates are dropped by seq and by (sender, client id)", () => {
    const t = new Timeline();
    t.setLatest(page(1, 3), false);
    expect(t.apply(post(3))).toBe("duplicate");
    // A resend after a crash: new seq, same ids.
    expect(t.apply({ ...post(9), clientId: "c2" })).toBe("duplicate");
    expect(t.apply(post(4))).toBe("added");
    expect(seqs(t)).toEqual([1, 2, 3, 4]);
  });

  test("out-of-order arrivals land in seq order", () => {
    const t = new Timeline();
    t.setLatest([post(1), post(5)], false);
    t.apply(post(3));
    expect(seqs(t)).toEqual([1, 3, 5]);
  });

  test("edits and deletes change their target", () => {
    const t = new Timeline();
    t.setLatest(page(1, 2), false);
    expect(t.apply({ ...post(3), kind: KIND_EDIT, targetSeq: 1, body: "fixed" })).toBe("changed");
    expect(t.findSeq(1)!.body).toBe("fixed");
    expect(t.findSeq(1)!.editedAt).toBe(3000);
    expect(t.apply({ ...post(4), kind: KIND_DELETE, targetSeq: 2, body: "" })).toBe("changed");
    expect(t.findSeq(2)!.deleted).toBe(true);
    expect(seqs(t)).toEqual([1, 2]); // events are not rows
  });

  test("it never holds more than max: paging up trims the newest end", () => {
    const t = new Timeline(100);
    t.setLatest(page(251, 300), true);
    t.prependOlder(page(201, 250), true);
    expect(t.size).toBe(100);
    t.prependOlder(page(151, 200), true);
    expect(t.size).toBe(100);
    expect(t.oldestSeq).toBe(151);
    expect(t.newestSeq).toBe(250);
    expect(t.hasNewer).toBe(true);
    // Live messages beyond a window paged away are not added...
    expect(t.apply(post(301))).toBe("outside");
    // ...and paging down brings the window back, trimming the oldest end.
    t.appendNewer(page(251, 301), false);
    expect(t.size).toBe(100);
    expect(t.newestSeq).toBe(301);
    expect(t.hasNewer).toBe(false);
    expect(t.hasOlder).toBe(true);
  });

  test("live messages at the end trim the oldest", () => {
    const t = new Timeline(10);
    t.setLatest(page(1, 10), false);
    t.apply(post(11));
    expect(t.size).toBe(10);
    expect(t.oldestSeq).toBe(2);
    expect(t.hasOlder).toBe(true);
  });

  test("pending messages are hidden while the window is paged away", () => {
    const t = new Timeline(10);
    t.setLatest(page(1, 5), false);
    t.addPending({ senderId: "alice", clientId: "x", body: "hi", sentAt: 1, attachments: [] });
    t.hasNewer = true;
    expect(t.all().length).toBe(5);
  });
});
