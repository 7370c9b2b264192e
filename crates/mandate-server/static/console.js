// The console's only script (ADR 0032): WebAuthn ceremonies, decisions,
// and the live inbox. Served from /console/static; no inline script is
// allowed by the pages' Content-Security-Policy.
"use strict";
(() => {
  const enc = (buf) => {
    const bytes = new Uint8Array(buf);
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const dec = (s) => {
    const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    return Uint8Array.from(b, (c) => c.charCodeAt(0));
  };
  // Drops null members (the browser refuses `hints: null` and the like).
  const clean = (v) => {
    if (Array.isArray(v)) return v.map(clean);
    if (v && typeof v === "object" && !(v instanceof Uint8Array)) {
      const o = {};
      for (const [k, x] of Object.entries(v)) if (x !== null && x !== undefined) o[k] = clean(x);
      return o;
    }
    return v;
  };
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";
  const showError = (e, where) => {
    const el = where || document.getElementById("error");
    el.hidden = false;
    el.dataset.code = (e && e.code) || "console_error";
    el.textContent = (e && (e.detail || e.message)) || String(e);
  };
  const post = async (url, body) => {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-mandate-csrf": meta("csrf") },
      body: JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw j;
    return j;
  };
  const creation = (o) => {
    const pk = clean(o.publicKey);
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach((c) => { c.id = dec(c.id); });
    return { publicKey: pk };
  };
  const request = (o) => {
    const pk = clean(o.publicKey);
    pk.challenge = dec(pk.challenge);
    (pk.allowCredentials || []).forEach((c) => { c.id = dec(c.id); });
    return { publicKey: pk };
  };
  const registered = (c) => ({
    id: c.id, rawId: enc(c.rawId), type: c.type, extensions: {},
    response: {
      attestationObject: enc(c.response.attestationObject),
      clientDataJSON: enc(c.response.clientDataJSON),
    },
  });
  const asserted = (c) => ({
    id: c.id, rawId: enc(c.rawId), type: c.type, extensions: {},
    response: {
      authenticatorData: enc(c.response.authenticatorData),
      clientDataJSON: enc(c.response.clientDataJSON),
      signature: enc(c.response.signature),
      userHandle: c.response.userHandle ? enc(c.response.userHandle) : null,
    },
  });

  const enrollButton = document.getElementById("enroll");
  if (enrollButton) {
    enrollButton.addEventListener("click", async () => {
      enrollButton.disabled = true;
      try {
        const start = await post("/console/enroll/start", { token: meta("enroll-token") });
        const cred = await navigator.credentials.create(creation(start.options));
        const done = await post("/console/enroll/finish", { ceremony: start.ceremony, credential: registered(cred) });
        window.location.assign(done.redirect);
      } catch (e) {
        showError(e);
      }
    });
  }

  const signinForm = document.getElementById("signin-form");
  if (signinForm) {
    signinForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const button = document.getElementById("signin");
      button.disabled = true;
      try {
        const principal = document.getElementById("principal").value.trim();
        const start = await post("/console/signin/start", { principal });
        const cred = await navigator.credentials.get(request(start.options));
        const done = await post("/console/signin/finish", { ceremony: start.ceremony, credential: asserted(cred) });
        window.location.assign(done.redirect);
      } catch (e) {
        showError(e);
      } finally {
        button.disabled = false;
      }
    });
  }

  const list = document.getElementById("approvals");
  if (!list) return;
  const empty = document.getElementById("empty");
  const refreshEmpty = () => {
    empty.hidden = list.querySelector('[data-status="pending"]') !== null;
  };
  const decided = (item, status, text) => {
    item.dataset.status = status;
    item.querySelector(".outcome").textContent = text;
    refreshEmpty();
  };
  list.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const item = button.closest("[data-approval-id]");
    const id = item.dataset.approvalId;
    const outcome = item.querySelector(".outcome");
    button.disabled = true;
    try {
      if (button.dataset.action === "approve") {
        const scope = item.querySelector("select[name=scope]").value;
        const terms = { scope };
        if (scope === "pattern") terms.resource_prefix = item.querySelector("input[name=resource_prefix]").value;
        const start = await post(`/console/approvals/${encodeURIComponent(id)}/challenge`, terms);
        const cred = await navigator.credentials.get(request(start.options));
        const done = await post(`/console/approvals/${encodeURIComponent(id)}/approve`, { ceremony: start.ceremony, credential: asserted(cred) });
        decided(item, done.status, `Approved (${scope}) with passkey ${done.passkey}.`);
      } else {
        const reason = item.querySelector("input[name=reason]").value;
        const done = await post(`/console/approvals/${encodeURIComponent(id)}/deny`, { reason });
        decided(item, done.status, reason.trim() ? `Denied: ${reason.trim()}` : "Denied.");
      }
    } catch (e) {
      showError(e, outcome);
    } finally {
      button.disabled = false;
    }
  });
  const events = new EventSource("/console/events");
  events.addEventListener("approval", (ev) => {
    const msg = JSON.parse(ev.data);
    const existing = list.querySelector(`[data-approval-id="${CSS.escape(msg.id)}"]`);
    if (existing) {
      if (existing.dataset.status !== msg.status) decided(existing, msg.status, existing.querySelector(".outcome").textContent || msg.status);
    } else if (msg.status === "pending") {
      const t = document.createElement("template");
      t.innerHTML = msg.html;
      list.prepend(t.content);
      refreshEmpty();
    }
  });
  events.addEventListener("refresh", () => window.location.reload());
  refreshEmpty();
})();
