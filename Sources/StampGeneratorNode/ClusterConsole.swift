import Hummingbird
import StampAPI
import StampCore
import StampCoordination
import StampHTTP
import StampWebConsole

/// The node's web console: the cluster page at `/ui`, with the JSON it refreshes from, `GET /v1/node`
/// and `GET /v1/cluster/nodes`.
///
/// The page itself holds no data and needs no token: its script reads `/v1/cluster`,
/// `/v1/cluster/nodes` and `/v1/ids/{id}`, which need the node's token when it has one, so the page
/// shows nothing that those do not. With a token, the page asks for it and keeps it in the tab's
/// session storage (see ``ConsoleLayout``).
struct ClusterConsole<C: Clock<Duration>>: Sendable where C.Instant: Sendable {
    let node: GeneratorNode<C>
    let peers: PeerStatusSource
    /// Whether the node's API needs a token, so the page shows the token form.
    let needsToken: Bool

    func add(to router: Router<BasicRequestContext>) {
        let console = ClusterPage.console
        let needsToken = needsToken
        router.get("/ui") { _, _ in try console.page("cluster", context: ["needsToken": needsToken, "tokenLabel": "Node token"]) }
        console.addAssetRoute(to: router)
        router.get("/v1/node") { _, _ in try Response.json(node.status()) }
        router.get("/v1/cluster/nodes") { request, _ in try await clusterNodes(authorization: request.headers[.authorization]) }
    }

    /// Every live node with its status: this node's own, the others' asked at their addresses at
    /// once, with `authorization` (the caller's header).
    func clusterNodes(authorization: String?) async throws -> Response {
        let leases: [NodeLease]
        do {
            leases = try await node.liveLeases()
        } catch {
            throw Problem.unavailable("the coordination store cannot be read", retryAfterMilliseconds: 1000)
        }
        let own = node.status()
        let peers = peers
        let entries = await withTaskGroup(of: ClusterNodes.Entry.self) { group in
            for lease in leases {
                group.addTask {
                    var entry = ClusterNodes.Entry(
                        node: lease.node, address: lease.address, expiresAt: RFC3339.format(unixMilliseconds: lease.expiresAtUnixMilliseconds),
                        reservedUntil: RFC3339.format(unixMilliseconds: lease.reservedUntilUnixMilliseconds), status: nil, error: nil
                    )
                    if lease.owner == node.owner {
                        entry.status = own
                    } else if let address = lease.address {
                        do throws(PeerStatusError) {
                            entry.status = try await peers.fetch(address, authorization)
                        } catch {
                            entry.error = error.description
                        }
                    } else {
                        entry.error = "advertises no address"
                    }
                    return entry
                }
            }
            var entries: [ClusterNodes.Entry] = []
            for await entry in group { entries.append(entry) }
            return entries.sorted { $0.node < $1.node }
        }
        return try Response.json(ClusterNodes(layout: node.configuration.layout.description, node: own.node, nodes: entries))
    }
}

/// The cluster page's template and script.
enum ClusterPage {
    /// The console of the cluster page and its script, parsed once.
    // The templates are constants of this file, which the tests render: they always parse.
    static let console = try! WebConsole(pages: ["cluster": template], assets: [.script("cluster.js", script)])

    static let template = """
        {{<layout}}
        {{$title}}Cluster{{/title}}
        {{$heading}}cluster console{{/heading}}
        {{$content}}
        <section id="overview">
        <h1>Cluster</h1>
        {{#needsToken}}
        <p class="muted">This node's API needs its bearer token; the page sends it with every request and keeps it in this tab only.</p>
        {{>token-form}}
        {{/needsToken}}
        <dl class="facts">
        <dt>Answering node</dt><dd id="answering-node">…</dd>
        <dt>Layout</dt><dd id="layout" class="mono">…</dd>
        <dt>IDs per millisecond per node</dt><dd id="ids-per-millisecond">…</dd>
        <dt>Maximum lead</dt><dd id="max-lead">…</dd>
        </dl>
        </section>
        <section id="live-nodes">
        <h2>Live nodes <span id="node-count" class="muted"></span></h2>
        <p class="muted">Refreshed every 2 s. Rates cover the last minute (less for a node younger than that).</p>
        <p id="nodes-message" class="status"></p>
        <div class="scroll">
        <table id="nodes" class="cards">
        <thead><tr>
        <th>Node</th><th>Address</th><th>State</th><th class="num">Lease left</th><th class="num">Reservation headroom</th>
        <th class="num">Clock lead</th><th class="num">Skew vs store</th><th class="num">IDs/s</th><th class="num">Refusals</th>
        </tr></thead>
        <tbody></tbody>
        </table>
        </div>
        <p id="refreshed" class="muted"></p>
        </section>
        <section id="decoder">
        <h2>Decode an ID</h2>
        <form id="decode-form">
        <label for="decode-input">ID</label>
        <input id="decode-input" class="mono" type="text" maxlength="40" placeholder="decimal or 13-character text form" autocomplete="off" spellcheck="false">
        <button type="submit">Decode</button>
        </form>
        <p id="decode-message" class="status"></p>
        <dl id="decoded" class="facts" hidden>
        <dt>Decimal</dt><dd id="decoded-id" class="mono"></dd>
        <dt>Text form</dt><dd id="decoded-text" class="mono"></dd>
        <dt>Time</dt><dd id="decoded-time"></dd>
        <dt>Sequence</dt><dd id="decoded-sequence"></dd>
        <dt>Shard</dt><dd id="decoded-shard"></dd>
        <dt>Node</dt><dd id="decoded-node"></dd>
        <dt>Node known</dt><dd id="decoded-known"></dd>
        </dl>
        </section>
        {{/content}}
        {{$scripts}}<script src="/ui/assets/cluster.js"></script>{{/scripts}}
        {{/layout}}

        """

