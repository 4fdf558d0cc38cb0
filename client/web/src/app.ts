// App is the browser client's state and the logic that keeps it in step with
// the server: the conversation list, one Subscribe stream that follows all
// of them and reconnects by itself, the outbox, receipts, typing and
// presence. The view (ui.ts) renders it and calls its methods; App calls
// `changed` whenever something visible moved.
import { Code, ConnectError, attemptError, codeOf, explain, humane, isNetwork, makeClients, ms, tooLarge, type Clients } from "./api";
import { formatSize } from "./lib/format";
import type { Conversation } from "../../../gen/ts/parley/v1/message_pb";
import type { Message } from "../../../gen/ts/parley/v1/message_pb";
import type { SubscribeResponse } from "../../../gen/ts/parley/v1/chat_pb";
import { Dedup } from "./lib/dedup";
import { Outbox, classify, localStorageOutbox, type OutboxEntry } from "./lib/outbox";
import { Positions, planResume } from "./lib/positions";
import { KIND_DELETE, KIND_EDIT, Timeline, mergeReceipt, type Item, type ItemAttachment, type LogMessage, type ReceiptPos } from "./lib/timeline";

export const KIND_DIRECT = 1, KIND_ROOM = 2, KIND_GROUP = 3;

export interface Session {
  user: string;
  token: string;
  expiresAt: number;
}

export interface ConvSummary {
  senderId: string;
  body: string;
  sentAt: number;
  attachments: number;
  deleted: boolean;
}

export interface Conv {
  id: string;
  kind: number;
  title: string;
  ownerId: string;
  members: string[];
  createdAt: number;
  headSeq: number;
  readSeq: number;
  unread: number;
  /** countedTo is the seq up to which unread already accounts for messages. */
  countedTo: number;
  last?: ConvSummary;
  timeline: Timeline;
  receipts: Map<string, ReceiptPos>;
  typing: Map<string, number>;
  loading: boolean;
  loadError?: string;
}

export type LinkState = "connecting" | "live" | "reconnecting" | "offline";

export interface Link {
  state: LinkState;
  retryAt: number;
  error?: string;
  /** recovered is set for a moment after coming back, to say so. */
  recovered: boolean;
}

export interface Presence {
  online: boolean;
  lastSeen: number;
}

export interface Toast {
  id: number;
  text: string;
  kind: "error" | "info";
}

const SESSION_KEY = "parley.session";
const MAX_REPLAY = 500;
const STALL_MS = 40_000;

export function loadSession(): Session | undefined {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    if (s && s.user && s.token && s.expiresAt > Date.now()) return s;
  } catch {
    /* a bad entry is the same as none */
  }
  return undefined;
}

export function saveSession(s: Session | undefined): void {
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
}

/** accountDeleted is what the login page says after the account is deleted. */
export function accountDeleted(user: string): string {
  return `Your account ${user} was deleted. Its messages stay in their conversations, and the name can't be registered again.`;
}

/** deleteAccountError says why deleting the account did not happen. */
export function deleteAccountError(err: unknown): string {
  const shared = attemptError(err);
  if (shared) return shared;
  if (codeOf(err) === Code.Unauthenticated) {
    // The server's own words, the same as a failed login's.
    const msg = humane(err instanceof ConnectError ? err.rawMessage : "");
    return msg ? (/[.!?]$/.test(msg) ? msg : `${msg}.`) : "Wrong password.";
  }
  return explain(err, "deleting the account");
}

/** toLog converts a wire message to the timeline's form. */
export function toLog(m: Message): LogMessage {
  return {
    seq: Number(m.seq),
    senderId: m.senderId,
    clientId: m.clientMessageId,
    body: m.body,
    sentAt: ms(m.sentAt),
    attachments: m.attachments.map((a) => ({ id: a.id, name: a.name, contentType: a.contentType, size: Number(a.size) })),
    kind: m.kind,
    targetSeq: Number(m.targetSeq),
    editedAt: m.editedAt ? ms(m.editedAt) : undefined,
    deleted: m.deleted,
  };
}

