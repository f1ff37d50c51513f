"use strict";

document.addEventListener("DOMContentLoaded", () => {
  applyTexts();
  document.getElementById("language").addEventListener("click", switchLanguage);
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const response = await fetch("/api/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        username: document.getElementById("username").value,
        password: document.getElementById("password").value,
      }),
    });
    if (response.ok) {
      window.location.assign("/");
      return;
    }
    error.textContent = t(response.status === 429 ? "too_many" : "wrong_login");
    error.hidden = false;
  });
});
