// The chat page: sidebar with conversations, the open conversation, the
// composer, dialogs and toasts. It renders App's state on every change
// (batched per frame) and keeps the DOM keyed, so that an update touches
// only the rows that changed and the message list never exceeds the
// timeline's bound.
import { App, KIND_DIRECT, KIND_GROUP, KIND_ROOM, deleteAccountError, preview, type Conv } from "../app";
import { explain } from "../api";
import { stateOf, type Item, type MessageState } from "../lib/timeline";
import { clock, dayLabel, formatSize, hue, initials, lastSeen, sameDay, shortTime, typingLine } from "../lib/format";
import { clear, h, icon } from "./dom";

const GROUP_GAP_MS = 5 * 60_000;

export class Shell {
  readonly root: HTMLElement;
  private sidebar!: HTMLElement;
  private convList!: HTMLElement;
  private meBox!: HTMLElement;
  private search!: HTMLInputElement;
  private banners: HTMLElement[] = [];
  private main!: HTMLElement;
  private header!: HTMLElement;
  private messages!: HTMLElement;
  private list!: HTMLElement;
  private topRow!: HTMLElement;
  private typingRow!: HTMLElement;
  private jump!: HTMLButtonElement;
  private composer!: HTMLFormElement;
  private input!: HTMLTextAreaElement;
  private fileInput!: HTMLInputElement;
  private chips!: HTMLElement;
  private editBar!: HTMLElement;
  private empty!: HTMLElement;
  private toasts!: HTMLElement;
  private dialog!: HTMLDialogElement;
  private notifyBtn!: HTMLButtonElement;

  private scheduled = false;
  private shownConv: string | undefined;
  private files: File[] = [];
  private drafts = new Map<string, string>();
  private editing: { conv: string; seq: number } | undefined;
  private previews = new Map<string, Promise<string>>();
  private rows = new Map<string, { el: HTMLElement; sig: string }>();
  private convRows = new Map<string, { el: HTMLElement; sig: string }>();

  constructor(private readonly app: App) {
    this.root = this.build();
  }

  schedule = (): void => {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  };

  // ---- building ----

  private build(): HTMLElement {
    const app = this.app;
    this.search = h("input", { class: "search", type: "search", placeholder: "Search", "aria-label": "Search conversations", oninput: () => this.render() });
    this.notifyBtn = h("button", { class: "icon-btn", type: "button", title: "Turn on notifications", "aria-label": "Turn on notifications", onclick: () => this.askNotify() }, icon("bell"));
    this.meBox = h("div", { class: "me" });
    this.convList = h("nav", { class: "conv-list", "aria-label": "Conversations" });
    const sideBanner = h("div", { class: "banner", hidden: true, role: "status" });
    this.banners.push(sideBanner);
    this.sidebar = h("aside", { class: "sidebar" },
      h("div", { class: "side-head" },
        this.meBox,
        h("div", { class: "side-actions" },
          this.notifyBtn,
          h("button", { class: "icon-btn danger", type: "button", title: "Delete account…", "aria-label": "Delete account…", onclick: () => this.deleteAccountDialog() }, icon("userRemove")),
          h("button", { class: "icon-btn", type: "button", title: "Log out", "aria-label": "Log out", onclick: () => app.logout() }, icon("logout")),
        ),
      ),
      sideBanner,
      h("div", { class: "side-tools" },
        h("div", { class: "search-wrap" }, icon("search", "icon search-icon"), this.search),
        h("button", { class: "btn primary new-chat", type: "button", onclick: () => this.newChatDialog() }, icon("plus"), h("span", null, "New")),
      ),
      this.convList,
    );

    const mainBanner = h("div", { class: "banner", hidden: true, role: "status", "aria-live": "polite" });
    this.banners.push(mainBanner);
    this.header = h("header", { class: "chat-head" });
    this.topRow = h("div", { class: "top-row" });
    this.list = h("div", { class: "msg-list" });
    this.typingRow = h("div", { class: "typing-row", hidden: true, "aria-live": "polite" });
    this.messages = h("div", { class: "messages", role: "log", "aria-label": "Messages", tabindex: "0" }, this.topRow, this.list, this.typingRow);
    this.messages.addEventListener("scroll", () => this.onScroll(), { passive: true });
    // Content that grows after rendering (image previews, fonts) keeps the
    // newest message in sight if it was.
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(() => {
        if (this.stick && !this.app.current?.timeline.hasNewer) this.messages.scrollTop = this.messages.scrollHeight;
      }).observe(this.list);
    }
    this.jump = h("button", { class: "jump", type: "button", hidden: true, "aria-label": "Jump to latest messages", onclick: () => void this.jumpToLatest() }, icon("down"));

