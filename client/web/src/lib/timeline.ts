// Timeline is the window of one conversation that the page shows: a
// contiguous run of the log by seq, plus the person's own messages that are
// not acknowledged yet (shown at once, at the end). It holds at most `max`
// messages; paging in one end trims the other, so however long the
// conversation, the DOM stays bounded.

export type MessageState = "pending" | "sent" | "delivered" | "read" | "failed";

export interface ItemAttachment {
  id: string;
  name: string;
  contentType: string;
  size: number;
}

export interface Item {
  /** key is stable from the optimistic copy to the stored one. */
  key: string;
  seq: number;
  senderId: string;
  clientId: string;
  body: string;
  sentAt: number;
  attachments: ItemAttachment[];
  editedAt?: number;
  deleted?: boolean;
  /** local is set while the message is the person's own and unacknowledged. */
  local?: { state: "pending" | "failed"; error?: string };
}

/** Kind mirrors parley.v1.MessageKind. */
export const KIND_POST = 1, KIND_EDIT = 2, KIND_DELETE = 3;

export interface LogMessage {
  seq: number;
  senderId: string;
  clientId: string;
  body: string;
  sentAt: number;
  attachments: ItemAttachment[];
  kind: number; // 0 reads as a post
  targetSeq: number;
  editedAt?: number;
  deleted?: boolean;
}

export type ApplyResult = "added" | "confirmed" | "changed" | "duplicate" | "outside";

export function itemKey(sender: string, clientId: string): string {
  return `${sender}\u0000${clientId}`;
}

export class Timeline {
  /** items are the stored messages in the window, ascending by seq. */
  items: Item[] = [];
  /** pending are the person's own unacknowledged messages, in send order. */
  pending: Item[] = [];
  /** hasOlder: the log holds messages before the window. */
  hasOlder = true;
  /** hasNewer: the log holds messages after the window (paged away). */
  hasNewer = false;
  /** loaded: the newest page has been fetched once. */
  loaded = false;
  private byKey = new Map<string, Item>();
  private bySeq = new Map<number, Item>();

  constructor(readonly max = 200) {}

  get size(): number {
    return this.items.length + this.pending.length;
  }

  get oldestSeq(): number {
    return this.items.length ? this.items[0].seq : 0;
  }

  get newestSeq(): number {
    return this.items.length ? this.items[this.items.length - 1].seq : 0;
  }

  find(key: string): Item | undefined {
    return this.byKey.get(key);
  }

  findSeq(seq: number): Item | undefined {
    return this.bySeq.get(seq);
  }

  /** all is what to render: the window, then the pending messages. */
  all(): Item[] {
    return this.hasNewer ? this.items.slice() : this.items.concat(this.pending);
  }

  /** addPending shows one of the person's messages before the server has it. */
  addPending(item: Omit<Item, "key" | "seq" | "local"> & { local?: Item["local"] }): Item {
    const key = itemKey(item.senderId, item.clientId);
    const existing = this.byKey.get(key);
    if (existing) return existing;
    const it: Item = { ...item, key, seq: 0, local: item.local ?? { state: "pending" } };
    this.pending.push(it);
    this.byKey.set(key, it);
    return it;
  }

  /** fail marks a pending message as not sent, with the reason. */
  fail(sender: string, clientId: string, error: string): void {
    const it = this.byKey.get(itemKey(sender, clientId));
    if (it?.local) it.local = { state: "failed", error };
  }

  /** retrying puts a failed message back to pending. */
  retrying(sender: string, clientId: string): void {
    const it = this.byKey.get(itemKey(sender, clientId));
    if (it?.local) it.local = { state: "pending" };
  }

  /** drop removes a pending message (the person discarded it). */
  drop(sender: string, clientId: string): void {
    const key = itemKey(sender, clientId);
    const i = this.pending.findIndex((p) => p.key === key);
    if (i >= 0) {
      this.pending.splice(i, 1);
      this.byKey.delete(key);
    }
  }

  /**
   * ack records the server's acknowledgement of a pending message. The
   * stored copy may have arrived on the stream first; then this changes
   * nothing.
   */
  ack(sender: string, clientId: string, seq: number, sentAt: number): ApplyResult {
    const key = itemKey(sender, clientId);
    const it = this.byKey.get(key);
    if (!it) return "outside";
    if (!it.local) return "duplicate";
    return this.place(it, seq, sentAt) ? "confirmed" : "outside";
  }

  // place moves a pending item into the window at seq. It returns false if
  // seq lies beyond the window (paged away), where it is dropped.
  private place(it: Item, seq: number, sentAt: number): boolean {
    const i = this.pending.indexOf(it);
    if (i >= 0) this.pending.splice(i, 1);
    it.local = undefined;
    it.seq = seq;
    it.sentAt = sentAt || it.sentAt;
    if (this.hasNewer && seq > this.newestSeq) {
      this.byKey.delete(it.key);
      return false;
    }
    this.insert(it);
    return true;
  }

