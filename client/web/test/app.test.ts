// App's handling of Subscribe frames, without a server: the stream's
// messages, resends, receipts and an epoch reset, and the person's own
// optimistic messages meeting their stored copies.
import { describe, expect, test } from "vitest";
import { create } from "@bufbuild/protobuf";
import { App, type Conv } from "../src/app";
import { stateOf } from "../src/lib/timeline";
import { SubscribeResponseSchema } from "../../../gen/ts/parley/v1/chat_pb";
import { ConversationSchema, MessageSchema } from "../../../gen/ts/parley/v1/message_pb";

const DM = "dm:alice:bob";

function setup() {
  const notes: string[] = [];
  const app = new App({ user: "alice", token: "t", expiresAt: Date.now() + 1e6 }, () => {}, () => {}, (_c, title, body) => notes.push(`${title}: ${body}`), "http://127.0.0.1:9");
  app.stop(); // no network: nothing is sent, frames are fed by hand
  const pc = create(ConversationSchema, { id: DM, kind: 1, memberIds: ["alice", "bob"], headSeq: 2n, unreadCount: 1n });
  (app as unknown as { upsert: (c: unknown, l: boolean) => Conv }).upsert(pc, true);
  const c = app.convs.get(DM)!;
  c.timeline.setLatest([1, 2].map((s) => ({ seq: s, senderId: "bob", clientId: `b${s}`, body: `hello ${s}`, sentAt: s, attachments: [], kind: 1, targetSeq: 0 })), false);
  return { app, c, notes };
}

const msg = (seq: number, sender: string, clientId: string, body = `m${seq}`) =>
  create(SubscribeResponseSchema, { frame: { case: "message", value: create(MessageSchema, { conversationId: DM, seq: BigInt(seq), senderId: sender, clientMessageId: clientId, body, kind: 1 }) } });

describe("app: the stream", () => {
  test("a new message from the other side counts as unread and notifies", () => {
    const { app, c, notes } = setup();
    app.onFrame(msg(3, "bob", "b3", "lunch?"));
    expect(c.timeline.newestSeq).toBe(3);
    expect(c.unread).toBe(2);
    expect(c.last?.body).toBe("lunch?");
    expect(notes).toEqual(["bob: lunch?"]);
  });

  test("a replayed message and a resend under a new seq are shown once", () => {
    const { app, c } = setup();
    app.onFrame(msg(3, "bob", "b3"));
    app.onFrame(msg(3, "bob", "b3")); // replay after a reconnect
    app.onFrame(msg(9, "bob", "b3")); // resent from bob's outbox after a crash
    expect(c.timeline.items.map((i) => i.seq)).toEqual([1, 2, 3]);
    expect(c.unread).toBe(2);
  });

  test("the listing's unread count is not counted twice by the replay", () => {
    const { app, c } = setup();
    app.onFrame(msg(2, "bob", "b2")); // already in the listing's count (head 2)
    expect(c.unread).toBe(1);
  });

  test("an own message: pending, then confirmed by its stored copy, then read", () => {
    const { app, c } = setup();
    app.currentId = DM;
    app.send("see you at noon");
    const it = c.timeline.pending[0];
    expect(stateOf(it, "alice", c.members, c.receipts)).toBe("pending");
    expect(app.outbox.all()).toHaveLength(1);
    app.onFrame(msg(3, "alice", it.clientId, "see you at noon"));
    expect(c.timeline.pending).toHaveLength(0);
    expect(stateOf(it, "alice", c.members, c.receipts)).toBe("sent");
    const receipt = (d: number, r: number) => create(SubscribeResponseSchema, { frame: { case: "receipt", value: { conversationId: DM, userId: "bob", deliveredSeq: BigInt(d), readSeq: BigInt(r) } } });
    app.onFrame(receipt(3, 0));
    expect(stateOf(it, "alice", c.members, c.receipts)).toBe("delivered");
    app.onFrame(receipt(3, 3));
    expect(stateOf(it, "alice", c.members, c.receipts)).toBe("read");
    app.onFrame(receipt(1, 1)); // an older receipt changes nothing
    expect(stateOf(it, "alice", c.members, c.receipts)).toBe("read");
    expect(c.unread).toBe(0); // the conversation is open and in sight: read
  });

  test("typing comes and goes", () => {
    const { app, c } = setup();
    const typing = (on: boolean) => create(SubscribeResponseSchema, { frame: { case: "typing", value: { conversationId: DM, userId: "bob", typing: on } } });
    app.onFrame(typing(true));
    expect(app.typers(c)).toEqual(["bob"]);
    app.onFrame(typing(false));
    expect(app.typers(c)).toEqual([]);
  });

  test("an epoch reset drops what the page held", () => {
    const { app, c } = setup();
    app.onFrame(create(SubscribeResponseSchema, { frame: { case: "subscribed", value: { conversationId: DM, headSeq: 0n, epoch: "e2", epochReset: true } } }));
    expect(c.timeline.items).toEqual([]);
    expect(c.timeline.loaded).toBe(false);
    // A message numbered from the new log's start is taken, not mistaken for an old one.
    app.onFrame(msg(1, "bob", "fresh"));
    expect(c.last?.body).toBe("m1");
  });
});
