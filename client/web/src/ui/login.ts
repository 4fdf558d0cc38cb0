// The login and registration page.
import { Code, ConnectError, attemptError, explain, makeClients, ms } from "../api";
import { saveSession, type Session } from "../app";
import { h, icon } from "./dom";

export function loginView(onSession: (s: Session) => void, notice?: string): HTMLElement {
  let mode: "login" | "register" = "login";
  const api = makeClients(location.origin, () => undefined);

  const user = h("input", { id: "username", name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false", placeholder: "e.g. alice" });
  const pass = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true, placeholder: "At least 8 characters" });
  const display = h("input", { id: "display-name", name: "display-name", autocomplete: "nickname", placeholder: "Optional" });
  const displayRow = h("div", { class: "field", hidden: true }, h("label", { for: "display-name" }, "Display name"), display);
  const err = h("div", { class: "form-error", role: "alert", hidden: !notice }, notice ?? "");
  if (notice) err.classList.add("notice");
  const submit = h("button", { class: "btn primary wide", type: "submit" }, "Log in");
  const tabLogin = h("button", { type: "button", role: "tab", class: "tab active", "aria-selected": "true" }, "Log in");
  const tabRegister = h("button", { type: "button", role: "tab", class: "tab", "aria-selected": "false" }, "Create account");
  const hint = h("p", { class: "hint", hidden: true }, "Usernames are 3–32 characters: lowercase letters, digits, _ and -, starting with a letter.");

  const setMode = (m: typeof mode) => {
    mode = m;
    tabLogin.classList.toggle("active", m === "login");
    tabRegister.classList.toggle("active", m === "register");
    tabLogin.setAttribute("aria-selected", String(m === "login"));
    tabRegister.setAttribute("aria-selected", String(m === "register"));
    displayRow.hidden = m === "login";
    hint.hidden = m === "login";
    pass.autocomplete = m === "login" ? "current-password" : "new-password";
    submit.textContent = m === "login" ? "Log in" : "Create account";
    err.hidden = true;
  };
  tabLogin.onclick = () => setMode("login");
  tabRegister.onclick = () => setMode("register");

  const form = h("form", { class: "login-form", novalidate: true }, 
    h("div", { class: "tabs", role: "tablist" }, tabLogin, tabRegister),
    h("div", { class: "field" }, h("label", { for: "username" }, "Username"), user),
    hint,
    h("div", { class: "field" }, h("label", { for: "password" }, "Password"), pass),
    displayRow,
    err,
    submit,
  );
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const username = user.value.trim().toLowerCase();
    const password = pass.value;
    err.hidden = true;
    err.classList.remove("notice");
    if (!username || !password) {
      showError(!username ? "Enter your username." : "Enter your password.");
      (!username ? user : pass).focus();
      return;
    }
    if (mode === "register" && password.length < 8) {
      showError("Choose a password of at least 8 characters.");
      pass.focus();
      return;
    }
    submit.disabled = true;
    submit.classList.add("busy");
    try {
      const res = mode === "login"
        ? await api.auth.login({ username, password })
        : await api.auth.register({ username, password, displayName: display.value.trim() });
      const s: Session = { user: res.userId || username, token: res.token?.value ?? "", expiresAt: ms(res.token?.expiresAt) || Date.now() + 3600_000 };
      saveSession(s);
      onSession(s);
    } catch (e) {
      showError(loginError(e, mode));
      pass.select();
    } finally {
      submit.disabled = false;
      submit.classList.remove("busy");
    }
  };
  function showError(text: string) {
    err.textContent = text;
    err.hidden = false;
  }

  return h("div", { class: "login" },
    h("div", { class: "login-card" },
      h("div", { class: "brand" }, h("span", { class: "brand-mark" }, icon("chat")), h("span", null, "Parley")),
      h("h1", null, "Chat that keeps up with you"),
      h("p", { class: "sub" }, "Messages arrive instantly, survive reconnects and never show twice."),
      form,
    ),
  );
}

export function loginError(e: unknown, mode: "login" | "register"): string {
  const shared = attemptError(e);
  if (shared) return shared;
  if (e instanceof ConnectError) {
    switch (e.code) {
      case Code.Unauthenticated:
        return "Wrong username or password.";
      case Code.AlreadyExists:
        return "That username is taken. Choose another, or log in.";
      case Code.InvalidArgument:
        return e.rawMessage || "Check the username and password.";
    }
  }
  return explain(e, mode === "login" ? "logging in" : "creating the account");
}
