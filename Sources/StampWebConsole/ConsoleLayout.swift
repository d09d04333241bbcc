/// What every page of a Stamp web console shares: the layout template, the token form partial,
/// the stylesheet and the helper script.
///
/// A page fills the layout's blocks: `title` (the document title, before "· Stamp"), `heading`
/// (beside the brand in the top bar), `content` (the main column, after a notice shown only
/// when scripts are off, since every page works through `console.js`) and `scripts` (its own
/// `<script src="/ui/assets/…">` elements, after `console.js`). The stylesheet reads well from a
/// phone's width (360 px) up; wide tables scroll inside `.scroll`, and a table of class `cards`
/// turns into one card per row on a phone, each cell labelled by its `data-label` attribute.
public enum ConsoleLayout {
    /// The shared templates by name: `layout` and `token-form`.
    ///
    /// `{{>token-form}}` renders a password field whose value ``WebConsole``'s `console.js` keeps in
    /// the tab's session storage and sends as `Authorization: Bearer`, never in a URL; the context's
    /// `tokenLabel` names the token asked for. The field has no name and the form posts: submitted
    /// before the script runs (or without it), the form sends nothing, where a named field of a
    /// `GET` form would put the token in the page's address.
    public static let templates: [String: String] = ["layout": layout, "token-form": tokenForm]

    static let layout = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="referrer" content="no-referrer">
        <title>{{$title}}Console{{/title}} · Stamp</title>
        <link rel="stylesheet" href="/ui/assets/console.css">
        <link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml">
        </head>
        <body>
        <header class="bar">
        <span class="brand">Stamp</span>
        <span class="heading">{{$heading}}{{/heading}}</span>
        </header>
        <main>
        <noscript><p class="message bad">This console needs JavaScript: its pages read the server's JSON API and send your token in a request header, never in a page's address.</p></noscript>
        {{$content}}{{/content}}
        </main>
        <script src="/ui/assets/console.js"></script>
        {{$scripts}}{{/scripts}}
        </body>
        </html>

        """

    static let tokenForm = """
        <form class="token" data-console-token method="post">
        <label for="console-token">{{tokenLabel}}</label>
        <input id="console-token" type="password" autocomplete="off" spellcheck="false">
        <button type="submit">Use</button>
        <button type="button" data-console-forget>Forget</button>
        <span class="token-state" data-console-token-state></span>
        </form>

        """

    /// The shared assets: `console.css`, `console.js` and `favicon.svg`.
    static let assets: [WebAsset] = [
        .stylesheet("console.css", stylesheet), .script("console.js", script),
        WebAsset(name: "favicon.svg", contentType: "image/svg+xml", text: favicon),
    ]

    /// The icon of every console page: a stamp's outline.
    static let favicon = """
        <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="3" y="3" width="26" height="26" rx="4" fill="#1d2430"/>        <rect x="8" y="8" width="16" height="16" rx="2" fill="none" stroke="#fff" stroke-width="3"/></svg>

