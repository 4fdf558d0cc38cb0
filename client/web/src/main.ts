// The browser app's entry point: the login page until there is a session,
// then the chat page, with the open conversation in the URL's hash.
import { App, loadSession, type Conv, type Session } from "./app";
import { loginView } from "./ui/login";
import { Shell } from "./ui/shell";

const root = document.getElementById("root")!;
let app: App | undefined;
let shell: Shell | undefined;

function routeConv(): string | undefined {
  const m = /^#\/c\/(.+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : undefined;
}

function showLogin(notice?: string): void {
  app = undefined;
  shell = undefined;
  document.title = "Parley";
  root.replaceChildren(loginView(showChat, notice));
  (root.querySelector("#username") as HTMLInputElement | null)?.focus();
}

function notify(c: Conv, title: string, body: string): void {
  if (!document.hidden && document.hasFocus()) return;
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
  try {
    const n = new Notification(title, { body, tag: c.id, icon: "icon.svg" });
    n.onclick = () => {
      window.focus();
      shell?.openConv(c.id);
      n.close();
    };
  } catch {
    // Some browsers only allow notifications from a service worker.
  }
}

function showChat(s: Session): void {
  const a = new App(s, () => shell?.schedule(), showLogin, notify);
  app = a;
  shell = new Shell(a);
  root.replaceChildren(shell.root);
  a.start();
  a.open(routeConv());
  shell.render();
}

window.addEventListener("popstate", () => app?.open(routeConv()));
window.addEventListener("online", () => app?.networkBack());
window.addEventListener("offline", () => app?.reconnectNow());
document.addEventListener("visibilitychange", () => app?.setVisible(!document.hidden));
window.addEventListener("focus", () => app?.setVisible(!document.hidden));

const s = loadSession();
if (s) showChat(s);
else showLogin();
