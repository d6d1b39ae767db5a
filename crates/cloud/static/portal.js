// Live feedback only: ticks the new-password checklist while the user types. The server checks
// everything again; without this script the page works the same, just without ticks.
"use strict";

function categories(password) {
  return [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((pattern) => pattern.test(password)).length;
}

// The strength comes from the server (`/portal/strength`), which judges it with zxcvbn exactly
// as it will judge the form: the page shows the server's score and zxcvbn's own advice.
let asked = 0;

function showStrength(item, password, words) {
  const feedback = item.querySelector(".feedback") || item.appendChild(document.createElement("span"));
  feedback.className = "feedback";
  if (!password) {
    delete item.dataset.score;
    item.classList.remove("met", "unmet");
    feedback.textContent = "";
    return;
  }
  const question = ++asked;
  fetch("/portal/strength", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ password, words }),
  })
    .then((answer) => (answer.ok ? answer.json() : null))
    .then((judged) => {
      if (!judged || question !== asked) return;
      const met = judged.score >= Number(item.dataset.argument);
      item.dataset.score = String(judged.score);
      item.classList.toggle("met", met);
      item.classList.toggle("unmet", !met);
      const advice = [judged.warning, ...judged.suggestions].filter(Boolean).join(" ");
      feedback.textContent = ` Strength ${judged.score} of 4.${advice ? " " + advice : ""}`;
    })
    .catch(() => {});
}

// As the server: the password itself, or its letters with digits and symbols trimmed off both
// ends ("Password1!"), is on the list sent with the page.
function isCommon(password, list) {
  const lowered = password.toLowerCase();
  const core = lowered.replace(/^[^\p{L}]+|[^\p{L}]+$/gu, "");
  return list.some((common) => common === lowered || (core.length >= 4 && common === core));
}

function judge(item, password) {
  const argument = item.dataset.argument || "";
  const words = argument ? argument.split(",") : [];
  const lines = argument ? argument.split("\n") : [];
  switch (item.dataset.rule) {
    case "length": return password.length >= Number(argument);
    case "categories": return categories(password) >= Number(argument);
    case "no-name": return words.every((word) => word.length < 3 || !password.toLowerCase().includes(word.toLowerCase()));
    case "not-common": return password.length > 0 && !isCommon(password, lines);
    case "not-banned": return password.length > 0 && lines.every((word) => !password.toLowerCase().includes(word));
    case "strength": {
      const names = document.querySelector('[data-rule="no-name"]');
      showStrength(item, password, names && names.dataset.argument ? names.dataset.argument.split(",") : []);
      return "asked";
    }
    default: return null;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const input of document.querySelectorAll("input[data-checklist]")) {
    const list = document.getElementById(input.dataset.checklist);
    if (!list) continue;
    const update = () => {
      for (const item of list.querySelectorAll("li")) {
        const met = judge(item, input.value);
        if (met === "asked") continue;
        item.classList.toggle("met", met === true);
        item.classList.toggle("unmet", met === false && input.value.length > 0);
      }
    };
    input.addEventListener("input", update);
    update();
  }
});