        """

    static let stylesheet = """
        :root {
          --ink: #1d2430; --muted: #5b6575; --line: #d7dce3; --paper: #ffffff; --wash: #f3f5f8;
          --accent: #1f5fbf; --good: #1d7a3d; --bad: #b3261e; --warn: #8a5a00;
          font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
          font-size: 16px; line-height: 1.45; color: var(--ink); background: var(--wash);
        }
        * { box-sizing: border-box; }
        [hidden] { display: none !important; }
        body { margin: 0; }
        .bar { display: flex; flex-wrap: wrap; align-items: baseline; gap: .25rem 1rem; padding: .6rem 1rem;
          background: var(--ink); color: #fff; }
        .brand { font-weight: 700; letter-spacing: .04em; }
        .heading { color: #c9d3e0; }
        main { max-width: 72rem; margin: 0 auto; padding: 1rem; display: grid; gap: 1rem; }
        section { background: var(--paper); border: 1px solid var(--line); border-radius: .5rem; padding: .8rem 1rem; min-width: 0; }
        h1, h2 { margin: 0 0 .6rem; line-height: 1.2; }
        h1 { font-size: 1.35rem; } h2 { font-size: 1.1rem; }
        p { margin: .4rem 0; }
        code, .mono, td.num, input.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .92em; }
        .muted { color: var(--muted); }
        .good { color: var(--good); } .bad { color: var(--bad); } .warn { color: var(--warn); }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; white-space: nowrap; }
        th { font-size: .85rem; color: var(--muted); font-weight: 600; }
        td.num, th.num { text-align: right; }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
        dl.facts dt { color: var(--muted); }
        dl.facts dd { margin: 0; overflow-wrap: anywhere; }
        form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
        label { font-weight: 600; }
        input[type=text], input[type=password], input[type=search], select {
          flex: 1 1 14rem; min-width: 0; padding: .45rem .6rem; font-size: 1rem; border: 1px solid var(--line); border-radius: .35rem; }
        button { padding: .45rem .9rem; font-size: 1rem; border: 1px solid var(--accent); border-radius: .35rem; background: var(--accent); color: #fff; cursor: pointer; }
        button[type=button] { background: var(--paper); color: var(--accent); }
        button.danger { border-color: var(--bad); background: var(--bad); }
        .status { min-height: 1.45em; }
        .message { padding: .5rem .7rem; border-radius: .35rem; background: var(--wash); }
        .message.bad { background: #fbe9e7; }
        form.token { font-size: .95rem; margin: .5rem 0 .9rem; }
        @media (max-width: 40rem) {
          main { padding: .6rem; gap: .6rem; }
          section { padding: .6rem .7rem; }
          th, td { padding: .3rem .4rem; }
          dl.facts { grid-template-columns: 1fr; }
          dl.facts dd { margin-bottom: .3rem; }
          /* A table of class "cards" becomes one card per row, each cell labelled by its data-label. */
          table.cards thead { display: none; }
          table.cards tr { display: block; border: 1px solid var(--line); border-radius: .4rem; margin-bottom: .5rem; padding: .2rem 0; }
          table.cards td { display: flex; justify-content: space-between; gap: 1rem; border: 0; white-space: normal; text-align: right; }
          table.cards td::before { content: attr(data-label); color: var(--muted); text-align: left; font-family: system-ui, sans-serif; }
        }

        """

    static let script = """
        // Helpers every page of a Stamp console shares. Plain JavaScript, no build step.
        "use strict";
        const StampConsole = (() => {
          const tokenKey = "stamp.console.token";

          /** The bearer token this tab was given, or "" for none. */
          function token() { return sessionStorage.getItem(tokenKey) || ""; }

          /** Keeps `value` as this tab's token ("" forgets it) and tells listeners of "stamp-token". */
          function setToken(value) {
            if (value) { sessionStorage.setItem(tokenKey, value); } else { sessionStorage.removeItem(tokenKey); }
            document.dispatchEvent(new CustomEvent("stamp-token"));
          }

          /**
           * Fetches JSON from the server, with the token as `Authorization: Bearer`. Resolves to the
           * decoded body; rejects with an Error whose message is the problem's `detail`, and whose
           * `status` and `problem` are the answer's.
           */
          async function fetchJSON(path, options = {}) {
            const headers = new Headers(options.headers || {});
            headers.set("Accept", "application/json");
            if (token()) { headers.set("Authorization", "Bearer " + token()); }
            let response;
            try {
              response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store", credentials: "omit", redirect: "error" }));
            } catch (error) {
              throw Object.assign(new Error("the server did not answer"), { status: 0 });
            }
            const type = response.headers.get("Content-Type") || "";
            const body = type.includes("json") ? await response.json().catch(() => null) : null;
            if (!response.ok) {
              const detail = body && body.detail ? body.detail : response.status + " " + response.statusText;
              throw Object.assign(new Error(detail), { status: response.status, problem: body });
            }
            return body;
          }

          /** An element with `attributes` and `children` (strings become text nodes, never HTML). */
          function element(tag, attributes = {}, ...children) {
            const node = document.createElement(tag);
            for (const [name, value] of Object.entries(attributes)) {
              if (value !== undefined && value !== null && value !== false) { node.setAttribute(name, value === true ? "" : String(value)); }
            }
            for (const child of children.flat()) {
              if (child === undefined || child === null) { continue; }
              node.append(child instanceof Node ? child : document.createTextNode(String(child)));
            }
            return node;
          }

          /** Replaces the children of `node` with `children`. */
          function replace(node, ...children) {
            node.replaceChildren();
            for (const child of children.flat()) { if (child !== undefined && child !== null) { node.append(child instanceof Node ? child : String(child)); } }
          }

          /** Shows `text` in `node` as a message, `kind` "bad" for an error. */
          function say(node, text, kind) {
            node.textContent = text || "";
            node.className = text ? "message " + (kind || "") : "";
          }

          /** Wires every token form: Use keeps the token, Forget drops it. */
          function wireTokenForms() {
            for (const form of document.querySelectorAll("form[data-console-token]")) {
              const input = form.querySelector("input");
              const state = form.querySelector("[data-console-token-state]");
              const show = () => { if (state) { state.textContent = token() ? "token set for this tab" : "no token"; } };
              form.addEventListener("submit", (event) => { event.preventDefault(); setToken(input.value.trim()); input.value = ""; show(); });
              const forget = form.querySelector("[data-console-forget]");
              if (forget) { forget.addEventListener("click", () => { setToken(""); show(); }); }
              show();
            }
          }

          document.addEventListener("DOMContentLoaded", wireTokenForms);
          return { token, setToken, fetchJSON, element, replace, say };
        })();

        """
}