    this.input = h("textarea", { class: "input", rows: 1, placeholder: "Write a message…", "aria-label": "Message", enterkeyhint: "send" });
    this.input.addEventListener("keydown", (e) => this.onKey(e));
    this.input.addEventListener("input", () => this.onInput());
    this.input.addEventListener("blur", () => app.setTyping(false));
    this.fileInput = h("input", { type: "file", multiple: true, hidden: true, "aria-label": "Attach files", onchange: () => this.addFiles([...(this.fileInput.files ?? [])]) });
    this.chips = h("div", { class: "chips", hidden: true });
    this.editBar = h("div", { class: "edit-bar", hidden: true });
    this.composer = h("form", { class: "composer", onsubmit: (e: Event) => { e.preventDefault(); this.submit(); } },
      this.editBar,
      this.chips,
      h("div", { class: "composer-row" },
        h("button", { class: "icon-btn attach", type: "button", title: "Attach files", "aria-label": "Attach files", onclick: () => this.fileInput.click() }, icon("attach")),
        this.input,
        h("button", { class: "send", type: "submit", title: "Send (Enter)", "aria-label": "Send" }, icon("send")),
      ),
      this.fileInput,
    );
    this.composer.addEventListener("dragover", (e) => e.preventDefault());
    this.composer.addEventListener("drop", (e) => {
      e.preventDefault();
      this.addFiles([...(e.dataTransfer?.files ?? [])]);
    });
    this.input.addEventListener("paste", (e) => {
      const fs = [...(e.clipboardData?.files ?? [])];
      if (fs.length) {
        e.preventDefault();
        this.addFiles(fs);
      }
    });