export function newId(): string {
  if (typeof crypto !== "undefined" && "randomUUID" in crypto) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

export class App {
  readonly api: Clients;
  /**
   * auth calls AuthService without the token, as the login page does: the
   * password is what proves who asks, and an expired token must not get in
   * the way.
   */
  readonly auth: Clients["auth"];
  readonly me: string;
  convs = new Map<string, Conv>();
  currentId: string | undefined;
  link: Link = { state: "connecting", retryAt: 0, recovered: false };
  presence = new Map<string, Presence>();
  toasts: Toast[] = [];
  listed = false;
  listError?: string;
  /** features the server turned out not to have (Unimplemented). */
  missing = new Set<string>();
  /** atBottom is the view's report that the newest message is in sight. */
  atBottom = true;
  visible = typeof document === "undefined" ? true : !document.hidden;
  localFiles = new Map<string, File[]>();

  readonly outbox: Outbox;
  private positions = new Positions();
  private dedup = new Dedup();
  private epoch = "";
  private stopped = false;
  private ended = false;
  private deleting = false;
  /** deferred holds a logout asked for while the account was being deleted. */
  private deferred?: { reason?: string };
  private stream?: AbortController;
  private restartWanted = false;
  private wakeLoop?: () => void;
  private attempt = 0;
  private lastFrame = 0;
  private timers: ReturnType<typeof setInterval>[] = [];
  private pumpTimer?: ReturnType<typeof setTimeout>;
  private pumping = false;
  private deliveredTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private deliveredSeq = new Map<string, number>();
  private readInflight = new Map<string, number>();
  private typingSentAt = 0;
  private typingConv = "";
  private toastId = 0;
  private uploads = new Map<string, { conv: string; body: string; files: File[] }>();

  constructor(
    readonly session: Session,
    private readonly changed: () => void,
    private readonly onLogout: (reason?: string) => void,
    private readonly onNotify: (conv: Conv, title: string, body: string) => void,
    baseUrl = location.origin,
  ) {
    this.me = session.user;
    this.api = makeClients(baseUrl, () => this.session.token);
    this.auth = makeClients(baseUrl, () => undefined).auth;
    this.outbox = new Outbox(localStorageOutbox(`parley.outbox.${this.me}`));
  }

  // ---- lifecycle ----

  start(): void {
    void this.loop();
    this.timers.push(setInterval(() => this.tick(), 1000));
    this.timers.push(setInterval(() => void this.refreshList(), 30_000));
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    this.stream?.abort();
    this.wakeLoop?.();
    for (const t of this.timers) clearInterval(t);
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
  }

  logout(reason?: string): void {
    // The first reason is the one the person sees: calls that fail after it
    // (the stream, the outbox) could only say less.
    if (this.ended) return;
    if (this.deleting) {
      // A deleted account's stream and calls end with UNAUTHENTICATED, maybe
      // before the deletion's own answer: that answer says which message
      // the login page shows.
      this.stop();
      this.deferred ??= { reason };
      return;
    }
    this.ended = true;
    this.stop();
    saveSession(undefined);
    this.onLogout(reason);
  }

  /**
   * deleteAccount deletes the person's account, checked with their password,
   * and logs out saying so. A wrong password throws the server's error and
   * leaves the session as it was.
   */
  async deleteAccount(password: string): Promise<void> {
    if (this.ended) return;
    this.deleting = true;
    try {
      await this.auth.deleteAccount({ username: this.me, password });
    } catch (err) {
      this.deleting = false;
      const d = this.deferred;
      this.deferred = undefined;
      if (d) this.logout(d.reason);
      throw err;
    }
    this.deleting = false;
    this.deferred = undefined;
    // Unsent messages can never go out under a deleted account.
    for (const e of [...this.outbox.all()]) this.outbox.remove(e.clientId);
    this.logout(accountDeleted(this.me));
  }

  toast(text: string, kind: Toast["kind"] = "error"): void {
    const t = { id: ++this.toastId, text, kind };
    this.toasts.push(t);
    if (this.toasts.length > 4) this.toasts.shift();
    this.changed();
    setTimeout(() => this.dismiss(t.id), kind === "error" ? 8000 : 4000);
  }

  dismiss(id: number): void {
    const n = this.toasts.length;
    this.toasts = this.toasts.filter((t) => t.id !== id);
    if (this.toasts.length !== n) this.changed();
  }

  /** fail handles an error of an action the person took. */
  private fail(err: unknown, what: string): void {
    if (codeOf(err) === Code.Unauthenticated && !isNetwork(err)) {
      this.logout("Your session has expired. Please log in again.");
      return;
    }
    this.toast(explain(err, what));
  }

  // background calls that the server may not have yet stay quiet.
  private background(feature: string, err: unknown): void {
    if (codeOf(err) === Code.Unimplemented) {
      this.missing.add(feature);
      return;
    }
    if (codeOf(err) === Code.Unauthenticated && !isNetwork(err)) this.logout("Your session has expired. Please log in again.");
  }

  private tick(): void {
    const now = Date.now();
    let dirty = false;
    for (const c of this.convs.values()) {
      for (const [u, exp] of c.typing) {
        if (exp <= now) {
          c.typing.delete(u);
          dirty = true;
        }
      }
    }
    if (this.link.state === "live" && this.lastFrame && now - this.lastFrame > STALL_MS) {
      // No heartbeat for too long: the stream is dead even if the socket is not.
      this.stream?.abort(new Error("stalled"));
    }
    if (this.link.state === "reconnecting") dirty = true; // countdown
    if (dirty) this.changed();
  }

  // ---- conversations ----

  get current(): Conv | undefined {
    return this.currentId ? this.convs.get(this.currentId) : undefined;
  }

  sorted(): Conv[] {
    const key = (c: Conv) => c.last?.sentAt || c.createdAt;
    return [...this.convs.values()].sort((a, b) => key(b) - key(a) || a.id.localeCompare(b.id));
  }

  title(c: Conv): string {
    if (c.kind === KIND_DIRECT) return c.members.find((m) => m !== this.me) ?? this.me;
    if (c.title) return c.title;
    return c.id.replace(/^room:/, "#").replace(/^group:/, "");
  }

  totalUnread(): number {
    let n = 0;
    for (const c of this.convs.values()) n += c.unread;
    return n;
  }

  private upsert(pc: Conversation, fromListing: boolean): Conv {
    let c = this.convs.get(pc.id);
    const head = Number(pc.headSeq);
    if (!c) {
      c = {
        id: pc.id, kind: pc.kind, title: pc.title, ownerId: pc.ownerId, members: [...pc.memberIds],
        createdAt: ms(pc.createdAt), headSeq: head, readSeq: Number(pc.readSeq), unread: Number(pc.unreadCount),
        countedTo: head, timeline: new Timeline(), receipts: new Map(), typing: new Map(), loading: false,
      };
      this.convs.set(pc.id, c);
    } else {
      c.kind = pc.kind;
      c.title = pc.title;
      c.ownerId = pc.ownerId;
      c.members = [...pc.memberIds];
      if (fromListing) {
        c.readSeq = Math.max(c.readSeq, Number(pc.readSeq));
        if (head >= c.countedTo) {
          c.unread = Number(pc.unreadCount);
          c.countedTo = head;
        }
      }
      c.headSeq = Math.max(c.headSeq, head);
    }
    const lm = pc.lastMessage;
    if (lm && (!c.last || ms(lm.sentAt) >= c.last.sentAt)) {
      c.last = { senderId: lm.senderId, body: lm.body, sentAt: ms(lm.sentAt), attachments: lm.attachments.length, deleted: lm.deleted };
    }
    if (c.id === this.currentId && this.visible && this.atBottom) c.unread = 0;
    return c;
  }

  /** refreshList lists conversations; new ones restart the stream to follow them. */
  async refreshList(restartOnNew = true): Promise<boolean> {
    try {
      const res = await this.api.conversations.listConversations({});
      let added = false;
      const seen = new Set<string>();
      for (const pc of res.conversations) {
        if (!this.convs.has(pc.id)) added = true;
        seen.add(pc.id);
        this.upsert(pc, true);
      }
      for (const id of [...this.convs.keys()]) {
        if (!seen.has(id)) {
          this.convs.delete(id);
          this.positions.delete(id);
          if (this.currentId === id) this.currentId = undefined;
          added = true;
        }
      }
      this.listed = true;
      this.listError = undefined;
      // The page may have opened a conversation from the URL before the list came.
      const cur = this.current;
      if (cur && !cur.timeline.loaded && !cur.loading) this.open(cur.id);
      if (added && restartOnNew && this.link.state === "live") this.restart();
      this.changed();
      void this.fetchPresence();
      return true;
    } catch (err) {
      this.background("conversations", err);
      if (!this.listed) this.listError = explain(err, "loading your conversations");
      this.changed();
      return false;
    }
  }

  async fetchPresence(): Promise<void> {
    if (this.missing.has("presence")) return;
    const users = new Set<string>();
    for (const c of this.convs.values()) if (c.members.length <= 50) for (const m of c.members) users.add(m);
    users.delete(this.me);
    if (users.size === 0) return;
    try {
      const res = await this.api.chat.getPresence({ userIds: [...users].slice(0, 1000) });
      for (const p of res.presences) this.presence.set(p.userId, { online: p.online, lastSeen: ms(p.lastSeen) });
      this.changed();
    } catch (err) {
      this.background("presence", err);
    }
  }

  private added(pc: Conversation | undefined): Conv | undefined {
    if (!pc) return undefined;
    const c = this.upsert(pc, true);
    this.restart();
    this.changed();
    return c;
  }

  async startDirect(user: string): Promise<Conv | undefined> {
    const res = await this.api.conversations.createDirect({ userId: user.trim().toLowerCase() });
    return this.added(res.conversation);
  }

  async createRoom(name: string, title: string): Promise<Conv | undefined> {
    const res = await this.api.conversations.createRoom({ name: name.trim().replace(/^#/, "").toLowerCase(), title: title.trim() });
    return this.added(res.conversation);
  }

  async joinRoom(name: string): Promise<Conv | undefined> {
    const n = name.trim().replace(/^#/, "").replace(/^room:/, "").toLowerCase();
    const res = await this.api.conversations.joinRoom({ conversationId: `room:${n}` });
    return this.added(res.conversation);
  }

  async createGroup(title: string, members: string[]): Promise<Conv | undefined> {
    const res = await this.api.conversations.createGroup({ title: title.trim(), memberIds: members });
    return this.added(res.conversation);
  }

  async addMember(conv: string, user: string): Promise<void> {
    const res = await this.api.conversations.addMember({ conversationId: conv, userId: user.trim().toLowerCase() });
    if (res.conversation) this.upsert(res.conversation, false);
    this.changed();
  }

  async removeMember(conv: string, user: string): Promise<void> {
    const res = await this.api.conversations.removeMember({ conversationId: conv, userId: user });
    if (res.conversation) this.upsert(res.conversation, false);
    this.changed();
  }

  async leave(conv: string): Promise<void> {
    await this.api.conversations.leaveConversation({ conversationId: conv });
    this.convs.delete(conv);
    this.positions.delete(conv);
    if (this.currentId === conv) this.currentId = undefined;
    this.restart();
    this.changed();
  }

  // ---- opening and paging ----

  open(id: string | undefined): void {
    if (this.currentId && this.currentId !== id) this.setTyping(false);
    this.currentId = id;
    this.atBottom = true;
    const c = this.current;
    if (c && !c.timeline.loaded && !c.loading) void this.loadLatest(c);
    if (c) {
      void this.loadReceipts(c);
      this.markRead();
    }
    this.changed();
  }

  private async loadLatest(c: Conv): Promise<void> {
    c.loading = true;
    c.loadError = undefined;
    this.changed();
    try {
      const res = await this.api.chat.history({ conversationId: c.id, limit: 50 });
      c.timeline.setLatest(res.messages.map(toLog), res.hasMore);
      for (const m of res.messages) this.dedup.add(c.id, m.senderId, m.clientMessageId);
      c.headSeq = Math.max(c.headSeq, Number(res.headSeq));
      if (res.epoch) this.epoch = res.epoch;
      this.restorePending(c);
    } catch (err) {
      c.loadError = explain(err, "loading messages");
      this.background("history", err);
    } finally {
      c.loading = false;
      this.changed();
      this.markRead();
    }
  }

  // restorePending shows the outbox's messages for c (after a reload).
  private restorePending(c: Conv): void {
    for (const e of this.outbox.forConversation(c.id)) {
      const it = c.timeline.addPending({
        senderId: this.me, clientId: e.clientId, body: e.body, sentAt: e.createdAt,
        attachments: e.attachments,
      });
      if (e.state === "failed" && it.local) it.local = { state: "failed", error: e.error };
    }
    for (const [clientId, u] of this.uploads) {
      if (u.conv === c.id) {
        c.timeline.addPending({ senderId: this.me, clientId, body: u.body, sentAt: Date.now(), attachments: pendingAttachments(u.files) });
      }
    }
  }

  async loadOlder(): Promise<boolean> {
    const c = this.current;
    if (!c || c.loading || !c.timeline.hasOlder || !c.timeline.loaded) return false;
    c.loading = true;
    this.changed();
    try {
      const before = c.timeline.oldestSeq;
      const res = await this.api.chat.history({ conversationId: c.id, beforeSeq: BigInt(before || 1), limit: 50 });
      if (c.timeline.oldestSeq === before) c.timeline.prependOlder(res.messages.map(toLog), res.hasMore);
      return true;
    } catch (err) {
      this.fail(err, "loading earlier messages");
      return false;
    } finally {
      c.loading = false;
      this.changed();
    }
  }

  async loadNewer(): Promise<boolean> {
    const c = this.current;
    if (!c || c.loading || !c.timeline.hasNewer) return false;
    c.loading = true;
    this.changed();
    try {
      const after = c.timeline.newestSeq;
      const res = await this.api.chat.history({ conversationId: c.id, afterSeq: BigInt(after), limit: 50 });
      if (c.timeline.newestSeq === after) {
        c.timeline.appendNewer(res.messages.map(toLog), res.hasMore);
        if (!c.timeline.hasNewer) this.restorePending(c);
      }
      return true;
    } catch (err) {
      this.fail(err, "loading newer messages");
      return false;
    } finally {
      c.loading = false;
      this.changed();
      this.markRead();
    }
  }

  /** jumpToLatest drops a window that was paged away and loads the newest page. */
  async jumpToLatest(): Promise<void> {
    const c = this.current;
    if (!c) return;
    if (c.timeline.hasNewer) await this.loadLatest(c);
    this.atBottom = true;
    this.markRead();
  }

  private async loadReceipts(c: Conv): Promise<void> {
    if (this.missing.has("receipts")) return;
    try {
      const res = await this.api.chat.getReceipts({ conversationId: c.id });
      for (const r of res.receipts) mergeReceipt(c.receipts, r.userId, Number(r.deliveredSeq), Number(r.readSeq));
      this.changed();
    } catch (err) {
      this.background("receipts", err);
    }
  }

  // ---- receipts ----

  /** markRead reports the open conversation read, if the person can see its end. */
  markRead(): void {
    const c = this.current;
    if (!c || !this.visible || !this.atBottom || !c.timeline.loaded || c.timeline.hasNewer) return;
    const seq = Math.max(c.timeline.newestSeq, c.headSeq);
    if (c.unread !== 0) {
      c.unread = 0;
      this.changed();
    }
    if (seq <= c.readSeq || (this.readInflight.get(c.id) ?? 0) >= seq || this.missing.has("receipts")) return;
    this.readInflight.set(c.id, seq);
    this.api.chat.markRead({ conversationId: c.id, seq: BigInt(seq) }).then(
      (res) => {
        c.readSeq = Math.max(c.readSeq, seq);
        if (res.receipt) mergeReceipt(c.receipts, this.me, Number(res.receipt.deliveredSeq), Number(res.receipt.readSeq));
      },
      (err) => {
        this.readInflight.delete(c.id);
        this.background("receipts", err);
      },
    );
  }

  private markDelivered(conv: string, seq: number): void {
    if (this.missing.has("receipts")) return;
    if ((this.deliveredSeq.get(conv) ?? 0) >= seq) return;
    this.deliveredSeq.set(conv, seq);
    if (this.deliveredTimers.has(conv)) return;
    this.deliveredTimers.set(conv, setTimeout(() => {
      this.deliveredTimers.delete(conv);
      const s = this.deliveredSeq.get(conv) ?? 0;
      this.api.chat.markDelivered({ conversationId: conv, seq: BigInt(s) }).catch((err) => this.background("receipts", err));
    }, 250));
  }

  // ---- typing ----

  /** setTyping tells the others, at most every 3 s while it goes on. */
  setTyping(on: boolean): void {
    const c = this.current;
    if (!c || this.missing.has("typing") || this.link.state !== "live") return;
    const now = Date.now();
    if (on) {
      if (this.typingConv === c.id && now - this.typingSentAt < 3000) return;
      this.typingConv = c.id;
      this.typingSentAt = now;
    } else {
      if (this.typingConv !== c.id) return;
      this.typingConv = "";
      this.typingSentAt = 0;
    }
    this.api.chat.setTyping({ conversationId: c.id, typing: on }).catch((err) => this.background("typing", err));
  }

  /** online says whether user is online, or undefined while this page cannot know. */
  online(user: string): boolean | undefined {
    if (this.link.state !== "live") return undefined;
    return this.presence.get(user)?.online;
  }

  typers(c: Conv): string[] {
    const now = Date.now();
    return [...c.typing].filter(([u, exp]) => u !== this.me && exp > now).map(([u]) => u);
  }

  // ---- sending ----

  /** send shows the message at once and hands it to the outbox. */
  send(body: string, files: File[] = []): void {
    const c = this.current;
    if (!c) return;
    body = body.replace(/\s+$/, "");
    if (!body && files.length === 0) return;
    const clientId = newId();
    const now = Date.now();
    c.timeline.addPending({ senderId: this.me, clientId, body, sentAt: now, attachments: pendingAttachments(files) });
    if (files.length) this.localFiles.set(clientId, files);
    c.last = { senderId: this.me, body, sentAt: now, attachments: files.length, deleted: false };
    this.atBottom = true;
    this.setTyping(false);
    this.changed();
    if (files.length) void this.upload(c.id, clientId, body, files);
    else {
      this.outbox.add({ clientId, conversationId: c.id, body, attachments: [], createdAt: now });
      this.pump();
    }
  }

  private async upload(conv: string, clientId: string, body: string, files: File[]): Promise<void> {
    this.uploads.set(clientId, { conv, body, files });
    const done: ItemAttachment[] = [];
    try {
      for (const f of files) {
        const data = new Uint8Array(await f.arrayBuffer());
        const res = await this.api.attachments.upload({ name: f.name.replace(/\//g, "_").slice(0, 255), contentType: f.type, data });
        const a = res.attachment;
        if (!a) throw new Error("the server returned no attachment");
        done.push({ id: a.id, name: a.name || f.name, contentType: a.contentType || f.type, size: Number(a.size) || f.size });
      }
    } catch (err) {
      this.uploads.delete(clientId);
      let text: string;
      if (codeOf(err) === Code.ResourceExhausted) {
        text = tooLarge(files.map((f) => f.name).join(", "), err instanceof ConnectError ? err.rawMessage : "", formatSize);
      } else {
        text = explain(err, "uploading the file");
      }
      this.uploadFailed.set(clientId, { conv, body, files });
      this.convs.get(conv)?.timeline.fail(this.me, clientId, text);
      this.fail(err instanceof ConnectError && err.code === Code.ResourceExhausted ? new ConnectError(text, Code.ResourceExhausted) : err, "uploading the file");
      this.changed();
      return;
    }
    this.uploads.delete(clientId);
    const c = this.convs.get(conv);
    const it = c?.timeline.find(`${this.me}\u0000${clientId}`);
    if (it) it.attachments = done;
    this.outbox.add({ clientId, conversationId: conv, body, attachments: done, createdAt: Date.now() });
    this.pump();
  }

  private uploadFailed = new Map<string, { conv: string; body: string; files: File[] }>();

  retry(conv: string, clientId: string): void {
    const c = this.convs.get(conv);
    c?.timeline.retrying(this.me, clientId);
    const up = this.uploadFailed.get(clientId);
    if (up) {
      this.uploadFailed.delete(clientId);
      void this.upload(up.conv, clientId, up.body, up.files);
    } else {
      this.outbox.retryNow(clientId);
      this.pump();
    }
    this.changed();
  }

  discard(conv: string, clientId: string): void {
    this.outbox.remove(clientId);
    this.uploadFailed.delete(clientId);
    const c = this.convs.get(conv);
    if (c) {
      c.timeline.drop(this.me, clientId);
      const last = c.timeline.all().at(-1);
      if (last) c.last = { senderId: last.senderId, body: last.body, sentAt: last.sentAt, attachments: last.attachments.length, deleted: !!last.deleted };
    }
    this.changed();
  }

  /** pump sends what the outbox has due, and schedules the next retry. */
  pump(): void {
    if (this.pumpTimer) {
      clearTimeout(this.pumpTimer);
      this.pumpTimer = undefined;
    }
    if (this.stopped || this.pumping) return;
    const due = this.outbox.due(Date.now());
    for (const e of due) void this.deliver(e);
    const wake = this.outbox.nextWake();
    if (wake !== undefined && due.length === 0) {
      this.pumpTimer = setTimeout(() => this.pump(), Math.max(50, wake - Date.now()));
    }
  }

  private async deliver(e: OutboxEntry): Promise<void> {
    this.outbox.begin(e.clientId);
    const c = this.convs.get(e.conversationId);
    try {
      const res = await this.api.chat.send({
        conversationId: e.conversationId,
        clientMessageId: e.clientId,
        body: e.body,
        attachments: e.attachments.map((a) => ({ id: a.id, name: a.name, contentType: a.contentType, size: BigInt(a.size) })),
      }, { timeoutMs: 20_000 });
      this.outbox.ack(e.clientId);
      this.localFiles.delete(e.clientId);
      const seq = Number(res.seq);
      this.dedup.add(e.conversationId, this.me, e.clientId);
      if (c) {
        c.timeline.ack(this.me, e.clientId, seq, ms(res.sentAt));
        c.headSeq = Math.max(c.headSeq, seq);
        c.readSeq = Math.max(c.readSeq, seq);
      }
    } catch (err) {
      const verdict = classify(codeOf(err));
      const text = explain(err, "sending");
      this.outbox.failed(e.clientId, verdict, text, Date.now());
      if (verdict === "auth") {
        this.logout("Your session has expired. Please log in again. Unsent messages are kept.");
        return;
      }
      if (verdict === "fatal") {
        c?.timeline.fail(this.me, e.clientId, text);
        this.toast(`Message not sent: ${text}`);
      }
    } finally {
      this.changed();
      this.pump();
    }
  }

  async edit(conv: string, seq: number, body: string): Promise<void> {
    try {
      await this.api.chat.editMessage({ conversationId: conv, seq: BigInt(seq), clientMessageId: newId(), body });
      const it = this.convs.get(conv)?.timeline.findSeq(seq);
      if (it) {
        it.body = body;
        it.editedAt = Date.now();
      }
      this.changed();
    } catch (err) {
      this.fail(err, "editing the message");
    }
  }

  async remove(conv: string, seq: number): Promise<void> {
    try {
      await this.api.chat.deleteMessage({ conversationId: conv, seq: BigInt(seq), clientMessageId: newId() });
      const it = this.convs.get(conv)?.timeline.findSeq(seq);
      if (it) {
        it.deleted = true;
        it.body = "";
        it.attachments = [];
      }
      this.changed();
    } catch (err) {
      this.fail(err, "deleting the message");
    }
  }

  /** download fetches an attachment's content in chunks. */
  async download(id: string): Promise<Blob> {
    const parts: Uint8Array[] = [];
    let type = "application/octet-stream";
    for await (const r of this.api.attachments.download({ attachmentId: id })) {
      if (r.part.case === "attachment") type = r.part.value.contentType || type;
      else if (r.part.case === "chunk") parts.push(r.part.value);
    }
    return new Blob(parts as BlobPart[], { type });
  }

  // ---- the stream ----

  /** restart re-opens the stream, e.g. to follow a new conversation. */
  restart(): void {
    this.restartWanted = true;
    if (this.stream) this.stream.abort(new Error("restart"));
    this.wakeLoop?.();
  }

  /** reconnectNow skips the wait before the next attempt. */
  reconnectNow(): void {
    this.attempt = 0;
    this.wakeLoop?.();
  }

  private setLink(state: LinkState, retryAt = 0, error?: string): void {
    const was = this.link.state;
    this.link = { state, retryAt, error, recovered: state === "live" && (was === "reconnecting" || was === "offline") };
    if (this.link.recovered) {
      setTimeout(() => {
        if (this.link.state === "live" && this.link.recovered) {
          this.link = { ...this.link, recovered: false };
          this.changed();
        }
      }, 2500);
    }
    this.changed();
  }

  private sleep(msec: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, msec);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wakeLoop = done;
    });
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      this.restartWanted = false;
      const ok = await this.refreshList(false);
      if (this.stopped) return;
      if (!ok) {
        await this.backoffWait(this.listError);
        continue;
      }
      const plans = [...this.convs.values()].slice(0, 256).map((c) => {
        const known = this.positions.get(c.id);
        const plan = planResume(c.id, known, c.headSeq, MAX_REPLAY);
        if (!known) this.positions.reset(c.id, c.headSeq, this.epoch);
        if (plan.reload && c.timeline.loaded) {
          this.positions.reset(c.id, c.headSeq, plan.epoch);
          if (c.id === this.currentId) void this.loadLatest(c);
          else c.timeline = new Timeline();
        }
        return plan;
      });
      if (plans.length === 0) {
        // Nothing to follow: look for new conversations now and then.
        this.setLink("live");
        this.outbox.wake();
        this.pump();
        await this.sleep(4000);
        continue;
      }
      const ctrl = new AbortController();
      this.stream = ctrl;
      this.restartWanted = false; // the plans above already include every conversation
      let gotFrame = false;
      try {
        const frames = this.api.chat.subscribe({
          conversations: plans.map((p) => ({ conversationId: p.conversationId, afterSeq: BigInt(p.afterSeq), epoch: p.epoch || this.epoch })),
        }, { signal: ctrl.signal });
        for await (const f of frames) {
          this.lastFrame = Date.now();
          if (!gotFrame) {
            gotFrame = true;
            this.attempt = 0;
            this.setLink("live");
            this.outbox.wake();
            this.pump();
            void this.fetchPresence();
            if (this.current) void this.loadReceipts(this.current);
          }
          this.onFrame(f);
        }
        if (this.stopped) return;
        if (this.restartWanted) continue;
        // The server ended the stream without an error: resume at once.
        this.attempt = Math.max(this.attempt, 1);
        await this.backoffWait("The server closed the connection.");
      } catch (err) {
        if (this.stopped) return;
        if (this.restartWanted) continue;
        if (codeOf(err) === Code.Unauthenticated && !isNetwork(err)) {
          this.logout("Your session has expired. Please log in again.");
          return;
        }
        await this.backoffWait(explain(err, "chatting"));
      } finally {
        this.stream = undefined;
      }
    }
  }

  private async backoffWait(error?: string): Promise<void> {
    if (this.restartWanted || this.stopped) return;
    this.attempt++;
    const wait = this.attempt === 1 ? 300 : Math.min(10_000, 1000 * 2 ** (this.attempt - 2)) * (0.75 + Math.random() * 0.5);
    const offline = typeof navigator !== "undefined" && navigator.onLine === false;
    this.setLink(offline ? "offline" : "reconnecting", Date.now() + wait, error);
    await this.sleep(wait);
  }

  /** networkBack is called when the browser says the network is back. */
  networkBack(): void {
    this.reconnectNow();
  }

  setVisible(v: boolean): void {
    this.visible = v;
    if (v) {
      this.markRead();
      if (this.link.state !== "live") this.reconnectNow();
    }
    this.changed();
  }

  onFrame(f: SubscribeResponse): void {
    switch (f.frame.case) {
      case "message":
        this.onMessage(f.frame.value);
        break;
      case "subscribed": {
        const s = f.frame.value;
        const c = this.convs.get(s.conversationId);
        if (s.epoch) this.epoch = s.epoch;
        if (!c) break;
        const head = Number(s.headSeq);
        if (s.epochReset) {
          // The log was replaced: what this page holds means nothing now.
          this.positions.reset(c.id, head, s.epoch);
          c.timeline = new Timeline();
          c.headSeq = head;
          if (c.id === this.currentId) void this.loadLatest(c);
        } else {
          this.positions.advance(c.id, head, s.epoch);
          this.positions.setEpoch(c.id, s.epoch);
        }
        this.changed();
        break;
      }
      case "heartbeat":
        break;
      case "receipt": {
        const r = f.frame.value;
        const c = this.convs.get(r.conversationId);
        if (!c) break;
        mergeReceipt(c.receipts, r.userId, Number(r.deliveredSeq), Number(r.readSeq));
        if (r.userId === this.me) {
          // Read on another device.
          const read = Number(r.readSeq);
          if (read > c.readSeq) {
            c.readSeq = read;
            if (read >= c.headSeq) c.unread = 0;
          }
        }
        this.changed();
        break;
      }
      case "typing": {
        const t = f.frame.value;
        const c = this.convs.get(t.conversationId);
        if (!c || t.userId === this.me) break;
        if (t.typing) c.typing.set(t.userId, t.expiresAt ? Math.min(ms(t.expiresAt), Date.now() + 10_000) : Date.now() + 6000);
        else c.typing.delete(t.userId);
        this.changed();
        break;
      }
      case "presence": {
        const p = f.frame.value;
        this.presence.set(p.userId, { online: p.online, lastSeen: ms(p.lastSeen) || (p.online ? 0 : Date.now()) });
        this.changed();
        break;
      }
      case "notification": {
        const n = f.frame.value;
        const c = this.convs.get(n.conversationId);
        if (!c) {
          // A conversation this page does not know yet: someone started it.
          void this.refreshList().then(() => {
            const nc = this.convs.get(n.conversationId);
            if (nc) this.onNotify(nc, `${n.senderId} in ${this.title(nc)}`, n.preview);
          });
          break;
        }
        const seq = Number(n.seq);
        if (seq > c.headSeq) {
          c.headSeq = seq;
          c.last = { senderId: n.senderId, body: n.preview, sentAt: ms(n.sentAt), attachments: 0, deleted: false };
          if (n.senderId !== this.me && seq > c.countedTo) {
            c.unread++;
            c.countedTo = seq;
          }
          if (n.senderId !== this.me) this.onNotify(c, n.senderId, n.preview);
          this.changed();
        }
        break;
      }
    }
  }

  private onMessage(m: Message): void {
    const c = this.convs.get(m.conversationId);
    if (!c) return;
    const lm = toLog(m);
    if (!this.positions.advance(c.id, lm.seq)) return; // already seen at this seq
    c.headSeq = Math.max(c.headSeq, lm.seq);
    if (lm.kind === KIND_EDIT || lm.kind === KIND_DELETE) {
      if (c.timeline.loaded) c.timeline.apply(lm);
      if (c.last && lm.kind === KIND_DELETE && c.timeline.findSeq(lm.targetSeq) === c.timeline.items.at(-1)) c.last.deleted = true;
      this.changed();
      return;
    }
    const mine = lm.senderId === this.me;
    const pendingHere = mine && c.timeline.find(`${this.me}\u0000${lm.clientId}`)?.local !== undefined;
    if (!this.dedup.add(c.id, lm.senderId, lm.clientId) && !pendingHere) return; // a resend we already showed
    if (c.timeline.loaded) c.timeline.apply(lm);
    c.last = { senderId: lm.senderId, body: lm.body, sentAt: lm.sentAt, attachments: lm.attachments.length, deleted: !!lm.deleted };
    if (!mine) {
      this.markDelivered(c.id, lm.seq);
      const reading = c.id === this.currentId && this.visible && this.atBottom && !c.timeline.hasNewer;
      if (!reading && lm.seq > c.countedTo) c.unread++;
      if (lm.seq > c.countedTo) c.countedTo = lm.seq;
      c.typing.delete(lm.senderId);
      if (!reading) this.onNotify(c, c.kind === KIND_DIRECT ? lm.senderId : `${lm.senderId} in ${this.title(c)}`, preview(lm));
    } else if (lm.seq > c.countedTo) {
      c.countedTo = lm.seq;
    }
    this.changed();
    this.markRead();
  }
}

export function preview(m: { body: string; attachments: { name: string }[] }): string {
  if (m.body) return m.body.length > 100 ? m.body.slice(0, 100) + "…" : m.body;
  if (m.attachments.length) return `📎 ${m.attachments.map((a) => a.name).join(", ")}`;
  return "";
}

function pendingAttachments(files: File[]): ItemAttachment[] {
  return files.map((f, i) => ({ id: `local:${i}`, name: f.name, contentType: f.type, size: f.size }));
}

export type { Item };