    static let script = """
        // The cluster page: live nodes refreshed every 2 s, and the ID decoder. Plain JavaScript.
        "use strict";
        (() => {
          const { fetchJSON, element, replace, say } = StampConsole;
          const byID = (id) => document.getElementById(id);
          const refreshInterval = 2000;
          let liveNodes = null;

          function milliseconds(value) { return value.toLocaleString("en-US") + " ms"; }
          function secondsUntil(instant) {
            const left = (Date.parse(instant) - Date.now()) / 1000;
            return left > 0 ? left.toFixed(1) + " s" : "expired";
          }

          function cell(label, value, className) {
            return element("td", { "data-label": label, class: className }, value);
          }

          function row(entry) {
            const status = entry.status;
            const state = status
              ? element("span", { class: status.ready ? "good" : "bad" }, status.ready ? "issuing" : "refusing: " + (status.reason || "unknown"))
              : element("span", { class: "warn" }, "unknown: " + (entry.error || "no answer"));
            const dash = "–";
            return element("tr", { "data-node": entry.node },
              cell("Node", String(entry.node), "num node"),
              cell("Address", entry.address || dash, "mono address"),
              cell("State", state, "state"),
              cell("Lease left", secondsUntil(entry.expiresAt), "num lease"),
              cell("Reservation headroom", status ? milliseconds(status.reservationHeadroomMilliseconds) : dash, "num headroom"),
              cell("Clock lead", status ? milliseconds(status.clockLeadMilliseconds) : dash, "num lead"),
              cell("Skew vs store", status ? milliseconds(status.clockSkewMilliseconds) : dash, "num skew"),
              cell("IDs/s", status ? status.idsPerSecond.toFixed(1) : dash, "num rate"),
              cell("Refusals", status ? String(status.refusals) : dash, "num refusals"));
          }

          async function refresh() {
            try {
              const [cluster, nodes] = await Promise.all([fetchJSON("/v1/cluster"), fetchJSON("/v1/cluster/nodes")]);
              byID("answering-node").textContent = cluster.node === null ? "holds no node ID" : String(cluster.node) + (cluster.ready ? " (issuing)" : " (not issuing)");
              byID("layout").textContent = cluster.layout;
              byID("ids-per-millisecond").textContent = cluster.idsPerMillisecond.toLocaleString("en-US");
              byID("max-lead").textContent = milliseconds(cluster.maxLeadMilliseconds);
              liveNodes = new Set(nodes.nodes.map((entry) => entry.node));
              replace(document.querySelector("#nodes tbody"), nodes.nodes.map(row));
              byID("node-count").textContent = "(" + nodes.nodes.length + ")";
              byID("refreshed").textContent = "Updated " + new Date().toLocaleTimeString();
              say(byID("nodes-message"), nodes.nodes.length ? "" : "No node holds a lease.", nodes.nodes.length ? "" : "bad");
            } catch (error) {
              say(byID("nodes-message"), error.status === 401 ? "This node needs its bearer token: enter it above." : "Could not refresh: " + error.message, "bad");
            }
          }

          async function decode(event) {
            event.preventDefault();
            const text = byID("decode-input").value.trim();
            const fields = byID("decoded");
            if (!text) { say(byID("decode-message"), "Enter an ID: a decimal number or its 13-character text form.", "bad"); fields.hidden = true; return; }
            try {
              const decoded = await fetchJSON("/v1/ids/" + encodeURIComponent(text));
              if (liveNodes === null) { await refresh(); }
              byID("decoded-id").textContent = decoded.id;
              byID("decoded-text").textContent = decoded.text;
              byID("decoded-time").textContent = decoded.time + (decoded.timeInFuture ? " (in the future: beyond the maximum lead)" : "");
              byID("decoded-sequence").textContent = String(decoded.sequence);
              byID("decoded-shard").textContent = String(decoded.shard);
              byID("decoded-node").textContent = String(decoded.node);
              const known = liveNodes !== null && liveNodes.has(decoded.node);
              replace(byID("decoded-known"), element("span", { class: known ? "good" : "warn" }, known ? "yes: a live node holds node ID " + decoded.node : "no: no live node holds node ID " + decoded.node + " now"));
              say(byID("decode-message"), "");
              fields.hidden = false;
            } catch (error) {
              say(byID("decode-message"), error.status === 401 ? "This node needs its bearer token: enter it above." : error.message, "bad");
              fields.hidden = true;
            }
          }

          document.addEventListener("DOMContentLoaded", () => {
            byID("decode-form").addEventListener("submit", decode);
            document.addEventListener("stamp-token", refresh);
            refresh();
            setInterval(refresh, refreshInterval);
          });
        })();

        """
}