    this.empty = h("div", { class: "empty" },
      h("div", { class: "empty-art" }, icon("chat")),
      h("h2", null, "Pick a conversation"),
      h("p", null, "Or start a new one: message someone directly, join a room, or create a group."),
      h("button", { class: "btn primary", type: "button", onclick: () => this.newChatDialog() }, icon("plus"), "New conversation"),
    );
    this.main = h("main", { class: "chat" }, mainBanner, this.header, h("div", { class: "messages-wrap" }, this.messages, this.jump), this.composer, this.empty);
    this.toasts = h("div", { class: "toasts", role: "status", "aria-live": "assertive" });
    this.dialog = h("dialog", { class: "dialog" });
    this.dialog.addEventListener("close", () => {
      clear(this.dialog);
      if (this.app.current) this.input.focus();
    });
    this.dialog.addEventListener("click", (e) => {
      if (e.target === this.dialog) this.dialog.close();
    });
    return h("div", { class: "app" }, this.sidebar, this.main, this.toasts, this.dialog);
  }

  // ---- rendering ----

  render(): void {
    const app = this.app;
    const c = app.current;
    this.root.dataset.view = c ? "chat" : "list";
    this.renderMe();
    this.renderBanner();
    this.renderConvs();
    this.renderToasts();
    const unread = app.totalUnread();
    document.title = unread > 0 ? `(${unread}) Parley` : "Parley";
    this.header.hidden = this.composer.hidden = this.messages.parentElement!.hidden = !c;
    this.empty.hidden = !!c;
    if (!c) {
      this.shownConv = undefined;
      return;
    }
    if (this.shownConv !== c.id) this.switchTo(c);
    this.renderHeader(c);
    this.renderMessages(c);
  }

  private switchTo(c: Conv): void {
    if (this.shownConv) this.drafts.set(this.shownConv, this.input.value);
    this.shownConv = c.id;
    this.editing = undefined;
    this.editBar.hidden = true;
    this.input.value = this.drafts.get(c.id) ?? "";
    this.autosize();
    this.files = [];
    this.renderChips();
    clear(this.list);
    this.rows.clear();
    this.stick = true;
  }

  private renderMe(): void {
    const app = this.app;
    const state = app.link.state;
    const label = state === "live" ? "Online" : state === "connecting" ? "Connecting…" : state === "offline" ? "Offline" : "Reconnecting…";
    const sig = `${app.me}|${state}`;
    if (this.meBox.dataset.sig === sig) return;
    this.meBox.dataset.sig = sig;
    clear(this.meBox);
    this.meBox.append(
      avatar(app.me, state === "live" ? true : undefined),
      h("div", { class: "me-text" }, h("div", { class: "me-name" }, app.me), h("div", { class: `me-status ${state}` }, label)),
    );
    const perm = typeof Notification === "undefined" ? "denied" : Notification.permission;
    this.notifyBtn.hidden = perm !== "default";
  }

  private renderBanner(): void {
    const l = this.app.link;
    let text = "", cls = "", action: HTMLElement | null = null;
    if (l.state === "connecting" && this.app.listed) {
      text = "Connecting…";
      cls = "info";
    } else if (l.state === "reconnecting" || l.state === "offline") {
      const secs = Math.max(0, Math.ceil((l.retryAt - Date.now()) / 1000));
      text = l.state === "offline"
        ? "You're offline. Messages you send will go out when you're back."
        : `Connection lost. ${secs > 0 ? `Reconnecting in ${secs}s…` : "Reconnecting…"}`;
      cls = "warn";
      action = h("button", { class: "link-btn", type: "button", onclick: () => this.app.reconnectNow() }, "Retry now");
    } else if (l.recovered) {
      text = "Back online. You're up to date.";
      cls = "ok";
    } else if (this.app.listError && !this.app.listed) {
      text = this.app.listError;
      cls = "warn";
    }
    for (const b of this.banners) {
      const sig = `${cls}|${text}`;
      b.dataset.state = l.state;
      if (b.dataset.sig === sig) continue;
      b.dataset.sig = sig;
      b.hidden = !text;
      b.className = `banner ${cls}`;
      clear(b);
      if (text) b.append(h("span", { class: "banner-dot" }), h("span", { class: "banner-text" }, text), action ?? "");
    }
  }

  private renderConvs(): void {
    const app = this.app;
    const q = this.search.value.trim().toLowerCase();
    const convs = app.sorted().filter((c) => !q || app.title(c).toLowerCase().includes(q) || c.id.includes(q));
    if (convs.length === 0) {
      const sig = `empty|${q}|${app.listed}`;
      if (this.convList.dataset.sig !== sig) {
        this.convList.dataset.sig = sig;
        clear(this.convList);
        this.convRows.clear();
        this.convList.append(h("div", { class: "conv-empty" },
          !app.listed ? "Loading conversations…" : q ? `No conversation matches “${q}”.` : "No conversations yet. Start one with New."));
      }
      return;
    }
    if (this.convList.dataset.sig?.startsWith("empty")) {
      clear(this.convList);
      this.convList.dataset.sig = "";
    }
    const keep = new Set<string>();
    let prev: Element | null = null;
    for (const c of convs) {
      keep.add(c.id);
      const title = app.title(c);
      const other = c.kind === KIND_DIRECT ? title : "";
      const online = other ? app.online(other) : undefined;
      const typers = app.typers(c);
      const lastText = typers.length ? typingLine(typers) : c.last ? summary(app, c) : c.kind === KIND_DIRECT ? "Say hello 👋" : "No messages yet";
      const sig = [title, lastText, c.unread, c.last?.sentAt ?? 0, online, c.id === app.currentId, typers.length].join("|");
      let row = this.convRows.get(c.id);
      if (!row || row.sig !== sig) {
        const el = h("button", {
          class: `conv${c.id === app.currentId ? " active" : ""}${c.unread ? " unread" : ""}`, type: "button",
          dataset: { conv: c.id }, "aria-current": c.id === app.currentId ? "true" : undefined,
          onclick: () => this.openConv(c.id),
        },
          avatar(title, online, c.kind),
          h("div", { class: "conv-body" },
            h("div", { class: "conv-top" }, h("span", { class: "conv-title" }, title), h("span", { class: "conv-time" }, shortTime(c.last?.sentAt ?? 0))),
            h("div", { class: "conv-bottom" },
              h("span", { class: `conv-last${typers.length ? " typing" : ""}` }, lastText),
              c.unread ? h("span", { class: "badge", "aria-label": `${c.unread} unread` }, c.unread > 99 ? "99+" : String(c.unread)) : null,
            ),
          ),
        );
        if (row) row.el.replaceWith(el);
        row = { el, sig };
        this.convRows.set(c.id, row);
      }
      const want: Element | null = prev ? prev.nextElementSibling : this.convList.firstElementChild;
      if (want !== row.el) this.convList.insertBefore(row.el, want);
      prev = row.el;
    }
    for (const [id, row] of this.convRows) {
      if (!keep.has(id)) {
        row.el.remove();
        this.convRows.delete(id);
      }
    }
  }

  private renderHeader(c: Conv): void {
    const app = this.app;
    const title = app.title(c);
    const typers = app.typers(c);
    let sub: string;
    let online: boolean | undefined;
    if (typers.length) sub = typingLine(typers);
    else if (c.kind === KIND_DIRECT) {
      const p = app.presence.get(title);
      online = app.online(title);
      sub = !p || online === undefined ? "direct message" : p.online ? "online" : lastSeen(p.lastSeen);
    } else {
      const on = c.members.filter((m) => m !== app.me && app.online(m)).length;
      sub = `${c.members.length} member${c.members.length === 1 ? "" : "s"}${on ? `, ${on} online` : ""}`;
      if (c.kind === KIND_ROOM) sub = `${c.id.replace(/^room:/, "#")} · ${sub}`;
    }
    const sig = [c.id, title, sub, online, typers.length].join("|");
    if (this.header.dataset.sig === sig) return;
    this.header.dataset.sig = sig;
    clear(this.header);
    this.header.append(
      h("button", { class: "icon-btn back", type: "button", "aria-label": "Back to conversations", onclick: () => this.openConv(undefined) }, icon("back")),
      h("button", { class: "head-main", type: "button", onclick: () => this.infoDialog(c), "aria-label": `About ${title}` },
        avatar(title, online, c.kind),
        h("div", { class: "head-text" },
          h("div", { class: "head-title" }, title),
          h("div", { class: `head-sub${typers.length ? " typing" : ""}${online ? " online" : ""}` }, sub),
        ),
      ),
      h("button", { class: "icon-btn", type: "button", title: "Conversation info", "aria-label": "Conversation info", onclick: () => this.infoDialog(c) }, icon("info")),
    );
  }

  private stick = true;
  private lastTop = 0;

  private renderMessages(c: Conv): void {
    const app = this.app;
    const tl = c.timeline;
    const box = this.messages;
    // Remember what the person is looking at, to keep it in place.
    const atBottom = this.stick;
    let anchor: HTMLElement | undefined, anchorTop = 0;
    if (!atBottom) {
      const top = box.scrollTop;
      for (const el of this.list.children as HTMLCollectionOf<HTMLElement>) {
        if (el.offsetTop + el.offsetHeight > top) {
          anchor = el;
          anchorTop = el.offsetTop - top;
          break;
        }
      }
    }

    // Top row: loading, beginning, or an error.
    const topSig = c.loadError ? `err|${c.loadError}` : !tl.loaded ? "loading" : tl.hasOlder ? (c.loading ? "more-loading" : "more") : "start";
    if (this.topRow.dataset.sig !== topSig) {
      this.topRow.dataset.sig = topSig;
      clear(this.topRow);
      if (c.loadError) this.topRow.append(h("div", { class: "load-error" }, c.loadError, " ", h("button", { class: "link-btn", type: "button", onclick: () => app.open(c.id) }, "Try again")));
      else if (topSig === "loading" || topSig === "more-loading") this.topRow.append(h("div", { class: "spinner", "aria-label": "Loading messages" }));
      else if (topSig === "start") this.topRow.append(h("div", { class: "convo-start" }, avatar(app.title(c), undefined, c.kind, "lg"), h("div", { class: "start-title" }, app.title(c)), h("div", { class: "start-sub" }, startLine(app, c))));
    }

    const items = tl.all();
    const keep = new Set<string>();
    let prevEl: Element | null = null;
    const place = (key: string, sig: string, make: () => HTMLElement) => {
      keep.add(key);
      let row = this.rows.get(key);
      if (!row || row.sig !== sig) {
        const el = make();
        el.dataset.key = key;
        if (row) row.el.replaceWith(el);
        row = { el, sig };
        this.rows.set(key, row);
      }
      const want: Element | null = prevEl ? prevEl.nextElementSibling : this.list.firstElementChild;
      if (want !== row.el) this.list.insertBefore(row.el, want);
      prevEl = row.el;
    };
    let prev: Item | undefined;
    for (const it of items) {
      if (!prev || !sameDay(prev.sentAt, it.sentAt)) {
        const label = dayLabel(it.sentAt);
        place(`day:${new Date(it.sentAt).toDateString()}`, label, () => h("div", { class: "day", role: "separator" }, h("span", null, label)));
      }
      const first = !prev || prev.senderId !== it.senderId || it.sentAt - prev.sentAt > GROUP_GAP_MS || !sameDay(prev.sentAt, it.sentAt);
      const mine = it.senderId === app.me;
      const state: MessageState | "" = mine ? stateOf(it, app.me, c.members, c.receipts) : "";
      const showName = first && !mine && c.kind !== KIND_DIRECT;
      const sig = [it.seq, it.body, state, it.local?.error ?? "", it.editedAt ?? 0, it.deleted, first, showName, it.attachments.map((a) => a.id).join(",")].join("|");
      place(it.key, sig, () => this.messageRow(c, it, mine, first, showName, state));
      prev = it;
    }
    for (const [key, row] of this.rows) {
      if (!keep.has(key)) {
        row.el.remove();
        this.rows.delete(key);
      }
    }

    const typers = app.typers(c);
    const typingText = typingLine(typers);
    if (this.typingRow.dataset.sig !== typingText) {
      this.typingRow.dataset.sig = typingText;
      clear(this.typingRow);
      this.typingRow.hidden = !typingText;
      if (typingText) this.typingRow.append(h("div", { class: "typing-bubble", "aria-hidden": "true" }, h("i"), h("i"), h("i")), h("span", null, typingText));
    }

    if (atBottom && !tl.hasNewer) box.scrollTop = box.scrollHeight;
    else if (anchor && anchor.isConnected) box.scrollTop = anchor.offsetTop - anchorTop;
    this.jump.hidden = (atBottom && !tl.hasNewer);
    const newer = c.unread;
    this.jump.dataset.count = newer ? String(newer) : "";
    this.app.atBottom = atBottom && !tl.hasNewer;
    // A page that does not fill the box cannot be scrolled to load more.
    if (tl.loaded && tl.hasOlder && !c.loading && box.scrollHeight <= box.clientHeight + 40) void app.loadOlder();
  }

  private messageRow(c: Conv, it: Item, mine: boolean, first: boolean, showName: boolean, state: MessageState | ""): HTMLElement {
    const app = this.app;
    const bubble = h("div", { class: "bubble" });
    if (showName) bubble.append(h("div", { class: "sender", style: `color: hsl(${hue(it.senderId)} 55% 42%)` }, it.senderId));
    if (it.deleted) {
      bubble.append(h("div", { class: "text deleted" }, "This message was deleted"));
    } else {
      if (it.attachments.length) bubble.append(this.attachmentsView(it));
      if (it.body) bubble.append(h("div", { class: "text" }, linkify(it.body)));
    }
    const meta = h("span", { class: "meta" },
      it.editedAt && !it.deleted ? h("span", { class: "edited" }, "edited") : null,
      h("time", { datetime: new Date(it.sentAt).toISOString(), title: new Date(it.sentAt).toLocaleString() }, clock(it.sentAt)),
      state && !it.deleted ? ticks(state) : null,
    );
    bubble.append(meta);
    const row = h("div", {
      class: `msg ${mine ? "mine" : "theirs"}${first ? " first" : ""}${state ? ` state-${state}` : ""}${it.deleted ? " deleted" : ""}`,
      dataset: { seq: String(it.seq), sender: it.senderId, state },
    });
    if (!mine && c.kind !== KIND_DIRECT) {
      row.append(first ? avatar(it.senderId, undefined, KIND_DIRECT, "sm") : h("div", { class: "avatar-gap" }));
    }
    row.append(bubble);
    if (it.local?.state === "failed") {
      row.append(h("div", { class: "failed", role: "alert" },
        icon("alert"), h("span", null, it.local.error ?? "Not sent."),
        h("button", { class: "link-btn", type: "button", onclick: () => app.retry(c.id, it.clientId) }, "Retry"),
        h("button", { class: "link-btn", type: "button", onclick: () => app.discard(c.id, it.clientId) }, "Discard"),
      ));
    }
    if (mine && it.seq && !it.deleted && !it.local) {
      row.append(h("div", { class: "actions" },
        it.body ? h("button", { class: "icon-btn sm", type: "button", title: "Edit", "aria-label": "Edit message", onclick: () => this.startEdit(c, it) }, icon("edit")) : null,
        h("button", { class: "icon-btn sm", type: "button", title: "Delete", "aria-label": "Delete message", onclick: () => this.confirmDelete(c, it) }, icon("trash")),
      ));
    }
    return row;
  }

  private attachmentsView(it: Item): HTMLElement {
    const box = h("div", { class: "attachments" });
    const localFiles = this.app.localFiles.get(it.clientId);
    it.attachments.forEach((a, i) => {
      const local = localFiles?.[i];
      const isImage = a.contentType.startsWith("image/") && a.contentType !== "image/svg+xml";
      if (isImage && (local || (!a.id.startsWith("local:") && a.size <= 8 << 20))) {
        const img = h("img", { class: "preview", alt: a.name, loading: "lazy", decoding: "async" });
        const frame = h("button", { class: "image", type: "button", title: `Download ${a.name}`, "aria-label": `Download ${a.name}`, onclick: () => void this.save(a.id, a.name, local) }, img);
        if (local) img.src = URL.createObjectURL(local);
        else {
          frame.classList.add("loading");
          this.preview(a.id).then((url) => {
            img.src = url;
            frame.classList.remove("loading");
          }, () => {
            frame.classList.remove("loading");
            frame.classList.add("broken");
            frame.append(h("span", null, "Preview unavailable"));
          });
        }
        box.append(frame);
      }
      const shownAsImage = box.lastElementChild?.classList.contains("image") ?? false;
      box.append(h("div", { class: `file${shownAsImage ? " compact" : ""}` },
        h("span", { class: "file-icon" }, icon("file")),
        h("span", { class: "file-text" }, h("span", { class: "file-name" }, a.name), h("span", { class: "file-size" }, a.id.startsWith("local:") ? `${formatSize(a.size)} · uploading…` : formatSize(a.size))),
        a.id.startsWith("local:") ? null : h("button", { class: "icon-btn sm download", type: "button", title: `Download ${a.name}`, "aria-label": `Download ${a.name}`, onclick: () => void this.save(a.id, a.name, local) }, icon("download")),
      ));
    });
    return box;
  }

  private preview(id: string): Promise<string> {
    let p = this.previews.get(id);
    if (!p) {
      p = this.app.download(id).then((b) => URL.createObjectURL(b));
      p.catch(() => this.previews.delete(id));
      this.previews.set(id, p);
    }
    return p;
  }

  private async save(id: string, name: string, local?: File): Promise<void> {
    try {
      const url = local ? URL.createObjectURL(local) : this.previews.has(id) ? await this.preview(id) : URL.createObjectURL(await this.app.download(id));
      const a = h("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) {
      this.app.toast(explain(err, `downloading ${name}`));
    }
  }

  private renderToasts(): void {
    const sig = this.app.toasts.map((t) => t.id).join(",");
    if (this.toasts.dataset.sig === sig) return;
    this.toasts.dataset.sig = sig;
    clear(this.toasts);
    for (const t of this.app.toasts) {
      this.toasts.append(h("div", { class: `toast ${t.kind}`, role: t.kind === "error" ? "alert" : "status" },
        t.kind === "error" ? icon("alert") : icon("check"),
        h("span", null, t.text),
        h("button", { class: "icon-btn sm", type: "button", "aria-label": "Dismiss", onclick: () => this.app.dismiss(t.id) }, icon("close")),
      ));
    }
  }

  // ---- actions ----

  openConv(id: string | undefined): void {
    const hash = id ? `#/c/${encodeURIComponent(id)}` : "#/";
    if (location.hash !== hash) history.pushState(null, "", hash);
    this.app.open(id);
    if (id) requestAnimationFrame(() => this.input.focus({ preventScroll: true }));
  }

  private onScroll(): void {
    const box = this.messages;
    const c = this.app.current;
    if (!c) return;
    const fromBottom = box.scrollHeight - box.scrollTop - box.clientHeight;
    const was = this.stick;
    // Only a move up lets go of the bottom: content that grows under a
    // reader at the bottom (an image loading) must not.
    const up = box.scrollTop < this.lastTop - 1;
    this.lastTop = box.scrollTop;
    if (up || fromBottom < 60) this.stick = fromBottom < 60;
    if (box.scrollTop < 400 && c.timeline.hasOlder) void this.app.loadOlder();
    if (fromBottom < 400 && c.timeline.hasNewer) void this.app.loadNewer();
    const bottom = this.stick && !c.timeline.hasNewer;
    if (bottom !== this.app.atBottom) {
      this.app.atBottom = bottom;
      if (bottom) this.app.markRead();
    }
    this.jump.hidden = bottom;
    if (was !== this.stick) this.schedule();
  }

  private async jumpToLatest(): Promise<void> {
    this.stick = true;
    await this.app.jumpToLatest();
    this.messages.scrollTop = this.messages.scrollHeight;
    this.schedule();
  }

  private onKey(e: KeyboardEvent): void {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      this.submit();
    } else if (e.key === "Escape" && this.editing) {
      e.preventDefault();
      this.cancelEdit();
    } else if (e.key === "ArrowUp" && !this.input.value && !this.editing) {
      const c = this.app.current;
      const mine = c?.timeline.items.filter((i) => i.senderId === this.app.me && !i.deleted && i.body).at(-1);
      if (c && mine) {
        e.preventDefault();
        this.startEdit(c, mine);
      }
    }
  }

  private onInput(): void {
    this.autosize();
    this.app.setTyping(this.input.value.trim().length > 0);
  }

  private autosize(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  private submit(): void {
    const c = this.app.current;
    if (!c) return;
    const body = this.input.value;
    if (this.editing) {
      const { conv, seq } = this.editing;
      if (body.trim()) void this.app.edit(conv, seq, body.trim());
      this.cancelEdit();
      return;
    }
    if (!body.trim() && this.files.length === 0) return;
    this.app.send(body, this.files);
    this.input.value = "";
    this.drafts.delete(c.id);
    this.files = [];
    this.renderChips();
    this.autosize();
    this.stick = true;
    this.input.focus();
  }

  private addFiles(fs: File[]): void {
    if (fs.length === 0) return;
    const room = 10 - this.files.length;
    if (fs.length > room) this.app.toast(`A message can carry at most 10 files; ${fs.length - room} left out.`);
    this.files.push(...fs.slice(0, Math.max(0, room)));
    this.fileInput.value = "";
    this.renderChips();
    this.input.focus();
  }

  private renderChips(): void {
    clear(this.chips);
    this.chips.hidden = this.files.length === 0;
    this.files.forEach((f, i) => {
      const thumb = f.type.startsWith("image/") ? h("img", { src: URL.createObjectURL(f), alt: "" }) : icon("file");
      this.chips.append(h("div", { class: "chip" }, thumb,
        h("span", { class: "chip-name" }, f.name), h("span", { class: "chip-size" }, formatSize(f.size)),
        h("button", { class: "icon-btn sm", type: "button", "aria-label": `Remove ${f.name}`, onclick: () => { this.files.splice(i, 1); this.renderChips(); this.input.focus(); } }, icon("close")),
      ));
    });
  }

  private startEdit(c: Conv, it: Item): void {
    this.editing = { conv: c.id, seq: it.seq };
    this.drafts.set(c.id, this.input.value);
    this.input.value = it.body;
    clear(this.editBar);
    this.editBar.append(icon("edit"), h("span", null, "Editing message"), h("span", { class: "edit-hint" }, "Esc to cancel"),
      h("button", { class: "icon-btn sm", type: "button", "aria-label": "Cancel editing", onclick: () => this.cancelEdit() }, icon("close")));
    this.editBar.hidden = false;
    this.autosize();
    this.input.focus();
  }

  private cancelEdit(): void {
    const c = this.app.current;
    this.editing = undefined;
    this.editBar.hidden = true;
    this.input.value = c ? this.drafts.get(c.id) ?? "" : "";
    this.autosize();
  }

  private confirmDelete(c: Conv, it: Item): void {
    const yes = h("button", { class: "btn danger", type: "button", onclick: () => { this.dialog.close(); void this.app.remove(c.id, it.seq); } }, "Delete");
    this.openDialog("Delete message?", [
      h("p", null, "It will be replaced by “This message was deleted” for everyone."),
      h("div", { class: "dialog-actions" }, h("button", { class: "btn", type: "button", onclick: () => this.dialog.close() }, "Cancel"), yes),
    ]);
    yes.focus();
  }

  private deleteAccountDialog(): void {
    const app = this.app;
    const pass = h("input", { id: "delete-password", name: "password", type: "password", autocomplete: "current-password", required: true });
    const err = h("div", { class: "form-error", role: "alert", hidden: true });
    const yes = h("button", { class: "btn danger solid", type: "submit" }, "Delete account");
    const f = h("form", { class: "dialog-form", novalidate: true },
      field("delete-password", "Enter your password to confirm", pass),
      err,
      h("div", { class: "dialog-actions" }, h("button", { class: "btn", type: "button", onclick: () => this.dialog.close() }, "Cancel"), yes),
    );
    f.onsubmit = async (e) => {
      e.preventDefault();
      if (yes.disabled) return;
      if (!pass.value) {
        err.textContent = "Enter your password.";
        err.hidden = false;
        pass.focus();
        return;
      }
      err.hidden = true;
      yes.disabled = true;
      yes.classList.add("busy");
      try {
        // On success the app logs out and this page goes away with it.
        await app.deleteAccount(pass.value);
      } catch (ex) {
        err.textContent = deleteAccountError(ex);
        err.hidden = false;
        pass.select();
      } finally {
        yes.disabled = false;
        yes.classList.remove("busy");
      }
    };
    this.openDialog("Delete your account?", [
      h("p", null, "This can't be undone. Once ", h("strong", null, app.me), " is deleted:"),
      h("ul", { class: "consequences" },
        h("li", null, "you leave every room and group you're in (a group you own passes to another member);"),
        h("li", null, "the messages you sent stay, and the others still see them;"),
        h("li", null, "you're logged out everywhere;"),
        h("li", null, "the name ", h("strong", null, app.me), " can't be registered again, by you or anyone else."),
      ),
      f,
    ]);
    pass.focus();
  }

  private async askNotify(): Promise<void> {
    if (typeof Notification === "undefined") return;
    const p = await Notification.requestPermission();
    if (p === "denied") this.app.toast("Notifications are blocked. You can allow them in the browser's site settings.", "info");
    this.meBox.dataset.sig = "";
    this.render();
  }

  // ---- dialogs ----

  private openDialog(title: string, body: Node[]): void {
    clear(this.dialog);
    this.dialog.append(
      h("div", { class: "dialog-head" }, h("h2", null, title),
        h("button", { class: "icon-btn", type: "button", "aria-label": "Close", onclick: () => this.dialog.close() }, icon("close"))),
      ...body,
    );
    if (!this.dialog.open) this.dialog.showModal();
  }

  private form(fields: HTMLElement[], submitLabel: string, run: () => Promise<void>): HTMLFormElement {
    const err = h("div", { class: "form-error", role: "alert", hidden: true });
    const btn = h("button", { class: "btn primary", type: "submit" }, submitLabel);
    const f = h("form", { class: "dialog-form" }, ...fields, err, h("div", { class: "dialog-actions" }, btn));
    f.onsubmit = async (e) => {
      e.preventDefault();
      err.hidden = true;
      btn.disabled = true;
      try {
        await run();
      } catch (ex) {
        err.textContent = explain(ex, submitLabel.toLowerCase());
        err.hidden = false;
      } finally {
        btn.disabled = false;
      }
    };
    return f;
  }

  newChatDialog(tab: "direct" | "room" | "group" = "direct"): void {
    const app = this.app;
    const tabs: Record<string, HTMLButtonElement> = {};
    const panel = h("div", { class: "tab-panel" });
    const show = (t: typeof tab) => {
      for (const [k, b] of Object.entries(tabs)) {
        b.classList.toggle("active", k === t);
        b.setAttribute("aria-selected", String(k === t));
      }
      clear(panel);
      const done = (c: Conv | undefined) => {
        this.dialog.close();
        if (c) this.openConv(c.id);
      };
      if (t === "direct") {
        const user = h("input", { id: "dm-user", required: true, autocapitalize: "none", spellcheck: "false", placeholder: "username" });
        panel.append(this.form([field("dm-user", "Who do you want to message?", user)], "Start chat", async () => done(await app.startDirect(user.value))));
        user.focus();
      } else if (t === "room") {
        const name = h("input", { id: "room-name", required: true, autocapitalize: "none", spellcheck: "false", placeholder: "lobby" });
        const title = h("input", { id: "room-title", placeholder: "Optional, for a new room" });
        let create = false;
        const f = this.form([field("room-name", "Room name", name), field("room-title", "Title", title),
          h("p", { class: "hint" }, "Rooms are open: anyone who knows the name can join.")], "Join room", async () => {
          done(create ? await app.createRoom(name.value, title.value) : await app.joinRoom(name.value));
        });
        const createBtn = h("button", { class: "btn", type: "submit", onclick: () => { create = true; } }, "Create room");
        f.querySelector(".dialog-actions")!.prepend(createBtn);
        (f.querySelector(".btn.primary") as HTMLButtonElement).addEventListener("click", () => { create = false; });
        panel.append(f);
        name.focus();
      } else {
        const title = h("input", { id: "group-title", required: true, placeholder: "Weekend plans" });
        const members = h("input", { id: "group-members", autocapitalize: "none", spellcheck: "false", placeholder: "alice, bob" });
        panel.append(this.form([field("group-title", "Group name", title), field("group-members", "Members (comma-separated usernames)", members)], "Create group", async () => {
          done(await app.createGroup(title.value, splitUsers(members.value)));
        }));
        title.focus();
      }
    };
    const bar = h("div", { class: "tabs", role: "tablist" });
    for (const [k, label] of [["direct", "Direct message"], ["room", "Room"], ["group", "Group"]] as const) {
      tabs[k] = h("button", { class: "tab", type: "button", role: "tab", onclick: () => show(k) }, label);
      bar.append(tabs[k]);
    }
    this.openDialog("New conversation", [bar, panel]);
    show(tab);
  }

  private infoDialog(c: Conv): void {
    const app = this.app;
    const title = app.title(c);
    const kind = c.kind === KIND_DIRECT ? "Direct message" : c.kind === KIND_ROOM ? `Room ${c.id.replace(/^room:/, "#")}` : "Group";
    const members = h("ul", { class: "members" });
    for (const m of c.members) {
      const p = app.presence.get(m);
      const online = m === app.me ? app.link.state === "live" : app.online(m);
      members.append(h("li", null, avatar(m, online, KIND_DIRECT, "sm"),
        h("span", { class: "member-name" }, m, m === app.me ? h("span", { class: "muted" }, " (you)") : null, m === c.ownerId ? h("span", { class: "tag" }, c.kind === KIND_GROUP ? "owner" : "creator") : null),
        h("span", { class: "muted member-status" }, m === app.me || online === undefined ? "" : online ? "online" : p ? lastSeen(p.lastSeen) : ""),
        c.kind === KIND_GROUP && c.ownerId === app.me && m !== app.me
          ? h("button", { class: "link-btn", type: "button", onclick: async () => { try { await app.removeMember(c.id, m); this.infoDialog(app.convs.get(c.id)!); } catch (e) { app.toast(explain(e, "removing the member")); } } }, "Remove")
          : null,
      ));
    }
    const body: Node[] = [
      h("div", { class: "info-top" }, avatar(title, undefined, c.kind, "lg"), h("div", null, h("div", { class: "start-title" }, title), h("div", { class: "muted" }, kind))),
      h("h3", null, `${c.members.length} member${c.members.length === 1 ? "" : "s"}`),
      members,
    ];
    if (c.kind === KIND_GROUP && c.ownerId === app.me) {
      const user = h("input", { id: "add-member", required: true, autocapitalize: "none", spellcheck: "false", placeholder: "username" });
      body.push(this.form([field("add-member", "Add a member", user)], "Add member", async () => {
        await app.addMember(c.id, user.value);
        this.infoDialog(app.convs.get(c.id)!);
      }));
    }
    if (c.kind !== KIND_DIRECT) {
      body.push(h("div", { class: "dialog-actions" }, h("button", { class: "btn danger", type: "button", onclick: async () => {
        try {
          await app.leave(c.id);
          this.dialog.close();
          this.openConv(undefined);
        } catch (e) {
          app.toast(explain(e, "leaving"));
        }
      } }, c.kind === KIND_ROOM ? "Leave room" : "Leave group")));
    }
    this.openDialog(c.kind === KIND_DIRECT ? "Contact" : c.kind === KIND_ROOM ? "Room" : "Group", body);
  }
}

