// Live feedback only: ticks the new-password checklist while the user types. The server checks
// everything again; without this script the page works the same, just without ticks.
"use strict";

function categories(password) {
  return [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((pattern) => pattern.test(password)).length;
}

// The strength, and whether the password is on a list of breached or common passwords, come
// from the server (`/portal/strength`), which judges them exactly as it will judge the form: the
// page shows the server's zxcvbn score and advice, and its verdict on the lists.
let asked = 0;

function clearJudgement(item) {
  delete item.dataset.score;
  item.classList.remove("met", "unmet");
  const feedback = item.querySelector(".feedback");
  if (feedback) feedback.textContent = "";
}

function askServer(list, password) {
  const strengthItem = list.querySelector('[data-rule="strength"]');
  const listedItem = list.querySelector('[data-rule="not-common"]');
  const question = ++asked;
  if (!password) {
    for (const item of [strengthItem, listedItem]) if (item) clearJudgement(item);
    return;
  }
  const names = list.querySelector('[data-rule="no-name"]');
  const words = names && names.dataset.argument ? names.dataset.argument.split(",") : [];
  fetch("/portal/strength", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ password, words }),
  })
    .then((answer) => (answer.ok ? answer.json() : null))
    .then((judged) => {
      if (!judged || question !== asked) return;
      if (listedItem) {
        listedItem.classList.toggle("met", !judged.listed);
        listedItem.classList.toggle("unmet", judged.listed);
      }
      if (!strengthItem) return;
      const met = judged.score >= Number(strengthItem.dataset.argument);
      strengthItem.dataset.score = String(judged.score);
      strengthItem.classList.toggle("met", met);
      strengthItem.classList.toggle("unmet", !met);
      const feedback = strengthItem.querySelector(".feedback") || strengthItem.appendChild(document.createElement("span"));
      feedback.className = "feedback";
      const advice = [judged.warning, ...judged.suggestions].filter(Boolean).join(" ");
      feedback.textContent = ` Strength ${judged.score} of 4.${advice ? " " + advice : ""}`;
    })
    .catch(() => {});
}

function judge(item, password) {
  const argument = item.dataset.argument || "";
  const words = argument ? argument.split(",") : [];
  const lines = argument ? argument.split("\n") : [];
  switch (item.dataset.rule) {
    case "length": return password.length >= Number(argument);
    case "categories": return categories(password) >= Number(argument);
    case "no-name": return words.every((word) => word.length < 3 || !password.toLowerCase().includes(word.toLowerCase()));
    case "not-banned": return password.length > 0 && lines.every((word) => !password.toLowerCase().includes(word));
    case "strength":
    case "not-common":
      return "asked";
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
      askServer(list, input.value);
    };
    input.addEventListener("input", update);
    update();
  }
});
