"use strict";
document.getElementById("login")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  const { ok, body } = await wd.api("/ui/session", {
    json: { token: document.getElementById("token").value },
    noRedirect: true,
  });
  if (ok) {
    const next = new URLSearchParams(location.search).get("next");
    location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/ui/";
  } else {
    error.textContent = wd.problem(body);
    error.hidden = false;
  }
});
