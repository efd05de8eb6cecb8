// The todo chatbot's page: a client of the example's JSON API (app.py), plain JS, no build.
//
// A chat is a tree of versions (chatstore's conversation trees): the sidebar lists one entry
// per chat (its root) and opens the version it names current (current_id). An edit or a
// regeneration is a chat turn on a new fork, which becomes current; "< 2/3 >" opens another
// version of a message (alternatives) and makes it current.
"use strict";

const user = new URLSearchParams(location.search).get("user") || "demo";
const $ = (id) => document.getElementById(id);

const state = {
  chats: [],      // the user's chats, latest activity first: roots, each with current_id
  chat: null,     // the open chat (its root), null before a new chat's first message
  shown: null,    // the conversation shown: a version of the open chat
  messages: [],   // its messages, oldest first
  busy: false,    // a request that writes is in flight
  loads: 0,       // counts loadMessages calls: only the latest one renders
};

// -- talking to the API --------------------------------------------------------------------

function url(path) {
  return `/api/${encodeURIComponent(user)}${path}`;
}

async function problem(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.detail}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function call(method, path, body) {
  const response = await fetch(url(path), {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const error = new Error(await problem(response));
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

// The UI message stream's chunks (Server-Sent Events, "data: <json>" then a blank line),
// up to the literal [DONE].
async function* streamChunks(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice("data: ".length);
          if (data === "[DONE]") return;
          yield JSON.parse(data);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// -- small DOM helpers ---------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// Runs one action that writes; one at a time, its error shown under the composer.
async function run(busyText, action) {
  if (state.busy) return;
  state.busy = true;
  document.body.classList.add("busy");
  say(busyText);
  try {
    await action();
    say("");
  } catch (error) {
    say(error.message, true);
  } finally {
    state.busy = false;
    document.body.classList.remove("busy");
  }
}

// -- the sidebar: chats and search ---------------------------------------------------------

// The day's token usage (UTC), from GET /usage: the ledger's rollup for today.
async function loadUsage() {
  const usage = await call("GET", "/usage");
  const tokens = usage.total.input_tokens + usage.total.output_tokens;
  $("usage").textContent = `today: ${tokens} tokens`;
}

async function loadChats() {
  loadUsage().catch(() => {});
  const page = await call("GET", "/conversations?limit=100");
  state.chats = page.items;
  if (state.chat) {
    state.chat = state.chats.find((c) => c.id === state.chat.id) || state.chat;
  }
  renderChats();
  renderTitle();
}

function renderChats() {
  $("chats").replaceChildren(...state.chats.map((chat) => el("li", {
    class: state.chat && chat.id === state.chat.id ? "chat active" : "chat",
    "data-id": chat.id,
    title: chat.title || "Untitled",
    onclick: () => openChat(chat).catch((e) => say(e.message, true)),
  }, chat.title || "Untitled")));
}

function titleOf(chatId) {
  const chat = state.chats.find((c) => c.id === chatId);
  return chat ? chat.title || "Untitled" : "a chat";
}

async function search(query) {
  if (!query) {
    $("results").hidden = true;
    return;
  }
  const { items } = await call("GET", `/search?query=${encodeURIComponent(query)}&limit=20`);
  $("results").replaceChildren(
    el("li", { class: "results-head" },
      `${items.length} ${items.length === 1 ? "match" : "matches"}`,
      el("button", { type: "button", class: "close",
                     onclick: () => { $("results").hidden = true; } }, "×")),
    ...items.map((hit) => el("li", {
      class: "hit", onclick: () => openHit(hit).catch((e) => say(e.message, true)),
    }, el("span", { class: "hit-chat" }, titleOf(hit.chat_id)),
    hit.message.content || "")));
  $("results").hidden = false;
}

// A match opens its chat's current version when that holds the message, else the version
// that stores it; the message is outlined.
async function openHit(hit) {
  const chat = state.chats.find((c) => c.id === hit.chat_id)
    || { id: hit.chat_id, title: null, current_id: hit.current_id };
  const holds = () => state.messages.some((m) => m.seq === hit.message.seq
    && m.created_at === hit.message.created_at);
  await openChat(chat);
  if (!holds()) await openChat(chat, hit.conversation_id);
  const blocks = [...document.querySelectorAll("#messages .msg")]
    .filter((node) => Number(node.dataset.seq) <= hit.message.seq);
  const block = blocks[blocks.length - 1];
  if (block) {
    block.classList.add("found");
    block.scrollIntoView({ block: "center" });
  }
}

// -- the conversation ----------------------------------------------------------------------

function renderTitle() {
  $("title").textContent = state.chat ? state.chat.title || "Untitled" : "New chat";
  $("rename").hidden = !state.chat;
}

function newChat() {
  state.chat = null;
  state.shown = null;
  state.messages = [];
  renderChats();
  renderTitle();
  renderMessages();
  $("input").focus();
}

async function openChat(chat, conversationId = chat.current_id) {
  state.chat = chat;
  state.shown = conversationId;
  renderChats();
  renderTitle();
  await loadMessages();
}

async function loadMessages() {
  const load = ++state.loads;
  const shown = state.shown;
  let items = [];
  let before = null;
  do {  // the newest 1,000 at most, 200 a page
    const query = before === null ? "" : `&before=${before}`;
    const page = await call("GET", `/conversations/${shown}/messages?limit=200${query}`);
    items = page.items.concat(items);
    before = page.next_cursor;
  } while (before !== null && items.length < 1000);
  if (load !== state.loads) return;  // another conversation was opened meanwhile
  state.messages = items;
  const nodes = renderMessages();
  // "< 2/3 >" on every message that has other versions: one request per block.
  await Promise.all(nodes.map((node) => addVersions(node, shown, load)));
}

// A user's message is a block; the reply that follows (tool calls, their results, the
// model's text) is the next one, keyed by its first seq: where a regeneration starts.
function blocksOf(messages) {
  const blocks = [];
  for (const message of messages) {
    const last = blocks[blocks.length - 1];
    if (message.role === "user" || !last || last.role === "user") {
      blocks.push({ seq: message.seq, role: message.role === "user" ? "user" : "assistant",
                    messages: [message] });
    } else {
      last.messages.push(message);
    }
  }
  return blocks;
}

function renderMessages() {
  const blocks = blocksOf(state.messages);
  const nodes = blocks.map(renderBlock);
  $("messages").replaceChildren(...(nodes.length ? nodes
    : [el("p", { id: "empty" }, "Ask the todo bot: add milk and eggs, show my tasks, "
                                + "complete 1")]));
  $("messages").scrollTop = $("messages").scrollHeight;
  return nodes;
}

function renderBlock(block) {
  const body = el("div", { class: "body" });
  for (const message of block.messages) addPart(body, message);
  const node = el("div", { class: `msg ${block.role}`, "data-seq": block.seq }, body);
  node.append(el("div", { class: "actions" }, block.role === "user"
    ? el("button", { type: "button", class: "edit", onclick: () => startEdit(node, block) }, "Edit")
    : el("button", { type: "button", class: "regenerate", onclick: () => regenerate(block.seq) },
      "Regenerate")));
  return node;
}

function addPart(body, message) {
  for (const call of message.tool_calls || []) {
    body.append(el("p", { class: "tool" }, `${call.function.name}(${call.function.arguments})`));
  }
  if (message.role === "tool") {
    body.append(el("p", { class: "tool-output" }, `→ ${message.content}`));
  } else if (message.content) {
    const incomplete = message.metadata && message.metadata.incomplete;
    body.append(el("p", { class: incomplete ? "text incomplete" : "text" }, message.content));
  }
}

async function addVersions(node, shown, load) {
  const seq = Number(node.dataset.seq);
  const { items } = await call("GET", `/conversations/${shown}/messages/${seq}/alternatives`);
  if (items.length < 2 || load !== state.loads) return;
  const at = items.findIndex((version) => version.current);
  const go = (index) => () => switchTo(items[index].conversation_id);
  node.querySelector(".actions").prepend(el("span", { class: "versions" },
    el("button", { type: "button", class: "prev", disabled: at <= 0, onclick: go(at - 1) }, "<"),
    el("span", { class: "position" }, `${at + 1}/${items.length}`),
    el("button", { type: "button", class: "next", disabled: at >= items.length - 1,
                   onclick: go(at + 1) }, ">")));
}

// -- actions -------------------------------------------------------------------------------

function switchTo(conversationId) {
  return run("Switching version…", async () => {
    try {
      // expected_current: the version this page believes current; another tab's switch
      // since then is a 409 and nothing changes.
      state.chat = await call("POST", `/conversations/${state.shown}/current`, {
        conversation_id: conversationId, expected_current: state.chat.current_id });
    } catch (error) {
      if (error.status !== 409) throw error;
      await loadChats();
      await openChat(state.chat);
      throw new Error("This chat was switched elsewhere: showing its current version.");
    }
    state.shown = conversationId;
    renderChats();
    await loadMessages();
  });
}

// An edit or a regeneration answered: it ran on a new fork, now the chat's current version.
async function showTurn(conversationId) {
  state.shown = conversationId;
  await loadChats();
  await loadMessages();
}

function startEdit(node, block) {
  if (state.busy) return;
  const box = el("textarea", { class: "edit-box", rows: 2 });
  box.value = block.messages[0].content;
  const save = () => run("Thinking…", async () => {
    const answer = await call("POST", `/conversations/${state.shown}/messages/${block.seq}/edit`,
      { message: box.value });
    await showTurn(answer.conversation_id);
  });
  node.querySelector(".body").replaceChildren(box);
  node.querySelector(".actions").replaceChildren(
    el("button", { type: "button", class: "save", onclick: save }, "Save"),
    el("button", { type: "button", class: "cancel",
                   onclick: () => loadMessages().catch((e) => say(e.message, true)) }, "Cancel"));
  box.focus();
}

function regenerate(seq) {
  return run("Thinking…", async () => {
    const answer = await call("POST", `/conversations/${state.shown}/messages/${seq}/regenerate`);
    await showTurn(answer.conversation_id);
  });
}

function startRename() {
  if (!state.chat || state.busy) return;
  const box = el("input", { id: "rename-input", "aria-label": "Title" });
  box.value = state.chat.title || "";
  const save = () => run("Renaming…", async () => {
    state.chat = await call("PATCH", `/conversations/${state.chat.id}`, { title: box.value });
    await loadChats();
  }).then(renderTitle);
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter") save();
    if (event.key === "Escape") renderTitle();
  });
  $("title").replaceChildren(box);
  $("rename").hidden = true;
  box.focus();
  box.select();
}

// One streamed chat turn: the user's message at once, the reply as its chunks arrive.
function send(text) {
  return run("Thinking…", async () => {
    const body = { message: text };
    if (state.shown) body.conversation_id = state.shown;
    $("empty")?.remove();
    const reply = el("div", { class: "body" });
    $("messages").append(
      el("div", { class: "msg user" },
        el("div", { class: "body" }, el("p", { class: "text" }, text))),
      el("div", { class: "msg assistant streaming" }, reply));
    const response = await fetch(url("/chat/stream"), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      await refresh();
      throw new Error(await problem(response));
    }
    $("input").value = "";
    const conversationId = response.headers.get("x-conversation-id");
    let textPart = null;
    try {
      for await (const chunk of streamChunks(response)) {
        if (chunk.type === "text-start") {
          textPart = el("p", { class: "text" });
          reply.append(textPart);
        } else if (chunk.type === "text-delta") {
          textPart.textContent += chunk.delta;
        } else if (chunk.type === "tool-input-available") {
          const input = JSON.stringify(chunk.input);
          reply.append(el("p", { class: "tool" }, `${chunk.toolName}(${input})`));
        } else if (chunk.type === "tool-output-available") {
          reply.append(el("p", { class: "tool-output" }, `→ ${JSON.stringify(chunk.output)}`));
        } else if (chunk.type === "error") {
          throw new Error(chunk.errorText);
        }
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    } catch (error) {
      await refresh();
      throw error;
    }
    // The turn has ended ([DONE]): show it as stored, with its seqs and versions.
    state.shown = conversationId;
    await loadChats();
    state.chat = state.chat || state.chats.find((c) => c.id === conversationId) || null;
    renderChats();
    renderTitle();
    await loadMessages();
  });
}

// After a failed send: show what the server holds.
async function refresh() {
  await loadChats().catch(() => {});
  if (state.shown) await loadMessages().catch(() => {});
  else renderMessages();
}

// -- wiring --------------------------------------------------------------------------------

$("user").textContent = `· ${user}`;
$("new-chat").addEventListener("click", newChat);
$("rename").addEventListener("click", startRename);
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search($("search").value.trim()).catch((e) => say(e.message, true));
});
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("input").value.trim();
  if (text) send(text);
});
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
renderMessages();
loadChats()
  .then(() => (state.chats.length ? openChat(state.chats[0]) : null))
  .catch((e) => say(e.message, true));