  private insert(it: Item): void {
    this.bySeq.set(it.seq, it);
    this.byKey.set(it.key, it);
    const n = this.items.length;
    if (n === 0 || this.items[n - 1].seq < it.seq) {
      this.items.push(it);
      return;
    }
    let lo = 0, hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.items[mid].seq < it.seq) lo = mid + 1;
      else hi = mid;
    }
    this.items.splice(lo, 0, it);
  }

  /**
   * apply takes one message from the log (live or replayed). Posts join
   * the window when they belong at its newest end; edits and deletes
   * change their target if it is in the window. A (sender, client id) the
   * window already holds is a duplicate, and so is a seq it already holds.
   */
  apply(m: LogMessage): ApplyResult {
    if (m.kind === KIND_EDIT || m.kind === KIND_DELETE) {
      const t = this.bySeq.get(m.targetSeq);
      if (!t) return "outside";
      if (m.kind === KIND_EDIT) {
        t.body = m.body;
        t.editedAt = m.sentAt;
      } else {
        t.deleted = true;
        t.body = "";
        t.attachments = [];
      }
      return "changed";
    }
    if (this.bySeq.has(m.seq)) return "duplicate";
    const key = itemKey(m.senderId, m.clientId);
    const existing = this.byKey.get(key);
    if (existing) {
      if (existing.local) return this.place(existing, m.seq, m.sentAt) ? "confirmed" : "outside";
      return "duplicate";
    }
    if (this.hasNewer && m.seq > this.newestSeq) return "outside";
    if (this.items.length > 0 && m.seq < this.oldestSeq && this.hasOlder) return "outside";
    this.insert(this.fromLog(m));
    this.trim("old");
    return "added";
  }

  private fromLog(m: LogMessage): Item {
    return {
      key: itemKey(m.senderId, m.clientId),
      seq: m.seq,
      senderId: m.senderId,
      clientId: m.clientId,
      body: m.body,
      sentAt: m.sentAt,
      attachments: m.attachments,
      editedAt: m.editedAt,
      deleted: m.deleted,
    };
  }

  // addPage inserts History messages (posts only; edits and deletes are
  // already folded into their targets by the server).
  private addPage(msgs: LogMessage[]): number {
    let added = 0;
    for (const m of msgs) {
      if (m.kind === KIND_EDIT || m.kind === KIND_DELETE) continue;
      if (this.bySeq.has(m.seq)) continue;
      const key = itemKey(m.senderId, m.clientId);
      const existing = this.byKey.get(key);
      if (existing) {
        if (existing.local) this.place(existing, m.seq, m.sentAt);
        continue;
      }
      this.insert(this.fromLog(m));
      added++;
    }
    return added;
  }

  /** setLatest replaces the window with the newest page of the log. */
  setLatest(msgs: LogMessage[], hasMore: boolean): void {
    for (const it of this.items) {
      this.byKey.delete(it.key);
    }
    this.items = [];
    this.bySeq.clear();
    this.addPage(msgs);
    this.hasOlder = hasMore;
    this.hasNewer = false;
    this.loaded = true;
    this.trim("old");
  }

  /** prependOlder adds a page from before the window and trims the newest end. */
  prependOlder(msgs: LogMessage[], hasMore: boolean): number {
    const n = this.addPage(msgs);
    this.hasOlder = hasMore;
    this.trim("new");
    return n;
  }

  /** appendNewer adds a page from after the window and trims the oldest end. */
  appendNewer(msgs: LogMessage[], hasMore: boolean): number {
    const n = this.addPage(msgs);
    this.hasNewer = hasMore;
    this.trim("old");
    return n;
  }

  /** trim drops messages from one end until the window fits. */
  trim(end: "old" | "new"): void {
    const over = this.items.length + (this.hasNewer ? 0 : this.pending.length) - this.max;
    if (over <= 0) return;
    const n = Math.min(over, this.items.length);
    const gone = end === "old" ? this.items.splice(0, n) : this.items.splice(this.items.length - n, n);
    for (const it of gone) {
      this.bySeq.delete(it.seq);
      this.byKey.delete(it.key);
    }
    if (end === "old") this.hasOlder = true;
    else this.hasNewer = true;
  }
}

/** Receipt is one member's positions. */
export interface ReceiptPos {
  deliveredSeq: number;
  readSeq: number;
}

/**
 * stateOf gives the state of the person's own message: pending or failed
 * while unacknowledged, then sent, delivered once every other member has it
 * on a device, read once every other member has read it. Positions only
 * move forward, so a message's state never goes back.
 */
export function stateOf(it: Item, me: string, members: readonly string[], receipts: ReadonlyMap<string, ReceiptPos>): MessageState {
  if (it.local) return it.local.state;
  const others = members.filter((m) => m !== me);
  if (others.length === 0) return "sent";
  let allRead = true, allDelivered = true;
  for (const m of others) {
    const r = receipts.get(m);
    const read = r ? r.readSeq : 0;
    const delivered = r ? Math.max(r.deliveredSeq, r.readSeq) : 0;
    if (read < it.seq) allRead = false;
    if (delivered < it.seq) allDelivered = false;
  }
  if (allRead) return "read";
  if (allDelivered) return "delivered";
  return "sent";
}

/** mergeReceipt moves a member's positions forward, never back. */
export function mergeReceipt(receipts: Map<string, ReceiptPos>, user: string, delivered: number, read: number): boolean {
  const r = receipts.get(user);
  if (!r) {
    receipts.set(user, { deliveredSeq: Math.max(delivered, read), readSeq: read });
    return true;
  }
  const d = Math.max(r.deliveredSeq, delivered, read);
  const rd = Math.max(r.readSeq, read);
  if (d === r.deliveredSeq && rd === r.readSeq) return false;
  r.deliveredSeq = d;
  r.readSeq = rd;
  return true;
}
