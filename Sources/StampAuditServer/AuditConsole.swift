import Hummingbird
import StampHTTP
import StampWebConsole

/// The audit server's web console: the audit viewer at `/ui`.
///
/// The page holds no data and needs no token. Its script asks for the reader or admin token,
/// keeps it in the tab's session storage and sends it as `Authorization: Bearer` to the JSON API
/// (see ``ConsoleLayout``), so the viewer reads exactly what the API answers that token, and
/// every read that returns values is recorded in the access log as the API's are. User IDs and
/// values travel only in those requests, never in the page's address: the address stays `/ui`, so
/// the browser's history, bookmarks and `Referer` hold nothing personal. No cookie is set, so no
/// other site can make the browser send a request with the token (no cross-site request forgery
/// of an erasure).
struct AuditConsole: Sendable {
    /// Where the viewer is served.
    static let path = "/ui"

    func add(to router: Router<BasicRequestContext>) {
        let console = AuditViewerPage.console
        router.get(RouterPath(Self.path)) { _, _ in try console.page("audit", context: ["tokenLabel": "Reader or admin token"]) }
        console.addAssetRoute(to: router)
    }
}

/// The audit viewer's template and script.
enum AuditViewerPage {
    /// The console of the viewer and its script, parsed once.
    // The template is a constant of this file, which the tests render: it always parses.
    static let console = try! WebConsole(pages: ["audit": template], assets: [.script("audit.js", script), .stylesheet("audit.css", stylesheet)])

    static let template = """
        {{<layout}}
        {{$title}}Audit log{{/title}}
        {{$heading}}audit viewer{{/heading}}
        {{$content}}
        <link rel="stylesheet" href="/ui/assets/audit.css">
        <section id="access">
        <h1>Audit log</h1>
        <p class="muted">The reader token shows values, and every read that shows them is recorded in the user's access log.
        The admin token shows events without values, and may erase a user's personal data. The token stays in this tab only.</p>
        {{>token-form}}
        <p id="caller" class="status"></p>
        </section>
        <section id="lookup">
        <h2>Look a user up</h2>
        <form id="lookup-form" method="post" autocomplete="off">
        <label for="user-input">User ID</label>
        <input id="user-input" class="mono" type="text" maxlength="128" spellcheck="false" autocomplete="off" placeholder="such as alice@example">
        <button type="submit">Look up</button>
        </form>
        <p id="lookup-message" class="status"></p>
        </section>
        <section id="latest" hidden>
        <h2>Latest value of each field <span id="latest-user" class="muted mono"></span></h2>
        <div class="scroll">
        <table id="latest-table" class="cards">
        <thead><tr><th>Field</th><th>Value</th><th>Recorded at</th><th>Actor</th><th>Event</th></tr></thead>
        <tbody></tbody>
        </table>
        </div>
        </section>
        <section id="history" hidden>
        <h2>History <span class="muted">newest first</span></h2>
        <form id="filter-form" method="post">
        <label for="field-filter">Field</label>
        <select id="field-filter"><option value="">all fields</option></select>
        </form>
        <p id="history-message" class="status"></p>
        <div class="scroll">
        <table id="history-table" class="cards">
        <thead><tr><th>Recorded at</th><th>Field</th><th>Before</th><th>After</th><th>Actor</th><th>Reason</th><th>Event</th><th class="num">Shard</th></tr></thead>
        <tbody></tbody>
        </table>
        </div>
        <p class="pager">
        <button type="button" id="newer" disabled>Newer</button>
        <span id="page-state" class="muted"></span>
        <button type="button" id="older" disabled>Older</button>
        </p>
        </section>
        <section id="erasure" hidden>
        <h2>Erase personal data</h2>
        <p class="muted">Destroys the user's data keys in every shard: the values of all their events read as erased from then on, for good.
        Their events stay, and the erasure is recorded as an event of the user.</p>
        <p><button type="button" id="erase-start" class="danger">Erase this user's personal data…</button></p>
        <form id="erase-confirm" method="post" hidden>
        <label for="erase-confirm-input">Type the user ID <code id="erase-user"></code> to confirm</label>
        <input id="erase-confirm-input" class="mono" type="text" maxlength="128" spellcheck="false" autocomplete="off">
        <button type="submit" class="danger" id="erase-confirm-button">Erase for good</button>
        <button type="button" id="erase-cancel">Cancel</button>
        </form>
        <p id="erase-message" class="status"></p>
        </section>
        <section id="shards">
        <h2>Shards <span id="shard-map-version" class="muted"></span></h2>
        <p class="muted">Each shard's hash chain and its newest signed checkpoint; Verify recomputes the whole chain, as <code>stamp audit verify</code> does.</p>
        <p id="shards-message" class="status"></p>
        <div class="scroll">
        <table id="shards-table" class="cards">
        <thead><tr><th class="num">Shard</th><th class="num">Rows</th><th>Last event</th><th>Newest checkpoint</th><th>State</th><th></th></tr></thead>
        <tbody></tbody>
        </table>
        </div>
        <p id="verify-message" class="status"></p>
        </section>
        {{/content}}
        {{$scripts}}<script src="/ui/assets/audit.js"></script>{{/scripts}}
        {{/layout}}

        """

