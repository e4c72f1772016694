// The annotate page's keyboard and buttons, handled in the browser (see pair_keys.py).
//
// Every key and click updates a selection kept here, in the order the browser saw them,
// and is sent to Python as one state value: the selection plus every command (submit,
// undo) Python has not acknowledged yet. However Streamlit coalesces or delays its
// reruns, the latest value holds everything the annotator did, so nothing depends on
// the order reruns arrive in.
//
// Module state outlives one call of the default function: Streamlit calls it again on
// every change of `data`, and runs only the last call's cleanup when it unmounts.

let api = null; // the mounted component: {setStateValue, data}
const SCROLLED_BOXES =
  '.st-key-prompt, .st-key-left_response, .st-key-right_response, [class*="st-key-response_"]';
let view = null; // the screen Python shows: a fresh token per pair shown
// A ranking task's order is built here too: groups of response numbers, best first, a
// group holding tied responses; `tie` says the next number joins the last group.
let selection = { choice: null, strength: null, order: [], tie: false };
let outbox = []; // commands Python has not acknowledged
let seq = 0;
let waiting = 0; // seq of the command that replaces this screen; keys wait for it
let deferred = []; // undo pressed while waiting: sent once the next screen is known

// For the browser tests (and anyone curious): "ready" once keys reach this screen,
// "busy" from a submit or undo until the screen it leads to is known.
function mark() {
  document.documentElement.dataset.pairKeys = api === null ? "" : waiting ? "busy" : "ready";
}

function send() {
  api.setStateValue("client", {
    view,
    choice: selection.choice,
    strength: selection.strength,
    order: selection.order,
    tie: selection.tie,
    outbox,
  });
}

function command(kind) {
  seq += 1;
  outbox.push({
    seq,
    kind,
    view,
    choice: selection.choice,
    strength: selection.strength,
    order: selection.order.map((group) => group.slice()),
  });
  waiting = seq;
  mark();
  send();
}

function act(action) {
  if (action === "undo") {
    if (waiting) deferred.push(action);
    else command("undo");
    return;
  }
  // Keys for a pair are meant for the pair on screen; once it is submitted, they would
  // land on a pair the annotator has not seen yet.
  if (waiting || api.data.pair === null) return;
  if (action === "submit") {
    command("submit");
  } else if (action.startsWith("choice_")) {
    selection.choice = action.slice("choice_".length);
    send();
  } else if (action.startsWith("strength_")) {
    selection.strength = Number(action.slice("strength_".length));
    send();
  } else if (action.startsWith("rank_")) {
    rank(action.slice("rank_".length));
    send();
  }
}

// rank_N places response N next (or, after rank_tie, beside the last one placed);
// rank_back takes the last placement back (or a pending tie).
function rank(what) {
  const order = selection.order;
  if (what === "tie") {
    selection.tie = order.length > 0;
  } else if (what === "back") {
    if (selection.tie) selection.tie = false;
    else if (order.length) {
      order[order.length - 1].pop();
      if (!order[order.length - 1].length) order.pop();
    }
  } else {
    const number = Number(what);
    if (order.some((group) => group.includes(number))) return;
    if (selection.tie && order.length) order[order.length - 1].push(number);
    else order.push([number]);
    selection.tie = false;
    selection.choice = null; // placing a response takes back a skip chosen before
  }
}

function typingInto(target) {
  return (
    target instanceof Element &&
    target.closest("input, textarea, select, [contenteditable]:not([contenteditable='false'])") !==
      null
  );
}

function onKeyDown(event) {
  if (api === null || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.isComposing || typingInto(event.target)) return;
  const action = api.data.keys[event.key.toLowerCase()];
  if (action === undefined) return;
  // Handled here only: no Streamlit shortcut, and no click of a focused button by Enter.
  event.preventDefault();
  event.stopPropagation();
  if (!event.repeat) act(action);
}

function onClick(event) {
  if (api === null || !(event.target instanceof Element)) return;
  const button = event.target.closest("button");
  if (button === null) return;
  const action = api.data.buttons.find((name) => button.closest(`.st-key-${name}`) !== null);
  if (action === undefined) return;
  // The button's own Streamlit event would be a second, separately ordered message.
  event.preventDefault();
  event.stopPropagation();
  act(action);
}

window.addEventListener("keydown", onKeyDown, true);
window.addEventListener("click", onClick, true);

export default function (component) {
  api = component;
  const data = component.data;
  if (data.view !== view) {
    view = data.view;
    selection = { choice: null, strength: null, order: [], tie: false };
    // A new pair starts at the top of its boxes, not where the last one was scrolled to.
    document.querySelectorAll(SCROLLED_BOXES).forEach((box) => {
      box.scrollTop = 0;
      box.scrollLeft = 0;
    });
  }
  outbox = outbox.filter((sent) => sent.seq > data.acked);
  if (waiting && data.acked >= waiting) {
    waiting = 0;
    const again = deferred;
    deferred = [];
    again.forEach(act);
  }
  mark();
  return () => {
    if (api === component) api = null;
    mark();
  };
}