// ---- helpers ----

function field(id: string, label: string, input: HTMLElement): HTMLElement {
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

function splitUsers(s: string): string[] {
  return s.split(/[\s,;]+/).map((u) => u.trim().replace(/^@/, "").toLowerCase()).filter(Boolean);
}

export function avatar(name: string, online?: boolean, kind = KIND_DIRECT, size = ""): HTMLElement {
  const label = kind === KIND_ROOM ? "#" : initials(name);
  const el = h("span", { class: `avatar ${size} ${kind === KIND_DIRECT ? "" : "shape-group"}`, style: `--h: ${hue(name)}`, "aria-hidden": "true" }, label);
  if (online !== undefined && kind === KIND_DIRECT) el.append(h("span", { class: `presence ${online ? "on" : "off"}` }));
  return el;
}

function ticks(state: MessageState): HTMLElement {
  const labels: Record<MessageState, string> = { pending: "Sending", sent: "Sent", delivered: "Delivered", read: "Read", failed: "Not sent" };
  const i = state === "pending" ? icon("clock") : state === "failed" ? icon("alert") : state === "sent" ? icon("check") : icon("checks");
  return h("span", { class: `ticks ${state}`, title: labels[state], "aria-label": labels[state], role: "img" }, i);
}

function summary(app: App, c: Conv): string {
  const l = c.last!;
  const who = l.senderId === app.me ? "You: " : c.kind === KIND_DIRECT ? "" : `${l.senderId}: `;
  if (l.deleted) return `${who}message deleted`;
  const text = l.body ? l.body.replace(/\s+/g, " ") : l.attachments ? "📎 Attachment" : "";
  return who + text;
}

function startLine(app: App, c: Conv): string {
  if (c.kind === KIND_DIRECT) return `This is the beginning of your conversation with ${app.title(c)}.`;
  if (c.kind === KIND_ROOM) return `This is the start of ${c.id.replace(/^room:/, "#")}. Anyone can join this room.`;
  return `This is the start of the group ${app.title(c)}${c.ownerId ? `, created by ${c.ownerId === app.me ? "you" : c.ownerId}` : ""}.`;
}

const URL_RE = /\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]}'"]/g;

function linkify(text: string): Node[] {
  const out: Node[] = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    if (m.index! > last) out.push(document.createTextNode(text.slice(last, m.index)));
    out.push(h("a", { href: m[0], target: "_blank", rel: "noopener noreferrer" }, m[0]));
    last = m.index! + m[0].length;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

export { preview };
