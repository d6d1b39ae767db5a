// Live feedback only: ticks the new-password checklist while the user types. The server checks
// everything again; without this script the page works the same, just without ticks.
"use strict";

function categories(password) {
  return [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((pattern) => pattern.test(password)).length;
}

// A rough estimate on the same scale as the server's (0 to 4); the server's verdict decides.
function strength(password, words) {
  let rest = password.toLowerCase();
  for (const word of words) {
    if (word.length >= 3) rest = rest.split(word.toLowerCase()).join("\u0001");
  }
  let effective = 0;
  for (let index = 0; index < rest.length; index += 1) {
    const previous = index > 0 ? rest.charCodeAt(index - 1) : null;
    const current = rest.charCodeAt(index);
    effective += previous !== null && Math.abs(current - previous) <= 1 ? 0.3 : 1;
  }
  let pool = 0;
  if (/[a-z]/.test(password)) pool += 26;
  if (/[A-Z]/.test(password)) pool += 26;
  if (/[0-9]/.test(password)) pool += 10;
  if (/[^A-Za-z0-9]/.test(password)) pool += 33;
  const bits = effective * Math.log2(Math.max(pool, 10));
  return bits < 28 ? 0 : bits < 40 ? 1 : bits < 55 ? 2 : bits < 70 ? 3 : 4;
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
      return strength(password, names && names.dataset.argument ? names.dataset.argument.split(",") : []) >= Number(argument);
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
        item.classList.toggle("met", met === true);
        item.classList.toggle("unmet", met === false && input.value.length > 0);
      }
    };
    input.addEventListener("input", update);
    update();
  }
});
