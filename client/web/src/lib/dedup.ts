// Dedup remembers which (conversation, sender, client_message_id) triples
// have been shown, so that a message that comes back (a resend after a
// server crash gets a new seq but keeps its ids) is dropped. It forgets the
// oldest entries past its capacity: duplicates only ever arrive close to
// their originals, so a bounded memory is enough.
export class Dedup {
  private seen = new Map<string, true>();

  constructor(private readonly capacity = 5000) {}

  static key(conv: string, sender: string, clientId: string): string {
    return `${conv}\u0000${sender}\u0000${clientId}`;
  }

  has(conv: string, sender: string, clientId: string): boolean {
    return this.seen.has(Dedup.key(conv, sender, clientId));
  }

  /** add records a triple; it returns false when it was already there. */
  add(conv: string, sender: string, clientId: string): boolean {
    const k = Dedup.key(conv, sender, clientId);
    if (this.seen.has(k)) return false;
    this.seen.set(k, true);
    if (this.seen.size > this.capacity) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}