    static let stylesheet = """
        /* The audit viewer's own rules, beside console.css. */
        td.value { white-space: pre-wrap; overflow-wrap: anywhere; min-width: 8rem; max-width: 24rem; }
        td.reason { white-space: normal; min-width: 10rem; max-width: 24rem; }
        .erased { color: var(--bad); font-style: italic; }
        .hidden-value, .none { color: var(--muted); }
        td.state, td.checkpoint { white-space: normal; min-width: 12rem; }
        .pager { display: flex; align-items: center; gap: 1rem; }
        button:disabled { opacity: .4; cursor: default; }
        #field-filter { flex: 0 1 16rem; }
        @media (max-width: 40rem) {
          td.value, td.reason { max-width: none; }
        }

        """

    static let script = #"""
        // The audit viewer: a user's history, the latest value of each field, the shards' chains, and
        // erasure. Plain JavaScript; the user ID is sent in requests only, never put in the page's address.
        "use strict";
        (() => {
          const { token, fetchJSON, element, replace, say } = StampConsole;
          const byID = (id) => document.getElementById(id);
          const pageSize = 20;
          // What is shown: the user, the field filter, the cursors of the pages above this one, and this page's.
          const state = { role: null, user: null, field: "", newer: [], cursor: null, next: null };

          function cell(label, value, className) {
            return element("td", { "data-label": label, class: className }, value);
          }

          /** A value as the API gave it: erased, hidden from this token, absent, or the text. */
          function value(event, slot) {
            if (event.erased) { return element("span", { class: "erased" }, "erased"); }
            if (!("before" in event) && !("after" in event)) { return element("span", { class: "hidden-value" }, "not shown to this token"); }
            if (event[slot] === null) { return element("span", { class: "none" }, "none"); }
            return event[slot];
          }

          function historyRow(event) {
            return element("tr", { "data-event": event.id, class: event.erased ? "erased-row" : null },
              cell("Recorded at", event.recordedAt, "mono time"),
              cell("Field", event.field, "mono field"),
              cell("Before", value(event, "before"), "value before"),
              cell("After", value(event, "after"), "value after"),
              cell("Actor", event.actor, "actor"),
              cell("Reason", event.reason || "", "reason"),
              cell("Event", event.id, "mono id"),
              cell("Shard", String(event.shard), "num shard"));
          }

          function latestRow(event) {
            return element("tr", { "data-field": event.field },
              cell("Field", event.field, "mono field"),
              cell("Value", value(event, "after"), "value after"),
              cell("Recorded at", event.recordedAt, "mono time"),
              cell("Actor", event.actor, "actor"),
              cell("Event", event.id, "mono id"));
          }

          function userPath(suffix) { return "/v1/users/" + encodeURIComponent(state.user) + suffix; }

          function explain(error) {
            if (error.status === 401) { return "Enter the reader or admin token above."; }
            if (error.status === 403) { return "This token may not do that: " + error.message; }
            return error.message;
          }

          async function loadCaller() {
            if (!token()) { state.role = null; say(byID("caller"), "No token: enter the reader or admin token to read the log."); showErasure(); return; }
            try {
              const caller = await fetchJSON("/v1/caller");
              state.role = caller.role;
              const what = { reader: "values shown; reads are recorded in the access log as ", admin: "values not shown; may erase personal data; acting as ", writer: "this token records changes only; it reads events without values as " };
              say(byID("caller"), caller.role + " token: " + (what[caller.role] || "") + caller.identity + ".", caller.role === "writer" ? "bad" : "");
            } catch (error) {
              state.role = null;
              say(byID("caller"), explain(error), "bad");
            }
            showErasure();
          }

          function showErasure() {
            byID("erasure").hidden = !(state.role === "admin" && state.user);
            byID("erase-confirm").hidden = true;
            byID("erase-user").textContent = state.user || "";
          }

          async function loadShards() {
            if (!token()) { replace(document.querySelector("#shards-table tbody")); say(byID("shards-message"), "Enter a token to see the shards."); return; }
            try {
              const list = await fetchJSON("/v1/shards");
              byID("shard-map-version").textContent = "(shard map version " + list.shardMapVersion + ")";
              replace(document.querySelector("#shards-table tbody"), list.shards.map(shardRow));
              say(byID("shards-message"), "");
            } catch (error) {
              say(byID("shards-message"), explain(error), "bad");
            }
          }

          function shardRow(shard) {
            const checkpoint = shard.checkpoint
              ? shard.checkpoint.rows + " rows, signed " + shard.checkpoint.signedAt + (shard.checkpoint.signatureValid ? "" : " (bad signature)")
              : "none signed yet";
            let verdict;
            if (shard.error) { verdict = element("span", { class: "bad" }, "unreadable: " + shard.error); }
            else if (shard.problem) { verdict = element("span", { class: "bad" }, shard.problem); }
            else if (shard.checkpoint) { verdict = element("span", { class: "good" }, "chain reaches its newest checkpoint (" + (shard.rows - shard.checkpoint.rows) + " rows since)"); }
            else { verdict = element("span", { class: "warn" }, "no checkpoint to check against"); }
            const verify = element("button", { type: "button", "data-verify": shard.shard }, "Verify");
            verify.addEventListener("click", () => verifyShard(shard.shard, verify));
            return element("tr", { "data-shard": shard.shard },
              cell("Shard", String(shard.shard), "num shard"),
              cell("Rows", shard.rows === undefined ? "–" : String(shard.rows), "num rows"),
              cell("Last event", shard.lastId || "–", "mono id"),
              cell("Newest checkpoint", checkpoint, "checkpoint"),
              cell("State", verdict, "state"),
              cell("", verify, "action"));
          }

          async function verifyShard(shard, button) {
            button.disabled = true;
            say(byID("verify-message"), "Verifying shard " + shard + "…");
            try {
              const result = await fetchJSON("/v1/shards/" + shard + "/verification", { method: "POST" });
              const seconds = (result.durationMs / 1000).toFixed(2) + " s";
              if (result.verified) {
                say(byID("verify-message"), "Shard " + shard + " verified: " + result.rows + " rows and " + result.checkpoints + " checkpoints in " + seconds + ".");
              } else {
                say(byID("verify-message"), "Shard " + shard + " does not verify: " + result.problem.kind + " at position " + result.problem.position + ": " + result.problem.detail, "bad");
              }
            } catch (error) {
              say(byID("verify-message"), explain(error), "bad");
            } finally {
              button.disabled = false;
            }
          }

          async function loadLatest() {
            const fields = await fetchJSON(userPath("/fields"));
            byID("latest-user").textContent = state.user;
            replace(document.querySelector("#latest-table tbody"), fields.events.map(latestRow));
            const filter = byID("field-filter");
            replace(filter, element("option", { value: "" }, "all fields"), fields.events.map((event) => element("option", { value: event.field }, event.field)));
            filter.value = state.field;
            return fields.events.length;
          }

          async function loadPage() {
            let path = userPath("/events?limit=" + pageSize);
            if (state.cursor) { path += "&before=" + encodeURIComponent(state.cursor); }
            if (state.field) { path += "&field=" + encodeURIComponent(state.field); }
            const page = await fetchJSON(path);
            state.next = page.next || null;
            replace(document.querySelector("#history-table tbody"), page.events.map(historyRow));
            const first = state.newer.length * pageSize + 1;
            byID("page-state").textContent = page.events.length ? "events " + first + "–" + (first + page.events.length - 1) : "no events";
            byID("newer").disabled = state.newer.length === 0;
            byID("older").disabled = state.next === null;
            say(byID("history-message"), page.events.length ? "" : (state.field ? "No change of this field was recorded." : "No event was recorded for this user."));
          }

          async function show(task, message) {
            try {
              await task();
            } catch (error) {
              say(byID(message), explain(error), "bad");
            }
          }

          async function lookUp(event) {
            if (event) { event.preventDefault(); }
            const user = byID("user-input").value.trim();
            if (!user) { say(byID("lookup-message"), "Enter a user ID.", "bad"); return; }
            if (!token()) { say(byID("lookup-message"), "Enter the reader or admin token above first.", "bad"); return; }
            forgetUser();
            state.user = user;
            say(byID("lookup-message"), "Reading " + user + "…");
            say(byID("erase-message"), "");
            try {
              const count = await loadLatest();
              await loadPage();
              byID("latest").hidden = false;
              byID("history").hidden = false;
              say(byID("lookup-message"), count ? "" : "No event was recorded for " + user + ".");
            } catch (error) {
              forgetUser();
              say(byID("lookup-message"), explain(error), "bad");
            }
            showErasure();
          }

          async function erase(event) {
            event.preventDefault();
            const typed = byID("erase-confirm-input").value.trim();
            if (typed !== state.user) { say(byID("erase-message"), "The user ID typed does not match: nothing was erased.", "bad"); return; }
            byID("erase-confirm-button").disabled = true;
            try {
              const recorded = await fetchJSON(userPath("/personal-data"), { method: "DELETE" });
              byID("erase-confirm").hidden = true;
              byID("erase-confirm-input").value = "";
              say(byID("erase-message"), "Erased: the user's data keys were destroyed; event " + recorded.id + " records it.");
              Object.assign(state, { field: "", newer: [], cursor: null });
              await show(async () => { await loadLatest(); await loadPage(); }, "history-message");
            } catch (error) {
              say(byID("erase-message"), explain(error), "bad");
            } finally {
              byID("erase-confirm-button").disabled = false;
            }
          }

          function forgetUser() {
            Object.assign(state, { user: null, field: "", newer: [], cursor: null, next: null });
            byID("latest").hidden = true;
            byID("history").hidden = true;
            replace(document.querySelector("#latest-table tbody"));
            replace(document.querySelector("#history-table tbody"));
          }

          document.addEventListener("DOMContentLoaded", () => {
            byID("lookup-form").addEventListener("submit", lookUp);
            byID("filter-form").addEventListener("submit", (event) => event.preventDefault());
            byID("field-filter").addEventListener("change", () => {
              Object.assign(state, { field: byID("field-filter").value, newer: [], cursor: null });
              show(loadPage, "history-message");
            });
            byID("older").addEventListener("click", () => {
              if (!state.next) { return; }
              state.newer.push(state.cursor);
              state.cursor = state.next;
              show(loadPage, "history-message");
            });
            byID("newer").addEventListener("click", () => {
              if (!state.newer.length) { return; }
              state.cursor = state.newer.pop();
              show(loadPage, "history-message");
            });
            byID("erase-start").addEventListener("click", () => {
              byID("erase-confirm").hidden = false;
              byID("erase-confirm-input").value = "";
              byID("erase-confirm-input").focus();
            });
            byID("erase-cancel").addEventListener("click", () => { byID("erase-confirm").hidden = true; say(byID("erase-message"), "Nothing was erased."); });
            byID("erase-confirm").addEventListener("submit", erase);
            document.addEventListener("stamp-token", async () => {
              forgetUser();
              await loadCaller();
              await loadShards();
            });
            loadCaller();
            loadShards();
          });
        })();

        """#
}
